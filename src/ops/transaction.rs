//! ADD as a transaction: the container's lock, its cache staged before any delegate runs, the undo list
//! (each attachment pushed as its delegate runs), the result records (written behind as each delegate
//! succeeds, or held until the default-route edit made the results final), and the two ends: commit (the
//! writes flushed, or left for after the reply in daemon mode) or rollback (the undo list torn down in
//! reverse by [`super::teardown`], every failure reported: NPWG-56, NPWG-62, NPWG-64, CNI-32).

use plexus_cni::CniResult;

use super::{AfterReply, Ctx, teardown};
use crate::{
    ops::error::Error,
    pure::plan::Attachment,
    seams::invoke::DelegateError,
    store::{
        cache,
        fsutil::WriteBehind,
        lock::ContainerLock,
        resultcache::{self, CachedAttachment},
    },
};

/// One ADD's writes, lock and undo list, from the staged cache to its commit or rollback.
pub(super) struct Transaction<'c, 'a> {
    ctx: &'c Ctx<'a>,
    lock: ContainerLock,
    behind: WriteBehind,
    /// What a rollback must DEL, in the order attached.
    undo: Vec<Attachment>,
    /// The result records not yet written (`None`: each is written behind as its delegate succeeds).
    held: Option<Vec<CachedAttachment>>,
    /// A hot-plug ([`Transaction::begin_hotplug`]): the sandbox's attachments before it, which a rollback
    /// writes back as the cache (the sandbox lives on; its lock file stays). `None`: a runtime ADD, whose
    /// rollback removes the cache and the lock file.
    kept: Option<Vec<Attachment>>,
}

impl<'c, 'a> Transaction<'c, 'a> {
    /// Stage the cache for `attachments` under `lock`: written whole into its temp file now (a crash from
    /// here on leaves it for DEL), synced and renamed behind. `hold_records` keeps each delegate's result
    /// record in memory until [`Transaction::record_final`] (the results may still change). A cache that
    /// cannot be written fails the ADD before anything ran, and leaves nothing, not even the lock file.
    pub fn begin(
        ctx: &'c Ctx<'a>,
        lock: ContainerLock,
        attachments: &[Attachment],
        hold_records: bool,
    ) -> Result<Self, Error> {
        // The cache's fsync and rename, and each delegate's result record, are written behind. All of it is
        // flushed before the reply. Daemon mode flushes after the reply instead, before the container's
        // lock is released, and defers the writes to that flush: no thread per write, and no fsync
        // competing with the delegates for the node's CPUs and disk. The thin binary overlaps them with
        // the delegates.
        let behind = if ctx.seams.defer_work {
            WriteBehind::deferred()
        } else {
            WriteBehind::default()
        };
        let cni_dir = &ctx.config.cni_dir;
        let cid = ctx.env.container_id();
        if let Err(source) = cache::write(cni_dir, cid, attachments, &behind) {
            lock.release_and_remove();
            return Err(Error::Cache {
                who: ctx.who(),
                op: "write",
                path: cache::path(cni_dir, cid),
                source,
            });
        }
        Ok(Transaction {
            ctx,
            lock,
            behind,
            undo: Vec::with_capacity(attachments.len()),
            held: hold_records.then(Vec::new),
            kept: None,
        })
    }

    /// A hot-plug of `new` onto a running sandbox whose cache holds `kept`, under `lock`: the cache is
    /// rewritten with `new` appended, synced and in place before the delegate runs (a crash from here on
    /// leaves the entry for the runtime's DEL and for the next reconcile, which undoes an entry without a
    /// result record). The result record is written when the delegate succeeds, and flushed on commit.
    pub fn begin_hotplug(
        ctx: &'c Ctx<'a>,
        lock: ContainerLock,
        kept: Vec<Attachment>,
        new: &Attachment,
    ) -> Result<Self, Error> {
        let mut all = kept.clone();
        all.push(new.clone());
        // A rename still pending would leave the old cache in place, blind to the new delegate.
        write_cache(ctx, &all)?;
        Ok(Transaction {
            ctx,
            lock,
            behind: WriteBehind::default(),
            undo: Vec::with_capacity(1),
            held: None,
            kept: Some(kept),
        })
    }

