//! The S3 store: [`S3Store`] implements [`ObjectStore`] on an S3 bucket (AWS, or any
//! S3-compatible server: MinIO, R2, moto, ...) with aws-sdk-s3 on tokio.
//!
//! What it owns:
//! - the SDK client and its configuration: endpoint (options, else `AWS_ENDPOINT_URL_S3`, else
//!   `AWS_ENDPOINT_URL`, else AWS — the SDK itself reads both variables and the profile's
//!   `endpoint_url`), path-style addressing (on by default when an endpoint is set), region
//!   (options, else the AWS chain — without EC2 instance metadata when an endpoint outside
//!   AWS is set —, else `us-east-1`), credentials (options, else the standard
//!   chain: environment, profile, web identity, ECS, IMDS; SSO profiles are not built in),
//!   the SDK's standard retries (`max_attempts`, exponential backoff with jitter), a per-attempt
//!   timeout and a connect timeout;
//! - a small tokio runtime (two workers) unless [`StoreOptions::runtime`] hands it one;
//! - conditional create: PutObject with `If-None-Match: *`; objects larger than the multipart
//!   threshold go up as a multipart upload whose parts are sent in parallel and whose
//!   CompleteMultipartUpload carries `If-None-Match: *` (the upload is aborted on any failure);
//!   412 means the key exists, 409 (a conflicting concurrent write) is settled by a HEAD and
//!   another try;
//! - the fencing check: before its first conditional create a store makes sure the server
//!   honours `If-None-Match: *` (some S3 servers, s3rver for one, ignore it and let a second
//!   writer overwrite the first). It creates a uniquely named probe object under the prefix
//!   (`pagelog-probe/…`), creates it again and requires a 412, then deletes it: two PUTs and a
//!   DELETE, once per store. A server that accepts the second create (or answers a conditional
//!   create with 501, or 400 naming the header) is [`StoreError::ConditionalWritesUnsupported`],
//!   unless [`StoreOptions::allow_unfenced_writes`] downgrades that to a warning;
//! - reads: one ranged GET, and when the first answer's `Content-Range` shows more, the rest in
//!   parallel ranged GETs (`If-Match` the first answer's ETag) reassembled in order. A body
//!   shorter than its headers promise is an error and is fetched again, never returned;
//! - streamed reads ([`ObjectStore::get_reader`]): consecutive 1 MiB ranged GETs, two ahead of
//!   the reader, each retried on its own, so memory stays at three chunks whatever the object's
//!   size;
//! - the mapping of SDK errors to [`StoreError`], each naming the key and endpoint and never the
//!   credentials. What a later try may mend is [`StoreError::Unavailable`]: no answer, a
//!   timeout, 5xx, 429, 408, 409 (bare, `ConditionalRequestConflict` or `OperationAborted`), an
//!   answer that does not fit the request (another range than asked for, an object that
//!   changed while read) and a request task that panicked. A request task cancelled by its
//!   runtime's shutdown is [`StoreError::Other`].
//!
//! The [`ObjectStore`] methods block the calling thread until the request finishes: the work
//! runs as a task on the runtime and the caller waits on a channel. Call them from plain
//! threads or from `tokio::task::spawn_blocking`. Called from an async task on a multi-thread
//! runtime, the wait goes through `block_in_place` (the worker's other tasks move on; the task
//! itself is blocked). A current-thread runtime is refused as [`StoreOptions::runtime`]: its
//! one thread would be the caller's, and a request waited for on it could never run.
//!
//! `AWS_CA_BUNDLE` is not read by the AWS SDK for Rust (nor here); a custom CA for an HTTPS
//! endpoint goes in `SSL_CERT_FILE` or `SSL_CERT_DIR`. A plain `http://` endpoint needs no CA,
//! whatever those variables say.

use std::collections::VecDeque;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::Region;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::config::{Credentials, SharedHttpClient};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use bytes::Bytes;
use rand::Rng;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::validate_key;
use super::{
    ObjectMeta, ObjectReader, ObjectStore, PutOutcome, StoreError, StoreOptions, StoreResult,
};

const DEFAULT_MAX_ATTEMPTS: u32 = 5;
const DEFAULT_MULTIPART_THRESHOLD: usize = 16 << 20;
/// S3's smallest part (all parts but the last).
const MIN_PART_SIZE: usize = 5 << 20;
/// S3's largest part count.
const MAX_PARTS: usize = 10_000;
const DEFAULT_DOWNLOAD_CONCURRENCY: usize = 8;
/// Size of one ranged GET when reading a large object.
const DOWNLOAD_CHUNK: u64 = 8 << 20;
/// Size of one ranged GET of a streamed read ([`ObjectStore::get_reader`]).
const STREAM_CHUNK: u64 = 1 << 20;
/// Ranged GETs a streamed read keeps in flight beyond the chunk being read: with the chunk
/// being read, a stream holds at most `(1 + STREAM_AHEAD) × STREAM_CHUNK` bytes.
const STREAM_AHEAD: u64 = 2;
const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A GET's body may take longer than one attempt's timeout, but never less than this: a short
/// `attempt_timeout` (the CLI's 10 s) must not fail every download of an 8 MiB range on a slow
/// link. The request itself (up to the headers) still has `attempt_timeout`.
const MIN_BODY_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_REGION: &str = "us-east-1";
/// Directory (under the prefix) of the fencing check's probe objects.
const PROBE_DIR: &str = "pagelog-probe";
/// The environment variable that sets [`StoreOptions::allow_unfenced_writes`] when the options
/// leave it off (for programs, like the CLI, that build their options without it).
pub const ALLOW_UNFENCED_WRITES_ENV: &str = "PAGELOG_S3_ALLOW_UNFENCED_WRITES";

/// An S3 bucket and key prefix as an [`ObjectStore`]. See the module documentation.
pub struct S3Store {
    inner: Arc<Inner>,
    /// Where the requests run.
    handle: tokio::runtime::Handle,
    /// The runtime behind `handle` when the store started its own.
    _owned: Option<OwnedRuntime>,
}

/// What the request tasks share.
struct Inner {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Key prefix without leading or trailing `/`; may be empty.
    prefix: String,
    /// The endpoint for messages: the URL, or `AWS S3 (REGION)`.
    endpoint: String,
    /// `s3://bucket/prefix (endpoint)`.
    describe: String,
    multipart_threshold: usize,
    concurrency: usize,
    max_attempts: u32,
    attempt_timeout: Duration,
    /// Write even if the server does not honour `If-None-Match: *` (with a warning).
    allow_unfenced_writes: bool,
    /// The fencing check's verdict once made: `Some(why)` if the server does not honour
    /// `If-None-Match: *`. See [`Inner::check_fencing`].
    fencing_checked: tokio::sync::OnceCell<Option<String>>,
    /// Multipart uploads in progress that [`Inner::abort_stale_uploads`] has seen, by id, and
    /// when it first saw each: an upload's age is taken from the later of that and the
    /// server's `Initiated` (some servers, moto among them, give every upload a fixed old
    /// time).
    uploads_seen: parking_lot::Mutex<std::collections::HashMap<String, std::time::SystemTime>>,
    /// Whether listing uploads was refused (403) once already: said at warn level once.
    uploads_denied: std::sync::atomic::AtomicBool,
}

