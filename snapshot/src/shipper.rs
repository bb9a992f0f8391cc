//! The shipper: a background thread that uploads a database's durable log records to a store
//! in batches, takes snapshots by policy, applies retention and drops the local log prefix
//! once it is both checkpointed and shipped.
//!
//! - **Batches.** Durable records are gathered until `batch_bytes` (default 16 MiB) or
//!   `batch_delay` (default 1 s) after the first one, whichever comes first; each batch is one
//!   immutable object keyed by its first LSN, created with a conditional create. The keys
//!   follow from LSNs, so steady-state shipping makes no LIST request.
//! - **Store down.** A failed upload is retried with the same bytes under the same key
//!   (exponential backoff with jitter, capped); commits are never blocked; the backlog stays in
//!   the local log, bounded by `max_backlog_bytes` (see [`ShipperOptions::max_backlog_bytes`]).
//!   [`Shipper::start`] waits for the first attach at most [`ShipperOptions::attach_wait`]: a
//!   store that is down or silent, or an object in it that is damaged, does not hold it up; a
//!   store that refuses (another database, a stale or diverged copy, a wrong bucket or
//!   credentials) does fail it.
//! - **Fencing.** At start the shipper claims its timeline, checks the store's history against
//!   the local log (stale copy, divergence, another database), and every upload is a
//!   conditional create: if a key is taken by different bytes, another writer is shipping to
//!   the same timeline and this shipper stops with [`SnapshotError::Fenced`].
//! - **Snapshots.** When the log shipped since the last snapshot outgrows the database (so a
//!   restore downloads at most about twice the database), at an optional interval, on demand,
//!   and first of all when the store cannot otherwise restore what the local log continues.
//!   A failed snapshot upload deletes the parts it created before another attempt starts (see
//!   [`crate::snapshot`]), so retries do not fill the store with orphan parts.
//! - **A store that lost its history.** Every [`ShipperOptions::store_check_interval`]
//!   (default 60 s) the shipper reads three small objects it knows the store must hold: its
//!   timeline claim, the manifest of the newest snapshot and the last batch (retention never
//!   deletes these). If one is gone — the prefix was wiped, a lifecycle rule expired objects,
//!   the bucket was re-created, someone deleted a directory — it logs a warning, counts it in
//!   [`ShipperStatus::history_losses`], lowers the replicated and logged watermarks to what the
//!   store holds and attaches again: the claim is created anew (or, if another database or
//!   writer took the prefix meanwhile, the shipper stops with `WrongDatabase`, `Diverged` or
//!   `Fenced` as at start), shipping resumes after the last batch the store still has (with a
//!   base snapshot and a recorded gap if the local log no longer has the records after it),
//!   and a snapshot is taken at once so that the latest state is restorable again. History
//!   deleted from the middle (a single batch, say, while the claim, the newest snapshot and
//!   the last batch remain) is not seen this way; `verify` reports it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pagelog_log::Lsn;
use pagelog_vfs::Database;
use parking_lot::{Condvar, Mutex};

use crate::catalog::Catalog;
use crate::error::{Result, SnapshotError};
use crate::fetch::get_decoded;
use crate::format::{
    BatchBuilder, TimelineInfo, batch_key, encode_gap_batch, manifest_key, timeline_key,
};
use crate::retention::apply_retention;
use crate::snapshot::{SnapshotInfo, SnapshotOptions, take_snapshot_tracked};
use crate::store::{PutOutcome, StoreError, StoreRef};
use crate::upload::{Backoff, is_fatal, is_transient, put_immutable, refuses_start};

/// How often the shipper looks for new durable records when idle.
const POLL: Duration = Duration::from_millis(20);
/// Default of [`ShipperOptions::attach_wait`].
pub const DEFAULT_ATTACH_WAIT: Duration = Duration::from_secs(10);
/// Default of [`ShipperOptions::store_check_interval`].
pub const DEFAULT_STORE_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// How long stopping the shipper waits for a store request of an attach in flight (which can
/// take the store's attempts × attempt timeout) before leaving the thread to finish it alone.
const STOP_WAIT_ATTACHING: Duration = Duration::from_secs(2);

/// Shipping, snapshot and retention policy.
#[derive(Debug, Clone)]
pub struct ShipperOptions {
    /// Upload a batch once this many bytes of records are waiting. Default 16 MiB.
    pub batch_bytes: usize,
    /// Upload a batch this long after its first record became durable. Default 1 s.
    pub batch_delay: Duration,
    /// Take a snapshot when the log shipped since the last one is larger than the database.
    /// Default true.
    pub auto_snapshot: bool,
    /// Also take a snapshot when the last one is older than this. Default none.
    pub snapshot_interval: Option<Duration>,
    /// Point-in-time window: objects no restore point inside it needs are deleted.
    /// Default 7 days; `None` keeps everything.
    pub retention: Option<Duration>,
    /// How often retention runs (it lists the store). Default 1 h.
    pub retention_check_interval: Duration,
    /// Local log kept for shipping while the store is unreachable. Past this many bytes the
    /// shipper stops holding the log for the store: the log prefix is dropped at checkpoints as
    /// if shipped, and when the store returns a snapshot is uploaded first, so the store's
    /// point-in-time history has a gap over that stretch (reported by restore, named by LSN);
    /// nothing acknowledged is lost locally. Default 1 GiB.
    pub max_backlog_bytes: u64,
    /// Largest wait between retries while the store is down. Default 30 s.
    pub max_retry_delay: Duration,
    /// Drop the local log prefix once checkpointed and shipped. Default true.
    pub truncate_local_log: bool,
    /// How snapshots are cut and uploaded.
    pub snapshot: SnapshotOptions,
    /// How long [`Shipper::start`] waits for its first attach (checking the store against the
    /// local log and claiming the timeline). A store that answers within it with a refusal
    /// (another database, a stale or diverged copy, a missing bucket, denied credentials, a
    /// server that cannot fence) fails the start; one that is unreachable, or has not
    /// answered by then, does not: the shipper keeps attaching in the background and
    /// [`Shipper::status`] tells how it goes. Default [`DEFAULT_ATTACH_WAIT`] (10 s).
    pub attach_wait: Duration,
    /// How often the shipper checks that the store still holds the history it shipped: three
    /// small reads (the timeline claim, the newest snapshot's manifest, the last batch), no
    /// listing. When one is gone (a wiped prefix, expired or deleted objects, a re-created
    /// bucket) the shipper attaches again and takes a snapshot, so that the latest state is
    /// restorable again (see the module docs). `None` never checks: a wiped store is then
    /// noticed only by a restart or by `verify`. Default [`DEFAULT_STORE_CHECK_INTERVAL`]
    /// (60 s).
    pub store_check_interval: Option<Duration>,
}

