//! # pagelog-vfs
//!
//! A SQLite VFS, registered by name, through which every committed WAL transaction becomes one
//! record in the pagelog log — so that the log, not SQLite's own fsyncs, is the durability
//! point. Use it from plain rusqlite:
//!
//! ```
//! use pagelog_vfs::{Durability, PagelogVfs, VfsOptions};
//! let dir = tempfile::tempdir()?;
//! let vfs = PagelogVfs::register("pagelog-doc", VfsOptions::new(Durability::Sync))?;
//! let path = dir.path().join("app.db");
//! let conn = rusqlite::Connection::open_with_flags_and_vfs(
//!     &path,
//!     rusqlite::OpenFlags::default(),
//!     vfs.name(),
//! )?;
//! conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?; // durable on return
//! let db = vfs.open_database(&path)?;
//! assert_eq!(db.durable_lsn(), db.last_lsn());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Design, in short (see `vfs/FORMAT.md` for the record payload):
//! - The database is always in WAL mode (a new database is created with WAL file-format bytes;
//!   other journal modes and rollback journals are refused).
//! - WAL writes are parsed as SQLite makes them; at each commit frame, the transaction's last
//!   page images, the database size and an incremental whole-database checksum become one log
//!   record. In [`Durability::Sync`] the commit returns once that record is durable; in
//!   [`Durability::Gated`] it returns at once and the caller waits with
//!   [`Database::wait_durable`] (for the LSN [`last_commit_lsn_of`] gives) before releasing
//!   results (output gating).
//! - The WAL is never fsynced, and no page reaches the main file before the log holds it
//!   durably (the write-ahead gate); a completed checkpoint writes a checkpoint mark.
//! - One transaction is one log record, at most [`pagelog_log::LogOptions::max_record_bytes`]
//!   (1 GiB, the log format's limit, by default): a transaction whose record would be bigger
//!   (changed pages × (page size + 4) bytes, e.g. a `VACUUM` of a database over 1 GiB) is
//!   refused at its commit frame, before anything is appended, with `SQLITE_FULL` and
//!   [`VfsError::TxnTooLarge`] in [`last_error`]; SQLite rolls it back and the database goes
//!   on. `SQLITE_FULL` rather than `SQLITE_TOOBIG`: a failed WAL write of a commit is a path
//!   SQLite handles (it rolls back and overwrites the frames), and `SQLITE_TOOBIG` is meant for
//!   single strings and blobs, which are not what is over.
//! - One process owns a database (the log's lock file); its connections share in-process locks
//!   and a heap WAL-index. On open, recovery replays the log after the last checkpoint mark onto
//!   the main file, discards the WAL, and verifies the whole-database checksum.
//! - The log only grows unless someone trims it. The `pagelog` facade does (its shipper up to
//!   what is shipped, or without a store a background thread after checkpoints); a program
//!   using this crate alone must call [`Database::trim_log`] after checkpoints (or
//!   [`pagelog_log::Log::truncate_prefix`] up to no more than
//!   [`Database::log_truncation_bound`], e.g. also bounded by what it has copied elsewhere).
//!
//! Why not the `sqlite-vfs` crate: its author calls it a prototype not meant for production,
//! it reports WAL test failures and has an unreleased fix for `SQLITE_CORRUPT` with one writer
//! and four readers; `sqlite-plugin` needs libclang at build time. This crate is a thin layer on
//! `rusqlite::ffi` (bundled SQLite, pre-generated bindings), with all `unsafe` in `ffi.rs`.
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod capture;
pub mod checksum;
mod database;
mod error;
mod ffi;
pub mod locks;
pub mod record;
pub mod replay;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use pagelog_log::LogOptions;
use pagelog_log::fs::{FsRef, StdFs, normalize};
use parking_lot::Mutex;

pub use database::{BaseCopy, Database, LOG_DIR_SUFFIX, OpenReport};
pub use error::{Result, VfsError};
pub use ffi::last_error;

/// When a commit counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// A commit returns only once its log record is durable.
    #[default]
    Sync,
    /// A commit returns at once; its record becomes durable shortly after (many commits share
    /// one fsync). Wait with [`Database::wait_durable`] before letting results out.
    Gated,
}

