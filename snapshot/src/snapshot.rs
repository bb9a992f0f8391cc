//! Taking a snapshot: a consistent image of the database at an LSN, uploaded as parts and a
//! manifest, without stopping writers.
//!
//! The main file is copied into a scratch file next to the log while SQLite's checkpoint lock
//! is held ([`Database::copy_main_file`]): checkpoints wait (or are skipped — SQLite's
//! automatic checkpoints are passive), commits go on into the WAL. The copy holds every
//! transaction up to the last checkpoint mark and possibly pages of later ones; replaying the
//! local log's transactions after the mark up to the last commit at copy time gives the exact
//! image at that LSN, which is checked against the checksum the log recorded. The image is then
//! streamed up in parts (a few in flight, so memory stays bounded whatever the database size),
//! and the manifest last: a snapshot exists once its manifest does.
//!
//! **A failed upload cleans up after itself.** When a part cannot be uploaded, the attempt's
//! parts (every part under `snap/{lsn}/` while no manifest is there) are deleted at once
//! ([`discard_unfinished_snapshot`]), so that retried attempts — each at a new LSN when commits
//! go on — do not fill the store with orphan parts (after a full store was freed, say). If that
//! delete fails too, the shipper deletes them before its next attempt and starts no new attempt
//! until it has, so at most one failed attempt's parts are in the store at a time. Parts are
//! deleted only while the manifest has never been sent: once it has, a manifest whose answer
//! was lost may still exist, and the parts are left for retention, which deletes unfinished
//! snapshots older than the newest complete one (see `retention`). A part whose request the
//! store applies after the client gave up on it can outlive the delete; retention removes it
//! once a later snapshot is complete.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pagelog_log::Lsn;
use pagelog_log::fs::{FileRef, OpenOptions};
use pagelog_vfs::Database;
use pagelog_vfs::record::{KIND_TXN, TxnRecord};
use parking_lot::Mutex;

use crate::error::{Result, SnapshotError};
use crate::format::{
    KeyKind, Manifest, ManifestPart, encode_part, manifest_key, parse_key, part_key,
    snapshot_prefix,
};
use crate::store::ObjectStore;
use crate::upload::{put_immutable, with_retries};

/// How snapshots are cut and uploaded.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// Uncompressed bytes per part (rounded down to whole pages). Default 4 MiB.
    pub part_bytes: usize,
    /// Parts uploaded at once. Default 4 (so at most about 4 × 2 × `part_bytes` in memory).
    pub concurrency: usize,
    /// Attempts per part on transient store errors. Default 5.
    pub attempts: u32,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            part_bytes: 4 << 20,
            concurrency: 4,
            attempts: 5,
        }
    }
}

/// A snapshot that was uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Timeline.
    pub timeline: u64,
    /// The image is the database right after this LSN.
    pub lsn: Lsn,
    /// Commit time of that LSN (µs since the epoch).
    pub timestamp_us: u64,
    /// Page size.
    pub page_size: u32,
    /// Pages.
    pub db_pages: u32,
    /// Whole-database checksum.
    pub checksum: u64,
    /// Parts uploaded.
    pub parts: usize,
    /// Stored bytes (compressed parts and manifest).
    pub stored_bytes: u64,
    /// How long checkpoints were held off while the main file was copied.
    pub copy_time: Duration,
    /// Total time.
    pub elapsed: Duration,
}

fn io_err(path: &std::path::Path, context: &str, source: std::io::Error) -> SnapshotError {
    SnapshotError::Io {
        path: path.to_path_buf(),
        context: context.to_string(),
        source,
    }
}

/// Called with the snapshot's LSN after the image is built and before anything is uploaded;
/// an error aborts the snapshot. The shipper uses it to fence the LSN range a base snapshot
/// stands for.
pub type BeforeUpload<'a> = &'a dyn Fn(Lsn, u64) -> Result<()>;

