//! The VFS's typed errors.

use std::path::PathBuf;

/// What can go wrong in the VFS.
#[derive(Debug, thiserror::Error)]
pub enum VfsError {
    /// The log failed.
    #[error(transparent)]
    Log(#[from] pagelog_log::LogError),
    /// An I/O call on the database file failed.
    #[error("I/O error on {path} while {context}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// What the VFS was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The database is open elsewhere: another process owns it (holds its log's lock), or a
    /// SQLite connection outside the pagelog VFS — in any process, this one included — holds
    /// SQLite's own lock on the main file.
    #[error("database {path} is open elsewhere: {detail}")]
    Owned {
        /// Database path.
        path: PathBuf,
        /// Who holds it: the pid and host the log's lock file names, or the pid holding
        /// SQLite's lock.
        detail: String,
    },
    /// A log record could not be decoded.
    #[error("bad pagelog record: {0}")]
    BadRecord(String),
    /// After recovery the database does not match the checksum its log recorded.
    #[error(
        "database {path} does not match its log: checksum {found:016x} at LSN {lsn}, the log recorded {expected:016x}"
    )]
    ChecksumMismatch {
        /// Database path.
        path: PathBuf,
        /// LSN checked.
        lsn: u64,
        /// Checksum from the log.
        expected: u64,
        /// Checksum of the file.
        found: u64,
    },
    /// The database file has content but no log: it was not created through pagelog.
    #[error(
        "database {path} has content but no pagelog log; pagelog only manages databases it created, or restored with a new timeline (`pagelog restore --new-timeline`); a plain restore is an ordinary SQLite file"
    )]
    NotManaged {
        /// Database path.
        path: PathBuf,
    },
    /// A journal mode other than WAL was requested, or a rollback journal was opened.
    #[error("pagelog requires WAL mode: {0}")]
    NotWal(String),
    /// Bad configuration.
    #[error("invalid pagelog VFS configuration: {0}")]
    Config(String),
    /// A transaction's log record would exceed the log's record limit
    /// ([`pagelog_log::LogOptions::max_record_bytes`], 1 GiB at most). The commit is refused
    /// before anything is appended (SQLite gets `SQLITE_FULL` and rolls the transaction back);
    /// the database stays usable.
    #[error(
        "transaction on {path} refused: its log record of {len} bytes is larger than the maximum of {max} bytes (split it into smaller transactions)"
    )]
    TxnTooLarge {
        /// Database path.
        path: PathBuf,
        /// Size the record would have had.
        len: u64,
        /// The log's limit.
        max: usize,
    },
    /// The database failed earlier (a commit could not be made durable) and must be reopened.
    #[error("database {path} failed earlier and must be reopened: {cause}")]
    Poisoned {
        /// Database path.
        path: PathBuf,
        /// The first failure.
        cause: String,
    },
}

/// Result alias for the VFS.
pub type Result<T, E = VfsError> = std::result::Result<T, E>;
