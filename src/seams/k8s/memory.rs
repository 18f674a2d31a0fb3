//! Test support: an in-memory Kubernetes API behind the [`Cluster`] seam, the one double this crate's tests
//! and its integration tests (`tests/`) share. It holds pods (with their annotations) and NADs, answers
//! DRA reads with a given answer, records the network-status writes and counts the reads; failures can be
//! injected, and a hook can run at a pod read (to make a race with the reader deterministic). The policy of which networks a pod gets runs on it unchanged (`crate::pure::selection`).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::pure::{annotations::NETWORK_STATUS_ANNOTATION, status};
use crate::{
    pure::request::PodRef,
    seams::{
        cluster::{Cluster, ClusterError, DeferredStatus, Nad, NadKey, NadsError, Reads, Written},
        devices::DraDevices,
    },
};

/// An in-memory API (see the module docs). Build it with the `with_…` methods; read what happened with
/// the others.
#[derive(Default)]
pub struct MemoryApi {
    pods: HashMap<NadKey, Pod>,
    nads: HashMap<NadKey, Nad>,
    dra: DraDevices,
    fail_pods: Option<ClusterError>,
    fail_status: Option<ClusterError>,
    defer_status: bool,
    pod_reads: Mutex<usize>,
    nad_reads: Mutex<Vec<NadKey>>,
    writes: Mutex<Vec<DeferredStatus>>,
    on_pod_read: Option<Box<dyn Fn() + Send + Sync>>,
}

impl MemoryApi {
    /// No pods, no NADs.
    pub fn new() -> MemoryApi {
        MemoryApi::default()
    }

    /// With pod `namespace/name` of UID `uid` and `annotations`.
    pub fn with_pod(
        mut self,
        namespace: &str,
        name: &str,
        uid: &str,
        annotations: &[(&str, &str)],
    ) -> Self {
        let annotations: BTreeMap<String, String> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": uid, "annotations": annotations},
        }))
        .expect("a pod");
        self.pods.insert((namespace.into(), name.into()), pod);
        self
    }

    /// With pod `namespace/name` as given (its spec and status too: DRA claims).
    pub fn with_pod_object(mut self, pod: Pod) -> Self {
        let key = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        self.pods.insert(key, pod);
        self
    }

    /// With NAD `namespace/name` whose `spec.config` is `config` (`Value::Null`: no spec.config).
    pub fn with_nad(self, namespace: &str, name: &str, config: Value) -> Self {
        let config = (!config.is_null()).then(|| match config {
            Value::String(s) => s,
            other => other.to_string(),
        });
        self.with_nad_data(
            namespace,
            name,
            Nad {
                config,
                resource_name: None,
            },
        )
    }

    /// With NAD `namespace/name` as plexus keeps it (its resourceName too).
    pub fn with_nad_data(mut self, namespace: &str, name: &str, nad: Nad) -> Self {
        self.nads.insert((namespace.into(), name.into()), nad);
        self
    }

    /// Every pod read fails with `e`.
    pub fn failing_pod_reads(mut self, e: ClusterError) -> Self {
        self.fail_pods = Some(e);
        self
    }

    /// Every network-status write fails with `e`.
    pub fn failing_status_writes(mut self, e: ClusterError) -> Self {
        self.fail_status = Some(e);
        self
    }

    /// Hand the network-status write back instead of sending it (the daemon's `statusWrite: afterReply`).
    pub fn deferring_status(mut self) -> Self {
        self.defer_status = true;
        self
    }

    /// Run `hook` at every pod read, before it is answered: what happens to the world while the reader
    /// waits for the API (the runtime's DEL of the sandbox being looked at, say).
    pub fn on_pod_read(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_pod_read = Some(Box::new(hook));
        self
    }

    /// The answer to DRA reads.
    pub fn with_dra(mut self, dra: DraDevices) -> Self {
        self.dra = dra;
        self
    }

    /// How many pod reads were asked.
    pub fn pod_reads(&self) -> usize {
        *self.pod_reads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The NAD reads asked, in order.
    pub fn nad_reads(&self) -> Vec<NadKey> {
        self.nad_reads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The network-status writes sent or handed back, in order.
    pub fn status_writes(&self) -> Vec<DeferredStatus> {
        self.writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The network-status annotation of each write, read back: the pod and its entries.
    pub fn statuses(&self) -> Vec<(PodRef, Vec<status::NetworkStatus>)> {
        self.status_writes()
            .into_iter()
            .map(|w| {
                let rendered = w.patch["metadata"]["annotations"][NETWORK_STATUS_ANNOTATION]
                    .as_str()
                    .unwrap_or("[]")
                    .to_string();
                (w.pod, status::parse(&rendered).expect("a network-status"))
            })
            .collect()
    }

    fn nad(&self, key: &NadKey) -> Option<Nad> {
        self.nad_reads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(key.clone());
        self.nads.get(key).cloned()
    }
}

impl Cluster for MemoryApi {
    fn read(&self, pod: Option<&PodRef>, nads: &[NadKey]) -> Reads {
        let pod = pod.map(|p| {
            *self.pod_reads.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            if let Some(hook) = &self.on_pod_read {
                hook();
            }
            if let Some(e) = &self.fail_pods {
                return Err(e.clone());
            }
            self.pods
                .get(&(p.namespace.clone(), p.name.clone()))
                .cloned()
                .ok_or_else(|| {
                    ClusterError::Other(format!(
                        "pod {}/{} not found in the Kubernetes API",
                        p.namespace, p.name
                    ))
                })
        });
        Reads {
            pod,
            nads: nads.iter().map(|k| Ok(self.nad(k))).collect(),
        }
    }

    fn read_nads_in_order(&self, keys: &[NadKey]) -> Result<Vec<Nad>, NadsError> {
        keys.iter()
            .map(|k| self.nad(k).ok_or_else(|| NadsError::Missing(k.clone())))
            .collect()
    }

    fn write_status(&self, job: &DeferredStatus) -> Result<Written, ClusterError> {
        if let Some(e) = &self.fail_status {
            return Err(e.clone());
        }
        self.writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(job.clone());
        if self.defer_status {
            return Ok(Written::Deferred);
        }
        let key = (job.pod.namespace.clone(), job.pod.name.clone());
        Ok(match self.pods.get(&key) {
            Some(_) => Written::Sent,
            None => Written::PodGone,
        })
    }

    fn dra_devices(&self, _: &PodRef, _: &Pod) -> Result<DraDevices, ClusterError> {
        Ok(self.dra.clone())
    }
}
