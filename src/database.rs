//! [`Database`]: one SQLite database through pagelog — its connections, bookmarks, durability
//! and replication waits, snapshots, statistics and shutdown.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pagelog_log::Lsn;
use pagelog_snapshot::{
    Bookmark, ReplicatedFuture, Shipper, ShipperStatus, SnapshotInfo, StoreRef, open_store,
};
use pagelog_vfs::{Durability, PagelogVfs, VfsOptions};
use parking_lot::Mutex;

use crate::config::{Config, StoreSpec};
use crate::durable::{DurableFuture, DurableWaiter};
use crate::error::{Error, Result};
use crate::retention::{LocalRetention, trim_local_log};

type VfsKey = (bool, u32, u64);

/// The VFSes registered so far, by (gated, page size, log segment size).
fn vfses() -> &'static Mutex<HashMap<VfsKey, PagelogVfs>> {
    static VFSES: OnceLock<Mutex<HashMap<VfsKey, PagelogVfs>>> = OnceLock::new();
    VFSES.get_or_init(Default::default)
}

/// Another registered VFS than `vfs` that holds `path` open: an earlier `Database` with other
/// settings, closed or dropped, whose connections (or stopping shipper) still keep it.
fn held_elsewhere(vfs: &PagelogVfs, path: &Path) -> Option<String> {
    vfses()
        .lock()
        .values()
        .find(|v| v.name() != vfs.name() && v.is_open(path))
        .map(|v| v.name().to_string())
}

/// One registered VFS per (durability, page size, log segment size), shared by every database
/// of the process.
fn vfs_for(durability: Durability, page_size: u32, segment_size: u64) -> Result<PagelogVfs> {
    let gated = durability == Durability::Gated;
    let mut map = vfses().lock();
    if let Some(v) = map.get(&(gated, page_size, segment_size)) {
        return Ok(v.clone());
    }
    let mut opts = VfsOptions::new(durability);
    opts.page_size = page_size;
    opts.log.segment_size = segment_size;
    let mut name = format!(
        "pagelog-{}-{page_size}",
        if gated { "gated" } else { "sync" }
    );
    if segment_size != pagelog_log::LogOptions::default().segment_size {
        name.push_str(&format!("-{segment_size}"));
    }
    let vfs = PagelogVfs::register(&name, opts)?;
    map.insert((gated, page_size, segment_size), vfs.clone());
    Ok(vfs)
}

/// The paths of the databases open through a [`Database`] in this process.
fn open_paths() -> &'static Mutex<HashSet<PathBuf>> {
    static OPEN: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
}

/// `path` made absolute and normalized the way the VFS keys its databases.
fn absolute_path(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path)
        .map(|p| pagelog_log::fs::normalize(&p))
        .map_err(|e| Error::Config(format!("resolving {}: {e}", path.display())))
}

/// A database's entry in [`open_paths`], removed on drop.
struct OpenClaim(PathBuf);

impl OpenClaim {
    fn claim(path: &Path) -> Result<OpenClaim> {
        if !open_paths().lock().insert(path.to_path_buf()) {
            return Err(Error::AlreadyOpen(path.to_path_buf()));
        }
        Ok(OpenClaim(path.to_path_buf()))
    }
}

impl Drop for OpenClaim {
    fn drop(&mut self) {
        open_paths().lock().remove(&self.0);
    }
}

