//! The Kubernetes API implementation of the [`Cluster`] seam over HTTP: one kube-rs client per invocation,
//! built lazily (DEL from a cache never touches the API), every call bounded by a per-request timeout and an
//! overall budget with backoff on retriable errors (docs/multus-compat.md, "API client"). It only reads and
//! writes; which networks a pod gets is `crate::pure::selection`'s, and the daemon's caches are a layer around it
//! (`super::cached`).
//!
//! Round trips on ADD, as the core asks them: the pod and the node's NADs together; then the NADs the pod
//! selects, [`NAD_READS_IN_FLIGHT`] at a time, stopping at the first that fails (never a LIST); then one
//! PATCH of `pods/status`. Events are sent by the edges after the reply ([`ApiCluster::send_events`],
//! [`ApiCluster::post_events`]).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt, future::join_all, stream};
use k8s_openapi::api::core::v1::{Event, ObjectReference, Pod};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams},
    config::KubeConfigOptions,
};

use crate::{
    pure::status,
    seams::k8s::{nad::NetworkAttachmentDefinition, podview, watch::nad_fields},
};
use crate::{
    pure::{config::Config, request::PodRef},
    seams::cluster::{Cluster, ClusterError, Nad, NadKey, NadsError, Reads, Written},
};

// DRA reads are ApiCluster's own (the pod it read, its budget), so they live in a child module.
#[path = "dra.rs"]
pub mod dra;

/// The NAD reads of one ADD in flight at once. Pods name one to a few networks, so up to 8 are all read
/// at once, as before; an annotation of a thousand names (the parser allows 1,024) costs at most 8
/// reads before the first failure ends the ADD, not a thousand. Over one HTTP/2 connection 8 streams
/// cost the API server little, and `maxAttachmentsPerPod` (32 by default) bounds a pod whose NADs exist.
pub const NAD_READS_IN_FLIGHT: usize = 8;

/// `read` of each of `keys`, at most `limit` at once, started in order and answered in order; the first
/// failure in that order ends it: it is returned, the reads after it that are in flight are dropped
/// (cancelled) and those not started never start. A later key that fails sooner is never the answer.
async fn read_in_order<K, T, E, Fut>(
    keys: impl IntoIterator<Item = K>,
    limit: usize,
    read: impl FnMut(K) -> Fut,
) -> Result<Vec<T>, E>
where
    Fut: Future<Output = Result<T, E>>,
{
    // `buffered` counts answers not yet taken against its limit, so nothing new starts while an earlier
    // read is still out; `try_collect` stops at the first error and drops the stream, and with it the rest.
    stream::iter(keys)
        .map(read)
        .buffered(limit.max(1))
        .try_collect()
        .await
}

/// A lazily connected API client for one CNI invocation.
pub struct ApiCluster {
    source: Source,
    timeout: Duration,
    deadline: Instant,
    conn: OnceLock<Result<(tokio::runtime::Runtime, Client), ClusterError>>,
    /// Told of every API request (the daemon's metrics).
    observer: Option<Arc<dyn ApiObserver>>,
    /// Daemon mode with `statusWrite: afterReply`: ADD's network-status write is handed back
    /// ([`Cluster::write_status`]), for the daemon to send after the reply, instead of being sent before it.
    defer_status: bool,
}

/// The daemon's status writer (`crate::edges::daemon::status_writer`) sends one with
/// [`ApiCluster::patch_status_once`] and retries.
pub use crate::seams::cluster::DeferredStatus;

impl DeferredStatus {
    /// The write of `rendered` (a network-status annotation value) on `pod`, guarded by the pod's `uid`: a
    /// pod recreated under the same name is never written to. The reconcile of a restarted daemon builds
    /// its writes here; ADD's go through the same patch ([`status::patch`]).
    pub fn rendered(pod: PodRef, uid: &str, rendered: String) -> DeferredStatus {
        let involved = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: Some(uid.to_string()),
            ..Default::default()
        };
        DeferredStatus {
            patch: status::patch(rendered, Some(uid.to_string())),
            pod,
            involved: Some(involved),
            added: Vec::new(),
        }
    }

    /// The merge patch of `pods/status` this write sends (deploy/admission-policies.yaml must admit it:
    /// tests/policies.rs).
    pub fn patch(&self) -> &serde_json::Value {
        &self.patch
    }

    /// A job as a test writes it.
    #[cfg(test)]
    pub(crate) fn new(
        pod: PodRef,
        involved: Option<ObjectReference>,
        patch: serde_json::Value,
        added: Vec<Event>,
    ) -> DeferredStatus {
        DeferredStatus {
            pod,
            involved,
            patch,
            added,
        }
    }
}

/// What to do after a failed network-status write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFailure {
    /// The pod is gone (404): nothing to record.
    Gone,
    /// The API was unavailable or busy, or the write conflicted: try again later.
    Retry,
    /// Refused for good (credentials, RBAC, a malformed request): trying again changes nothing.
    Refused,
}

/// Classify a failed network-status write.
pub fn status_failure(e: &kube::Error) -> StatusFailure {
    if not_found(e) {
        StatusFailure::Gone
    } else if is_retriable(e) || is_conflict(e) {
        StatusFailure::Retry
    } else {
        StatusFailure::Refused
    }
}

