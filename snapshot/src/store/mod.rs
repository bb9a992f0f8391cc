//! The object store abstraction: a flat namespace of immutable objects under one prefix, with
//! conditional create, whole, ranged and streamed reads, listing and deletion. Two implementations: a
//! local directory ([`local::LocalStore`], the embedded default) and S3 (`s3::S3Store`, behind
//! the `s3` cargo feature). [`open_store`] picks one from a URL.
//!
//! The trait is blocking on purpose: the shipper runs on its own thread and restore is a plain
//! function, so users never need an async runtime. The S3 store drives its own tokio runtime
//! (or one the caller hands it) behind this interface.

pub mod local;
#[cfg(feature = "s3")]
pub mod s3;
pub mod url;

use std::fmt::Debug;
use std::io::Read;
use std::ops::Range;
use std::sync::Arc;

pub use url::{StoreOptions, StoreUrl};

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the store's prefix (never starts with `/`).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// What a conditional create did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object did not exist and now holds the data.
    Created,
    /// An object already existed under the key; it was left untouched.
    AlreadyExists,
}

/// What an object store call can fail with. Every variant names the key or the endpoint;
/// none ever carries credentials.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No object under the key.
    #[error("object {key} not found in {store}")]
    NotFound {
        /// The store (URL without credentials).
        store: String,
        /// The key.
        key: String,
    },
    /// The bucket does not exist.
    #[error("bucket {bucket} does not exist at {endpoint}")]
    NoSuchBucket {
        /// Bucket name.
        bucket: String,
        /// Endpoint URL.
        endpoint: String,
    },
    /// The credentials were refused (or are missing).
    #[error("access denied by {endpoint} for {key}: {message}")]
    AccessDenied {
        /// Endpoint URL.
        endpoint: String,
        /// The key (or bucket) being accessed.
        key: String,
        /// The server's message (never the credentials).
        message: String,
    },
    /// The endpoint could not be reached or answered with a transient error (5xx, 429, 408,
    /// 409, timeout, connection reset, an answer that did not fit the request such as another
    /// byte range than the one asked for). Worth retrying.
    #[error("{endpoint} unavailable while accessing {key}: {message}")]
    Unavailable {
        /// Endpoint URL or directory.
        endpoint: String,
        /// The key being accessed.
        key: String,
        /// What happened.
        message: String,
    },
    /// A local I/O error (local directory store).
    #[error("I/O error on {path} ({key}): {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The key.
        key: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The store does not support something pagelog needs (e.g. conditional create).
    #[error("{store} does not support {what}")]
    Unsupported {
        /// The store.
        store: String,
        /// What is missing.
        what: String,
    },
    /// The server does not honour `If-None-Match: *` on a create (it overwrote an existing
    /// object, or refused the condition): pagelog's fencing rests on it, so a second writer on
    /// the same prefix could not be fenced and would silently replace the first one's objects.
    /// Found by the S3 store's check before its first write; set
    /// [`StoreOptions::allow_unfenced_writes`] to write anyway (with a warning).
    #[error(
        "{endpoint} does not honour If-None-Match (conditional create) for {store}: a second writer on this prefix could not be fenced, so pagelog refuses to write ({message}); use a server that honours it, or set allow_unfenced_writes (PAGELOG_S3_ALLOW_UNFENCED_WRITES=1) if only one writer can ever use this prefix"
    )]
    ConditionalWritesUnsupported {
        /// Endpoint URL.
        endpoint: String,
        /// The store.
        store: String,
        /// What the server did.
        message: String,
    },
    /// A key or URL is not valid.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// What was invalid (key, URL, option).
        what: String,
        /// Why.
        detail: String,
    },
    /// Any other error from the store, with the key.
    #[error("{store} failed on {key}: {message}")]
    Other {
        /// The store.
        store: String,
        /// The key.
        key: String,
        /// What happened.
        message: String,
    },
}

impl StoreError {
    /// The store error inside an `io::Error` that an [`ObjectReader`] returned, if it holds one
    /// (the `io::Error` itself is returned otherwise).
    pub fn from_io(e: std::io::Error) -> std::result::Result<StoreError, std::io::Error> {
        e.downcast::<StoreError>()
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Unavailable { .. } => true,
            StoreError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::StorageFull
                    | std::io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }
}

/// Result alias for store calls.
pub type StoreResult<T> = std::result::Result<T, StoreError>;

