//! Namespace isolation end to end (issue 6; NPWG-65; docs/multus-compat.md,
//! "Config keys" and "Annotations"): with `namespaceIsolation` on, a pod may select
//! NetworkAttachmentDefinitions of its own namespace and of `globalNamespaces` only — in the
//! networks annotation (both forms) and, unlike Go Multus, in the
//! `v1.multus-cni.io/default-network` annotation; the node's own networks (`clusterNetwork`,
//! `defaultNetworks` from `multusNamespace`) are not the pod's choice and stay allowed. A refusal
//! is CNI code 7 naming the pod, the network and the rule, leaves a Warning event and nothing else.
//! The decision itself is unit-tested in `src/pure/annotations.rs` (`check_isolation`) and
//! `src/seams/k8s/client.rs`; these tests prove the whole path with real plugins and an API server.
//!
//! Run (as root): `cargo test -p plexus-e2e --test isolation -- --include-ignored` (with
//! `E2E_KUBECONFIG` against a real API server; nothing here needs the stand-in).

use std::path::PathBuf;

use plexus::pure::annotations::{DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION};
use plexus_e2e::harness::{
    runtime::{CniFailure, CniRuntime},
    world::{BRIDGE_SUBNET, CLUSTER_NETWORK, MACVLAN_SUBNET, Sandbox, World},
};
use serde_json::{Value, json};

fn plexus() -> PathBuf {
    std::env::var_os("E2E_PLEXUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_plexus-under-test")))
}

/// A refused ADD: code 7 naming the pod, the network and isolation; a Warning event about the network;
/// nothing attached or left, and the runtime's DEL (CNI-23) succeeds.
fn assert_refused(w: &World, rt: &CniRuntime, sb: &Sandbox, network: &str, err: &CniFailure) {
    assert_eq!(err.code, Some(7), "{err}");
    let text = err.text();
    let pod = format!("{}/{}", sb.pod.namespace, sb.pod.name);
    assert!(text.contains(&pod), "names the pod {pod}: {err}");
    assert!(text.contains(network), "names the network {network}: {err}");
    assert!(text.contains("isolation"), "says why: {err}");
    let warnings = w.warnings(sb);
    assert!(
        warnings.iter().any(|(_, m)| m.contains(network)),
        "a Warning event about {network}: {warnings:?}"
    );
    w.assert_no_status(sb);
    w.assert_clean(sb);
    w.del_ok(rt, sb);
    w.assert_clean(sb);
}

