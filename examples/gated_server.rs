//! Output gating over HTTP: `cargo run --release --example gated_server -- [--mode sync|gated]
//! [--addr 127.0.0.1:8080] [--db PATH] [--store DIR] [--workers N]`.
//!
//! A small counter service (hyper 1 + tokio) whose every response leaves only once the writes
//! it reports are durable on local disk — the guarantee Cloudflare's Durable Objects call
//! *output gating*:
//!
//! - `POST /counter/NAME` increments the counter NAME and answers its new value;
//! - `GET /counter/NAME` answers its value (0 if it was never incremented);
//! - `GET /stats` answers pagelog's [`pagelog::Stats`], the log's fsync count and the server's
//!   request counts as JSON.
//!
//! ```sh
//! cargo run --release --example gated_server -- --mode gated --db /tmp/counters.db &
//! curl -X POST localhost:8080/counter/apples     # 1
//! curl localhost:8080/counter/apples             # 1
//! curl localhost:8080/stats
//! ```
//!
//! `--db` defaults to `./gated-server.db`; `--store DIR` also ships the log to a local
//! directory store; `--workers` sets the runtime's worker threads (default: the cores).
//! SIGINT or SIGTERM stops it and closes the database. `scripts/gated_server_bench.sh`
//! measures both modes with `wrk` (figures in `docs/GATED_SERVER.md`).
//!
//! # The two modes
//!
//! **Sync** (`--mode sync`, [`Durability::Sync`]): a commit returns only once its log record is
//! on disk. The handler answers as soon as the write returns. SQLite lets one transaction
//! write at a time and a Sync commit holds that lock through its `fdatasync`, so writes are
//! serial: one fsync per request, and the write rate is at most one over the fsync latency.
//!
//! **Gated** (`--mode gated`, [`Durability::Gated`]): a commit returns as soon as its record is
//! in the log's memory buffer, so the next request's transaction can start at once. The
//! handler takes the commit's [`pagelog::Bookmark`] and awaits
//! [`Database::wait_durable_async`] before it sends the response: the task parks (no thread
//! waits for it), and one fsync, led by a single helper thread, makes every commit appended
//! so far durable and releases all their responses together. Many responses per fsync, with
//! the same guarantee as Sync: no client is ever told about a write that a crash could
//! lose. A crash loses only writes whose responses had not left.
//!
//! Reads are gated too: in Gated mode a reader can see a committed write that is not yet
//! durable (the commit that wrote it has returned, its fsync has not), and answering with it
//! would leak a value a crash could take back. So a GET takes [`Database::bookmark`] (the
//! latest commit, at or past anything its read saw) after reading and awaits the same future
//! before answering. When nothing is in flight the future is ready at its first poll, so
//! idle-time reads pay nothing. In Sync mode a commit becomes visible only after its fsync,
//! so reads answer at once.
//!
//! # Threads and connections
//!
//! SQLite connections block, and SQLite admits one writer at a time, so:
//!
//! - every write goes to **one writer thread** owning one connection, over a channel; the
//!   handler awaits its reply. More writer connections would only queue on SQLite's write lock
//!   (through its busy handler, which sleeps), in both modes. In Gated mode the writer never
//!   waits for the disk, only the handlers do.
//! - reads run **inline on the runtime's worker threads**, each on one of a small set of read
//!   connections (one per worker). A point read in WAL mode never waits for the writer or the
//!   disk and costs microseconds, far less than handing it to a blocking-pool thread and back
//!   would cost on two cores.
//!
//! Nothing a request or I/O can reach unwraps: a failure answers 500 with a message.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use pagelog::{Bookmark, Config, Database, Durability};
use tokio::sync::{mpsc, oneshot};

const USAGE: &str = "usage: gated_server [--mode sync|gated] [--addr 127.0.0.1:8080] [--db PATH] [--store DIR] [--workers N]";

/// Longest counter name accepted.
const MAX_NAME: usize = 200;

struct Args {
    mode: Durability,
    addr: SocketAddr,
    db: PathBuf,
    store: Option<String>,
    workers: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        mode: Durability::Gated,
        addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
        db: PathBuf::from("gated-server.db"),
        store: None,
        workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--mode" => {
                args.mode = match value.as_str() {
                    "sync" => Durability::Sync,
                    "gated" => Durability::Gated,
                    other => return Err(format!("--mode is sync or gated, not {other:?}")),
                }
            }
            "--addr" => {
                args.addr = value
                    .parse()
                    .map_err(|e| format!("--addr {value:?}: {e}"))?
            }
            "--db" => args.db = PathBuf::from(value),
            "--store" => args.store = Some(value),
            "--workers" => {
                args.workers = value
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("--workers {value:?}: a positive number"))?
            }
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

/// A failed request: its status and a message for the client.
struct HttpError(StatusCode, String);

impl HttpError {
    fn internal(what: &str, e: impl std::fmt::Display) -> HttpError {
        HttpError(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e}"))
    }
}

