//! Local log retention without a store: a small background thread that drops the local log's
//! prefix that recovery no longer needs.
//!
//! With a store, the shipper truncates the local log up to what is both shipped and
//! checkpointed, and that stays the only rule. Without one nothing would ever trim the log, so
//! the facade runs this instead, with the VFS's rule
//! ([`pagelog_vfs::Database::log_truncation_bound`]): recovery replays from the last checkpoint
//! mark, and the VFS syncs the main file before it appends a mark; once the mark is durable,
//! every record before the last checkpointed transaction may go (the same floor as the
//! shipper's `ckpt_floor`: that transaction and its mark stay, so recovery still finds the
//! database's size and checksum). The thread runs off the commit path and acts only when a new
//! checkpoint was published.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use pagelog_log::Lsn;
use parking_lot::{Condvar, Mutex};

use crate::error::Result;

/// Truncate the local log up to [`pagelog_vfs::Database::log_truncation_bound`]; returns the
/// checkpoint LSN it acted on (so that a caller can skip rounds with no new checkpoint).
pub(crate) fn trim_local_log(db: &pagelog_vfs::Database) -> Result<Lsn> {
    let ckpt = db.checkpoint_lsn();
    let dropped = db.trim_log()?;
    if dropped > 0 {
        tracing::debug!(db = %db.path().display(), ckpt, dropped, "local log trimmed");
    }
    Ok(ckpt)
}

/// The background thread that trims the local log of a database without a store.
pub(crate) struct LocalRetention {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl LocalRetention {
    /// Check every `interval` for a new checkpoint, and trim after one.
    pub(crate) fn start(
        db: Arc<pagelog_vfs::Database>,
        interval: Duration,
    ) -> std::io::Result<LocalRetention> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("pagelog-retention".into())
            .spawn(move || {
                let mut done: Lsn = 0;
                let mut warned = false;
                loop {
                    {
                        let mut stopped = stop2.0.lock();
                        if !*stopped {
                            stop2.1.wait_for(&mut stopped, interval);
                        }
                        if *stopped {
                            return;
                        }
                    }
                    if db.checkpoint_lsn() <= done {
                        continue;
                    }
                    match trim_local_log(&db) {
                        Ok(ckpt) => {
                            done = ckpt;
                            warned = false;
                        }
                        Err(e) if !warned => {
                            tracing::warn!(db = %db.path().display(), error = %e, "trimming the local log");
                            warned = true;
                        }
                        Err(_) => {}
                    }
                }
            })?;
        Ok(LocalRetention {
            stop,
            handle: Some(handle),
        })
    }

    /// Stop the thread and wait for it.
    pub(crate) fn stop(&mut self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if let Some(h) = self.handle.take()
            && h.join().is_err()
        {
            tracing::error!("the local log retention thread panicked");
        }
    }
}

impl Drop for LocalRetention {
    fn drop(&mut self) {
        self.stop();
    }
}
