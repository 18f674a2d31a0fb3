//! Per-container locks: ADD, DEL and CHECK of one container never overlap, across processes (Go Multus has
//! no locking; docs/multus-compat.md, "Locking"). An advisory `flock` on
//! `<cniDir>/.locks/<containerID>`.
//!
//! The delegates an operation runs for its container inherit the lock (an `flock` belongs to the open file
//! description, and [`held_here`] hands it to [`crate::seams::exec`]): when plexus is SIGKILLed mid-operation, the
//! lock stays held until the last delegate it was running exits, so the runtime's DEL, or a repeated ADD,
//! never overlaps an orphaned delegate. A live plexus unlocks explicitly on release, so a process a
//! delegate left behind never keeps the lock of a finished operation.
//!
//! The holder records itself in the lock file ([`orphans`]). A waiter near the end of its wait whose lock's
//! owner is dead kills the orphans still holding it, then takes it: a delegate that hangs after its plexus
//! was SIGKILLed would otherwise keep the container's operations failing forever.

use std::{
    cell::RefCell,
    fs::{File, OpenOptions, TryLockError},
    io,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Weak},
    thread,
    time::{Duration, Instant},
};

use crate::store::fsutil;

pub mod orphans;

pub use orphans::killed_total as orphans_killed;

/// When a waiter that has not got the lock looks for orphans of a dead owner ([`orphans::recover`]): near
/// the end of its wait, so an orphan still finishing its work (a delegate of a plexus SIGKILLed a moment
/// ago) is waited for as before; what is kept back leaves time for the killed to exit.
fn recovery_point(timeout: Duration) -> Duration {
    timeout - (timeout / 4).min(Duration::from_secs(2))
}

