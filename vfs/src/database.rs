//! [`Database`]: the state one database shares between all its connections in this process —
//! its log, the main file, WAL capture, the whole-database checksum, checkpoint marks, the
//! write-ahead gate, in-process locks and the heap WAL-index (shm) — and recovery on open.
//!
//! Recovery (runs at every open, idempotent): take ownership (the log's lock), recover the log,
//! find the last checkpoint mark, replay every later transaction's page images onto the main
//! file in LSN order and sync it (having discarded the WAL first: it can only hold frames the log
//! already has, or frames that were never durable), and check the file against the checksum the
//! log recorded for its last transaction.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pagelog_log::fs::{FileRef, FsFile, FsLock, FsRef, OpenOptions, parent_dir};
use pagelog_log::{Log, LogError, Lsn};
use parking_lot::Mutex;

use crate::capture::{WalCapture, WalEvent};
use crate::checksum::PageHashes;
use crate::error::{Result, VfsError};
use crate::locks::{FileLocks, ShmLocks};
use crate::record::{
    CheckpointMark, KIND_CHECKPOINT, KIND_TXN, TXN_HEADER_LEN, TxnRecord, begin_txn, finish_txn,
    push_page, valid_page_size,
};
use crate::replay::replay_log;
use crate::{Durability, VfsOptions};

/// Chunk size of [`Database::copy_main_file`].
const COPY_CHUNK: usize = 4 << 20;

/// Lock id of a checkpoint hold in the shm lock table (connection ids count up from 1).
const HOLD_ID: u64 = u64::MAX;

/// Index of SQLite's checkpoint lock among the WAL-index locks (`WAL_CKPT_LOCK`).
const WAL_CKPT_LOCK: usize = 1;

/// What [`Database::copy_main_file`] copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseCopy {
    /// The copy holds every transaction up to this LSN.
    pub checkpoint_lsn: Lsn,
    /// The last transaction committed when the copy was made; no page of a later one is in it.
    pub last_lsn: Lsn,
    /// Page size.
    pub page_size: u32,
}

/// Holds SQLite's checkpoint lock so that no checkpoint writes the main file; released on drop.
struct CheckpointHold<'a> {
    db: &'a Database,
}

impl<'a> CheckpointHold<'a> {
    fn acquire(db: &'a Database) -> CheckpointHold<'a> {
        // A running checkpoint holds the lock for as long as it copies frames: wait for it.
        let mut pause = std::time::Duration::from_micros(100);
        while !db
            .shm
            .lock()
            .locks
            .lock_exclusive(HOLD_ID, WAL_CKPT_LOCK..WAL_CKPT_LOCK + 1)
        {
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(10));
        }
        CheckpointHold { db }
    }
}

impl Drop for CheckpointHold<'_> {
    fn drop(&mut self) {
        self.db
            .shm
            .lock()
            .locks
            .unlock(HOLD_ID, WAL_CKPT_LOCK..WAL_CKPT_LOCK + 1);
    }
}

/// Suffix of the log directory next to a database file.
pub const LOG_DIR_SUFFIX: &str = "-pagelog";

struct Inner {
    capture: WalCapture,
    hashes: PageHashes,
    payload: Vec<u8>,
}

pub(crate) struct Shm {
    pub regions: Vec<Box<[u64]>>,
    pub locks: ShmLocks,
}

/// What recovery did when the database was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The database was created by this open.
    pub created: bool,
    /// LSN of the checkpoint mark recovery started from (0: none).
    pub checkpoint_lsn: Lsn,
    /// Transactions replayed onto the database file.
    pub replayed: u64,
    /// A WAL file was found and discarded.
    pub discarded_wal: bool,
    /// Last transaction LSN after recovery.
    pub last_lsn: Lsn,
}

