//! Daemon mode: the durable writes a successful ADD leaves for after its reply, held with the container's
//! lock until the after-reply thread runs them, or until a DEL of the same container takes them over
//! ([`take_over`]) instead of waiting for that thread to reach them behind other requests' work.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        LazyLock, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use super::AfterReply;
use crate::{fsutil::WriteBehind, lock::ContainerLock};

/// An ADD's writes still to do, and the lock it still holds.
pub(super) struct Deferred {
    /// The writes (deferred: nothing runs until a flush).
    pub behind: WriteBehind,
    /// The container's lock, taken by the ADD.
    pub lock: ContainerLock,
}

/// `(cniDir, container ID)`: one lock file, one container.
type Key = (PathBuf, String);

/// Writes not yet started, by container, each with the number of the ADD that left them.
static PENDING: LazyLock<Mutex<HashMap<Key, (u64, Deferred)>>> = LazyLock::new(Mutex::default);
static NEXT: AtomicU64 = AtomicU64::new(0);

fn pending() -> std::sync::MutexGuard<'static, HashMap<Key, (u64, Deferred)>> {
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// The after-reply job of one ADD: runs its writes durably and releases the lock when dropped (run or
/// not: work that is never run must still not keep the lock), unless a DEL took them over first.
struct Job {
    key: Key,
    id: u64,
    who: String,
}

impl Drop for Job {
    fn drop(&mut self) {
        let mine = {
            let mut p = pending();
            match p.get(&self.key) {
                Some((id, _)) if *id == self.id => p.remove(&self.key).map(|(_, d)| d),
                // Taken over by a DEL (which may since have let a newer ADD register its own).
                _ => None,
            }
        };
        if let Some(d) = mine {
            if let Err(e) = d.behind.flush() {
                tracing::error!(
                    "[{}]: a write after the reply (cache or result record) failed: {e}",
                    self.who
                );
            }
            drop(d.lock);
        }
    }
}

/// Leave `behind`'s writes and `lock` for after the reply: the job goes into `slot`. A slot that cannot
/// take it (poisoned) runs the writes now.
pub(super) fn leave(
    slot: &AfterReply,
    cni_dir: &Path,
    cid: &str,
    who: String,
    behind: WriteBehind,
    lock: ContainerLock,
) {
    let key = (cni_dir.to_path_buf(), cid.to_string());
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    // Another entry for the container cannot exist: its ADD would still hold the lock this one took.
    let older = pending().insert(key.clone(), (id, Deferred { behind, lock }));
    drop(older);
    let job = Job { key, id, who };
    if let Ok(mut s) = slot.lock() {
        *s = Some(Box::new(move || drop(job)));
    }
}

/// The writes (with the lock) that an ADD of `cid` left and the after-reply thread has not started; the
/// caller owns the lock from here on. `None` when there are none, or when they are running already (the
/// caller then waits for the lock as usual).
pub(super) fn take_over(cni_dir: &Path, cid: &str) -> Option<Deferred> {
    pending()
        .remove(&(cni_dir.to_path_buf(), cid.to_string()))
        .map(|(_, d)| d)
}
