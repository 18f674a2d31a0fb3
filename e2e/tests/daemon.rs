//! Daemon mode's own scenarios (issue 8), whatever `E2E_MODE` says: each world runs `plexus daemon` in its
//! host namespace and the runtime calls `plexus-shim`. The thin suite's scenarios run in daemon mode too
//! (`E2E_MODE=daemon cargo test -p plexus-e2e --test suite`, run by `scripts/test.sh`); these are the ones
//! only a daemon has: a restart in the middle of a burst, the daemon down during DEL, Go Multus's shim
//! talking to it, graceful shutdown, STATUS unaffected by NADs naming missing plugins (they fail only their
//! pods' ADD, and show in a gauge), metrics.
//!
//! Run (as root): `cargo test -p plexus-e2e --test daemon -- --include-ignored`.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use base64::Engine;
use plexus::{pure::annotations::NETWORKS_ANNOTATION, seams::invoke::RuntimeConf};
use plexus_cni::ErrorReply;
use plexus_e2e::{
    apiserver::FaultSpec,
    harness::{
        chaos::{
            assert_no_leak, assert_no_leak_of, chain, front, install_recorder, outliving, recorded,
            recorder, recorders_for, records, spawn_plexus,
        },
        cluster::standin_only,
        daemon::{DaemonProcess, DaemonView, PendingGauges},
        runtime::{CniRuntime, PLUGIN_PATH},
        world::{CLUSTER_BRIDGE, CLUSTER_NETWORK, CLUSTER_SUBNET, MACVLAN_SUBNET, Sandbox, World},
    },
};
use plexus_testsupport::proc::wait_until;
use serde_json::{Value, json};

fn plexus() -> PathBuf {
    std::env::var_os("E2E_PLEXUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_plexus-under-test")))
}

fn world(test: &str) -> World {
    World::with_daemon(test, &plexus())
}

/// NAD `name`: a macvlan network with the recording delegate chained after it, behaving as `behaviour`.
fn macvlan_then_recorder(w: &World, name: &str, behaviour: Value) {
    install_recorder(w, &plexus());
    let conf = chain(
        None,
        &w.macvlan(MACVLAN_SUBNET),
        None,
        Some(recorder(w, behaviour)),
    );
    w.nad(name, &conf);
}

fn nad_name(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// One raw HTTP/1.1 exchange on `socket`, as Go's `multus-shim` makes it (keep-alives off, host `dummy`).
fn go_post(socket: &std::path::Path, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = UnixStream::connect(socket).expect("connect to the daemon socket");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: dummy\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\nAccept-Encoding: gzip\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    // A server may answer (and close) before reading the body: the reply still counts.
    let _ = s.write_all(&request);
    let mut reply = Vec::new();
    // Read what arrived, even when the close came as a reset.
    let _ = s.read_to_end(&mut reply);
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete HTTP reply");
    let head = String::from_utf8_lossy(&reply[..split]).to_string();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = reply[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // Our daemon sends a length; decode anyway so the test says what a Go client would read.
        let text = String::from_utf8_lossy(&body).to_string();
        let mut out = Vec::new();
        let mut rest = text.as_str();
        while let Some((len, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&tail.as_bytes()[..n]);
            rest = &tail[n + 2..];
        }
        body = out;
    }
    (code, body)
}

/// The Go shim's request for `command` on `sb`: every variable the runtime sets, and the config as Go's
/// `[]byte` (base64).
fn go_request(w: &World, rt: &CniRuntime, sb: &Sandbox, command: &str, config: &Value) -> Vec<u8> {
    let conf = w.rt(sb);
    let path: Vec<String> = rt
        .search_path
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let req = json!({
        "env": {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": conf.container_id,
            "CNI_NETNS": sb.path(),
            "CNI_IFNAME": "eth0",
            "CNI_ARGS": conf.args.to_env_string(),
            "CNI_PATH": path.join(":"),
            "PATH": PLUGIN_PATH,
        },
        "config": base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(config).unwrap()),
    });
    serde_json::to_vec(&req).unwrap()
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn a_go_multus_shim_request_is_answered_in_its_format() {
    let test = "a_go_multus_shim_request_is_answered_in_its_format";
    let w = world(test);
    w.nad("a", &w.macvlan(MACVLAN_SUBNET));
    let sb = w.sandbox("go", &[(NETWORKS_ANNOTATION, "a")]);
    let rt = w.runtime(json!({}));
    // Go Multus's generated shim config (docs/multus-compat.md, "Daemon mode") with this world's
    // paths.
    let mut config = w.plexus_plugin(json!({}));
    config["type"] = json!("multus-shim");
    config["cniVersion"] = json!("0.3.1");
    config["name"] = json!("multus-cni-network");
    config["socketDir"] = json!(w.socket_dir());
    // Go's shim dials `<socketDir>/multus.sock`.
    let go_socket = w.socket_dir().join("multus.sock");
    let daemon = w.daemon.as_ref().unwrap();
    daemon.wait_cached("pods", &w.ns, &sb.pod.name);

    let (code, body) = go_post(
        &go_socket,
        "/cni",
        &go_request(&w, &rt, &sb, "ADD", &config),
    );
    assert_eq!(code, 200, "{}\n{}", String::from_utf8_lossy(&body), w.log());
    let reply: Value = serde_json::from_slice(&body).expect("a JSON body");
    // `{"Result": <cni100.Result>}`: what Go's shim unmarshals into `api.Response`.
    let result = &reply["Result"];
    assert_eq!(result["cniVersion"], "1.0.0", "{reply:#}");
    let names: Vec<&str> = result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i.get("sandbox").is_some())
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["eth0"],
        "the cluster network's result only: {reply:#}"
    );
    assert!(result["ips"][0].get("version").is_none(), "1.0.0 form");
    let mut links = sb.netns.link_names();
    links.sort();
    assert_eq!(links, ["eth0", "lo", "net1"]);
    w.assert_status(
        &sb,
        &[
            (CLUSTER_NETWORK, "eth0", true),
            (&nad_name(&w.ns, "a"), "net1", false),
        ],
    );
    // CHECK and DEL: 200 and an empty body.
    let (code, body) = go_post(
        &go_socket,
        "/cni",
        &go_request(&w, &rt, &sb, "DEL", &config),
    );
    assert_eq!(
        (code, body.len()),
        (200, 0),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // The runtime's own chained-plugin cache is not ours to clean: only the pod's side is checked.
    assert_no_leak_of(&w, &sb);

    // An error is a 400 with the CNI error reply, code and all.
    let bad = w.sandbox("go-bad", &[(NETWORKS_ANNOTATION, "no-such-nad")]);
    daemon.wait_cached("pods", &w.ns, &bad.pod.name);
    let (code, body) = go_post(
        &go_socket,
        "/cni",
        &go_request(&w, &rt, &bad, "ADD", &config),
    );
    assert_eq!(code, 400);
    let e = ErrorReply::parse(&body).expect("a CNI error reply");
    assert!(e.code != 0 && e.msg.contains("no-such-nad"), "{e:?}");
    assert_no_leak_of(&w, &bad);

    // Health and readiness as Go's shim polls them; a /delegate without a command is refused clearly.
    assert_eq!(daemon.get("/healthz").map(|r| r.0), Some(200));
    assert_eq!(daemon.get("/readyz").map(|r| r.0), Some(200));
    let (code, body) = go_post(&go_socket, "/delegate", b"{}");
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    let e = ErrorReply::parse(&body).expect("a CNI error reply");
    assert!(e.code == 4 && e.msg.contains("CNI_COMMAND"), "{e:?}");
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn daemon_down_during_del_the_shim_tears_down_from_the_cache() {
    let test = "daemon_down_during_del_the_shim_tears_down_from_the_cache";
    let mut w = world(test);
    w.nad("a", &w.macvlan(MACVLAN_SUBNET));
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "a")]);
    let rt = w.runtime(json!({}));
    w.add_ok(&rt, &sb);
    assert!(sb.netns.link_names().contains(&"net1".to_string()));
    // The daemon crashes; its socket is left behind, nobody listens.
    w.daemon.as_mut().unwrap().kill();
    let started = Instant::now();
    w.del_ok(&rt, &sb);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "DEL fell back quickly: {:?}",
        started.elapsed()
    );
    assert_no_leak(&w, &sb);
    // And ADD, with the daemon still down, fails clearly within daemonWaitSeconds (code 11).
    let rt = w.runtime(json!({"daemonWaitSeconds": 1}));
    let sb2 = w.sandbox("late", &[]);
    let e = w.add_fails(&rt, &sb2);
    assert_eq!(e.code, Some(11), "{e:?}");
    assert!(e.details.contains("plexus.sock"), "names the socket: {e:?}");
    assert_no_leak_of(&w, &sb2);
}

