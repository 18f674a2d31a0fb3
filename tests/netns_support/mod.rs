//! Helpers for the real-netns tests: a fixture with a private "host" namespace (where plexus and its
//! delegates run) and a "pod" namespace, and the state checks every test ends with. The namespaces,
//! bounded process runs and leak listings themselves are plexus-testsupport's, shared with the e2e suite.
//!
//! Nothing here touches the machine's own network namespace: every link is created inside a namespace
//! the test made, plexus runs under `ip netns exec <host>`, and the delegates' state (host-local
//! reservations, tuning backups, plexus caches) lives in a temporary directory.

#![allow(dead_code)]

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use plexus_testsupport::{leaks, netns::check_environment};
pub use plexus_testsupport::{
    leaks::Reservation,
    netns::{MASTER, MASTER_PEER, Netns, PLUGIN_DIR as CNI_PATH},
    proc::run_bounded,
};
use serde_json::{Value, json};
use tempfile::TempDir;

/// The plexus binary under test.
pub const PLEXUS: &str = env!("CARGO_BIN_EXE_plexus");
/// Every external command gets at most this long.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// Subnets: documentation ranges (RFC 5737), assigned only inside the test namespaces; no traffic is sent.
pub const CLUSTER_SUBNET: &str = "192.0.2.0/24";
/// The macvlan network's subnet.
pub const MACVLAN_SUBNET: &str = "198.51.100.0/24";
/// The ptp network's subnet.
pub const PTP_SUBNET: &str = "203.0.113.0/24";

/// Skip-free precondition check with a clear message: these tests need root and the Debian plugins.
pub fn require_environment() {
    if let Err(e) = check_environment(&["bridge", "macvlan", "ptp", "host-local", "tuning"]) {
        panic!(
            "the netns tests cannot run: {e}; run `sudo bash scripts/test.sh` (it installs the plugins)"
        );
    }
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
        host.add_veth_pair(MASTER, MASTER_PEER);
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
        leaks::reservations(&self.ipam_dir())
    }

    /// Files plexus keeps for `cid`: its cache, its lock file and its delegates' result-cache entries.
    pub fn plexus_files(&self, cid: &str) -> Vec<PathBuf> {
        leaks::plexus_files(&self.cni_dir(), cid)
    }

    /// The pod namespace has only `lo`, no host-local reservation remains (other than `allowed`), plexus
    /// keeps nothing for `cid`, and the host namespace has no veth but the macvlan master pair.
    pub fn assert_clean_except(&self, cid: &str, pod_links: &[&str], allowed: &[Reservation]) {
        let log = self.log();
        if self.pod.path().exists() {
            assert_eq!(
                self.pod.link_names(),
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
        assert_eq!(
            self.host
                .settled_veths(&[MASTER, MASTER_PEER], Duration::from_secs(15)),
            [MASTER, MASTER_PEER],
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
