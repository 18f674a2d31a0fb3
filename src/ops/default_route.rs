//! `default-route` within ADD and CHECK (NPWG-34): the request is checked before anything is attached;
//! after every delegate succeeded, the default routes move in the pod's namespace (the netns seam) and the
//! results are made to say so, before ADD writes them to the result cache (its [`super::transaction`]
//! holds the records until then) and sets the container cache's gateway-filter flags; CHECK verifies the
//! pod's default routes against the cached results. The decisions are [`crate::pure::routes`]'s (pure).

use std::path::Path;

use plexus_cni::CniResult;

use super::Ctx;
use crate::{
    ops::error::Error,
    pure::{
        plan::Attachment,
        routes::{self, RouteError},
    },
    store::resultcache,
};

/// Refuse an invalid request (two networks asking, a bad gateway) before anything is attached.
pub(super) fn validate(ctx: &Ctx<'_>, attachments: &[Attachment]) -> Result<(), Error> {
    routes::validate(attachments).map_err(|source| Error::DefaultRoute {
        who: ctx.who(),
        source,
    })
}

/// Whether some planned attachment asks for the default route: then [`apply`] may change results after
/// every delegate ran, and the ADD holds their records until it has (known before anything runs, as
/// [`routes::decide`] finds a plan exactly when an attachment asks).
pub(super) fn requested(attachments: &[Attachment]) -> bool {
    attachments.iter().any(|a| a.requests.gateways.is_some())
}

/// What [`apply`] changed, for the records the ADD writes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rewritten {
    /// Whether each attachment's result changed, in order.
    pub changed: Vec<bool>,
    /// Go Multus's `IsFilterV4Gateway`/`IsFilterV6Gateway` flags of each cached delegate, in order.
    pub filter_flags: Vec<(bool, bool)>,
}

/// Move the default routes as the pod asked and rewrite `attached`'s results to match; `None` when no
/// attachment asks. Writes nothing to disk: the caller records the final results. An error leaves the
/// caller to roll the ADD back: every route touched belongs to an interface the rollback removes.
pub(super) fn apply(
    ctx: &Ctx<'_>,
    netns: &Path,
    attached: &mut [(Attachment, CniResult)],
) -> Result<Option<Rewritten>, Error> {
    let who = || ctx.who();
    let Some(plan) =
        routes::decide(attached).map_err(|source| Error::DefaultRoute { who: who(), source })?
    else {
        return Ok(None);
    };
    let (sel, _) = &attached[plan.selected];
    if !plan.edit.is_empty() {
        let report = ctx
            .seams
            .netns
            .edit_default_routes(netns, plan.edit.clone())
            .map_err(|source| Error::DefaultRoute {
                who: who(),
                source: RouteError::Apply {
                    network: sel.status_name.clone(),
                    ifname: sel.ifname.clone(),
                    gateways: plan.gateways.clone(),
                    source,
                },
            })?;
        let removed: Vec<String> = report
            .removed
            .iter()
            .map(|(l, r)| match r.gateway {
                Some(gw) => format!("{} via {gw} dev {l}", r.destination),
                None => format!("{} dev {l}", r.destination),
            })
            .collect();
        let added: Vec<String> = report
            .added
            .iter()
            .map(|(l, gw)| format!("via {gw} dev {l}"))
            .collect();
        tracing::info!(network = %sel.status_name, ifname = %sel.ifname, ?removed, ?added, "default route set (NPWG-34)");
    } else {
        tracing::info!(network = %sel.status_name, ifname = %sel.ifname, "default-route: nothing to move");
    }

    let changed = attached
        .iter_mut()
        .enumerate()
        .map(|(i, (_, result))| routes::rewrite(&plan, i, result))
        .collect();
    Ok(Some(Rewritten {
        changed,
        filter_flags: routes::filter_flags(&plan, attached.len()),
    }))
}

