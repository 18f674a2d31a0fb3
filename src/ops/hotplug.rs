//! Hot-plug: bring a running sandbox's pod networks in line with its pod's networks annotation, one
//! attachment at a time, each the same transaction as the runtime's ADD (the container's lock, the pure
//! selection and plan, the allow-list and plugin checks, the cache staged before the delegate runs, the
//! result record after it, rollback on failure) or a DEL of that one attachment (docs/daemon.md,
//! "Hot-plug"). The daemon drives it (`crate::edges::daemon::hotplug`); only the daemon can, since a thin
//! binary lives no longer than one runtime call. Go Multus's `/delegate` calls ([`delegate`]) run through the
//! same attach and detach.
//!
//! Crash safety: an attach rewrites the cache with its entry (marked hot-plugged) before its delegate runs
//! and writes the result record after; a detach runs the DEL first and rewrites the cache after. So the
//! runtime's DEL always finds what is attached, and an entry marked hot-plugged without a record is an
//! attach that never finished: the next reconcile undoes it first, then attaches again if still wanted.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use k8s_openapi::api::core::v1::Event;
use plexus_cni::CniResult;

use super::{
    Ctx, Seams, add,
    kube::Kube,
    teardown,
    transaction::{Transaction, write_cache},
};
use crate::{
    ops::error::Error,
    pure::{
        annotations::NETWORKS_ANNOTATION,
        config::Config,
        hotplug::{self, HOTPLUG_FAILED},
        plan::{Attachment, NetworkRequest},
        request::CniEnv,
    },
    seams::devices,
    store::{
        cache::{self, ReadOutcome},
        lock::ContainerLock,
        refusals::{self, Posted},
        resultcache,
    },
};

/// A running sandbox, as the files its ADD left describe it (the result records carry the namespace and
/// the runtime's `CNI_ARGS`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sandbox {
    /// The container (sandbox) ID.
    pub container_id: String,
    /// Its network namespace, as the runtime named it.
    pub netns: PathBuf,
    /// The runtime's `CNI_ARGS` (`K8S_POD_*`), replayed to every delegate.
    pub cni_args: Vec<[String; 2]>,
    /// The cluster network's interface (`CNI_IFNAME` of its ADD).
    pub master_ifname: String,
}

/// Why a sandbox is left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Its cache is gone: the sandbox is being (or was) deleted, maybe while the reconcile ran.
    Gone,
    /// Its ADD has not finished (only its staged cache, or an entry the runtime's ADD made has no record).
    Unfinished,
    /// Its cache is from before hot-plug: which entries are the pod's networks is not known.
    Legacy,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Skip::Gone => "its cache is gone: the sandbox is being deleted",
            Skip::Unfinished => "its ADD has not finished",
            Skip::Legacy => {
                "its cache is from a plexus without hot-plug (it does not say which networks are the pod's)"
            }
        })
    }
}

/// How a reconcile of one sandbox ended.
#[derive(Debug)]
pub enum Hotplugged {
    /// Left alone, and why. Nothing was posted or is to be written: a sandbox deleted while it was being
    /// looked at is no failure of the pod's.
    Skipped(Skip),
    /// Reconciled.
    Reconciled {
        /// Attachments added.
        attached: usize,
        /// Attachments removed.
        detached: usize,
        /// Attachments that failed or were refused (each has a Warning event).
        failed: usize,
        /// What the sandbox has now, in attach order, with each result (the auxiliary chain left out):
        /// the whole network-status to write.
        current: Vec<(Attachment, CniResult)>,
    },
}

/// A reconcile's outcome and its events.
#[derive(Debug)]
pub struct Report {
    /// The outcome, or the failure that stopped it (the pod's annotation refused, the API down, …).
    pub result: Result<Hotplugged, Error>,
    /// Warning events, to post now: those the sandbox's last look posted already, and still stand, left
    /// out unless the networks annotation was edited since ([`crate::store::refusals`]).
    pub warnings: Vec<Event>,
    /// `AddedInterface`/`RemovedInterface` events, to post once the network-status write lands.
    pub changes: Vec<Event>,
}

