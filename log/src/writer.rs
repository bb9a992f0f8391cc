//! [`Log`]: appending with group commit, the durable watermark, the failure latch, segment
//! rollover with recycling and preallocation, and prefix truncation.
//!
//! Group commit (leader/follower): `append` encodes the record into a shared buffer under a
//! short lock (a payload of 64 KiB or more has its CRC computed before) and returns its LSN. Whoever then needs durability
//! and finds no sync in flight becomes the leader: it takes the whole buffer, writes it with
//! one positional write per segment, calls `fdatasync` once outside the lock, publishes the new
//! durable LSN and wakes that batch's waiters. Records appended while a leader syncs wait for
//! the next leader, so one `fdatasync` covers every record written before it started. Nothing
//! waits on a fixed delay, except that while the waiters the previous batch just released (and
//! its leader) are appending again, the buffer is kept open for them: the last of them leads,
//! and they are waited for only while they keep coming back (see `Shared::guard`). Waiters
//! sleep on a futex word per batch and return without taking the lock (see `Slot`).
//! `append_sync` of a big payload writes it from the caller's buffer instead of copying it.
//! Records nobody waits for (Gated commits) are synced by a background flusher thread, which
//! lets them accumulate for up to 1 ms so that they share an fsync.
//!
//! Failures latch: the first failed write or sync stores its cause; every waiter wakes with
//! [`LogError::Latched`], nothing after the durable LSN is ever acknowledged, and appends are
//! refused until the log is reopened (which recovers from what the disk really holds).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::thread::{JoinHandle, ThreadId};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::Lsn;
use crate::error::{LogError, Result};
use crate::format::{
    MAX_PAYLOAD, PayloadCrc, RECORD_HEADER_LEN, RecordHeader, SEGMENT_HEADER_LEN, SegmentHeader,
    segment_file_name,
};
use crate::fs::{FsLock, FsRef, OpenOptions};
use crate::reader::LogReader;
use crate::recovery::{RECYCLE_PREFIX, RecoveryReport, recover};
use crate::segment::Segment;

/// How a log is opened.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Roll to a new segment when the next record would take the segment past this size
    /// (a record larger than this gets a segment of its own). Default 64 MiB.
    pub segment_size: u64,
    /// Expected database id; a log of another database is refused. For a new log, the id to
    /// write (random when None).
    pub database_id: Option<u128>,
    /// Timeline written into new segments of a new log. Default 1.
    pub timeline: u64,
    /// LSN of the first record of a new log. Default 1.
    pub first_lsn: Lsn,
    /// Start a new log when the directory is missing or holds no segment (once recovery has
    /// removed any torn one). When false, opening such a directory fails with
    /// [`LogError::NoLog`] and starts no log: a missing directory is not created, and in an
    /// existing one only the lock file is (besides recovery's own work). For tools that only
    /// inspect a log. Default true.
    pub create_if_missing: bool,
    /// Open only to read, for tools that inspect a log, also on a read-only file system or
    /// without write permission: nothing in the directory is created, written, synced or
    /// removed. Recovery validates every record as usual (corruption is the same error) but
    /// cuts nothing: the records end where a read-write open's recovery would end them, and
    /// what that recovery would erase (never-synced records after a torn tail) or remove (a
    /// never-durable last segment) is left in place and counted in [`RecoveryReport`]'s
    /// `left_bytes` and `left_segments`. The last segment is not synced first, so a tail a
    /// killed process left in the page cache is read as it shows; its clean cached pages are
    /// dropped as a read-write open drops them, so that pages a failed sync left (shown as
    /// written, never on the disk) are not read (on Linux this hint also starts the write-back
    /// of dirty pages, which the kernel would write anyway). The lock is taken without
    /// writing (on an existing lock file; where there is none, none is taken), so a log open
    /// elsewhere is refused as usual and cannot be opened to write meanwhile. Appends and
    /// [`Log::truncate_prefix`] fail with [`LogError::ReadOnly`]; no flusher runs, no spare
    /// segment is made, and a directory without a segment is [`LogError::NoLog`] whatever
    /// `create_if_missing` says. Default false.
    pub read_only: bool,
    /// Zero-fill new segments to `segment_size` and sync them before use, so that appends
    /// overwrite allocated blocks and `fdatasync` has no metadata to write. With a background
    /// flusher this happens off the commit path: it keeps a spare segment ready, preparing the
    /// next one whenever a roll uses it (the spare waits in the recycling pool, so this needs
    /// `recycle` ≥ 1; without a spare, a new segment grows as records are written).
    /// Default true.
    pub preallocate: bool,
    /// Keep up to this many truncated segments to reuse instead of allocating. Default 2.
    ///
    /// Spare and recycled segments only hold space for speed, so they give way on a disk
    /// running out of it: one is prepared or kept only while the file system keeps at least
    /// 64 MiB, or one segment if larger, free beside it (see [`crate::fs::Fs::free_space`]). A
    /// spare being prepared is abandoned when free space falls below that; spares already kept
    /// are removed when the log opens, when its prefix is truncated, and, with the background
    /// flusher, within a quarter of a second of free space falling below it.
    pub recycle: usize,
    /// Appends block while this many bytes wait for a flush. Default 64 MiB.
    pub max_buffered_bytes: usize,
    /// Run a background thread that makes appended records durable without a waiter: records
    /// appended with [`Log::append`] are synced within about 1 ms (at once when 1 MiB is
    /// buffered), many per fsync; a caller of [`Log::wait_durable`] never waits for that delay,
    /// it syncs at once. The thread also keeps a preallocated spare segment. Turn off for
    /// deterministic single-threaded simulation. Default true.
    pub background_flush: bool,
    /// [`Log::append_sync`] writes a payload at least this big straight from the caller's
    /// buffer, after the records buffered before it, instead of copying it into the log's
    /// buffer (a copy costs about 45 µs per MiB on the machine measured, more than the extra
    /// write call). Default 256 KiB.
    pub direct_write_bytes: usize,
    /// Largest payload an append accepts; a bigger one is refused with
    /// [`LogError::TooLarge`] before anything is appended. Capped at (and by default)
    /// [`MAX_PAYLOAD`] (1 GiB), the most the format can hold; lower it to bound record size
    /// (tests use a few MiB).
    pub max_record_bytes: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_size: 64 << 20,
            database_id: None,
            timeline: 1,
            first_lsn: 1,
            create_if_missing: true,
            read_only: false,
            preallocate: true,
            recycle: 2,
            max_buffered_bytes: 64 << 20,
            background_flush: true,
            direct_write_bytes: 256 << 10,
            max_record_bytes: MAX_PAYLOAD,
        }
    }
}

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its LSN.
    pub lsn: Lsn,
    /// Commit timestamp, microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// Caller-defined kind.
    pub kind: u16,
    /// The payload, as appended.
    pub payload: Vec<u8>,
}

/// Counters for monitoring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStats {
    /// First LSN held.
    pub first_lsn: Lsn,
    /// Last LSN appended.
    pub last_lsn: Lsn,
    /// Last durable LSN.
    pub durable_lsn: Lsn,
    /// Segment files holding records.
    pub segments: usize,
    /// `fdatasync` calls made for records (group commits).
    pub syncs: u64,
    /// Bytes of records written.
    pub bytes_written: u64,
    /// Bytes the segment files holding records take on disk (their lengths, preallocation
    /// included).
    pub disk_bytes: u64,
    /// Files ready to become the next segments: recycled segments and preallocated spares.
    pub spare_segments: usize,
}

/// How long the background flusher lets unwaited records accumulate before syncing them.
const LAZY_FLUSH_DELAY: std::time::Duration = std::time::Duration::from_millis(1);
/// The background flusher syncs at once when this much is buffered.
const LAZY_FLUSH_BYTES: usize = 1 << 20;

/// Appends compute the CRC of a payload this big before taking the lock. Combining it with the
/// header's costs about 240 ns, more than hashing a 4 KiB payload under the lock (about
/// 250 ns in all, measured here); from 64 KiB on, the lock is held microseconds less.
const PRECOMPUTED_CRC_BYTES: usize = 64 << 10;

/// Waiters of one batch tracked by thread, for the next batch to be kept open until they have
/// appended again (see [`Shared::guard`]); more are not waited for.
const MAX_TRACKED_WAITERS: usize = 64;

