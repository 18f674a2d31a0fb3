//! Operation tests over the fakes: ordering, interfaces, rollback, teardown from cache or fallback, CHECK,
//! STATUS, GC, and the cluster seam.

use std::{cell::RefCell, fs, path::Path};

use serde_json::{Value, json};

use super::*;
use crate::{
    pure::annotations,
    seams::{
        cluster::ClusterError, devices::kubelet::NoKubelet, k8s::memory::MemoryApi,
        testing::TestHost,
    },
    store::{cache, lock, resultcache},
};

/// No Kubernetes.
const NO_CLUSTER: Option<&dyn Cluster> = None;

/// Where a daemon-mode run of the tests puts the work it left for after the reply ([`Done::after_reply`]).
type Later = std::cell::RefCell<Option<AfterReply>>;

/// The fakes, and the Warning events (reason, message) the last run collected.
struct World(TestHost, RefCell<Vec<(String, String)>>);

impl std::ops::Deref for World {
    type Target = TestHost;
    fn deref(&self) -> &TestHost {
        &self.0
    }
}

impl World {
    fn new() -> World {
        World(TestHost::new(), RefCell::new(Vec::new()))
    }

    /// The Warning events of the last run.
    fn warnings(&self) -> Vec<(String, String)> {
        self.1.borrow().clone()
    }

    fn conf_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("conf")
    }

    fn config(&self, extra: Value) -> Config {
        let mut v = json!({
            "cniVersion": "1.0.0", "name": "plexus-net", "type": "plexus",
            "cniDir": self.cni_dir(), "confDir": self.conf_dir(), "binDir": "/opt/cni/bin",
            "delegates": [
                {"cniVersion": "1.0.0", "name": "cluster", "type": "bridge"},
                {"cniVersion": "1.0.0", "name": "second", "plugins": [{"type": "macvlan"}, {"type": "tuning"}]},
                {"cniVersion": "0.4.0", "name": "third", "type": "ptp"}
            ]
        });
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        Config::from_bytes(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    fn run(
        &self,
        command: &str,
        config: &Config,
        cluster: Option<&dyn Cluster>,
    ) -> Result<Vec<u8>, Error> {
        self.run_cid(command, "c1", config, cluster)
    }

    fn run_cid(
        &self,
        command: &str,
        cid: &str,
        config: &Config,
        cluster: Option<&dyn Cluster>,
    ) -> Result<Vec<u8>, Error> {
        self.run_with(command, cid, config, cluster, None)
    }

    /// As the daemon runs it (`later` given): the work left for after the reply goes to `later`.
    fn run_with(
        &self,
        command: &str,
        cid: &str,
        config: &Config,
        cluster: Option<&dyn Cluster>,
        later: Option<&Later>,
    ) -> Result<Vec<u8>, Error> {
        let done = self.run_done(command, cid, config, cluster, later.is_some())?;
        if let Some(later) = later {
            *later.borrow_mut() = done.after_reply;
        }
        Ok(done.reply.to_stdout())
    }

    /// Run `command` on container `cid` of pod `ns1/pod1`: what the operation hands its edge.
    fn run_done(
        &self,
        command: &str,
        cid: &str,
        config: &Config,
        cluster: Option<&dyn Cluster>,
        defer_work: bool,
    ) -> Result<Done, Error> {
        let env = CniEnv::from_vars([
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", "/run/netns/test-pod"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod1;K8S_POD_UID=u1",
            ),
        ])
        .unwrap()
        .unwrap();
        let out = run(&env, config, &self.seams(cluster, defer_work));
        *self.1.borrow_mut() = out
            .events
            .iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .map(|e| {
                let s = |v: &Option<String>| v.clone().unwrap_or_default();
                (s(&e.reason), s(&e.message))
            })
            .collect();
        out.result
    }

    /// This world's fake processes and netns, `cluster`, no kubelet; `defer_work` as the daemon's.
    fn seams<'a>(&'a self, cluster: Option<&'a dyn Cluster>, defer_work: bool) -> Seams<'a> {
        Seams {
            exec: &self.exec,
            netns: &self.netns,
            cluster,
            kubelet: &NoKubelet,
            defer_work,
        }
    }

    fn calls(&self) -> Vec<(String, String, String)> {
        self.exec
            .calls()
            .iter()
            .map(|c| {
                (
                    c.command().to_string(),
                    c.network().to_string(),
                    c.ifname().to_string(),
                )
            })
            .collect()
    }

    fn nothing_left(&self, cid: &str) {
        assert!(
            !cache::path(&self.cni_dir(), cid).exists(),
            "cache left behind"
        );
        assert!(
            resultcache::list(&self.cni_dir(), Some(cid)).is_empty(),
            "result cache left behind"
        );
        assert!(
            !lock::lock_dir(&self.cni_dir()).join(cid).exists(),
            "lock file left behind"
        );
    }
}

fn t(c: &str, n: &str, i: &str) -> (String, String, String) {
    (c.to_string(), n.to_string(), i.to_string())
}

/// The DELs of the test config's networks, in reverse (`second` is a list of two plugins).
fn reverse_teardown() -> Vec<(String, String, String)> {
    vec![
        t("DEL", "third", "net2"),
        t("DEL", "second", "net1"),
        t("DEL", "second", "net1"),
        t("DEL", "cluster", "eth0"),
    ]
}

#[test]
fn add_runs_in_order_and_returns_the_cluster_result_in_the_config_version() {
    let w = World::new();
    let cfg = w.config(json!({"cniVersion": "0.3.1"}));
    let out = w.run("ADD", &cfg, NO_CLUSTER).unwrap();
    assert_eq!(
        w.calls(),
        [
            t("ADD", "cluster", "eth0"),
            t("ADD", "second", "net1"),
            t("ADD", "second", "net1"),
            t("ADD", "third", "net2")
        ]
    );
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["cniVersion"], "0.3.1");
    assert_eq!(v["interfaces"][0]["name"], "eth0");
    assert_eq!(v["ips"][0]["version"], "4", "0.3.1 shape");
    assert!(cache::path(&w.cni_dir(), "c1").exists());
    assert_eq!(resultcache::list(&w.cni_dir(), Some("c1")).len(), 3);
}

#[test]
fn delegate_args_and_runtime_config_npwg_66() {
    let w = World::new();
    let cfg = w.config(json!({
        "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
        "delegates": [
            {"cniVersion": "1.0.0", "name": "cluster", "type": "bridge", "capabilities": {"portMappings": true}},
            {"cniVersion": "1.0.0", "name": "second", "type": "portmap", "capabilities": {"portMappings": true}}
        ]
    }));
    w.run("ADD", &cfg, NO_CLUSTER).unwrap();
    let calls = w.exec.calls();
    assert_eq!(
        calls[0].stdin["runtimeConfig"]["portMappings"][0]["hostPort"],
        8080
    );
    assert!(
        calls[1].stdin.get("runtimeConfig").is_none(),
        "the runtime's runtimeConfig is for the cluster network only"
    );
    assert_eq!(
        calls[0].env("CNI_ARGS"),
        Some("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod1;K8S_POD_UID=u1")
    );
    assert_eq!(calls[0].env("CNI_PATH"), Some("/opt/cni/bin:/usr/lib/cni"));
}

