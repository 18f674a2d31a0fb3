//! Hot-plug's driver (daemon config `hotplug: true`; docs/daemon.md, "Hot-plug"): the pod watch queues each
//! pod of this node whose networks annotation changed ([`crate::seams::k8s::watch::ChangedPods`], bounded, a
//! pod at most once); for each, the newest sandbox of the pod is found from what its ADD left on disk (the
//! cache and the result records: namespace, `CNI_ARGS`), brought in line by [`crate::ops::hotplug`] with the
//! config its ADD ran with, and then the pod's whole network-status is written with one PATCH, followed by
//! its `AddedInterface`/`RemovedInterface` events; `HotplugFailed` Warning events are posted at once.
//! Once the watch has listed, every sandbox of the node is looked at once too: no live event tells of an
//! annotation changed while the daemon was down, nor of an attach a crash cut short.
//!
//! ```text
//!   pod watch ─► ChangedPods ─► run() ─► sandbox (served cniDirs) ─► ops::hotplug::reconcile ─► StatusWriter
//! ```

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Instant, SystemTime},
};

use plexus_cni::CniVersion;

use super::{Shared, handler::delegate_path, metrics::MeteredExec, reconcile::Served};
use crate::{
    ops::{
        self,
        hotplug::{Hotplugged, Sandbox, Skip},
    },
    pure::{config::Config, request::PodRef, status},
    seams::{
        devices::kubelet::Kubelet,
        k8s::{
            cached::Cached,
            client::{ApiCluster, DeferredStatus},
            watch::Changed,
        },
    },
    store::{
        cache::{self, ReadOutcome},
        resultcache,
    },
};

/// Take the queue's changes one at a time until the daemon exits. Hot-plug off: each is dropped, and the
/// log says so once.
pub async fn run(shared: Arc<Shared>) {
    let Some(cache) = shared.cache.clone() else {
        return;
    };
    let changed = cache.changed_pods();
    if shared.config.hotplug {
        // The watch queues only changes it sees live: what changed while the daemon was down, or an attach
        // a crash cut short, is found by looking at each sandbox once the pods (and the NADs they select,
        // so no read goes to the API) are listed. A sandbox in line with its annotation costs no delegate
        // and no API write.
        let mut lists = cache.pod_lists();
        if lists.wait_for(|n| *n > 0).await.is_err() {
            return;
        }
        cache.wait_synced(shared.config.cache_sync_timeout).await;
        reconcile_all(&shared, None).await;
    }
    let mut said = false;
    loop {
        let (next, since) = changed.next_since().await;
        if !shared.config.hotplug {
            if !std::mem::replace(&mut said, true) {
                let which = match &next {
                    Changed::Pod((ns, name)) => format!("pod {ns}/{name}"),
                    Changed::All => "pods".into(),
                };
                tracing::info!(
                    "the networks annotation of {which} changed after its sandbox was set up; hot-plug is off \
                     (daemon config \"hotplug\": true turns it on), so running sandboxes keep their networks \
                     (said once)"
                );
            }
            continue;
        }
        match next {
            Changed::Pod((ns, name)) => {
                let shared = shared.clone();
                let done =
                    tokio::task::spawn_blocking(move || reconcile_pod(&shared, &ns, &name, since))
                        .await;
                if let Err(e) = done {
                    tracing::error!("hot-plug: {e}");
                }
            }
            Changed::All => reconcile_all(&shared, Some(since)).await,
        }
    }
}