thread_local! {
    /// The log (see [`Shared::id`]) whose last batch may count this thread among the threads
    /// it expects back (`State::returning`), set when the thread joins a batch's sleepers or
    /// leads one, cleared when it counts itself back; 0 for none. A wait that finds its record
    /// already durable takes the lock to count itself back only when this names its log, so
    /// that readers waiting for durable LSNs (a gated reader's output gate) do not contend
    /// for the lock. A stale value costs one needless lock, a missing one at most a quarter of
    /// a sync of waiting (see [`Shared::guard`]).
    static MAYBE_BACK: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Largest batch buffer kept for reuse (bigger ones, from huge records, are freed).
const MAX_SPARE_BYTES: usize = 8 << 20;

pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

struct State {
    next_lsn: Lsn,
    durable_lsn: Lsn,
    /// The latest commit timestamp given to a record (see [`State::stamp`]).
    last_timestamp_us: u64,
    /// Encoded records not yet taken by a leader.
    buf: Vec<u8>,
    /// Total length of each record in `buf`.
    buf_lens: Vec<u64>,
    /// LSN of the first record in `buf`.
    buf_first: Lsn,
    leading: bool,
    /// Batches taken by leaders so far.
    generation: u64,
    /// Last LSN of the batch most recently taken.
    taken_last: Lsn,
    /// Buffers a leader hands back after writing, reused by the next batch (no reallocation
    /// on the commit path).
    spare: (Vec<u8>, Vec<u64>),
    failed: Option<String>,
    /// When the latched failure was a full disk: the last LSN of the batch it refused, and
    /// what the leader was told (context, cause). Every waiter for a record of that batch gets
    /// the same [`LogError::NoSpace`]; records appended later get [`LogError::Latched`].
    no_space: Option<(Lsn, String, String)>,
    closed: bool,
    flush_requested: bool,
    /// The threads asleep on each `batch_done` slot (at most [`MAX_TRACKED_WAITERS`]).
    sleeping: [Vec<ThreadId>; 2],
    /// The threads the last finished batch released that have not appended again since: the
    /// buffer is kept open for them (see [`Shared::guard`]).
    returning: Vec<ThreadId>,
    /// The generation of the batch that released `returning`.
    returning_from: u64,
    /// They are waited for until this instant at the latest (one sync's time after their
    /// release)...
    gather_deadline: std::time::Instant,
    /// When the last of them came back (or their release); they are not waited for longer
    /// than a quarter of the last sync's time after it.
    last_return: std::time::Instant,
    /// A thread waits as the guard of the appenders `returning_from` released (see
    /// [`Shared::guard`]). A guard of an earlier batch's appenders guards nothing any more.
    guard_of: Option<u64>,
    /// How long the last batch's write and sync took, in microseconds.
    last_sync_us: u64,
    /// How many rolls have asked the flusher for a spare (see [`Shared::roll`]): after a
    /// failed spare, the flusher tries again at once if one asked meanwhile.
    spare_asked: u64,
    /// The background flusher thread, if any. It never appends, so a batch it waited in does
    /// not wait for it to come back.
    flusher: Option<ThreadId>,
}

impl State {
    /// The commit timestamp of the next record: `explicit` as given, or else the clock, but
    /// never earlier than the latest timestamp given so far (taken under the lock, so that
    /// concurrent appenders' timestamps grow with their LSNs, and a clock stepping back does
    /// not make them go backwards; restore by time relies on it).
    fn stamp(&mut self, explicit: Option<u64>) -> u64 {
        let ts = explicit.unwrap_or_else(|| now_us().max(self.last_timestamp_us));
        self.last_timestamp_us = self.last_timestamp_us.max(ts);
        ts
    }
}

struct Io {
    active: Arc<Segment>,
    offset: u64,
}

pub(crate) struct Shared {
    pub fs: FsRef,
    pub dir: PathBuf,
    opts: LogOptions,
    pub database_id: u128,
    pub timeline: u64,
    state: Mutex<State>,
    /// Waiters sleep on `batch_done[g % 2]`, g being the batch generation their record is in:
    /// a finished batch wakes its own waiters (and one waiter of the next batch, to lead it),
    /// not everyone.
    batch_done: [Slot; 2],
    /// Wakes the background flusher.
    flush_cond: Condvar,
    /// Wakes the guard (see [`Shared::guard`]) once every returning appender has appended.
    gather: Condvar,
    pub durable: AtomicU64,
    io: Mutex<Io>,
    /// Every segment holding records, oldest first; the last is the active one. Held only
    /// briefly: a roll (on the commit path) and every reader's step take it.
    pub segments: Mutex<Vec<Arc<Segment>>>,
    /// Held for a whole [`Log::truncate_prefix`]: one truncation at a time, so that segments
    /// are dropped strictly oldest first, each removal durable before the next.
    truncating: Mutex<()>,
    /// Held for every sync of the log directory after the open; true once one failed: a
    /// later one is not trusted (see [`Shared::sync_log_dir`]).
    dir_sync: Mutex<bool>,
    recycled: Mutex<Vec<PathBuf>>,
    /// Makes recycle file names unique.
    spare_seq: AtomicU64,
    syncs: AtomicU64,
    bytes_written: AtomicU64,
    /// None only for a read-only open that found no lock file.
    _lock: Option<Box<dyn FsLock>>,
}

/// A segmented, append-only, checksummed log with group commit. Share it between threads with
/// an `Arc`.
///
/// ```
/// use pagelog_log::{Log, LogOptions, fs::StdFs};
/// let dir = tempfile::tempdir()?;
/// let log = Log::open(StdFs::shared(), dir.path(), LogOptions { segment_size: 1 << 20, ..Default::default() })?;
/// let lsn = log.append_sync(0, b"first record")?;   // durable when it returns
/// let next = log.append(0, b"second record")?;     // returns at once...
/// log.wait_durable(next)?;                          // ...and is durable here
/// assert_eq!(log.durable_lsn(), next);
/// let records: Vec<_> = log.reader(lsn)?.collect::<Result<_, _>>()?;
/// assert_eq!(records[1].payload, b"second record");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Log {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
    report: RecoveryReport,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.shared.dir)
            .field("durable_lsn", &self.durable_lsn())
            .finish_non_exhaustive()
    }
}

/// Name of the lock file that makes one process the owner of a log directory.
pub const LOCK_FILE: &str = "LOCK";

