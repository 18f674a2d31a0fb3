//! The watch caches the daemon reads from: this node's pods (field selector `spec.nodeName`, a kube-runtime
//! reflector trimmed to the fields plexus reads) and every NetworkAttachmentDefinition, held compact except
//! those the node's pods select ([`super::nadcache`]), so memory grows with one node's pods and the NADs
//! they use, not with the cluster.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use kube::{
    Api, Client,
    api::DynamicObject,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde_json::Value;

use crate::{
    pure::annotations,
    seams::k8s::{
        nadcache::{Lookup, NadCache, NadKey, RETAIN, WatchedNad},
        observe::{ApiObserver, ApiOutcome},
    },
};

/// How long the NAD watch waits for the pod watch's first list before it lists anyway: with the pods known
/// first, the NAD list loads the NADs they select as it goes, without a GET for each.
const PODS_FIRST: Duration = Duration::from_secs(5);
/// NADs loaded at once for pods that select them (one GET each).
const LOAD_CONCURRENCY: usize = 4;
/// How long one such GET may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How often unused loaded NADs are looked for ([`RETAIN`]).
const SWEEP_PERIOD: Duration = Duration::from_secs(60);

/// Reduce a pod to what plexus reads: identity, the network annotations, the node, and the DRA claims.
pub fn trim_pod(pod: &mut Pod) {
    let m = &mut pod.metadata;
    m.managed_fields = None;
    m.labels = None;
    m.owner_references = None;
    m.finalizers = None;
    m.generate_name = None;
    // Exactly the annotations the core reads (the same list), so both modes see the same pod.
    if let Some(a) = m.annotations.as_mut() {
        annotations::PodAnnotations::keep_only(a);
    }
    pod.spec = pod.spec.take().map(|s| PodSpec {
        node_name: s.node_name,
        resource_claims: s.resource_claims,
        containers: Vec::new(),
        ..PodSpec::default()
    });
    pod.status = pod.status.take().map(|s| PodStatus {
        resource_claim_statuses: s.resource_claim_statuses,
        ..PodStatus::default()
    });
}

/// The NADs `pod` selects: its networks annotation's (the pod's namespace by default) and its
/// default-network annotation's (`multus_namespace` by default). An annotation that does not parse selects
/// nothing here (its ADD says why).
pub fn selected_nads(pod: &Pod, multus_namespace: &str) -> Vec<NadKey> {
    let a = annotations::PodAnnotations::of(pod.metadata.annotations.as_ref());
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut out: Vec<NadKey> = Vec::new();
    let networks = a
        .get(annotations::NETWORKS_ANNOTATION)
        .and_then(|v| annotations::parse_networks(v, ns).ok())
        .unwrap_or_default();
    let default = a
        .get(annotations::DEFAULT_NETWORK_ANNOTATION)
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| annotations::parse_default_network(v, multus_namespace).ok());
    for s in default.into_iter().chain(networks) {
        let k = (s.namespace, s.name);
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

/// What the node's pods select, pod by pod, kept in step with the pod watch.
#[derive(Debug, Default)]
struct Selections {
    by_pod: HashMap<(String, String), Vec<NadKey>>,
    /// During a (re-)list: what it reported so far; it replaces `by_pod` when it ends.
    listing: Option<HashMap<(String, String), Vec<NadKey>>>,
}

impl Selections {
    /// Take in one pod event; whether what the node selects may have changed.
    fn event(&mut self, ev: &watcher::Event<Pod>, multus_namespace: &str) -> bool {
        let key = |p: &Pod| {
            (
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone().unwrap_or_default(),
            )
        };
        match ev {
            watcher::Event::Init => {
                self.listing = Some(HashMap::new());
                false
            }
            watcher::Event::InitApply(p) => {
                if let Some(l) = self.listing.as_mut() {
                    l.insert(key(p), selected_nads(p, multus_namespace));
                }
                false
            }
            watcher::Event::InitDone => {
                if let Some(l) = self.listing.take() {
                    self.by_pod = l;
                }
                true
            }
            watcher::Event::Apply(p) => {
                let sel = selected_nads(p, multus_namespace);
                self.by_pod.insert(key(p), sel.clone()) != Some(sel)
            }
            watcher::Event::Delete(p) => self.by_pod.remove(&key(p)).is_some_and(|s| !s.is_empty()),
        }
    }

    fn all(&self) -> HashSet<NadKey> {
        self.by_pod.values().flatten().cloned().collect()
    }
}

/// A pod, by namespace and name.
pub type PodKey = (String, String);

/// The most pods [`ChangedPods`] holds; past it, one mark says "look at every pod".
pub const CHANGED_PODS_CAP: usize = 4096;

/// What [`ChangedPods::next`] hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// This pod's networks annotation changed.
    Pod(PodKey),
    /// More pods changed than the queue holds: every pod of the node is to be looked at.
    All,
}

