//! Writing immutable objects: a conditional create that is safe to retry. If the key already
//! exists, the object is read back: the same bytes mean an earlier attempt of ours succeeded
//! (its answer was lost); different bytes, read twice, mean another writer owns the key —
//! fencing.

use std::time::Duration;

use crate::error::{Result, SnapshotError};
use crate::store::{ObjectStore, PutOutcome};

/// Create `key` with `data` unless it exists with the same bytes. Another writer's object
/// under the key is a [`SnapshotError::Fenced`]. Fencing stops a shipper for good, so one read
/// that differs is not enough: a body damaged on its way (which the S3 client does not always
/// check) would fence a writer against its own object. It takes two reads that differ from
/// `data`.
pub fn put_immutable(store: &dyn ObjectStore, timeline: u64, key: &str, data: &[u8]) -> Result<()> {
    match store.put_if_absent(key, data)? {
        PutOutcome::Created => Ok(()),
        PutOutcome::AlreadyExists => {
            let mine = |what: &str| -> Result<bool> {
                let same = store.get(key)? == data;
                if same {
                    tracing::debug!(key, "object already uploaded by an earlier attempt{what}");
                }
                Ok(same)
            };
            if mine("")? {
                Ok(())
            } else if mine(" (the first read back differed)")? {
                tracing::warn!(
                    key,
                    "reading back an object gave other bytes once, then ours"
                );
                Ok(())
            } else {
                Err(SnapshotError::Fenced {
                    store: store.describe(),
                    timeline,
                    key: key.to_string(),
                })
            }
        }
    }
}

/// Whether an error is worth retrying later (the store is down or slow), as opposed to one
/// that retrying cannot fix (fencing, corruption, bad credentials).
pub fn is_transient(e: &SnapshotError) -> bool {
    match e {
        SnapshotError::Store(s) => s.is_transient(),
        SnapshotError::SnapshotFailed { transient, .. } => *transient,
        _ => false,
    }
}

/// Whether an error means this shipper must stop for good: another writer, another
/// database, a history that does not match, or a store that cannot fence a second writer.
/// Other errors (the store down, a local I/O error) are retried.
pub fn is_fatal(e: &SnapshotError) -> bool {
    matches!(
        e,
        SnapshotError::Fenced { .. }
            | SnapshotError::WrongDatabase { .. }
            | SnapshotError::StaleLocal { .. }
            | SnapshotError::Diverged { .. }
            | SnapshotError::Store(crate::store::StoreError::ConditionalWritesUnsupported { .. })
    )
}

/// Whether an error at the first attach should fail the database's open. Only damage does
/// not: an object the attach reads (the timeline claim, the last batch's header, the newest
/// manifest) that is corrupt, truncated or gone since the listing. The local database is
/// healthy, so the open goes on; the shipper says what is wrong in its status and tries again
/// with backoff, and ships nothing until an attach succeeds. Every other error that is not
/// transient — another database, a stale or diverged copy, a store that cannot fence, no such
/// bucket, denied credentials, a wrong region or any other refusal of the server, a local
/// store the process may not write, objects of a newer format — still fails the open: no
/// wait mends those.
pub fn refuses_start(e: &SnapshotError) -> bool {
    use crate::store::StoreError;
    !matches!(
        e,
        SnapshotError::Corrupt { .. } | SnapshotError::Store(StoreError::NotFound { .. })
    )
}

/// Exponential backoff with jitter: the n-th delay is uniform in [d/2, d], d = min(cap, base·2ⁿ).
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `base`, never above `cap`.
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let jitter: f64 = rand::random();
        exp.mul_f64(0.5 + jitter / 2.0)
    }

    /// Start over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Retry `op` while it fails with a transient error, up to `attempts` tries.
pub fn with_retries<T>(attempts: u32, mut op: impl FnMut() -> Result<T>) -> Result<T> {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    let mut n = 0;
    loop {
        match op() {
            Err(e) if is_transient(&e) && n + 1 < attempts => {
                n += 1;
                let d = backoff.next_delay();
                tracing::debug!(error = %e, retry_in_ms = d.as_millis() as u64, "retrying");
                std::thread::sleep(d);
            }
            r => return r,
        }
    }
}
