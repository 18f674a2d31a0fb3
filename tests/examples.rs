//! The examples under `examples/` can do what they say.
//!
//! Without root: every example pod's `k8s.v1.cni.cncf.io/networks` and `v1.multus-cni.io/default-network`
//! annotations resolve (with plexus's own parser) to NetworkAttachmentDefinitions of `examples/`, and every
//! request they make (`ips`, `mac`, `portMappings`, `bandwidth`, `deviceID`) is a capability one of the
//! selected network's plugins declares; plexus's planner and its strict capability check accept each pod.
//! The examples cover every reference delegate, both annotation forms, the default-network override and a
//! chained conflist; each file is in the walkthrough (`examples/README.md`); addresses are documentation
//! ranges; only a replacement cluster network has a default route.
//!
//! As root (`--include-ignored`, as `scripts/test.sh` runs it): every example pod (but the one naming a PCI
//! device) is set up by plexus's ADD, in process, with the pod's networks resolved as above, and torn down
//! by its DEL. The delegates are Debian's real plugins, run through wrapper scripts inside a "host" network
//! namespace this test creates (with veth pairs as the node's `eth1` and `eth2`), on a "pod" namespace; the
//! NAD configs are the example files' own, with only the state directories (host-local's and tuning's)
//! moved to a temporary directory. The machine's own network namespace is never changed.

mod netns_support;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Pod;
use netns_support::{CNI_PATH, Netns, TIMEOUT};
use plexus::{
    ops::{self, Seams},
    pure::{
        annotations::{
            DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION, Selection, parse_default_network,
            parse_networks,
        },
        config::Config,
        netconf::NetworkConfig,
        plan::{self, Attachment, NetworkRequest},
        request::CniEnv,
        status::NetworkStatus,
    },
    seams::{
        exec::ProcessExec,
        k8s::{memory::MemoryApi, nad::NetworkAttachmentDefinition},
        netns::KernelNetns,
    },
};
use plexus_testsupport::{leaks::files_under, proc::wait_for};
use serde_json::{Map, Value, json};

/// The UID of every example pod (the runtime names it, and plexus checks the pod read has it).
const POD_UID: &str = "00000000-0000-0000-0000-000000000001";
/// plexus's default `multusNamespace`: the default namespace of the default-network annotation.
const MULTUS_NAMESPACE: &str = "kube-system";
/// The cluster network the examples run with (the demo's, a bridge conflist).
const CLUSTER_CONFLIST: &str = "examples/file-based/10-cluster.conflist";
/// The capability keys a pod's selection can request (`Requests::capability_args`), and the selection key
/// of each.
const REQUESTABLE: [(&str, &str); 5] = [
    ("ips", "ips"),
    ("mac", "mac"),
    ("portMappings", "portMappings"),
    ("bandwidth", "bandwidth"),
    ("deviceID", "deviceID"),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rel(p: &Path) -> String {
    p.strip_prefix(repo()).unwrap().display().to_string()
}

/// YAML files under `dir`, recursively, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(yaml_files(&p));
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The non-empty YAML documents of a file, as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// An example NetworkAttachmentDefinition with its parsed `spec.config`.
#[derive(Debug, Clone)]
struct ExampleNad {
    file: String,
    namespace: String,
    name: String,
    /// `spec.config` as written.
    text: String,
    config: NetworkConfig,
}

impl ExampleNad {
    fn qualified(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The plugin objects: the conf itself, or a conflist's `plugins`.
    fn plugins(&self) -> Vec<&Map<String, Value>> {
        self.config.plugins.iter().map(|p| &p.raw).collect()
    }
}

/// An example pod with its parsed selections.
#[derive(Debug, Clone)]
struct ExamplePod {
    file: String,
    namespace: String,
    name: String,
    /// The networks annotation as written (`None` without one).
    networks_value: Option<String>,
    /// The default-network annotation as written (`None` without one).
    default_network_value: Option<String>,
    networks: Vec<Selection>,
    default_network: Option<Selection>,
}

impl ExamplePod {
    /// Every selection: the default-network one first.
    fn selections(&self) -> impl Iterator<Item = &Selection> {
        self.default_network.iter().chain(&self.networks)
    }
}

/// Every manifest document under `examples/` with its file, as (file, document).
fn example_documents() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for path in yaml_files(&repo().join("examples")) {
        for doc in documents(&path) {
            out.push((rel(&path), doc));
        }
    }
    out
}

fn example_nads() -> Vec<ExampleNad> {
    let mut out = Vec::new();
    for (file, doc) in example_documents() {
        if doc["kind"] != "NetworkAttachmentDefinition" {
            continue;
        }
        let nad: NetworkAttachmentDefinition = serde_json::from_value(doc)
            .unwrap_or_else(|e| panic!("{file}: not a NetworkAttachmentDefinition: {e}"));
        let name = nad.metadata.name.clone().expect("a NAD has a name");
        let namespace = nad
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| panic!("{file}: example NADs name their namespace"));
        let text =
            nad.spec.config.clone().unwrap_or_else(|| {
                panic!("{file}: example NADs carry their config in spec.config")
            });
        let config = NetworkConfig::from_bytes(text.as_bytes())
            .unwrap_or_else(|e| panic!("{file}: spec.config: {e}"));
        out.push(ExampleNad {
            file,
            namespace,
            name,
            text,
            config,
        });
    }
    assert!(
        !out.is_empty(),
        "examples/ holds NetworkAttachmentDefinitions"
    );
    out
}

