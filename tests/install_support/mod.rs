//! A temporary "host root" for running the built `plexus install` as the DaemonSet runs it, without root:
//!
//! ```text
//! <root>/host/etc/cni/net.d/        --cni-conf-dir (host path /etc/cni/net.d): primaries and our config
//! <root>/host/etc/cni/multus/net.d/ --plexus-conf-dir (created by the installer)
//! <root>/host/opt/cni/bin/          --cni-bin-dir
//! <root>/host/                      --host-prefix (the readiness indicator is looked for under it)
//! <root>/sa/{token,ca.crt}          --service-account-dir
//! <root>/plexus-src                 --binary: a small stand-in for the binary to install
//! <root>/install.log                the installer's stderr
//! ```
//!
//! [`Node::run_once`] runs `plexus install --once`; [`Node::start`] starts the watching installer, which
//! [`Running::signal`] stops. A [`Running`] is killed when dropped, so a failing test leaves no process.

#![allow(dead_code)]

use std::{
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, SystemTime},
};

use nix::sys::signal::Signal;
use plexus_testsupport::proc::{finish_bounded, signal_and_wait, wait_for};
use serde_json::Value;

/// How long a test waits for the installer to do something before failing.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The API server the installer is told about.
pub const SERVER: &str = "https://10.96.0.1:443";

/// The plexus binary under test.
pub fn plexus_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_plexus"))
}

/// A temporary node.
pub struct Node {
    _tmp: tempfile::TempDir,
    /// The root.
    pub root: PathBuf,
}

impl Default for Node {
    fn default() -> Self {
        Self::new()
    }
}

/// What a file looks like, to tell whether it was touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    ino: u64,
    mtime: SystemTime,
    content: Vec<u8>,
}

/// The stamp of `path` (panics when it is missing).
pub fn stamp(path: &Path) -> Stamp {
    let m = fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Stamp {
        ino: m.ino(),
        mtime: m.modified().unwrap(),
        content: fs::read(path).unwrap(),
    }
}

/// The permission bits of `path`.
pub fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Parse a JSON file.
pub fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Wait until `f` holds, or panic with `what` and `context()`.
pub fn wait_until(what: &str, f: impl FnMut() -> bool, context: impl Fn() -> String) {
    if !wait_for(PATIENCE, f) {
        panic!("timed out waiting for {what}\n{}", context());
    }
}

impl Node {
    /// A node with the directories, a service account (`token-1`, `ca-1`) and a binary to install.
    pub fn new() -> Node {
        let tmp = tempfile::Builder::new()
            .prefix("plexus-install-test-")
            .tempdir()
            .expect("temp dir");
        let root = tmp.path().to_path_buf();
        for d in ["host/etc/cni/net.d", "host/opt/cni/bin", "sa"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        let n = Node { _tmp: tmp, root };
        n.set_token("token-1");
        n.set_ca("ca-1");
        fs::write(
            n.root.join("plexus-src"),
            b"#!/bin/sh\necho plexus stand-in\n",
        )
        .unwrap();
        n
    }

    /// The container's view of the host CNI config directory.
    pub fn conf_dir(&self) -> PathBuf {
        self.root.join("host/etc/cni/net.d")
    }

    /// A file in it.
    pub fn conf(&self, name: &str) -> PathBuf {
        self.conf_dir().join(name)
    }

    /// The installed binary `name`.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.root.join("host/opt/cni/bin").join(name)
    }

    /// The kubeconfig as the installer writes it (default path for `binary_name`).
    pub fn kubeconfig(&self, binary_name: &str) -> PathBuf {
        self.conf_dir()
            .join(format!("{binary_name}.d"))
            .join(format!("{binary_name}.kubeconfig"))
    }

    /// The installer's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.root.join("install.log")).unwrap_or_default()
    }

    /// Write a primary (or any) config file atomically (as a well-behaved CNI installer does).
    pub fn write_conf(&self, name: &str, v: &Value) {
        self.write_raw(name, &serde_json::to_vec_pretty(v).unwrap());
    }

    /// Write raw bytes to a config-dir file atomically.
    pub fn write_raw(&self, name: &str, bytes: &[u8]) {
        let tmp = self.conf_dir().join(format!(".{name}.test-tmp"));
        fs::write(&tmp, bytes).unwrap();
        fs::rename(&tmp, self.conf(name)).unwrap();
    }

    /// Rotate the token.
    pub fn set_token(&self, t: &str) {
        fs::write(self.root.join("sa/token"), t).unwrap();
    }

    /// Rotate the CA.
    pub fn set_ca(&self, ca: &str) {
        fs::write(self.root.join("sa/ca.crt"), ca).unwrap();
    }

    /// Sorted names in the config directory.
    pub fn conf_names(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.conf_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// The installer command with this node's paths, a fast poll, and `extra` flags (later flags win).
    pub fn command(&self, extra: &[&str]) -> Command {
        let r = self.root.display();
        let mut c = Command::new(plexus_bin());
        c.arg("install")
            .arg(format!("--cni-conf-dir={r}/host/etc/cni/net.d"))
            .arg(format!("--cni-bin-dir={r}/host/opt/cni/bin"))
            .arg(format!("--plexus-conf-dir={r}/host/etc/cni/multus/net.d"))
            .arg(format!("--host-prefix={r}/host"))
            .arg(format!("--service-account-dir={r}/sa"))
            .arg(format!("--binary={r}/plexus-src"))
            .arg("--poll-interval=50ms")
            .arg("--wait-timeout=20s")
            // The pod's own token goes into the kubeconfig, as the token-rotation tests expect; the
            // Node-bound token (the default) is tested in src/edges/install and by the e2e suite.
            .arg("--host-token=service-account")
            .args(extra)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
            .env("KUBERNETES_SERVICE_PORT", "443")
            .stdin(Stdio::null());
        c
    }

    /// Run `plexus install --once <extra>` to the end; its status and stderr.
    pub fn run_once(&self, extra: &[&str]) -> (ExitStatus, String) {
        let mut args = vec!["--once"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Run `plexus install <extra>` to the end (it must stop by itself); its status and stderr.
    pub fn run(&self, extra: &[&str]) -> (ExitStatus, String) {
        let child = self
            .command(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn plexus install");
        let out = finish_bounded(child, b"", PATIENCE);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.timed_out,
            "plexus install {extra:?} did not finish:\n{stderr}"
        );
        (out.status, stderr)
    }

    /// Start the watching installer, its stderr going to `install.log`.
    pub fn start(&self, extra: &[&str]) -> Running<'_> {
        let log = fs::File::create(self.root.join("install.log")).unwrap();
        let child = self
            .command(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn plexus install");
        Running {
            node: self,
            child: Some(child),
        }
    }

    /// Wait until the config directory holds `name`, and return it parsed.
    pub fn wait_for_conf(&self, name: &str) -> Value {
        let p = self.conf(name);
        wait_until(
            &format!("{name} to be written"),
            || p.exists(),
            || self.log(),
        );
        read_json(&p)
    }

    /// Wait until the installer's log contains `text`.
    pub fn wait_for_log(&self, text: &str) {
        wait_until(
            &format!("the log line {text:?}"),
            || self.log().contains(text),
            || self.log(),
        );
    }
}

/// A running installer.
pub struct Running<'n> {
    node: &'n Node,
    child: Option<Child>,
}

impl Running<'_> {
    /// Send `sig` and wait for the installer to exit.
    pub fn signal(mut self, sig: Signal) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal_and_wait(&mut child, sig, PATIENCE)
            .unwrap_or_else(|_| panic!("plexus install ignored {sig}:\n{}", self.node.log()))
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
