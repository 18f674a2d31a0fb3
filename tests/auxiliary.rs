//! The auxiliary chain (`auxiliaryCNIChainName`, issue 22) at binary level: the built `plexus` driven as a
//! runtime drives it, with `plexus-recorder` as every delegate (see `tests/common/mod.rs`). The chain is the
//! internal `passthru` followed by every `*.conf` plugin file of `<directory of clusterNetwork>/<name>/`,
//! appended after every other network, on the next `net<index>` (docs/multus-compat.md, "Auxiliary
//! chain"). Spec items are cited by their ids, listed in docs/spec-ids.md.

mod common;

use std::{fs, path::PathBuf};

use common::{CID, Harness, Record, VERSIONS, at_least, calls, merge, recorder, without};
use serde_json::{Value, json};

/// Who error messages name for the pod of [`ARGS`].
const WHO: &str = "ns1/pod1/uid1";
/// `CNI_ARGS` as a CRI runtime sends it.
const ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod1;\
                    K8S_POD_INFRA_CONTAINER_ID=cid-1;K8S_POD_UID=uid1";
/// The chain's directory name under the cluster network's directory.
const CHAIN: &str = "vendor-cni-chain";

/// The chain's version: the config's, but at least 0.3.0 (a chain needs prevResult).
fn chain_version(v: &str) -> &str {
    if at_least(v, "0.3.0") { v } else { "0.3.0" }
}

/// A node whose `clusterNetwork` is the file `conf/10-cluster.conf` and whose `defaultNetworks` is
/// `second` (by name, in `confDir`), so the chain is the third network: `net2`.
struct Node {
    h: Harness,
    config: Value,
}

impl Node {
    fn new(v: &str) -> Node {
        let h = Harness::new();
        let cluster = h.write_conf("10-cluster.conf", &recorder("cluster", v, json!({})));
        h.write_conf("20-second.conf", &recorder("second", v, json!({})));
        let config = h.config(
            v,
            json!({"clusterNetwork": cluster, "defaultNetworks": ["second"],
                   "auxiliaryCNIChainName": CHAIN}),
        );
        // An installed `passthru` binary (Go Multus ships one) must never run: plexus serves it.
        h.write_script(
            "passthru",
            &format!("touch {}; exit 1", h.path("passthru-ran").display()),
        );
        Node { h, config }
    }

    fn chain_dir(&self) -> PathBuf {
        self.h.conf.join(CHAIN)
    }

    /// Write plugin file `file` of the chain: a recorder plugin with `step`, plus `extra`.
    fn chain_plugin(&self, file: &str, step: u32, extra: Value) -> Value {
        fs::create_dir_all(self.chain_dir()).unwrap();
        let mut p = json!({"type": "plexus-recorder", "step": step});
        merge(&mut p, extra);
        fs::write(self.chain_dir().join(file), serde_json::to_vec(&p).unwrap()).unwrap();
        p
    }

    /// The standard chain: `20-b.conf` (step 2) and `10-a.conf` (step 1), plus files that are no plugin
    /// files for libcni (another extension, a directory named `*.conf`).
    fn standard_chain(&self) {
        self.chain_plugin("20-b.conf", 2, json!({}));
        self.chain_plugin("10-a.conf", 1, json!({}));
        fs::write(
            self.chain_dir().join("05-ignored.json"),
            r#"{"type":"nope"}"#,
        )
        .unwrap();
        fs::write(self.chain_dir().join("README"), "not a plugin").unwrap();
        fs::create_dir_all(self.chain_dir().join("00-dir.conf")).unwrap();
    }

    fn run(&self, command: &str) -> common::Output {
        self.h.cmd(command).args(ARGS).config(&self.config).run()
    }

    fn assert_passthru_binary_never_ran(&self, ctx: &str) {
        assert!(
            !self.h.path("passthru-ran").exists(),
            "{ctx}: the passthru binary ran; plexus serves passthru itself"
        );
    }

    fn cache(&self) -> Vec<Value> {
        let v: Value = serde_json::from_slice(&fs::read(self.h.cache_file(CID)).unwrap()).unwrap();
        v.as_array().unwrap().clone()
    }
}

