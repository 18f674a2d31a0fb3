//! Helpers for the real-netns tests: namespaces that clean themselves up, a fixture with a private "host"
//! namespace (where plexus and its delegates run) and a "pod" namespace, bounded process runs, and the
//! state checks every test ends with.
//!
//! Nothing here touches the machine's own network namespace: every link is created inside a namespace
//! the test made, plexus runs under `ip netns exec <host>`, and the delegates' state (host-local
//! reservations, tuning backups, plexus caches) lives in a temporary directory.

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    fs,
    io::{Read, Write},
    net::IpAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Once,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use serde_json::{Value, json};
use tempfile::TempDir;

/// Where Debian's containernetworking-plugins puts the plugins.
pub const CNI_PATH: &str = "/usr/lib/cni";
/// The plexus binary under test.
pub const PLEXUS: &str = env!("CARGO_BIN_EXE_plexus");
/// Every external command gets at most this long.
pub const TIMEOUT: Duration = Duration::from_secs(120);
/// The name prefix of every namespace these tests create.
const PREFIX: &str = "plexus-t-";
/// The veth in the host namespace that macvlan uses as its master.
pub const MASTER: &str = "mvmaster0";

/// Subnets: documentation ranges (RFC 5737), assigned only inside the test namespaces; no traffic is sent.
pub const CLUSTER_SUBNET: &str = "192.0.2.0/24";
/// The macvlan network's subnet.
pub const MACVLAN_SUBNET: &str = "198.51.100.0/24";
/// The ptp network's subnet.
pub const PTP_SUBNET: &str = "203.0.113.0/24";

