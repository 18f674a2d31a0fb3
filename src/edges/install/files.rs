//! The installer's file operations: every write goes to a temp file in the target directory, is given
//! its mode, fsynced and renamed over the target, then the directory is fsynced. A running binary is thus
//! replaced, never overwritten in place ("text file busy", Multus #1221), and the runtime never reads a
//! torn config. Nothing is written when the content and mode are already right.

use std::{
    fs::{self, File, Permissions},
    io::{self, Read, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The file did not exist.
    Created,
    /// The content changed.
    Replaced,
    /// Only the mode was wrong, and was fixed.
    ModeFixed,
    /// Already right: nothing touched.
    Unchanged,
}

impl Change {
    /// Whether anything was written.
    pub fn wrote(self) -> bool {
        self != Change::Unchanged
    }
}

/// The temp file for `path`: a dotfile in the same directory whose name has no config extension, so
/// neither the runtime nor the installer ever takes it for a config. Fixed per target, so a crash leaves
/// at most one, reused next time.
pub fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    Ok(dir.join(format!(".{}.plexus-tmp", name.to_string_lossy())))
}

fn mode_of(path: &Path) -> io::Result<Option<u32>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m.permissions().mode() & 0o7777)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replace `path` with what `fill` writes, atomically, with `mode` (umask does not apply).
fn replace(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    crate::store::fsutil::replace_with(path, &temp_path(path)?, mode, fill)
}

/// Write `bytes` to `path` with `mode` unless it already holds exactly that.
pub fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> io::Result<Change> {
    let current = match fs::read(path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    match current {
        Some(b) if b == bytes => {
            if mode_of(path)? == Some(mode) {
                return Ok(Change::Unchanged);
            }
            fs::set_permissions(path, Permissions::from_mode(mode))?;
            Ok(Change::ModeFixed)
        }
        existing => {
            replace(path, mode, |f| f.write_all(bytes))?;
            Ok(if existing.is_some() {
                Change::Replaced
            } else {
                Change::Created
            })
        }
    }
}

/// Whether two files have the same content.
fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = match (File::open(a), File::open(b)) {
        (Ok(fa), Ok(fb)) => (fa, fb),
        (_, Err(e)) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Copy the executable `src` to `dst` (mode 0755) unless `dst` already has its content.
pub fn install_executable(src: &Path, dst: &Path) -> io::Result<Change> {
    let existed = dst.exists();
    if same_content(src, dst)? {
        if mode_of(dst)? == Some(0o755) {
            return Ok(Change::Unchanged);
        }
        fs::set_permissions(dst, Permissions::from_mode(0o755))?;
        return Ok(Change::ModeFixed);
    }
    let mut from = File::open(src)?;
    replace(dst, 0o755, |f| io::copy(&mut from, f).map(drop))?;
    Ok(if existed {
        Change::Replaced
    } else {
        Change::Created
    })
}

/// Remove a file; a missing one is fine. Returns whether it existed.
pub fn remove(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_only_on_change_and_fixes_the_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        assert_eq!(write_if_changed(&p, b"a", 0o600).unwrap(), Change::Created);
        assert_eq!(mode(&p), 0o600);
        let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&p).unwrap());
        assert_eq!(
            write_if_changed(&p, b"a", 0o600).unwrap(),
            Change::Unchanged
        );
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&fs::metadata(&p).unwrap()),
            inode,
            "untouched"
        );
        fs::set_permissions(&p, Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            write_if_changed(&p, b"a", 0o600).unwrap(),
            Change::ModeFixed
        );
        assert_eq!(mode(&p), 0o600);
        assert_eq!(write_if_changed(&p, b"b", 0o600).unwrap(), Change::Replaced);
        assert_eq!(fs::read(&p).unwrap(), b"b");
        assert_eq!(names(d.path()), ["k"], "no temp file left");
    }

    #[test]
    fn executables_are_replaced_by_rename_never_in_place() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        let dst = d.path().join("plexus");
        fs::write(&src, b"v1").unwrap();
        assert_eq!(install_executable(&src, &dst).unwrap(), Change::Created);
        assert_eq!(mode(&dst), 0o755);
        // Hold the old file open, as a running binary is: it must keep its content (a new inode replaces it).
        let mut held = File::open(&dst).unwrap();
        fs::write(&src, b"v2!").unwrap();
        assert_eq!(install_executable(&src, &dst).unwrap(), Change::Replaced);
        let mut old = String::new();
        held.read_to_string(&mut old).unwrap();
        assert_eq!(old, "v1");
        assert_eq!(fs::read(&dst).unwrap(), b"v2!");
        assert_eq!(install_executable(&src, &dst).unwrap(), Change::Unchanged);
        // Same size, other content.
        fs::write(&src, b"v3!").unwrap();
        assert_eq!(install_executable(&src, &dst).unwrap(), Change::Replaced);
        assert_eq!(names(d.path()), ["plexus", "src"]);
    }

    #[test]
    fn a_failed_write_leaves_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("dir");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("x"), b"x").unwrap();
        assert!(write_if_changed(&target, b"y", 0o644).is_err());
        assert_eq!(names(d.path()), ["dir"]);
        assert!(!remove(&d.path().join("nothing")).unwrap());
    }
}