/// How the VFS runs.
#[derive(Debug, Clone)]
pub struct VfsOptions {
    /// File system for the database, its WAL and its log (the real one, or a simulated disk).
    pub fs: FsRef,
    /// Commit durability.
    pub durability: Durability,
    /// Options of each database's log.
    pub log: LogOptions,
    /// Page size of databases this VFS creates (512..=65536, a power of two). Default 4096.
    pub page_size: u32,
}

impl VfsOptions {
    /// Real files, the given durability, defaults elsewhere.
    pub fn new(durability: Durability) -> VfsOptions {
        VfsOptions {
            fs: StdFs::shared(),
            durability,
            log: LogOptions::default(),
            page_size: 4096,
        }
    }
}

pub(crate) struct VfsInner {
    options: VfsOptions,
    default_vfs: ffi::DefaultVfs,
    dbs: Mutex<HashMap<PathBuf, Weak<Database>>>,
}

impl VfsInner {
    /// The open database at `path`, opening (and recovering) it if needed.
    fn database(&self, path: &Path) -> Result<Arc<Database>> {
        let mut dbs = self.dbs.lock();
        if let Some(db) = dbs.get(path).and_then(Weak::upgrade) {
            return Ok(db);
        }
        let db = Arc::new(Database::open(path, &self.options)?);
        dbs.insert(path.to_path_buf(), Arc::downgrade(&db));
        Ok(db)
    }

    fn lookup(&self, path: &Path) -> Option<Arc<Database>> {
        self.dbs.lock().get(path).and_then(Weak::upgrade)
    }

    /// The database whose WAL is at `path`.
    fn database_for_wal(&self, path: &Path) -> Option<Arc<Database>> {
        let s = path.to_str()?;
        self.lookup(Path::new(s.strip_suffix("-wal")?))
    }

    /// The open database `path` belongs to (itself or a `-wal`, `-journal`, `-shm` sibling).
    fn database_for_sibling(&self, path: &Path) -> Option<(Arc<Database>, &'static str)> {
        if let Some(db) = self.lookup(path) {
            return Some((db, ""));
        }
        let s = path.to_str()?;
        for suffix in ["-wal", "-journal", "-shm"] {
            if let Some(base) = s.strip_suffix(suffix)
                && let Some(db) = self.lookup(Path::new(base))
            {
                return Some((db, suffix));
            }
        }
        None
    }

    /// A handle closed: drop its reference under the registry lock, so that a concurrent open
    /// of the same path waits until the log (and its lock) is closed.
    fn release(&self, db: Arc<Database>) {
        let _dbs = self.dbs.lock();
        drop(db);
    }
}

/// A registered pagelog VFS. Registration lasts for the life of the process (SQLite may hold
/// pointers to it in any connection), so there is no unregister.
#[derive(Clone)]
pub struct PagelogVfs {
    name: String,
    inner: &'static VfsInner,
}

impl std::fmt::Debug for PagelogVfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagelogVfs")
            .field("name", &self.name)
            .finish()
    }
}

