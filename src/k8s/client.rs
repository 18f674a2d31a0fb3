//! The Kubernetes API implementation of the [`Cluster`] seam: one kube-rs client per invocation, built lazily
//! (DEL from a cache never touches the API), every call bounded by a per-request timeout and an overall
//! budget with backoff on retriable errors (docs/multus-compat.md, "API client").
//!
//! Round trips on ADD: the pod and the node's NADs (`clusterNetwork`/`defaultNetworks` names) are read
//! together; then the NADs the pod selects, [`NAD_READS_IN_FLIGHT`] at a time, stopping at the first that
//! fails (never a LIST); then one PATCH of `pods/status` (events are only collected: they are sent after
//! the reply, see `super::events`). A pod over `maxAttachmentsPerPod` is refused before its NADs are read.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt, future::join_all, stream};
use k8s_openapi::api::core::v1::{Event, ObjectReference, Pod};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use plexus_cni::CniResult;
use serde_json::{Value, json};

use super::{
    annotations::{self, Selection},
    events::event,
    nad::NetworkAttachmentDefinition,
    nadcache::Lookup,
    status,
    watch::{NodeCache, nad_fields},
};
use crate::{
    cluster::{Cluster, ClusterError, PodNetworks},
    confdir,
    config::{Config, NetworkRef, Primary},
    plan::{Attachment, NetworkRequest},
    request::PodRef,
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
    /// The pod as read on ADD (for the UID precondition of the status write and for events).
    pod: Mutex<Option<Pod>>,
    /// NADs of `multusNamespace` read ahead with the pod: name → spec.config (None: no such NAD).
    prefetched: Mutex<HashMap<String, Option<NadInfo>>>,
    /// Pods in these namespaces get no network-status (docs/multus-compat.md, "Network status").
    system_namespaces: Vec<String>,
    /// Whether rejections are recorded as Warning events: on ADD, yes; when DEL rebuilds a pod's networks
    /// the ADD already said so, and a second event would only be noise.
    events: bool,
    /// Events collected for sending after the reply (`super::events`).
    pending: Mutex<Vec<Event>>,
    /// The daemon's watch caches: pods and NADs are read from them first (issue 8).
    cache: Option<Arc<NodeCache>>,
    /// Told of every API request (the daemon's metrics).
    observer: Option<Arc<dyn ApiObserver>>,
    /// Daemon mode with `statusWrite: afterReply`: ADD's network-status write is returned to the caller
    /// ([`Cluster::publish_status`]), for the daemon to send after the reply, instead of being sent before it.
    defer_status: bool,
}

/// The daemon's status writer (`crate::daemon::status_writer`) sends one with
/// [`ApiCluster::patch_status_once`] and retries.
pub use crate::cluster::DeferredStatus;

