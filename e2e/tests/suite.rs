//! The end-to-end suite: plexus as a Kubernetes node runs it.
//!
//! Each test plays the container runtime ([`CniRuntime`], libcni semantics through plexus's own
//! `Invoker`): the node's conflist has plexus first (optionally chained with `portmap`), plexus runs in the
//! test's own "host" network namespace with Debian's plugins, the pod is a second namespace, and plexus
//! reads pods and NetworkAttachmentDefinitions from an API server and writes the network-status
//! annotation there. The server is the in-process stand-in, or the real one whose kubeconfig
//! `E2E_KUBECONFIG` names (then the stand-in-only tests — fault injection, request counting — say so and
//! return). Every scenario checks the pod's namespace, the IPs, the network-status annotation and a
//! leak-free teardown.
//!
//! plexus runs, in both modes, with a TokenRequest token of a ServiceAccount bound to
//! `deploy/clusterrole.yaml`'s ClusterRole, never with the test's own credentials: every scenario passing
//! proves that ClusterRole is enough, and
//! `a_cluster_role_without_pods_status_patch_fails_add_naming_the_credentials` proves the suite would
//! notice a smaller one.
//!
//! Run (as root): `cargo test -p plexus-e2e --test suite -- --include-ignored`;
//! against a cluster: `E2E_KUBECONFIG=~/.kube/config cargo test -p plexus-e2e --test suite -- --include-ignored`.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use plexus::{
    pure::{
        annotations::{DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION},
        netconf::NetworkConfig,
    },
    seams::k8s::client::NAD_READS_IN_FLIGHT,
    store::resultcache::encode_bytes,
};
use plexus_e2e::{
    apiserver::FaultSpec,
    harness::{
        chaos::{chain, install_recorder, recorder, records},
        cluster::standin_only,
        kubeconfig, rbac,
        runtime::{CniRuntime, Op, kubelet_args, run_network},
        world::{
            BRIDGE_SUBNET, CLUSTER_BRIDGE, CLUSTER_NETWORK, CLUSTER_SUBNET, MACVLAN_SUBNET, MASTER,
            Sandbox, World,
        },
    },
};
use plexus_testsupport::{
    forward::closed_port,
    result::{in_subnet, interface_sandbox, result_address},
};
use serde_json::{Value, json};

/// The plexus binary under test: `E2E_PLEXUS_BIN`, else the fresh build of this package.
fn plexus() -> PathBuf {
    std::env::var_os("E2E_PLEXUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_plexus-under-test")))
}

fn world(test: &str) -> World {
    World::new(test, &plexus())
}

/// The single address of `ifname` in the pod, which must lie in `subnet`.
fn pod_address(w: &World, sb: &Sandbox, ifname: &str, subnet: &str) -> IpNet {
    let addrs = sb.netns.addresses();
    let a = addrs
        .get(ifname)
        .unwrap_or_else(|| panic!("{}: no address on {ifname}: {addrs:?}", w.test));
    assert_eq!(a.len(), 1, "{}: {ifname} addresses {a:?}", w.test);
    assert!(
        in_subnet(&a[0], subnet),
        "{}: {ifname} {a:?} not in {subnet}",
        w.test
    );
    a[0]
}

/// The runtime's result is the cluster network's, in the list's version, for the pod's eth0 (CNI-35).
fn assert_result_is_eth0(w: &World, sb: &Sandbox, result: &Value, subnet: &str) {
    assert_eq!(result["cniVersion"], "1.0.0", "{result:#}");
    let eth0 = result_address(result, "eth0").unwrap_or_else(|| panic!("no eth0 in {result:#}"));
    assert_eq!(pod_address(w, sb, "eth0", subnet), eth0, "{result:#}");
    assert_eq!(
        interface_sandbox(result, "eth0"),
        json!(sb.path()),
        "{result:#}"
    );
}

/// After a failed ADD: nothing attached, nothing on disk; then the runtime's DEL (CNI-23) succeeds and
/// leaves nothing either.
fn assert_nothing_left_after_failed_add(w: &World, rt: &CniRuntime, sb: &Sandbox) {
    w.assert_no_status(sb);
    w.assert_clean(sb);
    w.del_ok(rt, sb);
    w.assert_clean(sb);
}

