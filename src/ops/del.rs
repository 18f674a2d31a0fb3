//! DEL: tear down from the cache in reverse, trying every delegate and reporting all failures; idempotent;
//! never skips teardown silently when the cache is missing or corrupt (NPWG-63, CNI-14..CNI-17,
//! docs/multus-compat.md, "DEL"). What to tear down is [`super::attached`]'s, how is [`super::teardown`]'s.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{LazyLock, Mutex},
};

use super::{AfterReply, Ctx, attached, teardown};
use crate::{
    ops::error::Error,
    store::{cache, lock::ContainerLock, refusals, trash::Trash},
};

/// DEL; daemon mode: with the unlinks of its trash for after the reply.
pub(super) fn del(ctx: &Ctx<'_>) -> Result<Option<AfterReply>, Error> {
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
    let lock = lock_or_take_over(ctx)?;
    // Daemon mode: the container's files are moved into the trash (no disk wait) and unlinked after the
    // reply; the thin binary unlinks them now, as before.
    let trash = ctx.seams.defer_work.then(|| Trash::new(cni_dir));
    let attachments = attached::load(ctx, cid, ctx.env.ifname());
    let result = teardown::container(
        ctx,
        cid,
        ctx.env.netns.as_deref(),
        attachments,
        trash.as_ref(),
    );
    let removed = forget(ctx, &result, lock, trash.as_ref());
    let later = empty_trash(ctx, trash);
    match removed.and(result) {
        Ok(()) => Ok(later),
        Err(e) => {
            // A failure has no after-reply work: the unlinks are done before the error reply.
            if let Some(job) = later {
                job();
            }
            Err(e)
        }
    }
}

/// The container's lock. Daemon mode: an ADD of this container whose writes still wait for the after-reply
/// thread (a DEL right after its ADD) hands them over with its lock, instead of this DEL waiting for the
/// thread to reach them. Their files are removed next, so they are written without fsync: in place, so
/// the teardown reads the cache and each delegate's prevResult as usual.
fn lock_or_take_over(ctx: &Ctx<'_>) -> Result<ContainerLock, Error> {
    let cid = ctx.env.container_id();
    let cni_dir = &ctx.config.cni_dir;
    let taken = ctx
        .seams
        .defer_work
        .then(|| super::deferred::take_over(cni_dir, cid))
        .flatten();
    match taken {
        Some(d) => {
            if let Err(e) = d.behind.flush_unsynced() {
                tracing::warn!(
                    "[{}]: a write its ADD left for after the reply failed: {e}",
                    ctx.who()
                );
            }
            Ok(d.lock)
        }
        None => ContainerLock::acquire(cni_dir, cid, ctx.config.lock_timeout).map_err(|source| {
            Error::Lock {
                who: ctx.who(),
                source,
            }
        }),
    }
}

/// After the teardown (`result`): remove the container's cache, hot-plug's record of the refusals it posted,
/// the temp files of its interrupted writes and its lock file; into `trash` when given. retryDeleteOnError keeps the cache after a failed DEL so the
/// runtime can retry with it (#926), except when the failure says something is already gone.
fn forget(
    ctx: &Ctx<'_>,
    result: &Result<(), Error>,
    lock: ContainerLock,
    trash: Option<&Trash>,
) -> Result<(), Error> {
    let cid = ctx.env.container_id();
    let cni_dir = &ctx.config.cni_dir;
    let keep = ctx.config.retry_delete_on_error
        && result
            .as_ref()
            .is_err_and(|e| !e.to_string().contains("no such file or directory"));
    if keep {
        tracing::warn!(
            "[{}]: DEL failed; keeping the cache for a retry (retryDeleteOnError)",
            ctx.who()
        );
        return Ok(());
    }
    let file = cache::path(cni_dir, cid);
    match trash {
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
        if let Err(e) = refusals::remove(cni_dir, cid, trash) {
            tracing::warn!(
                "[{}]: removing hot-plug's record of refusals: {e}",
                ctx.who()
            );
        }
        teardown::remove_interrupted_writes(cni_dir, cid, trash);
        lock.release_and_remove();
    })
}

/// Daemon mode: the trash's unlinks, returned for after the reply. The thin binary empties what a daemon
/// killed after a DEL's reply left in the trash (usually nothing there: one failed opendir).
fn empty_trash(ctx: &Ctx<'_>, trash: Option<Trash>) -> Option<AfterReply> {
    let cni_dir = &ctx.config.cni_dir;
    match (ctx.seams.defer_work, trash) {
        // The first DEL of a cniDir in this process also empties what an earlier daemon, killed before
        // its unlinks, left there (the daemon's start does so only for the cniDir its config names).
        (true, Some(trash)) if !trash.is_empty() || first_del_in(cni_dir) => {
            Some(Box::new(move || trash.empty()))
        }
        (true, _) => None,
        (false, _) => {
            crate::store::trash::sweep(cni_dir);
            None
        }
    }
}

/// Whether this is the first daemon DEL in `cni_dir` of this process (its trash not yet swept).
fn first_del_in(cni_dir: &Path) -> bool {
    static SWEPT: LazyLock<Mutex<HashSet<PathBuf>>> = LazyLock::new(Mutex::default);
    SWEPT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(cni_dir.to_path_buf())
}
