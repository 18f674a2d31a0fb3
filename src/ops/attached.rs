//! What a container has attached, as DEL, GC and an ADD over an earlier one must tear it down: its cache,
//! else (missing, corrupt or unreadable) rebuilt from the result cache, the node's networks and, when the
//! cache existed, the pod's networks from the API (docs/multus-compat.md, "DEL").

use std::collections::HashSet;

use super::Ctx;
use crate::{
    ops::error::Error,
    pure::{
        netconf::NetworkConfig,
        plan::{self, Attachment, Requests},
    },
    seams::invoke::is_internal,
    store::{
        cache::{self, ReadOutcome},
        resultcache,
    },
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

/// The attachments of the request's own container.
pub(super) fn current(ctx: &Ctx<'_>) -> Vec<Attachment> {
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
                Requests::from_capability_args(&rec.capability_args)
            },
            resource_name: None,
            auxiliary: false,
            pod_network: false,
            hotplugged: false,
        });
    }
    match rebuilt(ctx, master_ifname, rebuild) {
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

/// The attachments an ADD would plan now: the node's networks, the pod's (with [`Rebuild::WithPod`]) and
/// the auxiliary chain.
fn rebuilt(ctx: &Ctx<'_>, master_ifname: &str, rebuild: Rebuild) -> Result<Vec<Attachment>, Error> {
    // With the pod still in the API, its own networks can be rebuilt too (as Go Multus does); any failure
    // there only narrows what the fallback covers.
    let pod_networks = match ctx.env.pod().filter(|_| rebuild == Rebuild::WithPod) {
        Some(pod) => ctx.kube.pod_networks(&pod).unwrap_or_else(|e| {
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
    let mut reqs = ctx.node_networks(pod_networks.default_network)?;
    reqs.extend(pod_networks.networks);
    reqs.extend(auxiliary);
    plan::plan(master_ifname, reqs).map_err(|source| Error::Plan {
        who: ctx.who(),
        source,
    })
}
