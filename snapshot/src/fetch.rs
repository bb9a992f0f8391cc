//! Parallel downloads with bounded memory: [`fetch_ordered`] fetches objects on a few threads,
//! at most `window` ahead of the consumer, and hands them over in order; and the second chance
//! an object failing its checksums gets before it is called corrupt ([`once_more_if_corrupt`]).

use std::collections::BTreeMap;

use parking_lot::{Condvar, Mutex};

use crate::error::{Result, SnapshotError};
use crate::store::StoreResult;

/// Fetch an object with `get` and decode it with `decode`, fetching it once more if it fails
/// its checksums: see [`once_more_if_corrupt`].
pub fn get_decoded<T>(
    key: &str,
    get: impl Fn() -> StoreResult<Vec<u8>>,
    mut decode: impl FnMut(Vec<u8>) -> Result<T>,
) -> Result<T> {
    once_more_if_corrupt(key, || decode(get()?))
}

/// Run `read` (which fetches and decodes the object `key`) once more when it finds the bytes
/// failing their checksums ([`SnapshotError::Corrupt`]) before the object is called corrupt: a
/// body damaged on its way is not a damaged object (the S3 client checks a whole-object
/// checksum only on some reads: not on ranged reads of part of an object, nor on objects
/// uploaded in parts). `read` must be safe to run again after a partial run.
pub fn once_more_if_corrupt<T>(key: &str, mut read: impl FnMut() -> Result<T>) -> Result<T> {
    match read() {
        Err(SnapshotError::Corrupt { reason, .. }) => {
            tracing::warn!(key, %reason, "object failed its checksums; fetching it again");
            read()
        }
        r => r,
    }
}

struct State<T> {
    next: usize,
    consumed: usize,
    ready: BTreeMap<usize, Result<T>>,
    stop: bool,
}

/// Fetch items `0..count` with `threads` workers, never more than `window` items beyond the
/// one being consumed, and call `consume(i, item)` in index order. Stops at the first error
/// (of a fetch or of `consume`), or when `consume` returns `Ok(false)`.
pub fn fetch_ordered<T, F, C>(
    count: usize,
    threads: usize,
    window: usize,
    fetch: F,
    mut consume: C,
) -> Result<()>
where
    T: Send,
    F: Fn(usize) -> Result<T> + Sync,
    C: FnMut(usize, T) -> Result<bool>,
{
    if count == 0 {
        return Ok(());
    }
    let window = window.max(1);
    let state = Mutex::new(State {
        next: 0,
        consumed: 0,
        ready: BTreeMap::new(),
        stop: false,
    });
    let cv = Condvar::new();
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, count) {
            scope.spawn(|| {
                loop {
                    let i = {
                        let mut st = state.lock();
                        while !st.stop && st.next < count && st.next >= st.consumed + window {
                            cv.wait(&mut st);
                        }
                        if st.stop || st.next >= count {
                            return;
                        }
                        st.next += 1;
                        st.next - 1
                    };
                    let r = fetch(i);
                    let mut st = state.lock();
                    st.ready.insert(i, r);
                    cv.notify_all();
                }
            });
        }
        let result = (|| {
            for i in 0..count {
                let item = {
                    let mut st = state.lock();
                    loop {
                        if let Some(r) = st.ready.remove(&i) {
                            st.consumed = i + 1;
                            cv.notify_all();
                            break r;
                        }
                        cv.wait(&mut st);
                    }
                };
                if !consume(i, item?)? {
                    break;
                }
            }
            Ok(())
        })();
        state.lock().stop = true;
        cv.notify_all();
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SnapshotError;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn in_order_bounded_and_stops_on_error() {
        let mut seen = Vec::new();
        let in_flight = AtomicUsize::new(0);
        let max_ahead = AtomicUsize::new(0);
        let consumed = AtomicUsize::new(0);
        fetch_ordered(
            50,
            4,
            3,
            |i| {
                in_flight.fetch_add(1, Ordering::SeqCst);
                max_ahead.fetch_max(i - consumed.load(Ordering::SeqCst), Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_micros((i as u64 * 37) % 300));
                in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok(i * 2)
            },
            |i, v| {
                seen.push((i, v));
                consumed.store(i + 1, Ordering::SeqCst);
                Ok(true)
            },
        )
        .unwrap();
        assert_eq!(seen, (0..50).map(|i| (i, i * 2)).collect::<Vec<_>>());
        assert!(
            max_ahead.load(Ordering::SeqCst) <= 3,
            "never more than the window ahead"
        );

        let mut n = 0;
        let err = fetch_ordered(
            100,
            2,
            4,
            |i| {
                if i == 7 {
                    Err(SnapshotError::Config("boom".into()))
                } else {
                    Ok(i)
                }
            },
            |_, _| {
                n += 1;
                Ok(true)
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("boom"));
        assert_eq!(n, 7);
    }
}
