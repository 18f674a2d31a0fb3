//! The fault matrix (issue 6): plexus on a node with real network namespaces, Debian's plugins and an API
//! server, while things go wrong — a delegate fails, hangs, prints garbage or dies; plexus itself is
//! SIGKILLed at 29 points of an ADD (and its DEL), the runtime's DEL (or ADD) following at once while the
//! delegate it orphaned still runs; the API server is down, slow, failing or refusing the token; the cache
//! directory is read-only, full or corrupt; 100 containers come and go at once.
//!
//! Every case ends with the leak check of [`assert_no_leak`] (the pod's namespace back to `lo`, no
//! host-local reservation, no plexus cache, lock, temp or result-cache file naming the container, nothing
//! in the runtime's cache, no host veth left, no plugin process still running for it) and bounds each
//! invocation by its configured time limits plus a margin ([`assert_bounded`]): a hang fails the test, a
//! slow machine does not. The misbehaving delegate is the recording delegate (`delegates/recorder`),
//! chained before or after a real plugin so that the real plugin's work is there to leak.
//!
//! The pods are "K=3": the cluster network (`bridge`, from a file) on eth0, a macvlan NAD on net1 and a
//! bridge NAD on net2 ([`k3`]). RELIABILITY.md lists every case and what plexus does in it.
//!
//! With `E2E_MODE=daemon` the same cases run against a `plexus-daemon` (RELIABILITY.md says where it
//! behaves differently, and why the SIGKILL points stay thin).
//!
//! Run (as root): `cargo test -p plexus-e2e --test faults -- --include-ignored`. Against a real API server
//! (`E2E_KUBECONFIG`) the cases that need the stand-in's fault injection say so and pass.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use plexus::pure::annotations::NETWORKS_ANNOTATION;
use plexus_e2e::{
    apiserver::FaultSpec,
    harness::{
        chaos::{
            Mount, assert_bounded, assert_no_leak, assert_no_leak_of, chain, front,
            install_recorder, outliving, recorded, recorder, recorders_for, spawn_plexus,
        },
        cluster::standin_only,
        daemon::DaemonView,
        kubeconfig,
        runtime::CniRuntime,
        world::{
            BRIDGE_SUBNET, CLUSTER_NETWORK, CLUSTER_SUBNET, MACVLAN_SUBNET, Sandbox, World, netns,
        },
    },
};
use plexus_testsupport::{
    forward::closed_port,
    proc::{random_hex, wait_until},
    result::interface_sandbox,
};
use serde_json::{Value, json};

/// The plexus binary under test: `E2E_PLEXUS_BIN`, else the fresh build of this package.
fn plexus() -> PathBuf {
    std::env::var_os("E2E_PLEXUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_plexus-under-test")))
}

/// A world with the recording delegate installed.
fn world(test: &str) -> World {
    let w = World::new(test, &plexus());
    install_recorder(&w, &plexus());
    w
}

/// Daemon mode: stop the world's daemon and start another with `changes` over its config (nothing in thin
/// mode). A daemon's mount namespace is its own copy (`ip netns exec`), taken when it starts, and the
/// test's mounts do not propagate into it: after a mount over the cache directory, or its removal, a new
/// daemon sees what the runtime's next thin plexus would.
fn restart_daemon(w: &mut World, changes: Value) {
    if w.daemon_socket().is_none() {
        return;
    }
    let mut config = w.daemon_config();
    for (k, v) in changes.as_object().into_iter().flatten() {
        config[k] = v.clone();
    }
    w.restart_daemon(&plexus(), &config, DaemonView::Host);
}

/// A node other than the daemon's (daemon mode watches only [`plexus_e2e::harness::cluster::NO_SUCH_NODE`]'s
/// pods, and loads only the NADs they select).
const OTHER_NODE: &str = "plexus-e2e-other-node";

/// The bridge the K=3 pods' second secondary (net2) uses.
const NET2_BRIDGE: &str = "e2ebr2";
/// Generous bound of an invocation that involves no configured wait: plugins on a busy 2-core machine.
const MARGIN: Duration = Duration::from_secs(30);
/// How long an injected sleep lasts: far beyond any bound, so a kill always finds it running.
const LONG_MS: u64 = 120_000;
/// How long a delegate sleeps where plexus is killed: the delegate, orphaned, sleeps on, so the runtime's
/// DEL (or ADD), issued at once, comes while it still runs; and that DEL, waiting for it, stays within its
/// bound.
const ORPHAN_MS: u64 = 2_500;

/// Recorders around the networks of a K=3 pod, at position `i` (0 the cluster network on eth0, 1 the
/// macvlan NAD on net1, 2 the bridge NAD on net2): `after[i]` chained after the real plugin, `front[i]` in
/// front of it ([`front`]), sleeping [`ORPHAN_MS`] on ADD before the real plugin runs.
#[derive(Default, Clone)]
struct Topo {
    after: [Option<Value>; 3],
    front: [bool; 3],
}

impl Topo {
    fn front(i: usize) -> Topo {
        let mut t = Topo::default();
        t.front[i] = true;
        t
    }
    fn after(i: usize, behaviour: Value) -> Topo {
        let mut t = Topo::default();
        t.after[i] = Some(behaviour);
        t
    }
    fn and_after(mut self, i: usize, behaviour: Value) -> Topo {
        self.after[i] = Some(behaviour);
        self
    }
}

/// The interface of position `i`.
const IFNAMES: [&str; 3] = ["eth0", "net1", "net2"];