/// CHECK: when a cached attachment asked for the default route, the pod's default routes must still be
/// what ADD made them. Attachments without a usable cached result are left to their delegate's CHECK.
pub(super) fn verify(ctx: &Ctx<'_>, netns: &Path, attachments: &[Attachment]) -> Result<(), Error> {
    if attachments.iter().all(|a| a.requests.gateways.is_none()) {
        return Ok(());
    }
    let cid = ctx.env.container_id();
    let mut attached = Vec::with_capacity(attachments.len());
    for a in attachments {
        let cached = resultcache::read(&ctx.config.cni_dir, &a.network.name, cid, &a.ifname)
            .ok()
            .flatten()
            .and_then(|rec| rec.result)
            .and_then(|v| CniResult::from_value(&v, a.network.cni_version).ok());
        let Some(result) = cached else {
            return Ok(());
        };
        attached.push((a.clone(), result));
    }
    let err = |source| Error::DefaultRoute {
        who: ctx.who(),
        source,
    };
    let Some(plan) = routes::decide(&attached).map_err(err)? else {
        return Ok(());
    };
    let sel = &attached[plan.selected].0;
    let actual = ctx
        .seams
        .netns
        .default_routes(netns)
        .map_err(|source| Error::Netns {
            who: ctx.who(),
            network: sel.status_name.clone(),
            netns: netns.to_path_buf(),
            source,
        })?;
    routes::verify(&plan, &attached, &actual).map_err(err)
}

#[cfg(test)]
mod tests {
    use plexus_netns::{DefaultRouteEdit, Errno, IpFamily, MAIN_TABLE, RouteInfo};
    use serde_json::{Value, json};

    use super::super::{AfterReply, Seams, execute};

    /// Where a daemon-mode run puts the work it left for after the reply.
    type Later = std::cell::RefCell<Option<AfterReply>>;
    use crate::{
        pure::{
            annotations::{DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION},
            config::Config,
            request::CniEnv,
        },
        seams::{devices::kubelet::NoKubelet, k8s::memory::MemoryApi, testing::TestHost},
        store::{cache, resultcache},
    };

    use super::*;

    const NETNS: &str = "/run/netns/test-pod";

    /// The pod `ns1/pod1` selecting NADs `mv0`, `mv1`, … (macvlans), each with the `default-route`
    /// gateways given.
    type Pod = MemoryApi;

    /// The selection of NAD `mv<i>` with `gws` as its `default-route`.
    fn element(i: usize, gws: Option<&[&str]>) -> Value {
        let mut e = json!({"namespace": "ns1", "name": format!("mv{i}")});
        if let Some(g) = gws {
            e["default-route"] = json!(g);
        }
        e
    }

    /// The API with NADs `mv0`… and the pod annotated with `annotations`.
    fn api(n: usize, annotations: &[(&str, &str)]) -> Pod {
        let mut api = MemoryApi::new().with_pod("ns1", "pod1", "u1", annotations);
        for i in 0..n {
            let name = format!("mv{i}");
            api = api.with_nad(
                "ns1",
                &name,
                json!({"cniVersion": "1.0.0", "name": name, "type": "macvlan"}),
            );
        }
        api
    }

    fn pod(gateways: &[Option<&[&str]>]) -> Pod {
        let elements: Vec<Value> = gateways
            .iter()
            .enumerate()
            .map(|(i, gws)| element(i, *gws))
            .collect();
        let annotation = Value::from(elements).to_string();
        api(gateways.len(), &[(NETWORKS_ANNOTATION, &annotation)])
    }

    /// Interface → `gateway` of each network-status entry published.
    fn gateways(p: &Pod) -> Vec<(String, Vec<String>)> {
        p.statuses()
            .into_iter()
            .flat_map(|(_, entries)| entries)
            .map(|s| (s.interface, s.gateway))
            .collect()
    }

    struct World(TestHost);

    impl std::ops::Deref for World {
        type Target = TestHost;
        fn deref(&self) -> &TestHost {
            &self.0
        }
    }

    impl World {
        fn new() -> World {
            World(TestHost::new())
        }

        fn run(&self, command: &str, pod: &Pod) -> Result<Vec<u8>, Error> {
            self.run_with(command, pod, None)
        }

