//! [`StdFs`]: the fs layer on real files through `std::fs` (positional I/O, `fdatasync`,
//! directory fsync, `flock`-style advisory locks, and on Linux the open-file-description lock
//! that keeps other programs' SQLite away from a database file).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{FileRef, Fs, FsFile, FsLock, OpenOptions};

/// Swap `a` and `b` (files or directories) in one step: each path names what the other did
/// (Linux `renameat2(RENAME_EXCHANGE)`). Where that is not available (another system, a libc
/// without it, a file system that refuses it) the error is `ErrorKind::Unsupported` and
/// nothing changed. Used to put a directory in place of another without a moment where
/// neither is there.
pub fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        match renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "atomic exchange not supported here",
            )),
            Err(e) => Err(io::Error::from(e)),
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = (a, b);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "atomic exchange not supported here",
        ))
    }
}

/// Rename `from` to `to` unless `to` exists (`ErrorKind::AlreadyExists` then). On Linux in one
/// step (`renameat2(RENAME_NOREPLACE)`); elsewhere, or where the file system refuses that
/// flag, a check and then a rename (a path created between the two is replaced).
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    if fs::symlink_metadata(to).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists", to.display()),
        ));
    }
    fs::rename(from, to)
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

impl StdFs {
    /// A shared handle to the real file system.
    pub fn shared() -> super::FsRef {
        Arc::new(StdFs)
    }
}

#[derive(Debug)]
struct StdFile {
    file: File,
}

#[cfg(unix)]
impl FsFile for StdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        loop {
            match self.file.read_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn as_std_file(&self) -> Option<&File> {
        Some(&self.file)
    }
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    fn drop_cache(&self) -> io::Result<()> {
        use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
        posix_fadvise(&self.file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
            .map_err(io::Error::from)
    }
}

#[derive(Debug)]
struct StdLock {
    _file: File,
    path: PathBuf,
}

impl FsLock for StdLock {}

impl Drop for StdLock {
    fn drop(&mut self) {
        tracing::debug!(path = %self.path.display(), "released lock");
    }
}

impl Fs for StdFs {
    fn open(&self, path: &Path, opts: OpenOptions) -> io::Result<FileRef> {
        let mut o = fs::OpenOptions::new();
        o.read(true);
        if !opts.read_only {
            o.write(true);
        }
        if opts.create_new {
            o.create_new(true);
        } else if opts.create {
            o.create(true);
        }
        let file = o.open(path)?;
        Ok(Arc::new(StdFile { file }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // On Unix a directory opened read-only can be fsynced; that makes its entries durable.
        #[cfg(unix)]
        {
            File::open(dir)?.sync_all()
        }
        #[cfg(not(unix))]
        {
            let _ = dir;
            Ok(())
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Some(name) = entry.file_name().to_str()
            {
                out.push(name.to_string());
            }
        }
        Ok(out)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn try_lock(&self, path: &Path) -> io::Result<Box<dyn FsLock>> {
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        lock_or_name_owner(&file, path)?;
        // Record who holds the lock so that a refused opener can name the owner.
        file.set_len(0)?;
        write!(file, "{}", lock_owner())?;
        Ok(Box::new(StdLock {
            _file: file,
            path: path.to_path_buf(),
        }))
    }

    /// `flock` on a descriptor opened read-only: it needs no write permission and works on a
    /// read-only mount. The file is left as it is (the holder is not recorded).
    fn try_lock_read_only(&self, path: &Path) -> io::Result<Option<Box<dyn FsLock>>> {
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        lock_or_name_owner(&file, path)?;
        Ok(Some(Box::new(StdLock {
            _file: file,
            path: path.to_path_buf(),
        })))
    }

    /// `statvfs`: the blocks available to unprivileged writers (ext4 keeps a reserve for root
    /// out of that figure) times the fragment size.
    fn free_space(&self, dir: &Path) -> io::Result<Option<u64>> {
        #[cfg(unix)]
        {
            let st = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
            // The field types differ between systems (u64 on Linux, u32 or c_ulong elsewhere).
            #[allow(clippy::unnecessary_cast)]
            let bytes = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
            Ok(Some(bytes))
        }
        #[cfg(not(unix))]
        {
            let _ = dir;
            Ok(None)
        }
    }

    /// On Linux: a write lock on the whole file through `fcntl(F_OFD_SETLK)` on a descriptor of
    /// its own. An open-file-description lock conflicts with the classic POSIX record locks
    /// SQLite's unix VFS takes — even with those of this same process, so an `ATTACH` through
    /// the default VFS is refused too — and, unlike a POSIX lock, it is not dropped when this
    /// process closes some other descriptor of the file (which SQLite and the VFS do all the
    /// time). `flock` would not do: on Linux it does not conflict with `fcntl` locks at all.
    /// Elsewhere `Ok(None)`: macOS has no public open-file-description locks, and a POSIX lock
    /// would vanish at the first `close` of another descriptor of the file.
    fn try_lock_sqlite(&self, path: &Path) -> io::Result<Option<Box<dyn FsLock>>> {
        #[cfg(target_os = "linux")]
        {
            ofd::lock_whole_file(path).map(|l| Some(Box::new(l) as Box<dyn FsLock>))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = path;
            Ok(None)
        }
    }
}

/// Take the exclusive `flock` on `file` (at `path`), or fail with `WouldBlock` naming the
/// holder the lock file records.
fn lock_or_name_owner(file: &fs::File, path: &Path) -> io::Result<()> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(fs::TryLockError::WouldBlock) => {
            let owner = fs::read_to_string(path).unwrap_or_default();
            let owner = owner.trim();
            let who = if owner.is_empty() {
                "another process".to_string()
            } else if owner == lock_owner() {
                format!(
                    "{owner} (this process: an earlier handle on the same directory, such \
                     as a log or a reader of it, has not been dropped yet)"
                )
            } else if recorded_owner_is_gone(owner) {
                // A read-only holder (`pagelog log dump`) records nothing: the file still
                // names the last writer.
                format!(
                    "a process that does not record itself, such as `pagelog log dump` \
                     reading the log (the last holder recorded, {owner}, is not running)"
                )
            } else {
                owner.to_string()
            };
            Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked by {who}", path.display()),
            ))
        }
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Whether `owner` (as [`lock_owner`] wrote it) names a process of this host that is no
/// longer running. Known only on Linux (`/proc`); elsewhere false.
fn recorded_owner_is_gone(owner: &str) -> bool {
    if !cfg!(target_os = "linux") {
        return false;
    }
    let this_host = lock_owner();
    let host_of = |o: &str| o.split_once(" on host ").map(|(_, h)| h.to_string());
    let pid = owner
        .strip_prefix("pid ")
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse::<u32>().ok());
    match pid {
        Some(pid) if host_of(owner) == host_of(&this_host) => {
            !Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => false,
    }
}

/// How a lock file names its owner: `pid P on host H`.
fn lock_owner() -> String {
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("pid {} on host {}", std::process::id(), host.trim())
        .trim_end()
        .to_string()
}

#[cfg(target_os = "linux")]
mod ofd {
    //! The open-file-description lock of [`StdFs::try_lock_sqlite`](super::StdFs).

