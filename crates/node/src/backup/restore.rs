//! `govchain admin restore`: checks a backup directory and rebuilds a data
//! directory from it, offline.
//!
//! Everything is checked before anything is written: the manifest exists
//! (a backup without one is partial), is of this chain (chain id and
//! genesis hash against the node's genesis), and every file has the length
//! and SHA-256 the manifest lists. Only then are the ledger and the blob
//! store imported; the ledger is opened (chain id, genesis, head) and
//! checked in full, and its head must be the manifest's.
//!
//! No consensus records are written: the restored validator starts with
//! none, as a validator does on its first start, and its replica joins the
//! view of the latest certificate it applies while catching up by state
//! transfer. Its votes cast after the backup are lost with the old data
//! directory; see ARCHITECTURE.md for why that is the safe choice.

use std::fs;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use govchain_ledger::{Head, Ledger};
use govchain_pki::Genesis;
use sha2::{Digest as _, Sha256};

use super::format::{
    BLOBS_DUMP_FILE, DumpReader, LEDGER_DUMP_FILE, MANIFEST_FILE, MANIFEST_FORMAT_VERSION, Manifest,
};

/// The directory the node keeps its blob store in, under its data dir.
const BLOBS_DIR: &str = "blobs";

#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// The backup directory (`govchain admin backup --out`).
    pub from: PathBuf,
    /// The node's data directory to rebuild.
    pub data_dir: PathBuf,
    /// The node's genesis: the backup must be of its chain.
    pub genesis: Genesis,
    /// Replace the ledger, consensus records and blob store already in
    /// `data_dir`.
    pub force: bool,
}

#[derive(Clone, Debug)]
pub struct RestoreReport {
    pub manifest: Manifest,
    pub head: Head,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    #[error(
        "{path} is missing: the backup is partial (it stopped before its manifest was written) or not a govchain backup"
    )]
    NoManifest { path: PathBuf },
    #[error("cannot read the manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("the manifest's format version is {got}; this build restores version {supported}")]
    UnsupportedFormat { got: u32, supported: u32 },
    #[error(
        "the backup is of chain {backup:?}, but the genesis given is of chain {genesis:?}; restore it only onto a node of chain {backup:?}"
    )]
    ChainMismatch { backup: String, genesis: String },
    #[error(
        "the backup is of genesis {backup}, but the genesis given hashes to {genesis} (same chain id {chain_id:?}, another genesis)"
    )]
    GenesisMismatch {
        chain_id: String,
        backup: String,
        genesis: String,
    },
    #[error("the manifest lists {listed:?}; a backup has exactly {expected:?}")]
    Files {
        listed: Vec<String>,
        expected: Vec<&'static str>,
    },
    #[error("{path} is not empty ({entries}); pass --force to replace its ledger and blob store")]
    DataDirNotEmpty { path: PathBuf, entries: String },
    #[error(
        "backup file {path} is {got} bytes, but the manifest says {expected}: it is damaged or cut"
    )]
    FileLength {
        path: PathBuf,
        expected: u64,
        got: u64,
    },
    #[error(
        "backup file {path} has SHA-256 {got}, but the manifest says {expected}: it is damaged"
    )]
    FileHash {
        path: PathBuf,
        expected: String,
        got: String,
    },
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot import the ledger")]
    LedgerImport(#[source] govchain_ledger::ImportError),
    #[error("cannot import the blob store")]
    BlobImport(#[source] govchain_blobstore::dump::ImportError),
    #[error("the restored ledger does not open")]
    LedgerOpen(#[from] govchain_ledger::OpenError),
    #[error("the restored ledger fails its check")]
    LedgerCheck(#[from] govchain_ledger::CheckError),
    #[error("the restored blob store does not open")]
    BlobOpen(#[from] govchain_blobstore::BlobError),
    #[error(
        "the restored ledger's head is {got_height} ({got_hash}), but the manifest says {expected_height} ({expected_hash})"
    )]
    HeadMismatch {
        expected_height: u64,
        expected_hash: String,
        got_height: u64,
        got_hash: String,
    },
}

/// Checks the backup in `options.from` and rebuilds `options.data_dir`
/// from it (see the module docs). On an error after writing began, the
/// files written are removed again.
pub fn restore(options: &RestoreOptions) -> Result<RestoreReport, RestoreError> {
    let manifest = load_manifest(&options.from)?;
    check_chain(&manifest, &options.genesis)?;
    check_files(&manifest, &options.from)?;
    prepare_data_dir(&options.data_dir, options.force)?;
    match import_and_check(&manifest, options) {
        Ok(head) => Ok(RestoreReport { manifest, head }),
        Err(err) => {
            // Best effort: the import's own error is the one to report.
            let _ = remove_owned(&options.data_dir);
            Err(err)
        }
    }
}

fn load_manifest(from: &Path) -> Result<Manifest, RestoreError> {
    let path = from.join(MANIFEST_FILE);
    let text = match fs::read(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(RestoreError::NoManifest { path });
        }
        Err(err) => {
            return Err(RestoreError::Manifest {
                path,
                reason: err.to_string(),
            });
        }
    };
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|err| RestoreError::Manifest {
            path: path.clone(),
            reason: err.to_string(),
        })?;
    if manifest.format_version != MANIFEST_FORMAT_VERSION {
        return Err(RestoreError::UnsupportedFormat {
            got: manifest.format_version,
            supported: MANIFEST_FORMAT_VERSION,
        });
    }
    let listed: Vec<String> = manifest.files.iter().map(|f| f.name.clone()).collect();
    let expected = vec![LEDGER_DUMP_FILE, BLOBS_DUMP_FILE];
    if listed != expected {
        return Err(RestoreError::Files { listed, expected });
    }
    Ok(manifest)
}