fn nad_name(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// The network-status of a pod with the cluster network and the NAD `macvlan-net` (NPWG-41..NPWG-51).
fn assert_macvlan_net_status(w: &World, sb: &Sandbox) {
    w.assert_status(
        sb,
        &[
            (CLUSTER_NETWORK, "eth0", true),
            (&nad_name(&w.ns, "macvlan-net"), "net1", false),
        ],
    );
}

// === Scenarios ===

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn macvlan_secondary_from_a_text_annotation() {
    let w = world("macvlan_secondary_from_a_text_annotation");
    w.nad("macvlan-net", &w.macvlan(MACVLAN_SUBNET));
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "macvlan-net")]);
    let rt = w.runtime(json!({}));

    let result = w.add_ok(&rt, &sb);
    assert_result_is_eth0(&w, &sb, &result, CLUSTER_SUBNET);
    assert_eq!(sb.netns.link_names(), ["eth0", "lo", "net1"]);
    let net1 = sb
        .netns
        .links()
        .into_iter()
        .find(|l| l.name == "net1")
        .unwrap();
    assert_eq!(net1.kind.as_deref(), Some("macvlan"));
    pod_address(&w, &sb, "net1", MACVLAN_SUBNET);
    assert_eq!(sb.netns.addresses().len(), 2);
    assert_macvlan_net_status(&w, &sb);
    assert_eq!(w.reservations().len(), 2);
    assert!(w.reservations().iter().all(|r| r.owner == sb.cid));

    w.check_ok(&rt, &sb);
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn bridge_secondary() {
    let w = world("bridge_secondary");
    w.nad("bridge-net", &w.bridge("e2ebr1", BRIDGE_SUBNET));
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "bridge-net")]);
    let rt = w.runtime(json!({}));

    let result = w.add_ok(&rt, &sb);
    assert_result_is_eth0(&w, &sb, &result, CLUSTER_SUBNET);
    assert_eq!(sb.netns.link_names(), ["eth0", "lo", "net1"]);
    pod_address(&w, &sb, "net1", BRIDGE_SUBNET);
    // The secondary's bridge and its host-side veth live in the host namespace.
    let host_links = w.host.link_names();
    assert!(host_links.contains(&"e2ebr1".to_string()), "{host_links:?}");
    assert!(
        host_links.contains(&CLUSTER_BRIDGE.to_string()),
        "{host_links:?}"
    );
    assert_eq!(w.host.veths().len(), 4, "two host ends + the master pair");
    w.assert_status(
        &sb,
        &[
            (CLUSTER_NETWORK, "eth0", true),
            (&nad_name(&w.ns, "bridge-net"), "net1", false),
        ],
    );

    w.check_ok(&rt, &sb);
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn two_secondaries_with_custom_interface_names() {
    let w = world("two_secondaries_with_custom_interface_names");
    w.nad("a", &w.macvlan(MACVLAN_SUBNET));
    w.nad("b", &w.bridge("e2ebr1", BRIDGE_SUBNET));
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "a@data0, b@data1")]);
    let rt = w.runtime(json!({}));

    w.add_ok(&rt, &sb);
    // NPWG-27: the requested names, nothing on net1/net2.
    assert_eq!(sb.netns.link_names(), ["data0", "data1", "eth0", "lo"]);
    pod_address(&w, &sb, "data0", MACVLAN_SUBNET);
    pod_address(&w, &sb, "data1", BRIDGE_SUBNET);
    w.assert_status(
        &sb,
        &[
            (CLUSTER_NETWORK, "eth0", true),
            (&nad_name(&w.ns, "a"), "data0", false),
            (&nad_name(&w.ns, "b"), "data1", false),
        ],
    );

    w.check_ok(&rt, &sb);
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn the_same_nad_twice_gives_two_attachments() {
    let w = world("the_same_nad_twice_gives_two_attachments");
    w.nad("x", &w.macvlan(MACVLAN_SUBNET));
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "x,x")]);
    let rt = w.runtime(json!({}));

    w.add_ok(&rt, &sb);
    // NPWG-38: each listing is its own attachment with its own status entry.
    assert_eq!(sb.netns.link_names(), ["eth0", "lo", "net1", "net2"]);
    let a = pod_address(&w, &sb, "net1", MACVLAN_SUBNET);
    let b = pod_address(&w, &sb, "net2", MACVLAN_SUBNET);
    assert_ne!(a, b);
    let x = nad_name(&w.ns, "x");
    w.assert_status(
        &sb,
        &[
            (CLUSTER_NETWORK, "eth0", true),
            (&x, "net1", false),
            (&x, "net2", false),
        ],
    );
    assert_eq!(w.reservations().len(), 3);

    w.check_ok(&rt, &sb);
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn json_selection_with_ips_and_mac() {
    let w = world("json_selection_with_ips_and_mac");
    // NPWG-22/NPWG-24: static IPAM takes `ips` (capability on macvlan), tuning takes `mac`.
    let conflist = json!({
        "cniVersion": "1.0.0",
        "plugins": [
            {"type": "macvlan", "master": MASTER, "mode": "bridge",
             "capabilities": {"ips": true}, "ipam": {"type": "static"}},
            {"type": "tuning", "capabilities": {"mac": true}, "dataDir": w.tuning_dir()},
        ],
    });
    w.nad("pinned", &conflist);
    let mac = "02:e2:e0:00:00:07";
    let selection =
        json!([{"name": "pinned", "ips": ["203.0.113.77/24"], "mac": mac, "interface": "pin0"}]);
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, &selection.to_string())]);
    let rt = w.runtime(json!({}));

    w.add_ok(&rt, &sb);
    assert_eq!(sb.netns.link_names(), ["eth0", "lo", "pin0"]);
    assert_eq!(
        sb.netns.addresses()["pin0"],
        ["203.0.113.77/24".parse::<IpNet>().unwrap()],
        "exactly the requested IP"
    );
    assert_eq!(
        sb.netns.mac("pin0").as_deref(),
        Some(mac),
        "exactly the requested MAC"
    );
    let entries = w.assert_status(
        &sb,
        &[
            (CLUSTER_NETWORK, "eth0", true),
            (&nad_name(&w.ns, "pinned"), "pin0", false),
        ],
    );
    assert_eq!(entries[1].ips, ["203.0.113.77"]);
    assert_eq!(entries[1].mac, mac);

    w.check_ok(&rt, &sb);
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn cross_namespace_reference() {
    let mut w = world("cross_namespace_reference");
    let other = w.cluster.create_namespace("other");
    w.cluster
        .create_nad(&other, "remote-net", Some(&w.macvlan(MACVLAN_SUBNET)));
    let sb = w.sandbox(
        "web",
        &[(NETWORKS_ANNOTATION, &format!("{other}/remote-net"))],
    );
    let rt = w.runtime(json!({}));

    w.add_ok(&rt, &sb);
    assert_eq!(sb.netns.link_names(), ["eth0", "lo", "net1"]);
    pod_address(&w, &sb, "net1", MACVLAN_SUBNET);
    w.assert_status(
        &sb,
        &[
            (CLUSTER_NETWORK, "eth0", true),
            (&nad_name(&other, "remote-net"), "net1", false),
        ],
    );

    w.check_ok(&rt, &sb);
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn namespace_isolation_refuses_a_cross_namespace_reference() {
    let mut w = world("namespace_isolation_refuses_a_cross_namespace_reference");
    let other = w.cluster.create_namespace("other");
    w.cluster
        .create_nad(&other, "remote-net", Some(&w.macvlan(MACVLAN_SUBNET)));
    let reference = format!("{other}/remote-net");
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, &reference)]);
    let rt = w.runtime(json!({"namespaceIsolation": true}));

    let err = w.add_fails(&rt, &sb);
    assert_eq!(err.code, Some(7), "{err}");
    let text = err.text();
    let pod = format!("{}/{}", w.ns, sb.pod.name);
    assert!(text.contains(&pod), "names the pod {pod}: {err}");
    assert!(
        text.contains(&reference),
        "names the network {reference}: {err}"
    );
    assert!(text.contains("isolation"), "{err}");
    let warnings = w.warnings(&sb);
    assert!(
        warnings.iter().any(|(_, m)| m.contains(&reference)),
        "a Warning event about {reference}: {warnings:?}"
    );
    assert_nothing_left_after_failed_add(&w, &rt, &sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn default_network_annotation_replaces_the_cluster_network() {
    let w = world("default_network_annotation_replaces_the_cluster_network");
    // In multusNamespace (the test's namespace here), named without a namespace (EXT-4).
    let mut alt = w.bridge("e2edn0", BRIDGE_SUBNET);
    alt["isGateway"] = json!(true);
    w.nad("alt-default", &alt);
    w.nad("macvlan-net", &w.macvlan(MACVLAN_SUBNET));
    let sb = w.sandbox(
        "web",
        &[
            (DEFAULT_NETWORK_ANNOTATION, "alt-default"),
            (NETWORKS_ANNOTATION, "macvlan-net"),
        ],
    );
    let rt = w.runtime(json!({}));

    let result = w.add_ok(&rt, &sb);
    assert_result_is_eth0(&w, &sb, &result, BRIDGE_SUBNET);
    assert_eq!(sb.netns.link_names(), ["eth0", "lo", "net1"]);
    let host_links = w.host.link_names();
    assert!(host_links.contains(&"e2edn0".to_string()), "{host_links:?}");
    assert!(
        !host_links.contains(&CLUSTER_BRIDGE.to_string()),
        "the cluster network was not attached: {host_links:?}"
    );
    w.assert_status(
        &sb,
        &[
            (&nad_name(&w.ns, "alt-default"), "eth0", true),
            (&nad_name(&w.ns, "macvlan-net"), "net1", false),
        ],
    );

    w.check_ok(&rt, &sb);
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn missing_nad_fails_cleanly_with_a_no_network_found_event() {
    let w = world("missing_nad_fails_cleanly_with_a_no_network_found_event");
    w.nad("macvlan-net", &w.macvlan(MACVLAN_SUBNET));
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "macvlan-net,ghost-net")]);
    let rt = w.runtime(json!({}));

    let err = w.add_fails(&rt, &sb);
    assert_eq!(err.code, Some(7), "{err}");
    let text = err.text();
    assert!(text.contains("ghost-net") && text.contains(&w.ns), "{err}");
    let pod = format!("{}/{}", w.ns, sb.pod.name);
    assert!(text.contains(&pod), "names the pod {pod}: {err}");
    let warnings = w.warnings(&sb);
    assert!(
        warnings
            .iter()
            .any(|(r, m)| r == "NoNetworkFound" && m.contains("ghost-net")),
        "{warnings:?}"
    );
    assert_nothing_left_after_failed_add(&w, &rt, &sb);
}