#[test]
fn rollback_at_each_position_leaves_nothing() {
    for (pos, failing) in ["cluster", "second", "third"].iter().enumerate() {
        let w = World::new();
        let cfg = w.config(json!({}));
        w.exec.fail(failing, "ADD", 7, "injected");
        let err = w.run("ADD", &cfg, NO_CLUSTER).unwrap_err();
        assert_eq!(err.cni_code(), 7, "position {pos}");
        assert!(
            err.to_string()
                .contains(&format!("[ns1/pod1/u1:{failing}]")),
            "{err}"
        );
        let dels: Vec<_> = w.calls().into_iter().filter(|c| c.0 == "DEL").collect();
        // Networks that ran, in reverse, each DEL once per plugin ("second" is a two-plugin conflist).
        let expected: Vec<_> = [
            ("cluster", "eth0", 1),
            ("second", "net1", 2),
            ("third", "net2", 1),
        ][..=pos]
            .iter()
            .rev()
            .flat_map(|(n, i, plugins)| std::iter::repeat_n(t("DEL", n, i), *plugins))
            .collect();
        assert_eq!(
            dels, expected,
            "position {pos}: reverse DEL of everything that ran, including the failed one"
        );
        let adds_after = w
            .calls()
            .iter()
            .filter(|c| c.0 == "ADD")
            .map(|c| c.1.clone())
            .collect::<Vec<_>>();
        assert!(
            !adds_after
                .iter()
                .any(|n| ["cluster", "second", "third"][pos + 1..].contains(&n.as_str())),
            "position {pos}: nothing after the failure ran"
        );
        w.nothing_left("c1");
    }
}

#[test]
fn a_cache_that_cannot_be_written_fails_add_before_any_delegate_and_leaves_nothing() {
    // Issue 6 (full or read-only cniDir): the cache write comes before the first delegate, so its failure
    // is an I/O error (code 5) with nothing attached and nothing left, not even the lock file.
    let w = World::new();
    let cfg = w.config(json!({}));
    // A directory where the cache's temp file goes makes the atomic write fail, as ENOSPC or EROFS would.
    let tmp = w.cni_dir().join(format!(".c1.tmp.{}", std::process::id()));
    fs::create_dir_all(&tmp).unwrap();
    let err = w.run("ADD", &cfg, NO_CLUSTER).unwrap_err();
    assert_eq!(err.cni_code(), 5, "{err}");
    assert!(err.to_string().contains("ns1/pod1"), "names the pod: {err}");
    assert_eq!(w.calls(), vec![], "no delegate ran");
    w.nothing_left("c1");
    fs::remove_dir(&tmp).unwrap();
}

#[test]
fn del_removes_temp_files_of_writes_a_killed_plexus_interrupted() {
    // Issue 6 (SIGKILL during ADD): a plexus killed between writing a temp file and renaming it leaves
    // `.<name>.tmp.<pid>`; the container's DEL removes its own, and only its own.
    let w = World::new();
    let cfg = w.config(json!({}));
    w.run("ADD", &cfg, NO_CLUSTER).unwrap();
    let results = w.cni_dir().join("results");
    let mine = [
        w.cni_dir().join(".c1.tmp.4242"),
        results.join(".cluster-c1-eth0.tmp.4242"),
    ];
    let others = [
        w.cni_dir().join(".c10.tmp.4242"),
        w.cni_dir().join("c1.tmp.1"),
        results.join(".cluster-c10-eth0.tmp.4242"),
        results.join(".cluster-c1-eth0.tmp.x"),
    ];
    for p in mine.iter().chain(&others) {
        fs::write(p, b"{\"partial").unwrap();
    }
    w.run("DEL", &cfg, NO_CLUSTER).unwrap();
    for p in &mine {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    for p in &others {
        assert!(p.exists(), "{} is not c1's interrupted write", p.display());
    }
    w.nothing_left("c1");
}

/// A plexus killed after staging the container's cache (written whole into its temp file) and before the
/// write-behind renamed it into place, while the first delegates ran: the runtime's DEL finds the temp
/// file, tears every attachment down from it in reverse, and leaves nothing.
#[test]
fn del_tears_down_from_the_staged_cache_of_a_killed_add() {
    let w = World::new();
    let cfg = w.config(json!({}));
    w.run("ADD", &cfg, NO_CLUSTER).unwrap();
    let cache_file = cache::path(&w.cni_dir(), "c1");
    fs::rename(&cache_file, w.cni_dir().join(".c1.tmp.4242")).unwrap();
    w.exec.clear();
    w.run("DEL", &cfg, NO_CLUSTER).unwrap();
    assert_eq!(w.calls(), reverse_teardown());
    w.nothing_left("c1");
    assert!(
        fs::read_dir(w.cni_dir()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".tmp.")),
        "the temp file is gone"
    );
}

/// Daemon mode: ADD answers before its durable writes (the cache's fsync and rename, the result records);
/// the container's lock is held until they end (after the reply), so a DEL or CHECK of the container never
/// reads a record that is not in place yet, and a daemon killed before them leaves the staged cache.
#[test]
fn a_daemon_add_ends_its_durable_writes_after_the_reply_under_the_lock() {
    let w = World::new();
    let cfg = w.config(json!({}));
    let later = Later::default();
    w.run_with("ADD", "c1", &cfg, NO_CLUSTER, Some(&later))
        .unwrap();
    let finish = later.take().expect("work left for after the reply");
    let locked = lock::ContainerLock::acquire(&w.cni_dir(), "c1", Duration::from_millis(50));
    assert!(locked.is_err(), "the container's lock is still held");
    // Nothing durable yet but the staged cache, which DEL would read if the daemon died now.
    assert!(!cache::path(&w.cni_dir(), "c1").exists());
    assert!(resultcache::list(&w.cni_dir(), Some("c1")).is_empty());
    match cache::read(&w.cni_dir(), "c1").unwrap() {
        cache::ReadOutcome::Found(d) => assert_eq!(d.len(), 3),
        other => panic!("the staged cache should be read: {other:?}"),
    }
    finish();
    drop(lock::ContainerLock::acquire(&w.cni_dir(), "c1", Duration::from_millis(50)).unwrap());
    assert!(cache::path(&w.cni_dir(), "c1").exists());
    assert_eq!(resultcache::list(&w.cni_dir(), Some("c1")).len(), 3);
    w.run("DEL", &cfg, NO_CLUSTER).unwrap();
    w.nothing_left("c1");
    // The thin binary's ADD ends them before it answers: the lock is free and the records in place.
    w.run_with("ADD", "c2", &cfg, NO_CLUSTER, None).unwrap();
    drop(lock::ContainerLock::acquire(&w.cni_dir(), "c2", Duration::from_millis(50)).unwrap());
    assert_eq!(resultcache::list(&w.cni_dir(), Some("c2")).len(), 3);
}

/// The files under `cniDir/.trash`.
fn trash_files(w: &World) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(crate::store::trash::dir(&w.cni_dir()))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Daemon mode: DEL answers before its unlinks (each may wait on the disk). Before it answers, the
/// container's files have left their places (moved into the trash: nothing finds them any more, and the
/// lock is free for the next ADD); the work it leaves for after the reply unlinks them.
#[test]
fn a_daemon_del_answers_before_its_unlinks_and_its_files_are_out_of_reach_already() {
    let w = World::new();
    let cfg = w.config(json!({}));
    w.run("ADD", &cfg, NO_CLUSTER).unwrap();
    w.exec.clear();
    let later = Later::default();
    w.run_with("DEL", "c1", &cfg, NO_CLUSTER, Some(&later))
        .unwrap();
    assert_eq!(w.calls(), reverse_teardown());
    let unlink = later
        .take()
        .expect("DEL leaves its unlinks for after the reply");
    // Answered: nothing of the container is where DEL, GC or a new ADD would look, the lock is free.
    w.nothing_left("c1");
    drop(lock::ContainerLock::acquire(&w.cni_dir(), "c1", Duration::ZERO).unwrap());
    // The cache and the three result records wait in the trash.
    let held = trash_files(&w);
    assert_eq!(held.len(), 4, "{held:?}");
    assert!(held.iter().all(|n| n.contains("c1")), "{held:?}");
    unlink();
    assert_eq!(trash_files(&w), Vec::<String>::new());
    // The thin binary unlinks before it answers, as always: nothing in the trash, nothing left for later.
    w.run("ADD", &cfg, NO_CLUSTER).unwrap();
    w.run("DEL", &cfg, NO_CLUSTER).unwrap();
    w.nothing_left("c1");
    assert_eq!(trash_files(&w), Vec::<String>::new());
}

