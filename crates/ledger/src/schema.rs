//! The on-disk layout: table definitions and the byte encodings of records.
//!
//! Every integer the ledger stores, keys included, is a fixed-width
//! big-endian byte array, so the file format does not depend on how redb
//! encodes its own integer types, and big-endian height keys sort in height
//! order. Decoders treat the bytes as untrusted input and return an
//! [`Inconsistency`] instead of panicking.

use govchain_crypto::Digest;
use redb::TableDefinition;

use crate::Head;
use crate::error::Inconsistency;

/// Bumped whenever a table or a record encoding changes; `open` refuses
/// any other version rather than misreading it.
///
/// Version 2 added [`RECENT_TRANSACTIONS`]: the transaction index is kept
/// in two tiers (see `recent`).
///
/// Version 3 added [`STATE_TREE`]: the state root is the root of a Merkle
/// tree over the whole state, no longer a hash chain over write sets, so a
/// version 2 file holds neither the nodes nor roots of that meaning.
///
/// Version 4 added [`QUERY_INDEX`], written with each block from its first.
///
/// Version 5 moved the block bodies out of this file into the block log
/// (`block_log`), and commits this file durably only at checkpoints; the
/// [`BLOCKS`] table is gone. `migrate` turns a version 4 file into one.
pub(crate) const FORMAT_VERSION: u64 = 5;
/// The last version that kept block bodies in [`BLOCKS`].
pub(crate) const FORMAT_VERSION_BLOCKS_IN_FILE: u64 = 4;

/// A height as a key: `u64` big-endian.
pub(crate) type HeightKey = [u8; 8];

/// Height -> the block exactly as the caller encoded it. Only in version 4
/// files and in dumps: `migrate` and `import` move it into the block log.
pub(crate) const BLOCKS: TableDefinition<HeightKey, &[u8]> = TableDefinition::new("blocks");

/// Height -> what pruning kept of a block (its header and certificate):
/// only in dumps of a pruned ledger, next to [`BLOCKS`] for the whole
/// blocks; `import` moves both into the block log.
pub(crate) const PRUNED_BLOCKS: TableDefinition<HeightKey, &[u8]> =
    TableDefinition::new("pruned_blocks");

/// Height -> [`BlockRecord`]: the few facts about a block that the ledger
/// needs without decoding it (its hash for the hash index, its parent for
/// the chain link, its transaction count for the transaction index). Kept
/// apart from [`BLOCKS`] so that `check` never loads block bodies.
pub(crate) const BLOCK_RECORDS: TableDefinition<HeightKey, &[u8]> =
    TableDefinition::new("block_records");

/// Block hash -> height (`u64` big-endian).
pub(crate) const HEIGHT_BY_HASH: TableDefinition<[u8; 32], [u8; 8]> =
    TableDefinition::new("height_by_hash");

/// Transaction id -> `height ‖ index ‖ result` (see [`encode_transaction`]):
/// the merged tier of the transaction index. A transaction reaches it at
/// most `recent::RANGES - 1` blocks after its own (see `recent`).
pub(crate) const TRANSACTIONS: TableDefinition<[u8; 32], &[u8]> =
    TableDefinition::new("transactions");

/// Height -> every transaction of that block as `(id, result)` in block
/// order (see [`encode_recent_row`]): the recent tier of the transaction
/// index, one sequential row per block instead of one random-keyed row per
/// transaction. Rows exist only for the last `recent::RANGES - 1` heights.
pub(crate) const RECENT_TRANSACTIONS: TableDefinition<HeightKey, &[u8]> =
    TableDefinition::new("recent_transactions");

/// World state: key -> value.
pub(crate) const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");

/// The state tree's nodes at the head: node path -> encoded node. The
/// ledger stores them as the caller computed them (`govchain_exec::
/// state_tree` defines both) and never decodes them.
pub(crate) const STATE_TREE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state_tree");

/// Query index keys -> nothing: the caller's keys for listings (anchors by
/// dataset, a signer's transactions, ...), written with their block and
/// read back in key order by prefix. The ledger never decodes them.
pub(crate) const QUERY_INDEX: TableDefinition<&[u8], ()> = TableDefinition::new("query_index");

/// Identity of the ledger and its head; keys are the `META_*` constants.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

pub(crate) const META_FORMAT_VERSION: &str = "format_version";
pub(crate) const META_CHAIN_ID: &str = "chain_id";
pub(crate) const META_GENESIS_HASH: &str = "genesis_hash";
pub(crate) const META_HEAD: &str = "head";
/// The first height held, when not 1: a ledger installed from a state
/// snapshot starts at the snapshot's block (see `install`).
pub(crate) const META_FIRST_HEIGHT: &str = "first_height";
/// The last height of the last pruned segment of the block log (absent: 0,
/// nothing pruned). Written durably before a pruned segment replaces its
/// whole one, so that `open` knows which interrupted rewrite to finish.
pub(crate) const META_PRUNED_THROUGH: &str = "pruned_through";
/// How many query index keys the pruned blocks derived, counted by the
/// caller while pruning: `ledger verify` can no longer derive them.
pub(crate) const META_PRUNED_QUERY_KEYS: &str = "pruned_query_keys";