/// One database managed by the pagelog VFS, shared by all its connections in this process.
pub struct Database {
    path: PathBuf,
    wal_path: PathBuf,
    fs: FsRef,
    log: Log,
    durability: Durability,
    file: FileRef,
    page_size: u32,
    inner: Mutex<Inner>,
    pub(crate) locks: Mutex<FileLocks>,
    pub(crate) shm: Mutex<Shm>,
    last_txn: AtomicU64,
    ckpt_lsn: AtomicU64,
    /// The main file was written since its last sync.
    db_dirty: AtomicBool,
    poisoned: Mutex<Option<String>>,
    /// Bumped by [`Database::retire_connections`]: a connection opened under an older epoch
    /// may no longer begin a write transaction (it outlived the owner that closed it).
    epoch: AtomicU64,
    report: OpenReport,
    /// Keeps other programs' SQLite off the main file while this database is open
    /// ([`Fs::try_lock_sqlite`](pagelog_log::fs::Fs::try_lock_sqlite)).
    _sqlite_lock: Option<Box<dyn FsLock>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.path)
            .field("last_lsn", &self.last_lsn())
            .field("durable_lsn", &self.durable_lsn())
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path, context: &str, source: std::io::Error) -> VfsError {
    VfsError::Io {
        path: path.to_path_buf(),
        context: context.to_string(),
        source,
    }
}

/// Page 1 of an empty database in WAL mode (file format versions 2/2), UTF-8, schema format 4.
pub(crate) fn empty_wal_database_page(page_size: u32) -> Vec<u8> {
    let mut p = vec![0u8; page_size as usize];
    p[..16].copy_from_slice(b"SQLite format 3\0");
    let ps_field: u16 = if page_size == 65536 {
        1
    } else {
        page_size as u16
    };
    p[16..18].copy_from_slice(&ps_field.to_be_bytes());
    p[18] = 2; // write version: WAL
    p[19] = 2; // read version: WAL
    p[20] = 0; // reserved bytes per page
    p[21] = 64;
    p[22] = 32;
    p[23] = 32;
    p[24..28].copy_from_slice(&1u32.to_be_bytes()); // change counter
    p[28..32].copy_from_slice(&1u32.to_be_bytes()); // size in pages
    p[44..48].copy_from_slice(&4u32.to_be_bytes()); // schema format
    p[56..60].copy_from_slice(&1u32.to_be_bytes()); // UTF-8
    p[92..96].copy_from_slice(&1u32.to_be_bytes()); // version-valid-for
    p[96..100].copy_from_slice(&(rusqlite::ffi::SQLITE_VERSION_NUMBER as u32).to_be_bytes());
    // Empty table b-tree leaf (sqlite_schema) after the 100-byte header.
    p[100] = 0x0D;
    let content = if page_size == 65536 {
        0
    } else {
        page_size as u16
    };
    p[105..107].copy_from_slice(&content.to_be_bytes());
    p
}

