//! Crash-safe file writes: temp file in the target directory, fsync, rename, fsync of the directory (now, or
//! behind the caller's back with [`WriteBehind`]).

use std::{
    fs::{self, File, OpenOptions, Permissions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Mutex,
    thread::JoinHandle,
};

/// Create `dir` (and parents) with `mode` when missing.
pub fn ensure_dir(dir: &Path, mode: u32) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new().recursive(true).mode(mode).create(dir)
}

/// Write `bytes` to `path` atomically with file `mode`: readers see the old content or the new, never a
/// torn file, even across a crash or power loss. The temp file is per process, so concurrent plexus
/// processes never write into each other's temp file.
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    replace_with(path, &temp_of(path)?, mode, |f| f.write_all(bytes))
}

/// [`atomic_write`] without its fsyncs: whole or absent for any reader, and across the death of this process,
/// but not across a power loss. For files that are removed moments later anyway (a daemon DEL that takes
/// over the writes its container's ADD left for after the reply, `crate::ops`).
pub fn atomic_write_unsynced(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temp_of(path)?;
    let done = fill_temp(&tmp, mode, |f| f.write_all(bytes)).and_then(|f| {
        drop(f);
        fs::rename(&tmp, path)
    });
    if done.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    done
}

/// The temp file an atomic write of `path` by this process uses (`.<name>.tmp.<pid>`, beside it).
pub fn temp_of(path: &Path) -> io::Result<PathBuf> {
    let (dir, name) = split(path)?;
    // A leading dot keeps the temp file from ever looking like a container ID (which starts alphanumeric).
    Ok(dir.join(format!(".{name}.tmp.{}", std::process::id())))
}