        /// As the daemon runs it (`later` given): the work left for after the reply goes to `later`.
        fn run_with(
            &self,
            command: &str,
            pod: &Pod,
            later: Option<&Later>,
        ) -> Result<Vec<u8>, Error> {
            let config = Config::from_bytes(
                &serde_json::to_vec(&json!({
                    "cniVersion": "1.0.0", "name": "plexus-net", "type": "plexus",
                    "cniDir": self.cni_dir(), "confDir": self.dir.path().join("conf"),
                    "binDir": "/opt/cni/bin",
                    "delegates": [{"cniVersion": "1.0.0", "name": "cluster", "type": "bridge"}]
                }))
                .unwrap(),
            )
            .unwrap();
            let env = CniEnv::from_vars([
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", NETNS),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/usr/lib/cni"),
                (
                    "CNI_ARGS",
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod1",
                ),
            ])
            .unwrap()
            .unwrap();
            let seams = Seams {
                exec: &self.exec,
                netns: &self.netns,
                cluster: Some(pod),
                kubelet: &NoKubelet,
                defer_work: later.is_some(),
            };
            let done = execute(&env, &config, &seams)?;
            if let Some(later) = later {
                *later.borrow_mut() = done.after_reply;
            }
            Ok(done.reply.to_stdout())
        }

