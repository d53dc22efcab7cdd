//! Certificate rotation without downtime (issue "Consortium membership over
//! time", part 3): a four-validator cluster commits under load while one
//! node's certificate is renewed with `govchain certs renew`, first picked
//! up on SIGHUP, then by the file change alone. Each time a new TLS
//! connection to the node is checked to present exactly the new
//! certificate; another department's certificate put in its place is
//! refused (the one in use stays); every acknowledged transaction commits
//! and no node changes view.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use support::{Cluster, Load, committed_height, eventually, govchain};

/// The node whose certificate rotates (not the primary of view 0).
const ROTATED: usize = 1;
const ROTATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The leaf certificate (DER) a new TLS connection to `port` is shown,
/// connecting as `department`'s client like any department system.
async fn served_certificate(certs: &Path, department: &str, port: u16) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(certs.join("ca.crt")).ok()? {
        roots.add(certificate.ok()?).ok()?;
    }
    let chain = CertificateDer::pem_file_iter(certs.join(department).join("client.crt"))
        .ok()?
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let key = PrivateKeyDer::from_pem_file(certs.join(department).join("client.key")).ok()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .ok()?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let name = ServerName::try_from(govchain_pki::node_dns_name(department)).ok()?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .ok()?;
    let (_, session) = stream.get_ref();
    Some(session.peer_certificates()?.first()?.as_ref().to_vec())
}

fn certificate_der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::from_pem_file(path)
        .unwrap()
        .as_ref()
        .to_vec()
}

async fn wait_served(cluster: &Cluster, what: &str, expected: &[u8]) {
    let certs = cluster.certs();
    let node = &cluster.nodes[ROTATED];
    eventually(what, ROTATION_TIMEOUT, || {
        let certs = certs.clone();
        let name = node.name.clone();
        let port = node.port;
        async move {
            let served = served_certificate(&certs, &name, port).await?;
            (served == expected).then_some(())
        }
    })
    .await;
}

fn renew(cluster: &Cluster) -> Vec<u8> {
    let certs = cluster.certs();
    let name = &cluster.nodes[ROTATED].name;
    let dir = certs.join(name);
    let out = dir.join("node.crt");
    govchain(&[
        "certs",
        "renew",
        "--ca-dir",
        certs.to_str().unwrap(),
        "--department",
        name,
        "--key",
        dir.join("node.key").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    certificate_der(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_rotates_its_certificate_under_load_without_a_view_change() {
    let cluster = Cluster::start(4).await;
    let certs = cluster.certs();
    let node = &cluster.nodes[ROTATED];
    let certificate_file = certs.join(&node.name).join("node.crt");
    let original = certificate_der(&certificate_file);
    wait_served(&cluster, "the node to present its certificate", &original).await;
    let mut views = Vec::new();
    for i in 0..4 {
        views.push(cluster.status(i).await.view);
    }
    let mut clients = Vec::new();
    for i in 0..4 {
        clients.push(cluster.client(i).await.unwrap());
    }
    let load = Load::start(clients.clone(), 31);

    // Renewed, and told with SIGHUP.
    let first = renew(&cluster);
    assert_ne!(first, original, "renew wrote the same certificate");
    cluster.signal(ROTATED, "HUP");
    wait_served(
        &cluster,
        "new connections to present the renewed certificate",
        &first,
    )
    .await;

    // Renewed again, with no signal: the file change is enough.
    let second = renew(&cluster);
    assert_ne!(second, first);
    wait_served(&cluster, "the node to notice the changed file", &second).await;

    // Another department's certificate (not matching the key, not the
    // node's identity) is refused, and the one in use stays.
    let good = std::fs::read(&certificate_file).unwrap();
    let other = &cluster.nodes[(ROTATED + 1) % 4].name;
    std::fs::copy(certs.join(other).join("node.crt"), &certificate_file).unwrap();
    cluster.signal(ROTATED, "HUP");
    eventually("the bad pair to be refused", ROTATION_TIMEOUT, || async {
        cluster
            .log_tail(ROTATED)
            .contains("certificate reload refused")
            .then_some(())
    })
    .await;
    let served = served_certificate(&certs, &node.name, node.port).await;
    assert_eq!(
        served.as_deref(),
        Some(second.as_slice()),
        "a bad pair replaced the good one"
    );
    std::fs::write(&certificate_file, good).unwrap();

    let acknowledged = load.stop().await;
    assert!(
        acknowledged.len() >= 10,
        "the load barely ran: {}",
        acknowledged.len()
    );
    let mut client = clients[0].clone();
    for id in acknowledged {
        assert!(committed_height(&mut client, id).await > 0);
    }
    for (i, view) in views.into_iter().enumerate() {
        assert_eq!(cluster.status(i).await.view, view, "node {i} changed view");
    }
    cluster.assert_no_fork(&[0, 1, 2, 3]).await;
}