/// The lock directory under `cniDir` (a dot-name, so it is never mistaken for a container cache).
pub fn lock_dir(cni_dir: &Path) -> PathBuf {
    cni_dir.join(".locks")
}

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another operation held the lock for the whole wait (CNI code 11: try again later).
    #[error("another operation on container {container_id} is still running after {:.0}s", waited.as_secs_f64())]
    Timeout {
        /// The container.
        container_id: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The lock file could not be opened.
    #[error("cannot open lock file {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// A held lock; released on drop.
#[derive(Debug)]
pub struct ContainerLock {
    /// Shared only with [`held_here`]'s callers, for the time it takes to start a delegate.
    file: Arc<File>,
    path: PathBuf,
}

thread_local! {
    /// The locks taken on this thread that are still held (a dead `Weak` is a lock since released). An
    /// operation runs its delegates on the thread that took its lock (the daemon runs each request in place
    /// on one thread), so another thread's request, for another container, can never find this one's lock.
    static HELD: RefCell<Vec<(PathBuf, Weak<File>)>> = const { RefCell::new(Vec::new()) };
}

/// The lock of `container_id` when this thread holds it: the delegates run for that container inherit it
/// ([`crate::seams::exec::ExecRequest::lock`]).
pub fn held_here(cni_dir: &Path, container_id: &str) -> Option<Arc<File>> {
    let path = lock_dir(cni_dir).join(container_id);
    HELD.with_borrow_mut(|held| {
        held.retain(|(_, f)| f.strong_count() > 0);
        held.iter()
            .find(|(p, _)| *p == path)
            .and_then(|(_, f)| f.upgrade())
    })
}

impl ContainerLock {
    /// Take the lock of `container_id`, waiting up to `timeout`.
    pub fn acquire(
        cni_dir: &Path,
        container_id: &str,
        timeout: Duration,
    ) -> Result<ContainerLock, LockError> {
        let dir = lock_dir(cni_dir);
        let path = dir.join(container_id);
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        fsutil::ensure_dir(&dir, 0o700).map_err(io_err)?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        // A try-lock (no wait) never kills: its caller skips a busy container.
        let mut recover_at = (!timeout.is_zero()).then(|| recovery_point(timeout));
        loop {
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
            {
                Ok(f) => f,
                // A read-only cniDir (say, remounted after disk errors): an existing lock file can still be
                // locked through a read-only descriptor, so a DEL can still tear the networks down.
                Err(e) if e.raw_os_error() == Some(nix::libc::EROFS) => {
                    File::open(&path).map_err(|_| io_err(e))?
                }
                Err(e) => return Err(io_err(e)),
            };
            match file.try_lock() {
                Ok(()) => {
                    // The holder before us may have removed the file after we opened it; then our lock is on
                    // an orphaned inode and a newcomer could lock a fresh file. Only the file at the path counts.
                    let ours = file.metadata().map_err(io_err)?.ino();
                    match std::fs::metadata(&path) {
                        Ok(m) if m.ino() == ours => {
                            orphans::write_record(&file);
                            let file = Arc::new(file);
                            HELD.with_borrow_mut(|held| {
                                held.retain(|(_, f)| f.strong_count() > 0);
                                held.push((path.clone(), Arc::downgrade(&file)));
                            });
                            return Ok(ContainerLock { file, path });
                        }
                        _ => continue,
                    }
                }
                Err(TryLockError::WouldBlock) => {
                    if recover_at.is_some_and(|at| started.elapsed() >= at) {
                        recover_at = None;
                        if orphans::recover(&file, container_id) > 0 {
                            pause = Duration::from_millis(1);
                        }
                    }
                }
                Err(TryLockError::Error(e)) => return Err(io_err(e)),
            }
            if started.elapsed() >= timeout {
                return Err(LockError::Timeout {
                    container_id: container_id.to_string(),
                    waited: started.elapsed(),
                });
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Release the lock and remove its file (after the container is fully torn down).
    pub fn release_and_remove(self) {
        // Removing while still holding the lock is what makes the inode check in `acquire` sound.
        let _ = fsutil::remove_if_exists(&self.path);
        drop(self);
    }
}

impl Drop for ContainerLock {
    fn drop(&mut self) {
        // Unlock explicitly, not by closing: a delegate's child that outlived it (a daemon it started, or one
        // that escaped a timeout's group kill) still holds the open file description, and would otherwise
        // keep the lock of this finished operation for as long as it lives.
        let _ = self.file.unlock();
    }
}

/// Remove lock files of containers not in `keep` that nobody holds (GC).
pub fn remove_stale(cni_dir: &Path, keep: &dyn Fn(&str) -> bool) {
    let Ok(rd) = std::fs::read_dir(lock_dir(cni_dir)) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if keep(&name) {
            continue;
        }
        if let Ok(l) = ContainerLock::acquire(cni_dir, &name, Duration::ZERO) {
            l.release_and_remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn exclusive_and_times_out_with_code_11_error() {
        let d = tempfile::tempdir().unwrap();
        let held = ContainerLock::acquire(d.path(), "c1", Duration::from_secs(1)).unwrap();
        let e = ContainerLock::acquire(d.path(), "c1", Duration::from_millis(50)).unwrap_err();
        assert!(matches!(e, LockError::Timeout { .. }), "{e}");
        // A different container is independent.
        let other = ContainerLock::acquire(d.path(), "c2", Duration::from_millis(50)).unwrap();
        drop(other);
        held.release_and_remove();
        assert!(!lock_dir(d.path()).join("c1").exists());
        ContainerLock::acquire(d.path(), "c1", Duration::from_millis(50)).unwrap();
    }

    #[test]
    fn mutual_exclusion_under_contention_with_removal() {
        let d = Arc::new(tempfile::tempdir().unwrap());
        let inside = Arc::new(Mutex::new(0u32));
        let max = Arc::new(Mutex::new(0u32));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (d, inside, max) = (d.clone(), inside.clone(), max.clone());
                thread::spawn(move || {
                    for _ in 0..20 {
                        let l =
                            ContainerLock::acquire(d.path(), "c", Duration::from_secs(30)).unwrap();
                        let now = {
                            let mut g = inside.lock().unwrap();
                            *g += 1;
                            *g
                        };
                        let mut m = max.lock().unwrap();
                        *m = (*m).max(now);
                        drop(m);
                        thread::sleep(Duration::from_micros(200));
                        *inside.lock().unwrap() -= 1;
                        l.release_and_remove();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            *max.lock().unwrap(),
            1,
            "never two holders at once, even with lock files being removed"
        );
    }

    #[test]
    fn the_holder_records_itself_in_the_lock_file() {
        let d = tempfile::tempdir().unwrap();
        let held = ContainerLock::acquire(d.path(), "c1", Duration::ZERO).unwrap();
        let file = File::open(lock_dir(d.path()).join("c1")).unwrap();
        let me = orphans::Owner::this_process().unwrap();
        assert_eq!(orphans::read_record(&file), Some(me));
        drop(held);
    }

    /// `argv` run in a process group of its own, its stdout's first line (a pid) returned with it; `None`
    /// (with the reason printed) when it cannot be run (the tests use util-linux's `flock(1)`).
    fn group_running(argv: &[&str]) -> Option<(std::process::Child, i32)> {
        use std::{io::BufRead, os::unix::process::CommandExt};
        let mut child = match std::process::Command::new(argv[0])
            .args(&argv[1..])
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("skipped: {} cannot be run ({e})", argv[0]);
                return None;
            }
        };
        let mut line = String::new();
        io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Some((child, line.trim().parse().expect("a pid")))
    }

    /// `flock(1)` takes the lock of container `c` in `dir` and runs `sh -c script` ([`group_running`]).
    fn flock_running(dir: &Path, script: &str) -> Option<(std::process::Child, i32)> {
        let path = lock_dir(dir).join("c");
        fsutil::ensure_dir(&lock_dir(dir), 0o700).unwrap();
        group_running(&["flock", path.to_str().unwrap(), "sh", "-c", script])
    }

    fn runs(pid: i32) -> bool {
        plexus_testsupport::proc::runs(pid as u32)
    }

    fn kill(pid: i32) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    /// The process that took the lock has exited; a process it left, holding the locked descriptor (in
    /// the taker's process group), would hold it forever. A waiter kills it near the end of its wait and
    /// takes the lock; it killed nothing else.
    #[test]
    fn a_waiter_kills_the_orphan_of_a_dead_owner_and_takes_the_lock() {
        let d = tempfile::tempdir().unwrap();
        let Some((mut flock, orphan)) =
            flock_running(d.path(), "sleep 600 >/dev/null 2>&1 & echo $!")
        else {
            return;
        };
        flock.wait().unwrap();
        let before = orphans_killed();
        let mut bystander = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let t = Instant::now();
        let got = ContainerLock::acquire(d.path(), "c", Duration::from_secs(2));
        let waited = t.elapsed();
        let (still, bystander_runs) = (runs(orphan), runs(bystander.id() as i32));
        kill(orphan);
        kill(bystander.id() as i32);
        let _ = bystander.wait();
        assert!(got.is_ok(), "{got:?}");
        assert!(!still, "the orphan {orphan} still runs");
        assert!(bystander_runs, "a process not holding the lock was killed");
        assert!(
            waited >= Duration::from_millis(1400),
            "killed after {waited:?}, not near the end of the wait"
        );
        assert!(orphans_killed() > before);
    }

    /// The orphan is in a process group whose leader lives and does not hold the lock (here: the shell that
    /// ran flock(1), then sleeps): the orphan alone is killed, not its group.
    #[test]
    fn an_orphan_in_a_group_led_by_a_live_non_holder_is_killed_alone() {
        let d = tempfile::tempdir().unwrap();
        let path = lock_dir(d.path()).join("c");
        fsutil::ensure_dir(&lock_dir(d.path()), 0o700).unwrap();
        let script = format!(
            "flock {} sh -c 'sleep 600 >/dev/null 2>&1 & echo $!'; exec sleep 600 >/dev/null",
            path.display()
        );
        let Some((mut leader, orphan)) = group_running(&["sh", "-c", &script]) else {
            return;
        };
        // flock(1) has exited once the leader sleeps in its place.
        let t = Instant::now();
        while std::fs::read_to_string(format!("/proc/{}/comm", leader.id()))
            .is_ok_and(|c| c.trim() != "sleep")
            && t.elapsed() < Duration::from_secs(10)
        {
            thread::sleep(Duration::from_millis(5));
        }
        let got = ContainerLock::acquire(d.path(), "c", Duration::from_millis(800));
        let (orphan_runs, leader_runs) = (runs(orphan), runs(leader.id() as i32));
        kill(orphan);
        let _ = leader.kill();
        let _ = leader.wait();
        assert!(got.is_ok(), "{got:?}");
        assert!(!orphan_runs, "the orphan {orphan} still runs");
        assert!(
            leader_runs,
            "the live leader of the orphan's group was killed"
        );
    }

    /// A live owner's processes are never killed: the wait times out as for any busy lock.
    #[test]
    fn a_live_owners_processes_are_never_killed() {
        let d = tempfile::tempdir().unwrap();
        let Some((mut flock, child)) =
            flock_running(d.path(), "sleep 600 >/dev/null 2>&1 & echo $!; wait")
        else {
            return;
        };
        let got = ContainerLock::acquire(d.path(), "c", Duration::from_millis(400));
        let alive = (runs(flock.id() as i32), runs(child));
        kill(child);
        let _ = flock.wait();
        assert!(matches!(got, Err(LockError::Timeout { .. })), "{got:?}");
        assert_eq!(
            alive,
            (true, true),
            "the owner (flock, its sleep) was killed"
        );
    }

    #[test]
    fn stale_locks_are_removed_unless_kept_or_held() {
        let d = tempfile::tempdir().unwrap();
        drop(ContainerLock::acquire(d.path(), "old", Duration::ZERO).unwrap());
        drop(ContainerLock::acquire(d.path(), "keep", Duration::ZERO).unwrap());
        let held = ContainerLock::acquire(d.path(), "busy", Duration::ZERO).unwrap();
        remove_stale(d.path(), &|id| id == "keep");
        let dir = lock_dir(d.path());
        assert!(!dir.join("old").exists());
        assert!(dir.join("keep").exists());
        assert!(dir.join("busy").exists());
        drop(held);
    }
}