/// ADD for `n` pods at once, each in its own thread; returns each pod's outcome.
fn burst(
    w: &Arc<World>,
    rt: &Arc<CniRuntime>,
    pods: &[Arc<Sandbox>],
) -> Vec<thread::JoinHandle<bool>> {
    pods.iter()
        .map(|sb| {
            let (w, rt, sb) = (w.clone(), rt.clone(), sb.clone());
            thread::spawn(move || rt.add(&w.rt(&sb)).is_ok())
        })
        .collect()
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn daemon_killed_in_the_middle_of_a_burst_leaks_nothing() {
    let test = "daemon_killed_in_the_middle_of_a_burst_leaks_nothing";
    let mut w = world(test);
    // The first wave's net1 is a macvlan with a slow recorder in front of it: the kill lands while it
    // sleeps, and the orphan then makes net1 and its reservation. The second wave's is plain.
    const ORPHAN_MS: u64 = 4_000;
    install_recorder(&w, &plexus());
    w.nad(
        "slow",
        &chain(
            None,
            &front(&w, &w.macvlan(MACVLAN_SUBNET), ORPHAN_MS),
            None,
            None,
        ),
    );
    w.nad("a", &w.macvlan(MACVLAN_SUBNET));
    let pods: Vec<Arc<Sandbox>> = (0..12)
        .map(|i| {
            let nad = if i < 8 { "slow" } else { "a" };
            Arc::new(w.sandbox(&format!("p{i}"), &[(NETWORKS_ANNOTATION, nad)]))
        })
        .collect();
    let rt = Arc::new(w.runtime(json!({"daemonWaitSeconds": 20})));
    let mut daemon = w.daemon.take().unwrap();
    let w = Arc::new(w);
    let (first, second) = pods.split_at(8);
    let mut handles = burst(&w, &rt, first);
    // Once the first wave's delegates run, crash the daemon; a second wave arrives while it is down (its
    // shims wait), then a new daemon starts. A delegate counts once it has recorded its call, i.e. read its
    // config: killed before that, it can die with the daemon's pipe and leave no orphan.
    let running = || {
        first
            .iter()
            .filter(|sb| !recorders_for(&sb.cid).is_empty() && recorded(&w, "ADD", &sb.cid, "net1"))
            .cloned()
            .collect::<Vec<_>>()
    };
    wait_until(
        "a delegate of the first wave runs",
        Duration::from_secs(30),
        || !running().is_empty(),
    );
    daemon.kill();
    let orphaned = running();
    assert!(!orphaned.is_empty(), "the kill left no delegate running");
    handles.extend(burst(&w, &rt, second));
    thread::sleep(Duration::from_millis(300));
    daemon.start_again();
    daemon.wait_ready(Duration::from_secs(30));
    // The runtime's DEL of each pod whose delegate the crash orphaned, at once: the new daemon's DEL waits
    // for the orphan (it holds the container's lock), then tears down what it made too.
    let still = orphaned
        .iter()
        .filter(|sb| !recorders_for(&sb.cid).is_empty())
        .count();
    assert!(
        still > 0,
        "the orphans ended before the DELs: nothing raced"
    );
    let dels: Vec<_> = orphaned
        .iter()
        .map(|sb| {
            let (w, rt, sb) = (w.clone(), rt.clone(), sb.clone());
            thread::spawn(move || {
                w.del_ok(&rt, &sb);
                let outlived = outliving(&sb.cid);
                assert_no_leak_of(&w, &sb);
                assert_eq!(outlived, Vec::<String>::new(), "outlived the DEL");
            })
        })
        .collect();
    for d in dels {
        d.join().unwrap();
    }
    let ok: Vec<bool> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    eprintln!(
        "{test}: {} of {} ADDs succeeded, {} DELed while their orphan ran",
        ok.iter().filter(|o| **o).count(),
        ok.len(),
        orphaned.len()
    );
    assert!(
        ok[8..].iter().all(|o| *o),
        "the ADDs that came while the daemon was down waited for the next one: {ok:?}\n{}",
        w.log()
    );
    for (sb, ok) in pods.iter().zip(&ok) {
        if *ok {
            assert!(
                sb.netns.link_names().contains(&"net1".to_string()),
                "{}: ADD succeeded without net1\n{}",
                sb.pod.name,
                w.log()
            );
        }
        w.del_ok(&rt, sb);
    }
    for sb in &pods {
        assert_no_leak(&w, sb);
    }
    drop(daemon);
}

/// The daemon SIGKILLed while a pod's delegate hangs for good (a ten-minute sleep in front of its macvlan):
/// the orphan holds the container's lock. The restarted daemon's DEL finds the lock's owner (the killed
/// daemon) dead, kills the orphan near the end of `lockTimeoutSeconds`, tears the pod down, and counts the
/// kill in `plexus_orphans_killed_total`. Before, every DEL of the pod failed with code 11 while the orphan
/// lived.
#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn a_hung_orphan_of_a_killed_daemon_is_killed_by_the_next_del() {
    let test = "a_hung_orphan_of_a_killed_daemon_is_killed_by_the_next_del";
    let mut w = world(test);
    install_recorder(&w, &plexus());
    w.nad(
        "hung",
        &chain(
            None,
            &front(&w, &w.macvlan(MACVLAN_SUBNET), 600_000),
            None,
            None,
        ),
    );
    let sb = w.sandbox("p0", &[(NETWORKS_ANNOTATION, "hung")]);
    let rt = w.runtime(json!({"daemonWaitSeconds": 20, "lockTimeoutSeconds": 4}));
    let conf = w.rt(&sb);
    let mut daemon = w.daemon.take().unwrap();
    let orphans = thread::scope(|s| {
        let add = s.spawn(|| rt.add(&conf).is_ok());
        // Recorded: it has read its config and sleeps (killed earlier, it could die of a broken pipe).
        wait_until("the hung delegate sleeps", Duration::from_secs(30), || {
            recorded(&w, "ADD", &sb.cid, "net1")
        });
        daemon.kill();
        let orphans = recorders_for(&sb.cid);
        daemon.start_again();
        daemon.wait_ready(Duration::from_secs(30));
        // The ADD the kill cut short failed, or the shim sent it again to the new daemon, whose wait for
        // the lock ended with the same kill; either way it returns.
        let _ = add.join();
        orphans
    });
    w.daemon = Some(daemon);
    assert!(!orphans.is_empty(), "the kill left no delegate running");
    w.del_ok(&rt, &sb);
    let outlived = outliving(&sb.cid);
    assert_no_leak_of(&w, &sb);
    assert_eq!(outlived, Vec::<String>::new(), "outlived the DEL");
    let killed = gauge(&w, "plexus_orphans_killed_total").unwrap_or_default();
    assert!(
        killed >= 1.0,
        "plexus_orphans_killed_total is {killed}\n{}",
        w.log()
    );
}

/// The world's waits for the daemon (its work after the replies, which the leak checks wait for before they
/// look in `<cniDir>/.trash`; its status writes) ask the daemon on the world's socket, also while the test
/// holds the daemon itself to kill and restart it, as the test above does. A stand-in on that socket
/// reports work pending for its first answers: each wait must go on asking until it reads 0.
#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn the_worlds_waits_ask_a_daemon_the_test_took_out_of_it() {
    let test = "the_worlds_waits_ask_a_daemon_the_test_took_out_of_it";
    let mut w = world(test);
    let mut daemon = w.daemon.take().unwrap();
    let socket = daemon.socket().to_path_buf();
    let status = daemon.stop().expect("the daemon was running");
    assert!(status.success(), "graceful exit: {status:?}\n{}", w.log());
    let _ = std::fs::remove_file(&socket);
    let fake = PendingGauges::serve(
        &socket,
        &["plexus_after_reply_pending", "plexus_status_writes_pending"],
        3,
        false,
    );
    w.wait_after_reply();
    assert_eq!(fake.asked(), 4, "three answers of 1, then the 0");
    w.wait_status_writes();
    assert_eq!(fake.asked(), 5, "asked once more, 0 at once");
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn graceful_restart_in_the_middle_of_a_burst_finishes_every_add() {
    let test = "graceful_restart_in_the_middle_of_a_burst_finishes_every_add";
    let mut w = world(test);
    // Each attachment takes a while, so the SIGTERM finds requests running and queued.
    macvlan_then_recorder(&w, "slow", json!({"add": {"sleepMs": 300}}));
    let pods: Vec<Arc<Sandbox>> = (0..8)
        .map(|i| Arc::new(w.sandbox(&format!("p{i}"), &[(NETWORKS_ANNOTATION, "slow")])))
        .collect();
    let rt = Arc::new(w.runtime(json!({"daemonWaitSeconds": 30})));
    let mut daemon = w.daemon.take().unwrap();
    let w = Arc::new(w);
    let handles = burst(&w, &rt, &pods);
    thread::sleep(Duration::from_millis(200));
    // SIGTERM: not ready, no new connections, the requests already taken finish; then a new daemon.
    let stopped = Instant::now();
    let status = daemon.stop().expect("the daemon was running");
    assert!(status.success(), "graceful exit: {status:?}\n{}", w.log());
    eprintln!("{test}: drained in {:?}", stopped.elapsed());
    daemon.start_again();
    daemon.wait_ready(Duration::from_secs(30));
    let ok: Vec<bool> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        ok.iter().all(|o| *o),
        "every ADD finishes across a graceful restart: {ok:?}\n{}",
        w.log()
    );
    for sb in &pods {
        assert!(sb.netns.link_names().contains(&"net1".to_string()));
        w.del_ok(&rt, sb);
    }
    for sb in &pods {
        assert_no_leak(&w, sb);
    }
    drop(daemon);
}

