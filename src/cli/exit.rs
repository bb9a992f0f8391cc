//! Exit codes, and the error every subcommand returns: a message for `error: ...` on stderr
//! and the code the process exits with, chosen from the typed errors of the library crates.

use std::fmt;
use std::io::ErrorKind;

use pagelog_log::LogError;
use pagelog_snapshot::{SnapshotError, StoreError};
use pagelog_vfs::VfsError;

/// What the process exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// Any other error (I/O, the store unreachable, ...).
    Error = 1,
    /// Bad arguments (clap uses 2 as well).
    Usage = 2,
    /// Verification found problems: a corrupt object, a checksum mismatch, a failed integrity
    /// check.
    Problems = 3,
    /// The target is outside what the store (or log) holds, or records are missing (a gap).
    OutOfRange = 4,
    /// The store, object, log or timeline does not exist, or the store holds no history.
    NotFound = 5,
    /// The output file exists and `--force` was not given.
    Exists = 6,
    /// The database is owned by another process (its log is locked).
    Owned = 7,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The exit codes, for `--help` (kept in step with `docs/CLI.md`).
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  error (I/O, store unreachable, ...)
  2  usage: bad arguments
  3  verification found problems (corrupt object, checksum mismatch, integrity check)
  4  target out of range, or records missing (gap)
  5  not found: no such store, log, object or timeline, or the store is empty
  6  the output exists (use --force)
  7  the database is owned by another process";

/// A failure: the message (without the `error: ` prefix) and the exit code.
#[derive(Debug)]
pub struct CliError {
    /// The exit code.
    pub code: Exit,
    /// What to print; empty for a silent exit (stdout closed by a pager or `head`).
    pub message: String,
}

impl CliError {
    /// An error with a code.
    pub fn new(code: Exit, message: impl Into<String>) -> CliError {
        CliError {
            code,
            message: message.into(),
        }
    }

    /// Stdout was closed by the reader: stop quietly.
    pub fn broken_pipe() -> CliError {
        CliError::new(Exit::Ok, "")
    }

    /// Writing to stdout failed.
    pub fn stdout(e: std::io::Error) -> CliError {
        if e.kind() == ErrorKind::BrokenPipe {
            CliError::broken_pipe()
        } else {
            CliError::new(Exit::Error, format!("writing to stdout: {e}"))
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The exit code for a snapshot-crate error.
pub fn snapshot_code(e: &SnapshotError) -> Exit {
    match e {
        SnapshotError::OutOfRange { .. } | SnapshotError::Gap { .. } => Exit::OutOfRange,
        SnapshotError::Empty { .. } => Exit::NotFound,
        SnapshotError::Exists { .. } => Exit::Exists,
        SnapshotError::Corrupt { .. }
        | SnapshotError::ChecksumMismatch { .. }
        | SnapshotError::WrongDatabase { .. } => Exit::Problems,
        SnapshotError::Store(s) => store_code(s),
        SnapshotError::Log(l) => log_code(l),
        SnapshotError::Vfs(v) => vfs_code(v),
        SnapshotError::Config(_) => Exit::Usage,
        SnapshotError::Io { .. }
        | SnapshotError::Encode(_)
        | SnapshotError::Fenced { .. }
        | SnapshotError::StaleLocal { .. }
        | SnapshotError::Diverged { .. }
        | SnapshotError::Timeout { .. }
        | SnapshotError::UnsupportedVersion { .. }
        | SnapshotError::Stopped(_)
        | SnapshotError::SnapshotFailed { .. } => Exit::Error,
    }
}

/// The exit code for an object store error.
pub fn store_code(e: &StoreError) -> Exit {
    match e {
        StoreError::NotFound { .. } | StoreError::NoSuchBucket { .. } => Exit::NotFound,
        StoreError::Invalid { .. } => Exit::Usage,
        _ => Exit::Error,
    }
}

/// The exit code for a log error.
pub fn log_code(e: &LogError) -> Exit {
    match e {
        LogError::Io { source, .. } if source.kind() == ErrorKind::WouldBlock => Exit::Owned,
        LogError::LsnOutOfRange { .. } => Exit::OutOfRange,
        LogError::Corrupt { .. } | LogError::BadSegmentHeader { .. } => Exit::Problems,
        _ => Exit::Error,
    }
}

/// The exit code for a VFS error.
pub fn vfs_code(e: &VfsError) -> Exit {
    match e {
        VfsError::Owned { .. } => Exit::Owned,
        VfsError::Log(l) => log_code(l),
        VfsError::BadRecord(_) | VfsError::ChecksumMismatch { .. } => Exit::Problems,
        _ => Exit::Error,
    }
}

impl From<SnapshotError> for CliError {
    fn from(e: SnapshotError) -> CliError {
        CliError::new(snapshot_code(&e), e.to_string())
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> CliError {
        CliError::new(store_code(&e), e.to_string())
    }
}

impl From<LogError> for CliError {
    fn from(e: LogError) -> CliError {
        CliError::new(log_code(&e), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_errors_map_to_documented_codes() {
        let gap = SnapshotError::Gap {
            store: "s".into(),
            timeline: 1,
            from: 3,
            to: 4,
        };
        assert_eq!(CliError::from(gap).code.code(), 4);
        let exists = SnapshotError::Exists { path: "x".into() };
        assert_eq!(CliError::from(exists).code.code(), 6);
        let empty = SnapshotError::Empty {
            store: "s".into(),
            detail: String::new(),
        };
        assert_eq!(CliError::from(empty).code.code(), 5);
        let locked = LogError::Io {
            context: "locking".into(),
            source: std::io::Error::new(ErrorKind::WouldBlock, "LOCK is locked by pid 1"),
        };
        assert_eq!(CliError::from(locked).code.code(), 7);
        let owned = SnapshotError::Vfs(VfsError::Owned {
            path: "db".into(),
            detail: "pid 1".into(),
        });
        assert_eq!(snapshot_code(&owned), Exit::Owned);
        let corrupt = SnapshotError::Corrupt {
            key: "k".into(),
            reason: "r".into(),
        };
        assert_eq!(snapshot_code(&corrupt), Exit::Problems);
        for (code, n) in [
            (Exit::Ok, "0"),
            (Exit::Error, "1"),
            (Exit::Usage, "2"),
            (Exit::Problems, "3"),
            (Exit::OutOfRange, "4"),
            (Exit::NotFound, "5"),
            (Exit::Exists, "6"),
            (Exit::Owned, "7"),
        ] {
            assert_eq!(code.code().to_string(), n);
            assert!(EXIT_CODES_HELP.contains(&format!("\n  {n}  ")), "{n}");
        }
    }
}