/// The sandbox's pod networks brought in line with its pod's networks annotation, read through
/// `seams.cluster`. `path` is where plugins are looked up besides `binDir` (`CNI_PATH`), `passthrough` the
/// environment the delegates get (`PATH`).
pub fn reconcile(
    sandbox: &Sandbox,
    config: &Config,
    seams: &Seams<'_>,
    path: &[PathBuf],
    passthrough: &[(String, String)],
) -> Report {
    let mut changes = Vec::new();
    // The networks annotation this look acted on (`None`: the pod was not read).
    let mut annotation = None;
    let (result, warnings) = on_sandbox(sandbox, config, seams, path, passthrough, |ctx| {
        let result = run(ctx, &mut changes);
        if let Err(e) = &result {
            ctx.kube
                .warn_pod(HOTPLUG_FAILED, format!("hot-plug failed: {e}"));
        }
        annotation = ctx
            .kube
            .pod_annotation(NETWORKS_ANNOTATION)
            .map(|v| refusals::digest(v.as_deref().unwrap_or_default()));
        result
    });
    if let Ok(Hotplugged::Skipped(_)) = &result {
        // Left alone (a sandbox deleted mid-way included): whatever was collected on the way is moot.
        return Report {
            result,
            warnings: Vec::new(),
            changes: Vec::new(),
        };
    }
    let warnings = unposted(config, &sandbox.container_id, warnings, annotation);
    Report {
        result,
        warnings,
        changes,
    }
}

/// Of a look's Warning `warnings`, those to post: all of them when the networks annotation (its
/// [`refusals::digest`], `None` when the look did not read it) differs from the one the previous look
/// acted on (the user edited it: the edit is answered in full, the same refusal included), else those the
/// previous look did not post. What this look found is recorded as what stands, so a refusal that goes away
/// and comes back is posted again. Under the container's lock and only while its cache exists, so a DEL
/// never leaves the record behind.
fn unposted(
    config: &Config,
    cid: &str,
    warnings: Vec<Event>,
    annotation: Option<String>,
) -> Vec<Event> {
    let cni_dir = &config.cni_dir;
    let lock = match ContainerLock::acquire(cni_dir, cid, config.lock_timeout) {
        Ok(lock) => lock,
        Err(e) => {
            // Posting again is better than saying nothing.
            tracing::warn!(container = %cid, "hot-plug: the refusals posted before are not known: {e}");
            return warnings;
        }
    };
    if !cache::path(cni_dir, cid).is_file() {
        let _ = refusals::remove(cni_dir, cid, None);
        lock.release_and_remove();
        return Vec::new();
    }
    let key = |e: &Event| Posted {
        reason: e.reason.clone().unwrap_or_default(),
        message: e.message.clone().unwrap_or_default(),
    };
    let before = refusals::read(cni_dir, cid);
    // Not known on either side is no edit: a look that could not read the pod says nothing of it, and a
    // record of the first form was written by the daemon this one replaced, whose restart must stay quiet.
    let edited =
        matches!((&annotation, &before.annotation), (Some(now), Some(then)) if now != then);
    let now = refusals::Record {
        annotation: annotation.or_else(|| before.annotation.clone()),
        posted: warnings.iter().map(key).collect(),
    };
    if now != before
        && let Err(e) = refusals::write(cni_dir, cid, &now)
    {
        tracing::warn!(container = %cid, "hot-plug: cannot record the refusals posted: {e}");
    }
    drop(lock);
    if edited {
        return warnings;
    }
    let found = warnings.len();
    let fresh: Vec<Event> = warnings
        .into_iter()
        .filter(|e| !before.posted.contains(&key(e)))
        .collect();
    if fresh.len() < found {
        tracing::debug!(
            container = %cid,
            "hot-plug: {} warning(s) not posted again: they stand as posted before, for the same annotation",
            found - fresh.len()
        );
    }
    fresh
}