fn example_pods() -> Vec<ExamplePod> {
    let mut out = Vec::new();
    for (file, doc) in example_documents() {
        if doc["kind"] != "Pod" {
            continue;
        }
        let pod: Pod =
            serde_json::from_value(doc).unwrap_or_else(|e| panic!("{file}: not a Pod: {e}"));
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| panic!("{file}: example pods name their namespace"));
        let ann = pod.metadata.annotations.clone().unwrap_or_default();
        let networks_value = ann.get(NETWORKS_ANNOTATION).cloned();
        let networks = networks_value
            .as_deref()
            .map(|v| {
                parse_networks(v, &namespace)
                    .unwrap_or_else(|e| panic!("{file}: {NETWORKS_ANNOTATION}: {e}"))
            })
            .unwrap_or_default();
        let default_network = ann.get(DEFAULT_NETWORK_ANNOTATION).map(|v| {
            parse_default_network(v, MULTUS_NAMESPACE)
                .unwrap_or_else(|e| panic!("{file}: {DEFAULT_NETWORK_ANNOTATION}: {e}"))
        });
        out.push(ExamplePod {
            file,
            name: pod.metadata.name.clone().expect("a pod has a name"),
            namespace,
            default_network_value: ann.get(DEFAULT_NETWORK_ANNOTATION).cloned(),
            networks_value,
            networks,
            default_network,
        });
    }
    assert!(!out.is_empty(), "examples/ holds pods");
    out
}

/// The NAD a selection names, as plexus would look it up: by namespace and name.
fn resolve<'a>(sel: &Selection, nads: &'a [ExampleNad]) -> Result<&'a ExampleNad, String> {
    let found: Vec<&ExampleNad> = nads
        .iter()
        .filter(|n| n.namespace == sel.namespace && n.name == sel.name)
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "selects {}, which no NetworkAttachmentDefinition of examples/ defines",
            sel.qualified_name()
        )),
        many => Err(format!(
            "selects {}, which {} files define",
            sel.qualified_name(),
            many.len()
        )),
    }
}

/// The capabilities a selection requests (the `runtimeConfig` keys it makes).
fn requested_capabilities(sel: &Selection) -> Vec<&'static str> {
    sel.requests
        .clone()
        .capability_args()
        .into_iter()
        .map(|(c, _)| c)
        .collect()
}

/// Every capability `sel` requests is declared by a plugin of `nad`. Stricter than plexus for `deviceID`
/// (which plexus passes without checking): an undeclared one is dropped by the runtimeConfig filter, so
/// the request would do nothing.
fn check_capabilities(sel: &Selection, nad: &ExampleNad) -> Result<(), String> {
    for cap in requested_capabilities(sel) {
        if !nad.config.any_capability(cap) {
            return Err(format!(
                "requests {cap:?} of {}, but no plugin of {} declares the {cap:?} capability",
                sel.qualified_name(),
                nad.file
            ));
        }
    }
    Ok(())
}

/// The request plexus builds for a selected NAD (as the Kubernetes client does).
fn network_request(sel: &Selection, config: NetworkConfig) -> NetworkRequest {
    NetworkRequest {
        network: config.with_name_if_missing(&sel.name).unwrap(),
        status_name: sel.qualified_name(),
        ifname_request: sel.interface.clone(),
        requests: sel.requests.clone(),
        resource_name: None,
    }
}

fn cluster_network() -> NetworkConfig {
    NetworkConfig::from_bytes(&fs::read(repo().join(CLUSTER_CONFLIST)).unwrap()).unwrap()
}

/// Plan a pod as plexus's ADD does (`eth0` for the cluster network or its replacement, then the
/// selections) and apply the strict capability check to each attachment.
fn plan_pod(
    pod: &ExamplePod,
    nads: &[ExampleNad],
    cluster: &NetworkConfig,
) -> Result<Vec<Attachment>, String> {
    let mut requests = Vec::new();
    match &pod.default_network {
        Some(sel) => requests.push(network_request(sel, resolve(sel, nads)?.config.clone())),
        None => requests.push(NetworkRequest::plain(cluster.clone())),
    }
    for sel in &pod.networks {
        requests.push(network_request(sel, resolve(sel, nads)?.config.clone()));
    }
    let attachments = plan::plan("eth0", requests).map_err(|e| e.to_string())?;
    for a in &attachments {
        plan::capability_args(a, &Map::new(), plan::Undeclared::Refuse)
            .map_err(|e| e.to_string())?;
    }
    Ok(attachments)
}

