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
    k8s::annotations::{DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION},
    netconf::NetworkConfig,
    resultcache::encode_bytes,
};
use plexus_e2e::{
    apiserver::FaultSpec,
    harness::{
        chaos::{chain, install_recorder, recorder, records},
        cluster::standin_only,
        forward::closed_port,
        rbac,
        runtime::{CniRuntime, Op, kubelet_args, run_network},
        world::{
            BRIDGE_SUBNET, CLUSTER_BRIDGE, CLUSTER_NETWORK, CLUSTER_SUBNET, MACVLAN_SUBNET, MASTER,
            Sandbox, World,
        },
    },
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

/// The address of `ifname` in a CNI 1.0.0 result.
fn result_address(result: &Value, ifname: &str) -> Option<IpNet> {
    let idx = result["interfaces"]
        .as_array()?
        .iter()
        .position(|i| i["name"] == ifname)?;
    result["ips"]
        .as_array()?
        .iter()
        .find(|ip| ip["interface"].as_u64() == Some(idx as u64))?["address"]
        .as_str()?
        .parse()
        .ok()
}

fn in_subnet(addr: &IpNet, subnet: &str) -> bool {
    let s: IpNet = subnet.parse().unwrap();
    s.contains(&addr.addr()) && addr.prefix_len() == s.prefix_len()
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
    let sandbox = result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "eth0")
        .unwrap()["sandbox"]
        .clone();
    assert_eq!(sandbox, json!(sb.path()), "{result:#}");
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
