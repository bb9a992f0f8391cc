//! Retention: delete what no restore point inside the window needs. For each timeline, the
//! newest complete snapshot taken at or before the window's start is the oldest base any
//! restore in the window can need (commit times grow with LSNs); snapshots before it, batches
//! that end at or before it, and unfinished snapshot uploads older than it are deleted —
//! oldest first, a manifest before its parts, so that a crash midway never leaves something
//! that looks restorable but is not.
//!
//! Unfinished snapshot uploads (parts without a manifest) older than the timeline's newest
//! complete snapshot are deleted whatever the window: no restore reads them (a restore reads
//! only snapshots whose manifest exists), and no upload can still complete them — the
//! timeline's writer takes snapshots at its last commit, never below a snapshot the store
//! already holds (attaching refuses a local log behind the store), so an upload in progress is
//! at or above the newest complete snapshot and is left alone. Parts of failed attempts are
//! normally deleted at once by the shipper (see `snapshot`); this catches those of an upload
//! cut off by a crash, or whose manifest request failed.

use std::time::Duration;

use crate::catalog::{Catalog, SnapshotEntry};
use crate::error::Result;
use crate::store::ObjectStore;

/// What retention deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Batches deleted.
    pub batches: usize,
    /// Snapshots deleted (complete or not).
    pub snapshots: usize,
    /// Of those, unfinished uploads (parts without a manifest) below the newest complete
    /// snapshot, deleted whatever the window.
    pub unfinished: usize,
    /// Stored bytes freed.
    pub bytes: u64,
    /// Multipart uploads left in progress for over [`ABANDONED_UPLOAD_AGE`], aborted.
    pub aborted_uploads: usize,
}

/// Multipart uploads in progress for longer than this are abandoned: retention aborts them
/// (see [`crate::ObjectStore::abort_stale_uploads`]). An upload of pagelog's takes seconds to
/// minutes.
pub const ABANDONED_UPLOAD_AGE: Duration = Duration::from_secs(24 * 3600);

/// Whether `key` (relative to the store) is one of pagelog's format.
pub fn is_pagelog_key(key: &str) -> bool {
    crate::format::parse_key(key).is_some()
}

/// Apply a retention window ending `now_us` (µs since the epoch) to every timeline.
pub fn apply_retention(
    store: &dyn ObjectStore,
    window: Duration,
    now_us: u64,
) -> Result<RetentionReport> {
    let cutoff = now_us.saturating_sub(window.as_micros() as u64);
    let catalog = Catalog::load(store)?;
    let mut report = RetentionReport::default();
    for t in catalog.timelines.values() {
        // Newest complete snapshot at or before the cutoff.
        let mut keep_from = None;
        for s in t.complete_snapshots().collect::<Vec<_>>().into_iter().rev() {
            if t.manifest(store, s)?.timestamp_us <= cutoff {
                keep_from = Some(s.lsn);
                break;
            }
        }
        // Unfinished uploads below the newest complete snapshot can never complete.
        let newest = t.complete_snapshots().last().map(|s| s.lsn);
        let orphan = |s: &crate::catalog::SnapshotEntry| {
            !s.is_complete() && newest.is_some_and(|n| s.lsn < n)
        };
        // Batches entirely at or before the base: those followed by a batch starting at or
        // before base + 1.
        let base = keep_from.unwrap_or(0);
        for (i, b) in t.batches.iter().enumerate() {
            if keep_from.is_none() {
                break;
            }
            let next_first = t.batches.get(i + 1).map(|n| n.first_lsn);
            if !matches!(next_first, Some(n) if n <= base + 1) {
                break;
            }
            store.delete(&b.key)?;
            report.batches += 1;
            report.bytes += b.size;
        }
        for s in t.snapshots.iter().filter(|s| s.lsn < base || orphan(s)) {
            if orphan(s) {
                report.unfinished += 1;
            }
            delete_snapshot(store, s)?;
            report.snapshots += 1;
            report.bytes += s.size;
        }
    }
    // Housekeeping of the service's own: a failure here is not retention's.
    match store.abort_stale_uploads(ABANDONED_UPLOAD_AGE, is_pagelog_key) {
        Ok(n) => report.aborted_uploads = n,
        Err(e) => {
            tracing::warn!(error = %e, "could not abort the multipart uploads left in progress")
        }
    }
    if report.batches + report.snapshots > 0 {
        tracing::info!(
            batches = report.batches,
            snapshots = report.snapshots,
            unfinished = report.unfinished,
            bytes = report.bytes,
            "retention deleted old objects"
        );
    }
    Ok(report)
}

/// Delete a snapshot as listed: its manifest first (so that it is never seen complete without
/// all its parts), then its parts.
pub(crate) fn delete_snapshot(store: &dyn ObjectStore, s: &SnapshotEntry) -> Result<()> {
    if let Some(m) = &s.manifest_key {
        store.delete(m)?;
    }
    for p in &s.parts {
        store.delete(&p.key)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_pagelog_key;

    #[test]
    fn only_pagelogs_keys_are_its_uploads() {
        for ours in [
            "t0000000001/snap/00000000000000000007/part-000000.pls",
            "t0000000042/log/00000000000000000001.plb",
        ] {
            assert!(is_pagelog_key(ours), "{ours}");
        }
        for other in [
            "other/t0000000001/x",
            "t000000001/log/x",
            "t00000000012/log/x",
            "t000000000a/log/x",
            "t0000000001",
            "t0000000001/other-program/file",
            "pagelog-probe/x.probe",
            "",
        ] {
            assert!(!is_pagelog_key(other), "{other}");
        }
    }
}
