//! Binary-level acceptance tests: the built `plexus` executable, driven exactly as a container runtime drives
//! it (`CNI_*` environment, config on stdin, one JSON reply on stdout), with the recording delegate
//! `plexus-recorder` as every delegate. Spec items are cited by their ids (CNI-n, NPWG-n, EXT-n),
//! which docs/spec-ids.md lists; the Go Multus behaviour plexus keeps or fixes is described in
//! `docs/multus-compat.md`.
//!
//! Needs a network namespace plexus can enter (it checks the pod netns for interface-name collisions before
//! each ADD): run as root, or with unprivileged user namespaces and util-linux `unshare` (see
//! `tests/common/mod.rs`).
//!
//! Not covered here: explicit interface names on ADD (they come from the `k8s.v1.cni.cncf.io/networks`
//! annotation, which needs the Kubernetes seam; explicit names replayed from a Go Multus cache on DEL are
//! covered), and anything needing a Kubernetes API.

mod common;

use std::{fs, path::Path, time::Duration};

use common::{
    CID, Harness, Record, VERSIONS, at_least, calls, list_dir, merge, recorder, recorder_list,
    without, write_executable,
};
use plexus_testsupport::proc::runs;
use serde_json::{Value, json};

/// Who error messages name for the pod of [`CRI_ARGS`].
const WHO: &str = "ns1/pod1/uid1";

/// `CNI_ARGS` as a CRI runtime sends it (CNI-51), plus a custom key given twice.
const CRI_ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod1;\
                        K8S_POD_INFRA_CONTAINER_ID=cid-1;K8S_POD_UID=uid1;CUSTOM=a=b;CUSTOM=c";
/// What delegates get for [`CRI_ARGS`]: each key once, the runtime's (last) value winning
/// (docs/multus-compat.md, "Delegate arguments").
const CRI_ARGS_TO_DELEGATES: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod1;\
                                     K8S_POD_INFRA_CONTAINER_ID=cid-1;K8S_POD_UID=uid1;CUSTOM=c";
/// The pod keys out of Multus order, no `IgnoreUnknown`.
const SHUFFLED_ARGS: &str = "K8S_POD_UID=uid1;CUSTOM=a=b;K8S_POD_NAME=pod1;K8S_POD_NAMESPACE=ns1;\
                             K8S_POD_INFRA_CONTAINER_ID=cid-1;CUSTOM=c";
/// What delegates get for [`SHUFFLED_ARGS`]: `IgnoreUnknown=true` then the pod keys in Multus order
/// (docs/multus-compat.md, "Delegate arguments").
const SHUFFLED_ARGS_TO_DELEGATES: &str = "IgnoreUnknown=true;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod1;\
                                          K8S_POD_INFRA_CONTAINER_ID=cid-1;K8S_POD_UID=uid1;CUSTOM=c";

/// The three networks' names and interfaces.
const NAMES: [&str; 3] = ["cluster", "second", "third"];
const IFNAMES: [&str; 3] = ["eth0", "net1", "net2"];

// ---------------------------------------------------------------------------------------------------
// The three-network topology
// ---------------------------------------------------------------------------------------------------

/// Where the networks come from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    /// `clusterNetwork` (a name in confDir) and `defaultNetworks` (a name and a file path).
    ConfDir,
    /// Inline `delegates`.
    Inline,
}

/// Conflists, `capabilities` and `runtimeConfig` exist from 0.3.0.
fn has_lists(v: &str) -> bool {
    at_least(v, "0.3.0")
}

fn port_mappings() -> Value {
    json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}])
}

/// The runtime's `runtimeConfig` in the plexus config: a declared capability and an undeclared key.
fn runtime_config() -> Value {
    json!({"portMappings": port_mappings(), "io.kubernetes.cri.pod-annotations": {"a": "b"}})
}

/// cluster (a conf with plugin-specific keys), second (a conf), third (a conflist of two recorders from 0.3.0
/// on, a conf before). Every plugin from 0.3.0 on declares `portMappings`, so only NPWG-66 keeps the
/// runtime's value away from the secondaries.
fn networks(v: &str) -> [Value; 3] {
    let caps = has_lists(v);
    let mut cluster = recorder(
        "cluster",
        v,
        json!({"custom": {"keep": [1, "two", null]}, "ipam": {"type": "host-local", "subnet": "10.1.0.0/16"}}),
    );
    let mut second = recorder("second", v, json!({"mtu": 1400}));
    if caps {
        merge(
            &mut cluster,
            json!({"capabilities": {"portMappings": true}}),
        );
        merge(&mut second, json!({"capabilities": {"portMappings": true}}));
    }
    let third = if has_lists(v) {
        recorder_list(
            "third",
            v,
            vec![
                json!({"type": "plexus-recorder", "step": 1, "capabilities": {"portMappings": true}}),
                json!({"type": "plexus-recorder", "step": 2}),
            ],
        )
    } else {
        recorder("third", v, json!({"step": 1}))
    };
    [cluster, second, third]
}

/// Set the recorder behaviour of a network: on its last plugin for a conflist.
fn set_behaviour(net: &mut Value, behaviour: Value) {
    let target = match net.get_mut("plugins").and_then(Value::as_array_mut) {
        Some(plugins) => plugins.last_mut().expect("a conflist has plugins"),
        None => net,
    };
    merge(target, json!({ "recorder": behaviour }));
}

struct Topology {
    version: String,
    config: Value,
    networks: [Value; 3],
}

fn topology(h: &Harness, v: &str, layout: Layout) -> Topology {
    topology_with(h, v, layout, |_| {})
}

/// The topology with `edit` applied to the networks before they are written, in `layout`.
fn topology_with(
    h: &Harness,
    v: &str,
    layout: Layout,
    edit: impl FnOnce(&mut [Value; 3]),
) -> Topology {
    let mut nets = networks(v);
    edit(&mut nets);
    let mut extra = match layout {
        Layout::ConfDir => {
            h.write_conf("00-cluster.conf", &nets[0]);
            h.write_conf("10-second.conf", &nets[1]);
            let third = if has_lists(v) {
                "20-third.conflist"
            } else {
                "20-third.conf"
            };
            let third = h.write_conf(third, &nets[2]);
            json!({"clusterNetwork": "cluster", "defaultNetworks": ["second", third]})
        }
        Layout::Inline => json!({ "delegates": nets.clone() }),
    };
    if has_lists(v) {
        merge(&mut extra, json!({ "runtimeConfig": runtime_config() }));
    }
    Topology {
        version: v.to_string(),
        config: h.config(v, extra),
        networks: nets,
    }
}

/// Per network, the summaries of its plugins (see `Record::summary`) with `command`.
fn plugin_calls(command: &str, v: &str) -> Vec<Vec<String>> {
    let third = if has_lists(v) {
        vec![
            format!("{command} third net2 #1"),
            format!("{command} third net2 #2"),
        ]
    } else {
        vec![format!("{command} third net2 #1")]
    };
    vec![
        vec![format!("{command} cluster eth0")],
        vec![format!("{command} second net1")],
        third,
    ]
}

/// Every plugin's ADD, in order (NPWG-56, CNI-25).
fn add_calls(v: &str) -> Vec<String> {
    plugin_calls("ADD", v).concat()
}

/// DEL of networks `0..=last`: networks in reverse, each list's plugins in reverse (NPWG-63, CNI-26).
fn del_calls(v: &str, last: usize) -> Vec<String> {
    plugin_calls("DEL", v)
        .into_iter()
        .take(last + 1)
        .rev()
        .flat_map(|p| p.into_iter().rev())
        .collect()
}

/// The stdin each plugin's ADD must get, without `prevResult`, in [`add_calls`] order: the plugin object,
/// the list's `name` and `cniVersion` injected (CNI-29, NPWG-61), plugin-specific keys kept (CNI-3), and the
/// runtime's declared capability only for the cluster network (CNI-30, NPWG-66).
fn expected_add_stdins(t: &Topology) -> Vec<Value> {
    let v = t.version.as_str();
    let mut cluster = t.networks[0].clone();
    if has_lists(v) {
        merge(
            &mut cluster,
            json!({"runtimeConfig": {"portMappings": port_mappings()}}),
        );
    }
    let mut out = vec![cluster, t.networks[1].clone()];
    match t.networks[2].get("plugins").and_then(Value::as_array) {
        Some(plugins) => {
            for p in plugins {
                let mut p = p.clone();
                merge(&mut p, json!({"name": "third", "cniVersion": v}));
                out.push(p);
            }
        }
        None => out.push(t.networks[2].clone()),
    }
    out
}

/// ADD the topology with `CRI_ARGS`; asserts success.
fn add_ok(h: &Harness, t: &Topology) -> Value {
    h.cmd("ADD")
        .args(CRI_ARGS)
        .config(&t.config)
        .run()
        .result()
        .clone()
}

/// The cached results of the three attachments (libcni's result cache, CNI-44).
fn cached_results(h: &Harness) -> Vec<Value> {
    NAMES
        .iter()
        .zip(IFNAMES)
        .map(|(n, i)| h.result_record(n, CID, i)["result"].clone())
        .collect()
}

fn network_index(r: &Record) -> usize {
    NAMES
        .iter()
        .position(|n| *n == r.network())
        .unwrap_or_else(|| panic!("unexpected network in {r:?}"))
}

// ---------------------------------------------------------------------------------------------------
// 1. ADD with three networks
// ---------------------------------------------------------------------------------------------------