/// Run the shim directly for `command` with `config` on stdin; returns its exit code and stdout.
fn shim(w: &World, command: &str, config: &Value) -> (Option<i32>, String) {
    let mut child = Command::new(w.bin_dir().join("plexus-shim"))
        .env_clear()
        .env("PATH", PLUGIN_PATH)
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", w.bin_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run the shim");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(config).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The daemon's `name` metric (one without labels), as `/metrics` reads now.
fn gauge(w: &World, name: &str) -> Option<f64> {
    let (_, text) = w.daemon.as_ref()?.get("/metrics")?;
    text.lines()
        .find(|l| l.split(' ').next() == Some(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Issue 16: NADs of two tenants name plugins this node does not have (a typo chained after a plugin that
/// exists, a plugin of another team's that was never installed here). STATUS stays ready: the daemon caches
/// every NAD of the cluster, and any user may create one. A pod selecting one of them fails with code 7
/// naming the pod, the NAD and the plugin, before any delegate ran, with a Warning event; a pod selecting
/// neither works; `/metrics` counts the two NADs, and the daemon logs each once.
#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn nads_naming_missing_plugins_fail_only_their_pods_and_status_stays_ready() {
    let test = "nads_naming_missing_plugins_fail_only_their_pods_and_status_stays_ready";
    let mut w = world(test);
    let mut config = w.plexus_plugin(json!({}));
    config["cniVersion"] = json!("1.1.0");
    config["name"] = json!("k8s-pod-network");
    let (code, out) = shim(&w, "STATUS", &config);
    assert_eq!(code, Some(0), "ready with no NADs: {out}\n{}", w.log());

    let tenant_a = w.cluster.create_namespace("tenant-a");
    let tenant_b = w.cluster.create_namespace("tenant-b");
    install_recorder(&w, &plexus());
    let typo = chain(
        None,
        &json!({"cniVersion": "1.0.0", "type": "no-such-plugin"}),
        Some(recorder(&w, json!({}))),
        None,
    );
    w.cluster.create_nad(&tenant_a, "fast-net", Some(&typo));
    w.cluster.create_nad(
        &tenant_b,
        "legacy-net",
        Some(&json!({"cniVersion": "1.0.0", "type": "other-teams-plugin"})),
    );
    w.nad("macvlan-net", &w.macvlan(MACVLAN_SUBNET));
    let daemon = w.daemon.as_ref().unwrap();
    for (ns, name) in [
        (&tenant_a, "fast-net"),
        (&tenant_b, "legacy-net"),
        (&w.ns, "macvlan-net"),
    ] {
        daemon.wait_cached("network-attachment-definitions", ns, name);
    }
    let (code, out) = shim(&w, "STATUS", &config);
    assert_eq!(code, Some(0), "STATUS stays ready: {out}\n{}", w.log());

    // A pod of tenant A selecting its NAD: code 7 naming the pod, the NAD and the plugin; nothing ran.
    let rt = w.runtime(json!({}));
    let bad = w.sandbox_in(&tenant_a, "web", &[(NETWORKS_ANNOTATION, "fast-net")]);
    daemon.wait_cached("pods", &tenant_a, &bad.pod.name);
    let err = w.add_fails(&rt, &bad);
    w.assert_plugin_missing(
        &err,
        &bad,
        &nad_name(&tenant_a, "fast-net"),
        "no-such-plugin",
    );
    w.assert_no_status(&bad);
    w.assert_clean(&bad);
    // The runtime's DEL after the failed ADD succeeds and leaves nothing.
    w.del_ok(&rt, &bad);
    w.assert_clean(&bad);
    assert_no_leak_of(&w, &bad);
    assert_eq!(
        records(&w),
        Vec::<Value>::new(),
        "no plugin of the NAD ran, ADD or DEL"
    );

    // A pod selecting neither NAD works.
    let good = w.sandbox("fine", &[(NETWORKS_ANNOTATION, "macvlan-net")]);
    daemon.wait_cached("pods", &w.ns, &good.pod.name);
    w.add_ok(&rt, &good);
    assert!(good.netns.link_names().contains(&"net1".to_string()));
    w.del_ok(&rt, &good);
    w.assert_clean(&good);

    // The gauge counts both NADs. A real server holds other tests' NADs too (their plugins may live in
    // their own directories), so there it counts at least these two.
    let expected = |v: f64| {
        if w.cluster.is_real() {
            v >= 2.0
        } else {
            v == 2.0
        }
    };
    wait_until(
        "the gauge counts both NADs",
        Duration::from_secs(10),
        || gauge(&w, "plexus_nads_missing_plugins").is_some_and(expected),
    );
    // One log line per NAD, not per STATUS call or per pass (the report passes at least once a second
    // while something changes; three more STATUS calls and two seconds give it the chance to repeat).
    for _ in 0..3 {
        assert_eq!(shim(&w, "STATUS", &config).0, Some(0));
    }
    thread::sleep(Duration::from_secs(2));
    let log = std::fs::read_to_string(w.daemon_log_file()).unwrap_or_default();
    for nad in [
        nad_name(&tenant_a, "fast-net"),
        nad_name(&tenant_b, "legacy-net"),
    ] {
        let lines = log
            .lines()
            .filter(|l| l.contains(&format!("NAD {nad} names plugin")))
            .count();
        assert_eq!(lines, 1, "one line for {nad}:\n{log}");
    }
    assert!(log.contains("\"other-teams-plugin\""), "{log}");

    // Installing the plugin makes tenant B's NAD usable: an info line, and the gauge drops. The report
    // looks again every 30 s, or when a NAD changes: one more NAD spares the test the wait.
    std::os::unix::fs::symlink(
        "/usr/lib/cni/macvlan",
        w.bin_dir().join("other-teams-plugin"),
    )
    .unwrap();
    w.nad("another-net", &w.macvlan(MACVLAN_SUBNET));
    let usable = format!("NAD {} can be used now", nad_name(&tenant_b, "legacy-net"));
    wait_until(
        "the report sees the installed plugin",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(w.daemon_log_file())
                .unwrap_or_default()
                .contains(&usable)
        },
    );
    if !w.cluster.is_real() {
        assert_eq!(gauge(&w, "plexus_nads_missing_plugins"), Some(1.0));
    }
}

/// Issue 16 (2): a daemon SIGKILLed between ADD's reply and its status write (the PATCH held back by the
/// stand-in) loses nothing: the next daemon reconciles at start and writes every pod's network-status from
/// the containers' records, ten times over; a pod deleted meanwhile gets no write, and a pod recreated
/// under the same name (a new UID) never receives the old pod's status.
#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn a_status_write_lost_with_a_killed_daemon_is_written_by_the_next() {
    let test = "a_status_write_lost_with_a_killed_daemon_is_written_by_the_next";
    if !standin_only(test, "it holds the status PATCH back with a stand-in fault") {
        return;
    }
    let mut w = world(test);
    w.nad("a", &w.macvlan(MACVLAN_SUBNET));
    let rt = w.runtime(json!({"daemonWaitSeconds": 20}));
    let mut daemon = w.daemon.take().unwrap();
    let server = w.cluster.standin().unwrap();
    let status_path = |name: &str| format!("/namespaces/{}/pods/{name}/status", w.ns);
    let networks = [(NETWORKS_ANNOTATION, "a")];
    let mut sandboxes = Vec::new();
    for round in 0..10 {
        // Each round: a pod that keeps running, and one that is deleted (odd rounds) or deleted and
        // recreated under its name (even rounds) while the daemon is down.
        let kept = w.sandbox(&format!("kept{round}"), &networks);
        let other = w.sandbox(&format!("other{round}"), &networks);
        for sb in [&kept, &other] {
            daemon.wait_cached("pods", &w.ns, &sb.pod.name);
            server.inject(FaultSpec::status(503).on("PATCH", &status_path(&sb.pod.name)));
            w.add_ok(&rt, sb);
        }
        // The daemon has replied and is retrying the held-back writes: SIGKILL it there.
        wait_until("both status writes tried", Duration::from_secs(10), || {
            [&kept, &other]
                .iter()
                .all(|sb| server.count_requests("PATCH", &status_path(&sb.pod.name)) >= 1)
        });
        daemon.kill();
        server.faults().clear();
        w.cluster.delete_pod(&w.ns, &other.pod.name);
        let recreated =
            (round % 2 == 0).then(|| w.cluster.create_pod(&w.ns, &other.pod.name, &networks));
        let patches_before = server.count_requests("PATCH", &status_path(&other.pod.name));

        daemon.start_again();
        daemon.wait_ready(Duration::from_secs(30));
        wait_until(
            &format!("round {round}: the kept pod's network-status"),
            Duration::from_secs(20),
            || {
                w.cluster
                    .pod_annotation(
                        &w.ns,
                        &kept.pod.name,
                        plexus::pure::annotations::NETWORK_STATUS_ANNOTATION,
                    )
                    .is_some()
            },
        );
        daemon.wait_status_writes(Duration::from_secs(20));
        w.assert_status(
            &kept,
            &[
                (CLUSTER_NETWORK, "eth0", true),
                (&nad_name(&w.ns, "a"), "net1", false),
            ],
        );
        assert_eq!(
            server.count_requests("PATCH", &status_path(&other.pod.name)),
            patches_before,
            "round {round}: no write for a pod deleted (or recreated) while the daemon was down\n{}",
            w.log()
        );
        if let Some(new) = recreated {
            let pod = w.cluster.get_pod(&w.ns, &new.name);
            assert_eq!(pod.metadata.uid.as_deref(), Some(new.uid.as_str()));
            let status = pod.metadata.annotations.and_then(|a| {
                a.get(plexus::pure::annotations::NETWORK_STATUS_ANNOTATION)
                    .cloned()
            });
            assert_eq!(
                status, None,
                "round {round}: the recreated pod got the old pod's status"
            );
        }
        sandboxes.push(kept);
        sandboxes.push(other);
    }
    w.daemon = Some(daemon);
    for sb in &sandboxes {
        w.del_ok(&rt, sb);
    }
    for sb in &sandboxes {
        assert_no_leak(&w, sb);
    }
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn status_write_before_the_reply_is_the_thin_contract() {
    let test = "status_write_before_the_reply_is_the_thin_contract";
    if !standin_only(test, "it injects a 503 storm into the stand-in") {
        return;
    }
    let mut w = world(test);
    // The same daemon, restarted with statusWrite: beforeReply.
    let mut config = w.daemon_config();
    config["statusWrite"] = json!("beforeReply");
    w.restart_daemon(&plexus(), &config, DaemonView::Host);
    let daemon = w.daemon.as_ref().unwrap();
    w.nad("macvlan-net", &w.macvlan(MACVLAN_SUBNET));
    let rt = w.runtime(json!({"apiTimeoutSeconds": 1, "apiBudgetSeconds": 2}));
    let server = w.cluster.standin().unwrap();

    // A healthy API: the annotation is on the pod when ADD replies (no waiting for the daemon).
    let sb = w.sandbox("first", &[(NETWORKS_ANNOTATION, "macvlan-net")]);
    w.add_ok(&rt, &sb);
    let written = w.cluster.pod_annotation(
        &sb.pod.namespace,
        &sb.pod.name,
        plexus::pure::annotations::NETWORK_STATUS_ANNOTATION,
    );
    assert!(written.is_some(), "network-status written before the reply");
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);

    // A status write that fails for the whole budget fails the ADD (try again later), rolled back.
    let sb = w.sandbox("second", &[(NETWORKS_ANNOTATION, "macvlan-net")]);
    daemon.wait_cached("pods", &w.ns, &sb.pod.name);
    let status_path = format!("/namespaces/{}/pods/{}/status", w.ns, sb.pod.name);
    server.inject(FaultSpec::status(503).on("PATCH", &status_path));
    let err = w.add_fails(&rt, &sb);
    assert_eq!(err.code, Some(11), "{err}");
    assert!(
        err.text().contains("503") && err.text().contains(&sb.pod.name),
        "{err}"
    );
    assert!(server.count_requests("PATCH", &status_path) >= 2, "retried");
    w.assert_clean(&sb);
    server.faults().clear();
    w.assert_no_status(&sb);
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}

/// What the daemon's socket shows of NAD `ns/name` (`GET /cache/...`).
fn cached_nad(daemon: &DaemonProcess, ns: &str, name: &str) -> Value {
    let path = format!("/cache/network-attachment-definitions/{ns}/{name}");
    let (code, body) = daemon.get(&path).expect("the daemon answers");
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

/// Issue 20: the daemon holds whole only the NADs its node's pods select. A NAD no pod of the node selects
/// is held compact (its plugin types, no config); once a pod selects one, the daemon loads it before any
/// ADD, the ADD reads no NAD from the API, and the watch keeps the loaded copy current.
#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn only_the_nads_the_nodes_pods_select_are_held_whole() {
    let test = "only_the_nads_the_nodes_pods_select_are_held_whole";
    let mut w = world(test);
    let other = w.cluster.create_namespace("other-tenant");
    w.cluster.create_nad(
        &other,
        "unused",
        Some(&json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "eth0"})),
    );
    w.nad("used", &w.macvlan(MACVLAN_SUBNET));
    let daemon = w.daemon.as_ref().unwrap();
    for (ns, name) in [(&other, "unused"), (&w.ns, "used")] {
        daemon.wait_cached("network-attachment-definitions", ns, name);
        let held = cached_nad(daemon, ns, name);
        assert_eq!(
            held["cache"],
            json!({"loaded": false, "plugins": ["macvlan"]}),
            "no pod selects {ns}/{name}: {held}"
        );
        assert!(held.get("spec").is_none(), "no config held: {held}");
    }

    // A pod of the node selects `used`: loaded before its ADD, the other NAD still compact.
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "used")]);
    daemon.wait_cached("pods", &w.ns, &sb.pod.name);
    daemon.wait_nad_loaded(&w.ns, "used");
    let held = cached_nad(daemon, &w.ns, "used");
    assert!(
        held["spec"]["config"]
            .as_str()
            .is_some_and(|c| c.contains("macvlan")),
        "{held}"
    );
    assert_eq!(
        cached_nad(daemon, &other, "unused")["cache"]["loaded"],
        false
    );

    let rt = w.runtime(json!({}));
    let server = w
        .cluster
        .standin_part(test, "no NAD read by the ADD, counted at the stand-in");
    if let Some(server) = server {
        server.clear_requests();
    }
    w.add_ok(&rt, &sb);
    if let Some(server) = server {
        let reads = server.count_requests("GET", "/network-attachment-definitions/");
        assert_eq!(reads, 0, "the ADD read its NAD from the cache");
    }

    // A change to the loaded NAD reaches the daemon's copy.
    let mut changed = w.macvlan(MACVLAN_SUBNET);
    changed["mtu"] = json!(1400);
    w.cluster.set_nad_config(&w.ns, "used", &changed);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held = cached_nad(daemon, &w.ns, "used");
        if held["spec"]["config"]
            .as_str()
            .is_some_and(|c| c.contains("1400"))
        {
            assert_eq!(held["cache"]["loaded"], true);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the change never reached the daemon: {held}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
    assert_no_leak(&w, &sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn metrics_count_verbs_delegates_and_cache_hits() {
    let test = "metrics_count_verbs_delegates_and_cache_hits";
    let w = world(test);
    w.nad("a", &w.macvlan(MACVLAN_SUBNET));
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "a")]);
    let rt = w.runtime(json!({}));
    let daemon = w.daemon.as_ref().unwrap();
    daemon.wait_cached("pods", &w.ns, &sb.pod.name);
    daemon.wait_nad_loaded(&w.ns, "a");
    w.add_ok(&rt, &sb);
    // The status write follows the ADD's records; a DEL arriving first would make it moot (superseded).
    w.wait_status_writes();
    w.del_ok(&rt, &sb);
    let (code, text) = daemon.get("/metrics").expect("metrics");
    assert_eq!(code, 200);
    let value = |needle: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
    };
    assert!(value("plexus_cni_request_duration_seconds_count{verb=\"ADD\",result=\"ok\"}") >= 1.0);
    assert!(value("plexus_cni_request_duration_seconds_count{verb=\"DEL\",result=\"ok\"}") >= 1.0);
    assert!(
        value(
            "plexus_delegate_duration_seconds_count{plugin=\"macvlan\",verb=\"ADD\",result=\"ok\"}"
        ) >= 1.0
    );
    assert!(
        value(
            "plexus_delegate_duration_seconds_count{plugin=\"bridge\",verb=\"DEL\",result=\"ok\"}"
        ) >= 1.0
    );
    assert!(value("plexus_cache_lookups_total{kind=\"pod\",result=\"hit\"}") >= 1.0);
    assert!(
        value("plexus_cache_lookups_total{kind=\"network-attachment-definition\",result=\"hit\"}")
            >= 1.0
    );
    assert_eq!(value("plexus_cache_synced"), 1.0);
    assert_eq!(value("plexus_requests_in_flight"), 0.0);
    assert!(
        value(
            "plexus_api_request_duration_seconds_count{request=\"patch pod status\",code=\"2xx\"}"
        ) >= 1.0
    );
    assert!(
        value("multus_server_request_total{handler=\"cni\",code=\"200\",method=\"POST\"}") >= 2.0
    );
    assert_no_leak(&w, &sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn the_shim_passes_del_errors_on() {
    let test = "the_shim_passes_del_errors_on";
    let w = world(test);
    macvlan_then_recorder(
        &w,
        "f",
        json!({"del": {"error": {"code": 7, "msg": "refusing DEL"}}}),
    );
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "f")]);
    let rt = w.runtime(json!({}));
    w.add_ok(&rt, &sb);
    // Go Multus's shim says 0 whatever the daemon says (#1239); ours passes the error on.
    let running = spawn_plexus(&w, &rt, &sb, "DEL");
    let done = running.wait(Duration::from_secs(60));
    assert_eq!(done.code, Some(1), "{}", done.stdout);
    let e = ErrorReply::parse(done.stdout.as_bytes()).expect("a CNI error");
    assert!(e.msg.contains("refusing DEL"), "{e:?}");
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn a_full_queue_pushes_back_and_every_add_still_finishes() {
    let test = "a_full_queue_pushes_back_and_every_add_still_finishes";
    let mut w = world(test);
    macvlan_then_recorder(&w, "slow", json!({"add": {"sleepMs": 400}}));
    // One request at a time, one waiting: the rest are refused (503, code 11) and their shims retry.
    let mut config = w.daemon_config();
    config["maxConcurrency"] = json!(1);
    config["maxQueue"] = json!(1);
    w.restart_daemon(&plexus(), &config, DaemonView::Host);
    let pods: Vec<Arc<Sandbox>> = (0..4)
        .map(|i| Arc::new(w.sandbox(&format!("p{i}"), &[(NETWORKS_ANNOTATION, "slow")])))
        .collect();
    let rt = Arc::new(w.runtime(json!({"daemonWaitSeconds": 30})));
    let w = Arc::new(w);
    let ok: Vec<bool> = burst(&w, &rt, &pods)
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert!(ok.iter().all(|o| *o), "{ok:?}\n{}", w.log());
    let (_, metrics) = w.daemon.as_ref().unwrap().get("/metrics").unwrap();
    let rejected: f64 = metrics
        .lines()
        .find(|l| l.starts_with("plexus_requests_rejected_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("the rejected counter");
    assert!(
        rejected >= 1.0,
        "some requests found the queue full:\n{metrics}"
    );
    for sb in &pods {
        w.del_ok(&rt, sb);
    }
    for sb in &pods {
        assert_no_leak(&w, sb);
    }
}

/// POST `body` to `/cni` on `socket` and read the whole reply, keeping the connection open afterwards (a
/// client that has not hung up yet): the status code and the open connection.
fn post_keeping_the_connection(socket: &std::path::Path, body: &[u8]) -> (u16, UnixStream) {
    let mut s = UnixStream::connect(socket).expect("connect to the daemon socket");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut request = format!(
        "POST /cni HTTP/1.1\r\nHost: plexus\r\nContent-Length: {}\r\nContent-Type: application/json\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    s.write_all(&request).expect("send the request");
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).expect("read the reply");
        assert!(
            n > 0,
            "the daemon closed the connection before its reply was whole"
        );
        reply.extend_from_slice(&chunk[..n]);
        let Some(split) = reply.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&reply[..split]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("a reply with a length");
        if reply.len() >= split + 4 + length {
            let code = head.split(' ').nth(1).unwrap().parse().unwrap();
            return (code, s);
        }
    }
}

/// A daemon DEL moves the container's files into `<cniDir>/.trash` before it replies, and unlinks them
/// after (once the client hung up, at most 100 ms later). A daemon killed in between leaves only its trash:
/// nothing finds the container any more, and the next daemon's start empties it (docs/daemon.md).
#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn a_daemon_killed_right_after_a_dels_reply_leaves_only_trash_that_its_restart_empties() {
    use nix::{
        sys::signal::{Signal, kill},
        unistd::Pid,
    };
    use plexus_testsupport::leaks::files_naming;
    let test =
        "a_daemon_killed_right_after_a_dels_reply_leaves_only_trash_that_its_restart_empties";
    let mut w = world(test);
    w.nad("a", &w.macvlan(MACVLAN_SUBNET));
    let rt = w.runtime(json!({}));
    // The requests go straight to the socket (as Go's shim sends them), so the runtime keeps no cache.
    let mut config = w.plexus_plugin(json!({}));
    config["cniVersion"] = json!("1.0.0");
    config["name"] = json!("k8s-pod-network");
    let socket = w.daemon.as_ref().unwrap().socket().to_path_buf();
    let trash = w.cni_dir().join(".trash");
    // The stop must come within the 100 ms the daemon waits for the client to hang up: a test thread
    // that wakes up later than that (a busy machine) tries again with another pod.
    for attempt in 0..5 {
        let sb = w.sandbox(&format!("k{attempt}"), &[(NETWORKS_ANNOTATION, "a")]);
        let daemon = w.daemon.as_ref().unwrap();
        daemon.wait_cached("pods", &w.ns, &sb.pod.name);
        let (code, body) = go_post(&socket, "/cni", &go_request(&w, &rt, &sb, "ADD", &config));
        assert_eq!(code, 200, "{}\n{}", String::from_utf8_lossy(&body), w.log());
        // DEL right after its ADD; the daemon is frozen as soon as the reply is in.
        let (code, connection) =
            post_keeping_the_connection(&socket, &go_request(&w, &rt, &sb, "DEL", &config));
        let pid = Pid::from_raw(daemon.pid().expect("the daemon runs") as i32);
        kill(pid, Signal::SIGSTOP).expect("SIGSTOP the daemon");
        assert_eq!(code, 200, "{}", w.log());
        let held = files_naming(&trash, &sb.cid);
        if held.is_empty() {
            eprintln!("{test}: attempt {attempt}: the unlinks ran before the stop; again");
            kill(pid, Signal::SIGCONT).expect("SIGCONT the daemon");
            drop(connection);
            assert_no_leak_of(&w, &sb);
            continue;
        }
        // The reply came with the container's files out of every reader's reach: only the trash has them.
        let in_place: Vec<PathBuf> = files_naming(&w.cni_dir(), &sb.cid)
            .into_iter()
            .filter(|p| !p.starts_with(&trash))
            .collect();
        assert_eq!(in_place, Vec::<PathBuf>::new(), "{}", w.log());
        assert!(
            held.len() >= 3,
            "the cache and the two result records: {held:?}"
        );
        // Killed before its unlinks.
        w.daemon.as_mut().unwrap().kill();
        drop(connection);
        assert_eq!(files_naming(&trash, &sb.cid), held, "left as they were");
        // The next daemon, whose config names this cniDir (else its first DEL there would), empties the
        // trash when it starts.
        let mut next = w.daemon_config();
        next["cniDir"] = json!(w.cni_dir());
        std::fs::write(
            w.root().join("daemon.json"),
            serde_json::to_vec(&next).unwrap(),
        )
        .unwrap();
        let d = w.daemon.as_mut().unwrap();
        d.start_again();
        d.wait_ready(Duration::from_secs(30));
        d.wait_after_reply(Duration::from_secs(20));
        assert_eq!(
            files_naming(&trash, &sb.cid),
            Vec::<PathBuf>::new(),
            "{}",
            w.log()
        );
        assert_no_leak_of(&w, &sb);
        return;
    }
    panic!(
        "{test}: the DEL's files never waited in the trash after its reply\n{}",
        w.log()
    );
}

