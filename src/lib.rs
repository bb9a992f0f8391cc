//! # pagelog
//!
//! SQLite that never loses an acknowledged write. This facade re-exports the layers; the
//! `Database` API (bookmarks, output gating, shipping, restore) arrives with the facade issue.
//!
//! - [`log`]: the segmented, group-committed, crash-safe log and the fs layer;
//! - [`vfs`]: the SQLite VFS that captures every committed transaction into the log.
#![deny(missing_docs)]

pub use pagelog_log as log;
pub use pagelog_vfs as vfs;
