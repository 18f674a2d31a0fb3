//! CHECK: every cached delegate, in order, with its cached result (CNI-18, CNI-19, CNI-27); Go Multus checks
//! only static delegates (docs/multus-compat.md, "CHECK and GC"). Then the pod's default routes,
//! when it asked for them (`default-route`, NPWG-34).

use super::Ctx;
use crate::{
    ops::error::Error,
    seams::invoke::DelegateError,
    store::{
        cache::{self, CachedDelegate, ReadOutcome},
        lock::ContainerLock,
    },
};

pub(super) fn check(ctx: &Ctx<'_>) -> Result<(), Error> {
    let cid = ctx.env.container_id();
    let cni_dir = &ctx.config.cni_dir;
    let _lock =
        ContainerLock::acquire(cni_dir, cid, ctx.config.lock_timeout).map_err(|source| {
            Error::Lock {
                who: ctx.who(),
                source,
            }
        })?;
    let entries = cached_entries(ctx)?;
    let invoker = ctx.invoker();
    let mut errors = Vec::new();
    let mut checked = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let a = match e.to_attachment(i, ctx.env.ifname(), ctx.config.cni_version) {
            Ok(a) => a,
            Err(err) => {
                errors.push(Error::CacheCorrupt {
                    who: ctx.who(),
                    path: cache::path(cni_dir, cid),
                    reason: err.to_string(),
                });
                continue;
            }
        };
        if a.auxiliary {
            // Its interface name is Go Multus's net<index>, which no link has: a plugin that checks the
            // interface (tuning does) could only fail. Go Multus never checks the chain either.
            tracing::info!(network = %a.status_name, "CHECK skipped: the auxiliary chain has no interface of its own");
            checked.push(a);
            continue;
        }
        let rt = ctx.runtime_conf(&a, cid, ctx.env.netns.as_deref(), false)?;
        checked.push(a.clone());
        match invoker.check(&a.network, &rt) {
            Ok(()) => {}
            // A 0.3.x delegate behind a newer plexus cannot be checked; that is not a failure (#737, #525).
            Err(DelegateError::CheckNotSupported { version }) => {
                tracing::info!(network = %a.status_name, %version, "CHECK skipped: the network's version predates CHECK");
            }
            Err(source) => errors.push(Error::Delegate {
                who: ctx.who(),
                network: a.status_name.clone(),
                ifname: a.ifname.clone(),
                verb: "checking container on",
                source,
            }),
        }
    }
    if checked.len() == entries.len()
        && let Some(netns) = ctx.env.netns.as_deref()
        && let Err(e) = super::default_route::verify(ctx, netns, &checked)
    {
        errors.push(e);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Many(errors))
    }
}

/// The container's cache entries: CHECK needs them (an unknown container is code 3, a corrupt cache
/// an error), never a rebuilt list.
fn cached_entries(ctx: &Ctx<'_>) -> Result<Vec<CachedDelegate>, Error> {
    let cid = ctx.env.container_id();
    let cni_dir = &ctx.config.cni_dir;
    match cache::read(cni_dir, cid) {
        Ok(ReadOutcome::Found(entries)) => Ok(entries),
        Ok(ReadOutcome::Missing) => Err(Error::UnknownContainer {
            who: ctx.who(),
            container_id: cid.to_string(),
        }),
        Ok(ReadOutcome::Corrupt(reason)) => Err(Error::CacheCorrupt {
            who: ctx.who(),
            path: cache::path(cni_dir, cid),
            reason,
        }),
        Err(source) => Err(Error::Cache {
            who: ctx.who(),
            op: "read",
            path: cache::path(cni_dir, cid),
            source,
        }),
    }
}
