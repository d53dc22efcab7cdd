//! Rotating the node's TLS certificate without a restart: on SIGHUP, and
//! when the certificate or key file changes (checked every
//! `tls::CERTIFICATE_POLL_INTERVAL`), the files are read again and, if they
//! hold a valid pair of this node's identity from the consortium CA, new
//! connections use it (`certificates::NodeCertificates::reload`). Established
//! connections keep the pair they were made with. A pair that does not
//! check (a copy half done, another department's certificate) is logged
//! and left out; the files are read again on their next change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use tracing::{error, info};

use crate::certificates::{CERTIFICATE_POLL_INTERVAL, NodeCertificates, Reloaded};

/// The files' modification times and sizes, to notice a change cheaply.
fn stamp(paths: [&Path; 2]) -> [Option<(SystemTime, u64)>; 2] {
    paths.map(|path| {
        std::fs::metadata(path)
            .ok()
            .and_then(|metadata| Some((metadata.modified().ok()?, metadata.len())))
    })
}

/// Reloads when told (SIGHUP) or when the files change, until the node
/// stops.
pub async fn watch(certificates: Arc<NodeCertificates>, certificate: PathBuf, key: PathBuf) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangups) => Some(hangups),
        Err(err) => {
            error!(error = %err, "cannot listen for SIGHUP; certificate files are still watched");
            None
        }
    };
    let mut last = stamp([&certificate, &key]);
    let mut timer = tokio::time::interval(CERTIFICATE_POLL_INTERVAL);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let told = tokio::select! {
            _ = timer.tick() => false,
            Some(()) = async {
                match hangups.as_mut() {
                    Some(hangups) => hangups.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        let now = stamp([&certificate, &key]);
        if !told && now == last {
            continue;
        }
        last = now;
        reload(&certificates, &certificate, &key, told);
    }
}

/// One reload from the files, logged.
pub fn reload(certificates: &NodeCertificates, certificate: &Path, key: &Path, told: bool) {
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))
    };
    let (certificate_pem, key_pem) = match (read(certificate), read(key)) {
        (Ok(certificate), Ok(key)) => (certificate, key),
        (Err(err), _) | (_, Err(err)) => {
            error!(error = %err, "certificate reload failed; the certificate in use stays");
            return;
        }
    };
    match certificates.reload(&certificate_pem, &key_pem) {
        Ok(Reloaded::Replaced { not_after_unix_s }) => info!(
            certificate = %certificate.display(),
            not_after_unix_s,
            "certificate reloaded: new connections use it"
        ),
        Ok(Reloaded::Unchanged) if told => {
            info!(certificate = %certificate.display(), "SIGHUP: the certificate files hold the pair in use");
        }
        Ok(Reloaded::Unchanged) => {}
        Err(err) => error!(
            certificate = %certificate.display(),
            key = %key.display(),
            error = %err,
            "certificate reload refused; the certificate in use stays"
        ),
    }
}
