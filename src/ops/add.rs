//! ADD: resolve and plan the pod's networks (refusing a bad request before anything runs), lock, tear down
//! an earlier ADD's leftovers, then attach one by one inside a [`Transaction`], move the default route,
//! record the final results and publish the status; any failure rolls the transaction back (NPWG-56,
//! NPWG-62, NPWG-64, CNI-32).

use std::path::Path;

use plexus_cni::CniResult;

use super::{
    Ctx, Done, Reply, Versioned, attached, default_route, teardown, transaction::Transaction,
};
use crate::{
    ops::error::Error,
    pure::{
        netconf::NetworkConfig,
        plan::{self, Attachment, NetworkRequest},
        request::PodRef,
    },
    seams::{
        cluster::{DeferredStatus, PodNetworks},
        devices::{self, ResourceMap},
        exec::ExecError,
        invoke::{DelegateError, Invoker, RuntimeConf, is_internal},
        netns::LinkNames,
    },
    store::{cache, lock::ContainerLock},
};

/// Give every network whose NAD names a resource the pod's next device of it (NPWG-13;
/// docs/multus-compat.md, "Devices"): the kubelet's device-plugin allocations and the pod's DRA
/// claims, merged and sorted. Neither is asked unless some network names a resource; a source that
/// fails matters only when a resource is then missing, and the error says why. Devices in `taken` (a
/// running sandbox's, for a hot-plug) are never handed out again.
pub(super) fn resolve_devices(
    ctx: &Ctx<'_>,
    pod: &PodRef,
    requests: &mut [NetworkRequest],
    taken: &[String],
) -> Result<(), Error> {
    if !devices::any_resource(requests) {
        return Ok(());
    }
    let mut map = ResourceMap::new();
    let mut unavailable = Vec::new();
    match ctx.seams.kubelet.devices(pod) {
        Ok(m) => devices::merge(&mut map, m),
        Err(e) => unavailable.push(e.to_string()),
    }
    match ctx.kube.dra_devices(pod) {
        Ok(dra) => {
            devices::merge(&mut map, dra.devices);
            unavailable.extend(dra.missing.into_iter().map(|m| format!("DRA: {m}")));
        }
        Err(e) => unavailable.push(format!("DRA resource claims: {e}")),
    }
    devices::merge(&mut map, ResourceMap::new());
    for ids in map.values_mut() {
        ids.retain(|id| !taken.contains(id));
    }
    tracing::debug!(?map, "the pod's devices");
    let why = (!unavailable.is_empty()).then(|| unavailable.join("; "));
    devices::assign(requests, &map, why.as_deref()).map_err(|source| Error::Devices {
        who: ctx.who(),
        source,
    })
}

/// Whether `e` says the network's first plugin never started because its binary could not be looked up
/// (removed after [`check_plugins`] found it): then nothing of the network exists, and a rollback DEL of it
/// could only fail the same way.
fn never_started(net: &NetworkConfig, e: &DelegateError) -> bool {
    matches!(e, DelegateError::Exec {
            plugin_type,
            source: ExecError::NotFound { .. } | ExecError::InvalidType { .. } | ExecError::Unsafe { .. },
        } if net.plugins.first().is_some_and(|p| &p.plugin_type == plugin_type))
}

/// The Warning event's reason for a network whose plugin is not installed: Go Multus's name for the sibling
/// failure (a selected NAD that does not exist) is `NoNetworkFound`.
pub const NO_PLUGIN_FOUND: &str = "NoPluginFound";

/// The Warning event's reason for a network whose plugin binary plexus refuses to run (not root's, or
/// writable by its group or others: `exec::check_binary`).
pub const PLUGIN_BINARY_REFUSED: &str = "PluginBinaryRefused";

