//! Tests of hot-plug ([`super::hotplug`]) over the fakes: a running sandbox gains and loses pod networks as
//! its annotation changes, each change a transaction with the cache and records in step, failures rolled
//! back, interrupted attaches undone, and the runtime's DEL tearing down exactly what is attached.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{
    Seams,
    hotplug::{Hotplugged, Report, Sandbox, Skip, reconcile},
    run,
};
use crate::{
    pure::{
        annotations::NETWORKS_ANNOTATION, config::Config, hotplug::HOTPLUG_FAILED, request::CniEnv,
    },
    seams::{
        cluster::Cluster,
        devices::kubelet::NoKubelet,
        k8s::memory::MemoryApi,
        testing::{FakeExec, FakeNetns, TestHost},
    },
    store::{
        cache::{self, ReadOutcome},
        lock, refusals, resultcache,
    },
};

const NETNS: &str = "/run/netns/test-pod";
const ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod1;K8S_POD_UID=u1";

fn config(h: &TestHost) -> Config {
    config_in(&h.cni_dir())
}

fn config_in(cni_dir: &Path) -> Config {
    let v = json!({
        "cniVersion": "1.0.0", "name": "plexus-net", "type": "plexus",
        "cniDir": cni_dir, "binDir": "/opt/cni/bin",
        "delegates": [{"cniVersion": "1.0.0", "name": "cluster", "type": "bridge"}]
    });
    Config::from_bytes(&serde_json::to_vec(&v).unwrap()).unwrap()
}

/// Pod `ns1/pod1` (UID `u1`) selecting `networks`; NADs `a` and `b` (macvlans) exist.
fn api(networks: &str) -> MemoryApi {
    let nad = |n: &str| json!({"cniVersion": "1.0.0", "name": n, "type": "macvlan"});
    MemoryApi::new()
        .with_pod("ns1", "pod1", "u1", &[(NETWORKS_ANNOTATION, networks)])
        .with_nad("ns1", "a", nad("a"))
        .with_nad("ns1", "b", nad("b"))
}

fn seams<'a>(h: &'a TestHost, cluster: Option<&'a dyn Cluster>) -> Seams<'a> {
    Seams {
        exec: &h.exec,
        netns: &h.netns,
        cluster,
        kubelet: &NoKubelet,
        defer_work: false,
    }
}

/// The runtime's `command` of container `c1`.
fn runtime(h: &TestHost, command: &str, cluster: Option<&dyn Cluster>) {
    runtime_on(&config(h), &seams(h, cluster), command);
}

fn runtime_on(config: &Config, seams: &Seams<'_>, command: &str) {
    let env = CniEnv::from_vars([
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", NETNS),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni"),
        ("CNI_ARGS", ARGS),
    ])
    .unwrap()
    .unwrap();
    run(&env, config, seams)
        .result
        .expect("the runtime's call succeeds");
}

fn sandbox() -> Sandbox {
    Sandbox {
        container_id: "c1".into(),
        netns: NETNS.into(),
        cni_args: ARGS
            .split(';')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                [k.to_string(), v.to_string()]
            })
            .collect(),
        master_ifname: "eth0".into(),
    }
}

/// A hot-plug of `c1` with the pod's annotation now `networks`.
fn hotplug(h: &TestHost, networks: &str) -> Report {
    hotplug_over(h, &api(networks))
}

/// A hot-plug of `c1` reading the pod from `api`.
fn hotplug_over(h: &TestHost, api: &MemoryApi) -> Report {
    reconcile(
        &sandbox(),
        &config(h),
        &seams(h, Some(api)),
        &[PathBuf::from("/usr/lib/cni")],
        &[],
    )
}