/// `work` on the sandbox's context (its environment, the seams, a Kube that collects Warning events), and
/// the events it collected; a sandbox whose environment cannot be built fails before any work.
fn on_sandbox<T>(
    sandbox: &Sandbox,
    config: &Config,
    seams: &Seams<'_>,
    path: &[PathBuf],
    passthrough: &[(String, String)],
    work: impl FnOnce(&Ctx<'_>) -> Result<T, Error>,
) -> (Result<T, Error>, Vec<Event>) {
    let env = match env(sandbox, path, passthrough) {
        Ok(env) => env,
        Err(e) => return (Err(e), Vec::new()),
    };
    let ctx = Ctx {
        env: &env,
        config,
        seams,
        kube: Kube::new(seams.cluster, config, true),
    };
    let result = work(&ctx);
    (result, ctx.kube.take_events())
}

/// What a `/delegate` call (Go Multus's hot-plug endpoint, docs/daemon.md "`/delegate`") asks of one
/// interface of a running sandbox.
#[derive(Debug, Clone, PartialEq)]
pub enum DelegateVerb {
    /// Attach the caller's network on the interface.
    Add,
    /// Detach what is attached on the interface.
    Del,
    /// Say whether something is attached on the interface (its record and its link are there).
    Check,
}

/// One `/delegate` call: what to do, on which interface, with which network.
#[derive(Debug, Clone)]
pub struct DelegateCall {
    /// ADD, DEL or CHECK.
    pub verb: DelegateVerb,
    /// The interface (`CNI_IFNAME`).
    pub ifname: String,
    /// The caller's network, its interface attributes as its requests (ADD's; DEL uses what the cache has).
    pub network: NetworkRequest,
}

/// A `/delegate` call's outcome: ADD's result, and the Warning events to post.
#[derive(Debug)]
pub struct Delegated {
    /// ADD's result (`None` for DEL and CHECK), or why it failed.
    pub result: Result<Option<CniResult>, Error>,
    /// Warning events (a network refused by the allow-list), to post now.
    pub warnings: Vec<Event>,
}

/// One `/delegate` call on `sandbox`: the call's network attached on its interface, or the attachment on
/// that interface detached or checked. The pod must exist
/// (with the sandbox's UID). An ADD is the same transaction as an annotation's attach (lock, cache written
/// with the entry before the delegate runs, rollback), so the runtime's DEL tears it down too; its entry is
/// not one of the pod's annotation networks, so the annotation reconcile leaves it alone.
pub fn delegate(
    sandbox: &Sandbox,
    config: &Config,
    seams: &Seams<'_>,
    path: &[PathBuf],
    passthrough: &[(String, String)],
    call: DelegateCall,
) -> Delegated {
    let (result, warnings) = on_sandbox(sandbox, config, seams, path, passthrough, |ctx| {
        delegated(ctx, call)
    });
    Delegated { result, warnings }
}

fn delegated(ctx: &Ctx<'_>, call: DelegateCall) -> Result<Option<CniResult>, Error> {
    let DelegateCall {
        verb,
        ifname,
        network,
    } = call;
    let ifname = ifname.as_str();
    let who = ctx.who();
    let cid = ctx.env.container_id().to_string();
    let refuse = |reason: String| Error::NotDelegable {
        who: who.clone(),
        container_id: cid.clone(),
        ifname: ifname.to_string(),
        reason,
    };
    let Some(pod) = ctx.env.pod() else {
        return Err(Error::UnknownContainer {
            who: who.clone(),
            container_id: cid.clone(),
        });
    };
    // Go Multus reads the pod for every call, DEL too: a pod that is gone (or recreated) is refused.
    ctx.kube.pod(&pod).map_err(|source| Error::Cluster {
        who: who.clone(),
        source,
    })?;
    let netns = ctx.env.netns.clone().unwrap_or_default();
    let links = || {
        ctx.seams
            .netns
            .start_link_names(&netns)
            .wait()
            .map_err(|source| Error::Netns {
                who: who.clone(),
                network: network.status_name.clone(),
                netns: netns.clone(),
                source,
            })
    };
    // Interrupted hot-plugs undone first, so what is attached is what the cache says.
    let current = match settle(ctx)? {
        Ok(list) => list,
        Err(why) => return Err(refuse(format!("the sandbox is left alone: {why}"))),
    };
    let on_ifname = current.iter().find(|a| a.ifname == ifname);
    match verb {
        DelegateVerb::Add => {
            if let Some(a) = on_ifname {
                return Err(refuse(format!(
                    "network {} is attached on it already",
                    a.status_name
                )));
            }
            if links()?.iter().any(|l| l == ifname) {
                return Err(Error::InterfaceExists {
                    who: who.clone(),
                    network: network.status_name.clone(),
                    ifname: ifname.to_string(),
                    netns: netns.clone(),
                });
            }
            if let Err(refusal) = ctx
                .config
                .allowed_plugin_types
                .check(&pod.namespace, &network.network)
            {
                ctx.kube.warn_pod(
                    add::PLUGIN_NOT_ALLOWED,
                    crate::ops::error::plugin_not_allowed(&network.status_name, &refusal),
                );
                return Err(Error::PluginNotAllowed {
                    who: who.clone(),
                    network: network.status_name.clone(),
                    refusal,
                });
            }
            let mut a = planned(network, ifname);
            // Not one of the annotation's networks: the annotation reconcile keeps it as it is.
            a.pod_network = false;
            a.ifname_request = Some(ifname.to_string());
            match attach(ctx, &netns, a)? {
                Ok(result) => Ok(Some(result)),
                Err(_) => Err(Error::UnknownContainer {
                    who: who.clone(),
                    container_id: cid.clone(),
                }),
            }
        }
        DelegateVerb::Del => match on_ifname {
            // Nothing there: DEL is idempotent.
            None => Ok(None),
            Some(a) if a.master || a.auxiliary => Err(refuse(format!(
                "it is the sandbox's own network {}, set up with the sandbox; it is not detached by /delegate",
                a.status_name
            ))),
            Some(a) => match detach(ctx, a)? {
                Ok(()) => Ok(None),
                Err(_) => Err(Error::UnknownContainer {
                    who: who.clone(),
                    container_id: cid.clone(),
                }),
            },
        },
        DelegateVerb::Check => match on_ifname {
            None => Err(refuse("nothing is attached on it".into())),
            Some(a) if !links()?.iter().any(|l| l == ifname) => Err(refuse(format!(
                "network {} is attached on it, but the link is not in {}",
                a.status_name,
                netns.display()
            ))),
            Some(_) => Ok(None),
        },
    }
}

/// The environment of an ADD of the sandbox, as its runtime gave it.
fn env(
    sandbox: &Sandbox,
    path: &[PathBuf],
    passthrough: &[(String, String)],
) -> Result<CniEnv, Error> {
    let args: Vec<String> = sandbox
        .cni_args
        .iter()
        .map(|[k, v]| format!("{k}={v}"))
        .collect();
    let path: Vec<String> = path.iter().map(|p| p.display().to_string()).collect();
    let mut vars: Vec<(String, String)> = passthrough.to_vec();
    vars.extend(
        [
            ("CNI_COMMAND", "ADD".to_string()),
            ("CNI_CONTAINERID", sandbox.container_id.clone()),
            ("CNI_NETNS", sandbox.netns.display().to_string()),
            ("CNI_IFNAME", sandbox.master_ifname.clone()),
            ("CNI_ARGS", args.join(";")),
            ("CNI_PATH", path.join(":")),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    Ok(CniEnv::from_vars(vars)?.expect("CNI_COMMAND is set"))
}

fn lock(ctx: &Ctx<'_>) -> Result<ContainerLock, Error> {
    ContainerLock::acquire(
        &ctx.config.cni_dir,
        ctx.env.container_id(),
        ctx.config.lock_timeout,
    )
    .map_err(|source| Error::Lock {
        who: ctx.who(),
        source,
    })
}

/// The sandbox's lock, and its attachments in attach order, or why it is left alone (a sandbox gone has
/// its lock file removed: it must not outlive the sandbox).
fn locked(ctx: &Ctx<'_>) -> Result<Result<(ContainerLock, Vec<Attachment>), Skip>, Error> {
    let lock = lock(ctx)?;
    match load(ctx)? {
        Ok(list) => Ok(Ok((lock, list))),
        Err(skip) => {
            if skip == Skip::Gone {
                lock.release_and_remove();
            }
            Ok(Err(skip))
        }
    }
}

/// The sandbox's attachments (under its lock).
fn load(ctx: &Ctx<'_>) -> Result<Result<Vec<Attachment>, Skip>, Error> {
    let (cni_dir, cid) = (&ctx.config.cni_dir, ctx.env.container_id());
    let path = cache::path(cni_dir, cid);
    let cache_error = |source| Error::Cache {
        who: ctx.who(),
        op: "read",
        path: path.clone(),
        source,
    };
    let entries = match cache::read(cni_dir, cid).map_err(cache_error)? {
        ReadOutcome::Missing => return Ok(Err(Skip::Gone)),
        ReadOutcome::Found(_) if !path.is_file() => return Ok(Err(Skip::Unfinished)),
        ReadOutcome::Found(entries) if entries.iter().any(|e| e.pod_network.is_none()) => {
            return Ok(Err(Skip::Legacy));
        }
        ReadOutcome::Found(entries) => entries,
        ReadOutcome::Corrupt(reason) => {
            return Err(Error::CacheCorrupt {
                who: ctx.who(),
                path,
                reason,
            });
        }
    };
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let a = e
            .to_attachment(i, ctx.env.ifname(), ctx.config.cni_version)
            .map_err(|e| Error::CacheCorrupt {
                who: ctx.who(),
                path: path.clone(),
                reason: e.to_string(),
            })?;
        out.push(a);
    }
    Ok(Ok(out))
}

/// `a`'s result, from its record (`None`: no record, or a record without a result).
fn result_of(ctx: &Ctx<'_>, a: &Attachment) -> Result<Option<CniResult>, Error> {
    let (cni_dir, cid) = (&ctx.config.cni_dir, ctx.env.container_id());
    let path = resultcache::path(cni_dir, &a.network.name, cid, &a.ifname);
    let rec = resultcache::read(cni_dir, &a.network.name, cid, &a.ifname).map_err(|source| {
        Error::Cache {
            who: ctx.who(),
            op: "read",
            path: path.clone(),
            source,
        }
    })?;
    let Some(value) = rec.and_then(|r| r.result) else {
        return Ok(None);
    };
    CniResult::from_value(&value, a.network.cni_version)
        .map(Some)
        .map_err(|e| Error::CacheCorrupt {
            who: ctx.who(),
            path,
            reason: e.to_string(),
        })
}

/// Under the lock: the sandbox's attachments once every interrupted hot-plug is undone (its DEL, then the
/// cache without it), or why the sandbox is left alone.
fn settle(ctx: &Ctx<'_>) -> Result<Result<Vec<Attachment>, Skip>, Error> {
    let (lock, list) = match locked(ctx)? {
        Ok(here) => here,
        Err(skip) => return Ok(Err(skip)),
    };
    let mut kept = Vec::with_capacity(list.len());
    let mut interrupted = Vec::new();
    for a in list {
        if result_of(ctx, &a)?.is_some() {
            kept.push(a);
        } else if a.hotplugged {
            interrupted.push(a);
        } else {
            return Ok(Err(Skip::Unfinished));
        }
    }
    if !interrupted.is_empty() {
        tracing::warn!(
            "[{}]: undoing {} interrupted hot-plug(s)",
            ctx.who(),
            interrupted.len()
        );
        teardown::container(
            ctx,
            ctx.env.container_id(),
            ctx.env.netns.as_deref(),
            interrupted,
            None,
        )?;
        write_cache(ctx, &kept)?;
    }
    drop(lock);
    Ok(Ok(kept))
}

fn run(ctx: &Ctx<'_>, changes: &mut Vec<Event>) -> Result<Hotplugged, Error> {
    let who = ctx.who();
    let Some(pod) = ctx.env.pod() else {
        return Err(Error::UnknownContainer {
            who,
            container_id: ctx.env.container_id().to_string(),
        });
    };
    let netns = ctx.env.netns.clone().unwrap_or_default();
    let current = match settle(ctx)? {
        Ok(list) => list,
        Err(skip) => return Ok(Hotplugged::Skipped(skip)),
    };
    tracing::debug!("[{who}]: hot-plug: {} attachment(s) now", current.len());
    // What the pod selects now, through the same selection, NAD reads and allow-list as its ADD.
    let pod_networks = ctx
        .kube
        .pod_networks(&pod)
        .map_err(|source| Error::Cluster {
            who: who.clone(),
            source,
        })?;
    add::check_allowed(ctx, &pod_networks)?;
    let desired = pod_networks.networks;
    tracing::debug!(
        "[{who}]: hot-plug: the pod selects {} network(s)",
        desired.len()
    );
    let links = ctx
        .seams
        .netns
        .start_link_names(&netns)
        .wait()
        .map_err(|source| Error::Netns {
            who: who.clone(),
            network: "(hot-plug)".into(),
            netns: netns.clone(),
            source,
        })?;
    let pod_current: Vec<Attachment> = current.iter().filter(|a| a.pod_network).cloned().collect();
    let ours: BTreeSet<&str> = pod_current.iter().map(|a| a.ifname.as_str()).collect();
    let busy: BTreeSet<String> = links
        .into_iter()
        .filter(|l| !ours.contains(l.as_str()))
        .chain(
            current
                .iter()
                .filter(|a| !a.pod_network)
                .map(|a| a.ifname.clone()),
        )
        .collect();
    let diff = hotplug::diff(&pod_current, &desired, &busy);
    let mut failed = diff.refused.len();
    for r in &diff.refused {
        ctx.kube.warn_pod(
            HOTPLUG_FAILED,
            format!("network {}: not hot-plugged: {}", r.network, r.reason),
        );
    }
    let mut detached = 0;
    for &j in &diff.detach {
        let a = &pod_current[j];
        match detach(ctx, a) {
            // Deleted (or set up again) since the look above: nothing of this reconcile applies any more.
            Ok(Err(skip)) => return Ok(Hotplugged::Skipped(skip)),
            Ok(Ok(())) => {
                detached += 1;
                changes.extend(ctx.kube.pod_event(
                    "Normal",
                    "RemovedInterface",
                    format!("Remove {} from {}", a.ifname, a.status_name),
                ));
            }
            Err(e) => {
                failed += 1;
                ctx.kube.warn_pod(
                    HOTPLUG_FAILED,
                    format!(
                        "network {}: detaching {} failed: {e}",
                        a.status_name, a.ifname
                    ),
                );
            }
        }
    }
    let mut requests: Vec<NetworkRequest> = diff
        .attach
        .iter()
        .map(|(i, _)| desired[*i].clone())
        .collect();
    let mut attached = 0;
    if devices::any_resource(&requests) {
        let taken: Vec<String> = current
            .iter()
            .filter_map(|a| a.requests.device_id.clone())
            .collect();
        if let Err(e) = add::resolve_devices(ctx, &pod, &mut requests, &taken) {
            ctx.kube.warn_pod(
                HOTPLUG_FAILED,
                format!("hot-plug: no devices for the networks to attach: {e}"),
            );
            failed += requests.len();
            requests.clear();
        }
    }
    for (req, (_, ifname)) in requests.into_iter().zip(&diff.attach) {
        let a = planned(req, ifname);
        match attach(ctx, &netns, a.clone()) {
            Ok(Err(skip)) => return Ok(Hotplugged::Skipped(skip)),
            Ok(Ok(result)) => {
                attached += 1;
                let ips: Vec<String> = result.ips.iter().map(|ip| ip.address.to_string()).collect();
                changes.extend(ctx.kube.pod_event(
                    "Normal",
                    "AddedInterface",
                    format!(
                        "Add {} [{}] from {}",
                        a.ifname,
                        ips.join(","),
                        a.status_name
                    ),
                ));
            }
            Err(e) => {
                failed += 1;
                ctx.kube.warn_pod(
                    HOTPLUG_FAILED,
                    format!(
                        "network {}: attaching {} failed: {e}",
                        a.status_name, a.ifname
                    ),
                );
            }
        }
    }
    // The whole set, for one network-status write.
    let (lock, list) = match locked(ctx)? {
        Ok(here) => here,
        Err(skip) => return Ok(Hotplugged::Skipped(skip)),
    };
    let mut current = Vec::with_capacity(list.len());
    for a in list.into_iter().filter(|a| !a.auxiliary) {
        if let Some(r) = result_of(ctx, &a)? {
            current.push((a, r));
        }
    }
    drop(lock);
    Ok(Hotplugged::Reconciled {
        attached,
        detached,
        failed,
        current,
    })
}

/// A desired network planned on `ifname`, marked as the pod's and hot-plugged.
fn planned(req: NetworkRequest, ifname: &str) -> Attachment {
    Attachment {
        network: req.network,
        ifname: ifname.to_string(),
        master: false,
        status_name: req.status_name,
        ifname_request: req.ifname_request,
        requests: req.requests,
        resource_name: req.resource_name,
        auxiliary: false,
        pod_network: true,
        hotplugged: true,
    }
}

/// Attach `a` to the running sandbox in `netns`, as one transaction: the plugins checked, the capability
/// arguments built, then under the lock the cache rewritten with it, its delegate's ADD, its result record;
/// any failure after the cache was written rolls it back (DEL, the cache as it was). A sandbox gone (or not
/// set up) by the time the lock is taken is why nothing ran.
fn attach(
    ctx: &Ctx<'_>,
    netns: &Path,
    mut a: Attachment,
) -> Result<Result<CniResult, Skip>, Error> {
    let cid = ctx.env.container_id();
    add::check_plugins(ctx, std::slice::from_ref(&a))?;
    if a.requests.device_id.is_some() {
        let file = devices::cni_file(&ctx.config.device_info_dir, &a.status_name, cid, &a.ifname);
        a.requests.device_info_file = Some(file.display().to_string());
    }
    let rt = ctx.runtime_conf(&a, cid, Some(netns), true)?;
    let (lock, kept) = match locked(ctx)? {
        Ok(here) => here,
        Err(skip) => return Ok(Err(skip)),
    };
    if kept.iter().any(|k| k.ifname == a.ifname) {
        return Err(Error::InterfaceExists {
            who: ctx.who(),
            network: a.status_name.clone(),
            ifname: a.ifname.clone(),
            netns: netns.to_path_buf(),
        });
    }
    let mut tx = Transaction::begin_hotplug(ctx, lock, kept, &a)?;
    devices::info::prepare(&ctx.config.device_info_dir, &a);
    match add::attach(&mut tx, &ctx.invoker(), &a, &rt) {
        Ok(result) => {
            tracing::info!(network = %a.status_name, ifname = %a.ifname, "hot-plugged");
            tx.commit(result).map(|(r, _)| Ok(r))
        }
        Err(source) => Err(tx.rollback(Error::Delegate {
            who: ctx.who(),
            network: a.status_name.clone(),
            ifname: a.ifname.clone(),
            verb: "adding container to",
            source,
        })),
    }
}

/// Detach `a` (as the cache recorded it) under the lock: its delegate's DEL (which removes its result record
/// and device-info file), then the cache rewritten without it. A failed DEL keeps it in the cache, for the
/// runtime's DEL. A sandbox gone (or not set up) by the time the lock is taken is why nothing ran.
fn detach(ctx: &Ctx<'_>, a: &Attachment) -> Result<Result<(), Skip>, Error> {
    let (lock, mut list) = match locked(ctx)? {
        Ok(here) => here,
        Err(skip) => return Ok(Err(skip)),
    };
    let Some(at) = list
        .iter()
        .position(|k| k.status_name == a.status_name && k.ifname == a.ifname)
    else {
        // Gone meanwhile: nothing to do.
        return Ok(Ok(()));
    };
    let entry = list.remove(at);
    teardown::container(
        ctx,
        ctx.env.container_id(),
        ctx.env.netns.as_deref(),
        vec![entry],
        None,
    )?;
    write_cache(ctx, &list)?;
    drop(lock);
    Ok(Ok(()))
}