/// Everything the static checks require of one pod.
fn check_pod(pod: &ExamplePod, nads: &[ExampleNad]) -> Result<Vec<Attachment>, String> {
    for sel in pod.selections() {
        check_capabilities(sel, resolve(sel, nads)?)?;
    }
    plan_pod(pod, nads, &cluster_network())
}

#[test]
fn every_example_pod_selects_example_nads_that_declare_what_it_requests() {
    let nads = example_nads();
    let pods = example_pods();
    let mut requests = 0;
    for pod in &pods {
        assert!(
            pod.selections().next().is_some(),
            "{}: selects no network",
            pod.file
        );
        let attachments = check_pod(pod, &nads).unwrap_or_else(|e| panic!("{}: {e}", pod.file));
        assert_eq!(attachments.len(), pod.networks.len() + 1, "{}", pod.file);
        requests += pod
            .selections()
            .map(|s| requested_capabilities(s).len())
            .sum::<usize>();
    }
    assert!(requests > 0, "some example pod requests a capability");
}

/// `sel` with only its request for `cap`.
fn only(sel: &Selection, cap: &str) -> Selection {
    let mut s = sel.clone();
    if cap != "ips" {
        s.requests.ips.clear();
    }
    if cap != "mac" {
        s.requests.mac = None;
    }
    if cap != "portMappings" {
        s.requests.port_mappings = None;
    }
    if cap != "bandwidth" {
        s.requests.bandwidth = None;
    }
    if cap != "deviceID" {
        s.requests.device_id = None;
    }
    s.requests.infiniband_guid = None;
    assert_eq!(requested_capabilities(&s), [cap], "{sel:?}");
    s
}

#[test]
fn the_check_refuses_a_request_sent_to_a_network_that_cannot_serve_it() {
    // Every example selection that requests something, pointed at each example NAD lacking one of the
    // requested capabilities, is refused: by this test's check always, and by plexus's own strict check
    // for everything but deviceID (which plexus passes on unchecked).
    let nads = example_nads();
    let cluster = cluster_network();
    let mut refused = 0;
    for pod in example_pods() {
        for (i, sel) in pod.networks.iter().enumerate() {
            for cap in requested_capabilities(sel) {
                let sel = only(sel, cap);
                for other in nads.iter().filter(|n| !n.config.any_capability(cap)) {
                    let err = check_capabilities(&sel, other).expect_err(&format!(
                        "{}: {cap} sent to {} passed the check",
                        pod.file, other.file
                    ));
                    assert!(err.contains(&format!("{cap:?}")), "{err}");
                    let mut moved = pod.clone();
                    moved.networks[i] = Selection {
                        namespace: other.namespace.clone(),
                        name: other.name.clone(),
                        ..sel.clone()
                    };
                    let planned = plan_pod(&moved, &nads, &cluster);
                    if cap == "deviceID" {
                        continue;
                    }
                    let err = planned.expect_err(&format!(
                        "{}: plexus accepted {cap} for {}",
                        pod.file, other.file
                    ));
                    assert!(
                        err.contains(&format!("declares the {cap:?} capability")),
                        "{err}"
                    );
                    refused += 1;
                }
            }
        }
    }
    assert!(refused > 0, "the examples make requests some NADs refuse");
}

