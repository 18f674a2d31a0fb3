//! `<cniDir>/.trash`: where a daemon DEL moves its container's files (the cache, the result records)
//! before its reply, so that the unlinks, which wait on the disk (a filesystem mounted with `discard`
//! frees each file's blocks synchronously), run after it. A rename within one filesystem frees no block.
//! The trash is emptied by the DEL's work after the reply, and whatever a daemon killed before that left
//! there by the next DEL (daemon or thin), GC, or daemon start ([`sweep`]). Nothing reads the trash: a file
//! in it is no longer the container's (docs/daemon.md, "DEL after the reply").

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::store::fsutil;

/// The trash directory of `cni_dir` (a dot-name: never taken for a container's cache).
pub fn dir(cni_dir: &Path) -> PathBuf {
    cni_dir.join(".trash")
}

/// The files one operation moved into the trash, to unlink later ([`Trash::empty`]).
#[derive(Debug)]
pub struct Trash {
    dir: PathBuf,
    moved: Mutex<Vec<PathBuf>>,
}

/// Makes trash names unique within this process (with the pid, across processes).
static SEQ: AtomicU64 = AtomicU64::new(0);

impl Trash {
    /// The trash of `cni_dir` (the directory is made on the first [`Trash::discard`]).
    pub fn new(cni_dir: &Path) -> Trash {
        Trash {
            dir: dir(cni_dir),
            moved: Mutex::default(),
        }
    }

    /// Make `path` unreachable at once: renamed into the trash under a name of its own. A file already
    /// gone is fine. Where the rename cannot be done (the trash on another filesystem, say), the file is
    /// unlinked here instead, as without a trash.
    pub fn discard(&self, path: &Path) -> io::Result<()> {
        let Some(name) = path.file_name() else {
            return fsutil::remove_if_exists(path);
        };
        let mut moved = self.moved.lock().unwrap_or_else(|e| e.into_inner());
        let made = if moved.is_empty() {
            fsutil::ensure_dir(&self.dir, 0o700)
        } else {
            Ok(())
        };
        let to = self.dir.join(format!(
            "{}.{}-{}",
            name.to_string_lossy(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        match made.and_then(|()| fs::rename(path, &to)) {
            Ok(()) => {
                moved.push(to);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => {
                tracing::debug!(
                    "cannot move {} into {} ({e}); removing it in place",
                    path.display(),
                    self.dir.display()
                );
                fsutil::remove_if_exists(path)
            }
        }
    }

    /// Whether nothing was moved.
    pub fn is_empty(&self) -> bool {
        self.moved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Unlink what was moved, then whatever else the trash holds (left by a process killed before it
    /// emptied its own).
    pub fn empty(self) {
        self.unlink_moved();
        let others = sweep_dir(&self.dir);
        if others > 0 {
            tracing::info!(
                "removed {others} file(s) an earlier plexus left in {}",
                self.dir.display()
            );
        }
    }

    /// Unlink what this trash moved (and forget it).
    fn unlink_moved(&self) {
        let moved = std::mem::take(&mut *self.moved.lock().unwrap_or_else(|e| e.into_inner()));
        for p in &moved {
            if let Err(e) = fsutil::remove_if_exists(p) {
                tracing::warn!("cannot remove {}: {e}", p.display());
            }
        }
    }
}

/// A trash dropped without [`Trash::empty`] (its DEL's after-reply job dropped unrun, a panic after a
/// discard) still unlinks what it moved, now: else that waits for the next DEL, GC or daemon start.
impl Drop for Trash {
    fn drop(&mut self) {
        self.unlink_moved();
    }
}

/// Unlink everything in `cni_dir`'s trash (what a killed daemon left there); how many files that was.
/// Without a trash (the usual case), one failed `opendir`.
pub fn sweep(cni_dir: &Path) -> usize {
    sweep_dir(&dir(cni_dir))
}

fn sweep_dir(dir: &Path) -> usize {
    let Ok(rd) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in rd.flatten() {
        // Files only: nothing else is ever put here, and a directory someone made here is theirs.
        if e.file_type().is_ok_and(|t| !t.is_dir()) {
            match fsutil::remove_if_exists(&e.path()) {
                Ok(()) => removed += 1,
                Err(err) => tracing::warn!("cannot remove {}: {err}", e.path().display()),
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn discarded_files_leave_their_place_at_once_and_go_when_emptied() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("results")).unwrap();
        let (cache, record) = (d.path().join("c1"), d.path().join("results/n-c1-eth0"));
        fs::write(&cache, b"[]").unwrap();
        fs::write(&record, b"{}").unwrap();
        let t = Trash::new(d.path());
        assert!(t.is_empty());
        t.discard(&cache).unwrap();
        t.discard(&record).unwrap();
        // Gone already: fine, and nothing moved for it.
        t.discard(&d.path().join("missing")).unwrap();
        assert!(!cache.exists() && !record.exists());
        let held = names(&dir(d.path()));
        assert_eq!(held.len(), 2, "{held:?}");
        assert!(held.iter().any(|n| n.starts_with("c1.")), "{held:?}");
        assert!(held.iter().any(|n| n.starts_with("n-c1-eth0.")), "{held:?}");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(dir(d.path())).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);
        // The same name twice (a container deleted, added and deleted again) keeps both.
        fs::write(&cache, b"[]").unwrap();
        t.discard(&cache).unwrap();
        assert_eq!(names(&dir(d.path())).len(), 3);
        assert!(!t.is_empty());
        t.empty();
        assert_eq!(names(&dir(d.path())), Vec::<String>::new());
    }

    #[test]
    fn emptying_takes_leftovers_too_and_sweep_takes_everything() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(sweep(d.path()), 0, "no trash: nothing to do");
        fs::create_dir(dir(d.path())).unwrap();
        fs::write(dir(d.path()).join("c0.1-1"), b"x").unwrap();
        let f = d.path().join("c1");
        fs::write(&f, b"x").unwrap();
        let t = Trash::new(d.path());
        t.discard(&f).unwrap();
        t.empty();
        assert_eq!(names(&dir(d.path())), Vec::<String>::new());
        fs::write(dir(d.path()).join("a.1-1"), b"x").unwrap();
        fs::write(dir(d.path()).join("b.1-2"), b"x").unwrap();
        fs::create_dir(dir(d.path()).join("not-ours")).unwrap();
        assert_eq!(sweep(d.path()), 2);
        assert_eq!(names(&dir(d.path())), ["not-ours"]);
    }

    #[test]
    fn a_trash_dropped_without_emptying_still_unlinks_what_it_moved() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join(".c1.tmp.42");
        fs::write(&f, b"x").unwrap();
        let t = Trash::new(d.path());
        t.discard(&f).unwrap();
        assert_eq!(names(&dir(d.path())).len(), 1);
        // Another process's leftover is not this trash's to take on drop (emptying takes it).
        fs::write(dir(d.path()).join("c0.1-1"), b"x").unwrap();
        drop(t);
        assert_eq!(names(&dir(d.path())), ["c0.1-1"]);
    }

    #[test]
    fn a_trash_that_cannot_be_made_falls_back_to_removing_in_place() {
        let d = tempfile::tempdir().unwrap();
        // A file where the trash directory would go.
        fs::write(dir(d.path()), b"in the way").unwrap();
        let f = d.path().join("c1");
        fs::write(&f, b"x").unwrap();
        let t = Trash::new(d.path());
        t.discard(&f).unwrap();
        assert!(!f.exists(), "removed in place");
        assert!(t.is_empty());
        assert_eq!(fs::read(dir(d.path())).unwrap(), b"in the way");
    }
}