/// A runtime the store started; it shuts down without blocking when the store is dropped, so
/// that dropping the store is safe anywhere (dropping a tokio `Runtime` inside an async context
/// panics).
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the SDK config: it holds the credentials provider.
        f.debug_struct("S3Store")
            .field("bucket", &self.inner.bucket)
            .field("prefix", &self.inner.prefix)
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}

/// Run `wait` (a blocking wait for a request task, which never panics) on this thread. On a
/// worker thread of a multi-thread tokio runtime (a caller inside an async task, against the
/// advice of the module documentation) the wait goes through `block_in_place`, so that the
/// runtime moves its other tasks, among them perhaps the very request being waited for, to
/// another worker instead of stalling them behind this thread. `block_in_place` refuses, with
/// a panic before it runs anything, a thread that only entered a multi-thread runtime's
/// handle from inside a current-thread runtime; the wait then simply blocks, as it does
/// everywhere else.
///
/// A refusal outside any task (`tokio::task::try_id()` is `None`: the future given to a
/// current-thread runtime's `block_on`) is remembered for the thread, so that the panic hook
/// prints it once, not on every call. Nothing is lost by not asking again: a runtime worker
/// only ever runs code inside a task, so a thread that later becomes a worker (a blocking-pool
/// thread taking over a worker's core) still asks there. A refusal inside a task (a task of a
/// current-thread runtime that entered another runtime's handle) is not remembered, since
/// that thread may poll a multi-thread runtime's tasks later; each such call goes through the
/// panic hook. Under `panic = "abort"` a refusal aborts.
fn wait_blocking<R>(mut wait: impl FnMut() -> R) -> R {
    thread_local! {
        static REFUSED_OUTSIDE_TASKS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    let on_multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let in_task = tokio::task::try_id().is_some();
    if on_multi_thread && (in_task || !REFUSED_OUTSIDE_TASKS.get()) {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tokio::task::block_in_place(&mut wait)
        })) {
            Ok(r) => return r,
            Err(_) if !in_task => REFUSED_OUTSIDE_TASKS.set(true),
            Err(_) => {}
        }
    }
    wait()
}

/// Whether an endpoint URL names an AWS host (`….amazonaws.com`, `….amazonaws.com.cn`).
fn is_aws_endpoint(url: &str) -> bool {
    let host = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', ':'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn")
}

/// Who a request is for, in the errors [`block_on`] makes itself.
struct Request<'a> {
    /// The endpoint (for `Unavailable`).
    endpoint: &'a str,
    /// The store's description (for `Other`).
    store: &'a str,
    /// The key, prefix or operation.
    key: &'a str,
}

/// Run `fut` on `handle` and wait for it on this thread. A panic in the task (the SDK has a
/// few `expect`s and debug assertions) comes back as an error, not as a panic: a transient
/// one (`Unavailable`), since nothing says the next request would panic too. A task that was
/// cancelled, or a runtime that shut down under it, is not transient (`Other`): asking again
/// on the same runtime cannot help.
fn block_on<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    req: Request<'_>,
    fut: impl Future<Output = StoreResult<T>> + Send + 'static,
) -> StoreResult<T> {
    enum Lost {
        Panicked(String),
        Cancelled,
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let task = handle.spawn(fut);
    handle.spawn(async move {
        let r = match task.await {
            Ok(r) => Ok(r),
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                Err(Lost::Panicked(msg))
            }
            Err(_) => Err(Lost::Cancelled),
        };
        let _ = tx.send(r);
    });
    let other = |message: &str| StoreError::Other {
        store: req.store.to_string(),
        key: req.key.to_string(),
        message: message.to_string(),
    };
    match wait_blocking(|| rx.recv()) {
        Ok(Ok(r)) => r,
        Ok(Err(Lost::Panicked(msg))) => Err(StoreError::Unavailable {
            endpoint: req.endpoint.to_string(),
            key: req.key.to_string(),
            message: format!("the request task panicked: {msg}"),
        }),
        Ok(Err(Lost::Cancelled)) => Err(other(
            "the request task was cancelled (its tokio runtime is shutting down)",
        )),
        Err(_) => Err(other(
            "the request task did not finish (its tokio runtime shut down)",
        )),
    }
}