/// The pods of this node whose networks annotation changed after the watch first saw them (hot-plug's
/// work): a bounded queue in which a pod waits at most once however often it changes, so a burst of edits of
/// one pod costs one reconcile.
#[derive(Debug)]
pub struct ChangedPods {
    queue: std::sync::Mutex<Queued>,
    ready: tokio::sync::Notify,
    cap: usize,
}

/// The pods waiting, in order, each with when its first change still waiting was seen (hot-plug's latency
/// starts there), and the "look at every pod" mark with when it was set.
type Queued = (
    std::collections::VecDeque<PodKey>,
    HashMap<PodKey, std::time::Instant>,
    Option<std::time::Instant>,
);

impl ChangedPods {
    /// An empty queue of at most `cap` pods.
    pub fn new(cap: usize) -> ChangedPods {
        ChangedPods {
            queue: Default::default(),
            ready: tokio::sync::Notify::new(),
            cap,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `pod` (once: a pod already waiting is not queued again).
    pub fn push(&self, pod: PodKey) {
        let mut q = self.lock();
        if q.1.contains_key(&pod) || q.2.is_some() {
            return;
        }
        let now = std::time::Instant::now();
        if q.0.len() >= self.cap {
            // The oldest change waiting: the latency of the pass over every pod starts there.
            let oldest = q.1.values().min().copied().unwrap_or(now);
            q.0.clear();
            q.1.clear();
            q.2 = Some(oldest);
        } else {
            q.1.insert(pod.clone(), now);
            q.0.push_back(pod);
        }
        drop(q);
        self.ready.notify_one();
    }

    /// The next change, without waiting.
    pub fn try_next(&self) -> Option<Changed> {
        self.try_next_since().map(|(c, _)| c)
    }

    /// The next change and when it was seen, without waiting.
    pub fn try_next_since(&self) -> Option<(Changed, std::time::Instant)> {
        let mut q = self.lock();
        if let Some(since) = q.2.take() {
            return Some((Changed::All, since));
        }
        let pod = q.0.pop_front()?;
        let since = q.1.remove(&pod).unwrap_or_else(std::time::Instant::now);
        Some((Changed::Pod(pod), since))
    }

    /// The next change, once there is one.
    pub async fn next(&self) -> Changed {
        self.next_since().await.0
    }

    /// The next change and when it was seen, once there is one.
    pub async fn next_since(&self) -> (Changed, std::time::Instant) {
        loop {
            let notified = self.ready.notified();
            if let Some(c) = self.try_next_since() {
                return c;
            }
            notified.await;
        }
    }

    /// Pods waiting.
    pub fn depth(&self) -> usize {
        let q = self.lock();
        q.0.len() + usize::from(q.2.is_some())
    }
}

/// Each pod's networks annotation as last seen, to tell its changes apart from the pod's other updates.
#[derive(Debug, Default)]
struct NetworksSeen {
    by_pod: HashMap<PodKey, Option<String>>,
    listing: Option<HashMap<PodKey, Option<String>>>,
}

impl NetworksSeen {
    /// Take in one pod event; the pods whose annotation changed since the watch last saw them (a pod seen
    /// for the first time is no change: its sandbox's ADD reads what it says).
    fn event(&mut self, ev: &watcher::Event<Pod>) -> Vec<PodKey> {
        let of = |p: &Pod| {
            let key = (
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone().unwrap_or_default(),
            );
            let value = p
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(annotations::NETWORKS_ANNOTATION))
                .cloned();
            (key, value)
        };
        match ev {
            watcher::Event::Init => {
                self.listing = Some(HashMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(p) => {
                if let Some(l) = self.listing.as_mut() {
                    let (k, v) = of(p);
                    l.insert(k, v);
                }
                Vec::new()
            }
            watcher::Event::InitDone => {
                let Some(listed) = self.listing.take() else {
                    return Vec::new();
                };
                // Changes the watch missed while it was down.
                let mut changed: Vec<PodKey> = listed
                    .iter()
                    .filter(|(k, v)| self.by_pod.get(*k).is_some_and(|old| old != *v))
                    .map(|(k, _)| k.clone())
                    .collect();
                changed.sort();
                self.by_pod = listed;
                changed
            }
            watcher::Event::Apply(p) => {
                let (k, v) = of(p);
                match self.by_pod.insert(k.clone(), v.clone()) {
                    Some(old) if old != v => vec![k],
                    _ => Vec::new(),
                }
            }
            watcher::Event::Delete(p) => {
                self.by_pod.remove(&of(p).0);
                Vec::new()
            }
        }
    }
}

/// One watched kind's health.
#[derive(Debug, Default)]
struct Feed {
    /// The initial list arrived (the store answers for the whole kind).
    synced: AtomicBool,
    /// Unix milliseconds of the last event (object change, list page or bookmark) from the API.
    last_event_ms: AtomicU64,
    /// Watch errors (each followed by a backed-off restart).
    errors: AtomicU64,
    /// Complete lists received so far: the first, then one after each re-list (a watch that could not
    /// resume). The reconcile runs after each.
    lists: tokio::sync::watch::Sender<u64>,
    /// Events from the API so far: a changed count means the store may have changed.
    changes: AtomicU64,
}

impl Feed {
    fn touch(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_event_ms.store(now, Ordering::Relaxed);
    }

    fn staleness(&self) -> Option<Duration> {
        let last = self.last_event_ms.load(Ordering::Relaxed);
        if last == 0 {
            return None;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Some(Duration::from_millis(now.saturating_sub(last)))
    }
}

/// What the caches hold, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheStats {
    /// Pods of this node.
    pub pods: usize,
    /// NADs (every NAD of the cluster, most of them compact).
    pub nads: usize,
    /// NADs loaded: held whole for the node's pods and requests.
    pub nads_loaded: usize,
    /// Seconds since the pod watch last heard from the API (`None`: never).
    pub pods_staleness: Option<f64>,
    /// Seconds since the NAD watch last heard from the API.
    pub nads_staleness: Option<f64>,
    /// Both initial lists arrived.
    pub synced: bool,
    /// Watch errors so far (pods, NADs).
    pub errors: (u64, u64),
}

/// The two caches. Cheap to share (`Arc`); lookups never wait on the API.
pub struct NodeCache {
    pods: Store<Pod>,
    nads: Arc<NadCache>,
    pod_feed: Arc<Feed>,
    nad_feed: Arc<Feed>,
    changed: Arc<ChangedPods>,
}

impl NodeCache {
    /// Start watching (on the current tokio runtime) the pods of `node` and every NAD. NADs the pods select
    /// are loaded (default-network names resolve in `multus_namespace`); the loads' GETs are told to
    /// `observer`.
    pub fn start(
        client: &Client,
        node: &str,
        multus_namespace: &str,
        observer: Option<Arc<dyn ApiObserver>>,
    ) -> Arc<NodeCache> {
        let (pods, pod_writer) = reflector::store::<Pod>();
        let cache = Arc::new(NodeCache {
            pods,
            nads: Arc::new(NadCache::default()),
            pod_feed: Arc::new(Feed::default()),
            nad_feed: Arc::new(Feed::default()),
            changed: Arc::new(ChangedPods::new(CHANGED_PODS_CAP)),
        });
        let (load_tx, load_rx) = tokio::sync::mpsc::unbounded_channel::<NadKey>();

        let pod_api: Api<Pod> = Api::all(client.clone());
        let pod_cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let pod_stream = watcher(pod_api, pod_cfg).default_backoff().modify(trim_pod);
        let mut selections = Selections::default();
        let mut networks = NetworksSeen::default();
        let (nads, multus_namespace) = (cache.nads.clone(), multus_namespace.to_string());
        let changed = cache.changed.clone();
        tokio::spawn(drive(
            "pods",
            reflector::reflector(pod_writer, pod_stream),
            cache.pod_feed.clone(),
            move |ev| {
                for pod in networks.event(ev) {
                    changed.push(pod);
                }
                if selections.event(ev, &multus_namespace) {
                    for k in nads.select(selections.all()) {
                        let _ = load_tx.send(k);
                    }
                }
            },
        ));

        let nad_api: Api<WatchedNad> = Api::all(client.clone());
        let nad_stream = watcher(nad_api, watcher::Config::default()).default_backoff();
        let (nads, pod_lists) = (cache.nads.clone(), cache.pod_lists());
        let nad_feed = cache.nad_feed.clone();
        tokio::spawn(async move {
            let mut pod_lists = pod_lists;
            let _ = tokio::time::timeout(PODS_FIRST, pod_lists.wait_for(|n| *n > 0)).await;
            drive(
                "network-attachment-definitions",
                nad_stream,
                nad_feed,
                move |ev| match ev {
                    watcher::Event::Init => nads.list_started(),
                    watcher::Event::InitApply(n) | watcher::Event::Apply(n) => nads.apply(n),
                    watcher::Event::Delete(n) => nads.delete(n),
                    watcher::Event::InitDone => nads.list_done(),
                },
            )
            .await
        });
        tokio::spawn(load(client.clone(), cache.nads.clone(), load_rx, observer));
        let nads = cache.nads.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_PERIOD);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let n = nads.sweep(Instant::now(), RETAIN);
                if n > 0 {
                    tracing::debug!("unloaded {n} NAD(s) no pod of the node selects");
                }
            }
        });
        cache
    }

    /// Caches that no watch feeds (tests fill them directly).
    #[cfg(test)]
    pub(crate) fn detached() -> NodeCache {
        NodeCache {
            pods: reflector::store::<Pod>().0,
            nads: Arc::new(NadCache::default()),
            pod_feed: Arc::new(Feed::default()),
            nad_feed: Arc::new(Feed::default()),
            changed: Arc::new(ChangedPods::new(CHANGED_PODS_CAP)),
        }
    }

    /// The pods whose networks annotation changed after the watch first saw them (hot-plug's queue).
    pub fn changed_pods(&self) -> Arc<ChangedPods> {
        self.changed.clone()
    }

    /// Every pod the cache holds.
    pub fn pod_keys(&self) -> Vec<PodKey> {
        self.pods
            .state()
            .iter()
            .map(|p| {
                (
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// The NAD cache itself.
    pub fn nad_cache(&self) -> &NadCache {
        &self.nads
    }

    /// Wait until both initial lists arrived, at most `limit`; says whether they did.
    pub async fn wait_synced(&self, limit: Duration) -> bool {
        let both = async {
            let _ = self.pods.wait_until_ready().await;
            let _ = self.nad_feed.lists.subscribe().wait_for(|n| *n > 0).await;
        };
        tokio::time::timeout(limit, both).await.is_ok()
    }

    /// Counts the pod watch's complete lists (the first and every re-list); changes after each.
    pub fn pod_lists(&self) -> tokio::sync::watch::Receiver<u64> {
        self.pod_feed.lists.subscribe()
    }

    /// Whether both initial lists arrived.
    pub fn synced(&self) -> bool {
        self.pod_feed.synced.load(Ordering::Relaxed) && self.nad_feed.synced.load(Ordering::Relaxed)
    }

    /// The cached pod, if the watch has seen it.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.pods.get(&ObjectRef::new(name).within(namespace))
    }

    /// What the cache holds of a NAD: loaded (a request needs no API read), compact, or unknown.
    pub fn nad(&self, namespace: &str, name: &str) -> Lookup {
        self.nads.get(namespace, name)
    }

    /// A NAD a request read from the API: loaded when it is what the watch last reported.
    pub fn offer_nad(&self, namespace: &str, name: &str, nad: &DynamicObject) {
        let (config, resource_name) = nad_fields(nad);
        self.nads.offer(namespace, name, config, resource_name);
    }

    /// How many events the NAD watch has had: when it is unchanged, so is the NAD cache (the daemon's
    /// missing-plugin report passes again only then, or on its period).
    pub fn nad_changes(&self) -> u64 {
        self.nad_feed.changes.load(Ordering::Relaxed)
    }

    /// Sizes and freshness.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            pods: self.pods.len(),
            nads: self.nads.len(),
            nads_loaded: self.nads.loaded(),
            pods_staleness: self.pod_feed.staleness().map(|d| d.as_secs_f64()),
            nads_staleness: self.nad_feed.staleness().map(|d| d.as_secs_f64()),
            synced: self.synced(),
            errors: (
                self.pod_feed.errors.load(Ordering::Relaxed),
                self.nad_feed.errors.load(Ordering::Relaxed),
            ),
        }
    }
}

