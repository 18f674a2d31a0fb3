//! The API client's transport: kube's own layers over a hyper client that speaks HTTP/2 when the server offers it.
//!
//! kube-rs 5's `Client::try_from(Config)` builds an HTTP/1.1-only client (its TLS connector offers no ALPN),
//! so each concurrent request of an ADD (the pod, then K NADs) opened its own TLS connection. [`client`]
//! builds the stack kube builds (`kube-client` 5.0.0, `client/builder.rs`): base URI, kube's retry layer when
//! `default_retry` is set, authentication (static or refreshed tokens, exec plugins; client certificates go
//! into the TLS settings), extra and impersonation headers, kube's tracing span, and connect/read/write
//! time-outs on each connection; TLS from the kubeconfig (CA, client certificate, `tls-server-name`,
//! insecure-skip-verify) as kube sets it up, but with no system CA roots loaded unless the kubeconfig names
//! no CA (`super::tls`). Otherwise only the connector differs: it offers ALPN `h2` and `http/1.1`,
//! and hyper-util's pool shares an HTTP/2 connection among all requests. A server that picks `http/1.1`, or
//! plain `http://`, gets HTTP/1.1 as before. Left out: gzip (not enabled in plexus's kube features),
//! proxies (not enabled either: a proxy URL is refused, as kube refuses it) and `Client::valid_until`
//! (kube sets it from an exec plugin's certificate expiry; plexus's client lives for one call).
//!
//! hyper-util's pool learns a connection's protocol only when its TLS handshake is done, so requests that
//! start together before any connection is up would each open one (every handshake is paid, then all but one
//! connection are thrown away). [`FirstConnect`] makes the first connection alone: later connects wait for
//! its handshake; if the server chose HTTP/2 they wait until that connection closes (meanwhile the pool gives
//! it to their requests, and hyper-util leaves the now unneeded connects pending in the background); if it
//! chose HTTP/1.1 they all go ahead at once, one connection per concurrent request as before. Built for the
//! thin binary's client, which lives for one call: an HTTP/2 connection that stays open but takes no new
//! requests (after a GOAWAY, until its last stream ends) holds back new connections until it closes, which
//! a long watch on it would make long.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderMap, Request, Response, Uri};
use hyper::{
    body::Incoming,
    rt::{Read, ReadBufCursor, Write},
};
use hyper_rustls::{FixedServerNameResolver, HttpsConnectorBuilder};
use hyper_timeout::TimeoutConnector;
use hyper_util::{
    client::legacy::connect::{Connected, Connection, HttpConnector},
    rt::TokioExecutor,
};
use kube::client::{Body, ConfigExt, retry::RetryPolicy};
use tokio::sync::{Mutex, watch};
use tower::{BoxError, Service, ServiceBuilder, ServiceExt, retry::RetryLayer};
use tower_http::{classify::ServerErrorsFailureClass, trace::TraceLayer};
use tracing::Span;