impl Default for ShipperOptions {
    fn default() -> Self {
        ShipperOptions {
            batch_bytes: 16 << 20,
            batch_delay: Duration::from_secs(1),
            auto_snapshot: true,
            snapshot_interval: None,
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_check_interval: Duration::from_secs(3600),
            max_backlog_bytes: 1 << 30,
            max_retry_delay: Duration::from_secs(30),
            truncate_local_log: true,
            snapshot: SnapshotOptions::default(),
            attach_wait: DEFAULT_ATTACH_WAIT,
            store_check_interval: Some(DEFAULT_STORE_CHECK_INTERVAL),
        }
    }
}

/// A moment's view of the shipper.
#[derive(Debug, Clone, PartialEq)]
pub struct ShipperStatus {
    /// Timeline shipped to.
    pub timeline: u64,
    /// Last durable local LSN.
    pub durable_lsn: Lsn,
    /// Everything up to this LSN is in the store: a restore of the latest state holds it.
    pub replicated_lsn: Lsn,
    /// Every record up to this LSN is in a log batch in the store, so point-in-time restore
    /// reaches each of them. A snapshot can put `replicated_lsn` ahead of it for a while.
    pub logged_lsn: Lsn,
    /// LSN of the newest snapshot in the store (0: none).
    pub snapshot_lsn: Lsn,
    /// Durable records not yet in the store.
    pub lag_records: u64,
    /// How long the oldest durable record not yet in the store has waited, in seconds: since
    /// the shipper picked it up, or, before that (the store not attached yet), since it was
    /// committed. 0 when nothing is waiting.
    pub lag_seconds: f64,
    /// Bytes the local log takes on disk (the backlog is part of it).
    pub local_log_bytes: u64,
    /// Whether the shipper's last store request succeeded: false from any failure (the store
    /// unreachable, a missing bucket, refused credentials, ...) until a request succeeds again,
    /// and false before the first attach answered.
    pub store_available: bool,
    /// The last error (transient or not) while the last request failed; `None` once one
    /// succeeds.
    pub last_error: Option<String>,
    /// Why the shipper stopped, if it did (fenced, closed, ...).
    pub stopped: Option<String>,
    /// Batches uploaded by this shipper.
    pub batches_shipped: u64,
    /// Stored bytes of those batches.
    pub bytes_shipped: u64,
    /// Snapshots uploaded by this shipper.
    pub snapshots_taken: u64,
    /// Times this shipper found the store no longer holding history it had shipped (a wiped
    /// prefix, deleted or expired objects) and attached again, taking a snapshot so that the
    /// latest state is restorable again (see [`ShipperOptions::store_check_interval`]).
    pub history_losses: u64,
}

#[derive(Default)]
struct State {
    /// Stop once everything durable is shipped (close).
    draining: bool,
    /// Stop now.
    abort: bool,
    /// The thread has exited.
    exited: bool,
    /// Ship what is pending without waiting for the delay.
    flush: bool,
    /// Calls of `snapshot_now` so far.
    snap_requested: u64,
    /// Calls answered (every call up to this number).
    snap_served: u64,
    /// The answer to the calls up to `snap_served`.
    /// The last requested snapshot's outcome: the error as text, and whether it was transient.
    snap_result: Option<std::result::Result<SnapshotInfo, (String, bool)>>,
    stopped: Option<String>,
    last_error: Option<String>,
    store_available: bool,
    snapshot_lsn: Lsn,
    pending_since: Option<Instant>,
    /// [`Shipper::start`] is still waiting for the first attach's outcome.
    starter_waiting: bool,
    /// The first attach's outcome, for the waiting [`Shipper::start`]: `Ok` (attached, or the
    /// store unreachable) or a refusal that fails the start.
    first_attach: Option<Result<()>>,
    /// The thread is inside an attach (store requests that can take minutes).
    attaching: bool,
    batches_shipped: u64,
    bytes_shipped: u64,
    snapshots_taken: u64,
    history_losses: u64,
    wakers: Vec<Waker>,
}

struct Shared {
    db: Arc<Database>,
    store: StoreRef,
    opts: ShipperOptions,
    timeline: u64,
    replicated: AtomicU64,
    /// The last LSN of the store's log batches (or of the base snapshot they continue from).
    logged: AtomicU64,
    state: Mutex<State>,
    /// Wakes the shipper thread.
    work: Condvar,
    /// Wakes callers waiting for progress.
    progress: Condvar,
}

impl Shared {
    fn notify_progress(&self, st: &mut State) {
        self.progress.notify_all();
        for w in st.wakers.drain(..) {
            w.wake();
        }
    }

    fn set_replicated(&self, lsn: Lsn) {
        let mut st = self.state.lock();
        self.replicated.fetch_max(lsn, Ordering::AcqRel);
        self.notify_progress(&mut st);
    }

    fn set_logged(&self, lsn: Lsn) {
        let mut st = self.state.lock();
        self.logged.fetch_max(lsn, Ordering::AcqRel);
        self.notify_progress(&mut st);
    }

    /// `Some(result)` once `lsn` is replicated or can never be.
    fn check_replicated(&self, st: &State, lsn: Lsn) -> Option<Result<()>> {
        self.check_watermark(st, lsn, &self.replicated)
    }

    /// `Some(result)` once `watermark` reaches `lsn` or never can.
    fn check_watermark(&self, st: &State, lsn: Lsn, watermark: &AtomicU64) -> Option<Result<()>> {
        if watermark.load(Ordering::Acquire) >= lsn {
            return Some(Ok(()));
        }
        if let Some(why) = &st.stopped {
            return Some(Err(SnapshotError::Stopped(why.clone())));
        }
        if st.exited {
            return Some(Err(SnapshotError::Stopped("the shipper exited".into())));
        }
        if lsn > self.db.log().last_lsn() {
            return Some(Err(SnapshotError::Config(format!(
                "LSN {lsn} is beyond the last LSN {}",
                self.db.log().last_lsn()
            ))));
        }
        None
    }
}

