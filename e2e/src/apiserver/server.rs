//! Transport and control: the TLS listener, bearer-token authentication,
//! fault injection, the request log, the `/standin/` endpoints, and the
//! [`ApiServer`] handle tests and the binary use.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::api::{self, Reply};
use super::auth::Tokens;
use super::client::Client;
use super::error::ApiError;
use super::faults::{FaultSpec, Faults, RequestLog, RequestRecord, UserRecord};
use super::rbac::UserInfo;
use super::resources;
use super::routes::{self, Route};
use super::store::Store;
use super::{kubeconfig, tls, util};

/// Largest request body accepted (the real server's limit is about 3 MiB too).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// State shared by every connection.
#[derive(Debug)]
pub struct State {
    pub(crate) store: Mutex<Store>,
    pub(crate) faults: Faults,
    pub(crate) log: RequestLog,
    pub(crate) token: String,
    pub(crate) tokens: Tokens,
    pub(crate) addr: SocketAddr,
    pub(crate) log_to_stderr: bool,
    pub(crate) conns: ConnCounts,
}

/// Connections so far, by how far they got.
#[derive(Debug, Default)]
pub(crate) struct ConnCounts {
    accepted: AtomicU64,
    http1: AtomicU64,
    http2: AtomicU64,
}

impl ConnCounts {
    fn snapshot(&self) -> Connections {
        Connections {
            accepted: self.accepted.load(Ordering::SeqCst),
            http1: self.http1.load(Ordering::SeqCst),
            http2: self.http2.load(Ordering::SeqCst),
        }
    }
}

/// How many connections the stand-in has accepted since it started ([`ApiServer::connections`],
/// `GET /standin/connections`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Connections {
    /// TCP connections accepted (including those whose TLS handshake then failed).
    pub accepted: u64,
    /// Connections served HTTP/1.1 after the TLS handshake (the client offered no ALPN or chose `http/1.1`).
    pub http1: u64,
    /// Connections served HTTP/2 (ALPN `h2`).
    pub http2: u64,
}

impl State {
    pub(crate) fn lock_store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How to start the stand-in.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (default 127.0.0.1).
    pub host: IpAddr,
    /// Port (default 0: any free port).
    pub port: u16,
    /// Bearer token clients must send (default: random).
    pub token: Option<String>,
    /// Where to write a kubeconfig, if anywhere.
    pub kubeconfig: Option<PathBuf>,
    /// Create the NetworkAttachmentDefinition CRD at start.
    pub nad_crd: bool,
    /// Objects to create at start (any served kind; `status` is kept).
    pub seed: Vec<Value>,
    /// Print one line per request to stderr.
    pub log_to_stderr: bool,
    /// Offer only `http/1.1` in ALPN, like a server with HTTP/2 turned off (default: `h2` and `http/1.1`).
    pub http1_only: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            token: None,
            kubeconfig: None,
            nad_crd: false,
            seed: Vec::new(),
            log_to_stderr: false,
            http1_only: false,
        }
    }
}