/// What a finished process left.
#[derive(Debug)]
pub struct Output {
    /// Exit status (-1 when killed by a signal).
    pub code: i32,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

/// Run `cmd` with `stdin`, killing it after `timeout`.
pub fn run_bounded(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let mut out = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let mut err = child.stderr.take().unwrap();
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    Output {
        code: status.code().unwrap_or(-1),
        stdout: reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// Run `ip <args>` and require success.
pub fn ip(args: &[&str]) -> String {
    let out = run_bounded(Command::new("ip").args(args), b"", TIMEOUT);
    assert_eq!(
        out.code,
        0,
        "ip {} failed: {}{}",
        args.join(" "),
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Run `ip` with the whitespace-separated words of `args` and require success.
pub fn ipw(args: &str) -> String {
    ip(&args.split_whitespace().collect::<Vec<_>>())
}

/// Skip-free precondition check with a clear message: these tests need root and the Debian plugins.
pub fn require_environment() {
    assert!(
        effective_uid() == Some(0),
        "the netns tests need root (they create network namespaces); run `sudo bash scripts/test.sh`"
    );
    for p in ["bridge", "macvlan", "ptp", "host-local", "tuning"] {
        assert!(
            Path::new(CNI_PATH).join(p).is_file(),
            "{CNI_PATH}/{p} is missing: install containernetworking-plugins (scripts/test.sh does)"
        );
    }
    static SWEEP: Once = Once::new();
    SWEEP.call_once(sweep_stale);
}

/// The effective uid, from /proc/self/status.
pub fn effective_uid() -> Option<u32> {
    fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Remove namespaces left by test processes that were killed before their guards ran.
fn sweep_stale() {
    let Ok(entries) = fs::read_dir("/run/netns") else {
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
                TIMEOUT,
            );
        }
    }
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A network namespace that is deleted when dropped, even when the test panics.
#[derive(Debug)]
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Create `plexus-t-<pid>-<n>-<role>` with `lo` up.
    pub fn new(role: &str) -> Netns {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let name = format!("{PREFIX}{}-{n}-{role}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Delete it now (the guard then has nothing to do).
    pub fn delete(&self) {
        ip(&["netns", "del", &self.name]);
    }

    /// Link names, sorted.
    pub fn links(&self) -> Vec<String> {
        let mut v: Vec<String> = plexus_netns::links(&self.path())
            .expect("list links")
            .into_iter()
            .map(|l| l.name)
            .collect();
        v.sort();
        v
    }

    /// The link called `name`.
    pub fn link(&self, name: &str) -> plexus_netns::LinkInfo {
        plexus_netns::links(&self.path())
            .expect("list links")
            .into_iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("no link {name} in {}", self.name))
    }

    /// Link name → MAC.
    pub fn macs(&self) -> BTreeMap<String, String> {
        plexus_netns::links(&self.path())
            .expect("list links")
            .into_iter()
            .filter_map(|l| l.mac.map(|m| (l.name, m)))
            .collect()
    }

    /// Links of kind `veth`, sorted.
    pub fn veths(&self) -> Vec<String> {
        let mut v: Vec<String> = plexus_netns::links(&self.path())
            .expect("list links")
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
            let ip = a.address.addr();
            let link_local = matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
            if ip.is_loopback() || link_local {
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
                TIMEOUT,
            );
        }
    }
}

/// One host-local reservation file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The host-local network directory (the network name).
    pub network: String,
    /// The reserved address (the file name).
    pub ip: IpAddr,
    /// The container id written in the file.
    pub owner: String,
}

/// A plexus (or delegate) run, decoded.
#[derive(Debug)]
pub struct Reply {
    /// Exit status.
    pub code: i32,
    /// Stdout as JSON (`Null` when empty).
    pub json: Value,
    /// Raw stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

impl Reply {
    /// The CNI error code of a failed run; panics with the reply when the run succeeded or printed no
    /// CNI error.
    pub fn error_code(&self) -> u64 {
        assert_ne!(self.code, 0, "expected a failure, got success: {self:#?}");
        self.json
            .get("code")
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("failure without a CNI error JSON on stdout: {self:#?}"))
    }

    /// The error message of a failed run.
    pub fn msg(&self) -> String {
        let m = self.json["msg"].as_str().unwrap_or_default();
        let d = self.json["details"].as_str().unwrap_or_default();
        format!("{m} {d}")
    }
}

/// A test's world: a host namespace (with the macvlan master veth), a pod namespace, and a temporary
/// directory with plexus's confDir/cniDir, the host-local data dir and the log.
pub struct Fixture {
    /// The pod (dropped first).
    pub pod: Netns,
    /// Where plexus and the delegates run.
    pub host: Netns,
    /// Everything on disk.
    pub dir: TempDir,
}

impl Fixture {
    /// Create both namespaces and the macvlan master.
    pub fn new() -> Fixture {
        require_environment();
        let host = Netns::new("host");
        let pod = Netns::new("pod");
        ipw(&format!(
            "-n {} link add {MASTER} type veth peer name mvpeer0",
            host.name
        ));
        ip(&["-n", &host.name, "link", "set", MASTER, "up"]);
        ip(&["-n", &host.name, "link", "set", "mvpeer0", "up"]);
        let dir = tempfile::Builder::new()
            .prefix("plexus-netns-")
            .tempdir()
            .expect("tempdir");
        let f = Fixture { pod, host, dir };
        for d in [f.conf_dir(), f.cni_dir(), f.ipam_dir(), f.bin_dir()] {
            fs::create_dir_all(d).unwrap();
        }
        f
    }

    /// The temporary directory.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// plexus's `confDir`.
    pub fn conf_dir(&self) -> PathBuf {
        self.root().join("net.d")
    }

    /// plexus's `cniDir`.
    pub fn cni_dir(&self) -> PathBuf {
        self.root().join("cni")
    }

    /// host-local's `dataDir`.
    pub fn ipam_dir(&self) -> PathBuf {
        self.root().join("ipam")
    }

    /// A bin directory holding `plexus` (for chaining).
    pub fn bin_dir(&self) -> PathBuf {
        self.root().join("bin")
    }

    /// plexus's log file.
    pub fn log_file(&self) -> PathBuf {
        self.root().join("plexus.log")
    }

    /// The log so far (for assertion messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// Write `value` as JSON to `rel` under the temp dir; returns the path.
    pub fn write(&self, rel: &str, value: &Value) -> PathBuf {
        let p = self.root().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, serde_json::to_vec_pretty(value).unwrap()).unwrap();
        p
    }

    /// A host-local IPAM section on `subnet`, storing reservations in the fixture.
    pub fn ipam(&self, subnet: &str) -> Value {
        json!({
            "type": "host-local",
            "dataDir": self.ipam_dir(),
            "ranges": [[{"subnet": subnet}]],
        })
    }

    /// The cluster network: bridge + host-local, gateway on the bridge, no masquerading.
    pub fn cluster_conflist(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "cluster",
            "plugins": [{
                "type": "bridge",
                "bridge": "plexusbr0",
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "dataDir": self.ipam_dir(),
                    "ranges": [[{"subnet": CLUSTER_SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            }],
        })
    }

    /// The macvlan secondary network on the host namespace's veth.
    pub fn macvlan_conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "macvlan-net",
            "type": "macvlan",
            "master": MASTER,
            "mode": "bridge",
            "ipam": self.ipam(MACVLAN_SUBNET),
        })
    }