/// A kube client for `config` that negotiates HTTP/2 or HTTP/1.1 (call within a tokio runtime: the client
/// spawns its buffer task).
pub fn client(config: &kube::Config) -> Result<kube::Client, String> {
    if let Some(proxy) = &config.proxy_url {
        // kube (built without its proxy features, as plexus builds it) refuses a proxy the same way.
        return Err(format!(
            "a proxy is set ({proxy}: the kubeconfig's proxy-url or HTTPS_PROXY) but plexus connects to the \
             API server directly"
        ));
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    // HTTP/2 writes a request as several frames; with Nagle's algorithm the later ones wait for the
    // server's (delayed, up to 40 ms) ACK of the first. Go's client, and kube-apiserver, set TCP_NODELAY.
    http.set_nodelay(true);
    let tls = super::tls::client_config(config).map_err(|e| format!("TLS settings: {e}"))?;
    let mut https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    if let Some(name) = &config.tls_server_name {
        let server_name = name
            .clone()
            .try_into()
            .map_err(|e| format!("tls-server-name {name:?}: {e}"))?;
        https = https.with_server_name_resolver(FixedServerNameResolver::new(server_name));
    }
    let https = https.enable_http1().enable_http2().wrap_connector(http);
    let mut timed = TimeoutConnector::new(https);
    timed.set_connect_timeout(config.connect_timeout);
    timed.set_read_timeout(config.read_timeout);
    timed.set_write_timeout(config.write_timeout);
    timed.set_reset_reader_on_write(config.reset_reader_on_write);
    let hyper: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build(FirstConnect::new(timed));

    let auth = config
        .auth_layer()
        .map_err(|e| format!("API credentials: {e}"))?;
    let headers = config
        .extra_headers_layer()
        .map_err(|e| format!("API request headers: {e}"))?;
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(auth)
        .layer(headers)
        .layer(trace_layer())
        .map_err(BoxError::from)
        .service(hyper);
    Ok(kube::Client::new(service, config.default_namespace.clone()))
}

/// kube's tracing layer, as kube builds it: a debug span per request, an error line for 5xx and failures.
#[allow(clippy::type_complexity)]
fn trace_layer() -> TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    impl Fn(&Request<Body>) -> Span + Clone,
    impl Fn(&Request<Body>, &Span) + Clone,
    impl Fn(&Response<Incoming>, Duration, &Span) + Clone,
    (),
    impl Fn(Option<&HeaderMap>, Duration, &Span) + Clone,
    impl Fn(ServerErrorsFailureClass, Duration, &Span) + Clone,
> {
    TraceLayer::new_for_http()
        .make_span_with(|req: &Request<Body>| {
            tracing::debug_span!(
                "HTTP",
                http.method = %req.method(),
                http.url = %req.uri(),
                http.status_code = tracing::field::Empty,
                otel.name = req.extensions().get::<&'static str>().unwrap_or(&"HTTP"),
                otel.kind = "client",
                otel.status_code = tracing::field::Empty,
            )
        })
        .on_request(|_: &Request<Body>, _: &Span| tracing::debug!("requesting"))
        .on_response(|res: &Response<Incoming>, _: Duration, span: &Span| {
            let status = res.status();
            span.record("http.status_code", status.as_u16());
            if status.is_client_error() || status.is_server_error() {
                span.record("otel.status_code", "ERROR");
            }
        })
        .on_body_chunk(())
        .on_eos(|_: Option<&HeaderMap>, _: Duration, _: &Span| tracing::debug!("stream closed"))
        .on_failure(|ec: ServerErrorsFailureClass, _: Duration, span: &Span| {
            span.record("otel.status_code", "ERROR");
            match ec {
                ServerErrorsFailureClass::StatusCode(status) => {
                    span.record("http.status_code", status.as_u16());
                    tracing::error!("failed with status {}", status)
                }
                ServerErrorsFailureClass::Error(err) => {
                    tracing::error!("failed with error {}", err)
                }
            }
        })
}

/// What the connections made so far say about the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    /// No connection is up yet.
    Unknown,
    /// It chose HTTP/1.1 (or speaks plain HTTP): one connection per concurrent request, made in parallel.
    Http1,
    /// It chose HTTP/2; this many such connections are open (none: ask again with the next connection).
    Http2(usize),
}

struct Gate {
    proto: watch::Sender<Proto>,
    /// Held while the connection that learns the protocol is made.
    probe: Mutex<()>,
}

/// A connector that makes the first connection alone (see the module documentation).
#[derive(Clone)]
pub(crate) struct FirstConnect<C> {
    inner: C,
    gate: Arc<Gate>,
}

impl<C> FirstConnect<C> {
    pub(crate) fn new(inner: C) -> Self {
        FirstConnect {
            inner,
            gate: Arc::new(Gate {
                proto: watch::Sender::new(Proto::Unknown),
                probe: Mutex::new(()),
            }),
        }
    }
}

impl<C> Service<Uri> for FirstConnect<C>
where
    C: Service<Uri> + Clone + Send + 'static,
    C::Response: Connection + Read + Write + Unpin + Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = Tracked<C::Response>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        Box::pin(connect(self.inner.clone(), self.gate.clone(), dst))
    }
}