/// The cluster network for the host-filesystem tests: a bridge that masquerades (`ipMasq`), then
/// `portmap`, both of which run the host's `iptables`.
fn masquerading_cluster_with_portmap(w: &World) -> Value {
    let mut ipam = w.ipam(CLUSTER_SUBNET);
    ipam["routes"] = json!([{"dst": "0.0.0.0/0"}]);
    json!({
        "cniVersion": "1.0.0",
        "name": CLUSTER_NETWORK,
        "plugins": [
            {"type": "bridge", "bridge": CLUSTER_BRIDGE, "isGateway": true, "ipMasq": true, "ipam": ipam},
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": false},
        ],
    })
}

/// Replace `w`'s daemon with one that sees the filesystem as its container image would (no `iptables`, no
/// `/run/netns`), the host's root mounted at `<root>/hostroot`; `chroot`: its config names that mount as
/// `chrootDir`, as deploy/daemon's does.
fn restart_in_image(w: &mut World, chroot: bool) {
    let hostroot = w.root().join("hostroot");
    std::fs::create_dir_all(&hostroot).expect("create the hostroot mount point");
    let mut config = w.daemon_config();
    if chroot {
        config["chrootDir"] = json!(hostroot);
    }
    w.restart_daemon(&plexus(), &config, DaemonView::Image { hostroot });
}

