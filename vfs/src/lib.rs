//! # pagelog-vfs
//!
//! The SQLite VFS that turns every committed WAL transaction into one log record (work in
//! progress: see the VFS issue).
#![deny(missing_docs)]