async fn connect<C>(inner: C, gate: Arc<Gate>, dst: Uri) -> Result<Tracked<C::Response>, BoxError>
where
    C: Service<Uri>,
    C::Response: Connection,
    C::Error: Into<BoxError>,
{
    let mut seen = gate.proto.subscribe();
    loop {
        // While an HTTP/2 connection is open the pool hands it to the request this connect was started for.
        let proto = *seen
            .wait_for(|p| !matches!(p, Proto::Http2(n) if *n > 0))
            .await?;
        if proto == Proto::Http1 {
            let io = inner.oneshot(dst).await.map_err(Into::into)?;
            return Ok(Tracked { io, gate: None });
        }
        let probing = gate.probe.lock().await;
        if *gate.proto.borrow() != proto {
            // Another connection learned something while this one waited.
            continue;
        }
        let io = inner.oneshot(dst).await.map_err(Into::into)?;
        let h2 = io.connected().is_negotiated_h2();
        gate.proto.send_modify(|p| {
            *p = match (h2, *p) {
                (true, Proto::Http2(n)) => Proto::Http2(n + 1),
                (true, _) => Proto::Http2(1),
                (false, _) => Proto::Http1,
            }
        });
        drop(probing);
        return Ok(Tracked {
            io,
            gate: h2.then_some(gate),
        });
    }
}

/// A connection made by [`FirstConnect`]; an HTTP/2 one tells the gate when it closes.
pub(crate) struct Tracked<T> {
    io: T,
    gate: Option<Arc<Gate>>,
}

impl<T> Drop for Tracked<T> {
    fn drop(&mut self) {
        if let Some(gate) = &self.gate {
            gate.proto.send_modify(|p| {
                if let Proto::Http2(n) = p {
                    *n = n.saturating_sub(1);
                }
            });
        }
    }
}

