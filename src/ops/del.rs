//! DEL: tear down from the cache in reverse, trying every delegate and reporting all failures; idempotent;
//! never skips teardown silently when the cache is missing or corrupt (NPWG-63, CNI-14..CNI-17,
//! docs/multus-compat.md, "DEL").

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{LazyLock, Mutex},
};

use serde_json::{Map, Value};

use super::Ctx;
use crate::{
    cache::{self, ReadOutcome},
    devices,
    error::Error,
    invoke::is_internal,
    lock::ContainerLock,
    netconf::NetworkConfig,
    plan::{self, Attachment, Requests},
    resultcache,
    trash::Trash,
};

/// The attachments of container `cid`: from its cache, else rebuilt from what the node still knows.
pub(super) fn load(ctx: &Ctx<'_>, cid: &str, master_ifname: &str) -> Vec<Attachment> {
    let cni_dir = &ctx.config.cni_dir;
    let who = ctx.who();
    match cache::read(cni_dir, cid) {
        Ok(ReadOutcome::Found(entries)) => {
            let mut out = Vec::with_capacity(entries.len());
            let mut broken = false;
            for (i, e) in entries.iter().enumerate() {
                match e.to_attachment(i, master_ifname, ctx.config.cni_version) {
                    Ok(a) => out.push(a),
                    Err(err) => {
                        tracing::error!(
                            "[{who}]: {err}; falling back to the result cache and the config's networks for it"
                        );
                        broken = true;
                    }
                }
            }
            if broken {
                fallback(ctx, cid, master_ifname, out, Rebuild::WithPod)
            } else {
                out
            }
        }
        // ADD writes the cache before any delegate runs, so without one plexus attached nothing here that
        // the result cache does not record: the pod is not read (the kubelet's cleanup repeats DELs of
        // long-gone sandboxes, whose pods are gone too).
        Ok(ReadOutcome::Missing) => {
            tracing::info!(
                "[{who}]: no cache for container {cid}; tearing down from the result cache and the config's networks"
            );
            fallback(ctx, cid, master_ifname, Vec::new(), Rebuild::NodeOnly)
        }
        Ok(ReadOutcome::Corrupt(reason)) => {
            tracing::error!(
                "[{who}]: the cache {} is corrupt ({reason}); tearing down from the result cache and the config's networks instead",
                cache::path(cni_dir, cid).display()
            );
            fallback(ctx, cid, master_ifname, Vec::new(), Rebuild::WithPod)
        }
        Err(e) => {
            tracing::error!(
                "[{who}]: cannot read the cache {} ({e}); tearing down from the result cache and the config's networks instead",
                cache::path(cni_dir, cid).display()
            );
            fallback(ctx, cid, master_ifname, Vec::new(), Rebuild::WithPod)
        }
    }
}

/// What a DEL without a usable cache rebuilds besides the result cache's records.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rebuild {
    /// The node's own networks and, with the pod still in the API, its networks too (a cache that exists
    /// but cannot be read hid an ADD's attachments).
    WithPod,
    /// The node's own networks only (no cache: nothing else was attached).
    NodeOnly,
}

/// For [`super::add`]: the current container's attachments.
pub(super) fn cached_or_fallback(ctx: &Ctx<'_>) -> Vec<Attachment> {
    load(ctx, ctx.env.container_id(), ctx.env.ifname())
}

