//! Restore: rebuild a database at a point of its history (the latest state, an LSN or a time)
//! from a store. The newest snapshot at or before the target is laid down part by part (parts
//! fetched in parallel, written at their page offsets), then the log batches up to the target
//! are applied in LSN order (fetched ahead in parallel, a bounded window), the file is cut to
//! the database size at the target and checked against the whole-database checksum recorded
//! for it. The result is written to a temporary file, synced, and renamed into place.
//!
//! Optionally the restored database is prepared to continue on a new timeline: a new timeline
//! is claimed in the store and a local log is created whose first record (a transaction that
//! changes no page) carries the restored state's size and checksum.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pagelog_log::fs::{FileRef, Fs, FsRef, OpenOptions, StdFs};
use pagelog_log::{Log, LogOptions, Lsn};
use pagelog_vfs::checksum::page_hash;
use pagelog_vfs::record::{KIND_TXN, TxnRecord, begin_txn, finish_txn};

use crate::catalog::{Catalog, TimelineCatalog};
use crate::error::{Result, SnapshotError};
use crate::fetch::{fetch_ordered, once_more_if_corrupt};
use crate::format::{BatchStream, Manifest, PartStream, TimelineInfo, part_key, timeline_key};
use crate::store::{ObjectStore, PutOutcome};

/// The point of history to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestoreTarget {
    /// The newest state in the store.
    #[default]
    Latest,
    /// The state right after this LSN.
    Lsn(Lsn),
    /// The state after the last transaction committed at or before this time
    /// (microseconds since the Unix epoch).
    TimeUs(u64),
}

impl std::fmt::Display for RestoreTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreTarget::Latest => write!(f, "the latest state"),
            RestoreTarget::Lsn(l) => write!(f, "LSN {l}"),
            RestoreTarget::TimeUs(t) => write!(f, "time {}", crate::time::format_us(*t)),
        }
    }
}

/// A progress callback: (bytes downloaded so far, bytes planned).
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// How to restore.
#[derive(Clone)]
pub struct RestoreOptions {
    /// What to restore.
    pub target: RestoreTarget,
    /// Timeline to restore from. Default: the newest timeline with history of its own
    /// ([`Catalog::latest_timeline`]).
    pub timeline: Option<u64>,
    /// Replace an existing output file (and its `-wal`, `-shm` and `-pagelog` companions).
    pub force: bool,
    /// Run SQLite's `PRAGMA integrity_check` on the result.
    pub integrity_check: bool,
    /// Parallel downloads of snapshot parts (4 MiB each). Default 4.
    pub concurrency: usize,
    /// Open the next log batch (start streaming it) while one is applied. Default true; false
    /// saves one stream's buffers (a few MiB from S3) at some cost in time.
    pub prefetch_batches: bool,
    /// Claim a new timeline, create a local log and upload the restored state as the new
    /// timeline's base snapshot, so that the restored database can be opened through pagelog
    /// and written; its new history is shipped to the new timeline.
    pub new_timeline: bool,
    /// Called with (bytes downloaded so far, bytes planned) as the download proceeds.
    pub progress: Option<Progress>,
}

impl RestoreOptions {
    /// Restore the state a bookmark names (its timeline and LSN).
    pub fn at_bookmark(b: crate::Bookmark) -> RestoreOptions {
        RestoreOptions {
            target: RestoreTarget::Lsn(b.lsn),
            timeline: Some(b.timeline),
            ..RestoreOptions::default()
        }
    }
}

impl std::fmt::Debug for RestoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreOptions")
            .field("target", &self.target)
            .field("timeline", &self.timeline)
            .field("force", &self.force)
            .field("integrity_check", &self.integrity_check)
            .field("concurrency", &self.concurrency)
            .field("prefetch_batches", &self.prefetch_batches)
            .field("new_timeline", &self.new_timeline)
            .finish_non_exhaustive()
    }
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            target: RestoreTarget::Latest,
            timeline: None,
            force: false,
            integrity_check: false,
            concurrency: 4,
            prefetch_batches: true,
            new_timeline: false,
            progress: None,
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// The file written.
    pub path: PathBuf,
    /// Database id.
    pub database_id: u128,
    /// Timeline restored from.
    pub timeline: u64,
    /// The restored state is the one right after this LSN.
    pub lsn: Lsn,
    /// Commit time of the last transaction applied (or of the snapshot), µs since the epoch.
    pub timestamp_us: u64,
    /// Snapshot used as the base (its LSN), if any.
    pub snapshot_lsn: Option<Lsn>,
    /// Log batches downloaded.
    pub batches: usize,
    /// Transactions applied from the log.
    pub transactions: u64,
    /// Bytes downloaded.
    pub bytes_downloaded: u64,
    /// Page size.
    pub page_size: u32,
    /// Database size in pages.
    pub db_pages: u32,
    /// Whole-database checksum, verified.
    pub checksum: u64,
    /// The new timeline claimed (with [`RestoreOptions::new_timeline`]).
    pub new_timeline: Option<u64>,
    /// The snapshot of the restored state uploaded to the new timeline as its base, at the
    /// branch LSN (`lsn`): the new timeline is restorable from the branch point on, with no
    /// gap. `None` without a new timeline, or when that upload failed (a warning says why;
    /// the shipper then takes a base snapshot when it attaches, and the records before it
    /// show as a recorded gap).
    pub new_timeline_base: Option<Lsn>,
    /// Wall time.
    pub elapsed: Duration,
    /// Wall time of the download alone (listing, downloading, applying, checking): what
    /// `bytes_downloaded` took, without a new timeline's claim and base upload.
    pub download_elapsed: Duration,
}