/// Every pod of the node with a sandbox in a served cniDir, each newest sandbox brought in line with its
/// annotation (one pass over the caches, not one per pod). `since`: when the change that asked for it was
/// seen (`None`: the pass after the watch listed).
async fn reconcile_all(shared: &Arc<Shared>, since: Option<Instant>) {
    let shared = shared.clone();
    let done = tokio::task::spawn_blocking(move || {
        let Some(cache) = &shared.cache else { return };
        let (mut looked, mut legacy) = (0usize, 0usize);
        for served in shared.served.all() {
            let mut newest: HashMap<(String, String, String), (SystemTime, Sandbox)> =
                HashMap::new();
            for (pod, uid, modified, sandbox) in all_sandboxes(&served) {
                let key = (pod.namespace, pod.name, uid);
                if newest.get(&key).is_none_or(|(m, _)| *m < modified) {
                    newest.insert(key, (modified, sandbox));
                }
            }
            for ((namespace, name, uid), (_, sandbox)) in newest {
                // Only a pod the watch has, with the same UID (a recreated pod's old sandbox is not its).
                let current = cache
                    .pod(&namespace, &name)
                    .and_then(|p| p.metadata.uid.clone());
                if current.as_deref() != Some(uid.as_str()) {
                    continue;
                }
                let Some(config) = served_config(&served, &namespace, &name) else {
                    continue;
                };
                let pod = PodRef {
                    namespace,
                    name,
                    uid: Some(uid),
                    infra_container_id: None,
                };
                if hotplug_sandbox(&shared, &served, &config, &pod, &sandbox, since)
                    == Some(Skip::Legacy)
                {
                    legacy += 1;
                }
                looked += 1;
            }
        }
        if legacy > 0 {
            tracing::info!(
                "hot-plug: looked at the {looked} sandbox(es) of this node's pods; {legacy} of them were set \
                 up by a plexus without hot-plug and keep their networks until their next sandbox"
            );
        } else {
            tracing::info!("hot-plug: looked at the {looked} sandbox(es) of this node's pods");
        }
    })
    .await;
    if let Err(e) = done {
        tracing::error!("hot-plug: {e}");
    }
}

/// The config the ADDs in `served`'s cniDir ran with (`None`, logged: not recorded, or unreadable).
pub(super) fn served_config(served: &Served, namespace: &str, name: &str) -> Option<Config> {
    let config = served
        .config
        .as_ref()
        .ok_or_else(|| "no config is recorded for it (served by an older daemon)".to_string())
        .and_then(|raw| {
            Config::from_bytes(&serde_json::to_vec(raw).unwrap_or_default())
                .map_err(|e| e.to_string())
        });
    match config {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(
                "hot-plug: pod {namespace}/{name}, cniDir {}: {e}; not hot-plugged until an ADD there",
                served.cni_dir.display()
            );
            None
        }
    }
}

/// The sandboxes of pod `namespace/name` (UID `uid`) in `served`'s cniDir, the newest cache first: those
/// whose cluster network's result record names the pod in its `CNI_ARGS`.
pub fn sandboxes(served: &Served, namespace: &str, name: &str, uid: &str) -> Vec<Sandbox> {
    let mut found: Vec<(SystemTime, Sandbox)> = all_sandboxes(served)
        .into_iter()
        .filter(|(pod, rec_uid, _, _)| {
            pod.namespace == namespace && pod.name == name && rec_uid == uid
        })
        .map(|(_, _, modified, sandbox)| (modified, sandbox))
        .collect();
    found.sort_by_key(|(m, _)| std::cmp::Reverse(*m));
    found.into_iter().map(|(_, s)| s).collect()
}

/// Every sandbox in `served`'s cniDir whose cluster network's result record names its pod (and UID) in its
/// `CNI_ARGS` and its network namespace, with its cache's modification time.
fn all_sandboxes(served: &Served) -> Vec<(PodRef, String, SystemTime, Sandbox)> {
    cache::containers(&served.cni_dir)
        .into_iter()
        .filter_map(|cid| sandbox_of(served, &cid))
        .collect()
}

/// Container `cid` of `served`'s cniDir as a running sandbox, when its cluster network's result record names
/// its pod (and UID) in its `CNI_ARGS` and its network namespace; with its cache's modification time.
pub(super) fn sandbox_of(
    served: &Served,
    cid: &str,
) -> Option<(PodRef, String, SystemTime, Sandbox)> {
    let cni_dir = &served.cni_dir;
    let Ok(ReadOutcome::Found(entries)) = cache::read(cni_dir, cid) else {
        return None;
    };
    let master_ifname = entries[0].if_name.clone().unwrap_or_else(|| "eth0".into());
    let master = entries[0]
        .to_attachment(0, &master_ifname, CniVersion::V1_0_0)
        .ok()?;
    let rec = resultcache::read(cni_dir, &master.network.name, cid, &master.ifname).ok()??;
    let (pod, rec_uid) = super::reconcile::pod_of(&rec)?;
    if rec.netns.is_empty() {
        return None;
    }
    let modified = std::fs::metadata(cache::path(cni_dir, cid))
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    Some((
        pod,
        rec_uid,
        modified,
        Sandbox {
            container_id: cid.to_string(),
            netns: rec.netns.clone().into(),
            cni_args: rec.cni_args.clone(),
            master_ifname,
        },
    ))
}