/// Every attachment the result cache records for the container (each holds its exact config), then the
/// config's own networks not already covered. The cluster network comes first, so it is torn down last.
fn fallback(
    ctx: &Ctx<'_>,
    cid: &str,
    master_ifname: &str,
    mut have: Vec<Attachment>,
    rebuild: Rebuild,
) -> Vec<Attachment> {
    let mut seen: HashSet<(String, String)> = have
        .iter()
        .map(|a| (a.network.name.clone(), a.ifname.clone()))
        .collect();
    for rec in resultcache::list(&ctx.config.cni_dir, Some(cid)) {
        if !seen.insert((rec.network_name.clone(), rec.if_name.clone())) {
            continue;
        }
        let network = match NetworkConfig::from_bytes(&rec.config) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(
                    "[{}]: result cache entry {}: unusable config: {e}",
                    ctx.who(),
                    rec.network_name
                );
                continue;
            }
        };
        let master = rec.if_name == master_ifname;
        have.push(Attachment {
            status_name: network.name.clone(),
            network,
            ifname: rec.if_name.clone(),
            master,
            ifname_request: None,
            requests: if master {
                Requests::default()
            } else {
                requests_from_capability_args(&rec.capability_args)
            },
            resource_name: None,
            auxiliary: false,
        });
    }
    // With the pod still in the API, its own networks can be rebuilt too (as Go Multus does); any failure
    // there only narrows what the fallback covers.
    let pod_networks = match ctx.env.pod().filter(|_| rebuild == Rebuild::WithPod) {
        Some(pod) => ctx
            .seams
            .cluster
            .pod_networks(&pod, ctx.config)
            .unwrap_or_else(|e| {
                tracing::warn!(
                    "[{}]: cannot read the pod's networks for teardown: {e}",
                    ctx.who()
                );
                Default::default()
            }),
        None => Default::default(),
    };
    // The auxiliary chain as its directory holds it now (it is last, as on ADD); a config that cannot have
    // one must not stop the other networks' teardown.
    let auxiliary = super::auxiliary::chain(ctx).unwrap_or_else(|e| {
        tracing::warn!(
            "[{}]: the auxiliary chain is left out of the teardown: {e}",
            ctx.who()
        );
        None
    });
    match ctx
        .node_networks(pod_networks.default_network)
        .and_then(|mut reqs| {
            reqs.extend(pod_networks.networks);
            reqs.extend(auxiliary);
            plan::plan(master_ifname, reqs).map_err(|source| Error::Plan {
                who: ctx.who(),
                source,
            })
        }) {
        Ok(planned) => {
            let dirs = ctx.config.search_path(&ctx.env.path);
            for a in planned {
                if !seen.insert((a.network.name.clone(), a.ifname.clone())) {
                    continue;
                }
                // Rebuilt, and nothing records it: with a plugin not installed it was never attached (ADD
                // finds every plugin before any runs), and its DEL could only fail, on every retry.
                let missing = a
                    .network
                    .plugins
                    .iter()
                    .filter(|p| !is_internal(&p.plugin_type))
                    .find(|p| ctx.seams.exec.find(&p.plugin_type, &dirs).is_err());
                if let Some(p) = missing {
                    tracing::warn!(
                        "[{}]: network {:?}: plugin {:?} is not installed and nothing records an attachment of the network; nothing to delete",
                        ctx.who(),
                        a.status_name,
                        p.plugin_type
                    );
                    continue;
                }
                have.push(a);
            }
        }
        Err(e) => tracing::error!(
            "[{}]: cannot load the config's networks for teardown: {e}",
            ctx.who()
        ),
    }
    have.sort_by_key(|a| !a.master);
    have
}

/// A secondary's requests as libcni recorded them in its capability arguments.
pub(crate) fn requests_from_capability_args(args: &Map<String, Value>) -> Requests {
    let s = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_string);
    Requests {
        mac: s("mac"),
        ips: args
            .get("ips")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        infiniband_guid: s("infinibandGUID"),
        port_mappings: args.get("portMappings").cloned(),
        bandwidth: args.get("bandwidth").cloned(),
        device_id: s("deviceID"),
        gateways: None,
        device_info_file: s("CNIDeviceInfoFile"),
    }
}

/// DEL `attachments` of container `cid` in reverse order, trying every one (NPWG-63).
pub(super) fn teardown_container(
    ctx: &Ctx<'_>,
    cid: &str,
    netns: Option<&Path>,
    attachments: Vec<Attachment>,
) -> Result<(), Error> {
    teardown_container_with(ctx, cid, netns, attachments, None)
}