/// Issue 20, in thin mode as in daemon mode (its fallback reads of NADs its cache has not seen): a pod
/// naming a thousand NADs that do not exist fails with code 7 naming the first, in today's words, and (at
/// the stand-in, which counts requests) costs at most `NAD_READS_IN_FLIGHT` NAD reads, not a thousand.
#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn a_thousand_missing_nads_cost_a_few_api_requests() {
    let test = "a_thousand_missing_nads_cost_a_few_api_requests";
    let w = world(test);
    let names: Vec<String> = (0..1000).map(|i| format!("ghost-{i:04}")).collect();
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, &names.join(","))]);
    // Above the 1,001 attachments this pod asks for: only the reads are bounded here.
    let rt = w.runtime(json!({"maxAttachmentsPerPod": 1024}));
    let server = w
        .cluster
        .standin_part(test, "the request count, taken at the stand-in");
    if let Some(server) = server {
        server.clear_requests();
    }

    let err = w.add_fails(&rt, &sb);
    assert_eq!(err.code, Some(7), "{err}");
    let text = err.text();
    let first = format!(
        "cannot find a network-attachment-definition (ghost-0000) in namespace ({})",
        w.ns
    );
    assert!(text.contains(&first), "names the first missing NAD: {err}");
    let pod = format!("{}/{}", w.ns, sb.pod.name);
    assert!(text.contains(&pod), "names the pod {pod}: {err}");
    let warnings = w.warnings(&sb);
    assert!(
        warnings
            .iter()
            .any(|(r, m)| r == "NoNetworkFound" && m.contains("ghost-0000")),
        "{warnings:?}"
    );

    if let Some(server) = server {
        // plexus's own requests (not the test's reads of the events), without the daemon's watches
        // (long-lived, started before).
        let log: Vec<_> = server
            .requests_by_user()
            .into_iter()
            .filter(|(r, user)| {
                user.as_deref() == Some(w.plexus_user.as_str()) && !r.query.contains("watch=true")
            })
            .map(|(r, _)| r)
            .collect();
        let nads = format!(
            "/apis/k8s.cni.cncf.io/v1/namespaces/{}/network-attachment-definitions/",
            w.ns
        );
        let nad_reads = log
            .iter()
            .filter(|r| r.method == "GET" && r.path.starts_with(&nads))
            .count();
        let shown: Vec<String> = log
            .iter()
            .take(40)
            .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
            .collect();
        eprintln!(
            "{test}: {} API requests, {nad_reads} of them NAD reads",
            log.len()
        );
        assert!(
            (1..=NAD_READS_IN_FLIGHT).contains(&nad_reads),
            "{nad_reads} NAD reads: {shown:#?}"
        );
        // Besides them: the pod (thin mode) and the Warning event.
        assert!(
            log.len() <= NAD_READS_IN_FLIGHT + 3,
            "{} requests: {shown:#?}",
            log.len()
        );
    }
    assert_nothing_left_after_failed_add(&w, &rt, &sb);
}

/// Issue 20, in thin mode as in daemon mode: a pod that would get more attachments than the node's
/// `maxAttachmentsPerPod` (the cluster network and `defaultNetworks` counted) is refused with code 7
/// naming the pod, the limit and the key, with a `TooManyAttachments` Warning event, before any delegate
/// runs (the recorder, the default network's and the NAD's only plugin, never records an ADD) and (at the
/// stand-in) before any NAD is read; nothing is left behind.
#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn a_pod_over_the_attachment_limit_is_refused_before_any_nad_read_or_delegate() {
    let test = "a_pod_over_the_attachment_limit_is_refused_before_any_nad_read_or_delegate";
    let w = world(test);
    install_recorder(&w, &plexus());
    let only_the_recorder = |name: Option<&str>| {
        let mut list = json!({"cniVersion": "1.0.0", "plugins": [recorder(&w, json!({}))]});
        if let Some(n) = name {
            list["name"] = json!(n);
        }
        list
    };
    w.nad("rec-net", &only_the_recorder(None));
    let default = w.write(
        "rec-default.conflist",
        &only_the_recorder(Some("rec-default")),
    );
    // The cluster network, the default network and two from the annotation: 4, over 3.
    let rt = w.runtime(json!({"maxAttachmentsPerPod": 3, "defaultNetworks": [default]}));
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "rec-net,rec-net")]);
    // A daemon loads the NADs its pods select in the background (docs/daemon.md, "The NAD cache"): that
    // read is done before the count starts, so what is counted is the ADD's.
    if let Some(d) = &w.daemon {
        d.wait_nad_loaded(&w.ns, "rec-net");
    }
    let server = w
        .cluster
        .standin_part(test, "no NAD read and no PATCH, counted at the stand-in");
    if let Some(server) = server {
        server.clear_requests();
    }

    let err = w.add_fails(&rt, &sb);
    assert_eq!(err.code, Some(7), "{err}");
    let text = err.text();
    for part in [
        format!("{}/{}", sb.pod.namespace, sb.pod.name),
        "4 network attachments".to_string(),
        "at most 3 per pod".to_string(),
        "maxAttachmentsPerPod".to_string(),
    ] {
        assert!(text.contains(&part), "names {part}: {err}");
    }
    assert_eq!(records(&w), Vec::<Value>::new(), "no delegate ran");
    let warnings = w.warnings(&sb);
    assert!(
        warnings
            .iter()
            .any(|(r, m)| r == "TooManyAttachments" && m.contains("maxAttachmentsPerPod")),
        "{warnings:?}"
    );
    if let Some(server) = server {
        let log = server.requests();
        let nad_reads: Vec<String> = log
            .iter()
            .filter(|r| {
                r.path.contains("/network-attachment-definitions")
                    && !r.query.contains("watch=true")
            })
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert_eq!(nad_reads, Vec::<String>::new(), "no NAD was read");
        assert_eq!(server.count_requests("PATCH", ""), 0);
    }
    w.assert_no_status(&sb);
    w.assert_clean(&sb);
    // The runtime's DEL (CNI-23) finds no cache, and nothing of the pod's to tear down.
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
    assert!(
        !records(&w).iter().any(|r| r["command"] == "ADD"),
        "no delegate ever ran ADD: {:#?}",
        records(&w)
    );
}

/// Issue 16, in thin mode as in daemon mode: a NAD whose conflist chains a plugin this node does not have
/// fails the ADD of a pod selecting it with code 7 naming the pod, the NAD and the plugin, before any
/// delegate ran (the recorder first in the chain never runs), with a `NoPluginFound` Warning event; the
/// runtime's DEL then succeeds and nothing is left.
#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn a_nad_naming_a_missing_plugin_fails_its_pod_before_any_delegate() {
    let w = world("a_nad_naming_a_missing_plugin_fails_its_pod_before_any_delegate");
    install_recorder(&w, &plexus());
    let typo = chain(
        None,
        &json!({"cniVersion": "1.0.0", "type": "no-such-plugin"}),
        Some(recorder(&w, json!({}))),
        None,
    );
    w.nad("fast-net", &typo);
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "fast-net")]);
    let rt = w.runtime(json!({}));

    let err = w.add_fails(&rt, &sb);
    w.assert_plugin_missing(&err, &sb, &nad_name(&w.ns, "fast-net"), "no-such-plugin");
    assert_nothing_left_after_failed_add(&w, &rt, &sb);
    assert_eq!(
        records(&w),
        Vec::<Value>::new(),
        "no plugin of the NAD ran, ADD or DEL"
    );
}

