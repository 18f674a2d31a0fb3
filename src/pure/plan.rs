//! The pure core of an operation: which networks attach on which interfaces, in what order, with which
//! `CNI_ARGS` and capability arguments (NPWG-26, NPWG-27, NPWG-39, NPWG-56, NPWG-66;
//! docs/multus-compat.md, "Delegate arguments" and "Interface names").

use plexus_cni::{CniArgs, validate};
use serde_json::{Map, Value};

use crate::pure::netconf::NetworkConfig;

/// What a pod asked of one attachment (the selection element's requests); replayed from the cache on DEL.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requests {
    /// `mac` (NPWG-23).
    pub mac: Option<String>,
    /// `ips` (NPWG-21).
    pub ips: Vec<String>,
    /// `infiniband-guid` (NPWG-35).
    pub infiniband_guid: Option<String>,
    /// `portMappings` (NPWG-30).
    pub port_mappings: Option<Value>,
    /// `bandwidth` (NPWG-32).
    pub bandwidth: Option<Value>,
    /// A device ID (from a resource, or the `deviceID` extension).
    pub device_id: Option<String>,
    /// `default-route` gateways (NPWG-34).
    pub gateways: Option<Vec<String>>,
    /// The attachment's CNI device-info file, set when it has a device (NPWG-70, NPWG-72).
    pub device_info_file: Option<String>,
}

/// A request of one attachment that reaches its delegate as a capability argument: the one table of
/// capability keys, used for ADD's `runtimeConfig`, and read back from the result records on DEL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// `ips` (NPWG-21).
    Ips,
    /// `mac` (NPWG-23).
    Mac,
    /// `infinibandGUID`, from the annotation's `infiniband-guid` (NPWG-35).
    InfinibandGuid,
    /// `portMappings` (NPWG-30).
    PortMappings,
    /// `bandwidth` (NPWG-32).
    Bandwidth,
    /// `deviceID` (NPWG-37).
    DeviceId,
    /// `CNIDeviceInfoFile` (NPWG-70).
    DeviceInfoFile,
}

impl Capability {
    /// Every capability, in the order its arguments are given.
    pub const ALL: [Capability; 7] = [
        Capability::Ips,
        Capability::Mac,
        Capability::InfinibandGuid,
        Capability::PortMappings,
        Capability::Bandwidth,
        Capability::DeviceId,
        Capability::DeviceInfoFile,
    ];

    /// The key a plugin declares under `capabilities` and receives under `runtimeConfig` (CONVENTIONS).
    pub const fn key(self) -> &'static str {
        match self {
            Capability::Ips => "ips",
            Capability::Mac => "mac",
            Capability::InfinibandGuid => "infinibandGUID",
            Capability::PortMappings => "portMappings",
            Capability::Bandwidth => "bandwidth",
            Capability::DeviceId => "deviceID",
            Capability::DeviceInfoFile => "CNIDeviceInfoFile",
        }
    }
}

impl Requests {
    /// The value `self` gives capability `c`, if it asks for it.
    pub fn capability(&self, c: Capability) -> Option<Value> {
        let text = |s: &Option<String>| s.as_ref().map(|s| Value::from(s.as_str()));
        match c {
            Capability::Ips => (!self.ips.is_empty()).then(|| Value::from(self.ips.clone())),
            Capability::Mac => text(&self.mac),
            Capability::InfinibandGuid => text(&self.infiniband_guid),
            Capability::PortMappings => self.port_mappings.clone(),
            Capability::Bandwidth => self.bandwidth.clone(),
            Capability::DeviceId => text(&self.device_id),
            Capability::DeviceInfoFile => text(&self.device_info_file),
        }
    }

    /// The capability each request needs, with its `runtimeConfig` key and value (CONVENTIONS).
    pub fn capability_args(&self) -> Vec<(&'static str, Value)> {
        Capability::ALL
            .into_iter()
            .filter_map(|c| Some((c.key(), self.capability(c)?)))
            .collect()
    }

    /// A secondary's requests as its capability arguments recorded them ([`Requests::capability_args`]
    /// read back); a value of the wrong type is no request. Gateways are not capabilities: `None`.
    pub fn from_capability_args(args: &Map<String, Value>) -> Requests {
        let mut r = Requests::default();
        for c in Capability::ALL {
            let Some(v) = args.get(c.key()) else { continue };
            let text = || v.as_str().map(str::to_string);
            match c {
                Capability::Ips => {
                    r.ips = v
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default()
                }
                Capability::Mac => r.mac = text(),
                Capability::InfinibandGuid => r.infiniband_guid = text(),
                Capability::PortMappings => r.port_mappings = Some(v.clone()),
                Capability::Bandwidth => r.bandwidth = Some(v.clone()),
                Capability::DeviceId => r.device_id = text(),
                Capability::DeviceInfoFile => r.device_info_file = text(),
            }
        }
        r
    }
}