/// [`teardown_container`], each result record moved into `trash` (when given) instead of unlinked.
fn teardown_container_with(
    ctx: &Ctx<'_>,
    cid: &str,
    netns: Option<&Path>,
    mut attachments: Vec<Attachment>,
    trash: Option<&Trash>,
) -> Result<(), Error> {
    let invoker = ctx.invoker();
    let mut errors = Vec::new();
    // A Go Multus cache records the device but not its device-info file: derive the name as Multus does.
    for a in attachments.iter_mut() {
        if a.requests.device_id.is_some() && a.requests.device_info_file.is_none() {
            let file =
                devices::cni_file(&ctx.config.device_info_dir, &a.status_name, cid, &a.ifname);
            a.requests.device_info_file = Some(file.display().to_string());
        }
    }
    for a in attachments.iter().rev() {
        let result = ctx.runtime_conf(a, cid, netns, false).and_then(|rt| {
            invoker
                .del_with(&a.network, &rt, trash)
                .map_err(|source| Error::Delegate {
                    who: ctx.who(),
                    network: a.status_name.clone(),
                    ifname: a.ifname.clone(),
                    verb: "deleting container from",
                    source,
                })
        });
        match result {
            Ok(()) => {
                // NPWG-71: the CNI device-info file goes with the attachment.
                devices::info::remove(a);
                tracing::info!(network = %a.status_name, ifname = %a.ifname, "detached")
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Many(errors))
    }
}

/// DEL the current container's `attachments`.
pub(super) fn teardown(ctx: &Ctx<'_>, attachments: Vec<Attachment>) -> Result<(), Error> {
    teardown_container(
        ctx,
        ctx.env.container_id(),
        ctx.env.netns.as_deref(),
        attachments,
    )
}

pub(super) fn del(ctx: &Ctx<'_>) -> Result<(), Error> {
    if let Some(p) = &ctx.config.readiness_indicator
        && !p.exists()
    {
        // NPWG-60 asks to block until ready, but a DEL must not wait on the default network (Multus warns).
        tracing::warn!(
            "[{}]: readiness indicator file {} is missing; deleting anyway",
            ctx.who(),
            p.display()
        );
    }
    let cid = ctx.env.container_id();
    let cni_dir = &ctx.config.cni_dir;
    // Daemon mode: an ADD of this container whose writes still wait for the after-reply thread (a DEL right
    // after its ADD) hands them over with its lock, instead of this DEL waiting for the thread to reach
    // them. Their files are removed below, so they are written without fsync: in place, so the teardown
    // reads the cache and each delegate's prevResult as usual.
    let taken = ctx
        .seams
        .after_reply
        .and_then(|_| super::deferred::take_over(cni_dir, cid));
    let lock = match taken {
        Some(d) => {
            if let Err(e) = d.behind.flush_unsynced() {
                tracing::warn!(
                    "[{}]: a write its ADD left for after the reply failed: {e}",
                    ctx.who()
                );
            }
            d.lock
        }
        None => {
            ContainerLock::acquire(cni_dir, cid, ctx.config.lock_timeout).map_err(|source| {
                Error::Lock {
                    who: ctx.who(),
                    source,
                }
            })?
        }
    };
    // Daemon mode: the container's files are moved into the trash (no disk wait) and unlinked after the
    // reply; the thin binary unlinks them now, as before.
    let trash = ctx.seams.after_reply.map(|_| Trash::new(cni_dir));
    let attachments = load(ctx, cid, ctx.env.ifname());
    let result = teardown_container_with(
        ctx,
        cid,
        ctx.env.netns.as_deref(),
        attachments,
        trash.as_ref(),
    );
    // retryDeleteOnError keeps the cache after a failed DEL so the runtime can retry with it (#926), except
    // when the failure says something is already gone.
    let keep = ctx.config.retry_delete_on_error
        && result
            .as_ref()
            .is_err_and(|e| !e.to_string().contains("no such file or directory"));
    let removed = if keep {
        tracing::warn!(
            "[{}]: DEL failed; keeping the cache for a retry (retryDeleteOnError)",
            ctx.who()
        );
        Ok(())
    } else {
        let file = cache::path(cni_dir, cid);
        match &trash {
            Some(t) => t.discard(&file),
            None => cache::remove(cni_dir, cid),
        }
        .map_err(|source| Error::Cache {
            who: ctx.who(),
            op: "remove",
            path: file,
            source,
        })
        .map(|()| {
            remove_interrupted_writes_with(cni_dir, cid, trash.as_ref());
            lock.release_and_remove();
        })
    };
    match (ctx.seams.after_reply, trash) {
        // The first DEL of a cniDir in this process also empties what an earlier daemon, killed before
        // its unlinks, left there (the daemon's start does so only for the cniDir its config names).
        (Some(slot), Some(trash)) if !trash.is_empty() || first_del_in(cni_dir) => {
            // (A poisoned slot drops the closure: the trash is then emptied by the next DEL or GC.)
            if let Ok(mut s) = slot.lock() {
                *s = Some(Box::new(move || trash.empty()));
            }
        }
        (Some(_), _) => {}
        // The thin binary: what a daemon killed after a DEL's reply left in the trash (usually nothing
        // there: one failed opendir).
        (None, _) => {
            crate::trash::sweep(cni_dir);
        }
    }
    removed?;
    result
}

/// Whether this is the first daemon DEL in `cni_dir` of this process (its trash not yet swept).
fn first_del_in(cni_dir: &Path) -> bool {
    static SWEPT: LazyLock<Mutex<HashSet<PathBuf>>> = LazyLock::new(Mutex::default);
    SWEPT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(cni_dir.to_path_buf())
}

/// Remove the temp files of atomic writes for `cid` that a killed plexus never renamed into place
/// (`.<cid>.tmp.<pid>` in cniDir, `.<network>-<cid>-<ifname>.tmp.<pid>` in its result cache). Called
/// under the container's lock, so no live writer owns them; best effort, like the rest of teardown.
pub(super) fn remove_interrupted_writes(cni_dir: &Path, cid: &str) {
    remove_interrupted_writes_with(cni_dir, cid, None)
}

/// [`remove_interrupted_writes`], into `trash` when given.
fn remove_interrupted_writes_with(cni_dir: &Path, cid: &str, trash: Option<&Trash>) {
    let infix = format!("-{cid}-");
    let is_temp_of = |name: &str, exact: bool| {
        cache::is_temp_of(name, |target| {
            if exact {
                target == cid
            } else {
                target.contains(&infix)
            }
        })
    };
    for (dir, exact) in [
        (cni_dir.to_path_buf(), true),
        (crate::resultcache::results_dir(cni_dir), false),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_name().to_str().is_some_and(|n| is_temp_of(n, exact)) {
                tracing::debug!("removing {} (an interrupted write)", e.path().display());
                let _ = match trash {
                    Some(t) => t.discard(&e.path()),
                    None => crate::fsutil::remove_if_exists(&e.path()),
                };
            }
        }
    }
}