type Reply = Result<Response<Full<Bytes>>, HttpError>;

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    resp
}

/// One increment for the writer thread; it answers the new value and the commit's bookmark.
struct WriteJob {
    name: String,
    reply: oneshot::Sender<Result<(i64, Bookmark), String>>,
}

/// The writer thread: one connection, one transaction per job, never waiting for the disk in
/// Gated mode (the handlers do). It stops when every sender is gone.
fn writer_loop(db: Arc<Database>, mut jobs: mpsc::Receiver<WriteJob>) {
    let conn = match db.connect() {
        Ok(c) => c,
        Err(e) => {
            // Every job gets the reason instead of a silent hang.
            let msg = format!("the writer cannot connect: {e}");
            eprintln!("{msg}");
            while let Some(job) = jobs.blocking_recv() {
                let _ = job.reply.send(Err(msg.clone()));
            }
            return;
        }
    };
    while let Some(job) = jobs.blocking_recv() {
        let result = increment(&db, &conn, &job.name).map_err(|e| e.to_string());
        // The handler may be gone (client disconnected): nothing to tell it.
        let _ = job.reply.send(result);
    }
}

/// Increment one counter in its own transaction and return the new value with the bookmark of
/// that commit.
fn increment(
    db: &Database,
    conn: &rusqlite::Connection,
    name: &str,
) -> Result<(i64, Bookmark), Box<dyn std::error::Error>> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO counters(name, value) VALUES (?1, 1) \
         ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
    )?;
    let mut rows = stmt.query([name])?;
    let value: i64 = rows.next()?.ok_or("the upsert returned no row")?.get(0)?;
    // Step the statement to its end: that step commits (and in Sync mode syncs), and a failure
    // there must reach the client rather than be dropped with the statement.
    if rows.next()?.is_some() {
        return Err("the upsert returned two rows".into());
    }
    drop(rows);
    Ok((value, db.commit_bookmark(conn)?))
}

struct App {
    db: Arc<Database>,
    mode: Durability,
    writer: mpsc::Sender<WriteJob>,
    /// Read connections, one per worker thread (see the module docs).
    readers: Vec<Mutex<rusqlite::Connection>>,
    next_reader: AtomicUsize,
    writes: AtomicU64,
    reads: AtomicU64,
    /// Responses that found their write not yet durable and waited for an fsync.
    gated_waits: AtomicU64,
    syncs_at_start: u64,
}

impl App {
    /// Output gating: resolve once everything up to `mark` is durable. In Sync mode a commit
    /// is durable on return and reads see only durable commits, so there is nothing to wait
    /// for.
    async fn gate(&self, mark: &Bookmark) -> Result<(), HttpError> {
        if self.mode == Durability::Sync {
            return Ok(());
        }
        if self.db.inner().durable_lsn() < mark.lsn {
            self.gated_waits.fetch_add(1, Ordering::Relaxed);
        }
        self.db
            .wait_durable_async(mark)
            .map_err(|e| HttpError::internal("waiting for durability", e))?
            .await
            .map_err(|e| HttpError::internal("the write is not durable", e))
    }

    async fn post_counter(&self, name: String) -> Reply {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(WriteJob { name, reply })
            .await
            .map_err(|_| HttpError::internal("writing", "the writer thread has stopped"))?;
        let (value, mark) = answer
            .await
            .map_err(|_| HttpError::internal("writing", "the writer thread has stopped"))?
            .map_err(|e| HttpError::internal("writing", e))?;
        // The response waits here, parked, until one fsync covers its commit.
        self.gate(&mark).await?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(text(StatusCode::OK, "text/plain", format!("{value}\n")))
    }

    fn read_counter(&self, name: &str) -> Result<(i64, Bookmark), HttpError> {
        let n = self.readers.len();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        // A worker holds a reader only within this function, so with one reader per worker
        // one is free; lock the first one if a stray thread got in the way.
        let conn = (0..n)
            .find_map(|i| self.readers[(start + i) % n].try_lock().ok())
            .unwrap_or_else(|| {
                self.readers[start % n]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
            });
        let value = conn
            .prepare_cached("SELECT value FROM counters WHERE name = ?1")
            .and_then(|mut s| {
                let mut rows = s.query([name])?;
                match rows.next()? {
                    Some(r) => r.get(0),
                    None => Ok(0),
                }
            })
            .map_err(|e| HttpError::internal("reading", e))?;
        // The latest commit now: at or past everything the read saw.
        Ok((value, self.db.bookmark()))
    }

    async fn get_counter(&self, name: &str) -> Reply {
        let (value, mark) = self.read_counter(name)?;
        self.gate(&mark).await?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(text(StatusCode::OK, "text/plain", format!("{value}\n")))
    }