/// Load the NADs the pod watch asks for (`rx`), a few at once: one GET each, kept when it matches the NAD
/// watch ([`NadCache::offer`]). A NAD loaded, unselected or deleted meanwhile is skipped; a failed GET is
/// left to the request that needs the NAD (it reads it itself).
async fn load(
    client: Client,
    nads: Arc<NadCache>,
    rx: tokio::sync::mpsc::UnboundedReceiver<NadKey>,
    observer: Option<Arc<dyn ApiObserver>>,
) {
    let keys =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|k| (k, rx)) });
    keys.for_each_concurrent(LOAD_CONCURRENCY, |(ns, name)| {
        let (client, nads, observer) = (client.clone(), nads.clone(), observer.clone());
        async move {
            if !nads.needs_load(&ns, &name) {
                return;
            }
            let api: Api<WatchedNad> = Api::namespaced(client, &ns);
            let started = std::time::Instant::now();
            let got = tokio::time::timeout(LOAD_TIMEOUT, api.get(&name)).await;
            if let Some(o) = &observer {
                let outcome = match &got {
                    Ok(Ok(_)) => ApiOutcome::Ok,
                    Ok(Err(kube::Error::Api(s))) => ApiOutcome::Status(s.code),
                    _ => ApiOutcome::Failed,
                };
                o.api_request(
                    "load network-attachment-definition",
                    started.elapsed(),
                    outcome,
                );
            }
            match got {
                Ok(Ok(nad)) => {
                    let (config, resource_name) = (
                        nad.config().map(str::to_string),
                        nad.resource_name().map(str::to_string),
                    );
                    nads.offer(&ns, &name, config, resource_name);
                }
                Ok(Err(e)) => tracing::debug!("loading NAD {ns}/{name}: {e}"),
                Err(_) => tracing::debug!("loading NAD {ns}/{name}: no answer in {LOAD_TIMEOUT:?}"),
            }
        }
    })
    .await;
}