impl DeferredStatus {
    /// The write of `rendered` (a network-status annotation value) on `pod`, guarded by the pod's `uid`: a
    /// pod recreated under the same name is never written to. The reconcile of a restarted daemon builds
    /// its writes here; ADD's go through the same patch ([`status_patch`]).
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
            patch: status_patch(rendered, Some(uid.to_string())),
            pod,
            involved: Some(involved),
            added: Vec::new(),
        }
    }

    /// The merge patch of `pods/status` this write sends (deploy/admission-policies.yaml must admit it:
    /// tests/policies.rs).
    pub fn patch(&self) -> &Value {
        &self.patch
    }

    /// A job as a test writes it.
    #[cfg(test)]
    pub(crate) fn new(
        pod: PodRef,
        involved: Option<ObjectReference>,
        patch: Value,
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

/// The merge patch of `pods/status` that sets the network-status annotation to `rendered`. With the pod's
/// `uid`, the write is a precondition: a recreated pod of the same name is never written to.
fn status_patch(rendered: String, uid: Option<String>) -> Value {
    let mut metadata = json!({"annotations": {annotations::NETWORK_STATUS_ANNOTATION: rendered}});
    if let Some(uid) = uid {
        metadata["uid"] = Value::String(uid);
    }
    json!({ "metadata": metadata })
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

/// What plexus keeps of a NAD.
#[derive(Debug, Clone, PartialEq)]
struct NadInfo {
    config: Option<String>,
    resource_name: Option<String>,
}

impl NadInfo {
    /// What plexus keeps of `nad` (from the API or the daemon's cache).
    fn of(nad: &DynamicObject) -> NadInfo {
        let (config, resource_name) = nad_fields(nad);
        NadInfo {
            config,
            resource_name,
        }
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
        let pods: Api<Pod> = Api::namespaced(client.clone(), &job.pod.namespace);
        let patch = Patch::Merge(&job.patch);
        let params = PatchParams::default();
        self.attempt(
            "patch pod status",
            self.timeout,
            pods.patch_status(&job.pod.name, &params, &patch),
        )
        .await
        .map(|_| ())
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

    /// Record rejections as Warning events (the default) or not.
    pub fn with_events(mut self, events: bool) -> ApiCluster {
        self.events = events;
        self
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
            pod: Mutex::new(None),
            prefetched: Mutex::new(HashMap::new()),
            system_namespaces: config.system_namespaces.clone(),
            events: true,
            pending: Mutex::new(Vec::new()),
            defer_status: false,
            cache: None,
            observer: None,
        }
    }

    /// The daemon's cluster for one request: its shared client (driven by `handle`; call from a blocking
    /// thread), its watch caches, and its metrics.
    pub fn shared(
        handle: tokio::runtime::Handle,
        client: Client,
        cache: Option<Arc<NodeCache>>,
        observer: Option<Arc<dyn ApiObserver>>,
        config: &Config,
    ) -> ApiCluster {
        let mut c = Self::new(Source::Shared(handle, client), config);
        c.cache = cache;
        c.observer = observer;
        c
    }

    fn note_lookup(&self, kind: &'static str, hit: bool) {
        if let Some(o) = &self.observer {
            o.cache_lookup(kind, hit);
        }
    }

    /// The cached pod when the watch has seen it with the UID the runtime names (a pod recreated under the
    /// same name may not have reached the cache yet: then the API is asked).
    fn cached_pod(&self, pod_ref: &PodRef) -> Option<Pod> {
        let cache = self.cache.as_ref()?;
        let hit = cache
            .pod(&pod_ref.namespace, &pod_ref.name)
            .filter(|p| match (&pod_ref.uid, &p.metadata.uid) {
                (Some(want), Some(got)) => want == got,
                _ => true,
            })
            .map(|p| (*p).clone());
        self.note_lookup("pod", hit.is_some());
        hit
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
            pod: Mutex::new(None),
            prefetched: Mutex::new(HashMap::new()),
            system_namespaces: Vec::new(),
            events: true,
            pending: Mutex::new(Vec::new()),
            defer_status: false,
            cache: None,
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
                        let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
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
    ) -> Result<Option<NadInfo>, kube::Error> {
        // No NAD has a name that is not a DNS-1123 subdomain; asking would put ".." or "a?b" in a URL
        // path (hostile input, issue 6). Such a node network is looked up in confDir only.
        if !crate::names::is_dns_subdomain(name) {
            return Ok(None);
        }
        // The daemon's cache answers for the NADs it holds loaded (those this node uses); one it holds
        // compact, or has not seen (just created, or absent), is asked of the API, so a miss is never taken
        // for "does not exist". What is read then loads it (`NodeCache::offer_nad`).
        if let Some(cache) = &self.cache {
            let hit = match cache.nad(namespace, name) {
                Lookup::Loaded(nad) => Some(NadInfo {
                    config: nad.config.clone(),
                    resource_name: nad.resource_name.clone(),
                }),
                Lookup::Compact | Lookup::Unknown => None,
            };
            self.note_lookup("network-attachment-definition", hit.is_some());
            if hit.is_some() {
                return Ok(hit);
            }
        }
        let api = Self::nad_api(client, namespace);
        match self
            .retry("get network-attachment-definition", || api.get(name))
            .await
        {
            Ok(obj) => {
                if let Some(cache) = &self.cache {
                    cache.offer_nad(namespace, name, &obj);
                }
                Ok(Some(NadInfo::of(&obj)))
            }
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn pod_ref_for_events(&self) -> Option<ObjectReference> {
        let pod = self.pod.lock().ok()?.clone()?;
        Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            ..Default::default()
        })
    }
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
    /// effort). Runs in the detached sender (`plexus send-events`, `crate::cli`).
    pub fn send_events(&self, events: Vec<Event>) {
        // One after another over one connection: nobody waits for them any more, the pod's event list
        // keeps the order the interfaces were added in, and the API server sees one TLS handshake.
        let sent = self.run(|client| async move { self.send_all(&client, events).await });
        if let Err(e) = sent {
            tracing::warn!("events not sent: {e}");
        }
    }

    fn defer(&self, ev: Event) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.push(ev);
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

    /// Build the request for one selected NAD.
    fn network_for(
        &self,
        config: &Config,
        sel: &Selection,
        nad: NadInfo,
    ) -> Result<NetworkRequest, ClusterError> {
        let qualified = sel.qualified_name();
        let rejected =
            |reason: String| ClusterError::Rejected(format!("network {qualified}: {reason}"));
        let network = match nad
            .config
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            Some(c) => crate::netconf::NetworkConfig::from_bytes(c.as_bytes())
                .and_then(|n| n.with_name_if_missing(&sel.name))
                .map_err(|e| rejected(format!("invalid spec.config: {e}")))?,
            // NPWG-7/10: an empty spec names a network on disk.
            None => confdir::find_by_name(&config.conf_dir, &sel.name)
                .map_err(|e| rejected(e.to_string()))?,
        };
        let network = network
            .with_version_if_missing(config.cni_version)
            .map_err(|e| rejected(e.to_string()))?;
        let network = match &sel.cni_args {
            Some(args) => annotations::inject_cni_args(&network, args)
                .map_err(|e| rejected(format!("cni-args: {e}")))?,
            None => network,
        };
        for w in &sel.warnings {
            tracing::warn!("network {qualified}: {w}");
        }
        Ok(NetworkRequest {
            network,
            status_name: qualified,
            ifname_request: sel.interface.clone(),
            requests: sel.requests.clone(),
            resource_name: nad.resource_name,
        })
    }
}

impl ApiCluster {
    /// Record a Warning event on the pod (best effort) and return the rejection it explains.
    fn reject(&self, reason: &str, msg: String) -> ClusterError {
        Cluster::warn_pod(self, reason, msg.clone());
        ClusterError::Rejected(msg)
    }
}

impl Cluster for ApiCluster {
    fn pod_networks(&self, pod_ref: &PodRef, config: &Config) -> Result<PodNetworks, ClusterError> {
        // Names of the node's networks that may be NADs in multusNamespace, read together with the pod.
        let mut node_names: Vec<String> = Vec::new();
        if let Primary::ClusterNetwork(NetworkRef::Name(n)) = &config.primary {
            node_names.push(n.clone());
        }
        for r in &config.default_networks {
            if let NetworkRef::Name(n) = r
                && !node_names.contains(n)
            {
                node_names.push(n.clone());
            }
        }
        let names = &node_names;
        let (pod, prefetched) = self.run(|client| async move {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &pod_ref.namespace);
            let cached = self.cached_pod(pod_ref);
            let get_pod = async {
                match cached {
                    Some(p) => Ok(p),
                    None => self.retry("get pod", || pods.get(&pod_ref.name)).await,
                }
            };
            let get_nads = join_all(
                names
                    .iter()
                    .map(|n| self.read_nad(&client, &config.multus_namespace, n)),
            );
            tokio::join!(get_pod, get_nads)
        })?;
        {
            let mut cache = self
                .prefetched
                .lock()
                .map_err(|_| ClusterError::Other("poisoned".into()))?;
            for (name, r) in node_names.iter().zip(prefetched) {
                // A failed read is retried by `network_by_name` (and fails there with a clear error).
                if let Ok(v) = r {
                    cache.insert(name.clone(), v);
                }
            }
        }
        let pod = match pod {
            Ok(p) => p,
            Err(e) if not_found(&e) => {
                return Err(ClusterError::Other(format!(
                    "pod {}/{} not found in the Kubernetes API",
                    pod_ref.namespace, pod_ref.name
                )));
            }
            Err(e) => {
                return Err(cluster_error(
                    &format!("reading pod {}/{}", pod_ref.namespace, pod_ref.name),
                    &e,
                ));
            }
        };
        let pod_annotations = annotations::PodAnnotations::of(pod.metadata.annotations.as_ref());
        if let (Some(want), Some(got)) = (&pod_ref.uid, &pod.metadata.uid)
            && want != got
            && !pod_annotations.is_static_pod()
        {
            return Err(ClusterError::Other(format!(
                "expected pod UID {want:?} but got {got:?} from the Kubernetes API"
            )));
        }
        if let Ok(mut slot) = self.pod.lock() {
            *slot = Some(pod);
        }

        // A refusal names the network and leaves a Warning event on the pod, like every other rejection.
        let isolation = |sel: &Selection| {
            annotations::check_isolation(
                &pod_ref.namespace,
                &sel.namespace,
                config.namespace_isolation,
                &config.global_namespaces,
            )
            .map_err(|e| {
                let msg = format!("network {}: {e}", sel.qualified_name());
                self.reject("InvalidNetworkSelection", msg)
            })
        };
        let default_sel = match pod_annotations.get(annotations::DEFAULT_NETWORK_ANNOTATION) {
            Some(v) if !v.trim().is_empty() => {
                let sel = annotations::parse_default_network(v, &config.multus_namespace).map_err(
                    |e| {
                        let what = annotations::DEFAULT_NETWORK_ANNOTATION;
                        self.reject("InvalidNetworkSelection", format!("annotation {what}: {e}"))
                    },
                )?;
                // Go Multus lets this annotation bypass isolation; plexus does not (docs/multus-compat.md,
                // "Annotations").
                isolation(&sel)?;
                Some(sel)
            }
            _ => None,
        };
        let selections = match pod_annotations.get(annotations::NETWORKS_ANNOTATION) {
            // Fail closed, with a Warning event on the pod (DECIDE-A1; docs/multus-compat.md,
            // "Invalid annotations").
            Some(v) => annotations::parse_networks(v, &pod_ref.namespace).map_err(|e| {
                let what = annotations::NETWORKS_ANNOTATION;
                self.reject("InvalidNetworkSelection", format!("annotation {what}: {e}"))
            })?,
            None => Vec::new(),
        };
        // The node's limit (issue 20), before any NAD the pod names is read.
        config
            .check_attachment_limit(&pod_ref.namespace, selections.len())
            .map_err(|msg| self.reject("TooManyAttachments", msg))?;
        for s in &selections {
            isolation(s)?;
        }

        // The selected NADs, each distinct one read once, a few at a time, stopping at the first failure
        // in annotation order (the default-network annotation's first).
        let mut wanted: Vec<(String, String)> = Vec::new();
        for s in default_sel.iter().chain(&selections) {
            let key = (s.namespace.clone(), s.name.clone());
            if !wanted.contains(&key) {
                wanted.push(key);
            }
        }
        let wanted = &wanted;
        let reads = self.run(|client| async move {
            read_in_order(wanted, NAD_READS_IN_FLIGHT, |key| {
                let client = client.clone();
                async move {
                    let (ns, name) = key;
                    match self.read_nad(&client, ns, name).await {
                        Ok(Some(info)) => Ok((key.clone(), info)),
                        Ok(None) => Err((key, None)),
                        Err(e) => Err((key, Some(e))),
                    }
                }
            })
            .await
        })?;
        let nads: HashMap<(String, String), NadInfo> = match reads {
            Ok(found) => found.into_iter().collect(),
            Err(((ns, name), None)) => {
                let msg = format!(
                    "cannot find a network-attachment-definition ({name}) in namespace ({ns})"
                );
                return Err(self.reject("NoNetworkFound", msg));
            }
            Err(((ns, name), Some(e))) => {
                return Err(cluster_error(
                    &format!("reading network-attachment-definition {ns}/{name}"),
                    &e,
                ));
            }
        };
        let mut out = PodNetworks::default();
        if let Some(sel) = &default_sel {
            let info = nads[&(sel.namespace.clone(), sel.name.clone())].clone();
            out.default_network = Some(self.network_for(config, sel, info)?);
        }
        for sel in &selections {
            let info = nads[&(sel.namespace.clone(), sel.name.clone())].clone();
            out.networks.push(self.network_for(config, sel, info)?);
        }
        Ok(out)
    }

    fn network_by_name(
        &self,
        config: &Config,
        name: &str,
    ) -> Result<Option<NetworkRequest>, ClusterError> {
        let cached = self
            .prefetched
            .lock()
            .ok()
            .and_then(|c| c.get(name).cloned());
        let info = match cached {
            Some(info) => info,
            None => self
                .run(|client| async move {
                    self.read_nad(&client, &config.multus_namespace, name).await
                })?
                .map_err(|e| {
                    cluster_error(
                        &format!(
                            "reading network-attachment-definition {}/{name}",
                            config.multus_namespace
                        ),
                        &e,
                    )
                })?,
        };
        let Some(info) = info else { return Ok(None) };
        let sel = Selection {
            namespace: config.multus_namespace.clone(),
            name: name.to_string(),
            ..Selection::default()
        };
        self.network_for(config, &sel, info).map(Some)
    }

    fn warn_pod(&self, reason: &str, message: String) {
        if let Some(pod) = self.pod_ref_for_events().filter(|_| self.events) {
            self.defer(event(&pod, "Warning", reason, message));
        }
    }

    fn take_events(&self) -> Vec<Event> {
        self.pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }

    fn dra_devices(&self, pod_ref: &PodRef) -> Result<crate::devices::DraDevices, ClusterError> {
        self.read_dra_devices(pod_ref)
    }

    fn publish_status(
        &self,
        pod_ref: &PodRef,
        attached: &[(Attachment, CniResult)],
    ) -> Result<Option<DeferredStatus>, ClusterError> {
        if self.system_namespaces.contains(&pod_ref.namespace) {
            return Ok(None);
        }
        let (patch, added) = self.status_write(attached);
        if self.defer_status {
            // Daemon mode, after the reply: the write (and the events that follow it) go back to the caller.
            return Ok(Some(DeferredStatus {
                pod: pod_ref.clone(),
                involved: self.pod_ref_for_events(),
                patch,
                added,
            }));
        }
        let result = self.run(|client| async move {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &pod_ref.namespace);
            let params = PatchParams::default();
            let merge = Patch::Merge(&patch);
            let write = async {
                let mut pause = Duration::from_millis(50);
                loop {
                    let r = self
                        .retry("patch pod status", || {
                            pods.patch_status(&pod_ref.name, &params, &merge)
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
            };
            write.await
        })?;
        self.status_written(pod_ref, result, added).map(|()| None)
    }
}

impl ApiCluster {
    /// The merge patch of `pods/status` that records `attached`, and the `AddedInterface` events to post
    /// once it is written.
    fn status_write(&self, attached: &[(Attachment, CniResult)]) -> (Value, Vec<Event>) {
        let rendered = status::render_attached(attached, crate::devices::info::read); // NPWG-73
        let uid = self
            .pod
            .lock()
            .ok()
            .and_then(|p| p.as_ref().and_then(|p| p.metadata.uid.clone()));
        let patch = status_patch(rendered, uid);
        // Sent only when the status is written: a failed ADD is rolled back, nothing was added.
        let added: Vec<Event> = match self.pod_ref_for_events() {
            Some(pod) => attached
                .iter()
                .filter(|(_, r)| !r.interfaces.is_empty() || !r.ips.is_empty())
                .map(|(a, r)| {
                    let ips: Vec<String> = r.ips.iter().map(|ip| ip.address.to_string()).collect();
                    event(
                        &pod,
                        "Normal",
                        "AddedInterface",
                        format!(
                            "Add {} [{}] from {}",
                            a.ifname,
                            ips.join(","),
                            a.status_name
                        ),
                    )
                })
                .collect(),
            None => Vec::new(),
        };
        (patch, added)
    }

    /// The end of a synchronous status write: the events go out after the reply; a pod that is gone needs
    /// none; other failures become the ADD's error.
    fn status_written(
        &self,
        pod_ref: &PodRef,
        result: Result<(), kube::Error>,
        added: Vec<Event>,
    ) -> Result<(), ClusterError> {
        match result {
            Ok(()) => {
                added.into_iter().for_each(|ev| self.defer(ev));
                Ok(())
            }
            // The pod is already gone: the runtime will tear the sandbox down; nothing to record.
            Err(e) if not_found(&e) => {
                tracing::warn!(
                    "pod {}/{} is gone; network-status not written",
                    pod_ref.namespace,
                    pod_ref.name
                );
                Ok(())
            }
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
    use std::sync::Arc;

    use http::{Method, Request, Response};
    use kube::client::Body;
    use serde_json::json;

    use super::*;
    use crate::config::Config;

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

    fn config(extra: Value) -> Config {
        let mut v = json!({"cniVersion": "1.0.0", "name": "plexus", "clusterNetwork": "cluster-nad",
                           "apiTimeoutSeconds": 1, "apiBudgetSeconds": 2});
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        Config::from_bytes(&serde_json::to_vec(&v).unwrap()).unwrap()
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

    fn pod_ref() -> PodRef {
        PodRef {
            namespace: "ns1".into(),
            name: "p1".into(),
            uid: Some("uid-1".into()),
            infra_container_id: None,
        }
    }

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
    fn pod_networks_reads_pod_and_nads_and_builds_requests() {
        let cfg = config(json!({}));
        let (api, api_seen) = mock(&cfg, standard);
        let nets = api.pod_networks(&pod_ref(), &cfg).unwrap();
        let names: Vec<_> = nets
            .networks
            .iter()
            .map(|n| {
                (
                    n.status_name.as_str(),
                    n.network.name.as_str(),
                    n.ifname_request.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("ns1/net-a", "net-a", None),
                ("other/net-b", "b-conf", Some("data0")),
                ("ns1/net-a", "net-a", None)
            ]
        );
        assert_eq!(
            nets.networks[0].resource_name.as_deref(),
            Some("intel.com/vf")
        );
        // NPWG-11: the NAD name was injected where the config had none.
        assert_eq!(nets.networks[0].network.value["name"], "net-a");
        // Every NAD read once, by GET (never a LIST), and the cluster NAD was read with the pod.
        let seen = api_seen.lock().unwrap();
        assert!(seen.iter().all(|s| s.method == Method::GET));
        assert_eq!(
            seen.iter().filter(|s| s.path.ends_with("/net-a")).count(),
            1
        );
        assert!(seen.iter().any(|s| s.path.ends_with("/cluster-nad")));
        let before = seen.len();
        drop(seen);
        let cluster = api.network_by_name(&cfg, "cluster-nad").unwrap().unwrap();
        assert_eq!(cluster.network.plugins[0].plugin_type, "bridge");
        assert_eq!(cluster.status_name, "kube-system/cluster-nad");
        assert_eq!(
            api_seen.lock().unwrap().len(),
            before,
            "served from the read-ahead: no extra round trip"
        );
    }

    #[test]
    fn network_by_name_without_read_ahead_reads_once_and_404_means_confdir() {
        let cfg = config(json!({}));
        let (api, seen) = mock(&cfg, standard);
        assert!(api.network_by_name(&cfg, "cluster-nad").unwrap().is_some());
        assert!(api.network_by_name(&cfg, "not-a-nad").unwrap().is_none());
        let paths: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.path.clone())
            .collect();
        assert_eq!(paths.len(), 2);
        assert!(paths[1].ends_with("/kube-system/network-attachment-definitions/not-a-nad"));
    }

    /// What the edge does after the reply: nothing was POSTed while the operation ran; then the collected
    /// events are sent (by the detached child in the binary).
    fn send_after_reply(api: &ApiCluster, seen: &Mutex<Vec<Seen>>) {
        assert!(
            !seen
                .lock()
                .unwrap()
                .iter()
                .any(|s| s.method == Method::POST),
            "events wait for the reply"
        );
        let events = api.take_events();
        assert!(!events.is_empty(), "events were collected");
        api.send_events(events);
        assert!(api.take_events().is_empty(), "taken once");
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

    #[test]
    fn missing_nad_is_rejected_with_a_warning_event() {
        let cfg = config(json!({}));
        let (api, seen) = mock(&cfg, |s, _| {
            if s.path.ends_with("/pods/p1") {
                (200, pod(json!({"k8s.v1.cni.cncf.io/networks": "ghost"})))
            } else if s.method == Method::POST {
                (201, s.body.clone())
            } else {
                status(404, "NotFound")
            }
        });
        let e = api.pod_networks(&pod_ref(), &cfg).unwrap_err();
        assert!(
            matches!(&e, ClusterError::Rejected(m) if m.contains("ghost") && m.contains("ns1")),
            "{e:?}"
        );
        send_after_reply(&api, &seen);
        let seen = seen.lock().unwrap();
        let ev = seen
            .iter()
            .find(|s| s.method == Method::POST)
            .expect("an event was sent");
        assert_eq!(ev.path, "/api/v1/namespaces/ns1/events");
        assert_eq!(ev.body["reason"], "NoNetworkFound");
        assert_eq!(ev.body["type"], "Warning");
        assert_eq!(ev.body["involvedObject"]["uid"], "uid-1");
    }

    /// Counts the reads [`read_in_order`] starts and how many are out at once (a read dropped unfinished
    /// counts as ended).
    #[derive(Default)]
    struct Reads {
        started: std::sync::atomic::AtomicUsize,
        out: std::sync::atomic::AtomicUsize,
        most_out: std::sync::atomic::AtomicUsize,
    }

    struct Out<'a>(&'a Reads);

    impl Drop for Out<'_> {
        fn drop(&mut self) {
            self.0.out.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Reads {
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
        let reads = Reads::default();
        let keys: Vec<usize> = (0..40).collect();
        // Later keys finish sooner: the answers still come in key order.
        let got = block_on(read_in_order(keys.clone(), 8, |k| {
            reads.read(k, 40 - k, false)
        }));
        assert_eq!(got, Ok(keys));
        assert_eq!(reads.started(), 40);
        assert_eq!(reads.most_out(), 8, "never more than the limit at once");
        // A limit of 0 would never start anything: it means 1.
        let reads = Reads::default();
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
        let reads = Reads::default();
        let got = block_on(read_in_order(0..1000, 8, |k| reads.read(k, 1, true)));
        assert_eq!(got, Err(0), "the first key's failure");
        assert!(reads.started() <= 8, "{} reads started", reads.started());
        // The ones in flight with it were dropped, not waited for.
        let reads = Reads::default();
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
        let reads = Reads::default();
        let got = block_on(read_in_order(0..100, 8, |k| match k {
            1 => reads.read(k, 50, true),
            2 => reads.read(k, 0, true),
            _ => reads.read(k, 1, k >= 1),
        }));
        assert_eq!(got, Err(1));
        // Key 1 succeeds slowly, key 3 fails at once: the answer waits for key 1, then is key 3's.
        let reads = Reads::default();
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

    /// Issue 20: a pod naming a thousand NADs that do not exist costs at most [`NAD_READS_IN_FLIGHT`]
    /// NAD reads, and the error names the first of them, in today's words.
    #[test]
    fn a_thousand_missing_nads_cost_a_few_reads_and_name_the_first() {
        let names: Vec<String> = (0..1000).map(|i| format!("ghost-{i:04}")).collect();
        let annotation = names.join(",");
        let cfg = config(json!({"maxAttachmentsPerPod": 2000}));
        let (api, seen) = mock(&cfg, move |s, _| {
            if s.path.ends_with("/pods/p1") {
                (200, pod(json!({"k8s.v1.cni.cncf.io/networks": annotation})))
            } else {
                status(404, "NotFound")
            }
        });
        let e = api.pod_networks(&pod_ref(), &cfg).unwrap_err();
        assert_eq!(
            e,
            ClusterError::Rejected(
                "cannot find a network-attachment-definition (ghost-0000) in namespace (ns1)"
                    .into()
            )
        );
        let reads = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.starts_with(&format!("{NADS}/ns1/")))
            .count();
        assert!(
            (1..=NAD_READS_IN_FLIGHT).contains(&reads),
            "{reads} NAD reads"
        );
        assert_eq!(
            api.take_events()[0].reason.as_deref(),
            Some("NoNetworkFound")
        );
    }

    /// Issue 20: a forbidden NAD read ends the reads too, and is the error (the first in annotation order).
    #[test]
    fn a_refused_nad_read_stops_the_others() {
        let annotation: Vec<String> = (0..100).map(|i| format!("n{i}")).collect();
        let annotation = annotation.join(",");
        let cfg = config(json!({"maxAttachmentsPerPod": 200}));
        let (api, seen) = mock(&cfg, move |s, _| {
            if s.path.ends_with("/pods/p1") {
                (200, pod(json!({"k8s.v1.cni.cncf.io/networks": annotation})))
            } else if s.path.ends_with("/n0") {
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
        let e = api.pod_networks(&pod_ref(), &cfg).unwrap_err();
        assert!(
            matches!(&e, ClusterError::Other(m) if m.starts_with("reading network-attachment-definition ns1/n1:")
                && m.contains("credentials")),
            "{e:?}"
        );
        let reads = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.starts_with(&format!("{NADS}/ns1/")))
            .count();
        assert!(reads <= NAD_READS_IN_FLIGHT + 1, "{reads} NAD reads");
    }

    /// Issue 20: a pod over `maxAttachmentsPerPod` (the node's networks counted) is refused, code 7, naming
    /// the limit and the key, with a Warning event, before any NAD it names is read.
    #[test]
    fn a_pod_over_the_attachment_limit_is_refused_before_its_nads_are_read() {
        let over = |limit: usize, selected: usize| {
            let annotation: Vec<String> = (0..selected).map(|i| format!("n{i}")).collect();
            let annotation = annotation.join(",");
            let cfg = config(json!({"maxAttachmentsPerPod": limit}));
            let (api, seen) = mock(&cfg, move |s, _| {
                if s.path.ends_with("/pods/p1") {
                    (200, pod(json!({"k8s.v1.cni.cncf.io/networks": annotation})))
                } else {
                    let name = s.path.rsplit('/').next().unwrap_or_default().to_string();
                    (
                        200,
                        nad(
                            "ns1",
                            &name,
                            Some(r#"{"cniVersion":"1.0.0","type":"bridge"}"#),
                        ),
                    )
                }
            });
            let got = api.pod_networks(&pod_ref(), &cfg);
            let read: Vec<String> = seen
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.path.starts_with(&format!("{NADS}/ns1/")))
                .map(|s| s.path.clone())
                .collect();
            (got, read, api.take_events())
        };
        // The cluster network and 3 selected: 4, within 4.
        let (got, read, _) = over(4, 3);
        assert_eq!(got.unwrap().networks.len(), 3);
        assert_eq!(read.len(), 3);
        // One more is over it.
        let (got, read, events) = over(4, 4);
        let e = got.unwrap_err();
        let ClusterError::Rejected(msg) = &e else {
            panic!("{e:?}")
        };
        for part in [
            "5 network attachments",
            "at most 4 per pod",
            "maxAttachmentsPerPod",
        ] {
            assert!(msg.contains(part), "{part}: {msg}");
        }
        assert_eq!(read, Vec::<String>::new(), "no NAD the pod names was read");
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].reason.as_deref(), Some("TooManyAttachments"));
        assert_eq!(events[0].message.as_deref(), Some(msg.as_str()));
        // The default (32) refuses 32 selected networks after the cluster network.
        let cfg = config(json!({}));
        let annotation: Vec<String> = (0..32).map(|i| format!("n{i}")).collect();
        let annotation = annotation.join(",");
        let (api, seen) = mock(&cfg, move |s, _| {
            if s.path.ends_with("/pods/p1") {
                (200, pod(json!({"k8s.v1.cni.cncf.io/networks": annotation})))
            } else {
                status(404, "NotFound")
            }
        });
        let e = api.pod_networks(&pod_ref(), &cfg).unwrap_err();
        assert!(
            matches!(&e, ClusterError::Rejected(m) if m.contains("33 network attachments") && m.contains("at most 32")),
            "{e:?}"
        );
        assert!(
            !seen
                .lock()
                .unwrap()
                .iter()
                .any(|s| s.path.starts_with(&format!("{NADS}/ns1/"))),
            "no NAD the pod names was read"
        );
    }

    /// The core's own Warning events (a NAD naming a missing plugin, issue 16) land on the pod the ADD read;
    /// before any pod was read there is nothing to put them on.
    #[test]
    fn a_warning_from_the_core_goes_on_the_pod_read() {
        let cfg = config(json!({}));
        let (api, _) = mock(&cfg, standard);
        api.warn_pod("NoPluginFound", "too early".into());
        assert!(api.take_events().is_empty(), "no pod read yet");
        api.pod_networks(&pod_ref(), &cfg).unwrap();
        api.warn_pod(
            "NoPluginFound",
            "network \"ns1/a\" cannot be attached".into(),
        );
        let events = api.take_events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].reason.as_deref(), Some("NoPluginFound"));
        assert_eq!(events[0].type_.as_deref(), Some("Warning"));
        assert_eq!(events[0].involved_object.uid.as_deref(), Some("uid-1"));
        let api = api.with_events(false);
        api.warn_pod("NoPluginFound", "off".into());
        assert!(api.take_events().is_empty(), "events off (DEL)");
    }

    #[test]
    fn no_warning_events_when_events_are_off() {
        let cfg = config(json!({}));
        let (api, seen) = mock(&cfg, |s, _| {
            if s.path.ends_with("/pods/p1") {
                (200, pod(json!({"k8s.v1.cni.cncf.io/networks": "ghost"})))
            } else {
                status(404, "NotFound")
            }
        });
        let api = api.with_events(false);
        assert!(api.pod_networks(&pod_ref(), &cfg).is_err());
        assert!(api.take_events().is_empty());
        assert!(
            !seen
                .lock()
                .unwrap()
                .iter()
                .any(|s| s.method == Method::POST),
            "DEL's fallback read records nothing"
        );
    }

    #[test]
    fn uid_mismatch_fails_unless_static() {
        let cfg = config(json!({}));
        let mut r = pod_ref();
        r.uid = Some("someone-else".into());
        let (api, _) = mock(&cfg, standard);
        let e = api.pod_networks(&r, &cfg).unwrap_err();
        assert!(e.to_string().contains("expected pod UID"), "{e}");
        let (api, _) = mock(&cfg, |s, n| {
            if s.path.ends_with("/pods/p1") {
                (200, pod(json!({"kubernetes.io/config.source": "file"})))
            } else {
                standard(s, n)
            }
        });
        assert!(
            api.pod_networks(&r, &cfg).is_ok(),
            "static pods are exempt (#773)"
        );
    }

    #[test]
    fn pod_not_found_names_the_pod() {
        let cfg = config(json!({}));
        let (api, _) = mock(&cfg, |_, _| status(404, "NotFound"));
        let e = api.pod_networks(&pod_ref(), &cfg).unwrap_err();
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
        api.pod_networks(&pod_ref(), &cfg).unwrap();
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
        let e = api.pod_networks(&pod_ref(), &cfg).unwrap_err();
        assert!(matches!(e, ClusterError::Unavailable(_)), "{e:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "bounded by apiBudgetSeconds"
        );
    }

    #[test]
    fn unauthorized_says_so() {
        let cfg = config(json!({}));
        let (api, _) = mock(&cfg, |_, _| status(401, "Unauthorized"));
        let e = api.pod_networks(&pod_ref(), &cfg).unwrap_err();
        assert!(e.to_string().contains("credentials"), "{e}");
    }

    #[test]
    fn namespace_isolation_covers_both_annotations() {
        let cfg = config(json!({"namespaceIsolation": true}));
        let (api, seen) = mock(&cfg, |s, n| {
            if s.method == Method::POST {
                (201, s.body.clone())
            } else {
                standard(s, n)
            }
        });
        let e = api.pod_networks(&pod_ref(), &cfg).unwrap_err();
        assert!(
            matches!(&e, ClusterError::Rejected(m) if m.contains("namespace isolation") && m.contains("other/net-b")),
            "names the network: {e:?}"
        );
        send_after_reply(&api, &seen);
        let seen = seen.lock().unwrap();
        let ev = seen
            .iter()
            .find(|s| s.method == Method::POST)
            .expect("a Warning event");
        assert_eq!(ev.body["type"], "Warning");
        assert!(ev.body["message"].as_str().unwrap().contains("other/net-b"));
        drop(seen);
        let (api, _) = mock(&cfg, |s, n| {
            if s.path.ends_with("/pods/p1") {
                (
                    200,
                    pod(json!({"v1.multus-cni.io/default-network": "kube-system/cluster-nad"})),
                )
            } else {
                standard(s, n)
            }
        });
        let e = api.pod_networks(&pod_ref(), &cfg).unwrap_err();
        assert!(
            e.to_string().contains("namespace isolation"),
            "the default-network annotation obeys isolation too: {e}"
        );
        let cfg = config(json!({"namespaceIsolation": true, "globalNamespaces": "kube-system"}));
        let (api, _) = mock(&cfg, |s, n| {
            if s.path.ends_with("/pods/p1") {
                (
                    200,
                    pod(json!({"v1.multus-cni.io/default-network": "cluster-nad"})),
                )
            } else {
                standard(s, n)
            }
        });
        let nets = api.pod_networks(&pod_ref(), &cfg).unwrap();
        assert_eq!(
            nets.default_network.unwrap().status_name,
            "kube-system/cluster-nad"
        );
    }

    #[test]
    fn invalid_annotation_is_rejected_naming_the_element_with_a_warning_event() {
        let cfg = config(json!({}));
        let (api, seen) = mock(&cfg, |s, n| {
            if s.path.ends_with("/pods/p1") {
                let bad = r#"[{"name":"net-a","mac":"zz"}]"#;
                (200, pod(json!({"k8s.v1.cni.cncf.io/networks": bad})))
            } else if s.method == Method::POST {
                (201, s.body.clone())
            } else {
                standard(s, n)
            }
        });
        let e = api.pod_networks(&pod_ref(), &cfg).unwrap_err();
        assert!(
            matches!(&e, ClusterError::Rejected(m) if m.contains("mac") && m.contains("element 0")),
            "{e:?}"
        );
        send_after_reply(&api, &seen);
        let seen = seen.lock().unwrap();
        let ev = seen
            .iter()
            .find(|s| s.method == Method::POST)
            .expect("a Warning event");
        assert_eq!(ev.body["type"], "Warning");
        assert_eq!(ev.body["reason"], "InvalidNetworkSelection");
        assert!(ev.body["message"].as_str().unwrap().contains("element 0"));
    }

    #[test]
    fn empty_spec_config_is_found_in_conf_dir() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("a.conf"),
            r#"{"cniVersion":"1.0.0","name":"net-a","type":"ondisk"}"#,
        )
        .unwrap();
        let cfg = config(json!({"confDir": d.path()}));
        let (api, _) = mock(&cfg, |s, n| {
            if s.path.ends_with("/net-a") {
                (200, nad("ns1", "net-a", None))
            } else if s.path.ends_with("/pods/p1") {
                (200, pod(json!({"k8s.v1.cni.cncf.io/networks": "net-a"})))
            } else {
                standard(s, n)
            }
        });
        let nets = api.pod_networks(&pod_ref(), &cfg).unwrap();
        assert_eq!(nets.networks[0].network.plugins[0].plugin_type, "ondisk");
    }

    fn attached() -> Vec<(Attachment, CniResult)> {
        let net = crate::netconf::NetworkConfig::from_value(
            json!({"cniVersion": "1.0.0", "name": "c", "type": "bridge"}),
        )
        .unwrap();
        let mut req = NetworkRequest::plain(net);
        req.status_name = "c".into();
        let a = crate::plan::plan("eth0", vec![req]).unwrap().remove(0);
        let r = CniResult::from_value(
            &json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x", "mac": "02:00:00:00:00:01"}],
                    "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 0}],
                    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]}),
            plexus_cni::CniVersion::V1_0_0,
        )
        .unwrap();
        vec![(a, r)]
    }

    #[test]
    fn a_status_patch_that_keeps_conflicting_is_try_again_later() {
        // Issue 6: a 409 on every status PATCH is retried until apiBudgetSeconds runs out, then code 11.
        let cfg = config(json!({}));
        let (api, seen) = mock(&cfg, |s, n| {
            if s.method == Method::PATCH {
                status(409, "Conflict")
            } else {
                standard(s, n)
            }
        });
        api.pod_networks(&pod_ref(), &cfg).unwrap();
        let e = api.publish_status(&pod_ref(), &attached()).unwrap_err();
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
    fn status_is_one_merge_patch_of_pods_status_with_events_alongside() {
        let cfg = config(json!({}));
        let (api, seen) = mock(&cfg, |s, n| {
            if s.method == Method::PATCH && n == 0 {
                status(409, "Conflict")
            } else if s.method == Method::PATCH || s.method == Method::POST {
                (200, pod(json!({})))
            } else {
                standard(s, n)
            }
        });
        api.pod_networks(&pod_ref(), &cfg).unwrap();
        api.publish_status(&pod_ref(), &attached()).unwrap();
        send_after_reply(&api, &seen);
        let seen = seen.lock().unwrap();
        let patches: Vec<_> = seen.iter().filter(|s| s.method == Method::PATCH).collect();
        assert_eq!(patches.len(), 2, "one retry after the conflict");
        let p = patches[1];
        assert_eq!(p.path, "/api/v1/namespaces/ns1/pods/p1/status");
        assert_eq!(p.content_type, "application/merge-patch+json");
        assert_eq!(
            p.body["metadata"]["uid"], "uid-1",
            "the UID guards against a recreated pod"
        );
        let keys: Vec<_> = p.body["metadata"]["annotations"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            ["k8s.v1.cni.cncf.io/network-status"],
            "touches only that annotation"
        );
        let written: Vec<status::NetworkStatus> = status::parse(
            p.body["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(written[0].ips, ["10.1.0.5"]);
        assert!(written[0].default);
        assert!(p.body.get("spec").is_none() && p.body.get("status").is_none());
        let ev = seen
            .iter()
            .find(|s| s.method == Method::POST)
            .expect("AddedInterface event");
        assert_eq!(ev.body["reason"], "AddedInterface");
        assert_eq!(ev.body["message"], "Add eth0 [10.1.0.5/24] from c");
    }

    #[test]
    fn status_skipped_for_system_namespaces_and_tolerates_a_gone_pod() {
        let cfg = config(json!({"systemNamespaces": ["ns1"]}));
        let (api, seen) = mock(&cfg, standard);
        api.publish_status(&pod_ref(), &attached()).unwrap();
        assert!(seen.lock().unwrap().is_empty());
        let cfg = config(json!({}));
        let (api, _) = mock(&cfg, |_, _| status(404, "NotFound"));
        api.publish_status(&pod_ref(), &attached()).unwrap();
    }

    /// Daemon mode (issue 20): a NAD a pod of the node selects is loaded in the watch cache and served with
    /// no API read; one held compact (no pod selects it) is read from the API once, which loads it, so the
    /// next request reads neither.
    #[test]
    fn a_loaded_nad_costs_no_api_read_and_a_compact_one_is_read_once() {
        use crate::k8s::nadcache::WatchedNad;
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

        let (mut api, seen) = mock(&cfg, standard);
        api.cache = Some(cache.clone());
        let nets = api.pod_networks(&pod_ref(), &cfg).unwrap();
        assert_eq!(nets.networks.len(), 3);
        assert_eq!(
            nets.networks[0].resource_name.as_deref(),
            Some("intel.com/vf"),
            "the loaded copy keeps resourceName"
        );
        assert_eq!(
            nad_reads(&seen),
            ["cluster-nad", "net-b"],
            "net-a from the cache"
        );
        assert_eq!(cache.nad_cache().loaded(), 3, "what was read is loaded");

        let (mut api, seen) = mock(&cfg, standard);
        api.cache = Some(cache.clone());
        api.pod_networks(&pod_ref(), &cfg).unwrap();
        assert!(nad_reads(&seen).is_empty(), "{:?}", nad_reads(&seen));
    }
}