impl S3Store {
    /// Open the store on `bucket` under `prefix` (no leading or trailing `/`; may be empty).
    /// No request is made: a missing bucket or bad credentials show on the first call.
    pub fn open(bucket: &str, prefix: &str, options: &StoreOptions) -> StoreResult<S3Store> {
        let prefix = prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            validate_key(&prefix)?;
        }
        if let Some(ep) = &options.endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            return Err(StoreError::Invalid {
                what: "S3 endpoint".into(),
                detail: format!("{ep:?}: must start with http:// or https://"),
            });
        }
        let (handle, owned) = match &options.runtime {
            Some(h) if h.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread => {
                // Its one thread would be the caller's own: a store method waiting on it from
                // inside that runtime could never see its request run.
                return Err(StoreError::Invalid {
                    what: "S3 store runtime".into(),
                    detail: "a current-thread tokio runtime cannot run the store's requests \
                             while a caller waits for them; pass a multi-thread runtime's \
                             handle, or none (the store starts its own)"
                        .into(),
                });
            }
            Some(h) => (h.clone(), None),
            None => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("pagelog-s3")
                    .enable_all()
                    .build()
                    .map_err(|e| StoreError::Other {
                        store: format!("s3://{bucket}/{prefix}"),
                        key: String::new(),
                        message: format!("cannot start a tokio runtime: {e}"),
                    })?;
                (rt.handle().clone(), Some(OwnedRuntime(Some(rt))))
            }
        };
        let max_attempts = options.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS).max(1);
        let attempt_timeout = options.attempt_timeout.unwrap_or(DEFAULT_ATTEMPT_TIMEOUT);
        let options = options.clone();
        let bucket = bucket.to_string();
        let describe = format!("s3://{bucket}/{prefix}");
        let endpoint = options.endpoint.clone().unwrap_or_else(|| "AWS S3".into());
        let req = Request {
            endpoint: &endpoint,
            store: &describe,
            key: "(client setup)",
        };
        let inner = block_on(&handle, req, async move {
            Self::configure(bucket, prefix, &options, max_attempts, attempt_timeout).await
        })?;
        Ok(S3Store {
            inner: Arc::new(inner),
            handle,
            _owned: owned,
        })
    }

    async fn configure(
        bucket: String,
        prefix: String,
        options: &StoreOptions,
        max_attempts: u32,
        attempt_timeout: Duration,
    ) -> StoreResult<Inner> {
        // With an endpoint of its own outside AWS (MinIO, R2, moto, ...), asking EC2's
        // instance metadata service for a region only costs a timeout and a screenful of
        // warnings: the environment and the profile are asked, then us-east-1. An AWS endpoint
        // given explicitly (a VPC or FIPS endpoint) keeps the whole chain.
        let endpoint_in_use = options.endpoint.clone().or_else(|| {
            ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
                .iter()
                .filter_map(|v| std::env::var(v).ok())
                .find(|s| !s.is_empty())
        });
        let custom_endpoint = endpoint_in_use.is_some_and(|e| !is_aws_endpoint(&e));
        let region = RegionProviderChain::first_try(options.region.clone().map(Region::new));
        let region = if custom_endpoint {
            region
                .or_else(aws_config::environment::region::EnvironmentVariableRegionProvider::new())
                .or_else(aws_config::profile::ProfileFileRegionProvider::new())
        } else {
            region.or_default_provider()
        }
        .or_else(Region::new(DEFAULT_REGION));
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .retry_config(RetryConfig::standard().with_max_attempts(max_attempts))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(attempt_timeout.min(MAX_CONNECT_TIMEOUT))
                    .operation_attempt_timeout(attempt_timeout)
                    .build(),
            );
        if let Some(ep) = &options.endpoint {
            loader = loader.endpoint_url(ep);
        }
        if let Some((id, secret)) = &options.credentials {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret,
                None,
                None,
                "pagelog-store-options",
            ));
        }
        let sdk = loader.load().await;
        // The endpoint the S3 client will use, resolved as the SDK resolves it (an endpoint in
        // the options, else AWS_ENDPOINT_URL_S3 or the profile's S3 endpoint_url, else
        // AWS_ENDPOINT_URL or the profile's endpoint_url): the SDK does the loading, this only
        // reads the result, for messages and for the path-style default.
        let endpoint_url = options
            .endpoint
            .clone()
            .or_else(|| {
                let key = aws_types::service_config::ServiceConfigKey::builder()
                    .service_id("S3")
                    .env("AWS_ENDPOINT_URL")
                    .profile("endpoint_url")
                    .build()
                    .ok()?;
                sdk.service_config()?.load_config(key)
            })
            .or_else(|| sdk.endpoint_url().map(str::to_string));
        let path_style = options.force_path_style.unwrap_or(endpoint_url.is_some());
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| DEFAULT_REGION.to_string());
        let endpoint = endpoint_url
            .clone()
            .unwrap_or_else(|| format!("AWS S3 ({region})"));
        if std::env::var_os("AWS_CA_BUNDLE").is_some()
            && !endpoint_url
                .as_deref()
                .is_some_and(|e| e.starts_with("http://"))
        {
            warn!(
                "AWS_CA_BUNDLE is set but the AWS SDK for Rust ignores it; put a custom CA in SSL_CERT_FILE instead"
            );
        }
        let mut config = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(path_style);
        if endpoint_url
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
        {
            config = config.http_client(plain_http_client(&bucket, &prefix)?);
        }
        let config = config.build();
        let describe = if prefix.is_empty() {
            format!("s3://{bucket} ({endpoint})")
        } else {
            format!("s3://{bucket}/{prefix} ({endpoint})")
        };
        info!(%bucket, %prefix, %endpoint, %region, path_style, max_attempts, "opened S3 store");
        Ok(Inner {
            client: aws_sdk_s3::Client::from_conf(config),
            bucket,
            prefix,
            endpoint,
            describe,
            multipart_threshold: options
                .multipart_threshold
                .unwrap_or(DEFAULT_MULTIPART_THRESHOLD)
                .max(1),
            concurrency: options
                .download_concurrency
                .unwrap_or(DEFAULT_DOWNLOAD_CONCURRENCY)
                .max(1),
            max_attempts,
            attempt_timeout,
            allow_unfenced_writes: options.allow_unfenced_writes
                || std::env::var(ALLOW_UNFENCED_WRITES_ENV)
                    .is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "yes")),
            fencing_checked: tokio::sync::OnceCell::new(),
            uploads_seen: parking_lot::Mutex::new(std::collections::HashMap::new()),
            uploads_denied: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// The key prefix (no leading or trailing `/`; may be empty).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Run a request for `key` (a key, a prefix or an operation's name, for errors).
    fn run<T: Send + 'static>(
        &self,
        key: &str,
        f: impl FnOnce(Arc<Inner>) -> std::pin::Pin<Box<dyn Future<Output = StoreResult<T>> + Send>>,
    ) -> StoreResult<T> {
        let req = Request {
            endpoint: &self.inner.endpoint,
            store: &self.inner.describe,
            key,
        };
        block_on(&self.handle, req, f(self.inner.clone()))
    }
}

impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    fn put_if_absent(&self, key: &str, data: &[u8]) -> StoreResult<PutOutcome> {
        validate_key(key)?;
        let k = key.to_string();
        let data = Bytes::copy_from_slice(data);
        self.run(key, move |s| {
            Box::pin(async move { s.put_if_absent(&k, data).await })
        })
    }

    fn get(&self, key: &str) -> StoreResult<Vec<u8>> {
        validate_key(key)?;
        let k = key.to_string();
        self.run(key, move |s| {
            Box::pin(async move { s.read(&k, 0, None).await })
        })
    }

    fn get_reader(&self, key: &str) -> StoreResult<ObjectReader> {
        validate_key(key)?;
        let k = key.to_string();
        let first = self.run(key, move |s| {
            Box::pin(async move { s.first_chunk(&k).await })
        })?;
        let mut reader = S3Reader {
            inner: self.inner.clone(),
            handle: self.handle.clone(),
            key: key.to_string(),
            total: first.total,
            etag: first.etag,
            next_start: first.bytes.len() as u64,
            current: first.bytes,
            pending: VecDeque::new(),
            failed: false,
        };
        reader.request_ahead();
        Ok(Box::new(reader))
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Vec<u8>> {
        validate_key(key)?;
        let k = key.to_string();
        self.run(key, move |s| {
            Box::pin(async move {
                let key = k;
                if range.start >= range.end {
                    // Nothing to read, but a missing object is still an error.
                    s.head(&key).await?;
                    return Ok(Vec::new());
                }
                s.read(&key, range.start, Some(range.end)).await
            })
        })
    }

    fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        let p = prefix.to_string();
        self.run(prefix, move |s| Box::pin(async move { s.list(&p).await }))
    }

    fn delete(&self, key: &str) -> StoreResult<()> {
        validate_key(key)?;
        let k = key.to_string();
        self.run(key, move |s| Box::pin(async move { s.delete(&k).await }))
    }

    fn check_conditional_writes(&self) -> StoreResult<()> {
        self.run("(conditional-write check)", |s| {
            Box::pin(async move { s.check_fencing().await })
        })
    }

    fn abort_stale_uploads(
        &self,
        older_than: Duration,
        ours: fn(&str) -> bool,
    ) -> StoreResult<usize> {
        self.run("(multipart uploads)", move |s| {
            Box::pin(async move { s.abort_stale_uploads(older_than, ours).await })
        })
    }
}

/// The SDK's HTTP client (hyper, rustls) without the platform's CA certificates, for a plain
/// `http://` endpoint: the default client loads them, and in debug builds panics when none
/// load (`SSL_CERT_FILE` naming a missing file, a container without CA certificates).
fn plain_http_client(bucket: &str, prefix: &str) -> StoreResult<SharedHttpClient> {
    let tls = TlsContext::builder()
        .with_trust_store(TrustStore::empty().with_native_roots(false))
        .build()
        .map_err(|e| StoreError::Other {
            store: format!("s3://{bucket}/{prefix}"),
            key: String::new(),
            message: format!("cannot set up the HTTP client: {e}"),
        })?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(tls)
        .build_https())
}