/// Drive one watch: hand each event to `apply`, record its time, mark the initial list, log errors (the
/// watcher backs off and restarts by itself).
async fn drive<S, K>(
    what: &'static str,
    stream: S,
    feed: Arc<Feed>,
    mut apply: impl FnMut(&watcher::Event<K>),
) where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(ev) => {
                apply(&ev);
                feed.touch();
                feed.changes.fetch_add(1, Ordering::Relaxed);
                if matches!(ev, watcher::Event::InitDone) {
                    if !feed.synced.swap(true, Ordering::Relaxed) {
                        tracing::info!("{what} cache synced");
                    }
                    feed.lists.send_modify(|n| *n += 1);
                }
            }
            Err(e) => {
                feed.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("watching {what}: {e}; retrying with backoff");
            }
        }
    }
    tracing::error!("the {what} watch ended");
}

/// A NAD as the API client reads it: its `spec.config` (a JSON string, when present) and resourceName.
pub fn nad_fields(nad: &DynamicObject) -> (Option<String>, Option<String>) {
    let config = nad
        .data
        .get("spec")
        .and_then(|s| s.get("config"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let resource = nad
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::RESOURCE_NAME_ANNOTATION))
        .cloned();
    (config, resource)
}

#[cfg(test)]
mod tests {
    use super::*;
    use annotations::PodAnnotations;

