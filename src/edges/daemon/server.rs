//! The daemon's listeners: the root-only unix socket (`/cni`, `/healthz`, `/readyz`, Go Multus's routes;
//! `/metrics` and `/cache/...` for diagnosis) and the metrics address (`/metrics`, `/healthz`, `/readyz`); admission (a bounded queue in front of
//! `maxConcurrency` slots, and DEL's own `maxDelConcurrency`; `/cni` and `/delegate` alike), the work left for after the replies, and
//! graceful shutdown (not ready first, then drain, then exit).

use std::{
    convert::Infallible,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use plexus_shim::{transport::Transport, wire};
use tokio::{
    net::{TcpListener, UnixListener},
    sync::{OwnedSemaphorePermit, Semaphore},
};

use super::{
    Shared,
    handler::{self, Later},
    room::MemoryRoom,
};

/// The largest request body taken (a network config with every NAD inlined is far smaller).
const MAX_BODY: usize = 8 * 1024 * 1024;

/// Admission and readiness.
pub struct State {
    ready: AtomicBool,
    stopping: AtomicBool,
    queued: AtomicUsize,
    busy: AtomicUsize,
    slots: Arc<Semaphore>,
    /// DEL's slots: its own pool, or `slots` itself.
    del_slots: Arc<Semaphore>,
    /// With a pool of its own: how many DELs run at once regardless of memory (the others' limit).
    del_floor: Option<usize>,
    /// DELs running (past admission).
    del_running: AtomicUsize,
    /// The daemon's memory cgroup, when it has a limit to read.
    room: Option<MemoryRoom>,
    max_queue: usize,
}

/// The room under the daemon's memory limit each DEL beyond the floor needs: its delegate process (about
/// 2.5 MiB charged to the cgroup per DEL in flight, anonymous and kernel memory, in the bench's storms;
/// BENCHMARKS.md), with a margin for DELs just admitted whose memory does not show yet.
const DEL_ROOM: u64 = 4 * 1024 * 1024;

/// How often a DEL waiting for room looks again.
const ROOM_POLL: Duration = Duration::from_millis(5);

impl State {
    /// `max_concurrency` slots, DEL's `max_del_concurrency` of its own (`None`: DEL shares the others'),
    /// at most `max_queue` waiting.
    pub fn new(
        max_concurrency: usize,
        max_del_concurrency: Option<usize>,
        max_queue: usize,
    ) -> State {
        let slots = Arc::new(Semaphore::new(max_concurrency.max(1)));
        let del_slots = match max_del_concurrency {
            Some(n) => Arc::new(Semaphore::new(n.max(1))),
            None => slots.clone(),
        };
        State {
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            slots,
            del_slots,
            del_floor: max_del_concurrency.map(|_| max_concurrency.max(1)),
            del_running: AtomicUsize::new(0),
            room: None,
            max_queue,
        }
    }

    /// DELs beyond the floor wait for room under the memory limit of `room`'s cgroup.
    pub fn with_room(mut self, room: Option<MemoryRoom>) -> State {
        self.room = room;
        self
    }

    /// A DEL that holds one of DEL's own slots: wait until it may run. Up to the floor run at once
    /// whatever the memory; each one beyond needs [`DEL_ROOM`] more under the cgroup's limit, the DELs
    /// already running counted in its usage. `None` when DEL shares the others' slots (no floor to pass).
    async fn admit_del(&self) -> Option<Count<'_>> {
        let floor = self.del_floor?;
        loop {
            let running = self.del_running.load(Ordering::SeqCst);
            let fits = running < floor
                || self
                    .room
                    .as_ref()
                    .and_then(MemoryRoom::left)
                    .is_none_or(|left| left >= DEL_ROOM * (running + 1 - floor) as u64);
            if !fits {
                tokio::time::sleep(ROOM_POLL).await;
                continue;
            }
            if self
                .del_running
                .compare_exchange(running, running + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return Some(Count(&self.del_running));
            }
        }
    }

    /// The slots a request of `verb` waits for.
    fn slots_for(&self, verb: &str) -> &Arc<Semaphore> {
        if verb == "DEL" {
            &self.del_slots
        } else {
            &self.slots
        }
    }

    /// `/readyz`.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.stopping.load(Ordering::SeqCst)
    }

    /// Requests queued, running, or sending their events.
    pub fn outstanding(&self) -> usize {
        self.queued.load(Ordering::SeqCst) + self.busy.load(Ordering::SeqCst)
    }
}

/// Decrements a counter when dropped.
struct Count<'a>(&'a AtomicUsize);