/// Bring the newest sandbox of pod `namespace/name` in line with its annotation, in every cniDir served.
fn reconcile_pod(shared: &Arc<Shared>, namespace: &str, name: &str, since: Instant) {
    let Some(cache) = &shared.cache else { return };
    let Some(uid) = cache
        .pod(namespace, name)
        .and_then(|p| p.metadata.uid.clone())
    else {
        tracing::debug!("hot-plug: pod {namespace}/{name} is gone");
        return;
    };
    for served in shared.served.all() {
        let Some(sandbox) = sandboxes(&served, namespace, name, &uid).into_iter().next() else {
            continue;
        };
        let Some(config) = served_config(&served, namespace, name) else {
            continue;
        };
        let pod = PodRef {
            namespace: namespace.into(),
            name: name.into(),
            uid: Some(uid.clone()),
            infra_container_id: None,
        };
        hotplug_sandbox(shared, &served, &config, &pod, &sandbox, Some(since));
    }
}

/// One sandbox of `served`'s cniDir through [`ops::hotplug::reconcile`]; its events and network-status sent.
/// `since`: when the annotation change was seen (`None`: the pass after the watch listed), for the latency.
/// Returns why the sandbox was left alone, if it was.
fn hotplug_sandbox(
    shared: &Arc<Shared>,
    served: &Served,
    config: &Config,
    pod: &PodRef,
    sandbox: &Sandbox,
    since: Option<Instant>,
) -> Option<Skip> {
    let trigger = if since.is_some() {
        "annotation"
    } else {
        "startup"
    };
    shared.metrics.hotplug_attempt(trigger);
    let parts = HotplugSeams::new(shared, config);
    let seams = parts.seams();
    // The CNI_PATH the ADDs there had (kept in served.json, so known after a restart before any request).
    let path = if served.cni_path.is_empty() {
        shared.search_path.get().unwrap_or_default()
    } else {
        served.cni_path.clone()
    };
    let passthrough = [("PATH".to_string(), delegate_path(shared))];
    let report = ops::hotplug::reconcile(sandbox, config, &seams, &path, &passthrough);
    shared.post_events(config.api_timeout, report.warnings);
    let who = format!("{}/{}", pod.namespace, pod.name);
    let (attached, detached, current) = match report.result {
        Ok(Hotplugged::Reconciled {
            attached,
            detached,
            failed,
            current,
        }) => {
            shared.metrics.hotplugged(trigger, "attached", attached);
            shared.metrics.hotplugged(trigger, "detached", detached);
            shared.metrics.hotplugged(trigger, "failed", failed);
            if attached + detached + failed > 0 {
                tracing::info!(
                    pod = %who,
                    container = %sandbox.container_id,
                    attached,
                    detached,
                    failed,
                    "hot-plug"
                );
            } else {
                // The startup pass looks at every sandbox: one in line is no news.
                tracing::debug!(pod = %who, container = %sandbox.container_id, "hot-plug: in line");
            }
            (attached, detached, current)
        }
        Ok(Hotplugged::Skipped(skip)) => {
            match skip {
                // Deleted while it was looked at: no news. One set up before hot-plug stays so until its
                // next sandbox: the start-up pass counts them in its one line instead of one each.
                Skip::Gone | Skip::Legacy => tracing::debug!(
                    pod = %who,
                    container = %sandbox.container_id,
                    "hot-plug: left alone: {skip}"
                ),
                Skip::Unfinished => tracing::info!(
                    pod = %who,
                    container = %sandbox.container_id,
                    "hot-plug: left alone: {skip}"
                ),
            }
            return Some(skip);
        }
        Err(e) => {
            shared.metrics.hotplugged(trigger, "failed", 1);
            tracing::warn!(pod = %who, container = %sandbox.container_id, "hot-plug failed: {e}");
            return None;
        }
    };
    if attached + detached == 0 {
        return None;
    }
    let changes = report.changes;
    if config.system_namespaces.contains(&pod.namespace) {
        // No network-status there (docs/multus-compat.md, "Network status"): the events alone.
        if let Some(since) = since {
            shared.metrics.hotplug_latency(trigger, since.elapsed());
        }
        shared.post_events(config.api_timeout, changes);
        return None;
    }
    // The whole set, so an add and a remove together never lose an entry.
    let rendered = status::render_attached(&current, crate::seams::devices::info::read);
    let mut job = DeferredStatus::rendered(
        pod.clone(),
        pod.uid.as_deref().unwrap_or_default(),
        rendered,
    );
    job.added = changes;
    // The latency ends when the network-status write does, not after the events that follow it.
    let metrics = shared.metrics.clone();
    let write = shared.status.submit_then(
        shared.writer(config.api_timeout),
        &sandbox.container_id,
        job,
        move |_| {
            if let Some(since) = since {
                metrics.hotplug_latency(trigger, since.elapsed());
            }
        },
    );
    shared.handle.spawn(write);
    None
}