    /// `a`'s delegate succeeded: it joins the undo list, and its result record is written behind (or
    /// held). A record that cannot be written fails the delegate (`a` is undone with the rest).
    pub fn attached(&mut self, a: &Attachment, rec: CachedAttachment) -> Result<(), DelegateError> {
        self.undo.push(a.clone());
        match &mut self.held {
            Some(held) => {
                held.push(rec);
                Ok(())
            }
            None => resultcache::write_behind(&self.behind, &self.ctx.config.cni_dir, rec)
                .map_err(|e| DelegateError::Cache(e.to_string())),
        }
    }

    /// `a`'s delegate failed, but may have done part of its work (a conflist halts midway): undo it too.
    pub fn partly_attached(&mut self, a: &Attachment) {
        self.undo.push(a.clone());
    }

    /// The results are final (`attached`, in order; `changed[i]` says whether the i-th differs from its
    /// delegate's): write the held records with them, and, when the default route moved, the cache again
    /// with its gateway-filter flags (`gateway_filters`). Nothing is read back.
    pub fn record_final(
        &mut self,
        attached: &[(Attachment, CniResult)],
        changed: &[bool],
        gateway_filters: Option<&[(bool, bool)]>,
    ) -> Result<(), Error> {
        let ctx = self.ctx;
        if let Some(held) = &mut self.held {
            for ((rec, (a, result)), _) in held
                .iter_mut()
                .zip(attached)
                .zip(changed)
                .filter(|(_, c)| **c)
            {
                let version = a.network.cni_version;
                let value = result.to_value(version).map_err(|source| Error::Result {
                    who: ctx.who(),
                    network: a.status_name.clone(),
                    version: version.to_string(),
                    source,
                })?;
                rec.result = Some(value);
            }
        }
        self.submit_held().map_err(|(rec, source)| Error::Cache {
            who: ctx.who(),
            op: "write",
            path: resultcache::path(
                &ctx.config.cni_dir,
                &rec.network_name,
                &rec.container_id,
                &rec.if_name,
            ),
            source,
        })?;
        let Some(flags) = gateway_filters else {
            return Ok(());
        };
        let (cni_dir, cid) = (&ctx.config.cni_dir, ctx.env.container_id());
        cache::write_gateway_filters(cni_dir, cid, &self.undo, flags, &self.behind).map_err(
            |source| Error::Cache {
                who: ctx.who(),
                op: "write",
                path: cache::path(cni_dir, cid),
                source,
            },
        )
    }

    /// Write every held record behind; the first that cannot be, with its error.
    fn submit_held(&mut self) -> Result<(), (CachedAttachment, std::io::Error)> {
        for rec in self.held.take().into_iter().flatten() {
            let cni_dir = &self.ctx.config.cni_dir;
            if let Err(e) = resultcache::write_behind(&self.behind, cni_dir, rec.clone()) {
                return Err((rec, e));
            }
        }
        Ok(())
    }

    /// Wait for the writes behind; a failure fails the ADD like a failed synchronous write.
    fn flush(&self) -> Result<(), Error> {
        self.behind.flush().map_err(|source| Error::Cache {
            who: self.ctx.who(),
            op: "write",
            path: resultcache::results_dir(&self.ctx.config.cni_dir),
            source,
        })
    }

    /// Succeed with `reply`. Daemon mode: the writes (the cache's fsync and rename, the result records)
    /// run after the reply, under the container's lock, so a DEL or CHECK of the container (which takes
    /// the lock) finds them in place (or a DEL takes them over, `deferred`); a failure then cannot fail
    /// the ADD: it is logged, and DEL works without prevResult. They are returned as the job for after
    /// the reply. The thin binary flushes them now (a failure rolls back) and releases the lock.
    pub fn commit<T>(mut self, reply: T) -> Result<(T, Option<AfterReply>), Error> {
        let ctx = self.ctx;
        // `add` records the final results first; a record still held must not be lost.
        if let Err((_, source)) = self.submit_held() {
            let err = Error::Cache {
                who: ctx.who(),
                op: "write",
                path: resultcache::results_dir(&ctx.config.cni_dir),
                source,
            };
            return Err(self.rollback(err));
        }
        if ctx.seams.defer_work {
            let (cni_dir, cid) = (&ctx.config.cni_dir, ctx.env.container_id());
            let job = super::deferred::leave(cni_dir, cid, ctx.who(), self.behind, self.lock);
            return Ok((reply, Some(job)));
        }
        if let Err(err) = self.flush() {
            return Err(self.rollback(err));
        }
        drop(self.lock);
        Ok((reply, None))
    }

