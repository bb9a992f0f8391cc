//! [`SimFs`]: a simulated disk for crash tests, shared by every crate's tests.
//!
//! Each file (inode) has a *durable* image and a list of *pending* operations (writes and
//! length changes) made since its last successful sync; reads see the current image. Each
//! directory has a durable and a current name table plus pending entry operations (create,
//! rename, remove), made durable only by syncing that directory.
//!
//! A *power cut* can be scheduled after the N-th mutating operation: from then on every
//! mutating call fails with `EIO` and changes nothing. [`SimFs::crash`] then computes what a disk
//! could hold after power loss, driven by the seed: each pending file operation is applied,
//! dropped, torn (some 512-byte or 4 KiB sectors applied, others not) or replaced with garbage;
//! each directory keeps a random prefix of its pending entry operations. Open handles from before
//! the crash become stale and fail.
//!
//! [`SimFs::kill_process`] ends the process without a power cut: handles go stale, unsynced
//! writes stay readable (the page cache) and pending, so a later crash can still lose them.
//!
//! Fault injection: the N-th sync fails with `EIO` (and, as on Linux, the data it was meant to
//! flush is silently dropped from the pending set: a later successful sync does not make it
//! durable); writes fail with `ENOSPC` once a capacity is exceeded. Sync calls are counted per
//! file path, so tests can prove which syncs are (not) on a commit path.
//!
//! Directories themselves are treated as always durable (only their entries are simulated).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

use super::{FileRef, Fs, FsFile, FsLock, OpenOptions, normalize};

/// Settings of a simulated disk.
#[derive(Debug, Clone, Default)]
pub struct SimFsConfig {
    /// Seed for every random decision the disk makes (crash outcomes).
    pub seed: u64,
    /// Cut the power after this many mutating operations (writes, length changes, syncs,
    /// creations, renames, removals): every later mutating call fails with `EIO`.
    pub power_cut_after_ops: Option<u64>,
    /// The N-th sync (1-based, file and directory syncs counted together) fails with `EIO`.
    pub fail_sync_at: Option<u64>,
    /// Total bytes all files may hold; a write or extension beyond it fails with `ENOSPC`.
    pub capacity_bytes: Option<u64>,
    /// On a crash, the probability that a pending operation is applied whole (default 0.5 when
    /// left at 0.0); the rest are dropped, torn or turned to garbage.
    pub apply_probability: f64,
}

/// Sync calls seen by a simulated disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncCounts {
    /// File syncs per path (the path the file had when it was synced).
    pub files: BTreeMap<PathBuf, u64>,
    /// Directory syncs per directory.
    pub dirs: BTreeMap<PathBuf, u64>,
}

impl SyncCounts {
    /// Syncs of files whose path ends with `suffix`.
    pub fn file_syncs_ending_with(&self, suffix: &str) -> u64 {
        self.files
            .iter()
            .filter(|(p, _)| p.to_string_lossy().ends_with(suffix))
            .map(|(_, n)| *n)
            .sum()
    }
    /// All file syncs.
    pub fn total_file_syncs(&self) -> u64 {
        self.files.values().sum()
    }
}

/// What a crash did, for test diagnostics.
#[derive(Debug, Clone, Default)]
pub struct CrashReport {
    /// Pending file operations applied whole.
    pub applied: u64,
    /// Pending file operations dropped.
    pub dropped: u64,
    /// Pending writes torn at sector granularity.
    pub torn: u64,
    /// Pending writes replaced with garbage.
    pub garbage: u64,
    /// Directory entry operations lost.
    pub dir_ops_lost: u64,
}

#[derive(Debug, Clone)]
enum FileOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<FileOp>,
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(String, u64),
    Unlink(String),
}

#[derive(Debug, Default)]
struct Dir {
    durable: BTreeMap<String, u64>,
    current: BTreeMap<String, u64>,
    pending: Vec<DirOp>,
}

#[derive(Debug)]
struct State {
    config: SimFsConfig,
    rng: SmallRng,
    generation: u64,
    next_ino: u64,
    inodes: HashMap<u64, Inode>,
    dirs: BTreeMap<PathBuf, Dir>,
    ops: u64,
    syncs: u64,
    powered_off: bool,
    counts: SyncCounts,
    locks: BTreeMap<PathBuf, u64>,
    next_lock: u64,
}

/// A simulated disk. Cloning gives another handle to the same disk.
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFs").finish_non_exhaustive()
    }
}

fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let path = normalize(path);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?
        .to_string();
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((dir, name))
}

fn eio(msg: &str) -> io::Error {
    io::Error::from_raw_os_error(libc::EIO).with_context(msg)
}

trait WithContext {
    fn with_context(self, msg: &str) -> io::Error;
}
impl WithContext for io::Error {
    fn with_context(self, msg: &str) -> io::Error {
        io::Error::new(self.kind(), format!("{msg} ({self})"))
    }
}

fn enospc() -> io::Error {
    let base = io::Error::from_raw_os_error(libc::ENOSPC);
    io::Error::new(base.kind(), format!("simulated disk full ({base})"))
}

fn apply_op(image: &mut Vec<u8>, op: &FileOp) {
    match op {
        FileOp::Write { offset, data } => write_into(image, *offset, data),
        FileOp::SetLen(len) => image.resize(*len as usize, 0),
    }
}

fn write_into(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = offset as usize;
    let end = start + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[start..end].copy_from_slice(data);
}

impl State {
    /// Apply `op` to what reads of inode `ino` see, and keep it pending until a sync.
    fn pend(&mut self, ino: u64, op: FileOp) -> io::Result<()> {
        let inode = self
            .inodes
            .get_mut(&ino)
            .ok_or_else(|| eio("inode vanished"))?;
        apply_op(&mut inode.current, &op);
        inode.pending.push(op);
        Ok(())
    }

    /// Bytes the files take: those a directory lists now (a removed file's space is free
    /// again, as once its last link and handle are gone).
    fn total_bytes(&self) -> u64 {
        let linked: std::collections::BTreeSet<u64> = self
            .dirs
            .values()
            .flat_map(|d| d.current.values().copied())
            .collect();
        linked
            .iter()
            .filter_map(|ino| self.inodes.get(ino))
            .map(|i| i.current.len() as u64)
            .sum()
    }

    /// Count a mutating operation; fail if the power is (now) off.
    fn mutate(&mut self) -> io::Result<()> {
        if self.powered_off {
            return Err(eio("simulated power loss"));
        }
        self.ops += 1;
        if let Some(limit) = self.config.power_cut_after_ops
            && self.ops > limit
        {
            self.powered_off = true;
            return Err(eio("simulated power loss"));
        }
        Ok(())
    }

    /// Count a sync; fail it if it is the scheduled failing one.
    fn sync_fails(&mut self) -> bool {
        self.syncs += 1;
        self.config.fail_sync_at == Some(self.syncs)
    }

    fn dir_mut(&mut self, dir: &Path) -> io::Result<&mut Dir> {
        self.dirs.get_mut(dir).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no such directory: {}", dir.display()),
            )
        })
    }

    fn lookup(&self, path: &Path) -> io::Result<Option<u64>> {
        let (dir, name) = split(path)?;
        Ok(self
            .dirs
            .get(&dir)
            .and_then(|d| d.current.get(&name).copied()))
    }

    fn path_of(&self, ino: u64) -> Option<PathBuf> {
        for (dir, d) in &self.dirs {
            for (name, i) in &d.current {
                if *i == ino {
                    return Some(dir.join(name));
                }
            }
        }
        None
    }

    fn crash(&mut self) -> CrashReport {
        let mut report = CrashReport::default();
        let apply_p = if self.config.apply_probability > 0.0 {
            self.config.apply_probability
        } else {
            0.5
        };
        let mut inos: Vec<u64> = self.inodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let Some(inode) = self.inodes.get_mut(&ino) else {
                continue;
            };
            let mut image = std::mem::take(&mut inode.durable);
            for op in std::mem::take(&mut inode.pending) {
                let roll: f64 = self.rng.random();
                if roll < apply_p {
                    apply_op(&mut image, &op);
                    report.applied += 1;
                    continue;
                }
                let rest = (roll - apply_p) / (1.0 - apply_p);
                match op {
                    FileOp::Write { offset, data } if rest >= 0.4 => {
                        if rest < 0.9 {
                            // Torn: each sector (512 B or 4 KiB, aligned to the file) independently.
                            let sector: u64 = if self.rng.random_bool(0.5) { 512 } else { 4096 };
                            let end = offset + data.len() as u64;
                            let mut s = offset;
                            while s < end {
                                let next = ((s / sector) + 1) * sector;
                                let e = next.min(end);
                                if self.rng.random_bool(0.5) {
                                    let a = (s - offset) as usize;
                                    let b = (e - offset) as usize;
                                    write_into(&mut image, s, &data[a..b]);
                                }
                                s = e;
                            }
                            report.torn += 1;
                        } else {
                            // Garbage over the range (a sector-sized piece of it at least).
                            let mut junk = vec![0u8; data.len()];
                            self.rng.fill_bytes(&mut junk);
                            write_into(&mut image, offset, &junk);
                            report.garbage += 1;
                        }
                    }
                    _ => report.dropped += 1,
                }
            }
            inode.durable = image.clone();
            inode.current = image;
        }
        for dir in self.dirs.values_mut() {
            let pending = std::mem::take(&mut dir.pending);
            let keep = if pending.is_empty() {
                0
            } else {
                self.rng.random_range(0..=pending.len())
            };
            report.dir_ops_lost += (pending.len() - keep) as u64;
            for op in &pending[..keep] {
                match op {
                    DirOp::Link(name, ino) => {
                        dir.durable.insert(name.clone(), *ino);
                    }
                    DirOp::Unlink(name) => {
                        dir.durable.remove(name);
                    }
                }
            }
            dir.current = dir.durable.clone();
        }
        // Inodes no directory names are gone.
        let live: std::collections::HashSet<u64> = self
            .dirs
            .values()
            .flat_map(|d| d.current.values().copied())
            .collect();
        self.inodes.retain(|ino, _| live.contains(ino));
        self.generation += 1;
        self.powered_off = false;
        self.config.power_cut_after_ops = None;
        self.config.fail_sync_at = None;
        self.locks.clear();
        report
    }
}