/// What a hot-plug runs against, for one node config: the API with the daemon's caches in front of it, the
/// delegates timed into the metrics, the kubelet. Shared by annotation hot-plugs and `/delegate`; its parts
/// are the ones a `/cni` request gets (`Shared::cluster`, `Shared::metered_exec`).
pub(super) struct HotplugSeams<'s> {
    shared: &'s Shared,
    cluster: Cached<Arc<ApiCluster>>,
    exec: MeteredExec<'s>,
    kubelet: Kubelet,
}

impl<'s> HotplugSeams<'s> {
    /// The seams' parts for `config`.
    pub(super) fn new(shared: &'s Shared, config: &Config) -> HotplugSeams<'s> {
        HotplugSeams {
            shared,
            cluster: shared.cluster(config, false),
            exec: shared.metered_exec(),
            kubelet: Kubelet::from_config(config),
        }
    }

    /// The core's seams over these parts; work is done before the caller answers.
    pub(super) fn seams(&self) -> ops::Seams<'_> {
        ops::Seams {
            exec: &self.exec,
            netns: self.shared.netns.as_ref(),
            cluster: Some(&self.cluster),
            kubelet: &self.kubelet,
            defer_work: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::{
        pure::netconf::NetworkConfig,
        pure::plan::{NetworkRequest, plan},
        store::fsutil,
    };

    fn served(dir: &Path) -> Served {
        Served {
            cni_dir: dir.to_path_buf(),
            system_namespaces: Vec::new(),
            api_timeout_ms: 1000,
            config: None,
            cni_path: Vec::new(),
        }
    }

    /// Container `cid` of pod `ns1/name` (UID `uid`) as its ADD left it.
    fn add(dir: &Path, cid: &str, name: &str, uid: &str) {
        let net = NetworkConfig::from_value(
            json!({"cniVersion": "1.0.0", "name": "cluster", "type": "bridge"}),
        )
        .unwrap();
        let a = plan("eth0", vec![NetworkRequest::plain(net)]).unwrap();
        let behind = fsutil::WriteBehind::default();
        cache::write(dir, cid, &a, &behind).unwrap();
        behind.flush().unwrap();
        let rec = resultcache::CachedAttachment {
            kind: resultcache::KIND.into(),
            container_id: cid.into(),
            config: a[0].network.bytes.clone(),
            if_name: "eth0".into(),
            network_name: "cluster".into(),
            netns: format!("/run/netns/{cid}"),
            cni_args: [
                ("K8S_POD_NAMESPACE", "ns1"),
                ("K8S_POD_NAME", name),
                ("K8S_POD_UID", uid),
            ]
            .map(|(k, v)| [k.to_string(), v.to_string()])
            .to_vec(),
            capability_args: Default::default(),
            result: Some(json!({"cniVersion": "1.0.0"})),
        };
        resultcache::write(dir, &rec).unwrap();
    }

    /// A pod's sandboxes come from the records its ADD wrote: the netns and CNI_ARGS they name; another
    /// pod's, or a recreated pod's (other UID), are not its.
    #[test]
    fn a_pods_sandboxes_are_found_from_its_records_newest_first() {
        let d = tempfile::tempdir().unwrap();
        add(d.path(), "old", "p1", "u1");
        std::thread::sleep(std::time::Duration::from_millis(20));
        add(d.path(), "new", "p1", "u1");
        add(d.path(), "other", "p2", "u2");
        add(d.path(), "recreated", "p1", "u9");
        let found = sandboxes(&served(d.path()), "ns1", "p1", "u1");
        let ids: Vec<&str> = found.iter().map(|s| s.container_id.as_str()).collect();
        assert_eq!(ids, ["new", "old"]);
        assert_eq!(found[0].netns, Path::new("/run/netns/new"));
        assert_eq!(found[0].master_ifname, "eth0");
        assert!(
            found[0]
                .cni_args
                .contains(&["K8S_POD_NAME".to_string(), "p1".to_string()])
        );
        assert!(sandboxes(&served(d.path()), "ns1", "p3", "u3").is_empty());
    }
}
