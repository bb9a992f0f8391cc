//! Log benchmarks (`cargo bench --bench log`), each beside the physical limit in the same run.
//!
//! - `log_append/raw_write_fdatasync_{4k,1m}`: a plain file, already allocated and synced,
//!   overwritten sequentially with one write + `fdatasync` per iteration.
//! - `log_append/log_sync_{4k,1m}`: one record of that size appended and awaited per iteration.
//!   The log runs as in production: preallocated segments, and the prefix truncated (as after a
//!   checkpoint and shipping) so that segments are recycled.
//! - `group_commit/log_sync_4k_16threads`: 16 threads append 4 KiB records and wait for each;
//!   reported time is per durable record (the threads persist across samples). Flat sampling:
//!   every sample holds the same number of records (a few thousand), so that starting and
//!   stopping the 16 threads around each sample is a small part of every sample. Criterion's
//!   default linear sampling starts with samples of 48, 96, ... records, where that start and
//!   stop (waking 16 threads through a barrier, a batch ramping up and draining) took as much
//!   time as the records, and the mean weights those samples like the others. When it ends,
//!   it prints to stderr how many records each `fdatasync` covered (warm-up included).
//! - `group_commit/raw_write_fdatasync_64k` and `group_commit/raw_wake_15threads`: the machine's
//!   own cost of one 16-record batch, without the log. The first is the disk's part (64 KiB
//!   written and synced, as `raw_write_fdatasync_4k`); the second the CPUs' part: after an idle
//!   spell like a sync's, one futex wake-all of 15 sleeping threads, each copying 4 KiB under a
//!   lock and going back to sleep, timed until the last is back. With one `fdatasync` in flight
//!   and every appender waiting for its own record, each batch pays both, one after the other,
//!   so `(raw_write_fdatasync_64k + raw_wake_15threads) / 16` is the least time per record such
//!   a design can take on the machine (`scripts/bench_report.py --goals` prints it beside the
//!   goal as `floor16`).
//! - `group_commit/bare_group_commit_4k_16threads`: the same workload as
//!   `log_sync_4k_16threads`, run by a bare group commit written for it alone, without the
//!   log: 16 threads each copy a 4,136-byte record (a 4 KiB log record with its header) into
//!   one buffer under a lock and sleep on a futex word; the 16th to arrive writes the batch to a
//!   preallocated file and syncs it (the lock released meanwhile), then wakes them all. It has
//!   none of the log's work (no CRC, LSNs, segments, failure latch, nor waiting for appenders
//!   that may not come back: it knows all 16 will), so it shows what any group commit can reach
//!   for this workload on the machine, measured right before the log in the same run
//!   (`bench_report.py --goals` prints it as `bare16`, a ratio to `log_sync_4k` like the goal).
//!
//! Before each function the disk is settled (`support::settle`), and every function's files
//! stay until the end of the run, so that no function pays for another's write-back or
//! deletion.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use pagelog_log::format::RECORD_HEADER_LEN;
use pagelog_log::fs::StdFs;
use pagelog_log::{Log, LogOptions};
use tempfile::TempDir;

mod support;
use support::{bench_dir, settle};

const FILE_SIZE: u64 = 64 << 20;

/// A file of `FILE_SIZE` bytes in `dir`, written and synced: overwriting it allocates nothing.
fn prefilled_file(dir: &TempDir, name: &str) -> std::fs::File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join(name))
        .expect("open file");
    let chunk = vec![0u8; 1 << 20];
    for i in 0..(FILE_SIZE >> 20) {
        file.write_all_at(&chunk, i << 20).expect("prefill");
    }
    file.sync_all().expect("sync");
    file
}

fn raw_write_fdatasync(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    size: usize,
) -> TempDir {
    let dir = bench_dir();
    let file = prefilled_file(&dir, "raw");
    let buf = vec![0x5au8; size];
    let mut offset = 0u64;
    settle();
    c.bench_function(name, |b| {
        b.iter(|| {
            file.write_all_at(&buf, offset).expect("write");
            file.sync_data().expect("fdatasync");
            offset = (offset + size as u64) % FILE_SIZE;
        })
    });
    dir
}

fn log_sync(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    size: usize,
) -> (TempDir, Log) {
    let dir = bench_dir();
    let log = Log::open(StdFs::shared(), dir.path(), LogOptions::default()).expect("open log");
    let payload = vec![0x5au8; size];
    let mut n = 0u64;
    settle();
    c.bench_function(name, |b| {
        b.iter(|| {
            let lsn = log.append_sync(0, &payload).expect("append");
            n += 1;
            if n.is_multiple_of(16) {
                // As in production after a checkpoint + shipping (every ~16 MiB by default):
                // drop what is old, so its segments are recycled.
                log.truncate_prefix(lsn.saturating_sub(16))
                    .expect("truncate");
            }
        })
    });
    (dir, log)
}

