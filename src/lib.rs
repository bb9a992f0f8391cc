//! # pagelog
//!
//! SQLite that never loses an acknowledged write. Every commit becomes a record in a local,
//! append-only, group-committed log (through a SQLite VFS); the log is shipped in batches to
//! object storage (a local directory or S3-compatible storage) with periodic snapshots; any
//! point in time inside the retention window can be restored.
//!
//! ```
//! use pagelog::{Config, Database, Durability, RestoreOptions, RestoreTarget};
//! let dir = tempfile::tempdir()?;
//! let store = dir.path().join("store");
//! let db = Database::open(
//!     dir.path().join("app.db"),
//!     Config::new().durability(Durability::Sync).store_url(store.to_str().unwrap()),
//! )?;
//! let conn = db.connect()?;
//! conn.execute_batch("CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT);")?;
//! conn.execute("INSERT INTO kv VALUES ('greeting', 'hello')", [])?; // durable on return
//! let mark = db.commit_bookmark(&conn)?;
//! db.wait_replicated(&mark, None)?;
//! db.close()?;
//!
//! // Later, anywhere: rebuild the database as of the bookmark.
//! let store = pagelog::open_store(store.to_str().unwrap(), &Default::default())?;
//! let out = dir.path().join("restored.db");
//! pagelog::restore(&*store, &out, &RestoreOptions::at_bookmark(mark))?;
//! let copy = rusqlite::Connection::open(&out)?;
//! let v: String = copy.query_row("SELECT v FROM kv", [], |r| r.get(0))?;
//! assert_eq!(v, "hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The layers, re-exported: [`log`] (the log and the fs layer), [`vfs`] (the SQLite VFS),
//! [`snapshot`] (stores, shipping, snapshots, restore).
#![deny(missing_docs)]

mod config;
mod database;
mod durable;
mod error;
mod retention;

pub use config::Config;
pub use database::{Database, Stats};
pub use durable::DurableFuture;
pub use error::{Error, Result};
pub use pagelog_log as log;
pub use pagelog_snapshot as snapshot;
pub use pagelog_snapshot::{
    Bookmark, ReplicatedFuture, RestoreOptions, RestoreReport, RestoreTarget, ShipperOptions,
    SnapshotInfo, StoreOptions, StoreRef, open_store, restore, verify,
};
pub use pagelog_vfs as vfs;
pub use pagelog_vfs::Durability;
