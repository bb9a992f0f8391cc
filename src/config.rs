//! [`Config`]: how a [`crate::Database`] is opened — durability, the store, shipping, snapshot
//! and retention policy, checkpoints — as a builder.

use std::time::Duration;

use pagelog_snapshot::{ShipperOptions, StoreOptions, StoreRef};
use pagelog_vfs::Durability;

/// Where the database ships to.
#[derive(Debug, Clone)]
pub(crate) enum StoreSpec {
    /// A URL: a local path, `file://…` or `s3://bucket/prefix`.
    Url(String, StoreOptions),
    /// A store object.
    Store(StoreRef),
}

/// How to open a database. Start from [`Config::new`] (or `Default`) and chain setters.
///
/// ```
/// use std::time::Duration;
/// use pagelog::{Config, Durability};
/// let config = Config::new()
///     .durability(Durability::Gated)
///     .store_url("./backups/app")
///     .batch_delay(Duration::from_millis(200))
///     .retention(Some(Duration::from_secs(30 * 86400)));
/// # let _ = config;
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) durability: Durability,
    pub(crate) store: Option<StoreSpec>,
    pub(crate) shipper: ShipperOptions,
    pub(crate) page_size: u32,
    pub(crate) auto_checkpoint_pages: u32,
    pub(crate) busy_timeout: Duration,
    pub(crate) close_timeout: Duration,
    pub(crate) log_segment_size: u64,
    pub(crate) local_log_check_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            durability: Durability::Sync,
            store: None,
            shipper: ShipperOptions::default(),
            page_size: 4096,
            auto_checkpoint_pages: 1000,
            busy_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(30),
            log_segment_size: pagelog_log::LogOptions::default().segment_size,
            local_log_check_interval: Duration::from_secs(1),
        }
    }
}

impl Config {
    /// Sync durability, no store, SQLite's default checkpointing.
    pub fn new() -> Config {
        Config::default()
    }

    /// When a commit counts as done: [`Durability::Sync`] (default: durable when `COMMIT`
    /// returns) or [`Durability::Gated`] (returns at once; wait with
    /// [`crate::Database::wait_durable`] before releasing results).
    pub fn durability(mut self, durability: Durability) -> Config {
        self.durability = durability;
        self
    }

    /// Ship to the store at `url`: a local directory path, `file:///dir`, or
    /// `s3://bucket/prefix` (endpoint, region and credentials from the AWS environment, or
    /// [`Config::store_options`]).
    pub fn store_url(mut self, url: impl Into<String>) -> Config {
        let opts = match self.store.take() {
            Some(StoreSpec::Url(_, o)) => o,
            _ => StoreOptions::default(),
        };
        self.store = Some(StoreSpec::Url(url.into(), opts));
        self
    }

    /// S3 settings for [`Config::store_url`] (endpoint, region, path-style, credentials).
    pub fn store_options(mut self, options: StoreOptions) -> Config {
        let url = match self.store.take() {
            Some(StoreSpec::Url(u, _)) => u,
            _ => String::new(),
        };
        self.store = Some(StoreSpec::Url(url, options));
        self
    }

    /// Ship to a store object (e.g. one shared by several databases' prefixes, or a custom
    /// [`pagelog_snapshot::ObjectStore`]).
    pub fn store(mut self, store: StoreRef) -> Config {
        self.store = Some(StoreSpec::Store(store));
        self
    }

    /// Upload a batch once this many bytes of log wait (default 16 MiB).
    pub fn batch_bytes(mut self, bytes: usize) -> Config {
        self.shipper.batch_bytes = bytes;
        self
    }

    /// Upload a batch at most this long after its first record (default 1 s).
    pub fn batch_delay(mut self, delay: Duration) -> Config {
        self.shipper.batch_delay = delay;
        self
    }

    /// Snapshot when the log shipped since the last snapshot outgrows the database
    /// (default on).
    pub fn auto_snapshot(mut self, on: bool) -> Config {
        self.shipper.auto_snapshot = on;
        self
    }

    /// Also snapshot at this interval (default none).
    pub fn snapshot_interval(mut self, interval: Option<Duration>) -> Config {
        self.shipper.snapshot_interval = interval;
        self
    }

    /// Point-in-time window kept in the store (default 7 days; `None` keeps everything).
    pub fn retention(mut self, window: Option<Duration>) -> Config {
        self.shipper.retention = window;
        self
    }

    /// Local log kept while the store is unreachable before the store's history is allowed a
    /// gap (default 1 GiB; see [`ShipperOptions::max_backlog_bytes`]).
    pub fn max_backlog_bytes(mut self, bytes: u64) -> Config {
        self.shipper.max_backlog_bytes = bytes;
        self
    }

    /// How often the shipper checks that the store still holds what it shipped (three small
    /// reads; default 60 s, `None` never): a wiped prefix or deleted objects are then followed
    /// by a new attach and a snapshot (see [`ShipperOptions::store_check_interval`]).
    pub fn store_check_interval(mut self, interval: Option<Duration>) -> Config {
        self.shipper.store_check_interval = interval;
        self
    }

    /// All shipping options at once.
    pub fn shipper_options(mut self, options: ShipperOptions) -> Config {
        self.shipper = options;
        self
    }

    /// Page size of a new database (default 4096).
    pub fn page_size(mut self, bytes: u32) -> Config {
        self.page_size = bytes;
        self
    }

    /// SQLite's automatic checkpoint threshold in WAL pages for connections from
    /// [`crate::Database::connect`] (default 1000; 0 turns automatic checkpoints off).
    pub fn auto_checkpoint_pages(mut self, pages: u32) -> Config {
        self.auto_checkpoint_pages = pages;
        self
    }

    /// Busy timeout of connections (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Config {
        self.busy_timeout = timeout;
        self
    }

    /// How long [`crate::Database::close`] waits for the store to take what is durable
    /// (default 30 s). If the shipper is then still waiting for its first attach, close gives
    /// that request up to 2 s more and leaves it to finish alone.
    pub fn close_timeout(mut self, timeout: Duration) -> Config {
        self.close_timeout = timeout;
        self
    }

    /// Trim the local log (`<db>-pagelog/`) at all (default on). With a store, the shipper
    /// drops what is both shipped and checkpointed; without one, a background thread drops
    /// what precedes the last durable checkpoint. Off, the log grows until something else
    /// calls [`pagelog_log::Log::truncate_prefix`].
    pub fn truncate_local_log(mut self, on: bool) -> Config {
        self.shipper.truncate_local_log = on;
        self
    }

    /// Without a store, how often the local log is checked for a new checkpoint to trim up to
    /// (default 1 s; the check is off the commit path and does nothing without a new
    /// checkpoint). [`crate::Database::close`] trims once more.
    pub fn local_log_check_interval(mut self, interval: Duration) -> Config {
        self.local_log_check_interval = interval;
        self
    }

    /// Size of the local log's segments (default 64 MiB); the log is trimmed a whole segment
    /// at a time.
    pub fn log_segment_size(mut self, bytes: u64) -> Config {
        self.log_segment_size = bytes;
        self
    }
}
