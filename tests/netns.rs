//! Real network namespaces, real Debian CNI plugins (bridge, macvlan, ptp, host-local, tuning).
//!
//! Each test makes its own "host" namespace, where plexus runs (`ip netns exec <host> plexus`, so the
//! bridge, the macvlan master and every host-side veth live there and never in the machine's own
//! namespace), and a "pod" namespace given as `CNI_NETNS`. Both are deleted by a guard, even on panic.
//! All state (plexus's cniDir, host-local's dataDir, tuning's dataDir) lives in a temporary directory.
//!
//! These tests need root; `scripts/test.sh` runs them with `--include-ignored` when it is root.

mod netns_support;

use std::{fs, path::PathBuf, time::Duration};

use netns_support::{
    CLUSTER_SUBNET, CNI_PATH, Fixture, MACVLAN_SUBNET, Netns, PLEXUS, PTP_SUBNET, Reservation,
};
use plexus::{
    pure::netconf::NetworkConfig,
    seams::{
        exec::ProcessExec,
        invoke::{Invoker, RuntimeConf},
    },
};
use plexus_cni::{CniArgs, CniResult, CniVersion};
use plexus_testsupport::{
    proc::ipw,
    result::{in_subnet, interface_sandbox, result_address},
};
use serde_json::{Map, Value, json};