/// What a timeline can restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorableRange {
    /// Timeline.
    pub timeline: u64,
    /// Earliest restorable LSN.
    pub first_lsn: Lsn,
    /// Latest restorable LSN.
    pub last_lsn: Lsn,
    /// Commit time at `first_lsn` (µs since the epoch; 0 if unknown).
    pub first_time_us: u64,
    /// Commit time at `last_lsn`.
    pub last_time_us: u64,
}

impl std::fmt::Display for RestorableRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "timeline {} LSN {}..={} ({} .. {})",
            self.timeline,
            self.first_lsn,
            self.last_lsn,
            crate::time::format_us(self.first_time_us),
            crate::time::format_us(self.last_time_us)
        )
    }
}

fn io_err(path: &Path, context: &str, source: std::io::Error) -> SnapshotError {
    SnapshotError::Io {
        path: path.to_path_buf(),
        context: context.to_string(),
        source,
    }
}

/// The restorable range of a timeline: from its first snapshot (or from LSN 1 when its log
/// starts there) to its last LSN. Reads the first batch's header, the last batch's header and
/// the first snapshot's manifest.
pub fn restorable_range(store: &dyn ObjectStore, t: &TimelineCatalog) -> Result<RestorableRange> {
    let empty = || SnapshotError::Empty {
        store: store.describe(),
        detail: format!(" on timeline {}", t.timeline),
    };
    let (last, last_header) = t.last_lsn(store)?;
    if last == 0 {
        return Err(empty());
    }
    let first_snap = t.complete_snapshots().next();
    let first_batch = match t.batches.first() {
        Some(_) => Some(t.batch_header(store, 0)?),
        None => None,
    };
    let (first_lsn, first_time_us) = match (first_batch, first_snap) {
        (Some(h), _) if h.first_lsn == 1 && !h.is_gap() => (1, h.first_ts_us),
        (_, Some(s)) => (s.lsn, t.manifest(store, s)?.timestamp_us),
        _ => return Err(empty()),
    };
    let last_time_us = match (&last_header, t.complete_snapshots().last()) {
        (Some(h), Some(s)) if s.lsn > h.last_lsn => t.manifest(store, s)?.timestamp_us,
        (Some(h), _) => h.last_ts_us,
        (None, Some(s)) => t.manifest(store, s)?.timestamp_us,
        (None, None) => 0,
    };
    Ok(RestorableRange {
        timeline: t.timeline,
        first_lsn,
        last_lsn: last,
        first_time_us,
        last_time_us,
    })
}

/// The gaps a timeline's log records (first and last LSN of each gap batch: records never
/// shipped, dropped locally or taken into a later base snapshot). A gap batch is a bare
/// header, so only the batches of that size have their header read.
pub fn recorded_gaps(store: &dyn ObjectStore, t: &TimelineCatalog) -> Result<Vec<(Lsn, Lsn)>> {
    let mut gaps = Vec::new();
    for (i, b) in t.batches.iter().enumerate() {
        if b.size == crate::format::BATCH_HEADER_LEN as u64 {
            let h = t.batch_header(store, i)?;
            if h.is_gap() {
                gaps.push((h.first_lsn, h.last_lsn));
            }
        }
    }
    Ok(gaps)
}

/// The LSN ranges of `range` that can be restored, given the recorded `gaps`: a gap ends a
/// range, and the next one starts at the first complete snapshot at or after the gap's last
/// LSN (the state after it needs no record of the gap); without such a snapshot nothing after
/// the gap is restorable.
pub fn split_by_gaps(
    t: &TimelineCatalog,
    range: &RestorableRange,
    gaps: &[(Lsn, Lsn)],
) -> Vec<(Lsn, Lsn)> {
    let mut out = Vec::new();
    let mut start = Some(range.first_lsn);
    for &(g1, g2) in gaps {
        let Some(s) = start else { break };
        if g2 < s {
            continue;
        }
        if g1 > s {
            out.push((s, (g1 - 1).min(range.last_lsn)));
        }
        start = t
            .complete_snapshots()
            .map(|snap| snap.lsn)
            .find(|&l| l >= g2 && l <= range.last_lsn);
    }
    if let Some(s) = start {
        out.push((s, range.last_lsn));
    }
    out
}