pub(crate) const fn height_key(height: u64) -> HeightKey {
    height.to_be_bytes()
}

pub(crate) const fn height_from_key(key: HeightKey) -> u64 {
    u64::from_be_bytes(key)
}

/// Splits `N` bytes off the front of `bytes`; callers check the length first.
fn take<const N: usize>(bytes: &mut &[u8]) -> [u8; N] {
    let (head, rest) = bytes.split_at(N);
    *bytes = rest;
    let mut array = [0; N];
    array.copy_from_slice(head);
    array
}

fn check_length(table: &'static str, bytes: &[u8], expected: usize) -> Result<(), Inconsistency> {
    if bytes.len() == expected {
        Ok(())
    } else {
        Err(Inconsistency::RecordLength {
            table,
            got: bytes.len(),
            expected,
        })
    }
}

pub(crate) fn encode_u64(value: u64) -> [u8; 8] {
    value.to_be_bytes()
}

pub(crate) fn decode_u64(table: &'static str, bytes: &[u8]) -> Result<u64, Inconsistency> {
    check_length(table, bytes, 8)?;
    let mut rest = bytes;
    Ok(u64::from_be_bytes(take(&mut rest)))
}

pub(crate) fn decode_digest(table: &'static str, bytes: &[u8]) -> Result<Digest, Inconsistency> {
    check_length(table, bytes, Digest::LEN)?;
    let mut rest = bytes;
    Ok(Digest::from_bytes(take(&mut rest)))
}

/// `height ‖ hash ‖ state_root ‖ timestamp_ms`.
pub(crate) const HEAD_BYTES: usize = 8 + 32 + 32 + 8;

pub(crate) fn encode_head(head: &Head) -> [u8; HEAD_BYTES] {
    let mut bytes = [0; HEAD_BYTES];
    bytes[0..8].copy_from_slice(&head.height.to_be_bytes());
    bytes[8..40].copy_from_slice(head.hash.as_bytes());
    bytes[40..72].copy_from_slice(head.state_root.as_bytes());
    bytes[72..80].copy_from_slice(&head.timestamp_ms.to_be_bytes());
    bytes
}

pub(crate) fn decode_head(bytes: &[u8]) -> Result<Head, Inconsistency> {
    check_length("meta.head", bytes, HEAD_BYTES)?;
    let mut rest = bytes;
    Ok(Head {
        height: u64::from_be_bytes(take(&mut rest)),
        hash: Digest::from_bytes(take(&mut rest)),
        state_root: Digest::from_bytes(take(&mut rest)),
        timestamp_ms: u64::from_be_bytes(take(&mut rest)),
    })
}

/// The fixed-size facts about one stored block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockRecord {
    pub(crate) hash: Digest,
    pub(crate) parent_hash: Digest,
    pub(crate) state_root: Digest,
    pub(crate) timestamp_ms: u64,
    pub(crate) transaction_count: u32,
}

/// `hash ‖ parent_hash ‖ state_root ‖ timestamp_ms ‖ transaction_count`.
pub(crate) const BLOCK_RECORD_BYTES: usize = 32 + 32 + 32 + 8 + 4;