/// Issue 19, item 3, in thin mode as in daemon mode: with `allowedPluginTypes` in the node's config, a
/// NAD chaining a type outside it (here `tuning`) fails its pod's ADD with code 7 naming the pod, the NAD,
/// the type and the key, and a `PluginTypeNotAllowed` Warning event; nothing ran (not the cluster network,
/// not the allowed NAD before it) and nothing is left. The cluster network's `bridge` is not on the list:
/// the node's own networks are exempt. A list for the NAD's namespace replaces the global one: with
/// `tuning` on it, the same selection works.
#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn a_nad_naming_a_plugin_type_outside_the_allow_list_fails_its_pod_and_nothing_runs() {
    let w =
        world("a_nad_naming_a_plugin_type_outside_the_allow_list_fails_its_pod_and_nothing_runs");
    w.nad("macvlan-net", &w.macvlan(MACVLAN_SUBNET));
    let tuned = json!({
        "cniVersion": "1.0.0",
        "plugins": [
            {"type": "macvlan", "master": MASTER, "mode": "bridge", "ipam": w.ipam(BRIDGE_SUBNET)},
            {"type": "tuning", "dataDir": w.tuning_dir()},
        ],
    });
    w.nad("tuned-net", &tuned);
    let selection = "macvlan-net,tuned-net";
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, selection)]);
    let rt = w.runtime(json!({"allowedPluginTypes": ["macvlan", "host-local"]}));

    let err = w.add_fails(&rt, &sb);
    assert_eq!(err.code, Some(7), "{err}");
    let text = err.text();
    let nad = nad_name(&w.ns, "tuned-net");
    for part in [
        format!("{}/{}", sb.pod.namespace, sb.pod.name),
        nad.clone(),
        "plugin type \"tuning\"".to_string(),
        "allowedPluginTypes".to_string(),
    ] {
        assert!(text.contains(&part), "names {part}: {err}");
    }
    let warnings = w.warnings(&sb);
    assert!(
        warnings
            .iter()
            .any(|(reason, msg)| reason == "PluginTypeNotAllowed"
                && msg.contains(&nad)
                && msg.contains("\"tuning\"")),
        "{warnings:?}"
    );
    assert_nothing_left_after_failed_add(&w, &rt, &sb);

    let rt = w.runtime(json!({
        "allowedPluginTypes": [],
        "allowedPluginTypesByNamespace": {&w.ns: ["macvlan", "host-local", "tuning"]},
    }));
    let sb = w.sandbox("web2", &[(NETWORKS_ANNOTATION, selection)]);
    w.add_ok(&rt, &sb);
    assert_eq!(sb.netns.link_names(), ["eth0", "lo", "net1", "net2"]);
    w.assert_status(
        &sb,
        &[
            (CLUSTER_NETWORK, "eth0", true),
            (&nad_name(&w.ns, "macvlan-net"), "net1", false),
            (&nad, "net2", false),
        ],
    );
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn malformed_annotations_fail_naming_the_element_and_field() {
    let w = world("malformed_annotations_fail_naming_the_element_and_field");
    w.nad("macvlan-net", &w.macvlan(MACVLAN_SUBNET));
    let rt = w.runtime(json!({}));

    // Not JSON at all.
    let sb = w.sandbox(
        "bad-json",
        &[(NETWORKS_ANNOTATION, r#"[{"name":"macvlan-net",}"#)],
    );
    let err = w.add_fails(&rt, &sb);
    assert_eq!(err.code, Some(7), "{err}");
    assert!(err.text().contains("not valid JSON"), "{err}");
    assert!(err.text().contains(NETWORKS_ANNOTATION), "{err}");
    let warnings = w.warnings(&sb);
    assert!(
        warnings.iter().any(|(r, _)| r == "InvalidNetworkSelection"),
        "{warnings:?}"
    );
    assert_nothing_left_after_failed_add(&w, &rt, &sb);

    // A valid first element, an invalid `mac` in the second.
    let value =
        json!([{"name": "macvlan-net"}, {"name": "macvlan-net", "mac": "zz:00:00:00:00:01"}]);
    let sb = w.sandbox("bad-mac", &[(NETWORKS_ANNOTATION, &value.to_string())]);
    let err = w.add_fails(&rt, &sb);
    assert_eq!(err.code, Some(7), "{err}");
    let text = err.text();
    assert!(text.contains("element 1"), "names the element: {err}");
    assert!(text.contains("\"mac\""), "names the field: {err}");
    let warnings = w.warnings(&sb);
    assert!(
        warnings
            .iter()
            .any(|(r, m)| r == "InvalidNetworkSelection" && m.contains("element 1")),
        "{warnings:?}"
    );
    assert_nothing_left_after_failed_add(&w, &rt, &sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn del_succeeds_from_the_cache_while_the_api_is_down() {
    let w = world("del_succeeds_from_the_cache_while_the_api_is_down");
    w.nad("macvlan-net", &w.macvlan(MACVLAN_SUBNET));
    w.nad("bridge-net", &w.bridge("e2ebr1", BRIDGE_SUBNET));
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "macvlan-net,bridge-net")]);
    let rt = w.runtime(json!({"apiTimeoutSeconds": 1, "apiBudgetSeconds": 3}));
    w.add_ok(&rt, &sb);
    assert_eq!(sb.netns.link_names(), ["eth0", "lo", "net1", "net2"]);
    // ADD's AddedInterface events come after its reply, from a detached sender: let them land before the
    // count of API connections is taken, so only DEL's own would show.
    let added = || {
        w.cluster
            .pod_events(&sb.pod.namespace, &sb.pod.name)
            .iter()
            .filter(|e| e.reason.as_deref() == Some("AddedInterface"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while added() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(added(), 3, "one AddedInterface event per attachment");

    match w.cluster.standin() {
        Some(server) => server.faults().set_down(true, None),
        // A real server cannot be taken down: plexus's only way to it now leads to a closed port.
        None => w.fwd.redirect(closed_port()),
    }
    let connections = w.fwd.accepted();
    let started = Instant::now();
    w.del_ok(&rt, &sb);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        w.fwd.accepted(),
        connections,
        "DEL works from the cache and never dials the API"
    );
    w.assert_clean(&sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn del_twice_succeeds() {
    let w = world("del_twice_succeeds");
    w.nad("macvlan-net", &w.macvlan(MACVLAN_SUBNET));
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "macvlan-net")]);
    let rt = w.runtime(json!({}));
    w.add_ok(&rt, &sb);
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
    // CNI-16: a repeated DEL succeeds and changes nothing.
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}

/// A sysctl of the pod's `ifname`, read inside the pod's namespace.
fn pod_sysctl(sb: &Sandbox, ifname: &str, key: &str) -> String {
    let file = format!("/proc/sys/net/ipv4/conf/{ifname}/{key}");
    plexus_netns::run_in_netns(&sb.path(), move || std::fs::read_to_string(&file))
        .expect("enter the pod namespace")
        .expect("read the sysctl")
        .trim()
        .to_string()
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn auxiliary_chain_sets_a_sysctl_with_tuning_on_every_pod() {
    // Issue 22 (EXT-5, auxiliaryCNIChainName): Debian's tuning in `<directory of clusterNetwork>/<name>/`
    // runs after every network, behind plexus's own passthru, on the next net<index>: so, as in Go
    // Multus's e2e, its sysctl names eth0 explicitly. The chain is in no network-status entry, CHECK
    // leaves it out, and DEL runs it from the cache after its directory is gone (EXT-6).
    let w = world("auxiliary_chain_sets_a_sysctl_with_tuning_on_every_pod");
    let chain_file = w.write(
        "vendor-cni-chain/10-tuning.conf",
        &json!({"type": "tuning", "dataDir": w.tuning_dir(),
                "sysctl": {"net.ipv4.conf.eth0.arp_filter": "1"}}),
    );
    w.nad("macvlan-net", &w.macvlan(MACVLAN_SUBNET));
    let rt = w.runtime(json!({"auxiliaryCNIChainName": "vendor-cni-chain"}));
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "macvlan-net")]);
    let plain = w.sandbox("plain", &[]);

    let result = w.add_ok(&rt, &sb);
    assert_result_is_eth0(&w, &sb, &result, CLUSTER_SUBNET);
    assert_eq!(
        sb.netns.link_names(),
        ["eth0", "lo", "net1"],
        "no net2: the chain makes no link"
    );
    assert_eq!(pod_sysctl(&sb, "eth0", "arp_filter"), "1", "{}", w.log());
    assert_eq!(
        pod_sysctl(&sb, "net1", "arp_filter"),
        "0",
        "only the key tuning was given"
    );
    assert_macvlan_net_status(&w, &sb);
    w.check_ok(&rt, &sb);

    // A pod without secondaries gets the chain too, on net1.
    w.add_ok(&rt, &plain);
    assert_eq!(pod_sysctl(&plain, "eth0", "arp_filter"), "1", "{}", w.log());
    w.assert_status(&plain, &[(CLUSTER_NETWORK, "eth0", true)]);

    std::fs::remove_file(&chain_file).expect("remove the chain's plugin file");
    w.del_ok(&rt, &sb);
    w.del_ok(&rt, &plain);
    w.assert_clean(&sb);
    w.assert_clean(&plain);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn check_after_add_covers_every_attachment() {
    let w = world("check_after_add_covers_every_attachment");
    w.nad("macvlan-net", &w.macvlan(MACVLAN_SUBNET));
    w.nad("bridge-net", &w.bridge("e2ebr1", BRIDGE_SUBNET));
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "macvlan-net,bridge-net")]);
    let rt = w.runtime(json!({}));
    w.add_ok(&rt, &sb);
    w.check_ok(&rt, &sb);
    w.check_ok(&rt, &sb);

    // CHECK reaches the secondaries too: with net1 gone it fails, naming the network.
    sb.netns.ip("link del net1");
    let err = rt
        .check(&w.rt(&sb))
        .expect_err("CHECK must notice net1 is gone");
    assert!(err.text().contains("macvlan-net"), "{err}");

    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn plexus_first_in_a_chain_with_portmap() {
    let w = world("plexus_first_in_a_chain_with_portmap");
    w.nad("macvlan-net", &w.macvlan(MACVLAN_SUBNET));
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "macvlan-net")]);
    let rt = w.runtime_with(
        json!({}),
        // No SNAT for hairpin/localhost traffic: nothing here sends any.
        vec![json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": false})],
    );
    // The kubelet's port mapping for the pod, as runtimeConfig.portMappings (CNI-30).
    let mut conf = w.rt(&sb);
    conf.capability_args.insert(
        "portMappings".into(),
        json!([{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]),
    );

    let result = rt
        .add(&conf)
        .unwrap_or_else(|e| panic!("chained ADD: {e}\nplexus log:\n{}", w.log()));
    assert_result_is_eth0(&w, &sb, &result, CLUSTER_SUBNET);
    assert_eq!(sb.netns.link_names(), ["eth0", "lo", "net1"]);
    // portmap got plexus's result as prevResult: its DNAT rule targets the pod's eth0 address.
    let eth0 = result_address(&result, "eth0").unwrap().addr();
    let rules = w.host_nat_rules();
    let dnat = format!("--to-destination {eth0}:80");
    assert!(
        rules
            .lines()
            .any(|l| l.contains(&dnat) && l.contains("--dport 18080")),
        "no DNAT 18080 -> {eth0}:80 in the host netns:\n{rules}"
    );
    assert_eq!(
        rt.cached_results(&sb.cid).len(),
        1,
        "the runtime cached the chain's result"
    );
    assert_macvlan_net_status(&w, &sb);

    // CHECK runs the list in order (CNI-27): plexus's CHECK must pass. Debian's portmap 1.1.1 then fails
    // CHECK for any IPv4-only pod, looking for its DNAT chain in ip6tables too
    // (containernetworking/plugins#819); only that known failure is tolerated.
    match rt.check(&conf) {
        Ok(()) => {}
        Err(e) if e.text().contains("could not check ipv6 dnat") => {
            eprintln!(
                "{}: portmap's CHECK hit containernetworking/plugins#819: {e}",
                w.test
            );
        }
        Err(e) => panic!("chained CHECK: {e}\nplexus log:\n{}", w.log()),
    }
    assert!(
        w.log().contains("done command=CHECK"),
        "plexus's CHECK ran and passed\nplexus log:\n{}",
        w.log()
    );
    rt.del(&conf)
        .unwrap_or_else(|e| panic!("chained DEL: {e}\nplexus log:\n{}", w.log()));
    let rules = w.host_nat_rules();
    assert!(
        !rules.contains(&eth0.to_string()),
        "portmap's rules for {eth0} are gone:\n{rules}"
    );
    w.assert_clean(&sb);
}

/// One entry of a Go Multus v4 cache file, as `json.Marshal(DelegateNetConf)` writes it.
fn go_multus_entry(name: &str, config: &Value) -> Value {
    let plugin = |p: &Value| {
        let mut m = json!({"ipam": {}, "dns": {}});
        for k in ["cniVersion", "name", "type"] {
            if let Some(v) = p.get(k) {
                m[k] = v.clone();
            }
        }
        if let Some(t) = p["ipam"].get("type") {
            m["ipam"] = json!({"type": t});
        }
        m
    };
    let (conf, conf_list) = match config.get("plugins").and_then(Value::as_array) {
        Some(plugins) => (
            json!({"ipam": {}, "dns": {}}),
            json!({"cniVersion": config["cniVersion"], "name": config["name"],
                   "plugins": plugins.iter().map(plugin).collect::<Vec<_>>()}),
        ),
        None => (plugin(config), json!({})),
    };
    let mut e = json!({
        "Conf": conf,
        "ConfList": conf_list,
        "IsFilterV4Gateway": false,
        "IsFilterV6Gateway": false,
        "Bytes": encode_bytes(config.to_string().as_bytes()),
    });
    if !name.is_empty() {
        e["name"] = json!(name);
    }
    e
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn del_tears_down_a_go_multus_cache() {
    let w = world("del_tears_down_a_go_multus_cache");
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "macvlan-net")]);
    // What Go Multus attached for this sandbox, created for real by running the delegates as it would
    // (libcni, its result cache under cniDir): the cluster network on eth0, a macvlan NAD on net1.
    let cluster = w.cluster_conflist();
    let mut macvlan = w.macvlan(MACVLAN_SUBNET);
    macvlan["name"] = json!("macvlan-net");
    for (config, ifname) in [(&cluster, "eth0"), (&macvlan, "net1")] {
        let net = NetworkConfig::from_value(config.clone()).unwrap();
        let mut rt = w.rt(&sb);
        rt.ifname = ifname.into();
        rt.args = kubelet_args(&sb.pod, &sb.cid);
        rt.capability_args = Default::default();
        run_network(
            &w.host.path(),
            &net,
            &rt,
            &[PathBuf::from("/usr/lib/cni")],
            &w.cni_dir(),
            Op::Add,
        )
        .unwrap_or_else(|e| panic!("direct ADD of {ifname}: {e}"));
    }
    assert_eq!(sb.netns.link_names(), ["eth0", "lo", "net1"]);
    assert_eq!(w.reservations().len(), 2);
    // The cache Go Multus v4 writes at <cniDir>/<containerID>: no plexus keys at all.
    let cache = json!([
        go_multus_entry("", &cluster),
        go_multus_entry(&nad_name(&w.ns, "macvlan-net"), &macvlan),
    ]);
    std::fs::write(w.cni_dir().join(&sb.cid), cache.to_string()).unwrap();

    w.del_ok(&w.runtime(json!({})), &sb);
    w.assert_clean(&sb);
}

