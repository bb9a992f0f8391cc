//! The payloads the VFS writes into the log (see `vfs/FORMAT.md`): a transaction record (the
//! last image of every page the transaction wrote, the database size and whole-database
//! checksum after it) and a checkpoint mark (the LSN the database file durably holds).

use pagelog_log::format::{u16_at, u32_at, u64_at};

use crate::error::VfsError;

/// Log record kind of a committed transaction.
pub const KIND_TXN: u16 = 1;
/// Log record kind of a checkpoint mark.
pub const KIND_CHECKPOINT: u16 = 2;

const TXN_MAGIC: [u8; 4] = *b"PGTX";
const CKPT_MAGIC: [u8; 4] = *b"PGCK";
const VERSION: u16 = 1;
/// Bytes before the first page of a transaction record.
pub const TXN_HEADER_LEN: usize = 32;
/// Bytes of a checkpoint mark.
pub const CKPT_LEN: usize = 32;

/// Whether `n` is a valid SQLite page size.
pub fn valid_page_size(n: u32) -> bool {
    (512..=65536).contains(&n) && n.is_power_of_two()
}

/// Start encoding a transaction record into `out` (cleared first); append pages with
/// [`push_page`] in ascending page order, then call [`finish_txn`].
pub fn begin_txn(out: &mut Vec<u8>, page_size: u32, db_pages: u32) {
    out.clear();
    out.extend_from_slice(&TXN_MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&page_size.to_le_bytes());
    out.extend_from_slice(&db_pages.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // checksum, set by finish_txn
    out.extend_from_slice(&0u32.to_le_bytes()); // page count, set by finish_txn
    out.extend_from_slice(&0u32.to_le_bytes());
}

/// Append one page image.
pub fn push_page(out: &mut Vec<u8>, pgno: u32, page: &[u8]) {
    out.extend_from_slice(&pgno.to_le_bytes());
    out.extend_from_slice(page);
}

/// Fill in the checksum and page count.
pub fn finish_txn(out: &mut [u8], checksum: u64, pages: u32) {
    out[16..24].copy_from_slice(&checksum.to_le_bytes());
    out[24..28].copy_from_slice(&pages.to_le_bytes());
}

/// A decoded (borrowed) transaction record.
#[derive(Debug, Clone, Copy)]
pub struct TxnRecord<'a> {
    /// Page size in bytes.
    pub page_size: u32,
    /// Database size in pages after the transaction.
    pub db_pages: u32,
    /// Whole-database checksum after the transaction.
    pub checksum: u64,
    /// Number of pages carried.
    pub page_count: u32,
    body: &'a [u8],
}

impl<'a> TxnRecord<'a> {
    /// Decode and validate a transaction payload.
    pub fn decode(b: &'a [u8]) -> Result<TxnRecord<'a>, VfsError> {
        let bad = |why: &str| VfsError::BadRecord(why.to_string());
        if b.len() < TXN_HEADER_LEN || b[0..4] != TXN_MAGIC {
            return Err(bad("not a transaction record"));
        }
        let version = u16_at(b, 4);
        if version != VERSION {
            return Err(bad(&format!(
                "unsupported transaction record version {version}"
            )));
        }
        let page_size = u32_at(b, 8);
        if !valid_page_size(page_size) {
            return Err(bad(&format!("invalid page size {page_size}")));
        }
        let db_pages = u32_at(b, 12);
        let page_count = u32_at(b, 24);
        let body = &b[TXN_HEADER_LEN..];
        if body.len() as u64 != page_count as u64 * (4 + page_size as u64) {
            return Err(bad("page count does not match the record length"));
        }
        let rec = TxnRecord {
            page_size,
            db_pages,
            checksum: u64_at(b, 16),
            page_count,
            body,
        };
        let mut prev = 0u32;
        for (pgno, _) in rec.pages() {
            if pgno <= prev || pgno > db_pages {
                return Err(bad(&format!(
                    "page {pgno} out of order or beyond the database size {db_pages}"
                )));
            }
            prev = pgno;
        }
        Ok(rec)
    }

    /// The pages, in ascending page number.
    pub fn pages(&self) -> impl Iterator<Item = (u32, &'a [u8])> + 'a {
        let step = 4 + self.page_size as usize;
        let body = self.body;
        body.chunks_exact(step).map(|c| (u32_at(c, 0), &c[4..]))
    }
}

/// A checkpoint mark: the database file durably holds every transaction up to `lsn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointMark {
    /// LSN of the last transaction the database file holds.
    pub lsn: u64,
    /// Page size.
    pub page_size: u32,
    /// Database size in pages.
    pub db_pages: u32,
    /// Whole-database checksum at `lsn`.
    pub checksum: u64,
}

impl CheckpointMark {
    /// Encode.
    pub fn encode(&self) -> [u8; CKPT_LEN] {
        let mut b = [0u8; CKPT_LEN];
        b[0..4].copy_from_slice(&CKPT_MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[8..16].copy_from_slice(&self.lsn.to_le_bytes());
        b[16..20].copy_from_slice(&self.page_size.to_le_bytes());
        b[20..24].copy_from_slice(&self.db_pages.to_le_bytes());
        b[24..32].copy_from_slice(&self.checksum.to_le_bytes());
        b
    }

    /// Decode and validate.
    pub fn decode(b: &[u8]) -> Result<CheckpointMark, VfsError> {
        if b.len() != CKPT_LEN || b[0..4] != CKPT_MAGIC || u16_at(b, 4) != VERSION {
            return Err(VfsError::BadRecord("not a checkpoint mark".into()));
        }
        Ok(CheckpointMark {
            lsn: u64_at(b, 8),
            page_size: u32_at(b, 16),
            db_pages: u32_at(b, 20),
            checksum: u64_at(b, 24),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_round_trip_and_validation() {
        let mut out = Vec::new();
        begin_txn(&mut out, 512, 9);
        push_page(&mut out, 2, &[1u8; 512]);
        push_page(&mut out, 9, &[2u8; 512]);
        finish_txn(&mut out, 0xabc, 2);
        let r = TxnRecord::decode(&out).unwrap();
        assert_eq!(
            (r.page_size, r.db_pages, r.checksum, r.page_count),
            (512, 9, 0xabc, 2)
        );
        let pages: Vec<_> = r.pages().map(|(p, d)| (p, d[0])).collect();
        assert_eq!(pages, vec![(2, 1), (9, 2)]);
        assert!(TxnRecord::decode(&out[..out.len() - 1]).is_err());
        let mut beyond = out.clone();
        beyond[12..16].copy_from_slice(&8u32.to_le_bytes());
        assert!(TxnRecord::decode(&beyond).is_err(), "page 9 beyond 8 pages");
        let mut bad_ps = out.clone();
        bad_ps[8..12].copy_from_slice(&513u32.to_le_bytes());
        assert!(TxnRecord::decode(&bad_ps).is_err());
    }

    #[test]
    fn checkpoint_round_trip() {
        let m = CheckpointMark {
            lsn: 77,
            page_size: 4096,
            db_pages: 3,
            checksum: 5,
        };
        assert_eq!(CheckpointMark::decode(&m.encode()).unwrap(), m);
        assert!(CheckpointMark::decode(&[0u8; 32]).is_err());
    }
}