    fn stats(&self) -> Reply {
        let s = self.db.stats();
        let log = self.db.inner().log().stats();
        let writes = self.writes.load(Ordering::Relaxed);
        let syncs = log.syncs.saturating_sub(self.syncs_at_start);
        let opt = |v: Option<u64>| v.map_or_else(|| "null".to_string(), |v| v.to_string());
        let body = format!(
            concat!(
                "{{\"mode\":\"{mode}\",\"writes\":{writes},\"reads\":{reads},",
                "\"gated_waits\":{gated_waits},\"log_syncs\":{syncs},\"writes_per_sync\":{wps:.2},",
                "\"timeline\":{timeline},\"current_lsn\":{current},\"durable_lsn\":{durable},",
                "\"replicated_lsn\":{replicated},\"snapshot_lsn\":{snapshot},",
                "\"checkpoint_lsn\":{checkpoint},\"lag_records\":{lag_records},",
                "\"lag_seconds\":{lag_seconds:.3},\"log_bytes\":{log_bytes}}}\n"
            ),
            writes = writes,
            syncs = syncs,
            mode = if self.mode == Durability::Sync {
                "sync"
            } else {
                "gated"
            },
            reads = self.reads.load(Ordering::Relaxed),
            gated_waits = self.gated_waits.load(Ordering::Relaxed),
            wps = if syncs == 0 {
                0.0
            } else {
                writes as f64 / syncs as f64
            },
            timeline = s.timeline,
            current = s.current_lsn,
            durable = s.durable_lsn,
            replicated = opt(s.replicated_lsn),
            snapshot = opt(s.snapshot_lsn),
            checkpoint = s.checkpoint_lsn,
            lag_records = s.lag_records,
            lag_seconds = s.lag_seconds,
            log_bytes = s.log_bytes,
        );
        Ok(text(StatusCode::OK, "application/json", body))
    }

    async fn route(&self, req: &Request<Incoming>) -> Reply {
        let path = req.uri().path();
        if path == "/stats" {
            return match *req.method() {
                Method::GET => self.stats(),
                _ => Err(HttpError(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "GET /stats".into(),
                )),
            };
        }
        let Some(name) = path.strip_prefix("/counter/") else {
            return Err(HttpError(
                StatusCode::NOT_FOUND,
                "try POST /counter/NAME, GET /counter/NAME or GET /stats".into(),
            ));
        };
        if name.is_empty() || name.len() > MAX_NAME || name.contains('/') {
            return Err(HttpError(
                StatusCode::BAD_REQUEST,
                format!("a counter name is 1 to {MAX_NAME} characters without '/'"),
            ));
        }
        match *req.method() {
            Method::POST => self.post_counter(name.to_string()).await,
            Method::GET => self.get_counter(name).await,
            _ => Err(HttpError(
                StatusCode::METHOD_NOT_ALLOWED,
                "GET or POST /counter/NAME".into(),
            )),
        }
    }
}

async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match app.route(&req).await {
        Ok(resp) => resp,
        Err(HttpError(status, msg)) => text(status, "text/plain", format!("{msg}\n")),
    })
}

/// Accept connections until SIGINT or SIGTERM.
async fn serve(app: Arc<App>, addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!(
        "gated_server: {} mode, listening on http://{}",
        if app.mode == Durability::Sync {
            "sync"
        } else {
            "gated"
        },
        listener.local_addr()?
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors and the like: keep serving the open connections.
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut ctrl_c => break,
            _ = term.recv() => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(app.clone(), req));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
                && !e.is_incomplete_message()
            {
                eprintln!("connection: {e}");
            }
        });
    }
    println!("gated_server: stopping");
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    let mut config = Config::new().durability(args.mode);
    if let Some(store) = &args.store {
        config = config.store_url(store.as_str());
    }
    let db = Arc::new(Database::open(&args.db, config)?);
    db.connect()?.execute_batch(
        "CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    )?;
    let readers = (0..args.workers)
        .map(|_| db.connect().map(Mutex::new))
        .collect::<Result<Vec<_>, _>>()?;

    let (writer, jobs) = mpsc::channel(1024);
    let writer_thread = std::thread::Builder::new()
        .name("gated-server-writer".into())
        .spawn({
            let db = db.clone();
            move || writer_loop(db, jobs)
        })?;
    let app = Arc::new(App {
        db: db.clone(),
        mode: args.mode,
        writer,
        readers,
        next_reader: AtomicUsize::new(0),
        writes: AtomicU64::new(0),
        reads: AtomicU64::new(0),
        gated_waits: AtomicU64::new(0),
        syncs_at_start: db.inner().log().stats().syncs,
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .enable_all()
        .build()?;
    let served = runtime.block_on(serve(app, args.addr));
    // Dropping the runtime drops every connection task and with them the last App: the read
    // connections close and the writer's channel ends.
    drop(runtime);
    if writer_thread.join().is_err() {
        eprintln!("the writer thread panicked");
    }
    served?;
    let stats = db.stats();
    Arc::try_unwrap(db)
        .map_err(|_| "the database is still shared")?
        .close()?;
    println!(
        "gated_server: closed {} at LSN {} (durable {})",
        args.db.display(),
        stats.current_lsn,
        stats.durable_lsn
    );
    Ok(())
}