/// One network to attach, before interface names are assigned.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkRequest {
    /// The delegate config.
    pub network: NetworkConfig,
    /// The name for status and messages: `<ns>/<nad>` for NADs, the CNI name for files and inline delegates.
    pub status_name: String,
    /// An explicit interface name.
    pub ifname_request: Option<String>,
    /// The pod's requests for it.
    pub requests: Requests,
    /// The NAD's `resourceName` annotation.
    pub resource_name: Option<String>,
}

impl NetworkRequest {
    /// A network from a file or an inline delegate: named by its CNI name, no requests.
    pub fn plain(network: NetworkConfig) -> NetworkRequest {
        NetworkRequest {
            status_name: network.name.clone(),
            network,
            ifname_request: None,
            requests: Requests::default(),
            resource_name: None,
        }
    }
}

/// A planned attachment: a network on an interface.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    /// The delegate config (its bytes are what runs and what is cached).
    pub network: NetworkConfig,
    /// `CNI_IFNAME` for every operation on it (NPWG-39).
    pub ifname: String,
    /// The cluster network: its result is returned, it gets the runtime's `runtimeConfig`.
    pub master: bool,
    /// Name for status and messages.
    pub status_name: String,
    /// The explicit interface name asked for, if any.
    pub ifname_request: Option<String>,
    /// The pod's requests.
    pub requests: Requests,
    /// The NAD's `resourceName`.
    pub resource_name: Option<String>,
    /// The auxiliary chain (`auxiliaryCNIChainName`): last, never in network-status, not CHECKed
    /// (docs/multus-compat.md, "Auxiliary chain").
    pub auxiliary: bool,
    /// Selected by the pod's networks annotation (not a node network, not the auxiliary chain): only these
    /// are hot-plugged (docs/daemon.md, "Hot-plug").
    pub pod_network: bool,
    /// Attached to a running sandbox by the daemon's hot-plug, not by the runtime's ADD: without a result
    /// record it is an interrupted hot-plug, which the next reconcile undoes.
    pub hotplugged: bool,
}

/// A plan that cannot be carried out (CNI code 7).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// No networks at all.
    #[error("no networks to attach")]
    Empty,
    /// An explicit interface name is not a valid Linux name (NPWG-25).
    #[error("network {network:?}: {reason}")]
    InvalidInterface {
        /// The network.
        network: String,
        /// Why.
        reason: String,
    },
    /// Two attachments want the same interface (NPWG-26).
    #[error("network {network:?}: interface {ifname:?} is already used by network {earlier:?}")]
    DuplicateInterface {
        /// The later network.
        network: String,
        /// The name.
        ifname: String,
        /// The earlier network.
        earlier: String,
    },
    /// A request for a capability no plugin of the network declares (NPWG-22/24/31/33/35).
    #[error(
        "network {network:?}: {request} was requested but no plugin of the network declares the {capability:?} capability"
    )]
    MissingCapability {
        /// The network.
        network: String,
        /// The selection key.
        request: &'static str,
        /// The capability.
        capability: &'static str,
    },
}

/// Assign interface names (docs/multus-compat.md, "Interface names"): an explicit request wins,
/// even for the cluster network; the cluster network (index 0) otherwise gets `master_ifname`;
/// every other network gets `net<index>`. Explicit names do not renumber the others. A name used
/// twice fails the later attachment (NPWG-26).
pub fn plan(
    master_ifname: &str,
    networks: Vec<NetworkRequest>,
) -> Result<Vec<Attachment>, PlanError> {
    if networks.is_empty() {
        return Err(PlanError::Empty);
    }
    let mut out: Vec<Attachment> = Vec::with_capacity(networks.len());
    for (idx, n) in networks.into_iter().enumerate() {
        if let Some(req) = &n.ifname_request {
            validate::interface_name(req).map_err(|e| PlanError::InvalidInterface {
                network: n.status_name.clone(),
                reason: e.to_string(),
            })?;
        }
        let ifname = match (&n.ifname_request, idx) {
            (Some(req), _) => req.clone(),
            (None, 0) => master_ifname.to_string(),
            (None, i) => format!("net{i}"),
        };
        if let Some(earlier) = out.iter().find(|a| a.ifname == ifname) {
            return Err(PlanError::DuplicateInterface {
                network: n.status_name,
                ifname,
                earlier: earlier.status_name.clone(),
            });
        }
        out.push(Attachment {
            network: n.network,
            ifname,
            master: idx == 0,
            status_name: n.status_name,
            ifname_request: n.ifname_request,
            requests: n.requests,
            resource_name: n.resource_name,
            auxiliary: false,
            pod_network: false,
            hotplugged: false,
        });
    }
    Ok(out)
}

