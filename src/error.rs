//! The facade's error type: each layer's typed error, wrapped, plus the facade's own.

/// What the `pagelog` API can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The VFS (opening, recovery, a commit that could not be made durable).
    #[error(transparent)]
    Vfs(#[from] pagelog_vfs::VfsError),
    /// The log.
    #[error(transparent)]
    Log(#[from] pagelog_log::LogError),
    /// Object storage, shipping, snapshots, restore.
    #[error(transparent)]
    Snapshot(#[from] pagelog_snapshot::SnapshotError),
    /// The object store itself.
    #[error(transparent)]
    Store(#[from] pagelog_snapshot::StoreError),
    /// SQLite.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// A bookmark of another timeline than the database's.
    #[error("bookmark {bookmark} is on timeline {}, the database is on timeline {current}", bookmark.timeline)]
    WrongTimeline {
        /// The bookmark.
        bookmark: pagelog_snapshot::Bookmark,
        /// The database's timeline.
        current: u64,
    },
    /// Replication was asked of a database opened without a store.
    #[error("database {0} has no store configured: nothing is replicated")]
    NoStore(std::path::PathBuf),
    /// The database is already open through another [`crate::Database`] in this process
    /// (close that one first, or share it).
    #[error("database {0} is already open in this process")]
    AlreadyOpen(std::path::PathBuf),
    /// The database is still held in this process through another pagelog VFS: connections,
    /// or a shipper still stopping, of an earlier [`crate::Database`] opened with other
    /// settings (durability, page size or log segment size), whose open log cannot be shared.
    #[error(
        "database {path} is still in use in this process through the VFS {vfs} (connections, or a shipper still stopping, of an earlier Database opened with other settings); drop those connections, or open it with the same durability, page size and log segment size"
    )]
    StillInUse {
        /// The database.
        path: std::path::PathBuf,
        /// The VFS holding it.
        vfs: String,
    },
    /// Bad configuration.
    #[error("invalid pagelog configuration: {0}")]
    Config(String),
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