#[test]
fn the_examples_cover_every_reference_delegate_both_forms_the_override_and_a_chain() {
    let nads = example_nads();
    let pods = example_pods();
    let types: BTreeSet<String> = nads
        .iter()
        .flat_map(|n| n.config.plugins.iter().map(|p| p.plugin_type.clone()))
        .collect();
    for t in [
        "bridge",
        "macvlan",
        "ptp",
        "host-device",
        "tuning",
        "portmap",
        "bandwidth",
    ] {
        assert!(types.contains(t), "no example NAD uses {t}: {types:?}");
    }
    let ipam: BTreeSet<&str> = nads
        .iter()
        .flat_map(|n| n.plugins())
        .filter_map(|p| p.get("ipam")?.get("type")?.as_str())
        .collect();
    assert!(
        ipam.contains("static") && ipam.contains("host-local"),
        "{ipam:?}"
    );

    // Every capability a pod can request is requested by some pod, of a NAD that declares it (checked above).
    for (cap, key) in REQUESTABLE {
        assert!(
            pods.iter()
                .flat_map(ExamplePod::selections)
                .any(|s| requested_capabilities(s).contains(&cap)),
            "no example pod requests {key:?}"
        );
    }
    let is_json = |v: &str| v.contains(['[', '{', '"']);
    let text: Vec<&ExamplePod> = pods
        .iter()
        .filter(|p| p.networks_value.as_deref().is_some_and(|v| !is_json(v)))
        .collect();
    let json_form: Vec<&ExamplePod> = pods
        .iter()
        .filter(|p| p.networks_value.as_deref().is_some_and(is_json))
        .collect();
    assert!(
        text.iter()
            .any(|p| p.networks.len() > 1 && p.networks.iter().any(|s| s.interface.is_some())),
        "a text-form pod selects several networks, one with @interface"
    );
    assert!(
        json_form
            .iter()
            .any(|p| p.networks.len() > 1 && p.networks.iter().any(|s| s.interface.is_some())),
        "a JSON-form pod selects several networks, one with an interface"
    );
    // The text and JSON walkthrough pods select the same networks on the same interfaces.
    let by_name = |name: &str| {
        pods.iter()
            .find(|p| p.file == format!("examples/pods/{name}.yaml"))
            .unwrap_or_else(|| panic!("examples/pods/{name}.yaml"))
    };
    let (t, j) = (by_name("text-form"), by_name("json-form"));
    assert!(!is_json(t.networks_value.as_deref().unwrap()));
    assert!(is_json(j.networks_value.as_deref().unwrap()));
    assert_eq!(t.networks, j.networks, "text-form and json-form differ");

    assert!(
        pods.iter().any(|p| p.default_network.is_some()),
        "a pod overrides the cluster network"
    );
    let chained: Vec<&ExampleNad> = nads
        .iter()
        .filter(|n| n.config.plugins.len() >= 3)
        .collect();
    assert!(
        !chained.is_empty(),
        "a conflist chains three plugins or more"
    );
    for n in chained {
        assert!(
            pods.iter()
                .flat_map(ExamplePod::selections)
                .any(|s| resolve(s, &nads).is_ok_and(|m| m.file == n.file)),
            "no pod selects the chained {}",
            n.file
        );
    }
}