impl<'a> Count<'a> {
    fn new(c: &'a AtomicUsize) -> Count<'a> {
        c.fetch_add(1, Ordering::SeqCst);
        Count(c)
    }
}

impl Drop for Count<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A request past admission: its slot (and, for a DEL beyond the floor, its place under the memory
/// limit), counted as busy and in flight. `/cni` and `/delegate` both get one from [`admit`].
struct Admitted<'a> {
    slot: (OwnedSemaphorePermit, Option<Count<'a>>),
    in_flight: Decrement,
    busy: Count<'a>,
}

impl<'a> Admitted<'a> {
    /// Run `handler` on this thread: `block_in_place` moves the async worker's other work to another
    /// thread instead, so the request itself is not handed to a blocking thread and back (two wake-ups of a
    /// sleeping thread, tens of microseconds each on a small VM). A panic fails this request only: its
    /// message comes back. The slot is free again when it returns; the request stays busy (the drain waits)
    /// until the returned count is dropped.
    fn run<T>(self, handler: impl FnOnce() -> T) -> (Result<T, String>, Count<'a>) {
        let Admitted {
            slot,
            in_flight,
            busy,
        } = self;
        let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tokio::task::block_in_place(handler)
        }));
        drop((in_flight, slot));
        let joined =
            joined.map_err(|payload| plexus_netns::panic_message(payload.as_ref()).to_string());
        (joined, busy)
    }
}

/// Admission (docs/daemon.md, "Admission"), the same for `/cni` and `/delegate`: refused with 503 and
/// code 11 while shutting down or when `maxQueue` requests already wait (counted in
/// `plexus_requests_rejected_total`); otherwise queued until a slot of `verb`'s pool is free.
async fn admit<'a>(
    shared: &Shared,
    state: &'a State,
    verb: &str,
) -> Result<Admitted<'a>, Response<Body>> {
    if state.stopping.load(Ordering::SeqCst) {
        shared.metrics.rejected();
        return Err(cni_error(
            Transport::ShuttingDown,
            "plexus daemon is shutting down; try again".into(),
        ));
    }
    let queued = state.queued.load(Ordering::SeqCst);
    if queued >= state.max_queue {
        shared.metrics.rejected();
        tracing::warn!(queued, verb, "queue full: request refused");
        return Err(cni_error(
            Transport::QueueFull,
            format!(
                "plexus daemon is busy: {queued} requests already queued (maxQueue); try again"
            ),
        ));
    }
    let permit = {
        let _waiting = Count::new(&state.queued);
        shared.metrics.queued.inc();
        let p = state.slots_for(verb).clone().acquire_owned().await;
        // A DEL with a slot of its own may still wait for memory (queued until then).
        let running = match (&p, verb == "DEL") {
            (Ok(_), true) => state.admit_del().await,
            _ => None,
        };
        shared.metrics.queued.dec();
        p.map(|p| (p, running))
    };
    let Ok(slot) = permit else {
        return Err(cni_error(Transport::SlotsClosed, "closed".into()));
    };
    let busy = Count::new(&state.busy);
    shared.metrics.in_flight.inc();
    Ok(Admitted {
        slot,
        in_flight: Decrement(shared.metrics.in_flight.clone()),
        busy,
    })
}

/// Work that outlives its request (after the reply): counted as busy from its creation, so a shutdown
/// right after the reply waits for it; released when dropped, even by a panic.
struct Held(Arc<State>);

impl Held {
    fn new(state: &Arc<State>) -> Held {
        state.busy.fetch_add(1, Ordering::SeqCst);
        Held(state.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A request's after-reply work (ADD: its durable writes, then the container's lock; DEL: the unlinks of
/// its trash) and its busy count.
type AfterReplyJob = (Box<dyn FnOnce() + Send>, Held);

/// Work left for after a reply, counted from its creation until it ends: as busy (the drain waits for it)
/// and in `plexus_after_reply_pending` (what a client waits for before it looks for leftovers).
struct AfterReplyWork {
    finish: Box<dyn FnOnce() + Send>,
    held: Held,
    pending: Decrement,
}

impl AfterReplyWork {
    fn new(shared: &Shared, state: &Arc<State>, finish: Box<dyn FnOnce() + Send>) -> Self {
        let pending = shared.metrics.after_reply_pending.clone();
        pending.inc();
        AfterReplyWork {
            finish,
            held: Held::new(state),
            pending: Decrement(pending),
        }
    }

    /// Hand it to the after-reply thread.
    fn start(self) {
        let AfterReplyWork {
            finish,
            held,
            pending,
        } = self;
        let finish: Box<dyn FnOnce() + Send> = Box::new(move || {
            // Counted down even when the job panics.
            let _pending = pending;
            finish()
        });
        if let Err(mpsc::SendError((finish, held))) = flusher().send((finish, held)) {
            tokio::task::spawn_blocking(move || {
                finish();
                drop(held);
            });
        }
    }
}

/// Decrements a gauge when dropped.
struct Decrement(prometheus_client::metrics::gauge::Gauge);

impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The thread that runs every request's after-reply work, in order. Not the blocking pool: a handler running
/// in place hands the async worker to a pool thread, which must never wait behind a row of fsyncs. Without
/// this thread (it could not be started), the work goes to the blocking pool after all.
fn flusher() -> &'static mpsc::Sender<AfterReplyJob> {
    static FLUSHER: OnceLock<mpsc::Sender<AfterReplyJob>> = OnceLock::new();
    FLUSHER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<AfterReplyJob>();
        let started = std::thread::Builder::new()
            .name("plexus-flush".into())
            .spawn(move || {
                for (finish, held) in rx {
                    // A panic is the job's own (its lock and writes are released by unwinding); the
                    // thread goes on with the next.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(finish));
                    drop(held);
                }
            });
        if let Err(e) = started {
            tracing::warn!("cannot start the after-reply thread ({e}); using the blocking pool");
        }
        tx
    })
}