/// A K=3 pod `tag` (a DNS label): its own cluster-network file and NADs `<tag>-a` (macvlan), `<tag>-b`
/// (bridge), wrapped as `topo` says, and the runtime running plexus with `extra` config keys.
fn k3(w: &World, tag: &str, topo: &Topo, extra: Value) -> (CniRuntime, Sandbox) {
    k3_on(w, tag, topo, extra, None)
}

/// [`k3`] with the pod bound to [`OTHER_NODE`]: a daemon's caches never hold it or its NADs, so its ADD
/// reads them from the API, as a thin plexus does (the API faults' tests; thin mode is the same).
fn k3_uncached(w: &World, tag: &str, topo: &Topo, extra: Value) -> (CniRuntime, Sandbox) {
    k3_on(w, tag, topo, extra, Some(OTHER_NODE))
}

fn k3_on(
    w: &World,
    tag: &str,
    topo: &Topo,
    extra: Value,
    node: Option<&str>,
) -> (CniRuntime, Sandbox) {
    let rec = |b: &Option<Value>| b.clone().map(|b| recorder(w, b));
    let real = |i: usize, plugin: Value| {
        if topo.front[i] {
            front(w, &plugin, ORPHAN_MS)
        } else {
            plugin
        }
    };
    let cluster_plugin = real(0, w.cluster_conflist()["plugins"][0].clone());
    let cluster = chain(
        Some(CLUSTER_NETWORK),
        &cluster_plugin,
        None,
        rec(&topo.after[0]),
    );
    let cluster_file = w.write(&format!("{tag}-cluster.conflist"), &cluster);
    let a = chain(
        None,
        &real(1, w.macvlan(MACVLAN_SUBNET)),
        None,
        rec(&topo.after[1]),
    );
    let b = chain(
        None,
        &real(2, w.bridge(NET2_BRIDGE, BRIDGE_SUBNET)),
        None,
        rec(&topo.after[2]),
    );
    w.nad(&format!("{tag}-a"), &a);
    w.nad(&format!("{tag}-b"), &b);
    let networks = format!("{tag}-a,{tag}-b");
    let annotations = [(NETWORKS_ANNOTATION, networks.as_str())];
    let sb = match node {
        None => w.sandbox(tag, &annotations),
        Some(node) => Sandbox {
            pod: w.cluster.create_pod_with_spec(
                &w.ns,
                tag,
                &annotations,
                json!({ "nodeName": node }),
            ),
            cid: format!("{tag}-{}", random_hex()),
            netns: netns("pod"),
        },
    };
    let mut conf = json!({"clusterNetwork": cluster_file, "delegateTimeoutSeconds": 20});
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            conf[&k] = v;
        }
    }
    (w.runtime(conf), sb)
}

/// The status entries of a complete K=3 attachment of pod `tag`.
fn k3_status(w: &World, tag: &str) -> Vec<(String, &'static str, bool)> {
    vec![
        (CLUSTER_NETWORK.to_string(), "eth0", true),
        (format!("{}/{tag}-a", w.ns), "net1", false),
        (format!("{}/{tag}-b", w.ns), "net2", false),
    ]
}

fn assert_k3_attached(w: &World, sb: &Sandbox, tag: &str) {
    assert_eq!(sb.netns.link_names(), ["eth0", "lo", "net1", "net2"]);
    let want = k3_status(w, tag);
    let want: Vec<(&str, &str, bool)> = want.iter().map(|(n, i, d)| (n.as_str(), *i, *d)).collect();
    w.assert_status(sb, &want);
}

/// ADD through the runtime, which must fail within `bound`; returns the failure.
fn add_fails_within(
    w: &World,
    rt: &CniRuntime,
    sb: &Sandbox,
    bound: Duration,
) -> plexus_e2e::harness::runtime::CniFailure {
    let started = Instant::now();
    let err = w.add_fails(rt, sb);
    assert_bounded("the failing ADD", started.elapsed(), bound);
    err
}

/// After a failed ADD: nothing attached, nothing left; the runtime's DEL (CNI-23) succeeds within
/// `MARGIN` and leaves nothing either.
fn assert_failed_add_left_nothing(w: &World, rt: &CniRuntime, sb: &Sandbox) {
    failed_add_left_nothing(w, rt, sb, assert_no_leak);
}

/// [`assert_failed_add_left_nothing`] while other pods stay attached.
fn assert_failed_add_left_nothing_of(w: &World, rt: &CniRuntime, sb: &Sandbox) {
    failed_add_left_nothing(w, rt, sb, assert_no_leak_of);
}

fn failed_add_left_nothing(w: &World, rt: &CniRuntime, sb: &Sandbox, check: fn(&World, &Sandbox)) {
    w.assert_no_status(sb);
    check(w, sb);
    let started = Instant::now();
    w.del_ok(rt, sb);
    assert_bounded("the runtime's DEL", started.elapsed(), MARGIN);
    check(w, sb);
}