    /// Issue 17: the daemon's trimmed pod reads as the API's whole pod does, whatever else it carries:
    /// every annotation the core reads survives the trim, and what it reads is the same.
    #[test]
    fn thin_and_daemon_modes_read_the_same_pod() {
        let mut all: std::collections::BTreeMap<String, String> = (0..20)
            .map(|i| (format!("example.com/other-{i}"), "x".repeat(i)))
            .collect();
        for (i, k) in PodAnnotations::KEYS.iter().enumerate() {
            all.insert(k.to_string(), format!("value {i}"));
        }
        let mut pod = Pod::default();
        pod.metadata.annotations = Some(all);
        let whole = PodAnnotations::of(pod.metadata.annotations.as_ref());
        trim_pod(&mut pod);
        let trimmed = PodAnnotations::of(pod.metadata.annotations.as_ref());
        assert_eq!(trimmed, whole);
        for k in PodAnnotations::KEYS {
            assert!(trimmed.get(k).is_some(), "{k} survives the trim");
        }
        assert_eq!(
            pod.metadata.annotations.map(|a| a.len()),
            Some(PodAnnotations::KEYS.len()),
            "nothing else is kept"
        );
    }

    /// Reading an annotation the list does not name is caught in every test run, thin or daemon.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "not in PodAnnotations::KEYS")]
    fn reading_an_unlisted_annotation_is_a_bug() {
        PodAnnotations::default().get("example.com/unlisted");
    }