impl Default for SimFs {
    fn default() -> Self {
        SimFs::new(SimFsConfig::default())
    }
}

impl SimFs {
    /// A new, empty simulated disk.
    pub fn new(config: SimFsConfig) -> SimFs {
        let rng = SmallRng::seed_from_u64(config.seed);
        let mut dirs = BTreeMap::new();
        dirs.insert(PathBuf::new(), Dir::default());
        dirs.insert(PathBuf::from("/"), Dir::default());
        SimFs {
            state: Arc::new(Mutex::new(State {
                config,
                rng,
                generation: 0,
                next_ino: 1,
                inodes: HashMap::new(),
                dirs,
                ops: 0,
                syncs: 0,
                powered_off: false,
                counts: SyncCounts::default(),
                locks: BTreeMap::new(),
                next_lock: 1,
            })),
        }
    }

    /// A shared handle usable where an [`super::FsRef`] is expected.
    pub fn shared(&self) -> super::FsRef {
        Arc::new(self.clone())
    }

    /// Simulate power loss now: compute the post-crash disk, invalidate open handles and locks,
    /// and clear scheduled faults (the machine "reboots").
    pub fn crash(&self) -> CrashReport {
        self.state.lock().crash()
    }

    /// Simulate the process using this disk being killed (SIGKILL), the machine staying up:
    /// its open handles become stale and its locks are released, but nothing is lost. What it
    /// wrote stays readable, and what it had not synced stays pending, so a later
    /// [`SimFs::crash`] may still drop or tear it. A power cut scheduled with
    /// [`SimFsConfig::power_cut_after_ops`] and followed by this call stops the process at
    /// that operation: the operations it then attempted failed and changed nothing.
    pub fn kill_process(&self) {
        let mut s = self.state.lock();
        s.generation += 1;
        s.powered_off = false;
        s.config.power_cut_after_ops = None;
        s.config.fail_sync_at = None;
        s.locks.clear();
    }

    /// Mutating operations so far (the unit of [`SimFsConfig::power_cut_after_ops`]).
    pub fn op_count(&self) -> u64 {
        self.state.lock().ops
    }

    /// Syncs so far (the unit of [`SimFsConfig::fail_sync_at`]).
    pub fn sync_count(&self) -> u64 {
        self.state.lock().syncs
    }

    /// Whether a scheduled power cut has happened.
    pub fn is_powered_off(&self) -> bool {
        self.state.lock().powered_off
    }

    /// Schedule a power cut after `n` more mutating operations (None: never).
    pub fn set_power_cut_after(&self, n: Option<u64>) {
        let mut s = self.state.lock();
        s.config.power_cut_after_ops = n.map(|n| s.ops + n);
    }