    /// Undo the undo list in reverse ([`teardown::current`]). When every DEL succeeds, nothing of the ADD
    /// remains (cache and lock file removed) and the result is `original`; otherwise the cache stays so
    /// the runtime's DEL, which always follows a failed ADD (CNI-23), can try again, and the error reports
    /// the original failure and every rollback failure.
    pub fn rollback(mut self, original: Error) -> Error {
        let ctx = self.ctx;
        // The DELs read the result records (prevResult) and remove them: each must be in place (a held
        // one written first, with its delegate's result), none still in flight.
        if let Err((rec, e)) = self.submit_held() {
            tracing::warn!(
                "[{}]: the result record of {:?} was not written: {e}",
                ctx.who(),
                rec.network_name
            );
        }
        if let Err(e) = self.behind.flush() {
            tracing::warn!("[{}]: a result record was not written: {e}", ctx.who());
        }
        tracing::warn!(
            "[{}]: ADD failed, rolling back {} attachment(s): {original}",
            ctx.who(),
            self.undo.len()
        );
        let failures = match teardown::current(ctx, std::mem::take(&mut self.undo)) {
            Ok(()) => Vec::new(),
            Err(Error::Many(errors)) => errors,
            Err(e) => vec![e],
        };
        if !failures.is_empty() {
            return Error::Rollback {
                original: Box::new(original),
                failures,
            };
        }
        if let Some(kept) = self.kept.take() {
            // A hot-plug: the sandbox is back to what it had; its cache says so again.
            let (cni_dir, cid) = (&ctx.config.cni_dir, ctx.env.container_id());
            let behind = WriteBehind::default();
            if let Err(e) = cache::write(cni_dir, cid, &kept, &behind).and_then(|()| behind.flush())
            {
                tracing::error!("[{}]: rewriting the cache after rollback: {e}", ctx.who());
            }
            return original;
        }
        match cache::remove(&ctx.config.cni_dir, ctx.env.container_id()) {
            Ok(()) => self.lock.release_and_remove(),
            Err(e) => tracing::error!("[{}]: removing the cache after rollback: {e}", ctx.who()),
        }
        original
    }
}

