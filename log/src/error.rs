//! The log's typed errors.

use std::io;
use std::path::PathBuf;

use crate::Lsn;
use crate::format::HeaderProblem;

/// Everything that can go wrong in the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O call failed.
    #[error("log I/O error while {context}: {source}")]
    Io {
        /// What the log was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The disk is full, or the writer's quota is used up (`source` says which). Records not
    /// yet durable are not acknowledged; the log is latched.
    #[error("disk full while {context}: {source}")]
    NoSpace {
        /// What the log was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An earlier write or sync failed: the log acknowledges nothing more until it is reopened
    /// (a failed fsync is never retried and trusted).
    #[error("the log failed earlier and must be reopened ({cause}); durable LSN is {durable_lsn}")]
    Latched {
        /// The first failure, as text.
        cause: String,
        /// Every record up to this LSN is durable; none after it is acknowledged.
        durable_lsn: Lsn,
    },
    /// A record is damaged and valid records follow it, so this is not a torn tail.
    #[error("corrupt log: segment {segment} offset {offset}: {reason}")]
    Corrupt {
        /// Segment file.
        segment: PathBuf,
        /// Byte offset in the segment.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A segment header cannot be read.
    #[error("corrupt log: segment {segment} has a bad header ({problem:?})")]
    BadSegmentHeader {
        /// Segment file.
        segment: PathBuf,
        /// What is wrong.
        problem: HeaderProblem,
    },
    /// The log on disk belongs to another database.
    #[error("log in {dir} belongs to database {found:032x}, not {expected:032x}")]
    WrongDatabase {
        /// Log directory.
        dir: PathBuf,
        /// Id the caller asked for.
        expected: u128,
        /// Id found in the segments.
        found: u128,
    },
    /// A record larger than the log accepts.
    #[error("record of {len} bytes is larger than the maximum of {max}")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// Maximum.
        max: usize,
    },
    /// An LSN outside what the log holds.
    #[error("LSN {lsn} is not in the log (it holds {first}..={last})")]
    LsnOutOfRange {
        /// The LSN asked for.
        lsn: Lsn,
        /// First LSN held.
        first: Lsn,
        /// Last LSN appended.
        last: Lsn,
    },
    /// Every LSN the format allows has been used: a segment cannot start above
    /// [`crate::format::MAX_FIRST_LSN`] (2^63), so neither can a record.
    #[error("the log has used every LSN its format allows: the next would be {next}, above 2^63")]
    LsnExhausted {
        /// The LSN the refused record would have had.
        next: Lsn,
    },
    /// The directory holds no log (no segment, once recovery has removed any torn one) and
    /// [`crate::LogOptions::create_if_missing`] is false.
    #[error("no log in {}: it holds no segment", dir.display())]
    NoLog {
        /// Log directory.
        dir: PathBuf,
    },
    /// The log was closed.
    #[error("the log is closed")]
    Closed,
    /// An append or a truncation on a log opened with [`crate::LogOptions::read_only`].
    #[error("the log in {} was opened read-only", dir.display())]
    ReadOnly {
        /// Log directory.
        dir: PathBuf,
    },
}

impl LogError {
    /// Wrap an I/O error, classifying a full disk.
    pub fn io(context: impl Into<String>, source: io::Error) -> LogError {
        if is_no_space(&source) {
            LogError::NoSpace {
                context: context.into(),
                source,
            }
        } else {
            LogError::Io {
                context: context.into(),
                source,
            }
        }
    }
}

/// Result alias for the log.
pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// Whether `e` says that no space is left for the writer: the disk is full (`ENOSPC`), or the
/// writer's quota is used up (`EDQUOT`).
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}