type Body = Full<Bytes>;

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

/// The daemon's answer to a transport failure: its status and CNI error reply, from the one table.
fn cni_error(failure: Transport, msg: String) -> Response<Body> {
    let reply = failure.reply(msg, "");
    respond(status_of(failure), "application/json", reply.to_json())
}

/// The HTTP status the daemon answers `failure` with.
fn status_of(failure: Transport) -> StatusCode {
    failure
        .status()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Make the socket directory (0700) and clear a stale socket; refuse when another daemon answers there.
pub fn prepare_socket(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} 0700", dir.display()))?;
    let path = dir.join(wire::SOCKET_NAME);
    if let Ok(m) = std::fs::symlink_metadata(&path) {
        if !m.file_type().is_socket() {
            anyhow::bail!(
                "{} exists and is not a socket; not touching it",
                path.display()
            );
        }
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            anyhow::bail!("another daemon is serving {}", path.display());
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("cannot remove stale {}", path.display()))?;
    }
    Ok(path)
}

/// Point Go Multus's socket name at ours, so a `multus-shim` pointed at this directory reaches us.
fn link_go_name(dir: &Path) {
    let go = dir.join(wire::GO_SOCKET_NAME);
    if let Ok(m) = std::fs::symlink_metadata(&go) {
        if !(m.file_type().is_symlink() || m.file_type().is_socket()) {
            tracing::warn!(
                "{} exists and is not a socket; Go shims will not reach this daemon",
                go.display()
            );
            return;
        }
        let _ = std::fs::remove_file(&go);
    }
    if let Err(e) = std::os::unix::fs::symlink(wire::SOCKET_NAME, &go) {
        tracing::warn!("cannot link {}: {e}", go.display());
    }
}

/// Serve until SIGTERM or SIGINT, then drain.
pub async fn serve(shared: Arc<Shared>) -> anyhow::Result<()> {
    let room = shared
        .config
        .max_del_concurrency
        .and_then(|_| MemoryRoom::of_self());
    if let Some(left) = room.as_ref().and_then(MemoryRoom::left) {
        tracing::info!(
            room_mib = left / (1024 * 1024),
            "DELs beyond maxConcurrency run while the memory cgroup has room for them"
        );
    }
    let state = Arc::new(
        State::new(
            shared.config.max_concurrency,
            shared.config.max_del_concurrency,
            shared.config.max_queue,
        )
        .with_room(room),
    );
    // What a daemon killed after a DEL's reply left in the trash: of every cniDir an earlier daemon served
    // (the ones the reconcile goes through, `super::reconcile::ServedDirs`) and of the daemon config's own;
    // after the replies' work, off the start's path.
    let mut cni_dirs: Vec<PathBuf> = shared.served.all().into_iter().map(|s| s.cni_dir).collect();
    cni_dirs.push(shared.config.cni_dir());
    cni_dirs.sort();
    cni_dirs.dedup();
    AfterReplyWork::new(
        &shared,
        &state,
        Box::new(move || {
            for cni_dir in &cni_dirs {
                let n = crate::store::trash::sweep(cni_dir);
                if n > 0 {
                    tracing::info!(
                        "removed {n} file(s) an earlier daemon left in {}",
                        crate::store::trash::dir(cni_dir).display()
                    );
                }
            }
        }),
    )
    .start();
    let path = prepare_socket(&shared.config.socket_dir)?;
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} 0600", path.display()))?;
    link_go_name(&shared.config.socket_dir);

    if let Some(addr) = shared.config.metrics_address {
        let tcp = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on metricsAddress {addr}"))?;
        tokio::spawn(serve_metrics(tcp, shared.clone(), state.clone()));
    }

    // Ready once the caches hold their lists (requests before that read the API live), or once the
    // sync time-out passed: an API that is down at boot must not keep the node's CNI down with it.
    {
        let (shared, state) = (shared.clone(), state.clone());
        tokio::spawn(async move {
            let limit = shared.config.cache_sync_timeout;
            let synced = match &shared.cache {
                Some(c) => c.wait_synced(limit).await,
                None => true,
            };
            if !synced {
                tracing::warn!(
                    "watch caches not synced after {}s; serving with live API reads",
                    limit.as_secs()
                );
            }
            state.ready.store(true, Ordering::SeqCst);
            tracing::info!("ready");
        });
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tracing::info!("serving {}", path.display());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let acceptor = tokio::spawn(accept(
        listener,
        path.clone(),
        shared.clone(),
        state.clone(),
        stopped,
    ));
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }

    // Not ready first; then no new connections; then the requests already taken finish.
    state.stopping.store(true, Ordering::SeqCst);
    let _ = stop.send(true);
    // The listener is closed when the accept loop returns.
    let _ = acceptor.await;
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(shared.config.socket_dir.join(wire::GO_SOCKET_NAME));
    let started = Instant::now();
    tracing::info!(outstanding = state.outstanding(), "shutting down: draining");
    let outstanding = || state.outstanding() + shared.status.pending();
    while outstanding() > 0 && started.elapsed() < shared.config.shutdown_timeout {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = state.outstanding();
    let writes = shared.status.pending();
    if writes > 0 {
        tracing::error!(
            writes,
            "shutdown time-out: {writes} network-status writes not done (the API is unavailable?)"
        );
    }
    if left > 0 {
        tracing::warn!(left, "shutdown time-out: {left} requests cut short");
    } else {
        tracing::info!(
            waited_ms = started.elapsed().as_millis() as u64,
            "drained; exiting"
        );
    }
    Ok(())
}