/// Take a snapshot of `db` at its last committed transaction and upload it to `store`.
pub fn take_snapshot(
    db: &Database,
    store: &dyn ObjectStore,
    opts: &SnapshotOptions,
) -> Result<SnapshotInfo> {
    take_snapshot_with(db, store, opts, &|_, _| Ok(()))
}

/// [`take_snapshot`], calling `before_upload(lsn, timestamp_us)` once the image is ready.
pub fn take_snapshot_with(
    db: &Database,
    store: &dyn ObjectStore,
    opts: &SnapshotOptions,
    before_upload: BeforeUpload<'_>,
) -> Result<SnapshotInfo> {
    take_snapshot_tracked(db, store, opts, before_upload).0
}

/// Delete what an unfinished upload of the snapshot at `lsn` left on `timeline`: its parts,
/// unless its manifest exists (then the snapshot is complete and nothing is deleted). One
/// listing of the snapshot's directory, then a delete per part. Returns the parts deleted.
///
/// Only for an upload that is over and whose manifest was never sent (or is known to exist):
/// the parts of an upload in progress, or of one whose manifest request may still be applied,
/// must not be deleted.
pub fn discard_unfinished_snapshot(
    store: &dyn ObjectStore,
    timeline: u64,
    lsn: Lsn,
) -> Result<usize> {
    let listed = store.list(&format!("{}{lsn:020}/", snapshot_prefix(timeline)))?;
    let kinds: Vec<_> = listed.iter().map(|m| (parse_key(&m.key), &m.key)).collect();
    if kinds
        .iter()
        .any(|(k, _)| matches!(k, Some(KeyKind::Manifest { .. })))
    {
        return Ok(0);
    }
    let mut deleted = 0;
    for (kind, key) in kinds {
        if let Some(KeyKind::Part {
            timeline: t,
            lsn: l,
            ..
        }) = kind
            && t == timeline
            && l == lsn
        {
            store.delete(key)?;
            deleted += 1;
        }
    }
    if deleted > 0 {
        tracing::info!(
            timeline,
            lsn,
            parts = deleted,
            "deleted the parts of an unfinished snapshot upload"
        );
    }
    Ok(deleted)
}

/// [`take_snapshot_with`], also telling, when the upload failed and the parts it may have
/// created could not be deleted, the LSN whose parts are still to delete (with
/// [`discard_unfinished_snapshot`]) before another attempt.
pub(crate) fn take_snapshot_tracked(
    db: &Database,
    store: &dyn ObjectStore,
    opts: &SnapshotOptions,
    before_upload: BeforeUpload<'_>,
) -> (Result<SnapshotInfo>, Option<Lsn>) {
    let started = Instant::now();
    let log = db.log();
    let scratch = log.dir().join("snapshot.tmp");
    let fs = db.fs().clone();
    let _ = fs.remove(&scratch);
    let file = match fs.open(&scratch, OpenOptions::create()) {
        Ok(f) => f,
        Err(e) => return (Err(io_err(&scratch, "creating", e)), None),
    };
    let mut leftover = None;
    let result = build_and_upload(
        db,
        store,
        opts,
        &file,
        &scratch,
        started,
        before_upload,
        &mut leftover,
    );
    drop(file);
    if let Err(e) = fs.remove(&scratch) {
        tracing::warn!(path = %scratch.display(), error = %e, "cannot remove snapshot scratch file");
    }
    (result, leftover)
}

