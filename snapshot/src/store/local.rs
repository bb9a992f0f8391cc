//! The local directory store, the embedded default: one file per object under a root
//! directory, the key's `/` segments as subdirectories.
//!
//! A create is atomic and conditional: the data goes to a temporary file (a name starting with
//! `.tmp-`, never listed) which is fsynced, then hard-linked to the object's name — `link(2)`
//! fails if the name exists, so two writers can never both create one key — and the directory
//! is fsynced. A crash leaves either no object or the whole object (and perhaps a stray
//! temporary file, removed by a later open once it is an hour old — younger ones may belong
//! to an upload in progress in another process).
//!
//! An object is durable only if the directories above it are: the first create into a
//! directory in each store instance syncs every directory from the object's up to the root,
//! whoever created them, and so does the first create after the directory was replaced (its
//! device, inode or creation time changed). A directory found already there may have been
//! made by a process killed before it synced the parent (or whose parent sync failed); its
//! entry could still be lost in a power cut, with every object acknowledged under it since.
//! Opening syncs the directories it makes above the root, and the one it found.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::{
    ObjectMeta, ObjectReader, ObjectStore, PutOutcome, StoreError, StoreResult, validate_key,
};

const TMP_PREFIX: &str = ".tmp-";

/// Temporary files older than this are leftovers of a crash.
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(3600);

/// A store in a local directory.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    seq: AtomicU64,
    /// Directories whose entries, up to the root, this instance has synced, with the identity
    /// each had then ([`DirId`]): one removed and made again by someone else is another.
    durable_dirs: Mutex<HashMap<PathBuf, DirId>>,
}