impl Database {
    /// Open (creating if needed) and recover the database at `path`.
    pub(crate) fn open(path: &Path, opts: &VfsOptions) -> Result<Database> {
        let fs = opts.fs.clone();
        let log_dir = PathBuf::from(format!("{}{LOG_DIR_SUFFIX}", path.display()));
        refuse_unmanaged(&fs, path, &log_dir)?;
        let log = Log::open(fs.clone(), &log_dir, opts.log.clone()).map_err(|e| match e {
            LogError::Io { source, .. } if source.kind() == std::io::ErrorKind::WouldBlock => {
                VfsError::Owned {
                    path: path.to_path_buf(),
                    detail: source.to_string(),
                }
            }
            e => VfsError::Log(e),
        })?;
        // A file this open creates is removed again if the open is refused below (a log
        // whose database file is missing, as an interrupted restore can leave it).
        let existed = fs.exists(path).map_err(|e| io_err(path, "probing", e))?;
        let file = fs
            .open(path, OpenOptions::create())
            .map_err(|e| io_err(path, "opening", e))?;
        // Keep SQLite connections that bypass this VFS (the `sqlite3` shell, another program,
        // an `ATTACH` through the default VFS) off the file before recovery writes it: they
        // could not see the WAL-index, which lives in this process's memory, and would
        // checkpoint and delete the WAL behind the VFS's back.
        let sqlite_lock = fs.try_lock_sqlite(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                VfsError::Owned {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                }
            } else {
                io_err(path, "locking", e)
            }
        })?;
        fs.sync_dir(&parent_dir(path))
            .map_err(|e| io_err(path, "syncing the directory of", e))?;
        let wal_path = PathBuf::from(format!("{}-wal", path.display()));
        let mut report = OpenReport::default();

        // Pass 1 (headers only): where the last checkpoint mark and transaction are.
        let (mut last_ckpt_at, mut last_txn_at) = (None, None);
        let mut scan = log.reader(log.first_lsn())?;
        while let Some(info) = scan.next_info() {
            let info = info?;
            match info.kind {
                KIND_TXN => last_txn_at = Some(info.lsn),
                KIND_CHECKPOINT => last_ckpt_at = Some(info.lsn),
                _ => {}
            }
        }
        let read_one = |lsn: Lsn| -> Result<Vec<u8>> {
            match log.reader(lsn)?.next() {
                Some(rec) => Ok(rec?.payload),
                None => Err(VfsError::BadRecord(format!("record {lsn} vanished"))),
            }
        };
        let mut ckpt: Option<CheckpointMark> = match last_ckpt_at {
            Some(lsn) => Some(CheckpointMark::decode(&read_one(lsn)?)?),
            None => None,
        };
        let mut last_txn: Option<(Lsn, u32, u32, u64)> = match last_txn_at {
            Some(lsn) => {
                let payload = read_one(lsn)?;
                let t = TxnRecord::decode(&payload)?;
                Some((lsn, t.page_size, t.db_pages, t.checksum))
            }
            None => None,
        };
        let file_len = file.len().map_err(|e| io_err(path, "measuring", e))?;
        let page_size;
        if last_txn.is_none() {
            if file_len > 0 {
                return Err(VfsError::NotManaged {
                    path: path.to_path_buf(),
                });
            }
            // A new database: page 1 in WAL format is the first transaction in the log.
            page_size = opts.page_size;
            if !valid_page_size(page_size) {
                return Err(VfsError::Config(format!("page size {page_size}")));
            }
            let page = empty_wal_database_page(page_size);
            let mut hashes = PageHashes::new(page_size);
            hashes.resize(1);
            hashes.set(1, &page);
            let mut payload = Vec::new();
            begin_txn(&mut payload, page_size, 1);
            push_page(&mut payload, 1, &page);
            finish_txn(&mut payload, hashes.checksum(), 1);
            let lsn = log.append_sync(KIND_TXN, &payload)?;
            last_txn = Some((lsn, page_size, 1, hashes.checksum()));
            report.created = true;
            ckpt = None;
        } else {
            page_size = last_txn.map(|t| t.1).unwrap_or(opts.page_size);
        }
        let (last_lsn, _, last_pages, last_sum) =
            last_txn.ok_or_else(|| VfsError::BadRecord("no transaction in the log".into()))?;

        // Discard the WAL first: it can only hold frames the log has (replayed below) or
        // frames that were never durable, and on a full disk the space it frees is what lets
        // the replay grow the main file.
        if fs
            .exists(&wal_path)
            .map_err(|e| io_err(&wal_path, "probing", e))?
        {
            fs.remove(&wal_path)
                .and_then(|_| fs.sync_dir(&parent_dir(&wal_path)))
                .map_err(|e| io_err(&wal_path, "discarding", e))?;
            report.discarded_wal = true;
        }

        // Pass 2: replay what the file may not hold.
        let from = ckpt.map(|c| c.lsn + 1).unwrap_or(log.first_lsn());
        report.checkpoint_lsn = ckpt.map(|c| c.lsn).unwrap_or(0);
        let replayed =
            replay_log(&log, from, last_lsn, &*file, Some(page_size)).map_err(|e| match e {
                VfsError::Io {
                    context, source, ..
                } => io_err(path, &context, source),
                e => e,
            })?;
        report.replayed = replayed.transactions;
        file.sync_data().map_err(|e| io_err(path, "syncing", e))?;

        // Verify the file against the log.
        let hashes = hash_file(&file, path, page_size)?;
        if hashes.pages() != last_pages || hashes.checksum() != last_sum {
            if !existed {
                drop(file);
                let _ = fs
                    .remove(path)
                    .and_then(|()| fs.sync_dir(&parent_dir(path)));
            }
            let tmp = PathBuf::from(format!("{}.pagelog-restore.tmp", path.display()));
            if fs.exists(&tmp).unwrap_or(false) {
                tracing::warn!(
                    db = %path.display(),
                    "an interrupted `pagelog restore` left {}: run it again with --force",
                    tmp.display()
                );
            }
            return Err(VfsError::ChecksumMismatch {
                path: path.to_path_buf(),
                lsn: last_lsn,
                expected: last_sum,
                found: hashes.checksum(),
            });
        }
        // The file now durably holds everything: say so in the log.
        let mut ckpt_lsn = ckpt.map(|c| c.lsn).unwrap_or(0);
        if ckpt_lsn < last_lsn {
            let mark = CheckpointMark {
                lsn: last_lsn,
                page_size,
                db_pages: hashes.pages(),
                checksum: hashes.checksum(),
            };
            log.append(KIND_CHECKPOINT, &mark.encode())?;
            ckpt_lsn = last_lsn;
        }
        report.last_lsn = last_lsn;
        tracing::info!(
            db = %path.display(),
            created = report.created,
            replayed = report.replayed,
            last_lsn,
            "pagelog database opened"
        );
        Ok(Database {
            path: path.to_path_buf(),
            wal_path,
            fs,
            log,
            durability: opts.durability,
            file,
            page_size,
            inner: Mutex::new(Inner {
                capture: WalCapture::new(),
                hashes,
                payload: Vec::new(),
            }),
            locks: Mutex::new(FileLocks::default()),
            shm: Mutex::new(Shm {
                regions: Vec::new(),
                locks: ShmLocks::default(),
            }),
            last_txn: AtomicU64::new(last_lsn),
            ckpt_lsn: AtomicU64::new(ckpt_lsn),
            db_dirty: AtomicBool::new(false),
            poisoned: Mutex::new(None),
            epoch: AtomicU64::new(0),
            report,
            _sqlite_lock: sqlite_lock,
        })
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The log (read it, watch its durable LSN, truncate its prefix).
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Durability mode of commits.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// What recovery did at open.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// Page size.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// LSN of the last committed transaction.
    pub fn last_lsn(&self) -> Lsn {
        self.last_txn.load(Ordering::Acquire)
    }

    /// Every record up to this LSN is durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.log.durable_lsn()
    }

    /// The LSN the database file durably holds (last checkpoint mark).
    pub fn checkpoint_lsn(&self) -> Lsn {
        self.ckpt_lsn.load(Ordering::Acquire)
    }

    /// The highest LSN the log may be truncated up to (inclusive) so that recovery still has
    /// all it needs, or `None` if nothing may be dropped yet: every record before the last
    /// checkpointed transaction, once the checkpoint mark covering it is durable (the main file
    /// was synced before the mark was appended). That transaction and its mark stay: recovery
    /// reads the database's size and checksum from the last transaction. Waits for the log's
    /// current tail to be durable if it is not (one group-commit sync).
    ///
    /// Without a store nothing else truncates the log: the `pagelog` facade calls
    /// [`Database::trim_log`] after checkpoints; a user of this crate alone must call it (or
    /// [`Log::truncate_prefix`] up to no more than this bound). With a store, the shipper
    /// truncates only what is both shipped and within this bound.
    pub fn log_truncation_bound(&self) -> Result<Option<Lsn>> {
        let ckpt = self.ckpt_lsn.load(Ordering::Acquire);
        if ckpt <= 1 {
            return Ok(None);
        }
        // The mark for `ckpt` was appended before `ckpt` was published: the tail read now is
        // at or after it.
        let tail = self.log.last_lsn();
        if self.log.durable_lsn() < tail {
            self.log.wait_durable(tail)?;
        }
        Ok(Some(ckpt - 1))
    }

    /// Truncate the log up to [`Database::log_truncation_bound`] (for a database with no store:
    /// with one, only what is shipped may go); returns the segments removed.
    pub fn trim_log(&self) -> Result<usize> {
        match self.log_truncation_bound()? {
            Some(upto) if upto >= self.log.first_lsn() => Ok(self.log.truncate_prefix(upto)?),
            _ => Ok(0),
        }
    }

    /// Whole-database checksum after the last committed transaction, with the database size in
    /// pages.
    pub fn checksum(&self) -> (u64, u32) {
        let inner = self.inner.lock();
        (inner.hashes.checksum(), inner.hashes.pages())
    }

    /// Why the database failed (a commit could not be made durable), if it did: it refuses
    /// every further write until reopened.
    pub fn failure(&self) -> Option<String> {
        self.poisoned.lock().clone()
    }

    /// Block until the transaction at `lsn` (and all before it) is durable.
    pub fn wait_durable(&self, lsn: Lsn) -> Result<()> {
        Ok(self.log.wait_durable(lsn)?)
    }

    /// Write to the main file (after the write-ahead gate).
    pub(crate) fn write_db(&self, data: &[u8], offset: u64) -> Result<()> {
        self.before_db_write()?;
        self.db_dirty.store(true, Ordering::Release);
        self.file
            .write_all_at(data, offset)
            .map_err(|e| io_err(&self.path, "writing", e))
    }

    /// Resize the main file (after the write-ahead gate).
    pub(crate) fn truncate_db(&self, len: u64) -> Result<()> {
        self.before_db_write()?;
        self.db_dirty.store(true, Ordering::Release);
        self.file
            .set_len(len)
            .map_err(|e| io_err(&self.path, "truncating", e))
    }

    /// Sync the main file if it was written since its last sync.
    ///
    /// A failed sync poisons the database: the kernel may have dropped the written pages after
    /// reporting the error, so a later sync that succeeds proves nothing, and a checkpoint mark
    /// written after it would tell recovery to trust a file that lacks those pages.
    pub(crate) fn sync_db_file(&self) -> Result<()> {
        self.check_poisoned()?;
        if self.db_dirty.swap(false, Ordering::AcqRel)
            && let Err(e) = self.file.sync_data()
        {
            self.db_dirty.store(true, Ordering::Release);
            let e = io_err(&self.path, "syncing", e);
            self.poison(&e);
            return Err(e);
        }
        Ok(())
    }

    /// Copy the main database file into `dst` (which is resized to match) while SQLite's
    /// checkpoint lock is held, so no checkpoint changes the file during the copy; writers are
    /// not blocked (their frames wait in the WAL). The copy holds every transaction up to
    /// [`BaseCopy::checkpoint_lsn`] and, for some pages, later ones up to
    /// [`BaseCopy::last_lsn`]; replaying the log's transactions in
    /// `checkpoint_lsn + 1 ..= last_lsn` onto it gives the database exactly as of `last_lsn`.
    /// This is how snapshots are taken without stopping writers.
    pub fn copy_main_file(&self, dst: &dyn FsFile) -> Result<BaseCopy> {
        self.check_poisoned()?;
        let hold = CheckpointHold::acquire(self);
        // Read after the hold: every frame a finished checkpoint copied belongs to a
        // transaction captured before now.
        let base = BaseCopy {
            checkpoint_lsn: self.ckpt_lsn.load(Ordering::Acquire),
            last_lsn: self.last_txn.load(Ordering::Acquire),
            page_size: self.page_size,
        };
        let len = self
            .file
            .len()
            .map_err(|e| io_err(&self.path, "measuring", e))?;
        let copy = (|| -> std::io::Result<()> {
            dst.set_len(len)?;
            let mut buf = vec![0u8; COPY_CHUNK.min(len as usize)];
            let mut off = 0u64;
            while off < len {
                let n = (len - off).min(buf.len() as u64) as usize;
                self.file.read_exact_at(&mut buf[..n], off)?;
                dst.write_all_at(&buf[..n], off)?;
                off += n as u64;
            }
            Ok(())
        })();
        drop(hold);
        copy.map_err(|e| io_err(&self.path, "copying for a snapshot", e))?;
        Ok(base)
    }

    pub(crate) fn file(&self) -> &FileRef {
        &self.file
    }

    /// The file system the database and its log live on.
    pub fn fs(&self) -> &FsRef {
        &self.fs
    }

    pub(crate) fn wal_path(&self) -> &Path {
        &self.wal_path
    }

    fn check_poisoned(&self) -> Result<()> {
        match &*self.poisoned.lock() {
            Some(cause) => Err(VfsError::Poisoned {
                path: self.path.clone(),
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poison(&self, e: &VfsError) {
        let mut p = self.poisoned.lock();
        if p.is_none() {
            tracing::error!(db = %self.path.display(), error = %e, "database poisoned");
            *p = Some(e.to_string());
        }
    }

    /// Stop every connection open now from writing: from here on, a connection opened before
    /// this call cannot begin a write transaction. SQLite's WAL write lock, asked for to begin
    /// one, is refused with `SQLITE_READONLY`: the statement fails with "attempt to write a
    /// readonly database", having written nothing. Reads, checkpoints and closing still work.
    /// Connections opened afterwards write as usual. The facade calls this when a
    /// `pagelog::Database` is closed or dropped, so that connections kept past it cannot
    /// commit transactions that nothing would ship. A write transaction that had begun before
    /// this call (it holds the write lock) can still commit; that commit is in the local log,
    /// and the next open ships it.
    pub fn retire_connections(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// See [`Database::retire_connections`].
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The write-ahead rule: before any page reaches the main file, every transaction captured
    /// so far is durable in the log.
    pub(crate) fn before_db_write(&self) -> Result<()> {
        self.check_poisoned()?;
        let last = self.last_txn.load(Ordering::Acquire);
        if self.log.durable_lsn() < last {
            self.log.wait_durable(last)?;
        }
        Ok(())
    }

    /// Account for a write SQLite made to the WAL (after it reached the WAL file). Returns the
    /// LSN of the transaction it committed, if it was a commit; in Sync mode, only once that
    /// transaction is durable.
    pub(crate) fn on_wal_write(&self, offset: u64, data: &[u8]) -> Result<Option<Lsn>> {
        self.check_poisoned()?;
        let res = self.capture(offset, data);
        let res = match res {
            Ok(Some(lsn)) if self.durability == Durability::Sync => self
                .log
                .wait_durable(lsn)
                .map(|_| Some(lsn))
                .map_err(VfsError::from),
            other => other,
        };
        match &res {
            // Refused before anything was appended or accounted: SQLite rolls the transaction
            // back and the database goes on.
            Err(VfsError::TxnTooLarge { .. }) => {}
            // SQLite will report the commit as failed, but the log may already hold it: this
            // process's view and the log can differ, so nothing more is written until reopen.
            Err(e) => self.poison(e),
            Ok(_) => {}
        }
        res
    }

    fn capture(&self, offset: u64, data: &[u8]) -> Result<Option<Lsn>> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        match inner.capture.on_write(offset, data)? {
            WalEvent::None => Ok(None),
            WalEvent::Header { restart } => {
                if inner.capture.page_size() != self.page_size {
                    return Err(VfsError::BadRecord(format!(
                        "WAL page size {} differs from the database's {}",
                        inner.capture.page_size(),
                        self.page_size
                    )));
                }
                if restart {
                    self.mark_checkpoint(inner)?;
                }
                Ok(None)
            }
            WalEvent::Commit { db_pages } => {
                let Inner {
                    capture,
                    hashes,
                    payload,
                } = inner;
                // The record's size is known before it is built: refuse one over the log's
                // limit before touching the checksum, and forget the transaction (SQLite's
                // failed commit-frame write leaves its WAL index without it). The frame count
                // bounds it at no cost; only a transaction that may be over the limit has its
                // distinct pages counted (that sorts them, which the loop below does again).
                let max = self.log.max_record_bytes();
                let record_len = |pages: usize| {
                    TXN_HEADER_LEN as u64 + pages as u64 * (4 + self.page_size as u64)
                };
                if record_len(capture.frames()) > max as u64 {
                    let count = capture
                        .pages()
                        .filter(|&(pgno, _)| pgno <= db_pages)
                        .count();
                    let len = record_len(count);
                    if len > max as u64 {
                        capture.abandon_commit();
                        return Err(VfsError::TxnTooLarge {
                            path: self.path.clone(),
                            len,
                            max,
                        });
                    }
                }
                hashes.resize(db_pages);
                begin_txn(payload, self.page_size, db_pages);
                let mut count = 0;
                for (pgno, page) in capture.pages() {
                    // Pages a shrinking transaction wrote beyond its final size are gone.
                    if pgno > db_pages {
                        continue;
                    }
                    hashes.set(pgno, page);
                    push_page(payload, pgno, page);
                    count += 1;
                }
                finish_txn(payload, hashes.checksum(), count);
                capture.end_commit();
                let lsn = match self.durability {
                    // The committer waits right away and leads its own fsync.
                    Durability::Sync => self.log.append_then_wait(KIND_TXN, payload)?,
                    Durability::Gated => self.log.append(KIND_TXN, payload)?,
                };
                self.last_txn.store(lsn, Ordering::Release);
                Ok(Some(lsn))
            }
        }
    }

    /// SQLite truncated or deleted the WAL: every frame was checkpointed into the main file.
    pub(crate) fn on_wal_reset(&self) -> Result<()> {
        let mut inner = self.inner.lock();
        if inner.capture.committed_frames() > 0 {
            self.mark_checkpoint(&mut inner)?;
        }
        inner.capture.reset();
        Ok(())
    }

    /// The main file holds every committed transaction: sync it and record the mark.
    fn mark_checkpoint(&self, inner: &mut Inner) -> Result<()> {
        let last = self.last_txn.load(Ordering::Acquire);
        if last <= self.ckpt_lsn.load(Ordering::Acquire) {
            return Ok(());
        }
        // The pages were written after the write-ahead gate; make them durable before saying so
        // (SQLite normally synced them already at the end of its checkpoint).
        self.before_db_write()?;
        self.sync_db_file()?;
        let mark = CheckpointMark {
            lsn: last,
            page_size: self.page_size,
            db_pages: inner.hashes.pages(),
            checksum: inner.hashes.checksum(),
        };
        self.log.append(KIND_CHECKPOINT, &mark.encode())?;
        self.ckpt_lsn.store(last, Ordering::Release);
        tracing::debug!(db = %self.path.display(), lsn = last, "checkpoint mark");
        Ok(())
    }
}

/// A non-empty database file without a log directory is a plain SQLite file: refuse it before
/// [`Log::open`] creates the directory, so that refusing leaves nothing behind.
fn refuse_unmanaged(fs: &FsRef, path: &Path, log_dir: &Path) -> Result<()> {
    if fs
        .exists(log_dir)
        .map_err(|e| io_err(log_dir, "probing", e))?
        || !fs.exists(path).map_err(|e| io_err(path, "probing", e))?
    {
        return Ok(());
    }
    let len = fs
        .open(path, OpenOptions::read_only())
        .and_then(|f| f.len())
        .map_err(|e| io_err(path, "measuring", e))?;
    if len > 0 {
        return Err(VfsError::NotManaged {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Hash every page of the file.
fn hash_file(file: &FileRef, path: &Path, page_size: u32) -> Result<PageHashes> {
    crate::checksum::hash_file(&**file, page_size).map_err(|e| io_err(path, "hashing", e))
}