/// Build the image and upload it. If uploading a part fails, the attempt's parts are deleted;
/// if that fails too, `leftover` gets the snapshot's LSN.
#[allow(clippy::too_many_arguments)]
fn build_and_upload(
    db: &Database,
    store: &dyn ObjectStore,
    opts: &SnapshotOptions,
    file: &FileRef,
    scratch: &std::path::Path,
    started: Instant,
    before_upload: BeforeUpload<'_>,
    leftover: &mut Option<Lsn>,
) -> Result<SnapshotInfo> {
    let log = db.log();
    let (timeline, database_id) = (log.timeline(), log.database_id());
    let base = db.copy_main_file(&**file)?;
    let copy_time = started.elapsed();
    let x = base.last_lsn;
    // The image must not hold a transaction a crash could still lose (Gated mode).
    db.wait_durable(x)?;
    // The record at X tells the size, checksum and time of the image.
    let rec = log
        .reader(x)?
        .next()
        .ok_or_else(|| SnapshotError::Config(format!("record {x} is not in the local log")))??;
    if rec.kind != KIND_TXN {
        return Err(SnapshotError::Config(format!(
            "record {x} is not a transaction"
        )));
    }
    let txn = TxnRecord::decode(&rec.payload)?;
    let page_size = txn.page_size;
    pagelog_vfs::replay::replay_log(log, base.checkpoint_lsn + 1, x, &**file, Some(page_size))?;
    file.set_len(txn.db_pages as u64 * page_size as u64)
        .map_err(|e| io_err(scratch, "resizing", e))?;
    let hashes = pagelog_vfs::checksum::hash_file(&**file, page_size)
        .map_err(|e| io_err(scratch, "hashing", e))?;
    if hashes.checksum() != txn.checksum || hashes.pages() != txn.db_pages {
        return Err(SnapshotError::ChecksumMismatch {
            lsn: x,
            expected: txn.checksum,
            found: hashes.checksum(),
        });
    }

    before_upload(x, rec.timestamp_us)?;

    let manifest = Manifest {
        database_id,
        timeline,
        lsn: x,
        timestamp_us: rec.timestamp_us,
        page_size,
        db_pages: txn.db_pages,
        checksum: txn.checksum,
        pages_per_part: 0,
        parts: Vec::new(),
    };
    let manifest = upload_image(store, opts, file, scratch, manifest, leftover)?;
    let info = SnapshotInfo::of(&manifest, copy_time, started.elapsed());
    tracing::info!(
        timeline,
        lsn = x,
        pages = info.db_pages,
        bytes = info.stored_bytes,
        copy_ms = copy_time.as_millis() as u64,
        "snapshot uploaded"
    );
    Ok(info)
}

impl SnapshotInfo {
    fn of(m: &Manifest, copy_time: Duration, elapsed: Duration) -> SnapshotInfo {
        SnapshotInfo {
            timeline: m.timeline,
            lsn: m.lsn,
            timestamp_us: m.timestamp_us,
            page_size: m.page_size,
            db_pages: m.db_pages,
            checksum: m.checksum,
            parts: m.parts.len(),
            stored_bytes: m.stored_bytes(),
            copy_time,
            elapsed,
        }
    }
}