/// Why the stand-in could not start.
#[derive(Debug)]
pub enum StartError {
    /// Certificates or TLS configuration.
    Tls(tls::TlsError),
    /// Binding the port or writing the kubeconfig.
    Io(std::io::Error),
    /// A seed object was refused.
    Seed(ApiError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Tls(e) => write!(f, "TLS setup: {e}"),
            StartError::Io(e) => write!(f, "{e}"),
            StartError::Seed(e) => write!(f, "seed object refused: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A running stand-in. Dropping it stops the server.
#[derive(Debug)]
pub struct ApiServer {
    state: Arc<State>,
    url: String,
    ca_pem: String,
    kubeconfig: Option<PathBuf>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Starts serving (on the current tokio runtime).
    pub async fn start(config: Config) -> Result<ApiServer, StartError> {
        let tls = tls::generate().map_err(StartError::Tls)?;
        let listener = TcpListener::bind(SocketAddr::new(config.host, config.port))
            .await
            .map_err(StartError::Io)?;
        let addr = listener.local_addr().map_err(StartError::Io)?;
        let url = match addr {
            SocketAddr::V4(a) => format!("https://{a}"),
            SocketAddr::V6(a) => format!("https://[{}]:{}", a.ip(), a.port()),
        };
        let mut store = Store::new();
        if config.nad_crd {
            store.seed(resources::nad_crd()).map_err(StartError::Seed)?;
        }
        for obj in order_seed(config.seed) {
            store.seed(obj).map_err(StartError::Seed)?;
        }
        let state = Arc::new(State {
            store: Mutex::new(store),
            faults: Faults::default(),
            log: RequestLog::default(),
            token: config.token.unwrap_or_else(|| util::random_hex(24)),
            tokens: Tokens::default(),
            addr,
            log_to_stderr: config.log_to_stderr,
            conns: ConnCounts::default(),
        });
        if let Some(path) = &config.kubeconfig {
            kubeconfig::write(path, &url, &tls.ca_pem, &state.token).map_err(StartError::Io)?;
        }
        let mut server_tls = (*tls.config).clone();
        if config.http1_only {
            server_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(
            listener,
            TlsAcceptor::from(Arc::new(server_tls)),
            state.clone(),
            stopped,
        ));
        Ok(ApiServer {
            state,
            url,
            ca_pem: tls.ca_pem,
            kubeconfig: config.kubeconfig,
            stop: Some(stop),
            task,
        })
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.state.addr
    }

    /// The bearer token.
    pub fn token(&self) -> &str {
        &self.state.token
    }

    /// The CA certificate (PEM) that signed the serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The kubeconfig written at start, if one was asked for.
    pub fn kubeconfig_path(&self) -> Option<&Path> {
        self.kubeconfig.as_deref()
    }

    /// A kubeconfig (YAML) for this server.
    pub fn kubeconfig(&self) -> String {
        kubeconfig::render(&self.url, &self.ca_pem, self.token())
    }

    /// Writes a kubeconfig for this server to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        kubeconfig::write(path, &self.url, &self.ca_pem, self.token())
    }

    /// A small HTTPS client for this server, with its token.
    pub fn client(&self) -> Client {
        Client::new(&self.url, &self.ca_pem, Some(self.token())).expect("own CA is valid")
    }

    /// The fault knobs.
    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    /// Installs a fault rule; returns its id.
    pub fn inject(&self, spec: FaultSpec) -> u64 {
        self.state.faults.add(spec).expect("fault spec is valid")
    }

    /// Every logged API request, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state.log.all()
    }

    /// Every logged API request with the name of the user who made it (`None`: not authenticated),
    /// oldest first.
    pub fn requests_by_user(&self) -> Vec<UserRecord> {
        self.state.log.all_by_user()
    }

    /// How many logged requests had `method` (any if "") and a path containing `path`.
    pub fn count_requests(&self, method: &str, path: &str) -> usize {
        self.state.log.filtered(method, path).len()
    }

    /// Connections accepted so far, and the protocol each was served.
    pub fn connections(&self) -> Connections {
        self.state.conns.snapshot()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        self.state.log.clear();
    }

    /// Runs `f` on the store (for direct inspection or setup).
    pub fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(&mut self.state.lock_store())
    }

    /// Creates an object by its `apiVersion`/`kind`, keeping `status` (like seeding).
    pub fn create(&self, obj: Value) -> Result<Value, ApiError> {
        self.with_store(|s| s.seed(obj))
    }

    /// Creates every object of `objs` as [`ApiServer::create`] does, under one lock of the store: bulk
    /// set-up (the bench's tens of thousands of NADs) without a request or a lock per object. Stops at the
    /// first error; returns how many were created.
    pub fn create_all(&self, objs: impl IntoIterator<Item = Value>) -> Result<usize, ApiError> {
        self.with_store(|s| {
            let mut n = 0;
            for obj in objs {
                s.seed(obj)?;
                n += 1;
            }
            Ok(n)
        })
    }

    /// An object by `apiVersion`, `kind`, namespace ("" for cluster-scoped) and name.
    pub fn get(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
        self.with_store(|s| {
            let rt = s.resolve_kind(api_version, kind)?;
            s.get(&rt, ns, name).ok()
        })
    }

    /// Creates the NetworkAttachmentDefinition CRD unless it exists.
    pub fn install_nad_crd(&self) -> Result<(), ApiError> {
        match self.create(resources::nad_crd()) {
            Err(e) if e.reason != "AlreadyExists" => Err(e),
            _ => Ok(()),
        }
    }

