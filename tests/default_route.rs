//! `default-route` (NPWG-34) in real network namespaces with Debian's bridge and macvlan plugins.
//!
//! plexus runs in process (`ops::execute`) with the real netns seam and the in-memory Kubernetes API
//! (`plexus::seams::k8s::memory`) holding the pod, with its `k8s.v1.cni.cncf.io/networks` annotation, and the
//! NADs of this file; the delegates run through wrapper scripts inside a "host" namespace the test makes (where the
//! bridge, its host-side veths and the macvlan master, a veth, live), on a "pod" namespace. The cluster
//! network is a bridge with host-local IPv4 and IPv6 ranges and a default route of each family on `eth0`.
//! Each test compares the pod's default routes without the key ("before") and with it ("after"), checks
//! the network-status `gateway`, the returned result, the result cache and CHECK, and that DEL leaves
//! nothing behind. DAD is switched off in both namespaces so the IPv6 addresses are usable at once (the
//! plugins would otherwise wait for it).
//!
//! These tests need root; `scripts/test.sh` runs them with `--include-ignored` when it is root.

mod netns_support;

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Mutex,
};

use plexus::{
    pure::annotations::{DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION},
    seams::k8s::memory::MemoryApi,
};

use netns_support::{CNI_PATH, Fixture, MASTER, Netns, Reservation};
use plexus::{
    ops::{self, Seams, error::Error},
    pure::{config::Config, request::CniEnv, status::NetworkStatus},
    seams::{devices::kubelet::NoKubelet, exec::ProcessExec, netns::KernelNetns},
    store::resultcache,
};
use plexus_netns::IpFamily;
use serde_json::{Value, json};

const NAMESPACE: &str = "dr";
const POD: &str = "pod1";

/// A default route of the pod: family, gateway, interface.
type DefaultRoute = (IpFamily, String, String);

fn v4(gw: &str, dev: &str) -> DefaultRoute {
    (IpFamily::V4, gw.into(), dev.into())
}

fn v6(gw: &str, dev: &str) -> DefaultRoute {
    (IpFamily::V6, gw.into(), dev.into())
}

/// The test's world: the fixture's namespaces and directories, the NADs, the pod's default-network
/// annotation (when set), and what plexus published.
struct World {
    f: Fixture,
    config: Config,
    nads: Vec<(String, Value)>,
    /// The pod's `v1.multus-cni.io/default-network` annotation.
    default_network: Mutex<Option<String>>,
    status: Mutex<Option<Vec<NetworkStatus>>>,
}

/// Switch off IPv6 duplicate address detection in `ns` (for links made or moved there from now on).
fn no_dad(ns: &Netns) {
    for conf in ["all", "default"] {
        let set = format!("echo 0 > /proc/sys/net/ipv6/conf/{conf}/accept_dad");
        ns.exec(&["sh", "-c", &set], netns_support::TIMEOUT);
    }
}

