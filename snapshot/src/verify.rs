//! Verification of a whole store: every object decodes and checks (header and body checksums,
//! record checksums, transaction payloads), each timeline's batches are contiguous, every
//! snapshot's parts match its manifest and its pages hash to the manifest's whole-database
//! checksum. Problems are collected, each naming its key, rather than stopping at the first.

use pagelog_vfs::checksum::page_hash;
use pagelog_vfs::record::{KIND_CHECKPOINT, KIND_TXN, TxnRecord};

use crate::catalog::Catalog;
use crate::error::Result;
use crate::fetch::get_decoded;
use crate::format::{decode_batch, decode_part, part_key};
use crate::store::ObjectStore;

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The object (or `t…/log` for a gap).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// What verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Objects read and checked.
    pub objects: usize,
    /// Bytes read.
    pub bytes: u64,
    /// Log records checked.
    pub records: u64,
    /// Complete snapshots checked.
    pub snapshots: usize,
    /// Recorded gaps (timeline, first LSN, last LSN): records never shipped (dropped locally,
    /// or before a shipper's base snapshot), bridged by a snapshot; not restorable, not a
    /// fault of the store.
    pub gaps: Vec<(u64, u64, u64)>,
    /// Interrupted snapshot uploads (timeline, LSN): parts without a manifest, left by a crash
    /// during an upload. Never used by restore and removed by retention; not a problem.
    pub incomplete_snapshots: Vec<(u64, u64)>,
    /// Problems, in key order.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// No problem found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verify everything in `store`. Errors are only returned for failures to list; unreadable or
/// bad objects become problems.
pub fn verify(store: &dyn ObjectStore) -> Result<VerifyReport> {
    let catalog = Catalog::load(store)?;
    let mut r = VerifyReport::default();
    for t in catalog.timelines.values() {
        let mut problem = |key: &str, message: String| {
            r.problems.push(Problem {
                key: key.to_string(),
                message,
            })
        };
        let claim_key = crate::format::timeline_key(t.timeline);
        let claim = match t.read_claim(store) {
            Ok(Some(c)) => Some(c),
            Ok(None) => {
                problem(&claim_key, "timeline has objects but no claim".into());
                None
            }
            Err(e) => {
                problem(&claim_key, e.to_string());
                None
            }
        };
        let db_id = claim.map(|c| c.database_id);
        // Batches.
        let mut expect: Option<u64> = None;
        for b in &t.batches {
            r.objects += 1;
            let batch = get_decoded(
                &b.key,
                || store.get(&b.key),
                |bytes| {
                    r.bytes += bytes.len() as u64;
                    decode_batch(&b.key, bytes)
                },
            );
            let batch = match batch {
                Ok(x) => x,
                Err(e) => {
                    problem(&b.key, e.to_string());
                    expect = None;
                    continue;
                }
            };
            let h = batch.header;
            if h.first_lsn != b.first_lsn || h.timeline != t.timeline {
                problem(&b.key, "header does not match the key".into());
            }
            if let Some(id) = db_id
                && h.database_id != id
            {
                problem(
                    &b.key,
                    format!(
                        "database id {:032x}, the timeline claims {id:032x}",
                        h.database_id
                    ),
                );
            }
            if let Some(e) = expect
                && h.first_lsn != e
            {
                problem(
                    &b.key,
                    if h.first_lsn > e {
                        format!(
                            "gap: records {e}..={} are missing before it",
                            h.first_lsn - 1
                        )
                    } else {
                        format!(
                            "overlaps the previous batch (starts at {}, expected {e})",
                            h.first_lsn
                        )
                    },
                );
            }
            expect = Some(h.last_lsn + 1);
            if h.is_gap() {
                r.gaps.push((t.timeline, h.first_lsn, h.last_lsn));
            }
            for rec in batch.records() {
                r.records += 1;
                let ok = match rec.kind {
                    KIND_TXN => TxnRecord::decode(rec.payload)
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    KIND_CHECKPOINT => pagelog_vfs::record::CheckpointMark::decode(rec.payload)
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    k => Err(format!("unknown record kind {k}")),
                };
                if let Err(m) = ok {
                    problem(&b.key, format!("record {}: {m}", rec.lsn));
                }
            }
        }
        // Snapshots.
        for s in &t.snapshots {
            let Some(mkey) = &s.manifest_key else {
                r.incomplete_snapshots.push((t.timeline, s.lsn));
                continue;
            };
            r.objects += 1;
            let m = match t.manifest(store, s) {
                Ok(m) => m,
                Err(e) => {
                    problem(mkey, e.to_string());
                    continue;
                }
            };
            r.snapshots += 1;
            let mut sum = 0u64;
            let mut pages_seen = 0u32;
            let mut ok = true;
            for i in 0..m.parts.len() as u32 {
                let key = part_key(t.timeline, m.lsn, i);
                r.objects += 1;
                let part = get_decoded(
                    &key,
                    || store.get(&key),
                    |bytes| {
                        r.bytes += bytes.len() as u64;
                        decode_part(&key, bytes)
                    },
                );
                match part {
                    Ok(part) => {
                        let (h, pages) = (part.header, part.pages());
                        let (first, n) = m.part_pages(i);
                        if h.first_pgno != first
                            || h.pages != n
                            || h.body_crc != m.parts[i as usize].body_crc
                            || h.lsn != m.lsn
                        {
                            problem(&key, "part does not match its manifest".into());
                            ok = false;
                        }
                        for (j, page) in pages.chunks_exact(h.page_size as usize).enumerate() {
                            sum ^= page_hash(h.first_pgno + j as u32, page);
                            pages_seen += 1;
                        }
                    }
                    Err(e) => {
                        problem(&key, e.to_string());
                        ok = false;
                    }
                }
            }
            if ok && (sum != m.checksum || pages_seen != m.db_pages) {
                problem(
                    mkey,
                    format!(
                        "pages hash to {sum:016x} over {pages_seen} pages, the manifest records {:016x} over {}",
                        m.checksum, m.db_pages
                    ),
                );
            }
        }
    }
    r.problems.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(r)
}
