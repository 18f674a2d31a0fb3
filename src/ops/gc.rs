//! GC: tear down every container plexus has a cache for that the runtime no longer lists, then GC every
//! network known on this node with the attachments still valid (CNI-22, CNI-28; Go Multus ignores the
//! runtime's list and skips secondary networks;
//! docs/multus-compat.md, "CHECK and GC").

use std::collections::{BTreeMap, HashSet};

use plexus_cni::GcAttachment;

use super::{Ctx, attached, teardown};
use crate::{
    ops::error::Error,
    pure::{netconf::NetworkConfig, plan::Attachment},
    store::{
        cache, lock,
        lock::ContainerLock,
        refusals,
        resultcache::{self, CachedAttachment},
    },
};

pub(super) fn gc(ctx: &Ctx<'_>) -> Result<(), Error> {
    ctx.wait_ready(false)?;
    let cni_dir = &ctx.config.cni_dir;
    // The runtime's list (either key; a malformed list was refused with the config). Absent means none.
    let valid: Vec<GcAttachment> = ctx.config.valid_attachments.clone().unwrap_or_default();
    let live: HashSet<&str> = valid.iter().map(|a| a.container_id.as_str()).collect();
    let mut errors = Vec::new();

    // 1. Stale plexus caches: full teardown of containers the runtime no longer knows.
    for cid in cache::containers(cni_dir) {
        if !live.contains(cid.as_str()) {
            tear_down_stale(ctx, &cid, &mut errors);
        }
    }
    // 2. Every network known here, with the attachments of live containers.
    gc_networks(ctx, &live, &mut errors);
    // 3. Lock files of containers that are gone.
    let remaining: HashSet<String> = cache::containers(cni_dir).into_iter().collect();
    lock::remove_stale(cni_dir, &|id| live.contains(id) || remaining.contains(id));
    // 4. What a daemon killed after a DEL's reply left in the trash (docs/daemon.md).
    crate::store::trash::sweep(cni_dir);

    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Many(errors))
    }
}

/// Tear down container `cid`, which the runtime no longer lists; a busy one is left for the next GC.
fn tear_down_stale(ctx: &Ctx<'_>, cid: &str, errors: &mut Vec<Error>) {
    let cni_dir = &ctx.config.cni_dir;
    let Ok(lock) = ContainerLock::acquire(cni_dir, cid, ctx.config.lock_timeout) else {
        tracing::warn!(container = %cid, "GC: container is busy; leaving it for the next GC");
        return;
    };
    // The runtime-side interface of the cluster network is in its result cache; eth0 otherwise.
    let master_ifname = cache::read(cni_dir, cid)
        .ok()
        .and_then(|r| match r {
            cache::ReadOutcome::Found(e) => e.first().and_then(|d| d.if_name.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "eth0".to_string());
    tracing::info!(container = %cid, "GC: tearing down a container the runtime no longer lists");
    let attachments = attached::load(ctx, cid, &master_ifname);
    match teardown::container(ctx, cid, None, attachments, None) {
        Ok(()) => {
            if let Err(source) = cache::remove(cni_dir, cid) {
                errors.push(Error::Cache {
                    who: ctx.who(),
                    op: "remove",
                    path: cache::path(cni_dir, cid),
                    source,
                });
            }
            let _ = refusals::remove(cni_dir, cid, None);
            teardown::remove_interrupted_writes(cni_dir, cid, None);
            lock.release_and_remove();
        }
        Err(e) => errors.push(e),
    }
}

/// GC every network known on this node (the node's, then those in remaining caches and in the result
/// cache), each with the attachments of live containers.
fn gc_networks(ctx: &Ctx<'_>, live: &HashSet<&str>, errors: &mut Vec<Error>) {
    let cni_dir = &ctx.config.cni_dir;
    let mut networks: BTreeMap<String, NetworkConfig> = BTreeMap::new();
    match ctx.node_networks(None) {
        Ok(reqs) => {
            for r in reqs {
                networks.entry(r.network.name.clone()).or_insert(r.network);
            }
        }
        Err(e) => errors.push(e),
    }
    let mut live_caches: Vec<(String, Vec<Attachment>)> = Vec::new();
    for cid in cache::containers(cni_dir) {
        if let Ok(cache::ReadOutcome::Found(entries)) = cache::read(cni_dir, &cid) {
            let attachments: Vec<_> = entries
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.to_attachment(i, "eth0", ctx.config.cni_version).ok())
                .collect();
            for a in &attachments {
                networks
                    .entry(a.network.name.clone())
                    .or_insert_with(|| a.network.clone());
            }
            if live.contains(cid.as_str()) {
                live_caches.push((cid, attachments));
            }
        }
    }
    let records = resultcache::list(cni_dir, None);
    for rec in &records {
        if !networks.contains_key(&rec.network_name)
            && let Ok(n) = NetworkConfig::from_bytes(&rec.config)
        {
            networks.insert(n.name.clone(), n);
        }
    }
    let valid_by_net = protected(live, &records, &live_caches);
    let invoker = ctx.invoker();
    for (name, net) in &networks {
        let valid = valid_by_net
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for source in invoker.gc(net, valid) {
            errors.push(Error::Delegate {
                who: ctx.who(),
                network: name.clone(),
                ifname: String::new(),
                verb: "garbage-collecting",
                source,
            });
        }
    }
}

/// Per network, the attachments of live containers: from the result cache and from plexus's caches (so an
/// attachment whose result record is missing is still protected).
fn protected(
    live: &HashSet<&str>,
    records: &[CachedAttachment],
    live_caches: &[(String, Vec<Attachment>)],
) -> BTreeMap<String, Vec<GcAttachment>> {
    let mut valid_by_net: BTreeMap<String, Vec<GcAttachment>> = BTreeMap::new();
    let mut protect = |net: &str, cid: &str, ifname: &str| {
        let list = valid_by_net.entry(net.to_string()).or_default();
        if !list
            .iter()
            .any(|a| a.container_id == cid && a.ifname == ifname)
        {
            list.push(GcAttachment {
                container_id: cid.to_string(),
                ifname: ifname.to_string(),
            });
        }
    };
    for r in records
        .iter()
        .filter(|r| live.contains(r.container_id.as_str()))
    {
        protect(&r.network_name, &r.container_id, &r.if_name);
    }
    for (cid, attachments) in live_caches {
        for a in attachments {
            protect(&a.network.name, cid, &a.ifname);
        }
    }
    valid_by_net
}