impl BlockRecord {
    pub(crate) fn encode(&self) -> [u8; BLOCK_RECORD_BYTES] {
        let mut bytes = [0; BLOCK_RECORD_BYTES];
        bytes[0..32].copy_from_slice(self.hash.as_bytes());
        bytes[32..64].copy_from_slice(self.parent_hash.as_bytes());
        bytes[64..96].copy_from_slice(self.state_root.as_bytes());
        bytes[96..104].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        bytes[104..108].copy_from_slice(&self.transaction_count.to_be_bytes());
        bytes
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Inconsistency> {
        check_length("block_records", bytes, BLOCK_RECORD_BYTES)?;
        let mut rest = bytes;
        Ok(Self {
            hash: Digest::from_bytes(take(&mut rest)),
            parent_hash: Digest::from_bytes(take(&mut rest)),
            state_root: Digest::from_bytes(take(&mut rest)),
            timestamp_ms: u64::from_be_bytes(take(&mut rest)),
            transaction_count: u32::from_be_bytes(take(&mut rest)),
        })
    }
}

/// `height ‖ index ‖ result`: where a transaction was committed, and the
/// result bytes the executor produced for it.
pub(crate) const TRANSACTION_RECORD_PREFIX_BYTES: usize = 8 + 4;

pub(crate) fn encode_transaction(height: u64, index: u32, result: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(TRANSACTION_RECORD_PREFIX_BYTES + result.len());
    bytes.extend_from_slice(&height.to_be_bytes());
    bytes.extend_from_slice(&index.to_be_bytes());
    bytes.extend_from_slice(result);
    bytes
}

/// Returns `(height, index, result)`.
pub(crate) fn decode_transaction(bytes: &[u8]) -> Result<(u64, u32, &[u8]), Inconsistency> {
    if bytes.len() < TRANSACTION_RECORD_PREFIX_BYTES {
        return Err(Inconsistency::RecordTooShort {
            table: "transactions",
            got: bytes.len(),
            min: TRANSACTION_RECORD_PREFIX_BYTES,
        });
    }
    let mut rest = bytes;
    let height = u64::from_be_bytes(take(&mut rest));
    let index = u32::from_be_bytes(take(&mut rest));
    Ok((height, index, rest))
}

/// `(id ‖ result length as u32 ‖ result)` per transaction, in block order.
pub(crate) fn encode_recent_row(transactions: &[(Digest, Vec<u8>)]) -> Vec<u8> {
    let size = transactions
        .iter()
        .map(|(_, result)| Digest::LEN + 4 + result.len())
        .sum();
    let mut bytes = Vec::with_capacity(size);
    for (id, result) in transactions {
        // `check_limits` bounded every result far below `u32::MAX` bytes.
        let len = u32::try_from(result.len()).expect("a result is under 4 GiB");
        bytes.extend_from_slice(id.as_bytes());
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(result);
    }
    bytes
}

/// The `(id, result)` pairs of a row written by [`encode_recent_row`], in
/// block order; a truncated entry is an [`Inconsistency`].
pub(crate) fn decode_recent_row(
    mut bytes: &[u8],
) -> impl Iterator<Item = Result<(Digest, &[u8]), Inconsistency>> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let too_short = |got| Inconsistency::RecordTooShort {
            table: "recent_transactions",
            got,
            min: Digest::LEN + 4,
        };
        if bytes.len() < Digest::LEN + 4 {
            let got = bytes.len();
            bytes = &[];
            return Some(Err(too_short(got)));
        }
        let id = Digest::from_bytes(take(&mut bytes));
        let len = u32::from_be_bytes(take(&mut bytes)) as usize;
        if bytes.len() < len {
            let got = Digest::LEN + 4 + bytes.len();
            bytes = &[];
            return Some(Err(too_short(got)));
        }
        let (result, rest) = bytes.split_at(len);
        bytes = rest;
        Some(Ok((id, result)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(byte: u8) -> Digest {
        Digest::from_bytes([byte; 32])
    }

    #[test]
    fn height_keys_sort_by_height() {
        let heights = [0, 1, 255, 256, 65_536, u64::MAX - 1, u64::MAX];
        for pair in heights.windows(2) {
            assert!(height_key(pair[0]) < height_key(pair[1]));
        }
        assert_eq!(height_from_key(height_key(0x0102_0304)), 0x0102_0304);
    }

    #[test]
    fn head_round_trip() {
        let head = Head {
            height: 7,
            hash: digest(1),
            state_root: digest(2),
            timestamp_ms: 1_700_000_000_000,
        };
        assert_eq!(decode_head(&encode_head(&head)), Ok(head));
    }

    #[test]
    fn block_record_round_trip() {
        let record = BlockRecord {
            hash: digest(3),
            parent_hash: digest(4),
            state_root: digest(5),
            timestamp_ms: u64::MAX,
            transaction_count: 0x0a0b_0c0d,
        };
        let bytes = record.encode();
        assert_eq!(&bytes[104..], &[0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(BlockRecord::decode(&bytes), Ok(record));
    }

    #[test]
    fn transaction_round_trip() {
        let bytes = encode_transaction(9, 2, b"ok");
        assert_eq!(&bytes[..8], &9_u64.to_be_bytes());
        assert_eq!(decode_transaction(&bytes), Ok((9, 2, &b"ok"[..])));
        assert_eq!(decode_transaction(&bytes[..12]), Ok((9, 2, &b""[..])));
    }

    #[test]
    fn recent_row_round_trip() {
        let transactions = vec![(digest(1), b"ok".to_vec()), (digest(2), Vec::new())];
        let bytes = encode_recent_row(&transactions);
        let decoded: Vec<_> = decode_recent_row(&bytes)
            .map(|entry| entry.map(|(id, result)| (id, result.to_vec())))
            .collect::<Result<_, _>>()
            .expect("decodes");
        assert_eq!(decoded, transactions);
        assert_eq!(decode_recent_row(&[]).count(), 0);
        // A cut anywhere inside an entry is reported once, then ends.
        for cut in [1, Digest::LEN + 3, Digest::LEN + 5] {
            let entries: Vec<_> = decode_recent_row(&bytes[..cut]).collect();
            assert_eq!(entries.len(), 1, "cut at {cut}");
            assert!(
                matches!(entries[0], Err(Inconsistency::RecordTooShort { .. })),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn wrong_lengths_are_inconsistencies() {
        assert_eq!(
            decode_head(&[0; HEAD_BYTES - 1]),
            Err(Inconsistency::RecordLength {
                table: "meta.head",
                got: HEAD_BYTES - 1,
                expected: HEAD_BYTES,
            })
        );
        assert!(BlockRecord::decode(&[0; BLOCK_RECORD_BYTES + 1]).is_err());
        assert_eq!(
            decode_transaction(&[0; 11]),
            Err(Inconsistency::RecordTooShort {
                table: "transactions",
                got: 11,
                min: 12,
            })
        );
        assert!(decode_u64("meta", &[0; 7]).is_err());
        assert!(decode_digest("meta", &[0; 33]).is_err());
    }
}