impl Log {
    /// Open the log in `dir` (created if missing), recovering from a crash if there was one.
    pub fn open(fs: FsRef, dir: &Path, opts: LogOptions) -> Result<Log> {
        if opts.first_lsn == 0 || opts.first_lsn > crate::format::MAX_FIRST_LSN {
            return Err(LogError::LsnOutOfRange {
                lsn: opts.first_lsn,
                first: 1,
                last: 0,
            });
        }
        let creates = opts.create_if_missing && !opts.read_only;
        if !creates
            && !fs
                .exists(dir)
                .map_err(|e| LogError::io(format!("probing {}", dir.display()), e))?
        {
            return Err(LogError::NoLog {
                dir: dir.to_path_buf(),
            });
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = if opts.read_only {
            fs.try_lock_read_only(&lock_path)
        } else {
            fs.create_dir_all(dir)
                .and_then(|_| fs.sync_dir(&crate::fs::parent_dir(dir)))
                .map_err(|e| LogError::io(format!("creating {}", dir.display()), e))?;
            fs.try_lock(&lock_path).map(Some)
        }
        .map_err(|e| LogError::io(format!("locking {}", dir.display()), e))?;
        let rec = recover(fs.as_ref(), dir, &opts)?;
        let report = rec.report.clone();
        let mut segments = rec.segments;
        let (database_id, timeline) = match segments.first() {
            Some(s) => (s.header.database_id, s.header.timeline),
            None => (opts.database_id.unwrap_or_else(rand::random), opts.timeline),
        };
        let next_lsn = report.last_lsn + 1;
        let mut spare_seq = 0;
        for p in &rec.recycled {
            if let Some(n) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(RECYCLE_PREFIX))
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                spare_seq = spare_seq.max(n + 1);
            }
        }
        if segments.is_empty() && !creates {
            return Err(LogError::NoLog {
                dir: dir.to_path_buf(),
            });
        }
        let mut recycled = rec.recycled;
        if opts.read_only {
            // Not this open's to reuse, nor to remove.
            recycled.clear();
        } else if !recycled.is_empty() && !room_for_spare(&fs, dir, &opts, 0) {
            // Spares hold space for speed only: on a disk running out of it they go (see
            // `LogOptions::recycle`), so that the log, the database and its WAL can grow.
            remove_spares(&fs, dir, &mut recycled, "free space is low")?;
        }
        let (active, offset) = match segments.last() {
            Some(s) => (s.clone(), rec.end),
            None => {
                // Spare files without a segment beside them belong to no log (its segments
                // were removed by hand): their stale records could carry any LSN, and in the
                // first segment those above the new records would look like evidence that a
                // torn tail had been synced. Start from fresh files.
                if !recycled.is_empty() {
                    remove_spares(&fs, dir, &mut recycled, "left without a log")?;
                }
                // Opening is not on the commit path: preallocate the first segment here.
                let seg = create_segment(
                    &fs,
                    dir,
                    &opts,
                    opts.preallocate,
                    database_id,
                    timeline,
                    next_lsn,
                    &mut recycled,
                    &|| fs.sync_dir(dir),
                )?;
                segments.push(seg.clone());
                (seg, SEGMENT_HEADER_LEN as u64)
            }
        };
        tracing::info!(
            dir = %dir.display(),
            first_lsn = report.first_lsn,
            last_lsn = report.last_lsn,
            segments = segments.len(),
            erased_bytes = report.erased_bytes,
            "log opened"
        );
        let shared = Arc::new(Shared {
            fs,
            dir: dir.to_path_buf(),
            database_id,
            timeline,
            state: Mutex::new(State {
                next_lsn,
                durable_lsn: next_lsn - 1,
                last_timestamp_us: rec.last_timestamp_us,
                buf: Vec::new(),
                buf_lens: Vec::new(),
                buf_first: next_lsn,
                leading: false,
                generation: 0,
                taken_last: next_lsn - 1,
                spare: (Vec::new(), Vec::new()),
                failed: None,
                no_space: None,
                closed: false,
                flush_requested: false,
                sleeping: [Vec::new(), Vec::new()],
                returning: Vec::new(),
                gather_deadline: std::time::Instant::now(),
                last_return: std::time::Instant::now(),
                returning_from: 0,
                guard_of: None,
                last_sync_us: 0,
                spare_asked: 0,
                flusher: None,
            }),
            batch_done: [Slot::default(), Slot::default()],
            flush_cond: Condvar::new(),
            gather: Condvar::new(),
            durable: AtomicU64::new(next_lsn - 1),
            io: Mutex::new(Io { active, offset }),
            spare_seq: AtomicU64::new(spare_seq),
            segments: Mutex::new(segments),
            truncating: Mutex::new(()),
            dir_sync: Mutex::new(false),
            recycled: Mutex::new(recycled),
            syncs: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            _lock: lock,
            opts,
        });
        let flusher = if shared.opts.background_flush && !shared.opts.read_only {
            let s = shared.clone();
            let handle = std::thread::Builder::new()
                .name("pagelog-flush".into())
                .spawn(move || s.flusher_loop())
                .map_err(|e| LogError::io("starting the flusher thread", e))?;
            shared.state.lock().flusher = Some(handle.thread().id());
            Some(handle)
        } else {
            None
        };
        Ok(Log {
            shared,
            flusher,
            report,
        })
    }

    /// What recovery found when this log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Append a record and return its LSN at once; it becomes durable soon (the background
    /// flusher, or any waiter, syncs it). Use [`Log::wait_durable`] before acknowledging it.
    pub fn append(&self, kind: u16, payload: &[u8]) -> Result<Lsn> {
        self.append_at(kind, payload, None, true)
    }

    /// Append a record with an explicit commit timestamp (µs since the Unix epoch), kept as
    /// given. (Records appended without one are stamped with the clock, under the log's lock,
    /// and never earlier than any record before them, so that timestamps grow with LSNs even
    /// when the clock steps back; an explicit timestamp is the caller's to order.) An explicit
    /// timestamp ahead of the clock therefore also stamps every later clock-stamped record,
    /// across reopens too, until the clock passes it: one far in the future (`u64::MAX`, say)
    /// stamps them all with itself.
    pub fn append_with_timestamp(
        &self,
        kind: u16,
        payload: &[u8],
        timestamp_us: u64,
    ) -> Result<Lsn> {
        self.append_at(kind, payload, Some(timestamp_us), true)
    }

    /// Append a record and return its LSN at once without waking the background flusher: for a
    /// caller that will call [`Log::wait_durable`] itself right after (and so lead the fsync
    /// on its own thread, saving a thread hand-off).
    pub fn append_then_wait(&self, kind: u16, payload: &[u8]) -> Result<Lsn> {
        self.append_at(kind, payload, None, false)
    }

    /// Append a record and return once it is durable.
    ///
    /// A big payload ([`LogOptions::direct_write_bytes`], 256 KiB by default) is not copied
    /// into the log's buffer: the caller waits for the sync in flight, if any, then leads the
    /// next one itself, writing the records buffered before it and then its payload straight
    /// from `payload`.
    pub fn append_sync(&self, kind: u16, payload: &[u8]) -> Result<Lsn> {
        if payload.len() >= self.shared.opts.direct_write_bytes {
            return self.append_sync_direct(kind, payload);
        }
        let lsn = self.append_at(kind, payload, None, false)?;
        self.shared.sync_up_to(lsn, Waiter::AfterAppend)?;
        Ok(lsn)
    }

    fn append_sync_direct(&self, kind: u16, payload: &[u8]) -> Result<Lsn> {
        self.check_len(payload)?;
        let crc = PayloadCrc::of(payload);
        let s = &self.shared;
        let mut st = s.state.lock();
        loop {
            s.check_usable(&st)?;
            if !st.leading {
                break;
            }
            // Wait as a waiter of the next batch would: its leader-to-be is woken when the
            // batch in flight is done.
            let i = ((st.generation + 1) % 2) as usize;
            let me = std::thread::current().id();
            s.sleep_on(st, i, me);
            st = s.state.lock();
            forget_sleeper(&mut st.sleeping[i], me);
        }
        check_lsn_space(&st)?;
        // This is an append: if this thread is one the last batch released, it is back (and
        // leads at once).
        s.returned(&mut st, true);
        let direct = Direct { kind, crc, payload };
        let led = s.lead(&mut st, Some(&direct), true);
        drop(st);
        let (lsn, wakes) = led?;
        wakes.run(s);
        Ok(lsn)
    }

    /// Append a record stamped `ts`, or, for None, by [`State::stamp`].
    fn append_at(
        &self,
        kind: u16,
        payload: &[u8],
        ts: Option<u64>,
        wake_flusher: bool,
    ) -> Result<Lsn> {
        self.check_len(payload)?;
        // A big payload's CRC is computed before taking the lock (and combined with the
        // header's under it); for a small one, combining would cost more than it saves.
        let crc = (payload.len() >= PRECOMPUTED_CRC_BYTES).then(|| PayloadCrc::of(payload));
        let s = &self.shared;
        let mut st = s.state.lock();
        loop {
            s.check_usable(&st)?;
            if st.buf.len() < s.opts.max_buffered_bytes || st.buf.is_empty() {
                break;
            }
            // Back-pressure: flush the full buffer before adding to it.
            let last = st.next_lsn - 1;
            drop(st);
            s.sync_up_to(last, Waiter::Appender)?;
            st = s.state.lock();
        }
        check_lsn_space(&st)?;
        let lsn = st.next_lsn;
        st.next_lsn += 1;
        let ts = st.stamp(ts);
        let header = match &crc {
            Some(crc) => RecordHeader::encode_with(lsn, ts, st.durable_lsn, kind, crc),
            None => RecordHeader::encode(lsn, ts, st.durable_lsn, kind, payload),
        };
        st.buf.extend_from_slice(&header);
        st.buf.extend_from_slice(payload);
        st.buf_lens.push((RECORD_HEADER_LEN + payload.len()) as u64);
        // A caller that did not ask to wake the flusher waits for its record next.
        s.returned(&mut st, !wake_flusher);
        if wake_flusher && (!st.flush_requested || st.buf.len() >= LAZY_FLUSH_BYTES) {
            st.flush_requested = true;
            s.flush_cond.notify_one();
        }
        Ok(lsn)
    }

    /// Block until every record up to `lsn` is durable. Fails if the log latched an error
    /// before that, or if `lsn` was never appended.
    pub fn wait_durable(&self, lsn: Lsn) -> Result<()> {
        self.shared.sync_up_to(lsn, Waiter::Appender)
    }

    /// Make everything appended so far durable.
    pub fn flush(&self) -> Result<()> {
        let last = self.last_lsn();
        self.shared.sync_up_to(last, Waiter::Appender)
    }

    /// Largest payload an append accepts ([`LogOptions::max_record_bytes`], at most
    /// [`MAX_PAYLOAD`]).
    pub fn max_record_bytes(&self) -> usize {
        self.shared.opts.max_record_bytes.min(MAX_PAYLOAD)
    }

    fn check_len(&self, payload: &[u8]) -> Result<()> {
        let max = self.max_record_bytes();
        if payload.len() > max {
            return Err(LogError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        Ok(())
    }

    /// Every record up to this LSN is durable (a cheap atomic read).
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// LSN of the last record appended (durable or not).
    pub fn last_lsn(&self) -> Lsn {
        self.shared.state.lock().next_lsn - 1
    }

    /// First LSN the log still holds.
    pub fn first_lsn(&self) -> Lsn {
        self.shared.first_lsn()
    }

    /// The database id written in every segment.
    pub fn database_id(&self) -> u128 {
        self.shared.database_id
    }

    /// The timeline written in every segment.
    pub fn timeline(&self) -> u64 {
        self.shared.timeline
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The latched failure, if the log failed.
    pub fn failure(&self) -> Option<String> {
        self.shared.state.lock().failed.clone()
    }

    /// Counters.
    pub fn stats(&self) -> LogStats {
        let (last, durable) = {
            let st = self.shared.state.lock();
            (st.next_lsn - 1, st.durable_lsn)
        };
        let segs = self.shared.segments.lock();
        LogStats {
            first_lsn: segs.first().map(|s| s.header.first_lsn).unwrap_or(1),
            last_lsn: last,
            durable_lsn: durable,
            segments: segs.len(),
            syncs: self.shared.syncs.load(Ordering::Relaxed),
            bytes_written: self.shared.bytes_written.load(Ordering::Relaxed),
            disk_bytes: segs.iter().map(|s| s.file.len().unwrap_or(0)).sum(),
            spare_segments: self.shared.recycled.lock().len(),
        }
    }

    /// Read durable records from `from` on. The reader stops at the durable LSN as it is when
    /// each record is requested (so it follows the log as it grows).
    ///
    /// A reader shares the log's state, the directory's lock included: it can read on after
    /// [`Log::close`], and the directory cannot be opened again until it is dropped too.
    pub fn reader(&self, from: Lsn) -> Result<LogReader> {
        LogReader::new(self.shared.clone(), from)
    }

    /// Drop every segment whose records are all `<= upto` and whose next segment holds a
    /// durable record (so never the last segment); a recyclable segment is kept for reuse.
    /// Returns how many segments were dropped. Records not yet durable are never dropped:
    /// `upto` is taken as at most [`Log::durable_lsn`], and a batch in flight may already have
    /// rolled to new segments that hold none yet (also after a reopen, a last segment with a
    /// header and no record keeps the one before it until a record is written). So the first
    /// LSN never passes the durable LSN.
    ///
    /// Safe to call beside appends and readers, which never wait for its removals; an append
    /// that rolls to a new segment meanwhile may wait for one of its directory syncs, the one
    /// in flight (syncs of the log directory run one at a time, see `Shared::sync_log_dir`).
    /// Two calls at once run one after the other. A segment that a reader
    /// still holds is removed, never reused; a reader whose next record was dropped is told so
    /// ([`LogError::LsnOutOfRange`]).
    ///
    /// Each segment leaves [`Log::first_lsn`]'s view (and readers') as its removal starts. If
    /// renaming or removing its file fails, the error is returned and the segment is kept:
    /// `first_lsn` is then lower again than it was during the call.
    pub fn truncate_prefix(&self, upto: Lsn) -> Result<usize> {
        self.shared.truncate_prefix(upto)
    }

    /// Flush what was appended, stop the flusher, and close. Fails if anything appended could
    /// not be made durable: with the flush's error, or, once the log has latched a failure
    /// with records appended after its durable LSN, with [`LogError::Latched`].
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        let latched_with_pending = {
            let st = self.shared.state.lock();
            latched(&st).map(|e| (e, st.next_lsn - 1 > st.durable_lsn))
        };
        let res = match latched_with_pending {
            Some((e, true)) => Err(e),
            Some((_, false)) => Ok(()),
            None => self.flush(),
        };
        {
            let mut st = self.shared.state.lock();
            st.closed = true;
            self.shared.flush_cond.notify_all();
            self.shared.wake_all();
        }
        if let Some(h) = self.flusher.take() {
            let _ = h.join();
        }
        res
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let closed = self.shared.state.lock().closed;
        if !closed && let Err(e) = self.shutdown() {
            tracing::warn!(error = %e, "log dropped with records that could not be made durable");
        }
    }
}

impl Shared {
    /// This log's identity for [`MAYBE_BACK`]: its address, never 0, unique while it lives.
    fn id(&self) -> usize {
        self as *const Shared as usize
    }

    /// The first LSN the log holds (takes the segments lock).
    fn first_lsn(&self) -> Lsn {
        self.segments
            .lock()
            .first()
            .map(|s| s.header.first_lsn)
            .unwrap_or(1)
    }

    fn wake_all(&self) {
        for slot in &self.batch_done {
            slot.bump();
            atomic_wait::wake_all(&slot.epoch);
        }
        // A guard stops waiting too.
        self.gather.notify_all();
    }

    fn check_usable(&self, st: &State) -> Result<()> {
        if self.opts.read_only {
            return Err(LogError::ReadOnly {
                dir: self.dir.clone(),
            });
        }
        if let Some(e) = latched(st) {
            return Err(e);
        }
        if st.closed {
            return Err(LogError::Closed);
        }
        Ok(())
    }

    /// Leader/follower loop: return once `lsn` is durable. An appender that leads is waited
    /// for by the next batch as the waiters it releases are (see [`Shared::guard`]).
    fn sync_up_to(&self, lsn: Lsn, who: Waiter) -> Result<()> {
        if self.durable.load(Ordering::Acquire) >= lsn {
            if who == Waiter::Appender && MAYBE_BACK.get() == self.id() {
                // A thread the last batch released that waits again, for a record already
                // durable, without appending, is back with nothing for the next batch (a gated
                // reader waiting for the commit it read, say): the batch must not wait for it.
                let mut st = self.state.lock();
                self.returned(&mut st, false);
            }
            return Ok(());
        }
        let mut st = self.state.lock();
        if who == Waiter::Appender {
            // A thread the last batch released that now waits without appending is back: it
            // has nothing more for the next batch (nor must it guard a wait for itself). It
            // waits, and may lead, unless its record became durable meanwhile.
            let will_wait = st.durable_lsn < lsn && lsn < st.next_lsn && latched(&st).is_none();
            self.returned(&mut st, will_wait);
        }
        loop {
            if st.durable_lsn >= lsn {
                return Ok(());
            }
            if let Some(e) = latched_for(&st, lsn) {
                return Err(e);
            }
            if lsn >= st.next_lsn {
                let last = st.next_lsn - 1;
                // The segments lock is never taken inside the state lock.
                drop(st);
                return Err(LogError::LsnOutOfRange {
                    lsn,
                    first: self.first_lsn(),
                    last,
                });
            }
            if !st.leading && !st.returning.is_empty() && st.guard_of != Some(st.returning_from) {
                // Appenders the last batch released are still coming back: keep the buffer
                // open for them (see `Shared::guard`).
                self.guard(&mut st);
                continue;
            }
            if st.leading || !st.returning.is_empty() {
                // Wait for the batch in flight, or, while the last batch's waiters come back
                // (a guard waits with a deadline), for the one the last of them will lead.
                let generation = if lsn <= st.taken_last {
                    st.generation
                } else {
                    st.generation + 1
                };
                let i = (generation % 2) as usize;
                let me = std::thread::current().id();
                self.sleep_on(st, i, me);
                // Woken for its batch, the common case: return without the lock (and stay
                // counted among the waiters this batch released).
                if self.durable.load(Ordering::Acquire) >= lsn {
                    return Ok(());
                }
                st = self.state.lock();
                forget_sleeper(&mut st.sleeping[i], me);
                continue;
            }
            // Become the leader for everything buffered.
            let led = self.lead(&mut st, None, who != Waiter::Flusher);
            drop(st);
            match led {
                Ok((_, wakes)) => wakes.run(self),
                // A failed batch may have made the part before a roll durable: a leader whose
                // record is in that part has succeeded.
                Err(e) if self.durable.load(Ordering::Acquire) < lsn => return Err(e),
                Err(_) => return Ok(()),
            }
            if self.durable.load(Ordering::Acquire) >= lsn {
                return Ok(());
            }
            st = self.state.lock();
        }
    }

    /// Release the lock and sleep on `batch_done[i]` as thread `me` until woken (or
    /// spuriously). A thread woken for another reason than its batch being published must
    /// [`forget_sleeper`] itself once it holds the lock again.
    fn sleep_on(&self, mut st: MutexGuard<'_, State>, i: usize, me: ThreadId) {
        let sleeping = &mut st.sleeping[i];
        if sleeping.len() < MAX_TRACKED_WAITERS && !sleeping.contains(&me) {
            sleeping.push(me);
            // Its batch will count it among the threads expected back.
            MAYBE_BACK.set(self.id());
        }
        let slot = &self.batch_done[i];
        let epoch = slot.epoch();
        drop(st);
        slot.sleep(epoch);
    }

    /// Lead one group commit (the caller checked that nobody leads): append `direct`'s header
    /// last, take everything buffered, write it followed by `direct`'s payload, sync, publish
    /// the durable LSN and wake the batch's waiters and one waiter of the next batch. The lock
    /// is released while writing and syncing. Returns the batch's last LSN
    /// (`direct`'s, if given) and the wake-ups to make once the caller has released the lock.
    /// `appender`: the leader may append again, and is expected back like its batch's waiters.
    fn lead(
        &self,
        st: &mut MutexGuard<'_, State>,
        direct: Option<&Direct<'_>>,
        appender: bool,
    ) -> Result<(Lsn, Wakes)> {
        st.leading = true;
        let direct_payload = match direct {
            Some(d) => {
                // Appended only now, under the lock until the buffer is taken: its header
                // must be the buffer's last bytes, its payload follows. Its
                // commit time is taken now too, with its LSN, so that it is not older than the
                // records appended while it waited to lead (timestamps grow with LSNs).
                let lsn = st.next_lsn;
                st.next_lsn += 1;
                let ts = st.stamp(None);
                let header = RecordHeader::encode_with(lsn, ts, st.durable_lsn, d.kind, &d.crc);
                st.buf.extend_from_slice(&header);
                st.buf_lens
                    .push((RECORD_HEADER_LEN + d.payload.len()) as u64);
                d.payload
            }
            None => &[],
        };
        let (spare_buf, spare_lens) = std::mem::take(&mut st.spare);
        let mut batch = std::mem::replace(&mut st.buf, spare_buf);
        let mut lens = std::mem::replace(&mut st.buf_lens, spare_lens);
        let first = st.buf_first;
        let last = st.next_lsn - 1;
        st.buf_first = st.next_lsn;
        st.generation += 1;
        st.taken_last = last;
        let generation = st.generation;
        let started = std::time::Instant::now();
        let res = MutexGuard::unlocked(st, || {
            self.write_batch(&batch, direct_payload, &lens, first)
        });
        st.last_sync_us = started.elapsed().as_micros() as u64;
        st.leading = false;
        // Keep the written buffer for reuse unless it grew huge (a giant record).
        if batch.capacity() <= MAX_SPARE_BYTES {
            batch.clear();
            lens.clear();
            st.spare = (batch, lens);
        }
        match res {
            Ok(()) => {
                st.durable_lsn = last;
                self.durable.store(last, Ordering::Release);
            }
            Err((e, durable)) => {
                // The records before a roll whose old segment was synced are durable all the
                // same: their waiters succeed, the rest fail.
                if durable > st.durable_lsn {
                    st.durable_lsn = durable;
                    self.durable.store(durable, Ordering::Release);
                }
                tracing::error!(error = %e, durable_lsn = st.durable_lsn, "log write failed; latching");
                st.failed = Some(e.to_string());
                if let LogError::NoSpace { context, source } = &e {
                    st.no_space = Some((last, context.clone(), source.to_string()));
                }
                self.wake_all();
                return Err(e);
            }
        }
        // This batch's waiters return (and, if they append again at once, the next leader
        // waits a moment for them); one waiter of the next batch comes to lead it. They are
        // woken once the caller has released the lock.
        let i = (generation % 2) as usize;
        let next = ((generation + 1) % 2) as usize;
        // The threads asleep on this batch are the ones expected back (but the flusher, which
        // never appends), and so is the leader if it is an appender that wakes any appender:
        // it is often preempted by the threads it wakes (on the 2-vCPU machine measured, the
        // wake-up call returned to it after 84-118 µs), and without it the last of them to
        // come back led a batch one record short (docs/BENCHMARKS.md). A leader that wakes
        // no appender is not waited for: the next appender, if any, leads at once.
        let state = &mut **st;
        state.returning.clear();
        std::mem::swap(&mut state.returning, &mut state.sleeping[i]);
        state.returning_from = generation;
        let released = !state.returning.is_empty();
        if let Some(f) = state.flusher {
            forget_sleeper(&mut state.returning, f);
        }
        if appender && !state.returning.is_empty() && state.returning.len() < MAX_TRACKED_WAITERS {
            let me = std::thread::current().id();
            if !state.returning.contains(&me) {
                state.returning.push(me);
                MAYBE_BACK.set(self.id());
            }
        }
        // They are waited for while they keep coming back, up to one sync's time in all, and
        // no longer than a quarter of it after the last one came back (see `Shared::guard`).
        let now = std::time::Instant::now();
        st.gather_deadline = now + std::time::Duration::from_micros(st.last_sync_us);
        st.last_return = now;
        self.batch_done[i].bump();
        self.batch_done[next].bump();
        // A list holds every sleeper of its slot, or is full: an empty one means nobody to wake.
        let wakes = Wakes {
            batch: released.then_some(i),
            leader: (!st.sleeping[next].is_empty()).then_some(next),
        };
        Ok((last, wakes))
    }

    /// Wait, as the guard, for the waiters the last batch released, and its leader, to append
    /// again before the buffer is taken: while they keep coming back, each within a quarter of
    /// that batch's write and sync time of the previous one (or of their release), up to that
    /// whole time.
    ///
    /// Appenders that wait for each record before appending the next (16 threads in
    /// `append_sync` loops, say) otherwise split into two groups that alternate: the one whose
    /// batch is being synced, and the one appending meanwhile, so a batch never holds more than
    /// about half of them. Letting the released group rejoin gathers them all into one batch,
    /// and an fsync costs far less than twice as much for twice the records.
    ///
    /// The last of them to append leads the batch itself, at once (it is running; waking a
    /// sleeping leader would put a thread wake-up on every batch's path). The guard, the first
    /// to need a sync meanwhile, only makes sure that someone leads if they do not all come
    /// back: once they stop coming, it stops waiting for them and leads. So a waiter that does
    /// not come back costs the next batch at most a quarter of a sync. A lone appender, whom no
    /// batch keeps waiting, never waits here.
    ///
    /// Measured with 16 threads in `append_sync` loops (docs/BENCHMARKS.md): with a fixed
    /// quarter of a sync in all, the slowest of them were often cut off (on that 2-vCPU machine
    /// waking 15 threads takes about as long), and batches held 15 records more often than 16.
    /// The leader is waited for too: the threads it wakes preempt it, so it was often the last
    /// back, and left out when it was not counted (a third of the batches held 15 records).
    ///
    /// A batch published while the guard waits (the last one back led it) releases new
    /// appenders, whom this guard does not guard: it leaves them to a new guard. (A guard that
    /// kept guarding them, then left without leading because its own record was durable, left
    /// them all asleep: a hang the `..._never_hang` test reproduces.)
    fn guard(&self, st: &mut MutexGuard<'_, State>) {
        let of = st.returning_from;
        st.guard_of = Some(of);
        while st.returning_from == of
            && !st.returning.is_empty()
            && !st.leading
            && st.failed.is_none()
            && !st.closed
        {
            let until = |st: &State| {
                let gap = std::time::Duration::from_micros(st.last_sync_us / 4);
                st.gather_deadline.min(st.last_return + gap)
            };
            let deadline = until(st);
            // Woken at the deadline, it waits on if one came back meanwhile.
            if self.gather.wait_until(st, deadline).timed_out()
                && st.returning_from == of
                && std::time::Instant::now() >= until(st)
            {
                st.returning.clear();
            }
        }
        if st.returning_from == of && (st.failed.is_some() || st.closed) {
            // Nobody waits for the stragglers now (callers fail, or flush the rest).
            st.returning.clear();
        }
        if st.guard_of == Some(of) {
            st.guard_of = None;
        }
    }

    /// An append by this thread: if the last batch released it, it is back (see
    /// [`Shared::guard`]). If it is the last one back and `will_wait` (it is about to wait for
    /// its record, so it leads), the guard is left asleep until its deadline, off the path of
    /// the next batch; otherwise the guard is woken to lead.
    fn returned(&self, st: &mut State, will_wait: bool) {
        if MAYBE_BACK.get() == self.id() {
            MAYBE_BACK.set(0);
        }
        if st.returning.is_empty() {
            return;
        }
        let me = std::thread::current().id();
        if let Some(pos) = st.returning.iter().position(|t| *t == me) {
            st.returning.swap_remove(pos);
            st.last_return = std::time::Instant::now();
            if st.returning.is_empty() && st.guard_of == Some(st.returning_from) && !will_wait {
                // A guard of an earlier batch may still be waiting beside this one.
                self.gather.notify_all();
            }
        }
    }

    /// Write a batch of encoded records, `batch` followed by `direct` (one write per segment
    /// touched, two where `direct` is not empty), and sync.
    ///
    /// On failure, returns with the error the last LSN of the batch that is durable all the
    /// same (`first - 1` if none): a batch that reached a roll synced the old segment before
    /// starting the next, so the records before the roll are durable even if what follows
    /// fails (a full disk refusing the new segment, say). A failed write is cut off again
    /// (see [`Shared::cut_back`]).
    fn write_batch(
        &self,
        batch: &[u8],
        direct: &[u8],
        lens: &[u64],
        first: Lsn,
    ) -> std::result::Result<(), (LogError, Lsn)> {
        if lens.is_empty() {
            return Ok(());
        }
        let mut io = self.io.lock();
        let mut durable = first - 1;
        let mut pos = 0usize;
        let mut run_start = 0usize;
        let mut run_offset = io.offset;
        for (lsn, &len) in (first..).zip(lens) {
            let fits = io.offset + len <= self.opts.segment_size;
            if !fits && io.offset > SEGMENT_HEADER_LEN as u64 {
                self.write_and_sync_run(&io.active, batch, direct, run_start..pos, run_offset)
                    .map_err(|e| (e, durable))?;
                durable = lsn - 1;
                self.roll(&mut io, lsn).map_err(|e| (e, durable))?;
                run_start = pos;
                run_offset = io.offset;
            }
            io.offset += len;
            pos += len as usize;
        }
        self.write_and_sync_run(&io.active, batch, direct, run_start..pos, run_offset)
            .map_err(|e| (e, durable))?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.bytes_written
            .fetch_add((batch.len() + direct.len()) as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Write `range` of the byte stream `batch` followed by `direct` at `offset` of the active
    /// segment `seg` and sync it; if either fails, cut the segment back to `offset` (see
    /// [`Shared::cut_back`]).
    fn write_and_sync_run(
        &self,
        seg: &Segment,
        batch: &[u8],
        direct: &[u8],
        range: std::ops::Range<usize>,
        offset: u64,
    ) -> Result<()> {
        self.write_run(seg, batch, direct, range, offset)
            .and_then(|()| {
                seg.file
                    .sync_data()
                    .map_err(|e| LogError::io(format!("syncing {}", seg.path.display()), e))
            })
            .map_err(|e| self.cut_back(seg, offset, e))
    }

    /// After a write from `offset` of the active segment `seg`, or its sync, failed: cut the
    /// segment back to `offset` and sync it, and return `e`. A full disk writes what fits
    /// before it refuses the rest, and a failed sync leaves the written pages in the cache (an
    /// `ENOSPC` from `fdatasync` on file systems that allocate at write-back, too), so whole
    /// records of the refused batch could otherwise be found, and made durable, by the next
    /// recovery: records whose appends failed. Everything before `offset` was durable before
    /// this batch (or synced at its roll), so the cut takes nothing acknowledged. If the cut
    /// fails too they may be found (the log latches either way).
    fn cut_back(&self, seg: &Segment, offset: u64, e: LogError) -> LogError {
        if let Err(cut) = seg.file.set_len(offset).and_then(|()| seg.file.sync_data()) {
            tracing::warn!(
                segment = %seg.path.display(),
                offset,
                error = %cut,
                "could not cut a failed write off the log; its records may be found after a reopen"
            );
        }
        e
    }

    /// Write `range` of the byte stream `batch` followed by `direct` at `offset` of `seg`.
    fn write_run(
        &self,
        seg: &Segment,
        batch: &[u8],
        direct: &[u8],
        range: std::ops::Range<usize>,
        offset: u64,
    ) -> Result<()> {
        let split = batch.len();
        // The part of `range` in `batch`, then the part in `direct`; either may be empty.
        let in_batch = range.start.min(split)..range.end.min(split);
        let in_direct = range.start.max(split)..range.end.max(split);
        let write = |bytes: &[u8], at: usize| {
            if bytes.is_empty() {
                return Ok(());
            }
            seg.file
                .write_all_at(bytes, offset + (at - range.start) as u64)
                .map_err(|e| LogError::io(format!("writing {}", seg.path.display()), e))
        };
        write(&batch[in_batch.clone()], in_batch.start)?;
        write(
            &direct[in_direct.start - split..in_direct.end - split],
            in_direct.start,
        )
    }

    /// Start a new segment whose first record is `first_lsn` after the active one, which the
    /// caller has synced (sealed).
    fn roll(&self, io: &mut Io, first_lsn: Lsn) -> Result<()> {
        let mut pool: Vec<PathBuf> = self.recycled.lock().pop().into_iter().collect();
        // With a background flusher a spare is normally ready; never zero-fill on the
        // commit path then (a missing spare means the new segment grows instead).
        let seg = create_segment(
            &self.fs,
            &self.dir,
            &self.opts,
            self.opts.preallocate && !self.opts.background_flush,
            self.database_id,
            self.timeline,
            first_lsn,
            &mut pool,
            &|| self.sync_log_dir(),
        );
        self.recycled.lock().extend(pool);
        let seg = seg?;
        if self.wants_spare() {
            // The spare is used: the flusher prepares the next one now, not only when an
            // append or a flush happens to wake it (appenders that wait for their records never
            // do), so that the next roll too finds a preallocated segment. Notified under the
            // state lock, which the flusher holds from looking at the pool until it sleeps, so
            // the wake-up cannot fall in between.
            let mut st = self.state.lock();
            st.spare_asked += 1;
            self.flush_cond.notify_one();
        }
        tracing::debug!(segment = %seg.path.display(), first_lsn, "rolled to a new segment");
        self.segments.lock().push(seg.clone());
        io.active = seg;
        io.offset = SEGMENT_HEADER_LEN as u64;
        Ok(())
    }

    /// Sync the log directory; after one failed, every later one fails too. A failed directory
    /// sync may drop every entry that waited for it (Linux does, without a journal), also one
    /// another thread had just made: a roll's new segment, named while a truncation's sync
    /// failed, would otherwise be trusted after its own sync, which finds nothing left to
    /// write, and records acknowledged in it lost in a power cut. Truncations and rolls both
    /// sync through here (opening, single-threaded, syncs directly).
    fn sync_log_dir(&self) -> std::io::Result<()> {
        let mut failed = self.dir_sync.lock();
        if *failed {
            return Err(std::io::Error::other(
                "an earlier sync of the log directory failed",
            ));
        }
        let r = self.fs.sync_dir(&self.dir);
        if r.is_err() {
            *failed = true;
        }
        r
    }

    fn truncate_prefix(&self, upto: Lsn) -> Result<usize> {
        if self.opts.read_only {
            return Err(LogError::ReadOnly {
                dir: self.dir.clone(),
            });
        }
        let _one_at_a_time = self.truncating.lock();
        // A batch being written may have rolled to segments whose records are not durable yet:
        // they stay (readers and `first_lsn` must never pass the durable LSN).
        let durable = self.durable.load(Ordering::Acquire);
        let upto = upto.min(durable);
        // On a disk running out of space the spares kept go (a shipper or a trimmer calls this
        // often), and dropped segments are removed, not kept for reuse.
        let keep_spares = self.room_for_spare(0);
        if !keep_spares {
            self.release_spares();
        }
        // Only truncations take segments off the front of the list, and they run one at a
        // time; a roll only adds at the back. So the first `n` segments counted here are the
        // ones removed below, and the list's lock is needed only for moments: the renames,
        // removals and directory syncs below (a removal can take tens of milliseconds where
        // the file system discards the freed blocks) must not stall a roll on the commit path
        // or a reader (a roll waits at most for the directory sync in flight).
        let n = {
            let segs = self.segments.lock();
            let mut n = 0;
            // The next segment must also hold a durable record: one a batch in flight rolled to
            // may hold none yet, and dropping the segment before it would leave the log's
            // first LSN past its durable LSN.
            while n + 1 < segs.len()
                && segs[n + 1].header.first_lsn <= upto.saturating_add(1)
                && segs[n + 1].header.first_lsn <= durable
            {
                n += 1;
            }
            n
        };
        if n == 0 {
            return Ok(0);
        }
        // Oldest first, one segment at a time, each removal made durable (directory sync)
        // before the next: a crash then leaves a contiguous run of segments, never an old
        // segment whose removal was lost beside newer ones that are gone (recovery would see
        // records missing between them). A file renamed for recycling joins the pool only once
        // its rename is durable: it is overwritten later, and while its old name may still be
        // on disk a crash would show the new contents under the old segment's name.
        for _ in 0..n {
            // A latched log (a failed sync, here or elsewhere) removes nothing more: after a
            // failed directory sync the earlier removal may never reach the disk, and removing
            // newer segments would leave that old segment beside a hole.
            self.check_usable(&self.state.lock())?;
            // Off the list first: from then on no reader can find the segment, so if nobody
            // holds it now (the list's reference was the only other one), nobody will, and its
            // file may be overwritten as a recycled segment without changing a reader's map.
            let seg = self.segments.lock().remove(0);
            let unshared = Arc::strong_count(&seg) == 1;
            // A segment that grew past the segment size (a record bigger than a segment has
            // one of its own) is not kept: reused, it would keep its size.
            let fits = seg
                .file
                .len()
                .is_ok_and(|len| len <= self.opts.segment_size.max(SEGMENT_HEADER_LEN as u64));
            let dropped = if unshared
                && fits
                && keep_spares
                && self.recycled.lock().len() < self.opts.recycle
            {
                let seq = self.spare_seq.fetch_add(1, Ordering::Relaxed);
                let to = self.dir.join(format!("{RECYCLE_PREFIX}{seq}.seg"));
                self.fs
                    .rename(&seg.path, &to)
                    .map(|()| Some(to))
                    .map_err(|e| LogError::io(format!("recycling {}", seg.path.display()), e))
            } else {
                self.fs
                    .remove(&seg.path)
                    .map(|()| None)
                    .map_err(|e| LogError::io(format!("removing {}", seg.path.display()), e))
            };
            let recycled_to = match dropped {
                Ok(to) => to,
                Err(e) => {
                    // The file is still there under its name: back to the front of the list.
                    // A reader that looked for one of its records meanwhile was told that the
                    // record had been dropped.
                    self.segments.lock().insert(0, seg);
                    return Err(e);
                }
            };
            if let Err(e) = self.sync_log_dir() {
                // Which names are on disk is unknown now (and a later sync does not settle
                // it): latch, as for a failed sync of the log itself, so that nothing more is
                // written or acknowledged until the log is reopened.
                let e = LogError::io(format!("syncing {}", self.dir.display()), e);
                tracing::error!(error = %e, "syncing the log directory failed; latching");
                let mut st = self.state.lock();
                st.failed.get_or_insert_with(|| e.to_string());
                self.wake_all();
                return Err(e);
            }
            // The last handle (and with it any map a finished reader left in it) goes before
            // the file can be reused.
            drop(seg);
            self.recycled.lock().extend(recycled_to);
        }
        tracing::debug!(upto, dropped = n, "truncated log prefix");
        Ok(n)
    }

    /// Whether the background flusher should prepare a spare segment: preallocation is on,
    /// spares are kept (`recycle` > 0), and the pool is empty.
    fn wants_spare(&self) -> bool {
        self.opts.preallocate
            && self.opts.background_flush
            && self.opts.recycle > 0
            && self.recycled.lock().is_empty()
    }

    /// Whether spare segments may hold `bytes` more of the disk: true while the file system
    /// would still keep [`spare_reserve`] free (or when its free space is unknown).
    fn room_for_spare(&self, bytes: u64) -> bool {
        room_for_spare(&self.fs, &self.dir, &self.opts, bytes)
    }

    /// Remove the spare segments when the file system keeps less than [`spare_reserve`] free
    /// (see [`LogOptions::recycle`]). A roll taking a spare meanwhile takes it first (the pool's
    /// lock), and one finding none grows a new segment. The removals are not made durable: a
    /// spare that comes back after a crash is meaningless, and is removed at the next open if
    /// space is still short.
    fn release_spares_if_short(&self) {
        if !self.recycled.lock().is_empty() && !self.room_for_spare(0) {
            self.release_spares();
        }
    }

    /// Remove every spare segment kept (see [`Shared::release_spares_if_short`]).
    fn release_spares(&self) {
        let spares = std::mem::take(&mut *self.recycled.lock());
        for p in spares {
            match self.fs.remove(&p) {
                Ok(()) => {
                    tracing::info!(file = %p.display(), "removed a spare segment: free space is low");
                }
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "could not remove a spare segment");
                }
            }
        }
    }

    /// Prepare a zero-filled spare segment when the pool is empty (background flusher only).
    /// Returns false when the disk has too little free space for one (see
    /// [`LogOptions::recycle`]): none was prepared, and a half-prepared one was removed.
    fn ensure_spare(&self) -> Result<bool> {
        if !self.wants_spare() {
            return Ok(true);
        }
        if !self.room_for_spare(self.opts.segment_size) {
            tracing::debug!(dir = %self.dir.display(), "too little free space for a spare segment");
            return Ok(false);
        }
        let seq = self.spare_seq.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{RECYCLE_PREFIX}{seq}.seg"));
        let file = self
            .fs
            .open(&path, OpenOptions::create())
            .map_err(|e| LogError::io(format!("creating {}", path.display()), e))?;
        // Synced every few MiB: one flush of a whole 64 MiB segment queues ahead of the commits'
        // small syncs on the same disk and stalled them for 50-70 ms (docs/BENCHMARKS.md).
        // Between mebibytes this thread still does its other work: records appended without a
        // waiter are synced within a few ms, not after the whole spare (about 100 ms for
        // 64 MiB), and a close or a latch stops the filling.
        // The disk may fill meanwhile (the database's own files grow too): the spare must not
        // take the space they need.
        let mut low_on_space = false;
        let mut between = || {
            let left = self
                .opts
                .segment_size
                .saturating_sub(file.len().unwrap_or(0));
            if !self.room_for_spare(left) {
                low_on_space = true;
                return false;
            }
            let mut st = self.state.lock();
            if st.closed || st.failed.is_some() {
                return false;
            }
            if st.flush_requested {
                st.flush_requested = false;
                let last = st.next_lsn - 1;
                drop(st);
                // A failure latches the log, which the next check sees.
                let _ = self.sync_up_to(last, Waiter::Flusher);
            }
            true
        };
        let filled = zero_fill(
            &*file,
            self.opts.segment_size,
            SPARE_SYNC_EVERY,
            &mut between,
        )
        .and_then(|done| {
            if done {
                file.sync_data().map(|_| true)
            } else {
                Ok(false)
            }
        });
        match filled {
            Ok(true) => {
                self.recycled.lock().push(path);
                Ok(true)
            }
            Ok(false) => {
                // Closed or latched (no spare is needed), or the disk is filling up.
                let _ = self.fs.remove(&path);
                if low_on_space {
                    tracing::debug!(dir = %self.dir.display(), "abandoned a spare segment: free space is running low");
                }
                Ok(!low_on_space)
            }
            Err(e) => {
                // Do not leave a half-filled file taking space (e.g. after ENOSPC).
                let _ = self.fs.remove(&path);
                Err(LogError::io(format!("preallocating {}", path.display()), e))
            }
        }
    }

    fn flusher_loop(self: Arc<Self>) {
        // When the spares kept are next checked against the free space: by the clock, not by
        // wake-ups (appends nobody waits for wake this thread many times a second).
        let mut space_check = std::time::Instant::now() + SPARE_CHECK_INTERVAL;
        // Whether it ran (the caller must then look at its conditions again: it ran without
        // the state lock, and a wake-up meanwhile found nobody waiting).
        let mut check_space = |this: &Self| {
            let now = std::time::Instant::now();
            if now < space_check {
                return false;
            }
            space_check = now + SPARE_CHECK_INTERVAL;
            // Spares held while the disk fills must give way (see `LogOptions::recycle`):
            // other files need the space.
            this.release_spares_if_short();
            true
        };
        loop {
            // The last LSN to sync, if records nobody waits for asked for a flush; and how many
            // rolls had asked for a spare when this thread last looked.
            let (flush, spare_asked) = {
                let mut st = self.state.lock();
                while !st.closed && !st.flush_requested && st.failed.is_none() {
                    if self.wants_spare() {
                        break;
                    }
                    if self.recycled.lock().is_empty() {
                        self.flush_cond.wait(&mut st);
                    } else if !MutexGuard::unlocked(&mut st, || check_space(&self)) {
                        self.flush_cond.wait_for(&mut st, SPARE_CHECK_INTERVAL);
                    }
                }
                if st.closed || st.failed.is_some() {
                    return;
                }
                if st.flush_requested {
                    // Let records nobody waits for accumulate a moment, so that they share one
                    // fsync (each costs the kernel real CPU). Waiters never wait for this: they
                    // lead their own sync at once. `flush_requested` stays set meanwhile, so
                    // appends do not wake this thread for every record.
                    let deadline = std::time::Instant::now() + LAZY_FLUSH_DELAY;
                    while st.buf.len() < LAZY_FLUSH_BYTES && !st.closed && st.failed.is_none() {
                        if self.flush_cond.wait_until(&mut st, deadline).timed_out() {
                            break;
                        }
                    }
                    st.flush_requested = false;
                    (Some(st.next_lsn - 1), st.spare_asked)
                } else {
                    // Woken only to prepare a spare: no sync to lead (the records buffered
                    // have waiters, who lead their own).
                    (None, st.spare_asked)
                }
            };
            if let Some(last) = flush
                && self.sync_up_to(last, Waiter::Flusher).is_err()
            {
                return;
            }
            check_space(&self);
            let prepared = self.ensure_spare().unwrap_or_else(|e| {
                // Not fatal: rolls fall back to growing files.
                tracing::warn!(error = %e, "could not preallocate a spare segment");
                false
            });
            if !prepared {
                // Not again until a roll asks (or a flush wakes this thread). A roll that asked
                // while this one was failing found nobody waiting: try again at once for it.
                let mut st = self.state.lock();
                if !st.flush_requested && !st.closed && st.spare_asked == spare_asked {
                    self.flush_cond.wait(&mut st);
                }
            }
        }
    }
}

/// Where the threads waiting for one batch sleep: a futex word (`epoch`), bumped under the
/// state lock whenever they should look again (their batch is durable, the next batch needs a
/// leader, the log latched or closed). Who sleeps on it is in `State::sleeping`.
///
/// A woken waiter whose record is durable returns without taking the state lock. With a
/// condition variable, every waiter woken must take the lock on its way out, so they are handed
/// it one after another, each woken only when the previous one releases it. On the 2-vCPU
/// machine measured, waking 15 threads that way took 370 µs, against 100 µs for waking them
/// all at once on a futex word (docs/BENCHMARKS.md).
#[derive(Default)]
struct Slot {
    epoch: AtomicU32,
}

impl Slot {
    /// The epoch to sleep on. Read it under the state lock, then [`Slot::sleep`] after
    /// releasing it: a bump in between makes the sleep return at once, so no wake-up is lost.
    fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Sleep until the epoch moves on from `epoch` (or spuriously; callers check again).
    fn sleep(&self, epoch: u32) {
        atomic_wait::wait(&self.epoch, epoch);
    }

    /// Move the epoch on (under the state lock).
    fn bump(&self) {
        self.epoch.fetch_add(1, Ordering::Release);
    }
}

/// Who waits in [`Shared::sync_up_to`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiter {
    /// An appender right after its own append, which already counted it back.
    AfterAppend,
    /// Any other caller that may append (`wait_durable`, `flush`, an append held back by a
    /// full buffer).
    Appender,
    /// The background flusher, which never appends.
    Flusher,
}

