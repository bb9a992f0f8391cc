//! Test support for pagelog's S3 code: a real S3 protocol server in the test process, and the
//! choice between it and an external endpoint.
//!
//! [`S3TestServer`] serves a temporary directory over plain HTTP on `127.0.0.1:<random port>`
//! with [`s3s`] (the S3 protocol: SigV4 authentication, XML, routing) and [`s3s_fs`] (objects as
//! files). It runs on its own small tokio runtime, so blocking tests can use it directly. Between
//! s3s and s3s-fs sits a thin layer of our own that makes the server behave like S3 where s3s-fs
//! does not, or not quite:
//!
//! - conditional writes are atomic: s3s-fs checks `If-None-Match: *` (PutObject and
//!   CompleteMultipartUpload) and then writes, so two racing creates could both pass the check;
//!   here every put and every multipart completion runs under one lock;
//! - a write, read or listing in a bucket that does not exist fails with `NoSuchBucket`
//!   (s3s-fs would create the bucket's directory on a put);
//! - faults for tests: answer the next N requests with `503 SlowDown`, or cut the body of the
//!   next N GETs short (the response promises the full length, sends half, then breaks the
//!   connection);
//! - on request ([`S3TestServer::ignore_if_none_match`]), a server that ignores
//!   `If-None-Match` on PutObject and CompleteMultipartUpload (as s3rver does): the header is
//!   dropped before s3s-fs sees it, so a create overwrites an existing object;
//! - counters of what the server saw ([`Stats`]), so a test can check which path a client took.
//!
//! [`FaultProxy`] is a loopback proxy to put between a client and any of these servers (moto
//! too): 500/503 answers, slow answers, connection resets before or after forwarding, truncated
//! or corrupted bodies, and a server that disappears and comes back on the same port.
//!
//! [`S3Target::from_env_or_start`] gives tests their server: the external endpoint named by
//! `PAGELOG_S3_TEST_ENDPOINT` (with `PAGELOG_S3_TEST_BUCKET`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`), as CI does against moto, or else a fresh in-process server.
//! Three variables tell what an external server lacks, so that the tests that need it say they
//! skip: `PAGELOG_S3_TEST_NO_CONDITIONAL=1` (ignores `If-None-Match`; the tests then open their
//! stores with `allow_unfenced_writes`), `PAGELOG_S3_TEST_CONDITIONAL_NOT_ATOMIC=1` (honours
//! it, but racing creates can both win) and `PAGELOG_S3_TEST_NO_AUTH=1` (accepts any
//! credentials).

mod proxy;

pub use proxy::{FaultProxy, FaultRule, ProxyFault, ProxyStats};

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

/// Access key id of the in-process server.
pub const ACCESS_KEY: &str = "pagelog-test-key-id";
/// Secret key of the in-process server. Tests check that no error message ever contains it.
pub const SECRET_KEY: &str = "pagelog-test-secret-0123456789";
/// The bucket [`S3Target::from_env_or_start`] creates on the in-process server.
pub const BUCKET: &str = "pagelog-test";
/// Region tests use (the in-process server ignores it).
pub const REGION: &str = "us-east-1";

/// A fault to inject into the in-process server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer the next N requests (of any kind) with `503 SlowDown`.
    Unavailable(u32),
    /// Send only the first half of the body of the next N successful GetObject responses (which
    /// still promise the full length), then break the connection.
    TruncateGets(u32),
}

/// What the in-process server has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests of any kind.
    pub requests: u64,
    /// PutObject calls.
    pub puts: u64,
    /// GetObject calls.
    pub gets: u64,
    /// GetObject calls with a Range.
    pub ranged_gets: u64,
    /// UploadPart calls.
    pub upload_parts: u64,
    /// CompleteMultipartUpload calls.
    pub completes: u64,
    /// AbortMultipartUpload calls.
    pub aborts: u64,
    /// ListObjectsV2 calls.
    pub lists: u64,
    /// Writes refused with 412 because the key existed.
    pub precondition_failures: u64,
    /// Requests answered by an injected fault.
    pub faults: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    puts: AtomicU64,
    gets: AtomicU64,
    ranged_gets: AtomicU64,
    upload_parts: AtomicU64,
    completes: AtomicU64,
    aborts: AtomicU64,
    lists: AtomicU64,
    precondition_failures: AtomicU64,
    faults: AtomicU64,
}

#[derive(Default)]
struct Faults {
    unavailable: u32,
    truncate_gets: u32,
}

#[derive(Default)]
struct Shared {
    counters: Counters,
    faults: Mutex<Faults>,
    /// Drop `If-None-Match` from creates: see [`S3TestServer::ignore_if_none_match`].
    ignore_if_none_match: std::sync::atomic::AtomicBool,
}