// === The RBAC of deploy/ ===

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn a_cluster_role_without_pods_status_patch_fails_add_naming_the_credentials() {
    let test = "a_cluster_role_without_pods_status_patch_fails_add_naming_the_credentials";
    // deploy's ClusterRole less the one rule for the network-status write: every other call still works.
    let role = rbac::without(
        &rbac::deploy_cluster_role(),
        "no-pods-status-patch",
        "",
        "pods/status",
        "patch",
    );
    let w = World::with_cluster_role(test, &plexus(), Some(&role));
    assert_ne!(w.cluster_role, rbac::deploy_cluster_role_name());
    w.nad("macvlan-net", &w.macvlan(MACVLAN_SUBNET));
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "macvlan-net")]);
    let rt = w.runtime(json!({}));

    if w.daemon.is_some() {
        // Daemon mode writes network-status after the reply (statusWrite: afterReply, its default): the ADD
        // succeeds; the write is refused, not retried (a refusal stays one), and the pod gets a Warning
        // event while the daemon's log names the pod, the verb, the resource and the RBAC rules.
        w.add_ok(&rt, &sb);
        w.assert_no_status(&sb);
        let warnings = w.warnings(&sb);
        assert!(
            warnings.iter().any(|(r, _)| r == "NetworkStatusNotWritten"),
            "{warnings:?}"
        );
        let log = w.log();
        let pod = format!("{}/{}", w.ns, sb.pod.name);
        let line = log
            .lines()
            .find(|l| l.contains("not written") && l.contains(&pod))
            .unwrap_or_else(|| panic!("no log line about the refused write:\n{log}"));
        for word in [
            "forbidden",
            "RBAC",
            "pods/status",
            "patch",
            w.plexus_user.as_str(),
        ] {
            assert!(line.contains(word), "{word:?} in {line}");
        }
        w.del_ok(&rt, &sb);
        w.assert_clean(&sb);
        return;
    }
    let err = w.add_fails(&rt, &sb);
    eprintln!("{test}: ADD failed as it must: {err}");
    let text = err.text();
    assert_ne!(
        err.code,
        Some(11),
        "a refusal is not \"try again later\": {err}"
    );
    let pod = format!("{}/{}", w.ns, sb.pod.name);
    assert!(text.contains(&pod), "names the pod {pod}: {err}");
    assert!(
        text.contains("credentials") && text.contains("RBAC"),
        "points at the credentials and RBAC: {err}"
    );
    // The API server's own words: who was refused what.
    assert!(text.contains("forbidden"), "{err}");
    assert!(text.contains(&w.plexus_user), "names the user: {err}");
    assert!(
        text.contains("patch") && text.contains("pods/status"),
        "names the verb and resource: {err}"
    );
    // Rolled back: no interface, reservation, cache or annotation; the runtime's DEL then succeeds.
    assert_nothing_left_after_failed_add(&w, &rt, &sb);
}