fn add_three(v: &str, layout: Layout, args: &str, args_to_delegates: &str) {
    let h = Harness::new();
    let t = topology(&h, v, layout);
    let ctx = format!("cniVersion {v}, {layout:?}");
    let extra_dir = h.path("extra-bin");
    let out = h
        .cmd("ADD")
        .args(args)
        .cni_path(&format!("{}:{}", extra_dir.display(), h.bin.display()))
        .config(&t.config)
        .run();
    let result = out.result().clone();
    let recs = h.take_records();
    assert_eq!(
        calls(&recs),
        add_calls(v),
        "{ctx}: delegates run one after another, cluster network first, on eth0, net1, net2 \
         (NPWG-56, NPWG-64, NPWG-39; docs/multus-compat.md, \"Interface names\")"
    );
    for r in &recs {
        let c = format!("{ctx}: {}", r.summary());
        assert_eq!(r.var("CNI_COMMAND"), "ADD", "{c}");
        assert_eq!(r.var("CNI_CONTAINERID"), CID, "{c}: NPWG-39");
        assert_eq!(r.var("CNI_NETNS"), h.netns_str(), "{c}");
        assert_eq!(
            r.var("CNI_PATH"),
            format!("{}:{}", h.bin.display(), extra_dir.display()),
            "{c}: binDir is searched before CNI_PATH (EXT-5, CNI-24)"
        );
        assert_eq!(
            r.var("CNI_ARGS"),
            args_to_delegates,
            "{c}: IgnoreUnknown, the pod keys in Multus order, the rest once each \
             (CNI-51; docs/multus-compat.md, \"Delegate arguments\")"
        );
    }
    for (r, expected) in recs.iter().zip(expected_add_stdins(&t)) {
        assert_eq!(
            without(&r.stdin, &["prevResult"]),
            expected,
            "{ctx}: stdin of {} (CNI-29, CNI-30, NPWG-61, NPWG-66)",
            r.summary()
        );
    }
    let results = cached_results(&h);
    for r in &recs {
        let first_of_network = !r.stdin.get("step").is_some_and(|s| s == 2);
        if first_of_network {
            assert!(
                r.stdin.get("prevResult").is_none(),
                "{ctx}: no prevResult on the first ADD of a network (CNI-29): {}",
                r.summary()
            );
        } else {
            let prev = &r.stdin["prevResult"];
            assert_eq!(
                prev, &results[2],
                "{ctx}: the list's second plugin gets the first one's result (CNI-25)"
            );
            assert_eq!(prev["cniVersion"], v, "{ctx}");
            assert_eq!(prev["interfaces"][0]["name"], "net2", "{ctx}");
        }
    }
    assert_eq!(
        result, results[0],
        "{ctx}: the result printed is the cluster network's"
    );
    assert_eq!(result["cniVersion"], v, "{ctx}");
    assert!(
        h.cache_file(CID).is_file(),
        "{ctx}: the per-container cache is written (EXT-6)"
    );
}

#[test]
fn add_runs_networks_from_conf_dir_in_order_with_their_env_and_stdin_every_version() {
    for v in VERSIONS {
        add_three(
            v,
            Layout::ConfDir,
            SHUFFLED_ARGS,
            SHUFFLED_ARGS_TO_DELEGATES,
        );
    }
}

#[test]
fn add_runs_inline_delegates_in_order_with_their_env_and_stdin_every_version() {
    for v in VERSIONS {
        add_three(v, Layout::Inline, CRI_ARGS, CRI_ARGS_TO_DELEGATES);
    }
}

#[test]
fn add_injects_the_plexus_version_into_a_conflist_without_one() {
    // A list without cniVersion runs at plexus's version, and DEL sees the same (docs/multus-compat.md,
    // "DEL").
    for v in VERSIONS.iter().filter(|v| has_lists(v)) {
        let h = Harness::new();
        let list = json!({"name": "nover", "plugins": [{"type": "plexus-recorder", "step": 1}]});
        let cfg = h.config(
            v,
            json!({"delegates": [recorder("cluster", v, json!({})), list]}),
        );
        h.cmd("ADD").config(&cfg).run().ok();
        h.cmd("DEL").config(&cfg).run().ok();
        let recs = h.take_records();
        assert_eq!(
            calls(&recs),
            [
                "ADD cluster eth0",
                "ADD nover net1 #1",
                "DEL nover net1 #1",
                "DEL cluster eth0"
            ],
            "cniVersion {v}"
        );
        for r in &recs[1..3] {
            assert_eq!(r.stdin["cniVersion"], *v, "cniVersion {v}: {}", r.summary());
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// 2. The result: the cluster network's, in the plexus config's version
// ---------------------------------------------------------------------------------------------------

/// Check the result's shape for `v` and that it carries `address` (CIDR); `eth0` is listed when the delegate
/// reported interfaces (a 0.1.0/0.2.0 result has none to convert).
fn assert_result_shape(result: &Value, v: &str, address: &str, interfaces: bool, ctx: &str) {
    assert_eq!(result["cniVersion"], v, "{ctx}");
    if at_least(v, "0.3.0") {
        if interfaces {
            assert_eq!(result["interfaces"][0]["name"], "eth0", "{ctx}");
        }
        let ip = &result["ips"][0];
        assert_eq!(ip["address"], address, "{ctx}");
        if at_least(v, "1.0.0") {
            assert!(
                ip.get("version").is_none(),
                "{ctx}: no ips[].version from 1.0.0: {result}"
            );
        } else {
            assert_eq!(ip["version"], "4", "{ctx}: 0.3.x/0.4.0 have ips[].version");
        }
        assert!(result.get("ip4").is_none(), "{ctx}: {result}");
    } else {
        assert_eq!(
            result["ip4"]["ip"], address,
            "{ctx}: 0.1.0/0.2.0 results have ip4: {result}"
        );
        assert!(result["ip4"]["gateway"].is_string(), "{ctx}: {result}");
        assert!(result.get("interfaces").is_none(), "{ctx}: {result}");
        assert!(result.get("ips").is_none(), "{ctx}: {result}");
    }
}

#[test]
fn result_is_converted_to_the_plexus_config_version_every_version() {
    // docs/multus-compat.md, "Result version": a 1.0.0 (and a 0.2.0) delegate, every plexus
    // version.
    for delegate_version in ["1.0.0", "0.2.0"] {
        for v in VERSIONS {
            let ctx = format!("delegate {delegate_version}, plexus {v}");
            let h = Harness::new();
            let cfg = h.config(
                v,
                json!({"delegates": [
                    recorder("cluster", delegate_version, json!({"ip": "192.0.2.10/24"})),
                    recorder("second", v, json!({"ip": "198.51.100.7/24"})),
                ]}),
            );
            let out = h.cmd("ADD").config(&cfg).run();
            let interfaces = at_least(delegate_version, "0.3.0");
            assert_result_shape(out.result(), v, "192.0.2.10/24", interfaces, &ctx);
        }
    }
}

#[test]
fn a_result_that_cannot_be_given_in_the_plexus_version_fails_and_rolls_back() {
    // A 1.0.0 result without addresses has no 0.2.0 form: code 1, and nothing stays attached.
    let h = Harness::new();
    let no_ips = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}]});
    let cfg = h.config(
        "0.2.0",
        json!({"delegates": [
            recorder("cluster", "1.0.0", json!({"recorder": {"add": {"result": no_ips}}})),
            recorder("second", "0.2.0", json!({})),
        ]}),
    );
    let out = h.cmd("ADD").args(CRI_ARGS).config(&cfg).run();
    let err = out.error(1);
    assert!(
        out.msg().contains("cluster") && out.msg().contains(WHO),
        "{out:?}"
    );
    assert_eq!(err["cniVersion"], "0.2.0", "{out:?}");
    assert_eq!(
        h.take_calls(),
        [
            "ADD cluster eth0",
            "ADD second net1",
            "DEL second net1",
            "DEL cluster eth0"
        ]
    );
    h.assert_no_trace(CID, "unconvertible result");
}

// ---------------------------------------------------------------------------------------------------
// 3. DEL
// ---------------------------------------------------------------------------------------------------

/// DEL of the whole topology: reverse order, the ADD's request configs, `prevResult` from 0.4.0 on.
fn assert_del_mirrors_add(t: &Topology, add: &[Record], del: &[Record], ctx: &str) {
    let v = t.version.as_str();
    assert_eq!(
        calls(del),
        del_calls(v, 2),
        "{ctx}: DEL runs every network in reverse order (NPWG-63, CNI-26)"
    );
    for r in del {
        let c = format!("{ctx}: {}", r.summary());
        let twin = add
            .iter()
            .find(|a| a.summary() == r.summary().replacen("DEL", "ADD", 1))
            .unwrap_or_else(|| panic!("{c}: no ADD of this plugin"));
        assert_eq!(r.var("CNI_COMMAND"), "DEL", "{c}");
        for k in ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"] {
            assert_eq!(r.var(k), twin.var(k), "{c}: {k} as on ADD (NPWG-39)");
        }
        assert_eq!(
            without(&r.stdin, &["prevResult"]),
            without(&twin.stdin, &["prevResult"]),
            "{c}: the DEL request config is the ADD's (lossless cache; \
             docs/multus-compat.md, \"Delegate arguments\")"
        );
    }
}

/// `prevResult` of each DEL: the network's cached result from 0.4.0 on, none before (CNI-14, CNI-26).
fn assert_del_prev_results(del: &[Record], results: &[Value], v: &str, ctx: &str) {
    for r in del {
        let prev = r.stdin.get("prevResult");
        if at_least(v, "0.4.0") {
            assert_eq!(
                prev,
                Some(&results[network_index(r)]),
                "{ctx}: {} gets the cached ADD result as prevResult",
                r.summary()
            );
        } else {
            assert!(
                prev.is_none(),
                "{ctx}: {} gets no prevResult before 0.4.0",
                r.summary()
            );
        }
    }
}

#[test]
fn del_tears_down_in_reverse_with_the_add_configs_every_version() {
    for layout in [Layout::Inline, Layout::ConfDir] {
        for v in VERSIONS {
            let ctx = format!("cniVersion {v}, {layout:?}");
            let h = Harness::new();
            let t = topology(&h, v, layout);
            add_ok(&h, &t);
            let add = h.take_records();
            let results = cached_results(&h);
            let out = h.cmd("DEL").args(CRI_ARGS).config(&t.config).run();
            out.ok();
            let del = h.take_records();
            assert_del_mirrors_add(&t, &add, &del, &ctx);
            assert_del_prev_results(&del, &results, v, &ctx);
            for r in &del {
                assert_eq!(r.var("CNI_NETNS"), h.netns_str(), "{ctx}");
            }
            h.assert_no_trace(CID, &ctx);
        }
    }
}

#[test]
fn del_after_the_network_files_are_gone_uses_the_cache_alone_every_version() {
    // EXT-6: the cache holds each delegate's exact config, so DEL needs nothing else.
    for v in VERSIONS {
        let ctx = format!("cniVersion {v}");
        let h = Harness::new();
        let t = topology(&h, v, Layout::ConfDir);
        add_ok(&h, &t);
        let add = h.take_records();
        let results = cached_results(&h);
        for f in list_dir(&h.conf) {
            fs::remove_file(h.conf.join(f)).unwrap();
        }
        let out = h.cmd("DEL").args(CRI_ARGS).config(&t.config).run();
        out.ok();
        let del = h.take_records();
        assert_del_mirrors_add(&t, &add, &del, &ctx);
        assert_del_prev_results(&del, &results, v, &ctx);
        h.assert_no_trace(CID, &ctx);
    }
}