/// Resolve a target to an LSN on timeline `t`.
fn resolve_target(
    store: &dyn ObjectStore,
    t: &TimelineCatalog,
    range: &RestorableRange,
    target: RestoreTarget,
) -> Result<Lsn> {
    let out_of_range = || SnapshotError::OutOfRange {
        store: store.describe(),
        target: target.to_string(),
        range: range.to_string(),
    };
    let lsn = match target {
        RestoreTarget::Latest => range.last_lsn,
        RestoreTarget::Lsn(l) => l,
        RestoreTarget::TimeUs(at) => {
            if at >= range.last_time_us {
                range.last_lsn
            } else {
                // The last batch whose first record is at or before the time (timestamps
                // grow with LSNs), then the last record in it at or before the time.
                let (mut lo, mut hi) = (0usize, t.batches.len());
                while lo < hi {
                    let mid = (lo + hi) / 2;
                    if t.batch_header(store, mid)?.first_ts_us <= at {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                let from_batches = match lo.checked_sub(1) {
                    Some(i) => {
                        // Streamed like a restore's batches, not decoded whole: read up to the
                        // first record after the time.
                        let key = &t.batches[i].key;
                        once_more_if_corrupt(key, || {
                            let mut batch = BatchStream::from_reader(key, store.get_reader(key)?)?;
                            let mut found = None;
                            while let Some(r) = batch.next_record()? {
                                if r.timestamp_us > at {
                                    break;
                                }
                                found = Some(r.lsn);
                            }
                            Ok(found)
                        })?
                    }
                    None => None,
                };
                // A snapshot newer than that record but still at or before the time.
                let mut best = from_batches.unwrap_or(0);
                let later: Vec<_> = t.complete_snapshots().filter(|s| s.lsn > best).collect();
                for s in later {
                    if t.manifest(store, s)?.timestamp_us <= at {
                        best = s.lsn;
                    }
                }
                if best == 0 {
                    return Err(out_of_range());
                }
                best
            }
        }
    };
    if lsn < range.first_lsn || lsn > range.last_lsn {
        return Err(out_of_range());
    }
    Ok(lsn)
}

/// What a restore replaces: the existing output and companions, and the lock of the log
/// directory among them, held from before the download until the new file is in place.
struct Claimed {
    existing: Vec<PathBuf>,
    lock: Option<Box<dyn pagelog_log::fs::FsLock>>,
}

/// Check that the output may be written: refuse an existing output without `force`, anything
/// but files and a log directory, and a database whose log a running process holds (the
/// exclusive `flock` on `<out>-pagelog/LOCK` that [`Log::open`] takes). Taking that lock here
/// also keeps a writer from opening the database until the lock is dropped.
fn claim_output(out: &Path, force: bool) -> Result<Claimed> {
    let existing: Vec<PathBuf> = std::iter::once(out.to_path_buf())
        .chain(companions(out))
        .filter(|p| p.exists())
        .collect();
    if !force && let Some(p) = existing.first() {
        return Err(SnapshotError::Exists { path: p.clone() });
    }
    // Even with force, only replace what a database leaves: files, and a log directory.
    for p in &existing {
        let is_log_dir = p.to_string_lossy().ends_with(pagelog_vfs::LOG_DIR_SUFFIX);
        if p.is_dir() != is_log_dir {
            return Err(SnapshotError::Config(format!(
                "{} is not what a database leaves there; not replacing it",
                p.display()
            )));
        }
    }
    let mut lock = None;
    if let Some(dir) = existing.iter().find(|p| p.is_dir()) {
        let lock_path = dir.join(pagelog_log::LOCK_FILE);
        match StdFs.try_lock(&lock_path) {
            Ok(l) => lock = Some(l),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(SnapshotError::Vfs(pagelog_vfs::VfsError::Owned {
                    path: out.to_path_buf(),
                    detail: e.to_string(),
                }));
            }
            Err(e) => return Err(io_err(&lock_path, "locking", e)),
        }
    }
    Ok(Claimed { existing, lock })
}

/// Put the restored file `tmp` in place of `out`, replacing what `claimed` found (with
/// `tmp_log`, see [`place_with_log`]). The log directory's `LOCK` is held throughout: first
/// everything but that lock file is removed (`-wal`, `-shm`, `-journal`, the log's segments),
/// then the new file is renamed over `out`, and only then the lock file and its directory are
/// removed. A writer that opens the database before that finds the lock held and is refused;
/// one that opens after finds the restored file without a log, as any restore leaves it. An
/// `out` that did not exist when claimed is never replaced (one created meanwhile is
/// [`SnapshotError::Exists`]).
fn place(tmp: &Path, tmp_log: Option<&Path>, out: &Path, claimed: &Claimed) -> Result<()> {
    if let Some(tmp_log) = tmp_log {
        return place_with_log(tmp, tmp_log, out, claimed);
    }
    for p in &claimed.existing {
        if p.is_dir() {
            empty_dir(p, Some(pagelog_log::LOCK_FILE))?;
        } else if p != out {
            std::fs::remove_file(p).map_err(|e| io_err(p, "removing (force)", e))?;
        }
    }
    rename_db(tmp, out, claimed)?;
    for p in claimed.existing.iter().filter(|p| p.is_dir()) {
        std::fs::remove_dir_all(p).map_err(|e| io_err(p, "removing (force)", e))?;
    }
    Ok(())
}

/// An exclusive lock on `OUT.pagelog-restore.lock`, held for a whole restore so that two
/// restores to one output never share (and remove) each other's temporary files; the second
/// is refused at once (`Owned`, exit 7). The file is removed when the lock is let go (while
/// still held; a restore that opened the old file then finds it is no longer the one at the
/// path, and takes the new one).
struct RestoreLock {
    path: PathBuf,
    _file: std::fs::File,
}

impl RestoreLock {
    fn take(out: &Path) -> Result<RestoreLock> {
        let path = PathBuf::from(format!("{}.pagelog-restore.lock", out.display()));
        loop {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| io_err(&path, "opening", e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(SnapshotError::Vfs(pagelog_vfs::VfsError::Owned {
                        path: out.to_path_buf(),
                        detail: format!(
                            "another restore to it is running ({} is locked)",
                            path.display()
                        ),
                    }));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&path, "locking", e)),
            }
            if same_file(&file, &path) {
                return Ok(RestoreLock { path, _file: file });
            }
        }
    }
}

impl Drop for RestoreLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether `path` names the file open as `file`.
fn same_file(file: &std::fs::File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

/// Rename `tmp` to `out`: over it if it was there when claimed (`force`), else only if it
/// still does not exist.
fn rename_db(tmp: &Path, out: &Path, claimed: &Claimed) -> Result<()> {
    let r = if claimed.existing.iter().any(|p| p == out) {
        std::fs::rename(tmp, out)
    } else {
        pagelog_log::fs::rename_noreplace(tmp, out)
    };
    r.map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => SnapshotError::Exists {
            path: out.to_path_buf(),
        },
        _ => io_err(out, "renaming into place", e),
    })
}