// === The host's credential (thin mode) ===

/// The claims of a JWT-shaped token.
fn token_claims(token: &str) -> Value {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let part = token.split('.').nth(1).unwrap_or_default();
    URL_SAFE_NO_PAD
        .decode(part)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

/// A `plexus install` running in the background; stopped (SIGTERM, then SIGKILL) when dropped.
struct Installer(std::process::Child);

impl Drop for Installer {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Issue 19, item 1: the installer writes into the host's kubeconfig a token of its ServiceAccount bound to
/// its Node, asked for with its pod's own token. Its pod is deleted (an upgrade, an eviction): the pod's
/// token stops working at once, and ADDs on the node keep working with the Node-bound one; deleting the Node
/// ends that token too. Runs unchanged on a real server: the Node is an object the test makes (no kubelet),
/// the installer's pod is bound to it, and the RBAC is deploy's Role, in the test's namespace.
#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn adds_keep_working_with_the_node_bound_token_after_the_installer_pod_is_deleted() {
    let test = "adds_keep_working_with_the_node_bound_token_after_the_installer_pod_is_deleted";
    // Only thin mode writes a kubeconfig for the host: in daemon mode the daemon has its own.
    let w = World::thin(test, &plexus());
    // The installer writes what a pod has (an address, the CA): a kubeconfig that reaches the server
    // otherwise cannot be given to it.
    let original = kubeconfig::read(w.cluster.kubeconfig()).unwrap();
    let ca = match kubeconfig::ca_pem(&original, w.cluster.kubeconfig()) {
        Ok(ca) if kubeconfig::tls_server_name(&original).is_none() => ca,
        other => {
            eprintln!(
                "{test}: skipped: the installer needs the API server's CA and an address its certificate \
                 names, and {} has {}",
                w.cluster.kubeconfig().display(),
                match other {
                    Ok(_) => "a tls-server-name".to_string(),
                    Err(e) => e,
                }
            );
            return;
        }
    };
    let node = format!("{}-node", w.ns);
    let node_uid = w.cluster.create_node(&node);
    let role = rbac::host_token_role(&w.ns);
    let role_name = role.metadata.name.clone().unwrap();
    w.cluster.create_role_and_binding(
        &role,
        &rbac::host_token_role_binding(&w.ns, &role_name, &w.service_account),
    );
    // The installer's pod on that node, and the token the kubelet would project into it.
    let pod = w.cluster.create_pod_with_spec(
        &w.ns,
        "plexus-installer",
        &[],
        json!({"nodeName": node, "serviceAccountName": w.service_account}),
    );
    let pod_token = w.cluster.request_bound_token(
        &w.ns,
        &w.service_account,
        rbac::TOKEN_SECONDS,
        "Pod",
        &pod.name,
        &pod.uid,
    );

    // Its view of the node: the service-account volume, the CNI directories with the cluster network's
    // config, and the API server's own address (it runs in the machine's network namespace).
    let root = w.root().join("installer");
    let (sa, net_d) = (root.join("sa"), root.join("etc/cni/net.d"));
    for d in [&sa, &net_d, &root.join("opt/cni/bin")] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(sa.join("token"), &pod_token).unwrap();
    std::fs::write(sa.join("ca.crt"), ca).unwrap();
    std::fs::copy(w.cluster_file(), net_d.join("10-e2e.conflist")).unwrap();
    let ep = kubeconfig::endpoint(&original).unwrap();
    let log_path = root.join("install.log");
    let r = root.display();
    let child = std::process::Command::new(plexus())
        .arg("install")
        .args([
            format!("--cni-conf-dir={r}/etc/cni/net.d"),
            format!("--host-cni-conf-dir={r}/etc/cni/net.d"),
            format!("--cni-bin-dir={r}/opt/cni/bin"),
            format!("--plexus-conf-dir={r}/etc/cni/multus/net.d"),
            format!("--host-plexus-conf-dir={r}/etc/cni/multus/net.d"),
            format!("--host-prefix={r}"),
            format!("--service-account-dir={}", sa.display()),
            format!("--node-name={node}"),
            "--skip-binary-copy".into(),
            "--poll-interval=200ms".into(),
            "--wait-timeout=0".into(),
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("KUBERNETES_SERVICE_HOST", &ep.host)
        .env("KUBERNETES_SERVICE_PORT", ep.port.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("start plexus install");
    let installer = Installer(child);
    let install_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // The host's kubeconfig gets the Node-bound token (a real server's RBAC cache may refuse the first
    // request: the installer asks again after 2, 4, 8 s...).
    let host_kc = net_d.join("plexus.d/plexus.kubeconfig");
    let started = Instant::now();
    let node_token = loop {
        let token = kubeconfig::read(&host_kc)
            .ok()
            .and_then(|kc| kubeconfig::token(&kc));
        if let Some(t) = token.filter(|t| token_claims(t)["kubernetes.io"]["node"]["name"] == node)
        {
            break t;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{test}: no Node-bound token in {} after 90 s:\n{}",
            host_kc.display(),
            install_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let claims = token_claims(&node_token);
    assert_eq!(
        claims["kubernetes.io"]["node"],
        json!({"name": node, "uid": node_uid}),
        "{claims}"
    );
    assert!(claims["kubernetes.io"].get("pod").is_none(), "{claims}");
    assert_eq!(
        claims["sub"],
        json!(w.plexus_user),
        "a token of its own ServiceAccount"
    );
    assert!(
        install_log().contains(&format!(
            "obtained a token of serviceaccount {}/{} bound to Node {node}",
            w.ns, w.service_account
        )),
        "{}",
        install_log()
    );
    // Upgrade, eviction: the installer stops (keeping its files) and its pod is deleted, which revokes the
    // pod's own token.
    drop(installer);
    w.cluster.delete_pod(&w.ns, &pod.name);
    let pod_kc = root.join("pod.kubeconfig");
    kubeconfig::write(
        &pod_kc,
        &kubeconfig::with_token(&original, w.cluster.kubeconfig(), &pod_token, "installer")
            .unwrap(),
    )
    .unwrap();
    w.cluster.wait_unauthenticated(&pod_kc, &w.ns);

    // The node's plexus uses the host's kubeconfig (through the forwarder into the host namespace).
    let written = kubeconfig::read(&host_kc).unwrap();
    let host_fwd = root.join("host.kubeconfig");
    kubeconfig::write(
        &host_fwd,
        &kubeconfig::forwarded(&written, &host_kc, w.fwd.port()).unwrap(),
    )
    .unwrap();
    w.nad("macvlan-net", &w.macvlan(MACVLAN_SUBNET));
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "macvlan-net")]);
    let rt = w.runtime(json!({"kubeconfig": host_fwd}));
    let result = w.add_ok(&rt, &sb);
    assert_result_is_eth0(&w, &sb, &result, CLUSTER_SUBNET);
    assert_macvlan_net_status(&w, &sb);
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);

    // The token dies with its Node.
    w.cluster.delete_node(&node);
    w.cluster.wait_unauthenticated(&host_kc, &w.ns);
}

// === Stand-in only: request counts and injected faults ===

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn add_with_three_secondaries_makes_few_api_requests() {
    let test = "add_with_three_secondaries_makes_few_api_requests";
    if !standin_only(test, "it counts the requests the stand-in logs") {
        return;
    }
    let w = world(test);
    w.nad("a", &w.macvlan(MACVLAN_SUBNET));
    w.nad("b", &w.bridge("e2ebr1", BRIDGE_SUBNET));
    w.nad("c", &w.macvlan(MACVLAN_SUBNET));
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "a,b,c")]);
    let rt = w.runtime(json!({}));
    let server = w.cluster.standin().unwrap();
    // Daemon mode: steady state is when the watch caches hold the pod and its NADs.
    if let Some(d) = &w.daemon {
        d.wait_cached("pods", &w.ns, &sb.pod.name);
        for n in ["a", "b", "c"] {
            d.wait_nad_loaded(&w.ns, n);
        }
    }
    server.clear_requests();

    w.add_ok(&rt, &sb);
    // Events are sent after the reply by a detached process: wait for the four to arrive.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
        .count()
        < 4
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The daemon's watches (long-lived, started before) are not the ADD's requests.
    let log: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| !r.query.contains("watch=true"))
        .collect();
    let shown: Vec<String> = log
        .iter()
        .map(|r| format!("{} {}?{} -> {}", r.method, r.path, r.query, r.status))
        .collect();
    eprintln!(
        "{test}: {} API requests for one ADD with 3 secondaries:\n  {}",
        log.len(),
        shown.join("\n  ")
    );
    let count = |method: &str, pred: &dyn Fn(&str) -> bool| {
        log.iter()
            .filter(|r| r.method == method && pred(&r.path))
            .count()
    };
    let pod_path = format!("/api/v1/namespaces/{}/pods/{}", w.ns, sb.pod.name);
    let nads = format!(
        "/apis/k8s.cni.cncf.io/v1/namespaces/{}/network-attachment-definitions",
        w.ns
    );
    // Daemon mode (issue 8): the pod and the NADs come from the watch caches: no read at all.
    let reads = if w.daemon.is_some() { 0 } else { 1 };
    assert_eq!(count("GET", &|p| p == pod_path), reads, "{shown:#?}");
    // Every NAD read with GET by name, each once; never a LIST.
    let mut nad_gets: Vec<&str> = log
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with(&nads))
        .map(|r| r.path.as_str())
        .collect();
    nad_gets.sort();
    let want: Vec<String> = ["a", "b", "c"]
        .iter()
        .filter(|_| w.daemon.is_none())
        .map(|n| format!("{nads}/{n}"))
        .collect();
    assert_eq!(nad_gets, want, "{shown:#?}");
    assert_eq!(
        count("GET", &|p| p.ends_with("/network-attachment-definitions")),
        0
    );
    assert_eq!(count("GET", &|p| p.ends_with("/pods")), 0, "no pod LIST");
    // The status is one PATCH of pods/status; the pod is never PUT.
    assert_eq!(
        count("PATCH", &|p| p == format!("{pod_path}/status")),
        1,
        "{shown:#?}"
    );
    assert_eq!(count("PATCH", &|_| true), 1, "{shown:#?}");
    assert_eq!(count("PUT", &|_| true), 0, "{shown:#?}");
    // One AddedInterface event per attachment, and nothing else.
    assert_eq!(count("POST", &|p| p.ends_with("/events")), 4, "{shown:#?}");
    assert_eq!(log.len(), 4 * reads + 1 + 4, "{shown:#?}");
    assert!(log.iter().all(|r| r.status < 300), "{shown:#?}");
    // All of them as the ServiceAccount bound to deploy's ClusterRole, none as the test's admin.
    let users: Vec<Option<String>> = server
        .requests_by_user()
        .into_iter()
        .map(|(_, u)| u)
        .collect();
    // (With the daemon's watches among them in daemon mode.)
    assert!(users.len() >= log.len());
    assert!(
        users
            .iter()
            .all(|u| u.as_deref() == Some(w.plexus_user.as_str())),
        "{users:#?}"
    );

    w.assert_status(
        &sb,
        &[
            (CLUSTER_NETWORK, "eth0", true),
            (&nad_name(&w.ns, "a"), "net1", false),
            (&nad_name(&w.ns, "b"), "net2", false),
            (&nad_name(&w.ns, "c"), "net3", false),
        ],
    );
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn events_are_posted_after_the_reply() {
    let test = "events_are_posted_after_the_reply";
    if !standin_only(test, "it holds the stand-in's event POSTs back") {
        return;
    }
    let w = world(test);
    w.nad("a", &w.macvlan(MACVLAN_SUBNET));
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "a")]);
    let rt = w.runtime(json!({}));
    let server = w.cluster.standin().unwrap();
    // Every event POST is answered 3 s late (the request log records a request when it is answered).
    server.inject(FaultSpec::latency(3000).on("POST", "/events"));
    server.clear_requests();
    let posted = || {
        server
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/events") && r.status == 201)
            .count()
    };

    w.add_ok(&rt, &sb);
    // ADD has replied while its events are still on their way: it never waited for them.
    assert_eq!(posted(), 0, "ADD waited for its event POSTs");
    // They arrive afterwards, from plexus's detached sender: one AddedInterface per attachment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while posted() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        posted(),
        2,
        "both AddedInterface events arrive after the reply"
    );
    server.faults().clear();
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn status_patch_conflict_is_retried() {
    let test = "status_patch_conflict_is_retried";
    if !standin_only(test, "it injects a 409 into the stand-in") {
        return;
    }
    let w = world(test);
    w.nad("macvlan-net", &w.macvlan(MACVLAN_SUBNET));
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "macvlan-net")]);
    let rt = w.runtime(json!({}));
    let server = w.cluster.standin().unwrap();
    let status_path = format!("/namespaces/{}/pods/{}/status", w.ns, sb.pod.name);
    server.inject(FaultSpec::status(409).on("PATCH", &status_path).times(1));
    server.clear_requests();

    w.add_ok(&rt, &sb);
    w.wait_status_writes();
    let patches: Vec<u16> = server
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.status)
        .collect();
    assert_eq!(patches, [409, 200], "one conflict, then the write");
    assert_macvlan_net_status(&w, &sb);
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn unavailable_api_beyond_the_budget_fails_with_try_again_later() {
    let test = "unavailable_api_beyond_the_budget_fails_with_try_again_later";
    if !standin_only(test, "it injects a 503 storm into the stand-in") {
        return;
    }
    let w = world(test);
    w.nad("macvlan-net", &w.macvlan(MACVLAN_SUBNET));
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "macvlan-net")]);
    let rt = w.runtime(json!({"apiTimeoutSeconds": 1, "apiBudgetSeconds": 2}));
    let server = w.cluster.standin().unwrap();
    let pod_path = format!("/namespaces/{}/pods/{}", w.ns, sb.pod.name);
    if let Some(d) = &w.daemon {
        // Daemon mode: with the pod and its NAD in the watch caches, ADD needs no API request before its
        // reply (statusWrite: afterReply). A 503 storm on the status write does not fail it: the write is
        // retried with backoff and lands once the API answers again.
        d.wait_cached("pods", &w.ns, &sb.pod.name);
        d.wait_nad_loaded(&w.ns, "macvlan-net");
        let status_path = format!("{pod_path}/status");
        server.inject(FaultSpec::status(503).on("PATCH", &status_path));
        server.clear_requests();
        w.add_ok(&rt, &sb);
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.count_requests("PATCH", &status_path) < 3 {
            assert!(Instant::now() < deadline, "the status write is retried");
            std::thread::sleep(Duration::from_millis(10));
        }
        server.faults().clear();
        assert_macvlan_net_status(&w, &sb);
        w.del_ok(&rt, &sb);
        w.assert_clean(&sb);
        return;
    }
    // Thin mode reads the pod first: the storm hits the request the ADD cannot do without.
    let (verb, path) = ("GET", pod_path.clone());
    server.inject(FaultSpec::status(503).on(verb, &path).retry_after(1));
    server.clear_requests();

    let started = Instant::now();
    let err = w.add_fails(&rt, &sb);
    let took = started.elapsed();
    assert_eq!(err.code, Some(11), "try again later: {err}");
    let text = err.text();
    assert!(text.contains(&sb.pod.name), "names the pod: {err}");
    assert!(text.contains("503"), "says what the API answered: {err}");
    assert!(
        took < Duration::from_secs(10),
        "bounded by apiBudgetSeconds: {took:?}"
    );
    let tries = server.count_requests(verb, &path);
    assert!(tries >= 2, "retried within the budget ({tries} {verb}s)");
    assert_eq!(server.count_requests("PATCH", ""), 0);
    w.assert_clean(&sb);
    // The runtime's DEL (CNI-23) while the API still fails: with no cache it may ask the API for the
    // pod's networks, within the budget, and must succeed without it.
    let started = Instant::now();
    w.del_ok(&rt, &sb);
    assert!(started.elapsed() < Duration::from_secs(10), "bounded DEL");
    w.assert_clean(&sb);
    // The test's own reads go through the same path: lift the storm first.
    server.faults().clear();
    w.assert_no_status(&sb);
}

