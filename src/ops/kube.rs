//! What one operation knows of the pod in Kubernetes: it reads through the [`Cluster`] seam, decides with
//! the pure policy (`crate::pure::selection`), and keeps the pod it read (for the status write's UID guard, the
//! DRA reads and the events), the node's NADs read ahead with it, and the events it collected, which go
//! back beside the answer (`super::run`) for the edge to post after the reply.

use std::{cell::RefCell, collections::HashMap};

use k8s_openapi::api::core::v1::{Event, ObjectReference, Pod};
use plexus_cni::CniResult;

use crate::{
    pure::{
        annotations::PodAnnotations,
        config::Config,
        netconf::NetworkConfig,
        plan::{Attachment, NetworkRequest},
        request::PodRef,
        selection::{self, Rejection},
        status,
    },
    seams::{
        cluster::{
            Cluster, ClusterError, DeferredStatus, Nad, NadKey, NadsError, PodNetworks, Written,
        },
        devices::DraDevices,
        k8s::events::event,
    },
    store::confdir,
};

/// The operation's view of the pod in the API (none without Kubernetes).
pub(crate) struct Kube<'a> {
    api: Option<&'a dyn Cluster>,
    config: &'a Config,
    /// Whether Warning events are collected: on ADD, yes; when DEL rebuilds a pod's networks the ADD
    /// already said so, and a second event would only be noise.
    warn: bool,
    /// The pod as read.
    pod: RefCell<Option<Pod>>,
    /// NADs of `multusNamespace` read ahead with the pod, by name (None: no such NAD).
    ahead: RefCell<HashMap<String, Option<Nad>>>,
    events: RefCell<Vec<Event>>,
}