fn log_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("log_append");
    g.measurement_time(Duration::from_secs(8));
    let raw_4k = raw_write_fdatasync(&mut g, "raw_write_fdatasync_4k", 4096);
    let log_4k = log_sync(&mut g, "log_sync_4k", 4096);
    g.sample_size(30);
    let raw_1m = raw_write_fdatasync(&mut g, "raw_write_fdatasync_1m", 1 << 20);
    let log_1m = log_sync(&mut g, "log_sync_1m", 1 << 20);
    g.finish();
    drop((raw_4k, log_4k, raw_1m, log_1m));
}

/// 15 threads asleep on one futex word, woken by one wake-all per round (see the module doc).
struct WakeRound {
    epoch: AtomicU32,
    back: AtomicU32,
    done: AtomicU32,
    last: Mutex<Option<Instant>>,
    buf: Mutex<Vec<u8>>,
    stop: AtomicBool,
}

const WOKEN: u32 = 15;

fn raw_wake(c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let ring = Arc::new(WakeRound {
        epoch: AtomicU32::new(0),
        back: AtomicU32::new(0),
        done: AtomicU32::new(0),
        last: Mutex::new(None),
        buf: Mutex::new(Vec::with_capacity(4096)),
        stop: AtomicBool::new(false),
    });
    let workers: Vec<_> = (0..WOKEN)
        .map(|_| {
            let ring = ring.clone();
            std::thread::spawn(move || {
                let payload = vec![0x5au8; 4096];
                // The epoch starts at 0. Loaded here instead, it could already hold the bump of
                // a stop sent before this thread ran (when a filter skips this function), and
                // the thread would sleep through it: the join below never returned.
                let mut seen = 0;
                loop {
                    while ring.epoch.load(Ordering::Acquire) == seen {
                        atomic_wait::wait(&ring.epoch, seen);
                    }
                    seen = ring.epoch.load(Ordering::Acquire);
                    if ring.stop.load(Ordering::Acquire) {
                        return;
                    }
                    {
                        let mut b = ring.buf.lock().expect("buffer lock");
                        b.clear();
                        b.extend_from_slice(&payload);
                    }
                    if ring.back.fetch_add(1, Ordering::AcqRel) + 1 == WOKEN {
                        *ring.last.lock().expect("time lock") = Some(Instant::now());
                        ring.done.fetch_add(1, Ordering::Release);
                        atomic_wait::wake_one(&ring.done);
                    }
                }
            })
        })
        .collect();
    settle();
    c.bench_function("raw_wake_15threads", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let done = ring.done.load(Ordering::Acquire);
                // Idle as during a batch's fsync: every thread asleep, the vCPUs halted.
                std::thread::sleep(Duration::from_micros(200));
                ring.back.store(0, Ordering::Release);
                let start = Instant::now();
                ring.epoch.fetch_add(1, Ordering::AcqRel);
                atomic_wait::wake_all(&ring.epoch);
                while ring.done.load(Ordering::Acquire) == done {
                    atomic_wait::wait(&ring.done, done);
                }
                let last = ring.last.lock().expect("time lock").take();
                total += last.map_or(Duration::ZERO, |t| t.saturating_duration_since(start));
            }
            total
        })
    });
    ring.stop.store(true, Ordering::Release);
    ring.epoch.fetch_add(1, Ordering::AcqRel);
    atomic_wait::wake_all(&ring.epoch);
    for w in workers {
        w.join().expect("woken thread");
    }
}

/// Threads that live for a whole benchmarked function (spawning them per sample would add
/// thread start-up to the measured time) and run `work` once per sample, all together.
struct Gang {
    stop: Arc<AtomicBool>,
    start_gate: Arc<Barrier>,
    end_gate: Arc<Barrier>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Gang {
    /// `threads` threads, each calling `work(thread_state)` once per [`Gang::sample`];
    /// `thread_state` is made once per thread by `init`.
    fn spawn<S: 'static>(
        threads: usize,
        init: impl Fn() -> S + Send + Sync + 'static,
        work: impl Fn(&S) + Send + Sync + 'static,
    ) -> Gang {
        let stop = Arc::new(AtomicBool::new(false));
        let start_gate = Arc::new(Barrier::new(threads + 1));
        let end_gate = Arc::new(Barrier::new(threads + 1));
        let (init, work) = (Arc::new(init), Arc::new(work));
        let workers = (0..threads)
            .map(|_| {
                let (stop, start_gate, end_gate) =
                    (stop.clone(), start_gate.clone(), end_gate.clone());
                let (init, work) = (init.clone(), work.clone());
                std::thread::spawn(move || {
                    let state = init();
                    loop {
                        start_gate.wait();
                        if stop.load(Ordering::Acquire) {
                            return;
                        }
                        work(&state);
                        end_gate.wait();
                    }
                })
            })
            .collect();
        Gang {
            stop,
            start_gate,
            end_gate,
            workers,
        }
    }