    /// Stops accepting and closes every connection.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// CRDs first, then namespaces, then everything else (so seeds may refer to each other).
fn order_seed(mut objs: Vec<Value>) -> Vec<Value> {
    let rank = |o: &Value| match o.get("kind").and_then(Value::as_str) {
        Some("CustomResourceDefinition") => 0,
        Some("Namespace") => 1,
        Some("ServiceAccount") => 2,
        _ => 3,
    };
    objs.sort_by_key(rank);
    objs
}

/// Parses a seed file: a JSON object, a JSON array or `List`, or YAML documents.
pub fn parse_seed(text: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> = match serde_json::from_str::<Value>(text) {
        Ok(v) => vec![v],
        Err(_) => serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?,
    };
    let mut out = Vec::new();
    for d in docs {
        match d {
            Value::Array(items) => out.extend(items),
            Value::Object(ref m)
                if m.get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.ends_with("List")) =>
            {
                out.extend(
                    m.get("items")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                )
            }
            Value::Null => {}
            other => out.push(other),
        }
    }
    Ok(out)
}

async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<State>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                state.conns.accepted.fetch_add(1, Ordering::SeqCst);
                // As a real API server (Go sets it on every TCP connection): HTTP/2 answers are several
                // frames, which Nagle's algorithm would hold back for the client's delayed ACK.
                let _ = tcp.set_nodelay(true);
                let (acceptor, state) = (acceptor.clone(), state.clone());
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                    let counter = if h2 { &state.conns.http2 } else { &state.conns.http1 };
                    counter.fetch_add(1, Ordering::SeqCst);
                    let svc = service_fn(move |req| handle(state.clone(), req));
                    // A service error (a `drop` fault, "down") closes an HTTP/1.1 connection without an
                    // answer; over HTTP/2 it resets that request's stream and the connection lives on.
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), svc)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), svc)
                            .await;
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// The service error that makes hyper close the connection without answering.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the stand-in")
    }
}

impl std::error::Error for Dropped {}

type Body = BoxBody<Bytes, Infallible>;

struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec(v).expect("JSON values serialize");
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.code, &e.to_status());
    if let Some(secs) = e.retry_after {
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

fn into_response(reply: Reply) -> Response<Body> {
    match reply {
        Reply::Json(code, v) => json_response(code, &v),
        Reply::Error(e) => error_response(&e),
        Reply::Text(code, t) => {
            let mut r = Response::new(Full::new(Bytes::from(t)).boxed());
            *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
        Reply::Stream(rx) => {
            let mut r = Response::new(BodyExt::boxed(ChannelBody(rx)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
    }
}

fn bearer<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
}

/// Whether the request carries the bootstrap token (the only one `/standin/` accepts).
fn authorized<B>(req: &Request<B>, token: &str) -> bool {
    bearer(req) == Some(token)
}

/// Who sent the request: the bootstrap token's admin, the ServiceAccount of a minted token, or nobody.
fn authenticate<B>(state: &State, req: &Request<B>) -> Option<UserInfo> {
    let token = bearer(req)?;
    if token == state.token {
        return Some(UserInfo::admin());
    }
    state.tokens.authenticate(&state.lock_store(), token)
}

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::new(413, "the request body is too large"))
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "error reading the request body: {e}"
        ))),
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Dropped> {
    let started = Instant::now();
    let time = util::now_rfc3339_millis();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query_raw = req.uri().query().unwrap_or("").to_string();
    let route = routes::parse(&path);

    if let Route::Standin(segs) = route {
        if !authorized(&req, &state.token) {
            return Ok(error_response(&ApiError::unauthorized()));
        }
        let body = match read_body(req.into_body()).await {
            Ok(b) => b,
            Err(e) => return Ok(error_response(&e)),
        };
        return Ok(into_response(standin(
            &state, &method, &segs, &query_raw, &body,
        )));
    }

    let user = authenticate(&state, &req);
    let user_name = user.as_ref().map(|u| u.name.clone());
    let record = |status: u16, fault: Option<&str>| {
        if state.log_to_stderr {
            eprintln!(
                "{time} {method} {path}{}{query_raw} -> {status}{}",
                if query_raw.is_empty() { "" } else { "?" },
                user.as_ref()
                    .filter(|u| !u.is_master())
                    .map(|u| format!(" ({})", u.name))
                    .unwrap_or_default()
            );
        }
        state.log.push_by(
            RequestRecord {
                method: method.to_string(),
                path: path.clone(),
                query: query_raw.clone(),
                status,
                time: time.clone(),
                duration_ms: started.elapsed().as_millis() as u64,
                fault: fault.map(String::from),
            },
            user_name.clone(),
        );
    };

    if state.faults.is_down() {
        record(0, Some("down"));
        return Err(Dropped);
    }
    let public = matches!(route, Route::Health | Route::Version);
    if !public && user.is_none() {
        let e = ApiError::unauthorized();
        record(e.code, None);
        return Ok(error_response(&e));
    }
    let decision = state.faults.decide(method.as_str(), &path);
    let mut fault = None;
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
        fault = Some("latency");
    }
    if decision.drop {
        record(0, Some("drop"));
        return Err(Dropped);
    }
    if let Some((code, retry_after, message)) = decision.status {
        let mut e = ApiError::new(
            code,
            message.unwrap_or_else(|| match code {
                429 => "Too many requests, please try again later.".into(),
                503 => "the server is currently unable to handle the request".into(),
                409 => "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again".into(),
                _ => "an error on the server (\"injected by the stand-in\") has prevented the request from succeeding".into(),
            }),
        );
        e.retry_after = retry_after;
        record(code, Some("status"));
        return Ok(error_response(&e));
    }

    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(e) => {
            record(e.code, fault);
            return Ok(error_response(&e));
        }
    };
    let query = util::parse_query(&query_raw);
    let anonymous = UserInfo::anonymous();
    let user = user.as_ref().unwrap_or(&anonymous);
    let reply = api::handle(&state, user, &method, route, &query, &content_type, body);
    let response = into_response(reply);
    record(response.status().as_u16(), fault);
    Ok(response)
}