/// How a failed API call reads in a log or an event.
pub fn describe_error(e: &kube::Error) -> String {
    describe(e)
}

pub use super::observe::{ApiObserver, ApiOutcome};

enum Source {
    Kubeconfig(PathBuf),
    InCluster,
    /// The daemon's long-lived client, driven by its runtime (calls come from blocking threads).
    Shared(tokio::runtime::Handle, Client),
    #[cfg(test)]
    Client(Client, tokio::runtime::Runtime),
}

/// What plexus keeps of `nad`.
fn nad_of(nad: &DynamicObject) -> Nad {
    let (config, resource_name) = nad_fields(nad);
    Nad {
        config,
        resource_name,
    }
}

fn is_retriable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Map a final API error to the seam's error.
fn cluster_error(what: &str, e: &kube::Error) -> ClusterError {
    match e {
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => ClusterError::Other(format!(
            "{what}: the API refused plexus's credentials: {} (check the kubeconfig's token and the RBAC rules)",
            describe(e)
        )),
        e if is_retriable(e) => ClusterError::Unavailable(format!("{what}: {}", describe(e))),
        e => ClusterError::Other(format!("{what}: {}", describe(e))),
    }
}

impl ApiCluster {
    /// Return ADD's network-status write to the caller, to send after the reply (from
    /// [`Cluster::publish_status`]), instead of sending it before (daemon mode only).
    pub fn defer_status(mut self, defer: bool) -> ApiCluster {
        self.defer_status = defer;
        self
    }

    /// One attempt at a deferred network-status write, within the per-request timeout (the caller retries;
    /// see [`status_failure`]). Daemon mode only: the shared client, from an async task.
    pub async fn patch_status_once(&self, job: &DeferredStatus) -> Result<(), kube::Error> {
        let Source::Shared(_, client) = &self.source else {
            return Err(kube::Error::Service(
                "a deferred status write needs the daemon's client".into(),
            ));
        };
        let patch = Patch::Merge(&job.patch);
        let params = PatchParams::default();
        self.attempt(
            "patch pod status",
            self.timeout,
            podview::patch_status(client, &job.pod.namespace, &job.pod.name, &params, &patch),
        )
        .await
    }

    /// [`ApiCluster::send_events`] over the shared client, from an async task (daemon mode).
    pub async fn post_events(&self, events: Vec<Event>) {
        if let Source::Shared(_, client) = &self.source {
            self.send_all(client, events).await;
        }
    }

    /// Post `events` one after another over `client`.
    async fn send_all(&self, client: &Client, events: Vec<Event>) {
        for ev in events {
            self.send_event(client, ev).await;
        }
    }

    /// The client for `config`: from its `kubeconfig`, else in-cluster settings when the process runs in a
    /// pod; `None` when neither applies (then plexus runs file-based networks only).
    pub fn from_config(config: &Config) -> Option<ApiCluster> {
        let source = match &config.kubeconfig {
            Some(p) => Source::Kubeconfig(p.clone()),
            None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
                && std::env::var_os("KUBERNETES_SERVICE_PORT").is_some() =>
            {
                Source::InCluster
            }
            None => return None,
        };
        Some(Self::new(source, config))
    }

    fn new(source: Source, config: &Config) -> ApiCluster {
        ApiCluster {
            source,
            timeout: config.api_timeout,
            deadline: Instant::now() + config.api_budget,
            conn: OnceLock::new(),
            defer_status: false,
            observer: None,
        }
    }

    /// The daemon's client for one request: its shared client (driven by `handle`; call from a blocking
    /// thread) and its metrics. Its watch caches go around it (`super::cached::Cached`).
    pub fn shared(
        handle: tokio::runtime::Handle,
        client: Client,
        observer: Option<Arc<dyn ApiObserver>>,
        config: &Config,
    ) -> ApiCluster {
        let mut c = Self::new(Source::Shared(handle, client), config);
        c.observer = observer;
        c
    }

    /// The daemon's own writer of network-status (the reconcile after a restart, not any one request):
    /// its shared client with requests bounded by `timeout`, its metrics.
    pub fn daemon_writer(
        handle: tokio::runtime::Handle,
        client: Client,
        observer: Option<Arc<dyn ApiObserver>>,
        timeout: Duration,
    ) -> ApiCluster {
        ApiCluster {
            source: Source::Shared(handle, client),
            timeout,
            deadline: Instant::now(),
            conn: OnceLock::new(),
            defer_status: false,
            observer,
        }
    }

    /// A client over a given service (tests: tower-test mocks), driven by `rt`.
    #[cfg(test)]
    pub(crate) fn with_client(
        client: Client,
        rt: tokio::runtime::Runtime,
        config: &Config,
    ) -> ApiCluster {
        Self::new(Source::Client(client, rt), config)
    }

