//! Accepting connections with a bound on how many are open at once.
//!
//! tonic serves every connection it accepts. A client that opens thousands
//! of connections (or leaves half-open ones behind: the TLS handshake has
//! its own timeout, `tls::TLS_HANDSHAKE_TIMEOUT`) would otherwise hold a
//! task, buffers and a file descriptor each. Past the bound a connection is
//! closed as soon as it is accepted, and the refusal is logged.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::warn;

/// Connections a node keeps open at once, from all clients and peers.
pub const CONNECTIONS_MAX: usize = 1024;

/// An accepted connection holding one of the [`CONNECTIONS_MAX`] places
/// until it is dropped.
pub struct Counted {
    inner: TcpStream,
    _place: OwnedSemaphorePermit,
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The connections `listener` accepts, at most `max` open at once; the
/// stream ends when the server drops it.
pub fn incoming(listener: TcpListener, max: usize) -> ReceiverStream<io::Result<Counted>> {
    let (sender, receiver) = mpsc::channel(16);
    let places = Arc::new(Semaphore::new(max));
    let refused = AtomicU64::new(0);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = sender.closed() => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: the next accept
                // may succeed once connections close.
                Err(err) => {
                    warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(place) = places.clone().try_acquire_owned() else {
                let count = refused.fetch_add(1, Ordering::Relaxed) + 1;
                // One line per power of two, so a flood does not flood the log.
                if count.is_power_of_two() {
                    warn!(peer = ?stream.peer_addr().ok(), max, refused = count, "connection refused: CONNECTIONS_MAX connections are open");
                }
                continue;
            };
            let _ = stream.set_nodelay(true);
            let counted = Counted {
                inner: stream,
                _place: place,
            };
            if sender.send(Ok(counted)).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(receiver)
}

/// Handshakes handled at once; a slow client holds one of these until
/// its handshake times out (`tls::TLS_HANDSHAKE_TIMEOUT`).
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 256;

/// The TLS side of `incoming`: each connection's handshake runs in a task
/// of its own, so that a slow or silent client never holds up the others;
/// a connection whose handshake fails or times out is closed (and its
/// place freed). The acceptor's configuration picks the node's current
/// certificate at each handshake (`certificates::NodeCertificates`).
pub fn tls_handshakes(
    mut accepted: ReceiverStream<io::Result<Counted>>,
    acceptor: tokio_rustls::TlsAcceptor,
    revocations: Arc<crate::chain_state::Revocations>,
) -> ReceiverStream<io::Result<Revocable<tokio_rustls::server::TlsStream<Counted>>>> {
    use tokio_stream::StreamExt as _;
    let (sender, receiver) = mpsc::channel(16);
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT_MAX));
    let failures = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Some(connection) = accepted.next().await {
            let Ok(connection) = connection else { continue };
            let Ok(slot) = handshakes.clone().acquire_owned().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            let failures = failures.clone();
            let revocations = revocations.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let peer = connection.inner.peer_addr().ok();
                match tokio::time::timeout(
                    crate::tls::TLS_HANDSHAKE_TIMEOUT,
                    acceptor.accept(connection),
                )
                .await
                {
                    Ok(Ok(stream)) => {
                        let leaf = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certificates| certificates.first())
                            .map(|leaf| leaf.to_vec())
                            .unwrap_or_default();
                        let _ = sender
                            .send(Ok(Revocable::new(stream, leaf, revocations)))
                            .await;
                    }
                    Ok(Err(err)) => {
                        let count = failures.fetch_add(1, Ordering::Relaxed) + 1;
                        // Every one at first, then one per power of two, so
                        // a flood of bad handshakes does not flood the log.
                        if count <= 64 || count.is_power_of_two() {
                            tracing::info!(peer = ?peer, error = %err, failed = count, "tls accept error: handshake refused");
                        }
                    }
                    Err(_) => tracing::debug!(peer = ?peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}

/// How long a connection whose certificate governance revoked stays open:
/// long enough for the calls on it to be answered with the clear status
/// the RPC layer gives (`tls::Members`), not a reset.
pub const REVOKED_CONNECTION_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// A served connection that ends once its client certificate is revoked:
/// at the first read or write [`REVOKED_CONNECTION_GRACE`] after the
/// revocation is seen, so a stream that was open before (block
/// subscriptions, a peer's consensus stream) does not outlive it. The
/// certificate is checked again only when the revocation list changes.
pub struct Revocable<S> {
    inner: S,
    leaf: Vec<u8>,
    revocations: Arc<crate::chain_state::Revocations>,
    /// The list generation last checked; `None`: never.
    checked: Option<u64>,
    cut_at: Option<std::time::Instant>,
    grace: std::time::Duration,
}

impl<S> Revocable<S> {
    pub fn new(inner: S, leaf: Vec<u8>, revocations: Arc<crate::chain_state::Revocations>) -> Self {
        Self {
            inner,
            leaf,
            revocations,
            checked: None,
            cut_at: None,
            grace: REVOKED_CONNECTION_GRACE,
        }
    }

    fn check(&mut self) -> io::Result<()> {
        let generation = self.revocations.generation();
        if self.checked != Some(generation) {
            self.checked = Some(generation);
            if self.cut_at.is_none()
                && let Some(refusal) = self.revocations.refusal(&self.leaf)
            {
                tracing::info!(%refusal, "closing a connection of a revoked certificate");
                self.cut_at = Some(std::time::Instant::now() + self.grace);
            }
        }
        match self.cut_at {
            Some(at) if std::time::Instant::now() >= at => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the client certificate was revoked",
            )),
            _ => Ok(()),
        }
    }
}