/// s3s-fs, with atomic conditional writes, `NoSuchBucket`, faults and counters.
struct Server {
    fs: s3s_fs::FileSystem,
    root: PathBuf,
    shared: Arc<Shared>,
    /// Held by every PutObject and CompleteMultipartUpload: makes s3s-fs's "check
    /// If-None-Match, then write" atomic.
    write_lock: tokio::sync::Mutex<()>,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Server {
    /// Count the request and apply an `Unavailable` fault.
    fn enter(&self) -> S3Result<()> {
        bump(&self.shared.counters.requests);
        let mut faults = self.shared.faults.lock().unwrap_or_else(|e| e.into_inner());
        if faults.unavailable > 0 {
            faults.unavailable -= 1;
            bump(&self.shared.counters.faults);
            return Err(s3_error!(SlowDown, "injected fault"));
        }
        Ok(())
    }

    fn bucket_exists(&self, bucket: &str) -> S3Result<()> {
        if self.root.join(bucket).is_dir() {
            Ok(())
        } else {
            Err(s3_error!(
                NoSuchBucket,
                "The specified bucket does not exist: {bucket}"
            ))
        }
    }

    /// A part or completion of an upload that was completed or aborted is `NoSuchUpload`
    /// (404), as on AWS (s3s-fs itself says `AccessDenied`). s3s-fs keeps `.upload-ID.json` at its root while an upload
    /// is in progress.
    fn upload_exists(&self, upload_id: &str) -> S3Result<()> {
        if self.root.join(format!(".upload-{upload_id}.json")).exists() {
            Ok(())
        } else {
            Err(s3_error!(
                NoSuchUpload,
                "The specified upload does not exist"
            ))
        }
    }

    fn count_precondition<T>(&self, r: S3Result<T>) -> S3Result<T> {
        if let Err(e) = &r
            && *e.code() == s3s::S3ErrorCode::PreconditionFailed
        {
            bump(&self.shared.counters.precondition_failures);
        }
        r
    }

    fn take_truncate_fault(&self) -> bool {
        let mut faults = self.shared.faults.lock().unwrap_or_else(|e| e.into_inner());
        if faults.truncate_gets > 0 {
            faults.truncate_gets -= 1;
            bump(&self.shared.counters.faults);
            true
        } else {
            false
        }
    }
}

#[async_trait::async_trait]
impl S3 for Server {
    // Calls that need only the request count, the fault gate and (for objects) the bucket check.
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.enter()?;
        self.fs.create_bucket(req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.enter()?;
        self.fs.delete_bucket(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.enter()?;
        self.fs.head_bucket(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.enter()?;
        self.fs.list_buckets(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.enter()?;
        self.fs.get_bucket_location(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.enter()?;
        self.bucket_exists(&req.input.bucket)?;
        self.fs.head_object(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.enter()?;
        self.bucket_exists(&req.input.bucket)?;
        self.fs.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.enter()?;
        self.bucket_exists(&req.input.bucket)?;
        self.fs.delete_objects(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.enter()?;
        self.bucket_exists(&req.input.bucket)?;
        self.fs.list_objects(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.enter()?;
        self.bucket_exists(&req.input.bucket)?;
        self.fs.create_multipart_upload(req).await
    }

    /// s3s-fs does not list uploads: found here from its files, `.upload-ID.json` (one per
    /// upload in progress) and `.bucket-B.object-K.upload-ID.metadata.json` (B and K in
    /// URL-safe base64), initiated at the latter's modification time. One page, every upload.
    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.enter()?;
        let input = req.input;
        self.bucket_exists(&input.bucket)?;
        let prefix = input.prefix.unwrap_or_default();
        let decode = |s: &str| {
            base64_simd::URL_SAFE_NO_PAD
                .decode_to_vec(s)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
        };
        let mut uploads = Vec::new();
        let entries = std::fs::read_dir(&self.root)
            .map_err(|e| s3_error!(InternalError, "listing the server's root: {e}"))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name
                .strip_prefix(".bucket-")
                .and_then(|r| r.strip_suffix(".metadata.json"))
            else {
                continue;
            };
            let Some((bucket, rest)) = rest.split_once(".object-") else {
                continue;
            };
            let Some((key, id)) = rest.split_once(".upload-") else {
                continue;
            };
            let (Some(bucket), Some(key)) = (decode(bucket), decode(key)) else {
                continue;
            };
            if bucket != input.bucket
                || !key.starts_with(&prefix)
                || !self.root.join(format!(".upload-{id}.json")).exists()
            {
                continue;
            }
            let initiated = entry
                .metadata()
                .and_then(|m| m.modified())
                .map_err(|e| s3_error!(InternalError, "reading {name}: {e}"))?;
            uploads.push(MultipartUpload {
                key: Some(key),
                upload_id: Some(id.to_string()),
                initiated: Some(initiated.into()),
                ..Default::default()
            });
        }
        uploads.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: Some(prefix),
            is_truncated: Some(false),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.enter()?;
        self.bucket_exists(&req.input.bucket)?;
        self.fs.list_parts(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.enter()?;
        bump(&self.shared.counters.lists);
        self.bucket_exists(&req.input.bucket)?;
        self.fs.list_objects_v2(req).await
    }

    async fn put_object(
        &self,
        mut req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.enter()?;
        if self.shared.ignore_if_none_match.load(Ordering::Relaxed) {
            req.input.if_none_match = None;
        }
        bump(&self.shared.counters.puts);
        self.bucket_exists(&req.input.bucket)?;
        let _guard = self.write_lock.lock().await;
        let r = self.fs.put_object(req).await;
        self.count_precondition(r)
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.enter()?;
        bump(&self.shared.counters.upload_parts);
        self.bucket_exists(&req.input.bucket)?;
        self.upload_exists(&req.input.upload_id)?;
        self.fs.upload_part(req).await
    }

    async fn complete_multipart_upload(
        &self,
        mut req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.enter()?;
        if self.shared.ignore_if_none_match.load(Ordering::Relaxed) {
            req.input.if_none_match = None;
        }
        bump(&self.shared.counters.completes);
        self.bucket_exists(&req.input.bucket)?;
        self.upload_exists(&req.input.upload_id)?;
        let _guard = self.write_lock.lock().await;
        let r = self.fs.complete_multipart_upload(req).await;
        self.count_precondition(r)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.enter()?;
        bump(&self.shared.counters.aborts);
        self.bucket_exists(&req.input.bucket)?;
        self.upload_exists(&req.input.upload_id)?;
        self.fs.abort_multipart_upload(req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.enter()?;
        bump(&self.shared.counters.gets);
        if req.input.range.is_some() {
            bump(&self.shared.counters.ranged_gets);
        }
        self.bucket_exists(&req.input.bucket)?;
        let mut resp = self.fs.get_object(req).await?;
        if self.take_truncate_fault()
            && let Some(body) = resp.output.body.take()
        {
            use futures::TryStreamExt;
            let chunks: Vec<Bytes> = body
                .try_collect()
                .await
                .map_err(|e| s3_error!(InternalError, "reading the object: {e}"))?;
            let whole: Vec<u8> = chunks.concat();
            let half = Bytes::copy_from_slice(&whole[..whole.len() / 2]);
            let items: Vec<Result<Bytes, io::Error>> = vec![
                Ok(half),
                Err(io::Error::other("injected fault: body cut short")),
            ];
            resp.output.body = Some(StreamingBlob::wrap(futures::stream::iter(items)));
        }
        Ok(resp)
    }
}

/// An S3 server over a temporary directory, on `127.0.0.1` and a random port, in this process.
/// Dropping it stops the server and removes the directory.
pub struct S3TestServer {
    endpoint: String,
    root: tempfile::TempDir,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for S3TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3TestServer")
            .field("endpoint", &self.endpoint)
            .field("root", &self.root.path())
            .finish_non_exhaustive()
    }
}

impl S3TestServer {
    /// Start a server that accepts requests signed with [`ACCESS_KEY`] and [`SECRET_KEY`]. It
    /// has no bucket yet: see [`S3TestServer::create_bucket`].
    pub fn start() -> io::Result<S3TestServer> {
        let root = tempfile::Builder::new().prefix("pagelog-s3-").tempdir()?;
        let fs =
            s3s_fs::FileSystem::new(root.path()).map_err(|e| io::Error::other(format!("{e:?}")))?;
        let shared = Arc::new(Shared::default());
        let server = Server {
            fs,
            root: root.path().canonicalize()?,
            shared: shared.clone(),
            write_lock: tokio::sync::Mutex::new(()),
        };
        let service = {
            let mut b = S3ServiceBuilder::new(server);
            b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
            b.build()
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-test-server")
            .enable_all()
            .build()?;
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr: SocketAddr = std_listener.local_addr()?;
        let listener = {
            let _enter = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener)?
        };
        runtime.spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        Ok(S3TestServer {
            endpoint: format!("http://{addr}"),
            root,
            shared,
            runtime: Some(runtime),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The directory the objects live in (`<root>/<bucket>/<key>`).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Create a bucket (a directory under the root).
    pub fn create_bucket(&self, bucket: &str) -> io::Result<()> {
        std::fs::create_dir(self.root.path().join(bucket))
    }

    /// Inject a fault; it adds to any of the same kind still pending.
    pub fn inject(&self, fault: Fault) {
        let mut faults = self.shared.faults.lock().unwrap_or_else(|e| e.into_inner());
        match fault {
            Fault::Unavailable(n) => faults.unavailable += n,
            Fault::TruncateGets(n) => faults.truncate_gets += n,
        }
    }

    /// Whether to ignore `If-None-Match` on PutObject and CompleteMultipartUpload from now on
    /// (as s3rver does): creates then overwrite existing objects instead of answering 412.
    pub fn ignore_if_none_match(&self, ignore: bool) {
        self.shared
            .ignore_if_none_match
            .store(ignore, Ordering::Relaxed);
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            requests: get(&c.requests),
            puts: get(&c.puts),
            gets: get(&c.gets),
            ranged_gets: get(&c.ranged_gets),
            upload_parts: get(&c.upload_parts),
            completes: get(&c.completes),
            aborts: get(&c.aborts),
            lists: get(&c.lists),
            precondition_failures: get(&c.precondition_failures),
            faults: get(&c.faults),
        }
    }
}

impl Drop for S3TestServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The S3 endpoint a test talks to: an external one from the environment, or an in-process
/// [`S3TestServer`] with a bucket.
#[derive(Debug)]
pub struct S3Target {
    /// Endpoint URL (`http://...`).
    pub endpoint: String,
    /// A bucket that exists.
    pub bucket: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// Region to sign for.
    pub region: String,
    /// Whether the server honours `If-None-Match: *` on PutObject and CompleteMultipartUpload.
    /// False only when `PAGELOG_S3_TEST_NO_CONDITIONAL=1` says an external server does not.
    pub conditional_writes: bool,
    /// Whether two racing conditional creates of one key always have one winner. False only
    /// when `PAGELOG_S3_TEST_CONDITIONAL_NOT_ATOMIC=1` says an external server checks and then
    /// writes without a lock (moto does).
    pub atomic_conditional_writes: bool,
    /// The in-process server, if this target is one.
    pub server: Option<S3TestServer>,
}

impl S3Target {
    /// `PAGELOG_S3_TEST_ENDPOINT` set: that endpoint, the bucket `PAGELOG_S3_TEST_BUCKET`
    /// (default `pagelog-test`; it must exist), credentials from `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` (default `test`/`test`, which moto accepts), region from
    /// `AWS_REGION` (default `us-east-1`). Otherwise a fresh in-process server with the bucket
    /// [`BUCKET`].
    ///
    /// # Panics
    /// If the in-process server cannot start (this is test support).
    pub fn from_env_or_start() -> S3Target {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(endpoint) = var("PAGELOG_S3_TEST_ENDPOINT") {
            return S3Target {
                endpoint,
                bucket: var("PAGELOG_S3_TEST_BUCKET").unwrap_or_else(|| BUCKET.to_string()),
                access_key: var("AWS_ACCESS_KEY_ID").unwrap_or_else(|| "test".to_string()),
                secret_key: var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|| "test".to_string()),
                region: var("AWS_REGION").unwrap_or_else(|| REGION.to_string()),
                conditional_writes: var("PAGELOG_S3_TEST_NO_CONDITIONAL").as_deref() != Some("1"),
                atomic_conditional_writes: var("PAGELOG_S3_TEST_CONDITIONAL_NOT_ATOMIC").as_deref()
                    != Some("1"),
                server: None,
            };
        }
        let server = S3TestServer::start().expect("start the in-process S3 server");
        server
            .create_bucket(BUCKET)
            .expect("create the test bucket");
        S3Target {
            endpoint: server.endpoint().to_string(),
            bucket: BUCKET.to_string(),
            access_key: ACCESS_KEY.to_string(),
            secret_key: SECRET_KEY.to_string(),
            region: REGION.to_string(),
            conditional_writes: true,
            atomic_conditional_writes: true,
            server: Some(server),
        }
    }

    /// Whether this is an external server (no fault injection, no counters).
    pub fn is_external(&self) -> bool {
        self.server.is_none()
    }

    /// A key prefix no other test (or earlier run against the same external bucket) uses.
    pub fn unique_prefix(&self, test: &str) -> String {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!(
            "t{}-{}-{}/{test}",
            std::process::id(),
            nanos,
            SEQ.fetch_add(1, Ordering::Relaxed)
        )
    }
}
