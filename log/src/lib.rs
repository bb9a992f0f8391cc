//! # pagelog-log
//!
//! The local, durable, append-only log under pagelog: segmented files of checksummed records
//! with dense per-database LSNs, group commit (one `fdatasync` for many appenders), a latch
//! for failed syncs, crash recovery that tells a torn tail from corruption, memory-mapped
//! readers, and prefix truncation with segment recycling.
//!
//! It also holds the fs layer ([`fs`]) shared by every pagelog crate: the real file system
//! and a simulated crashing disk for tests.
//!
//! The byte layout is documented in `FORMAT.md` next to this crate's `Cargo.toml`.
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod error;
pub mod format;
pub mod fs;
mod reader;
mod recovery;
mod segment;
mod writer;

pub use error::{LogError, Result};
pub use reader::{LogReader, RecordInfo};
pub use recovery::RecoveryReport;
pub use writer::{LOCK_FILE, Log, LogOptions, LogStats, Record};

/// Log sequence number: dense, +1 per record, starting at 1 in a new log (0 means "none").
pub type Lsn = u64;