/// The runtime's attachment parameters for `sb` with host port `port` mapped to 80, `CNI_NETNS` as `netns`.
fn with_host_port(w: &World, sb: &Sandbox, port: u16, netns: PathBuf) -> RuntimeConf {
    let mut conf = w.rt(sb);
    conf.netns = Some(netns);
    conf.capability_args.insert(
        "portMappings".into(),
        json!([{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]),
    );
    conf
}

#[test]
#[ignore = "needs root: creates network and mount namespaces and runs Debian's CNI plugins and iptables"]
fn delegates_run_in_the_host_filesystem_through_chroot_dir() {
    let test = "delegates_run_in_the_host_filesystem_through_chroot_dir";
    let mut w = world(test);
    w.write("cluster.conflist", &masquerading_cluster_with_portmap(&w));
    restart_in_image(&mut w, true);
    let rt = w.runtime(json!({}));
    // The runtime names a pod's namespace under /run/netns or under /var/run/netns (a symlink on the host);
    // the daemon's own view has neither.
    let sandboxes = [
        (w.sandbox("run", &[]), "/run/netns"),
        (w.sandbox("varrun", &[]), "/var/run/netns"),
    ];
    for (i, (sb, dir)) in sandboxes.iter().enumerate() {
        let port = 18080 + i as u16;
        let conf = with_host_port(&w, sb, port, Path::new(dir).join(&sb.netns.name));
        rt.add(&conf).unwrap_or_else(|e| {
            panic!(
                "{test}: ADD with CNI_NETNS under {dir}: {e}\nplexus log:\n{}",
                w.log()
            )
        });
        assert_eq!(sb.netns.link_names(), ["eth0", "lo"], "{dir}");
        // Both programs ran the host's iptables, in the host's network namespace.
        let rules = w.host_nat_rules();
        assert!(
            rules
                .lines()
                .any(|l| l.contains(&format!("--dport {port}")) && l.contains("DNAT")),
            "{dir}: portmap's DNAT for host port {port}:\n{rules}"
        );
        assert!(
            rules
                .lines()
                .any(|l| l.contains("POSTROUTING") && l.contains(&sb.cid)),
            "{dir}: the bridge's masquerading rule for {}:\n{rules}",
            sb.cid
        );
        rt.del(&conf).unwrap_or_else(|e| {
            panic!(
                "{test}: DEL with CNI_NETNS under {dir}: {e}\nplexus log:\n{}",
                w.log()
            )
        });
        let rules = w.host_nat_rules();
        assert!(
            !rules.contains(&sb.cid) && !rules.contains(&format!("--dport {port}")),
            "{dir}: the container's rules are gone:\n{rules}"
        );
        w.assert_clean(sb);
    }
}

#[test]
#[ignore = "needs root: creates network and mount namespaces and runs Debian's CNI plugins and iptables"]
fn a_del_the_daemon_cannot_do_is_done_on_the_host() {
    let test = "a_del_the_daemon_cannot_do_is_done_on_the_host";
    let mut w = world(test);
    w.write("cluster.conflist", &masquerading_cluster_with_portmap(&w));
    restart_in_image(&mut w, true);
    let rt = w.runtime(json!({}));
    let sb = w.sandbox("web", &[]);
    let conf = with_host_port(&w, &sb, 18090, sb.path());
    rt.add(&conf)
        .unwrap_or_else(|e| panic!("{test}: ADD: {e}\nplexus log:\n{}", w.log()));
    assert!(w.host_nat_rules().contains(&sb.cid));
    // A daemon without chrootDir runs the delegates in its image, where iptables is missing: its DEL fails.
    // The pod must not stay pinned: the shim does the DEL again on the host with the thin plexus.
    restart_in_image(&mut w, false);
    rt.del(&conf)
        .unwrap_or_else(|e| panic!("{test}: DEL: {e}\nplexus log:\n{}", w.log()));
    let rules = w.host_nat_rules();
    assert!(
        !rules.contains(&sb.cid) && !rules.contains("--dport 18090"),
        "the container's rules are gone:\n{rules}"
    );
    assert!(
        w.log().contains("DEL done again by thin plexus"),
        "the shim says why it ran the thin plexus:\n{}",
        w.log()
    );
    w.assert_clean(&sb);
}

#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn the_auxiliary_chain_named_in_the_daemon_config_runs_for_every_pod() {
    // Issue 22: Go Multus's thick deployments set auxiliaryCNIChainName in the daemon config, which the
    // daemon overlays on every request (docs/multus-compat.md, "Daemon mode"); the shim's config does not
    // name it. Debian's tuning in the chain's directory (next to the clusterNetwork file) sets eth0's
    // arp_filter; the chain is in no network-status entry, and DEL runs it from the cache.
    let test = "the_auxiliary_chain_named_in_the_daemon_config_runs_for_every_pod";
    let mut w = world(test);
    let mut config = w.daemon_config();
    config["auxiliaryCNIChainName"] = json!("vendor-cni-chain");
    w.restart_daemon(&plexus(), &config, DaemonView::Host);
    w.write(
        "vendor-cni-chain/10-tuning.conf",
        &json!({"type": "tuning", "dataDir": w.tuning_dir(),
                "sysctl": {"net.ipv4.conf.eth0.arp_filter": "1"}}),
    );
    w.nad("macvlan-net", &w.macvlan(MACVLAN_SUBNET));
    let rt = w.runtime(json!({}));
    let sb = w.sandbox("web", &[(NETWORKS_ANNOTATION, "macvlan-net")]);
    w.add_ok(&rt, &sb);
    assert_eq!(sb.netns.link_names(), ["eth0", "lo", "net1"]);
    let arp_filter = plexus_netns::run_in_netns(&sb.path(), || {
        std::fs::read_to_string("/proc/sys/net/ipv4/conf/eth0/arp_filter")
    })
    .expect("enter the pod namespace")
    .expect("read the sysctl");
    assert_eq!(arp_filter.trim(), "1", "{}", w.log());
    w.assert_status(
        &sb,
        &[
            (CLUSTER_NETWORK, "eth0", true),
            (&nad_name(&w.ns, "macvlan-net"), "net1", false),
        ],
    );
    // The cache is renamed into place after the reply.
    w.wait_after_reply();
    let cache: Value =
        serde_json::from_slice(&std::fs::read(w.cni_dir().join(&sb.cid)).unwrap()).unwrap();
    assert_eq!(cache[2]["name"], "vendor-cni-chain", "{cache:#}");
    assert_eq!(cache[2]["plexusIfName"], "net2", "{cache:#}");
    w.check_ok(&rt, &sb);
    std::fs::remove_dir_all(w.root().join("vendor-cni-chain")).unwrap();
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}

