//! # pagelog-snapshot
//!
//! The replicated half of pagelog: object stores (a local directory, S3), the bucket format,
//! the shipper that uploads the log in batches and takes snapshots, retention, and restore to
//! any point in time. See `snapshot/FORMAT.md` for the bucket layout.
#![deny(missing_docs)]

pub mod store;

pub use store::{
    ObjectMeta, ObjectStore, PutOutcome, StoreError, StoreOptions, StoreRef, StoreUrl, open_store,
};