/// A daemon killed after a DEL's reply and before its unlinks leaves only its trash: the container is
/// gone for every reader, and the next DEL (daemon or thin), GC or daemon start empties it.
#[test]
fn what_a_daemon_killed_after_a_dels_reply_leaves_is_finished_by_the_next_del_gc_or_start() {
    let w = World::new();
    let cfg = w.config(json!({}));
    let killed_after_del = |cid: &str| {
        w.run_cid("ADD", cid, &cfg, NO_CLUSTER).unwrap();
        let later = Later::default();
        w.run_with("DEL", cid, &cfg, NO_CLUSTER, Some(&later))
            .unwrap();
        // The process dies: its after-reply work never runs, nor any destructor (a job merely dropped
        // unlinks its trash's files).
        std::mem::forget(later.take());
        w.nothing_left(cid);
        assert_eq!(trash_files(&w).len(), 4);
    };
    // The thin binary's DEL of another container.
    killed_after_del("c1");
    w.run_cid("ADD", "c2", &cfg, NO_CLUSTER).unwrap();
    w.run_cid("DEL", "c2", &cfg, NO_CLUSTER).unwrap();
    assert_eq!(trash_files(&w), Vec::<String>::new());
    // The next daemon DEL's work after its reply.
    killed_after_del("c3");
    w.run_cid("ADD", "c4", &cfg, NO_CLUSTER).unwrap();
    let later = Later::default();
    w.run_with("DEL", "c4", &cfg, NO_CLUSTER, Some(&later))
        .unwrap();
    assert_eq!(trash_files(&w).len(), 8);
    later.take().unwrap()();
    assert_eq!(trash_files(&w), Vec::<String>::new());
    // GC.
    killed_after_del("c5");
    let mut gc = w.config(json!({"cniVersion": "1.1.0"}));
    gc.valid_attachments = Some(Vec::new());
    let env = CniEnv::from_vars([("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")])
        .unwrap()
        .unwrap();
    let seams = w.seams(NO_CLUSTER, false);
    execute(&env, &gc, &seams).unwrap();
    assert_eq!(trash_files(&w), Vec::<String>::new());
    // A daemon's start (what it runs on its after-reply thread).
    killed_after_del("c6");
    assert_eq!(crate::store::trash::sweep(&w.cni_dir()), 4);
    assert_eq!(trash_files(&w), Vec::<String>::new());

    // A new daemon's first DEL in a cniDir empties it even with nothing of its own to move (here: a
    // container it never saw); later ones with nothing to move leave no work.
    let w = World::new();
    let cfg = w.config(json!({}));
    fs::create_dir_all(crate::store::trash::dir(&w.cni_dir())).unwrap();
    fs::write(crate::store::trash::dir(&w.cni_dir()).join("c1.1-1"), b"x").unwrap();
    let later = Later::default();
    w.run_with("DEL", "never-added", &cfg, NO_CLUSTER, Some(&later))
        .unwrap();
    later.take().expect("the first DEL sweeps the trash")();
    assert_eq!(trash_files(&w), Vec::<String>::new());
    let later = Later::default();
    w.run_with("DEL", "never-added", &cfg, NO_CLUSTER, Some(&later))
        .unwrap();
    assert!(later.borrow().is_none(), "nothing to do after this one");
}

/// Daemon mode: a DEL right after its container's ADD, whose durable writes still wait for the
/// after-reply thread (behind other requests' work), does not wait for them: it takes them over with the
/// ADD's lock, writes them without fsync (their files go with this DEL), and every delegate still gets its
/// prevResult. The ADD's job, run later, then has nothing left to write.
#[test]
fn a_del_right_after_its_add_takes_over_the_adds_queued_writes_instead_of_waiting() {
    let w = World::new();
    let cfg = w.config(json!({"lockTimeoutSeconds": 1}));
    let add_later = Later::default();
    w.run_with("ADD", "c1", &cfg, NO_CLUSTER, Some(&add_later))
        .unwrap();
    let add_job = add_later.take().expect("ADD's writes");
    w.exec.clear();
    let del_later = Later::default();
    let started = std::time::Instant::now();
    w.run_with("DEL", "c1", &cfg, NO_CLUSTER, Some(&del_later))
        .expect("DEL does not wait for the ADD's writes (nor time out on its lock)");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "DEL waited {:?}",
        started.elapsed()
    );
    assert_eq!(w.calls(), reverse_teardown());
    assert!(
        w.exec
            .calls()
            .iter()
            .all(|c| c.stdin.get("prevResult").is_some()),
        "every delegate's DEL got its ADD's result: {:?}",
        w.exec.calls()
    );
    w.nothing_left("c1");
    // The records and the cache went to the trash with the DEL; the ADD's job writes nothing now.
    add_job();
    w.nothing_left("c1");
    del_later.take().unwrap()();
    assert_eq!(trash_files(&w), Vec::<String>::new());
    assert!(
        fs::read_dir(w.cni_dir())
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().contains("c1")),
        "no temp file either"
    );
    // Once the ADD's job has started (here: ended), a DEL takes the lock as usual and reads the records.
    let add_later = Later::default();
    w.run_with("ADD", "c2", &cfg, NO_CLUSTER, Some(&add_later))
        .unwrap();
    add_later.take().unwrap()();
    w.exec.clear();
    w.run_with("DEL", "c2", &cfg, NO_CLUSTER, None).unwrap();
    assert!(
        w.exec
            .calls()
            .iter()
            .all(|c| c.stdin.get("prevResult").is_some())
    );
    w.nothing_left("c2");
}

/// An ADD's after-reply job that is dropped without running (its daemon could not queue it) still ends
/// its writes and frees the lock: a lock held forever would block the container's DEL.
#[test]
fn an_adds_after_reply_job_dropped_unrun_still_writes_and_frees_the_lock() {
    let w = World::new();
    let cfg = w.config(json!({}));
    let later = Later::default();
    w.run_with("ADD", "c1", &cfg, NO_CLUSTER, Some(&later))
        .unwrap();
    drop(later.take());
    drop(lock::ContainerLock::acquire(&w.cni_dir(), "c1", Duration::ZERO).unwrap());
    assert!(cache::path(&w.cni_dir(), "c1").exists());
    assert_eq!(resultcache::list(&w.cni_dir(), Some("c1")).len(), 3);
}

#[test]
fn failed_rollback_keeps_the_cache_and_reports_both() {
    let w = World::new();
    let cfg = w.config(json!({}));
    w.exec.fail("third", "ADD", 7, "add failed");
    w.exec.fail("cluster", "DEL", 11, "del failed");
    let err = w.run("ADD", &cfg, NO_CLUSTER).unwrap_err();
    assert_eq!(err.cni_code(), 7);
    let m = err.to_string();
    assert!(
        m.contains("add failed") && m.contains("del failed") && m.contains("rollback left 1"),
        "{m}"
    );
    assert!(
        cache::path(&w.cni_dir(), "c1").exists(),
        "kept so the runtime's DEL can retry"
    );
}

