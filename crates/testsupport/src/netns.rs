//! Network namespaces that delete themselves, even when a test panics; a sweep removes those left by
//! killed runs. Every link a test makes lives in one of these, never in the machine's namespace.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use ipnet::IpNet;

use crate::proc::{IP_TIMEOUT, effective_uid, ip, run_bounded, wait_for};

/// Where Debian's containernetworking-plugins puts the plugins.
pub const PLUGIN_DIR: &str = "/usr/lib/cni";

/// The name prefix [`Netns::new`] gives: `plexus-t-<pid>-<n>-<role>`.
pub const DEFAULT_PREFIX: &str = "plexus-t-";

/// The veth end a test's "host" namespace offers macvlan as its master ([`Netns::add_veth_pair`]).
pub const MASTER: &str = "mvmaster0";
/// The other end of the master's veth pair.
pub const MASTER_PEER: &str = "mvpeer0";

/// Whether this machine can run the real-plugin tests: root (they create network namespaces), and each
/// of `plugins` in [`PLUGIN_DIR`]. The error says what is missing.
pub fn check_environment(plugins: &[&str]) -> Result<(), String> {
    if effective_uid() != Some(0) {
        return Err("root is needed (network namespaces are created)".into());
    }
    for p in plugins {
        let path = Path::new(PLUGIN_DIR).join(p);
        if !path.is_file() {
            return Err(format!(
                "{} is missing: install containernetworking-plugins",
                path.display()
            ));
        }
    }
    Ok(())
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A named network namespace (`/run/netns/<name>`) with `lo` up, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Create `plexus-t-<pid>-<n>-<role>` ([`DEFAULT_PREFIX`]).
    pub fn new(role: &str) -> Netns {
        Netns::with_prefix(DEFAULT_PREFIX, role)
    }

    /// Create `<prefix><pid>-<n>-<role>`. The first namespace of each prefix first removes that prefix's
    /// namespaces of processes that no longer run (killed before their guards ran).
    pub fn with_prefix(prefix: &str, role: &str) -> Netns {
        static SWEPT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
        if SWEPT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(prefix.to_string())
        {
            sweep_stale(prefix);
        }
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let name = format!("{prefix}{}-{n}-{role}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip("link set lo up");
        ns
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Delete it now (the guard then has nothing to do).
    pub fn delete(&self) {
        ip(&["netns", "del", &self.name]);
    }

    /// Run `ip -n <name> <args…>` (words split on whitespace) and require success.
    pub fn ip(&self, args: &str) -> String {
        let mut v = vec!["-n", self.name.as_str()];
        v.extend(args.split_whitespace());
        ip(&v)
    }

    /// Run `cmd` (a program and its arguments) inside this namespace (`ip netns exec`), at most `limit`,
    /// and require success; returns stdout.
    pub fn exec(&self, cmd: &[&str], limit: Duration) -> String {
        let out = run_bounded(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(cmd),
            b"",
            limit,
        );
        assert_eq!(out.code, 0, "{cmd:?} in {}: {out:?}", self.name);
        out.stdout
    }

    /// Add veth pair `a`–`b`, both ends here and up (a master for macvlan that reaches nothing outside).
    pub fn add_veth_pair(&self, a: &str, b: &str) {
        self.ip(&format!("link add {a} type veth peer name {b}"));
        self.ip(&format!("link set {a} up"));
        self.ip(&format!("link set {b} up"));
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

    /// The link called `name`; panics when there is none.
    pub fn link(&self, name: &str) -> plexus_netns::LinkInfo {
        self.links()
            .into_iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("no link {name} in {}", self.name))
    }

    /// The MAC of link `name`, if it exists.
    pub fn mac(&self, name: &str) -> Option<String> {
        self.links()
            .into_iter()
            .find(|l| l.name == name)
            .and_then(|l| l.mac)
    }

    /// Link name → MAC.
    pub fn macs(&self) -> BTreeMap<String, String> {
        self.links()
            .into_iter()
            .filter_map(|l| l.mac.map(|m| (l.name, m)))
            .collect()
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

    /// Wait (up to `limit`) until the veths here are exactly `expected` (sorted); the veths then. A deleted
    /// namespace is torn down asynchronously by the kernel, so the host ends of its veths may outlive
    /// `ip netns del` for a moment.
    pub fn settled_veths(&self, expected: &[&str], limit: Duration) -> Vec<String> {
        wait_for(limit, || self.veths() == expected);
        self.veths()
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
            delete_quietly(&self.name);
        }
    }
}

/// `ip netns del <name>`, whatever it says (a guard's or a sweep's best effort).
fn delete_quietly(name: &str) {
    let _ = run_bounded(
        Command::new("ip").args(["netns", "del", name]),
        b"",
        IP_TIMEOUT,
    );
}

/// Remove the `prefix` namespaces of earlier processes that no longer run.
fn sweep_stale(prefix: &str) {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            delete_quietly(&name);
        }
    }
}