/// The standard ADD → (CHECK) → DEL cycle with plexus's config at `version`.
fn full_cycle(version: &str) {
    let f = Fixture::new();
    let cfg = f.standard_config(version);
    let cid = format!("cycle-{}", version.replace('.', "-"));

    let result = f.add_ok(&cid, &cfg);

    // The cluster network's result, converted to plexus's version.
    assert_eq!(result["cniVersion"], version, "{result:#}");
    let eth0 = result_address(&result, "eth0")
        .unwrap_or_else(|| panic!("no eth0 address in the result: {result:#}"));
    assert!(in_subnet(&eth0, CLUSTER_SUBNET), "{result:#}");
    assert_eq!(
        interface_sandbox(&result, "eth0"),
        json!(f.pod.path()),
        "{result:#}"
    );
    let has_ip_version = version.starts_with("0.");
    for ipc in result["ips"].as_array().unwrap() {
        assert_eq!(
            ipc.get("version").is_some(),
            has_ip_version,
            "ips[].version is written exactly for 0.3.x/0.4.0 results: {result:#}"
        );
    }
    assert!(
        result_address(&result, "net1").is_none(),
        "only the cluster network's result is returned: {result:#}"
    );

    // What the pod sees.
    assert_eq!(f.pod.link_names(), ["eth0", "lo", "net1", "net2"]);
    let addrs = f.pod.addresses();
    assert_eq!(addrs["eth0"], [eth0], "{addrs:?}");
    assert_eq!(addrs["net1"].len(), 1, "{addrs:?}");
    assert!(in_subnet(&addrs["net1"][0], MACVLAN_SUBNET), "{addrs:?}");
    assert_eq!(addrs["net2"].len(), 1, "{addrs:?}");
    assert!(in_subnet(&addrs["net2"][0], PTP_SUBNET), "{addrs:?}");
    assert_eq!(addrs.len(), 3, "{addrs:?}");

    // Reservations match the addresses, one per network, all for this container.
    let held = f.reservations();
    let expect = |network: &str, ifname: &str| Reservation {
        network: network.into(),
        ip: addrs[ifname][0].addr(),
        owner: cid.clone(),
    };
    assert_eq!(
        held,
        [
            expect("cluster", "eth0"),
            expect("macvlan-net", "net1"),
            expect("ptp-net", "net2"),
        ]
    );

    // plexus's cache (Go Multus format: a list of delegate entries) and one result-cache entry each.
    let cache: Value =
        serde_json::from_slice(&fs::read(f.cni_dir().join(&cid)).expect("the container cache"))
            .unwrap();
    assert_eq!(cache.as_array().map(Vec::len), Some(3), "{cache:#}");
    assert_eq!(f.plexus_files(&cid).len(), 5, "{:?}", f.plexus_files(&cid));

    if version != "0.3.1" {
        let r = f.plexus("CHECK", &cid, Some(&f.pod.path()), &cfg);
        assert_eq!(r.code, 0, "CHECK failed: {r:#?}\nlog:\n{}", f.log());
    }

    f.del_ok(&cid, Some(&f.pod.path()), &cfg);
    f.assert_clean(&cid);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn add_del_cycle_config_0_3_1() {
    full_cycle("0.3.1");
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn add_del_cycle_config_0_4_0() {
    full_cycle("0.4.0");
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn add_del_cycle_config_1_0_0() {
    full_cycle("1.0.0");
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn add_del_cycle_config_1_1_0() {
    full_cycle("1.1.0");
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn failing_third_delegate_rolls_back_everything() {
    let f = Fixture::new();
    let (cluster, defaults) = f.standard_networks();
    // ptp's only address is taken by another container: host-local fails the third delegate's ADD.
    let mut ptp = f.ptp_conf("1.0.0");
    ptp["ipam"]["ranges"] =
        json!([[{"subnet": PTP_SUBNET, "rangeStart": "203.0.113.9", "rangeEnd": "203.0.113.9"}]]);
    f.write("net.d/20-ptp.conf", &ptp);
    let taken = f.ipam_dir().join("ptp-net");
    fs::create_dir_all(&taken).unwrap();
    fs::write(taken.join("203.0.113.9"), "someone-else\r\neth0").unwrap();
    let other = Reservation {
        network: "ptp-net".into(),
        ip: "203.0.113.9".parse().unwrap(),
        owner: "someone-else".into(),
    };

    for version in ["0.3.1", "1.0.0"] {
        let cfg = f.plexus_config(
            version,
            json!({"clusterNetwork": cluster, "defaultNetworks": defaults}),
        );
        let cid = format!("fail3-{}", version.replace('.', "-"));
        let r = f.plexus("ADD", &cid, Some(&f.pod.path()), &cfg);
        r.error_code();
        assert_eq!(r.json["cniVersion"], version, "{r:#?}");
        assert!(
            r.msg().contains("ptp-net"),
            "the error names the network: {r:#?}"
        );
        f.assert_clean_except(&cid, &["lo"], std::slice::from_ref(&other));
    }
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn invalid_ipam_in_third_delegate_rolls_back_the_others_and_del_finishes() {
    let f = Fixture::new();
    let (cluster, defaults) = f.standard_networks();
    // An invalid subnet fails ptp's ADD and, since host-local cannot parse it, its DEL as well.
    let mut ptp = f.ptp_conf("1.0.0");
    ptp["ipam"]["ranges"] = json!([[{"subnet": "203.0.113.0/33"}]]);
    f.write("net.d/20-ptp.conf", &ptp);
    let cfg = f.plexus_config(
        "1.0.0",
        json!({"clusterNetwork": cluster, "defaultNetworks": defaults}),
    );
    let r = f.plexus("ADD", "bad-ipam", Some(&f.pod.path()), &cfg);
    r.error_code();
    assert!(r.msg().contains("ptp-net"), "{r:#?}");
    // The rollback went on past ptp's failing DEL: the other two networks are gone.
    assert_eq!(f.pod.link_names(), ["lo"]);
    assert_eq!(f.reservations(), []);
    // The cache stays for the runtime's DEL (the rollback was incomplete); that DEL reports ptp's error
    // again but removes everything plexus kept.
    assert!(f.cni_dir().join("bad-ipam").exists());
    let r = f.plexus("DEL", "bad-ipam", Some(&f.pod.path()), &cfg);
    r.error_code();
    f.assert_clean("bad-ipam");
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn conflist_failing_midway_as_third_delegate_rolls_back_everything() {
    let f = Fixture::new();
    let (cluster, _) = f.standard_networks();
    // The third network is a conflist: ptp succeeds (net2, an address), then tuning fails.
    let chain = f.write(
        "net.d/30-ptp-chain.conflist",
        &json!({
            "cniVersion": "1.0.0",
            "name": "ptp-chain",
            "plugins": [
                {"type": "ptp", "ipMasq": false, "ipam": f.ipam(PTP_SUBNET)},
                {"type": "tuning", "dataDir": f.root().join("tuning"),
                 "sysctl": {"net.ipv4.conf.net2.no_such_sysctl": "1"}},
            ],
        }),
    );
    let cfg = f.plexus_config(
        "1.0.0",
        json!({"clusterNetwork": cluster, "defaultNetworks": ["macvlan-net", chain]}),
    );
    let r = f.plexus("ADD", "fail-chain", Some(&f.pod.path()), &cfg);
    r.error_code();
    assert!(r.msg().contains("ptp-chain"), "{r:#?}");
    assert!(
        f.ipam_dir().join("ptp-chain/last_reserved_ip.0").exists(),
        "ptp ran and reserved an address before tuning failed (so the rollback had work to do)\nlog:\n{}",
        f.log()
    );
    f.assert_clean("fail-chain");
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn del_twice_succeeds() {
    let f = Fixture::new();
    let cfg = f.standard_config("1.0.0");
    f.add_ok("twice", &cfg);
    f.del_ok("twice", Some(&f.pod.path()), &cfg);
    f.assert_clean("twice");
    f.del_ok("twice", Some(&f.pod.path()), &cfg);
    f.assert_clean("twice");
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn del_without_netns_after_the_pod_netns_is_gone_releases_everything() {
    let f = Fixture::new();
    let cfg = f.standard_config("1.0.0");
    f.add_ok("gone", &cfg);
    assert_eq!(f.reservations().len(), 3);
    f.pod.delete();
    f.del_ok("gone", None, &cfg);
    f.assert_clean("gone");
    // And once more, as a runtime retrying would.
    f.del_ok("gone", None, &cfg);
    f.assert_clean("gone");
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn existing_interface_name_in_the_pod_fails_with_102_and_leaves_nothing() {
    let f = Fixture::new();
    let cfg = f.standard_config("1.0.0");
    ipw(&format!(
        "-n {} link add net1 type veth peer name squatter",
        f.pod.name
    ));
    let before = f.pod.macs();
    let r = f.plexus("ADD", "taken", Some(&f.pod.path()), &cfg);
    assert_eq!(r.error_code(), 102, "{r:#?}\nlog:\n{}", f.log());
    assert!(r.msg().contains("net1"), "{r:#?}");
    f.assert_clean_except("taken", &["lo", "net1", "squatter"], &[]);
    assert_eq!(
        f.pod.macs(),
        before,
        "the existing interfaces are untouched"
    );
    assert!(f.pod.addresses().is_empty());
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn hostile_plugin_types_are_refused_and_nothing_runs() {
    let f = Fixture::new();
    let (cluster, _) = f.standard_networks();
    let trap = f.tripwire("evil");
    // Relative to binDir (<root>/bin), "../evil" is the tripwire; relative to CNI_PATH it is found too.
    let up_to_root = format!("../../..{}", trap.display());
    let hostile = [
        "../evil".to_string(),
        up_to_root,
        trap.display().to_string(),
        "/bin/sh".to_string(),
        "../../bin/sh".to_string(),
    ];
    let mut cases: Vec<(String, Value)> = Vec::new();
    for (k, t) in hostile.iter().enumerate() {
        // As a whole network in defaultNetworks (kept outside confDir so name lookups never see it).
        let p = f.write(
            &format!("hostile-{k}.conf"),
            &json!({"cniVersion": "1.0.0", "name": format!("hostile-{k}"), "type": t}),
        );
        cases.push((
            format!("type {t:?} in a defaultNetworks file"),
            f.plexus_config(
                "1.0.0",
                json!({"clusterNetwork": cluster, "defaultNetworks": [p]}),
            ),
        ));
        // As the second plugin of the cluster conflist.
        let mut list = f.cluster_conflist("1.0.0");
        list["plugins"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": t}));
        let p = f.write(&format!("hostile-{k}.conflist"), &list);
        cases.push((
            format!("type {t:?} chained in the cluster conflist"),
            f.plexus_config("1.0.0", json!({"clusterNetwork": p})),
        ));
        // As an IPAM type.
        let mut ptp = f.ptp_conf("1.0.0");
        ptp["ipam"]["type"] = json!(t);
        cases.push((
            format!("ipam type {t:?} in inline delegates"),
            f.plexus_config(
                "1.0.0",
                json!({"delegates": [f.cluster_conflist("1.0.0"), ptp]}),
            ),
        ));
        // As an inline delegate.
        cases.push((
            format!("type {t:?} inline delegate"),
            f.plexus_config(
                "1.0.0",
                json!({"delegates": [{"cniVersion": "1.0.0", "name": "h", "type": t}]}),
            ),
        ));
    }
    for (i, (what, cfg)) in cases.iter().enumerate() {
        let cid = format!("hostile-{i}");
        let r = f.plexus("ADD", &cid, Some(&f.pod.path()), cfg);
        assert_eq!(r.error_code(), 7, "{what}: {r:#?}");
        assert!(r.msg().contains("type"), "{what}: names the key: {r:#?}");
        assert!(
            !f.tripwire_marker("evil").exists(),
            "{what}: the hostile binary ran"
        );
        assert!(
            fs::read_dir(f.ipam_dir()).unwrap().next().is_none(),
            "{what}: no delegate may run before the config is refused\nlog:\n{}",
            f.log()
        );
        f.assert_clean(&cid);
    }
}

/// Run `f` on a thread inside `netns`, so the processes it starts run there (as a runtime's CNI calls
/// would from the node's namespace).
fn in_netns<T: Send + 'static>(netns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    plexus_netns::run_in_netns(&netns.path(), f).expect("enter the host netns")
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn plexus_chained_before_tuning_through_the_libcni_runner() {
    let f = Fixture::new();
    let (cluster, _) = f.standard_networks();
    std::os::unix::fs::symlink(PLEXUS, f.bin_dir().join("plexus")).unwrap();
    let tuning_dir = f.root().join("tuning");
    let mut plexus_plugin = f.plexus_config("1.0.0", json!({"clusterNetwork": cluster}));
    plexus_plugin["defaultNetworks"] = json!(["macvlan-net"]);
    let chain = json!({
        "cniVersion": "1.0.0",
        "name": "chained",
        "plugins": [
            plexus_plugin,
            {"type": "tuning", "mtu": 1400, "dataDir": tuning_dir,
             "sysctl": {"net.ipv4.conf.eth0.arp_ignore": "1"}},
        ],
    });
    let net = NetworkConfig::from_bytes(&serde_json::to_vec(&chain).unwrap()).unwrap();
    let rt = RuntimeConf {
        container_id: "chained-1".into(),
        netns: Some(f.pod.path()),
        ifname: "eth0".into(),
        args: CniArgs::default(),
        capability_args: Map::new(),
    };
    let search_path = vec![f.bin_dir(), PathBuf::from(CNI_PATH)];
    let cache_dir = f.root().join("runtime-cache");
    let run = {
        let (net, rt, search_path, cache_dir) = (
            net.clone(),
            rt.clone(),
            search_path.clone(),
            cache_dir.clone(),
        );
        move |op: &'static str| {
            let (net, rt, search_path, cache_dir) = (
                net.clone(),
                rt.clone(),
                search_path.clone(),
                cache_dir.clone(),
            );
            move || -> Result<Option<Value>, String> {
                let exec = ProcessExec;
                let inv = Invoker {
                    exec: &exec,
                    search_path,
                    base_env: vec![("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into())],
                    timeout: Duration::from_secs(120),
                    cache_dir,
                    cache_writes: plexus::seams::invoke::CacheWrites::LikeLibcni,
                };
                match op {
                    "ADD" => inv
                        .add(&net, &rt)
                        .and_then(|r| Ok(r.to_value(CniVersion::V1_0_0)?))
                        .map(Some),
                    "CHECK" => inv.check(&net, &rt).map(|()| None),
                    _ => inv.del(&net, &rt).map(|()| None),
                }
                .map_err(|e| e.to_string())
            }
        }
    };

    let result = in_netns(&f.host, run("ADD"))
        .unwrap_or_else(|e| panic!("chained ADD: {e}\nlog:\n{}", f.log()))
        .unwrap();
    // tuning received plexus's result as prevResult and passed it on: the chain's result is the cluster
    // network's (bridge's) result as plexus cached it.
    let bridge = plexus::store::resultcache::read(&f.cni_dir(), "cluster", "chained-1", "eth0")
        .unwrap()
        .expect("plexus cached the bridge result")
        .result
        .unwrap();
    let bridge = CniResult::from_value(&bridge, CniVersion::V1_0_0).unwrap();
    let chained = CniResult::from_value(&result, CniVersion::V1_0_0).unwrap();
    assert_eq!(chained.interfaces, bridge.interfaces, "{result:#}");
    assert_eq!(chained.ips, bridge.ips, "{result:#}");
    let eth0 = result_address(&result, "eth0").expect("eth0 address from plexus");
    assert!(in_subnet(&eth0, CLUSTER_SUBNET), "{result:#}");
    // plexus's networks and tuning's changes are visible in the pod.
    assert_eq!(f.pod.link_names(), ["eth0", "lo", "net1"]);
    assert_eq!(f.pod.addresses()["eth0"], [eth0]);
    assert!(in_subnet(&f.pod.addresses()["net1"][0], MACVLAN_SUBNET));
    assert_eq!(f.pod.link("eth0").mtu, Some(1400));
    let arp_ignore = in_netns(&f.pod, || {
        fs::read_to_string("/proc/sys/net/ipv4/conf/eth0/arp_ignore").unwrap()
    });
    assert_eq!(arp_ignore.trim(), "1");
    // The runtime's result cache holds the chain's final result.
    assert!(
        f.root()
            .join("runtime-cache/results/chained-chained-1-eth0")
            .exists()
    );

    in_netns(&f.host, run("CHECK"))
        .unwrap_or_else(|e| panic!("chained CHECK: {e}\nlog:\n{}", f.log()));

    in_netns(&f.host, run("DEL")).unwrap_or_else(|e| panic!("chained DEL: {e}\nlog:\n{}", f.log()));
    f.assert_clean("chained-1");
    assert!(
        fs::read_dir(cache_dir.join("results"))
            .map(|mut d| d.next().is_none())
            .unwrap_or(true),
        "the runtime's result cache entry is gone"
    );
    assert!(
        fs::read_dir(&tuning_dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true),
        "tuning's backup is gone"
    );
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn gc_tears_down_containers_the_runtime_no_longer_lists() {
    let f = Fixture::new();
    let cfg = f.standard_config("1.1.0");
    let other = Netns::new("pod2");
    f.add_ok("gc-gone", &cfg);
    let r = f.plexus("ADD", "gc-live", Some(&other.path()), &cfg);
    assert_eq!(r.code, 0, "{r:#?}\nlog:\n{}", f.log());
    assert_eq!(f.reservations().len(), 6);

    let r = f.plexus("STATUS", "", None, &cfg);
    assert_eq!(r.code, 0, "STATUS: {r:#?}\nlog:\n{}", f.log());

    // The runtime forgot gc-gone (its sandbox is gone) and lists only gc-live.
    f.pod.delete();
    let mut gc = cfg.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "gc-live", "ifname": "eth0"}]);
    let r = f.plexus("GC", "", None, &gc);
    assert_eq!(r.code, 0, "GC: {r:#?}\nlog:\n{}", f.log());
    assert!(
        f.plexus_files("gc-gone").is_empty(),
        "{:?}",
        f.plexus_files("gc-gone")
    );
    let held = f.reservations();
    assert_eq!(held.len(), 3, "{held:?}");
    assert!(held.iter().all(|r| r.owner == "gc-live"), "{held:?}");
    assert_eq!(other.link_names(), ["eth0", "lo", "net1", "net2"]);

    f.del_ok("gc-live", Some(&other.path()), &cfg);
    assert_eq!(other.link_names(), ["lo"]);
    f.assert_clean("gc-live");
    f.assert_clean("gc-gone");
}