#[test]
fn del_without_netns_and_del_twice_succeed_every_version() {
    for v in VERSIONS {
        let ctx = format!("cniVersion {v}");
        let h = Harness::new();
        let t = topology(&h, v, Layout::Inline);
        add_ok(&h, &t);
        h.take_records();
        // CNI-17: DEL works without CNI_NETNS; delegates get it empty.
        h.cmd("DEL")
            .args(CRI_ARGS)
            .no_netns()
            .config(&t.config)
            .run()
            .ok();
        let del = h.take_records();
        assert_eq!(calls(&del), del_calls(v, 2), "{ctx}");
        for r in &del {
            assert_eq!(r.var("CNI_NETNS"), "", "{ctx}: {}", r.summary());
        }
        h.assert_no_trace(CID, &ctx);
        // CNI-16: DEL is idempotent. With no cache left plexus still tears down the config's networks rather
        // than skipping teardown silently (docs/multus-compat.md, "DEL"), and every delegate is told the same
        // attachment.
        h.cmd("DEL")
            .args(CRI_ARGS)
            .no_netns()
            .config(&t.config)
            .run()
            .ok();
        assert_eq!(h.take_calls(), del_calls(v, 2), "{ctx}: second DEL");
        h.assert_no_trace(CID, &format!("{ctx}: second DEL"));
    }
}

#[test]
fn del_tries_every_delegate_and_reports_every_failure_every_version() {
    // NPWG-63: one failure does not stop the others; the final error names the pod and every network.
    for v in VERSIONS {
        let ctx = format!("cniVersion {v}");
        let h = Harness::new();
        let t = topology_with(&h, v, Layout::Inline, |n| {
            set_behaviour(
                &mut n[1],
                json!({"del": {"error": {"code": 11, "msg": "second-is-busy"}}}),
            );
            set_behaviour(
                &mut n[0],
                json!({"del": {"error": {"code": 5, "msg": "cluster-is-broken"}}}),
            );
        });
        add_ok(&h, &t);
        h.take_records();
        let out = h.cmd("DEL").args(CRI_ARGS).config(&t.config).run();
        out.error(11);
        let msg = out.msg();
        for needle in [
            WHO,
            "second-is-busy",
            "cluster-is-broken",
            "\"second\"",
            "\"cluster\"",
        ] {
            assert!(msg.contains(needle), "{ctx}: {needle:?} missing: {out:?}");
        }
        assert!(
            !msg.contains("\"third\""),
            "{ctx}: third succeeded: {out:?}"
        );
        assert_eq!(h.take_calls(), del_calls(v, 2), "{ctx}");
        assert!(
            !h.cache_file(CID).exists(),
            "{ctx}: without retryDeleteOnError the cache goes (docs/multus-compat.md, \"DEL\")"
        );
        assert!(!h.lock_file(CID).exists(), "{ctx}");
    }
}

#[test]
fn del_with_retry_delete_on_error_keeps_the_cache_for_a_retry() {
    // docs/multus-compat.md, "DEL"; Go Multus #926.
    let h = Harness::new();
    let v = "1.0.0";
    let mut t = topology_with(&h, v, Layout::Inline, |n| {
        set_behaviour(
            &mut n[1],
            json!({"del": {"error": {"code": 11, "msg": "busy"}}}),
        );
    });
    merge(&mut t.config, json!({"retryDeleteOnError": true}));
    add_ok(&h, &t);
    h.take_records();
    h.cmd("DEL").config(&t.config).run().error(11);
    assert_eq!(h.take_calls(), del_calls(v, 2));
    assert!(h.cache_file(CID).is_file(), "the cache is kept for a retry");
}

// ---------------------------------------------------------------------------------------------------
// 4. Rollback of a failed ADD
// ---------------------------------------------------------------------------------------------------

#[test]
fn add_failure_at_each_position_rolls_back_what_ran_every_version() {
    // NPWG-62: nothing after the failure runs; CNI-39: the delegate's code is kept; the networks that ran
    // (the failed one included) get DEL in reverse, and nothing of the ADD is left.
    for v in VERSIONS {
        for pos in 0..3 {
            let ctx = format!("cniVersion {v}, failure at {pos} ({})", NAMES[pos]);
            let h = Harness::new();
            let t = topology_with(&h, v, Layout::Inline, |n| {
                set_behaviour(
                    &mut n[pos],
                    json!({"add": {"error": {"code": 7, "msg": format!("boom-{pos}")}}}),
                );
            });
            let out = h.cmd("ADD").args(CRI_ARGS).config(&t.config).run();
            let err = out.error(7);
            assert_eq!(err["cniVersion"], v, "{ctx}: {out:?}");
            let msg = out.msg();
            assert!(
                msg.contains(&format!("boom-{pos}"))
                    && msg.contains(&format!("\"{}\"", NAMES[pos]))
                    && msg.contains(WHO)
                    && msg.contains(IFNAMES[pos]),
                "{ctx}: the message names the pod, the network and the interface: {out:?}"
            );
            let ran: Vec<String> = plugin_calls("ADD", v)
                .into_iter()
                .take(pos + 1)
                .flatten()
                .collect();
            let mut expected = ran;
            expected.extend(del_calls(v, pos));
            assert_eq!(h.take_calls(), expected, "{ctx}");
            h.assert_no_trace(CID, &ctx);
        }
    }
}