/// Accept connections on the socket until `stop` turns true, each served on a task of its own.
///
/// A task on the async worker, not the daemon's main future: the worker that sees the listener ready
/// accepts at once, and the connection's task starts on that same thread. From `block_on` on the main
/// thread, each connection cost two more thread wake-ups (worker to main thread, main thread back to the
/// worker) before its request was read.
async fn accept(
    listener: UnixListener,
    path: PathBuf,
    shared: Arc<Shared>,
    state: Arc<State>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("accept on {}: {e}", path.display());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { stop.wait_for(|stop| *stop).await.map(|_| ()) } => return,
        };
        let (shared, state) = (shared.clone(), state.clone());
        tokio::spawn(async move {
            // Work a request leaves for after its reply waits for the client to hang up first (the shim
            // exits once it has the reply), so it does not compete with the shim's exit on a busy node.
            let (closed, hung_up) = tokio::sync::watch::channel(false);
            let svc = service_fn(move |req| {
                let (shared, state, hung_up) = (shared.clone(), state.clone(), hung_up.clone());
                async move { Ok::<_, Infallible>(route_socket(req, &shared, &state, hung_up).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!("socket connection: {e}");
            }
            let _ = closed.send(true);
        });
    }
}

async fn route_socket(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    state: &Arc<State>,
    hung_up: tokio::sync::watch::Receiver<bool>,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = match (&method, path.as_str()) {
        (_, wire::HEALTHZ_PATH) => respond(StatusCode::OK, "text/plain", "ok\n"),
        (_, wire::READYZ_PATH) => readyz(state),
        (&Method::GET, "/metrics") => metrics(shared, state),
        (&Method::POST, wire::CNI_PATH) => cni(req, shared, state, hung_up).await,
        (&Method::GET, p) if p.starts_with("/cache/") => cached(p, shared),
        (&Method::POST, DELEGATE_PATH) => delegate(req, shared, state).await,
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    };
    shared.metrics.http(
        path.trim_start_matches('/'),
        resp.status().as_u16(),
        method.as_str(),
    );
    resp
}

/// `GET /cache/pods/<ns>/<name>` and `GET /cache/network-attachment-definitions/<ns>/<name>`: 200 with
/// the object as cached (trimmed; a NAD's `cache.loaded` says whether its config is held), 404 when the
/// watch has not seen it; for operators ("why did this ADD read the API?") and the e2e suite.
fn cached(path: &str, shared: &Shared) -> Response<Body> {
    let parts: Vec<&str> = path.trim_start_matches("/cache/").split('/').collect();
    let found = match (shared.cache.as_deref(), parts.as_slice()) {
        (Some(c), ["pods", ns, name]) => c.pod(ns, name).and_then(|p| serde_json::to_vec(&*p).ok()),
        (Some(c), ["network-attachment-definitions", ns, name]) => c
            .nad_cache()
            .view(ns, name)
            .and_then(|v| serde_json::to_vec(&v).ok()),
        _ => None,
    };
    match found {
        Some(body) => respond(StatusCode::OK, "application/json", body),
        None => respond(StatusCode::NOT_FOUND, "text/plain", "not in the cache\n"),
    }
}

/// A POST's body, at most [`MAX_BODY`] bytes (`/cni` and `/delegate`), or the reply refusing it.
async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| {
            cni_error(
                Transport::BodyUnreadable,
                format!("cannot read the request (at most {MAX_BODY} bytes): {e}"),
            )
        })
}