/// A link dump that fails stops the ADD before any delegate, naming the first network: code 4, nothing left.
#[test]
fn a_failed_link_dump_fails_the_add_before_any_delegate() {
    let w = World::new();
    w.netns
        .dump_fails
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let cfg = w.config(json!({}));
    let err = w.run("ADD", &cfg, NO_CLUSTER).unwrap_err();
    assert_eq!(err.cni_code(), 4);
    let msg = err.to_string();
    assert!(
        msg.contains("scripted dump failure") && msg.contains("cluster"),
        "{msg}"
    );
    assert!(w.calls().is_empty(), "no delegate ran: {:?}", w.calls());
    w.nothing_left("c1");
}

#[test]
fn existing_interface_fails_that_attachment_code_102() {
    let w = World::new();
    w.netns.existing.lock().unwrap().insert("net2".into());
    let cfg = w.config(json!({}));
    let err = w.run("ADD", &cfg, NO_CLUSTER).unwrap_err();
    assert_eq!(err.cni_code(), 102);
    assert!(
        !w.calls().contains(&t("ADD", "third", "net2")),
        "the colliding delegate never runs"
    );
    assert!(w.calls().contains(&t("DEL", "cluster", "eth0")));
    w.nothing_left("c1");
}

#[test]
fn del_reverses_removes_everything_and_is_idempotent() {
    let w = World::new();
    let cfg = w.config(json!({}));
    w.run("ADD", &cfg, NO_CLUSTER).unwrap();
    w.exec.clear();
    w.run("DEL", &cfg, NO_CLUSTER).unwrap();
    assert_eq!(w.calls(), reverse_teardown());
    w.nothing_left("c1");
    w.run("DEL", &cfg, NO_CLUSTER).unwrap();
}

#[test]
fn del_tries_every_delegate_and_aggregates() {
    let w = World::new();
    let cfg = w.config(json!({}));
    w.run("ADD", &cfg, NO_CLUSTER).unwrap();
    w.exec.fail("third", "DEL", 7, "third broke");
    w.exec.fail("cluster", "DEL", 5, "cluster broke");
    w.exec.clear();
    let err = w.run("DEL", &cfg, NO_CLUSTER).unwrap_err();
    assert!(err.to_string().contains("third broke") && err.to_string().contains("cluster broke"));
    assert_eq!(w.calls().len(), 4, "every delegate was tried");
    assert!(
        !cache::path(&w.cni_dir(), "c1").exists(),
        "removed by default even when DEL failed"
    );
}

#[test]
fn retry_delete_on_error_keeps_the_cache() {
    let w = World::new();
    let cfg = w.config(json!({"retryDeleteOnError": true}));
    w.run("ADD", &cfg, NO_CLUSTER).unwrap();
    w.exec.fail("second", "DEL", 11, "busy");
    assert!(w.run("DEL", &cfg, NO_CLUSTER).is_err());
    assert!(cache::path(&w.cni_dir(), "c1").exists());
    let w2 = World::new();
    let cfg2 = w2.config(json!({"retryDeleteOnError": true}));
    w2.run("ADD", &cfg2, NO_CLUSTER).unwrap();
    w2.exec
        .fail("second", "DEL", 11, "open /x: no such file or directory");
    assert!(w2.run("DEL", &cfg2, NO_CLUSTER).is_err());
    assert!(
        !cache::path(&w2.cni_dir(), "c1").exists(),
        "an already-gone error does not keep the cache"
    );
}

#[test]
fn corrupt_cache_never_skips_teardown() {
    let w = World::new();
    // Networks on disk, so the fallback can also find them by config.
    fs::create_dir_all(w.conf_dir()).unwrap();
    fs::write(
        w.conf_dir().join("c.conf"),
        r#"{"cniVersion":"1.0.0","name":"cluster","type":"bridge"}"#,
    )
    .unwrap();
    fs::write(
        w.conf_dir().join("d.conf"),
        r#"{"cniVersion":"1.0.0","name":"extra","type":"ptp"}"#,
    )
    .unwrap();
    let cfg = w.config(
        json!({"delegates": null, "clusterNetwork": "cluster", "defaultNetworks": ["extra"]}),
    );
    w.run("ADD", &cfg, NO_CLUSTER).unwrap();
    let p = cache::path(&w.cni_dir(), "c1");
    let body = fs::read(&p).unwrap();
    fs::write(&p, &body[..body.len() / 2]).unwrap();
    // The result cache of one attachment is gone too: the config supplies it.
    resultcache::remove(&w.cni_dir(), "extra", "c1", "net1").unwrap();
    w.exec.clear();
    w.run("DEL", &cfg, NO_CLUSTER).unwrap();
    assert_eq!(
        w.calls(),
        [t("DEL", "extra", "net1"), t("DEL", "cluster", "eth0")]
    );
    w.nothing_left("c1");
}

#[test]
fn add_over_an_earlier_add_tears_that_down_first() {
    let w = World::new();
    let cfg = w.config(json!({}));
    w.run("ADD", &cfg, NO_CLUSTER).unwrap();
    w.exec.clear();
    w.run("ADD", &cfg, NO_CLUSTER).unwrap();
    let calls = w.calls();
    assert_eq!(calls[0], t("DEL", "third", "net2"));
    assert_eq!(calls.iter().filter(|c| c.0 == "DEL").count(), 4);
    assert_eq!(calls.iter().filter(|c| c.0 == "ADD").count(), 4);
}

/// The pod's links are dumped before the lock; an earlier ADD torn down under the lock changes them, so they
/// are dumped again: its interfaces, seen by the first dump, are not in the way of this ADD.
#[test]
fn add_over_an_earlier_add_dumps_the_links_again_after_the_teardown() {
    use std::sync::atomic::Ordering;
    let w = World::new();
    let cfg = w.config(json!({}));
    w.run("ADD", &cfg, NO_CLUSTER).unwrap();
    assert_eq!(w.netns.dumped.load(Ordering::SeqCst), 1, "one dump per ADD");
    w.exec.clear();
    // Before the teardown the earlier ADD's interfaces are there; after it they are gone.
    let earlier = ["lo", "eth0", "net1", "net2"].map(String::from).to_vec();
    w.netns
        .dumps
        .lock()
        .unwrap()
        .extend([earlier, vec!["lo".to_string()]]);
    w.run("ADD", &cfg, NO_CLUSTER).unwrap();
    assert_eq!(w.netns.dumped.load(Ordering::SeqCst), 3);
    assert_eq!(w.calls().iter().filter(|c| c.0 == "ADD").count(), 4);
}

#[test]
fn check_runs_every_cached_delegate_and_unknown_is_code_3() {
    let w = World::new();
    let cfg = w.config(json!({}));
    assert_eq!(w.run("CHECK", &cfg, NO_CLUSTER).unwrap_err().cni_code(), 3);
    w.run("ADD", &cfg, NO_CLUSTER).unwrap();
    w.exec.clear();
    w.run("CHECK", &cfg, NO_CLUSTER).unwrap();
    assert_eq!(
        w.calls(),
        [
            t("CHECK", "cluster", "eth0"),
            t("CHECK", "second", "net1"),
            t("CHECK", "second", "net1"),
            t("CHECK", "third", "net2")
        ]
    );
    assert!(
        w.exec
            .calls()
            .iter()
            .all(|c| c.stdin.get("prevResult").is_some())
    );
    w.exec.fail("second", "CHECK", 7, "net1 is broken");
    let e = w.run("CHECK", &cfg, NO_CLUSTER).unwrap_err();
    assert!(e.to_string().contains("net1 is broken"));
}

#[test]
fn check_gate_below_0_4_0() {
    let w = World::new();
    let cfg = w.config(json!({"cniVersion": "0.3.1"}));
    let e = w.run("CHECK", &cfg, NO_CLUSTER).unwrap_err();
    assert_eq!(e.cni_code(), 1);
    assert!(w.calls().is_empty());
}