impl LocalStore {
    /// Open (creating) the store rooted at `root`, and remove temporary files left by a crash
    /// (over an hour old). That clean-up is housekeeping: where it fails (a read-only copy of
    /// a store, say), it is logged and the store opens anyway.
    pub fn open(root: &Path) -> StoreResult<LocalStore> {
        let io = |source| StoreError::Io {
            path: root.to_path_buf(),
            key: String::new(),
            source,
        };
        // The directories this makes, up to one that was there, and that one: their entries
        // must be durable before any object in them is. Best effort (a read-only copy of a
        // store opens too); each create syncs the root's subdirectories again anyway.
        let absolute = std::path::absolute(root).map_err(io)?;
        let mut existing = absolute.as_path();
        while !existing.exists()
            && let Some(parent) = existing.parent()
        {
            existing = parent;
        }
        fs::create_dir_all(root).map_err(io)?;
        let mut d = absolute.as_path();
        while let Some(parent) = d.parent() {
            if let Err(e) = sync_dir(parent) {
                tracing::debug!(dir = %parent.display(), error = %e, "could not sync a directory above the store");
            }
            if parent == existing || d == existing {
                break;
            }
            d = parent;
        }
        // Kept absolute: the store keeps working if the process changes directory, and
        // `describe` gives a `file://` URL that can be passed back (relative ones cannot).
        let root = std::path::absolute(root).map_err(io)?;
        let root = root.as_path();
        let store = LocalStore {
            root: root.to_path_buf(),
            seq: AtomicU64::new(0),
            durable_dirs: Mutex::new(HashMap::new()),
        };
        if let Err(e) = store.remove_temporaries(root) {
            tracing::warn!(store = %root.display(), error = %e,
                "could not remove the temporary files a crash left in the store");
        }
        Ok(store)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn remove_temporaries(&self, dir: &Path) -> std::io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                self.remove_temporaries(&path)?;
            } else if name.to_string_lossy().starts_with(TMP_PREFIX)
                && entry
                    .metadata()?
                    .modified()?
                    .elapsed()
                    .is_ok_and(|age| age > STALE_TMP)
            {
                fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    /// Create `dir` (under the root) if missing and, the first time this instance writes into
    /// it (or after it was replaced), sync each directory from its parent up to the root, so that its entry and its
    /// parents' are durable before an object in it is acknowledged. An error names the
    /// directory it occurred on.
    fn make_dir_durable(&self, dir: &Path) -> Result<(), (PathBuf, std::io::Error)> {
        if self.dir_unchanged(dir) {
            return Ok(());
        }
        fs::create_dir_all(dir).map_err(|e| (dir.to_path_buf(), e))?;
        let id = dir_id(dir);
        let mut d = dir;
        while d != self.root {
            let Some(parent) = d.parent() else { break };
            sync_dir(parent).map_err(|e| (parent.to_path_buf(), e))?;
            d = parent;
        }
        match id {
            Some(id) => self.durable_dirs.lock().insert(dir.to_path_buf(), id),
            None => self.durable_dirs.lock().remove(dir),
        };
        Ok(())
    }

    /// Whether `dir` is still the directory [`LocalStore::make_dir_durable`] made durable.
    fn dir_unchanged(&self, dir: &Path) -> bool {
        let known = self.durable_dirs.lock().get(dir).copied();
        known.is_some() && known == dir_id(dir)
    }

    /// The conditional create of `path` in `dir` (see the module's doc).
    fn create(&self, dir: &Path, path: &Path, data: &[u8]) -> std::io::Result<PutOutcome> {
        if path.exists() {
            return Ok(PutOutcome::AlreadyExists);
        }
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{TMP_PREFIX}{}-{n}", std::process::id()));
        let result = (|| -> std::io::Result<PutOutcome> {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            drop(f);
            let outcome = match fs::hard_link(&tmp, path) {
                Ok(()) => PutOutcome::Created,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => PutOutcome::AlreadyExists,
                Err(e) => return Err(e),
            };
            fs::remove_file(&tmp)?;
            sync_dir(dir)?;
            Ok(outcome)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn path_of(&self, key: &str) -> StoreResult<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    fn io(&self, path: &Path, key: &str, source: std::io::Error) -> StoreError {
        if source.kind() == ErrorKind::NotFound {
            return StoreError::NotFound {
                store: self.describe(),
                key: key.to_string(),
            };
        }
        StoreError::Io {
            path: path.to_path_buf(),
            key: key.to_string(),
            source,
        }
    }

    /// List the files under `dir` (keys prefixed with `rel`). An entry that vanishes between
    /// the directory read and its stat (retention deleting it meanwhile) is skipped, as is a
    /// directory that vanishes; any other error comes with the path it occurred on.
    fn walk(
        &self,
        dir: &Path,
        rel: &str,
        out: &mut Vec<ObjectMeta>,
    ) -> Result<(), (PathBuf, std::io::Error)> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err((dir.to_path_buf(), e)),
        };
        let gone = |r: &std::io::Error| r.kind() == ErrorKind::NotFound;
        for entry in entries {
            let entry = entry.map_err(|e| (dir.to_path_buf(), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TMP_PREFIX) {
                continue;
            }
            let key = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = match entry.file_type() {
                Ok(ft) => ft,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err((entry.path(), e)),
            };
            if ft.is_dir() {
                self.walk(&entry.path(), &key, out)?;
            } else if ft.is_file() {
                let size = match entry.metadata() {
                    Ok(m) => m.len(),
                    Err(e) if gone(&e) => continue,
                    Err(e) => return Err((entry.path(), e)),
                };
                out.push(ObjectMeta { key, size });
            }
        }
        Ok(())
    }
}

/// A directory's identity: device, inode, and creation time where the system tells it (an
/// inode number freed by a removal may be given to the next directory made).
type DirId = (u64, u64, Option<std::time::SystemTime>);

/// `dir`'s identity; None where unknown (the directory is missing, or not on a Unix system:
/// there, every create syncs the directories above its object).
fn dir_id(dir: &Path) -> Option<DirId> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(dir)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.created().ok()))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(test)]
    tests::SYNCED_DIRS.with(|s| s.borrow_mut().push(dir.to_path_buf()));
    File::open(dir)?.sync_all()
}

impl ObjectStore for LocalStore {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn put_if_absent(&self, key: &str, data: &[u8]) -> StoreResult<PutOutcome> {
        let path = self.path_of(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let mut retried = false;
        loop {
            self.make_dir_durable(&dir)
                .map_err(|(at, e)| self.io(&at, key, e))?;
            match self.create(&dir, &path, data) {
                // The directory went away (removed by hand, or by another program), or was
                // replaced while the object went in (it may have gone with the old one): make
                // it again, once, and create again (`AlreadyExists` if the object is there).
                // A put's `NotFound` is not the object's absence.
                Err(e) if e.kind() == ErrorKind::NotFound && !retried => {
                    self.durable_dirs.lock().remove(&dir);
                    retried = true;
                }
                Ok(_) if !self.dir_unchanged(&dir) && !retried => {
                    self.durable_dirs.lock().remove(&dir);
                    retried = true;
                }
                Ok(_) if !self.dir_unchanged(&dir) => {
                    return Err(StoreError::Io {
                        path: dir.clone(),
                        key: key.to_string(),
                        source: std::io::Error::other(
                            "the directory was replaced twice while an object was created in it",
                        ),
                    });
                }
                Err(source) => {
                    return Err(StoreError::Io {
                        path: path.clone(),
                        key: key.to_string(),
                        source,
                    });
                }
                Ok(outcome) => return Ok(outcome),
            }
        }
    }