        fn cached_routes(&self, network: &str, ifname: &str) -> Value {
            resultcache::read(&self.cni_dir(), network, "c1", ifname)
                .unwrap()
                .unwrap()
                .result
                .unwrap()["routes"]
                .clone()
        }
    }

    fn default_via(ifname: &str, gw: &str) -> (String, RouteInfo) {
        let gw: std::net::IpAddr = gw.parse().unwrap();
        (
            ifname.to_string(),
            RouteInfo {
                family: IpFamily::of(&gw),
                destination: "0.0.0.0/0".parse().unwrap(),
                gateway: Some(gw),
                oif: Some(2),
                metric: None,
                table: MAIN_TABLE,
            },
        )
    }

    #[test]
    fn add_moves_the_route_and_rewrites_results_caches_and_status_npwg_34() {
        let w = World::new();
        let p = pod(&[Some(&["192.0.2.1"])]);
        let reply: Value = serde_json::from_slice(&w.run("ADD", &p).unwrap()).unwrap();

        let edits = w.netns.route_edits.lock().unwrap().clone();
        assert_eq!(
            edits,
            [(
                std::path::PathBuf::from(NETNS),
                DefaultRouteEdit {
                    remove: vec![("eth0".into(), IpFamily::V4), ("net1".into(), IpFamily::V4)],
                    add: vec![("net1".into(), "192.0.2.1".parse().unwrap())],
                }
            )]
        );
        // The fake delegates give every interface a default route; eth0's is gone everywhere.
        let count = |v: &Value| v.as_array().map_or(0, Vec::len);
        assert_eq!(count(&reply["routes"]), 0, "{reply:#}");
        assert_eq!(count(&w.cached_routes("cluster", "eth0")), 0);
        assert_eq!(
            w.cached_routes("mv0", "net1"),
            json!([{"dst": "0.0.0.0/0", "gw": "192.0.2.1"}])
        );
        assert_eq!(
            gateways(&p),
            [
                ("eth0".to_string(), vec![]),
                ("net1".to_string(), vec!["192.0.2.1".to_string()])
            ]
        );
        let c: Value =
            serde_json::from_slice(&std::fs::read(cache::path(&w.cni_dir(), "c1")).unwrap())
                .unwrap();
        assert_eq!(c[0]["IsFilterV4Gateway"], true);
        assert_eq!(c[1]["IsFilterV4Gateway"], false);

        // CHECK looks at the pod's default routes.
        *w.netns.defaults.lock().unwrap() = vec![default_via("net1", "192.0.2.1")];
        w.run("CHECK", &p).unwrap();
        w.netns
            .defaults
            .lock()
            .unwrap()
            .push(default_via("eth0", "10.9.0.1"));
        let e = w.run("CHECK", &p).unwrap_err();
        assert!(
            e.to_string()
                .contains("eth0 has an IPv4 default route via 10.9.0.1"),
            "{e}"
        );
        w.netns.defaults.lock().unwrap().clear();
        let e = w.run("CHECK", &p).unwrap_err();
        assert!(
            e.to_string()
                .contains("the default route via 192.0.2.1 on net1 is missing"),
            "{e}"
        );
    }

    /// The route edit is decided before anything is persisted: a daemon ADD whose pod asks for the default
    /// route writes no record and no cache before its reply (it used to write them all, read them back and
    /// rewrite them first), and after it each record once, with the final routes.
    #[test]
    fn a_daemon_add_with_a_request_writes_the_final_records_after_the_reply() {
        let w = World::new();
        let p = pod(&[Some(&["192.0.2.1"])]);
        let later = Later::default();
        w.run_with("ADD", &p, Some(&later)).unwrap();
        assert_eq!(w.netns.route_edits.lock().unwrap().len(), 1);
        assert!(
            resultcache::list(&w.cni_dir(), Some("c1")).is_empty(),
            "no record written before the reply"
        );
        assert!(
            !cache::path(&w.cni_dir(), "c1").exists(),
            "the cache only staged before the reply"
        );
        let job = later.take().expect("work for after the reply");
        job();
        let count = |v: &Value| v.as_array().map_or(0, Vec::len);
        assert_eq!(count(&w.cached_routes("cluster", "eth0")), 0);
        assert_eq!(
            w.cached_routes("mv0", "net1"),
            json!([{"dst": "0.0.0.0/0", "gw": "192.0.2.1"}])
        );
        let c: Value =
            serde_json::from_slice(&std::fs::read(cache::path(&w.cni_dir(), "c1")).unwrap())
                .unwrap();
        assert_eq!(c[0]["IsFilterV4Gateway"], true);
        assert_eq!(c[1]["IsFilterV4Gateway"], false);
    }

    #[test]
    fn without_a_request_nothing_is_edited() {
        let w = World::new();
        let p = pod(&[None]);
        let reply: Value = serde_json::from_slice(&w.run("ADD", &p).unwrap()).unwrap();
        assert!(w.netns.route_edits.lock().unwrap().is_empty());
        assert_eq!(reply["routes"][0]["dst"], "0.0.0.0/0");
        // CHECK does not look at routes nobody asked for.
        w.run("CHECK", &p).unwrap();
    }

    #[test]
    fn a_refused_edit_rolls_the_add_back() {
        let w = World::new();
        *w.netns.route_error.lock().unwrap() = Some(Errno::ENETUNREACH);
        let p = pod(&[Some(&["203.0.113.1"])]);
        let e = w.run("ADD", &p).unwrap_err();
        assert_eq!(e.cni_code(), 7, "{e}");
        assert!(e.to_string().starts_with("[ns1/pod1]: default-route: network \"ns1/mv0\": cannot move the default route to interface net1 via 203.0.113.1: "), "{e}");
        let dels: Vec<String> = w
            .exec
            .calls()
            .iter()
            .filter(|c| c.command() == "DEL")
            .map(|c| c.network().to_string())
            .collect();
        assert_eq!(dels, ["mv0", "cluster"]);
        assert!(!cache::path(&w.cni_dir(), "c1").exists());
        assert!(resultcache::list(&w.cni_dir(), Some("c1")).is_empty());
        assert!(gateways(&p).is_empty(), "no status published");
    }

    #[test]
    fn two_requests_are_refused_before_any_delegate_runs() {
        let w = World::new();
        // The annotation parser allows one element to ask; the default-network annotation asks too.
        let default = Value::from(vec![element(0, Some(&["192.0.2.1"]))]).to_string();
        let networks = Value::from(vec![element(1, Some(&[]))]).to_string();
        let p = api(
            2,
            &[
                (DEFAULT_NETWORK_ANNOTATION, &default),
                (NETWORKS_ANNOTATION, &networks),
            ],
        );
        let e = w.run("ADD", &p).unwrap_err();
        assert_eq!(e.cni_code(), 7);
        assert_eq!(
            e.to_string(),
            "[ns1/pod1]: default-route: networks \"ns1/mv0\" and \"ns1/mv1\" both set \"default-route\"; at most one network may (NPWG-34)"
        );
        assert!(w.exec.calls().is_empty());
        assert!(!cache::path(&w.cni_dir(), "c1").exists());
    }
}