/// The chain's plugin calls for `command` (in ADD order).
fn chain_calls(command: &str) -> Vec<String> {
    vec![
        format!("{command} {CHAIN} net2 #1"),
        format!("{command} {CHAIN} net2 #2"),
    ]
}

fn add_calls() -> Vec<String> {
    let mut c = vec![
        "ADD cluster eth0".to_string(),
        "ADD second net1".to_string(),
    ];
    c.extend(chain_calls("ADD"));
    c
}

/// DEL of everything: the chain first, its plugins in reverse (CNI-26, NPWG-63).
fn del_calls() -> Vec<String> {
    let mut c: Vec<String> = chain_calls("DEL").into_iter().rev().collect();
    c.extend([
        "DEL second net1".to_string(),
        "DEL cluster eth0".to_string(),
    ]);
    c
}

#[test]
fn the_chain_runs_last_on_the_next_net_index_behind_passthru_in_file_order_every_version() {
    // EXT-5 (auxiliaryCNIChainName), CNI-4 (the directory's *.conf files in name order), CNI-25 (a list in
    // order, each result the next plugin's prevResult), CNI-29 (the list's name and cniVersion injected),
    // NPWG-64 (one after another), NPWG-66 (no runtimeConfig for networks other than the cluster network).
    for v in VERSIONS {
        let ctx = format!("cniVersion {v}");
        let n = Node::new(v);
        n.standard_chain();
        let mut config = n.config.clone();
        if at_least(v, "0.3.0") {
            merge(
                &mut config,
                json!({"runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 8080}]}}),
            );
        }
        let out = n.h.cmd("ADD").args(ARGS).config(&config).run();
        let result = out.result().clone();
        let recs = n.h.take_records();
        assert_eq!(calls(&recs), add_calls(), "{ctx}: {out:?}");
        n.assert_passthru_binary_never_ran(&ctx);
        let chain: Vec<&Record> = recs.iter().filter(|r| r.network() == CHAIN).collect();
        let cv = chain_version(v);
        for (r, step) in chain.iter().zip([1, 2]) {
            let c = format!("{ctx}: {}", r.summary());
            assert_eq!(
                without(&r.stdin, &["prevResult"]),
                json!({"type": "plexus-recorder", "step": step, "name": CHAIN, "cniVersion": cv}),
                "{c}: the plugin file with the list's name and version, no runtimeConfig"
            );
            assert_eq!(r.var("CNI_ARGS"), recs[0].var("CNI_ARGS"), "{c}");
            assert_eq!(r.var("CNI_NETNS"), n.h.netns_str(), "{c}");
        }
        assert_eq!(
            chain[0].stdin["prevResult"],
            json!({ "cniVersion": cv }),
            "{ctx}: passthru's empty result is the first chain plugin's prevResult"
        );
        assert!(
            chain[1].stdin.get("prevResult").is_some(),
            "{ctx}: the second chain plugin gets the first one's result"
        );
        // The runtime gets the cluster network's result; the chain's is cached like any delegate's.
        assert_eq!(
            result,
            n.h.result_record("cluster", CID, "eth0")["result"],
            "{ctx}"
        );
        let rec = n.h.result_record(CHAIN, CID, "net2");
        assert_eq!(rec["networkName"], CHAIN, "{ctx}");
        // EXT-6: the chain is cached like any delegate (its plugins, in their order), marked as the chain.
        let cache = n.cache();
        assert_eq!(cache.len(), 3, "{ctx}: {cache:?}");
        let entry = &cache[2];
        assert_eq!(entry["name"], CHAIN, "{ctx}");
        assert_eq!(entry["plexusAuxiliaryChain"], true, "{ctx}");
        assert_eq!(entry["plexusIfName"], "net2", "{ctx}");
        let types: Vec<&str> = entry["ConfList"]["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            ["passthru", "plexus-recorder", "plexus-recorder"],
            "{ctx}"
        );
        for e in &cache[..2] {
            assert!(e.get("plexusAuxiliaryChain").is_none(), "{ctx}: {e}");
        }
        n.run("DEL").ok();
        assert_eq!(n.h.take_calls(), del_calls(), "{ctx}");
        n.assert_passthru_binary_never_ran(&ctx);
        n.h.assert_no_trace(CID, &ctx);
    }
}

#[test]
fn no_chain_without_a_plugin_file_in_its_directory() {
    // EXT-5: the chain is added only when its directory holds at least one plugin file.
    let n = Node::new("1.0.0");
    let base = ["ADD cluster eth0", "ADD second net1"];
    for (what, setup) in [
        (
            "no directory",
            Box::new(|_: &Node| {}) as Box<dyn Fn(&Node)>,
        ),
        (
            "an empty directory",
            Box::new(|n: &Node| fs::create_dir_all(n.chain_dir()).unwrap()),
        ),
        (
            "only files that are not *.conf",
            Box::new(|n: &Node| {
                fs::create_dir_all(n.chain_dir().join("x.conf")).unwrap();
                fs::write(
                    n.chain_dir().join("a.json"),
                    r#"{"type":"plexus-recorder"}"#,
                )
                .unwrap();
                fs::write(
                    n.chain_dir().join("b.conflist"),
                    r#"{"type":"plexus-recorder"}"#,
                )
                .unwrap();
            }),
        ),
    ] {
        setup(&n);
        n.run("ADD").ok();
        assert_eq!(n.h.take_calls(), base, "{what}");
        assert_eq!(n.cache().len(), 2, "{what}: no chain entry");
        n.run("DEL").ok();
        n.h.take_records();
        n.h.assert_no_trace(CID, what);
    }
    // One plugin file is enough.
    n.chain_plugin("z.conf", 1, json!({}));
    n.run("ADD").ok();
    assert_eq!(
        n.h.take_calls(),
        [
            "ADD cluster eth0",
            "ADD second net1",
            &format!("ADD {CHAIN} net2 #1")
        ]
    );
    assert_eq!(n.cache().len(), 3);
}

#[test]
fn del_uses_the_cached_chain_after_its_directory_changed_or_vanished() {
    // EXT-6, CNI-26: the chain's plugins and their order come from the cache, not from the directory.
    let v = "1.0.0";
    for vanish in [false, true] {
        let ctx = if vanish {
            "directory removed"
        } else {
            "directory changed"
        };
        let n = Node::new(v);
        n.standard_chain();
        n.run("ADD").ok();
        assert_eq!(n.h.take_calls(), add_calls(), "{ctx}");
        let chain_result = n.h.result_record(CHAIN, CID, "net2")["result"].clone();
        if vanish {
            fs::remove_dir_all(n.chain_dir()).unwrap();
        } else {
            // A new first plugin, and the old ones gone: none of it may run on this pod's DEL.
            fs::remove_file(n.chain_dir().join("20-b.conf")).unwrap();
            n.chain_plugin("00-new.conf", 9, json!({}));
        }
        n.run("DEL").ok();
        let del = n.h.take_records();
        assert_eq!(calls(&del), del_calls(), "{ctx}");
        for r in del.iter().filter(|r| r.network() == CHAIN) {
            assert_eq!(
                r.stdin["prevResult"],
                chain_result,
                "{ctx}: {}: the chain's cached result (CNI-26)",
                r.summary()
            );
        }
        n.assert_passthru_binary_never_ran(ctx);
        n.h.assert_no_trace(CID, ctx);
    }
}

#[test]
fn a_failing_chain_plugin_rolls_back_every_network_and_leaves_nothing() {
    // NPWG-62 (the ADD fails, its delegate's code kept, CNI-39), CNI-32 and NPWG-63 (what ran is deleted in
    // reverse, the failed chain included), nothing of the ADD left.
    let n = Node::new("1.0.0");
    n.chain_plugin("10-a.conf", 1, json!({}));
    n.chain_plugin(
        "20-b.conf",
        2,
        json!({"recorder": {"add": {"error": {"code": 11, "msg": "vendor-plugin-broke"}}}}),
    );
    let out = n.run("ADD");
    out.error(11);
    for needle in [WHO, "vendor-plugin-broke", CHAIN, "net2"] {
        assert!(out.msg().contains(needle), "{needle:?} missing: {out:?}");
    }
    let mut expected = add_calls();
    expected.extend(del_calls());
    assert_eq!(n.h.take_calls(), expected);
    n.assert_passthru_binary_never_ran("rollback");
    n.h.assert_no_trace(CID, "after the rollback");
}

#[test]
fn the_chain_needs_a_cluster_network_path() {
    // EXT-5: the chain's directory is next to the clusterNetwork file; as in Go Multus, ADD fails otherwise
    // (code 7, naming the pod, the key and why) and nothing runs. DEL still works.
    let n = Node::new("1.0.0");
    n.standard_chain();
    let by_name = n.h.config(
        "1.0.0",
        json!({"clusterNetwork": "cluster", "auxiliaryCNIChainName": CHAIN}),
    );
    let inline = n.h.config(
        "1.0.0",
        json!({"delegates": [recorder("cluster", "1.0.0", json!({}))], "auxiliaryCNIChainName": CHAIN}),
    );
    for (what, cfg, why) in [
        (
            "clusterNetwork by name",
            by_name,
            "the network name \"cluster\"",
        ),
        ("delegates", inline, "delegates"),
    ] {
        let out = n.h.cmd("ADD").args(ARGS).config(&cfg).run();
        out.error(7);
        for needle in [WHO, CHAIN, "auxiliaryCNIChainName", why] {
            assert!(
                out.msg().contains(needle),
                "{what}: {needle:?} missing: {out:?}"
            );
        }
        assert!(n.h.take_calls().is_empty(), "{what}: nothing ran");
        n.h.assert_no_trace(CID, what);
        n.h.cmd("DEL").args(ARGS).config(&cfg).run().ok();
        n.h.take_records();
    }
}

#[test]
fn check_skips_the_chain_and_checks_the_others() {
    // The chain's net<index> names no link, so a plugin checking its interface could only fail; Go Multus
    // never checks the chain. CHECK goes to every other cached network (CNI-27).
    let n = Node::new("1.0.0");
    n.chain_plugin(
        "10-a.conf",
        1,
        json!({"recorder": {"check": {"error": {"code": 11, "msg": "no such link net2"}}}}),
    );
    n.run("ADD").ok();
    assert_eq!(
        n.h.take_calls(),
        [
            "ADD cluster eth0",
            "ADD second net1",
            &format!("ADD {CHAIN} net2 #1")
        ]
    );
    n.run("CHECK").ok();
    assert_eq!(
        n.h.take_calls(),
        ["CHECK cluster eth0", "CHECK second net1"]
    );
}

#[test]
fn del_of_a_go_multus_cache_with_the_chain_needs_no_passthru_binary() {
    // A pod added by Go Multus with the chain (passthru first, no plexus keys) is torn down by plexus, which
    // serves passthru itself (docs/multus-compat.md, "Auxiliary chain"; EXT-6).
    use base64::Engine as _;
    let n = Node::new("1.0.0");
    let cluster = recorder("cluster", "1.0.0", json!({}));
    let chain = json!({"cniVersion": "1.0.0", "name": CHAIN, "plugins": [
        {"type": "passthru"}, {"type": "plexus-recorder", "step": 1}
    ]});
    let entry = |net: &Value, conf: Value, conf_list: Value| {
        let b64 =
            base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(net).unwrap());
        json!({"Conf": conf, "ConfList": conf_list, "name": net["name"], "Bytes": b64,
               "IsFilterV4Gateway": false, "IsFilterV6Gateway": false})
    };
    let cache = json!([
        entry(
            &cluster,
            json!({"cniVersion": "1.0.0", "name": "cluster", "type": "plexus-recorder", "ipam": {}, "dns": {}}),
            json!({})
        ),
        entry(
            &chain,
            json!({"ipam": {}, "dns": {}}),
            json!({"cniVersion": "1.0.0", "name": CHAIN, "plugins": [{"type": "passthru"}, {"type": "plexus-recorder"}]})
        ),
    ]);
    fs::create_dir_all(&n.h.cni).unwrap();
    fs::write(n.h.cache_file(CID), serde_json::to_vec(&cache).unwrap()).unwrap();
    fs::remove_file(n.h.bin.join("passthru")).unwrap();
    n.run("DEL").ok();
    assert_eq!(
        n.h.take_calls(),
        [
            format!("DEL {CHAIN} net1 #1"),
            "DEL cluster eth0".to_string()
        ],
        "Go Multus's index-based name for the chain (net1 here) and passthru served internally"
    );
    n.h.assert_no_trace(CID, "Go Multus cache");
}