/// [`place`] for a new timeline: `tmp_log` (its log, complete) goes into place first and the
/// file after it, so that the database never appears without its log. The new log's `LOCK`
/// is held from before it is in place until the file is beside it: an opener meanwhile is
/// refused, not handed a log without its database.
///
/// Replacing a database (`force`): the new log and the old log directory swap in one step
/// (Linux `renameat2(RENAME_EXCHANGE)`), so the old database keeps its whole log until then,
/// and the old log, now at `tmp_log`, is removed once the new file is in place. Where the swap
/// is not available the old log is emptied down to its `LOCK` (held), that lock file is
/// removed and the new directory renamed over the empty one. A crash between the log and the
/// file leaves the new log beside the old file (or none): opening is then refused on the
/// checksum the log's first record holds, never wrong, and the restore can be run again with
/// `--force`. If the file cannot be renamed, the logs are put back as they were.
fn place_with_log(tmp: &Path, tmp_log: &Path, out: &Path, claimed: &Claimed) -> Result<()> {
    let log_dir = PathBuf::from(format!("{}{}", out.display(), pagelog_vfs::LOG_DIR_SUFFIX));
    let new_lock = StdFs
        .try_lock(&tmp_log.join(pagelog_log::LOCK_FILE))
        .map_err(|e| io_err(tmp_log, "locking", e))?;
    // The old database's other companions (`-wal`, `-shm`, `-journal`) belong to its log.
    for p in &claimed.existing {
        if p != out && !p.is_dir() {
            std::fs::remove_file(p).map_err(|e| io_err(p, "removing (force)", e))?;
        }
    }
    let had_log = claimed.existing.contains(&log_dir);
    let mut swapped = false;
    if had_log {
        match pagelog_log::fs::exchange(tmp_log, &log_dir) {
            Ok(()) => swapped = true,
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                empty_dir(&log_dir, None)?;
                std::fs::rename(tmp_log, &log_dir)
                    .map_err(|e| io_err(&log_dir, "renaming the new log into place", e))?;
            }
            Err(e) => return Err(io_err(&log_dir, "swapping the new log into place", e)),
        }
    } else {
        pagelog_log::fs::rename_noreplace(tmp_log, &log_dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => SnapshotError::Exists {
                path: log_dir.clone(),
            },
            _ => io_err(&log_dir, "renaming the new log into place", e),
        })?;
    }
    let placed = sync_parent(out).and_then(|()| rename_db(tmp, out, claimed));
    if let Err(e) = placed {
        // Put the logs back: the old one in place (or none), the new one where it was built
        // (the caller removes it).
        let undone = if swapped {
            pagelog_log::fs::exchange(tmp_log, &log_dir)
        } else if !had_log {
            std::fs::rename(&log_dir, tmp_log)
        } else {
            Ok(())
        };
        if let Err(u) = undone {
            tracing::warn!(log = %log_dir.display(), error = %u, "cannot put the logs back");
        }
        return Err(e);
    }
    if swapped {
        std::fs::remove_dir_all(tmp_log).map_err(|e| io_err(tmp_log, "removing (force)", e))?;
    }
    drop(new_lock);
    Ok(())
}

/// Remove everything in `dir` but the entry named `keep`.
fn empty_dir(dir: &Path, keep: Option<&str>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_err(dir, "listing (force)", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err(dir, "listing (force)", e))?;
        if keep.is_some_and(|k| entry.file_name() == k) {
            continue;
        }
        let path = entry.path();
        let r = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        r.map_err(|e| io_err(&path, "removing (force)", e))?;
    }
    Ok(())
}

/// Make the renames and removals in `path`'s directory durable.
fn sync_parent(path: &Path) -> Result<()> {
    let dir = pagelog_log::fs::parent_dir(path);
    StdFs.sync_dir(&dir).map_err(|e| io_err(&dir, "syncing", e))
}

fn companions(out: &Path) -> Vec<PathBuf> {
    ["-wal", "-shm", "-journal", pagelog_vfs::LOG_DIR_SUFFIX]
        .iter()
        .map(|s| PathBuf::from(format!("{}{s}", out.display())))
        .collect()
}

/// Restore a database from `store` into the file `out`. An object of the plan that is gone
/// when it is read (retention ran meanwhile) makes the restore list the store and plan again,
/// up to three times.
pub fn restore(
    store: &dyn ObjectStore,
    out: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    let started = Instant::now();
    // Refuse to overwrite before downloading anything, and take the log's lock of a database
    // being replaced (held until the new file is in place, see `place`).
    let mut claimed = claim_output(out, opts.force)?;
    // One restore per output at a time: the temporary files below are this restore's alone.
    let _restoring = RestoreLock::take(out)?;
    let tmp = PathBuf::from(format!("{}.pagelog-restore.tmp", out.display()));
    let tmp_log_dir = PathBuf::from(format!("{}{}", tmp.display(), pagelog_vfs::LOG_DIR_SUFFIX));
    // What a restore killed before its end left (the file is overwritten by the download).
    match std::fs::remove_dir_all(&tmp_log_dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io_err(&tmp_log_dir, "removing a leftover", e));
        }
        _ => {}
    }
    // Retention (or an operator) may delete objects the plan named while the restore runs:
    // then the store is listed and the restore planned again (an earlier target may have
    // left the retention window meanwhile, which the new plan reports as out of range).
    let mut vanished = 0;
    let (catalog, mut report) = loop {
        match download(store, out, &tmp, opts) {
            Err(SnapshotError::Store(e @ crate::StoreError::NotFound { .. }))
                if vanished < REPLANS_WHEN_OBJECTS_VANISH =>
            {
                vanished += 1;
                tracing::warn!(error = %e, "an object of the restore's plan is gone; listing the store again");
            }
            r => break r?,
        }
    };
    // A new timeline's log is built beside the output and put in place with it.
    let tmp_log = opts.new_timeline.then_some(&tmp_log_dir);
    let placed = (|| -> Result<()> {
        if opts.integrity_check {
            integrity_check(&tmp)?;
        }
        report.download_elapsed = started.elapsed();
        // The output may have changed during the download (a writer may have created the
        // database meanwhile): claim it again unless its log is already locked by us.
        if claimed.lock.is_none() {
            claimed = claim_output(out, opts.force)?;
        }
        if let Some(dir) = tmp_log {
            let (timeline, base) = branch(store, &catalog, &report, &tmp, dir, opts)?;
            report.new_timeline = Some(timeline);
            report.new_timeline_base = base;
            // And again after the branch's upload, which may have taken long.
            if claimed.lock.is_none() {
                claimed = claim_output(out, opts.force)?;
            }
        }
        place(&tmp, tmp_log.map(PathBuf::as_path), out, &claimed)
    })();
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_dir_all(&tmp_log_dir);
        if let (Some(t), Some(lsn)) = (report.new_timeline, report.new_timeline_base) {
            forget_base(store, t, lsn);
        }
        return Err(e);
    }
    sync_parent(out)?;
    // The replaced database's lock file is gone with its directory; let it go.
    drop(claimed);
    report.elapsed = started.elapsed();
    tracing::info!(
        out = %out.display(),
        timeline = report.timeline,
        lsn = report.lsn,
        bytes = report.bytes_downloaded,
        "restored"
    );
    Ok(report)
}