    /// Run one sample: release every thread, and return when the last is done.
    fn sample(&self) -> Duration {
        let start = Instant::now();
        self.start_gate.wait();
        self.end_gate.wait();
        start.elapsed()
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Release);
        self.start_gate.wait();
        for w in self.workers {
            w.join().expect("benchmark thread");
        }
    }
}

/// A bare group commit's state (see the module doc): the batch being gathered and where the
/// next one goes in the file.
struct Bare {
    buf: Vec<u8>,
    offset: u64,
    /// Batches still to take in this sample.
    batches: u64,
}

const BARE_THREADS: usize = 16;
/// A 4 KiB log record's size on disk, header included.
const BARE_RECORD: usize = 4096 + RECORD_HEADER_LEN;

fn bare_group_commit(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
) -> TempDir {
    let dir = bench_dir();
    let file = prefilled_file(&dir, "bare");
    let state = Arc::new(Mutex::new(Bare {
        buf: Vec::with_capacity(BARE_THREADS * BARE_RECORD),
        offset: 0,
        batches: 0,
    }));
    let epoch = Arc::new(AtomicU32::new(0));
    let gang = Gang::spawn(BARE_THREADS, || vec![0x5au8; BARE_RECORD], {
        let (state, epoch) = (state.clone(), epoch.clone());
        move |record: &Vec<u8>| loop {
            let mut st = state.lock().expect("bare lock");
            if st.batches == 0 {
                return;
            }
            st.buf.extend_from_slice(record);
            if st.buf.len() < BARE_THREADS * BARE_RECORD {
                let seen = epoch.load(Ordering::Acquire);
                drop(st);
                while epoch.load(Ordering::Acquire) == seen {
                    atomic_wait::wait(&epoch, seen);
                }
                continue;
            }
            // The 16th: write and sync the batch, the lock released meanwhile (nobody
            // appends: the other 15 wait for this batch).
            let batch = std::mem::take(&mut st.buf);
            let offset = st.offset;
            st.offset = if offset + 2 * batch.len() as u64 > FILE_SIZE {
                0
            } else {
                offset + batch.len() as u64
            };
            drop(st);
            file.write_all_at(&batch, offset).expect("write");
            file.sync_data().expect("fdatasync");
            let mut st = state.lock().expect("bare lock");
            st.buf = batch;
            st.buf.clear();
            st.batches -= 1;
            epoch.fetch_add(1, Ordering::Release);
            drop(st);
            atomic_wait::wake_all(&*epoch);
        }
    });
    settle();
    c.bench_function("bare_group_commit_4k_16threads", |b| {
        b.iter_custom(|iters| {
            // Whole batches: one more than `iters` / 16 records' worth when it does not divide.
            let batches = iters.div_ceil(BARE_THREADS as u64);
            state.lock().expect("bare lock").batches = batches;
            let elapsed = gang.sample();
            // Reported per record, as the log's function is.
            elapsed.mul_f64(iters as f64 / (batches * BARE_THREADS as u64) as f64)
        })
    });
    gang.finish();
    dir
}

fn group_commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("group_commit");
    g.measurement_time(Duration::from_secs(8));
    let raw_64k = raw_write_fdatasync(&mut g, "raw_write_fdatasync_64k", 64 << 10);
    raw_wake(&mut g);
    g.sampling_mode(criterion::SamplingMode::Flat);
    let bare = bare_group_commit(&mut g);
    let dir = bench_dir();
    let log =
        Arc::new(Log::open(StdFs::shared(), dir.path(), LogOptions::default()).expect("open log"));
    // Each sample hands the 16 appenders `iters` records to append.
    let remaining = Arc::new(AtomicU64::new(0));
    let gang = Gang::spawn(16, || vec![0x5au8; 4096], {
        let (log, remaining) = (log.clone(), remaining.clone());
        move |payload: &Vec<u8>| {
            while remaining
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(1))
                .is_ok()
            {
                log.append_sync(0, payload).expect("append");
            }
        }
    });
    settle();
    let before = log.stats();
    g.bench_function("log_sync_4k_16threads", |b| {
        b.iter_custom(|iters| {
            remaining.store(iters, Ordering::Release);
            let elapsed = gang.sample();
            let lsn = log.durable_lsn();
            log.truncate_prefix(lsn.saturating_sub(64))
                .expect("truncate");
            elapsed
        })
    });
    // How well the appenders were gathered (warm-up included): context for the figure above.
    let after = log.stats();
    let (records, syncs) = (after.last_lsn - before.last_lsn, after.syncs - before.syncs);
    eprintln!(
        "log_sync_4k_16threads: {records} records in {syncs} fsyncs ({:.2} per fsync)",
        records as f64 / syncs.max(1) as f64
    );
    gang.finish();
    g.finish();
    drop((raw_64k, bare));
}

criterion_group!(benches, log_append, group_commit);
criterion_main!(benches);