/// Upload the image in `file` (`path` names it in errors) as the snapshot `manifest`
/// describes — its parts, a few at a time, then the manifest, with `pages_per_part` and
/// `parts` filled in here. If uploading a part fails, the attempt's parts are deleted; if that
/// fails too, `leftover` gets the snapshot's LSN.
fn upload_image(
    store: &dyn ObjectStore,
    opts: &SnapshotOptions,
    file: &FileRef,
    path: &std::path::Path,
    mut manifest: Manifest,
    leftover: &mut Option<Lsn>,
) -> Result<Manifest> {
    let (database_id, timeline, x, page_size) = (
        manifest.database_id,
        manifest.timeline,
        manifest.lsn,
        manifest.page_size,
    );
    let pages_per_part = ((opts.part_bytes / page_size as usize).max(1)) as u32;
    let n_parts = manifest.db_pages.div_ceil(pages_per_part) as usize;
    manifest.pages_per_part = pages_per_part;
    manifest.parts.clear();
    let parts: Mutex<Vec<Option<ManifestPart>>> = Mutex::new(vec![None; n_parts]);
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<SnapshotError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..opts.concurrency.clamp(1, n_parts.max(1)) {
            scope.spawn(|| {
                let mut buf = Vec::new();
                loop {
                    if failure.lock().is_some() {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n_parts {
                        return;
                    }
                    let r = (|| -> Result<ManifestPart> {
                        let (first, n) = manifest.part_pages(i as u32);
                        buf.resize(n as usize * page_size as usize, 0);
                        file.read_exact_at(&mut buf, (first as u64 - 1) * page_size as u64)
                            .map_err(|e| io_err(path, "reading", e))?;
                        let obj = encode_part(database_id, timeline, x, page_size, first, &buf)?;
                        let key = part_key(timeline, x, i as u32);
                        with_retries(opts.attempts, || put_immutable(store, timeline, &key, &obj))?;
                        Ok(ManifestPart {
                            size: obj.len() as u64,
                            body_crc: crate::format::part_body_crc(&obj),
                        })
                    })();
                    match r {
                        Ok(p) => parts.lock()[i] = Some(p),
                        Err(e) => {
                            failure.lock().get_or_insert(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner() {
        // The manifest was never sent: no part of this attempt can become part of a complete
        // snapshot, so delete them now rather than leave them to pile up with each retry.
        if let Err(d) = discard_unfinished_snapshot(store, timeline, x) {
            tracing::warn!(
                timeline,
                lsn = x,
                error = %d,
                "cannot delete the parts of the failed snapshot upload yet"
            );
            *leftover = Some(x);
        }
        return Err(e);
    }
    manifest.parts = parts
        .into_inner()
        .into_iter()
        .map(|p| p.ok_or_else(|| SnapshotError::Encode("a snapshot part is missing".into())))
        .collect::<Result<_>>()?;
    let key = manifest_key(timeline, x);
    let enc = manifest.encode();
    with_retries(opts.attempts, || put_immutable(store, timeline, &key, &enc))?;
    Ok(manifest)
}

/// What a database file holds, for [`upload_file_snapshot`]: the state right after `lsn` on
/// `timeline`, as a restore wrote and checked it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileImage {
    pub database_id: u128,
    pub timeline: u64,
    pub lsn: Lsn,
    pub timestamp_us: u64,
    pub page_size: u32,
    pub db_pages: u32,
    pub checksum: u64,
}

/// Upload the database file at `path` as a snapshot of `image` (a restore's output, which
/// nothing writes meanwhile: the caller holds its log's lock). The file is hashed first and
/// must match the checksum and size `image` gives. A failed upload deletes its parts when it
/// can (retention deletes them otherwise, once a later snapshot is complete).
pub(crate) fn upload_file_snapshot(
    store: &dyn ObjectStore,
    opts: &SnapshotOptions,
    path: &std::path::Path,
    image: FileImage,
) -> Result<SnapshotInfo> {
    let started = Instant::now();
    let fs = pagelog_log::fs::StdFs;
    let file: FileRef = pagelog_log::fs::Fs::open(&fs, path, OpenOptions::existing())
        .map_err(|e| io_err(path, "opening", e))?;
    let hashes = pagelog_vfs::checksum::hash_file(&*file, image.page_size)
        .map_err(|e| io_err(path, "hashing", e))?;
    if hashes.checksum() != image.checksum || hashes.pages() != image.db_pages {
        return Err(SnapshotError::ChecksumMismatch {
            lsn: image.lsn,
            expected: image.checksum,
            found: hashes.checksum(),
        });
    }
    let manifest = Manifest {
        database_id: image.database_id,
        timeline: image.timeline,
        lsn: image.lsn,
        timestamp_us: image.timestamp_us,
        page_size: image.page_size,
        db_pages: image.db_pages,
        checksum: image.checksum,
        pages_per_part: 0,
        parts: Vec::new(),
    };
    let mut leftover = None;
    let manifest = upload_image(store, opts, &file, path, manifest, &mut leftover)?;
    Ok(SnapshotInfo::of(
        &manifest,
        Duration::ZERO,
        started.elapsed(),
    ))
}
