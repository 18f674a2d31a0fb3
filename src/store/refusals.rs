//! `<cniDir>/.refusals/<containerID>`: the Warning events hot-plug posted about a sandbox at its last look
//! (reason and message), so that a refusal that still stands is not posted again at the next look, a
//! daemon restart included (docs/daemon.md, "Hot-plug"). Written atomically under the container's lock
//! while the sandbox's cache exists; removed with the cache by DEL and GC, so it never outlives the sandbox.

use std::{
    collections::BTreeSet,
    io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::store::{fsutil, trash::Trash};

/// One Warning event as posted: its reason and message.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Posted {
    /// The event's reason (`HotplugFailed`, `NoNetworkFound`, …).
    pub reason: String,
    /// The event's message.
    pub message: String,
}

/// The directory of the records (a dot-name: never taken for a container's cache).
pub fn dir(cni_dir: &Path) -> PathBuf {
    cni_dir.join(".refusals")
}

/// Container `cid`'s record.
pub fn path(cni_dir: &Path, cid: &str) -> PathBuf {
    dir(cni_dir).join(cid)
}

/// What was posted about `cid` at its last look. No record, or one that does not parse (it only saves
/// events), is nothing posted.
pub fn read(cni_dir: &Path, cid: &str) -> BTreeSet<Posted> {
    std::fs::read(path(cni_dir, cid))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Record `posted` as what stands for `cid` (nothing: the record removed). Call under the container's lock.
pub fn write(cni_dir: &Path, cid: &str, posted: &BTreeSet<Posted>) -> io::Result<()> {
    let file = path(cni_dir, cid);
    if posted.is_empty() {
        return fsutil::remove_if_exists(&file);
    }
    fsutil::ensure_dir(&dir(cni_dir), 0o700)?;
    let bytes = serde_json::to_vec(posted).map_err(io::Error::other)?;
    fsutil::atomic_write(&file, &bytes, 0o600)
}

/// Remove `cid`'s record (into `trash` when given); absent is fine. Call under the container's lock.
pub fn remove(cni_dir: &Path, cid: &str, trash: Option<&Trash>) -> io::Result<()> {
    let file = path(cni_dir, cid);
    match trash {
        Some(t) => t.discard(&file),
        None => fsutil::remove_if_exists(&file),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posted(reason: &str, message: &str) -> Posted {
        Posted {
            reason: reason.into(),
            message: message.into(),
        }
    }

    #[test]
    fn a_record_reads_back_and_an_empty_one_is_no_file() {
        let d = tempfile::tempdir().unwrap();
        assert!(read(d.path(), "c1").is_empty(), "no record: nothing posted");
        let set: BTreeSet<Posted> = [posted("HotplugFailed", "network ns1/a: …")].into();
        write(d.path(), "c1", &set).unwrap();
        assert_eq!(read(d.path(), "c1"), set);
        assert!(read(d.path(), "c2").is_empty(), "another container's own");
        write(d.path(), "c1", &BTreeSet::new()).unwrap();
        assert!(!path(d.path(), "c1").exists());
        write(d.path(), "c1", &set).unwrap();
        remove(d.path(), "c1", None).unwrap();
        assert!(!path(d.path(), "c1").exists());
        remove(d.path(), "c1", None).unwrap();
        // A torn or foreign file only costs an event posted again.
        std::fs::write(path(d.path(), "c1"), b"{").unwrap();
        assert!(read(d.path(), "c1").is_empty());
    }
}