fn check_chain(manifest: &Manifest, genesis: &Genesis) -> Result<(), RestoreError> {
    if manifest.chain_id != genesis.chain_id {
        return Err(RestoreError::ChainMismatch {
            backup: manifest.chain_id.clone(),
            genesis: genesis.chain_id.clone(),
        });
    }
    let genesis_hash = genesis.hash().to_hex();
    if manifest.genesis_hash != genesis_hash {
        return Err(RestoreError::GenesisMismatch {
            chain_id: manifest.chain_id.clone(),
            backup: manifest.genesis_hash.clone(),
            genesis: genesis_hash,
        });
    }
    Ok(())
}

/// Every file's length and SHA-256, before anything is written.
fn check_files(manifest: &Manifest, from: &Path) -> Result<(), RestoreError> {
    for file in &manifest.files {
        let path = from.join(&file.name);
        let (bytes, sha256) = hash_file(&path)?;
        if bytes != file.bytes {
            return Err(RestoreError::FileLength {
                path,
                expected: file.bytes,
                got: bytes,
            });
        }
        if sha256 != file.sha256 {
            return Err(RestoreError::FileHash {
                path,
                expected: file.sha256.clone(),
                got: sha256,
            });
        }
    }
    Ok(())
}

fn hash_file(path: &Path) -> Result<(u64, String), RestoreError> {
    let io_error = |source| RestoreError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    };
    let mut file = fs::File::open(path).map_err(io_error)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1024 * 1024];
    let mut total = 0u64;
    loop {
        let read = file.read(&mut buffer).map_err(io_error)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        total += read as u64;
    }
    Ok((total, hex::encode(hasher.finalize())))
}

/// The files a node keeps in its data directory, which a restore owns.
fn owned_entries(data_dir: &Path) -> [PathBuf; 3] {
    [
        data_dir.join(govchain_ledger::LEDGER_FILE_NAME),
        data_dir.join(govchain_ledger::CONSENSUS_FILE_NAME),
        data_dir.join(BLOBS_DIR),
    ]
}

/// An absent or empty directory is used as is; a non-empty one only with
/// `force`, which removes the node's own files from it.
fn prepare_data_dir(data_dir: &Path, force: bool) -> Result<(), RestoreError> {
    let io_error = |action, source| RestoreError::Io {
        action,
        path: data_dir.to_owned(),
        source,
    };
    let entries: Vec<String> = match fs::read_dir(data_dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(err) => return Err(io_error("read", err)),
    };
    if !entries.is_empty() && !force {
        return Err(RestoreError::DataDirNotEmpty {
            path: data_dir.to_owned(),
            entries: entries.join(", "),
        });
    }
    remove_owned(data_dir)?;
    fs::create_dir_all(data_dir).map_err(|err| io_error("create", err))
}

fn remove_owned(data_dir: &Path) -> Result<(), RestoreError> {
    for path in owned_entries(data_dir) {
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match removed {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(RestoreError::Io {
                    action: "remove",
                    path,
                    source,
                });
            }
        }
    }
    Ok(())
}

fn import_and_check(manifest: &Manifest, options: &RestoreOptions) -> Result<Head, RestoreError> {
    let data_dir = &options.data_dir;
    govchain_ledger::import(data_dir, dump_rows(&options.from.join(LEDGER_DUMP_FILE))?)
        .map_err(RestoreError::LedgerImport)?;
    govchain_blobstore::dump::import(
        &data_dir.join(BLOBS_DIR),
        dump_rows(&options.from.join(BLOBS_DUMP_FILE))?,
    )
    .map_err(RestoreError::BlobImport)?;
    let ledger = Ledger::open(data_dir, &options.genesis.chain_id, options.genesis.hash())?;
    let head = ledger.head();
    if head.height != manifest.height || head.hash.to_hex() != manifest.head_hash {
        return Err(RestoreError::HeadMismatch {
            expected_height: manifest.height,
            expected_hash: manifest.head_hash.clone(),
            got_height: head.height,
            got_hash: head.hash.to_hex(),
        });
    }
    ledger.check()?;
    drop(govchain_blobstore::BlobStore::open(
        &data_dir.join(BLOBS_DIR),
    )?);
    Ok(head)
}

fn dump_rows(path: &Path) -> Result<DumpReader<BufReader<fs::File>>, RestoreError> {
    let file = fs::File::open(path).map_err(|source| RestoreError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    Ok(DumpReader::new(BufReader::with_capacity(1024 * 1024, file)))
}