/// How many times a restore lists the store and plans again when an object it planned to
/// read is gone (deleted by retention while it ran).
const REPLANS_WHEN_OBJECTS_VANISH: u32 = 3;

/// List the store, plan the restore and download it into `tmp` (removed on failure). The
/// catalog is returned for a branch to a new timeline.
fn download(
    store: &dyn ObjectStore,
    out: &Path,
    tmp: &Path,
    opts: &RestoreOptions,
) -> Result<(Catalog, RestoreReport)> {
    let catalog = Catalog::load(store)?;
    let t = match opts.timeline {
        Some(n) => catalog
            .timelines
            .get(&n)
            .ok_or_else(|| SnapshotError::Empty {
                store: store.describe(),
                detail: format!(" on timeline {n}"),
            })?,
        None => catalog
            .latest_timeline(store)?
            .ok_or_else(|| SnapshotError::Empty {
                store: store.describe(),
                detail: String::new(),
            })?,
    };
    let range = restorable_range(store, t)?;
    let target = resolve_target(store, t, &range, opts.target)?;
    let claim = t.read_claim(store)?;

    // Plan: the base snapshot, then the batches after it.
    let snapshot = t.snapshot_at_or_before(target);
    let manifest = match snapshot {
        Some(s) => Some(t.manifest(store, s)?),
        None => None,
    };
    let base_lsn = manifest.as_ref().map(|m| m.lsn).unwrap_or(0);
    let mut database_id = claim
        .map(|c| c.database_id)
        .or(manifest.as_ref().map(|m| m.database_id));
    let batch_range = if target > base_lsn {
        let first = t
            .batch_index_for(base_lsn + 1)
            .ok_or_else(|| SnapshotError::Gap {
                store: store.describe(),
                timeline: t.timeline,
                from: base_lsn + 1,
                to: t.batches.first().map(|b| b.first_lsn - 1).unwrap_or(target),
            })?;
        let last = t.batch_index_for(target).unwrap_or(first);
        first..last + 1
    } else {
        0..0
    };
    let planned: u64 = snapshot.map(|s| s.size).unwrap_or(0)
        + t.batches[batch_range.clone()]
            .iter()
            .map(|b| b.size)
            .sum::<u64>();
    let downloaded = AtomicU64::new(0);
    let note = |n: u64| {
        let d = downloaded.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(p) = &opts.progress {
            p(d, planned);
        }
    };

    let fs: FsRef = Arc::new(StdFs);
    let _ = std::fs::remove_file(tmp);
    let file: FileRef = fs
        .open(tmp, OpenOptions::create())
        .map_err(|e| io_err(tmp, "creating", e))?;
    let result = (|| -> Result<RestoreReport> {
        let mut state = AppliedState::default();
        // Each page's hash as written, for the whole-database checksum at the end.
        let mut hashes = PageHashTable::default();
        if let Some(m) = &manifest {
            state = AppliedState {
                lsn: m.lsn,
                page_size: m.page_size,
                db_pages: m.db_pages,
                checksum: m.checksum,
                timestamp_us: m.timestamp_us,
                transactions: 0,
            };
        }
        let batches = &t.batches[batch_range.clone()];
        let mut expect = base_lsn + 1;
        let mut scratch = Vec::new();
        let mut pages = PageArena::default();
        // The snapshot is laid down on its own threads while the first batches download and
        // decode; batches are applied once it is done.
        std::thread::scope(|scope| -> Result<()> {
            let mut laying = manifest.as_ref().map(|m| {
                let (file, tmp, note) = (&file, &tmp, &note);
                scope.spawn(move || lay_down_snapshot(store, m, file, tmp, opts.concurrency, note))
            });
            let mut laid = |hashes: &mut PageHashTable| -> Result<()> {
                if let Some(h) = laying.take() {
                    *hashes = h.join().map_err(|_| {
                        SnapshotError::Encode("the snapshot download thread panicked".into())
                    })??;
                }
                Ok(())
            };
            // Batches can be large (16 MiB of records by default): each is streamed from the
            // store and decoded record by record as it arrives, and the next one is opened
            // (its first chunks requested) while the current one is applied.
            let open = |i: usize| {
                let b = &batches[i];
                once_more_if_corrupt(&b.key, || {
                    BatchStream::from_reader(&b.key, store.get_reader(&b.key)?)
                })
            };
            let fetch = |i: usize| {
                let stream = open(i)?;
                note(batches[i].size);
                Ok(stream)
            };
            let mut apply = |i: usize, mut batch: BatchStream| -> Result<bool> {
                laid(&mut hashes)?;
                let key = &batches[i].key;
                let h = batch.header;
                if h.timeline != t.timeline || h.first_lsn != batches[i].first_lsn {
                    return Err(SnapshotError::Corrupt {
                        key: key.clone(),
                        reason: "header does not match the key".into(),
                    });
                }
                match database_id {
                    Some(id) if id != h.database_id => {
                        return Err(SnapshotError::WrongDatabase {
                            key: key.clone(),
                            expected: id,
                            found: h.database_id,
                        });
                    }
                    _ => database_id = Some(h.database_id),
                }
                if h.first_lsn > expect {
                    return Err(SnapshotError::Gap {
                        store: store.describe(),
                        timeline: t.timeline,
                        from: expect,
                        to: h.first_lsn - 1,
                    });
                }
                if h.is_gap() && h.last_lsn >= expect {
                    if target < h.first_lsn.max(expect) {
                        return Ok(false);
                    }
                    return Err(SnapshotError::Gap {
                        store: store.describe(),
                        timeline: t.timeline,
                        from: h.first_lsn.max(expect),
                        to: h.last_lsn.min(target),
                    });
                }
                // Only the last image of each page in the batch is written, in page order.
                let mut more = true;
                while let Some(r) = batch.next_record()? {
                    if r.lsn < expect {
                        continue;
                    }
                    if r.lsn > target {
                        more = false;
                        break;
                    }
                    if r.kind == KIND_TXN {
                        let txn =
                            TxnRecord::decode(r.payload).map_err(|e| SnapshotError::Corrupt {
                                key: key.clone(),
                                reason: format!("record {}: {e}", r.lsn),
                            })?;
                        if state.page_size != 0 && txn.page_size != state.page_size {
                            return Err(SnapshotError::Corrupt {
                                key: key.clone(),
                                reason: format!(
                                    "record {} changes the page size to {}",
                                    r.lsn, txn.page_size
                                ),
                            });
                        }
                        state.page_size = txn.page_size;
                        if txn.db_pages < state.db_pages {
                            // The database shrank: cut the file now, so that pages beyond the
                            // new end read as zeros if it grows again.
                            pages
                                .flush(&*file, state.page_size, &mut scratch, &mut hashes)
                                .map_err(|e| io_err(tmp, "writing", e))?;
                            file.set_len(txn.db_pages as u64 * txn.page_size as u64)
                                .map_err(|e| io_err(tmp, "resizing", e))?;
                            hashes.resize(txn.db_pages);
                        }
                        for (pgno, data) in txn.pages() {
                            pages.set(pgno, data);
                        }
                        if pages.bytes() >= PAGE_ARENA_BYTES {
                            pages
                                .flush(&*file, state.page_size, &mut scratch, &mut hashes)
                                .map_err(|e| io_err(tmp, "writing", e))?;
                        }
                        state.db_pages = txn.db_pages;
                        state.checksum = txn.checksum;
                        state.transactions += 1;
                    }
                    state.lsn = r.lsn;
                    state.timestamp_us = r.timestamp_us;
                    expect = r.lsn + 1;
                }
                pages
                    .flush(&*file, state.page_size, &mut scratch, &mut hashes)
                    .map_err(|e| io_err(tmp, "writing", e))?;
                Ok(more)
            };
            // A batch that fails its checksums part way is read once more from its start:
            // the records already applied are skipped (each was checked before it was used).
            let mut apply = |i: usize, batch: BatchStream| -> Result<bool> {
                match apply(i, batch) {
                    // Only this batch's own damage: an error of the snapshot laid down before
                    // the first batch is applied must not be retried (nor lost) here.
                    Err(SnapshotError::Corrupt { key, reason }) if key == batches[i].key => {
                        tracing::warn!(key = %batches[i].key, %reason,
                            "batch failed its checksums; reading it again");
                        apply(i, open(i)?)
                    }
                    r => r,
                }
            };
            if opts.prefetch_batches {
                fetch_ordered(batches.len(), 1, 1, fetch, &mut apply)?;
            } else {
                // The first batch downloads while the snapshot is still being laid down.
                for i in 0..batches.len() {
                    if !apply(i, fetch(i)?)? {
                        break;
                    }
                }
            }
            laid(&mut hashes)
        })?;
        if state.lsn < target {
            return Err(SnapshotError::Gap {
                store: store.describe(),
                timeline: t.timeline,
                from: state.lsn + 1,
                to: target,
            });
        }
        if state.page_size == 0 {
            return Err(SnapshotError::Corrupt {
                key: t.batches.first().map(|b| b.key.clone()).unwrap_or_default(),
                reason: "no transaction before the target".into(),
            });
        }
        // Cut to size and verify.
        let size = state.db_pages as u64 * state.page_size as u64;
        file.set_len(size).map_err(|e| io_err(tmp, "resizing", e))?;
        hashes.resize(state.db_pages);
        let found = hashes.checksum(state.page_size);
        if found != state.checksum {
            return Err(SnapshotError::ChecksumMismatch {
                lsn: target,
                expected: state.checksum,
                found,
            });
        }
        file.sync_data().map_err(|e| io_err(tmp, "syncing", e))?;
        Ok(RestoreReport {
            path: out.to_path_buf(),
            database_id: database_id.unwrap_or(0),
            timeline: t.timeline,
            lsn: target,
            timestamp_us: state.timestamp_us,
            snapshot_lsn: manifest.as_ref().map(|m| m.lsn),
            batches: batch_range.len(),
            transactions: state.transactions,
            bytes_downloaded: downloaded.load(Ordering::Relaxed),
            page_size: state.page_size,
            db_pages: state.db_pages,
            checksum: state.checksum,
            new_timeline: None,
            new_timeline_base: None,
            elapsed: Duration::ZERO,
            download_elapsed: Duration::ZERO,
        })
    })();
    drop(file);
    match result {
        Ok(r) => Ok((catalog, r)),
        Err(e) => {
            let _ = std::fs::remove_file(tmp);
            Err(e)
        }
    }
}

