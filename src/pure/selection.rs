//! Which networks a pod gets, as pure functions: from the pod's annotations, its reference and the node
//! config to the NADs it selects (or a rejection carrying its Warning event's reason), and from each
//! selection and its NAD to the network request. No I/O: the API reads are the core's (`crate::ops`, over
//! the `crate::seams::cluster::Cluster` seam), and the one disk read (a NAD with an empty spec names a network in
//! `confDir`) comes in as a function.

use std::collections::HashMap;

use crate::{
    pure::cluster::{ClusterError, Nad, NadKey, PodNetworks},
    pure::{
        annotations::{self, PodAnnotations, Selection},
        config::{Config, NetworkRef, Primary},
        netconf::NetworkConfig,
        plan::NetworkRequest,
        request::PodRef,
    },
};

/// The Warning event's reason for an invalid annotation or a selection isolation forbids.
pub const INVALID_NETWORK_SELECTION: &str = "InvalidNetworkSelection";
/// The Warning event's reason for a pod over `maxAttachmentsPerPod`.
pub const TOO_MANY_ATTACHMENTS: &str = "TooManyAttachments";
/// The Warning event's reason for a selected NAD that does not exist (Go Multus's name).
pub const NO_NETWORK_FOUND: &str = "NoNetworkFound";

/// A pod's request refused: the message (the error's, CNI code 7) and the reason of the Warning event
/// that goes on the pod with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The event's reason.
    pub reason: &'static str,
    /// What was wrong, naming the network or the annotation.
    pub message: String,
}

impl Rejection {
    fn new(reason: &'static str, message: String) -> Rejection {
        Rejection { reason, message }
    }
}

impl From<Rejection> for ClusterError {
    fn from(r: Rejection) -> ClusterError {
        ClusterError::Rejected(r.message)
    }
}

/// The NADs a pod selects, validated and allowed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wanted {
    /// The default-network annotation's NAD, replacing the cluster network.
    pub default_network: Option<Selection>,
    /// The networks annotation's, in annotation order (a NAD named twice is here twice).
    pub networks: Vec<Selection>,
}

impl Wanted {
    /// Each distinct NAD once, in the order to read them: the default network's first, then annotation order.
    pub fn keys(&self) -> Vec<NadKey> {
        let mut keys: Vec<NadKey> = Vec::new();
        for s in self.default_network.iter().chain(&self.networks) {
            let key = (s.namespace.clone(), s.name.clone());
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys
    }
}

/// The names of the node's networks (`clusterNetwork`, `defaultNetworks`) that may be NADs in
/// `multusNamespace`, each once: read together with the pod.
pub fn node_nad_names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    if let Primary::ClusterNetwork(NetworkRef::Name(n)) = &config.primary {
        names.push(n.clone());
    }
    for r in &config.default_networks {
        if let NetworkRef::Name(n) = r
            && !names.contains(n)
        {
            names.push(n.clone());
        }
    }
    names
}

/// Whether a name may be asked of the API as a NAD: none has a name that is not a DNS-1123 subdomain, and
/// asking would put ".." or "a?b" in a URL path (hostile input). Such a node network is looked up in
/// `confDir` only.
pub fn may_be_nad(name: &str) -> bool {
    crate::pure::names::is_dns_subdomain(name)
}

/// The pod read must be the one the runtime names: a pod recreated under the same name has another UID.
/// Static pods are exempt (their mirror pod's UID is not the kubelet's).
pub fn check_uid(
    pod_ref: &PodRef,
    read_uid: Option<&str>,
    annotations: &PodAnnotations,
) -> Result<(), ClusterError> {
    match (&pod_ref.uid, read_uid) {
        (Some(want), Some(got)) if want != got && !annotations.is_static_pod() => {
            Err(ClusterError::Other(format!(
                "expected pod UID {want:?} but got {got:?} from the Kubernetes API"
            )))
        }
        _ => Ok(()),
    }
}

