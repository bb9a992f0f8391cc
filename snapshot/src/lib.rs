//! # pagelog-snapshot
//!
//! The replicated half of pagelog: object stores (a local directory, S3), the bucket format,
//! the shipper that uploads the log in batches and takes snapshots, retention, and restore to
//! any point in time. See `snapshot/FORMAT.md` for the bucket layout.
//!
//! ```
//! use std::sync::Arc;
//! use pagelog_snapshot::{RestoreOptions, Shipper, ShipperOptions, open_store, restore};
//! use pagelog_vfs::{Durability, PagelogVfs, VfsOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let vfs = PagelogVfs::register("pagelog-snapshot-doc", VfsOptions::new(Durability::Sync))?;
//! let path = dir.path().join("app.db");
//! let conn = vfs.connect(&path)?;
//! conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (42);")?;
//!
//! let store = open_store(dir.path().join("store").to_str().unwrap(), &Default::default())?;
//! let shipper = Shipper::start(vfs.open_database(&path)?, store.clone(), ShipperOptions::default())?;
//! let lsn = pagelog_vfs::connection_last_lsn(&conn).unwrap();
//! shipper.ship_now();
//! shipper.wait_replicated(lsn, None)?;
//!
//! let out = dir.path().join("restored.db");
//! let report = restore(&*store, &out, &RestoreOptions::default())?;
//! assert_eq!(report.lsn, lsn);
//! let copy = rusqlite::Connection::open(&out)?;
//! assert_eq!(copy.query_row("SELECT x FROM t", [], |r| r.get::<_, i64>(0))?, 42);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod bookmark;
pub mod catalog;
pub mod error;
pub mod fetch;
pub mod format;
pub mod restore;
pub mod retention;
pub mod shipper;
pub mod snapshot;
pub mod store;
pub mod time;
pub mod upload;
pub mod verify;

pub use bookmark::{BadBookmark, Bookmark};
pub use catalog::Catalog;
pub use error::{Result, SnapshotError};
pub use restore::{
    RestorableRange, RestoreOptions, RestoreReport, RestoreTarget, recorded_gaps, restorable_range,
    restore, split_by_gaps,
};
pub use retention::{RetentionReport, apply_retention};
pub use shipper::{ReplicatedFuture, Shipper, ShipperOptions, ShipperStatus};
pub use snapshot::{SnapshotInfo, SnapshotOptions, take_snapshot, take_snapshot_with};
pub use store::{
    ObjectMeta, ObjectReader, ObjectStore, PutOutcome, StoreError, StoreOptions, StoreRef,
    StoreUrl, open_store,
};
pub use verify::{Problem, VerifyReport, verify};