/// Where shipping starts, as found at attach.
#[derive(Debug, Clone, Copy)]
struct Start {
    next_lsn: Lsn,
    replicated: Lsn,
    need_base: bool,
    snapshot_lsn: Lsn,
    shipped_since_snapshot: u64,
    /// First LSN of the store's last batch.
    last_batch: Option<Lsn>,
}

/// Ships one database's log to a store. Dropping it stops the thread without waiting for the
/// backlog; [`Shipper::close`] ships what is durable first.
pub struct Shipper {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper")
            .field("store", &self.shared.store.describe())
            .field("timeline", &self.shared.timeline)
            .field("replicated_lsn", &self.replicated_lsn())
            .finish_non_exhaustive()
    }
}

impl Shipper {
    /// Attach `db` to `store` and start shipping. Fails if, within
    /// [`ShipperOptions::attach_wait`], the store turns out to hold another database, a history
    /// this copy is behind ([`SnapshotError::StaleLocal`]) or one that differs from it
    /// ([`SnapshotError::Diverged`]), or refuses for good (a missing bucket, denied
    /// credentials, a server that does not honour conditional creates). A store that is
    /// unreachable, or has not answered by then, does not fail it, nor does a damaged or
    /// missing object the attach reads (the status names it): the shipper attaches in the
    /// background, with backoff, and ships nothing until it has.
    pub fn start(db: Arc<Database>, store: StoreRef, opts: ShipperOptions) -> Result<Shipper> {
        if opts.batch_bytes == 0 {
            return Err(SnapshotError::Config("batch_bytes must be > 0".into()));
        }
        // Attach at once, so that another database, a stale copy or a diverged history is
        // refused here; but wait for it only `attach_wait`: if the store is unreachable or
        // slow, start anyway (commits never wait for the store) and attach when it answers.
        let timeline = db.log().timeline();
        let attach_wait = opts.attach_wait;
        let shared = Arc::new(Shared {
            db,
            store,
            opts,
            timeline,
            replicated: AtomicU64::new(0),
            logged: AtomicU64::new(0),
            state: Mutex::new(State {
                starter_waiting: true,
                ..State::default()
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("pagelog-shipper".into())
            .spawn(move || {
                let mut worker = Worker::new(s.clone());
                let outcome = match worker.first_attach() {
                    Ok(true) => worker.run(),
                    // The start took the refusal.
                    Ok(false) => Ok(()),
                    Err(e) => Err(e),
                };
                let mut st = s.state.lock();
                if let Err(e) = outcome {
                    tracing::error!(error = %e, "shipper stopped");
                    st.stopped.get_or_insert(e.to_string());
                }
                st.exited = true;
                s.notify_progress(&mut st);
            })
            .map_err(|e| SnapshotError::Io {
                path: Default::default(),
                context: "starting the shipper thread".into(),
                source: e,
            })?;
        let mut shipper = Shipper {
            shared,
            thread: Some(thread),
        };
        let deadline = Instant::now() + attach_wait;
        let first = {
            let mut st = shipper.shared.state.lock();
            while st.first_attach.is_none()
                && !shipper
                    .shared
                    .progress
                    .wait_until(&mut st, deadline)
                    .timed_out()
            {}
            st.starter_waiting = false;
            st.first_attach.take()
        };
        match first {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                shipper.stop_thread();
                return Err(e);
            }
            None => tracing::warn!(
                store = %shipper.shared.store.describe(),
                waited_ms = attach_wait.as_millis() as u64,
                "the store has not answered yet; starting anyway, the shipper attaches in the background"
            ),
        }
        Ok(shipper)
    }

    /// Everything up to this LSN is in the store: a restore of the latest state holds it (from
    /// log batches or from a snapshot).
    pub fn replicated_lsn(&self) -> Lsn {
        self.shared.replicated.load(Ordering::Acquire)
    }

    /// Every record up to this LSN is in a log batch in the store (or before the base snapshot
    /// the batches continue from), so point-in-time restore reaches each LSN up to it. A
    /// snapshot taken before the batches that cover it are shipped puts
    /// [`Shipper::replicated_lsn`] ahead of this for a while.
    pub fn logged_lsn(&self) -> Lsn {
        self.shared.logged.load(Ordering::Acquire)
    }

    /// The timeline shipped to.
    pub fn timeline(&self) -> u64 {
        self.shared.timeline
    }

    /// Block until `lsn` is in the store, the shipper stops (an error), or `timeout` passes.
    /// Shipping keeps its batching delay: expect up to about `batch_delay` plus an upload.
    pub fn wait_replicated(&self, lsn: Lsn, timeout: Option<Duration>) -> Result<()> {
        self.wait_watermark(lsn, timeout, &self.shared.replicated, "replicated")
    }

    fn wait_watermark(
        &self,
        lsn: Lsn,
        timeout: Option<Duration>,
        watermark: &AtomicU64,
        what: &str,
    ) -> Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.shared.state.lock();
        loop {
            if let Some(r) = self.shared.check_watermark(&st, lsn, watermark) {
                return r;
            }
            match deadline {
                Some(d) => {
                    if self.shared.progress.wait_until(&mut st, d).timed_out()
                        && self.shared.check_watermark(&st, lsn, watermark).is_none()
                    {
                        return Err(SnapshotError::Timeout {
                            what: format!(
                                "LSN {lsn} to be {what} ({what}: {})",
                                watermark.load(Ordering::Acquire)
                            ),
                            secs: timeout.unwrap_or_default().as_secs_f64(),
                        });
                    }
                }
                None => self.shared.progress.wait(&mut st),
            }
        }
    }

    /// A future that resolves once `lsn` is in the store (or the shipper stops). Runtime
    /// agnostic: it is woken by the shipper thread.
    pub fn wait_replicated_async(&self, lsn: Lsn) -> ReplicatedFuture {
        ReplicatedFuture {
            shared: self.shared.clone(),
            lsn,
        }
    }

    /// Upload what is durable now, without waiting for the batching delay.
    pub fn ship_now(&self) {
        let mut st = self.shared.state.lock();
        st.flush = true;
        self.shared.work.notify_all();
    }

    /// Take a snapshot now (after shipping what is durable) and wait for it.
    pub fn snapshot_now(&self) -> Result<SnapshotInfo> {
        let mut st = self.shared.state.lock();
        st.snap_requested += 1;
        let me = st.snap_requested;
        self.shared.work.notify_all();
        loop {
            if st.snap_served >= me
                && let Some(r) = &st.snap_result
            {
                return r
                    .clone()
                    .map_err(|(reason, transient)| SnapshotError::SnapshotFailed {
                        reason,
                        transient,
                    });
            }
            if st.exited {
                return Err(SnapshotError::Stopped(
                    st.stopped.clone().unwrap_or_else(|| "exited".into()),
                ));
            }
            self.shared.progress.wait(&mut st);
        }
    }

    /// Where shipping stands.
    pub fn status(&self) -> ShipperStatus {
        let log = self.shared.db.log();
        let stats = log.stats();
        let st = self.shared.state.lock();
        let replicated = self.replicated_lsn();
        ShipperStatus {
            timeline: self.shared.timeline,
            durable_lsn: stats.durable_lsn,
            replicated_lsn: replicated,
            logged_lsn: self.logged_lsn(),
            snapshot_lsn: st.snapshot_lsn,
            lag_records: stats.durable_lsn.saturating_sub(replicated),
            lag_seconds: if stats.durable_lsn > replicated {
                match st.pending_since {
                    Some(t) => t.elapsed().as_secs_f64(),
                    // Not picked up yet (the store not attached, or just committed): since
                    // the oldest unshipped record was committed.
                    None => {
                        self.oldest_unshipped_age(replicated.max(log.first_lsn().saturating_sub(1)))
                    }
                }
            } else {
                0.0
            },
            local_log_bytes: stats.disk_bytes,
            store_available: st.store_available,
            last_error: st.last_error.clone(),
            stopped: st.stopped.clone(),
            batches_shipped: st.batches_shipped,
            bytes_shipped: st.bytes_shipped,
            snapshots_taken: st.snapshots_taken,
            history_losses: st.history_losses,
        }
    }

    /// Seconds since the record after `lsn` was committed (0 if it cannot be read).
    fn oldest_unshipped_age(&self, lsn: Lsn) -> f64 {
        let ts = match self.shared.db.log().reader(lsn + 1) {
            Ok(mut r) => match r.next() {
                Some(Ok(rec)) => rec.timestamp_us,
                _ => return 0.0,
            },
            Err(_) => return 0.0,
        };
        crate::time::now_us().saturating_sub(ts) as f64 / 1e6
    }

    /// Ship every durable record in log batches (not only up to a snapshot: see
    /// [`Shipper::logged_lsn`]), then stop. Gives up after `timeout` (the store being down),
    /// with [`SnapshotError::Timeout`] saying how far shipping got; nothing is lost either way
    /// — the next shipper resumes after the store's last batch.
    pub fn close(mut self, timeout: Duration) -> Result<()> {
        let target = self.shared.db.log().durable_lsn();
        {
            let mut st = self.shared.state.lock();
            st.draining = true;
            st.flush = true;
            self.shared.work.notify_all();
        }
        let waited = self.wait_watermark(target, Some(timeout), &self.shared.logged, "logged");
        self.stop_thread();
        waited
    }

    /// Stop the thread (once: `close` stops it, then `Drop` finds nothing to stop).
    fn stop_thread(&mut self) {
        if self.thread.is_none() {
            return;
        }
        {
            let mut st = self.shared.state.lock();
            st.abort = true;
            self.shared.work.notify_all();
        }
        // An attach in flight can wait minutes on a store that accepts connections and never
        // answers: give it a moment, then let the thread finish it alone (it touches nothing
        // local before it sees the abort).
        {
            let deadline = Instant::now() + STOP_WAIT_ATTACHING;
            let mut st = self.shared.state.lock();
            while st.attaching && !st.exited {
                if self
                    .shared
                    .progress
                    .wait_until(&mut st, deadline)
                    .timed_out()
                {
                    break;
                }
            }
            if st.attaching && !st.exited {
                tracing::warn!(
                    store = %self.shared.store.describe(),
                    "stopping the shipper while it waits for the store to attach; not waiting for that request"
                );
                self.thread = None;
                return;
            }
        }
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the shipper thread panicked");
        }
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Resolves when an LSN is replicated; see [`Shipper::wait_replicated_async`].
pub struct ReplicatedFuture {
    shared: Arc<Shared>,
    lsn: Lsn,
}

impl Future for ReplicatedFuture {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let mut st = self.shared.state.lock();
        if let Some(r) = self.shared.check_replicated(&st, self.lsn) {
            return Poll::Ready(r);
        }
        // Registered under the state lock, which every notification takes: no lost wakeup.
        if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            st.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Whether the local log's transaction at `lsn` leaves the database in the state `m`
/// describes (same size and whole-database checksum). A missing record or one that is not a
/// transaction does not.
fn holds_state_of(log: &pagelog_log::Log, lsn: Lsn, m: &crate::format::Manifest) -> Result<bool> {
    Ok(match log.reader(lsn)?.next() {
        Some(rec) => pagelog_vfs::record::TxnRecord::decode(&rec?.payload)
            .is_ok_and(|txn| txn.checksum == m.checksum && txn.db_pages == m.db_pages),
        None => false,
    })
}

/// Check the store against the local log and claim the timeline.
fn attach(db: &Database, store: &dyn crate::store::ObjectStore) -> Result<Start> {
    let log = db.log();
    let (tl, id) = (log.timeline(), log.database_id());
    // Fencing rests on conditional creates: a store that does not honour them is refused
    // before anything is written (the S3 store checks its server once).
    store.check_conditional_writes()?;
    let t = Catalog::load_timeline(store, tl)?;
    let claim = match t.read_claim(store)? {
        Some(c) => c,
        None => {
            let info = TimelineInfo {
                database_id: id,
                timeline: tl,
                parent_timeline: 0,
                parent_lsn: 0,
                created_us: crate::time::now_us(),
                first_lsn: log.first_lsn(),
            };
            let key = timeline_key(tl);
            match store.put_if_absent(&key, &info.encode())? {
                PutOutcome::Created => info,
                PutOutcome::AlreadyExists => TimelineInfo::decode(&key, &store.get(&key)?)?,
            }
        }
    };
    if claim.database_id != id {
        return Err(SnapshotError::WrongDatabase {
            key: timeline_key(tl),
            expected: id,
            found: claim.database_id,
        });
    }
    let (remote_last, last_header) = t.last_lsn(store)?;
    let local_last = log.last_lsn();
    if remote_last > local_last {
        return Err(SnapshotError::StaleLocal {
            store: store.describe(),
            timeline: tl,
            local_lsn: local_last,
            remote_lsn: remote_last,
        });
    }
    let diverged = |lsn| SnapshotError::Diverged {
        store: store.describe(),
        timeline: tl,
        lsn,
    };
    if let Some(h) = last_header {
        if h.database_id != id {
            return Err(SnapshotError::WrongDatabase {
                key: batch_key(tl, h.first_lsn),
                expected: id,
                found: h.database_id,
            });
        }
        if !h.is_gap() && h.last_lsn >= log.first_lsn() {
            match log.reader(h.last_lsn)?.next() {
                Some(rec) => {
                    let rec = rec?;
                    if crc32fast::hash(&rec.payload) != h.last_payload_crc
                        || rec.timestamp_us != h.last_ts_us
                    {
                        return Err(diverged(h.last_lsn));
                    }
                }
                None => return Err(diverged(h.last_lsn)),
            }
        }
    }
    let newest_snap = t.complete_snapshots().last();
    if let Some(s) = newest_snap
        && s.lsn >= log.first_lsn()
        && s.lsn <= log.last_lsn()
        && !holds_state_of(log, s.lsn, &t.manifest(store, s)?)?
    {
        return Err(diverged(s.lsn));
    }
    let snapshot_lsn = newest_snap.map(|s| s.lsn).unwrap_or(0);
    let shipped_since_snapshot = t
        .batches
        .iter()
        .filter(|b| b.first_lsn > snapshot_lsn)
        .map(|b| b.size)
        .sum();
    // Batches continue from the last batch, not from the newest snapshot: a snapshot can reach
    // the store before the batches holding the records it covers (a crash right after it), and
    // point-in-time restore needs those records. They are still in the local log (it is only
    // dropped up to what batches hold); if not, a base snapshot records the gap.
    let batches_last = last_header.map(|h| h.last_lsn).unwrap_or(0);
    let next_lsn = if batches_last == 0 {
        claim.first_lsn.max(1)
    } else {
        batches_last + 1
    };
    // Without batches, the records before `next_lsn` must be in a snapshot: none when the
    // timeline starts at LSN 1; the one at the branch point that `restore --new-timeline`
    // uploads for a branch (its log starts right after it). Otherwise — a claim made again
    // over a wiped prefix, a branch whose base upload failed — a base snapshot is owed, and the
    // records it stands for are recorded as a gap.
    // On a branch that snapshot must be the state the local log starts from: its first record
    // (the restore's marker, which changes no page) holds the same size and checksum.
    let need_base = if batches_last == 0 {
        let below = t.complete_snapshots().find(|s| s.lsn + 1 == next_lsn);
        let marker_first = claim.parent_timeline != 0 && next_lsn == log.first_lsn();
        if let (Some(s), true) = (below, marker_first && next_lsn > 1)
            && !holds_state_of(log, next_lsn, &t.manifest(store, s)?)?
        {
            return Err(diverged(s.lsn));
        }
        next_lsn < log.first_lsn() || (next_lsn > 1 && below.is_none())
    } else {
        next_lsn < log.first_lsn()
    };
    Ok(Start {
        next_lsn,
        replicated: remote_last,
        need_base,
        snapshot_lsn,
        shipped_since_snapshot,
        last_batch: last_header.map(|h| h.first_lsn),
    })
}

/// The shipper thread's own state.
struct Worker {
    shared: Arc<Shared>,
    /// The store was checked and the starting point found.
    attached: bool,
    next_lsn: Lsn,
    need_base: bool,
    builder: BatchBuilder,
    first_pending_at: Option<Instant>,
    frozen: Option<(Lsn, Vec<u8>)>,
    shipped_since_snapshot: u64,
    last_snapshot_at: Instant,
    last_retention_at: Option<Instant>,
    backoff: Backoff,
    retry_at: Option<Instant>,
    backlog_released: bool,
    /// First LSN of the newest batch known to be in the store.
    last_batch: Option<Lsn>,
    /// When the store was last checked for lost history (or attached).
    last_store_check: Instant,
    /// Take a snapshot before shipping anything more: the store lost history (once attached
    /// again), or a base snapshot's gap batch is in the store and its snapshot is not.
    snapshot_owed: bool,
    /// A failed snapshot upload whose parts could not be deleted yet: deleted before the next
    /// attempt.
    unfinished_snapshot: Option<Lsn>,
}

impl Worker {
    fn new(shared: Arc<Shared>) -> Worker {
        let cap = shared.opts.max_retry_delay;
        Worker {
            shared,
            attached: false,
            next_lsn: 0,
            need_base: false,
            builder: BatchBuilder::new(),
            first_pending_at: None,
            frozen: None,
            shipped_since_snapshot: 0,
            last_snapshot_at: Instant::now(),
            last_retention_at: None,
            backoff: Backoff::new(Duration::from_millis(100), cap),
            retry_at: None,
            backlog_released: false,
            last_batch: None,
            last_store_check: Instant::now(),
            snapshot_owed: false,
            unfinished_snapshot: None,
        }
    }

    /// [`attach`], with the state saying so while it runs.
    fn attach_marked(&self) -> Result<Start> {
        self.shared.state.lock().attaching = true;
        let r = attach(&self.shared.db, &*self.shared.store);
        let mut st = self.shared.state.lock();
        st.attaching = false;
        self.shared.notify_progress(&mut st);
        r
    }

    /// Take the starting point an attach found.
    fn attached_at(&mut self, start: Start) {
        tracing::info!(
            store = %self.shared.store.describe(),
            timeline = self.shared.timeline,
            from_lsn = start.next_lsn,
            needs_snapshot = start.need_base,
            "shipper attached"
        );
        self.attached = true;
        self.next_lsn = start.next_lsn;
        self.need_base = start.need_base;
        self.shipped_since_snapshot = start.shipped_since_snapshot;
        self.last_batch = start.last_batch;
        self.last_store_check = Instant::now();
        {
            let mut st = self.shared.state.lock();
            st.snapshot_lsn = start.snapshot_lsn;
            st.store_available = true;
            st.last_error = None;
        }
        self.shared.set_replicated(start.replicated);
        self.shared.set_logged(start.next_lsn - 1);
    }

    /// The first attach, whose outcome [`Shipper::start`] may be waiting for. `Ok(false)`: the
    /// start took a refusal and the thread has nothing more to do.
    fn first_attach(&mut self) -> Result<bool> {
        let r = self.attach_marked();
        let refusal = match r {
            Ok(start) => {
                self.attached_at(start);
                None
            }
            Err(e) if is_transient(&e) => {
                tracing::warn!(error = %e, "store unreachable at start; will attach when it returns");
                Some(e)
            }
            Err(e) => {
                let mut st = self.shared.state.lock();
                if st.starter_waiting && refuses_start(&e) {
                    st.first_attach = Some(Err(e));
                    self.shared.notify_progress(&mut st);
                    return Ok(false);
                }
                if is_fatal(&e) {
                    return Err(e);
                }
                tracing::warn!(error = %e, "attaching to the store failed; will retry");
                drop(st);
                Some(e)
            }
        };
        let mut st = self.shared.state.lock();
        if let Some(e) = refusal {
            st.store_available = false;
            st.last_error = Some(e.to_string());
            self.retry_at = Some(Instant::now() + self.backoff.next_delay());
        }
        if st.starter_waiting {
            st.first_attach = Some(Ok(()));
        }
        self.shared.notify_progress(&mut st);
        Ok(true)
    }

    fn run(&mut self) -> Result<()> {
        loop {
            let (abort, draining, flush, snapshot_wanted) = {
                let st = self.shared.state.lock();
                (
                    st.abort,
                    st.draining,
                    st.flush,
                    st.snap_requested > st.snap_served,
                )
            };
            if abort {
                return Ok(());
            }
            let durable = self.shared.db.log().durable_lsn();
            let replicated = self.shared.replicated.load(Ordering::Acquire);
            let logged = self.shared.logged.load(Ordering::Acquire);
            if draining && self.frozen.is_none() && self.builder.is_empty() && logged >= durable {
                return Ok(());
            }
            // Respect the backoff while the store is down.
            if let Some(at) = self.retry_at {
                if Instant::now() < at {
                    self.maintain_local_log(replicated)?;
                    self.sleep_until(at);
                    continue;
                }
                self.retry_at = None;
            }
            let step = self.step(durable, flush || draining, snapshot_wanted);
            match step {
                Ok(true) => {
                    self.backoff.reset();
                    let mut st = self.shared.state.lock();
                    st.store_available = true;
                    st.last_error = None;
                }
                Ok(false) => {
                    let mut st = self.shared.state.lock();
                    if !st.abort && !st.flush {
                        self.shared.work.wait_for(&mut st, POLL);
                    }
                }
                Err(e) if !is_fatal(&e) => {
                    let delay = self.backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "shipping failed; will retry");
                    {
                        let mut st = self.shared.state.lock();
                        st.store_available = false;
                        st.last_error = Some(e.to_string());
                    }
                    self.retry_at = Some(Instant::now() + delay);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn sleep_until(&self, at: Instant) {
        let mut st = self.shared.state.lock();
        if !st.abort {
            let _ = self
                .shared
                .work
                .wait_until(&mut st, at.min(Instant::now() + POLL * 5));
        }
    }

    /// One unit of work; `Ok(true)` if something was uploaded, `Ok(false)` if idle.
    fn step(&mut self, durable: Lsn, flush: bool, snapshot_wanted: bool) -> Result<bool> {
        if !self.attached {
            let start = self.attach_marked()?;
            self.attached_at(start);
            return Ok(true);
        }
        // A base snapshot comes before anything else when the store cannot restore without it,
        // and so does a snapshot after the store lost history.
        if self.need_base || self.snapshot_owed {
            self.snapshot(false)?;
            return Ok(true);
        }
        if self.frozen.is_none() {
            self.gather(durable)?;
            if self.need_base {
                return Ok(false);
            }
            let due = !self.builder.is_empty()
                && (flush
                    || self.builder.raw_bytes() >= self.shared.opts.batch_bytes
                    || self
                        .first_pending_at
                        .is_some_and(|t| t.elapsed() >= self.shared.opts.batch_delay)
                    || snapshot_wanted);
            if due {
                let (_, obj) = self
                    .builder
                    .finish(self.shared.db.log().database_id(), self.shared.timeline)?;
                let first = self.next_lsn - self.builder.len() as u64;
                self.frozen = Some((first, obj));
                self.builder = BatchBuilder::new();
            }
        }
        if let Some((first, obj)) = &self.frozen {
            let key = batch_key(self.shared.timeline, *first);
            put_immutable(&*self.shared.store, self.shared.timeline, &key, obj)?;
            let last = self.next_lsn - 1;
            let size = obj.len() as u64;
            self.last_batch = Some(*first);
            self.frozen = None;
            self.first_pending_at = None;
            self.shipped_since_snapshot += size;
            {
                let mut st = self.shared.state.lock();
                st.store_available = true;
                st.last_error = None;
                st.batches_shipped += 1;
                st.bytes_shipped += size;
                if self.shared.replicated.load(Ordering::Acquire) >= durable || last >= durable {
                    st.flush = false;
                }
                st.pending_since = None;
            }
            self.shared.set_replicated(last);
            self.shared.set_logged(last);
            tracing::debug!(key, last, bytes = size, "batch shipped");
            self.backlog_released = false;
            self.maintain_local_log(last)?;
            if snapshot_wanted {
                self.snapshot(true)?;
            } else {
                self.after_ship()?;
            }
            self.check_store_if_due()?;
            return Ok(true);
        }
        {
            let mut st = self.shared.state.lock();
            if self.builder.is_empty() {
                st.flush = false;
            }
        }
        if snapshot_wanted {
            self.snapshot(true)?;
            return Ok(true);
        }
        self.check_store_if_due()?;
        self.run_retention_if_due()?;
        Ok(false)
    }

    /// Read durable records into the open batch, up to the batch size.
    fn gather(&mut self, durable: Lsn) -> Result<()> {
        if self.next_lsn > durable || self.builder.raw_bytes() >= self.shared.opts.batch_bytes {
            return Ok(());
        }
        let log = self.shared.db.log();
        if self.next_lsn < log.first_lsn() {
            // The records after the store's last LSN are gone locally (backlog limit, or a log
            // that started before the store was attached): continue from a snapshot.
            tracing::warn!(
                missing_from = self.next_lsn,
                local_first = log.first_lsn(),
                "the local log no longer holds the next records to ship; a snapshot will bridge the gap"
            );
            self.need_base = true;
            return Ok(());
        }
        if self.first_pending_at.is_none() {
            self.first_pending_at = Some(Instant::now());
            self.shared
                .state
                .lock()
                .pending_since
                .get_or_insert_with(Instant::now);
        }
        for rec in log.reader(self.next_lsn)? {
            let rec = rec?;
            if rec.lsn > durable {
                break;
            }
            self.builder
                .push(rec.lsn, rec.timestamp_us, rec.kind, &rec.payload)?;
            self.next_lsn = rec.lsn + 1;
            if self.builder.raw_bytes() >= self.shared.opts.batch_bytes {
                break;
            }
        }
        Ok(())
    }

    /// Take and upload a snapshot; `requested` answers a `snapshot_now` caller. A base snapshot
    /// (the store cannot continue from its last record) first records the skipped range as a
    /// gap batch at the next key: like any batch, it is a conditional create, so a second
    /// writer continuing the same timeline is fenced before any snapshot object is written.
    fn snapshot(&mut self, requested: bool) -> Result<()> {
        let asked = self.shared.state.lock().snap_requested;
        // The parts of an earlier failed attempt go first: no new attempt adds its own parts
        // while those are still in the store.
        let gap = std::cell::Cell::new(None);
        let r = match self.discard_unfinished_snapshot() {
            Ok(()) => self.upload_snapshot(&gap),
            Err(e) => Err(e),
        };
        // The caller gets the outcome, failure included (it may call again).
        if requested {
            let mut st = self.shared.state.lock();
            st.snap_served = asked;
            st.snap_result = Some(
                r.as_ref()
                    .map(|(info, _)| info.clone())
                    .map_err(|e| (e.to_string(), crate::upload::is_transient(e))),
            );
            self.shared.notify_progress(&mut st);
        }
        let (info, gap_from) = match r {
            Ok(x) => x,
            Err(e) => {
                if let Some((from, x)) = gap.get() {
                    self.gap_recorded(from, x);
                }
                return Err(e);
            }
        };
        {
            let mut st = self.shared.state.lock();
            st.store_available = true;
            st.last_error = None;
            st.snapshot_lsn = info.lsn;
            st.snapshots_taken += 1;
        }
        self.shipped_since_snapshot = 0;
        self.last_snapshot_at = Instant::now();
        self.snapshot_owed = false;
        if self.need_base {
            // Everything up to the snapshot is in the store now; ship from the next record.
            self.need_base = false;
            self.builder = BatchBuilder::new();
            self.frozen = None;
            self.next_lsn = info.lsn + 1;
            if gap_from.is_some() {
                self.last_batch = gap_from;
            }
            self.shared.set_logged(info.lsn);
        }
        // The store holds the state at the snapshot's LSN.
        self.shared.set_replicated(info.lsn);
        self.maintain_local_log(self.shared.replicated.load(Ordering::Acquire))?;
        self.run_retention(true)?;
        Ok(())
    }

    /// Delete the parts a failed snapshot upload left (see [`Worker::unfinished_snapshot`]).
    fn discard_unfinished_snapshot(&mut self) -> Result<()> {
        if let Some(lsn) = self.unfinished_snapshot {
            crate::snapshot::discard_unfinished_snapshot(
                &*self.shared.store,
                self.shared.timeline,
                lsn,
            )?;
            self.unfinished_snapshot = None;
        }
        Ok(())
    }

    /// Take and upload a snapshot (after a gap batch, for a base snapshot); with the first LSN
    /// of the gap batch if one was written. `gap_done` gets the gap batch's range once it is in the
    /// store, whatever happens to the snapshot.
    fn upload_snapshot(
        &mut self,
        gap_done: &std::cell::Cell<Option<(Lsn, Lsn)>>,
    ) -> Result<(SnapshotInfo, Option<Lsn>)> {
        let (need_base, from) = (self.need_base, self.next_lsn);
        let shared = &self.shared;
        let fence = move |x: Lsn, ts: u64| -> Result<()> {
            if !need_base || x < from {
                return Ok(());
            }
            let key = batch_key(shared.timeline, from);
            let gap = encode_gap_batch(shared.db.log().database_id(), shared.timeline, from, x, ts);
            put_immutable(&*shared.store, shared.timeline, &key, &gap)?;
            gap_done.set(Some((from, x)));
            tracing::warn!(
                from,
                to = x,
                "recorded a gap in the store's log; a snapshot follows"
            );
            Ok(())
        };
        let (r, leftover) = take_snapshot_tracked(
            &self.shared.db,
            &*self.shared.store,
            &self.shared.opts.snapshot,
            &fence,
        );
        self.unfinished_snapshot = leftover;
        r.map(|info| (info, gap_done.get().map(|(from, _)| from)))
    }

    /// A base snapshot failed after its gap batch (`from..=x`) was created. The store's log
    /// now continues after `x`: ship from there, after a snapshot at `x` or later (which the
    /// gap batch asks for). Trying the base snapshot again would write another gap batch at
    /// `from`, taken by this one, and fence the shipper against itself.
    fn gap_recorded(&mut self, from: Lsn, x: Lsn) {
        self.need_base = false;
        self.snapshot_owed = true;
        self.builder = BatchBuilder::new();
        self.frozen = None;
        self.first_pending_at = None;
        self.next_lsn = x + 1;
        self.last_batch = Some(from);
    }

    /// Every [`ShipperOptions::store_check_interval`], check that the store still holds the
    /// history this shipper shipped; if not, attach again (see the module docs).
    fn check_store_if_due(&mut self) -> Result<()> {
        let Some(every) = self.shared.opts.store_check_interval else {
            return Ok(());
        };
        if !self.attached || self.need_base || self.last_store_check.elapsed() < every {
            return Ok(());
        }
        self.last_store_check = Instant::now();
        if let Some(missing) = self.missing_history()? {
            self.history_lost(&missing);
        }
        Ok(())
    }

    /// The key of an object the store must hold and does not: the timeline claim (or a claim
    /// that is not this database's), the newest snapshot's manifest, the last batch. Three
    /// small reads; retention never deletes any of them.
    fn missing_history(&self) -> Result<Option<String>> {
        let store = &*self.shared.store;
        let (tl, id) = (self.shared.timeline, self.shared.db.log().database_id());
        let claim_key = timeline_key(tl);
        match get_decoded(
            &claim_key,
            || store.get(&claim_key),
            |b| TimelineInfo::decode(&claim_key, &b),
        ) {
            Ok(c) if c.database_id == id && c.timeline == tl => {}
            // Attaching again names who holds the timeline now, and refuses.
            Ok(_) => return Ok(Some(claim_key)),
            Err(SnapshotError::Store(StoreError::NotFound { .. })) => return Ok(Some(claim_key)),
            Err(e @ SnapshotError::Corrupt { .. }) => {
                // Not a loss of history; a restart or `verify` reports it.
                tracing::warn!(error = %e, "the timeline claim is damaged");
            }
            Err(e) => return Err(e),
        }
        let snapshot_lsn = self.shared.state.lock().snapshot_lsn;
        let manifest = (snapshot_lsn > 0).then(|| manifest_key(tl, snapshot_lsn));
        let batch = self.last_batch.map(|first| batch_key(tl, first));
        for key in manifest.into_iter().chain(batch) {
            match store.get_range(&key, 0..8) {
                Ok(_) => {}
                Err(StoreError::NotFound { .. }) => return Ok(Some(key)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// The store no longer holds history this shipper shipped: forget where shipping stood,
    /// attach again at the next step, and take a snapshot then.
    fn history_lost(&mut self, missing: &str) {
        tracing::warn!(
            store = %self.shared.store.describe(),
            timeline = self.shared.timeline,
            missing,
            "the store lost history this shipper had shipped (wiped prefix, deleted or expired objects): attaching again; a snapshot follows so that the latest state is restorable again"
        );
        self.attached = false;
        self.need_base = false;
        self.builder = BatchBuilder::new();
        self.frozen = None;
        self.first_pending_at = None;
        self.last_batch = None;
        self.snapshot_owed = true;
        let mut st = self.shared.state.lock();
        st.history_losses += 1;
        st.snapshot_lsn = 0;
        // The watermarks promised what the store no longer holds: from what it holds now (the
        // attach raises them again).
        self.shared.replicated.store(0, Ordering::Release);
        self.shared.logged.store(0, Ordering::Release);
        self.shared.notify_progress(&mut st);
    }

    fn after_ship(&mut self) -> Result<()> {
        let o = &self.shared.opts;
        let db_bytes = {
            let (_, pages) = self.shared.db.checksum();
            pages as u64 * self.shared.db.page_size() as u64
        };
        let by_size = o.auto_snapshot && self.shipped_since_snapshot > db_bytes;
        let by_time = o
            .snapshot_interval
            .is_some_and(|i| self.last_snapshot_at.elapsed() >= i);
        if by_size || by_time {
            self.snapshot(false)?;
        }
        Ok(())
    }

    fn run_retention_if_due(&mut self) -> Result<()> {
        self.run_retention(false)
    }

    fn run_retention(&mut self, after_snapshot: bool) -> Result<()> {
        let Some(window) = self.shared.opts.retention else {
            return Ok(());
        };
        let due = after_snapshot
            || self
                .last_retention_at
                .is_none_or(|t| t.elapsed() >= self.shared.opts.retention_check_interval);
        if !due {
            return Ok(());
        }
        self.last_retention_at = Some(Instant::now());
        apply_retention(&*self.shared.store, window, crate::time::now_us())?;
        Ok(())
    }

    /// The last LSN whose record is in a batch in the store (or in the base snapshot the
    /// batches continue from). A snapshot can make `replicated` run ahead of it.
    fn shipped_lsn(&self) -> Lsn {
        if !self.attached {
            return 0;
        }
        match &self.frozen {
            Some((first, _)) => first.saturating_sub(1),
            None => self.next_lsn.saturating_sub(1 + self.builder.len() as u64),
        }
    }

    /// Drop the local log prefix that is both checkpointed and shipped — or, past the backlog
    /// limit, only checkpointed.
    fn maintain_local_log(&mut self, replicated: Lsn) -> Result<()> {
        if !self.shared.opts.truncate_local_log {
            return Ok(());
        }
        // Records a snapshot covers but no batch holds yet are still to ship: keep them.
        let replicated = replicated.min(self.shipped_lsn());
        let log = self.shared.db.log();
        // Keep the last checkpointed transaction and everything after it: recovery and
        // snapshots start there.
        let ckpt_floor = self.shared.db.checkpoint_lsn().saturating_sub(1);
        let mut upto = ckpt_floor.min(replicated);
        if upto < ckpt_floor && log.stats().disk_bytes > self.shared.opts.max_backlog_bytes {
            if !self.backlog_released {
                tracing::warn!(
                    replicated,
                    limit = self.shared.opts.max_backlog_bytes,
                    "shipping backlog over its limit: dropping checkpointed records that were not shipped; the store's history will have a gap"
                );
                self.backlog_released = true;
            }
            upto = ckpt_floor;
        }
        if upto >= log.first_lsn() {
            log.truncate_prefix(upto)?;
        }
        Ok(())
    }
}
