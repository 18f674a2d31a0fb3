//! The daemon's reconcile of network-status: once the pod cache holds its first list, and again after every
//! re-list, each container whose cache and result records on this node say what was attached gets its pod's
//! network-status written when the pod's annotation is missing or says something else. This is what makes
//! `statusWrite: afterReply` lose nothing when the daemon dies between its reply and the write: the
//! container's records are the write's durable intent, and they cost the ADD no extra fsync.
//!
//! ```text
//!   served.json (cniDirs seen) ─► wanted(): lock (try), cache + records ─► rendered status, pod and UID
//!   pod cache ─► choose(): pod still there, same UID, annotation differs, no write pending ─► StatusWriter
//! ```

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use plexus_cni::{CniResult, CniVersion};
use serde::{Deserialize, Serialize};

use super::Shared;
use crate::{
    pure::{
        annotations::{NETWORK_STATUS_ANNOTATION, PodAnnotations},
        config::Config,
        request::PodRef,
        status,
    },
    seams::k8s::client::DeferredStatus,
    store::{
        cache::{self, ReadOutcome},
        fsutil,
        lock::ContainerLock,
        resultcache,
    },
};

/// The state file, in the socket directory: which cniDirs this daemon served.
pub const SERVED_FILE: &str = "served.json";

/// What the reconcile needs of a cniDir the daemon served ADDs from (a request's config names it; the
/// daemon's own config need not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Served {
    /// The cache directory.
    pub cni_dir: PathBuf,
    /// Pods in these namespaces get no network-status.
    pub system_namespaces: Vec<String>,
    /// One API request's time limit, in milliseconds.
    pub api_timeout_ms: u64,
    /// The last ADD's network config (the daemon's keys laid over it; the runtime's per-call
    /// `runtimeConfig`, `prevResult` and `args` left out): what hot-plug runs the pod's networks with
    /// (docs/daemon.md, "Hot-plug"). `None` in a file from before hot-plug.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// The last ADD's `CNI_PATH`: where hot-plug's delegates are looked up, known from the file after a
    /// restart, before any request came (empty in a file from before it was kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cni_path: Vec<PathBuf>,
}

impl Served {
    /// What `config` says; `raw` is its bytes as the request gave them (with the daemon's keys), `cni_path`
    /// the request's `CNI_PATH`.
    pub fn of(config: &Config, raw: &[u8], cni_path: &[PathBuf]) -> Served {
        let raw = serde_json::from_slice::<serde_json::Value>(raw)
            .ok()
            .map(|mut v| {
                if let Some(o) = v.as_object_mut() {
                    // Per call, not the network's: kept, they would rewrite the file on every ADD.
                    for key in ["runtimeConfig", "prevResult", "args"] {
                        o.remove(key);
                    }
                }
                v
            });
        Served {
            cni_dir: config.cni_dir.clone(),
            system_namespaces: config.system_namespaces.clone(),
            api_timeout_ms: config.api_timeout.as_millis() as u64,
            config: raw,
            cni_path: cni_path.to_vec(),
        }
    }
}

/// The cniDirs served, kept in memory and in [`SERVED_FILE`] (which lives as long as the node's boot: the
/// socket directory is under `/run`, and after a reboot no container of before is running).
pub struct ServedDirs {
    path: PathBuf,
    dirs: Mutex<BTreeMap<PathBuf, Served>>,
}