/// Page images buffered before a flush.
const PAGE_ARENA_BYTES: usize = 4 << 20;

/// Bytes of pages a snapshot part is decoded into before they are written (per download
/// thread).
const PART_BUFFER_BYTES: usize = 256 << 10;

/// The last image of each page written by a run of transactions, copied out of the record
/// stream, until it is flushed.
#[derive(Default)]
struct PageArena {
    data: Vec<u8>,
    pages: std::collections::BTreeMap<u32, (usize, usize)>,
}

impl PageArena {
    fn set(&mut self, pgno: u32, page: &[u8]) {
        match self.pages.get(&pgno) {
            Some(&(at, len)) if len == page.len() => {
                self.data[at..at + len].copy_from_slice(page);
            }
            _ => {
                self.pages.insert(pgno, (self.data.len(), page.len()));
                self.data.extend_from_slice(page);
            }
        }
    }

    fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Write the pages at their offsets, runs of adjacent pages (up to 1 MiB) in one call, and
    /// record their hashes.
    fn flush(
        &mut self,
        file: &dyn pagelog_log::fs::FsFile,
        page_size: u32,
        scratch: &mut Vec<u8>,
        hashes: &mut PageHashTable,
    ) -> std::io::Result<()> {
        let ps = page_size as u64;
        let max_run = ((1usize << 20) / page_size as usize).max(1);
        let mut run_start = 0u32;
        let mut run_len = 0usize;
        scratch.clear();
        for (&pgno, &(at, len)) in &self.pages {
            let data = &self.data[at..at + len];
            hashes.set(pgno, page_hash(pgno, data));
            if run_len > 0 && (pgno != run_start + run_len as u32 || run_len == max_run) {
                file.write_all_at(scratch, (run_start as u64 - 1) * ps)?;
                scratch.clear();
                run_len = 0;
            }
            if run_len == 0 {
                run_start = pgno;
            }
            scratch.extend_from_slice(data);
            run_len += 1;
        }
        if run_len > 0 {
            file.write_all_at(scratch, (run_start as u64 - 1) * ps)?;
        }
        self.pages.clear();
        self.data.clear();
        Ok(())
    }
}

