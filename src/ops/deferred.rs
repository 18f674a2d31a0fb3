//! Daemon mode: the durable writes a successful ADD leaves for after its reply, held with the container's
//! lock until the after-reply thread has run them, or until a DEL of the same container takes over what is
//! left of them ([`take_over`]) instead of waiting for that thread to reach them (behind other requests'
//! work) and finish them (an fsync each).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use super::AfterReply;
use crate::store::{fsutil::WriteBehind, lock::ContainerLock};

/// An ADD's writes still to do, and the lock it still holds.
pub(super) struct Deferred {
    /// The writes (deferred: each runs only when flushed).
    pub behind: WriteBehind,
    /// The container's lock, taken by the ADD.
    pub lock: ContainerLock,
}

/// One ADD's deferred work, shared by its after-reply job and a DEL that may take it over.
struct Entry {
    /// `None` once the job has finished it, or a DEL has taken it. The job holds this while it runs one
    /// write, so a DEL that takes over waits for that one write at most, never for a half-done one.
    work: Mutex<Option<Deferred>>,
    /// A DEL wants the rest: the job stops before its next write.
    wanted: AtomicBool,
}

/// `(cniDir, container ID)`: one lock file, one container.
type Key = (PathBuf, String);

/// The ADDs' deferred work by container, each with the number of the ADD that left it.
type Pending = HashMap<Key, (u64, Arc<Entry>)>;
static PENDING: LazyLock<Mutex<Pending>> = LazyLock::new(Mutex::default);
static NEXT: AtomicU64 = AtomicU64::new(0);

fn pending() -> std::sync::MutexGuard<'static, Pending> {
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

fn work(e: &Entry) -> std::sync::MutexGuard<'_, Option<Deferred>> {
    e.work.lock().unwrap_or_else(|e| e.into_inner())
}

/// The after-reply job of one ADD: runs its writes durably, one by one, then releases the lock. It runs
/// when dropped (called or not: work that never runs must still not keep the lock) and stops early when
/// a DEL takes the rest over.
struct Job {
    key: Key,
    id: u64,
    entry: Arc<Entry>,
    who: String,
}

impl Drop for Job {
    fn drop(&mut self) {
        loop {
            if self.entry.wanted.load(Ordering::SeqCst) {
                return;
            }
            let mut w = work(&self.entry);
            let Some(d) = w.as_mut() else {
                return;
            };
            match d.behind.flush_next(true) {
                Some(Ok(())) => {}
                Some(Err(e)) => tracing::error!(
                    "[{}]: a write after the reply (cache or result record) failed: {e}",
                    self.who
                ),
                None => {
                    let d = w.take();
                    drop(w);
                    let mut p = pending();
                    if p.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
                        p.remove(&self.key);
                    }
                    drop(p);
                    drop(d);
                    return;
                }
            }
        }
    }
}

/// Leave `behind`'s writes and `lock` for after the reply: the job to run then (or drop: it runs anyway).
pub(super) fn leave(
    cni_dir: &Path,
    cid: &str,
    who: String,
    behind: WriteBehind,
    lock: ContainerLock,
) -> AfterReply {
    let key = (cni_dir.to_path_buf(), cid.to_string());
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let entry = Arc::new(Entry {
        work: Mutex::new(Some(Deferred { behind, lock })),
        wanted: AtomicBool::new(false),
    });
    // No other entry for the container can be here: its ADD would still hold the lock this one took.
    pending().insert(key.clone(), (id, entry.clone()));
    let job = Job {
        key,
        id,
        entry,
        who,
    };
    Box::new(move || drop(job))
}

/// What is left of the writes (with the lock) that an ADD of `cid` left for after its reply; the caller
/// owns the lock from here on. Waits for the one write the after-reply thread may be running. `None` when
/// there is nothing (any more): the caller then waits for the lock as usual, which the job is about to
/// release.
pub(super) fn take_over(cni_dir: &Path, cid: &str) -> Option<Deferred> {
    let (_, entry) = pending().remove(&(cni_dir.to_path_buf(), cid.to_string()))?;
    entry.wanted.store(true, Ordering::SeqCst);
    work(&entry).take()
}

#[cfg(test)]
mod tests {
    use std::{sync::mpsc, time::Duration};

    use super::*;

    /// A DEL that arrives while the after-reply thread is in the middle of the ADD's writes waits for the
    /// one write in progress, then takes the rest over with the lock; the thread stops there.
    #[test]
    fn a_del_takes_over_between_two_writes_of_a_running_job() {
        let d = tempfile::tempdir().unwrap();
        let lock = ContainerLock::acquire(d.path(), "c1", Duration::ZERO).unwrap();
        let behind = WriteBehind::deferred();
        let (started_tx, started) = mpsc::channel::<()>();
        let (go_tx, go) = mpsc::channel::<()>();
        behind
            .submit_with(d.path().join("first"), 0o600, move || {
                started_tx.send(()).unwrap();
                go.recv().unwrap();
                Ok(b"1".to_vec())
            })
            .unwrap();
        for name in ["second", "third"] {
            behind
                .submit(d.path().join(name), b"x".to_vec(), 0o600)
                .unwrap();
        }
        let job = leave(d.path(), "c1", "test".into(), behind, lock);
        let entry = pending()
            .get(&(d.path().to_path_buf(), "c1".to_string()))
            .unwrap()
            .1
            .clone();
        let thread = std::thread::spawn(job);
        started.recv().unwrap();
        // The first write is running: the DEL asks for the rest and waits for that write only.
        let dir = d.path().to_path_buf();
        let del = std::thread::spawn(move || take_over(&dir, "c1"));
        while !entry.wanted.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        go_tx.send(()).unwrap();
        let taken = del.join().unwrap().expect("the rest is taken over");
        thread.join().unwrap();
        assert!(
            d.path().join("first").exists(),
            "the write in progress ended"
        );
        assert!(
            !d.path().join("second").exists() && !d.path().join("third").exists(),
            "the job stopped before the next write"
        );
        // The DEL holds the container's lock now.
        assert!(ContainerLock::acquire(d.path(), "c1", Duration::ZERO).is_err());
        taken.behind.flush_unsynced().unwrap();
        assert!(d.path().join("third").exists());
        drop(taken.lock);
        drop(ContainerLock::acquire(d.path(), "c1", Duration::ZERO).unwrap());
        assert!(take_over(d.path(), "c1").is_none(), "nothing left to take");
    }

    /// Once the job has ended, there is nothing to take over, and the lock is free.
    #[test]
    fn nothing_is_taken_once_the_job_has_ended() {
        let d = tempfile::tempdir().unwrap();
        let lock = ContainerLock::acquire(d.path(), "c1", Duration::ZERO).unwrap();
        let behind = WriteBehind::deferred();
        behind
            .submit(d.path().join("r"), b"x".to_vec(), 0o600)
            .unwrap();
        let job = leave(d.path(), "c1", "test".into(), behind, lock);
        job();
        assert!(d.path().join("r").exists());
        assert!(take_over(d.path(), "c1").is_none());
        drop(ContainerLock::acquire(d.path(), "c1", Duration::ZERO).unwrap());
    }
}
