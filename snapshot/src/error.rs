//! The snapshot crate's typed errors: each names the object key, LSNs or store involved.

use std::path::PathBuf;

use pagelog_log::Lsn;

use crate::store::StoreError;

/// What shipping, snapshots and restore can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// An object store call failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The local log failed.
    #[error(transparent)]
    Log(#[from] pagelog_log::LogError),
    /// The VFS failed.
    #[error(transparent)]
    Vfs(#[from] pagelog_vfs::VfsError),
    /// A local file operation failed.
    #[error("I/O error on {path} while {context}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An object is corrupt or truncated.
    #[error("corrupt object {key}: {reason}")]
    Corrupt {
        /// Its key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// An object's format version is one this build does not read (a newer pagelog wrote it).
    #[error(
        "object {key} has format version {version}; this build reads version {supported} (was it written by a newer pagelog?)"
    )]
    UnsupportedVersion {
        /// Its key.
        key: String,
        /// The version it carries.
        version: u16,
        /// The version this build reads and writes.
        supported: u16,
    },
    /// Encoding an object failed.
    #[error("cannot encode an object: {0}")]
    Encode(String),
    /// The store holds another database's history.
    #[error(
        "{key} belongs to database {found:032x}, not to this database {expected:032x}: use another prefix"
    )]
    WrongDatabase {
        /// The object that says so.
        key: String,
        /// This database's id.
        expected: u128,
        /// The id in the store.
        found: u128,
    },
    /// Another writer ships to the same prefix and timeline.
    #[error(
        "another writer is shipping to timeline {timeline} of {store}: {key} already holds different data; this shipper stopped"
    )]
    Fenced {
        /// The store.
        store: String,
        /// Timeline.
        timeline: u64,
        /// The key it found taken.
        key: String,
    },
    /// The local database is behind the store on the same timeline (e.g. a disk restored from
    /// an old image): shipping it would fork the history.
    #[error(
        "local database is at LSN {local_lsn} but timeline {timeline} in {store} already reaches LSN {remote_lsn}: this copy is stale; restore from the store, or restore and continue on a new timeline"
    )]
    StaleLocal {
        /// The store.
        store: String,
        /// Timeline.
        timeline: u64,
        /// Last local LSN.
        local_lsn: Lsn,
        /// Last LSN in the store.
        remote_lsn: Lsn,
    },
    /// The local log and the store disagree about a record: two histories.
    #[error(
        "local record {lsn} differs from the one in {store} (timeline {timeline}): the histories diverged"
    )]
    Diverged {
        /// The store.
        store: String,
        /// Timeline.
        timeline: u64,
        /// The LSN compared.
        lsn: Lsn,
    },
    /// Records are missing.
    #[error("log records {from}..={to} of timeline {timeline} are missing from {store}")]
    Gap {
        /// The store.
        store: String,
        /// Timeline.
        timeline: u64,
        /// First missing LSN.
        from: Lsn,
        /// Last missing LSN.
        to: Lsn,
    },
    /// A restore target outside what the store can restore.
    #[error("cannot restore {target}: {store} can restore {range}")]
    OutOfRange {
        /// The store.
        store: String,
        /// The target asked for.
        target: String,
        /// What is restorable, in words.
        range: String,
    },
    /// The store holds nothing to restore.
    #[error("{store} holds no pagelog history{detail}")]
    Empty {
        /// The store.
        store: String,
        /// More detail.
        detail: String,
    },
    /// A restored image does not match the checksum recorded for it.
    #[error(
        "restored image at LSN {lsn} has checksum {found:016x}, the history recorded {expected:016x}"
    )]
    ChecksumMismatch {
        /// LSN.
        lsn: Lsn,
        /// Recorded checksum.
        expected: u64,
        /// Checksum of the image.
        found: u64,
    },
    /// An output file exists.
    #[error("{path} exists (use force to overwrite)")]
    Exists {
        /// The path.
        path: PathBuf,
    },
    /// A wait timed out.
    #[error("timed out after {secs:.1} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// Seconds waited.
        secs: f64,
    },
    /// The shipper stopped on an error and ships nothing more.
    #[error("the shipper stopped: {0}")]
    Stopped(String),
    /// A snapshot asked for with `Shipper::snapshot_now` failed. The shipper goes on (if it
    /// stopped too, later calls say [`SnapshotError::Stopped`]).
    #[error("the snapshot failed: {reason}")]
    SnapshotFailed {
        /// The error, as text.
        reason: String,
        /// Whether it was transient (the store down or slow: asking again may succeed; see
        /// [`crate::upload::is_transient`]).
        transient: bool,
    },
    /// Bad configuration or argument.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Result alias.
pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;