/// `/standin/faults[/{id}]`, `/standin/requests` and `/standin/connections`.
fn standin(state: &State, method: &Method, segs: &[String], query: &str, body: &[u8]) -> Reply {
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (method.clone(), segs.as_slice()) {
        (Method::GET, ["faults"]) => Reply::Json(
            200,
            json!({"down": state.faults.is_down(), "faults": state.faults.list()}),
        ),
        (Method::POST, ["faults"]) => {
            let v: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    return Reply::Error(ApiError::bad_request(format!("bad fault JSON: {e}")));
                }
            };
            if let Some(down) = v.get("down").and_then(Value::as_bool) {
                let duration = v
                    .get("forMs")
                    .and_then(Value::as_u64)
                    .map(Duration::from_millis);
                state.faults.set_down(down, duration);
                return Reply::Json(200, json!({"down": down}));
            }
            match serde_json::from_value::<FaultSpec>(v)
                .map_err(|e| e.to_string())
                .and_then(|s| state.faults.add(s))
            {
                Ok(id) => Reply::Json(201, json!({"id": id})),
                Err(e) => Reply::Error(ApiError::bad_request(e)),
            }
        }
        (Method::DELETE, ["faults"]) => {
            state.faults.clear();
            Reply::Json(200, json!({"cleared": true}))
        }
        (Method::DELETE, ["faults", id]) => match id.parse().map(|id| state.faults.remove(id)) {
            Ok(true) => Reply::Json(200, json!({"removed": id})),
            _ => Reply::Error(ApiError::new(404, format!("no fault {id}"))),
        },
        (Method::GET, ["requests"]) => {
            let q = util::parse_query(query);
            let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
            let records: Vec<Value> = state
                .log
                .filtered_by_user(get("method"), get("path"))
                .into_iter()
                .map(|(r, user)| {
                    let mut v = json!(r);
                    if let Some(u) = user {
                        v["user"] = json!(u);
                    }
                    v
                })
                .collect();
            Reply::Json(200, json!(records))
        }
        (Method::DELETE, ["requests"]) => Reply::Json(200, json!({"cleared": state.log.clear()})),
        (Method::GET, ["connections"]) => Reply::Json(200, json!(state.conns.snapshot())),
        _ => Reply::Error(ApiError::no_route()),
    }
}
