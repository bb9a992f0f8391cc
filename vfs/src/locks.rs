//! In-process lock tables. One process owns a database (enforced by the log's `LOCK` file), so
//! SQLite's file locks and WAL-index (shm) locks only arbitrate between connections of this
//! process and are kept in memory, keyed by a per-handle id.

use std::collections::HashMap;

/// SQLite's file lock levels.
pub const NONE: i32 = 0;
/// Shared lock.
pub const SHARED: i32 = 1;
/// Reserved lock.
pub const RESERVED: i32 = 2;
/// Pending lock.
pub const PENDING: i32 = 3;
/// Exclusive lock.
pub const EXCLUSIVE: i32 = 4;

/// The main database file's lock state across this process's connections.
#[derive(Debug, Default)]
pub struct FileLocks {
    levels: HashMap<u64, i32>,
    pending: Option<u64>,
}

impl FileLocks {
    fn others_at_least(&self, me: u64, level: i32) -> bool {
        self.levels.iter().any(|(h, l)| *h != me && *l >= level)
    }

    /// Current level of `handle`.
    pub fn level(&self, handle: u64) -> i32 {
        self.levels.get(&handle).copied().unwrap_or(NONE)
    }

    /// Raise `handle` to `level`; false means busy.
    pub fn lock(&mut self, handle: u64, level: i32) -> bool {
        let cur = self.level(handle);
        if level <= cur {
            return true;
        }
        match level {
            SHARED => {
                if self.others_at_least(handle, EXCLUSIVE)
                    || self.pending.is_some_and(|p| p != handle)
                {
                    return false;
                }
            }
            RESERVED => {
                if self.others_at_least(handle, RESERVED) {
                    return false;
                }
            }
            _ => {
                // PENDING or EXCLUSIVE: no other lock may exist; claim PENDING meanwhile so that
                // no new reader gets in.
                if self.others_at_least(handle, RESERVED)
                    || self.pending.is_some_and(|p| p != handle)
                {
                    return false;
                }
                self.pending = Some(handle);
                if level == EXCLUSIVE && !self.others_at_least(handle, SHARED) {
                    self.pending = None;
                    self.levels.insert(handle, EXCLUSIVE);
                    return true;
                }
                if level == PENDING {
                    self.levels.insert(handle, PENDING);
                    return true;
                }
                return false;
            }
        }
        self.levels.insert(handle, level);
        true
    }

    /// Lower `handle` to `level` (SHARED or NONE).
    pub fn unlock(&mut self, handle: u64, level: i32) {
        if self.pending == Some(handle) {
            self.pending = None;
        }
        if level <= NONE {
            self.levels.remove(&handle);
        } else if self.level(handle) > level {
            self.levels.insert(handle, level);
        }
    }

    /// Whether any connection holds RESERVED or more.
    pub fn reserved(&self) -> bool {
        self.levels.values().any(|l| *l >= RESERVED) || self.pending.is_some()
    }
}

/// Number of WAL-index locks (SQLITE_SHM_NLOCK).
pub const SHM_NLOCK: usize = 8;

/// WAL-index (shm) locks across this process's connections.
#[derive(Debug, Default)]
pub struct ShmLocks {
    exclusive: [Option<u64>; SHM_NLOCK],
    shared: [Vec<u64>; SHM_NLOCK],
}

impl ShmLocks {
    /// Take shared locks on `range`; false means busy.
    pub fn lock_shared(&mut self, handle: u64, range: std::ops::Range<usize>) -> bool {
        if range
            .clone()
            .any(|i| self.exclusive[i].is_some_and(|h| h != handle))
        {
            return false;
        }
        for i in range {
            if !self.shared[i].contains(&handle) {
                self.shared[i].push(handle);
            }
        }
        true
    }

    /// Take exclusive locks on `range`; false means busy.
    pub fn lock_exclusive(&mut self, handle: u64, range: std::ops::Range<usize>) -> bool {
        let busy = range.clone().any(|i| {
            self.exclusive[i].is_some_and(|h| h != handle)
                || self.shared[i].iter().any(|h| *h != handle)
        });
        if busy {
            return false;
        }
        for i in range {
            self.exclusive[i] = Some(handle);
        }
        true
    }

    /// Release `handle`'s locks on `range`.
    pub fn unlock(&mut self, handle: u64, range: std::ops::Range<usize>) {
        for i in range {
            if self.exclusive[i] == Some(handle) {
                self.exclusive[i] = None;
            }
            self.shared[i].retain(|h| *h != handle);
        }
    }

    /// Whether `handle` holds a shared lock on any slot of `range`.
    pub fn holds_shared(&self, handle: u64, range: std::ops::Range<usize>) -> bool {
        range.into_iter().any(|i| self.shared[i].contains(&handle))
    }

    /// Release everything `handle` holds.
    pub fn release_all(&mut self, handle: u64) {
        self.unlock(handle, 0..SHM_NLOCK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_locks_follow_sqlite_rules() {
        let mut l = FileLocks::default();
        assert!(l.lock(1, SHARED) && l.lock(2, SHARED));
        assert!(l.lock(1, RESERVED));
        assert!(!l.lock(2, RESERVED), "one reserved at a time");
        assert!(l.reserved());
        assert!(!l.lock(1, EXCLUSIVE), "2 still reads");
        assert!(!l.lock(3, SHARED), "pending keeps new readers out");
        l.unlock(2, NONE);
        assert!(l.lock(1, EXCLUSIVE));
        assert!(!l.lock(2, SHARED));
        l.unlock(1, SHARED);
        assert!(l.lock(2, SHARED));
        l.unlock(1, NONE);
        l.unlock(2, NONE);
        assert!(!l.reserved());
    }

    #[test]
    fn shm_locks_shared_and_exclusive() {
        let mut s = ShmLocks::default();
        assert!(s.lock_shared(1, 3..4));
        assert!(s.lock_shared(2, 3..4));
        assert!(!s.lock_exclusive(3, 3..4));
        assert!(s.lock_exclusive(3, 0..1));
        assert!(!s.lock_shared(1, 0..1));
        s.release_all(1);
        s.unlock(2, 3..4);
        assert!(s.lock_exclusive(3, 3..5));
        s.release_all(3);
        assert!(s.lock_exclusive(1, 0..8));
    }
}