/// Issue 21: the kubelet's periodic cleanup repeats the DEL of sandboxes long gone, whose pods are gone too.
/// ADD writes its cache before any delegate runs, so a DEL with no cache has nothing of the pod's to tear
/// down: it must not ask the API for the pod (each such DEL used to cost a 404).
#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn del_of_a_sandbox_plexus_never_attached_reads_nothing_from_the_api() {
    let test = "del_of_a_sandbox_plexus_never_attached_reads_nothing_from_the_api";
    let w = world(test);
    w.nad("a", &w.macvlan(MACVLAN_SUBNET));
    let sb = w.sandbox("gone", &[(NETWORKS_ANNOTATION, "a")]);
    w.cluster.delete_pod(&w.ns, &sb.pod.name);
    let pod_path = format!("/namespaces/{}/pods/{}", w.ns, sb.pod.name);
    let server = w
        .cluster
        .standin_part(test, "the DELs' pod reads, counted at the stand-in");
    let before = server.map(|api| api.count_requests("GET", &pod_path));
    let rt = w.runtime(json!({}));
    w.del_ok(&rt, &sb);
    w.del_ok(&rt, &sb);
    if let (Some(api), Some(before)) = (server, before) {
        assert_eq!(
            api.count_requests("GET", &pod_path) - before,
            0,
            "the DELs read pod {pod_path}\nplexus log:\n{}",
            w.log()
        );
    }
    w.assert_clean(&sb);
}
