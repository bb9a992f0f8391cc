//! # pagelog-snapshot
//!
//! Object storage, log shipping, snapshots and restore (work in progress: see the object
//! storage issue).
#![deny(missing_docs)]
