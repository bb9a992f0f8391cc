//! # pagelog
//!
//! SQLite that never loses an acknowledged write. This facade re-exports the layers; the
//! `Database` API arrives with the facade issue.
#![deny(missing_docs)]

pub use pagelog_log as log;