/// (network, interface, hot-plugged, pod network) of each cache entry.
fn cached(h: &TestHost) -> Vec<(String, String, bool, bool)> {
    match cache::read(&h.cni_dir(), "c1").unwrap() {
        ReadOutcome::Found(entries) => entries
            .into_iter()
            .map(|e| {
                (
                    e.name,
                    e.if_name.unwrap_or_default(),
                    e.hotplugged,
                    e.pod_network.expect("always written"),
                )
            })
            .collect(),
        other => panic!("{other:?}"),
    }
}

fn records(h: &TestHost) -> Vec<String> {
    let mut r: Vec<String> = resultcache::list(&h.cni_dir(), Some("c1"))
        .into_iter()
        .map(|r| format!("{}/{}", r.network_name, r.if_name))
        .collect();
    r.sort();
    r
}

fn calls(h: &TestHost) -> Vec<String> {
    let out = h
        .exec
        .calls()
        .iter()
        .map(|c| format!("{} {} {}", c.command(), c.network(), c.ifname()))
        .collect();
    h.exec.clear();
    out
}

fn reasons(events: &[k8s_openapi::api::core::v1::Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.reason.clone().unwrap_or_default())
        .collect()
}

fn current(r: &Report) -> Vec<String> {
    match &r.result {
        Ok(Hotplugged::Reconciled { current, .. }) => current
            .iter()
            .map(|(a, _)| format!("{}@{}", a.status_name, a.ifname))
            .collect(),
        other => panic!("{other:?}"),
    }
}

fn e(s: &str) -> (String, String, bool, bool) {
    let parts: Vec<&str> = s.split(' ').collect();
    (
        parts[0].into(),
        parts[1].into(),
        parts.contains(&"hotplugged"),
        parts.contains(&"pod"),
    )
}

/// Issue 18: add a network, then a second on a requested name, then remove the first; the runtime's DEL
/// then tears down exactly what is attached.
#[test]
fn networks_come_and_go_on_a_running_sandbox_and_del_tears_down_what_is_attached() {
    let h = TestHost::new();
    runtime(&h, "ADD", Some(&api("")));
    calls(&h);

    let r = hotplug(&h, "a");
    assert_eq!(calls(&h), ["ADD a net1"]);
    assert_eq!(current(&r), ["cluster@eth0", "ns1/a@net1"]);
    assert_eq!(reasons(&r.changes), ["AddedInterface"]);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(
        cached(&h),
        [e("cluster eth0"), e("ns1/a net1 hotplugged pod")]
    );
    assert_eq!(records(&h), ["a/net1", "cluster/eth0"]);

    let r = hotplug(&h, "a,b@data0");
    assert_eq!(calls(&h), ["ADD b data0"]);
    assert_eq!(current(&r), ["cluster@eth0", "ns1/a@net1", "ns1/b@data0"]);

    let r = hotplug(&h, "b@data0");
    assert_eq!(calls(&h), ["DEL a net1"]);
    assert_eq!(current(&r), ["cluster@eth0", "ns1/b@data0"]);
    assert_eq!(reasons(&r.changes), ["RemovedInterface"]);
    assert_eq!(records(&h), ["b/data0", "cluster/eth0"]);

    // Unchanged: nothing runs.
    let r = hotplug(&h, "b@data0");
    assert!(calls(&h).is_empty());
    assert!(r.changes.is_empty() && r.warnings.is_empty());

    runtime(&h, "DEL", None);
    assert_eq!(calls(&h), ["DEL b data0", "DEL cluster eth0"]);
    assert!(!cache::path(&h.cni_dir(), "c1").exists());
    assert!(records(&h).is_empty());
}

/// A network the runtime's ADD attached is the pod's, so hot-plug may remove it; the node's never.
#[test]
fn the_adds_pod_networks_are_marked_and_only_they_are_detached() {
    let h = TestHost::new();
    runtime(&h, "ADD", Some(&api("a")));
    assert_eq!(cached(&h), [e("cluster eth0"), e("ns1/a net1 pod")]);
    calls(&h);
    let r = hotplug(&h, "");
    assert_eq!(calls(&h), ["DEL a net1"], "the cluster network stays");
    assert_eq!(current(&r), ["cluster@eth0"]);
}