/// The wake-ups a leader owes once it has released the state lock: every waiter of its batch,
/// and one waiter of the next batch to lead it (slot indexes).
#[must_use]
struct Wakes {
    batch: Option<usize>,
    leader: Option<usize>,
}

impl Wakes {
    fn run(self, s: &Shared) {
        if let Some(i) = self.batch {
            atomic_wait::wake_all(&s.batch_done[i].epoch);
        }
        if let Some(i) = self.leader {
            atomic_wait::wake_one(&s.batch_done[i].epoch);
        }
    }
}

/// Stop counting `me` among the threads asleep on a slot (it woke up without its batch being
/// published: it was called to lead, or spuriously).
fn forget_sleeper(sleeping: &mut Vec<ThreadId>, me: ThreadId) {
    if let Some(pos) = sleeping.iter().position(|t| *t == me) {
        sleeping.swap_remove(pos);
    }
}

/// A record [`Log::append_sync`] writes from the caller's buffer.
struct Direct<'a> {
    kind: u16,
    crc: PayloadCrc,
    payload: &'a [u8],
}

/// Refuse a record whose LSN no segment could start at (see [`LogError::LsnExhausted`]).
fn check_lsn_space(st: &State) -> Result<()> {
    if st.next_lsn > crate::format::MAX_FIRST_LSN {
        return Err(LogError::LsnExhausted { next: st.next_lsn });
    }
    Ok(())
}

