//! Writing key and certificate files with the right permissions, and reading
//! PEM files back with errors that name the file.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::error::PkiError;

/// Private keys: readable by the owner only.
pub(crate) const SECRET_FILE_MODE: u32 = 0o600;
/// Certificates and genesis: public by design.
pub(crate) const PUBLIC_FILE_MODE: u32 = 0o644;

/// Writes `contents` to `path` through a temporary file in the same directory,
/// created with `mode` from the start, then renamed into place.
///
/// Creating with the mode (rather than `chmod` afterwards) means a key is never
/// world-readable, not even between the two calls. Renaming means an existing
/// file with looser permissions is replaced, not truncated and reused with its
/// old mode, and a crash never leaves half a key under the real name.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let temporary = temporary_path(path);
    match fs::remove_file(&temporary) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    drop(file);
    if let Err(err) = written.and_then(|()| fs::rename(&temporary, path)) {
        // Best effort: the write already failed, and that is the error to report.
        let _ = fs::remove_file(&temporary);
        return Err(err);
    }
    Ok(())
}

fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// [`write_atomic`] with the error naming the file, for the PKI operations.
pub(crate) fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    write_atomic(path, contents, mode).map_err(|source| PkiError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

/// Writes a file that holds private keys (mode 0600 from the start, then
/// renamed into place), for tools outside this crate that bundle keys, such
/// as `govchain certs k8s-secrets`: one place keeps the rule that a key is
/// never world-readable, not even briefly.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    write_file(path, contents, SECRET_FILE_MODE)
}

pub(crate) fn create_dir(path: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(path).map_err(|source| PkiError::Io {
        action: "create directory",
        path: path.to_owned(),
        source,
    })
}

/// Reads a PEM file (certificate or key) for TLS or signing.
///
/// A missing file is the usual first-run mistake, so its error says how to
/// create the files.
pub fn read_pem(path: &Path) -> Result<String, PkiError> {
    let text = fs::read_to_string(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => PkiError::Missing {
            path: path.to_owned(),
        },
        _ => PkiError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        },
    })?;
    if !text.contains("-----BEGIN ") {
        return Err(PkiError::NotPem {
            path: path.to_owned(),
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn overwriting_a_loose_file_tightens_its_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("some.key");
        fs::write(&path, "old").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).expect("chmod");
        write_atomic(&path, b"new", SECRET_FILE_MODE).expect("write_atomic");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(fs::read_to_string(&path).expect("read"), "new");
        assert!(!temporary_path(&path).exists());
    }

    #[test]
    fn read_pem_names_the_missing_file_and_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.crt");
        let message = read_pem(&path).expect_err("missing").to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("govchain certs init"), "{message}");
    }

    #[test]
    fn read_pem_rejects_non_pem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.crt");
        fs::write(&path, "hello").expect("write");
        assert!(matches!(read_pem(&path), Err(PkiError::NotPem { .. })));
    }
}
