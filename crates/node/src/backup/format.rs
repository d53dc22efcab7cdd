//! The backup directory's files: the row framing of `ledger.dump` and
//! `blobs.dump`, and `manifest.json`.
//!
//! A dump file is [`DUMP_MAGIC`], then rows, each
//! `table length (u8) ‖ table ‖ key length (u32 BE) ‖ key ‖ value length
//! (u32 BE) ‖ value`. The rows are the ledger's and blob store's own
//! (`govchain_ledger::import`, `govchain_blobstore::dump`); lengths are
//! bounded so that a damaged file cannot make a reader allocate gigabytes.

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

/// The first bytes of every dump file, with the format's version.
pub const DUMP_MAGIC: &[u8; 16] = b"govchain-dump-1\n";
/// The ledger's rows.
pub const LEDGER_DUMP_FILE: &str = "ledger.dump";
/// The blob store's rows.
pub const BLOBS_DUMP_FILE: &str = "blobs.dump";
/// Written last: a backup directory without it is partial.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest's format; restore refuses any other.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

/// Table names are short schema constants.
pub const TABLE_NAME_BYTES_MAX: usize = 64;
/// Ledger state keys are at most 4 KiB; blob keys are CIDs.
pub const KEY_BYTES_MAX: usize = 64 * 1024;
/// The largest value: a 64 MiB block, or a block's transaction row, with
/// room to spare.
pub const VALUE_BYTES_MAX: usize = 256 * 1024 * 1024;

const _: () = assert!(TABLE_NAME_BYTES_MAX <= u8::MAX as usize);
const _: () = assert!(VALUE_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(govchain_ledger::BLOCK_SIZE_BYTES_MAX < VALUE_BYTES_MAX);

/// One row: table name, key bytes, value bytes.
pub type DumpRow = (String, Vec<u8>, Vec<u8>);

/// What a backup is of, and its files' lengths and SHA-256, as `manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub chain_id: String,
    /// Hex SHA-256 of genesis.
    pub genesis_hash: String,
    pub height: u64,
    /// Hex hash of the block at `height`.
    pub head_hash: String,
    /// The department whose node was backed up.
    pub node: String,
    pub created_at_ms: u64,
    pub files: Vec<ManifestFile>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub name: String,
    pub bytes: u64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
}

/// Appends one row's framing and bytes to `out`.
///
/// # Panics
///
/// If a length is over its bound: the rows come from our own schema, so
/// that is a bug.
pub fn encode_row(out: &mut Vec<u8>, table: &str, key: &[u8], value: &[u8]) {
    assert!(table.len() <= TABLE_NAME_BYTES_MAX);
    assert!(key.len() <= KEY_BYTES_MAX);
    assert!(value.len() <= VALUE_BYTES_MAX);
    out.push(table.len() as u8);
    out.extend_from_slice(table.as_bytes());
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

/// The rows of a dump file, read one at a time.
pub struct DumpReader<R> {
    reader: R,
    started: bool,
    failed: bool,
}

impl<R: Read> DumpReader<R> {
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            started: false,
            failed: false,
        }
    }

    fn next_row(&mut self) -> io::Result<Option<DumpRow>> {
        if !self.started {
            let mut magic = [0u8; DUMP_MAGIC.len()];
            self.reader.read_exact(&mut magic)?;
            if &magic != DUMP_MAGIC {
                return Err(invalid("the file does not start with govchain-dump-1"));
            }
            self.started = true;
        }
        let mut table_len = [0u8; 1];
        if self.reader.read(&mut table_len)? == 0 {
            return Ok(None);
        }
        let table = self.read_exact_vec(usize::from(table_len[0]), TABLE_NAME_BYTES_MAX)?;
        let table = String::from_utf8(table).map_err(|_| invalid("a table name is not UTF-8"))?;
        let key_len = self.read_len()?;
        let key = self.read_exact_vec(key_len, KEY_BYTES_MAX)?;
        let value_len = self.read_len()?;
        let value = self.read_exact_vec(value_len, VALUE_BYTES_MAX)?;
        Ok(Some((table, key, value)))
    }

    fn read_len(&mut self) -> io::Result<usize> {
        let mut bytes = [0u8; 4];
        self.reader.read_exact(&mut bytes)?;
        usize::try_from(u32::from_be_bytes(bytes)).map_err(|_| invalid("a length overflows"))
    }

    fn read_exact_vec(&mut self, len: usize, max: usize) -> io::Result<Vec<u8>> {
        if len > max {
            return Err(invalid(&format!(
                "a field of {len} bytes is over the {max} bytes allowed"
            )));
        }
        let mut bytes = vec![0u8; len];
        self.reader.read_exact(&mut bytes)?;
        Ok(bytes)
    }
}

impl<R: Read> Iterator for DumpReader<R> {
    type Item = io::Result<DumpRow>;

    /// After an error, the reader ends: a row boundary is lost.
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_row() {
            Ok(row) => row.map(Ok),
            Err(err) => {
                self.failed = true;
                Some(Err(err))
            }
        }
    }
}

fn invalid(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(rows: &[(&str, &[u8], &[u8])]) -> Vec<u8> {
        let mut out = DUMP_MAGIC.to_vec();
        for (table, key, value) in rows {
            encode_row(&mut out, table, key, value);
        }
        out
    }

    #[test]
    fn rows_round_trip() {
        let rows: [(&str, &[u8], &[u8]); 3] = [
            ("meta", b"head", &[1, 2, 3]),
            ("state", b"", b""),
            ("blocks", &[0, 0, 0, 0, 0, 0, 0, 1], &[7; 70_000]),
        ];
        let bytes = dump(&rows);
        let read: Vec<DumpRow> = DumpReader::new(bytes.as_slice())
            .collect::<io::Result<_>>()
            .expect("reads back");
        assert_eq!(read.len(), rows.len());
        for ((table, key, value), (read_table, read_key, read_value)) in rows.iter().zip(&read) {
            assert_eq!(table, read_table);
            assert_eq!(key, read_key);
            assert_eq!(value, read_value);
        }
    }

    #[test]
    fn a_cut_or_foreign_file_is_an_error_not_a_short_dump() {
        let bytes = dump(&[("meta", b"head", &[1, 2, 3])]);
        let cut: Vec<io::Result<DumpRow>> = DumpReader::new(&bytes[..bytes.len() - 1]).collect();
        assert_eq!(cut.len(), 1);
        let err = cut.into_iter().next().expect("one item").expect_err("cut");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let foreign: Vec<io::Result<DumpRow>> =
            DumpReader::new(&b"SQLite format 3\0xyz"[..]).collect();
        let err = foreign
            .into_iter()
            .next()
            .expect("one item")
            .expect_err("foreign");
        assert!(err.to_string().contains("govchain-dump-1"), "{err}");
    }

    #[test]
    fn an_oversized_length_is_refused_before_allocating() {
        let mut bytes = DUMP_MAGIC.to_vec();
        bytes.push(4);
        bytes.extend_from_slice(b"meta");
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        let err = DumpReader::new(bytes.as_slice())
            .next()
            .expect("one item")
            .expect_err("too long");
        assert!(
            err.to_string().contains("over the 65536 bytes allowed"),
            "{err}"
        );
    }
}