impl ServedDirs {
    /// Read `path`; a missing or unreadable file means none served yet.
    pub fn load(path: PathBuf) -> ServedDirs {
        let dirs = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Vec<Served>>(&bytes) {
                Ok(list) => list.into_iter().map(|s| (s.cni_dir.clone(), s)).collect(),
                Err(e) => {
                    tracing::warn!("{}: {e}; starting with no served cniDir", path.display());
                    BTreeMap::new()
                }
            },
            Err(_) => BTreeMap::new(),
        };
        ServedDirs {
            path,
            dirs: Mutex::new(dirs),
        }
    }

    /// Note a request's config (`raw`: its bytes) and `CNI_PATH`; the file is rewritten only when something
    /// changed (once per cniDir, in practice).
    pub fn note(&self, config: &Config, raw: &[u8], cni_path: &[PathBuf]) {
        let served = Served::of(config, raw, cni_path);
        let mut dirs = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        if dirs.get(&served.cni_dir) == Some(&served) {
            return;
        }
        dirs.insert(served.cni_dir.clone(), served);
        let list: Vec<&Served> = dirs.values().collect();
        let written = serde_json::to_vec(&list)
            .map_err(std::io::Error::other)
            .and_then(|bytes| fsutil::atomic_write(&self.path, &bytes, 0o600));
        if let Err(e) = written {
            tracing::warn!(
                "cannot record the served cniDirs in {}: {e} (a restarted daemon will not reconcile them)",
                self.path.display()
            );
        }
    }

    /// Every cniDir served.
    pub fn all(&self) -> Vec<Served> {
        let dirs = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        dirs.values().cloned().collect()
    }
}

/// The network-status one container's records say its pod should have.
#[derive(Debug, Clone, PartialEq)]
pub struct Want {
    /// The pod (from the records' `CNI_ARGS`).
    pub pod: PodRef,
    /// The pod's UID (from the records: a pod recreated under the same name has another).
    pub uid: String,
    /// The container (sandbox).
    pub container: String,
    /// The annotation's value, rendered as ADD renders it.
    pub rendered: String,
    /// When the container's cache was last written (the newest sandbox of a pod wins).
    pub modified: SystemTime,
}

/// The pod a result record's `CNI_ARGS` name, with its UID.
pub(super) fn pod_of(rec: &resultcache::CachedAttachment) -> Option<(PodRef, String)> {
    let arg = |k: &str| {
        rec.cni_args
            .iter()
            .find(|[key, _]| key == k)
            .map(|[_, v]| v.clone())
            .filter(|v| !v.is_empty())
    };
    let uid = arg("K8S_POD_UID")?;
    let pod = PodRef {
        namespace: arg("K8S_POD_NAMESPACE")?,
        name: arg("K8S_POD_NAME")?,
        uid: Some(uid.clone()),
        infra_container_id: arg("K8S_POD_INFRA_CONTAINER_ID"),
    };
    Some((pod, uid))
}