#[test]
fn status_reaches_node_networks_and_passes_codes_through() {
    let w = World::new();
    let cfg = w.config(json!({"cniVersion": "1.1.0", "delegates": [
        {"cniVersion": "1.1.0", "name": "cluster", "type": "bridge"},
        {"cniVersion": "1.1.0", "name": "second", "type": "macvlan"}
    ]}));
    w.run("STATUS", &cfg, NO_CLUSTER).unwrap();
    assert_eq!(
        w.calls(),
        [t("STATUS", "cluster", ""), t("STATUS", "second", "")]
    );
    w.exec.fail("cluster", "STATUS", 51, "limited");
    assert_eq!(
        w.run("STATUS", &cfg, NO_CLUSTER).unwrap_err().cni_code(),
        51
    );
    assert_eq!(
        w.run(
            "STATUS",
            &w.config(json!({"cniVersion": "1.0.0"})),
            NO_CLUSTER
        )
        .unwrap_err()
        .cni_code(),
        1
    );
}

#[test]
fn status_without_its_cluster_network_is_not_available_code_50() {
    let w = World::new();
    let cfg = w.config(json!({"cniVersion": "1.1.0", "delegates": null, "clusterNetwork": "gone"}));
    let e = w.run("STATUS", &cfg, NO_CLUSTER).unwrap_err();
    assert_eq!(e.cni_code(), 50, "{e}");
    assert!(e.to_string().contains("\"gone\""), "{e}");
}

#[test]
fn readiness_indicator_gates_add_and_status() {
    let w = World::new();
    let ready = w.dir.path().join("ready");
    let cfg = w.config(json!({"cniVersion": "1.1.0", "readinessindicatorfile": ready, "readinessIndicatorTimeoutSeconds": 0.3}));
    let e = w.run("ADD", &cfg, NO_CLUSTER).unwrap_err();
    assert_eq!(e.cni_code(), 11);
    assert!(
        e.to_string()
            .contains("have you checked that your default network is ready")
    );
    assert!(w.calls().is_empty());
    assert_eq!(
        w.run("STATUS", &cfg, NO_CLUSTER).unwrap_err().cni_code(),
        50
    );
    // DEL does not wait.
    w.run("DEL", &cfg, NO_CLUSTER).unwrap();
    fs::write(&ready, b"").unwrap();
    w.run("ADD", &cfg, NO_CLUSTER).unwrap();
}

#[test]
fn gc_tears_down_stale_containers_and_honours_the_runtime_list() {
    let w = World::new();
    let cfg = w.config(json!({"cniVersion": "1.1.0", "delegates": [
        {"cniVersion": "1.1.0", "name": "cluster", "type": "bridge"},
        {"cniVersion": "1.1.0", "name": "second", "type": "macvlan"}
    ]}));
    w.run_cid("ADD", "live", &cfg, NO_CLUSTER).unwrap();
    w.run_cid("ADD", "stale", &cfg, NO_CLUSTER).unwrap();
    // A leftover result record with no plexus cache (e.g. from an interrupted DEL).
    let mut orphan = resultcache::read(&w.cni_dir(), "second", "live", "net1")
        .unwrap()
        .unwrap();
    orphan.container_id = "orphan".into();
    resultcache::write(&w.cni_dir(), &orphan).unwrap();
    w.exec.clear();
    let mut gc_cfg = cfg.clone();
    gc_cfg.valid_attachments = Some(vec![plexus_cni::GcAttachment {
        container_id: "live".into(),
        ifname: "eth0".into(),
    }]);
    let env = CniEnv::from_vars([("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")])
        .unwrap()
        .unwrap();
    execute(
        &env,
        &gc_cfg,
        &Seams {
            exec: &w.exec,
            netns: &w.netns,
            cluster: None,
            kubelet: &NoKubelet,
            defer_work: false,
        },
    )
    .unwrap();
    let calls = w.exec.calls();
    let dels: Vec<_> = calls
        .iter()
        .filter(|c| c.command() == "DEL")
        .map(|c| {
            (
                c.env("CNI_CONTAINERID").unwrap_or("").to_string(),
                c.network().to_string(),
            )
        })
        .collect();
    assert!(
        dels.contains(&("stale".into(), "cluster".into()))
            && dels.contains(&("stale".into(), "second".into()))
    );
    assert!(dels.contains(&("orphan".into(), "second".into())));
    assert!(
        !dels.iter().any(|(c, _)| c == "live"),
        "live containers are untouched"
    );
    let gcs: Vec<_> = calls.iter().filter(|c| c.command() == "GC").collect();
    assert_eq!(gcs.len(), 2, "GC reaches every network");
    let valid_of = |net: &str| {
        gcs.iter().find(|c| c.network() == net).unwrap().stdin["cni.dev/valid-attachments"].clone()
    };
    assert_eq!(
        valid_of("cluster"),
        json!([{"containerID": "live", "ifname": "eth0"}])
    );
    assert_eq!(
        valid_of("second"),
        json!([{"containerID": "live", "ifname": "net1"}])
    );
    w.nothing_left("stale");
    assert!(cache::path(&w.cni_dir(), "live").exists());
}

/// A NAD the pod selects: its namespace and name, its config, and the interface the selection asks for.
#[derive(Clone)]
struct Nad {
    namespace: String,
    name: String,
    config: Value,
    ifname: Option<String>,
}

impl Nad {
    /// How the networks annotation names it.
    fn selection(&self) -> String {
        let at = self
            .ifname
            .as_ref()
            .map(|i| format!("@{i}"))
            .unwrap_or_default();
        format!("{}/{}{at}", self.namespace, self.name)
    }
}

/// The API of pod `ns1/pod1` (UID `u1`) selecting `networks` and, with `default`, replacing the cluster
/// network; every NAD they name exists.
fn pod_api(networks: &[Nad], default: Option<&Nad>) -> MemoryApi {
    let selected: Vec<String> = networks.iter().map(Nad::selection).collect();
    let selected = selected.join(",");
    let mut annotations = vec![(annotations::NETWORKS_ANNOTATION, selected.as_str())];
    let default_name = default.map(Nad::selection);
    if let Some(d) = &default_name {
        annotations.push((annotations::DEFAULT_NETWORK_ANNOTATION, d.as_str()));
    }
    let mut api = MemoryApi::new().with_pod("ns1", "pod1", "u1", &annotations);
    for n in networks.iter().chain(default) {
        api = api.with_nad(&n.namespace, &n.name, n.config.clone());
    }
    api
}

/// The API of pod `ns1/pod1` selecting nothing, with NAD `kube-system/<name>` (a macvlan) for each of
/// `node_nads`.
fn node_nads_api(node_nads: &[&str]) -> MemoryApi {
    let mut api = MemoryApi::new().with_pod("ns1", "pod1", "u1", &[]);
    for name in node_nads {
        api = api.with_nad("kube-system", name, nad(name, None).config);
    }
    api
}

/// What was published: the pod and the number of network-status entries, per write.
fn published(api: &MemoryApi) -> Vec<(String, usize)> {
    api.statuses()
        .into_iter()
        .map(|(pod, entries)| (pod.to_string(), entries.len()))
        .collect()
}

fn nad(name: &str, ifname: Option<&str>) -> Nad {
    Nad {
        namespace: "ns1".into(),
        name: name.into(),
        config: json!({"cniVersion": "1.0.0", "name": name, "type": "macvlan"}),
        ifname: ifname.map(str::to_string),
    }
}

