//! Teardown, what DEL does to a list of attachments and what GC and ADD's rollback do too: DEL each one in
//! reverse, trying every one and reporting all failures (NPWG-63), its device-info file going with it
//! (NPWG-71) and its result record removed (or moved into the trash); and the temp files of writes a killed
//! plexus never finished.

use std::path::Path;

use super::Ctx;
use crate::{cache, devices, error::Error, plan::Attachment, trash::Trash};

/// DEL `attachments` of container `cid` in reverse order, trying every one (NPWG-63); each result record
/// moved into `trash` (when given) instead of unlinked.
pub(super) fn container(
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

/// DEL the request's own container's `attachments` (an ADD's rollback, or an earlier ADD's leftovers).
pub(super) fn current(ctx: &Ctx<'_>, attachments: Vec<Attachment>) -> Result<(), Error> {
    container(
        ctx,
        ctx.env.container_id(),
        ctx.env.netns.as_deref(),
        attachments,
        None,
    )
}

/// Remove the temp files of atomic writes for `cid` that a killed plexus never renamed into place
/// (`.<cid>.tmp.<pid>` in cniDir, `.<network>-<cid>-<ifname>.tmp.<pid>` in its result cache), into `trash`
/// when given. Called under the container's lock, so no live writer owns them; best effort, like the rest of
/// teardown.
pub(super) fn remove_interrupted_writes(cni_dir: &Path, cid: &str, trash: Option<&Trash>) {
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