/// The interface names the container's cache records, in attach order.
fn cached_ifnames(w: &World, cid: &str) -> Vec<String> {
    let Ok(bytes) = std::fs::read(w.cni_dir().join(cid)) else {
        return Vec::new();
    };
    let entries: Vec<Value> = serde_json::from_slice(&bytes).unwrap_or_default();
    entries
        .iter()
        .map(|e| e["plexusIfName"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The (name, interface) entries of the pod's network-status as the API has it now.
fn status_entries(w: &World, sb: &Sandbox) -> Vec<(String, String)> {
    w.cluster
        .pod_annotation(
            &sb.pod.namespace,
            &sb.pod.name,
            plexus::pure::annotations::NETWORK_STATUS_ANNOTATION,
        )
        .and_then(|t| plexus::pure::status::parse(&t).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.interface))
        .collect()
}

/// The pod's events with `reason`, as `(type, message)`.
fn events_with(w: &World, sb: &Sandbox, reason: &str) -> Vec<(String, String)> {
    w.cluster
        .pod_events(&sb.pod.namespace, &sb.pod.name)
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| (e.type_.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// Issue 18: with `hotplug: true`, changing a running pod's networks annotation (a merge patch of its
/// metadata, as a user would) attaches and detaches networks: one added, then a second on a requested
/// name, then the first removed. After each step the pod's links, its network-status read back from the
/// API and the cache agree. A NAD that does not exist leaves the pod as it is, with Warning events. The
/// runtime's DEL then leaves nothing.
#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn networks_are_hot_plugged_into_a_running_pod() {
    let test = "networks_are_hot_plugged_into_a_running_pod";
    let mut w = world(test);
    let mut config = w.daemon_config();
    config["hotplug"] = json!(true);
    w.restart_daemon(&plexus(), &config, DaemonView::Host);
    w.nad("a", &w.macvlan(MACVLAN_SUBNET));
    w.nad(
        "b",
        &w.bridge("e2ehp1", plexus_e2e::harness::world::BRIDGE_SUBNET),
    );
    let rt = w.runtime(json!({}));
    let sb = w.sandbox("hot", &[]);
    w.add_ok(&rt, &sb);
    w.assert_status(&sb, &[(CLUSTER_NETWORK, "eth0", true)]);
    let (a, b) = (nad_name(&w.ns, "a"), nad_name(&w.ns, "b"));

    // The annotation, then the pod's links and its secondary networks' (network, interface) after it.
    type Step<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);
    let steps: [Step; 3] = [
        ("a", &["eth0", "lo", "net1"], &[(&a, "net1")]),
        (
            "a,b@data0",
            &["data0", "eth0", "lo", "net1"],
            &[(&a, "net1"), (&b, "data0")],
        ),
        ("b@data0", &["data0", "eth0", "lo"], &[(&b, "data0")]),
    ];
    for (networks, links, secondaries) in steps {
        w.cluster
            .set_pod_annotation(&w.ns, &sb.pod.name, NETWORKS_ANNOTATION, networks);
        let mut want_status = vec![(CLUSTER_NETWORK.to_string(), "eth0".to_string())];
        want_status.extend(
            secondaries
                .iter()
                .map(|(n, i)| (n.to_string(), i.to_string())),
        );
        let want_cache: Vec<String> = want_status.iter().map(|(_, i)| i.clone()).collect();
        wait_until(
            &format!("{networks:?}: links, network-status and cache agree"),
            Duration::from_secs(30),
            || {
                sb.netns.link_names() == links
                    && status_entries(&w, &sb) == want_status
                    && cached_ifnames(&w, &sb.cid) == want_cache
            },
        );
        let mut expected = vec![(CLUSTER_NETWORK, "eth0", true)];
        expected.extend(secondaries.iter().map(|(n, i)| (*n, *i, false)));
        // Each entry's addresses and MAC are the pod's interfaces'.
        w.assert_status(&sb, &expected);
    }
    assert!(
        events_with(&w, &sb, "AddedInterface")
            .iter()
            .any(|(_, m)| m.contains("data0") && m.contains(&b)),
        "{:?}",
        w.cluster.pod_events(&sb.pod.namespace, &sb.pod.name)
    );
    wait_until(
        "the RemovedInterface event",
        Duration::from_secs(10),
        || {
            events_with(&w, &sb, "RemovedInterface")
                .iter()
                .any(|(_, m)| m.contains("net1") && m.contains(&a))
        },
    );

    // A NAD that does not exist: the pod is left as it is, and Warning events say why.
    w.cluster
        .set_pod_annotation(&w.ns, &sb.pod.name, NETWORKS_ANNOTATION, "b@data0,ghost");
    wait_until("the HotplugFailed event", Duration::from_secs(30), || {
        events_with(&w, &sb, "HotplugFailed")
            .iter()
            .any(|(t, m)| t == "Warning" && m.contains("ghost"))
    });
    assert_eq!(sb.netns.link_names(), ["data0", "eth0", "lo"]);
    assert_eq!(cached_ifnames(&w, &sb.cid), ["eth0", "data0"]);
    w.assert_status(
        &sb,
        &[(CLUSTER_NETWORK, "eth0", true), (&b, "data0", false)],
    );

    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}

/// Issue 18: hot-plug is off unless the daemon config turns it on: a running pod's annotation change
/// leaves its sandbox as it is, and the log says so once, however many changes follow.
#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn with_hot_plug_off_an_annotation_change_changes_nothing_and_is_logged_once() {
    let w = world("with_hot_plug_off_an_annotation_change_changes_nothing_and_is_logged_once");
    let daemon = w.daemon.as_ref().unwrap();
    w.nad("a", &w.macvlan(MACVLAN_SUBNET));
    let rt = w.runtime(json!({}));
    let sb = w.sandbox("cold", &[]);
    w.add_ok(&rt, &sb);
    const SAID: &str = "hot-plug is off";
    let said = || {
        std::fs::read_to_string(w.daemon_log_file())
            .unwrap_or_default()
            .matches(SAID)
            .count()
    };
    let cached_annotation = || {
        let path = format!("/cache/pods/{}/{}", w.ns, sb.pod.name);
        daemon
            .get(&path)
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .and_then(|p| {
                p["metadata"]["annotations"][NETWORKS_ANNOTATION]
                    .as_str()
                    .map(str::to_string)
            })
    };
    for (i, networks) in ["a", "a,a", "a@data0"].into_iter().enumerate() {
        w.cluster
            .set_pod_annotation(&w.ns, &sb.pod.name, NETWORKS_ANNOTATION, networks);
        // The watch has handed the change to the queue.
        wait_until(
            "the daemon sees the change",
            Duration::from_secs(10),
            || cached_annotation().as_deref() == Some(networks),
        );
        if i == 0 {
            wait_until(
                "the log says hot-plug is off",
                Duration::from_secs(10),
                || said() > 0,
            );
        }
    }
    assert_eq!(said(), 1, "said once\n{}", w.log());
    assert_eq!(sb.netns.link_names(), ["eth0", "lo"]);
    // The ADD's cache lands after its reply (daemon mode writes it behind): wait for it, then it must
    // hold the cluster network alone.
    wait_until("the ADD's cache", Duration::from_secs(10), || {
        !cached_ifnames(&w, &sb.cid).is_empty()
    });
    assert_eq!(cached_ifnames(&w, &sb.cid), ["eth0"]);
    w.assert_status(&sb, &[(CLUSTER_NETWORK, "eth0", true)]);
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}

/// Issue 18: a delegate failing in the middle of a hot-plug (macvlan attached, the plugin chained after it
/// fails) is rolled back: the rollback's DEL runs, the pod has no new link, its address is released, the
/// cache is as before, and a `HotplugFailed` event says why. The runtime's DEL then leaves nothing.
#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn a_delegate_failing_mid_hot_plug_is_rolled_back_and_leaks_nothing() {
    let test = "a_delegate_failing_mid_hot_plug_is_rolled_back_and_leaks_nothing";
    let mut w = world(test);
    let mut config = w.daemon_config();
    config["hotplug"] = json!(true);
    w.restart_daemon(&plexus(), &config, DaemonView::Host);
    macvlan_then_recorder(
        &w,
        "f",
        json!({"add": {"error": {"code": 11, "msg": "no room for it"}}}),
    );
    let rt = w.runtime(json!({}));
    let sb = w.sandbox("hot", &[]);
    w.add_ok(&rt, &sb);
    w.cluster
        .set_pod_annotation(&w.ns, &sb.pod.name, NETWORKS_ANNOTATION, "f");
    let failed = || {
        events_with(&w, &sb, "HotplugFailed")
            .iter()
            .any(|(t, m)| t == "Warning" && m.contains("no room for it") && m.contains("net1"))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !failed() {
        assert!(
            Instant::now() < deadline,
            "no HotplugFailed event within 30 s; events: {:?}\n{}",
            w.cluster
                .pod_events(&sb.pod.namespace, &sb.pod.name)
                .into_iter()
                .map(|e| (e.reason, e.message))
                .collect::<Vec<_>>(),
            w.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        recorded(&w, "DEL", &sb.cid, "net1"),
        "the rollback's DEL ran\n{}",
        w.log()
    );
    // A later look at the pod (the recheck after its ADD, or another change) may try again and fail again:
    // each attempt ends rolled back, so the pod settles with its cluster network alone.
    wait_until(
        "the pod back to eth0 alone",
        Duration::from_secs(30),
        || sb.netns.link_names() == ["eth0", "lo"] && cached_ifnames(&w, &sb.cid) == ["eth0"],
    );
    let secondary: Vec<_> = w
        .reservations()
        .into_iter()
        .filter(|r| r.network == "f")
        .collect();
    assert!(secondary.is_empty(), "released: {secondary:?}");
    w.assert_status(&sb, &[(CLUSTER_NETWORK, "eth0", true)]);
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}

// === Issue 18, part 2: hot-plug against the runtime's DEL, in one edit, and across a daemon crash ===

/// A world whose daemon hot-plugs (`hotplug: true`).
fn hotplug_world(test: &str) -> World {
    let mut w = world(test);
    let mut config = w.daemon_config();
    config["hotplug"] = json!(true);
    w.restart_daemon(&plexus(), &config, DaemonView::Host);
    w
}

/// The recorder's commands for container `cid` on `ifname`, in the order they ran.
fn commands_for(w: &World, cid: &str, ifname: &str) -> Vec<String> {
    records(w)
        .iter()
        .filter(|r| r["env"]["CNI_CONTAINERID"] == cid && r["env"]["CNI_IFNAME"] == ifname)
        .map(|r| r["command"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Issue 18: one annotation update that removes a network and adds another: the removed one is detached
/// (its address released), the new one attached, the kept one untouched, and the network-status read back
/// from the API lists exactly what the links and the cache have (the write of the whole set loses no entry).
#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn an_add_and_a_remove_in_one_annotation_update_lose_no_entry() {
    let w = hotplug_world("an_add_and_a_remove_in_one_annotation_update_lose_no_entry");
    w.nad("a", &w.macvlan(MACVLAN_SUBNET));
    w.nad(
        "b",
        &w.bridge("e2ehp2", plexus_e2e::harness::world::BRIDGE_SUBNET),
    );
    w.nad("c", &w.macvlan(MACVLAN_SUBNET));
    let rt = w.runtime(json!({}));
    let sb = w.sandbox("both", &[(NETWORKS_ANNOTATION, "a,b@data0")]);
    w.add_ok(&rt, &sb);
    let (a, b, c) = (
        nad_name(&w.ns, "a"),
        nad_name(&w.ns, "b"),
        nad_name(&w.ns, "c"),
    );
    w.assert_status(
        &sb,
        &[
            (CLUSTER_NETWORK, "eth0", true),
            (&a, "net1", false),
            (&b, "data0", false),
        ],
    );

    // `a` out, `c` in, `b` kept: one merge patch.
    w.cluster
        .set_pod_annotation(&w.ns, &sb.pod.name, NETWORKS_ANNOTATION, "b@data0,c");
    let names = |s: &[(String, String)]| s.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    let want_names = vec![CLUSTER_NETWORK.to_string(), b.clone(), c.clone()];
    wait_until(
        "the status names the cluster network, b and c",
        Duration::from_secs(30),
        || names(&status_entries(&w, &sb)) == want_names,
    );
    let status = status_entries(&w, &sb);
    let c_if = status[2].1.clone();
    let mut links = vec!["data0", "eth0", "lo", c_if.as_str()];
    links.sort();
    assert_eq!(sb.netns.link_names(), links, "{status:?}\n{}", w.log());
    assert_eq!(status[1].1, "data0", "{status:?}");
    assert_eq!(
        cached_ifnames(&w, &sb.cid),
        ["eth0", "data0", c_if.as_str()]
    );
    w.assert_status(
        &sb,
        &[
            (CLUSTER_NETWORK, "eth0", true),
            (&b, "data0", false),
            (&c, &c_if, false),
        ],
    );
    let owners = |net: &str| {
        w.reservations()
            .into_iter()
            .filter(|r| r.network == net)
            .count()
    };
    assert_eq!(owners("a"), 0, "a's address is released");
    assert_eq!(owners("c"), 1, "c has one address");
    wait_until("both events", Duration::from_secs(10), || {
        events_with(&w, &sb, "RemovedInterface")
            .iter()
            .any(|(_, m)| m.contains("net1") && m.contains(&a))
            && events_with(&w, &sb, "AddedInterface")
                .iter()
                .any(|(_, m)| m.contains(&c_if) && m.contains(&c))
    });
    // The hot-plug metrics moved: attempts, what they did, and their latency up to the status write.
    let metric = |name: &str| -> f64 {
        let text = w
            .daemon
            .as_ref()
            .and_then(|d| d.get("/metrics"))
            .map(|(_, t)| t)
            .unwrap_or_default();
        text.lines()
            .find(|l| l.split(' ').next() == Some(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    wait_until("the hot-plug metrics", Duration::from_secs(10), || {
        metric("plexus_hotplug_attempts_total{trigger=\"annotation\"}") >= 1.0
            && metric("plexus_hotplugs_total{trigger=\"annotation\",outcome=\"attached\"}") >= 1.0
            && metric("plexus_hotplugs_total{trigger=\"annotation\",outcome=\"detached\"}") >= 1.0
            && metric("plexus_hotplug_duration_seconds_count{trigger=\"annotation\"}") >= 1.0
    });
    assert_eq!(gauge(&w, "plexus_hotplug_queue_depth"), Some(0.0));
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}

/// Issue 18: a hot-plug racing the runtime's DEL of the same sandbox, over several rounds with the DEL a
/// little later each time (the attach's delegate is slowed down, so some DELs land while it runs and wait
/// for the container's lock). The DEL always succeeds, and afterwards nothing of the sandbox is left (links,
/// host-local reservations, cache, records, processes): a hot-plug that got in first is torn down by the
/// DEL, and none starts on the deleted sandbox (the delegate's last call is never an ADD).
#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn a_hot_plug_racing_the_runtimes_del_leaks_nothing() {
    let w = hotplug_world("a_hot_plug_racing_the_runtimes_del_leaks_nothing");
    install_recorder(&w, &plexus());
    w.nad(
        "slow",
        &chain(
            None,
            &front(&w, &w.macvlan(MACVLAN_SUBNET), 300),
            None,
            None,
        ),
    );
    w.nad(
        "fast",
        &w.bridge("e2ehp3", plexus_e2e::harness::world::BRIDGE_SUBNET),
    );
    let rt = w.runtime(json!({}));
    // The daemon takes annotation changes in the order its watch sees them, one at a time: once a change of
    // this pod made after a round's has been carried out, the round's has been too.
    let control = w.sandbox("control", &[]);
    w.add_ok(&rt, &control);
    let mut raced = 0;
    for round in 0..6u64 {
        let sb = w.sandbox(&format!("race{round}"), &[]);
        w.add_ok(&rt, &sb);
        thread::scope(|s| {
            s.spawn(|| {
                w.cluster
                    .set_pod_annotation(&w.ns, &sb.pod.name, NETWORKS_ANNOTATION, "slow")
            });
            thread::sleep(Duration::from_millis(round * 80));
            w.del_ok(&rt, &sb);
        });
        let (networks, want) = if round % 2 == 0 {
            ("fast", vec!["eth0", "lo", "net1"])
        } else {
            ("", vec!["eth0", "lo"])
        };
        w.cluster
            .set_pod_annotation(&w.ns, &control.pod.name, NETWORKS_ANNOTATION, networks);
        wait_until(
            &format!("round {round}: the control pod's change is carried out"),
            Duration::from_secs(30),
            || control.netns.link_names() == want,
        );
        let outlived = outliving(&sb.cid);
        assert_no_leak_of(&w, &sb);
        assert_eq!(
            outlived,
            Vec::<String>::new(),
            "round {round}: outlived the DEL"
        );
        let calls = commands_for(&w, &sb.cid, "net1");
        assert_ne!(
            calls.last().map(String::as_str),
            Some("ADD"),
            "round {round}: net1 was attached after the DEL: {calls:?}\n{}",
            w.log()
        );
        eprintln!(
            "round {round}: the delegate saw {calls:?}; HotplugFailed: {:?}",
            events_with(&w, &sb, "HotplugFailed")
        );
        if calls == ["ADD", "DEL"] {
            raced += 1;
        }
    }
    // Some hot-plug got in before its DEL (and was torn down by it): the rounds did race.
    assert!(raced > 0, "no hot-plug ran before its sandbox's DEL");
    w.cluster
        .set_pod_annotation(&w.ns, &control.pod.name, NETWORKS_ANNOTATION, "");
    w.del_ok(&rt, &control);
    w.assert_clean(&control);
}

/// Issue 18: the daemon SIGKILLed while a hot-plug's delegate runs, then started again. The orphaned
/// delegate finishes its ADD (it holds the container's lock until it exits); the new daemon, once its pod
/// watch has listed, looks at every sandbox of the node: the attach it finds cut short (a cache entry
/// without a result record) is undone and done again, and a second pod whose annotation changed while the
/// daemon was down gets its network. Each ends with the network attached once, and the links, the
/// network-status read back from the API and the cache agree; the runtime's DEL then leaves nothing.
#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn a_daemon_killed_during_a_hot_plug_converges_after_its_restart() {
    let test = "a_daemon_killed_during_a_hot_plug_converges_after_its_restart";
    let mut w = hotplug_world(test);
    install_recorder(&w, &plexus());
    w.nad(
        "slow",
        &chain(
            None,
            &front(&w, &w.macvlan(MACVLAN_SUBNET), 2_000),
            None,
            None,
        ),
    );
    let rt = w.runtime(json!({}));
    let cut = w.sandbox("cut", &[]);
    let missed = w.sandbox("missed", &[]);
    w.add_ok(&rt, &cut);
    w.add_ok(&rt, &missed);
    let mut config = w.daemon_config();
    config["hotplug"] = json!(true);

    w.cluster
        .set_pod_annotation(&w.ns, &cut.pod.name, NETWORKS_ANNOTATION, "slow");
    wait_until(
        "the hot-plug's delegate runs",
        Duration::from_secs(30),
        || !recorders_for(&cut.cid).is_empty(),
    );
    // The kill lands while the hot-plug's delegate sleeps: the undo (DEL) checked below shows it.
    w.daemon.as_mut().unwrap().kill();
    // While the daemon is down: the other pod's annotation changes.
    w.cluster
        .set_pod_annotation(&w.ns, &missed.pod.name, NETWORKS_ANNOTATION, "slow");
    w.restart_daemon(&plexus(), &config, DaemonView::Host);

    let slow = nad_name(&w.ns, "slow");
    for sb in [&cut, &missed] {
        let want_status = vec![
            (CLUSTER_NETWORK.to_string(), "eth0".to_string()),
            (slow.clone(), "net1".to_string()),
        ];
        let state = || {
            (
                sb.netns.link_names(),
                status_entries(&w, sb),
                cached_ifnames(&w, &sb.cid),
                recorders_for(&sb.cid),
            )
        };
        let limit = Instant::now() + Duration::from_secs(60);
        while state()
            != (
                vec!["eth0".into(), "lo".into(), "net1".into()],
                want_status.clone(),
                vec!["eth0".into(), "net1".into()],
                vec![],
            )
        {
            assert!(
                Instant::now() < limit,
                "{}: links, network-status and cache do not agree within 60s: {:?}\n{}\ndaemon log:\n{}",
                sb.pod.name,
                state(),
                w.log(),
                std::fs::read_to_string(w.daemon_log_file()).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(100));
        }
        w.assert_status(
            sb,
            &[(CLUSTER_NETWORK, "eth0", true), (&slow, "net1", false)],
        );
        let mine: Vec<_> = w
            .reservations()
            .into_iter()
            .filter(|r| r.network == "slow" && r.owner == sb.cid)
            .collect();
        assert_eq!(mine.len(), 1, "{}: one address: {mine:?}", sb.pod.name);
    }
    let calls = commands_for(&w, &cut.cid, "net1");
    eprintln!("{test}: the cut pod's delegate saw {calls:?}");
    // The killed ADD is recorded only if it got that far before the kill; the undo (DEL) and the new
    // ADD after it always are.
    assert!(
        calls.ends_with(&["DEL".to_string(), "ADD".to_string()]),
        "the cut attach was undone and done again: {calls:?}\n{}",
        w.log()
    );
    for sb in [&cut, &missed] {
        w.del_ok(&rt, sb);
        assert_no_leak_of(&w, sb);
    }
    assert_no_leak(&w, &cut);
}

/// A refusal that stands is posted once per sandbox and annotation, a daemon restart included: the
/// restarted daemon's look at every sandbox finds the pod's changed attachment refused as before, and posts
/// nothing. An edit of the annotation after that look that is refused the same way, word for word, is
/// answered: posted again. A different refusal made after that is posted (so its event, when it arrives,
/// comes after anything the restart's look posted). The runtime's DEL leaves no record of what was posted.
#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn a_standing_refusal_is_not_posted_again_when_the_daemon_restarts() {
    let test = "a_standing_refusal_is_not_posted_again_when_the_daemon_restarts";
    let mut w = hotplug_world(test);
    w.nad("a", &w.macvlan(MACVLAN_SUBNET));
    let rt = w.runtime(json!({}));
    let sb = w.sandbox("kept", &[(NETWORKS_ANNOTATION, "a")]);
    w.add_ok(&rt, &sb);
    let refused = |w: &World, what: &str| -> usize {
        events_with(w, &sb, "HotplugFailed")
            .iter()
            .filter(|(t, m)| t == "Warning" && m.contains(what))
            .count()
    };
    const MAC: &str = "its requests";
    const ARGS: &str = "its cni-args";
    w.cluster.set_pod_annotation(
        &w.ns,
        &sb.pod.name,
        NETWORKS_ANNOTATION,
        r#"[{"name":"a","mac":"02:00:00:00:00:aa"}]"#,
    );
    wait_until("the refusal's event", Duration::from_secs(30), || {
        refused(&w, MAC) > 0
    });

    let mut config = w.daemon_config();
    config["hotplug"] = json!(true);
    w.restart_daemon(&plexus(), &config, DaemonView::Host);
    // The restarted daemon's look at the sandbox is over (it counted the refusal) ...
    wait_until("the start-up look", Duration::from_secs(30), || {
        gauge(
            &w,
            "plexus_hotplugs_total{trigger=\"startup\",outcome=\"failed\"}",
        )
        .is_some_and(|n| n >= 1.0)
    });
    // ... an edit refused for the same reason is answered ...
    w.cluster.set_pod_annotation(
        &w.ns,
        &sb.pod.name,
        NETWORKS_ANNOTATION,
        r#"[{"mac":"02:00:00:00:00:aa","name":"a"}]"#,
    );
    wait_until("the edit's event", Duration::from_secs(30), || {
        refused(&w, MAC) > 1
    });
    // ... and a refusal made after it is posted.
    w.cluster.set_pod_annotation(
        &w.ns,
        &sb.pod.name,
        NETWORKS_ANNOTATION,
        r#"[{"name":"a","cni-args":{"x":"1"}}]"#,
    );
    wait_until("the new refusal's event", Duration::from_secs(30), || {
        refused(&w, ARGS) > 0
    });
    assert_eq!(
        refused(&w, MAC),
        2,
        "the standing refusal was posted once for each annotation: {:?}\ndaemon log:\n{}",
        events_with(&w, &sb, "HotplugFailed"),
        std::fs::read_to_string(w.daemon_log_file()).unwrap_or_default()
    );
    assert_eq!(refused(&w, ARGS), 1);
    assert!(
        w.cni_dir().join(".refusals").join(&sb.cid).is_file(),
        "what stands is recorded"
    );
    assert_eq!(sb.netns.link_names(), ["eth0", "lo", "net1"]);
    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}

// === Issue 18, part 2a: Go Multus's /delegate endpoint ===

/// multus-dynamic-networks-controller's `/delegate` body for `command` of interface `ifname` of `sb`'s
/// sandbox (container `cid`; the three given together): the env Go's client sends, one network config (base64), the attributes.
fn delegate_request(
    w: &World,
    rt: &CniRuntime,
    sb: &Sandbox,
    (cid, command, ifname): (&str, &str, &str),
    config: &Value,
    attributes: Value,
) -> Vec<u8> {
    let mut req: Value = serde_json::from_slice(&go_request(w, rt, sb, command, config)).unwrap();
    let env = req["env"].as_object_mut().unwrap();
    env.insert("CNI_CONTAINERID".into(), json!(cid));
    env.insert("CNI_IFNAME".into(), json!(ifname));
    // multus-dynamic-networks-controller sets no PATH.
    env.remove("PATH");
    req["interfaceAttributes"] = attributes;
    serde_json::to_vec(&req).unwrap()
}

/// Issue 18: a Go-format `/delegate` ADD attaches one network to a running sandbox (the link in its
/// namespace, an entry in its cache, `{"Result": …}` in CNI 1.0.0, no network-status written: the
/// controller writes it); CHECK finds it; DEL detaches it. A call for a container plexus has no cache of is
/// refused (code 3, naming the pod and the container). An attachment made by `/delegate` is torn down by
/// the runtime's DEL too. The hot-plug metrics count the calls.
#[test]
#[ignore = "needs root: creates network namespaces and runs Debian's CNI plugins"]
fn a_go_delegate_request_hot_plugs_one_interface() {
    let test = "a_go_delegate_request_hot_plugs_one_interface";
    let w = world(test);
    let rt = w.runtime(json!({}));
    let sb = w.sandbox("dyn", &[]);
    w.add_ok(&rt, &sb);
    let go_socket = w.socket_dir().join("multus.sock");
    let mut net = w.macvlan(MACVLAN_SUBNET);
    net["name"] = json!("dynamic");
    let attrs = json!({"cni-args": {"from": "controller"}});

    let (code, body) = go_post(
        &go_socket,
        "/delegate",
        &delegate_request(&w, &rt, &sb, (&sb.cid, "ADD", "dyn1"), &net, attrs.clone()),
    );
    assert_eq!(code, 200, "{}\n{}", String::from_utf8_lossy(&body), w.log());
    let reply: Value = serde_json::from_slice(&body).expect("a JSON body");
    let result = &reply["Result"];
    assert_eq!(result["cniVersion"], "1.0.0", "{reply:#}");
    assert!(
        result["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "dyn1" && i.get("sandbox").is_some()),
        "{reply:#}"
    );
    let mut links = sb.netns.link_names();
    links.sort();
    assert_eq!(links, ["dyn1", "eth0", "lo"]);
    assert_eq!(cached_ifnames(&w, &sb.cid), ["eth0", "dyn1"]);
    // The delegate got the caller's cni-args.
    let record = plexus::store::resultcache::read(&w.cni_dir(), "dynamic", &sb.cid, "dyn1")
        .unwrap()
        .expect("the attachment's result record");
    let config: Value = serde_json::from_slice(&record.config).unwrap();
    assert_eq!(config["args"]["cni"]["from"], "controller", "{config:#}");
    // No network-status from plexus for it: only the sandbox's own network.
    assert_eq!(
        status_entries(&w, &sb),
        [(CLUSTER_NETWORK.to_string(), "eth0".to_string())]
    );

    // CHECK finds it; a second ADD on the same interface is refused.
    let (code, body) = go_post(
        &go_socket,
        "/delegate",
        &delegate_request(&w, &rt, &sb, (&sb.cid, "CHECK", "dyn1"), &net, Value::Null),
    );
    assert_eq!(
        (code, body.len()),
        (200, 0),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (code, body) = go_post(
        &go_socket,
        "/delegate",
        &delegate_request(&w, &rt, &sb, (&sb.cid, "ADD", "dyn1"), &net, Value::Null),
    );
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));

    // DEL: 200 and an empty body, the link and the cache entry gone.
    let (code, body) = go_post(
        &go_socket,
        "/delegate",
        &delegate_request(&w, &rt, &sb, (&sb.cid, "DEL", "dyn1"), &net, Value::Null),
    );
    assert_eq!(
        (code, body.len()),
        (200, 0),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(sb.netns.link_names(), ["eth0", "lo"]);
    assert_eq!(cached_ifnames(&w, &sb.cid), ["eth0"]);

    // A container plexus has no cache of: refused, naming the pod and the container.
    let (code, body) = go_post(
        &go_socket,
        "/delegate",
        &delegate_request(
            &w,
            &rt,
            &sb,
            ("no-such-sandbox", "ADD", "dyn2"),
            &net,
            attrs.clone(),
        ),
    );
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    let e = ErrorReply::parse(&body).expect("a CNI error reply");
    assert!(
        e.code == 3 && e.msg.contains(&sb.pod.name) && e.msg.contains("no-such-sandbox"),
        "{e:?}"
    );

    // Attached again, then the runtime's DEL: it tears the /delegate attachment down too.
    let (code, body) = go_post(
        &go_socket,
        "/delegate",
        &delegate_request(&w, &rt, &sb, (&sb.cid, "ADD", "dyn2"), &net, attrs),
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert!(sb.netns.link_names().contains(&"dyn2".to_string()));

    // The hot-plug metrics: the calls counted by outcome, their latency, the queue's depth.
    let (_, text) = w.daemon.as_ref().unwrap().get("/metrics").unwrap();
    for needle in [
        "plexus_hotplug_attempts_total{trigger=\"delegate\"} 6",
        "plexus_hotplugs_total{trigger=\"delegate\",outcome=\"attached\"} 2",
        "plexus_hotplugs_total{trigger=\"delegate\",outcome=\"detached\"} 1",
        "plexus_hotplugs_total{trigger=\"delegate\",outcome=\"failed\"} 2",
        "plexus_hotplug_duration_seconds_count{trigger=\"delegate\"} 6",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert_eq!(gauge(&w, "plexus_hotplug_queue_depth"), Some(0.0));

    w.del_ok(&rt, &sb);
    w.assert_clean(&sb);
}
