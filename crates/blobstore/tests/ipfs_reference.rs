//! Compares `cid_of_reader` with IPFS's JavaScript importer on random
//! files, when the importer is installed.
//!
//! Set `GOVCHAIN_IPFS_REFERENCE_DIR` to a folder holding
//! `node_modules/ipfs-unixfs-importer` (see
//! `tests/reference/ipfs-cid-vectors.sh` for the setup) and have `node` on
//! the PATH. `GOVCHAIN_IPFS_REFERENCE_SEED` replays a run. Without the
//! folder the test only says so: the embedded vectors in `tests/vectors.rs`
//! are the check that always runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::params;
use govchain_blobstore::{ChunkerParams, PROFILE_UNIXFS_V1_2025, cid_of_reader};

const FILES: usize = 12;

/// xorshift64*: enough randomness for sizes and bytes, and replayable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next() >> 56) as u8).collect()
    }
}

/// A folder with `ipfs-cid.mjs` and a link to the installed packages: the
/// script imports ES modules, which Node resolves from the script's folder
/// and not from NODE_PATH.
fn prepare(reference: &Path, work: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/ipfs-cid.mjs");
    let copy = work.join("ipfs-cid.mjs");
    std::fs::copy(&script, &copy).expect("copy ipfs-cid.mjs");
    std::os::unix::fs::symlink(reference.join("node_modules"), work.join("node_modules"))
        .expect("link node_modules");
    copy
}

fn reference_cid(script: &Path, file: &Path, params: Option<ChunkerParams>) -> String {
    let mut command = Command::new("node");
    command.arg(script).arg(file);
    if let Some(params) = params {
        command
            .arg(params.chunk_size_bytes().to_string())
            .arg(params.links_per_node_max().to_string());
    }
    let output = command.output().expect("node runs");
    assert!(
        output.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("node prints UTF-8")
        .trim()
        .to_owned()
}

#[test]
fn random_files_match_the_javascript_importer() {
    let Some(reference) = std::env::var_os("GOVCHAIN_IPFS_REFERENCE_DIR") else {
        println!(
            "GOVCHAIN_IPFS_REFERENCE_DIR is not set: checked only the embedded vectors \
             (tests/vectors.rs), not random files against the JavaScript importer"
        );
        return;
    };
    let reference = PathBuf::from(reference);
    assert!(
        reference.join("node_modules/ipfs-unixfs-importer").is_dir(),
        "GOVCHAIN_IPFS_REFERENCE_DIR={} has no node_modules/ipfs-unixfs-importer",
        reference.display()
    );
    let seed = std::env::var("GOVCHAIN_IPFS_REFERENCE_SEED")
        .ok()
        .map(|seed| seed.parse::<u64>().expect("seed is a u64"))
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock after 1970")
                .as_nanos() as u64
                | 1
        });
    println!("SEED={seed} (replay with GOVCHAIN_IPFS_REFERENCE_SEED={seed})");
    let mut rng = Rng(seed);
    let work = tempfile::tempdir().expect("temp dir");
    let script = prepare(&reference, work.path());
    let file = work.path().join("file");
    for round in 0..FILES {
        // Half profile-sized files (up to 3 MiB), half small chunks and
        // narrow nodes for deep trees.
        let (size, chosen) = if round % 2 == 0 {
            (rng.below(3 * 1024 * 1024), None)
        } else {
            let chunk = 1 + rng.below(64) as u32;
            let width = 2 + rng.below(7) as u32;
            (rng.below(4000), Some(params(chunk, width)))
        };
        let bytes = rng.bytes(size as usize);
        std::fs::write(&file, &bytes).expect("write file");
        let ours = cid_of_reader(&bytes[..], chosen.unwrap_or(PROFILE_UNIXFS_V1_2025))
            .expect("reads")
            .to_string();
        let theirs = reference_cid(&script, &file, chosen);
        assert_eq!(
            ours, theirs,
            "{size} bytes with {chosen:?} (SEED={seed}, round {round})"
        );
    }
    println!("{FILES} random files matched the JavaScript importer");
}