impl<'a> Kube<'a> {
    /// Over `api` with `config`; Warning events collected when `warn`.
    pub fn new(api: Option<&'a dyn Cluster>, config: &'a Config, warn: bool) -> Kube<'a> {
        Kube {
            api,
            config,
            warn,
            pod: RefCell::new(None),
            ahead: RefCell::new(HashMap::new()),
            events: RefCell::new(Vec::new()),
        }
    }

    /// The events collected (and forgets them).
    pub fn take_events(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.borrow_mut())
    }

    /// `confDir`'s network of a NAD with an empty spec.
    fn on_disk(&self) -> impl Fn(&str) -> Result<NetworkConfig, String> + '_ {
        |name| confdir::find_by_name(&self.config.conf_dir, name).map_err(|e| e.to_string())
    }

    /// The pod's own networks: the pod read (with the node's NADs ahead), its annotations decided on, the
    /// NADs it selects read in order. A rejection leaves a Warning event on the pod.
    pub fn pod_networks(&self, pod_ref: &PodRef) -> Result<PodNetworks, ClusterError> {
        let Some(api) = self.api else {
            return Ok(PodNetworks::default());
        };
        let config = self.config;
        let (askable, unaskable): (Vec<String>, Vec<String>) = selection::node_nad_names(config)
            .into_iter()
            .partition(|n| selection::may_be_nad(n));
        let keys: Vec<NadKey> = askable
            .iter()
            .map(|n| (config.multus_namespace.clone(), n.clone()))
            .collect();
        let reads = api.read(Some(pod_ref), &keys);
        {
            let mut ahead = self.ahead.borrow_mut();
            ahead.extend(unaskable.into_iter().map(|n| (n, None)));
            for (name, r) in askable.into_iter().zip(reads.nads) {
                // A failed read is retried by `network_by_name` (and fails there with a clear error).
                if let Ok(v) = r {
                    ahead.insert(name, v);
                }
            }
        }
        let pod = reads
            .pod
            .unwrap_or_else(|| Err(ClusterError::Other("the pod was not read".into())))?;
        let annotations = PodAnnotations::of(pod.metadata.annotations.as_ref());
        selection::check_uid(pod_ref, pod.metadata.uid.as_deref(), &annotations)?;
        *self.pod.borrow_mut() = Some(pod);

        let wanted = selection::select(&pod_ref.namespace, &annotations, config)
            .map_err(|r| self.reject(r))?;
        let keys = wanted.keys();
        let nads: HashMap<NadKey, Nad> = match api.read_nads_in_order(&keys) {
            Ok(found) => keys.into_iter().zip(found).collect(),
            Err(NadsError::Missing(key)) => return Err(self.reject(selection::missing_nad(&key))),
            Err(NadsError::Failed(e)) => return Err(e),
        };
        selection::pod_networks(config, &wanted, &nads, &self.on_disk())
    }

    /// The pod itself, read (the watch's copy first) and its UID checked against the runtime's, for a call
    /// that names a pod but selects nothing from its annotations (Go Multus's `/delegate`).
    pub fn pod(&self, pod_ref: &PodRef) -> Result<Pod, ClusterError> {
        let Some(api) = self.api else {
            return Err(ClusterError::Other(
                "no Kubernetes API to read the pod from".into(),
            ));
        };
        let pod = api
            .read(Some(pod_ref), &[])
            .pod
            .unwrap_or_else(|| Err(ClusterError::Other("the pod was not read".into())))?;
        let annotations = PodAnnotations::of(pod.metadata.annotations.as_ref());
        selection::check_uid(pod_ref, pod.metadata.uid.as_deref(), &annotations)?;
        *self.pod.borrow_mut() = Some(pod.clone());
        Ok(pod)
    }

    /// A network named in `clusterNetwork`/`defaultNetworks`, as a NAD in `multusNamespace` (read ahead with
    /// the pod, or now); `Ok(None)` sends the lookup on to `confDir`.
    pub fn network_by_name(&self, name: &str) -> Result<Option<NetworkRequest>, ClusterError> {
        let Some(api) = self.api else {
            return Ok(None);
        };
        let ahead = self.ahead.borrow().get(name).cloned();
        let nad = match ahead {
            Some(nad) => nad,
            None if !selection::may_be_nad(name) => None,
            None => {
                let key = (self.config.multus_namespace.clone(), name.to_string());
                let mut reads = api.read(None, std::slice::from_ref(&key)).nads;
                reads.pop().unwrap_or(Ok(None))?
            }
        };
        let Some(nad) = nad else { return Ok(None) };
        let sel = selection::node_selection(self.config, name);
        selection::network_for(self.config, &sel, &nad, &self.on_disk()).map(Some)
    }

    /// The value of annotation `key` of the pod read: `None` when no pod was read (or its UID was not the
    /// runtime's), `Some(None)` when the pod has no such annotation.
    pub fn pod_annotation(&self, key: &'static str) -> Option<Option<String>> {
        let pod = self.pod.borrow();
        let pod = pod.as_ref()?;
        debug_assert!(
            PodAnnotations::KEYS.contains(&key),
            "pod annotation {key} is read but not in PodAnnotations::KEYS: the daemon's cache drops it"
        );
        Some(
            pod.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .cloned(),
        )
    }

    /// The pod's DRA devices (nothing before the pod was read).
    pub fn dra_devices(&self, pod_ref: &PodRef) -> Result<DraDevices, ClusterError> {
        match (self.api, &*self.pod.borrow()) {
            (Some(api), Some(pod)) => api.dra_devices(pod_ref, pod),
            _ => Ok(DraDevices::default()),
        }
    }

    /// Record a Warning event on the pod read, to be sent with the operation's other events; nothing when
    /// no pod was read or events are off.
    pub fn warn_pod(&self, reason: &str, message: String) {
        if !self.warn {
            return;
        }
        if let Some(pod) = self.involved() {
            self.events
                .borrow_mut()
                .push(event(&pod, "Warning", reason, message));
        }
    }

    /// An event of `type_` on the pod read, for the caller to send (`None` before any pod was read).
    pub fn pod_event(&self, type_: &str, reason: &str, message: String) -> Option<Event> {
        self.involved()
            .map(|pod| event(&pod, type_, reason, message))
    }

    fn reject(&self, r: Rejection) -> ClusterError {
        self.warn_pod(r.reason, r.message.clone());
        ClusterError::from(r)
    }

    /// The pod read, as an event's involved object.
    fn involved(&self) -> Option<ObjectReference> {
        let pod = self.pod.borrow();
        let pod = pod.as_ref()?;
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

    /// Record a successful ADD's attachments in the pod's network-status annotation (pods in
    /// `systemNamespaces` get none: docs/multus-compat.md, "Network status"), guarded by the UID read. The
    /// `AddedInterface` events follow a write that lands. `Some`: the write is handed back, for the caller
    /// to send after the reply (daemon mode).
    pub fn publish_status(
        &self,
        pod_ref: &PodRef,
        attached: &[(Attachment, CniResult)],
    ) -> Result<Option<DeferredStatus>, ClusterError> {
        let Some(api) = self.api else {
            return Ok(None);
        };
        if self.config.system_namespaces.contains(&pod_ref.namespace) {
            return Ok(None);
        }
        let rendered = status::render_attached(attached, crate::seams::devices::info::read); // NPWG-73
        let uid = self
            .pod
            .borrow()
            .as_ref()
            .and_then(|p| p.metadata.uid.clone());
        let involved = self.involved();
        // Sent only when the status is written: a failed ADD is rolled back, nothing was added.
        let added: Vec<Event> = match &involved {
            Some(pod) => attached
                .iter()
                .filter(|(_, r)| !r.interfaces.is_empty() || !r.ips.is_empty())
                .map(|(a, r)| {
                    let ips: Vec<String> = r.ips.iter().map(|ip| ip.address.to_string()).collect();
                    let message = format!(
                        "Add {} [{}] from {}",
                        a.ifname,
                        ips.join(","),
                        a.status_name
                    );
                    event(pod, "Normal", "AddedInterface", message)
                })
                .collect(),
            None => Vec::new(),
        };
        let job = DeferredStatus {
            pod: pod_ref.clone(),
            involved,
            patch: status::patch(rendered, uid),
            added,
        };
        match api.write_status(&job)? {
            Written::Sent => {
                self.events.borrow_mut().extend(job.added);
                Ok(None)
            }
            Written::PodGone => {
                tracing::warn!(
                    "pod {}/{} is gone; network-status not written",
                    pod_ref.namespace,
                    pod_ref.name
                );
                Ok(None)
            }
            Written::Deferred => Ok(Some(job)),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::{pure::annotations::NETWORKS_ANNOTATION, seams::k8s::memory::MemoryApi};

    use crate::pure::config::testing::kube_config as config;

    use crate::seams::testing::pod_ref;

    fn bridge() -> Value {
        json!({"cniVersion": "1.0.0", "type": "bridge"})
    }

    /// Pod ns1/p1 selecting `networks`, the cluster network's NAD, and `nads` (in ns1, bridges).
    fn api(networks: &str, nads: &[&str]) -> MemoryApi {
        let mut api = MemoryApi::new()
            .with_pod("ns1", "p1", "uid-1", &[(NETWORKS_ANNOTATION, networks)])
            .with_nad("kube-system", "cluster-nad", bridge());
        for n in nads {
            api = api.with_nad("ns1", n, bridge());
        }
        api
    }

    fn key(ns: &str, name: &str) -> NadKey {
        (ns.into(), name.into())
    }

    /// The pod and the node's NADs are read together, each selected NAD once, in order; the cluster
    /// network then comes from the read-ahead, with no further read.
    #[test]
    fn the_pod_and_the_node_nads_are_read_together_and_each_nad_once() {
        let cfg = config(json!({}));
        let api = api("net-a,net-b@data0,net-a", &["net-a", "net-b"]);
        let kube = Kube::new(Some(&api), &cfg, true);
        let nets = kube.pod_networks(&pod_ref()).unwrap();
        let names: Vec<_> = nets
            .networks
            .iter()
            .map(|n| (n.status_name.as_str(), n.ifname_request.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("ns1/net-a", None),
                ("ns1/net-b", Some("data0")),
                ("ns1/net-a", None)
            ]
        );
        let read = [
            key("kube-system", "cluster-nad"),
            key("ns1", "net-a"),
            key("ns1", "net-b"),
        ];
        assert_eq!(api.nad_reads(), read);
        let cluster = kube.network_by_name("cluster-nad").unwrap().unwrap();
        assert_eq!(cluster.status_name, "kube-system/cluster-nad");
        assert_eq!(api.nad_reads(), read, "served from the read-ahead");
        // Not read ahead: read now; absent: confDir's.
        assert!(kube.network_by_name("not-a-nad").unwrap().is_none());
        assert!(kube.network_by_name("../a?b").unwrap().is_none());
        assert_eq!(
            api.nad_reads().len(),
            4,
            "a name no NAD can have is not asked"
        );
        assert_eq!(api.pod_reads(), 1);
    }

    /// A missing NAD is refused (code 7) naming it, with a `NoNetworkFound` Warning event on the pod read.
    #[test]
    fn a_missing_nad_is_rejected_with_a_warning_event() {
        let cfg = config(json!({}));
        let api = api("ghost", &[]);
        let kube = Kube::new(Some(&api), &cfg, true);
        let e = kube.pod_networks(&pod_ref()).unwrap_err();
        assert_eq!(
            e,
            ClusterError::Rejected(
                "cannot find a network-attachment-definition (ghost) in namespace (ns1)".into()
            )
        );
        let events = kube.take_events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].reason.as_deref(), Some("NoNetworkFound"));
        assert_eq!(events[0].type_.as_deref(), Some("Warning"));
        assert_eq!(events[0].involved_object.uid.as_deref(), Some("uid-1"));
        assert_eq!(events[0].metadata.namespace.as_deref(), Some("ns1"));
        assert!(kube.take_events().is_empty(), "taken once");
    }

    /// Issue 20: a pod over `maxAttachmentsPerPod` is refused, with a Warning event, before any NAD it
    /// names is read.
    #[test]
    fn a_pod_over_the_attachment_limit_is_refused_before_its_nads_are_read() {
        let cfg = config(json!({"maxAttachmentsPerPod": 4}));
        let api = api("n0,n1,n2,n3", &["n0", "n1", "n2", "n3"]);
        let kube = Kube::new(Some(&api), &cfg, true);
        let e = kube.pod_networks(&pod_ref()).unwrap_err();
        let ClusterError::Rejected(msg) = &e else {
            panic!("{e:?}")
        };
        assert!(msg.contains("at most 4 per pod"), "{msg}");
        assert_eq!(api.nad_reads(), [key("kube-system", "cluster-nad")]);
        let events = kube.take_events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].reason.as_deref(), Some("TooManyAttachments"));
        assert_eq!(events[0].message.as_deref(), Some(msg.as_str()));
    }

    /// Rejections of the annotation (invalid, or isolation) leave `InvalidNetworkSelection` events.
    #[test]
    fn annotation_rejections_leave_invalid_network_selection_events() {
        for (cfg, networks) in [
            (config(json!({})), r#"[{"name":"net-a","mac":"zz"}]"#),
            (config(json!({"namespaceIsolation": true})), "other/net-b"),
        ] {
            let api = api(networks, &[]);
            let kube = Kube::new(Some(&api), &cfg, true);
            assert!(matches!(
                kube.pod_networks(&pod_ref()),
                Err(ClusterError::Rejected(_))
            ));
            let events = kube.take_events();
            assert_eq!(events.len(), 1, "{events:?}");
            assert_eq!(events[0].reason.as_deref(), Some("InvalidNetworkSelection"));
            assert_eq!(api.nad_reads().len(), 1, "only the read-ahead");
        }
    }

    /// The core's own Warning events (a NAD naming a missing plugin, issue 16) land on the pod read;
    /// before any pod was read there is nothing to put them on; with events off (DEL) there are none.
    #[test]
    fn warnings_go_on_the_pod_read_and_only_when_events_are_on() {
        let cfg = config(json!({}));
        let api = api("", &[]);
        let kube = Kube::new(Some(&api), &cfg, true);
        kube.warn_pod("NoPluginFound", "too early".into());
        assert!(kube.take_events().is_empty(), "no pod read yet");
        kube.pod_networks(&pod_ref()).unwrap();
        kube.warn_pod(
            "NoPluginFound",
            "network \"ns1/a\" cannot be attached".into(),
        );
        let events = kube.take_events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].involved_object.uid.as_deref(), Some("uid-1"));

        let api =
            MemoryApi::new().with_pod("ns1", "p1", "uid-1", &[(NETWORKS_ANNOTATION, "ghost")]);
        let kube = Kube::new(Some(&api), &cfg, false);
        assert!(kube.pod_networks(&pod_ref()).is_err());
        kube.warn_pod("NoPluginFound", "off".into());
        assert!(
            kube.take_events().is_empty(),
            "DEL's fallback read records nothing"
        );
    }

    #[test]
    fn a_pod_of_another_uid_is_refused_and_not_kept() {
        let cfg = config(json!({}));
        let api = api("", &[]);
        let kube = Kube::new(Some(&api), &cfg, true);
        let mut other = pod_ref();
        other.uid = Some("someone-else".into());
        let e = kube.pod_networks(&other).unwrap_err();
        assert!(e.to_string().contains("expected pod UID"), "{e}");
        kube.warn_pod("X", "y".into());
        assert!(kube.take_events().is_empty(), "no event on another pod");
        let api = MemoryApi::new().failing_pod_reads(ClusterError::Unavailable("down".into()));
        let e = Kube::new(Some(&api), &cfg, true)
            .pod_networks(&pod_ref())
            .unwrap_err();
        assert_eq!(e, ClusterError::Unavailable("down".into()));
    }

    /// NPWG-7/10: a NAD with an empty spec names a network in `confDir`.
    #[test]
    fn an_empty_spec_is_found_in_conf_dir() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("a.conf"),
            r#"{"cniVersion":"1.0.0","name":"net-a","type":"ondisk"}"#,
        )
        .unwrap();
        let cfg = config(json!({"confDir": d.path()}));
        let api = api("net-a", &[]).with_nad("ns1", "net-a", Value::Null);
        let nets = Kube::new(Some(&api), &cfg, true)
            .pod_networks(&pod_ref())
            .unwrap();
        assert_eq!(nets.networks[0].network.plugins[0].plugin_type, "ondisk");
    }

    fn attached() -> Vec<(Attachment, CniResult)> {
        let net = NetworkConfig::from_value(
            json!({"cniVersion": "1.0.0", "name": "c", "type": "bridge"}),
        )
        .unwrap();
        let mut req = NetworkRequest::plain(net);
        req.status_name = "c".into();
        let a = crate::pure::plan::plan("eth0", vec![req])
            .unwrap()
            .remove(0);
        let r = CniResult::from_value(
            &json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x", "mac": "02:00:00:00:00:01"}],
                    "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 0}],
                    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]}),
            plexus_cni::CniVersion::V1_0_0,
        )
        .unwrap();
        vec![(a, r)]
    }

    /// One merge patch touching only the network-status annotation, guarded by the UID read; the
    /// `AddedInterface` events follow a write that landed (or travel with one handed back).
    #[test]
    fn the_status_write_is_one_patch_and_its_events_follow_it() {
        let cfg = config(json!({}));
        let api = api("", &[]);
        let kube = Kube::new(Some(&api), &cfg, true);
        kube.pod_networks(&pod_ref()).unwrap();
        assert_eq!(kube.publish_status(&pod_ref(), &attached()), Ok(None));
        let writes = api.status_writes();
        assert_eq!(writes.len(), 1);
        let p = writes[0].patch();
        assert_eq!(
            p["metadata"]["uid"], "uid-1",
            "the UID guards against a recreated pod"
        );
        let keys: Vec<_> = p["metadata"]["annotations"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(
            keys,
            ["k8s.v1.cni.cncf.io/network-status"],
            "touches only that annotation"
        );
        assert!(p.get("spec").is_none() && p.get("status").is_none());
        let written = &api.statuses()[0].1;
        assert_eq!(written[0].ips, ["10.1.0.5"]);
        assert!(written[0].default);
        let events = kube.take_events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].reason.as_deref(), Some("AddedInterface"));
        assert_eq!(
            events[0].message.as_deref(),
            Some("Add eth0 [10.1.0.5/24] from c")
        );

        let api = api_deferring();
        let kube = Kube::new(Some(&api), &cfg, true);
        kube.pod_networks(&pod_ref()).unwrap();
        let job = kube
            .publish_status(&pod_ref(), &attached())
            .unwrap()
            .unwrap();
        assert_eq!(job.added.len(), 1, "the events wait for the write");
        assert_eq!(
            job.involved.as_ref().and_then(|i| i.uid.as_deref()),
            Some("uid-1")
        );
        assert!(kube.take_events().is_empty());
    }

    fn api_deferring() -> MemoryApi {
        api("", &[]).deferring_status()
    }

    #[test]
    fn system_namespaces_get_no_status_and_a_gone_pod_no_events() {
        let cfg = config(json!({"systemNamespaces": ["ns1"]}));
        let api = api("", &[]);
        let kube = Kube::new(Some(&api), &cfg, true);
        assert_eq!(kube.publish_status(&pod_ref(), &attached()), Ok(None));
        assert!(api.status_writes().is_empty());
        let cfg = config(json!({}));
        let api = MemoryApi::new();
        let kube = Kube::new(Some(&api), &cfg, true);
        assert_eq!(kube.publish_status(&pod_ref(), &attached()), Ok(None));
        assert_eq!(api.status_writes().len(), 1, "tried");
        assert!(kube.take_events().is_empty());
        let api = MemoryApi::new().failing_status_writes(ClusterError::Unavailable("409".into()));
        let kube = Kube::new(Some(&api), &cfg, true);
        assert!(matches!(
            kube.publish_status(&pod_ref(), &attached()),
            Err(ClusterError::Unavailable(_))
        ));
    }
}