/// Counters and watermarks of a database.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Timeline.
    pub timeline: u64,
    /// LSN of the last committed transaction.
    pub current_lsn: Lsn,
    /// Every record up to here is durable on local disk.
    pub durable_lsn: Lsn,
    /// Every record up to here is in the store: a restore of the latest state holds it
    /// (`None` without a store).
    pub replicated_lsn: Option<Lsn>,
    /// Every record up to here is in a log batch in the store, so point-in-time restore reaches
    /// it (`None` without a store). A snapshot can put `replicated_lsn` ahead for a while.
    pub logged_lsn: Option<Lsn>,
    /// The newest snapshot in the store (`None` without a store; 0 if none yet).
    pub snapshot_lsn: Option<Lsn>,
    /// The database file holds every transaction up to here.
    pub checkpoint_lsn: Lsn,
    /// Durable records not yet in the store.
    pub lag_records: u64,
    /// Bytes of local log segments holding records (including what waits to be shipped); the
    /// spare and recycled segments ready for reuse are not counted.
    pub log_bytes: u64,
    /// How long the oldest unshipped durable record has waited, in seconds.
    pub lag_seconds: f64,
    /// `fdatasync` calls the log made for records since open (group commits).
    pub fsyncs: u64,
    /// The shipper's view, when there is a store.
    pub shipper: Option<ShipperStatus>,
}