    fn get(&self, key: &str) -> StoreResult<Vec<u8>> {
        let path = self.path_of(key)?;
        fs::read(&path).map_err(|e| self.io(&path, key, e))
    }

    fn get_reader(&self, key: &str) -> StoreResult<ObjectReader> {
        let path = self.path_of(key)?;
        let file = File::open(&path).map_err(|e| self.io(&path, key, e))?;
        Ok(Box::new(LocalReader {
            // Records are read a header at a time: buffer, so that each is not a system call.
            file: std::io::BufReader::with_capacity(READ_BUFFER, file),
            path,
            key: key.to_string(),
        }))
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Vec<u8>> {
        let path = self.path_of(key)?;
        let r = (|| -> std::io::Result<Vec<u8>> {
            let mut f = File::open(&path)?;
            let len = f.metadata()?.len();
            let end = range.end.min(len);
            if range.start >= end {
                return Ok(Vec::new());
            }
            f.seek(SeekFrom::Start(range.start))?;
            let mut buf = vec![0u8; (end - range.start) as usize];
            f.read_exact(&mut buf)?;
            Ok(buf)
        })();
        r.map_err(|e| self.io(&path, key, e))
    }

    fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        // Walk only the deepest directory the prefix names in full.
        let (dir_rel, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let dir = if dir_rel.is_empty() {
            self.root.clone()
        } else {
            validate_key(dir_rel)?;
            self.root.join(dir_rel)
        };
        let mut out = Vec::new();
        self.walk(&dir, dir_rel, &mut out)
            .map_err(|(path, source)| StoreError::Io {
                path,
                key: prefix.to_string(),
                source,
            })?;
        out.retain(|m| m.key.starts_with(prefix));
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> StoreResult<()> {
        let path = self.path_of(key)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(&path, key, e)),
        }
    }
}

/// Buffer of a streamed read.
const READ_BUFFER: usize = 256 << 10;

/// A streamed read of one object file; errors carry the key (as a [`StoreError::Io`]).
struct LocalReader {
    file: std::io::BufReader<File>,
    path: PathBuf,
    key: String,
}

impl Read for LocalReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf).map_err(|source| {
            if source.kind() == ErrorKind::Interrupted {
                return source;
            }
            std::io::Error::other(StoreError::Io {
                path: self.path.clone(),
                key: self.key.clone(),
                source,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Every directory this thread synced, in order.
        pub(super) static SYNCED_DIRS: std::cell::RefCell<Vec<PathBuf>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }

    fn take_synced() -> Vec<PathBuf> {
        SYNCED_DIRS.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }

    /// Found by review: a directory removed and made again by someone else (a process killed
    /// before it synced the parent) was trusted by its path.
    #[test]
    fn a_directory_made_again_by_someone_else_is_synced_again() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::path::absolute(dir.path()).unwrap();
        let s = LocalStore::open(&root).unwrap();
        s.put_if_absent("a/b/1", b"one").unwrap();
        std::fs::remove_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        take_synced();
        s.put_if_absent("a/b/2", b"two").unwrap();
        let synced = take_synced();
        assert!(
            synced.contains(&root.join("a")) && synced.contains(&root),
            "{synced:?}"
        );
    }

    /// Found by review: the directories `open` made above the root were never synced.
    #[test]
    fn the_directories_open_makes_are_synced() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::path::absolute(dir.path()).unwrap();
        take_synced();
        LocalStore::open(&base.join("x/y/store")).unwrap();
        let synced = take_synced();
        for d in [base.join("x/y"), base.join("x"), base.clone()] {
            assert!(
                synced.contains(&d),
                "{} not synced: {synced:?}",
                d.display()
            );
        }
    }

    #[test]
    fn directories_found_in_place_are_synced_before_the_first_object_in_them() {
        // A process killed after `mkdir` and before syncing the parent leaves a directory whose
        // entry a power cut can still lose. The next process must not take it for durable.
        let dir = tempfile::tempdir().unwrap();
        let root = std::path::absolute(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        let s = LocalStore::open(&root).unwrap();
        take_synced();
        s.put_if_absent("a/b/1", b"one").unwrap();
        assert_eq!(
            take_synced(),
            vec![root.join("a"), root.clone(), root.join("a/b")],
            "the parents up to the root, then the object's directory"
        );
        s.put_if_absent("a/b/2", b"two").unwrap();
        assert_eq!(take_synced(), vec![root.join("a/b")], "once per directory");
        // A directory removed by hand is made again.
        std::fs::remove_dir_all(root.join("a")).unwrap();
        s.put_if_absent("a/b/3", b"three").unwrap();
        assert_eq!(s.get("a/b/3").unwrap(), b"three");
        let synced = take_synced();
        assert!(
            synced.contains(&root.join("a")) && synced.contains(&root),
            "{synced:?}"
        );
    }

    #[test]
    fn conditional_create_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        assert_eq!(
            s.put_if_absent("a/b/1", b"one").unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            s.put_if_absent("a/b/1", b"other").unwrap(),
            PutOutcome::AlreadyExists
        );
        assert_eq!(s.get("a/b/1").unwrap(), b"one");
        assert_eq!(s.get_range("a/b/1", 1..10).unwrap(), b"ne");
        s.put_if_absent("a/c", b"x").unwrap();
        s.put_if_absent("z", b"").unwrap();
        let keys: Vec<_> = s.list("a/").unwrap().into_iter().map(|m| m.key).collect();
        assert_eq!(keys, vec!["a/b/1", "a/c"]);
        assert_eq!(s.list("").unwrap().len(), 3);
        assert_eq!(s.list("a/b").unwrap().len(), 1);
        assert!(s.list("nope/").unwrap().is_empty());
        assert!(matches!(s.get("a/zz"), Err(StoreError::NotFound { .. })));
        s.delete("a/b/1").unwrap();
        s.delete("a/b/1").unwrap();
        assert!(matches!(s.get("a/b/1"), Err(StoreError::NotFound { .. })));
        assert!(s.put_if_absent("../escape", b"x").is_err());
        // A temporary file is never listed; an open removes it once it is old (a young one
        // may be another process's upload in progress).
        let tmp = dir.path().join("a/.tmp-1-1");
        std::fs::write(&tmp, b"junk").unwrap();
        assert_eq!(s.list("a/").unwrap().len(), 1);
        drop(s);
        LocalStore::open(dir.path()).unwrap();
        assert!(tmp.exists(), "a young temporary file is left alone");
        let old = std::time::SystemTime::now() - 2 * STALE_TMP;
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        assert!(!tmp.exists());
        assert_eq!(s.list("").unwrap().len(), 2);
    }

    #[test]
    fn list_skips_objects_deleted_while_it_walks() {
        // Retention deleting objects while another process lists the store: an entry read
        // from the directory may be gone by the time its size is read. Such an entry is
        // simply not listed; the listing never fails for it.
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(LocalStore::open(dir.path()).unwrap());
        let keys: Vec<String> = (0..300).map(|i| format!("t/log/{i:05}")).collect();
        for k in &keys {
            s.put_if_absent(k, b"x").unwrap();
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = {
            let (root, stop, keys) = (dir.path().to_path_buf(), stop.clone(), keys.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for k in &keys {
                        let p = root.join(k);
                        let _ = fs::remove_file(&p);
                        let _ = fs::write(&p, b"x");
                    }
                }
            })
        };
        let started = std::time::Instant::now();
        let mut lists = 0;
        let result = loop {
            if let Err(e) = s.list("t/") {
                break Err(e);
            }
            lists += 1;
            if lists >= 3000 || started.elapsed() > std::time::Duration::from_secs(5) {
                break Ok(());
            }
        };
        stop.store(true, Ordering::Relaxed);
        churn.join().unwrap();
        result.unwrap();
    }

    #[test]
    fn racing_creates_have_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(LocalStore::open(dir.path()).unwrap());
        let handles: Vec<_> = (0..8u8)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || s.put_if_absent("k/race", &[i; 1000]).unwrap())
            })
            .collect();
        let created = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|o| *o == PutOutcome::Created)
            .count();
        assert_eq!(created, 1);
        let data = s.get("k/race").unwrap();
        assert!(data.len() == 1000 && data.iter().all(|b| *b == data[0]));
    }
}