#[test]
fn add_rollback_whose_del_fails_reports_both_and_keeps_the_cache_every_version() {
    for v in VERSIONS {
        let ctx = format!("cniVersion {v}");
        let h = Harness::new();
        let t = topology_with(&h, v, Layout::Inline, |n| {
            set_behaviour(
                &mut n[2],
                json!({"add": {"error": {"code": 7, "msg": "boom-third"}}}),
            );
            set_behaviour(
                &mut n[1],
                json!({"del": {"error": {"code": 11, "msg": "second-del-failed"}}}),
            );
        });
        let out = h.cmd("ADD").args(CRI_ARGS).config(&t.config).run();
        out.error(7);
        for needle in [
            "boom-third",
            "second-del-failed",
            "rollback left 1 network(s) attached",
        ] {
            assert!(
                out.msg().contains(needle),
                "{ctx}: {needle:?} missing: {out:?}"
            );
        }
        let mut expected = add_calls(v);
        expected.extend(del_calls(v, 2));
        assert_eq!(
            h.take_calls(),
            expected,
            "{ctx}: the rollback goes on past the failed DEL"
        );
        assert!(
            h.cache_file(CID).is_file(),
            "{ctx}: the cache stays for the runtime's DEL (CNI-23)"
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// 5. Error replies and codes
// ---------------------------------------------------------------------------------------------------

fn simple_config(h: &Harness, v: &str) -> Value {
    h.config(
        v,
        json!({"delegates": [recorder("cluster", v, json!({})), recorder("second", v, json!({}))]}),
    )
}

#[test]
fn missing_or_invalid_environment_is_code_4_naming_the_variables() {
    // CNI-8, CNI-53, CNI-59.
    let h = Harness::new();
    let cfg = simple_config(&h, "1.0.0");
    let out = h
        .cmd("ADD")
        .unset("CNI_CONTAINERID")
        .unset("CNI_IFNAME")
        .no_netns()
        .in_host_netns()
        .config(&cfg)
        .run();
    out.error(4);
    assert_eq!(
        out.msg(),
        "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME] missing",
        "{out:?}"
    );
    let out = h.cmd("CHECK").no_netns().in_host_netns().config(&cfg).run();
    out.error(4);
    assert!(out.msg().contains("CNI_NETNS"), "{out:?}");
    let out = h.cmd("DEL").unset("CNI_CONTAINERID").config(&cfg).run();
    out.error(4);
    assert!(out.msg().contains("[CNI_CONTAINERID]"), "{out:?}");
    let out = h.cmd("DEL").container("-bad").config(&cfg).run();
    out.error(4);
    assert!(out.msg().contains("CNI_CONTAINERID"), "{out:?}");
    let out = h.cmd("DEL").ifname("a/b").config(&cfg).run();
    out.error(4);
    assert!(out.msg().contains("CNI_IFNAME"), "{out:?}");
    let out = h.cmd("FROB").config(&cfg).run();
    out.error(4);
    assert_eq!(out.msg(), "unknown CNI_COMMAND: FROB");
    let out = h.cmd("DEL").args("K8S_POD_NAME").config(&cfg).run();
    out.error(4);
    assert!(out.msg().contains("CNI_ARGS"), "{out:?}");
    assert!(h.records().is_empty(), "no delegate runs");
}

#[test]
fn garbage_stdin_is_code_6() {
    let h = Harness::new();
    for cmd in ["ADD", "DEL", "CHECK", "STATUS", "GC"] {
        for stdin in [&b"{not json"[..], b"", b"[1,2]"] {
            let out = h.cmd(cmd).stdin(stdin).run();
            out.error(6);
            assert!(out.msg().contains("config"), "{cmd} {stdin:?}: {out:?}");
        }
    }
    let out = h
        .cmd("ADD")
        .stdin(&br#"{"name": "x", "namespaceIsolation": "yes"}"#[..])
        .run();
    out.error(6);
    assert!(
        out.msg().contains("namespaceIsolation"),
        "the mistyped key is named: {out:?}"
    );
    assert!(h.records().is_empty());
}

#[test]
fn unsupported_config_version_is_code_1() {
    let h = Harness::new();
    for cmd in ["ADD", "DEL"] {
        let out = h.cmd(cmd).config(&simple_config(&h, "9.9.9")).run();
        out.error(1);
        assert!(out.msg().contains("9.9.9"), "{out:?}");
    }
    let mut cfg = simple_config(&h, "1.0.0");
    cfg["delegates"][1]["cniVersion"] = json!("0.9.9");
    let out = h.cmd("ADD").config(&cfg).run();
    out.error(1);
    assert!(
        out.msg().contains("0.9.9"),
        "a delegate's version too: {out:?}"
    );
    assert!(h.records().is_empty());
}

#[test]
fn check_before_0_4_0_and_status_gc_before_1_1_0_are_code_1() {
    // CNI-19, CNI-20, CNI-22, CNI-41.
    for v in VERSIONS {
        let h = Harness::new();
        let cfg = simple_config(&h, v);
        for (cmd, needs) in [("CHECK", "0.4.0"), ("STATUS", "1.1.0"), ("GC", "1.1.0")] {
            let out = h.cmd(cmd).config(&cfg).run();
            if at_least(v, needs) {
                if cmd == "CHECK" {
                    out.error(3); // allowed, but nothing was added
                } else {
                    out.ok();
                }
            } else {
                out.error(1);
                assert!(
                    out.msg().contains(cmd) && out.msg().contains(needs),
                    "{cmd} {v}: {out:?}"
                );
            }
        }
        let ran_status_or_gc = h
            .records()
            .iter()
            .any(|r| r.command == "STATUS" || r.command == "GC");
        assert_eq!(
            ran_status_or_gc,
            at_least(v, "1.1.0"),
            "{v}: STATUS/GC reach delegates only from 1.1.0"
        );
    }
}

#[test]
fn own_network_namespace_is_refused_with_code_8() {
    // CNI-59: skel refuses CNI_NETNS = the plugin's own namespace unless CNI_NETNS_OVERRIDE.
    let h = Harness::new();
    let out = h
        .cmd("ADD")
        .env("CNI_NETNS", "/proc/self/ns/net")
        .in_host_netns()
        .config(&simple_config(&h, "1.0.0"))
        .run();
    out.error(8);
    assert!(out.msg().contains("CNI_NETNS_OVERRIDE"), "{out:?}");
    assert!(h.records().is_empty());
    assert!(!h.cache_file(CID).exists());
}

#[test]
fn delegate_timeout_is_code_100_and_the_delegate_is_killed_in_time() {
    // CNI-56: a per-delegate limit; the killed delegate and the ones before it are rolled back.
    let h = Harness::new();
    let v = "1.0.0";
    let mut t = topology_with(&h, v, Layout::Inline, |n| {
        set_behaviour(&mut n[1], json!({"add": {"sleepMs": 30000}}));
    });
    merge(&mut t.config, json!({"delegateTimeoutSeconds": 0.5}));
    let out = h.cmd("ADD").args(CRI_ARGS).config(&t.config).run();
    out.error(100);
    assert!(
        out.msg().contains("\"second\"") && out.msg().contains("0.5s"),
        "{out:?}"
    );
    assert!(
        out.elapsed >= Duration::from_millis(500),
        "waited the limit: {out:?}"
    );
    assert!(
        out.elapsed < Duration::from_secs(5),
        "killed at the limit, not after the delegate's 30 s: {out:?}"
    );
    let recs = h.take_records();
    assert_eq!(
        calls(&recs),
        [
            "ADD cluster eth0",
            "ADD second net1",
            "DEL second net1",
            "DEL cluster eth0"
        ]
    );
    let sleeper = recs[1].pid;
    assert!(
        !Path::new(&format!("/proc/{sleeper}")).exists(),
        "the timed-out delegate (pid {sleeper}) is gone"
    );
    h.assert_no_trace(CID, "timeout");
}

#[test]
fn delegate_crashes_and_garbage_are_code_101() {
    let huge = 16 * 1024 * 1024 + 1;
    let cases = [
        (
            "garbage",
            json!({"garbage": "this is not json"}),
            "this is not json",
        ),
        ("SIGKILL", json!({"signal": "KILL"}), "signal 9"),
        ("SIGSEGV", json!({"signal": "SEGV"}), "signal 11"),
        ("silent exit 3", json!({"exitCode": 3}), "exit status 3"),
        (
            "not a result",
            json!({"result": "not-a-result"}),
            "invalid result",
        ),
        (
            "huge output",
            json!({"hugeOutputBytes": huge}),
            "printed more than",
        ),
    ];
    for (what, behaviour, needle) in cases {
        let h = Harness::new();
        let t = topology_with(&h, "1.0.0", Layout::Inline, |n| {
            set_behaviour(&mut n[1], json!({ "add": behaviour }));
        });
        let out = h.cmd("ADD").args(CRI_ARGS).config(&t.config).run();
        out.error(101);
        assert!(
            out.msg().contains(needle) && out.msg().contains("\"second\""),
            "{what}: {out:?}"
        );
        assert_eq!(
            h.take_calls(),
            [
                "ADD cluster eth0",
                "ADD second net1",
                "DEL second net1",
                "DEL cluster eth0"
            ],
            "{what}"
        );
        h.assert_no_trace(CID, what);
    }
}

#[test]
fn a_missing_delegate_binary_is_code_7_naming_the_search_path() {
    // CNI-25: a type not found in the search path is an error. Every plugin of every network is looked up
    // before any runs (issue 16), so nothing ran and nothing is left.
    let h = Harness::new();
    let cfg = h.config(
        "1.0.0",
        json!({"delegates": [
            recorder("cluster", "1.0.0", json!({})),
            {"cniVersion": "1.0.0", "name": "second", "type": "no-such-plugin"},
            recorder("third", "1.0.0", json!({})),
        ]}),
    );
    let out = h.cmd("ADD").config(&cfg).run();
    out.error(7);
    assert!(
        out.msg()
            .contains("failed to find plugin \"no-such-plugin\"")
            && out.msg().contains(&h.bin.display().to_string()),
        "{out:?}"
    );
    assert!(
        !out.msg().contains("rollback"),
        "nothing failed to roll back: {out:?}"
    );
    assert_eq!(h.take_calls(), Vec::<String>::new(), "no delegate ran");
    h.assert_no_trace(CID, "missing binary");
}

#[test]
fn a_missing_second_plugin_of_a_list_fails_before_any_plugin_runs() {
    // A chained plugin is looked up with the others before anything runs (issue 16): the list's first
    // plugin and the cluster network never start, so there is nothing to roll back and nothing is left.
    let h = Harness::new();
    let cfg = h.config(
        "1.0.0",
        json!({"delegates": [
            recorder("cluster", "1.0.0", json!({})),
            recorder_list("second", "1.0.0", vec![
                json!({"type": "plexus-recorder", "step": 1}),
                json!({"type": "no-such-plugin"}),
            ]),
        ]}),
    );
    let out = h.cmd("ADD").config(&cfg).run();
    out.error(7);
    assert!(
        out.msg().contains(":second]")
            && out
                .msg()
                .contains("failed to find plugin \"no-such-plugin\""),
        "names the network and the plugin: {out:?}"
    );
    assert_eq!(h.take_calls(), Vec::<String>::new(), "no plugin ran");
    h.assert_no_trace(CID, "missing chained binary");
}

/// A copy of the recorder in `bin/<name>` (a file of its own, so its owner and mode can be changed), mode
/// 0755.
fn recorder_copy(h: &Harness, name: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = h.bin.join(name);
    fs::copy(common::recorder_bin(), &p).expect("copy the recorder");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod the copy");
    p
}

/// The inline delegates: the recorder as the cluster network, then a list whose second plugin is `name`.
fn config_running(h: &Harness, name: &str) -> Value {
    h.config(
        "1.1.0",
        json!({"delegates": [
            recorder("cluster", "1.1.0", json!({})),
            recorder_list("second", "1.1.0", vec![
                json!({"type": "plexus-recorder", "step": 1}),
                json!({"type": name}),
            ]),
        ]}),
    )
}

/// Issue 19, item 3: a plugin binary writable by its group or by others is refused before anything runs,
/// with code 7 naming the file and why (here the second plugin of a secondary's list: neither the cluster
/// network nor the list's first plugin started); STATUS of a cluster network so refused is code 50. The
/// same file, made 0755, runs.
#[test]
fn a_plugin_binary_writable_by_group_or_others_is_refused_and_nothing_runs() {
    use std::os::unix::fs::PermissionsExt;
    let h = Harness::new();
    let copy = recorder_copy(&h, "copied-recorder");
    let cfg = config_running(&h, "copied-recorder");
    for (mode, who) in [(0o775, "its group"), (0o757, "others")] {
        fs::set_permissions(&copy, fs::Permissions::from_mode(mode)).unwrap();
        let out = h.cmd("ADD").config(&cfg).run();
        out.error(7);
        let expected = format!(
            "refusing to run {}: it is writable by {who} (mode {mode:04o})",
            copy.display()
        );
        assert!(
            out.msg().contains(&expected) && out.msg().contains(":second]"),
            "names the network, the file and why: {out:?}"
        );
        assert_eq!(h.take_calls(), Vec::<String>::new(), "no delegate ran");
        h.assert_no_trace(CID, "refused binary");
    }
    let status = h.config(
        "1.1.0",
        json!({"delegates": [{"cniVersion": "1.1.0", "name": "cluster", "type": "copied-recorder"}]}),
    );
    let out = h.cmd("STATUS").config(&status).run();
    out.error(50);
    assert!(out.msg().contains("refusing to run"), "{out:?}");
    assert_eq!(h.take_calls(), Vec::<String>::new());

    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    h.cmd("ADD").config(&cfg).run().ok();
    assert_eq!(
        h.take_calls(),
        ["ADD cluster eth0", "ADD second net1 #1", "ADD second net1"],
        "the same file runs once only root can change it"
    );

    // Made group-writable after the ADD: DEL refuses it too, naming the file, and what the network
    // recorded stays for the runtime's retry, which tears everything down once the mode is fixed.
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o775)).unwrap();
    let out = h.cmd("DEL").config(&cfg).run();
    out.error(7);
    assert!(
        out.msg()
            .contains(&format!("refusing to run {}", copy.display())),
        "{out:?}"
    );
    assert_eq!(
        h.take_calls(),
        ["DEL cluster eth0"],
        "the list halts at its refused last plugin (DEL runs in reverse); the other networks go"
    );
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    h.cmd("DEL").config(&cfg).run().ok();
    assert_eq!(
        h.take_calls(),
        ["DEL second net1", "DEL second net1 #1", "DEL cluster eth0"],
        "the retry tears the rest down (the cluster network again, from the config: DEL is idempotent)"
    );
    h.assert_no_trace(CID, "DEL retried after the mode was fixed");
}

/// Issue 19, item 3: a plugin binary owned by a user other than root is refused before anything runs
/// (root only: the test chowns the file to uid 1000).
#[test]
#[ignore = "needs root: chowns a plugin binary to another user"]
fn a_plugin_binary_not_owned_by_root_is_refused_and_nothing_runs() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to chown a file to uid 1000");
        return;
    }
    let h = Harness::new();
    let copy = recorder_copy(&h, "copied-recorder");
    std::os::unix::fs::chown(&copy, Some(1000), Some(1000)).unwrap();
    let cfg = config_running(&h, "copied-recorder");
    let out = h.cmd("ADD").config(&cfg).run();
    out.error(7);
    let expected = format!(
        "refusing to run {}: it is owned by uid 1000, not by root",
        copy.display()
    );
    assert!(out.msg().contains(&expected), "{out:?}");
    assert_eq!(h.take_calls(), Vec::<String>::new(), "no delegate ran");
    h.assert_no_trace(CID, "binary of another user");

    std::os::unix::fs::chown(&copy, Some(0), Some(0)).unwrap();
    h.cmd("ADD").config(&cfg).run().ok();
    assert_eq!(h.take_calls().len(), 3, "root's file runs");
}