/// Rewrite the cache as `attachments`, synced and in place before this returns.
pub(super) fn write_cache(ctx: &Ctx<'_>, attachments: &[Attachment]) -> Result<(), Error> {
    let (cni_dir, cid) = (&ctx.config.cni_dir, ctx.env.container_id());
    let behind = WriteBehind::default();
    cache::write(cni_dir, cid, attachments, &behind)
        .and_then(|()| behind.flush())
        .map_err(|source| Error::Cache {
            who: ctx.who(),
            op: "write",
            path: cache::path(cni_dir, cid),
            source,
        })
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::{ops::tests::with_ctx, seams::testing::TestHost, store::lock};

    fn lock(ctx: &Ctx<'_>) -> ContainerLock {
        ContainerLock::acquire(
            &ctx.config.cni_dir,
            ctx.env.container_id(),
            std::time::Duration::from_secs(1),
        )
        .unwrap()
    }

    /// Run `a`'s delegate (the fake) for `tx`, as ADD does.
    fn run(ctx: &Ctx<'_>, tx: &mut Transaction<'_, '_>, a: &Attachment) -> CniResult {
        let rt = ctx.runtime_conf(a, "c1", None, true).unwrap();
        let (result, rec) = ctx.invoker().add_unrecorded(&a.network, &rt).unwrap();
        tx.attached(a, rec).unwrap();
        result
    }

    fn original(ctx: &Ctx<'_>) -> Error {
        Error::UnknownContainer {
            who: ctx.who(),
            container_id: "original".into(),
        }
    }

    fn dels(h: &TestHost) -> Vec<String> {
        h.exec
            .calls()
            .iter()
            .filter(|c| c.command() == "DEL")
            .map(|c| c.network().to_string())
            .collect()
    }

    #[test]
    fn rollback_undoes_the_undo_list_in_reverse_and_leaves_nothing() {
        let h = TestHost::new();
        let err = with_ctx(&h, false, |ctx, list| {
            let mut tx = Transaction::begin(ctx, lock(ctx), &list, false).unwrap();
            run(ctx, &mut tx, &list[0]);
            run(ctx, &mut tx, &list[1]);
            // The third failed after it may have started: undone too.
            tx.partly_attached(&list[2]);
            tx.rollback(original(ctx))
        });
        assert!(
            matches!(&err, Error::UnknownContainer { container_id, .. } if container_id == "original"),
            "{err}"
        );
        assert_eq!(dels(&h), ["c", "b", "a"]);
        assert!(!cache::path(&h.cni_dir(), "c1").exists());
        assert!(resultcache::list(&h.cni_dir(), Some("c1")).is_empty());
        assert!(!lock::lock_dir(&h.cni_dir()).join("c1").exists());
    }

    #[test]
    fn a_failed_rollback_tries_every_del_keeps_the_cache_and_reports_both() {
        let h = TestHost::new();
        h.exec.fail("b", "DEL", 11, "del failed");
        let err = with_ctx(&h, false, |ctx, list| {
            let mut tx = Transaction::begin(ctx, lock(ctx), &list, false).unwrap();
            for a in &list {
                run(ctx, &mut tx, a);
            }
            tx.rollback(original(ctx))
        });
        let Error::Rollback { original, failures } = &err else {
            panic!("{err}");
        };
        assert!(matches!(**original, Error::UnknownContainer { .. }));
        assert_eq!(failures.len(), 1);
        assert!(failures[0].to_string().contains("del failed"), "{err}");
        assert_eq!(dels(&h), ["c", "b", "a"]);
        assert!(cache::path(&h.cni_dir(), "c1").exists(), "kept for DEL");
    }

    #[test]
    fn held_records_are_written_once_with_the_final_results() {
        let h = TestHost::new();
        let record = |n: &str, ifname: &str| {
            resultcache::read(&h.cni_dir(), n, "c1", ifname)
                .unwrap()
                .and_then(|r| r.result)
        };
        with_ctx(&h, false, |ctx, list| {
            let mut tx = Transaction::begin(ctx, lock(ctx), &list, true).unwrap();
            let mut attached = Vec::new();
            for a in &list {
                let r = run(ctx, &mut tx, a);
                attached.push((a.clone(), r));
            }
            tx.behind.flush().unwrap();
            assert_eq!(record("a", "eth0"), None, "held");
            assert!(cache::path(&h.cni_dir(), "c1").exists(), "the cache is not");
            attached[1].1.routes.clear();
            tx.record_final(&attached, &[false, true, false], Some(&[(true, false); 3]))
                .unwrap();
            tx.commit(()).unwrap();
        });
        let routes = |v: Value| v["routes"].as_array().map_or(0, Vec::len);
        assert_eq!(
            routes(record("a", "eth0").unwrap()),
            1,
            "as its delegate gave it"
        );
        assert_eq!(routes(record("b", "net1").unwrap()), 0, "the final result");
        assert!(record("c", "net2").is_some());
        let c: Value =
            serde_json::from_slice(&std::fs::read(cache::path(&h.cni_dir(), "c1")).unwrap())
                .unwrap();
        assert_eq!(c[2]["IsFilterV4Gateway"], true);
    }

    #[test]
    fn a_rollback_writes_the_held_records_first_so_each_del_has_its_prev_result() {
        let h = TestHost::new();
        let results = with_ctx(&h, false, |ctx, list| {
            let mut tx = Transaction::begin(ctx, lock(ctx), &list, true).unwrap();
            let results: Vec<Value> = list[..2]
                .iter()
                .map(|a| {
                    run(ctx, &mut tx, a)
                        .to_value(a.network.cni_version)
                        .unwrap()
                })
                .collect();
            tx.rollback(original(ctx));
            results
        });
        let prev: Vec<Value> = h
            .exec
            .calls()
            .iter()
            .filter(|c| c.command() == "DEL")
            .map(|c| c.stdin["prevResult"].clone())
            .collect();
        assert_eq!(prev, [results[1].clone(), results[0].clone()]);
        assert!(resultcache::list(&h.cni_dir(), Some("c1")).is_empty());
    }
}