/// Go Multus's hot-plug endpoint (multus-dynamic-networks-controller's calls; `super::delegate`).
const DELEGATE_PATH: &str = "/delegate";

/// `POST /delegate`: one interface of a running sandbox attached, detached or checked, run in place like
/// `/cni` and admitted as `/cni` is ([`admit`]: the same slots by verb, the same queue bound and refusal),
/// so a flood of calls cannot run delegates beyond `maxConcurrency`. The container's lock keeps it and the
/// runtime's calls apart.
async fn delegate(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    state: &Arc<State>,
) -> Response<Body> {
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    // Only the command, for the slots (the body is parsed whole, and refused when bad, by
    // `super::delegate`): a DEL waits for DEL's slots, as on `/cni`.
    #[derive(serde::Deserialize)]
    struct Command {
        #[serde(default)]
        env: std::collections::BTreeMap<String, String>,
    }
    let verb = serde_json::from_slice::<Command>(&body)
        .ok()
        .and_then(|c| c.env.get("CNI_COMMAND").cloned())
        .unwrap_or_default();
    let admitted = match admit(shared, state, &verb).await {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    let (joined, busy) = admitted.run(|| super::delegate::serve(shared, &body));
    drop(busy);
    match joined {
        Ok(reply) => {
            let status =
                StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            respond(status, "application/json", reply.body)
        }
        Err(e) => {
            tracing::error!("/delegate handler failed: {e}");
            cni_error(
                Transport::HandlerPanicked,
                format!("plexus daemon: /delegate failed: {e}"),
            )
        }
    }
}

fn readyz(state: &State) -> Response<Body> {
    if state.is_ready() {
        respond(StatusCode::OK, "text/plain", "ready\n")
    } else {
        respond(status_of(Transport::NotReady), "text/plain", "not ready\n")
    }
}

/// How long work left for after a reply waits for the client to hang up (a client that keeps its
/// connection open does not hold it back for longer).
const AFTER_REPLY_WAIT: Duration = Duration::from_millis(100);

/// Until the client hangs up, at most [`AFTER_REPLY_WAIT`].
async fn client_gone(mut hung_up: tokio::sync::watch::Receiver<bool>) {
    let _ = tokio::time::timeout(AFTER_REPLY_WAIT, hung_up.wait_for(|gone| *gone)).await;
}

async fn cni(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    state: &Arc<State>,
    hung_up: tokio::sync::watch::Receiver<bool>,
) -> Response<Body> {
    let arrived = Instant::now();
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let wreq: wire::Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return cni_error(
                Transport::BadRequest,
                format!("cannot decode the request: {e}"),
            );
        }
    };
    let verb = wreq.env.get("CNI_COMMAND").cloned().unwrap_or_default();
    let container = wreq.env.get("CNI_CONTAINERID").cloned().unwrap_or_default();
    // The pod of an ADD, for hot-plug: a networks annotation changed while this ADD finished is looked at
    // again once its files are on disk (before then the pod has no sandbox a hot-plug can find).
    let added_pod = (verb == "ADD" && shared.config.hotplug)
        .then(|| wreq.env.get("CNI_ARGS"))
        .flatten()
        .and_then(|a| plexus_cni::CniArgs::parse(a).ok())
        .and_then(|a| {
            let ns = a.get("K8S_POD_NAMESPACE")?.to_string();
            Some((ns, a.get("K8S_POD_NAME")?.to_string()))
        });
    if verb == "DEL" {
        // The sandbox is going: a status write of its ADD still pending would only record what is removed.
        shared.status.cancel(&container);
    }
    let admitted = match admit(shared, state, &verb).await {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    let (joined, busy) = admitted.run(|| handler::serve(shared, wreq));
    let (reply, later) = match joined {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(verb, "request handler failed: {e}");
            let failure = Transport::HandlerPanicked;
            let reply = failure.reply(format!("plexus daemon: request failed: {e}"), "");
            (
                handler::Reply::error(status_of(failure).as_u16(), &verb, &reply),
                handler::Later::default(),
            )
        }
    };
    let Later {
        api,
        finish,
        status,
        events,
    } = later;
    if verb == "DEL" {
        // Also after the DEL: a reconcile may have queued a write of the container while the DEL waited
        // for its lock.
        shared.status.cancel(&container);
    }
    // ADD's durable writes (deferred to now), holding the container's lock, right after the reply. DEL's
    // unlinks hold nothing: like the status write, they wait for the client to hang up, so they do not
    // compete with the shim's exit (busy from now on, so the drain waits for them). The status write below
    // waits for the ADD's writes: the result records are what a restarted daemon writes a lost status from
    // (`super::reconcile`).
    let (flushed_tx, flushed) = tokio::sync::oneshot::channel::<()>();
    let recheck = added_pod
        .filter(|_| reply.status == 200)
        .zip(shared.cache.as_ref().map(|c| c.changed_pods()));
    if let Some(finish) = finish {
        let finish: Box<dyn FnOnce() + Send> = Box::new(move || {
            finish();
            let _ = flushed_tx.send(());
            // In line already: the reconcile reads the caches and changes nothing.
            if let Some((pod, changed)) = recheck {
                changed.push(pod);
            }
        });
        let work = AfterReplyWork::new(shared, state, finish);
        if verb == "DEL" {
            let hung_up = hung_up.clone();
            tokio::spawn(async move {
                client_gone(hung_up).await;
                work.start();
            });
        } else {
            work.start();
        }
    } else {
        drop(flushed_tx);
    }
    shared
        .metrics
        .request(&reply.verb, &reply.result, arrived.elapsed());
    // The status write of an ADD that succeeded (statusWrite: afterReply), then its events, go out once the
    // client has hung up after the reply. Pending from here on, so the drain waits for it.
    if let Some(api) = &api
        && reply.status == 200
        && let Some(job) = status
    {
        let write = shared.status.submit(api.clone(), &container, *job);
        let hung_up = hung_up.clone();
        tokio::spawn(async move {
            // Dropped unsent by a panic in the writes: the write goes ahead anyway.
            let _ = flushed.await;
            client_gone(hung_up).await;
            write.await
        });
    }
    // Other events go out after the reply, off the critical path; the drain waits for them too.
    if let Some(api) = api
        && !events.is_empty()
    {
        let held = Held::new(state);
        tokio::spawn(async move {
            client_gone(hung_up).await;
            api.post_events(events).await;
            drop(held);
        });
    }
    drop(busy);
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    respond(status, "application/json", reply.body)
}