/// The hash of every page as restore wrote it; pages never written (after the database grew)
/// hash as zeros, as in the VFS's checksum.
#[derive(Debug, Default)]
struct PageHashTable {
    hashes: Vec<Option<u64>>,
}

impl PageHashTable {
    fn resize(&mut self, pages: u32) {
        self.hashes.resize(pages as usize, None);
    }

    fn set(&mut self, pgno: u32, hash: u64) {
        let i = pgno as usize - 1;
        if self.hashes.len() <= i {
            self.hashes.resize(i + 1, None);
        }
        self.hashes[i] = Some(hash);
    }

    /// The whole-database checksum (XOR of the page hashes).
    fn checksum(&self, page_size: u32) -> u64 {
        let zeros = vec![0u8; page_size as usize];
        self.hashes
            .iter()
            .enumerate()
            .map(|(i, h)| h.unwrap_or_else(|| page_hash(i as u32 + 1, &zeros)))
            .fold(0, |a, h| a ^ h)
    }
}

#[derive(Debug, Default)]
struct AppliedState {
    lsn: Lsn,
    page_size: u32,
    db_pages: u32,
    checksum: u64,
    timestamp_us: u64,
    transactions: u64,
}

fn lay_down_snapshot(
    store: &dyn ObjectStore,
    m: &Manifest,
    file: &FileRef,
    tmp: &Path,
    concurrency: usize,
    note: &(dyn Fn(u64) + Sync),
) -> Result<PageHashTable> {
    file.set_len(m.db_pages as u64 * m.page_size as u64)
        .map_err(|e| io_err(tmp, "sizing", e))?;
    let mut hashes = PageHashTable::default();
    hashes.resize(m.db_pages);
    let table = parking_lot::Mutex::new(hashes);
    fetch_ordered(
        m.parts.len(),
        concurrency.max(1),
        concurrency.max(1),
        |i| {
            let key = part_key(m.timeline, m.lsn, i as u32);
            // A part that fails its checksums (found at its end) is read once more: its pages
            // are written again at the same offsets.
            once_more_if_corrupt(&key, || {
                lay_down_part(store, m, i, &key, file, tmp, note, &table)
            })
        },
        |_, ()| Ok(true),
    )?;
    Ok(table.into_inner())
}

