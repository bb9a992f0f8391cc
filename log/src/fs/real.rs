//! [`StdFs`]: the fs layer on real files through `std::fs` (positional I/O, `fdatasync`,
//! directory fsync, `flock`-style advisory locks).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{FileRef, Fs, FsFile, FsLock, OpenOptions};

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
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let owner = fs::read_to_string(path).unwrap_or_default();
                let owner = owner.trim();
                let who = if owner.is_empty() {
                    "another process".to_string()
                } else {
                    owner.to_string()
                };
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is locked by {who}", path.display()),
                ));
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        // Record who holds the lock so that a refused opener can name the owner.
        file.set_len(0)?;
        let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        write!(
            file,
            "pid {} on host {}",
            std::process::id(),
            host.trim().trim_end_matches('\n')
        )?;
        Ok(Box::new(StdLock {
            _file: file,
            path: path.to_path_buf(),
        }))
    }
}