/// Every plugin of every planned network (a conflist's chained plugins too) must be found before anything
/// runs: a NAD naming a plugin this node lacks (a tenant's typo, another team's leftover) then fails this
/// pod's ADD alone, with code 7, nothing attached, and a Warning event on the pod. So does a binary that
/// is found but refused.
pub(super) fn check_plugins(ctx: &Ctx<'_>, attachments: &[Attachment]) -> Result<(), Error> {
    let dirs = ctx.config.search_path(&ctx.env.path);
    for a in attachments {
        for p in a
            .network
            .plugins
            .iter()
            .filter(|p| !is_internal(&p.plugin_type))
        {
            if let Err(source) = ctx.seams.exec.find(&p.plugin_type, &dirs) {
                let reason = match source {
                    ExecError::Unsafe { .. } => PLUGIN_BINARY_REFUSED,
                    _ => NO_PLUGIN_FOUND,
                };
                ctx.kube.warn_pod(
                    reason,
                    crate::ops::error::plugin_missing(&a.status_name, &source),
                );
                return Err(Error::PluginMissing {
                    who: ctx.who(),
                    network: a.status_name.clone(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// The Warning event's reason for a NAD naming a plugin type the node config's allow-list does not permit.
pub const PLUGIN_NOT_ALLOWED: &str = "PluginTypeNotAllowed";

/// Every type the pod's NADs name (each plugin of a conflist, each `ipam.type`) must be on the node config's
/// allow-list for the NAD's namespace (docs/security.md, "Plugin allow-list"); checked before anything is
/// looked up, planned or run. The node's own networks (the cluster network, `defaultNetworks`, static
/// `delegates`) are the admin's choice and are not checked; a pod's default-network annotation names a NAD
/// and is.
pub(super) fn check_allowed(ctx: &Ctx<'_>, pod_networks: &PodNetworks) -> Result<(), Error> {
    let list = &ctx.config.allowed_plugin_types;
    if !list.restricts() {
        return Ok(());
    }
    for n in pod_networks
        .default_network
        .iter()
        .chain(&pod_networks.networks)
    {
        // A NAD's status name is `<namespace>/<name>`, both DNS-1123 names (no other '/').
        let namespace = n.status_name.split_once('/').map_or("", |(ns, _)| ns);
        if let Err(refusal) = list.check(namespace, &n.network) {
            ctx.kube.warn_pod(
                PLUGIN_NOT_ALLOWED,
                crate::ops::error::plugin_not_allowed(&n.status_name, &refusal),
            );
            return Err(Error::PluginNotAllowed {
                who: ctx.who(),
                network: n.status_name.clone(),
                refusal,
            });
        }
    }
    Ok(())
}

/// skel refuses a `CNI_NETNS` that is the plugin's own namespace (CNI-59, code 8).
fn refuse_own_netns(ctx: &Ctx<'_>, netns: &Path) -> Result<(), Error> {
    let overridden = ctx
        .env
        .passthrough
        .get("CNI_NETNS_OVERRIDE")
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if overridden {
        return Ok(());
    }
    if ctx.seams.netns.is_own(netns) {
        return Err(Error::OwnNetns {
            who: ctx.who(),
            netns: netns.to_path_buf(),
        });
    }
    Ok(())
}

pub(super) fn add(ctx: &Ctx<'_>) -> Result<Done, Error> {
    let netns = ctx.env.netns.clone().unwrap_or_default();
    refuse_own_netns(ctx, &netns)?;
    ctx.wait_ready(false)?;
    // The pod's links, dumped once (not probed per attachment: each probe is a thread entering the netns),
    // on their own thread while this one resolves, plans, locks and stages the cache. Taken before the lock,
    // the dump can only be stale through another call for this container: an ADD still running (its staged
    // cache is found below, torn down, and the links dumped again) or a DEL (it only removes, so at worst a
    // link it removed is reported as in the way: a clear, retryable failure, never a link of someone
    // else's taken for ours).
    let mut links = ctx.seams.netns.start_link_names(&netns);
    let pod = ctx.env.pod();
    let (attachments, runtime) = plan_attachments(ctx, pod.as_ref(), &netns)?;

    let cid = ctx.env.container_id();
    let lock = ContainerLock::acquire(&ctx.config.cni_dir, cid, ctx.config.lock_timeout).map_err(
        |source| Error::Lock {
            who: ctx.who(),
            source,
        },
    )?;
    match tear_down_earlier_add(ctx) {
        // The namespace changed under the dump started above.
        Ok(true) => links = ctx.seams.netns.start_link_names(&netns),
        Ok(false) => {}
        Err(e) => {
            // Nothing ran: leave nothing behind, not even the lock file.
            lock.release_and_remove();
            return Err(e);
        }
    }
    let hold = default_route::requested(&attachments);
    let mut tx = Transaction::begin(ctx, lock, &attachments, hold)?;
    let done = attach_all(ctx, &mut tx, &netns, links, &attachments, &runtime)
        .and_then(|mut attached| finish(ctx, &mut tx, &netns, pod.as_ref(), &mut attached));
    match done {
        Ok((reply, status)) => tx.commit(reply).map(|(reply, after_reply)| Done {
            reply: Reply::Added(Box::new(reply)),
            after_reply,
            status: status.map(Box::new),
        }),
        Err(err) => Err(tx.rollback(err)),
    }
}

/// Resolve and plan everything before touching anything, so a bad request leaves no trace: the pod's
/// networks (each type on the allow-list), the node's, their devices and the auxiliary chain, planned onto
/// interfaces; the default-route request and every plugin checked; each attachment's runtime parameters.
fn plan_attachments(
    ctx: &Ctx<'_>,
    pod: Option<&PodRef>,
    netns: &Path,
) -> Result<(Vec<Attachment>, Vec<RuntimeConf>), Error> {
    let pod_networks = match pod {
        Some(p) => ctx.kube.pod_networks(p).map_err(|source| Error::Cluster {
            who: ctx.who(),
            source,
        })?,
        None => Default::default(),
    };
    check_allowed(ctx, &pod_networks)?;
    let mut requests = ctx.node_networks(pod_networks.default_network)?;
    // Which attachments the pod's networks annotation selected: recorded in the cache for hot-plug.
    let pod_range = requests.len()..requests.len() + pod_networks.networks.len();
    requests.extend(pod_networks.networks);
    if let Some(pod) = pod {
        resolve_devices(ctx, pod, &mut requests, &[])?;
    }
    // After every other network, on the next net<index> (docs/multus-compat.md, "Auxiliary chain").
    let auxiliary = super::auxiliary::chain(ctx)?;
    let has_auxiliary = auxiliary.is_some();
    requests.extend(auxiliary);
    let mut attachments = plan::plan(ctx.env.ifname(), requests).map_err(|source| Error::Plan {
        who: ctx.who(),
        source,
    })?;
    if has_auxiliary && let Some(last) = attachments.last_mut() {
        last.auxiliary = true;
    }
    for a in &mut attachments[pod_range] {
        a.pod_network = true;
    }
    default_route::validate(ctx, &attachments)?;
    check_plugins(ctx, &attachments)?;
    let cid = ctx.env.container_id();
    // Every attachment with a device gets a unique CNI device-info file (NPWG-70..72).
    for a in attachments.iter_mut() {
        if a.requests.device_id.is_some() {
            let file =
                devices::cni_file(&ctx.config.device_info_dir, &a.status_name, cid, &a.ifname);
            a.requests.device_info_file = Some(file.display().to_string());
        }
    }
    let runtime = attachments
        .iter()
        .map(|a| ctx.runtime_conf(a, cid, Some(netns), true))
        .collect::<Result<_, _>>()?;
    Ok((attachments, runtime))
}

/// An earlier ADD of this container was never deleted (a crash, or a runtime retrying): tear it down first
/// so its attachments are not forgotten when the cache is overwritten. Called under the container's lock;
/// whether there was one (the pod's namespace then changed).
fn tear_down_earlier_add(ctx: &Ctx<'_>) -> Result<bool, Error> {
    let cni_dir = &ctx.config.cni_dir;
    let cid = ctx.env.container_id();
    match cache::read(cni_dir, cid) {
        Ok(cache::ReadOutcome::Missing) => Ok(false),
        Ok(_) => {
            tracing::warn!(
                "[{}]: a cache from an earlier ADD exists; tearing that down first",
                ctx.who()
            );
            match teardown::current(ctx, attached::current(ctx)) {
                // Gone: until this ADD's cache is renamed into place, a crash leaves only its temp file,
                // and DEL must find that one (`cache::read`), not the earlier ADD's.
                Ok(()) => {
                    let _ = cache::remove(cni_dir, cid);
                    let _ = crate::store::refusals::remove(cni_dir, cid, None);
                    teardown::remove_interrupted_writes(cni_dir, cid, None);
                }
                Err(e) => tracing::warn!("[{}]: tearing down the earlier ADD: {e}", ctx.who()),
            }
            Ok(true)
        }
        Err(source) => Err(Error::Cache {
            who: ctx.who(),
            op: "read",
            path: cache::path(cni_dir, cid),
            source,
        }),
    }
}

/// Run every attachment's delegate in order, each joining `tx`'s undo list; the first failure stops.
/// Planning already refused duplicate names among the attachments; a delegate that creates a later
/// attachment's name itself makes that later delegate fail, and the ADD roll back, as a probe would.
fn attach_all(
    ctx: &Ctx<'_>,
    tx: &mut Transaction<'_, '_>,
    netns: &Path,
    links: LinkNames,
    attachments: &[Attachment],
    runtime: &[RuntimeConf],
) -> Result<Vec<(Attachment, CniResult)>, Error> {
    // The dump, before the first delegate. Failing, it fails the first attachment: nothing ran yet.
    let existing = links.wait().map_err(|source| Error::Netns {
        who: ctx.who(),
        network: attachments[0].status_name.clone(),
        netns: netns.to_path_buf(),
        source,
    })?;
    let invoker = ctx.invoker();
    let mut attached = Vec::with_capacity(attachments.len());
    for (a, rt) in attachments.iter().zip(runtime) {
        if existing.contains(&a.ifname) {
            return Err(Error::InterfaceExists {
                who: ctx.who(),
                network: a.status_name.clone(),
                ifname: a.ifname.clone(),
                netns: netns.to_path_buf(),
            });
        }
        devices::info::prepare(&ctx.config.device_info_dir, a);
        let result = attach(tx, &invoker, a, rt).map_err(|source| Error::Delegate {
            who: ctx.who(),
            network: a.status_name.clone(),
            ifname: a.ifname.clone(),
            verb: "adding container to",
            source,
        })?;
        tracing::info!(network = %a.status_name, ifname = %a.ifname, "attached");
        attached.push((a.clone(), result));
    }
    Ok(attached)
}

/// One delegate's ADD. Whatever may have run joins `tx`'s undo list: the failed delegate may have done
/// part of its work (a conflist halts midway), unless it never started.
pub(super) fn attach(
    tx: &mut Transaction<'_, '_>,
    invoker: &Invoker<'_>,
    a: &Attachment,
    rt: &RuntimeConf,
) -> Result<CniResult, DelegateError> {
    match invoker.add_unrecorded(&a.network, rt) {
        Ok((result, rec)) => {
            tx.attached(a, rec)?;
            Ok(result)
        }
        Err(source) => {
            if !never_started(&a.network, &source) {
                tx.partly_attached(a);
            }
            Err(source)
        }
    }
}

/// After every delegate succeeded: move the default route where the pod asked (NPWG-34), so the results
/// say so before they are recorded (once, final); the reply (the cluster network's result, in the config's
/// version: docs/multus-compat.md, "Result version"); the pod's network status (sent, or returned to send
/// after the reply: daemon mode with `statusWrite: afterReply`). Any failure rolls back.
fn finish(
    ctx: &Ctx<'_>,
    tx: &mut Transaction<'_, '_>,
    netns: &Path,
    pod: Option<&PodRef>,
    attached: &mut [(Attachment, CniResult)],
) -> Result<(Versioned, Option<DeferredStatus>), Error> {
    match default_route::apply(ctx, netns, attached)? {
        Some(r) => tx.record_final(attached, &r.changed, Some(&r.filter_flags))?,
        None => tx.record_final(attached, &[], None)?,
    }
    let (master, master_result) = &attached[0];
    let reply =
        Versioned::new(master_result.clone(), ctx.config.cni_version).map_err(|source| {
            Error::Result {
                who: ctx.who(),
                network: master.status_name.clone(),
                version: ctx.config.cni_version.to_string(),
                source,
            }
        })?;
    // The auxiliary chain is no network of the pod's: no network-status entry, no event.
    let published = match attached.split_last() {
        Some(((a, _), rest)) if a.auxiliary => rest,
        _ => &attached[..],
    };
    let Some(pod) = pod else {
        return Ok((reply, None));
    };
    // Consistent with every other failure after delegates ran: roll back (docs/multus-compat.md, "ADD
    // failures"). The thin binary's PATCH overlaps the records' fsyncs.
    let status = ctx
        .kube
        .publish_status(pod, published)
        .map_err(|source| Error::Cluster {
            who: ctx.who(),
            source,
        })?;
    Ok((reply, status))
}