#[test]
fn cluster_seam_pod_networks_default_override_and_status() {
    let w = World::new();
    let cfg = w.config(
        json!({"delegates": [{"cniVersion": "1.0.0", "name": "cluster", "type": "bridge"}]}),
    );
    let cluster = pod_api(&[nad("a", None), nad("b", Some("data0"))], None);
    w.run("ADD", &cfg, Some(&cluster)).unwrap();
    assert_eq!(
        w.calls(),
        [
            t("ADD", "cluster", "eth0"),
            t("ADD", "a", "net1"),
            t("ADD", "b", "data0")
        ]
    );
    assert_eq!(published(&cluster), [("ns1/pod1/u1".to_string(), 3)]);
    // DEL needs no cluster at all: it works from the cache.
    w.exec.clear();
    w.run("DEL", &cfg, NO_CLUSTER).unwrap();
    assert_eq!(
        w.calls(),
        [
            t("DEL", "b", "data0"),
            t("DEL", "a", "net1"),
            t("DEL", "cluster", "eth0")
        ]
    );

    let w = World::new();
    let cluster = pod_api(&[], Some(&nad("override", None)));
    w.run("ADD", &cfg, Some(&cluster)).unwrap();
    assert_eq!(w.calls(), [t("ADD", "override", "eth0")]);
}

#[test]
fn status_publish_failure_rolls_back() {
    let w = World::new();
    let cfg = w.config(json!({}));
    let cluster =
        pod_api(&[], None).failing_status_writes(ClusterError::Unavailable("api down".into()));
    let e = w.run("ADD", &cfg, Some(&cluster)).unwrap_err();
    assert_eq!(e.cni_code(), 11);
    assert_eq!(w.calls().iter().filter(|c| c.0 == "DEL").count(), 4);
    w.nothing_left("c1");
}

#[test]
fn system_namespaces_skip_default_networks() {
    let w = World::new();
    fs::create_dir_all(w.conf_dir()).unwrap();
    fs::write(
        w.conf_dir().join("c.conf"),
        r#"{"cniVersion":"1.0.0","name":"cluster","type":"bridge"}"#,
    )
    .unwrap();
    fs::write(
        w.conf_dir().join("d.conf"),
        r#"{"cniVersion":"1.0.0","name":"extra","type":"ptp"}"#,
    )
    .unwrap();
    let cfg = w.config(json!({"delegates": null, "clusterNetwork": "cluster", "defaultNetworks": ["extra"], "systemNamespaces": ["ns1"]}));
    w.run("ADD", &cfg, NO_CLUSTER).unwrap();
    assert_eq!(w.calls(), [t("ADD", "cluster", "eth0")]);
}

#[test]
fn unknown_cluster_network_names_the_directory() {
    let w = World::new();
    let cfg = w.config(json!({"delegates": null, "clusterNetwork": "nope"}));
    let e = w.run("ADD", &cfg, NO_CLUSTER).unwrap_err();
    assert_eq!(e.cni_code(), 7);
    assert!(
        e.to_string().contains(&w.conf_dir().display().to_string()),
        "{e}"
    );
    assert!(!cache::path(&w.cni_dir(), "c1").exists());
}

#[test]
fn result_that_cannot_be_given_in_the_config_version_rolls_back() {
    let w = World::new();
    let cfg = w.config(json!({"cniVersion": "0.2.0"}));
    w.exec.reply(
        "bridge",
        "ADD",
        br#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}]}"#,
    );
    let e = w.run("ADD", &cfg, NO_CLUSTER).unwrap_err();
    assert_eq!(e.cni_code(), 1);
    w.nothing_left("c1");
}

#[test]
fn version_reply_echoes() {
    let v: Value = serde_json::from_slice(&version_reply(br#"{"cniVersion":"0.4.0"}"#)).unwrap();
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 7);
    let v: Value = serde_json::from_slice(&version_reply(b"garbage")).unwrap();
    assert_eq!(v["cniVersion"], "1.1.0");
}

#[test]
fn own_netns_is_refused_code_8() {
    let w = World::new();
    let cfg = w.config(json!({}));
    let env = CniEnv::from_vars([
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/proc/self/ns/net"),
        ("CNI_IFNAME", "eth0"),
    ])
    .unwrap()
    .unwrap();
    let seams = w.seams(NO_CLUSTER, false);
    assert_eq!(execute(&env, &cfg, &seams).unwrap_err().cni_code(), 8);
    let _ = Path::new("");
}

fn run_with_args(
    w: &World,
    command: &str,
    args: &str,
    cfg: &Config,
    cluster: Option<&dyn Cluster>,
) -> Result<Vec<u8>, Error> {
    let env = CniEnv::from_vars([
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/test-pod"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", args),
    ])
    .unwrap()
    .unwrap();
    execute(
        &env,
        cfg,
        &Seams {
            exec: &w.exec,
            netns: &w.netns,
            cluster,
            kubelet: &NoKubelet,
            defer_work: false,
        },
    )
    .map(|d| d.reply.to_stdout())
}

#[test]
fn no_api_access_without_kubernetes_pod_keys_but_status_may_use_it() {
    let w = World::new();
    fs::create_dir_all(w.conf_dir()).unwrap();
    fs::write(
        w.conf_dir().join("c.conf"),
        r#"{"cniVersion":"1.0.0","name":"cluster","type":"bridge"}"#,
    )
    .unwrap();
    let cfg =
        w.config(json!({"cniVersion": "1.1.0", "delegates": null, "clusterNetwork": "cluster"}));
    let cluster = node_nads_api(&["cluster"]);
    let lookups = || cluster.nad_reads().len();
    run_with_args(&w, "ADD", "IgnoreUnknown=1", &cfg, Some(&cluster)).unwrap();
    assert_eq!(
        lookups(),
        0,
        "a non-Kubernetes runtime's ADD never reaches the API"
    );
    assert_eq!(
        w.calls(),
        [t("ADD", "cluster", "eth0")],
        "the network came from confDir"
    );
    run_with_args(
        &w,
        "ADD",
        "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod1",
        &cfg,
        Some(&cluster),
    )
    .unwrap();
    assert_eq!(
        lookups(),
        1,
        "a Kubernetes pod's ADD looks the name up as a NAD first"
    );
    let env = CniEnv::from_vars([("CNI_COMMAND", "STATUS")])
        .unwrap()
        .unwrap();
    execute(
        &env,
        &cfg,
        &Seams {
            exec: &w.exec,
            netns: &w.netns,
            cluster: Some(&cluster),
            kubelet: &NoKubelet,
            defer_work: false,
        },
    )
    .unwrap();
    assert_eq!(
        lookups(),
        2,
        "STATUS carries no pod keys but may resolve a NAD"
    );
}

/// Issue 21: ADD writes the cache before any delegate runs, so a DEL with no cache has nothing of the pod's
/// to tear down beyond the result cache: it never reads the pod (the kubelet repeats DELs of dead sandboxes
/// whose pods are long gone).
#[test]
fn del_without_a_cache_tears_down_the_node_networks_without_reading_the_pod() {
    let w = World::new();
    let cfg = w.config(
        json!({"delegates": [{"cniVersion": "1.0.0", "name": "cluster", "type": "bridge"}]}),
    );
    let cluster = pod_api(&[nad("a", None), nad("b", Some("data0"))], None);
    w.run("DEL", &cfg, Some(&cluster)).unwrap();
    assert_eq!(w.calls(), [t("DEL", "cluster", "eth0")]);
    assert_eq!(cluster.pod_reads(), 0);
}

/// A cache that exists but cannot be read hid an ADD's attachments: with the pod still in the API, its
/// networks are rebuilt from it, as Go Multus does.
#[test]
fn del_with_a_corrupt_cache_rebuilds_the_pods_networks_from_the_api() {
    let w = World::new();
    let cfg = w.config(
        json!({"delegates": [{"cniVersion": "1.0.0", "name": "cluster", "type": "bridge"}]}),
    );
    let cluster = pod_api(&[nad("a", None), nad("b", Some("data0"))], None);
    std::fs::create_dir_all(w.cni_dir()).unwrap();
    std::fs::write(cache::path(&w.cni_dir(), "c1"), "{not json").unwrap();
    w.run("DEL", &cfg, Some(&cluster)).unwrap();
    assert_eq!(
        w.calls(),
        [
            t("DEL", "b", "data0"),
            t("DEL", "a", "net1"),
            t("DEL", "cluster", "eth0")
        ]
    );
    assert_eq!(cluster.pod_reads(), 1);
}

