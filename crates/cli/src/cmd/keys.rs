//! `govchain keys`: Ed25519 transaction signing keys as PKCS#8 PEM files.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use govchain_crypto::SigningKey;
use serde::Serialize;

use crate::output::{self, Fields};

/// Private keys: readable by the owner only.
const SECRET_FILE_MODE: u32 = 0o600;

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Generate a new Ed25519 signing key.
    #[command(
        long_about = "Generate a new Ed25519 signing key for transactions and write it as \
            PKCS#8 PEM (the format OpenSSL uses) with mode 0600. Prints the public key, which \
            is the signer that the chain records. An existing file is never replaced \
            without --force.",
        after_help = "Examples:\n  \
            govchain keys new --out my-signer.key\n  \
            govchain record anchor r.pdf --dataset open-data/reports --record-id r-1 \\\n    \
            --signing-key my-signer.key"
    )]
    New(NewArgs),
    /// Print the public key of a signing key file.
    #[command(after_help = "Example:\n  govchain keys show my-signer.key")]
    Show(ShowArgs),
}

#[derive(Debug, Args)]
struct NewArgs {
    /// Where to write the private key.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Replace an existing file (the old key is lost).
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct ShowArgs {
    /// A PKCS#8 PEM Ed25519 private key.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

#[derive(Debug, Serialize)]
struct KeyView {
    public_key: String,
    file: PathBuf,
}

pub fn run(args: KeysArgs, json: bool) -> anyhow::Result<()> {
    let (key, file) = match args.command {
        KeysCommand::New(args) => {
            let key = SigningKey::generate()?;
            let pem = key.to_pkcs8_pem()?;
            write_secret(&args.out, pem.as_bytes(), args.force)?;
            (key, args.out)
        }
        KeysCommand::Show(args) => (load_signing_key(&args.file)?, args.file),
    };
    let view = KeyView {
        public_key: key.public_key().to_hex(),
        file,
    };
    if json {
        return output::print_json(&view);
    }
    let mut fields = Fields::new();
    fields
        .add("public key", &view.public_key)
        .add("key file", view.file.display());
    output::print(&fields.render())
}

/// Reads a signing key, warning on stderr when others can read the file.
pub fn load_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let pem = fs::read_to_string(path).map_err(|err| match err.kind() {
        io::ErrorKind::NotFound => anyhow::anyhow!(
            "{} does not exist; create a signing key with `govchain keys new --out {}`",
            path.display(),
            path.display()
        ),
        _ => anyhow::anyhow!("cannot read {}: {err}", path.display()),
    })?;
    let loose = fs::metadata(path).is_ok_and(|metadata| metadata.permissions().mode() & 0o077 != 0);
    if loose {
        eprintln!(
            "warning: {} is readable by other users; run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    SigningKey::from_pkcs8_pem(&pem)
        .with_context(|| format!("{} is not a signing key", path.display()))
}

/// Writes a secret through a temporary file created with mode 0600, so the
/// key is never readable by others, not even briefly. Without `force` the
/// final step is a hard link, which fails if the file appeared meanwhile.
pub(crate) fn write_secret(path: &Path, contents: &[u8], force: bool) -> anyhow::Result<()> {
    let exists = || {
        anyhow::anyhow!(
            "{} already exists; pass --force to replace it (the old key is lost) or choose another --out",
            path.display()
        )
    };
    if !force && path.exists() {
        return Err(exists());
    }
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let temporary = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    match fs::remove_file(&temporary) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            return Err(err).with_context(|| format!("cannot remove {}", temporary.display()));
        }
        _ => {}
    }
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(SECRET_FILE_MODE)
            .open(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()
    };
    let placed = write().and_then(|()| {
        if force {
            fs::rename(&temporary, path)
        } else {
            let linked = fs::hard_link(&temporary, path);
            // Best effort: the key is in place (or the link failed, which is
            // the error to report); the temporary name is only clutter.
            let _ = fs::remove_file(&temporary);
            linked
        }
    });
    match placed {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Err(exists()),
        Err(err) => {
            let _ = fs::remove_file(&temporary);
            Err(err).with_context(|| format!("cannot write {}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_is_private_and_loads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("signer.key");
        let key = SigningKey::generate().expect("key");
        let pem = key.to_pkcs8_pem().expect("pem");
        write_secret(&path, pem.as_bytes(), false).expect("write");
        let mode = fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            load_signing_key(&path).expect("load").public_key(),
            key.public_key()
        );
        assert!(!dir.path().join(".signer.key.tmp").exists());
    }

    #[test]
    fn an_existing_key_is_kept_without_force() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("signer.key");
        fs::write(&path, "old").expect("write");
        let message = write_secret(&path, b"new", false)
            .expect_err("exists")
            .to_string();
        assert!(message.contains("--force"), "{message}");
        assert_eq!(fs::read_to_string(&path).expect("read"), "old");
        write_secret(&path, b"new", true).expect("force");
        assert_eq!(fs::read_to_string(&path).expect("read"), "new");
    }

    #[test]
    fn a_missing_key_suggests_keys_new() {
        let dir = tempfile::tempdir().expect("tempdir");
        let message = load_signing_key(&dir.path().join("nope.key"))
            .expect_err("missing")
            .to_string();
        assert!(message.contains("govchain keys new"), "{message}");
    }
}