const SELECTION_KEYS: [(&str, &str); 6] = [
    ("ips", "ips"),
    ("mac", "mac"),
    ("infinibandGUID", "infiniband-guid"),
    ("portMappings", "portMappings"),
    ("bandwidth", "bandwidth"),
    ("deviceID", "deviceID"),
];

fn selection_key(capability: &str) -> &'static str {
    SELECTION_KEYS
        .iter()
        .find(|(c, _)| *c == capability)
        .map(|(_, k)| *k)
        .unwrap_or("a capability")
}

/// What [`capability_args`] does with a request whose capability no plugin of the network declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undeclared {
    /// A new attachment (ADD) with `strictCapabilities: true`: the request fails the attachment.
    Refuse,
    /// A new attachment (ADD) with `strictCapabilities: false`: the request is dropped with a warning.
    Drop,
    /// An existing attachment (DEL, CHECK) replaying its cached requests: the request is dropped with a
    /// warning whatever `strictCapabilities` is (`strict` is its value), since refusing it would leave the
    /// attachment impossible to tear down.
    Replay {
        /// The configured `strictCapabilities`, named in the warning.
        strict: bool,
    },
}

impl Undeclared {
    /// The mode for an attachment being added (`new`) or replayed, under `strictCapabilities: strict`.
    pub fn for_attachment(new: bool, strict: bool) -> Self {
        match (new, strict) {
            (true, true) => Undeclared::Refuse,
            (true, false) => Undeclared::Drop,
            (false, strict) => Undeclared::Replay { strict },
        }
    }

    /// What the warning for a dropped request says happened, and why.
    fn dropped(self) -> String {
        match self {
            Undeclared::Refuse => "the attachment is refused (strictCapabilities is true)".into(),
            Undeclared::Drop => "the request is dropped (strictCapabilities is false)".into(),
            Undeclared::Replay { strict } => format!(
                "the cached request is dropped: DEL and CHECK replay an existing attachment's requests and \
                 never refuse one (strictCapabilities is {strict}; it refuses only a new attachment)"
            ),
        }
    }
}

/// The capability arguments of an attachment. The cluster network starts from the runtime's
/// `runtimeConfig` (every key; docs/multus-compat.md, "Delegate arguments"); other networks get
/// only their own requests (NPWG-66). Requests win over runtime values.
///
/// A request whose capability no plugin declares fails with [`Undeclared::Refuse`]
/// (docs/multus-compat.md, "Capability checks");
/// otherwise it is dropped and named in the returned warnings, as Go Multus does silently.
pub fn capability_args(
    a: &Attachment,
    runtime_config: &Map<String, Value>,
    undeclared: Undeclared,
) -> Result<(Map<String, Value>, Vec<String>), PlanError> {
    let mut args = if a.master {
        runtime_config.clone()
    } else {
        Map::new()
    };
    let mut warnings = Vec::new();
    for (capability, value) in a.requests.capability_args() {
        // deviceID and the device-info file come from the node's devices, not the pod author; libcni's
        // filter decides who sees them (NPWG-72: only plugins declaring CNIDeviceInfoFile).
        let from_node = matches!(capability, "deviceID" | "CNIDeviceInfoFile");
        if !from_node && !a.network.any_capability(capability) {
            let err = PlanError::MissingCapability {
                network: a.status_name.clone(),
                request: selection_key(capability),
                capability,
            };
            if undeclared == Undeclared::Refuse {
                return Err(err);
            }
            warnings.push(format!("{err}; {}", undeclared.dropped()));
            continue;
        }
        args.insert(capability.to_string(), value);
    }
    Ok((args, warnings))
}

/// The keys Kubernetes runtimes put in `CNI_ARGS`, in the order Multus sends them (CNI-51).
pub const K8S_ARGS: [&str; 4] = [
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];