/// A failed request: the store error, with the HTTP status and S3 error code when the server
/// answered.
struct Failure {
    status: Option<u16>,
    error: StoreError,
}

/// One ranged GET's answer.
struct Chunk {
    bytes: Bytes,
    /// `(first, last, total)` from `Content-Range`, if the server sent one.
    range: Option<(u64, u64, u64)>,
    etag: Option<String>,
}

/// The first chunk of a streamed read, with what it tells about the object.
struct FirstChunk {
    bytes: Bytes,
    total: u64,
    etag: Option<String>,
}

/// A streamed read: see [`ObjectStore::get_reader`] and the module documentation. Chunks are
/// requested in order on the store's runtime; `read` waits for the oldest one.
struct S3Reader {
    inner: Arc<Inner>,
    handle: tokio::runtime::Handle,
    key: String,
    total: u64,
    /// The first answer's ETag: every later chunk is `If-Match` it.
    etag: Option<String>,
    /// The chunk being read.
    current: Bytes,
    /// Where the next chunk to request starts.
    next_start: u64,
    /// Chunks requested and not yet read, oldest first.
    pending: VecDeque<PendingChunk>,
    /// A chunk failed: the stream is over.
    failed: bool,
}

struct PendingChunk {
    rx: std::sync::mpsc::Receiver<StoreResult<Bytes>>,
    task: tokio::task::AbortHandle,
}

impl S3Reader {
    /// Keep `STREAM_AHEAD` chunks in flight (fewer at the end of the object).
    fn request_ahead(&mut self) {
        while (self.pending.len() as u64) < STREAM_AHEAD && self.next_start < self.total {
            let (start, end) = (
                self.next_start,
                (self.next_start + STREAM_CHUNK).min(self.total),
            );
            self.next_start = end;
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let (inner, key, etag) = (self.inner.clone(), self.key.clone(), self.etag.clone());
            let (inner2, key2) = (self.inner.clone(), self.key.clone());
            let task = self
                .handle
                .spawn(async move { inner.chunk_at(&key, start, end, etag.as_deref()).await });
            let abort = task.abort_handle();
            // A panic in the request is transient, as in `block_on`; a cancelled one is not.
            self.handle.spawn(async move {
                let r = match task.await {
                    Ok(r) => r,
                    Err(e) if e.is_panic() => {
                        Err(inner2.glitch(&key2, "the ranged GET task panicked"))
                    }
                    Err(_) => Err(inner2.other(&key2, "the ranged GET task was cancelled")),
                };
                let _ = tx.send(r);
            });
            self.pending.push_back(PendingChunk { rx, task: abort });
        }
    }
}

impl std::io::Read for S3Reader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.failed {
            return Err(std::io::Error::other(
                self.inner.other(&self.key, "read after the stream failed"),
            ));
        }
        while self.current.is_empty() {
            let Some(next) = self.pending.pop_front() else {
                return Ok(0);
            };
            let chunk = wait_blocking(|| next.rx.recv()).unwrap_or_else(|_| {
                Err(self.inner.other(
                    &self.key,
                    "the ranged GET task ended without an answer (its runtime shut down)",
                ))
            });
            match chunk {
                Ok(bytes) => self.current = bytes,
                Err(e) => {
                    // A failed chunk ends the stream: reading on would skip its bytes.
                    for p in self.pending.drain(..) {
                        p.task.abort();
                    }
                    self.failed = true;
                    self.next_start = self.total;
                    return Err(std::io::Error::other(e));
                }
            }
            self.request_ahead();
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

impl Drop for S3Reader {
    fn drop(&mut self) {
        // A reader dropped early (restore reached its target) stops its downloads.
        for p in &self.pending {
            p.task.abort();
        }
    }
}

/// How a multipart upload's completion ended.
enum Completed {
    /// The object was created.
    Created,
    /// Refused: the key exists (412). The upload remains, with its parts, to abort.
    Refused,
    /// The upload was gone when the completion was retried, and the key holds an object:
    /// most likely this upload, completed by an attempt whose answer was lost.
    FoundAfterLostAnswer,
}

/// Parse `bytes FIRST-LAST/TOTAL`.
fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let (first, last, total) = (
        first.trim().parse().ok()?,
        last.trim().parse().ok()?,
        total.trim().parse().ok()?,
    );
    (first <= last && last < total).then_some((first, last, total))
}

/// Whether a 400 answer to a conditional create says the server does not do conditional
/// creates (rather than something wrong with this request's body).
fn rejects_condition(code: &str, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    code == "NotImplemented"
        || m.contains("if-none-match")
        || m.contains("conditional")
        || m.contains("not implemented")
}

/// Exponential backoff with full jitter for our own retries (body reads, write conflicts).
fn backoff(attempt: u32) -> Duration {
    let cap_ms = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    Duration::from_millis(rand::rng().random_range(0..=cap_ms))
}