// ---------------------------------------------------------------------------------------------------
// Hostile plugin types (CNI-52, CVE-2021-20206)
// ---------------------------------------------------------------------------------------------------

/// A delegate whose stdin, if a shell ever read it, would create `marker` (command substitution in a JSON
/// string value).
fn shell_probe(marker: &Path) -> Value {
    json!(format!("$(touch {})", marker.display()))
}

#[test]
fn the_shell_probe_works_when_a_shell_does_read_the_config() {
    // The control for the hostile-type tests: prove the probe would leave its marker.
    let h = Harness::new();
    let marker = h.path("control-marker");
    let conf = json!({"cniVersion": "1.0.0", "name": "evil", "type": "/bin/sh", "probe": shell_probe(&marker)});
    let mut child = std::process::Command::new("/bin/sh")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run /bin/sh");
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        &serde_json::to_vec(&conf).unwrap(),
    )
    .unwrap();
    drop(child.stdin.take());
    child.wait().unwrap();
    assert!(marker.exists(), "the probe must create its marker");
}

#[test]
fn hostile_plugin_types_are_refused_and_nothing_runs() {
    for hostile in ["../../bin/sh", "/bin/sh", "..", "a\\b"] {
        for place in ["delegate", "ipam", "list plugin", "defaultNetworks file"] {
            let ctx = format!("type {hostile:?} in {place}");
            let h = Harness::new();
            // binDir two levels down, so "../../bin/sh" from it is <root>/bin/sh: a script leaving a marker.
            let deep = h.path("x/y");
            fs::create_dir_all(&deep).unwrap();
            let traversal_marker = h.path("traversal-marker");
            write_executable(
                &h.bin.join("sh"),
                &format!("touch {}", traversal_marker.display()),
            );
            let shell_marker = h.path("shell-marker");
            let mut evil = match place {
                "delegate" | "defaultNetworks file" => {
                    json!({"cniVersion": "1.0.0", "name": "evil", "type": hostile})
                }
                "ipam" => {
                    json!({"cniVersion": "1.0.0", "name": "evil", "type": "plexus-recorder", "ipam": {"type": hostile}})
                }
                _ => {
                    json!({"cniVersion": "1.0.0", "name": "evil", "plugins": [{"type": "plexus-recorder"}, {"type": hostile}]})
                }
            };
            merge(&mut evil, json!({"probe": shell_probe(&shell_marker)}));
            let cluster = recorder("cluster", "1.0.0", json!({}));
            let extra = if place == "defaultNetworks file" {
                h.write_conf("00-cluster.conf", &cluster);
                let f = h.write_conf("50-evil.conf", &evil);
                json!({"clusterNetwork": "cluster", "defaultNetworks": [f]})
            } else {
                json!({"delegates": [cluster, evil]})
            };
            let mut cfg = h.config("1.0.0", extra);
            merge(&mut cfg, json!({"binDir": deep}));
            let out = h
                .cmd("ADD")
                .cni_path(&h.bin.display().to_string())
                .config(&cfg)
                .run();
            out.error(7);
            assert!(out.msg().contains("type"), "{ctx}: {out:?}");
            assert!(
                h.records().is_empty(),
                "{ctx}: no delegate runs, not even the cluster network"
            );
            assert!(!traversal_marker.exists(), "{ctx}: the path was followed");
            assert!(!shell_marker.exists(), "{ctx}: a shell ran the config");
            assert!(!h.cache_file(CID).exists(), "{ctx}");
        }
    }
}

#[test]
fn a_hostile_type_in_a_cache_file_never_runs_on_del() {
    let h = Harness::new();
    let marker = h.path("traversal-marker");
    let deep = h.path("x/y");
    fs::create_dir_all(&deep).unwrap();
    write_executable(&h.bin.join("sh"), &format!("touch {}", marker.display()));
    let shell_marker = h.path("shell-marker");
    let evil = json!({"cniVersion": "1.0.0", "name": "evil", "type": "../../bin/sh", "probe": shell_probe(&shell_marker)});
    let sane = recorder("cluster", "1.0.0", json!({}));
    let cache = json!([go_entry(&sane, None), go_entry(&evil, None)]);
    fs::create_dir_all(&h.cni).unwrap();
    fs::write(h.cache_file(CID), serde_json::to_vec(&cache).unwrap()).unwrap();
    let mut cfg = h.config("1.0.0", json!({"delegates": [sane]}));
    merge(&mut cfg, json!({"binDir": deep}));
    let out = h
        .cmd("DEL")
        .cni_path(&h.bin.display().to_string())
        .config(&cfg)
        .run();
    out.ok();
    assert!(!marker.exists() && !shell_marker.exists(), "{out:?}");
    assert_eq!(
        h.take_calls(),
        ["DEL cluster eth0"],
        "only the sane network is torn down"
    );
}

// ---------------------------------------------------------------------------------------------------
// 6. VERSION and the about text
// ---------------------------------------------------------------------------------------------------

