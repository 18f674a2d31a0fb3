//! What a teardown may leave behind on disk: host-local reservations, plexus's per-container files
//! (cache, lock, its delegates' result-cache entries), libcni result caches, any file naming a container.
//! Each function lists what it finds; the tests decide what is allowed.

use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
};

/// One host-local reservation file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reservation {
    /// The host-local network directory (the network name).
    pub network: String,
    /// The reserved address (the file name).
    pub ip: IpAddr,
    /// The container id written in the file.
    pub owner: String,
}

/// Every host-local reservation under `data_dir` (host-local's `dataDir`), sorted.
pub fn reservations(data_dir: &Path) -> Vec<Reservation> {
    let mut out = Vec::new();
    let Ok(nets) = fs::read_dir(data_dir) else {
        return out;
    };
    for net in nets.flatten() {
        let Ok(files) = fs::read_dir(net.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            // Beside the reservations: `lock` and `last_reserved_ip.<n>`, which are no one's.
            let Ok(ip) = name.parse::<IpAddr>() else {
                continue;
            };
            let owner = fs::read_to_string(f.path())
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            out.push(Reservation {
                network: net.file_name().to_string_lossy().into_owned(),
                ip,
                owner,
            });
        }
    }
    out.sort();
    out
}

/// The entries of container `cid` in the libcni result cache under `cache_dir` (`results/<net>-<cid>-<if>`),
/// sorted.
pub fn results_for(cache_dir: &Path, cid: &str) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(cache_dir.join("results")) else {
        return Vec::new();
    };
    let needle = format!("-{cid}-");
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(&needle))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// The files plexus keeps in `cni_dir` (its `cniDir`) for container `cid`: its cache, its lock file, hot-plug's
/// record of the refusals it posted and its delegates' result-cache entries.
pub fn plexus_files(cni_dir: &Path, cid: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = [
        cni_dir.join(cid),
        cni_dir.join(".locks").join(cid),
        cni_dir.join(".refusals").join(cid),
    ]
    .into_iter()
    .filter(|p| p.exists())
    .collect();
    out.extend(results_for(cni_dir, cid));
    out
}

/// Every file under `dir` (recursively; not the directories), sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(files_under(&e.path())),
            Ok(_) => out.push(e.path()),
            Err(_) => {}
        }
    }
    out.sort();
    out
}

/// Every file under `dir` (recursively) whose name contains `needle` (a container id: temp files of
/// interrupted atomic writes included).
pub fn files_naming(dir: &Path, needle: &str) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(needle))
        })
        .collect()
}