    use std::fs::{self, File};
    use std::io;
    use std::path::Path;

    use nix::errno::Errno;
    use nix::fcntl::{FcntlArg, fcntl};

    use super::StdLock;

    /// `struct flock` for the whole file (`l_len` 0: to the end, however far it grows).
    fn whole_file(l_type: libc::c_short) -> libc::flock {
        libc::flock {
            l_type,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0,
            // Must be 0 for open-file-description locks.
            l_pid: 0,
        }
    }

    pub(super) fn lock_whole_file(path: &Path) -> io::Result<StdLock> {
        // Writing is needed for a write lock; the file is never written through this handle.
        let file = fs::OpenOptions::new().read(true).write(true).open(path)?;
        let want = whole_file(libc::F_WRLCK as libc::c_short);
        match fcntl(&file, FcntlArg::F_OFD_SETLK(&want)) {
            Ok(_) => Ok(StdLock {
                _file: file,
                path: path.to_path_buf(),
            }),
            Err(Errno::EAGAIN | Errno::EACCES) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked by {}", path.display(), holder(&file)),
            )),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    /// Who holds a conflicting lock, as well as `F_OFD_GETLK` tells.
    fn holder(file: &File) -> String {
        let mut probe = whole_file(libc::F_WRLCK as libc::c_short);
        match fcntl(file, FcntlArg::F_OFD_GETLK(&mut probe)) {
            // A POSIX lock (SQLite's own) names its process; an OFD lock says -1.
            Ok(_) if probe.l_type != libc::F_UNLCK as libc::c_short && probe.l_pid > 0 => {
                let this = if probe.l_pid as u32 == std::process::id() {
                    " (this process)"
                } else {
                    ""
                };
                format!(
                    "pid {}{this}, through SQLite's own file locks: a connection that does not use \
                     the pagelog VFS has the database open",
                    probe.l_pid
                )
            }
            _ => "another process".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_swaps_two_directories_or_says_unsupported() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        fs::create_dir(&a).unwrap();
        fs::create_dir(&b).unwrap();
        fs::write(a.join("f"), b"from a").unwrap();
        fs::write(b.join("f"), b"from b").unwrap();
        match exchange(&a, &b) {
            Ok(()) => {
                assert_eq!(fs::read(a.join("f")).unwrap(), b"from b");
                assert_eq!(fs::read(b.join("f")).unwrap(), b"from a");
            }
            // Another system, or a file system that refuses the exchange: nothing moved.
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                assert_eq!(fs::read(a.join("f")).unwrap(), b"from a");
            }
            Err(e) => panic!("{e}"),
        }
        // A missing side is an error, and nothing moves.
        assert!(exchange(&a, &d.path().join("missing")).is_err());
        assert!(a.join("f").exists());
    }

    #[test]
    fn rename_noreplace_refuses_an_existing_target() {
        let d = tempfile::tempdir().unwrap();
        let (from, to) = (d.path().join("from"), d.path().join("to"));
        fs::write(&from, b"new").unwrap();
        fs::write(&to, b"old").unwrap();
        let e = rename_noreplace(&from, &to).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&to).unwrap(), b"old");
        assert_eq!(fs::read(&from).unwrap(), b"new");
        fs::remove_file(&to).unwrap();
        rename_noreplace(&from, &to).unwrap();
        assert_eq!(fs::read(&to).unwrap(), b"new");
        assert!(!from.exists());
    }
}