/// The first half of an atomic write of `path`: `bytes` written whole into its temp file ([`temp_of`]),
/// mode set, neither synced nor renamed yet. [`WriteBehind::sync_and_rename`] does the rest (fsync,
/// rename, directory fsync) on its own thread. Until then a reader finds only the temp file, so one that
/// must survive this process's death looks there too (`crate::store::cache::read`). On failure nothing is left.
pub fn stage(path: &Path, bytes: &[u8], mode: u32) -> io::Result<PathBuf> {
    let tmp = temp_of(path)?;
    match fill_temp(&tmp, mode, |f| f.write_all(bytes)) {
        Ok(_) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Create (or truncate) `tmp` with `mode`, let `fill` write it, and set `mode` explicitly (the umask does
/// not apply); not synced.
fn fill_temp(
    tmp: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<File> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(tmp)?;
    fill(&mut f)?;
    f.set_permissions(Permissions::from_mode(mode))?;
    Ok(f)
}

/// Make the entries of `dir` (a rename into it) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn split(path: &Path) -> io::Result<(&Path, String)> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    Ok((dir, name.to_string_lossy().into_owned()))
}

/// Replace `path` with what `fill` writes into the temp file `tmp` (in the same directory): mode set
/// explicitly (the umask does not apply), fsync, rename over `path`, fsync of the directory. On failure
/// the temp file is removed and `path` is untouched.
pub fn replace_with(
    path: &Path,
    tmp: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    fill_and_rename(path, tmp, mode, fill)?;
    sync_dir(split(path)?.0)
}

fn fill_and_rename(
    path: &Path,
    tmp: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let result = (|| {
        let f = fill_temp(tmp, mode, fill)?;
        f.sync_all()?;
        drop(f);
        fs::rename(tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

/// [`atomic_write`]s done behind the caller's back, so an ADD goes on to its next delegate while the disk
/// flushes the last cache file (an fsync costs milliseconds on many disks): each on its own thread
/// ([`WriteBehind::default`], the thin binary), or all of them at [`WriteBehind::flush`]
/// ([`WriteBehind::deferred`], the daemon, which flushes after its reply). Each write is still the whole
/// temp-fsync-rename sequence; writes to one path stay in order; [`WriteBehind::flush`] finishes all of
/// them and reports the first failure. Dropping it flushes.
#[derive(Debug, Default)]
pub struct WriteBehind {
    pending: Mutex<Vec<(PathBuf, Pending)>>,
    deferred: bool,
}

/// A job started on its thread, or one left for the flush (its argument: whether to fsync).
enum Pending {
    Thread(JoinHandle<io::Result<()>>),
    Later(Box<dyn FnOnce(bool) -> io::Result<()> + Send>),
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pending::Thread(_) => "Thread",
            Pending::Later(_) => "Later",
        })
    }
}

impl Pending {
    /// Finish the job; a deferred one without its fsyncs unless `durable` (one already started on its
    /// thread is durable anyway).
    fn finish(self, durable: bool) -> io::Result<()> {
        match self {
            Pending::Thread(handle) => join(handle),
            Pending::Later(job) => job(durable),
        }
    }
}

impl WriteBehind {
    /// Writes that wait for [`WriteBehind::flush`] and run there, in order, on the flushing thread: no
    /// thread per write, and no fsync competing with the delegates for the CPUs and the disk. For a
    /// caller that flushes after its reply (the daemon); the thin binary's default overlaps the writes
    /// with the delegates instead.
    pub fn deferred() -> WriteBehind {
        WriteBehind {
            pending: Mutex::default(),
            deferred: true,
        }
    }

    /// Start writing `bytes` to `path` with `mode`.
    pub fn submit(&self, path: PathBuf, bytes: Vec<u8>, mode: u32) -> io::Result<()> {
        self.submit_with(path, mode, move || Ok(bytes))
    }

    /// [`WriteBehind::submit`] of bytes that `encode` produces when the write runs: encoding is work the
    /// caller need not wait for either. Its error is the write's.
    pub fn submit_with(
        &self,
        path: PathBuf,
        mode: u32,
        encode: impl FnOnce() -> io::Result<Vec<u8>> + Send + 'static,
    ) -> io::Result<()> {
        let target = path.clone();
        self.start(path, move |durable| {
            let bytes = encode()?;
            if durable {
                atomic_write(&target, &bytes, mode)
            } else {
                atomic_write_unsynced(&target, &bytes, mode)
            }
        })
    }

    /// Finish a [`stage`]d write: fsync `tmp`, rename it over `path`, fsync the directory. A failure
    /// removes `tmp` (the caller's flush reports it).
    pub fn sync_and_rename(&self, tmp: PathBuf, path: PathBuf) -> io::Result<()> {
        let target = path.clone();
        self.start(path, move |durable| {
            let done = (|| {
                if durable {
                    File::open(&tmp)?.sync_all()?;
                }
                fs::rename(&tmp, &target)?;
                if durable {
                    sync_dir(split(&target)?.0)?;
                }
                Ok(())
            })();
            if done.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            done
        })
    }

    /// Run `job` on its own thread, after any earlier job for `key` (a path); deferred: queue it.
    fn start(
        &self,
        key: PathBuf,
        job: impl FnOnce(bool) -> io::Result<()> + Send + 'static,
    ) -> io::Result<()> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if self.deferred {
            // The flush runs the queue in order, so a later write to a path lands after an earlier one.
            pending.push((key, Pending::Later(Box::new(job))));
            return Ok(());
        }
        if let Some(i) = pending.iter().position(|(p, _)| *p == key) {
            let (_, earlier) = pending.swap_remove(i);
            earlier.finish(true)?;
        }
        let spawned = std::thread::Builder::new()
            .name("cache-write".into())
            .spawn(move || job(true));
        match spawned {
            Ok(handle) => {
                pending.push((key, Pending::Thread(handle)));
                Ok(())
            }
            // No thread to be had (the process is at its limit): the caller fails the write.
            Err(_) => Err(io::Error::other(format!(
                "cannot start a thread to write {}",
                key.display()
            ))),
        }
    }

    /// Finish every write submitted so far (deferred ones run now, in order); the first failure, naming
    /// its file.
    pub fn flush(&self) -> io::Result<()> {
        self.finish_all(true)
    }

    /// [`WriteBehind::flush`], the deferred writes without their fsyncs ([`atomic_write_unsynced`]; a
    /// staged file only renamed): for writes whose files are about to be removed, so a power loss could
    /// only lose what was going anyway.
    pub fn flush_unsynced(&self) -> io::Result<()> {
        self.finish_all(false)
    }

    /// Finish the oldest write not yet finished (durably or not, as [`WriteBehind::flush`] and
    /// [`WriteBehind::flush_unsynced`]); `None` when there is none. Its error names its file. For a
    /// caller that must be able to stop between two writes.
    pub fn flush_next(&self, durable: bool) -> Option<io::Result<()>> {
        let next = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            (!pending.is_empty()).then(|| pending.remove(0))
        };
        next.map(|(path, job)| {
            job.finish(durable)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        })
    }

    fn finish_all(&self, durable: bool) -> io::Result<()> {
        let drained: Vec<_> =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut first = Ok(());
        for (path, job) in drained {
            if let Err(e) = job.finish(durable)
                && first.is_ok()
            {
                first = Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
            }
        }
        first
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

fn join(handle: JoinHandle<io::Result<()>>) -> io::Result<()> {
    handle
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the cache-writing thread panicked")))
}

/// Remove a file; a file already gone is success (idempotent teardown).
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_replaces_and_sets_mode_without_leftovers() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        atomic_write(&p, b"one", 0o600).unwrap();
        atomic_write(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f")]);
    }

    #[test]
    fn failure_leaves_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("dir-in-the-way");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("x"), b"x").unwrap();
        assert!(atomic_write(&target, b"y", 0o600).is_err());
        let count = fs::read_dir(d.path()).unwrap().count();
        assert_eq!(count, 1, "only the directory remains");
    }

    #[test]
    fn write_behind_writes_everything_in_order_per_path_and_reports_failures() {
        for wb in [WriteBehind::default(), WriteBehind::deferred()] {
            writes_in_order_and_reports_failures(wb);
        }
    }

    fn writes_in_order_and_reports_failures(wb: WriteBehind) {
        let d = tempfile::tempdir().unwrap();
        for i in 0..20 {
            wb.submit(
                d.path().join(format!("f{}", i % 4)),
                format!("v{i}").into_bytes(),
                0o600,
            )
            .unwrap();
        }
        wb.flush().unwrap();
        // The last write to each path wins.
        for j in 0..4 {
            assert_eq!(
                fs::read(d.path().join(format!("f{j}"))).unwrap(),
                format!("v{}", 16 + j).as_bytes()
            );
        }
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            4,
            "no temp files left"
        );
        // A failure surfaces at flush, naming the file.
        wb.submit(d.path().join("missing-dir/f"), b"x".to_vec(), 0o600)
            .unwrap();
        let e = wb.flush().unwrap_err();
        assert!(e.to_string().contains("missing-dir/f"), "{e}");
        wb.flush().unwrap();
    }

    #[test]
    fn a_staged_write_is_whole_in_its_temp_file_until_the_write_behind_renames_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let tmp = stage(&p, b"one", 0o640).unwrap();
        assert_eq!(tmp, temp_of(&p).unwrap());
        // Whole in the temp file, mode set whatever the umask; nothing at the target yet.
        assert_eq!(fs::read(&tmp).unwrap(), b"one");
        assert_eq!(mode(&tmp), 0o640);
        assert!(!p.exists());
        let wb = WriteBehind::default();
        wb.sync_and_rename(tmp.clone(), p.clone()).unwrap();
        wb.flush().unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(mode(&p), 0o640);
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
        // A rename that cannot be done fails the flush, naming the target, and leaves no temp file.
        let tmp = stage(&p, b"two", 0o600).unwrap();
        wb.sync_and_rename(tmp.clone(), d.path().join("gone/f"))
            .unwrap();
        let e = wb.flush().unwrap_err();
        assert!(e.to_string().contains("gone/f"), "{e}");
        assert!(!tmp.exists());
        assert_eq!(fs::read(&p).unwrap(), b"one");
    }

    #[test]
    fn write_behind_flushes_on_drop() {
        for wb in [WriteBehind::default(), WriteBehind::deferred()] {
            let d = tempfile::tempdir().unwrap();
            wb.submit(d.path().join("f"), b"x".to_vec(), 0o600).unwrap();
            drop(wb);
            assert_eq!(fs::read(d.path().join("f")).unwrap(), b"x");
        }
    }

    #[test]
    fn encoding_runs_with_the_write_and_its_error_is_the_writes() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let d = tempfile::tempdir().unwrap();
        let encoded = std::sync::Arc::new(AtomicBool::new(false));
        let wb = WriteBehind::deferred();
        let flag = encoded.clone();
        wb.submit_with(d.path().join("f"), 0o600, move || {
            flag.store(true, Ordering::SeqCst);
            Ok(b"late".to_vec())
        })
        .unwrap();
        assert!(!encoded.load(Ordering::SeqCst), "encoded before the flush");
        wb.flush().unwrap();
        assert!(encoded.load(Ordering::SeqCst));
        assert_eq!(fs::read(d.path().join("f")).unwrap(), b"late");
        // A failed encoding fails the write (here on the thread of the default mode) and leaves no file.
        let wb = WriteBehind::default();
        wb.submit_with(d.path().join("g"), 0o600, || {
            Err(io::Error::other("cannot encode"))
        })
        .unwrap();
        let e = wb.flush().unwrap_err();
        assert!(e.to_string().contains("cannot encode"), "{e}");
        assert!(!d.path().join("g").exists());
    }

    #[test]
    fn deferred_writes_touch_nothing_until_the_flush_and_stay_in_order() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let wb = WriteBehind::deferred();
        let tmp = stage(&p, b"staged", 0o600).unwrap();
        wb.sync_and_rename(tmp.clone(), p.clone()).unwrap();
        wb.submit(p.clone(), b"rewritten".to_vec(), 0o600).unwrap();
        // Only the staged temp file exists: the rename and the rewrite wait for the flush.
        assert!(!p.exists());
        assert_eq!(fs::read(&tmp).unwrap(), b"staged");
        wb.flush().unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"rewritten");
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    /// What a DEL that takes over an ADD's deferred writes does: every write lands, whole and in order,
    /// with no temp file left, but without an fsync; a failure still names its file.
    #[test]
    fn deferred_writes_flushed_unsynced_land_whole_and_in_order() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cache");
        let wb = WriteBehind::deferred();
        let tmp = stage(&p, b"staged", 0o600).unwrap();
        wb.sync_and_rename(tmp, p.clone()).unwrap();
        wb.submit(d.path().join("r1"), b"one".to_vec(), 0o640)
            .unwrap();
        wb.submit(d.path().join("r1"), b"two".to_vec(), 0o640)
            .unwrap();
        wb.flush_unsynced().unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"staged");
        assert_eq!(fs::read(d.path().join("r1")).unwrap(), b"two");
        assert_eq!(
            fs::metadata(d.path().join("r1"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o640
        );
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            2,
            "no temp file left"
        );
        wb.submit(d.path().join("gone/r2"), b"x".to_vec(), 0o600)
            .unwrap();
        let e = wb.flush_unsynced().unwrap_err();
        assert!(e.to_string().contains("gone/r2"), "{e}");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 2);
    }

    #[test]
    fn deferred_writes_can_be_finished_one_at_a_time_in_order() {
        let d = tempfile::tempdir().unwrap();
        let wb = WriteBehind::deferred();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            wb.submit(d.path().join(name), vec![b'0' + i as u8], 0o600)
                .unwrap();
        }
        wb.flush_next(true).unwrap().unwrap();
        assert!(d.path().join("a").exists() && !d.path().join("b").exists());
        // The rest, the other way.
        wb.flush_unsynced().unwrap();
        assert_eq!(fs::read(d.path().join("c")).unwrap(), b"2");
        assert!(wb.flush_next(true).is_none());
        wb.submit(d.path().join("gone/x"), b"x".to_vec(), 0o600)
            .unwrap();
        let e = wb.flush_next(false).unwrap().unwrap_err();
        assert!(e.to_string().contains("gone/x"), "{e}");
    }

    #[test]
    fn remove_is_idempotent() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, b"x").unwrap();
        remove_if_exists(&p).unwrap();
        remove_if_exists(&p).unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn ensure_dir_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b");
        ensure_dir(&p, 0o700).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
