//! Applying transaction records to a database file: recovery uses it on open, tests use it to
//! rebuild a database from its log and compare, and restore will use it to apply log batches.

use pagelog_log::fs::FsFile;
use pagelog_log::{Log, Lsn};

use crate::error::{Result, VfsError};
use crate::record::{KIND_TXN, TxnRecord};

/// What a replay applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Transactions applied.
    pub transactions: u64,
    /// LSN of the last transaction applied (0 if none).
    pub last_lsn: Lsn,
    /// Checksum the log recorded for it.
    pub checksum: u64,
    /// Database size in pages after it.
    pub db_pages: u32,
}

/// Write one transaction's page images at their offsets and resize the file to the database
/// size after it.
pub fn apply_txn(file: &dyn FsFile, txn: &TxnRecord<'_>) -> std::io::Result<()> {
    let ps = txn.page_size as u64;
    for (pgno, data) in txn.pages() {
        file.write_all_at(data, (pgno as u64 - 1) * ps)?;
    }
    let size = txn.db_pages as u64 * ps;
    if file.len()? != size {
        file.set_len(size)?;
    }
    Ok(())
}

/// Apply every transaction record of `log` in `from..=upto` to `file`, in LSN order.
/// `page_size`, when given, must match every record.
pub fn replay_log(
    log: &Log,
    from: Lsn,
    upto: Lsn,
    file: &dyn FsFile,
    page_size: Option<u32>,
) -> Result<Replayed> {
    let mut out = Replayed::default();
    if from > upto {
        return Ok(out);
    }
    for rec in log.reader(from)? {
        let rec = rec?;
        if rec.lsn > upto {
            break;
        }
        if rec.kind != KIND_TXN {
            continue;
        }
        let txn = TxnRecord::decode(&rec.payload)?;
        if let Some(ps) = page_size
            && txn.page_size != ps
        {
            return Err(VfsError::BadRecord(format!(
                "record {} has page size {}, expected {ps}",
                rec.lsn, txn.page_size
            )));
        }
        apply_txn(file, &txn).map_err(|e| VfsError::Io {
            path: std::path::PathBuf::from("<replay target>"),
            context: format!("applying record {}", rec.lsn),
            source: e,
        })?;
        out.transactions += 1;
        out.last_lsn = rec.lsn;
        out.checksum = txn.checksum;
        out.db_pages = txn.db_pages;
    }
    Ok(out)
}