    /// Make the sync that comes `n` syncs from now (1 = the next) fail with `EIO`.
    pub fn fail_sync_in(&self, n: u64) {
        let mut s = self.state.lock();
        s.config.fail_sync_at = Some(s.syncs + n);
    }

    /// Set the capacity (None: unlimited).
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state.lock().config.capacity_bytes = bytes;
    }

    /// Syncs seen per path.
    pub fn sync_counts(&self) -> SyncCounts {
        self.state.lock().counts.clone()
    }

    /// Forget the sync counters.
    pub fn reset_sync_counts(&self) {
        self.state.lock().counts = SyncCounts::default();
    }

    /// The current contents of a file (what reads see), or None if it does not exist.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state.lock();
        let ino = s.lookup(path).ok().flatten()?;
        s.inodes.get(&ino).map(|i| i.current.clone())
    }

    /// Overwrite bytes of a file directly and durably (to inject corruption in tests).
    pub fn corrupt(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut s = self.state.lock();
        let ino = s
            .lookup(path)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        let inode = s
            .inodes
            .get_mut(&ino)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such inode"))?;
        write_into(&mut inode.current, offset, bytes);
        write_into(&mut inode.durable, offset, bytes);
        Ok(())
    }
}

#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<State>>,
    ino: u64,
    generation: u64,
    read_only: bool,
}

impl SimFile {
    fn with_inode<T>(
        &self,
        mutate: bool,
        f: impl FnOnce(&mut State, u64) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut s = self.state.lock();
        if s.generation != self.generation {
            return Err(eio(
                "stale handle: the simulated machine crashed or its process was killed",
            ));
        }
        if mutate {
            if self.read_only {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "file opened read-only",
                ));
            }
            s.mutate()?;
        }
        if !s.inodes.contains_key(&self.ino) {
            return Err(eio("inode vanished"));
        }
        f(&mut s, self.ino)
    }
}

impl SimFile {
    /// Apply a write or length change to the current image and keep it pending until a sync;
    /// `ENOSPC` if it would grow the file (to `new_end`) past the disk's capacity.
    fn push_op(&self, new_end: u64, op: FileOp) -> io::Result<()> {
        self.with_inode(true, |s, ino| {
            let cur_len = s.inodes[&ino].current.len() as u64;
            if let Some(cap) = s.config.capacity_bytes
                && new_end > cur_len
                && s.total_bytes() + (new_end - cur_len) > cap
            {
                return Err(enospc());
            }
            s.pend(ino, op)
        })
    }
}

impl FsFile for SimFile {
    /// What reads see becomes the durable image with the pending operations applied: data a
    /// failed sync dropped from the pending set (still shown until now, as Linux's page cache
    /// does) is gone from view.
    fn drop_cache(&self) -> io::Result<()> {
        self.with_inode(false, |s, ino| {
            if let Some(inode) = s.inodes.get_mut(&ino) {
                let mut image = inode.durable.clone();
                for op in &inode.pending {
                    apply_op(&mut image, op);
                }
                inode.current = image;
            }
            Ok(())
        })
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with_inode(false, |s, ino| {
            let img = &s.inodes[&ino].current;
            let off = offset as usize;
            if off >= img.len() {
                return Ok(0);
            }
            let n = buf.len().min(img.len() - off);
            buf[..n].copy_from_slice(&img[off..off + n]);
            Ok(n)
        })
    }

    /// On a full disk, as `write(2)` there: the part that fits is written (a short write) and
    /// the rest fails with `ENOSPC`, so the file keeps that prefix. Room is measured and taken
    /// under one lock, so concurrent writers never exceed the capacity together.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        self.with_inode(true, |s, ino| {
            let cur_len = s.inodes[&ino].current.len() as u64;
            // Only a write that grows the file on a disk with a capacity needs the total.
            let fits = match s.config.capacity_bytes {
                Some(cap) if end > cur_len => {
                    let used = s.total_bytes();
                    if used + (end - cur_len) > cap {
                        let room = cap.saturating_sub(used);
                        (cur_len + room)
                            .saturating_sub(offset)
                            .min(buf.len() as u64) as usize
                    } else {
                        buf.len()
                    }
                }
                _ => buf.len(),
            };
            if fits > 0 {
                let op = FileOp::Write {
                    offset,
                    data: buf[..fits].to_vec(),
                };
                s.pend(ino, op)?;
            }
            if fits < buf.len() {
                return Err(enospc());
            }
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with_inode(false, |s, ino| Ok(s.inodes[&ino].current.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.push_op(len, FileOp::SetLen(len))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with_inode(true, |s, ino| {
            let path = s
                .path_of(ino)
                .unwrap_or_else(|| PathBuf::from("<unlinked>"));
            *s.counts.files.entry(path).or_default() += 1;
            let fails = s.sync_fails();
            let inode = s
                .inodes
                .get_mut(&ino)
                .ok_or_else(|| eio("inode vanished"))?;
            let pending = std::mem::take(&mut inode.pending);
            if fails {
                // Like Linux after a writeback error: the dirty data is dropped from the
                // pending set without reaching the durable image.
                return Err(eio("simulated fsync failure"));
            }
            for op in &pending {
                apply_op(&mut inode.durable, op);
            }
            Ok(())
        })
    }
}

#[derive(Debug)]
struct SimLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    id: u64,
}