fn gateway_bridge(w: &World, bridge: &str) -> Value {
    let mut b = w.bridge(bridge, BRIDGE_SUBNET);
    b["isGateway"] = json!(true);
    b
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn isolation_refuses_other_namespaces_in_both_annotation_forms_but_not_the_pods_own() {
    let mut w = World::new(
        "isolation_refuses_other_namespaces_in_both_annotation_forms_but_not_the_pods_own",
        &plexus(),
    );
    let other = w.cluster.create_namespace("other");
    w.cluster
        .create_nad(&other, "remote-net", Some(&w.macvlan(MACVLAN_SUBNET)));
    w.nad("local-net", &w.macvlan(MACVLAN_SUBNET));
    let rt = w.runtime(json!({"namespaceIsolation": true}));
    let remote = format!("{other}/remote-net");

    // JSON form with a namespace key (the text form is in suite.rs).
    let json_form = json!([{"name": "remote-net", "namespace": other}]).to_string();
    let sb = w.sandbox("json", &[(NETWORKS_ANNOTATION, &json_form)]);
    let err = w.add_fails(&rt, &sb);
    assert_refused(&w, &rt, &sb, &remote, &err);

    // One allowed element does not let a refused one through: the whole ADD fails (DECIDE-A1).
    let sb = w.sandbox(
        "mixed",
        &[(NETWORKS_ANNOTATION, &format!("local-net,{remote}"))],
    );
    let err = w.add_fails(&rt, &sb);
    assert_refused(&w, &rt, &sb, &remote, &err);

    // The pod's own namespace, named explicitly, is always allowed.
    let sb = w.sandbox(
        "own",
        &[(NETWORKS_ANNOTATION, &format!("{}/local-net", w.ns))],
    );
    w.add_ok(&rt, &sb);
    w.assert_status(
        &sb,
        &[
            (CLUSTER_NETWORK, "eth0", true),
            (&format!("{}/local-net", w.ns), "net1", false),
        ],
    );
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn global_namespaces_are_allowed_and_setting_them_replaces_default() {
    let mut w = World::new(
        "global_namespaces_are_allowed_and_setting_them_replaces_default",
        &plexus(),
    );
    let shared = w.cluster.create_namespace("shared");
    let third = w.cluster.create_namespace("third");
    w.cluster
        .create_nad(&shared, "shared-net", Some(&w.macvlan(MACVLAN_SUBNET)));
    w.cluster
        .create_nad(&third, "third-net", Some(&w.macvlan(MACVLAN_SUBNET)));
    // A list with blanks and empty entries, as an operator might write it.
    let rt = w.runtime(json!({
        "namespaceIsolation": true,
        "globalNamespaces": format!(" nothing-here , {shared},, "),
    }));

    let shared_ref = format!("{shared}/shared-net");
    let sb = w.sandbox("toshared", &[(NETWORKS_ANNOTATION, &shared_ref)]);
    w.add_ok(&rt, &sb);
    w.assert_status(
        &sb,
        &[
            (CLUSTER_NETWORK, "eth0", true),
            (&shared_ref, "net1", false),
        ],
    );
    w.check_ok(&rt, &sb);
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);

    // A namespace not in the list stays refused.
    let third_ref = format!("{third}/third-net");
    let sb = w.sandbox("tothird", &[(NETWORKS_ANNOTATION, &third_ref)]);
    let err = w.add_fails(&rt, &sb);
    assert_refused(&w, &rt, &sb, &third_ref, &err);

    // Without isolation the same reference works (the refusal above is isolation's, nothing else's).
    let open = w.runtime(json!({}));
    let sb = w.sandbox("open", &[(NETWORKS_ANNOTATION, &third_ref)]);
    w.add_ok(&open, &sb);
    w.del_ok(&open, &sb);
    w.assert_clean(&sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn the_default_network_annotation_obeys_isolation() {
    // Go Multus lets this annotation bypass isolation
    // (docs/multus-compat.md, "Annotations"); plexus does not.
    let mut w = World::new("the_default_network_annotation_obeys_isolation", &plexus());
    let other = w.cluster.create_namespace("other");
    w.cluster
        .create_nad(&other, "alt", Some(&gateway_bridge(&w, "e2edn1")));
    let alt = format!("{other}/alt");

    let rt = w.runtime(json!({"namespaceIsolation": true}));
    let sb = w.sandbox("refused", &[(DEFAULT_NETWORK_ANNOTATION, &alt)]);
    let err = w.add_fails(&rt, &sb);
    assert_refused(&w, &rt, &sb, &alt, &err);
    assert!(
        !w.host.link_names().contains(&"e2edn1".to_string()),
        "the refused network's plugin never ran"
    );

    // In a global namespace it is allowed, and replaces the cluster network on eth0.
    let rt = w.runtime(json!({"namespaceIsolation": true, "globalNamespaces": other}));
    let sb = w.sandbox("allowed", &[(DEFAULT_NETWORK_ANNOTATION, &alt)]);
    w.add_ok(&rt, &sb);
    w.assert_status(&sb, &[(&alt, "eth0", true)]);
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn the_nodes_default_networks_are_not_subject_to_isolation() {
    // `defaultNetworks` (and `clusterNetwork`) come from the node's config and `multusNamespace`, not from
    // the pod: isolation does not apply to them (docs/multus-compat.md, "Config keys").
    let mut w = World::new(
        "the_nodes_default_networks_are_not_subject_to_isolation",
        &plexus(),
    );
    w.nad("node-net", &w.macvlan(MACVLAN_SUBNET));
    let elsewhere = w.cluster.create_namespace("apps");
    let rt = w.runtime(json!({"namespaceIsolation": true, "defaultNetworks": ["node-net"]}));
    let sb = w.sandbox_in(&elsewhere, "app", &[]);
    w.add_ok(&rt, &sb);
    w.assert_status(
        &sb,
        &[
            (CLUSTER_NETWORK, "eth0", true),
            (&format!("{}/node-net", w.ns), "net1", false),
        ],
    );
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}