/// `CNI_ARGS` for a delegate: `IgnoreUnknown=true`, the pod keys in Multus's order, then the runtime's other
/// pairs, each key once with the runtime's value winning (docs/multus-compat.md,
/// "Delegate arguments"), then the legacy
/// `MAC=`/`IP=` requests (EXT-7).
pub fn delegate_args(runtime: &CniArgs, requests: &Requests) -> CniArgs {
    let mut a = CniArgs::new();
    a.set("IgnoreUnknown", "true");
    for k in K8S_ARGS {
        if let Some(v) = runtime.get(k) {
            a.set(k, v);
        }
    }
    for (k, v) in runtime.iter() {
        a.set(k, v);
    }
    if let Some(mac) = &requests.mac {
        a.set("MAC", mac.as_str());
    }
    if !requests.ips.is_empty() {
        a.set("IP", requests.ips.join(","));
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn every_request() -> Requests {
        Requests {
            mac: Some("02:00:00:00:00:01".into()),
            ips: vec!["192.0.2.10/24".into(), "2001:db8::10/64".into()],
            infiniband_guid: Some("00:11:22:33:44:55:66:77".into()),
            port_mappings: Some(json!([{"hostPort": 8080, "containerPort": 80}])),
            bandwidth: Some(json!({"egressRate": 5})),
            device_id: Some("0000:03:00.1".into()),
            gateways: None,
            device_info_file: Some("/var/run/k8s.cni.cncf.io/devinfo/x.json".into()),
        }
    }

    #[test]
    fn every_request_but_gateways_is_a_capability_and_reads_back_from_its_arguments() {
        let r = every_request();
        let args = r.capability_args();
        assert_eq!(
            args.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            Capability::ALL.map(Capability::key),
            "one argument per capability, in the table's order"
        );
        let recorded: Map<String, Value> = args.into_iter().map(|(k, v)| (k.into(), v)).collect();
        assert_eq!(Requests::from_capability_args(&recorded), r);
        // Gateways are plexus's own (routes), never a delegate's capability.
        let with_gw = Requests {
            gateways: Some(vec!["192.0.2.1".into()]),
            ..Requests::default()
        };
        assert!(with_gw.capability_args().is_empty());
        assert_eq!(Requests::default().capability_args(), vec![]);
    }

    #[test]
    fn capability_keys_are_the_conventions_keys_and_distinct() {
        let keys = Capability::ALL.map(Capability::key);
        assert_eq!(
            keys,
            [
                "ips",
                "mac",
                "infinibandGUID",
                "portMappings",
                "bandwidth",
                "deviceID",
                "CNIDeviceInfoFile"
            ]
        );
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
    }

    #[test]
    fn recorded_arguments_of_the_wrong_type_are_no_request() {
        let recorded = json!({"mac": 7, "ips": "192.0.2.1", "deviceID": null, "other": "x"});
        let Value::Object(recorded) = recorded else {
            unreachable!()
        };
        assert_eq!(
            Requests::from_capability_args(&recorded),
            Requests::default()
        );
    }

    fn req(name: &str, ifname: Option<&str>) -> NetworkRequest {
        let n = NetworkConfig::from_value(
            json!({"cniVersion": "1.0.0", "name": name, "type": "bridge",
            "capabilities": {"ips": true}}),
        )
        .unwrap();
        let mut r = NetworkRequest::plain(n);
        r.ifname_request = ifname.map(str::to_string);
        r
    }

    fn names(a: &[Attachment]) -> Vec<&str> {
        a.iter().map(|a| a.ifname.as_str()).collect()
    }

    #[test]
    fn cluster_network_gets_cni_ifname_others_net_index() {
        let a = plan("eth0", vec![req("c", None), req("a", None), req("b", None)]).unwrap();
        assert_eq!(names(&a), ["eth0", "net1", "net2"]);
        assert!(a[0].master && !a[1].master);
    }

    #[test]
    fn explicit_names_win_and_do_not_renumber() {
        let a = plan(
            "eth0",
            vec![req("c", None), req("a", Some("foo")), req("b", None)],
        )
        .unwrap();
        assert_eq!(names(&a), ["eth0", "foo", "net2"]);
        let a = plan("eth0", vec![req("c", Some("pod0")), req("a", None)]).unwrap();
        assert_eq!(
            names(&a),
            ["pod0", "net1"],
            "an explicit name wins even for the cluster network"
        );
    }

    #[test]
    fn duplicate_interface_fails_the_later_attachment_npwg_26() {
        let e = plan(
            "eth0",
            vec![req("c", None), req("a", None), req("b", Some("net1"))],
        )
        .unwrap_err();
        assert_eq!(
            e,
            PlanError::DuplicateInterface {
                network: "b".into(),
                ifname: "net1".into(),
                earlier: "a".into()
            }
        );
    }

    #[test]
    fn invalid_interface_requests_are_refused_npwg_25() {
        for bad in ["", "a/b", "waytoolongname123", "..", "with space"] {
            let e = plan("eth0", vec![req("c", None), req("a", Some(bad))]).unwrap_err();
            assert!(matches!(e, PlanError::InvalidInterface { .. }), "{bad:?}");
        }
        assert_eq!(plan("eth0", vec![]).unwrap_err(), PlanError::Empty);
    }

    #[test]
    fn runtime_config_goes_to_the_cluster_network_only_npwg_66() {
        let mut a = plan("eth0", vec![req("c", None), req("a", None)]).unwrap();
        let rc: Map<String, Value> = serde_json::from_value(
            json!({"portMappings": [{"hostPort": 80}], "io.kubernetes.cri.pod-annotations": {}}),
        )
        .unwrap();
        let (m, _) = capability_args(&a[0], &rc, Undeclared::Refuse).unwrap();
        assert_eq!(m.len(), 2, "unknown runtime keys reach the cluster network");
        let (s, _) = capability_args(&a[1], &rc, Undeclared::Refuse).unwrap();
        assert!(s.is_empty());
        a[1].requests.ips = vec!["10.1.1.5/24".into()];
        let (s, _) = capability_args(&a[1], &rc, Undeclared::Refuse).unwrap();
        assert_eq!(Value::Object(s), json!({"ips": ["10.1.1.5/24"]}));
    }

    #[test]
    fn capability_checks_strict_and_lenient() {
        let mut a = plan("eth0", vec![req("c", None), req("a", None)]).unwrap();
        a[1].requests.mac = Some("02:00:00:00:00:01".into());
        let e = capability_args(&a[1], &Map::new(), Undeclared::Refuse).unwrap_err();
        assert!(e.to_string().contains("\"mac\" capability"), "{e}");
        let (m, w) = capability_args(&a[1], &Map::new(), Undeclared::Drop).unwrap();
        assert!(m.is_empty());
        assert_eq!(w.len(), 1);
    }

    /// The warning says what happened: on DEL and CHECK the request is dropped even with
    /// `strictCapabilities: true`, which the warning must not deny.
    #[test]
    fn a_dropped_request_is_explained_for_each_mode() {
        let mut a = plan("eth0", vec![req("c", None), req("a", None)]).unwrap();
        a[1].requests.mac = Some("02:00:00:00:00:01".into());
        let warn = |new, strict| {
            let (m, w) =
                capability_args(&a[1], &Map::new(), Undeclared::for_attachment(new, strict))
                    .unwrap();
            assert!(m.is_empty());
            assert_eq!(w.len(), 1);
            w[0].clone()
        };
        assert!(
            capability_args(&a[1], &Map::new(), Undeclared::for_attachment(true, true)).is_err(),
            "a new attachment with strictCapabilities is refused"
        );
        let add = warn(true, false);
        assert!(
            add.ends_with("; the request is dropped (strictCapabilities is false)"),
            "{add}"
        );
        for strict in [true, false] {
            let replay = warn(false, strict);
            assert!(
                replay.contains("\"mac\" capability")
                    && replay.contains("the cached request is dropped: DEL and CHECK replay")
                    && replay.ends_with(&format!(
                        "(strictCapabilities is {strict}; it refuses only a new attachment)"
                    )),
                "{replay}"
            );
        }
    }

    #[test]
    fn delegate_args_order_dedup_and_legacy_keys() {
        let runtime = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_UID=u;K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns;K8S_POD_INFRA_CONTAINER_ID=i;CUSTOM=a=b",
        )
        .unwrap();
        let r = Requests {
            mac: Some("02:00:00:00:00:09".into()),
            ips: vec!["10.0.0.1".into(), "fd00::1".into()],
            ..Default::default()
        };
        assert_eq!(
            delegate_args(&runtime, &r).to_env_string(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=i;K8S_POD_UID=u;CUSTOM=a=b;MAC=02:00:00:00:00:09;IP=10.0.0.1,fd00::1"
        );
        assert_eq!(
            delegate_args(&CniArgs::new(), &Requests::default()).to_env_string(),
            "IgnoreUnknown=true"
        );
    }
}
