//! Teardown, what DEL does to a list of attachments and what GC and ADD's rollback do too: DEL each one in
//! reverse, trying every one and reporting all failures (NPWG-63), its device-info file going with it
//! (NPWG-71) and its result record removed (or moved into the trash); and the temp files of writes a killed
//! plexus never finished.

use std::path::Path;

use super::Ctx;
use crate::{
    ops::error::Error,
    pure::plan::Attachment,
    seams::devices,
    store::{cache, trash::Trash},
};

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
/// (`.<cid>.tmp.<pid>` in cniDir and in `.refusals`, `.<network>-<cid>-<ifname>.tmp.<pid>` in its result
/// cache), into `trash` when given. Called under the container's lock, so no live writer owns them; best
/// effort, like the rest of teardown.
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
        (crate::store::refusals::dir(cni_dir), true),
        (crate::store::resultcache::results_dir(cni_dir), false),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_name().to_str().is_some_and(|n| is_temp_of(n, exact)) {
                tracing::debug!("removing {} (an interrupted write)", e.path().display());
                let _ = match trash {
                    Some(t) => t.discard(&e.path()),
                    None => crate::store::fsutil::remove_if_exists(&e.path()),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ops::tests::with_ctx, seams::testing::TestHost};

    #[test]
    fn every_attachment_is_deleted_in_reverse_past_failures_and_all_are_reported() {
        let h = TestHost::new();
        h.exec.fail("c", "DEL", 11, "c failed");
        h.exec.fail("a", "DEL", 11, "a failed");
        let info = h.dir.path().join("info");
        std::fs::create_dir_all(&info).unwrap();
        let err = with_ctx(&h, false, |ctx, mut list| {
            for a in list.iter_mut() {
                let file = info.join(&a.network.name);
                std::fs::write(&file, "{}").unwrap();
                a.requests.device_info_file = Some(file.display().to_string());
            }
            container(ctx, "c1", None, list, None).unwrap_err()
        });
        let dels: Vec<String> = h
            .exec
            .calls()
            .iter()
            .filter(|c| c.command() == "DEL")
            .map(|c| c.network().to_string())
            .collect();
        assert_eq!(dels, ["c", "b", "a"]);
        let Error::Many(errors) = &err else {
            panic!("{err}");
        };
        assert_eq!(errors.len(), 2, "{err}");
        assert!(errors[0].to_string().contains("c failed"), "{err}");
        assert!(errors[1].to_string().contains("a failed"), "{err}");
        // Only a detached attachment's device-info file goes.
        assert!(info.join("a").exists() && info.join("c").exists());
        assert!(!info.join("b").exists());
    }

    #[test]
    fn interrupted_writes_of_the_container_alone_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let results = crate::store::resultcache::results_dir(d.path());
        std::fs::create_dir_all(&results).unwrap();
        let files = [
            d.path().join(".c1.tmp.42"),
            d.path().join(".c12.tmp.42"),
            d.path().join("c1"),
            results.join(".net-c1-eth0.tmp.7"),
            results.join(".net-c12-eth0.tmp.7"),
            results.join("net-c1-eth0"),
        ];
        for f in &files {
            std::fs::write(f, "x").unwrap();
        }
        remove_interrupted_writes(d.path(), "c1", None);
        let left: Vec<bool> = files.iter().map(|f| f.exists()).collect();
        assert_eq!(left, [false, true, true, false, true, true]);
    }
}