// === Delegates ===

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn a_delegate_failing_at_each_position_rolls_back_everything() {
    let w = world("a_delegate_failing_at_each_position_rolls_back_everything");
    for (pos, ifname) in IFNAMES.iter().enumerate() {
        let tag = format!("fail{pos}");
        // The recorder fails after the real plugin of that position attached: its work must go too.
        let topo = Topo::after(
            pos,
            json!({"add": {"error": {"code": 42, "msg": format!("injected failure at {pos}")}}}),
        );
        let (rt, sb) = k3(&w, &tag, &topo, json!({}));
        let err = add_fails_within(&w, &rt, &sb, MARGIN);
        assert_eq!(
            err.code,
            Some(42),
            "the delegate's own code (CNI-39): {err}"
        );
        let text = err.text();
        assert!(
            text.contains(&format!("injected failure at {pos}")),
            "{err}"
        );
        assert!(text.contains(&tag), "names the pod: {err}");
        assert!(text.contains(ifname), "names the interface: {err}");
        for later in &IFNAMES[pos + 1..] {
            assert!(
                !recorded(&w, "ADD", &sb.cid, later),
                "{later} must not run after a failure at {ifname}"
            );
        }
        assert_failed_add_left_nothing(&w, &rt, &sb);
    }
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn a_hanging_delegate_is_killed_at_its_timeout_and_rolled_back() {
    let w = world("a_hanging_delegate_is_killed_at_its_timeout_and_rolled_back");
    let timeout = 2;
    let topo = Topo::after(1, json!({"add": {"sleepMs": LONG_MS}}));
    let (rt, sb) = k3(
        &w,
        "hang",
        &topo,
        json!({"delegateTimeoutSeconds": timeout}),
    );
    let err = add_fails_within(&w, &rt, &sb, Duration::from_secs(timeout) + MARGIN);
    assert_eq!(err.code, Some(100), "timeout: {err}");
    assert!(err.text().contains("net1"), "{err}");
    assert!(
        !recorded(&w, "ADD", &sb.cid, "net2"),
        "nothing runs after the hang"
    );
    // The hung recorder was killed with its process group, not orphaned.
    let pids = plexus_e2e::harness::chaos::recorders_for(&sb.cid);
    assert_eq!(pids, Vec::<i32>::new(), "the hung delegate still runs");
    assert_failed_add_left_nothing(&w, &rt, &sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn garbage_empty_huge_or_signalled_delegate_replies_fail_with_101() {
    let w = world("garbage_empty_huge_or_signalled_delegate_replies_fail_with_101");
    let cases = [
        ("garbage", json!({"garbage": "this is not a CNI result {"})),
        ("empty", json!({"exitCode": 0})),
        ("huge", json!({"hugeOutputBytes": 17 * 1024 * 1024})),
        ("segv", json!({"signal": "SEGV"})),
        ("killed", json!({"signal": "KILL"})),
        ("exit3", json!({"exitCode": 3})),
    ];
    for (tag, behaviour) in cases {
        let topo = Topo::after(1, json!({ "add": behaviour }));
        let (rt, sb) = k3(&w, tag, &topo, json!({}));
        let err = add_fails_within(&w, &rt, &sb, MARGIN);
        assert_eq!(err.code, Some(101), "{tag}: {err}");
        assert!(
            err.text().contains("net1"),
            "{tag}: names the interface: {err}"
        );
        assert_failed_add_left_nothing(&w, &rt, &sb);
    }
}

// === plexus SIGKILLed during ADD ===

/// Where a kill lands.
enum Until {
    /// The recorder has been called with this command on this interface (and now sleeps).
    Recorded(&'static str, &'static str),
    /// The stand-in holds a request matching this rule (method, path after `/namespaces/<ns>`).
    Api(&'static str, String),
    /// This long after plexus started (wherever it is then).
    After(Duration),
    /// This long after plexus started, waiting for something that will not come: it must still run.
    Waiting(Duration),
}

struct KillPoint {
    name: String,
    topo: Topo,
    until: Until,
    /// Before the killed ADD: a complete ADD of the same container (the killed one replaces it).
    add_first: bool,
    /// The killed operation (ADD, or DEL).
    command: &'static str,
    /// Before the runtime's DEL: a second killed plexus run (a DEL killed too).
    also_kill_del: bool,
    /// Before the runtime's DEL: the runtime's ADD again, which must succeed.
    add_again: bool,
    /// plexus config keys.
    extra: Value,
    /// The test holds the container's lock while plexus runs.
    hold_lock: bool,
}

fn point(name: &str, topo: Topo, until: Until) -> KillPoint {
    KillPoint {
        name: name.to_string(),
        topo,
        until,
        add_first: false,
        command: "ADD",
        also_kill_del: false,
        add_again: false,
        extra: json!({}),
        hold_lock: false,
    }
}

/// The behaviour "sleep [`ORPHAN_MS`], but only while `marker` exists", for `command`.
fn switched_sleep(command: &str, marker: &Path) -> Value {
    json!({ command: {"sleepMs": ORPHAN_MS, "onlyIfFileExists": marker} })
}

/// Run one kill point on pod `tag`; returns whether plexus was still running when killed.
fn run_kill_point(w: &World, tag: &str, p: &KillPoint) -> bool {
    let (rt, sb) = k3(w, tag, &p.topo, p.extra.clone());
    let marker = w.root().join(format!("{tag}.on"));
    if p.add_first {
        w.add_ok(&rt, &sb);
    }
    std::fs::write(&marker, "").expect("switch the fault on");
    let fault = match &p.until {
        Until::Api(method, path) => {
            let server = w.cluster.standin().expect("stand-in");
            let full = format!("/namespaces/{}{}", w.ns, path.replace("{pod}", tag));
            Some(server.inject(FaultSpec::latency(LONG_MS).on(method, &full)))
        }
        _ => None,
    };
    let lock = p.hold_lock.then(|| {
        let dir = w.cni_dir().join(".locks");
        std::fs::create_dir_all(&dir).unwrap();
        let f = std::fs::File::create(dir.join(&sb.cid)).unwrap();
        f.lock().expect("hold the container's lock");
        f
    });
    let mut running = spawn_plexus(w, &rt, &sb, p.command);
    let reach = Duration::from_secs(60);
    match &p.until {
        Until::Recorded(cmd, ifname) => wait_until(&p.name, reach, || {
            recorded(w, cmd, &sb.cid, ifname) || !running.is_running()
        }),
        Until::Api(..) => {
            let server = w.cluster.standin().expect("stand-in");
            let id = fault.expect("fault id");
            wait_until(&p.name, reach, || {
                server.faults().hits(id) > 0 || !running.is_running()
            })
        }
        Until::After(d) | Until::Waiting(d) => thread::sleep(*d),
    }
    let was_running = running.kill();
    drop(lock);
    if !matches!(p.until, Until::After(_)) {
        assert!(
            was_running,
            "{}: plexus finished before the kill point\nplexus log:\n{}",
            p.name,
            w.log()
        );
    }
    if let Some(id) = fault {
        w.cluster.standin().unwrap().faults().remove(id);
    }
    std::fs::remove_file(&marker).expect("switch the fault off");
    // The delegate plexus was running goes on alone (the runtime kills plexus, not its delegates), and
    // nothing here waits for it or kills it: what follows must not overlap it.
    if matches!(p.until, Until::Recorded(..)) {
        assert!(
            !recorders_for(&sb.cid).is_empty(),
            "{}: the kill left no delegate running",
            p.name
        );
    }
    if p.also_kill_del {
        // The runtime's first DEL is killed too, at once; the next one must still finish the job.
        let del = spawn_plexus(w, &rt, &sb, "DEL");
        thread::sleep(Duration::from_millis(30));
        del.kill();
    }
    if p.add_again {
        // The runtime retries the ADD at once: it waits for the orphan, tears down what the killed ADD and
        // the orphan made, and attaches everything anew.
        let started = Instant::now();
        w.add_ok(&rt, &sb);
        assert_bounded(
            &format!("{}: the runtime's ADD again", p.name),
            started.elapsed(),
            MARGIN,
        );
        assert_k3_attached(w, &sb, tag);
    }
    let started = Instant::now();
    w.del_ok(&rt, &sb);
    assert_bounded(
        &format!("{}: the runtime's DEL", p.name),
        started.elapsed(),
        MARGIN,
    );
    let outlived = outliving(&sb.cid);
    assert_no_leak(w, &sb);
    assert_eq!(
        outlived,
        Vec::<String>::new(),
        "{}: a delegate of the killed plexus outlived the DEL",
        p.name
    );
    was_running
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn plexus_sigkilled_at_29_points_leaves_nothing_after_del() {
    // Thin mode in both runs: it kills the thin plexus; the daemon's kill tests are e2e/tests/daemon.rs's.
    let w = World::thin(
        "plexus_sigkilled_at_29_points_leaves_nothing_after_del",
        &plexus(),
    );
    install_recorder(&w, &plexus());
    let on = |tag: &str| w.root().join(format!("{tag}.on"));
    let sleep_add = |tag: &str| switched_sleep("add", &on(tag));
    let sleep_del = |tag: &str| switched_sleep("del", &on(tag));
    let fail = json!({"add": {"error": {"code": 42, "msg": "injected"}}});
    let mut points: Vec<(String, KillPoint)> = Vec::new();
    let mut add = |tag: &str, p: KillPoint| points.push((tag.to_string(), p));

    // 1: at once (the wrapper, or plexus before it read its config).
    add(
        "k01",
        point("at exec", Topo::default(), Until::After(Duration::ZERO)),
    );
    // 2-4: the pod and NAD reads in flight (stand-in latency).
    add(
        "k02",
        point(
            "GET pod in flight",
            Topo::default(),
            Until::Api("GET", "/pods/{pod}".into()),
        ),
    );
    add(
        "k03",
        point(
            "GET first NAD in flight",
            Topo::default(),
            Until::Api("GET", "/network-attachment-definitions/{pod}-a".into()),
        ),
    );
    add(
        "k04",
        point(
            "GET second NAD in flight",
            Topo::default(),
            Until::Api("GET", "/network-attachment-definitions/{pod}-b".into()),
        ),
    );
    // 5-10: before each network's real plugin (which the orphaned front then runs) and after it.
    for (i, ifname) in IFNAMES.iter().enumerate() {
        let tb = format!("k{:02}", 5 + 2 * i);
        let ta = format!("k{:02}", 6 + 2 * i);
        add(
            &tb,
            point(
                &format!("before {ifname}'s plugin, in a slow front of it"),
                Topo::front(i),
                Until::Recorded("ADD", ifname),
            ),
        );
        add(
            &ta,
            point(
                &format!("after {ifname}'s plugin"),
                Topo::after(i, sleep_add(&ta)),
                Until::Recorded("ADD", ifname),
            ),
        );
    }
    // 11: the status PATCH in flight. (Events are posted by a detached sender after the reply: not plexus's.)
    add(
        "k11",
        point(
            "status PATCH in flight",
            Topo::default(),
            Until::Api("PATCH", "/pods/{pod}/status".into()),
        ),
    );
    // 12: waiting for the container's lock, held by another (here: the test).
    let mut p = point(
        "waiting for the container lock",
        Topo::default(),
        Until::Waiting(Duration::from_millis(700)),
    );
    p.hold_lock = true;
    add("k12", p);
    // 13-14: during the rollback of a failed ADD (net2 fails; net1's or eth0's DEL sleeps).
    add(
        "k13",
        point(
            "rolling back net1",
            Topo::after(2, fail.clone()).and_after(1, sleep_del("k13")),
            Until::Recorded("DEL", "net1"),
        ),
    );
    add(
        "k14",
        point(
            "rolling back eth0",
            Topo::after(2, fail.clone()).and_after(0, sleep_del("k14")),
            Until::Recorded("DEL", "eth0"),
        ),
    );
    // 15: an ADD replacing an earlier ADD's cache, killed while tearing the old one down.
    let mut p = point(
        "tearing down the previous ADD",
        Topo::after(1, sleep_del("k15")),
        Until::Recorded("DEL", "net1"),
    );
    p.add_first = true;
    add("k15", p);
    // 16: a DEL killed half-way (after net2's DEL, during net1's), then the runtime's DEL again.
    let mut p = point(
        "a DEL half-way",
        Topo::after(1, sleep_del("k16")),
        Until::Recorded("DEL", "net1"),
    );
    p.add_first = true;
    p.command = "DEL";
    add("k16", p);
    // 17: killed after net1's plugin, and the runtime's first DEL killed at once too.
    let mut p = point(
        "after net1, then a killed DEL",
        Topo::after(1, sleep_add("k17")),
        Until::Recorded("ADD", "net1"),
    );
    p.also_kill_del = true;
    add("k17", p);
    // 18: waiting for the readiness indicator file.
    let mut p = point(
        "waiting for the readiness indicator",
        Topo::default(),
        Until::Waiting(Duration::from_millis(700)),
    );
    p.extra = json!({"readinessindicatorfile": w.root().join("never-ready"),
                     "readinessIndicatorTimeoutSeconds": 60});
    add("k18", p);
    // 29: before net1's plugin, in a slow front of it; the runtime retries the ADD at once.
    let mut p = point(
        "before net1's plugin, in a slow front, then the ADD again",
        Topo::front(1),
        Until::Recorded("ADD", "net1"),
    );
    p.add_again = true;
    add("k29", p);

    let standin = w.cluster.standin().is_some();
    let mut killed = 0;
    for (tag, p) in &points {
        if matches!(p.until, Until::Api(..)) && !standin {
            eprintln!(
                "{}: skipped (stand-in only: it holds a request in flight)",
                p.name
            );
            continue;
        }
        eprintln!("kill point {tag}: {}", p.name);
        killed += usize::from(run_kill_point(&w, tag, p));
    }

    // 19-28: a sweep of kill delays across a whole undisturbed ADD.
    let (rt, sb) = k3(&w, "ksweep", &Topo::default(), json!({}));
    let full = spawn_plexus(&w, &rt, &sb, "ADD").wait(MARGIN);
    assert_eq!(full.code, Some(0), "an undisturbed ADD: {}", full.stdout);
    w.del_ok(&rt, &sb);
    assert_no_leak(&w, &sb);
    for i in 1..=10u32 {
        let tag = format!("ks{i:02}");
        let delay = full.took * i / 11;
        let p = point(
            &format!("{i}/11 of an ADD ({delay:?})"),
            Topo::default(),
            Until::After(delay),
        );
        eprintln!("kill point {tag}: {}", p.name);
        killed += usize::from(run_kill_point(&w, &tag, &p));
    }
    assert!(killed >= 20, "only {killed} kills landed while plexus ran");
}

// === The API server ===

/// Replace the token in plexus's kubeconfig.
fn set_token(w: &World, token: &str) -> String {
    let mut kc = kubeconfig::read(&w.kubeconfig()).expect("read plexus's kubeconfig");
    let old = kc["users"][0]["user"]["token"]
        .as_str()
        .expect("a token")
        .to_string();
    kc["users"][0]["user"]["token"] = json!(token);
    kubeconfig::write(&w.kubeconfig(), &kc).expect("write plexus's kubeconfig");
    old
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn api_down_fails_add_with_try_again_later_and_del_works_from_the_cache() {
    let w = world("api_down_fails_add_with_try_again_later_and_del_works_from_the_cache");
    let api = json!({"apiTimeoutSeconds": 1, "apiBudgetSeconds": 3});
    let (rt_ok, before) = k3(&w, "before", &Topo::default(), api.clone());
    w.add_ok(&rt_ok, &before);
    w.wait_status_writes();
    let (rt, sb) = k3_uncached(&w, "down", &Topo::default(), api);
    // The only way to the API (stand-in or real) now leads to a closed port, also for the connections a
    // daemon holds open.
    let upstream = w.fwd.upstream();
    w.fwd.redirect(closed_port());
    w.fwd.sever();

    let err = add_fails_within(&w, &rt, &sb, Duration::from_secs(3) + MARGIN);
    assert_eq!(err.code, Some(11), "try again later: {err}");
    assert!(err.text().contains("down"), "names the pod: {err}");
    assert_failed_add_left_nothing_of(&w, &rt, &sb);
    // A pod attached before the outage is torn down from its cache alone.
    let started = Instant::now();
    w.del_ok(&rt_ok, &before);
    assert_bounded("DEL with the API down", started.elapsed(), MARGIN);
    assert_no_leak(&w, &before);
    w.fwd.redirect(upstream);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn api_slower_than_its_timeout_fails_add_within_the_budget() {
    let test = "api_slower_than_its_timeout_fails_add_within_the_budget";
    if !standin_only(test, "it holds requests in the stand-in") {
        return;
    }
    let w = world(test);
    let (rt, sb) = k3_uncached(
        &w,
        "slow",
        &Topo::default(),
        json!({"apiTimeoutSeconds": 1, "apiBudgetSeconds": 3}),
    );
    let server = w.cluster.standin().unwrap();
    server
        .inject(FaultSpec::latency(LONG_MS).on("GET", &format!("/namespaces/{}/pods/slow", w.ns)));
    let err = add_fails_within(&w, &rt, &sb, Duration::from_secs(3) + MARGIN);
    assert_eq!(err.code, Some(11), "try again later: {err}");
    assert!(err.text().contains("slow"), "names the pod: {err}");
    server.faults().clear();
    assert_failed_add_left_nothing(&w, &rt, &sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn api_500_and_429_are_retried_within_the_budget() {
    let test = "api_500_and_429_are_retried_within_the_budget";
    if !standin_only(test, "it injects errors into the stand-in") {
        return;
    }
    let w = world(test);
    let server = w.cluster.standin().unwrap();
    let api = json!({"apiTimeoutSeconds": 2, "apiBudgetSeconds": 4});
    for code in [500u16, 429] {
        // Once: retried, and the ADD succeeds.
        let tag = format!("once{code}");
        let (rt, sb) = k3_uncached(&w, &tag, &Topo::default(), api.clone());
        let pod = format!("/namespaces/{}/pods/{tag}", w.ns);
        server.inject(
            FaultSpec::status(code)
                .on("GET", &pod)
                .retry_after(0)
                .times(1),
        );
        server.inject(
            FaultSpec::status(code)
                .on("GET", &format!("/network-attachment-definitions/{tag}-b"))
                .retry_after(0)
                .times(1),
        );
        let started = Instant::now();
        w.add_ok(&rt, &sb);
        assert_bounded("ADD with one error per read", started.elapsed(), MARGIN);
        assert_k3_attached(&w, &sb, &tag);
        w.del_ok(&rt, &sb);
        assert_no_leak(&w, &sb);

        // Always: code 11 once the budget is spent, nothing left.
        let tag = format!("always{code}");
        let (rt, sb) = k3_uncached(&w, &tag, &Topo::default(), api.clone());
        let id = server
            .inject(FaultSpec::status(code).on("GET", &format!("/namespaces/{}/pods/{tag}", w.ns)));
        let err = add_fails_within(&w, &rt, &sb, Duration::from_secs(4) + MARGIN);
        assert_eq!(err.code, Some(11), "{code}: {err}");
        assert!(
            err.text().contains(&code.to_string()),
            "says what the API answered: {err}"
        );
        assert!(server.faults().hits(id) >= 2, "retried");
        server.faults().remove(id);
        assert_failed_add_left_nothing(&w, &rt, &sb);
    }
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn a_status_patch_that_always_conflicts_fails_add_and_rolls_back() {
    let test = "a_status_patch_that_always_conflicts_fails_add_and_rolls_back";
    if !standin_only(test, "it injects 409s into the stand-in") {
        return;
    }
    let mut w = world(test);
    // Daemon mode: the thin binary's contract, a status write that fails within the budget fails the ADD
    // (docs/daemon.md, "network-status after the reply"); by default it is retried after the reply.
    restart_daemon(&mut w, json!({"statusWrite": "beforeReply"}));
    let (rt, sb) = k3(
        &w,
        "conflict",
        &Topo::default(),
        json!({"apiTimeoutSeconds": 2, "apiBudgetSeconds": 4}),
    );
    let server = w.cluster.standin().unwrap();
    let id = server.inject(FaultSpec::status(409).on(
        "PATCH",
        &format!("/namespaces/{}/pods/conflict/status", w.ns),
    ));
    let err = add_fails_within(&w, &rt, &sb, Duration::from_secs(4) + MARGIN);
    assert_eq!(err.code, Some(11), "try again later: {err}");
    assert!(
        err.text().contains("409") || err.text().contains("onflict"),
        "{err}"
    );
    assert!(server.faults().hits(id) >= 2, "the conflict was retried");
    server.faults().clear();
    assert_failed_add_left_nothing(&w, &rt, &sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn a_rejected_token_fails_add_clearly_and_del_still_works() {
    let mut w = world("a_rejected_token_fails_add_clearly_and_del_still_works");
    let (rt_ok, before) = k3(&w, "before", &Topo::default(), json!({}));
    w.add_ok(&rt_ok, &before);
    w.wait_status_writes();
    let (rt, sb) = k3_uncached(&w, "badtoken", &Topo::default(), json!({}));
    let good = set_token(&w, "not-a-valid-token");
    // Daemon mode: a daemon started with the token; its caches cannot sync, so it is ready after the wait.
    restart_daemon(&mut w, json!({"cacheSyncTimeoutSeconds": 2}));

    let err = add_fails_within(&w, &rt, &sb, MARGIN);
    assert_eq!(err.code, Some(999), "{err}");
    let text = err.text();
    assert!(text.contains("badtoken"), "names the pod: {err}");
    assert!(
        text.contains("401") || text.contains("credentials"),
        "says why: {err}"
    );
    assert!(
        !text.contains("not-a-valid-token"),
        "never prints the token: {err}"
    );
    assert!(
        !w.log().contains("not-a-valid-token"),
        "never logs the token"
    );
    assert_failed_add_left_nothing_of(&w, &rt, &sb);
    let started = Instant::now();
    w.del_ok(&rt_ok, &before);
    assert_bounded("DEL with a rejected token", started.elapsed(), MARGIN);
    assert_no_leak(&w, &before);
    set_token(&w, &good);
}

// === The cache directory ===

#[test]
#[ignore = "needs root: creates network namespaces, mounts over the cache directory"]
fn a_read_only_cache_dir_fails_add_before_anything_is_attached() {
    let mut w = world("a_read_only_cache_dir_fails_add_before_anything_is_attached");
    let (rt, sb) = k3(&w, "ro", &Topo::default(), json!({}));
    {
        let _ro = Mount::read_only(&w.cni_dir());
        restart_daemon(&mut w, json!({}));
        let err = add_fails_within(&w, &rt, &sb, MARGIN);
        assert_eq!(err.code, Some(5), "I/O error: {err}");
        assert!(err.text().contains("ro"), "names the pod: {err}");
        assert_eq!(sb.netns.link_names(), ["lo"]);
        assert_eq!(w.reservations(), []);
        w.assert_no_status(&sb);
    }
    restart_daemon(&mut w, json!({}));
    assert_failed_add_left_nothing(&w, &rt, &sb);

    // Read-only after a successful ADD: DEL still takes the lock (read-only descriptor), tears the networks
    // down, and reports that it could not remove the cache (code 5); once writable again, DEL finishes.
    let (rt, sb) = k3(&w, "ro2", &Topo::default(), json!({}));
    w.add_ok(&rt, &sb);
    w.wait_after_reply();
    {
        let _ro = Mount::read_only(&w.cni_dir());
        restart_daemon(&mut w, json!({}));
        let started = Instant::now();
        let r = rt.del(&w.rt(&sb));
        assert_bounded("DEL on a read-only cache dir", started.elapsed(), MARGIN);
        let e = r.expect_err("the cache cannot be removed");
        assert_eq!(e.code, Some(5), "{e}");
        assert!(e.text().contains("Read-only"), "says why: {e}");
        // The networks are gone all the same; only the cache waits for a writable directory.
        assert_eq!(sb.netns.link_names(), ["lo"], "torn down\n{}", w.log());
        assert!(
            w.reservations().iter().all(|r| r.owner != sb.cid),
            "addresses released"
        );
    }
    restart_daemon(&mut w, json!({}));
    w.del_ok(&rt, &sb);
    assert_no_leak(&w, &sb);
}

#[test]
#[ignore = "needs root: creates network namespaces, mounts a tmpfs over the cache directory"]
fn a_full_cache_dir_fails_add_cleanly() {
    let mut w = world("a_full_cache_dir_fails_add_cleanly");
    let (rt, sb) = k3(&w, "full", &Topo::default(), json!({}));
    {
        let _full = Mount::full(&w.cni_dir(), 64);
        restart_daemon(&mut w, json!({}));
        let err = add_fails_within(&w, &rt, &sb, MARGIN);
        assert_eq!(err.code, Some(5), "I/O error: {err}");
        assert!(err.text().contains("full"), "names the pod: {err}");
        w.assert_no_status(&sb);
        assert_no_leak(&w, &sb);
        let started = Instant::now();
        w.del_ok(&rt, &sb);
        assert_bounded("DEL on a full cache dir", started.elapsed(), MARGIN);
        assert_no_leak(&w, &sb);
    }
    restart_daemon(&mut w, json!({}));
    assert_failed_add_left_nothing(&w, &rt, &sb);
}

#[test]
#[ignore = "needs root: creates network namespaces, mounts a tmpfs over the cache directory"]
fn the_cache_dir_filling_up_half_way_through_an_add_rolls_it_back() {
    let mut w = world("the_cache_dir_filling_up_half_way_through_an_add_rolls_it_back");
    let marker = w.root().join("midway.on");
    let topo = Topo::after(1, switched_sleep("add", &marker));
    let (rt, sb) = k3(&w, "midway", &topo, json!({"delegateTimeoutSeconds": 3}));
    let full = Mount::full(&w.cni_dir(), 1024);
    std::fs::remove_file(w.cni_dir().join(".filler")).expect("room for the ADD");
    restart_daemon(&mut w, json!({}));
    std::fs::write(&marker, "").unwrap();
    let running = spawn_plexus(&w, &rt, &sb, "ADD");
    wait_until("net1's delegate", Duration::from_secs(60), || {
        recorded(&w, "ADD", &sb.cid, "net1")
    });
    // eth0 is attached and cached; now the disk is full, and the delegate times out.
    plexus_e2e::harness::chaos::fill(&w.cni_dir());
    let done = running.wait(Duration::from_secs(3) + MARGIN);
    std::fs::remove_file(&marker).unwrap();
    if w.daemon_socket().is_some() {
        // Daemon mode writes the result records after its reply (docs/daemon.md, "The durable writes
        // after the reply"): the ADD succeeds, the failed writes are logged, and DEL, on the still full
        // disk that holds the container's cache, tears everything down without them.
        assert_eq!(done.code, Some(0), "{}\n{}", done.stdout, w.log());
        assert_k3_attached(&w, &sb, "midway");
        w.wait_after_reply();
        assert!(
            w.log().contains("No space left on device"),
            "the failed write is logged\n{}",
            w.log()
        );
        let started = Instant::now();
        w.del_ok(&rt, &sb);
        assert_bounded("DEL on a full cache dir", started.elapsed(), MARGIN);
        assert_no_leak(&w, &sb);
        drop(full);
        restart_daemon(&mut w, json!({}));
        assert_no_leak(&w, &sb);
        return;
    }
    assert_ne!(done.code, Some(0), "{}", done.stdout);
    drop(full);
    assert_eq!(sb.netns.link_names(), ["lo"], "rolled back\n{}", w.log());
    assert_eq!(w.reservations(), []);
    let started = Instant::now();
    w.del_ok(&rt, &sb);
    assert_bounded("DEL", started.elapsed(), MARGIN);
    assert_no_leak(&w, &sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn a_truncated_or_corrupt_cache_file_does_not_stop_del() {
    let w = world("a_truncated_or_corrupt_cache_file_does_not_stop_del");
    type Damage = fn(&[u8]) -> Vec<u8>;
    let damages: [(&str, Damage); 4] = [
        ("half", |b| b[..b.len() / 2].to_vec()),
        ("empty", |_| Vec::new()),
        ("garbage", |_| b"\x00\xff not json at all".to_vec()),
        ("wrongtype", |_| {
            br#"{"containerId": 7, "delegates": "x"}"#.to_vec()
        }),
    ];
    for (tag, damage) in damages {
        let (rt, sb) = k3(&w, tag, &Topo::default(), json!({}));
        w.add_ok(&rt, &sb);
        let cache = w.cni_dir().join(&sb.cid);
        let bytes = std::fs::read(&cache).expect("plexus's cache after ADD");
        std::fs::write(&cache, damage(&bytes)).unwrap();
        let started = Instant::now();
        w.del_ok(&rt, &sb);
        assert_bounded("DEL with a damaged cache", started.elapsed(), MARGIN);
        assert_no_leak(&w, &sb);
    }
}

// === Many at once ===

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn a_hundred_containers_added_and_deleted_concurrently_never_cross_talk() {
    let w = Arc::new(world(
        "a_hundred_containers_added_and_deleted_concurrently_never_cross_talk",
    ));
    w.nad("mv", &w.macvlan(MACVLAN_SUBNET));
    w.nad("br", &w.bridge(NET2_BRIDGE, BRIDGE_SUBNET));
    // Mixed K: the cluster network only, plus one, plus two secondaries.
    let annotations = ["", "mv", "br", "mv,br"];
    let rt = Arc::new(w.runtime(json!({"apiTimeoutSeconds": 10, "apiBudgetSeconds": 60})));
    let pods: Vec<(Sandbox, &str)> = (0..100)
        .map(|i| {
            let a = annotations[i % annotations.len()];
            let tag = format!("c{i:03}");
            let sb = if a.is_empty() {
                w.sandbox(&tag, &[])
            } else {
                w.sandbox(&tag, &[(NETWORKS_ANNOTATION, a)])
            };
            (sb, a)
        })
        .collect();
    let pods = Arc::new(pods);
    let started = Instant::now();
    let workers: Vec<_> = (0..pods.len())
        .map(|i| {
            let (w, rt, pods) = (w.clone(), rt.clone(), pods.clone());
            thread::spawn(move || {
                let (sb, a) = &pods[i];
                let result = w.add_ok(&rt, sb);
                // The runtime's result is this pod's eth0, in this pod's namespace.
                assert_eq!(interface_sandbox(&result, "eth0"), json!(sb.path()));
                let mut want = vec![(CLUSTER_NETWORK.to_string(), "eth0", true)];
                for (n, net) in a.split(',').filter(|s| !s.is_empty()).enumerate() {
                    let ifname = ["net1", "net2"][n];
                    want.push((format!("{}/{net}", w.ns), ifname, false));
                }
                let want: Vec<(&str, &str, bool)> =
                    want.iter().map(|(n, i, d)| (n.as_str(), *i, *d)).collect();
                // Every status entry's IPs and MAC are this pod's own interfaces'.
                let entries = w.assert_status(sb, &want);
                // The cache is whole and lists exactly this pod's attachments.
                let cache = std::fs::read(w.cni_dir().join(&sb.cid)).expect("cache");
                let cache: Value = serde_json::from_slice(&cache).expect("the cache is JSON");
                let cached: Vec<&str> = cache
                    .as_array()
                    .expect("a list of delegates")
                    .iter()
                    .map(|d| d["name"].as_str().unwrap_or_default())
                    .collect();
                let names: Vec<&str> = want.iter().map(|(n, _, _)| *n).collect();
                assert_eq!(cached, names, "{}: cache {cache}", sb.cid);
                w.del_ok(&rt, sb);
                entries
                    .into_iter()
                    .flat_map(|e| e.ips)
                    .collect::<Vec<String>>()
            })
        })
        .collect();
    let mut ips: Vec<String> = Vec::new();
    for h in workers {
        ips.extend(h.join().expect("a container's ADD/CHECK/DEL"));
    }
    assert_bounded(
        "100 concurrent ADD+DEL",
        started.elapsed(),
        Duration::from_secs(240),
    );
    let n = ips.len();
    ips.sort();
    ips.dedup();
    assert_eq!(
        ips.len(),
        n,
        "every address was given to one container only"
    );
    assert!(ips.iter().any(|ip| ip.starts_with(&CLUSTER_SUBNET[..8])));
    for (sb, _) in pods.iter() {
        assert_no_leak(&w, sb);
    }
}