fn metrics(shared: &Shared, state: &State) -> Response<Body> {
    respond(
        StatusCode::OK,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        shared
            .metrics
            .render(shared.cache.as_deref(), state.is_ready()),
    )
}

async fn serve_metrics(listener: TcpListener, shared: Arc<Shared>, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (shared, state) = (shared.clone(), state.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let (shared, state) = (shared.clone(), state.clone());
                async move {
                    let resp = match req.uri().path() {
                        "/metrics" => metrics(&shared, &state),
                        wire::HEALTHZ_PATH => respond(StatusCode::OK, "text/plain", "ok\n"),
                        wire::READYZ_PATH => readyz(&state),
                        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon answers each transport failure of its own with the status and CNI code of the shim crate's
    /// table, which the shim reads the same way (a 503 is waited on, the code reaches the runtime).
    #[tokio::test]
    async fn transport_failures_are_answered_from_the_table() {
        let answered: Vec<Transport> = Transport::ALL
            .into_iter()
            .filter(|t| t.status().is_some())
            .collect();
        assert_eq!(answered.len(), 9, "{answered:?}");
        for t in answered {
            let resp = cni_error(t, format!("{t:?}"));
            assert_eq!(Some(resp.status().as_u16()), t.status(), "{t:?}");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let reply = plexus_cni::ErrorReply::parse(&body).unwrap();
            assert_eq!((reply.code, reply.msg), (t.code(), format!("{t:?}")));
        }
        assert_eq!(
            status_of(Transport::QueueFull),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status_of(Transport::NotReady),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    /// What the daemon shares, for requests that never reach the API: a client pointed at nothing, no
    /// caches, no cniDir served yet.
    fn offline_shared(dir: &Path) -> Arc<Shared> {
        let env = |k: &str| (k == "NODE_NAME").then(|| "node-a".to_string());
        let config = super::super::config::DaemonConfig::from_bytes(b"{}", "t", &env).unwrap();
        let kube = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let (exec, netns) = crate::seams::hostroot::seams(None);
        Arc::new(Shared {
            config,
            handle: tokio::runtime::Handle::current(),
            client: crate::seams::k8s::transport::client(&kube).unwrap(),
            cache: None,
            metrics: super::super::metrics::Metrics::new(),
            status: super::super::status_writer::StatusWriter::new(Duration::from_secs(1), None),
            served: Arc::new(super::super::reconcile::ServedDirs::load(
                dir.join("served.json"),
            )),
            search_path: Default::default(),
            exec,
            netns,
        })
    }

    /// One HTTP/1.1 POST on the unix socket `socket`, as Go's client makes it: the status and the body.
    fn post(socket: &Path, uri: &str, body: &[u8]) -> (u16, Vec<u8>) {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut request = format!(
            "POST {uri} HTTP/1.1\r\nHost: dummy\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        s.write_all(&request).unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).unwrap();
        let split = reply
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a whole reply");
        let head = String::from_utf8_lossy(&reply[..split]).to_string();
        let code = head.split(' ').nth(1).unwrap().parse().unwrap();
        (code, reply[split + 4..].to_vec())
    }

    /// `/delegate` goes through `/cni`'s admission: with the one slot taken, `maxQueue` calls wait for it
    /// (counted as queued) and the next ones are refused at once with what `/cni` answers (503, code 11,
    /// counted as rejected), whatever the endpoint; the calls that waited run once the slot is free.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_delegate_calls_beyond_the_queue_is_refused_as_cni_calls_are() {
        let d = tempfile::tempdir().unwrap();
        let shared = offline_shared(d.path());
        let state = Arc::new(State::new(1, None, 2));
        let socket = d.path().join("plexus.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(accept(
            listener,
            socket.clone(),
            shared.clone(),
            state.clone(),
            stopped,
        ));
        let config = br#"{"cniVersion":"1.0.0","name":"tenant","type":"macvlan"}"#;
        let body = serde_json::to_vec(&serde_json::json!({
            "env": {
                "CNI_COMMAND": "ADD",
                "CNI_CONTAINERID": "c1",
                "CNI_NETNS": "/run/netns/c1",
                "CNI_IFNAME": "net7",
                "CNI_ARGS": "IgnoreUnknown=true;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=p1",
                "CNI_PATH": "/opt/cni/bin",
            },
            "config": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, config),
        }))
        .unwrap();
        let call = |uri: &'static str| {
            let (socket, body) = (socket.clone(), body.clone());
            tokio::task::spawn_blocking(move || post(&socket, uri, &body))
        };

        let slot = state.slots.clone().try_acquire_owned().unwrap();
        let waiting = [call(DELEGATE_PATH), call(DELEGATE_PATH)];
        let deadline = Instant::now() + Duration::from_secs(10);
        while state.queued.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            state.queued.load(Ordering::SeqCst),
            2,
            "the /delegate calls wait for the slot"
        );
        let text = shared.metrics.render(None, true);
        assert!(text.contains("plexus_requests_queued 2"), "{text}");

        let mut refusals = Vec::new();
        for uri in [DELEGATE_PATH, DELEGATE_PATH, wire::CNI_PATH] {
            let (code, reply) = call(uri).await.unwrap();
            let reply = plexus_cni::ErrorReply::parse(&reply).expect("a CNI error");
            assert!(reply.msg.contains("maxQueue"), "{uri}: {reply:?}");
            refusals.push((uri, code, reply.code));
        }
        let cni = (wire::CNI_PATH, 503, plexus_cni::codes::TRY_AGAIN_LATER);
        assert_eq!(
            refusals,
            [
                (DELEGATE_PATH, cni.1, cni.2),
                (DELEGATE_PATH, cni.1, cni.2),
                cni
            ]
        );
        let text = shared.metrics.render(None, true);
        assert!(text.contains("plexus_requests_rejected_total 3"), "{text}");

        // The slot free: the calls that waited run (no sandbox of that container here: code 3).
        drop(slot);
        for w in waiting {
            let (code, reply) = w.await.unwrap();
            let reply = plexus_cni::ErrorReply::parse(&reply).expect("a CNI error");
            assert_eq!((code, reply.code), (400, 3), "{reply:?}");
        }
        let text = shared.metrics.render(None, true);
        assert!(text.contains("plexus_requests_queued 0"), "{text}");
        assert!(text.contains("plexus_requests_in_flight 0"), "{text}");
    }

    /// After-reply work runs in order on the flusher thread, counts as busy until it ends, and a panic in
    /// one job neither loses the busy count nor stops the next.
    #[test]
    fn after_reply_work_runs_in_order_and_stays_busy_until_done() {
        let state = Arc::new(State::new(2, None, 4));
        let (gate_tx, gate) = mpsc::channel::<()>();
        let (done_tx, done) = mpsc::channel::<&'static str>();
        let first = done_tx.clone();
        let job: Box<dyn FnOnce() + Send> = Box::new(move || {
            gate.recv().unwrap();
            first.send("first").unwrap();
        });
        flusher().send((job, Held::new(&state))).unwrap();
        flusher()
            .send((Box::new(|| panic!("a job's own panic")), Held::new(&state)))
            .unwrap();
        flusher()
            .send((
                Box::new(move || done_tx.send("third").unwrap()),
                Held::new(&state),
            ))
            .unwrap();
        assert_eq!(state.outstanding(), 3, "busy from submission");
        gate_tx.send(()).unwrap();
        assert_eq!(done.recv().unwrap(), "first");
        assert_eq!(done.recv().unwrap(), "third");
        let deadline = Instant::now() + Duration::from_secs(5);
        while state.outstanding() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            state.outstanding(),
            0,
            "released after each job, the panicking one too"
        );
    }

    /// DEL waits for slots of its own: a row of busy ADDs does not hold it back, nor it them. Without a
    /// DEL limit of its own, one pool serves every verb.
    #[test]
    fn del_has_slots_of_its_own_or_shares_the_one_pool() {
        let s = State::new(1, Some(2), 4);
        let add = s.slots_for("ADD").clone().try_acquire_owned().unwrap();
        assert!(s.slots_for("CHECK").clone().try_acquire_owned().is_err());
        let d1 = s.slots_for("DEL").clone().try_acquire_owned().unwrap();
        let d2 = s.slots_for("DEL").clone().try_acquire_owned().unwrap();
        assert!(s.slots_for("DEL").clone().try_acquire_owned().is_err());
        drop((add, d1, d2));
        let shared = State::new(2, None, 4);
        let a = shared.slots_for("ADD").clone().try_acquire_owned().unwrap();
        let d = shared.slots_for("DEL").clone().try_acquire_owned().unwrap();
        assert!(shared.slots_for("DEL").clone().try_acquire_owned().is_err());
        assert!(shared.slots_for("GC").clone().try_acquire_owned().is_err());
        drop((a, d));
    }

    /// Up to the floor, DELs run whatever the memory; each one beyond needs [`DEL_ROOM`] more room under
    /// the cgroup's limit, and waits (queued) until there is. Without a limit to read, only the slots count.
    #[test]
    fn dels_beyond_the_floor_wait_for_room_under_the_memory_limit() {
        const MIB: u64 = 1024 * 1024;
        let d = tempfile::tempdir().unwrap();
        let cg = d.path().join("daemon");
        std::fs::create_dir(&cg).unwrap();
        let set = |limit: u64, usage: u64| {
            std::fs::write(cg.join("memory.max"), limit.to_string()).unwrap();
            std::fs::write(cg.join("memory.current"), usage.to_string()).unwrap();
        };
        set(64 * MIB, 58 * MIB);
        let room = MemoryRoom::find("0::/daemon\n", d.path());
        assert!(room.is_some());
        let s = State::new(1, Some(8), 16).with_room(room);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let soon =
            |f| rt.block_on(async { tokio::time::timeout(Duration::from_millis(100), f).await });
        // The floor: whatever the room.
        let first = soon(s.admit_del()).unwrap().unwrap();
        // 6 MiB left: room for one more (4 MiB), not for two (8 MiB).
        let second = soon(s.admit_del()).unwrap().unwrap();
        assert!(soon(s.admit_del()).is_err(), "the third waits for room");
        assert_eq!(s.del_running.load(Ordering::SeqCst), 2);
        // The pods' memory freed: room for it.
        set(64 * MIB, 50 * MIB);
        let third = soon(s.admit_del()).unwrap().unwrap();
        assert_eq!(s.del_running.load(Ordering::SeqCst), 3);
        drop((first, second, third));
        assert_eq!(s.del_running.load(Ordering::SeqCst), 0);
        // No limit: no wait.
        std::fs::write(cg.join("memory.max"), "max").unwrap();
        let many: Vec<_> = (0..6)
            .map(|_| soon(s.admit_del()).unwrap().unwrap())
            .collect();
        assert_eq!(many.len(), 6);
        // DEL sharing the one pool: no floor, no wait.
        let shared = State::new(1, None, 4);
        assert!(rt.block_on(shared.admit_del()).is_none());
    }

    #[test]
    fn socket_dir_is_made_root_only_and_a_stale_socket_is_cleared() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("run");
        let path = prepare_socket(&dir).unwrap();
        assert_eq!(path, dir.join("plexus.sock"));
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // A socket nobody listens on is stale: removed.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        prepare_socket(&dir).unwrap();
        assert!(!path.exists());
        // A live one means another daemon: refused.
        let _live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let e = prepare_socket(&dir).unwrap_err();
        assert!(e.to_string().contains("another daemon"), "{e}");
    }

    #[test]
    fn a_non_socket_in_the_way_is_left_alone() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("plexus.sock"), "x").unwrap();
        let e = prepare_socket(d.path()).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert!(d.path().join("plexus.sock").exists());
    }

    #[test]
    fn go_name_links_to_the_socket() {
        let d = tempfile::tempdir().unwrap();
        link_go_name(d.path());
        let target = std::fs::read_link(d.path().join("multus.sock")).unwrap();
        assert_eq!(target, Path::new("plexus.sock"));
        // Again: replaced, not an error.
        link_go_name(d.path());
        assert!(std::fs::symlink_metadata(d.path().join("multus.sock")).is_ok());
    }

    #[test]
    fn readiness_follows_start_and_stop() {
        let s = State::new(2, None, 4);
        assert!(!s.is_ready());
        s.ready.store(true, Ordering::SeqCst);
        assert!(s.is_ready());
        s.stopping.store(true, Ordering::SeqCst);
        assert!(!s.is_ready());
        let c = Count::new(&s.busy);
        assert_eq!(s.outstanding(), 1);
        drop(c);
        assert_eq!(s.outstanding(), 0);
    }
}
