//! `default-route` within ADD and CHECK (NPWG-34): the request is checked before anything is attached;
//! after every delegate succeeded, the default routes move in the pod's namespace (the netns seam) and the
//! results, the libcni result cache and the container's cache are made to say so; CHECK verifies the pod's
//! default routes against the cached results. The decisions are [`crate::routes`]'s (pure).

use std::path::Path;

use plexus_cni::CniResult;

use super::Ctx;
use crate::{
    cache,
    error::Error,
    plan::Attachment,
    resultcache,
    routes::{self, RouteError},
};

/// Refuse an invalid request (two networks asking, a bad gateway) before anything is attached.
pub(super) fn validate(ctx: &Ctx<'_>, attachments: &[Attachment]) -> Result<(), Error> {
    routes::validate(attachments).map_err(|source| Error::DefaultRoute {
        who: ctx.who(),
        source,
    })
}

/// Move the default routes as the pod asked and rewrite `attached`'s results and the caches to match. Does
/// nothing when no attachment asks. An error leaves the caller to roll the ADD back: every route touched
/// belongs to an interface the rollback removes.
pub(super) fn apply(
    ctx: &Ctx<'_>,
    netns: &Path,
    attached: &mut [(Attachment, CniResult)],
) -> Result<(), Error> {
    let who = || ctx.who();
    let Some(plan) =
        routes::decide(attached).map_err(|source| Error::DefaultRoute { who: who(), source })?
    else {
        return Ok(());
    };
    let (sel, _) = &attached[plan.selected];
    if !plan.edit.is_empty() {
        let report = ctx
            .seams
            .netns
            .edit_default_routes(netns, plan.edit.clone())
            .map_err(|source| Error::DefaultRoute {
                who: who(),
                source: RouteError::Apply {
                    network: sel.status_name.clone(),
                    ifname: sel.ifname.clone(),
                    source,
                },
            })?;
        let removed: Vec<String> = report
            .removed
            .iter()
            .map(|(l, r)| match r.gateway {
                Some(gw) => format!("{} via {gw} dev {l}", r.destination),
                None => format!("{} dev {l}", r.destination),
            })
            .collect();
        let added: Vec<String> = report
            .added
            .iter()
            .map(|(l, gw)| format!("via {gw} dev {l}"))
            .collect();
        tracing::info!(network = %sel.status_name, ifname = %sel.ifname, ?removed, ?added, "default route set (NPWG-34)");
    } else {
        tracing::info!(network = %sel.status_name, ifname = %sel.ifname, "default-route: nothing to move");
    }

    let cid = ctx.env.container_id();
    let dir = &ctx.config.cni_dir;
    for (i, (a, result)) in attached.iter_mut().enumerate() {
        if !routes::rewrite(&plan, i, result) {
            continue;
        }
        let version = a.network.cni_version;
        let value = result.to_value(version).map_err(|source| Error::Result {
            who: who(),
            network: a.status_name.clone(),
            version: version.to_string(),
            source,
        })?;
        resultcache::update_result(dir, &a.network.name, cid, &a.ifname, value).map_err(
            |source| Error::Cache {
                who: who(),
                op: "update",
                path: resultcache::path(dir, &a.network.name, cid, &a.ifname),
                source,
            },
        )?;
    }
    cache::set_gateway_filters(dir, cid, &routes::filter_flags(&plan, attached.len())).map_err(
        |source| Error::Cache {
            who: who(),
            op: "update",
            path: cache::path(dir, cid),
            source,
        },
    )
}

/// CHECK: when a cached attachment asked for the default route, the pod's default routes must still be
/// what ADD made them. Attachments without a usable cached result are left to their delegate's CHECK.
pub(super) fn verify(ctx: &Ctx<'_>, netns: &Path, attachments: &[Attachment]) -> Result<(), Error> {
    if attachments.iter().all(|a| a.requests.gateways.is_none()) {
        return Ok(());
    }
    let cid = ctx.env.container_id();
    let mut attached = Vec::with_capacity(attachments.len());
    for a in attachments {
        let cached = resultcache::read(&ctx.config.cni_dir, &a.network.name, cid, &a.ifname)
            .ok()
            .flatten()
            .and_then(|rec| rec.result)
            .and_then(|v| CniResult::from_value(&v, a.network.cni_version).ok());
        let Some(result) = cached else {
            return Ok(());
        };
        attached.push((a.clone(), result));
    }
    let err = |source| Error::DefaultRoute {
        who: ctx.who(),
        source,
    };
    let Some(plan) = routes::decide(&attached).map_err(err)? else {
        return Ok(());
    };
    let sel = &attached[plan.selected].0;
    let actual = ctx
        .seams
        .netns
        .default_routes(netns)
        .map_err(|source| Error::Netns {
            who: ctx.who(),
            network: sel.status_name.clone(),
            netns: netns.to_path_buf(),
            source,
        })?;
    routes::verify(&plan, &attached, &actual).map_err(err)
}
