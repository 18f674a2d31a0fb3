//! The room left under the memory limit of the daemon's own cgroup (v2 `memory.max` − `memory.current`, v1
//! `memory.limit_in_bytes` − `memory.usage_in_bytes`). Admission lets DELs beyond the cores run only
//! while there is room for them: each runs a delegate process, charged to this cgroup, and a node's pods
//! can fill most of a small limit with their interfaces' kernel memory (BENCHMARKS.md, the storm).

use std::{
    fs,
    path::{Path, PathBuf},
};

/// Where the daemon's cgroup keeps its memory limit and usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryRoom {
    limit: PathBuf,
    usage: PathBuf,
}

/// A v1 limit at or above this is "no limit" (the kernel reports a huge page-aligned number).
const V1_UNLIMITED: u64 = 1 << 62;

impl MemoryRoom {
    /// The cgroup of this process, from `/proc/self/cgroup` under `/sys/fs/cgroup`; `None` when it has no
    /// memory controller to read.
    pub fn of_self() -> Option<MemoryRoom> {
        let text = fs::read_to_string("/proc/self/cgroup").ok()?;
        Self::find(&text, Path::new("/sys/fs/cgroup"))
    }

    /// The files for the cgroup that `proc_cgroup` (the text of `/proc/<pid>/cgroup`) names, under `root`.
    pub(super) fn find(proc_cgroup: &str, root: &Path) -> Option<MemoryRoom> {
        let mut v2 = None;
        for line in proc_cgroup.lines() {
            let mut p = line.splitn(3, ':');
            let (id, controllers, path) = (p.next()?, p.next()?, p.next()?);
            let rel = path.trim_start_matches('/');
            if controllers.split(',').any(|c| c == "memory") {
                // A container without its own cgroup namespace sees the host's path here, and its own
                // cgroup mounted as the controller's root: then the root's files are its own.
                for dir in [root.join("memory").join(rel), root.join("memory")] {
                    let room = MemoryRoom {
                        limit: dir.join("memory.limit_in_bytes"),
                        usage: dir.join("memory.usage_in_bytes"),
                    };
                    if room.limit.is_file() {
                        return Some(room);
                    }
                }
            } else if id == "0" && controllers.is_empty() {
                v2 = Some(root.join(rel));
            }
        }
        let dir = v2?;
        let room = MemoryRoom {
            limit: dir.join("memory.max"),
            usage: dir.join("memory.current"),
        };
        room.limit.is_file().then_some(room)
    }

    /// Bytes left under the limit now; `None` without a limit (or when the files cannot be read).
    pub fn left(&self) -> Option<u64> {
        let read = |p: &Path| fs::read_to_string(p).ok();
        let limit = read(&self.limit)?;
        let limit: u64 = limit.trim().parse().ok()?; // v2's "max" does not parse: no limit.
        if limit >= V1_UNLIMITED {
            return None;
        }
        let usage: u64 = read(&self.usage)?.trim().parse().ok()?;
        Some(limit.saturating_sub(usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_cgroups_are_found_and_read() {
        let d = tempfile::tempdir().unwrap();
        // v1: the memory controller's line names the cgroup.
        let v1 = d.path().join("memory/kubepods/pod1/c1");
        fs::create_dir_all(&v1).unwrap();
        fs::write(v1.join("memory.limit_in_bytes"), "67108864\n").unwrap();
        fs::write(v1.join("memory.usage_in_bytes"), "60000000\n").unwrap();
        let text = "12:cpu,cpuacct:/kubepods/pod1/c1\n7:memory:/kubepods/pod1/c1\n0::/x\n";
        let room = MemoryRoom::find(text, d.path()).unwrap();
        assert_eq!(room.left(), Some(67108864 - 60000000));
        // Over the limit (page cache being reclaimed): no room, not a wrap-around.
        fs::write(v1.join("memory.usage_in_bytes"), "70000000\n").unwrap();
        assert_eq!(room.left(), Some(0));
        // No limit.
        fs::write(v1.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        assert_eq!(room.left(), None);

        // v2: the unified line.
        let v2 = d.path().join("system.slice/plexus.service");
        fs::create_dir_all(&v2).unwrap();
        fs::write(v2.join("memory.max"), "max\n").unwrap();
        fs::write(v2.join("memory.current"), "1000\n").unwrap();
        let room = MemoryRoom::find("0::/system.slice/plexus.service\n", d.path()).unwrap();
        assert_eq!(room.left(), None, "max: no limit");
        fs::write(v2.join("memory.max"), "4096\n").unwrap();
        assert_eq!(room.left(), Some(3096));
        // v1 in a container: the host's path in /proc, the container's own cgroup at the mount's root.
        fs::write(d.path().join("memory/memory.limit_in_bytes"), "1048576\n").unwrap();
        fs::write(d.path().join("memory/memory.usage_in_bytes"), "1024\n").unwrap();
        let room = MemoryRoom::find("4:memory:/kubepods/other\n", d.path()).unwrap();
        assert_eq!(room.left(), Some(1048576 - 1024));
        // Nothing to read.
        assert_eq!(MemoryRoom::find("0::/nowhere\n", d.path()), None);
        assert_eq!(MemoryRoom::find("", d.path()), None);
    }
}