/// What container `cid` in `served`'s cniDir says its pod's network-status should be. `Ok(None)` when it
/// cannot say: an operation on it is running (its lock is held), its cache is gone or only staged, a record
/// is missing (the daemon died before writing it: no result to render), or the records name no pod or UID.
pub fn wanted(served: &Served, cid: &str) -> Result<Option<Want>, String> {
    let cni_dir = &served.cni_dir;
    let Ok(lock) = ContainerLock::acquire(cni_dir, cid, Duration::ZERO) else {
        return Ok(None);
    };
    let cache_path = cache::path(cni_dir, cid);
    let entries = match cache::read(cni_dir, cid) {
        Ok(ReadOutcome::Found(entries)) if cache_path.is_file() => entries,
        // Torn down meanwhile (the lock file this took must not outlive it), or only staged.
        Ok(ReadOutcome::Missing) => {
            lock.release_and_remove();
            return Ok(None);
        }
        Ok(_) => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", cache_path.display())),
    };
    let modified = std::fs::metadata(&cache_path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let master_ifname = entries
        .first()
        .and_then(|e| e.if_name.clone())
        .unwrap_or_else(|| "eth0".into());
    let mut attached = Vec::with_capacity(entries.len());
    let mut pod = None;
    for (i, e) in entries.iter().enumerate() {
        let a = e
            .to_attachment(i, &master_ifname, CniVersion::V1_0_0)
            .map_err(|e| e.to_string())?;
        if a.auxiliary {
            // Not the pod's network: ADD leaves it out of network-status (docs/multus-compat.md,
            // "Auxiliary chain").
            continue;
        }
        let rec = resultcache::read(cni_dir, &a.network.name, cid, &a.ifname)
            .map_err(|e| format!("result record of {} on {}: {e}", a.status_name, a.ifname))?;
        let Some(rec) = rec else {
            return Ok(None);
        };
        if pod.is_none() {
            pod = pod_of(&rec);
        }
        let Some(result) = &rec.result else {
            return Ok(None);
        };
        let result = CniResult::from_value(result, a.network.cni_version).map_err(|e| {
            format!(
                "the result of {} on {} does not parse: {e}",
                a.status_name, a.ifname
            )
        })?;
        attached.push((a, result));
    }
    drop(lock);
    let Some((pod, uid)) = pod else {
        return Ok(None);
    };
    if served.system_namespaces.contains(&pod.namespace) {
        return Ok(None);
    }
    let rendered = status::render_attached(&attached, crate::seams::devices::info::read);
    Ok(Some(Want {
        pod,
        uid,
        container: cid.to_string(),
        rendered,
        modified,
    }))
}

/// Whether an annotation value says the same as `rendered` (compared as parsed entries, so formatting
/// does not count).
pub fn same_status(current: &str, rendered: &str) -> bool {
    match (status::parse(current), status::parse(rendered)) {
        (Ok(a), Ok(b)) => a == b,
        _ => current == rendered,
    }
}

/// Which wants need a write: the pod is on this node now (`pod` gives its UID and annotation) with the UID
/// the records name; its annotation is missing or differs; no write of it is pending (`pending`). Of a
/// pod's several sandboxes, the newest cache wins.
pub fn choose(
    wants: Vec<Want>,
    pod: impl Fn(&str, &str) -> Option<(String, Option<String>)>,
    pending: impl Fn(&str, &str) -> bool,
) -> Vec<Want> {
    let mut newest: HashMap<(String, String, String), Want> = HashMap::new();
    for w in wants {
        let key = (w.pod.namespace.clone(), w.pod.name.clone(), w.uid.clone());
        match newest.get(&key) {
            Some(have) if have.modified >= w.modified => {}
            _ => {
                newest.insert(key, w);
            }
        }
    }
    let mut out: Vec<Want> = newest
        .into_values()
        .filter(|w| match pod(&w.pod.namespace, &w.pod.name) {
            Some((uid, current)) => {
                uid == w.uid
                    && !current.is_some_and(|c| same_status(&c, &w.rendered))
                    && !pending(&w.pod.namespace, &w.pod.name)
            }
            None => false,
        })
        .collect();
    out.sort_by(|a, b| (&a.pod.namespace, &a.pod.name).cmp(&(&b.pod.namespace, &b.pod.name)));
    out
}

/// Every container's want, in every served cniDir (blocking: reads files and takes locks).
fn collect(served: &[Served]) -> Vec<(Want, Duration)> {
    let mut out = Vec::new();
    for s in served {
        for cid in cache::containers(&s.cni_dir) {
            match wanted(s, &cid) {
                Ok(Some(w)) => out.push((w, Duration::from_millis(s.api_timeout_ms.max(1)))),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("reconcile: container {cid} in {}: {e}", s.cni_dir.display())
                }
            }
        }
    }
    out
}

/// Reconcile once the pod cache holds its first list, and after every re-list, until the daemon exits.
pub async fn run(shared: Arc<Shared>, served: Arc<ServedDirs>) {
    let Some(cache) = shared.cache.clone() else {
        return;
    };
    let mut lists = cache.pod_lists();
    let mut seen = 0;
    loop {
        let Ok(n) = lists.wait_for(|n| *n > seen).await.map(|n| *n) else {
            return;
        };
        seen = n;
        let dirs = served.all();
        if dirs.is_empty() {
            continue;
        }
        let Ok(found) = tokio::task::spawn_blocking(move || collect(&dirs)).await else {
            continue;
        };
        let timeouts: HashMap<String, Duration> = found
            .iter()
            .map(|(w, t)| (w.container.clone(), *t))
            .collect();
        let wants = found.into_iter().map(|(w, _)| w).collect();
        let chosen = choose(
            wants,
            |ns, name| {
                let p = cache.pod(ns, name)?;
                let uid = p.metadata.uid.clone()?;
                let current = PodAnnotations::of(p.metadata.annotations.as_ref())
                    .get(NETWORK_STATUS_ANNOTATION)
                    .map(str::to_string);
                Some((uid, current))
            },
            |ns, name| shared.status.is_pending(ns, name),
        );
        if !chosen.is_empty() {
            tracing::info!(
                pods = chosen.len(),
                list = n,
                "reconcile: writing network-status the pods lack"
            );
        }
        for w in chosen {
            tracing::info!(
                "reconcile: network-status of pod {}/{} does not say what container {} attached; writing it",
                w.pod.namespace,
                w.pod.name,
                w.container
            );
            let timeout = timeouts
                .get(&w.container)
                .copied()
                .unwrap_or(Duration::from_secs(5));
            let job = DeferredStatus::rendered(w.pod, &w.uid, w.rendered);
            tokio::spawn(
                shared
                    .status
                    .submit(shared.writer(timeout), &w.container, job),
            );
        }
    }
}