    /// The ptp secondary network.
    pub fn ptp_conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "ptp-net",
            "type": "ptp",
            "ipMasq": false,
            "ipam": self.ipam(PTP_SUBNET),
        })
    }

    /// Write the standard scenario: the cluster conflist as a file outside confDir, macvlan and ptp in
    /// confDir. Returns `(clusterNetwork, defaultNetworks)`: the ptp network by file path, the macvlan one
    /// by name.
    pub fn standard_networks(&self) -> (String, Vec<String>) {
        let cluster = self.write("cluster.conflist", &self.cluster_conflist("1.0.0"));
        self.write("net.d/10-macvlan.conf", &self.macvlan_conf("0.4.0"));
        let ptp = self.write("net.d/20-ptp.conf", &self.ptp_conf("0.3.1"));
        (
            cluster.display().to_string(),
            vec!["macvlan-net".to_string(), ptp.display().to_string()],
        )
    }

    /// A plexus config at `version` with the fixture's directories and a debug log file; `extra` keys
    /// are merged on top.
    pub fn plexus_config(&self, version: &str, extra: Value) -> Value {
        let mut cfg = json!({
            "cniVersion": version,
            "name": "plexus-net",
            "type": "plexus",
            "confDir": self.conf_dir(),
            "cniDir": self.cni_dir(),
            "binDir": self.bin_dir(),
            "logLevel": "debug",
            "logFile": self.log_file(),
            "logToStderr": false,
            "delegateTimeoutSeconds": 60,
            "lockTimeoutSeconds": 30,
        });
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                cfg[&k] = v;
            }
        }
        cfg
    }

    /// The standard plexus config: the cluster conflist file, then macvlan and ptp via
    /// `defaultNetworks`.
    pub fn standard_config(&self, version: &str) -> Value {
        let (cluster, defaults) = self.standard_networks();
        self.plexus_config(
            version,
            json!({"clusterNetwork": cluster, "defaultNetworks": defaults}),
        )
    }

    /// Run plexus inside the host namespace. `netns` is `CNI_NETNS` (omitted when `None`).
    pub fn plexus(&self, command: &str, cid: &str, netns: Option<&Path>, config: &Value) -> Reply {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host.name, PLEXUS])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", cid)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", CNI_PATH);
        if let Some(ns) = netns {
            cmd.env("CNI_NETNS", ns);
        }
        let out = run_bounded(&mut cmd, &serde_json::to_vec(config).unwrap(), TIMEOUT);
        let json = if out.stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
                panic!(
                    "plexus {command} printed something that is not JSON ({e}): {out:#?}\nlog:\n{}",
                    self.log()
                )
            })
        };
        Reply {
            code: out.code,
            json,
            stdout: out.stdout,
            stderr: out.stderr,
        }
    }

    /// ADD into the pod namespace, requiring success; returns the result.
    pub fn add_ok(&self, cid: &str, config: &Value) -> Value {
        let r = self.plexus("ADD", cid, Some(&self.pod.path()), config);
        assert_eq!(r.code, 0, "ADD failed: {r:#?}\nlog:\n{}", self.log());
        r.json
    }

    /// DEL from the pod namespace, requiring success.
    pub fn del_ok(&self, cid: &str, netns: Option<&Path>, config: &Value) {
        let r = self.plexus("DEL", cid, netns, config);
        assert_eq!(r.code, 0, "DEL failed: {r:#?}\nlog:\n{}", self.log());
        assert_eq!(r.stdout.trim(), "", "DEL prints nothing on success");
    }

    /// Every host-local reservation in the fixture's data dir.
    pub fn reservations(&self) -> Vec<Reservation> {
        let mut out = Vec::new();
        let Ok(nets) = fs::read_dir(self.ipam_dir()) else {
            return out;
        };
        for net in nets.flatten() {
            let Ok(files) = fs::read_dir(net.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if let Ok(ip) = name.parse::<IpAddr>() {
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
        }
        out.sort_by(|a, b| (&a.network, a.ip).cmp(&(&b.network, b.ip)));
        out
    }

    /// Files plexus keeps for `cid`: its cache, its lock file and its delegates' result-cache entries.
    pub fn plexus_files(&self, cid: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for p in [
            self.cni_dir().join(cid),
            self.cni_dir().join(".locks").join(cid),
        ] {
            if p.exists() {
                out.push(p);
            }
        }
        if let Ok(rd) = fs::read_dir(self.cni_dir().join("results")) {
            for e in rd.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .contains(&format!("-{cid}-"))
                {
                    out.push(e.path());
                }
            }
        }
        out
    }

    /// The pod namespace has only `lo`, no host-local reservation remains (other than `allowed`), plexus
    /// keeps nothing for `cid`, and the host namespace has no veth but the macvlan master pair.
    pub fn assert_clean_except(&self, cid: &str, pod_links: &[&str], allowed: &[Reservation]) {
        let log = self.log();
        if self.pod.path().exists() {
            assert_eq!(
                self.pod.links(),
                pod_links,
                "pod netns links after teardown\nlog:\n{log}"
            );
        }
        let left: Vec<Reservation> = self
            .reservations()
            .into_iter()
            .filter(|r| !allowed.contains(r))
            .collect();
        assert!(
            left.is_empty(),
            "host-local reservations left: {left:?}\nlog:\n{log}"
        );
        assert_eq!(
            self.plexus_files(cid),
            Vec::<PathBuf>::new(),
            "plexus files left for {cid}\nlog:\n{log}"
        );
        // A deleted namespace is torn down asynchronously by the kernel (cleanup_net), so the host ends of
        // its veths may outlive `ip netns del` for a moment.
        let started = Instant::now();
        while self.host.veths() != [MASTER, "mvpeer0"]
            && started.elapsed() < Duration::from_secs(15)
        {
            thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            self.host.veths(),
            [MASTER, "mvpeer0"],
            "host netns veths after teardown (bridge/ptp host ends must be gone)\nlog:\n{log}"
        );
    }

    /// [`Fixture::assert_clean_except`] with nothing allowed and only `lo` in the pod.
    pub fn assert_clean(&self, cid: &str) {
        self.assert_clean_except(cid, &["lo"], &[]);
    }

    /// An executable that records that it ran by creating `<root>/ran-<name>`; returns its path.
    pub fn tripwire(&self, name: &str) -> PathBuf {
        let p = self.root().join(name);
        fs::write(
            &p,
            format!(
                "#!/bin/sh\ntouch '{}'\necho '{{}}'\n",
                self.tripwire_marker(name).display()
            ),
        )
        .unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// The file [`Fixture::tripwire`] creates when run.
    pub fn tripwire_marker(&self, name: &str) -> PathBuf {
        self.root().join(format!("ran-{name}"))
    }
}

/// The address of `ifname` in a result (the first IP whose `interface` index names it).
pub fn result_address(result: &Value, ifname: &str) -> Option<IpNet> {
    let ifaces = result["interfaces"].as_array()?;
    let idx = ifaces.iter().position(|i| i["name"] == ifname)?;
    result["ips"]
        .as_array()?
        .iter()
        .find(|ip| ip["interface"].as_u64() == Some(idx as u64))
        .and_then(|ip| ip["address"].as_str())
        .and_then(|s| s.parse().ok())
}

/// Whether `addr` lies in `subnet`.
pub fn in_subnet(addr: &IpNet, subnet: &str) -> bool {
    let s: IpNet = subnet.parse().unwrap();
    s.contains(&addr.addr()) && addr.prefix_len() == s.prefix_len()
}