    fn connect(&self) -> Result<&(tokio::runtime::Runtime, Client), ClusterError> {
        self.conn
            .get_or_init(|| {
                let source = match &self.source {
                    #[cfg(test)]
                    Source::Client(..) => unreachable!("test clients are set up in `with_client`"),
                    Source::Shared(..) => unreachable!("shared clients need no connection"),
                    other => other,
                };
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| {
                        ClusterError::Other(format!("cannot start the async runtime: {e}"))
                    })?;
                let mut kc = match source {
                    Source::Kubeconfig(path) => {
                        warn_if_exposed(path);
                        let kubeconfig = super::kubeconfig::read(path).map_err(|e| {
                            ClusterError::Other(format!(
                                "cannot read kubeconfig {}: {e}",
                                path.display()
                            ))
                        })?;
                        rt.block_on(kube::Config::from_custom_kubeconfig(
                            kubeconfig,
                            &KubeConfigOptions::default(),
                        ))
                        .map_err(|e| {
                            ClusterError::Other(format!(
                                "invalid kubeconfig {}: {e}",
                                path.display()
                            ))
                        })?
                    }
                    _ => kube::Config::incluster().map_err(|e| {
                        ClusterError::Other(format!("in-cluster API settings: {e}"))
                    })?,
                };
                kc.connect_timeout = Some(self.timeout);
                kc.read_timeout = Some(self.timeout);
                kc.write_timeout = Some(self.timeout);
                // plexus retries within its own budget; kube's hidden retry (up to 15 tries honouring
                // Retry-After) would run past it.
                kc.default_retry = false;
                // HTTP/2 when the server offers it: one connection for all of this call's requests.
                let client = {
                    let _guard = rt.enter();
                    super::transport::client(&kc).map_err(|e| {
                        ClusterError::Other(format!("cannot build the API client: {e}"))
                    })?
                };
                Ok((rt, client))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn run<F: Future>(&self, f: impl FnOnce(Client) -> F) -> Result<F::Output, ClusterError> {
        #[cfg(test)]
        if let Source::Client(client, rt) = &self.source {
            return Ok(rt.block_on(f(client.clone())));
        }
        if let Source::Shared(handle, client) = &self.source {
            return Ok(handle.block_on(f(client.clone())));
        }
        let (rt, client) = self.connect()?;
        Ok(rt.block_on(f(client.clone())))
    }

    fn nad_api(client: &Client, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            client.clone(),
            namespace,
            &ApiResource::erase::<NetworkAttachmentDefinition>(&()),
        )
    }

    /// Read one NAD; `Ok(None)` when it does not exist.
    async fn read_nad(
        &self,
        client: &Client,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Nad>, kube::Error> {
        // No NAD has a name that is not a DNS-1123 subdomain; asking would put ".." or "a?b" in a URL
        // path (hostile input, issue 6).
        if !crate::pure::names::is_dns_subdomain(name) {
            return Ok(None);
        }
        let api = Self::nad_api(client, namespace);
        match self
            .retry("get network-attachment-definition", || api.get(name))
            .await
        {
            Ok(obj) => Ok(Some(nad_of(&obj))),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A failed NAD read as the seam's error, naming the NAD.
fn nad_error(namespace: &str, name: &str, e: &kube::Error) -> ClusterError {
    cluster_error(
        &format!("reading network-attachment-definition {namespace}/{name}"),
        e,
    )
}

/// A failed pod read as the seam's error, naming the pod.
fn pod_error(pod: &PodRef, e: &kube::Error) -> ClusterError {
    if not_found(e) {
        return ClusterError::Other(format!(
            "pod {}/{} not found in the Kubernetes API",
            pod.namespace, pod.name
        ));
    }
    cluster_error(&format!("reading pod {}/{}", pod.namespace, pod.name), e)
}

/// Warn when a kubeconfig (it holds a token) is readable by other users.
fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            "kubeconfig {} is readable by other users (mode {:o}); it holds credentials and should be 0600",
            path.display(),
            m.permissions().mode() & 0o777
        );
    }
}

impl ApiCluster {
    /// Run `call` (`what`: for metrics and logs) until it succeeds, fails with a non-retriable error, or
    /// the budget runs out.
    /// One API call (`what`: for metrics and logs), given up after `limit`, told to the observer.
    async fn attempt<T>(
        &self,
        what: &'static str,
        limit: Duration,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, kube::Error> {
        let started = Instant::now();
        let result = tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
            Err(kube::Error::Service(
                format!("no answer within {:.1}s", self.timeout.as_secs_f64()).into(),
            ))
        });
        if let Some(o) = &self.observer {
            let outcome = match &result {
                Ok(_) => ApiOutcome::Ok,
                Err(kube::Error::Api(s)) => ApiOutcome::Status(s.code),
                Err(_) => ApiOutcome::Failed,
            };
            o.api_request(what, started.elapsed(), outcome);
        }
        result
    }

    pub(crate) async fn retry<T, F, Fut>(
        &self,
        what: &'static str,
        mut call: F,
    ) -> Result<T, kube::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let (deadline, timeout) = (self.deadline, self.timeout);
        let mut pause = Duration::from_millis(50);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let limit = timeout.min(left.max(Duration::from_millis(1)));
            let err = match self.attempt(what, limit, call()).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if !is_retriable(&err) || left <= pause {
                return Err(err);
            }
            tracing::debug!("retrying API call after: {}", describe(&err));
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}

impl ApiCluster {
    /// Post `events` in order, each within the per-request timeout; failures are logged (events are best
    /// effort). Runs in the detached sender (`plexus send-events`, `crate::edges::cli`).
    pub fn send_events(&self, events: Vec<Event>) {
        // One after another over one connection: nobody waits for them any more, the pod's event list
        // keeps the order the interfaces were added in, and the API server sees one TLS handshake.
        let sent = self.run(|client| async move { self.send_all(&client, events).await });
        if let Err(e) = sent {
            tracing::warn!("events not sent: {e}");
        }
    }

