//! The fs layer: the small set of file operations the log and the VFS need, behind a trait, so
//! that the same code runs on real files ([`StdFs`]) and on a simulated disk that loses, tears
//! and fails writes on command ([`SimFs`]).
//!
//! The trait speaks `std::io::Error` on purpose: the simulated disk produces the same error
//! kinds (`EIO`, `ENOSPC`) the kernel does, and callers map them into their own typed errors.
//!
//! Durability model (what callers may assume, and what [`SimFs`] enforces):
//! - data written to a file is durable only after [`FsFile::sync_data`] on that file returns Ok;
//! - creating, renaming or removing a file is durable only after [`Fs::sync_dir`] on its
//!   directory returns Ok;
//! - a failed sync says nothing about what reached the disk, and a later successful sync does
//!   not repair it (callers must latch the error).

mod crash_cases;
mod real;
mod sim;

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crash_cases::{CrashPlan, run_crash_cases};
pub use real::{StdFs, exchange, rename_noreplace};
pub use sim::{CrashReport, SimFs, SimFsConfig, SyncCounts};

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenOptions {
    /// Create the file if it does not exist.
    pub create: bool,
    /// Fail if the file already exists (implies `create`).
    pub create_new: bool,
    /// Open read-only.
    pub read_only: bool,
}

impl OpenOptions {
    /// Open an existing file for reading and writing.
    pub fn existing() -> Self {
        OpenOptions::default()
    }
    /// Open for reading and writing, creating the file if needed.
    pub fn create() -> Self {
        OpenOptions {
            create: true,
            ..Default::default()
        }
    }
    /// Create a new file; fail if it exists.
    pub fn create_new() -> Self {
        OpenOptions {
            create: true,
            create_new: true,
            ..Default::default()
        }
    }
    /// Open an existing file read-only.
    pub fn read_only() -> Self {
        OpenOptions {
            read_only: true,
            ..Default::default()
        }
    }
}

/// An open file. All offsets are absolute; implementations are safe to share between threads.
pub trait FsFile: Send + Sync + Debug {
    /// Read up to `buf.len()` bytes at `offset`; returns how many were read (0 at end of file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Write all of `buf` at `offset`, extending the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncate or extend (with zeros) to `len`.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Make this file's written data (and the length needed to read it) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Append `buf` at the current end of the file; returns the offset it was written at.
    fn append(&self, buf: &[u8]) -> io::Result<u64> {
        let at = self.len()?;
        self.write_all_at(buf, at)?;
        Ok(at)
    }
    /// Fill `buf` from `offset`; an `UnexpectedEof` error if the file ends first.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.read_at(buf, offset)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file ended before the requested range",
                ));
            }
            buf = &mut buf[n..];
            offset += n as u64;
        }
        Ok(())
    }
    /// The underlying OS file, where there is one (used for memory-mapped reads).
    fn as_std_file(&self) -> Option<&std::fs::File> {
        None
    }
    /// Drop this file's cached pages that wait for no write, so that the next reads come from
    /// the disk. Call it after a successful [`FsFile::sync_data`]. After a failed sync Linux
    /// marks the pages it could not write clean and goes on showing their new contents, which
    /// the disk does not hold (and a later sync succeeds without writing them): a process that
    /// opens the file then, the one that saw the error having died, would take them for
    /// durable. Recovery calls this to read what the disk holds. Best effort (the default does
    /// nothing).
    fn drop_cache(&self) -> io::Result<()> {
        Ok(())
    }
}

/// A shared open file.
pub type FileRef = Arc<dyn FsFile>;

/// An exclusive, advisory, whole-process lock on a path; released on drop.
pub trait FsLock: Send + Sync + Debug {}

/// The file system the log and the VFS run on.
pub trait Fs: Send + Sync + Debug + 'static {
    /// Open (or create) a file.
    fn open(&self, path: &Path, opts: OpenOptions) -> io::Result<FileRef>;
    /// Remove a file (durable after `sync_dir` of its directory).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Atomically rename a file, replacing `to` (durable after `sync_dir`).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Make creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Names (not paths) of the files in `dir`, in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Create `dir` and its parents (durable after `sync_dir` of each parent).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Whether a file exists at `path`.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Take an exclusive lock on `path` (created if missing), or fail with `WouldBlock` if another
    /// holder has it. Used to make one process the owner of a database.
    fn try_lock(&self, path: &Path) -> io::Result<Box<dyn FsLock>>;
    /// The lock of [`Fs::try_lock`], taken without creating or writing anything (for a
    /// read-only open): `Ok(None)` where no file is at `path`, `WouldBlock` if another holder
    /// has it. The default takes none (`Ok(None)`).
    fn try_lock_read_only(&self, _path: &Path) -> io::Result<Option<Box<dyn FsLock>>> {
        Ok(None)
    }
    /// Lock other programs' SQLite out of the existing file at `path` for as long as the
    /// returned lock lives: an exclusive lock on the whole file, of the kind SQLite's own unix
    /// VFS takes and tests (POSIX record locks), so that a stock SQLite connection to a database
    /// the pagelog VFS has open gets `SQLITE_BUSY` ("database is locked") instead of rebuilding
    /// a WAL-index of its own, checkpointing behind the VFS's back and deleting its WAL. Fails
    /// with `WouldBlock` if someone holds such a lock on the file. `Ok(None)` where there are no
    /// other programs to lock out (the simulated disk, the default) or no suitable lock (see
    /// [`StdFs`]).
    fn try_lock_sqlite(&self, _path: &Path) -> io::Result<Option<Box<dyn FsLock>>> {
        Ok(None)
    }
    /// Bytes an unprivileged writer can still add on the file system holding `dir`, or
    /// `Ok(None)` where that is not known (the default). The log keeps its optional
    /// preallocated spare segments within this: they must not take the last free space (see
    /// `LogOptions::recycle`).
    fn free_space(&self, _dir: &Path) -> io::Result<Option<u64>> {
        Ok(None)
    }
}

/// A shared file system.
pub type FsRef = Arc<dyn Fs>;

/// Lexically normalise a path: drop `.` components and resolve `..` (no file system access,
/// so it also works for paths of the simulated disk).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The parent directory of `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