/// The state file's path in `socket_dir`.
pub fn served_file(socket_dir: &Path) -> PathBuf {
    socket_dir.join(SERVED_FILE)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::pure::{
        netconf::NetworkConfig,
        plan::{Attachment, NetworkRequest, plan},
    };

    fn served(dir: &Path) -> Served {
        Served {
            cni_dir: dir.to_path_buf(),
            system_namespaces: vec!["kube-system".into()],
            api_timeout_ms: 5000,
            config: None,
            cni_path: Vec::new(),
        }
    }

    fn attachments() -> Vec<Attachment> {
        let cluster = NetworkConfig::from_bytes(
            br#"{"cniVersion":"1.0.0","name":"cluster","type":"bridge"}"#,
        )
        .unwrap();
        let second =
            NetworkConfig::from_bytes(br#"{"cniVersion":"1.0.0","name":"mv","type":"macvlan"}"#)
                .unwrap();
        let mut second = NetworkRequest::plain(second);
        second.status_name = "ns1/mv".into();
        plan("eth0", vec![NetworkRequest::plain(cluster), second]).unwrap()
    }

    fn result(ifname: &str, ip: &str, mac: &str) -> Value {
        json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": ifname, "mac": mac, "sandbox": "/run/netns/p"}],
            "ips": [{"address": ip, "interface": 0}]})
    }

    /// The cache and the result records of container `cid` of pod `ns/name` (UID `uid`), as an ADD leaves
    /// them; `records` says how many of the records were written.
    fn add(dir: &Path, cid: &str, (ns, name, uid): (&str, &str, &str), records: usize) {
        let a = attachments();
        let behind = fsutil::WriteBehind::default();
        cache::write(dir, cid, &a, &behind).unwrap();
        behind.flush().unwrap();
        let results = [
            result("eth0", "10.1.0.5/16", "0a:00:00:00:00:01"),
            result("net1", "10.2.0.5/24", "0a:00:00:00:00:02"),
        ];
        for (a, r) in a.iter().zip(results).take(records) {
            let rec = resultcache::CachedAttachment {
                kind: resultcache::KIND.into(),
                container_id: cid.into(),
                config: a.network.bytes.clone(),
                if_name: a.ifname.clone(),
                network_name: a.network.name.clone(),
                netns: "/run/netns/p".into(),
                cni_args: [
                    ("IgnoreUnknown", "1"),
                    ("K8S_POD_NAMESPACE", ns),
                    ("K8S_POD_NAME", name),
                    ("K8S_POD_INFRA_CONTAINER_ID", cid),
                    ("K8S_POD_UID", uid),
                ]
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| [k.to_string(), v.to_string()])
                .collect(),
                capability_args: Default::default(),
                result: Some(r),
            };
            resultcache::write(dir, &rec).unwrap();
        }
    }

    /// Issue 22: the auxiliary chain (marked in the cache) is no network of the pod's, as on ADD.
    #[test]
    fn the_auxiliary_chain_is_left_out_as_add_leaves_it_out() {
        let d = tempfile::tempdir().unwrap();
        add(d.path(), "c1", ("ns1", "p", "uid-1"), 2);
        let mut a = attachments();
        a[1].auxiliary = true;
        let behind = fsutil::WriteBehind::default();
        cache::write(d.path(), "c1", &a, &behind).unwrap();
        behind.flush().unwrap();
        let w = wanted(&served(d.path()), "c1").unwrap().expect("a want");
        let names: Vec<String> = status::parse(&w.rendered)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["cluster"]);
    }

    #[test]
    fn a_container_with_its_records_wants_what_add_renders() {
        let d = tempfile::tempdir().unwrap();
        add(d.path(), "c1", ("ns1", "p", "uid-1"), 2);
        let w = wanted(&served(d.path()), "c1").unwrap().expect("a want");
        assert_eq!(
            (
                w.pod.namespace.as_str(),
                w.pod.name.as_str(),
                w.uid.as_str()
            ),
            ("ns1", "p", "uid-1")
        );
        let entries = status::parse(&w.rendered).unwrap();
        let got: Vec<(&str, &str, bool, Vec<String>)> = entries
            .iter()
            .map(|e| {
                (
                    e.name.as_str(),
                    e.interface.as_str(),
                    e.default,
                    e.ips.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("cluster", "eth0", true, vec!["10.1.0.5".to_string()]),
                ("ns1/mv", "net1", false, vec!["10.2.0.5".to_string()]),
            ]
        );
        // Rendered as ADD renders it: byte for byte what the same attachments give.
        let attached: Vec<(Attachment, CniResult)> = attachments()
            .into_iter()
            .zip([
                result("eth0", "10.1.0.5/16", "0a:00:00:00:00:01"),
                result("net1", "10.2.0.5/24", "0a:00:00:00:00:02"),
            ])
            .map(|(a, r)| (a, CniResult::from_value(&r, CniVersion::V1_0_0).unwrap()))
            .collect();
        assert_eq!(
            w.rendered,
            status::render_attached(&attached, crate::seams::devices::info::read)
        );
    }

    #[test]
    fn nothing_is_wanted_without_every_record_a_pod_uid_or_outside_system_namespaces() {
        let d = tempfile::tempdir().unwrap();
        // The daemon died before its second record: no result to render that network from.
        add(d.path(), "partial", ("ns1", "p", "uid-1"), 1);
        assert_eq!(wanted(&served(d.path()), "partial").unwrap(), None);
        // A runtime that passes no K8S_POD_UID: a recreated pod could not be told apart.
        add(d.path(), "nouid", ("ns1", "p", ""), 2);
        assert_eq!(wanted(&served(d.path()), "nouid").unwrap(), None);
        add(d.path(), "system", ("kube-system", "p", "uid-2"), 2);
        assert_eq!(wanted(&served(d.path()), "system").unwrap(), None);
    }

    #[test]
    fn a_container_being_worked_on_or_gone_is_skipped_and_leaves_no_lock_file() {
        let d = tempfile::tempdir().unwrap();
        add(d.path(), "busy", ("ns1", "p", "uid-1"), 2);
        let held = ContainerLock::acquire(d.path(), "busy", Duration::from_secs(1)).unwrap();
        assert_eq!(wanted(&served(d.path()), "busy").unwrap(), None);
        drop(held);
        assert!(wanted(&served(d.path()), "busy").unwrap().is_some());
        // Torn down between the listing and the lock: the lock file taken is removed again.
        assert_eq!(wanted(&served(d.path()), "gone").unwrap(), None);
        assert!(!crate::store::lock::lock_dir(d.path()).join("gone").exists());
    }

    fn want(name: &str, uid: &str, cid: &str, age_s: u64, rendered: &str) -> Want {
        Want {
            pod: PodRef {
                namespace: "ns".into(),
                name: name.into(),
                uid: Some(uid.into()),
                infra_container_id: None,
            },
            uid: uid.into(),
            container: cid.into(),
            rendered: rendered.into(),
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 - age_s),
        }
    }

    const A: &str = r#"[{"name":"cluster","interface":"eth0","ips":["10.1.0.5"],"mac":"0a:00:00:00:00:01","default":true,"dns":{}}]"#;
    const A_PRETTY: &str = r#"[
    {
        "name": "cluster",
        "interface": "eth0",
        "ips": [ "10.1.0.5" ],
        "mac": "0a:00:00:00:00:01",
        "default": true,
        "dns": {}
    }
]"#;
    const B: &str = r#"[{"name":"cluster","interface":"eth0","ips":["10.1.0.9"],"mac":"0a:00:00:00:00:01","default":true,"dns":{}}]"#;

    #[test]
    fn only_present_pods_with_the_same_uid_and_another_status_are_written() {
        let pods: HashMap<&str, (&str, Option<&str>)> = HashMap::from([
            ("missing", ("u1", None)),
            ("same", ("u2", Some(A_PRETTY))),
            ("differs", ("u3", Some(B))),
            ("recreated", ("new-uid", None)),
            ("pending", ("u5", None)),
            ("unparsable", ("u6", Some("not json"))),
        ]);
        let wants = vec![
            want("missing", "u1", "c1", 0, A),
            want("same", "u2", "c2", 0, A),
            want("differs", "u3", "c3", 0, A),
            want("recreated", "old-uid", "c4", 0, A),
            want("deleted", "u7", "c5", 0, A),
            want("pending", "u5", "c6", 0, A),
            want("unparsable", "u6", "c7", 0, A),
        ];
        let chosen = choose(
            wants,
            |_, name| {
                pods.get(name)
                    .map(|(uid, a)| (uid.to_string(), a.map(str::to_string)))
            },
            |_, name| name == "pending",
        );
        let names: Vec<&str> = chosen.iter().map(|w| w.pod.name.as_str()).collect();
        assert_eq!(names, ["differs", "missing", "unparsable"]);
    }

    #[test]
    fn the_newest_sandbox_of_a_pod_wins() {
        let chosen = choose(
            vec![
                want("p", "u1", "old", 60, B),
                want("p", "u1", "new", 1, A),
                want("p", "u1", "older", 120, B),
            ],
            |_, _| Some(("u1".into(), None)),
            |_, _| false,
        );
        assert_eq!(chosen.len(), 1);
        assert_eq!(chosen[0].container, "new");
    }

    #[test]
    fn served_dirs_survive_a_restart_and_are_rewritten_only_on_change() {
        let d = tempfile::tempdir().unwrap();
        let file = served_file(d.path());
        let dirs = ServedDirs::load(file.clone());
        assert!(dirs.all().is_empty());
        let raw = br#"{"cniVersion":"1.0.0","name":"p","type":"plexus","cniDir":"/var/lib/cni/x",
                 "systemNamespaces":["sys"],"apiTimeoutSeconds":2,
                 "delegates":[{"cniVersion":"1.0.0","name":"c","type":"bridge"}]}"#;
        let config = Config::from_bytes(raw).unwrap();
        let cni_path = [PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")];
        dirs.note(&config, raw, &cni_path);
        let written = std::fs::metadata(&file).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        // The runtime's per-call keys are not the network's: no rewrite either.
        let mut per_call: Value = serde_json::from_slice(raw).unwrap();
        per_call["runtimeConfig"] = json!({"portMappings": [{"hostPort": 8080}]});
        dirs.note(&config, &serde_json::to_vec(&per_call).unwrap(), &cni_path);
        assert_eq!(
            std::fs::metadata(&file).unwrap().modified().unwrap(),
            written,
            "unchanged: not rewritten"
        );
        let again = ServedDirs::load(file.clone());
        assert_eq!(
            again.all(),
            [Served {
                cni_dir: "/var/lib/cni/x".into(),
                system_namespaces: vec!["sys".into()],
                api_timeout_ms: 2000,
                config: Some(serde_json::from_slice(raw).unwrap()),
                cni_path: cni_path.to_vec(),
            }]
        );
        // A file that does not parse is a fresh start, not a failure.
        std::fs::write(&file, "{").unwrap();
        assert!(ServedDirs::load(file).all().is_empty());
    }
}
