//! The watch caches the daemon reads from: this node's pods (field selector `spec.nodeName`) and every
//! NetworkAttachmentDefinition, kept by kube-runtime reflectors and trimmed to the fields plexus reads, so
//! memory grows with the pods of one node and the NADs' configs, nothing else.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject},
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde_json::Value;

use super::{annotations, nad::NetworkAttachmentDefinition};

/// The pod annotations plexus reads; the others are dropped from the cache. network-status is kept for
/// the daemon's reconcile, which compares it with what the node attached.
const POD_ANNOTATIONS: [&str; 4] = [
    annotations::NETWORKS_ANNOTATION,
    annotations::DEFAULT_NETWORK_ANNOTATION,
    annotations::CONFIG_SOURCE_ANNOTATION,
    annotations::NETWORK_STATUS_ANNOTATION,
];

/// Reduce a pod to what plexus reads: identity, the network annotations, the node, and the DRA claims.
pub fn trim_pod(pod: &mut Pod) {
    let m = &mut pod.metadata;
    m.managed_fields = None;
    m.labels = None;
    m.owner_references = None;
    m.finalizers = None;
    m.generate_name = None;
    if let Some(a) = m.annotations.as_mut() {
        a.retain(|k, _| POD_ANNOTATIONS.contains(&k.as_str()));
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

/// Reduce a NAD to its identity, its `resourceName` annotation and `spec.config`.
pub fn trim_nad(nad: &mut DynamicObject) {
    let m = &mut nad.metadata;
    m.managed_fields = None;
    m.labels = None;
    m.owner_references = None;
    m.finalizers = None;
    if let Some(a) = m.annotations.as_mut() {
        a.retain(|k, _| k == annotations::RESOURCE_NAME_ANNOTATION);
    }
    let config = nad.data.get("spec").and_then(|s| s.get("config")).cloned();
    nad.data = match config {
        Some(c) => serde_json::json!({ "spec": { "config": c } }),
        None => serde_json::json!({ "spec": {} }),
    };
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
    /// NADs.
    pub nads: usize,
    /// Seconds since the pod watch last heard from the API (`None`: never).
    pub pods_staleness: Option<f64>,
    /// Seconds since the NAD watch last heard from the API.
    pub nads_staleness: Option<f64>,
    /// Both initial lists arrived.
    pub synced: bool,
    /// Watch errors so far (pods, NADs).
    pub errors: (u64, u64),
}

/// The two caches. Cheap to share (`Arc`); lookups never wait.
pub struct NodeCache {
    pods: Store<Pod>,
    nads: Store<DynamicObject>,
    nad_resource: ApiResource,
    pod_feed: Arc<Feed>,
    nad_feed: Arc<Feed>,
}

impl NodeCache {
    /// Start watching (on the current tokio runtime) the pods of `node` and every NAD.
    pub fn start(client: &Client, node: &str) -> Arc<NodeCache> {
        let nad_resource = ApiResource::erase::<NetworkAttachmentDefinition>(&());
        let (pods, pod_writer) = reflector::store::<Pod>();
        let nad_writer = reflector::store::Writer::<DynamicObject>::new(nad_resource.clone());
        let nads = nad_writer.as_reader();
        let cache = Arc::new(NodeCache {
            pods,
            nads,
            nad_resource: nad_resource.clone(),
            pod_feed: Arc::new(Feed::default()),
            nad_feed: Arc::new(Feed::default()),
        });

        let pod_api: Api<Pod> = Api::all(client.clone());
        let pod_cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let pod_stream = watcher(pod_api, pod_cfg).default_backoff().modify(trim_pod);
        tokio::spawn(drive(
            "pods",
            reflector::reflector(pod_writer, pod_stream),
            cache.pod_feed.clone(),
        ));

        let nad_api: Api<DynamicObject> = Api::all_with(client.clone(), &nad_resource);
        let nad_stream = watcher(nad_api, watcher::Config::default())
            .default_backoff()
            .modify(trim_nad);
        tokio::spawn(drive(
            "network-attachment-definitions",
            reflector::reflector(nad_writer, nad_stream),
            cache.nad_feed.clone(),
        ));
        cache
    }

    /// Wait until both initial lists arrived, at most `limit`; says whether they did.
    pub async fn wait_synced(&self, limit: Duration) -> bool {
        let both = async {
            let _ = self.pods.wait_until_ready().await;
            let _ = self.nads.wait_until_ready().await;
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

    /// The cached NAD, if the watch has seen it.
    pub fn nad(&self, namespace: &str, name: &str) -> Option<Arc<DynamicObject>> {
        self.nads
            .get(&ObjectRef::new_with(name, self.nad_resource.clone()).within(namespace))
    }

    /// How many events the NAD watch has had: when it is unchanged, so is the NAD store (the daemon's
    /// missing-plugin report passes again only then, or on its period).
    pub fn nad_changes(&self) -> u64 {
        self.nad_feed.changes.load(Ordering::Relaxed)
    }

    /// Every cached NAD's `spec.config`, by `namespace/name` (the daemon's missing-plugin report).
    pub fn nad_configs(&self) -> BTreeMap<String, String> {
        self.nads
            .state()
            .iter()
            .filter_map(|n| {
                let config = n.data.get("spec")?.get("config")?.as_str()?;
                let ns = n.metadata.namespace.as_deref().unwrap_or_default();
                let name = n.metadata.name.as_deref().unwrap_or_default();
                Some((format!("{ns}/{name}"), config.to_string()))
            })
            .collect()
    }

    /// Sizes and freshness.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            pods: self.pods.len(),
            nads: self.nads.len(),
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

/// Drive one reflector: record each event's time, mark the initial list, log errors (the watcher backs
/// off and restarts by itself).
async fn drive<S, K>(what: &'static str, stream: S, feed: Arc<Feed>)
where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(ev) => {
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
        rt.block_on(drive("pods", futures::stream::iter(events), feed.clone()));
        assert_eq!(*lists.borrow(), 2);
        assert!(feed.synced.load(Ordering::Relaxed));
    }

    #[test]
    fn a_nad_keeps_its_config_and_resource_name() {
        let mut nad: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "a", "namespace": "ns",
                "annotations": {"k8s.v1.cni.cncf.io/resourceName": "intel.com/sriov", "other": "x"},
                "managedFields": [{}]},
            "spec": {"config": "{\"type\":\"macvlan\"}", "extra": 1}
        }))
        .unwrap();
        trim_nad(&mut nad);
        assert_eq!(
            nad_fields(&nad),
            (
                Some("{\"type\":\"macvlan\"}".to_string()),
                Some("intel.com/sriov".to_string())
            )
        );
        assert_eq!(nad.metadata.annotations.as_ref().unwrap().len(), 1);
        assert!(nad.data["spec"].get("extra").is_none());
        let mut empty: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "b", "namespace": "ns"}
        }))
        .unwrap();
        trim_nad(&mut empty);
        assert_eq!(nad_fields(&empty), (None, None));
    }
}