impl PagelogVfs {
    /// Register a VFS under `name` (which must not be taken).
    pub fn register(name: &str, options: VfsOptions) -> Result<PagelogVfs> {
        if !record::valid_page_size(options.page_size) {
            return Err(VfsError::Config(format!(
                "page size {} (must be a power of two in 512..=65536)",
                options.page_size
            )));
        }
        let cname = CString::new(name)
            .map_err(|_| VfsError::Config("VFS name contains a NUL byte".into()))?;
        if ffi::vfs_exists(&cname) {
            return Err(VfsError::Config(format!(
                "a VFS named {name:?} is already registered"
            )));
        }
        let default_vfs = ffi::default_vfs()
            .ok_or_else(|| VfsError::Config("SQLite has no default VFS".into()))?;
        let inner: &'static VfsInner = Box::leak(Box::new(VfsInner {
            options,
            default_vfs,
            dbs: Mutex::new(HashMap::new()),
        }));
        let cname: &'static CString = Box::leak(Box::new(cname));
        let vfs = Box::leak(Box::new(ffi::make_vfs(cname.as_ptr(), inner, default_vfs)));
        let rc = ffi::register(vfs);
        if rc != rusqlite::ffi::SQLITE_OK {
            return Err(VfsError::Config(format!(
                "sqlite3_vfs_register failed with code {rc}"
            )));
        }
        tracing::info!(name, "pagelog VFS registered");
        Ok(PagelogVfs {
            name: name.to_string(),
            inner,
        })
    }

    /// The name to pass to SQLite (`vfs=` / `open_with_flags_and_vfs`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this VFS holds the database at `path` open now (some connection, or another
    /// holder of its [`Database`], keeps it).
    pub fn is_open(&self, path: &Path) -> bool {
        // No upgrade: a temporary strong reference could end up the last one, and close the
        // log outside the registry lock (see `VfsInner::release`).
        absolute(path).is_ok_and(|p| {
            self.inner
                .dbs
                .lock()
                .get(&p)
                .is_some_and(|w| w.strong_count() > 0)
        })
    }

    /// Open (and recover) the database at `path`, or get it if it is open, with typed errors.
    /// Connections opened through this VFS share it.
    pub fn open_database(&self, path: &Path) -> Result<Arc<Database>> {
        let path = absolute(path)?;
        self.inner.database(&path)
    }

    /// Open a rusqlite connection to `path` through this VFS (recovering first, so that errors
    /// are typed rather than SQLite's "unable to open database file").
    pub fn connect(&self, path: &Path) -> Result<rusqlite::Connection> {
        let db = self.open_database(path)?;
        let conn = rusqlite::Connection::open_with_flags_and_vfs(
            db.path(),
            rusqlite::OpenFlags::default(),
            self.name.as_str(),
        )
        .map_err(|e| VfsError::Config(format!("opening {}: {e}", db.path().display())))?;
        Ok(conn)
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path)
        .map(|p| normalize(&p))
        .map_err(|e| VfsError::Io {
            path: path.to_path_buf(),
            context: "resolving".into(),
            source: e,
        })
}

thread_local! {
    static LAST_COMMIT: Cell<Option<u64>> = const { Cell::new(None) };
    /// The last commit of this thread to each database (by path), most recent last.
    static LAST_COMMITS: RefCell<Vec<(PathBuf, u64)>> = const { RefCell::new(Vec::new()) };
}

/// Databases [`last_commit_lsn_of`] remembers per thread; the least recently committed to is
/// forgotten first (its answer becomes None).
const REMEMBERED_DATABASES: usize = 64;

pub(crate) fn set_last_commit(db: &Database, lsn: u64) {
    LAST_COMMIT.with(|c| c.set(Some(lsn)));
    LAST_COMMITS.with(|m| {
        let mut m = m.borrow_mut();
        let entry = match m.iter().position(|(p, _)| p == db.path()) {
            Some(i) => (m.remove(i).0, lsn),
            None => {
                if m.len() >= REMEMBERED_DATABASES {
                    m.remove(0);
                }
                (db.path().to_path_buf(), lsn)
            }
        };
        m.push(entry);
    });
}

/// LSN of the last transaction this thread committed through a pagelog VFS — to *any*
/// database. LSNs are per database: with more than one database used on this thread (two
/// databases, or an `ATTACH`ed one, whose commit comes last), this may be another database's
/// LSN, and waiting for it on the wrong [`Database`] proves nothing. Use
/// [`last_commit_lsn_of`] (this thread's last commit to one database) or
/// [`connection_last_lsn`] (the database's last commit, by any connection) instead.
pub fn last_commit_lsn() -> Option<u64> {
    LAST_COMMIT.with(|c| c.get())
}

/// LSN of the last transaction this thread committed to `db` (None if it committed none, or
/// committed to more than 64 other databases since). After a statement or `COMMIT` returns,
/// pass it to `db.wait_durable` (Gated mode) before releasing the results. A transaction over
/// an `ATTACH`ed database commits once per database it wrote: ask each database for its own.
pub fn last_commit_lsn_of(db: &Database) -> Option<u64> {
    LAST_COMMITS.with(|m| {
        m.borrow()
            .iter()
            .rev()
            .find(|(p, _)| p == db.path())
            .map(|&(_, lsn)| lsn)
    })
}

/// LSN of the last transaction committed to the database behind `conn` (by any connection),
/// or None if `conn` does not use a pagelog VFS.
pub fn connection_last_lsn(conn: &rusqlite::Connection) -> Option<u64> {
    ffi::connection_last_lsn(conn)
}