#[test]
fn version_echoes_the_config_version_and_lists_all_seven() {
    // CNI-21.
    let h = Harness::new();
    for v in VERSIONS {
        let out = h
            .cmd("VERSION")
            .stdin(format!(r#"{{"cniVersion":"{v}"}}"#))
            .run();
        assert_eq!(
            out.result(),
            &json!({"cniVersion": v, "supportedVersions": VERSIONS}),
            "{v}"
        );
    }
    // libcni's probe sends dummy values; stdin need not be a valid config.
    let out = h
        .cmd("VERSION")
        .env("CNI_NETNS", "dummy")
        .env("CNI_IFNAME", "dummy")
        .env("CNI_PATH", "dummy")
        .stdin(&b"garbage"[..])
        .run();
    assert_eq!(out.result()["supportedVersions"], json!(VERSIONS));
    assert!(h.records().is_empty());
}

#[test]
fn no_command_prints_the_about_text_on_stderr_and_exits_0() {
    // CNI-59.
    let h = Harness::new();
    let out = h.cmd_without_command().stdin(&b"{}"[..]).run();
    out.ok();
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        out.stderr.contains("plexus") && out.stderr.contains("meta-plugin"),
        "{out:?}"
    );
}

// ---------------------------------------------------------------------------------------------------
// 7. CHECK
// ---------------------------------------------------------------------------------------------------

#[test]
fn check_runs_every_cached_delegate_in_order_with_the_cached_result() {
    // CNI-18, CNI-19, CNI-27; docs/multus-compat.md, "CHECK and GC": every cached delegate, not only static
    // ones.
    for v in VERSIONS.iter().filter(|v| at_least(v, "0.4.0")) {
        for layout in [Layout::ConfDir, Layout::Inline] {
            let ctx = format!("cniVersion {v}, {layout:?}");
            let h = Harness::new();
            let t = topology(&h, v, layout);
            add_ok(&h, &t);
            let add = h.take_records();
            let results = cached_results(&h);
            h.cmd("CHECK").args(CRI_ARGS).config(&t.config).run().ok();
            let check = h.take_records();
            assert_eq!(calls(&check), plugin_calls("CHECK", v).concat(), "{ctx}");
            for (r, a) in check.iter().zip(&add) {
                let c = format!("{ctx}: {}", r.summary());
                assert_eq!(
                    r.stdin["prevResult"],
                    results[network_index(r)],
                    "{c}: the cached ADD result (CNI-19)"
                );
                assert_eq!(
                    without(&r.stdin, &["prevResult"]),
                    without(&a.stdin, &["prevResult"]),
                    "{c}"
                );
                for k in [
                    "CNI_CONTAINERID",
                    "CNI_IFNAME",
                    "CNI_NETNS",
                    "CNI_ARGS",
                    "CNI_PATH",
                ] {
                    assert_eq!(r.var(k), a.var(k), "{c}: {k} as on ADD (NPWG-39)");
                }
            }
        }
    }
}

#[test]
fn check_passes_a_delegate_error_on_and_still_checks_the_others() {
    let h = Harness::new();
    let v = "1.0.0";
    let t = topology_with(&h, v, Layout::Inline, |n| {
        set_behaviour(
            &mut n[1],
            json!({"check": {"error": {"code": 11, "msg": "not-converged"}}}),
        );
    });
    add_ok(&h, &t);
    h.take_records();
    let out = h.cmd("CHECK").args(CRI_ARGS).config(&t.config).run();
    out.error(11);
    assert!(
        out.msg().contains("not-converged") && out.msg().contains("\"second\""),
        "{out:?}"
    );
    assert_eq!(h.take_calls(), plugin_calls("CHECK", v).concat());
}

#[test]
fn check_skips_a_network_older_than_0_4_0() {
    // #737, #525: a 0.3.1 delegate behind a 1.0.0 plexus cannot be checked; that is not a failure.
    let h = Harness::new();
    let cfg = h.config(
        "1.0.0",
        json!({"delegates": [recorder("cluster", "1.0.0", json!({})), recorder("old", "0.3.1", json!({}))]}),
    );
    h.cmd("ADD").config(&cfg).run().ok();
    h.take_records();
    h.cmd("CHECK").config(&cfg).run().ok();
    assert_eq!(h.take_calls(), ["CHECK cluster eth0"]);
}

#[test]
fn check_of_an_unknown_container_is_code_3() {
    for v in VERSIONS.iter().filter(|v| at_least(v, "0.4.0")) {
        let h = Harness::new();
        let out = h
            .cmd("CHECK")
            .container("never-added")
            .args(CRI_ARGS)
            .config(&simple_config(&h, v))
            .run();
        out.error(3);
        assert!(
            out.msg().contains("never-added") || out.msg().contains(WHO),
            "{v}: {out:?}"
        );
        assert!(h.records().is_empty(), "{v}");
    }
}

// ---------------------------------------------------------------------------------------------------
// 8. STATUS and GC
// ---------------------------------------------------------------------------------------------------

fn status_config(h: &Harness, cluster_behaviour: Option<Value>) -> Value {
    let mut cluster = recorder("cluster", "1.1.0", json!({}));
    if let Some(b) = cluster_behaviour {
        set_behaviour(&mut cluster, b);
    }
    h.config(
        "1.1.0",
        json!({"delegates": [
            cluster,
            recorder("old", "1.0.0", json!({})),
            recorder_list("third", "1.1.0", vec![json!({"type": "plexus-recorder", "step": 1})]),
        ]}),
    )
}

#[test]
fn status_goes_to_the_cluster_network_first_and_skips_delegates_before_1_1_0() {
    // CNI-20: STATUS reaches the delegates ADD depends on; libcni's STATUS is a no-op below 1.1.0.
    let h = Harness::new();
    let out = h.cmd("STATUS").config(&status_config(&h, None)).run();
    out.ok();
    let recs = h.take_records();
    assert_eq!(
        calls(&recs).first().map(String::as_str),
        Some("STATUS cluster"),
        "the cluster network answers first"
    );
    assert!(calls(&recs).iter().all(|c| !c.contains("old")), "{recs:?}");
    for r in &recs {
        assert_eq!(r.var("CNI_CONTAINERID"), "", "no attachment parameters");
        assert_eq!(r.var("CNI_IFNAME"), "");
        assert!(r.stdin.get("runtimeConfig").is_none() && r.stdin.get("prevResult").is_none());
    }
}

#[test]
fn status_passes_a_delegate_code_50_or_51_through() {
    for code in [50, 51] {
        let h = Harness::new();
        let cfg = status_config(
            &h,
            Some(json!({"status": {"error": {"code": code, "msg": "not-ready-yet"}}})),
        );
        let out = h.cmd("STATUS").config(&cfg).run();
        out.error(code);
        assert!(out.msg().contains("not-ready-yet"), "{out:?}");
        assert_eq!(
            h.take_calls(),
            ["STATUS cluster"],
            "stops at the first failure"
        );
    }
}

#[test]
fn status_with_the_cluster_plugin_missing_is_code_50() {
    let h = Harness::new();
    let cfg = h.config(
        "1.1.0",
        json!({"delegates": [{"cniVersion": "1.1.0", "name": "cluster", "type": "not-installed"}]}),
    );
    let out = h.cmd("STATUS").config(&cfg).run();
    out.error(50);
    assert!(out.msg().contains("not-installed"), "{out:?}");
}

fn gc_topology(h: &Harness, v: &str) -> Topology {
    topology(h, v, Layout::Inline)
}

fn gc_run(key: &str) {
    // CNI-22, CNI-28; docs/multus-compat.md, "CHECK and GC": the runtime's list is honoured; a stale
    // container is torn down from its cache; GC goes to every 1.1.0 network with both attachment keys.
    let h = Harness::new();
    let t = gc_topology(&h, "1.1.0");
    for cid in ["alive", "stale"] {
        h.cmd("ADD")
            .container(cid)
            .args(CRI_ARGS)
            .config(&t.config)
            .run()
            .ok();
    }
    h.take_records();
    let mut cfg = t.config.clone();
    merge(
        &mut cfg,
        json!({ key: [{"containerID": "alive", "ifname": "eth0"}] }),
    );
    h.cmd("GC").config(&cfg).run().ok();
    let recs = h.take_records();
    let dels: Vec<&Record> = recs.iter().filter(|r| r.command == "DEL").collect();
    assert_eq!(
        dels.iter().map(|r| r.summary()).collect::<Vec<_>>(),
        del_calls("1.1.0", 2),
        "{key}: the stale container is torn down in reverse"
    );
    for r in &dels {
        assert_eq!(r.var("CNI_CONTAINERID"), "stale", "{key}");
        assert_eq!(
            r.var("CNI_NETNS"),
            "",
            "{key}: GC may assume the netns is gone"
        );
    }
    assert!(!h.cache_file("stale").exists(), "{key}");
    assert!(!h.lock_file("stale").exists(), "{key}");
    assert!(
        h.result_files().iter().all(|f| !f.contains("stale")),
        "{key}: {:?}",
        h.result_files()
    );
    assert!(
        h.cache_file("alive").is_file(),
        "{key}: the live container stays"
    );
    assert_eq!(h.result_files().len(), 3, "{key}: {:?}", h.result_files());

    let gcs: Vec<&Record> = recs.iter().filter(|r| r.command == "GC").collect();
    let mut gc_networks: Vec<&str> = gcs.iter().map(|r| r.network()).collect();
    gc_networks.sort_unstable();
    assert_eq!(
        gc_networks,
        ["cluster", "second", "third", "third"],
        "{key}: GC reaches every plugin of every network"
    );
    for r in &gcs {
        // Per network, the live container's attachment on it: GC never touches another network's (CNI-28).
        let ifname = IFNAMES[network_index(r)];
        let expected = json!([{"containerID": "alive", "ifname": ifname}]);
        for k in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
            assert_eq!(
                r.stdin[k],
                expected,
                "{key}: {k} of {}: both keys are sent (CNI-22)",
                r.summary()
            );
        }
        assert_eq!(r.var("CNI_CONTAINERID"), "", "{key}");
    }
}

#[test]
fn gc_tears_down_stale_containers_with_the_valid_attachments_key() {
    gc_run("cni.dev/valid-attachments");
}

#[test]
fn gc_accepts_the_legacy_attachments_key() {
    gc_run("cni.dev/attachments");
}

#[test]
fn gc_sends_no_gc_before_1_1_0_but_still_deletes_stale_attachments() {
    // CNI-28: libcni DELs a network's stale cached attachments whatever its version, and sends GC only from
    // 1.1.0 on. An absent list means no attachment is valid.
    let h = Harness::new();
    let cfg = status_config(&h, None);
    h.cmd("ADD").container("stale").config(&cfg).run().ok();
    h.take_records();
    h.cmd("GC").config(&cfg).run().ok();
    let recs = h.take_records();
    let dels: Vec<String> = recs
        .iter()
        .filter(|r| r.command == "DEL")
        .map(Record::summary)
        .collect();
    assert_eq!(
        dels,
        ["DEL third net2 #1", "DEL old net1", "DEL cluster eth0"]
    );
    let mut gc: Vec<&str> = recs
        .iter()
        .filter(|r| r.command == "GC")
        .map(Record::network)
        .collect();
    gc.sort_unstable();
    assert_eq!(gc, ["cluster", "third"], "no GC to the 1.0.0 network");
    assert!(h.result_files().is_empty(), "{:?}", h.result_files());
    assert!(!h.cache_file("stale").exists());
}

// ---------------------------------------------------------------------------------------------------
// 9. plexus chained in a conflist, run by libcni's semantics
// ---------------------------------------------------------------------------------------------------

#[test]
fn plexus_first_in_a_conflist_hands_its_result_to_the_next_plugin() {
    use plexus::{
        pure::netconf::NetworkConfig,
        seams::{
            exec::ProcessExec,
            invoke::{Invoker, RuntimeConf},
        },
    };
    for v in VERSIONS.iter().filter(|v| has_lists(v)) {
        let ctx = format!("cniVersion {v}");
        let h = Harness::new();
        h.install_plexus();
        let mut plexus_plugin = h.config(
            v,
            json!({"delegates": [recorder("cluster", v, json!({})), recorder("second", v, json!({}))]}),
        );
        let m = plexus_plugin.as_object_mut().unwrap();
        m.remove("name");
        m.remove("cniVersion");
        let list = json!({
            "cniVersion": v,
            "name": "chain",
            "plugins": [plexus_plugin, {"type": "plexus-recorder", "step": "after"}],
        });
        let net = NetworkConfig::from_value(list).expect("valid conflist");
        let runtime_cache = h.path("runtime-cache");
        let invoker = Invoker {
            exec: &ProcessExec,
            search_path: vec![h.bin.clone()],
            base_env: [
                (
                    "PLEXUS_RECORDER_FILE".to_string(),
                    h.record.display().to_string(),
                ),
                ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ]
            .into_iter()
            .chain(h.plexus_env())
            .collect(),
            timeout: Duration::from_secs(30),
            cache_dir: runtime_cache.clone(),
            cache_writes: plexus::seams::invoke::CacheWrites::LikeLibcni,
        };
        let rt = RuntimeConf {
            container_id: CID.into(),
            netns: Some(h.netns()),
            ifname: "eth0".into(),
            args: plexus_cni::CniArgs::parse(CRI_ARGS).unwrap(),
            capability_args: Default::default(),
        };
        let result = invoker
            .add(&net, &rt)
            .unwrap_or_else(|e| panic!("{ctx}: {e}"));
        let recs = h.take_records();
        assert_eq!(
            calls(&recs),
            [
                "ADD cluster eth0",
                "ADD second net1",
                "ADD chain eth0 #\"after\""
            ],
            "{ctx}"
        );
        let after = &recs[2];
        let plexus_result = h.result_record("cluster", CID, "eth0")["result"].clone();
        assert_eq!(
            after.stdin["prevResult"], plexus_result,
            "{ctx}: the next plugin gets plexus's result (the cluster network's) as prevResult (CNI-25)"
        );
        assert_eq!(
            result.to_value(plexus_cni::CniVersion::V1_1_0).unwrap()["ips"],
            plexus_cni::CniResult::from_value(&plexus_result, plexus_cni::CniVersion::V1_1_0)
                .unwrap()
                .to_value(plexus_cni::CniVersion::V1_1_0)
                .unwrap()["ips"],
            "{ctx}: the list's result carries plexus's addresses"
        );
        invoker
            .del(&net, &rt)
            .unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert_eq!(
            h.take_calls(),
            [
                "DEL chain eth0 #\"after\"",
                "DEL second net1",
                "DEL cluster eth0"
            ],
            "{ctx}: DEL runs the list in reverse, plexus's delegates in reverse"
        );
        h.assert_no_trace(CID, &ctx);
    }
}

// ---------------------------------------------------------------------------------------------------
// 10. A corrupt cache
// ---------------------------------------------------------------------------------------------------