    #[test]
    fn a_pod_keeps_only_what_plexus_reads() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
                "labels": {"app": "x"},
                "managedFields": [{"manager": "kubectl"}],
                "annotations": {
                    "k8s.v1.cni.cncf.io/networks": "a,b",
                    "v1.multus-cni.io/default-network": "d",
                    "kubernetes.io/config.source": "file",
                    "k8s.v1.cni.cncf.io/network-status": "[{\"big\": true}]",
                    "kubectl.kubernetes.io/last-applied-configuration": "{...}"
                }},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i", "env": [{"name": "X", "value": "y"}]}],
                     "resourceClaims": [{"name": "nic", "resourceClaimName": "c1"},
                                        {"name": "vf", "resourceClaimTemplateName": "vf-t"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                       "resourceClaimStatuses": [{"name": "vf", "resourceClaimName": "p-vf-x1"}]}
        }))
        .unwrap();
        trim_pod(&mut pod);
        let v = serde_json::to_value(&pod).unwrap();
        let a = v["metadata"]["annotations"].as_object().unwrap();
        let mut keys: Vec<&str> = a.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "k8s.v1.cni.cncf.io/network-status",
                "k8s.v1.cni.cncf.io/networks",
                "kubernetes.io/config.source",
                "v1.multus-cni.io/default-network"
            ]
        );
        assert_eq!(v["metadata"]["uid"], "u1");
        assert!(v["metadata"].get("labels").is_none());
        assert!(v["metadata"].get("managedFields").is_none());
        assert_eq!(v["spec"]["nodeName"], "n1");
        assert_eq!(v["spec"]["containers"], serde_json::json!([]));
        assert!(v["status"].get("phase").is_none());
        // What DRA reads of the claims is kept (`dra::tests` checks it finds them in a trimmed pod).
        assert_eq!(
            v["spec"]["resourceClaims"][1]["resourceClaimTemplateName"],
            "vf-t"
        );
        assert_eq!(
            v["status"]["resourceClaimStatuses"][0]["resourceClaimName"],
            "p-vf-x1"
        );
    }

    /// The reconcile runs after each complete list: the first and every re-list after a watch that could
    /// not resume.
    #[test]
    fn every_complete_list_is_counted() {
        let feed = Arc::new(Feed::default());
        let lists = feed.lists.subscribe();
        let pod = || Pod::default();
        let events: Vec<Result<watcher::Event<Pod>, watcher::Error>> = vec![
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(pod())),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(pod())),
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitDone),
        ];
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut applied = 0;
        rt.block_on(drive(
            "pods",
            futures::stream::iter(events),
            feed.clone(),
            |_| applied += 1,
        ));
        assert_eq!(applied, 6, "every event reaches its cache");
        assert_eq!(*lists.borrow(), 2);
        assert!(feed.synced.load(Ordering::Relaxed));
    }

    #[test]
    fn a_nad_read_from_the_api_gives_its_config_and_resource_name() {
        let nad: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "a", "namespace": "ns",
                "annotations": {"k8s.v1.cni.cncf.io/resourceName": "intel.com/sriov", "other": "x"}},
            "spec": {"config": "{\"type\":\"macvlan\"}", "extra": 1}
        }))
        .unwrap();
        assert_eq!(
            nad_fields(&nad),
            (
                Some("{\"type\":\"macvlan\"}".to_string()),
                Some("intel.com/sriov".to_string())
            )
        );
        let empty: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "b", "namespace": "ns"}
        }))
        .unwrap();
        assert_eq!(nad_fields(&empty), (None, None));
    }

    fn pod_selecting(ns: &str, name: &str, networks: &str, default: Option<&str>) -> Pod {
        let mut a = serde_json::json!({ annotations::NETWORKS_ANNOTATION: networks });
        if let Some(d) = default {
            a[annotations::DEFAULT_NETWORK_ANNOTATION] = serde_json::json!(d);
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "annotations": a}
        }))
        .unwrap()
    }

    fn keys(pairs: &[(&str, &str)]) -> HashSet<NadKey> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn the_nads_a_pod_selects() {
        let p = pod_selecting("ns", "p", "a,other/b@data0,a", Some("cluster"));
        assert_eq!(
            selected_nads(&p, "kube-system"),
            [
                ("kube-system".to_string(), "cluster".to_string()),
                ("ns".to_string(), "a".to_string()),
                ("other".to_string(), "b".to_string())
            ]
        );
        assert!(selected_nads(&pod_selecting("ns", "p", "bad name!", None), "x").is_empty());
        assert!(selected_nads(&Pod::default(), "x").is_empty());
    }

    /// Issue 18: only a change of a pod's networks annotation after the watch first saw the pod is queued;
    /// a re-list queues what changed while the watch was down; a pod queued twice waits once.
    #[test]
    fn networks_annotation_changes_are_seen_once_per_pod() {
        let mut seen = NetworksSeen::default();
        let p = |networks: &str| pod_selecting("ns", "p1", networks, None);
        let key = ("ns".to_string(), "p1".to_string());
        seen.event(&watcher::Event::Init);
        seen.event(&watcher::Event::InitApply(p("a")));
        assert!(
            seen.event(&watcher::Event::InitDone).is_empty(),
            "first sight"
        );
        assert!(
            seen.event(&watcher::Event::Apply(p("a"))).is_empty(),
            "another update"
        );
        assert_eq!(
            seen.event(&watcher::Event::Apply(p("a,b"))),
            vec![key.clone()]
        );
        seen.event(&watcher::Event::Init);
        seen.event(&watcher::Event::InitApply(p("b")));
        assert_eq!(seen.event(&watcher::Event::InitDone), vec![key.clone()]);
        let other = pod_selecting("ns", "p2", "x", None);
        assert!(
            seen.event(&watcher::Event::Apply(other)).is_empty(),
            "new pod"
        );
        seen.event(&watcher::Event::Delete(p("b")));
        assert!(
            seen.event(&watcher::Event::Apply(p("c"))).is_empty(),
            "recreated"
        );

        let q = ChangedPods::new(2);
        q.push(key.clone());
        q.push(key.clone());
        assert_eq!(q.depth(), 1, "coalesced");
        q.push(("ns".into(), "p2".into()));
        assert_eq!(q.try_next(), Some(Changed::Pod(key.clone())));
        q.push(key.clone());
        q.push(("ns".into(), "p3".into()));
        assert_eq!(
            q.try_next(),
            Some(Changed::All),
            "past its bound: every pod"
        );
        assert_eq!(q.try_next(), None);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let q = Arc::new(ChangedPods::new(4));
            let waiter = tokio::spawn({
                let q = q.clone();
                async move { q.next().await }
            });
            tokio::task::yield_now().await;
            q.push(key.clone());
            assert_eq!(waiter.await.unwrap(), Changed::Pod(key));
        });
    }

    /// Hot-plug's latency starts at the first change still waiting: a later change of the same pod does
    /// not move it, and the pass over every pod starts at the oldest change it replaced.
    #[test]
    fn a_change_is_timed_from_when_it_was_first_seen() {
        let key = |n: &str| ("ns".to_string(), n.to_string());
        let q = ChangedPods::new(2);
        let before = std::time::Instant::now();
        q.push(key("p1"));
        std::thread::sleep(std::time::Duration::from_millis(20));
        q.push(key("p1"));
        let (c, since) = q.try_next_since().unwrap();
        assert_eq!(c, Changed::Pod(key("p1")));
        assert!(since.duration_since(before) < std::time::Duration::from_millis(20));
        let first = std::time::Instant::now();
        q.push(key("p1"));
        q.push(key("p2"));
        std::thread::sleep(std::time::Duration::from_millis(20));
        q.push(key("p3"));
        let (c, since) = q.try_next_since().unwrap();
        assert_eq!(c, Changed::All);
        assert!(since.duration_since(first) < std::time::Duration::from_millis(20));
        assert_eq!(q.depth(), 0);
    }

    /// What the node selects follows the pod watch: a list replaces it whole, a change or deletion of one
    /// pod changes it, and a pod event that changes no selection asks for nothing.
    #[test]
    fn the_node_selections_follow_the_pod_watch() {
        let mut s = Selections::default();
        let p1 = pod_selecting("ns", "p1", "a,b", None);
        let p2 = pod_selecting("ns", "p2", "c", None);
        assert!(!s.event(&watcher::Event::Init, "d"));
        assert!(!s.event(&watcher::Event::InitApply(p1.clone()), "d"));
        assert!(s.event(&watcher::Event::InitDone, "d"));
        assert_eq!(s.all(), keys(&[("ns", "a"), ("ns", "b")]));
        assert!(s.event(&watcher::Event::Apply(p2.clone()), "d"));
        assert!(
            !s.event(&watcher::Event::Apply(p2.clone()), "d"),
            "unchanged"
        );
        assert_eq!(s.all(), keys(&[("ns", "a"), ("ns", "b"), ("ns", "c")]));
        assert!(s.event(&watcher::Event::Delete(p1), "d"));
        assert_eq!(s.all(), keys(&[("ns", "c")]));
        // A re-list that no longer reports p2 (deleted while the watch was down).
        s.event(&watcher::Event::Init, "d");
        assert!(s.event(&watcher::Event::InitDone, "d"));
        assert!(s.all().is_empty());
    }
}
