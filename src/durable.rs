//! Async waiting for durability: [`DurableFuture`] resolves once the log is durable up to an
//! LSN. One helper thread per database (started on first use) runs the blocking group-commit
//! wait for the highest LSN asked for and wakes every future it covers, so thousands of
//! pending requests cost one thread and one fsync per group, with any executor.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use pagelog_log::Lsn;
use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};

#[derive(Default)]
struct Pending {
    wakers: Vec<(Lsn, Waker)>,
    stop: bool,
}

/// The per-database waiter thread's shared state.
pub(crate) struct DurableWaiter {
    db: Arc<pagelog_vfs::Database>,
    pending: Mutex<Pending>,
    cv: Condvar,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl DurableWaiter {
    pub(crate) fn new(db: Arc<pagelog_vfs::Database>) -> Arc<DurableWaiter> {
        Arc::new(DurableWaiter {
            db,
            pending: Mutex::new(Pending::default()),
            cv: Condvar::new(),
            thread: Mutex::new(None),
        })
    }

    fn check(&self, lsn: Lsn) -> Option<Result<()>> {
        let log = self.db.log();
        if log.durable_lsn() >= lsn {
            return Some(Ok(()));
        }
        if let Some(cause) = log.failure() {
            return Some(Err(Error::Config(format!(
                "the log failed and acknowledges nothing more: {cause}"
            ))));
        }
        if lsn > log.last_lsn() {
            return Some(Err(Error::Config(format!(
                "LSN {lsn} is beyond the last LSN {}",
                log.last_lsn()
            ))));
        }
        None
    }

    fn is_registered(&self, lsn: Lsn, waker: &Waker) -> bool {
        self.pending
            .lock()
            .wakers
            .iter()
            .any(|(l, w)| *l == lsn && w.will_wake(waker))
    }

    fn register(self: &Arc<Self>, lsn: Lsn, waker: &Waker) {
        let mut p = self.pending.lock();
        p.wakers.push((lsn, waker.clone()));
        self.cv.notify_one();
        drop(p);
        let mut t = self.thread.lock();
        if t.is_none() {
            let me = self.clone();
            match std::thread::Builder::new()
                .name("pagelog-durable".into())
                .spawn(move || me.run())
            {
                Ok(h) => *t = Some(h),
                Err(e) => tracing::error!(error = %e, "cannot start the durability waiter"),
            }
        }
    }

    fn run(&self) {
        loop {
            let target = {
                let mut p = self.pending.lock();
                while p.wakers.is_empty() && !p.stop {
                    self.cv.wait(&mut p);
                }
                if p.stop {
                    for (_, w) in p.wakers.drain(..) {
                        w.wake();
                    }
                    return;
                }
                p.wakers.iter().map(|(l, _)| *l).max().unwrap_or(0)
            };
            // Errors reach each future through its own check when it is polled again.
            let _ = self.db.wait_durable(target.min(self.db.log().last_lsn()));
            let durable = self.db.log().durable_lsn();
            let failed = self.db.log().failure().is_some();
            let mut p = self.pending.lock();
            let (ready, rest): (Vec<_>, Vec<_>) = p
                .wakers
                .drain(..)
                .partition(|(l, _)| failed || *l <= durable);
            p.wakers = rest;
            drop(p);
            for (_, w) in ready {
                w.wake();
            }
        }
    }

    pub(crate) fn stop(&self) {
        self.pending.lock().stop = true;
        self.cv.notify_all();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

/// Resolves once the log is durable up to an LSN (or fails for good). From
/// [`crate::Database::wait_durable_async`].
pub struct DurableFuture {
    pub(crate) waiter: Arc<DurableWaiter>,
    pub(crate) lsn: Lsn,
    /// The waker last registered (a poll with the same waker does not register again).
    pub(crate) registered: Option<Waker>,
}

impl Future for DurableFuture {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if let Some(r) = self.waiter.check(self.lsn) {
            return Poll::Ready(r);
        }
        // Register once per waker (the waiter wakes each registration once, then drops it; a
        // woken future polled again while still pending registers anew).
        let fresh = !self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()) && self.waiter.is_registered(self.lsn, w));
        if fresh {
            self.waiter.register(self.lsn, cx.waker());
            self.registered = Some(cx.waker().clone());
        }
        // The LSN may have become durable between the check and the registration.
        match self.waiter.check(self.lsn) {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }
}