fn corrupt_cache_del(drop_result_cache: bool) {
    // docs/multus-compat.md, "DEL": a truncated cache never skips teardown silently; the bad file goes.
    for v in ["0.3.1", "1.0.0"] {
        let ctx = format!("cniVersion {v}, result cache dropped: {drop_result_cache}");
        let h = Harness::new();
        let mut t = topology(&h, v, Layout::ConfDir);
        merge(&mut t.config, json!({"logLevel": "error"}));
        add_ok(&h, &t);
        h.take_records();
        let bytes = fs::read(h.cache_file(CID)).unwrap();
        fs::write(h.cache_file(CID), &bytes[..bytes.len() / 2]).unwrap();
        if drop_result_cache {
            fs::remove_dir_all(h.cni.join("results")).unwrap();
        }
        let out = h.cmd("DEL").args(CRI_ARGS).config(&t.config).run();
        out.ok();
        assert!(
            out.stderr.contains("corrupt"),
            "{ctx}: the log says the cache is corrupt: {out:?}"
        );
        assert_eq!(
            h.take_calls(),
            del_calls(v, 2),
            "{ctx}: every network is still torn down"
        );
        h.assert_no_trace(CID, &ctx);
    }
}

#[test]
fn del_with_a_truncated_cache_falls_back_to_the_result_cache() {
    corrupt_cache_del(false);
}

#[test]
fn del_with_a_truncated_cache_and_no_result_cache_falls_back_to_the_config_networks() {
    corrupt_cache_del(true);
}

// ---------------------------------------------------------------------------------------------------
// 11. The Go Multus cache format
// ---------------------------------------------------------------------------------------------------

/// A Go Multus `DelegateNetConf` cache entry for `net` (no plexus keys), `ifnameRequest` when given.
fn go_entry(net: &Value, ifname_request: Option<&str>) -> Value {
    go_entry_with(net, ifname_request, true)
}

/// As [`go_entry`]; without `Bytes` when `with_bytes` is false (caches from before Multus #1521).
fn go_entry_with(net: &Value, ifname_request: Option<&str>, with_bytes: bool) -> Value {
    use base64::Engine as _;
    let plugin = |p: &Value| {
        json!({"cniVersion": p.get("cniVersion").cloned().unwrap_or(json!("")), "name": p.get("name").cloned().unwrap_or(json!("")),
               "type": p["type"], "ipam": {}, "dns": {}})
    };
    let (conf, conf_list) = match net.get("plugins").and_then(Value::as_array) {
        Some(plugins) => (
            json!({"ipam": {}, "dns": {}}),
            json!({"cniVersion": net["cniVersion"], "name": net["name"], "plugins": plugins.iter().map(plugin).collect::<Vec<_>>()}),
        ),
        None => (plugin(net), json!({})),
    };
    let mut e = json!({
        "Conf": conf,
        "ConfList": conf_list,
        "name": net["name"],
        "IsFilterV4Gateway": false,
        "IsFilterV6Gateway": false,
    });
    if let Some(i) = ifname_request {
        merge(&mut e, json!({ "ifnameRequest": i }));
    }
    if with_bytes {
        let b64 =
            base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(net).unwrap());
        merge(&mut e, json!({ "Bytes": b64 }));
    }
    e
}

#[test]
fn add_writes_the_cache_in_the_go_multus_format() {
    // EXT-6; docs/multus-compat.md, "Cache format": a JSON array of DelegateNetConf with Conf, ConfList and
    // the exact config in Bytes.
    use base64::Engine as _;
    for v in VERSIONS {
        let ctx = format!("cniVersion {v}");
        let h = Harness::new();
        let t = topology(&h, v, Layout::Inline);
        add_ok(&h, &t);
        let cache: Value = serde_json::from_slice(&fs::read(h.cache_file(CID)).unwrap()).unwrap();
        let entries = cache
            .as_array()
            .unwrap_or_else(|| panic!("{ctx}: the cache is a JSON array: {cache}"));
        assert_eq!(entries.len(), 3, "{ctx}");
        for (i, e) in entries.iter().enumerate() {
            for k in [
                "Conf",
                "ConfList",
                "Bytes",
                "IsFilterV4Gateway",
                "IsFilterV6Gateway",
            ] {
                assert!(e.get(k).is_some(), "{ctx}: entry {i} lacks {k}: {e}");
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(e["Bytes"].as_str().unwrap())
                .unwrap_or_else(|err| panic!("{ctx}: Bytes is base64: {err}"));
            let cfg: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(
                cfg, t.networks[i],
                "{ctx}: Bytes holds the exact delegate config"
            );
            assert_eq!(e["name"], NAMES[i], "{ctx}");
        }
        assert_eq!(entries[0]["Conf"]["type"], "plexus-recorder", "{ctx}");
        assert_eq!(entries[0]["Conf"]["name"], "cluster", "{ctx}");
        if has_lists(v) {
            assert_eq!(
                entries[2]["ConfList"]["plugins"][1]["type"], "plexus-recorder",
                "{ctx}: Go Multus recognises a list by ConfList.plugins"
            );
        }
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(h.cache_file(CID)).unwrap().permissions(),
        );
        assert_eq!(
            mode & 0o777,
            0o600,
            "{ctx}: file mode (docs/multus-compat.md, \"Cache format\")"
        );
    }
}

#[test]
fn del_tears_down_a_cache_written_by_go_multus() {
    // Pods created under Go Multus are deletable by plexus (docs/multus-compat.md, "Cache format").
    // Entry 1 asked for interface "data0" and predates Bytes (#1521), so it is rebuilt from Conf.
    for v in ["0.3.1", "0.4.0", "1.0.0"] {
        let ctx = format!("cniVersion {v}");
        let h = Harness::new();
        let nets = networks(v);
        let cache = json!([
            go_entry(&nets[0], None),
            go_entry_with(&nets[1], Some("data0"), false),
            go_entry(&nets[2], None),
        ]);
        fs::create_dir_all(&h.cni).unwrap();
        fs::write(h.cache_file(CID), serde_json::to_vec(&cache).unwrap()).unwrap();
        // The config names nothing of this: DEL must work from the cache alone.
        let cfg = h.config(v, json!({"clusterNetwork": "gone"}));
        let out = h.cmd("DEL").args(CRI_ARGS).config(&cfg).run();
        out.ok();
        let recs = h.take_records();
        assert_eq!(
            calls(&recs),
            [
                "DEL third net2 #2",
                "DEL third net2 #1",
                "DEL second data0",
                "DEL cluster eth0"
            ],
            "{ctx}: reverse order; index 0 on CNI_IFNAME, an explicit name kept, net<index> otherwise \
             (docs/multus-compat.md, \"Interface names\")"
        );
        assert_eq!(
            recs[2].stdin,
            json!({"cniVersion": v, "name": "second", "type": "plexus-recorder", "ipam": {}, "dns": {}}),
            "{ctx}: an entry without Bytes is rebuilt from Conf"
        );
        assert_eq!(
            without(&recs[3].stdin, &["runtimeConfig"]),
            nets[0],
            "{ctx}: Bytes is used as is"
        );
        for r in &recs {
            assert_eq!(r.var("CNI_ARGS"), CRI_ARGS_TO_DELEGATES, "{ctx}");
        }
        h.assert_no_trace(CID, &ctx);
    }
}

#[test]
fn del_of_a_go_multus_cache_with_a_mac_request_on_a_network_without_the_capability() {
    // Go Multus never checked capabilities, so its caches can hold requests the network does not declare.
    // Teardown must not be refused for that (strictCapabilities guards ADD).
    let h = Harness::new();
    let nets = networks("1.0.0");
    let mut second = go_entry(&nets[1], None);
    merge(
        &mut second,
        json!({"macRequest": "02:00:00:00:00:09", "ipRequest": ["10.9.0.5/24"]}),
    );
    let cache = json!([go_entry(&nets[0], None), second]);
    fs::create_dir_all(&h.cni).unwrap();
    fs::write(h.cache_file(CID), serde_json::to_vec(&cache).unwrap()).unwrap();
    let cfg = h.config("1.0.0", json!({"clusterNetwork": "gone"}));
    let out = h.cmd("DEL").args(CRI_ARGS).config(&cfg).run();
    out.ok();
    let recs = h.take_records();
    assert_eq!(calls(&recs), ["DEL second net1", "DEL cluster eth0"]);
    assert_eq!(
        recs[0].var("CNI_ARGS"),
        format!("{CRI_ARGS_TO_DELEGATES};MAC=02:00:00:00:00:09;IP=10.9.0.5/24"),
        "the legacy CNI_ARGS requests are replayed (EXT-7)"
    );
    assert!(h.take_records().is_empty());
    h.assert_no_trace(CID, "go cache with requests");
}

// ---------------------------------------------------------------------------------------------------
// The pod namespace already has the interface (NPWG-26, CNI-12)
// ---------------------------------------------------------------------------------------------------

#[test]
fn an_interface_already_in_the_pod_is_code_102_and_rolls_back() {
    let h = Harness::new();
    let netns = h.netns_str();
    if !netns.starts_with("/proc/") || netns == "/proc/self/ns/net" {
        eprintln!("skipped: creating a link in the pod namespace needs root");
        return;
    }
    let made = std::process::Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args([
            "ip", "link", "add", "net1", "type", "veth", "peer", "name", "peer1",
        ])
        .output();
    match made {
        Ok(o) if o.status.success() => {}
        other => {
            eprintln!("skipped: cannot create a veth link with nsenter + ip: {other:?}");
            return;
        }
    }
    let t = topology(&h, "1.0.0", Layout::Inline);
    let out = h.cmd("ADD").args(CRI_ARGS).config(&t.config).run();
    out.error(102);
    assert!(
        out.msg().contains("\"net1\" already exists") && out.msg().contains(":second]"),
        "{out:?}"
    );
    assert_eq!(
        h.take_calls(),
        ["ADD cluster eth0", "DEL cluster eth0"],
        "the colliding network never runs; the cluster network is rolled back"
    );
    h.assert_no_trace(CID, "interface exists");
}

// ---------------------------------------------------------------------------------------------------
// Logging (logLevel, logFile, logToStderr, logOptions): logs never reach stdout
// ---------------------------------------------------------------------------------------------------