/// A delegate failing mid-attach is rolled back: its DEL runs, the cache is as before, no record is left,
/// and a `HotplugFailed` event says why.
#[test]
fn a_failed_attach_is_rolled_back_and_reported() {
    let h = TestHost::new();
    runtime(&h, "ADD", Some(&api("")));
    calls(&h);
    h.exec.fail("b", "ADD", 11, "no room");
    let r = hotplug(&h, "a,b");
    assert_eq!(calls(&h), ["ADD a net1", "ADD b net2", "DEL b net2"]);
    assert_eq!(current(&r), ["cluster@eth0", "ns1/a@net1"]);
    let Ok(Hotplugged::Reconciled {
        failed, attached, ..
    }) = &r.result
    else {
        panic!("{:?}", r.result)
    };
    assert_eq!((*attached, *failed), (1, 1));
    assert_eq!(reasons(&r.warnings), [HOTPLUG_FAILED]);
    let msg = r.warnings[0].message.clone().unwrap();
    assert!(msg.contains("ns1/b") && msg.contains("no room"), "{msg}");
    assert_eq!(
        cached(&h),
        [e("cluster eth0"), e("ns1/a net1 hotplugged pod")]
    );
    assert_eq!(records(&h), ["a/net1", "cluster/eth0"]);
}

/// An attach interrupted after its cache entry was written (no result record) is undone by the next
/// reconcile, then attached again while the pod still wants it.
#[test]
fn an_interrupted_attach_is_undone_then_redone() {
    let h = TestHost::new();
    runtime(&h, "ADD", Some(&api("")));
    hotplug(&h, "a");
    calls(&h);
    // The daemon died between the delegate and its record.
    resultcache::remove(&h.cni_dir(), "a", "c1", "net1").unwrap();
    let r = hotplug(&h, "a");
    assert_eq!(calls(&h), ["DEL a net1", "ADD a net1"]);
    assert_eq!(current(&r), ["cluster@eth0", "ns1/a@net1"]);
    // No longer wanted: only undone.
    resultcache::remove(&h.cni_dir(), "a", "c1", "net1").unwrap();
    let r = hotplug(&h, "");
    assert_eq!(calls(&h), ["DEL a net1"]);
    assert_eq!(current(&r), ["cluster@eth0"]);
}

/// A sandbox being deleted (no cache) or whose ADD has not finished (an entry of its own without a
/// record) is never touched.
#[test]
fn a_sandbox_gone_or_not_yet_up_is_left_alone() {
    let h = TestHost::new();
    let r = hotplug(&h, "a");
    assert!(
        matches!(&r.result, Ok(Hotplugged::Skipped(Skip::Gone))),
        "{:?}",
        r.result
    );
    assert!(calls(&h).is_empty());
    assert!(
        !lock::lock_dir(&h.cni_dir()).join("c1").exists(),
        "no lock file outlives the sandbox"
    );
    runtime(&h, "ADD", Some(&api("")));
    calls(&h);
    resultcache::remove(&h.cni_dir(), "cluster", "c1", "eth0").unwrap();
    let r = hotplug(&h, "a");
    assert!(
        matches!(&r.result, Ok(Hotplugged::Skipped(Skip::Unfinished))),
        "{:?}",
        r.result
    );
    assert!(calls(&h).is_empty());
}

/// A cache from before hot-plug does not say which entries are the pod's: such a sandbox is left alone
/// (re-attaching what it has, or detaching the node's networks, would be wrong).
#[test]
fn a_sandbox_from_before_hot_plug_is_left_alone() {
    let h = TestHost::new();
    runtime(&h, "ADD", Some(&api("a")));
    calls(&h);
    let path = cache::path(&h.cni_dir(), "c1");
    let mut entries: Vec<Value> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for e in &mut entries {
        e.as_object_mut().unwrap().remove("plexusPodNetwork");
    }
    std::fs::write(&path, serde_json::to_vec(&entries).unwrap()).unwrap();
    let r = hotplug(&h, "a,b");
    assert!(
        matches!(&r.result, Ok(Hotplugged::Skipped(Skip::Legacy))),
        "{:?}",
        r.result
    );
    assert!(calls(&h).is_empty());
}

