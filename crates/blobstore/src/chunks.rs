//! Raw chunks stored in pieces.
//!
//! redb keeps a value larger than a page in a region of a power-of-two
//! size that must also hold the key and the leaf's header. A 1 MiB chunk
//! stored whole therefore took a 2 MiB region, and every upload wrote
//! twice its size to disk (measured with `/proc/<pid>/io`: 2.00× the
//! bytes, whether the keys were CIDs or sequence numbers). Pieces just
//! under 512 KiB fill their regions: 1.00×.
//!
//! A chunk of `n` bytes is stored under `cid ‖ i` for `i` in
//! `0..ceil(n / CHUNK_PIECE_BYTES_MAX)` (at least one piece, so an empty
//! chunk is stored too), each piece full but the last.

use redb::{ReadableTable, StorageError, Table};

use crate::CHUNK_SIZE_BYTES_MAX;

/// The most bytes one piece holds: 512 KiB less room for the key and the
/// leaf header.
pub(crate) const CHUNK_PIECE_BYTES_MAX: usize = 512 * 1024 - 1024;

/// Pieces of the largest chunk; the piece index is one byte.
const PIECES_MAX: usize = (CHUNK_SIZE_BYTES_MAX as usize).div_ceil(CHUNK_PIECE_BYTES_MAX);
const _: () = assert!(PIECES_MAX <= u8::MAX as usize);

fn piece_key(cid: &[u8], index: usize) -> Vec<u8> {
    let mut key = Vec::with_capacity(cid.len() + 1);
    key.extend_from_slice(cid);
    // At most `PIECES_MAX`, which fits a byte.
    key.push(index as u8);
    key
}

/// Stores `bytes` as the chunk `cid` (binary form), replacing any pieces
/// stored under it before.
pub(crate) fn write(
    table: &mut Table<'_, &'static [u8], &'static [u8]>,
    cid: &[u8],
    bytes: &[u8],
) -> Result<(), StorageError> {
    assert!(bytes.len() <= CHUNK_SIZE_BYTES_MAX as usize);
    let pieces = bytes.len().div_ceil(CHUNK_PIECE_BYTES_MAX).max(1);
    for index in 0..pieces {
        let start = index * CHUNK_PIECE_BYTES_MAX;
        let end = (start + CHUNK_PIECE_BYTES_MAX).min(bytes.len());
        table.insert(piece_key(cid, index).as_slice(), &bytes[start..end])?;
    }
    // Pieces past the end could only be damage; a read would append them.
    for index in pieces..PIECES_MAX {
        if table.remove(piece_key(cid, index).as_slice())?.is_none() {
            break;
        }
    }
    Ok(())
}

/// The bytes stored as the chunk `cid`: its pieces in order, or `None` if
/// it has none. Not verified here: the caller hashes them against `cid`,
/// so a missing, extra or damaged piece shows as a hash mismatch.
pub(crate) fn read(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    cid: &[u8],
) -> Result<Option<Vec<u8>>, StorageError> {
    let Some(first) = table.get(piece_key(cid, 0).as_slice())? else {
        return Ok(None);
    };
    let mut bytes = first.value().to_vec();
    for index in 1..=PIECES_MAX {
        match table.get(piece_key(cid, index).as_slice())? {
            Some(piece) => bytes.extend_from_slice(piece.value()),
            None => break,
        }
    }
    Ok(Some(bytes))
}

/// Removes every piece of the chunk `cid`, including pieces left behind by
/// damage to an earlier one; says whether it had any.
pub(crate) fn remove(
    table: &mut Table<'_, &'static [u8], &'static [u8]>,
    cid: &[u8],
) -> Result<bool, StorageError> {
    let mut removed = false;
    for index in 0..=PIECES_MAX {
        removed |= table.remove(piece_key(cid, index).as_slice())?.is_some();
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableDatabase as _, ReadableTableMetadata as _, TableDefinition};

    use super::*;

    const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("pieces");

    fn with_table<T>(
        db: &Database,
        f: impl FnOnce(&mut Table<'_, &'static [u8], &'static [u8]>) -> T,
    ) -> T {
        let db_write = db.begin_write().expect("write");
        let result = {
            let mut table = db_write.open_table(TABLE).expect("table");
            f(&mut table)
        };
        db_write.commit().expect("commit");
        result
    }

    fn read_back(db: &Database, cid: &[u8]) -> Option<Vec<u8>> {
        let snapshot = db.begin_read().expect("read");
        let table = snapshot.open_table(TABLE).expect("table");
        read(&table, cid).expect("reads")
    }

    #[test]
    fn chunks_of_every_size_round_trip_in_full_pieces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::create(dir.path().join("t.redb")).expect("db");
        let sizes = [
            0,
            1,
            CHUNK_PIECE_BYTES_MAX - 1,
            CHUNK_PIECE_BYTES_MAX,
            CHUNK_PIECE_BYTES_MAX + 1,
            CHUNK_SIZE_BYTES_MAX as usize,
        ];
        for (n, size) in sizes.into_iter().enumerate() {
            let cid = [n as u8; 36];
            let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            with_table(&db, |table| write(table, &cid, &bytes)).expect("writes");
            assert_eq!(read_back(&db, &cid), Some(bytes), "size {size}");
            let pieces = with_table(&db, |table| {
                (0..=PIECES_MAX)
                    .filter(|index| {
                        table
                            .get(piece_key(&cid, *index).as_slice())
                            .expect("get")
                            .is_some()
                    })
                    .count()
            });
            assert_eq!(pieces, size.div_ceil(CHUNK_PIECE_BYTES_MAX).max(1));
        }
        assert_eq!(read_back(&db, &[0xee; 36]), None);
    }

    #[test]
    fn rewriting_a_shorter_chunk_and_removing_leave_no_stray_piece() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::create(dir.path().join("t.redb")).expect("db");
        let cid = [7; 36];
        let long = vec![1; 2 * CHUNK_PIECE_BYTES_MAX + 5];
        let short = vec![2; 10];
        with_table(&db, |table| write(table, &cid, &long)).expect("writes");
        with_table(&db, |table| write(table, &cid, &short)).expect("writes");
        assert_eq!(read_back(&db, &cid), Some(short));
        assert!(with_table(&db, |table| remove(table, &cid)).expect("removes"));
        assert_eq!(read_back(&db, &cid), None);
        assert!(!with_table(&db, |table| remove(table, &cid)).expect("removes"));

        // With its first piece lost, a chunk's later pieces still go.
        with_table(&db, |table| write(table, &cid, &long)).expect("writes");
        with_table(&db, |table| {
            table.remove(piece_key(&cid, 0).as_slice()).map(drop)
        })
        .expect("removes piece 0");
        assert!(with_table(&db, |table| remove(table, &cid)).expect("removes"));
        let left = with_table(&db, |table| table.len()).expect("counts");
        assert_eq!(left, 0);
    }
}