/// A NAD `ns1/<name>` whose conflist chains `types`.
fn nad_chain(name: &str, types: &[&str]) -> Nad {
    let plugins: Vec<Value> = types.iter().map(|t| json!({"type": t})).collect();
    Nad {
        config: json!({"cniVersion": "1.0.0", "name": name, "plugins": plugins}),
        ..nad(name, None)
    }
}

/// Issue 16: STATUS answers for what the node serves every pod (the readiness indicator, the cluster
/// network, static delegates or `defaultNetworks`), never for the NADs some pods select: any user can create
/// a NAD naming a plugin the node lacks, and that must not make the node unready.
#[test]
fn status_answers_for_the_node_networks_never_for_nads() {
    let w = World::new();
    let cfg = w.config(json!({"cniVersion": "1.1.0", "delegates": [
        {"cniVersion": "1.1.0", "name": "cluster", "type": "bridge"}
    ]}));
    // The cluster's NADs (two tenants'), each naming a plugin this node does not have.
    let cluster = pod_api(
        &[
            nad_chain("tenant-a", &["missing"]),
            nad_chain("tenant-b", &["macvlan", "missing"]),
        ],
        None,
    );
    w.run("STATUS", &cfg, Some(&cluster)).unwrap();
    assert_eq!(w.calls(), [t("STATUS", "cluster", "")]);
    assert!(w.warnings().is_empty());
    // A node network whose plugin is missing still makes the node unavailable (code 50), naming it.
    let cfg = w.config(json!({"cniVersion": "1.1.0", "delegates": [
        {"cniVersion": "1.1.0", "name": "cluster", "type": "bridge"},
        {"cniVersion": "1.1.0", "name": "extra", "type": "missing"}
    ]}));
    let e = w.run("STATUS", &cfg, Some(&cluster)).unwrap_err();
    assert_eq!(e.cni_code(), 50, "{e}");
    assert!(
        e.to_string().contains("extra") && e.to_string().contains("\"missing\""),
        "{e}"
    );
}

/// Issue 16: a NAD naming a plugin that is not installed (here chained after one that is) fails the ADD of a
/// pod selecting it with code 7 naming the pod, the NAD and the plugin, and a Warning event on the pod;
/// the check comes before any delegate, so nothing ran and nothing is left. A pod not selecting it works.
#[test]
fn a_nad_naming_a_missing_plugin_fails_add_with_code_7_before_any_delegate() {
    let w = World::new();
    let cfg = w.config(json!({}));
    let cluster = pod_api(
        &[nad("a", None), nad_chain("bad", &["macvlan", "missing"])],
        None,
    );
    let e = w.run("ADD", &cfg, Some(&cluster)).unwrap_err();
    assert_eq!(e.cni_code(), 7, "{e}");
    let msg = e.to_string();
    for part in ["ns1/pod1/u1", "ns1/bad", "\"missing\""] {
        assert!(msg.contains(part), "names {part}: {msg}");
    }
    assert_eq!(w.calls(), vec![], "no delegate ran");
    w.nothing_left("c1");
    assert!(published(&cluster).is_empty());
    let warnings = w.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].0, "NoPluginFound");
    assert!(
        warnings[0].1.contains("ns1/bad") && warnings[0].1.contains("\"missing\""),
        "{warnings:?}"
    );

    // The runtime's DEL after the failed ADD (CNI-23) succeeds: nothing records the NAD's network, and a
    // DEL of it could only fail for the missing plugin, on every retry.
    w.run("DEL", &cfg, Some(&cluster)).unwrap();
    assert!(w.warnings().is_empty(), "DEL leaves no event");
    assert!(
        w.calls().iter().all(|c| c.1 != "bad"),
        "nothing of the NAD ran: {:?}",
        w.calls()
    );
    w.nothing_left("c1");
    w.exec.clear();

    // A pod that selects only the other NAD is not affected.
    let fine = pod_api(&[nad("a", None)], None);
    w.run_cid("ADD", "c2", &cfg, Some(&fine)).unwrap();
    assert!(w.warnings().is_empty());
    assert_eq!(w.calls().last(), Some(&t("ADD", "a", "net3")));
}

/// A NAD `ns/<name>` with `config` (its `name` set).
fn nad_in(ns: &str, name: &str, mut config: Value) -> Nad {
    config["name"] = json!(name);
    Nad {
        namespace: ns.into(),
        name: name.into(),
        config,
        ifname: None,
    }
}

/// Issue 19, item 3: a NAD naming a plugin type outside the node config's `allowedPluginTypes` (here the
/// IPAM of its second chained plugin) fails the pod's ADD with code 7 naming the pod, the NAD, the type
/// and the key, and a `PluginTypeNotAllowed` Warning event; the check precedes everything, so no delegate
/// ran and nothing is left. Allowed NADs, and the node's own networks, are not affected.
#[test]
fn a_nad_naming_a_type_outside_the_allow_list_fails_add_with_code_7_and_nothing_runs() {
    let w = World::new();
    let cfg = w.config(json!({"allowedPluginTypes": ["macvlan", "host-local", "tuning"]}));
    let allowed = nad_in(
        "ns1",
        "ok",
        json!({"cniVersion": "1.0.0", "plugins": [
            {"type": "macvlan", "ipam": {"type": "host-local"}}, {"type": "tuning"}]}),
    );
    let refused = nad_in(
        "ns1",
        "grab-uplink",
        json!({"cniVersion": "1.0.0", "plugins": [
            {"type": "macvlan", "ipam": {"type": "host-local"}},
            {"type": "tuning", "ipam": {"type": "dhcp"}}]}),
    );
    let cluster = pod_api(&[allowed.clone(), refused], None);
    let e = w.run("ADD", &cfg, Some(&cluster)).unwrap_err();
    assert_eq!(e.cni_code(), 7, "{e}");
    let msg = e.to_string();
    for part in [
        "ns1/pod1/u1",
        "ns1/grab-uplink",
        "plugin type \"dhcp\"",
        "allowedPluginTypes",
        "nothing was attached",
    ] {
        assert!(msg.contains(part), "names {part}: {msg}");
    }
    assert_eq!(
        w.calls(),
        vec![],
        "no delegate ran, not even the cluster network's"
    );
    w.nothing_left("c1");
    assert!(published(&cluster).is_empty());
    let warnings = w.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].0, "PluginTypeNotAllowed");
    for part in ["ns1/grab-uplink", "\"dhcp\"", "allowedPluginTypes"] {
        assert!(warnings[0].1.contains(part), "{warnings:?}");
    }

    // The node's own networks (static delegates: bridge, ptp) are not on the list and still run.
    let fine = pod_api(&[allowed], None);
    w.run_cid("ADD", "c2", &cfg, Some(&fine)).unwrap();
    assert!(w.warnings().is_empty());
    assert_eq!(w.calls().first(), Some(&t("ADD", "cluster", "eth0")));
    assert_eq!(w.calls().last(), Some(&t("ADD", "ok", "net3")));
}