/// A NAD that does not exist refuses the whole change: nothing runs, Warning events say why.
#[test]
fn a_missing_nad_leaves_the_pod_untouched_with_warnings() {
    let h = TestHost::new();
    runtime(&h, "ADD", Some(&api("a")));
    calls(&h);
    let r = hotplug(&h, "ghost");
    assert!(r.result.is_err());
    assert!(calls(&h).is_empty());
    assert_eq!(reasons(&r.warnings), ["NoNetworkFound", HOTPLUG_FAILED]);
    assert_eq!(cached(&h), [e("cluster eth0"), e("ns1/a net1 pod")]);
}

/// A changed attachment is refused, not re-plugged; the rest of the change goes ahead.
#[test]
fn a_changed_attachment_is_refused_and_kept() {
    let h = TestHost::new();
    runtime(&h, "ADD", Some(&api("a")));
    calls(&h);
    let changed = r#"[{"name":"a","mac":"02:00:00:00:00:aa"},{"name":"b"}]"#;
    let r = hotplug(&h, changed);
    assert_eq!(calls(&h), ["ADD b net2"]);
    assert_eq!(current(&r), ["cluster@eth0", "ns1/a@net1", "ns1/b@net2"]);
    assert_eq!(reasons(&r.warnings), [HOTPLUG_FAILED]);
    let msg: Value = r.warnings[0].message.clone().unwrap().into();
    assert!(msg.as_str().unwrap().contains("not re-plugged"), "{msg}");
}

/// Every file under cniDir that names container `c1` (its cache, lock, records, refusals, temp files).
fn files_of_c1(h: &TestHost) -> Vec<PathBuf> {
    plexus_testsupport::leaks::files_naming(&h.cni_dir(), "c1")
}