/// The NADs pod `pod_namespace`'s annotations select: both annotations parsed (fail closed on an invalid
/// one), the node's attachment limit checked before any NAD is read, and namespace isolation applied to
/// every selection, the default network's too (docs/multus-compat.md, "Annotations").
pub fn select(
    pod_namespace: &str,
    annotations: &PodAnnotations,
    config: &Config,
) -> Result<Wanted, Rejection> {
    let isolation = |sel: &Selection| {
        annotations::check_isolation(
            pod_namespace,
            &sel.namespace,
            config.namespace_isolation,
            &config.global_namespaces,
        )
        .map_err(|e| {
            let msg = format!("network {}: {e}", sel.qualified_name());
            Rejection::new(INVALID_NETWORK_SELECTION, msg)
        })
    };
    let invalid = |what: &str, e: annotations::AnnotationError| {
        Rejection::new(INVALID_NETWORK_SELECTION, format!("annotation {what}: {e}"))
    };
    let default_network = match annotations.get(annotations::DEFAULT_NETWORK_ANNOTATION) {
        Some(v) if !v.trim().is_empty() => {
            let sel = annotations::parse_default_network(v, &config.multus_namespace)
                .map_err(|e| invalid(annotations::DEFAULT_NETWORK_ANNOTATION, e))?;
            isolation(&sel)?;
            Some(sel)
        }
        _ => None,
    };
    let networks = match annotations.get(annotations::NETWORKS_ANNOTATION) {
        Some(v) => annotations::parse_networks(v, pod_namespace)
            .map_err(|e| invalid(annotations::NETWORKS_ANNOTATION, e))?,
        None => Vec::new(),
    };
    config
        .check_attachment_limit(pod_namespace, networks.len())
        .map_err(|msg| Rejection::new(TOO_MANY_ATTACHMENTS, msg))?;
    for s in &networks {
        isolation(s)?;
    }
    Ok(Wanted {
        default_network,
        networks,
    })
}

/// The rejection of a selected NAD that does not exist.
pub fn missing_nad((namespace, name): &NadKey) -> Rejection {
    Rejection::new(
        NO_NETWORK_FOUND,
        format!("cannot find a network-attachment-definition ({name}) in namespace ({namespace})"),
    )
}

/// The selection standing for a node network `name` found as a NAD in `multusNamespace`.
pub fn node_selection(config: &Config, name: &str) -> Selection {
    Selection {
        namespace: config.multus_namespace.clone(),
        name: name.to_string(),
        ..Selection::default()
    }
}

/// The request for one selected NAD: its `spec.config` (named after the NAD when it has no name), or for an
/// empty spec the network `on_disk` finds by the NAD's name (NPWG-7/10); the config's version where it has
/// none; the selection's `cni-args` merged in. A refusal names the network (CNI code 7).
pub fn network_for(
    config: &Config,
    sel: &Selection,
    nad: &Nad,
    on_disk: &dyn Fn(&str) -> Result<NetworkConfig, String>,
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
        Some(c) => NetworkConfig::from_bytes(c.as_bytes())
            .and_then(|n| n.with_name_if_missing(&sel.name))
            .map_err(|e| rejected(format!("invalid spec.config: {e}")))?,
        None => on_disk(&sel.name).map_err(rejected)?,
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
        resource_name: nad.resource_name.clone(),
    })
}