/// The error a waiter for `lsn` gets once the log has latched a failure: the full disk's
/// [`LogError::NoSpace`] if `lsn` was in the batch the disk refused, else [`latched`].
fn latched_for(st: &State, lsn: Lsn) -> Option<LogError> {
    match &st.no_space {
        Some((upto, context, cause)) if lsn <= *upto && lsn > st.durable_lsn => {
            Some(LogError::NoSpace {
                context: context.clone(),
                source: std::io::Error::new(std::io::ErrorKind::StorageFull, cause.clone()),
            })
        }
        _ => latched(st),
    }
}

/// The error every caller gets once the log has latched a failure.
fn latched(st: &State) -> Option<LogError> {
    st.failed.as_ref().map(|cause| LogError::Latched {
        cause: cause.clone(),
        durable_lsn: st.durable_lsn,
    })
}

/// Remove the spare segments `spares` (emptied) from `dir`, durably, when a log opens; `why`
/// goes into the warning for each.
fn remove_spares(fs: &FsRef, dir: &Path, spares: &mut Vec<PathBuf>, why: &str) -> Result<()> {
    for p in spares.drain(..) {
        tracing::warn!(file = %p.display(), "removing a spare segment: {why}");
        fs.remove(&p)
            .map_err(|e| LogError::io(format!("removing {}", p.display()), e))?;
    }
    fs.sync_dir(dir)
        .map_err(|e| LogError::io(format!("syncing {}", dir.display()), e))
}