impl World {
    fn new() -> World {
        let f = Fixture::new();
        no_dad(&f.host);
        no_dad(&f.pod);
        // Every plugin runs in the host namespace: binDir holds one wrapper per plugin.
        for p in ["bridge", "macvlan", "host-local"] {
            let w = f.bin_dir().join(p);
            fs::write(
                &w,
                format!(
                    "#!/bin/sh\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\nexport PATH\nexec ip netns exec {} {CNI_PATH}/{p}\n",
                    f.host.name
                ),
            )
            .unwrap();
            fs::set_permissions(&w, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let ipam = |ranges: Value, routes: Value| json!({"type": "host-local", "dataDir": f.ipam_dir(), "ranges": ranges, "routes": routes});
        let cluster = f.write(
            "cluster.conflist",
            &json!({
                "cniVersion": "1.0.0",
                "name": "cluster",
                "plugins": [{
                    "type": "bridge", "bridge": "drbr0", "isGateway": true, "ipMasq": false,
                    "ipam": ipam(
                        json!([[{"subnet": "192.0.2.0/24"}], [{"subnet": "2001:db8:c::/64"}]]),
                        json!([{"dst": "0.0.0.0/0", "gw": "192.0.2.1"}, {"dst": "::/0", "gw": "2001:db8:c::1"}]),
                    ),
                }],
            }),
        );
        let macvlan = |name: &str, ranges: Value, routes: Value| {
            json!({
                "cniVersion": "1.0.0", "name": name, "type": "macvlan", "master": MASTER, "mode": "bridge",
                "ipam": ipam(ranges, routes),
            })
        };
        let nads = vec![
            // No default route of its own.
            (
                "mv".to_string(),
                macvlan(
                    "mv",
                    json!([[{"subnet": "198.51.100.0/24"}], [{"subnet": "2001:db8:a::/64"}]]),
                    json!([]),
                ),
            ),
            // Its own IPv4 default route via 203.0.113.1 (the plugins append it beside eth0's).
            (
                "mvgw".to_string(),
                macvlan(
                    "mvgw",
                    json!([[{"subnet": "203.0.113.0/24"}]]),
                    json!([{"dst": "0.0.0.0/0", "gw": "203.0.113.1"}]),
                ),
            ),
        ];
        let config = Config::from_bytes(
            &serde_json::to_vec(&f.plexus_config("1.0.0", json!({"clusterNetwork": cluster})))
                .unwrap(),
        )
        .unwrap();
        World {
            f,
            config,
            nads,
            default_network: Mutex::new(None),
            status: Mutex::new(None),
        }
    }

    /// Run plexus `command` for container `cid` with the pod annotated `annotation`.
    fn run(&self, command: &str, cid: &str, annotation: &str) -> Result<Vec<u8>, Error> {
        *self.status.lock().unwrap() = None;
        let default_network = self.default_network.lock().unwrap().clone();
        let mut annotations = vec![(NETWORKS_ANNOTATION, annotation)];
        if let Some(d) = &default_network {
            annotations.push((DEFAULT_NETWORK_ANNOTATION, d));
        }
        let mut api = MemoryApi::new().with_pod(NAMESPACE, POD, "uid-1", &annotations);
        for (name, config) in &self.nads {
            api = api.with_nad(NAMESPACE, name, config.clone());
        }
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={NAMESPACE};K8S_POD_NAME={POD};K8S_POD_INFRA_CONTAINER_ID={cid}"
        );
        let netns = self.f.pod.path().display().to_string();
        let env = CniEnv::from_vars([
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", CNI_PATH),
            ("CNI_ARGS", args.as_str()),
        ])
        .unwrap()
        .unwrap();
        let seams = Seams {
            exec: &ProcessExec,
            netns: &KernelNetns,
            cluster: Some(&api),
            kubelet: &NoKubelet,
            defer_work: false,
        };
        let out = ops::execute(&env, &self.config, &seams).map(|d| d.reply.to_stdout());
        *self.status.lock().unwrap() = api.statuses().pop().map(|(_, entries)| entries);
        out
    }

    /// ADD, requiring success; the returned result.
    fn add(&self, cid: &str, annotation: &str) -> Value {
        let out = self
            .run("ADD", cid, annotation)
            .unwrap_or_else(|e| panic!("ADD {annotation} failed: {e}"));
        serde_json::from_slice(&out).unwrap()
    }

    fn check(&self, cid: &str, annotation: &str) {
        if let Err(e) = self.run("CHECK", cid, annotation) {
            panic!("CHECK after ADD {annotation} failed: {e}");
        }
    }

    /// DEL, requiring success, and nothing left.
    fn del(&self, cid: &str, annotation: &str) {
        if let Err(e) = self.run("DEL", cid, annotation) {
            panic!("DEL failed: {e}");
        }
        self.f.assert_clean(cid);
    }

    /// The pod's default routes, sorted: IPv4 first, then by gateway.
    fn default_routes(&self) -> Vec<DefaultRoute> {
        // plexus-netns's own listing (checked against a raw route dump in its netns_root tests).
        let mut v: Vec<DefaultRoute> = plexus_netns::default_routes(&self.f.pod.path())
            .unwrap()
            .into_iter()
            .map(|(link, r)| {
                (
                    r.family,
                    r.gateway.map(|g| g.to_string()).unwrap_or_default(),
                    link,
                )
            })
            .collect();
        v.sort_by_key(|(f, g, l)| (*f == IpFamily::V6, g.clone(), l.clone()));
        v
    }

    /// Interface → `gateway` of the published network-status.
    fn status_gateways(&self) -> Vec<(String, Vec<String>)> {
        let entries = self
            .status
            .lock()
            .unwrap()
            .clone()
            .expect("a network-status");
        entries
            .into_iter()
            .map(|e| (e.interface, e.gateway))
            .collect()
    }

    /// The cached result of one attachment (libcni's result cache).
    fn cached_result(&self, network: &str, cid: &str, ifname: &str) -> Value {
        resultcache::read(&self.f.cni_dir(), network, cid, ifname)
            .unwrap()
            .unwrap_or_else(|| panic!("no cached result for {network}/{ifname}"))
            .result
            .unwrap()
    }

    /// The per-container cache (Go Multus format).
    fn container_cache(&self, cid: &str) -> Value {
        serde_json::from_slice(&fs::read(self.f.cni_dir().join(cid)).unwrap()).unwrap()
    }

    fn cni_dir(&self) -> PathBuf {
        self.f.cni_dir()
    }
}

/// The destinations of a result's zero-prefix routes.
fn default_dsts(result: &Value) -> Vec<String> {
    result["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["dst"].as_str())
        .filter(|d| d.ends_with("/0"))
        .map(str::to_string)
        .collect()
}

fn gws(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// What the delegates make without `default-route`: the pod's default routes and the status gateways.
fn before(w: &World, annotation: &str) -> (Vec<DefaultRoute>, Vec<(String, Vec<String>)>) {
    let cid = "before";
    w.add(cid, annotation);
    let seen = (w.default_routes(), w.status_gateways());
    w.check(cid, annotation);
    w.del(cid, annotation);
    seen
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn gateways_of_both_families_take_the_default_routes_from_eth0() {
    let w = World::new();
    let (routes, status) = before(&w, r#"[{"name": "mv"}]"#);
    assert_eq!(
        routes,
        [v4("192.0.2.1", "eth0"), v6("2001:db8:c::1", "eth0")]
    );
    assert_eq!(
        status,
        [
            ("eth0".to_string(), gws(&["192.0.2.1", "2001:db8:c::1"])),
            ("net1".to_string(), vec![])
        ]
    );

    let ann = r#"[{"name": "mv", "default-route": ["198.51.100.1", "2001:db8:a::1"]}]"#;
    let cid = "both";
    let result = w.add(cid, ann);
    assert_eq!(
        w.default_routes(),
        [v4("198.51.100.1", "net1"), v6("2001:db8:a::1", "net1")],
        "log:\n{}",
        w.f.log()
    );
    // The status, the returned (cluster) result and the result caches say the same.
    assert_eq!(
        w.status_gateways(),
        [
            ("eth0".to_string(), vec![]),
            ("net1".to_string(), gws(&["198.51.100.1", "2001:db8:a::1"]))
        ]
    );
    assert_eq!(default_dsts(&result), Vec::<String>::new(), "{result:#}");
    assert_eq!(
        default_dsts(&w.cached_result("cluster", cid, "eth0")),
        Vec::<String>::new()
    );
    assert_eq!(
        default_dsts(&w.cached_result("mv", cid, "net1")),
        ["0.0.0.0/0", "::/0"]
    );
    // Go Multus's flags: eth0 lost both families, net1 none.
    let cache = w.container_cache(cid);
    assert_eq!(
        (
            &cache[0]["IsFilterV4Gateway"],
            &cache[0]["IsFilterV6Gateway"]
        ),
        (&json!(true), &json!(true))
    );
    assert_eq!(
        (
            &cache[1]["IsFilterV4Gateway"],
            &cache[1]["IsFilterV6Gateway"]
        ),
        (&json!(false), &json!(false))
    );
    assert_eq!(
        cache[1]["default-route"],
        json!(["198.51.100.1", "2001:db8:a::1"])
    );
    // CHECK: the delegates' CHECK with the rewritten results, then plexus's own look at the default routes
    // (the reference plugins' CHECK does not notice a default route that came back).
    w.check(cid, ann);
    plexus_testsupport::proc::ipw(&format!(
        "-n {} route add default via 192.0.2.1 dev eth0 metric 50",
        w.f.pod.name
    ));
    let e = w.run("CHECK", cid, ann).unwrap_err();
    assert!(
        e.to_string().contains(
            "eth0 has an IPv4 default route via 192.0.2.1, but \"default-route\" gives that family's default route to net1"
        ),
        "{e}"
    );
    w.del(cid, ann);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn an_ipv4_gateway_moves_only_the_ipv4_default_route() {
    let w = World::new();
    let ann = r#"[{"name": "mv", "default-route": ["198.51.100.1"]}]"#;
    let cid = "v4only";
    let result = w.add(cid, ann);
    assert_eq!(
        w.default_routes(),
        [v4("198.51.100.1", "net1"), v6("2001:db8:c::1", "eth0")],
        "eth0 keeps its IPv6 default route"
    );
    assert_eq!(
        w.status_gateways(),
        [
            ("eth0".to_string(), gws(&["2001:db8:c::1"])),
            ("net1".to_string(), gws(&["198.51.100.1"]))
        ]
    );
    assert_eq!(default_dsts(&result), ["::/0"], "{result:#}");
    w.check(cid, ann);
    w.del(cid, ann);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn an_ipv6_gateway_moves_only_the_ipv6_default_route() {
    let w = World::new();
    let ann = r#"[{"name": "mv", "default-route": ["2001:db8:a::1"]}]"#;
    let cid = "v6only";
    w.add(cid, ann);
    assert_eq!(
        w.default_routes(),
        [v4("192.0.2.1", "eth0"), v6("2001:db8:a::1", "net1")]
    );
    w.check(cid, ann);
    w.del(cid, ann);
}

/// NPWG-34: the key selects the attachment that receives the default route; the list may be empty. An
/// empty list keeps that attachment's own default routes and takes the others' of the same family away.
#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn an_empty_list_keeps_the_chosen_networks_own_default_route() {
    let w = World::new();
    let (routes, status) = before(&w, r#"[{"name": "mvgw"}]"#);
    assert_eq!(
        routes,
        [
            v4("192.0.2.1", "eth0"),
            v4("203.0.113.1", "net1"),
            v6("2001:db8:c::1", "eth0")
        ],
        "without the key both IPv4 default routes are there"
    );
    assert_eq!(
        status,
        [
            ("eth0".to_string(), gws(&["192.0.2.1", "2001:db8:c::1"])),
            ("net1".to_string(), gws(&["203.0.113.1"]))
        ]
    );
    let ann = r#"[{"name": "mvgw", "default-route": []}]"#;
    let cid = "empty";
    w.add(cid, ann);
    assert_eq!(
        w.default_routes(),
        [v4("203.0.113.1", "net1"), v6("2001:db8:c::1", "eth0")]
    );
    assert_eq!(
        w.status_gateways(),
        [
            ("eth0".to_string(), gws(&["2001:db8:c::1"])),
            ("net1".to_string(), gws(&["203.0.113.1"]))
        ]
    );
    w.check(cid, ann);
    w.del(cid, ann);

    // A chosen network without a default route of its own: nothing moves (Go Multus would leave the pod
    // with none, its #1011).
    let ann = r#"[{"name": "mv", "default-route": []}]"#;
    let cid = "empty-none";
    w.add(cid, ann);
    assert_eq!(
        w.default_routes(),
        [v4("192.0.2.1", "eth0"), v6("2001:db8:c::1", "eth0")]
    );
    w.check(cid, ann);
    w.del(cid, ann);
}

/// Nothing ran: no interface, no address, no cache; the bridge never made its host-side veth.
fn nothing_attached(w: &World, cid: &str) {
    w.f.assert_clean(cid);
    assert!(
        !w.cni_dir().join("results").exists()
            || fs::read_dir(w.cni_dir().join("results"))
                .unwrap()
                .next()
                .is_none(),
        "no delegate ran"
    );
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn two_networks_asking_are_refused_before_anything_is_attached() {
    let w = World::new();
    // The annotation parser refuses the second element.
    let ann = r#"[{"name": "mv", "default-route": ["198.51.100.1"]}, {"name": "mvgw", "default-route": []}]"#;
    let e = w.run("ADD", "twice", ann).unwrap_err();
    assert_eq!(e.cni_code(), 7, "{e}");
    let msg = e.to_string();
    for want in [
        &format!("{NAMESPACE}/{POD}"),
        "dr/mv",
        "dr/mvgw",
        "at most one element may (NPWG-34)",
    ] {
        assert!(msg.contains(want), "{want:?} not in {msg}");
    }
    nothing_attached(&w, "twice");

    // Requests that reach the plan another way are refused there too: the default-network annotation
    // (replacing the cluster network) asks as well.
    *w.default_network.lock().unwrap() = Some(format!(
        r#"[{{"namespace": "{NAMESPACE}", "name": "mv", "default-route": ["198.51.100.1"]}}]"#
    ));
    let e = w
        .run(
            "ADD",
            "twice2",
            r#"[{"name": "mvgw", "default-route": []}]"#,
        )
        .unwrap_err();
    assert_eq!(e.cni_code(), 7, "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "[{NAMESPACE}/{POD}]: default-route: networks \"dr/mv\" and \"dr/mvgw\" both set \"default-route\"; at most one network may (NPWG-34)"
        )
    );
    nothing_attached(&w, "twice2");
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn a_gateway_the_network_cannot_reach_fails_the_add_and_leaves_nothing() {
    let w = World::new();
    let ann = r#"[{"name": "mv", "default-route": ["10.99.0.1"]}]"#;
    let e = w.run("ADD", "unreachable", ann).unwrap_err();
    assert_eq!(e.cni_code(), 7, "{e}");
    let msg = e.to_string();
    for want in [
        "dr/mv",
        "net1 via 10.99.0.1",
        "ENETUNREACH",
        &format!("{NAMESPACE}/{POD}"),
    ] {
        assert!(msg.contains(want), "{want:?} not in {msg}");
    }
    // Rolled back: every delegate's DEL ran, addresses released, caches gone.
    w.f.assert_clean_except("unreachable", &["lo"], &[] as &[Reservation]);
    assert!(Path::new(&w.f.pod.path()).exists());
}