impl Inner {
    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// The outcome of a failed conditional create: 412 Precondition Failed means the key
    /// exists; anything else is a failure.
    fn created_or_exists<E>(&self, key: &str, err: SdkError<E>) -> Result<PutOutcome, Failure>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let code = err.code().unwrap_or("").to_string();
        let f = self.fail(key, err);
        match f.status {
            Some(412) => Ok(PutOutcome::AlreadyExists),
            Some(501) => Err(self.conditional_unsupported(f)),
            Some(400) if rejects_condition(&code, &f.error.to_string()) => {
                Err(self.conditional_unsupported(f))
            }
            _ => Err(f),
        }
    }

    /// A conditional create refused as something the server does not do.
    fn conditional_unsupported(&self, f: Failure) -> Failure {
        Failure {
            status: f.status,
            error: StoreError::ConditionalWritesUnsupported {
                endpoint: self.endpoint.clone(),
                store: self.describe.clone(),
                message: format!("a PUT with If-None-Match: * was refused: {}", f.error),
            },
        }
    }

    /// Map an SDK error. `key` is the key relative to the prefix (or the listing prefix).
    fn fail<E>(&self, key: &str, err: SdkError<E>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let endpoint = self.endpoint.clone();
        // A bucket-level call (a listing of the whole prefix) has no key: name what it read.
        let key = if key.is_empty() {
            if self.prefix.is_empty() {
                format!("s3://{}", self.bucket)
            } else {
                format!("s3://{}/{}/", self.bucket, self.prefix)
            }
        } else {
            key.to_string()
        };
        if let SdkError::ServiceError(se) = &err {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("").to_string();
            let message = match (code.as_str(), se.err().message()) {
                ("", Some(m)) => format!("{m} (HTTP {status})"),
                ("", None) => format!("HTTP {status}"),
                (c, Some(m)) => format!("{c}: {m} (HTTP {status})"),
                (c, None) => format!("{c} (HTTP {status})"),
            };
            let error = match code.as_str() {
                "NoSuchBucket" => StoreError::NoSuchBucket {
                    bucket: self.bucket.clone(),
                    endpoint,
                },
                "NoSuchKey" | "NotFound" => StoreError::NotFound {
                    store: self.describe.clone(),
                    key,
                },
                "AccessDenied"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "InvalidToken"
                | "TokenRefreshRequired"
                | "AllAccessDisabled"
                | "AccountProblem" => StoreError::AccessDenied {
                    endpoint,
                    key,
                    message,
                },
                "SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout" => {
                    StoreError::Unavailable {
                        endpoint,
                        key,
                        message,
                    }
                }
                _ => match status {
                    404 => StoreError::NotFound {
                        store: self.describe.clone(),
                        key,
                    },
                    401 | 403 => StoreError::AccessDenied {
                        endpoint,
                        key,
                        message,
                    },
                    // 408: the server gave up waiting for the request; 409 bare, or as S3's
                    // `ConditionalRequestConflict` or `OperationAborted`: a conflicting
                    // operation was in progress. Those say "try again"; a 409 with another
                    // code (`InvalidBucketState`, `BucketNotEmpty`, ...) does not.
                    409 if !matches!(
                        code.as_str(),
                        "" | "ConditionalRequestConflict" | "OperationAborted"
                    ) =>
                    {
                        StoreError::Other {
                            store: self.describe.clone(),
                            key,
                            message,
                        }
                    }
                    408 | 409 | 429 | 500..=599 => StoreError::Unavailable {
                        endpoint,
                        key,
                        message,
                    },
                    _ => StoreError::Other {
                        store: self.describe.clone(),
                        key,
                        message,
                    },
                },
            };
            return Failure {
                status: Some(status),
                error,
            };
        }
        let message = DisplayErrorContext(&err).to_string();
        // Missing or refused credentials surface as a dispatch failure: find them first.
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(e) = source {
            if let Some(ce) = e.downcast_ref::<CredentialsError>() {
                let error = match ce {
                    CredentialsError::ProviderTimedOut(_) => StoreError::Unavailable {
                        endpoint,
                        key,
                        message: format!("loading credentials timed out: {message}"),
                    },
                    _ => StoreError::AccessDenied {
                        endpoint,
                        key,
                        message: format!("no usable credentials: {message}"),
                    },
                };
                return Failure {
                    status: None,
                    error,
                };
            }
            source = e.source();
        }
        let error = match &err {
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => StoreError::Unavailable {
                endpoint,
                key,
                message,
            },
            SdkError::ResponseError(r) if r.raw().status().is_server_error() => {
                StoreError::Unavailable {
                    endpoint,
                    key,
                    message,
                }
            }
            SdkError::ResponseError(_) => StoreError::Unavailable {
                endpoint,
                key,
                message: format!("unreadable response: {message}"),
            },
            _ => StoreError::Other {
                store: self.describe.clone(),
                key,
                message,
            },
        };
        let status = err.raw_response().map(|r| r.status().as_u16());
        Failure { status, error }
    }

    /// An answer that did not fit the request (a range other than the one asked for, an
    /// object that changed while it was read) or a request task that failed: the next try may
    /// well succeed, so it is [`StoreError::Unavailable`] (transient), not a refusal.
    fn glitch(&self, key: &str, message: impl Into<String>) -> StoreError {
        StoreError::Unavailable {
            endpoint: self.endpoint.clone(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn other(&self, key: &str, message: impl Into<String>) -> StoreError {
        StoreError::Other {
            store: self.describe.clone(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    async fn head(&self, key: &str) -> StoreResult<u64> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.fail(key, e).error)?;
        Ok(out.content_length().unwrap_or(0).max(0) as u64)
    }

    async fn exists(&self, key: &str) -> StoreResult<bool> {
        match self.head(key).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn put_if_absent(self: &Arc<Self>, key: &str, data: Bytes) -> StoreResult<PutOutcome> {
        self.check_fencing().await?;
        self.put_if_absent_unchecked(key, data).await
    }

    /// Check once per store that the server honours `If-None-Match: *` (see the module
    /// documentation). Concurrent callers wait for one check. Its verdict is kept for the
    /// store's life; a check that fails on another error (the server down) is not, so the next
    /// call checks again.
    async fn check_fencing(self: &Arc<Self>) -> StoreResult<()> {
        let verdict = self
            .fencing_checked
            .get_or_try_init(|| async {
                match self.probe_conditional_writes().await {
                    Ok(()) => Ok(None),
                    Err(StoreError::ConditionalWritesUnsupported { message, .. }) => {
                        if self.allow_unfenced_writes {
                            warn!(
                                store = %self.describe,
                                reason = %message,
                                "the S3 server does not honour If-None-Match: a second writer on this prefix would not be fenced (writing anyway: allow_unfenced_writes is set)"
                            );
                        }
                        Ok(Some(message))
                    }
                    Err(e) => Err(e),
                }
            })
            .await?;
        match verdict {
            Some(message) if !self.allow_unfenced_writes => {
                Err(StoreError::ConditionalWritesUnsupported {
                    endpoint: self.endpoint.clone(),
                    store: self.describe.clone(),
                    message: message.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Create a probe object twice with `If-None-Match: *`; the second create must find it.
    async fn probe_conditional_writes(self: &Arc<Self>) -> StoreResult<()> {
        let key = format!(
            "{PROBE_DIR}/{:016x}{:016x}.probe",
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        let body = Bytes::from_static(b"pagelog: checking that conditional writes are honoured\n");
        // The first create's outcome does not matter: AlreadyExists on a fresh key can only be
        // an earlier attempt of this very request (its answer lost), refused as it should be.
        let (r, created) = match self.put_if_absent_unchecked(&key, body.clone()).await {
            Ok(_) => (self.put_if_absent_unchecked(&key, body).await, true),
            Err(e) => (Err(e), false),
        };
        // Deleted in any case: a create that failed may still have been applied. A probe left
        // behind is worth a warning only when it is known to exist (the first create
        // succeeded); after a failed create (a refused connection, say) it most likely never
        // did.
        if let Err(e) = self.delete(&key).await {
            if created {
                warn!(key, error = %e, "deleting the conditional-write probe failed; it can be deleted by hand");
            } else {
                debug!(key, error = %e, "deleting the conditional-write probe, which a failed create may have left, failed");
            }
        }
        match r? {
            PutOutcome::AlreadyExists => {
                debug!(store = %self.describe, "the server honours If-None-Match");
                Ok(())
            }
            PutOutcome::Created => Err(StoreError::ConditionalWritesUnsupported {
                endpoint: self.endpoint.clone(),
                store: self.describe.clone(),
                message: "a second PUT with If-None-Match: * of an existing object succeeded"
                    .to_string(),
            }),
        }
    }

    async fn put_if_absent_unchecked(
        self: &Arc<Self>,
        key: &str,
        data: Bytes,
    ) -> StoreResult<PutOutcome> {
        let mut conflicts = 0;
        loop {
            let r = if data.len() > self.multipart_threshold {
                self.put_multipart(key, data.clone()).await
            } else {
                self.put_single(key, data.clone()).await
            };
            match r {
                Ok(outcome) => {
                    debug!(key, len = data.len(), ?outcome, "put_if_absent");
                    return Ok(outcome);
                }
                // 409 (bare, or a conflict in progress): another write to the key was in
                // flight. If it created the object we lost; if not, try again. A 409 that says
                // something lasting (`InvalidBucketState`) is not a conflict.
                Err(f) if f.status == Some(409) && f.error.is_transient() => {
                    conflicts += 1;
                    if self.exists(key).await? {
                        return Ok(PutOutcome::AlreadyExists);
                    }
                    if conflicts >= self.max_attempts {
                        return Err(StoreError::Unavailable {
                            endpoint: self.endpoint.clone(),
                            key: key.to_string(),
                            message: format!(
                                "conditional create conflicted with concurrent writes {conflicts} times: {}",
                                f.error
                            ),
                        });
                    }
                    warn!(
                        key,
                        conflicts, "conditional create conflicted; trying again"
                    );
                    tokio::time::sleep(backoff(conflicts)).await;
                }
                Err(f) => return Err(f.error),
            }
        }
    }

    async fn put_single(&self, key: &str, data: Bytes) -> Result<PutOutcome, Failure> {
        let r = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .if_none_match("*")
            .body(ByteStream::from(data))
            .send()
            .await;
        r.map(|_| PutOutcome::Created)
            .or_else(|e| self.created_or_exists(key, e))
    }

    async fn put_multipart(
        self: &Arc<Self>,
        key: &str,
        data: Bytes,
    ) -> Result<PutOutcome, Failure> {
        let full = self.full_key(key);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| self.fail(key, e))?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(Failure {
                status: None,
                error: self.other(key, "CreateMultipartUpload returned no upload id"),
            });
        };
        let r = self
            .upload_and_complete(key, &full, &upload_id, data)
            .await
            .map_err(|f| match f.status {
                // `NoSuchUpload` on a part, or on a completion whose object is not there: the
                // upload was aborted under us (a lifecycle rule, or another process's
                // clean-up). Not the object's absence: a new upload may well succeed.
                Some(404) => Failure {
                    status: f.status,
                    error: self.glitch(
                        key,
                        format!(
                            "the multipart upload was aborted while in progress: {}",
                            f.error
                        ),
                    ),
                },
                _ => f,
            });
        let finished = match r {
            Ok(Completed::Created) | Ok(Completed::FoundAfterLostAnswer) => true,
            Ok(Completed::Refused) | Err(_) => false,
        };
        if !finished {
            // Free the parts. Best effort: a failure here leaves parts retention (or a
            // lifecycle rule) cleans up, and must not hide the error that brought us here.
            match self.abort_upload(key, &full, &upload_id).await {
                Ok(true) => {}
                Ok(false) => debug!(key, "the multipart upload to abort was gone"),
                Err(f) => warn!(key, error = %f.error, "aborting a multipart upload failed"),
            }
        }
        r.map(|c| match c {
            Completed::Created => PutOutcome::Created,
            Completed::Refused | Completed::FoundAfterLostAnswer => PutOutcome::AlreadyExists,
        })
    }

    /// Abort multipart upload `upload_id` of the object `full` (the key with the prefix;
    /// errors name `key`). `Ok(false)` when the upload was gone already (`NoSuchUpload`).
    async fn abort_upload(&self, key: &str, full: &str, upload_id: &str) -> Result<bool, Failure> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => match self.fail(key, e) {
                Failure {
                    status: Some(404), ..
                } => Ok(false),
                f => Err(f),
            },
        }
    }

    async fn upload_and_complete(
        self: &Arc<Self>,
        key: &str,
        full: &str,
        upload_id: &str,
        data: Bytes,
    ) -> Result<Completed, Failure> {
        let part_size = self
            .multipart_threshold
            .max(MIN_PART_SIZE)
            .max(data.len().div_ceil(MAX_PARTS));
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks = JoinSet::new();
        for (i, start) in (0..data.len()).step_by(part_size).enumerate() {
            let part_number = i32::try_from(i + 1).map_err(|_| Failure {
                status: None,
                error: self.other(key, "too many parts"),
            })?;
            let body = data.slice(start..(start + part_size).min(data.len()));
            let (s, permits) = (self.clone(), permits.clone());
            let (key, full, upload_id) = (key.to_string(), full.to_string(), upload_id.to_string());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let out = s
                    .client
                    .upload_part()
                    .bucket(&s.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .part_number(part_number)
                    .checksum_algorithm(ChecksumAlgorithm::Crc32)
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .map_err(|e| s.fail(&key, e))?;
                Ok::<_, Failure>(
                    CompletedPart::builder()
                        .part_number(part_number)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                        .build(),
                )
            });
        }
        let mut parts = Vec::with_capacity(tasks.len());
        while let Some(joined) = tasks.join_next().await {
            // On the first error, dropping `tasks` cancels the other uploads.
            let part = joined.map_err(|e| Failure {
                status: None,
                error: self.glitch(key, format!("part upload task failed: {e}")),
            })??;
            parts.push(part);
        }
        parts.sort_by_key(|p| p.part_number());
        debug!(key, parts = parts.len(), part_size, "uploaded parts");
        let r = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .if_none_match("*")
            .send()
            .await;
        match r
            .map(|_| PutOutcome::Created)
            .or_else(|e| self.created_or_exists(key, e))
        {
            Ok(PutOutcome::Created) => Ok(Completed::Created),
            Ok(PutOutcome::AlreadyExists) => Ok(Completed::Refused),
            // A completion the server applied, its answer lost (a reset, or slower than the
            // attempt timeout): the SDK's retry finds the upload gone, `NoSuchUpload` (404;
            // some servers say 403). The object under the key may be this very one: if one
            // is there, say it exists, and the caller compares its bytes
            // (`upload::put_immutable`), so another writer's object is still told apart.
            Err(f) if matches!(f.status, Some(404 | 403)) => match self.exists(key).await {
                Ok(true) => {
                    debug!(key, error = %f.error, "completion refused for a finished upload, and the object exists");
                    Ok(Completed::FoundAfterLostAnswer)
                }
                _ => Err(f),
            },
            Err(f) => Err(f),
        }
    }

    /// One GET of bytes `start..end` (or the whole object when `range` is `None`), body
    /// included. A body that fails, stalls or comes up short is fetched again (the SDK retries
    /// only until the response headers arrive).
    async fn get_once(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
        if_match: Option<&str>,
    ) -> Result<Chunk, Failure> {
        let full = self.full_key(key);
        let mut last = String::new();
        for attempt in 1..=self.max_attempts {
            let mut req = self.client.get_object().bucket(&self.bucket).key(&full);
            if let Some((start, end)) = range {
                req = req.range(format!("bytes={start}-{}", end - 1));
            }
            // A weak ETag never matches under If-Match (RFC 9110 compares strongly): sending
            // it would make every later range a 412, read again forever. Such a server's
            // objects are read without the check (pagelog never overwrites an object).
            if let Some(etag) = if_match.filter(|e| !e.starts_with("W/")) {
                req = req.if_match(etag);
            }
            let out = req.send().await.map_err(|e| self.fail(key, e))?;
            let range = match out.content_range() {
                Some(v) => Some(parse_content_range(v).ok_or_else(|| Failure {
                    status: None,
                    // A server that never tells the size would be asked again forever.
                    error: if v.trim_end().ends_with("/*") {
                        self.other(
                            key,
                            format!(
                                "the server does not give the object's size (Content-Range {v:?})"
                            ),
                        )
                    } else {
                        self.glitch(key, format!("unparsable Content-Range {v:?}"))
                    },
                })?),
                None => None,
            };
            let expected = out.content_length().and_then(|n| u64::try_from(n).ok());
            let etag = out.e_tag().map(str::to_string);
            let body_timeout = self.attempt_timeout.max(MIN_BODY_TIMEOUT);
            match tokio::time::timeout(body_timeout, out.body.collect()).await {
                Ok(Ok(body)) => {
                    let bytes = body.into_bytes();
                    let got = bytes.len() as u64;
                    let promised = range.map(|(a, b, _)| b - a + 1).or(expected);
                    match promised {
                        Some(n) if n != got => {
                            last = format!("body has {got} bytes, the response promised {n}")
                        }
                        _ => return Ok(Chunk { bytes, range, etag }),
                    }
                }
                Ok(Err(e)) => last = format!("reading the body: {}", DisplayErrorContext(&e)),
                Err(_) => last = format!("reading the body took longer than {body_timeout:?}"),
            }
            if attempt < self.max_attempts {
                warn!(key, attempt, error = %last, "GET body failed; fetching again");
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
        Err(Failure {
            status: None,
            error: StoreError::Unavailable {
                endpoint: self.endpoint.clone(),
                key: key.to_string(),
                message: format!("{} attempts failed; last: {last}", self.max_attempts),
            },
        })
    }

    /// The first chunk of a streamed read, which tells the object's size and ETag.
    async fn first_chunk(&self, key: &str) -> StoreResult<FirstChunk> {
        match self.get_once(key, Some((0, STREAM_CHUNK)), None).await {
            Ok(c) => match c.range {
                Some((0, b, total)) if b + 1 == STREAM_CHUNK.min(total) => Ok(FirstChunk {
                    bytes: c.bytes,
                    total,
                    etag: c.etag,
                }),
                // The server ignored the Range header and sent the whole object.
                None => Ok(FirstChunk {
                    total: c.bytes.len() as u64,
                    bytes: c.bytes,
                    etag: c.etag,
                }),
                r => Err(self.glitch(
                    key,
                    format!("asked for bytes 0-{}, got {r:?}", STREAM_CHUNK - 1),
                )),
            },
            // An empty object: a range has nothing to answer with. Ask for the whole of it.
            Err(f) if f.status == Some(416) => {
                let whole = self.get_once(key, None, None).await.map_err(|f| f.error)?;
                Ok(FirstChunk {
                    total: whole.bytes.len() as u64,
                    bytes: whole.bytes,
                    etag: whole.etag,
                })
            }
            Err(f) => Err(f.error),
        }
    }

    /// Bytes `start..end` of a streamed read, exactly, from the object whose ETag was `etag`.
    async fn chunk_at(
        &self,
        key: &str,
        start: u64,
        end: u64,
        etag: Option<&str>,
    ) -> StoreResult<Bytes> {
        let c = self
            .get_once(key, Some((start, end)), etag)
            .await
            .map_err(|f| match f.status {
                Some(412) => self.glitch(key, "the object changed while it was being read"),
                _ => f.error,
            })?;
        match c.range {
            Some((a, b, _)) if a == start && b + 1 == end => Ok(c.bytes),
            r => Err(self.glitch(
                key,
                format!("asked for bytes {start}-{}, got {r:?}", end - 1),
            )),
        }
    }

    /// Bytes `start..end` of the object (`end` clamped to its size; `None`: to its end). The
    /// first ranged GET tells the size; the rest comes in parallel ranged GETs.
    async fn read(
        self: &Arc<Self>,
        key: &str,
        start: u64,
        end: Option<u64>,
    ) -> StoreResult<Vec<u8>> {
        let first_end = end.map_or(start + DOWNLOAD_CHUNK, |e| e.min(start + DOWNLOAD_CHUNK));
        let first = match self.get_once(key, Some((start, first_end)), None).await {
            Ok(c) => c,
            // The range starts at or past the end: an empty object, or a read past its end.
            Err(f) if f.status == Some(416) => {
                if start == 0 && end.is_none() {
                    let whole = self.get_once(key, None, None).await.map_err(|f| f.error)?;
                    return Ok(whole.bytes.to_vec());
                }
                return Ok(Vec::new());
            }
            Err(f) => return Err(f.error),
        };
        let Some((a, b, total)) = first.range else {
            // The server ignored the Range header and sent the whole object.
            let len = first.bytes.len() as u64;
            let (s, e) = (start.min(len), end.unwrap_or(len).min(len));
            return Ok(first.bytes[s as usize..e.max(s) as usize].to_vec());
        };
        let want_end = end.unwrap_or(total).min(total);
        if a != start || b + 1 != first_end.min(total) {
            return Err(self.glitch(
                key,
                format!("asked for bytes {start}-{}, got {a}-{b}", first_end - 1),
            ));
        }
        if want_end <= first_end {
            // Without a copy when the buffer is not shared.
            return Ok(Vec::from(first.bytes));
        }
        let len = usize::try_from(want_end - start)
            .map_err(|_| self.other(key, format!("object too large: {total} bytes")))?;
        // Each chunk is copied to its place as it arrives and dropped: memory stays at the
        // object plus the chunks in flight.
        let mut out = vec![0u8; len];
        out[..first.bytes.len()].copy_from_slice(&first.bytes);
        let first_len = first.bytes.len();
        let chunks: Vec<(u64, u64)> = (first_end..want_end)
            .step_by(DOWNLOAD_CHUNK as usize)
            .map(|s| (s, (s + DOWNLOAD_CHUNK).min(want_end)))
            .collect();
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks = JoinSet::new();
        for (i, (s, e)) in chunks.iter().copied().enumerate() {
            let (me, permits, key, etag) = (
                self.clone(),
                permits.clone(),
                key.to_string(),
                first.etag.clone(),
            );
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let c = me
                    .get_once(&key, Some((s, e)), etag.as_deref())
                    .await
                    .map_err(|f| match f.status {
                        Some(412) => me.glitch(&key, "the object changed while it was being read"),
                        _ => f.error,
                    })?;
                match c.range {
                    Some((a, b, _)) if a == s && b + 1 == e => Ok((i, c.bytes)),
                    r => Err(me.glitch(&key, format!("asked for bytes {s}-{}, got {r:?}", e - 1))),
                }
            });
        }
        let mut done = vec![false; chunks.len()];
        while let Some(joined) = tasks.join_next().await {
            let (i, bytes) = joined.map_err(|e| {
                let message = format!("ranged GET task failed: {e}");
                if e.is_panic() {
                    self.glitch(key, message)
                } else {
                    self.other(key, message)
                }
            })??;
            let at = (chunks[i].0 - start) as usize;
            out[at..at + bytes.len()].copy_from_slice(&bytes);
            done[i] = true;
        }
        if first_len as u64 != first_end.min(total) - start || done.iter().any(|d| !d) {
            return Err(self.glitch(key, "a ranged GET went missing"));
        }
        debug!(key, len = out.len(), chunks = chunks.len() + 1, "read");
        Ok(out)
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        let root = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let full = format!("{root}{prefix}");
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| match self.fail(prefix, e).error {
                    // A listing finds no object missing: a 404 (some servers answer a missing
                    // bucket with a bare one, without the NoSuchBucket code) is the bucket.
                    StoreError::NotFound { .. } => StoreError::NoSuchBucket {
                        bucket: self.bucket.clone(),
                        endpoint: self.endpoint.clone(),
                    },
                    other => other,
                })?;
            for obj in page.contents() {
                let Some(rel) = obj.key().and_then(|k| k.strip_prefix(&root)) else {
                    continue;
                };
                // Skip "directory" placeholders some tools create.
                if rel.is_empty() || rel.ends_with('/') {
                    continue;
                }
                out.push(ObjectMeta {
                    key: rel.to_string(),
                    size: obj.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                });
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            match page.next_continuation_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => {
                    return Err(
                        self.other(prefix, "listing is truncated but has no continuation token")
                    );
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        debug!(prefix, n = out.len(), "list");
        Ok(out)
    }

    /// See [`ObjectStore::abort_stale_uploads`]: list the uploads in progress under the
    /// prefix (all pages), abort those of keys `ours` accepts (relative to the prefix) older
    /// than `older_than`. An upload's age runs from the later of the server's `Initiated` and the
    /// first time this store saw it (so a server giving false, old times aborts nothing another
    /// process is still uploading, until this store has seen it that long). A server that does
    /// not list uploads (`NotImplemented`) has none to abort here; one that refuses (403, no
    /// `s3:ListBucketMultipartUploads`) is warned about once.
    async fn abort_stale_uploads(
        &self,
        older_than: Duration,
        ours: fn(&str) -> bool,
    ) -> StoreResult<usize> {
        /// Pages of a listing at most (1,000 uploads each on AWS).
        const MAX_PAGES: usize = 1000;
        let what = "(multipart uploads)";
        let now = std::time::SystemTime::now();
        let cutoff = now.checked_sub(older_than).unwrap_or(std::time::UNIX_EPOCH);
        let prefix = self.full_key("");
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        // Every upload listed under pagelog's keys: id -> (key, initiated).
        let mut listed = std::collections::BTreeMap::new();
        for page in 0.. {
            if page == MAX_PAGES {
                warn!(store = %self.describe, "listing multipart uploads: over {MAX_PAGES} pages; the rest waits for the next run");
                break;
            }
            let out = match self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) => {
                    let f = self.fail(what, e);
                    match f.status {
                        Some(501) => {
                            debug!(store = %self.describe, "the server does not list multipart uploads");
                            return Ok(0);
                        }
                        Some(403) => {
                            if self
                                .uploads_denied
                                .swap(true, std::sync::atomic::Ordering::Relaxed)
                            {
                                debug!(store = %self.describe, error = %f.error, "listing multipart uploads refused");
                            } else {
                                warn!(store = %self.describe, error = %f.error,
                                    "listing multipart uploads refused: uploads left in progress are not aborted (allow s3:ListBucketMultipartUploads, or set a lifecycle rule)");
                            }
                            return Ok(0);
                        }
                        _ => return Err(f.error),
                    }
                }
            };
            for u in out.uploads() {
                if let (Some(key), Some(id)) = (u.key(), u.upload_id())
                    && key.strip_prefix(&prefix).is_some_and(ours)
                {
                    let initiated = u
                        .initiated()
                        .and_then(|t| std::time::SystemTime::try_from(*t).ok());
                    listed.insert(id.to_string(), (key.to_string(), initiated));
                }
            }
            let next = (
                out.next_key_marker().map(str::to_string),
                out.next_upload_id_marker().map(str::to_string),
            );
            if out.is_truncated() != Some(true)
                || (next.0.is_none() && next.1.is_none())
                || next == (key_marker.clone(), id_marker.clone())
            {
                break;
            }
            (key_marker, id_marker) = next;
        }
        let stale: Vec<(String, String)> = {
            let mut seen = self.uploads_seen.lock();
            seen.retain(|id, _| listed.contains_key(id));
            listed
                .into_iter()
                .filter_map(|(id, (key, initiated))| {
                    let first_seen = *seen.entry(id.clone()).or_insert(now);
                    let since = initiated.map_or(first_seen, |i| i.max(first_seen));
                    (since <= cutoff).then_some((key, id))
                })
                .collect()
        };
        let mut aborted = 0;
        for (key, id) in stale {
            // Not aborted: completed or aborted meanwhile.
            if self
                .abort_upload(&key, &key, &id)
                .await
                .map_err(|f| f.error)?
            {
                aborted += 1;
            }
            self.uploads_seen.lock().remove(&id);
        }
        if aborted > 0 {
            info!(store = %self.describe, aborted, "aborted multipart uploads left in progress");
        }
        Ok(aborted)
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.fail(key, e).error {
                StoreError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_endpoints_are_told_from_others() {
        for aws in [
            "https://s3.eu-west-1.amazonaws.com",
            "https://bucket.vpce-0a1b2c3d-abcd.s3.us-east-1.vpce.amazonaws.com/",
            "https://s3-fips.us-east-2.amazonaws.com:443",
            "https://s3.cn-north-1.amazonaws.com.cn",
            "HTTPS://S3.US-EAST-1.AMAZONAWS.COM",
        ] {
            assert!(is_aws_endpoint(aws), "{aws}");
        }
        for other in [
            "http://127.0.0.1:9000",
            "https://acct.r2.cloudflarestorage.com",
            "http://minio.local:9000/amazonaws.com",
            "https://amazonaws.com.evil.example",
            "",
        ] {
            assert!(!is_aws_endpoint(other), "{other}");
        }
    }

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 9, 100)));
        assert_eq!(parse_content_range("bytes 5-5/6"), Some((5, 5, 6)));
        for bad in [
            "bytes */100",
            "bytes 9-0/100",
            "bytes 0-100/100",
            "0-9/100",
            "bytes 0-9/*",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        /// Any header value: no panic, and what is accepted is a well-formed range of an
        /// object, read back the same when written out again.
        #[test]
        fn content_range_never_panics_and_accepts_only_ranges(
            v in "(bytes ?)?[0-9 */+-]{0,30}|.{0,20}"
        ) {
            if let Some((first, last, total)) = parse_content_range(&v) {
                proptest::prop_assert!(first <= last && last < total);
                proptest::prop_assert_eq!(
                    parse_content_range(&format!("bytes {first}-{last}/{total}")),
                    Some((first, last, total))
                );
            }
        }

        #[test]
        fn content_range_reads_every_range(first: u64, len: u64, extra: u64) {
            let last = first.saturating_add(len);
            let total = last.saturating_add(extra).saturating_add(1);
            let expected = (last < total).then_some((first, last, total));
            proptest::prop_assert_eq!(
                parse_content_range(&format!("bytes {first}-{last}/{total}")),
                expected
            );
        }
    }

    #[test]
    fn refused_conditions_are_told_from_bad_requests() {
        assert!(rejects_condition("NotImplemented", "x"));
        assert!(rejects_condition(
            "InvalidArgument",
            "Unsupported header If-None-Match (HTTP 400)"
        ));
        assert!(!rejects_condition(
            "BadDigest",
            "The Content-MD5 you specified did not match"
        ));
        assert!(!rejects_condition("EntityTooLarge", "too large"));
    }

    #[test]
    fn backoff_is_bounded() {
        for attempt in 0..40 {
            assert!(backoff(attempt) <= Duration::from_secs(5));
        }
    }
}