/// Spare and recycled segments are kept only while the file system keeps this much free beside
/// them, or one segment if larger (see [`LogOptions::recycle`]).
const SPARE_MIN_FREE: u64 = 64 << 20;

/// The free space spare segments must leave: [`SPARE_MIN_FREE`] or one segment.
fn spare_reserve(opts: &LogOptions) -> u64 {
    opts.segment_size.max(SPARE_MIN_FREE)
}

/// Whether spare segments may take `bytes` more of the file system holding `dir` (see
/// [`LogOptions::recycle`]). True when its free space is unknown.
fn room_for_spare(fs: &FsRef, dir: &Path, opts: &LogOptions, bytes: u64) -> bool {
    match fs.free_space(dir) {
        Ok(Some(free)) => free >= bytes.saturating_add(spare_reserve(opts)),
        Ok(None) => true,
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "could not read the free space");
            true
        }
    }
}

/// How often the background flusher, while it keeps spare segments, checks that the disk still
/// has room for them (one `statvfs`).
const SPARE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// A spare segment prepared while commits run is synced every this many bytes.
const SPARE_SYNC_EVERY: u64 = 1 << 20;

/// Extend `file` with zeros to `size`, 1 MiB at a time, syncing every `sync_every` bytes
/// written (the caller syncs the end). `between` runs after each mebibyte; when it returns
/// false the filling stops there. Returns whether the file was filled to `size`.
fn zero_fill(
    file: &dyn crate::fs::FsFile,
    size: u64,
    sync_every: u64,
    between: &mut dyn FnMut() -> bool,
) -> std::io::Result<bool> {
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK];
    let mut at = file.len()?;
    let mut unsynced = 0u64;
    while at < size {
        let n = ((size - at) as usize).min(CHUNK);
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
        unsynced += n as u64;
        if unsynced >= sync_every && at < size {
            file.sync_data()?;
            unsynced = 0;
        }
        if !between() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Create (or take from the recycle pool) the segment whose first record is `first_lsn`, with
/// its header and directory entry durable.
#[allow(clippy::too_many_arguments)]
fn create_segment(
    fs: &FsRef,
    dir: &Path,
    opts: &LogOptions,
    preallocate: bool,
    database_id: u128,
    timeline: u64,
    first_lsn: Lsn,
    pool: &mut Vec<PathBuf>,
    sync_dir: &dyn Fn() -> std::io::Result<()>,
) -> Result<Arc<Segment>> {
    let path = dir.join(segment_file_name(first_lsn));
    // Preallocating takes the whole segment's space at once: only while the disk keeps the
    // spares' reserve free beside it (see `LogOptions::recycle`), so that other files do not
    // meet a full disk while it fills; otherwise the segment grows as records are written.
    let preallocate = preallocate && room_for_spare(fs, dir, opts, opts.segment_size);
    let header = SegmentHeader {
        database_id,
        timeline,
        first_lsn,
        created_us: now_us(),
    };
    let ctx = |what: &str| format!("{what} segment {}", path.display());
    let file = if let Some(spare) = pool.pop() {
        let file = fs
            .open(&spare, OpenOptions::existing())
            .map_err(|e| LogError::io(ctx("opening spare for"), e))?;
        file.write_all_at(&header.encode(), 0)
            .and_then(|_| file.sync_data())
            .map_err(|e| LogError::io(ctx("writing header of"), e))?;
        fs.rename(&spare, &path)
            .map_err(|e| LogError::io(ctx("renaming spare to"), e))?;
        file
    } else {
        let file = fs
            .open(&path, OpenOptions::create())
            .map_err(|e| LogError::io(ctx("creating"), e))?;
        let made = file
            .set_len(0)
            .and_then(|_| file.write_all_at(&header.encode(), 0))
            .map_err(|e| LogError::io(ctx("writing header of"), e))
            .and_then(|()| {
                if !preallocate {
                    return Ok(());
                }
                match zero_fill(&*file, opts.segment_size, u64::MAX, &mut || true) {
                    Ok(_) => Ok(()),
                    // Preallocation only makes syncs cheaper: on a disk without room for a
                    // whole segment, the segment grows as records are written instead.
                    Err(e) if crate::error::is_no_space(&e) => {
                        tracing::warn!(segment = %path.display(), "too little free space to preallocate a segment; it grows as records are written");
                        file.set_len(SEGMENT_HEADER_LEN as u64)
                            .map_err(|e| LogError::io(ctx("truncating"), e))
                    }
                    Err(e) => Err(LogError::io(ctx("preallocating"), e)),
                }
            })
            .and_then(|()| {
                file.sync_data()
                    .map_err(|e| LogError::io(ctx("syncing"), e))
            });
        if let Err(e) = made {
            // Nothing refers to the file yet: leave no partial segment taking space (a log
            // that could not start would otherwise keep it).
            if let Err(rm) = fs.remove(&path) {
                tracing::warn!(segment = %path.display(), error = %rm, "could not remove a segment that failed to start");
            }
            return Err(e);
        }
        file
    };
    sync_dir().map_err(|e| LogError::io(format!("syncing {}", dir.display()), e))?;
    Ok(Arc::new(Segment::new(path, file, header)))
}