#[test]
fn log_file_gets_plexus_lines_and_delegate_stderr_while_stdout_stays_one_json() {
    let h = Harness::new();
    let log = h.path("logs/plexus.log");
    let cfg = h.config(
        "1.0.0",
        json!({
            "logLevel": "verbose",
            "logFile": log,
            "logToStderr": false,
            "delegates": [
                recorder("cluster", "1.0.0", json!({"recorder": {"add": {"stderr": "delegate-said-hello"}}})),
                recorder("second", "1.0.0", json!({})),
            ],
        }),
    );
    // `run` has already checked that stdout is exactly one JSON document.
    let out = h.cmd("ADD").config(&cfg).run();
    out.result();
    assert!(
        out.stderr.is_empty(),
        "logToStderr=false keeps stderr quiet: {:?}",
        out.stderr
    );
    let text = fs::read_to_string(&log).expect("log file written");
    assert!(
        text.contains("delegate-said-hello"),
        "a delegate's stderr is captured into the log:\n{text}"
    );
    assert!(
        text.contains("cluster"),
        "log lines name the network:\n{text}"
    );
    assert!(text.contains("attached"), "{text}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("delegate-said-hello"));
}

#[test]
fn log_to_stderr_by_default_and_silent_at_the_default_level() {
    let h = Harness::new();
    let delegates = json!([recorder(
        "cluster",
        "1.0.0",
        json!({"recorder": {"add": {"stderr": "noise"}}})
    )]);
    // Multus's default level is "panic": nothing is logged at all.
    let quiet = h.config("1.0.0", json!({"delegates": delegates}));
    let out = h.cmd("ADD").config(&quiet).run();
    out.result();
    assert!(out.stderr.is_empty(), "{:?}", out.stderr);
    h.cmd("DEL").config(&quiet).run().ok();
    // At "debug", logToStderr (default true) sends log lines to stderr, never to stdout.
    let loud = h.config(
        "1.0.0",
        json!({"delegates": delegates, "logLevel": "debug"}),
    );
    let out = h.cmd("ADD").config(&loud).run();
    out.result();
    assert!(
        out.stderr.contains("noise") && out.stderr.contains("DEBUG"),
        "{:?}",
        out.stderr
    );
}

#[test]
fn an_unusable_log_file_does_not_fail_the_operation() {
    let h = Harness::new();
    let blocker = h.path("not-a-dir");
    fs::write(&blocker, b"x").unwrap();
    let cfg = h.config(
        "1.0.0",
        json!({"logLevel": "error", "logFile": blocker.join("plexus.log"), "delegates": [recorder("cluster", "1.0.0", json!({}))]}),
    );
    let out = h.cmd("ADD").config(&cfg).run();
    out.result();
    assert!(
        out.stderr.contains("cannot open log file"),
        "{:?}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------------------------------
// 12. A SIGKILLed plexus's orphaned delegate
// ---------------------------------------------------------------------------------------------------

/// The runtime kills plexus, not its delegates: the delegate plexus was running goes on alone. It holds
/// the container's lock (inherited as fd `plexus::seams::exec::LOCK_FD`) until it exits, so the runtime's DEL,
/// issued at once, waits for it instead of tearing down while it still works.
#[test]
fn an_orphaned_delegate_keeps_the_containers_lock_and_del_waits_for_it() {
    use std::os::unix::fs::MetadataExt;
    const SLEEP_MS: u64 = 2000;
    let h = Harness::new();
    let v = "1.0.0";
    let config = h.config(
        v,
        json!({"delegates": [
            recorder("cluster", v, json!({})),
            recorder("second", v, json!({"recorder": {"add": {"sleepMs": SLEEP_MS}}})),
        ]}),
    );
    let mut plexus = h.cmd("ADD").args(CRI_ARGS).config(&config).spawn();
    let started = std::time::Instant::now();
    let orphan = loop {
        if let Some(r) = h
            .records()
            .into_iter()
            .find(|r| r.summary() == "ADD second net1")
        {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the second delegate never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    plexus.kill().expect("SIGKILL plexus");
    plexus.wait().expect("reap plexus");

    // The orphan runs on, holding the lock file's descriptor, locked: a new open of the file cannot lock it.
    let fd = format!("/proc/{}/fd/{}", orphan.pid, plexus::seams::exec::LOCK_FD);
    let target = fs::metadata(&fd).map(|m| (m.dev(), m.ino()));
    let lock = fs::File::open(h.lock_file(CID)).expect("the lock file exists");
    assert_eq!(
        target.ok(),
        lock.metadata().ok().map(|m| (m.dev(), m.ino())),
        "the orphan (pid {}) holds the lock file as {fd}",
        orphan.pid
    );
    assert!(
        matches!(lock.try_lock(), Err(fs::TryLockError::WouldBlock)),
        "the lock is still held after plexus died"
    );
    drop(lock);

    // The runtime's DEL, at once: it waits for the orphan to exit, then tears down both networks.
    h.cmd("DEL").args(CRI_ARGS).config(&config).run().ok();
    let recs = h.take_records();
    assert_eq!(
        calls(&recs),
        [
            "ADD cluster eth0",
            "ADD second net1",
            "DEL second net1",
            "DEL cluster eth0"
        ]
    );
    assert!(
        recs[2].time_ms >= orphan.time_ms + SLEEP_MS,
        "the DEL ran its first delegate {} ms after the orphan started, before its {SLEEP_MS} ms were up",
        recs[2].time_ms - orphan.time_ms
    );
    h.assert_no_trace(CID, "DEL after a SIGKILLed ADD");
}

/// Start an ADD whose second delegate (`second`, on net1) sleeps in its ADD (as `config` says), and wait
/// until that delegate runs: the running plexus and the delegate's record.
fn add_with_a_sleeping_delegate(h: &Harness, config: &Value) -> (std::process::Child, Record) {
    let mut plexus = h.cmd("ADD").args(CRI_ARGS).config(config).spawn();
    let started = std::time::Instant::now();
    let record = loop {
        let found = h
            .records()
            .into_iter()
            .find(|r| r.summary() == "ADD second net1");
        if found.is_some() || started.elapsed() > Duration::from_secs(20) {
            break found;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let Some(record) = record else {
        let _ = plexus.kill();
        let _ = plexus.wait();
        panic!("the second delegate never started");
    };
    (plexus, record)
}

fn sigkill(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

/// Two recorder networks, the second of which sleeps ten minutes in its ADD: a delegate that hangs for good.
fn second_delegate_hangs(h: &Harness) -> Value {
    let v = "1.0.0";
    h.config(
        v,
        json!({"delegates": [
            recorder("cluster", v, json!({})),
            recorder("second", v, json!({"recorder": {"add": {"sleepMs": 600_000}}})),
        ]}),
    )
}

/// plexus SIGKILLed while its delegate hangs for good (here: sleeps ten minutes): the orphan holds the
/// container's lock, and before plexus recovered it every DEL failed with code 11 until someone killed
/// the orphan by hand. The runtime's DEL, with a short `lockTimeoutSeconds`, finds the lock's owner dead,
/// kills the orphan near the end of its wait, takes the lock and tears down both networks.
#[test]
fn a_hung_orphan_of_a_sigkilled_plexus_is_killed_and_del_succeeds() {
    let h = Harness::new();
    let config = second_delegate_hangs(&h);
    let (mut plexus, orphan) = add_with_a_sleeping_delegate(&h, &config);
    plexus.kill().expect("SIGKILL plexus");
    plexus.wait().expect("reap plexus");

    let mut del_config = config.clone();
    merge(&mut del_config, json!({"lockTimeoutSeconds": 2}));
    let out = h.cmd("DEL").args(CRI_ARGS).config(&del_config).run();
    let orphan_runs = runs(orphan.pid);
    if orphan_runs {
        sigkill(orphan.pid);
    }
    out.ok();
    assert!(!orphan_runs, "the orphan (pid {}) still runs", orphan.pid);
    assert_eq!(
        calls(&h.take_records()),
        [
            "ADD cluster eth0",
            "ADD second net1",
            "DEL second net1",
            "DEL cluster eth0"
        ]
    );
    h.assert_no_trace(CID, "DEL after killing the hung orphan");
}

/// The same delegate hanging under a live plexus: a DEL meanwhile fails with code 11 once its
/// `lockTimeoutSeconds` is up, as for any busy container, and kills nothing: neither plexus nor its delegate.
#[test]
fn a_live_plexus_and_its_delegate_are_never_killed_and_del_fails_with_code_11() {
    let h = Harness::new();
    let config = second_delegate_hangs(&h);
    let (mut plexus, delegate) = add_with_a_sleeping_delegate(&h, &config);

    let mut del_config = config.clone();
    merge(&mut del_config, json!({"lockTimeoutSeconds": 1}));
    let out = h.cmd("DEL").args(CRI_ARGS).config(&del_config).run();
    let plexus_runs = plexus.try_wait().expect("poll plexus").is_none();
    let delegate_runs = runs(delegate.pid);
    // Unstick the ADD: its delegate killed, it fails and rolls back.
    sigkill(delegate.pid);
    let added = plexus.wait().expect("reap plexus");
    out.error(11);
    assert!(out.msg().contains("still running"), "{}", out.msg());
    assert!(plexus_runs, "the live plexus was killed");
    assert!(delegate_runs, "the live plexus's delegate was killed");
    assert!(!added.success(), "the ADD whose delegate was killed failed");
    h.cmd("DEL").args(CRI_ARGS).config(&config).run().ok();
    h.assert_no_trace(CID, "DEL after the ADD's rollback");
}

/// The daemon ships as its own binary (issue 17): `plexus daemon ARGS` execs `plexus-daemon ARGS` from
/// beside it, and says what is missing when it is not there.
#[test]
fn plexus_daemon_is_an_alias_for_the_daemon_binary_beside_it() {
    let plexus = Path::new(env!("CARGO_BIN_EXE_plexus"));
    assert_eq!(
        plexus.with_file_name("plexus-daemon"),
        Path::new(env!("CARGO_BIN_EXE_plexus-daemon"))
    );
    let out = std::process::Command::new(plexus)
        .args(["daemon", "--help"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.starts_with("usage: plexus-daemon [--config PATH]"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    // A plexus alone in its directory: a clear error, not a daemon.
    // A hard link in a directory beside it, not a copy: a copy's write descriptor, inherited by a process
    // another test forks meanwhile, makes the exec fail with ETXTBSY.
    let d = tempfile::tempdir_in(plexus.parent().unwrap()).unwrap();
    let alone = d.path().join("plexus");
    fs::hard_link(plexus, &alone).unwrap();
    let out = std::process::Command::new(&alone)
        .args(["daemon", "--help"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&d.path().join("plexus-daemon").display().to_string())
            && stderr.contains("its own binary"),
        "{stderr}"
    );
}