/// Stream snapshot part `i` (`key`) into `file`, and record its pages' hashes in `table`.
#[allow(clippy::too_many_arguments)]
fn lay_down_part(
    store: &dyn ObjectStore,
    m: &Manifest,
    i: usize,
    key: &str,
    file: &FileRef,
    tmp: &Path,
    note: &(dyn Fn(u64) + Sync),
    table: &parking_lot::Mutex<PageHashTable>,
) -> Result<()> {
    let mut part = PartStream::from_reader(key, store.get_reader(key)?)?;
    let h = part.header;
    let (first, n) = m.part_pages(i as u32);
    if h.lsn != m.lsn
        || h.database_id != m.database_id
        || h.page_size != m.page_size
        || h.first_pgno != first
        || h.pages != n
        || h.body_crc != m.parts[i].body_crc
    {
        return Err(SnapshotError::Corrupt {
            key: key.to_string(),
            reason: "part does not match its manifest".into(),
        });
    }
    // Pages are written as they are decoded, a buffer at a time; parts cover disjoint pages, so
    // each is written from its fetching thread. A part found corrupt at its end (twice) fails
    // the restore, whose temporary file is then removed.
    let ps = m.page_size as usize;
    let mut buf = vec![0u8; PART_BUFFER_BYTES.max(ps) / ps * ps];
    let mut pgno = first;
    let mut hs = Vec::with_capacity((n as usize).min(1 << 16));
    loop {
        let len = part.read_pages(&mut buf)?;
        if len == 0 {
            break;
        }
        file.write_all_at(&buf[..len], (pgno as u64 - 1) * ps as u64)
            .map_err(|e| io_err(tmp, "writing", e))?;
        for p in buf[..len].chunks_exact(ps) {
            hs.push((pgno, page_hash(pgno, p)));
            pgno += 1;
        }
    }
    let mut t = table.lock();
    for (pgno, h) in hs {
        t.set(pgno, h);
    }
    note(m.parts[i].size);
    Ok(())
}

/// Open the file with stock SQLite and run `PRAGMA integrity_check`.
pub fn integrity_check(path: &Path) -> Result<()> {
    let fail = |detail: String| SnapshotError::Corrupt {
        key: path.display().to_string(),
        reason: format!("integrity_check: {detail}"),
    };
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| fail(e.to_string()))?;
    let res: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| fail(e.to_string()))?;
    drop(conn);
    if res != "ok" {
        return Err(fail(res));
    }
    Ok(())
}

/// Delete the base snapshot a failed branch uploaded (manifest first, so that it is never
/// seen complete without all its parts). Best effort: what stays is an unused branch's base,
/// listed by `ls`, never the latest history.
fn forget_base(store: &dyn ObjectStore, timeline: u64, lsn: Lsn) {
    let r = Catalog::load_timeline(store, timeline).and_then(|t| {
        match t.snapshots.iter().find(|s| s.lsn == lsn) {
            Some(s) => crate::retention::delete_snapshot(store, s),
            None => Ok(()),
        }
    });
    if let Err(e) = r {
        tracing::warn!(timeline, lsn, error = %e, "cannot delete the failed branch's base snapshot");
    }
}

/// Claim a new timeline branching from the restored state, build the local log that
/// continues it in `log_dir` (beside the output; [`place`] moves it beside the database),
/// and upload the restored file `file` (not yet in place: nothing else opens it) as the new
/// timeline's base snapshot at the branch LSN, so that a shipper continues the timeline from
/// the log's first record, with no base snapshot of its own and no gap. Returns the new
/// timeline and the base snapshot's LSN (`None` if the store refused or failed the upload:
/// logged, not an error, since the branch works without it; a file that no longer matches
/// its checksum is an error).
fn branch(
    store: &dyn ObjectStore,
    catalog: &Catalog,
    r: &RestoreReport,
    file: &Path,
    log_dir: &Path,
    opts: &RestoreOptions,
) -> Result<(u64, Option<Lsn>)> {
    let mut timeline = catalog.max_timeline() + 1;
    loop {
        let info = TimelineInfo {
            database_id: r.database_id,
            timeline,
            parent_timeline: r.timeline,
            parent_lsn: r.lsn,
            created_us: crate::time::now_us(),
            first_lsn: r.lsn + 1,
        };
        match store.put_if_absent(&timeline_key(timeline), &info.encode())? {
            PutOutcome::Created => break,
            PutOutcome::AlreadyExists => timeline += 1,
        }
    }
    tracing::info!(
        timeline,
        parent = r.timeline,
        at = r.lsn,
        "claimed a new timeline"
    );
    let log = Log::open(
        Arc::new(StdFs),
        log_dir,
        LogOptions {
            database_id: Some(r.database_id),
            timeline,
            first_lsn: r.lsn + 1,
            background_flush: false,
            // Preallocated (about 200 ms for 64 MiB): the database appends to this segment
            // once it is opened, and opening an existing log does not preallocate it, so an
            // unallocated one would make every commit until the first roll grow the file.
            ..LogOptions::default()
        },
    )?;
    // A transaction that changes no page: it records the size and checksum the database
    // file holds, which is what the VFS checks when it opens.
    let mut payload = Vec::new();
    begin_txn(&mut payload, r.page_size, r.db_pages);
    finish_txn(&mut payload, r.checksum, 0);
    log.append_sync(KIND_TXN, &payload)?;
    log.close()?;
    let image = crate::snapshot::FileImage {
        database_id: r.database_id,
        timeline,
        lsn: r.lsn,
        timestamp_us: r.timestamp_us,
        page_size: r.page_size,
        db_pages: r.db_pages,
        checksum: r.checksum,
    };
    let snapshot_opts = crate::SnapshotOptions {
        concurrency: opts.concurrency.max(1),
        ..crate::SnapshotOptions::default()
    };
    let base = match crate::snapshot::upload_file_snapshot(store, &snapshot_opts, file, image) {
        Ok(info) => {
            tracing::info!(
                timeline,
                lsn = info.lsn,
                bytes = info.stored_bytes,
                "uploaded the new timeline's base snapshot"
            );
            Some(info.lsn)
        }
        Err(SnapshotError::Store(e)) => {
            tracing::warn!(
                timeline,
                error = %e,
                "cannot upload the new timeline's base snapshot; the shipper takes one when it \
                 attaches (the records before it then show as a recorded gap)"
            );
            None
        }
        Err(e) => return Err(e),
    };
    Ok((timeline, base))
}
