//! Store URLs and the options that go with them: a local path or `file://PATH` names a local
//! directory store, `s3://BUCKET[/PREFIX]` an S3 store configured by [`StoreOptions`] and the
//! standard AWS environment (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, `AWS_REGION`, the
//! credential chain).

use std::path::PathBuf;
use std::time::Duration;

use super::{StoreError, StoreResult};

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A local directory.
    Local(PathBuf),
    /// An S3 bucket and key prefix (no leading or trailing `/`; may be empty).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix inside the bucket.
        prefix: String,
    },
}

impl StoreUrl {
    /// Parse `s3://bucket/prefix`, `file:///path` or a plain path.
    pub fn parse(url: &str) -> StoreResult<StoreUrl> {
        let invalid = |detail: &str| StoreError::Invalid {
            what: "store URL".into(),
            detail: format!("{url:?}: {detail}"),
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let bucket_ok = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                })
                && !bucket.starts_with(['-', '.'])
                && !bucket.ends_with(['-', '.']);
            if !bucket_ok {
                return Err(invalid(
                    "bucket must be 3-63 characters of a-z, 0-9, '-' and '.'",
                ));
            }
            let prefix = prefix.trim_matches('/').to_string();
            if !prefix.is_empty() {
                super::validate_key(&prefix).map_err(|_| {
                    invalid("prefix segments must be non-empty and use only [A-Za-z0-9._-]")
                })?;
            }
            return Ok(StoreUrl::S3 {
                bucket: bucket.to_string(),
                prefix,
            });
        }
        if let Some(rest) = url.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(invalid("file:// URLs need an absolute path (file:///dir)"));
            }
            return Ok(StoreUrl::Local(PathBuf::from(rest)));
        }
        if url.contains("://") {
            return Err(invalid("unknown scheme (use s3://, file:// or a path)"));
        }
        if url.is_empty() {
            return Err(invalid("empty"));
        }
        Ok(StoreUrl::Local(PathBuf::from(url)))
    }
}

/// Settings for the S3 store (the local store needs none). Fields left `None` come from the
/// standard AWS environment and config files.
#[derive(Clone, Default)]
pub struct StoreOptions {
    /// Endpoint URL, e.g. `http://127.0.0.1:9000` for MinIO or an R2 account endpoint.
    /// Default: `AWS_ENDPOINT_URL_S3`, then `AWS_ENDPOINT_URL`, then AWS.
    pub endpoint: Option<String>,
    /// Region. Default: the AWS chain (`AWS_REGION`, profile), else `us-east-1`.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by MinIO, SeaweedFS and most
    /// self-hosted servers. Default: on when an endpoint is set, else off.
    pub force_path_style: Option<bool>,
    /// Static credentials (access key id, secret). Default: the AWS credential chain.
    pub credentials: Option<(String, String)>,
    /// Attempts per request, counting the first (retries use exponential backoff with jitter).
    /// Default 5.
    pub max_attempts: Option<u32>,
    /// Objects larger than this are uploaded in parts of this size. Default 16 MiB.
    pub multipart_threshold: Option<usize>,
    /// Ranged GETs in flight when downloading a large object, and part uploads in flight when
    /// uploading one. Default 8.
    pub download_concurrency: Option<usize>,
    /// Timeout of one request attempt. Default 60 s.
    pub attempt_timeout: Option<Duration>,
    /// Write even to a server that does not honour `If-None-Match: *`. Before its first
    /// conditional create, the S3 store checks that the server honours it (a probe object
    /// created twice; two PUTs and a DELETE once per store) and otherwise refuses to write with
    /// [`StoreError::ConditionalWritesUnsupported`]: pagelog's fencing of a second writer rests
    /// on conditional creates. With this set, that check only logs a warning — safe only if
    /// no two writers can ever ship to the same prefix. Default false; the environment
    /// variable `PAGELOG_S3_ALLOW_UNFENCED_WRITES=1` also sets it.
    pub allow_unfenced_writes: bool,
    /// A multi-thread tokio runtime to run requests on (a current-thread runtime is refused
    /// with [`StoreError::Invalid`](crate::StoreError::Invalid)). Default: the store starts its
    /// own small runtime.
    #[cfg(feature = "s3")]
    pub runtime: Option<tokio::runtime::Handle>,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print credentials.
        f.debug_struct("StoreOptions")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .field("max_attempts", &self.max_attempts)
            .field("multipart_threshold", &self.multipart_threshold)
            .field("download_concurrency", &self.download_concurrency)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("allow_unfenced_writes", &self.allow_unfenced_writes)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            StoreUrl::parse("s3://my-bucket/a/b/").unwrap(),
            StoreUrl::S3 {
                bucket: "my-bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            StoreUrl::parse("s3://my-bucket").unwrap(),
            StoreUrl::S3 {
                bucket: "my-bucket".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            StoreUrl::parse("file:///tmp/x").unwrap(),
            StoreUrl::Local("/tmp/x".into())
        );
        assert_eq!(
            StoreUrl::parse("rel/dir").unwrap(),
            StoreUrl::Local("rel/dir".into())
        );
        for bad in [
            "",
            "s3://",
            "s3://A",
            "s3://ab",
            "s3://bucket/a b",
            "s3://bucket/a//b",
            "file://rel",
            "gs://x/y",
        ] {
            assert!(StoreUrl::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn debug_hides_credentials() {
        let o = StoreOptions {
            credentials: Some(("AKIDEXAMPLE".into(), "s3cr3t-value".into())),
            ..StoreOptions::default()
        };
        let s = format!("{o:?}");
        assert!(!s.contains("AKIDEXAMPLE") && !s.contains("s3cr3t"), "{s}");
    }
}