impl<S: Connected> Connected for Revocable<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Revocable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(err) = self.check() {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Revocable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(err) = self.check() {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Err(err) = self.check() {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;
    use tokio_stream::StreamExt as _;

    #[tokio::test]
    async fn a_connection_ends_once_its_certificate_is_revoked() {
        use govchain_proto::types::v1::{Revocation, RevocationList, RevokeCertificate};
        use tokio::io::AsyncWriteExt as _;
        let dir = tempfile::tempdir().expect("dir");
        govchain_pki::init_consortium(&govchain_pki::InitOptions {
            observers: Vec::new(),
            out: dir.path().to_owned(),
            chain_id: "c".into(),
            departments: vec!["tax".into()],
            hosts: Vec::new(),
            force: false,
            attests: Vec::new(),
        })
        .expect("init");
        let pem = std::fs::read_to_string(dir.path().join("tax/client.crt")).expect("pem");
        let ids = govchain_pki::certificate_ids_pem(&pem).expect("ids");
        let leaf = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
            .map(|der: rustls::pki_types::CertificateDer<'static>| der.to_vec())
            .expect("der");
        let revocations = Arc::new(crate::chain_state::Revocations::default());
        let (near, mut far) = tokio::io::duplex(1024);
        let mut served = Revocable::new(near, leaf, revocations.clone());
        served.grace = std::time::Duration::ZERO;
        served.write_all(b"before").await.expect("not revoked yet");
        let mut read = [0u8; 6];
        far.read_exact(&mut read).await.expect("read");
        // Another certificate's revocation changes nothing.
        let revoke = |serial: &str| Revocation {
            certificate: Some(RevokeCertificate {
                serial: serial.into(),
                key_fingerprint: Vec::new(),
            }),
            height: 7,
            proposal_id: vec![1; 32],
            reason: "stolen".into(),
        };
        revocations.set(RevocationList {
            revocations: vec![revoke("00")],
        });
        served
            .write_all(b"still")
            .await
            .expect("another certificate");
        revocations.set(RevocationList {
            revocations: vec![revoke("00"), revoke(&ids.serial)],
        });
        let err = served.write_all(b"after").await.expect_err("revoked");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        let mut buf = [0u8; 8];
        let err = served.read(&mut buf).await.expect_err("revoked");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    }

    #[tokio::test]
    async fn past_the_bound_connections_are_closed_and_places_come_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let mut accepted = incoming(listener, 2);
        let _a = TcpStream::connect(address).await.expect("connect");
        let _b = TcpStream::connect(address).await.expect("connect");
        let first = accepted.next().await.expect("open").expect("accepted");
        let second = accepted.next().await.expect("open").expect("accepted");
        // The third is accepted by the kernel and closed by the node.
        let mut third = TcpStream::connect(address).await.expect("connect");
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), third.read(&mut byte))
            .await
            .expect("the node closes the third connection");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        // A place freed is a place for the next connection.
        drop(first);
        let _c = TcpStream::connect(address).await.expect("connect");
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), accepted.next())
            .await
            .expect("accepted once a place is free");
        assert!(matches!(next, Some(Ok(_))));
        drop(second);
    }
}