    async fn send_event(&self, client: &Client, ev: Event) {
        let ns = ev.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(client.clone(), &ns);
        if let Err(e) = tokio::time::timeout(self.timeout, api.create(&PostParams::default(), &ev))
            .await
            .unwrap_or_else(|_| Err(kube::Error::Service("timed out".into())))
        {
            tracing::warn!("cannot record event {:?}: {}", ev.reason, describe(&e));
        }
    }
}

impl Cluster for ApiCluster {
    fn read(&self, pod_ref: Option<&PodRef>, keys: &[NadKey]) -> Reads {
        let read = self.run(|client| async move {
            let get_pod = async {
                match pod_ref {
                    Some(p) => {
                        let got = self
                            .retry("get pod", || podview::get(&client, &p.namespace, &p.name))
                            .await;
                        Some(got.map_err(|e| pod_error(p, &e)))
                    }
                    None => None,
                }
            };
            let get_nads = join_all(keys.iter().map(|(ns, name)| {
                let client = &client;
                async move {
                    self.read_nad(client, ns, name)
                        .await
                        .map_err(|e| nad_error(ns, name, &e))
                }
            }));
            tokio::join!(get_pod, get_nads)
        });
        match read {
            Ok((pod, nads)) => Reads { pod, nads },
            // No client: every read fails the same way.
            Err(e) => Reads {
                pod: pod_ref.map(|_| Err(e.clone())),
                nads: keys.iter().map(|_| Err(e.clone())).collect(),
            },
        }
    }

    fn read_nads_in_order(&self, keys: &[NadKey]) -> Result<Vec<Nad>, NadsError> {
        self.run(|client| async move {
            read_in_order(keys, NAD_READS_IN_FLIGHT, |key| {
                let client = client.clone();
                async move {
                    let (ns, name) = key;
                    match self.read_nad(&client, ns, name).await {
                        Ok(Some(nad)) => Ok(nad),
                        Ok(None) => Err(NadsError::Missing(key.clone())),
                        Err(e) => Err(NadsError::Failed(nad_error(ns, name, &e))),
                    }
                }
            })
            .await
        })
        .map_err(NadsError::Failed)?
    }

    fn dra_devices(
        &self,
        pod_ref: &PodRef,
        pod: &Pod,
    ) -> Result<crate::seams::devices::DraDevices, ClusterError> {
        self.read_dra_devices(pod_ref, pod)
    }

    fn write_status(
        &self,
        job: &crate::seams::cluster::DeferredStatus,
    ) -> Result<Written, ClusterError> {
        if self.defer_status {
            // Daemon mode, after the reply: the write (and the events that follow it) go back to the caller.
            return Ok(Written::Deferred);
        }
        let pod_ref = &job.pod;
        let result = self.run(|client| async move {
            let params = PatchParams::default();
            let merge = Patch::Merge(&job.patch);
            let mut pause = Duration::from_millis(50);
            loop {
                let r = self
                    .retry("patch pod status", || {
                        podview::patch_status(
                            &client,
                            &pod_ref.namespace,
                            &pod_ref.name,
                            &params,
                            &merge,
                        )
                    })
                    .await;
                match r {
                    // A conflict is worth another try within the budget.
                    Err(kube::Error::Api(s))
                        if s.code == 409 && Instant::now() + pause < self.deadline =>
                    {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(1));
                    }
                    other => return other.map(|_| ()),
                }
            }
        })?;
        match result {
            Ok(()) => Ok(Written::Sent),
            // The pod is already gone: the runtime will tear the sandbox down; nothing to record.
            Err(e) if not_found(&e) => Ok(Written::PodGone),
            // Conflicts retried for the whole budget: try again later (code 11), as for 429/5xx.
            Err(e @ kube::Error::Api(_)) if is_conflict(&e) => {
                Err(ClusterError::Unavailable(format!(
                    "writing network-status of pod {}/{}: still conflicting when apiBudgetSeconds ran out: {}",
                    pod_ref.namespace,
                    pod_ref.name,
                    describe(&e)
                )))
            }
            Err(e) => Err(cluster_error(
                &format!(
                    "writing network-status of pod {}/{}",
                    pod_ref.namespace, pod_ref.name
                ),
                &e,
            )),
        }
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http::{Method, Request, Response};
    use kube::client::Body;
    use serde_json::{Value, json};

    use super::*;
    use crate::{
        pure::config::Config,
        seams::{cluster::DeferredStatus, k8s::events::event},
    };