impl<T: Connection> Connection for Tracked<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl<T: Read + Unpin> Read for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        sync::{
            Mutex as StdMutex,
            atomic::{AtomicUsize, Ordering},
        },
        time::Instant,
    };

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use k8s_openapi::api::core::v1::Pod;
    use kube::Api;
    use serde_json::json;
    use tokio::{sync::oneshot, task::JoinHandle};

    use super::*;

    /// A connector whose connections the test completes by hand: `true` negotiates h2, `false` does not, a
    /// dropped sender fails the connect.
    #[derive(Clone, Default)]
    struct Manual {
        pending: Arc<StdMutex<Vec<oneshot::Sender<bool>>>>,
    }

    impl Manual {
        fn calls(&self) -> usize {
            self.pending.lock().unwrap().len()
        }
        fn finish(&self, i: usize, h2: bool) {
            let tx = std::mem::replace(&mut self.pending.lock().unwrap()[i], oneshot::channel().0);
            tx.send(h2).unwrap();
        }
        fn fail(&self, i: usize) {
            drop(std::mem::replace(
                &mut self.pending.lock().unwrap()[i],
                oneshot::channel().0,
            ));
        }
    }

    struct FakeIo(bool);

    impl Connection for FakeIo {
        fn connected(&self) -> Connected {
            let c = Connected::new();
            if self.0 { c.negotiated_h2() } else { c }
        }
    }
    impl Read for FakeIo {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: ReadBufCursor<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }
    impl Write for FakeIo {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl Service<Uri> for Manual {
        type Response = FakeIo;
        type Error = BoxError;
        type Future = Pin<Box<dyn Future<Output = Result<FakeIo, BoxError>> + Send>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Uri) -> Self::Future {
            let (tx, rx) = oneshot::channel();
            self.pending.lock().unwrap().push(tx);
            Box::pin(async move { Ok(FakeIo(rx.await?)) })
        }
    }

    type Conn = JoinHandle<Result<Tracked<FakeIo>, BoxError>>;

    fn start(gate: &FirstConnect<Manual>, n: usize) -> Vec<Conn> {
        (0..n)
            .map(|_| tokio::spawn(gate.clone().call(Uri::from_static("https://api:6443"))))
            .collect()
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    fn done(conns: &[Conn]) -> usize {
        conns.iter().filter(|c| c.is_finished()).count()
    }

    #[tokio::test]
    async fn after_an_h2_handshake_no_other_connection_is_made_while_it_is_open() {
        let manual = Manual::default();
        let gate = FirstConnect::new(manual.clone());
        let mut conns = start(&gate, 3);
        settle().await;
        assert_eq!(manual.calls(), 1, "the first connection is made alone");
        manual.finish(0, true);
        settle().await;
        assert_eq!(done(&conns), 1);
        let first = conns.remove(0).await.unwrap().unwrap();
        assert_eq!(
            manual.calls(),
            1,
            "the others wait for the pool to share it"
        );
        let more = start(&gate, 2);
        settle().await;
        assert_eq!((manual.calls(), done(&conns) + done(&more)), (1, 0));

        drop(first);
        settle().await;
        assert_eq!(manual.calls(), 2, "once it closes, one connect goes ahead");
        manual.finish(1, true);
        settle().await;
        assert_eq!((manual.calls(), done(&conns) + done(&more)), (2, 1));
    }

    #[tokio::test]
    async fn after_an_http1_handshake_connections_are_made_in_parallel() {
        let manual = Manual::default();
        let gate = FirstConnect::new(manual.clone());
        let conns = start(&gate, 4);
        settle().await;
        assert_eq!(manual.calls(), 1);
        manual.finish(0, false);
        settle().await;
        assert_eq!(
            manual.calls(),
            4,
            "HTTP/1.1: one connection per request, all at once"
        );
        for i in 1..4 {
            manual.finish(i, false);
        }
        settle().await;
        assert_eq!(done(&conns), 4);
        // Known to be HTTP/1.1 from now on: nobody waits for a first connection.
        let later = start(&gate, 2);
        settle().await;
        assert_eq!(manual.calls(), 6);
        drop(later);
    }

    #[tokio::test]
    async fn a_failed_first_connection_lets_the_next_one_try() {
        let manual = Manual::default();
        let gate = FirstConnect::new(manual.clone());
        let mut conns = start(&gate, 2);
        settle().await;
        assert_eq!(manual.calls(), 1);
        manual.fail(0);
        settle().await;
        assert!(conns.remove(0).await.unwrap().is_err());
        assert_eq!(manual.calls(), 2, "the waiting connect makes its own");
        manual.finish(1, true);
        settle().await;
        assert_eq!(done(&conns), 1);
    }

    /// A plain-HTTP server (HTTP/1.1): answers GETs of pod `p1` with the request's Authorization and
    /// Impersonate-User headers as annotations, 503 to the first GET of `flaky`, never to `hang`.
    async fn http_server() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let flaky = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let flaky = flaky.clone();
                let svc = service_fn(move |req: Request<Incoming>| {
                    let flaky = flaky.clone();
                    async move {
                        let header = |h: &str| {
                            req.headers()
                                .get(h)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string()
                        };
                        let name = req
                            .uri()
                            .path()
                            .rsplit('/')
                            .next()
                            .unwrap_or("")
                            .to_string();
                        if name == "hang" {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                        }
                        if name == "flaky" && flaky.fetch_add(1, Ordering::SeqCst) == 0 {
                            let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                "message": "busy", "reason": "ServiceUnavailable", "code": 503});
                            return Ok::<_, Infallible>(
                                Response::builder()
                                    .status(503)
                                    .header("retry-after", "0")
                                    .body(Full::new(Bytes::from(status.to_string())))
                                    .unwrap(),
                            );
                        }
                        let pod = json!({"apiVersion": "v1", "kind": "Pod",
                            "metadata": {"name": name, "namespace": "ns1", "annotations": {
                                "authorization": header("authorization"),
                                "impersonate-user": header("impersonate-user")}}});
                        Ok(Response::new(Full::new(Bytes::from(pod.to_string()))))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc),
                );
            }
        });
        (url, accepted)
    }

    fn config_for(url: &str) -> kube::Config {
        let mut kc = kube::Config::new(url.parse().unwrap());
        kc.auth_info.token = Some("t0ken".to_string().into());
        kc.auth_info.impersonate = Some("alice".into());
        kc.default_retry = false;
        kc
    }

    #[tokio::test]
    async fn plain_http_works_with_kubes_layers() {
        let (url, accepted) = http_server().await;
        let pods: Api<Pod> = Api::namespaced(client(&config_for(&url)).unwrap(), "ns1");
        let (a, b, c) = tokio::join!(pods.get("p1"), pods.get("p2"), pods.get("p3"));
        for (p, name) in [(a, "p1"), (b, "p2"), (c, "p3")] {
            let p = p.unwrap();
            assert_eq!(p.metadata.name.as_deref(), Some(name));
            let ann = p.metadata.annotations.unwrap();
            assert_eq!(ann["authorization"], "Bearer t0ken", "auth layer");
            assert_eq!(ann["impersonate-user"], "alice", "extra headers layer");
        }
        assert!(accepted.load(Ordering::SeqCst) >= 1);
        // Without kube's retry the 503 surfaces; with it (a fresh server: 503 once more), it is retried.
        assert!(matches!(pods.get("flaky").await, Err(kube::Error::Api(s)) if s.code == 503));
        let (url, _) = http_server().await;
        let mut kc = config_for(&url);
        kc.default_retry = true;
        let retrying: Api<Pod> = Api::namespaced(client(&kc).unwrap(), "ns1");
        assert!(retrying.get("flaky").await.is_ok(), "kube's retry layer");
    }

    #[tokio::test]
    async fn the_read_timeout_still_applies() {
        let (url, _) = http_server().await;
        let mut kc = config_for(&url);
        kc.read_timeout = Some(Duration::from_millis(200));
        let pods: Api<Pod> = Api::namespaced(client(&kc).unwrap(), "ns1");
        let started = Instant::now();
        let err = pods.get("hang").await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "{err}");
    }

    /// An HTTPS server (HTTP/1.1) presenting a certificate for `api.cluster.test` only, signed by the
    /// returned CA (named `ca_name`); it answers every GET with a pod.
    async fn https_server(ca_name: &str) -> (String, super::super::tls::testpki::Ca) {
        use super::super::tls::testpki::{Ca, server_config};
        let ca = Ca::new(ca_name);
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(
            &ca,
            &ca.leaf(&["api.cluster.test"], false),
            None,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(|_: Request<Incoming>| async {
                        let pod = json!({"apiVersion": "v1", "kind": "Pod",
                                         "metadata": {"name": "p1", "namespace": "ns1"}});
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(pod.to_string()))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        (url, ca)
    }

    /// An error with its sources (kube's own message hides the TLS failure under "client error (Connect)").
    fn chain(e: &dyn std::error::Error) -> String {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        text
    }

    #[tokio::test]
    async fn tls_server_name_and_the_kubeconfigs_ca_are_used() {
        let (url, ca) = https_server("cluster").await;
        let mut kc = config_for(&url);
        kc.root_cert = Some(vec![ca.der()]);
        let pods: Api<Pod> = Api::namespaced(client(&kc).unwrap(), "ns1");
        let err = chain(&pods.get("p1").await.unwrap_err());
        assert!(err.contains("not valid for name"), "{err}");

        kc.tls_server_name = Some("api.cluster.test".into());
        let pods: Api<Pod> = Api::namespaced(client(&kc).unwrap(), "ns1");
        assert_eq!(
            pods.get("p1").await.unwrap().metadata.name.as_deref(),
            Some("p1")
        );

        // Another CA's certificate is refused, whatever the name.
        let (other, _) = https_server("other").await;
        let mut kc = config_for(&other);
        kc.root_cert = Some(vec![ca.der()]);
        kc.tls_server_name = Some("api.cluster.test".into());
        let pods: Api<Pod> = Api::namespaced(client(&kc).unwrap(), "ns1");
        let err = chain(&pods.get("p1").await.unwrap_err());
        assert!(err.contains("UnknownIssuer"), "{err}");
    }

    #[test]
    fn a_proxy_is_refused_as_kube_refuses_it() {
        let mut kc = config_for("https://127.0.0.1:6443");
        kc.proxy_url = Some("http://proxy:3128".parse().unwrap());
        let err = client(&kc).err().unwrap();
        assert!(err.contains("proxy"), "{err}");
    }
}