#[test]
fn every_example_is_used_listed_and_in_the_walkthrough() {
    let nads = example_nads();
    let pods = example_pods();
    // Every NAD is selected by some pod, so the checks above cover it.
    for n in &nads {
        assert!(
            pods.iter()
                .flat_map(ExamplePod::selections)
                .any(|s| resolve(s, &nads).is_ok_and(|m| m.file == n.file)),
            "{}: no example pod selects {}",
            n.file,
            n.qualified()
        );
    }
    // NAD and config names agree, and NAD names are unique per namespace.
    let mut seen = BTreeSet::new();
    for n in &nads {
        assert_eq!(n.config.name, n.name, "{}: config name vs NAD name", n.file);
        assert!(
            seen.insert(n.qualified()),
            "{} defined twice",
            n.qualified()
        );
    }
    // The namespace of every NAD and pod is created by a Namespace of examples/.
    let namespaces: BTreeSet<String> = example_documents()
        .into_iter()
        .filter(|(_, d)| d["kind"] == "Namespace")
        .map(|(_, d)| d["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    for ns in nads
        .iter()
        .map(|n| &n.namespace)
        .chain(pods.iter().map(|p| &p.namespace))
    {
        assert!(namespaces.contains(ns), "no example Namespace {ns}");
    }
    // Pod files are named after their pods, NAD files under networks/ after their NADs.
    for p in &pods {
        if p.file.starts_with("examples/pods/") {
            assert_eq!(p.file, format!("examples/pods/{}.yaml", p.name));
        }
    }
    for n in &nads {
        if n.file.starts_with("examples/networks/") {
            assert_eq!(n.file, format!("examples/networks/{}.yaml", n.name));
        }
    }

    // examples/kustomization.yaml lists the namespace and exactly the files of networks/.
    let k = &documents(&repo().join("examples/kustomization.yaml"))[0];
    let listed: BTreeSet<String> = k["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut expected: BTreeSet<String> = yaml_files(&repo().join("examples/networks"))
        .iter()
        .map(|p| rel(p).strip_prefix("examples/").unwrap().to_string())
        .collect();
    expected.insert("namespace.yaml".into());
    assert_eq!(listed, expected, "examples/kustomization.yaml resources");

    // The walkthrough names every example file.
    let readme = fs::read_to_string(repo().join("examples/README.md")).unwrap();
    let mut files: Vec<PathBuf> = yaml_files(&repo().join("examples"));
    for d in ["examples/kubernetes", "examples/file-based"] {
        for e in fs::read_dir(repo().join(d)).unwrap() {
            files.push(e.unwrap().path());
        }
    }
    files.sort();
    files.dedup();
    for f in files {
        let path = rel(&f);
        let local = path.strip_prefix("examples/").unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        // The demo's tables (kubernetes/, file-based/) name files within their section; the rest by path.
        let demo = local.starts_with("kubernetes/") || local.starts_with("file-based/");
        assert!(
            readme.contains(&format!("`{local}`"))
                || (demo && readme.contains(&format!("`{name}`"))),
            "examples/README.md does not mention `{local}`"
        );
    }
}

#[test]
fn host_device_networks_say_which_device() {
    let nads = example_nads();
    let pods = example_pods();
    let mut seen = 0;
    for n in &nads {
        for p in n
            .config
            .plugins
            .iter()
            .filter(|p| p.plugin_type == "host-device")
        {
            seen += 1;
            let named = ["device", "hwaddr", "kernelpath", "pciBusID"]
                .iter()
                .any(|k| {
                    p.raw
                        .get(*k)
                        .and_then(Value::as_str)
                        .is_some_and(|v| !v.is_empty())
                });
            if named {
                continue;
            }
            assert!(
                p.has_capability("deviceID"),
                "{}: host-device names no device and does not take deviceID",
                n.file
            );
            // Then every pod that selects it must give one.
            for pod in &pods {
                for s in pod.selections() {
                    if resolve(s, &nads).is_ok_and(|m| m.file == n.file) {
                        assert!(
                            s.requests.device_id.is_some(),
                            "{}: selects {} without a deviceID",
                            pod.file,
                            n.qualified()
                        );
                    }
                }
            }
        }
    }
    assert!(seen > 0, "an example uses host-device");
}

/// Subnets an IPAM section hands out: host-local `ranges`/`subnet`, static `addresses`.
fn ipam_subnets(plugin: &Map<String, Value>) -> Vec<IpNet> {
    let Some(ipam) = plugin.get("ipam") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let parse = |s: &str| -> IpNet { s.parse().unwrap_or_else(|e| panic!("{s}: {e}")) };
    for set in ipam["ranges"].as_array().into_iter().flatten() {
        for r in set.as_array().into_iter().flatten() {
            out.push(parse(r["subnet"].as_str().unwrap()).trunc());
        }
    }
    if let Some(s) = ipam["subnet"].as_str() {
        out.push(parse(s).trunc());
    }
    for a in ipam["addresses"].as_array().into_iter().flatten() {
        out.push(parse(a["address"].as_str().unwrap()).trunc());
    }
    out
}

fn documentation_range(net: &IpNet) -> bool {
    [
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "2001:db8::/32",
    ]
    .iter()
    .any(|d| d.parse::<IpNet>().unwrap().contains(net))
}

fn routes_default(plugin: &Map<String, Value>) -> bool {
    let via_ipam = plugin
        .get("ipam")
        .and_then(|i| i.get("routes"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|r| matches!(r["dst"].as_str(), Some("0.0.0.0/0" | "::/0")));
    via_ipam || plugin.get("isDefaultGateway") == Some(&Value::Bool(true))
}

#[test]
fn addresses_are_documentation_ranges_and_only_a_replacement_cluster_network_routes_default() {
    let nads = example_nads();
    let pods = example_pods();
    let mut networks_dir: Vec<(String, IpNet)> = Vec::new();
    for n in &nads {
        for p in n.plugins() {
            for s in ipam_subnets(p) {
                assert!(
                    documentation_range(&s),
                    "{}: {s} is not a documentation range",
                    n.file
                );
                if n.file.starts_with("examples/networks/") {
                    networks_dir.push((n.file.clone(), s));
                }
            }
        }
    }
    // The networks of examples/networks/ can be used side by side: no two share addresses.
    for (i, (f1, s1)) in networks_dir.iter().enumerate() {
        for (f2, s2) in &networks_dir[i + 1..] {
            assert!(
                !(s1.contains(&s2.network()) || s2.contains(&s1.network())),
                "{f1} ({s1}) and {f2} ({s2}) overlap"
            );
        }
    }
    assert!(networks_dir.len() >= 5, "{networks_dir:?}");
    // Requested addresses are documentation addresses outside every host-local range.
    for pod in &pods {
        for s in pod.selections() {
            for ip in &s.requests.ips {
                let net: IpNet = ip.parse().unwrap_or_else(|_| {
                    panic!("{}: static IPAM needs a prefix length: {ip}", pod.file)
                });
                assert!(documentation_range(&net), "{}: {ip}", pod.file);
                for (f, range) in &networks_dir {
                    assert!(
                        !range.contains(&net.addr()),
                        "{}: {ip} lies in {f}'s host-local range {range}",
                        pod.file
                    );
                }
            }
            if let Some(mac) = &s.requests.mac {
                let first = u8::from_str_radix(&mac[..2], 16).unwrap();
                assert!(
                    first & 2 == 2,
                    "{}: {mac} is not locally administered",
                    pod.file
                );
            }
        }
    }
    // A secondary network with a default route would clash with eth0's; a replacement needs one.
    let mut replacements = 0;
    for pod in &pods {
        for (i, s) in pod.selections().enumerate() {
            let nad = resolve(s, &nads).unwrap();
            let default = nad.plugins().into_iter().any(routes_default);
            let replaces = pod.default_network.is_some() && i == 0;
            if replaces {
                replacements += 1;
                assert!(default, "{}: {} has no default route", pod.file, nad.file);
            } else {
                assert!(
                    !default,
                    "{}: secondary {} routes default",
                    pod.file, nad.file
                );
            }
        }
    }
    assert!(replacements > 0);
}

// === With root: the real plugins ===

/// A network config with its state directories moved under `dir` (host-local's `dataDir`, tuning's backups):
/// what demo.sh's path rewriting does. Nothing else changes.
fn localise(text: &[u8], dir: &Path) -> NetworkConfig {
    let mut v: Value = serde_json::from_slice(text).unwrap();
    let fix = |p: &mut Value| {
        if p["type"] == "tuning" {
            p["dataDir"] = json!(dir.join("tuning"));
        }
        if p.get("ipam").is_some_and(|i| i["type"] == "host-local") {
            p["ipam"]["dataDir"] = json!(dir.join("ipam"));
        }
    };
    match v.get_mut("plugins").and_then(Value::as_array_mut) {
        Some(plugins) => plugins.iter_mut().for_each(fix),
        None => fix(&mut v),
    }
    NetworkConfig::from_bytes(&serde_json::to_vec(&v).unwrap()).unwrap()
}

/// The veths and ifbs of a namespace, sorted.
fn host_links(host: &Netns) -> Vec<String> {
    let mut v: Vec<String> = plexus_netns::links(&host.path())
        .unwrap()
        .into_iter()
        .filter(|l| matches!(l.kind.as_deref(), Some("veth" | "ifb")))
        .map(|l| l.name)
        .collect();
    v.sort();
    v
}

/// Files under `dir`, recursively, skipping host-local's lock and last_reserved_ip files.
fn state_files(dir: &Path) -> Vec<String> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name != "lock" && !name.starts_with("last_reserved_ip")
        })
        .map(|p| p.display().to_string())
        .collect()
}

fn plexus_run(command: &str, pod: &ExamplePod, netns: &Path, config: &Config, seams: &Seams<'_>) {
    let cid = format!("example-{}", pod.name);
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID={POD_UID}",
        pod.namespace, pod.name
    );
    let vars: Vec<(String, String)> = [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", &cid),
        ("CNI_NETNS", &netns.display().to_string()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", CNI_PATH),
        ("CNI_ARGS", &args),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let env = CniEnv::from_vars(vars).unwrap().unwrap();
    if let Err(e) = ops::execute(&env, config, seams) {
        panic!("{}: {command} failed: {e}", pod.file);
    }
}

/// Set up one example pod with plexus and the real plugins, check what it got, tear it down. Returns the
/// requests whose effect was seen.
fn run_example(pod: &ExamplePod, nads: &[ExampleNad]) -> BTreeSet<&'static str> {
    let mut verified = BTreeSet::new();
    let host = Netns::new("exhost");
    let podns = Netns::new("expod");
    let dir = tempfile::Builder::new()
        .prefix("plexus-examples-")
        .tempdir()
        .unwrap();
    let root = dir.path();
    // The node's NICs the examples name: eth1 (macvlan master), eth2 (host-device). veths stand in.
    for nic in ["eth1", "eth2"] {
        host.add_veth_pair(nic, &format!("{nic}-peer"));
    }
    let links_before = host_links(&host);

    // Every plugin runs in the host namespace: binDir holds one wrapper per plugin.
    let bin = root.join("bin");
    fs::create_dir_all(&bin).unwrap();
    for e in fs::read_dir(CNI_PATH).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        let w = bin.join(&name);
        fs::write(
            &w,
            format!(
                "#!/bin/sh\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\nexport PATH\nexec ip netns exec {} {CNI_PATH}/{name}\n",
                host.name
            ),
        )
        .unwrap();
        fs::set_permissions(&w, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let cluster_path = root.join("10-cluster.conflist");
    fs::write(
        &cluster_path,
        localise(&fs::read(repo().join(CLUSTER_CONFLIST)).unwrap(), root).bytes,
    )
    .unwrap();
    let config = Config::from_bytes(
        &serde_json::to_vec(&json!({
            "cniVersion": "1.0.0",
            "name": "plexus-examples",
            "type": "plexus",
            "clusterNetwork": cluster_path,
            "confDir": root.join("net.d"),
            "cniDir": root.join("cni"),
            "binDir": bin,
            "delegateTimeoutSeconds": 60,
            "lockTimeoutSeconds": 30,
        }))
        .unwrap(),
    )
    .unwrap();

    // The API holds the pod with its annotations as written, and the NADs it selects (their state
    // directories localised).
    let mut annotations = Vec::new();
    if let Some(v) = &pod.networks_value {
        annotations.push((NETWORKS_ANNOTATION, v.as_str()));
    }
    if let Some(v) = &pod.default_network_value {
        annotations.push((DEFAULT_NETWORK_ANNOTATION, v.as_str()));
    }
    let mut cluster = MemoryApi::new().with_pod(&pod.namespace, &pod.name, POD_UID, &annotations);
    for sel in pod.selections() {
        let nad = resolve(sel, nads).unwrap();
        let config = String::from_utf8(localise(nad.text.as_bytes(), root).bytes).unwrap();
        cluster = cluster.with_nad(&nad.namespace, &nad.name, Value::String(config));
    }
    let seams = Seams {
        exec: &ProcessExec,
        netns: &KernelNetns,
        cluster: Some(&cluster),
        kubelet: &plexus::seams::devices::kubelet::NoKubelet,
        defer_work: false,
    };
    let attachments = check_pod(pod, nads).unwrap();

    plexus_run("ADD", pod, &podns.path(), &config, &seams);

    // network-status: one entry per attachment, on the planned interface, the cluster network's default.
    let (_, statuses) = cluster
        .statuses()
        .pop()
        .unwrap_or_else(|| panic!("{}: no network-status published", pod.file));
    let statuses: Vec<NetworkStatus> = statuses;
    let rendered = serde_json::to_string(&statuses).unwrap();
    eprintln!("{}: network-status {rendered}", pod.file);
    let ctx = format!("{}: network-status {rendered}", pod.file);
    assert_eq!(statuses.len(), attachments.len(), "{ctx}");
    let pod_links: BTreeMap<String, plexus_netns::LinkInfo> = plexus_netns::links(&podns.path())
        .unwrap()
        .into_iter()
        .map(|l| (l.name.clone(), l))
        .collect();
    let pod_addrs = podns.addresses();
    let expected_links: BTreeSet<String> = attachments
        .iter()
        .map(|a| a.ifname.clone())
        .chain(["lo".to_string()])
        .collect();
    assert_eq!(
        pod_links.keys().cloned().collect::<BTreeSet<_>>(),
        expected_links,
        "{ctx}"
    );
    let nat_rules = host.exec(&["iptables", "-t", "nat", "-S"], TIMEOUT);
    let qdiscs = host.exec(&["tc", "qdisc", "show"], TIMEOUT);
    for (a, st) in attachments.iter().zip(&statuses) {
        assert_eq!(st.name, a.status_name, "{ctx}");
        assert_eq!(st.interface, a.ifname, "{ctx}");
        assert_eq!(st.default, a.master, "{ctx}");
        let link = &pod_links[&a.ifname];
        // The interface is what the network's first plugin makes (host-device moved the eth2 veth).
        let kind = match a.network.plugins[0].plugin_type.as_str() {
            "macvlan" => "macvlan",
            _ => "veth",
        };
        assert_eq!(link.kind.as_deref(), Some(kind), "{ctx}: {}", a.ifname);
        assert_eq!(link.mac.as_deref(), Some(st.mac.as_str()), "{ctx}");
        // Every address in the status is on the interface, inside the network's range.
        assert!(!st.ips.is_empty(), "{ctx}: {} has no address", a.ifname);
        let on_link: Vec<String> = pod_addrs
            .get(&a.ifname)
            .into_iter()
            .flatten()
            .map(|n| n.addr().to_string())
            .collect();
        let ranges: Vec<IpNet> = a
            .network
            .plugins
            .iter()
            .flat_map(|p| ipam_subnets(&p.raw))
            .collect();
        for ipaddr in &st.ips {
            assert!(
                on_link.contains(ipaddr),
                "{ctx}: {ipaddr} not on {}: {on_link:?}",
                a.ifname
            );
            let addr: std::net::IpAddr = ipaddr.parse().unwrap();
            assert!(
                ranges.is_empty() || ranges.iter().any(|r| r.contains(&addr)),
                "{ctx}: {ipaddr} outside {ranges:?}"
            );
        }
        // Each request took effect.
        let r = &a.requests;
        for want in &r.ips {
            let want: IpNet = want.parse().unwrap();
            assert!(
                st.ips.contains(&want.addr().to_string()),
                "{ctx}: ips {want}"
            );
            verified.insert("ips");
            assert!(
                pod_addrs.get(&a.ifname).is_some_and(|v| v.contains(&want)),
                "{ctx}: {want} with its prefix on {}: {pod_addrs:?}",
                a.ifname
            );
        }
        if let Some(mac) = &r.mac {
            assert_eq!(&st.mac, mac, "{ctx}: mac");
            verified.insert("mac");
        }
        // default-route (NPWG-34): the pod's default route of each gateway's family is via it, on this
        // interface only, and the status lists the gateways.
        if let Some(gws) = r.gateways.as_ref().filter(|g| !g.is_empty()) {
            let defaults = plexus_netns::default_routes(&podns.path()).unwrap();
            for gw in gws {
                let gw: std::net::IpAddr = gw.parse().unwrap();
                let family = plexus_netns::IpFamily::of(&gw);
                let of_family: Vec<_> = defaults
                    .iter()
                    .filter(|(_, rt)| rt.family == family)
                    .collect();
                assert!(
                    !of_family.is_empty()
                        && of_family
                            .iter()
                            .all(|(l, rt)| *l == a.ifname && rt.gateway == Some(gw)),
                    "{ctx}: default routes {defaults:?}, want only via {gw} on {}",
                    a.ifname
                );
            }
            assert_eq!(&st.gateway, gws, "{ctx}: gateway");
            verified.insert("default-route");
        }
        for pm in r.port_mappings.iter().flat_map(|v| v.as_array().unwrap()) {
            let (hp, cp) = (&pm["hostPort"], &pm["containerPort"]);
            assert!(
                nat_rules.contains(&format!("--dport {hp} "))
                    && nat_rules.contains(&format!("--to-destination {}:{cp}", st.ips[0])),
                "{ctx}: no DNAT of port {hp} to {}:{cp} in\n{nat_rules}",
                st.ips[0]
            );
            verified.insert("portMappings");
        }
        if let Some(bw) = &r.bandwidth {
            for (rate, what) in [
                ("ingressRate", "traffic to the pod"),
                ("egressRate", "traffic from it"),
            ] {
                if bw.get(rate).is_some() {
                    let ifb = what.contains("from");
                    let shaped = qdiscs.lines().any(|l| {
                        l.contains("qdisc tbf")
                            && host_links(&host).iter().any(|h| {
                                l.contains(&format!("dev {h} ")) && h.starts_with("bwp") == ifb
                            })
                    });
                    assert!(shaped, "{ctx}: {rate}: no tbf for {what}:\n{qdiscs}");
                    verified.insert("bandwidth");
                }
            }
        }
    }

    plexus_run("DEL", pod, &podns.path(), &config, &seams);
    let links: Vec<String> = podns.link_names();
    assert_eq!(links, ["lo"], "{}: pod links after DEL", pod.file);
    let left = state_files(root.join("ipam").as_path())
        .into_iter()
        .chain(state_files(&root.join("cni")))
        .collect::<Vec<_>>();
    assert!(
        left.is_empty(),
        "{}: state left after DEL: {left:?}",
        pod.file
    );
    wait_for(Duration::from_secs(15), || {
        host_links(&host) == links_before
    });
    assert_eq!(
        host_links(&host),
        links_before,
        "{}: host links after DEL (eth2 back, no veth or ifb left)",
        pod.file
    );
    let nat_rules = host.exec(&["iptables", "-t", "nat", "-S"], TIMEOUT);
    assert!(
        !nat_rules.contains("-j DNAT"),
        "{}: DNAT rules left after DEL:\n{nat_rules}",
        pod.file
    );
    verified
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn every_example_pod_gets_its_networks_from_the_real_plugins() {
    netns_support::require_environment();
    for p in [
        "bridge",
        "macvlan",
        "ptp",
        "host-device",
        "host-local",
        "static",
        "tuning",
        "portmap",
        "bandwidth",
    ] {
        assert!(
            Path::new(CNI_PATH).join(p).is_file(),
            "{CNI_PATH}/{p} is missing: install containernetworking-plugins"
        );
    }
    let nads = example_nads();
    let pods = example_pods();
    let mut skipped = Vec::new();
    let mut verified = BTreeSet::new();
    for pod in &pods {
        // A deviceID names real hardware (a PCI address) that a namespace cannot provide.
        if pod.selections().any(|s| s.requests.device_id.is_some()) {
            skipped.push(pod.file.clone());
            continue;
        }
        verified.extend(run_example(pod, &nads));
    }
    assert_eq!(
        verified,
        BTreeSet::from(["bandwidth", "default-route", "ips", "mac", "portMappings"]),
        "the effect of every kind of request was seen in the namespaces"
    );
    assert!(
        skipped.len() < pods.len(),
        "every example was skipped: {skipped:?}"
    );
    assert_eq!(
        skipped,
        ["examples/pods/host-device-pci.yaml"],
        "only the PCI example needs hardware"
    );
}
