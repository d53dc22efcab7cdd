//! The department secret behind pseudonyms: made once, kept in a file only
//! its owner can read, read here and never sent anywhere.

use std::fs::{self, File};
use std::io::{Read as _, Write as _};
use std::path::Path;

use anyhow::Context as _;
use govchain_deid::PseudonymKey;
use govchain_deid::cell::SECRET_BYTES_MAX;

/// Random bytes in a new secret: the HMAC-SHA-256 key size.
pub const NEW_SECRET_BYTES: usize = 32;

const _: () = assert!(NEW_SECRET_BYTES >= govchain_deid::SECRET_BYTES_MIN);

/// Writes a new secret of [`NEW_SECRET_BYTES`] random bytes to `path`,
/// readable by its owner only. An existing file is never replaced: a new
/// secret gives new pseudonyms, which no longer link to earlier versions.
pub fn create(path: &Path) -> anyhow::Result<()> {
    let mut secret = [0u8; NEW_SECRET_BYTES];
    getrandom::fill(&mut secret)
        .map_err(|err| anyhow::anyhow!("the system gave no random bytes: {err}"))?;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|err| {
        if err.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} already exists; a secret is never replaced (its pseudonyms would stop matching): choose another path",
                path.display()
            )
        } else {
            anyhow::Error::new(err).context(format!("cannot create {}", path.display()))
        }
    })?;
    file.write_all(&secret)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Reads the secret at `path` into a key. On unix a file that its group
/// or others may read (or write) is refused, naming its mode.
pub fn load(path: &Path) -> anyhow::Result<PseudonymKey> {
    let file = File::open(path)
        .with_context(|| format!("cannot open the secret file {}", path.display()))?;
    let metadata = file
        .metadata()
        .with_context(|| format!("cannot read the secret file {}", path.display()))?;
    check_private(path, &metadata)?;
    let mut secret = Vec::new();
    // One byte more than allowed, so that an oversized file is told apart.
    file.take(SECRET_BYTES_MAX as u64 + 1)
        .read_to_end(&mut secret)
        .with_context(|| format!("cannot read the secret file {}", path.display()))?;
    let key = PseudonymKey::new(&secret)
        .with_context(|| format!("the secret file {} cannot be used", path.display()));
    secret.fill(0);
    key
}

#[cfg(unix)]
fn check_private(path: &Path, metadata: &fs::Metadata) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = metadata.permissions().mode() & 0o777;
    anyhow::ensure!(
        mode & 0o077 == 0,
        "the secret file {} has mode {mode:04o}: its group or others may read it; run `chmod 600 {}`",
        path.display(),
        path.display()
    );
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path, _: &fs::Metadata) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_secret_is_private_random_and_never_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        create(&path).expect("made");
        let first = fs::read(&path).expect("read");
        assert_eq!(first.len(), NEW_SECRET_BYTES);
        let message = format!("{:#}", create(&path).expect_err("exists"));
        assert!(message.contains("never replaced"), "{message}");
        assert_eq!(fs::read(&path).expect("read"), first);
        let other = dir.path().join("other");
        create(&other).expect("made");
        assert_ne!(fs::read(&other).expect("read"), first);
        let key = load(&path).expect("loads");
        assert_eq!(
            key.pseudonym("x"),
            PseudonymKey::new(&first).expect("key").pseudonym("x")
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        create(&path).expect("made");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let message = format!("{:#}", load(&path).expect_err("group-readable"));
        assert!(message.contains("mode 0640"), "{message}");
        assert!(message.contains("chmod 600"), "{message}");
    }

    #[test]
    fn a_short_secret_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(&path)
            .and_then(|mut file| file.write_all(b"password"))
            .expect("write");
        let message = format!("{:#}", load(&path).expect_err("short"));
        assert!(message.contains("has 8 bytes"), "{message}");
    }
}
