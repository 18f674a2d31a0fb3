//! Network namespaces that delete themselves, even when a test panics; a sweep removes those left by
//! killed runs. Every link the suite makes lives in one of these, never in the machine's namespace.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Once,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use ipnet::IpNet;

use super::proc::{ip, run_bounded};

/// The name prefix of every namespace the suite creates: `plexus-e2e-<pid>-<n>-<role>`.
pub const PREFIX: &str = "plexus-e2e-";

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A named network namespace (`/run/netns/<name>`) with `lo` up, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Create `plexus-e2e-<pid>-<n>-<role>`.
    pub fn new(role: &str) -> Netns {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(sweep_stale);
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let name = format!("{PREFIX}{}-{n}-{role}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Run `ip -n <name> <args…>` (words split on whitespace) and require success.
    pub fn ip(&self, args: &str) -> String {
        let mut v = vec!["-n", self.name.as_str()];
        v.extend(args.split_whitespace());
        ip(&v)
    }

    /// Every link (name, MAC, kind, …).
    pub fn links(&self) -> Vec<plexus_netns::LinkInfo> {
        plexus_netns::links(&self.path()).expect("list links")
    }

    /// Link names, sorted.
    pub fn link_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.links().into_iter().map(|l| l.name).collect();
        v.sort();
        v
    }

    /// The MAC of link `name`, if it exists.
    pub fn mac(&self, name: &str) -> Option<String> {
        self.links()
            .into_iter()
            .find(|l| l.name == name)
            .and_then(|l| l.mac)
    }

    /// Names of the links of kind `veth`, sorted.
    pub fn veths(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .links()
            .into_iter()
            .filter(|l| l.kind.as_deref() == Some("veth"))
            .map(|l| l.name)
            .collect();
        v.sort();
        v
    }

    /// Global addresses (no loopback, no IPv6 link-local) by link name.
    pub fn addresses(&self) -> BTreeMap<String, Vec<IpNet>> {
        let mut out: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
        for a in plexus_netns::addresses(&self.path()).expect("list addresses") {
            let addr = a.address.addr();
            let link_local =
                matches!(addr, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
            if addr.is_loopback() || link_local {
                continue;
            }
            out.entry(a.ifname).or_default().push(a.address);
        }
        out
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.path().exists() {
            let _ = run_bounded(
                Command::new("ip").args(["netns", "del", &self.name]),
                b"",
                Duration::from_secs(30),
            );
        }
    }
}

/// Remove namespaces of earlier suite processes that no longer run (killed before their guards ran).
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run_bounded(
                Command::new("ip").args(["netns", "del", &name]),
                b"",
                Duration::from_secs(30),
            );
        }
    }
}