/// A refusal that stands is posted once per sandbox, however often the sandbox is looked at again with the
/// same networks annotation (each look here is a fresh reconcile, as after a daemon restart: only the record
/// on disk carries over); an edit of the annotation is answered in full, the same refusal posted again; one
/// that changes is posted, one that goes away and comes back is posted again; a record of the first form
/// (no annotation) counts as made for the annotation looked at; the runtime's DEL leaves no record behind.
#[test]
fn a_standing_refusal_is_posted_once_per_sandbox() {
    let h = TestHost::new();
    runtime(&h, "ADD", Some(&api("a")));
    calls(&h);
    let mac = |m: &str| format!(r#"[{{"name":"a","mac":"02:00:00:00:00:{m}"}}]"#);
    let messages = |r: &Report| -> Vec<String> {
        r.warnings
            .iter()
            .map(|e| e.message.clone().unwrap_or_default())
            .collect()
    };

    let r = hotplug(&h, &mac("aa"));
    assert_eq!(reasons(&r.warnings), [HOTPLUG_FAILED]);
    let refused = messages(&r);
    assert!(refusals::path(&h.cni_dir(), "c1").is_file());
    // Looked at again, nothing changed: nothing to post, and the outcome still counts the refusal.
    let r = hotplug(&h, &mac("aa"));
    assert!(r.warnings.is_empty(), "{:?}", messages(&r));
    assert!(
        matches!(r.result, Ok(Hotplugged::Reconciled { failed: 1, .. })),
        "{:?}",
        r.result
    );
    // The user edits the annotation (an hour later, say: the first event has expired) and is refused for
    // the same reason, word for word: the edit gets its answer. Looked at again, it stands as posted.
    let edited = r#"[{"mac":"02:00:00:00:00:aa","name":"a"}]"#;
    let r = hotplug(&h, edited);
    assert_eq!(messages(&r), refused, "an edit is answered in full");
    let r = hotplug(&h, edited);
    assert!(r.warnings.is_empty(), "{:?}", messages(&r));
    // A record of the first form (the set alone, from the daemon this one replaced): taken as made for the
    // annotation now, so the restart posts nothing; the next edit is answered.
    std::fs::write(
        refusals::path(&h.cni_dir(), "c1"),
        serde_json::to_vec(&json!([{"reason": HOTPLUG_FAILED, "message": refused[0]}])).unwrap(),
    )
    .unwrap();
    let r = hotplug(&h, &mac("aa"));
    assert!(r.warnings.is_empty(), "{:?}", messages(&r));
    let r = hotplug(&h, edited);
    assert_eq!(messages(&r), refused);
    // A NAD that does not exist refuses the whole edit: its two events are posted once too.
    let with_ghost = r#"[{"name":"a","mac":"02:00:00:00:00:aa"},{"name":"ghost"}]"#;
    let r = hotplug(&h, with_ghost);
    assert_eq!(reasons(&r.warnings), ["NoNetworkFound", HOTPLUG_FAILED]);
    let r = hotplug(&h, with_ghost);
    assert!(r.warnings.is_empty(), "{:?}", messages(&r));
    // Back in line: the refusals no longer stand, and their record goes.
    let r = hotplug(&h, "a");
    assert!(r.warnings.is_empty(), "{:?}", messages(&r));
    assert!(!refusals::path(&h.cni_dir(), "c1").exists());
    // The refusal comes back: posted again.
    let r = hotplug(&h, &mac("aa"));
    assert_eq!(reasons(&r.warnings), [HOTPLUG_FAILED]);
    // Another refusal of the same attachment (other text): posted.
    let r = hotplug(&h, r#"[{"name":"a","cni-args":{"x":"1"}}]"#);
    assert_eq!(reasons(&r.warnings), [HOTPLUG_FAILED]);
    assert!(messages(&r)[0].contains("cni-args"), "{:?}", messages(&r));
    assert!(calls(&h).is_empty(), "a refusal runs nothing");

    runtime(&h, "DEL", None);
    assert_eq!(files_of_c1(&h), Vec::<PathBuf>::new());
}

/// The runtime's DEL of the sandbox lands between the reconcile's first look and its attach or detach:
/// nothing runs, and the pod gets no event and no network-status write (a sandbox being deleted is no
/// failure of its hot-plug); nothing of the sandbox is left on disk.
#[test]
fn a_sandbox_deleted_mid_reconcile_is_skipped_quietly() {
    // (annotation at the ADD, annotation at the hot-plug): an attach, then a detach.
    for (at_add, now) in [("", "a"), ("a", "")] {
        let h = TestHost::new();
        runtime(&h, "ADD", Some(&api(at_add)));
        calls(&h);
        let cni_dir = h.cni_dir();
        // The pod read comes after the first look (under the lock, released since) and before the change.
        let api = api(now).on_pod_read(move || {
            let (exec, netns) = (FakeExec::default(), FakeNetns::default());
            let seams = Seams {
                exec: &exec,
                netns: &netns,
                cluster: None,
                kubelet: &NoKubelet,
                defer_work: false,
            };
            runtime_on(&config_in(&cni_dir), &seams, "DEL");
        });
        let r = hotplug_over(&h, &api);
        assert!(
            matches!(r.result, Ok(Hotplugged::Skipped(Skip::Gone))),
            "{now:?}: {:?}",
            r.result
        );
        assert!(
            r.warnings.is_empty(),
            "{now:?}: no Warning event: {:?}",
            r.warnings
        );
        assert!(r.changes.is_empty(), "{now:?}: {:?}", r.changes);
        assert!(calls(&h).is_empty(), "{now:?}: no delegate ran");
        assert!(api.status_writes().is_empty());
        assert_eq!(files_of_c1(&h), Vec::<PathBuf>::new(), "{now:?}");
    }
}
