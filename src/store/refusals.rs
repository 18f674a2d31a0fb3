//! `<cniDir>/.refusals/<containerID>`: the Warning events hot-plug posted about a sandbox at its last look
//! (reason and message) and which networks annotation that look acted on, so that a refusal that still
//! stands is not posted again at the next look, a daemon restart included, unless the annotation was edited
//! since (docs/daemon.md, "Hot-plug"). Written atomically under the container's lock while the sandbox's
//! cache exists; removed with the cache by DEL and GC, so it never outlives the sandbox.

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

/// What a sandbox's last look posted, and about which annotation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// [`digest`] of the networks annotation the look acted on; `None`: not known (a record written before
    /// it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation: Option<String>,
    /// The Warning events it posted (or found standing as posted before).
    pub posted: BTreeSet<Posted>,
}

/// The forms a record has had on disk.
#[derive(Deserialize)]
#[serde(untagged)]
enum OnDisk {
    /// The first form: the set alone, a JSON array (tried first: serde would take an array for a struct's
    /// fields in order too).
    Posted(BTreeSet<Posted>),
    Now(Record),
}

/// An annotation value as a record keeps it: its SHA-256, in hex. A value can be 256 KiB (the API's limit
/// for all of a pod's annotations), and only whether it changed matters; an absent annotation is the empty
/// value (both select nothing).
pub fn digest(value: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, value.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
pub fn read(cni_dir: &Path, cid: &str) -> Record {
    match std::fs::read(path(cni_dir, cid))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
    {
        Some(OnDisk::Now(record)) => record,
        Some(OnDisk::Posted(posted)) => Record {
            annotation: None,
            posted,
        },
        None => Record::default(),
    }
}

/// Record `record` as what stands for `cid` (nothing posted: the record removed). Call under the
/// container's lock.
pub fn write(cni_dir: &Path, cid: &str, record: &Record) -> io::Result<()> {
    let file = path(cni_dir, cid);
    if record.posted.is_empty() {
        return fsutil::remove_if_exists(&file);
    }
    fsutil::ensure_dir(&dir(cni_dir), 0o700)?;
    let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
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
        assert_eq!(
            read(d.path(), "c1"),
            Record::default(),
            "no record: nothing posted"
        );
        let record = Record {
            annotation: Some(digest("a")),
            posted: [posted("HotplugFailed", "network ns1/a: …")].into(),
        };
        write(d.path(), "c1", &record).unwrap();
        assert_eq!(read(d.path(), "c1"), record);
        assert_eq!(
            read(d.path(), "c2"),
            Record::default(),
            "another container's own"
        );
        write(d.path(), "c1", &Record::default()).unwrap();
        assert!(!path(d.path(), "c1").exists());
        write(d.path(), "c1", &record).unwrap();
        remove(d.path(), "c1", None).unwrap();
        assert!(!path(d.path(), "c1").exists());
        remove(d.path(), "c1", None).unwrap();
        // A torn or foreign file only costs an event posted again.
        std::fs::write(path(d.path(), "c1"), b"{").unwrap();
        assert_eq!(read(d.path(), "c1"), Record::default());
    }

    /// A record of the first form (the set alone) still reads: its annotation is not known.
    #[test]
    fn a_record_of_the_first_form_reads_without_its_annotation() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir(d.path())).unwrap();
        std::fs::write(
            path(d.path(), "c1"),
            br#"[{"reason":"HotplugFailed","message":"m"}]"#,
        )
        .unwrap();
        assert_eq!(
            read(d.path(), "c1"),
            Record {
                annotation: None,
                posted: [posted("HotplugFailed", "m")].into(),
            }
        );
    }

    #[test]
    fn a_digest_is_sha256_in_hex() {
        // printf '' | sha256sum
        assert_eq!(
            digest(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_ne!(digest("a"), digest("a "));
    }
}