/// A flat store of immutable objects. Keys are relative to the store's prefix, use `/` as a
/// separator and contain only `[A-Za-z0-9._/-]`.
pub trait ObjectStore: Send + Sync + Debug {
    /// A description for messages: the URL without credentials.
    fn describe(&self) -> String;

    /// Create `key` holding `data` only if no object exists under it (S3 `If-None-Match: *`).
    /// The object becomes visible whole or not at all.
    fn put_if_absent(&self, key: &str, data: &[u8]) -> StoreResult<PutOutcome>;

    /// The whole object.
    fn get(&self, key: &str) -> StoreResult<Vec<u8>>;

    /// The whole object as a stream, for reading large objects in bounded memory (restore
    /// decodes log batches and snapshot parts as they arrive). A failure while reading comes
    /// out of [`Read::read`] as an `io::Error` wrapping the [`StoreError`] (see
    /// [`StoreError::from_io`]); a stream that ends early is an error, never a short object.
    ///
    /// The default reads the whole object with [`ObjectStore::get`]; stores that can stream
    /// override it.
    fn get_reader(&self, key: &str) -> StoreResult<ObjectReader> {
        Ok(Box::new(std::io::Cursor::new(self.get(key)?)))
    }

    /// Bytes `range` of the object (the range is clamped to the object's end).
    fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Vec<u8>>;

    /// Every object whose key starts with `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>>;

    /// Delete `key`; deleting a missing key is not an error.
    fn delete(&self, key: &str) -> StoreResult<()>;

    /// Check that [`ObjectStore::put_if_absent`] really fails on an existing key, which fencing
    /// a second writer rests on. The S3 store checks the server once (and also before its first
    /// conditional create, whoever calls it); the default, for stores whose create is exclusive
    /// by construction, does nothing.
    fn check_conditional_writes(&self) -> StoreResult<()> {
        Ok(())
    }

    /// Abort the multipart uploads in progress in the store, of keys `ours` accepts (a bucket
    /// may be shared with other programs), that began more than `older_than` ago, and return
    /// how many. Two cases leave such uploads behind, holding parts the service bills for: a
    /// `CreateMultipartUpload` whose answer was lost (its retry started another), and an abort
    /// that failed on every attempt. Retention calls this with a day
    /// ([`crate::retention::ABANDONED_UPLOAD_AGE`]) and the keys of pagelog's format. The
    /// default, for stores without multipart uploads, does nothing.
    fn abort_stale_uploads(
        &self,
        _older_than: std::time::Duration,
        _ours: fn(&str) -> bool,
    ) -> StoreResult<usize> {
        Ok(0)
    }
}

/// An object being read as a stream: see [`ObjectStore::get_reader`].
pub type ObjectReader = Box<dyn Read + Send>;

/// A shared store.
pub type StoreRef = Arc<dyn ObjectStore>;

/// Open the store a URL names: a local path or `file://...` (created if missing), or
/// `s3://bucket/prefix` (needs the `s3` feature).
pub fn open_store(url: &str, options: &StoreOptions) -> StoreResult<StoreRef> {
    match StoreUrl::parse(url)? {
        StoreUrl::Local(path) => Ok(Arc::new(local::LocalStore::open(&path)?)),
        #[cfg(feature = "s3")]
        StoreUrl::S3 { bucket, prefix } => {
            Ok(Arc::new(s3::S3Store::open(&bucket, &prefix, options)?))
        }
        #[cfg(not(feature = "s3"))]
        StoreUrl::S3 { .. } => {
            let _ = options;
            Err(StoreError::Unsupported {
                store: url.to_string(),
                what: "s3:// URLs (build pagelog with the `s3` feature)".to_string(),
            })
        }
    }
}

/// Check a key: non-empty, relative, no `..` segment, only `[A-Za-z0-9._/-]`.
pub fn validate_key(key: &str) -> StoreResult<()> {
    let bad = |why: &str| StoreError::Invalid {
        what: "object key".into(),
        detail: format!("{key:?}: {why}"),
    };
    if key.is_empty() {
        return Err(bad("empty"));
    }
    if key.starts_with('/') || key.ends_with('/') {
        return Err(bad("starts or ends with '/'"));
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(bad("empty, '.' or '..' segment"));
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
    {
        return Err(bad("characters outside [A-Za-z0-9._/-]"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(validate_key("t0000000001/log/00000000000000000001.plb").is_ok());
        for bad in ["", "/a", "a/", "a//b", "a/../b", "a b", "ä", "./a"] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
    }
}