/// The pod's networks from what it wants and the NADs read (every key of [`Wanted::keys`]).
pub fn pod_networks(
    config: &Config,
    wanted: &Wanted,
    nads: &HashMap<NadKey, Nad>,
    on_disk: &dyn Fn(&str) -> Result<NetworkConfig, String>,
) -> Result<PodNetworks, ClusterError> {
    let request = |sel: &Selection| {
        let key = (sel.namespace.clone(), sel.name.clone());
        let nad = nads
            .get(&key)
            .ok_or_else(|| ClusterError::from(missing_nad(&key)))?;
        network_for(config, sel, nad, on_disk)
    };
    Ok(PodNetworks {
        default_network: wanted.default_network.as_ref().map(request).transpose()?,
        networks: wanted
            .networks
            .iter()
            .map(request)
            .collect::<Result<_, _>>()?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    use crate::pure::config::testing::kube_config as config;

    fn annotations(pairs: &[(&str, &str)]) -> PodAnnotations {
        let all: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        PodAnnotations::of(Some(&all))
    }

    fn networks(value: &str) -> PodAnnotations {
        annotations(&[(annotations::NETWORKS_ANNOTATION, value)])
    }

    fn nad(config: &str) -> Nad {
        Nad {
            config: Some(config.into()),
            resource_name: None,
        }
    }

    fn nowhere(name: &str) -> Result<NetworkConfig, String> {
        Err(format!("no network {name} on disk"))
    }

    fn key(ns: &str, name: &str) -> NadKey {
        (ns.into(), name.into())
    }

    #[test]
    fn selections_in_order_each_nad_read_once_default_first() {
        let cfg = config(json!({}));
        let a = annotations(&[
            (
                annotations::NETWORKS_ANNOTATION,
                "net-a,other/net-b@data0,net-a",
            ),
            (annotations::DEFAULT_NETWORK_ANNOTATION, "cluster-nad"),
        ]);
        let wanted = select("ns1", &a, &cfg).unwrap();
        assert_eq!(wanted.networks.len(), 3);
        assert_eq!(wanted.networks[1].interface.as_deref(), Some("data0"));
        assert_eq!(
            wanted.keys(),
            [
                key("kube-system", "cluster-nad"),
                key("ns1", "net-a"),
                key("other", "net-b")
            ]
        );
        assert_eq!(
            select("ns1", &annotations(&[]), &cfg).unwrap(),
            Wanted::default()
        );
    }

    #[test]
    fn node_nad_names_are_the_named_node_networks_once() {
        let cfg = config(json!({"defaultNetworks": ["x", "cluster-nad", "/etc/cni/y.conf", "x"]}));
        assert_eq!(node_nad_names(&cfg), ["cluster-nad", "x"]);
        assert!(may_be_nad("cluster-nad") && !may_be_nad("../etc") && !may_be_nad("a?b"));
    }

    #[test]
    fn namespace_isolation_covers_both_annotations() {
        let cfg = config(json!({"namespaceIsolation": true}));
        let e = select("ns1", &networks("net-a,other/net-b"), &cfg).unwrap_err();
        assert_eq!(e.reason, INVALID_NETWORK_SELECTION);
        assert!(
            e.message.contains("namespace isolation") && e.message.contains("other/net-b"),
            "names the network: {e:?}"
        );
        let default = |v: &str| annotations(&[(annotations::DEFAULT_NETWORK_ANNOTATION, v)]);
        let e = select("ns1", &default("kube-system/cluster-nad"), &cfg).unwrap_err();
        assert!(
            e.message.contains("namespace isolation"),
            "the default-network annotation obeys isolation too: {e:?}"
        );
        let cfg = config(json!({"namespaceIsolation": true, "globalNamespaces": "kube-system"}));
        let wanted = select("ns1", &default("cluster-nad"), &cfg).unwrap();
        assert_eq!(
            wanted.default_network.unwrap().qualified_name(),
            "kube-system/cluster-nad"
        );
    }

    #[test]
    fn an_invalid_annotation_is_rejected_naming_the_element() {
        let cfg = config(json!({}));
        let e = select("ns1", &networks(r#"[{"name":"net-a","mac":"zz"}]"#), &cfg).unwrap_err();
        assert_eq!(e.reason, INVALID_NETWORK_SELECTION);
        assert!(
            e.message.contains("mac") && e.message.contains("element 0"),
            "{e:?}"
        );
        assert!(
            e.message
                .starts_with("annotation k8s.v1.cni.cncf.io/networks: ")
        );
        let e = ClusterError::from(e);
        assert!(matches!(e, ClusterError::Rejected(_)), "code 7: {e:?}");
    }

    /// Issue 20: the node's networks count towards `maxAttachmentsPerPod`; the refusal names the limit and
    /// the key.
    #[test]
    fn a_pod_over_the_attachment_limit_is_refused() {
        let names = |n: usize| {
            (0..n)
                .map(|i| format!("n{i}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let cfg = config(json!({"maxAttachmentsPerPod": 4}));
        assert_eq!(
            select("ns1", &networks(&names(3)), &cfg)
                .unwrap()
                .networks
                .len(),
            3
        );
        let e = select("ns1", &networks(&names(4)), &cfg).unwrap_err();
        assert_eq!(e.reason, TOO_MANY_ATTACHMENTS);
        for part in [
            "5 network attachments",
            "at most 4 per pod",
            "maxAttachmentsPerPod",
        ] {
            assert!(e.message.contains(part), "{part}: {e:?}");
        }
        let e = select("ns1", &networks(&names(32)), &config(json!({}))).unwrap_err();
        assert!(
            e.message.contains("33 network attachments") && e.message.contains("at most 32"),
            "{e:?}"
        );
    }

    #[test]
    fn a_uid_mismatch_fails_unless_the_pod_is_static() {
        let pod = PodRef {
            namespace: "ns1".into(),
            name: "p1".into(),
            uid: Some("someone-else".into()),
            infra_container_id: None,
        };
        let e = check_uid(&pod, Some("uid-1"), &annotations(&[])).unwrap_err();
        assert!(
            matches!(&e, ClusterError::Other(m) if m.contains("expected pod UID")),
            "{e:?}"
        );
        let static_pod = annotations(&[(annotations::CONFIG_SOURCE_ANNOTATION, "file")]);
        assert!(check_uid(&pod, Some("uid-1"), &static_pod).is_ok(), "#773");
        assert!(check_uid(&pod, Some("someone-else"), &annotations(&[])).is_ok());
        assert!(check_uid(&pod, None, &annotations(&[])).is_ok());
    }

    #[test]
    fn a_missing_nad_is_no_network_found_in_go_multus_words() {
        let r = missing_nad(&key("ns1", "ghost"));
        assert_eq!(r.reason, NO_NETWORK_FOUND);
        assert_eq!(
            r.message,
            "cannot find a network-attachment-definition (ghost) in namespace (ns1)"
        );
    }

    #[test]
    fn a_request_gets_the_nad_name_the_config_version_and_the_selection() {
        let cfg = config(json!({}));
        let wanted = select("ns1", &networks(r#"[{"name":"net-a","interface":"data0","mac":"02:00:00:00:00:01","cni-args":{"k":"v"}}]"#), &cfg).unwrap();
        let mut nads = HashMap::new();
        nads.insert(
            key("ns1", "net-a"),
            Nad {
                config: Some(r#"{"plugins":[{"type":"macvlan"}]}"#.into()),
                resource_name: Some("intel.com/vf".into()),
            },
        );
        let got = pod_networks(&cfg, &wanted, &nads, &nowhere).unwrap();
        let r = &got.networks[0];
        assert_eq!(r.status_name, "ns1/net-a");
        // NPWG-11: the NAD name where the config had none; the config's version where it had none.
        assert_eq!(r.network.value["name"], "net-a");
        assert_eq!(r.network.value["cniVersion"], "1.0.0");
        assert_eq!(r.network.value["plugins"][0]["args"]["cni"]["k"], "v");
        assert_eq!(r.ifname_request.as_deref(), Some("data0"));
        assert_eq!(r.requests.mac.as_deref(), Some("02:00:00:00:00:01"));
        assert_eq!(r.resource_name.as_deref(), Some("intel.com/vf"));
        let e = network_for(&cfg, &wanted.networks[0], &nad("{not json"), &nowhere).unwrap_err();
        assert!(
            matches!(&e, ClusterError::Rejected(m) if m.starts_with("network ns1/net-a: invalid spec.config")),
            "{e:?}"
        );
    }

    /// NPWG-7/10: an empty spec names a network on disk, found by the NAD's name.
    #[test]
    fn an_empty_spec_is_looked_up_on_disk_by_the_nad_name() {
        let cfg = config(json!({}));
        let sel = node_selection(&cfg, "net-a");
        let asked = std::cell::RefCell::new(Vec::new());
        let on_disk = |name: &str| {
            asked.borrow_mut().push(name.to_string());
            NetworkConfig::from_value(
                json!({"cniVersion": "1.0.0", "name": name, "type": "ondisk"}),
            )
            .map_err(|e| e.to_string())
        };
        for config in [None, Some("  ")] {
            let empty = Nad {
                config: config.map(str::to_string),
                resource_name: None,
            };
            let r = network_for(&cfg, &sel, &empty, &on_disk).unwrap();
            assert_eq!(r.network.plugins[0].plugin_type, "ondisk");
            assert_eq!(r.status_name, "kube-system/net-a");
        }
        assert_eq!(*asked.borrow(), ["net-a", "net-a"]);
        let e = network_for(&cfg, &sel, &Nad::default(), &nowhere).unwrap_err();
        assert_eq!(
            e,
            ClusterError::Rejected("network kube-system/net-a: no network net-a on disk".into())
        );
    }
}