    /// One request as the mock API saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        method: Method,
        path: String,
        content_type: String,
        body: Value,
    }

    type Router = dyn Fn(&Seen, usize) -> (u16, Value) + Send + Sync;

    /// An [`ApiCluster`] over a tower-test mock whose answers come from `route` (given the request and how
    /// many earlier requests had the same method and path).
    fn mock(
        config: &Config,
        route: impl Fn(&Seen, usize) -> (u16, Value) + Send + Sync + 'static,
    ) -> (ApiCluster, Arc<Mutex<Vec<Seen>>>) {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
        let log = seen.clone();
        let route: Arc<Router> = Arc::new(route);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let (parts, body) = req.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let s = Seen {
                    method: parts.method.clone(),
                    path: parts.uri.path().to_string(),
                    content_type: parts
                        .headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string(),
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                };
                let n = {
                    let mut l = log.lock().unwrap();
                    let n = l
                        .iter()
                        .filter(|x| x.method == s.method && x.path == s.path)
                        .count();
                    l.push(s.clone());
                    n
                };
                let (code, body) = route(&s, n);
                let resp = Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap();
                send.send_response(resp);
            }
        });
        // The client's buffer task needs the runtime it will be driven by.
        let client = {
            let _guard = rt.enter();
            Client::new(svc, "default")
        };
        (ApiCluster::with_client(client, rt, config), seen)
    }

    /// Requests given up after a second, all of them after two.
    fn config(extra: Value) -> Config {
        let mut v = json!({"apiTimeoutSeconds": 1, "apiBudgetSeconds": 2});
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        crate::pure::config::testing::kube_config(v)
    }

    fn status(code: u16, reason: &str) -> (u16, Value) {
        (
            code,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason, "reason": reason, "code": code}),
        )
    }

    fn pod(annotations: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "p1", "namespace": "ns1", "uid": "uid-1", "resourceVersion": "7", "annotations": annotations},
               "spec": {"containers": []}})
    }

    fn nad(ns: &str, name: &str, config: Option<&str>) -> Value {
        let mut spec = json!({});
        if let Some(c) = config {
            spec["config"] = Value::String(c.into());
        }
        json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
               "metadata": {"name": name, "namespace": ns, "annotations": {"k8s.v1.cni.cncf.io/resourceName": "intel.com/vf"}},
               "spec": spec})
    }

    use crate::seams::testing::pod_ref;

    const NADS: &str = "/apis/k8s.cni.cncf.io/v1/namespaces";

    fn standard(s: &Seen, _: usize) -> (u16, Value) {
        let p = s.path.as_str();
        match p {
            "/api/v1/namespaces/ns1/pods/p1" => (
                200,
                pod(json!({"k8s.v1.cni.cncf.io/networks": "net-a,other/net-b@data0,net-a"})),
            ),
            _ if p == format!("{NADS}/kube-system/network-attachment-definitions/cluster-nad") => (
                200,
                nad(
                    "kube-system",
                    "cluster-nad",
                    Some(r#"{"cniVersion":"1.0.0","type":"bridge"}"#),
                ),
            ),
            _ if p == format!("{NADS}/ns1/network-attachment-definitions/net-a") => (
                200,
                nad(
                    "ns1",
                    "net-a",
                    Some(r#"{"cniVersion":"0.4.0","plugins":[{"type":"macvlan"}]}"#),
                ),
            ),
            _ if p == format!("{NADS}/other/network-attachment-definitions/net-b") => (
                200,
                nad(
                    "other",
                    "net-b",
                    Some(r#"{"cniVersion":"1.0.0","name":"b-conf","type":"ptp"}"#),
                ),
            ),
            _ => status(404, "NotFound"),
        }
    }

    #[test]
    fn events_are_sent_in_the_order_they_happened() {
        let cfg = config(json!({}));
        let (api, seen) = mock(&cfg, |s, _| (201, s.body.clone()));
        let pod = ObjectReference {
            name: Some("p1".into()),
            namespace: Some("ns1".into()),
            ..Default::default()
        };
        let events: Vec<Event> = ["eth0", "net1", "net2", "net3"]
            .iter()
            .map(|i| event(&pod, "Normal", "AddedInterface", format!("Add {i}")))
            .collect();
        api.send_events(events);
        let messages: Vec<Value> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == Method::POST)
            .map(|s| s.body["message"].clone())
            .collect();
        assert_eq!(
            messages,
            ["Add eth0", "Add net1", "Add net2", "Add net3"].map(Value::from)
        );
    }

    /// Counts the reads [`read_in_order`] starts and how many are out at once (a read dropped unfinished
    /// counts as ended).
    #[derive(Default)]
    struct Counted {
        started: std::sync::atomic::AtomicUsize,
        out: std::sync::atomic::AtomicUsize,
        most_out: std::sync::atomic::AtomicUsize,
    }

    struct Out<'a>(&'a Counted);

    impl Drop for Out<'_> {
        fn drop(&mut self) {
            self.0.out.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Counted {
        /// A read of `key` that takes `turns` scheduler turns and then fails when `fails` says so.
        async fn read(&self, key: usize, turns: usize, fails: bool) -> Result<usize, usize> {
            use std::sync::atomic::Ordering::SeqCst;
            self.started.fetch_add(1, SeqCst);
            let now = self.out.fetch_add(1, SeqCst) + 1;
            self.most_out.fetch_max(now, SeqCst);
            let _out = Out(self);
            for _ in 0..turns {
                tokio::task::yield_now().await;
            }
            if fails { Err(key) } else { Ok(key) }
        }

        fn started(&self) -> usize {
            self.started.load(std::sync::atomic::Ordering::SeqCst)
        }

        fn most_out(&self) -> usize {
            self.most_out.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// Issue 20: the reads run `limit` at a time and come back in order.
    #[test]
    fn read_in_order_runs_a_few_at_a_time_and_answers_in_order() {
        let reads = Counted::default();
        let keys: Vec<usize> = (0..40).collect();
        // Later keys finish sooner: the answers still come in key order.
        let got = block_on(read_in_order(keys.clone(), 8, |k| {
            reads.read(k, 40 - k, false)
        }));
        assert_eq!(got, Ok(keys));
        assert_eq!(reads.started(), 40);
        assert_eq!(reads.most_out(), 8, "never more than the limit at once");
        // A limit of 0 would never start anything: it means 1.
        let reads = Counted::default();
        assert_eq!(
            block_on(read_in_order([1, 2], 0, |k| reads.read(k, 1, false))),
            Ok(vec![1, 2])
        );
        assert_eq!(reads.most_out(), 1);
    }

    /// Issue 20: a thousand failing reads cost about the limit: the first failure ends it, and the rest
    /// never start.
    #[test]
    fn read_in_order_stops_at_the_first_failure_and_starts_nothing_after_it() {
        let reads = Counted::default();
        let got = block_on(read_in_order(0..1000, 8, |k| reads.read(k, 1, true)));
        assert_eq!(got, Err(0), "the first key's failure");
        assert!(reads.started() <= 8, "{} reads started", reads.started());
        // The ones in flight with it were dropped, not waited for.
        let reads = Counted::default();
        let got = block_on(read_in_order(0..1000, 8, |k| {
            reads.read(k, if k == 0 { 0 } else { 1000 }, true)
        }));
        assert_eq!(got, Err(0));
        assert!(reads.started() <= 8, "{} reads started", reads.started());
    }

    /// Issue 20: the failure returned is the first in key (annotation) order, even when a later key fails
    /// sooner; keys after the failure that were never needed are never read.
    #[test]
    fn read_in_order_answers_the_first_failure_in_order_not_the_fastest() {
        // Key 2 fails at once, key 1 fails after many turns: the answer is key 1's.
        let reads = Counted::default();
        let got = block_on(read_in_order(0..100, 8, |k| match k {
            1 => reads.read(k, 50, true),
            2 => reads.read(k, 0, true),
            _ => reads.read(k, 1, k >= 1),
        }));
        assert_eq!(got, Err(1));
        // Key 1 succeeds slowly, key 3 fails at once: the answer waits for key 1, then is key 3's.
        let reads = Counted::default();
        let got = block_on(read_in_order(0..100, 8, |k| match k {
            1 => reads.read(k, 50, false),
            3 => reads.read(k, 0, true),
            _ => reads.read(k, 1, k > 3),
        }));
        assert_eq!(got, Err(3));
        assert!(
            reads.started() <= 8 + 3,
            "{} reads started",
            reads.started()
        );
        assert!(reads.most_out() <= 8);
    }

    fn nad_key(ns: &str, name: &str) -> NadKey {
        (ns.into(), name.into())
    }

    /// The pod and the node's NADs in one go, each a GET (never a LIST); a NAD that does not exist is
    /// `None`, and a name no NAD can have is never put in a URL.
    #[test]
    fn read_gets_the_pod_and_the_nads_together() {
        let cfg = config(json!({}));
        let (api, seen) = mock(&cfg, standard);
        let keys = [
            nad_key("kube-system", "cluster-nad"),
            nad_key("kube-system", "not-a-nad"),
            nad_key("kube-system", "../a?b"),
        ];
        let reads = api.read(Some(&pod_ref()), &keys);
        let pod = reads.pod.unwrap().unwrap();
        assert_eq!(pod.metadata.uid.as_deref(), Some("uid-1"));
        assert_eq!(reads.nads.len(), 3);
        let cluster = reads.nads[0].clone().unwrap().unwrap();
        assert_eq!(
            cluster.config.as_deref(),
            Some(r#"{"cniVersion":"1.0.0","type":"bridge"}"#)
        );
        assert_eq!(cluster.resource_name.as_deref(), Some("intel.com/vf"));
        assert_eq!(reads.nads[1], Ok(None), "404: not a NAD (then confDir)");
        assert_eq!(reads.nads[2], Ok(None));
        let seen = seen.lock().unwrap();
        assert!(seen.iter().all(|s| s.method == Method::GET));
        let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths.len(), 3, "{paths:?}");
        assert!(paths.contains(&"/api/v1/namespaces/ns1/pods/p1"));
        assert!(!paths.iter().any(|p| p.contains("a?b") || p.contains("..")));
        drop(seen);
        // No pod asked: the NADs only.
        let (api, seen) = mock(&cfg, standard);
        let reads = api.read(None, &keys[..1]);
        assert!(reads.pod.is_none());
        assert!(matches!(&reads.nads[0], Ok(Some(_))));
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn the_selected_nads_are_read_in_order_and_a_missing_one_is_named() {
        let cfg = config(json!({}));
        let (api, seen) = mock(&cfg, standard);
        let got = api
            .read_nads_in_order(&[nad_key("ns1", "net-a"), nad_key("other", "net-b")])
            .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[1].config.as_deref(),
            Some(r#"{"cniVersion":"1.0.0","name":"b-conf","type":"ptp"}"#)
        );
        assert_eq!(seen.lock().unwrap().len(), 2);
        let e = api
            .read_nads_in_order(&[nad_key("ns1", "net-a"), nad_key("ns1", "ghost")])
            .unwrap_err();
        assert_eq!(e, NadsError::Missing(nad_key("ns1", "ghost")));
    }

    /// Issue 20: a pod naming a thousand NADs that do not exist costs at most [`NAD_READS_IN_FLIGHT`]
    /// NAD reads, and the answer names the first of them.
    #[test]
    fn a_thousand_missing_nads_cost_a_few_reads_and_name_the_first() {
        let cfg = config(json!({}));
        let keys: Vec<NadKey> = (0..1000)
            .map(|i| nad_key("ns1", &format!("ghost-{i:04}")))
            .collect();
        let (api, seen) = mock(&cfg, |_, _| status(404, "NotFound"));
        let e = api.read_nads_in_order(&keys).unwrap_err();
        assert_eq!(e, NadsError::Missing(nad_key("ns1", "ghost-0000")));
        let reads = seen.lock().unwrap().len();
        assert!(
            (1..=NAD_READS_IN_FLIGHT).contains(&reads),
            "{reads} NAD reads"
        );
    }

    /// Issue 20: a forbidden NAD read ends the reads too, and is the error (the first in annotation order).
    #[test]
    fn a_refused_nad_read_stops_the_others() {
        let cfg = config(json!({}));
        let keys: Vec<NadKey> = (0..100).map(|i| nad_key("ns1", &format!("n{i}"))).collect();
        let (api, seen) = mock(&cfg, move |s, _| {
            if s.path.ends_with("/n0") {
                (
                    200,
                    nad(
                        "ns1",
                        "n0",
                        Some(r#"{"cniVersion":"1.0.0","type":"bridge"}"#),
                    ),
                )
            } else {
                status(403, "Forbidden")
            }
        });
        let e = api.read_nads_in_order(&keys).unwrap_err();
        assert!(
            matches!(&e, NadsError::Failed(ClusterError::Other(m)) if m.starts_with("reading network-attachment-definition ns1/n1:")
                && m.contains("credentials")),
            "{e:?}"
        );
        let reads = seen.lock().unwrap().len();
        assert!(reads <= NAD_READS_IN_FLIGHT + 1, "{reads} NAD reads");
    }

    #[test]
    fn pod_not_found_names_the_pod() {
        let cfg = config(json!({}));
        let (api, _) = mock(&cfg, |_, _| status(404, "NotFound"));
        let e = api.read(Some(&pod_ref()), &[]).pod.unwrap().unwrap_err();
        assert_eq!(
            e,
            ClusterError::Other("pod ns1/p1 not found in the Kubernetes API".into())
        );
    }

    #[test]
    fn retriable_errors_are_retried_within_the_budget() {
        let cfg = config(json!({}));
        let (api, seen) = mock(&cfg, |s, n| {
            if s.path.ends_with("/pods/p1") && n < 2 {
                status(503, "ServiceUnavailable")
            } else {
                standard(s, n)
            }
        });
        api.read(Some(&pod_ref()), &[]).pod.unwrap().unwrap();
        assert_eq!(
            seen.lock()
                .unwrap()
                .iter()
                .filter(|s| s.path.ends_with("/pods/p1"))
                .count(),
            3
        );
        let (api, _) = mock(&cfg, |_, _| status(500, "InternalError"));
        let started = Instant::now();
        let reads = api.read(Some(&pod_ref()), &[nad_key("kube-system", "cluster-nad")]);
        let e = reads.pod.unwrap().unwrap_err();
        assert!(matches!(e, ClusterError::Unavailable(_)), "{e:?}");
        assert!(
            matches!(&reads.nads[0], Err(ClusterError::Unavailable(m)) if m.starts_with("reading network-attachment-definition kube-system/cluster-nad")),
            "{:?}",
            reads.nads
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "bounded by apiBudgetSeconds"
        );
    }

    #[test]
    fn unauthorized_says_so() {
        let cfg = config(json!({}));
        let (api, _) = mock(&cfg, |_, _| status(401, "Unauthorized"));
        let e = api.read(Some(&pod_ref()), &[]).pod.unwrap().unwrap_err();
        assert!(e.to_string().contains("credentials"), "{e}");
    }

    /// A network-status write of pod ns1/p1 as the core builds it.
    fn job() -> DeferredStatus {
        DeferredStatus::rendered(pod_ref(), "uid-1", r#"[{"name":"c"}]"#.into())
    }

    #[test]
    fn a_status_patch_that_keeps_conflicting_is_try_again_later() {
        // Issue 6: a 409 on every status PATCH is retried until apiBudgetSeconds runs out, then code 11.
        let cfg = config(json!({}));
        let (api, seen) = mock(&cfg, |_, _| status(409, "Conflict"));
        let e = api.write_status(&job()).unwrap_err();
        assert!(matches!(e, ClusterError::Unavailable(_)), "{e:?}");
        assert!(e.to_string().contains("409"), "{e}");
        let patches = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == Method::PATCH)
            .count();
        assert!(patches >= 2, "retried: {patches} PATCHes");
    }

    #[test]
    fn status_is_one_merge_patch_of_pods_status() {
        let cfg = config(json!({}));
        let (api, seen) = mock(&cfg, |s, n| {
            if s.method == Method::PATCH && n == 0 {
                status(409, "Conflict")
            } else {
                (200, pod(json!({})))
            }
        });
        assert_eq!(api.write_status(&job()), Ok(Written::Sent));
        let seen = seen.lock().unwrap();
        let patches: Vec<_> = seen.iter().filter(|s| s.method == Method::PATCH).collect();
        assert_eq!(patches.len(), 2, "one retry after the conflict");
        assert_eq!(seen.len(), 2, "nothing else: the edges post the events");
        let p = patches[1];
        assert_eq!(p.path, "/api/v1/namespaces/ns1/pods/p1/status");
        assert_eq!(p.content_type, "application/merge-patch+json");
        assert_eq!(&p.body, job().patch());
        assert_eq!(
            p.body["metadata"]["uid"], "uid-1",
            "the UID guards against a recreated pod"
        );
    }

    #[test]
    fn a_status_write_tolerates_a_gone_pod_and_is_handed_back_when_deferred() {
        let cfg = config(json!({}));
        let (api, _) = mock(&cfg, |_, _| status(404, "NotFound"));
        assert_eq!(api.write_status(&job()), Ok(Written::PodGone));
        let (api, seen) = mock(&cfg, standard);
        let api = api.defer_status(true);
        assert_eq!(api.write_status(&job()), Ok(Written::Deferred));
        assert!(seen.lock().unwrap().is_empty());
    }

    /// Daemon mode (issue 20): a NAD a pod of the node selects is loaded in the watch cache and served with
    /// no API read; one held compact (no pod selects it) is read from the API once, which loads it, so the
    /// next request reads neither. A pod the watch has seen is not read either.
    #[test]
    fn a_loaded_nad_costs_no_api_read_and_a_compact_one_is_read_once() {
        use crate::seams::k8s::{cached::Cached, nadcache::WatchedNad, watch::NodeCache};
        let cfg = config(json!({}));
        let cache = Arc::new(NodeCache::detached());
        cache.nad_cache().select(std::collections::HashSet::from([(
            "ns1".into(),
            "net-a".into(),
        )]));
        // What the NAD watch reports: the same objects the API serves.
        for path in [
            "kube-system/network-attachment-definitions/cluster-nad",
            "ns1/network-attachment-definitions/net-a",
            "other/network-attachment-definitions/net-b",
        ] {
            let seen = Seen {
                method: Method::GET,
                path: format!("{NADS}/{path}"),
                content_type: String::new(),
                body: Value::Null,
            };
            let nad: WatchedNad = serde_json::from_value(standard(&seen, 0).1).unwrap();
            cache.nad_cache().apply(&nad);
        }
        assert_eq!(cache.nad_cache().loaded(), 1, "only net-a is loaded");
        let nad_reads = |seen: &Mutex<Vec<Seen>>| -> Vec<String> {
            let mut v: Vec<String> = seen
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.path.starts_with(NADS))
                .map(|s| s.path.rsplit('/').next().unwrap().to_string())
                .collect();
            v.sort();
            v
        };
        let ahead = [nad_key("kube-system", "cluster-nad")];
        let selected = [nad_key("ns1", "net-a"), nad_key("other", "net-b")];

        let (api, seen) = mock(&cfg, standard);
        let api = Cached::new(api, Some(cache.clone()), None);
        let reads = api.read(Some(&pod_ref()), &ahead);
        assert!(matches!(&reads.nads[0], Ok(Some(_))));
        let nads = api.read_nads_in_order(&selected).unwrap();
        assert_eq!(
            nads[0].resource_name.as_deref(),
            Some("intel.com/vf"),
            "the loaded copy keeps resourceName"
        );
        assert_eq!(
            nad_reads(&seen),
            ["cluster-nad", "net-b"],
            "net-a from the cache"
        );
        assert_eq!(cache.nad_cache().loaded(), 3, "what was read is loaded");

        let (api, seen) = mock(&cfg, standard);
        let api = Cached::new(api, Some(cache.clone()), None);
        api.read(None, &ahead);
        api.read_nads_in_order(&selected).unwrap();
        assert!(nad_reads(&seen).is_empty(), "{:?}", nad_reads(&seen));
    }
}