/// A namespace's list replaces the global one for the NADs of that namespace (the NAD's, not the pod's).
#[test]
fn a_namespaces_allow_list_replaces_the_global_one_for_its_nads() {
    let w = World::new();
    let cfg = w.config(json!({
        "allowedPluginTypes": ["macvlan"],
        "allowedPluginTypesByNamespace": {"sriov-team": ["sriov"]},
    }));
    let sriov = |ns: &str| nad_in(ns, "vf", json!({"cniVersion": "1.0.0", "type": "sriov"}));
    let macvlan = |ns: &str| nad_in(ns, "mv", json!({"cniVersion": "1.0.0", "type": "macvlan"}));
    let run = |cid: &str, n: Nad| {
        let cluster = pod_api(&[n], None);
        w.run_cid("ADD", cid, &cfg, Some(&cluster))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    run("c1", sriov("sriov-team")).unwrap();
    run("c2", macvlan("ns1")).unwrap();
    let e = run("c3", sriov("ns1")).unwrap_err();
    assert!(
        e.contains("\"sriov\"") && e.contains("config's allowedPluginTypes;"),
        "{e}"
    );
    let e = run("c4", macvlan("sriov-team")).unwrap_err();
    assert!(
        e.contains(r#"allowedPluginTypesByNamespace["sriov-team"]"#),
        "replaced, not extended: {e}"
    );
}

/// The node's own networks are the admin's: a cluster network and `defaultNetworks` that are NADs in
/// `multusNamespace` run whatever their types, even with an empty list; a pod's default-network annotation
/// names a NAD of the pod's choosing and is checked.
#[test]
fn the_node_networks_are_exempt_and_a_pods_default_network_is_not() {
    let w = World::new();
    let cfg = w.config(json!({
        "clusterNetwork": "cluster-nad", "defaultNetworks": ["extra-nad"],
        "allowedPluginTypes": [],
    }));
    let nads = node_nads_api(&["cluster-nad", "extra-nad"]);
    w.run("ADD", &cfg, Some(&nads)).unwrap();
    assert_eq!(
        w.calls(),
        [
            t("ADD", "cluster-nad", "eth0"),
            t("ADD", "extra-nad", "net1")
        ]
    );
    assert!(w.warnings().is_empty());

    let my_default = nad_in(
        "ns1",
        "my-default",
        json!({"cniVersion": "1.0.0", "type": "bridge"}),
    );
    let mut overridden = pod_api(&[], Some(&my_default));
    for name in ["cluster-nad", "extra-nad"] {
        overridden = overridden.with_nad("kube-system", name, nad(name, None).config);
    }
    let e = w.run_cid("ADD", "c2", &cfg, Some(&overridden)).unwrap_err();
    assert_eq!(e.cni_code(), 7, "{e}");
    assert!(
        e.to_string().contains("ns1/my-default") && e.to_string().contains("\"bridge\""),
        "{e}"
    );
    w.nothing_left("c2");
}

/// A plugin binary `exec::check_binary` refuses fails the ADD before anything runs, like a missing one,
/// with a Warning event that says so (not `NoPluginFound`).
#[test]
fn a_refused_plugin_binary_fails_add_before_any_delegate_with_its_own_event() {
    let w = World::new();
    let cfg = w.config(json!({}));
    let cluster = pod_api(&[nad_chain("bad", &["macvlan", "unsafe"])], None);
    let e = w.run("ADD", &cfg, Some(&cluster)).unwrap_err();
    assert_eq!(e.cni_code(), 7, "{e}");
    assert!(
        e.to_string()
            .contains("refusing to run /opt/cni/bin/unsafe"),
        "{e}"
    );
    assert_eq!(w.calls(), vec![]);
    w.nothing_left("c1");
    let warnings = w.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].0, "PluginBinaryRefused");
}

/// For the shared modules' unit tests: run `f` with a context over `host` (networks `a`, `b`, `c`, each a
/// 1.0.0 bridge; container `c1` of pod `ns1/pod1`), the planned attachments of those networks passed along.
pub(super) fn with_ctx<R>(
    host: &TestHost,
    defer_work: bool,
    f: impl FnOnce(&Ctx<'_>, Vec<Attachment>) -> R,
) -> R {
    let delegates: Vec<Value> = ["a", "b", "c"]
        .map(|n| json!({"cniVersion": "1.0.0", "name": n, "type": "bridge"}))
        .into();
    let config = Config::from_bytes(
        &serde_json::to_vec(&json!({
            "cniVersion": "1.0.0", "name": "plexus-net", "type": "plexus",
            "cniDir": host.cni_dir(), "confDir": host.dir.path().join("conf"), "binDir": "/opt/cni/bin",
            "delegates": delegates
        }))
        .unwrap(),
    )
    .unwrap();
    let env = CniEnv::from_vars([
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/test-pod"),
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
        exec: &host.exec,
        netns: &host.netns,
        cluster: None,
        kubelet: &NoKubelet,
        defer_work,
    };
    let ctx = Ctx {
        env: &env,
        config: &config,
        seams: &seams,
        kube: kube::Kube::new(None, &config, true),
    };
    let attachments = plan::plan("eth0", ctx.node_networks(None).unwrap()).unwrap();
    f(&ctx, attachments)
}

/// The typed contract: ADD hands its edge the cluster network's result given in the config's version (what
/// the thin binary prints), and in daemon mode the work for after the reply and the status write as
/// values; the thin binary's run leaves neither.
#[test]
fn done_carries_the_result_in_the_configs_version_and_the_deferred_work_as_values() {
    let w = World::new();
    let cfg = w.config(json!({"cniVersion": "0.4.0"}));
    let cluster = pod_api(&[], None).deferring_status();
    let done = w.run_done("ADD", "c1", &cfg, Some(&cluster), true).unwrap();
    let Reply::Added(result) = &done.reply else {
        panic!("ADD answers a result: {done:?}");
    };
    assert_eq!(result.version(), CniVersion::V0_4_0);
    assert_eq!(result.result().interfaces[0].name, "eth0");
    let printed: Value = serde_json::from_slice(&done.reply.to_stdout()).unwrap();
    assert_eq!(
        printed,
        result.result().to_value(CniVersion::V0_4_0).unwrap()
    );
    assert_eq!(printed["cniVersion"], "0.4.0");
    let status = done
        .status
        .as_ref()
        .expect("the status write, to send after the reply");
    assert_eq!(status.pod.to_string(), "ns1/pod1/u1");
    assert_eq!(cluster.status_writes(), [(**status).clone()]);
    assert_eq!(published(&cluster), [("ns1/pod1/u1".to_string(), 3)]);
    // The writes wait for the job, under the container's lock.
    assert!(lock::ContainerLock::acquire(&w.cni_dir(), "c1", Duration::ZERO).is_err());
    assert!(resultcache::list(&w.cni_dir(), Some("c1")).is_empty());
    (done.after_reply.expect("ADD's writes for after the reply"))();
    assert_eq!(resultcache::list(&w.cni_dir(), Some("c1")).len(), 3);
    // DEL: nothing to print; its trash's unlinks for after the reply.
    let done = w.run_done("DEL", "c1", &cfg, NO_CLUSTER, true).unwrap();
    assert_eq!(done.reply, Reply::Empty);
    (done.after_reply.expect("DEL's unlinks"))();
    w.nothing_left("c1");

    // The thin binary: everything done before the reply, nothing left over.
    let cluster = pod_api(&[], None);
    let done = w
        .run_done("ADD", "c2", &cfg, Some(&cluster), false)
        .unwrap();
    assert!(matches!(&done.reply, Reply::Added(r) if r.version() == CniVersion::V0_4_0));
    assert!(done.after_reply.is_none() && done.status.is_none());
    assert_eq!(resultcache::list(&w.cni_dir(), Some("c2")).len(), 3);
    let done = w.run_done("DEL", "c2", &cfg, NO_CLUSTER, false).unwrap();
    assert!(done.after_reply.is_none() && done.reply == Reply::Empty);
    w.nothing_left("c2");
}