impl FsLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut s = self.state.lock();
        if s.locks.get(&self.path) == Some(&self.id) {
            s.locks.remove(&self.path);
        }
    }
}

impl Fs for SimFs {
    fn open(&self, path: &Path, opts: OpenOptions) -> io::Result<FileRef> {
        let mut s = self.state.lock();
        let (dir, name) = split(path)?;
        let existing = s.dir_mut(&dir)?.current.get(&name).copied();
        let ino = match existing {
            Some(_) if opts.create_new => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                ));
            }
            Some(ino) => ino,
            None if opts.create || opts.create_new => {
                s.mutate()?;
                let ino = s.next_ino;
                s.next_ino += 1;
                s.inodes.insert(ino, Inode::default());
                let d = s.dir_mut(&dir)?;
                d.current.insert(name.clone(), ino);
                d.pending.push(DirOp::Link(name, ino));
                ino
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} not found", path.display()),
                ));
            }
        };
        Ok(Arc::new(SimFile {
            state: self.state.clone(),
            ino,
            generation: s.generation,
            read_only: opts.read_only,
        }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        let (dir, name) = split(path)?;
        if !s.dir_mut(&dir)?.current.contains_key(&name) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} not found", path.display()),
            ));
        }
        s.mutate()?;
        let d = s.dir_mut(&dir)?;
        d.current.remove(&name);
        d.pending.push(DirOp::Unlink(name));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        let (fdir, fname) = split(from)?;
        let (tdir, tname) = split(to)?;
        let ino = s
            .dir_mut(&fdir)?
            .current
            .get(&fname)
            .copied()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} not found", from.display()),
                )
            })?;
        s.dir_mut(&tdir)?;
        s.mutate()?;
        let d = s.dir_mut(&fdir)?;
        d.current.remove(&fname);
        d.pending.push(DirOp::Unlink(fname));
        let d = s.dir_mut(&tdir)?;
        d.current.insert(tname.clone(), ino);
        d.pending.push(DirOp::Link(tname, ino));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        let dir = normalize(dir);
        s.dir_mut(&dir)?;
        s.mutate()?;
        *s.counts.dirs.entry(dir.clone()).or_default() += 1;
        let fails = s.sync_fails();
        let d = s.dir_mut(&dir)?;
        let pending = std::mem::take(&mut d.pending);
        if fails {
            return Err(eio("simulated directory fsync failure"));
        }
        for op in pending {
            match op {
                DirOp::Link(name, ino) => {
                    d.durable.insert(name, ino);
                }
                DirOp::Unlink(name) => {
                    d.durable.remove(&name);
                }
            }
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut s = self.state.lock();
        let dir = normalize(dir);
        Ok(s.dir_mut(&dir)?.current.keys().cloned().collect())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        let mut p = PathBuf::new();
        for c in normalize(dir).components() {
            p.push(c.as_os_str());
            s.dirs.entry(p.clone()).or_default();
        }
        Ok(())
    }

    /// The capacity left (None without a capacity): one disk, whatever `dir`.
    fn free_space(&self, _dir: &Path) -> io::Result<Option<u64>> {
        let s = self.state.lock();
        Ok(s.config
            .capacity_bytes
            .map(|cap| cap.saturating_sub(s.total_bytes())))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let s = self.state.lock();
        let p = normalize(path);
        Ok(s.dirs.contains_key(&p) || s.lookup(&p)?.is_some())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Box<dyn FsLock>> {
        let mut s = self.state.lock();
        let p = normalize(path);
        if s.locks.contains_key(&p) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked by another owner", path.display()),
            ));
        }
        let id = s.next_lock;
        s.next_lock += 1;
        s.locks.insert(p.clone(), id);
        Ok(Box::new(SimLock {
            state: self.state.clone(),
            path: p,
            id,
        }))
    }

    /// The same lock as [`Fs::try_lock`]: the simulated disk keeps locks beside its files, and
    /// taking one writes nothing.
    fn try_lock_read_only(&self, path: &Path) -> io::Result<Option<Box<dyn FsLock>>> {
        self.try_lock(path).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn synced_data_survives_and_unsynced_create_may_not() {
        let fs = SimFs::new(SimFsConfig {
            seed: 1,
            ..Default::default()
        });
        fs.create_dir_all(&p("/d")).unwrap();
        let f = fs.open(&p("/d/a"), OpenOptions::create()).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(&p("/d")).unwrap();
        let g = fs.open(&p("/d/b"), OpenOptions::create()).unwrap();
        g.write_all_at(b"x", 0).unwrap();
        g.sync_data().unwrap();
        // /d/b's directory entry was never synced: with seed-driven prefixes it may vanish, but
        // /d/a must be intact.
        fs.crash();
        assert_eq!(fs.read_file(&p("/d/a")).unwrap(), b"hello");
        assert!(f.len().is_err(), "handles from before a crash are stale");
    }

    #[test]
    fn unsynced_writes_are_dropped_torn_or_kept_across_seeds() {
        let mut outcomes = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let fs = SimFs::new(SimFsConfig {
                seed,
                ..Default::default()
            });
            fs.create_dir_all(&p("/d")).unwrap();
            let f = fs.open(&p("/d/a"), OpenOptions::create()).unwrap();
            f.write_all_at(&[0u8; 8192], 0).unwrap();
            f.sync_data().unwrap();
            fs.sync_dir(&p("/d")).unwrap();
            f.write_all_at(&[7u8; 8192], 0).unwrap();
            fs.crash();
            let img = fs.read_file(&p("/d/a")).unwrap();
            assert_eq!(img.len(), 8192);
            let sevens = img.iter().filter(|b| **b == 7).count();
            outcomes.insert(match sevens {
                0 => "dropped",
                8192 => "applied",
                _ => "torn or garbage",
            });
        }
        assert_eq!(outcomes.len(), 3, "outcomes seen: {outcomes:?}");
    }

    #[test]
    fn failed_sync_loses_the_data_even_if_a_later_sync_succeeds() {
        let fs = SimFs::new(SimFsConfig {
            seed: 3,
            apply_probability: 1.0,
            ..Default::default()
        });
        fs.create_dir_all(&p("/d")).unwrap();
        let f = fs.open(&p("/d/a"), OpenOptions::create()).unwrap();
        fs.sync_dir(&p("/d")).unwrap();
        f.write_all_at(b"abc", 0).unwrap();
        fs.fail_sync_in(1);
        assert!(f.sync_data().is_err());
        f.sync_data().unwrap();
        fs.crash();
        assert_eq!(fs.read_file(&p("/d/a")).unwrap(), b"");
    }

    #[test]
    fn power_cut_stops_mutations_and_capacity_gives_enospc() {
        let fs = SimFs::new(SimFsConfig {
            seed: 4,
            capacity_bytes: Some(10),
            ..Default::default()
        });
        fs.create_dir_all(&p("/d")).unwrap();
        let f = fs.open(&p("/d/a"), OpenOptions::create()).unwrap();
        let err = f.write_all_at(&[1u8; 11], 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert!(err.to_string().contains("disk full"), "{err}");
        f.write_all_at(&[1u8; 10], 0).unwrap();
        fs.set_power_cut_after(Some(1));
        f.sync_data().unwrap();
        assert!(f.write_all_at(b"z", 0).is_err());
        assert!(fs.is_powered_off());
        let counts = fs.sync_counts();
        assert_eq!(counts.file_syncs_ending_with("/d/a"), 1);
    }

    #[test]
    fn locks_are_exclusive_until_dropped() {
        let fs = SimFs::default();
        let l = fs.try_lock(&p("/lock")).unwrap();
        assert_eq!(
            fs.try_lock(&p("/lock")).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(l);
        fs.try_lock(&p("/lock")).unwrap();
    }
}