/// A SQLite database whose every commit goes through the pagelog log, shipped to a store when
/// one is configured.
///
/// ```
/// use pagelog::{Config, Database, Durability};
/// let dir = tempfile::tempdir()?;
/// let db = Database::open(
///     dir.path().join("app.db"),
///     Config::new().durability(Durability::Gated).store_url(dir.path().join("store").to_str().unwrap()),
/// )?;
/// let conn = db.connect()?;
/// conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?;
/// let bookmark = db.commit_bookmark(&conn)?;
/// db.wait_durable(&bookmark)?; // now the response may leave (output gating)
/// db.wait_replicated(&bookmark, None)?; // and now it is in the store
/// db.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Database {
    path: PathBuf,
    vfs: PagelogVfs,
    inner: Arc<pagelog_vfs::Database>,
    shipper: Option<Shipper>,
    store: Option<StoreRef>,
    waiter: Arc<DurableWaiter>,
    /// Trims the local log when there is no store (the shipper does it otherwise).
    retention: Option<LocalRetention>,
    config: Config,
    /// Last: released once everything else is stopped.
    _claim: OpenClaim,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.path)
            .field("durability", &self.config.durability)
            .field("store", &self.store.as_ref().map(|s| s.describe()))
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Open (creating if needed, recovering always) the database at `path`, and start
    /// shipping to the configured store. Fails if another process owns the database, or if
    /// the store holds another database or a history this copy is behind or diverged from,
    /// or ([`Error::AlreadyOpen`]) if a `Database` of this process has it open already.
    pub fn open(path: impl AsRef<Path>, config: Config) -> Result<Database> {
        // Claimed before the VFS opens anything: a second open with another durability, page
        // size or segment size goes to another VFS, whose open would fail on the log's lock
        // with a misleading "open elsewhere".
        let claim = OpenClaim::claim(&absolute_path(path.as_ref())?)?;
        let vfs = vfs_for(config.durability, config.page_size, config.log_segment_size)?;
        // Its log would be locked by this very process: say so, not "open elsewhere".
        if let Some(other) = held_elsewhere(&vfs, path.as_ref()) {
            return Err(Error::StillInUse {
                path: claim.0.clone(),
                vfs: other,
            });
        }
        let inner = vfs.open_database(path.as_ref())?;
        let store = match &config.store {
            None => None,
            Some(StoreSpec::Store(s)) => Some(s.clone()),
            Some(StoreSpec::Url(url, opts)) => {
                if url.is_empty() {
                    return Err(Error::Config(
                        "store options given without a store URL".into(),
                    ));
                }
                Some(open_store(url, opts)?)
            }
        };
        let shipper = match &store {
            Some(s) => Some(Shipper::start(
                inner.clone(),
                s.clone(),
                config.shipper.clone(),
            )?),
            None => None,
        };
        let retention = if shipper.is_none() && config.shipper.truncate_local_log {
            Some(
                LocalRetention::start(inner.clone(), config.local_log_check_interval).map_err(
                    |e| Error::Config(format!("starting the local log retention thread: {e}")),
                )?,
            )
        } else {
            None
        };
        let waiter = DurableWaiter::new(inner.clone());
        Ok(Database {
            path: inner.path().to_path_buf(),
            vfs,
            inner,
            shipper,
            store,
            waiter,
            retention,
            config,
            _claim: claim,
        })
    }

    /// The database file's path (absolute).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new connection (any number; each one is a plain [`rusqlite::Connection`] through the
    /// pagelog VFS), with the configured busy timeout and checkpoint threshold.
    pub fn connect(&self) -> Result<rusqlite::Connection> {
        let conn = self.vfs.connect(&self.path)?;
        conn.busy_timeout(self.config.busy_timeout)?;
        conn.pragma_update(
            None,
            "wal_autocheckpoint",
            self.config.auto_checkpoint_pages,
        )?;
        Ok(conn)
    }

    /// The timeline this database writes.
    pub fn timeline(&self) -> u64 {
        self.inner.log().timeline()
    }

    /// A bookmark of the latest committed state.
    pub fn bookmark(&self) -> Bookmark {
        Bookmark::new(self.timeline(), self.inner.last_lsn())
    }

    /// A bookmark covering everything committed through `conn` so far (the database's last
    /// commit when `conn`'s statement returned). In Gated mode, take it after a write and wait
    /// on it before releasing the response.
    ///
    /// Fails if the database has failed (a commit could not be made durable), so that a
    /// response whose commit error was lost — rusqlite drops the error of the final step of an
    /// `INSERT … RETURNING` read with `query_row` — is not released. Step such statements to
    /// the end (or use `execute`/`COMMIT`) to see the commit's own error.
    pub fn commit_bookmark(&self, conn: &rusqlite::Connection) -> Result<Bookmark> {
        self.check_failed()?;
        let lsn = pagelog_vfs::connection_last_lsn(conn).ok_or_else(|| {
            Error::Config("the connection does not use this pagelog database".into())
        })?;
        Ok(Bookmark::new(self.timeline(), lsn))
    }

    /// Error if the database or its log failed: nothing more will be acknowledged.
    fn check_failed(&self) -> Result<()> {
        if let Some(cause) = self.inner.failure() {
            return Err(Error::Vfs(pagelog_vfs::VfsError::Poisoned {
                path: self.path.clone(),
                cause,
            }));
        }
        if let Some(cause) = self.inner.log().failure() {
            return Err(Error::Vfs(pagelog_vfs::VfsError::Poisoned {
                path: self.path.clone(),
                cause,
            }));
        }
        Ok(())
    }

    /// Whether everything up to the bookmark is durable now (no waiting).
    pub fn is_durable(&self, bookmark: &Bookmark) -> bool {
        bookmark.timeline == self.timeline() && self.inner.durable_lsn() >= bookmark.lsn
    }

    fn lsn_of(&self, b: &Bookmark) -> Result<Lsn> {
        if b.timeline != self.timeline() {
            return Err(Error::WrongTimeline {
                bookmark: *b,
                current: self.timeline(),
            });
        }
        Ok(b.lsn)
    }

    /// Block until everything up to the bookmark is durable on local disk (one fsync covers
    /// every waiter of a group).
    pub fn wait_durable(&self, bookmark: &Bookmark) -> Result<()> {
        let lsn = self.lsn_of(bookmark)?;
        Ok(self.inner.wait_durable(lsn)?)
    }

    /// A future that resolves once everything up to the bookmark is durable (any executor).
    pub fn wait_durable_async(&self, bookmark: &Bookmark) -> Result<DurableFuture> {
        let lsn = self.lsn_of(bookmark)?;
        Ok(DurableFuture {
            waiter: self.waiter.clone(),
            lsn,
            registered: None,
        })
    }

    fn shipper(&self) -> Result<&Shipper> {
        self.shipper
            .as_ref()
            .ok_or_else(|| Error::NoStore(self.path.clone()))
    }

    /// Block until everything up to the bookmark is in the store (or `timeout`).
    pub fn wait_replicated(&self, bookmark: &Bookmark, timeout: Option<Duration>) -> Result<()> {
        let lsn = self.lsn_of(bookmark)?;
        Ok(self.shipper()?.wait_replicated(lsn, timeout)?)
    }

    /// A future that resolves once everything up to the bookmark is in the store.
    pub fn wait_replicated_async(&self, bookmark: &Bookmark) -> Result<ReplicatedFuture> {
        let lsn = self.lsn_of(bookmark)?;
        Ok(self.shipper()?.wait_replicated_async(lsn))
    }

    /// Ship what is durable now instead of waiting for the batching delay.
    pub fn ship_now(&self) -> Result<()> {
        self.shipper()?.ship_now();
        Ok(())
    }

    /// Take a snapshot now and upload it.
    pub fn snapshot_now(&self) -> Result<SnapshotInfo> {
        Ok(self.shipper()?.snapshot_now()?)
    }

    /// The store, if one is configured.
    pub fn store(&self) -> Option<&StoreRef> {
        self.store.as_ref()
    }

    /// The VFS-level database (log, checksums, recovery report).
    pub fn inner(&self) -> &Arc<pagelog_vfs::Database> {
        &self.inner
    }

    /// Watermarks and replication lag.
    pub fn stats(&self) -> Stats {
        let log = self.inner.log().stats();
        let shipper = self.shipper.as_ref().map(|s| s.status());
        Stats {
            timeline: self.timeline(),
            current_lsn: self.inner.last_lsn(),
            durable_lsn: log.durable_lsn,
            replicated_lsn: shipper.as_ref().map(|s| s.replicated_lsn),
            logged_lsn: shipper.as_ref().map(|s| s.logged_lsn),
            snapshot_lsn: shipper.as_ref().map(|s| s.snapshot_lsn),
            checkpoint_lsn: self.inner.checkpoint_lsn(),
            lag_records: shipper.as_ref().map(|s| s.lag_records).unwrap_or(0),
            log_bytes: log.disk_bytes,
            lag_seconds: shipper.as_ref().map(|s| s.lag_seconds).unwrap_or(0.0),
            fsyncs: log.syncs,
            shipper,
        }
    }

    /// Make every commit durable, ship what is durable (waiting up to the configured close
    /// timeout for the store), and stop. Connections still open (from [`Database::connect`] or
    /// any other connection to this database through the pagelog VFS) can still read, but
    /// beginning a write through them fails with `SQLITE_READONLY`: nothing would ship it (a
    /// write transaction already begun may still commit; the next open ships it). Reopen the
    /// database and connect again to write. Nothing is lost if the store is unreachable: the
    /// next open ships the rest.
    pub fn close(mut self) -> Result<()> {
        // Connections kept past this point can read but no longer commit: nothing would
        // ship what they wrote until the next open.
        self.inner.retire_connections();
        let flushed = self.inner.log().flush();
        self.waiter.stop();
        let shipped = match self.shipper.take() {
            Some(s) => s.close(self.config.close_timeout),
            None => Ok(()),
        };
        let trimmed = match self.retention.take() {
            Some(mut r) => {
                r.stop();
                trim_local_log(&self.inner).map(|_| ())
            }
            None => Ok(()),
        };
        flushed?;
        shipped?;
        trimmed?;
        Ok(())
    }
}

impl Drop for Database {
    /// The safe minimum: make every commit durable and stop the shipper without waiting for
    /// the store (the next open resumes shipping).
    fn drop(&mut self) {
        self.inner.retire_connections();
        if let Err(e) = self.inner.log().flush() {
            tracing::error!(db = %self.path.display(), error = %e, "flushing the log on drop");
        }
        self.waiter.stop();
        self.shipper.take();
        self.retention.take();
    }
}
