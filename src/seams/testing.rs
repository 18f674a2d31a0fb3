//! Test doubles for the outside world: a recording [`Exec`] and a scripted netns probe (unit tests only).

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Mutex,
};

use plexus_cni::{CniResult, CniVersion, ErrorReply};
use serde_json::{Value, json};

use crate::seams::{
    exec::{Exec, ExecError, ExecOutput, ExecRequest},
    netns::NetnsProbe,
};

/// One recorded delegate call.
#[derive(Debug, Clone)]
pub struct Call {
    /// The plugin type (file name of the binary).
    pub plugin: String,
    /// The child's environment.
    pub env: Vec<(String, String)>,
    /// Stdin as JSON.
    pub stdin: Value,
}

impl Call {
    /// One environment variable.
    pub fn env(&self, k: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(kk, _)| kk == k)
            .map(|(_, v)| v.as_str())
    }

    /// `CNI_COMMAND`.
    pub fn command(&self) -> &str {
        self.env("CNI_COMMAND").unwrap_or_default()
    }

    /// `CNI_IFNAME`.
    pub fn ifname(&self) -> &str {
        self.env("CNI_IFNAME").unwrap_or_default()
    }

    /// The network name in the request config.
    pub fn network(&self) -> &str {
        self.stdin["name"].as_str().unwrap_or_default()
    }
}

enum Behaviour {
    Fail(u32, String),
    Raw(Vec<u8>),
}

/// Records every call; ADD answers with a plausible result (or passes `prevResult` through), other commands
/// succeed, unless a failure or raw reply was scripted for `(plugin type or network name, command)`.
#[derive(Default)]
pub struct FakeExec {
    calls: Mutex<Vec<Call>>,
    script: Mutex<HashMap<(String, String), Behaviour>>,
}

impl FakeExec {
    /// Make `who` (a plugin type or a network name) fail `command` with a CNI error.
    pub fn fail(&self, who: &str, command: &str, code: u32, msg: &str) {
        self.script.lock().unwrap().insert(
            (who.into(), command.into()),
            Behaviour::Fail(code, msg.into()),
        );
    }

    /// Make `who` print `bytes` and succeed on `command`.
    pub fn reply(&self, who: &str, command: &str, bytes: &[u8]) {
        self.script
            .lock()
            .unwrap()
            .insert((who.into(), command.into()), Behaviour::Raw(bytes.to_vec()));
    }

    /// Calls so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Forget calls so far.
    pub fn clear(&self) {
        self.calls.lock().unwrap().clear();
    }
}

/// A result for an ADD of `ifname` in `netns`, in the shape of `version`.
pub fn fake_result(version: CniVersion, ifname: &str, netns: &str, octet: u8) -> Value {
    let v = json!({
        "cniVersion": "1.1.0",
        "interfaces": [{"name": ifname, "mac": format!("02:00:00:00:00:{octet:02x}"), "sandbox": netns}],
        "ips": [{"address": format!("10.9.{octet}.2/24"), "gateway": format!("10.9.{octet}.1"), "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": format!("10.9.{octet}.1")}]
    });
    let r = CniResult::from_value(&v, CniVersion::V1_1_0).expect("fixture is a valid result");
    r.to_value(version)
        .expect("fixture converts to every version")
}

impl Exec for FakeExec {
    fn find(&self, plugin_type: &str, dirs: &[PathBuf]) -> Result<PathBuf, ExecError> {
        plexus_cni::validate::plugin_type(plugin_type).map_err(|e| ExecError::InvalidType {
            plugin_type: plugin_type.into(),
            reason: e.to_string(),
        })?;
        if plugin_type == "missing" {
            return Err(ExecError::NotFound {
                plugin_type: plugin_type.into(),
                dirs: dirs.to_vec(),
            });
        }
        // A binary `exec::check_binary` refuses (group-writable).
        if plugin_type == "unsafe" {
            return Err(ExecError::Unsafe {
                plugin: dirs.first().cloned().unwrap_or_default().join(plugin_type),
                reason: "it is writable by its group (mode 0775)".into(),
            });
        }
        Ok(dirs.first().cloned().unwrap_or_default().join(plugin_type))
    }

    fn run(&self, req: &ExecRequest<'_>) -> Result<ExecOutput, ExecError> {
        let plugin = req
            .plugin
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stdin: Value = serde_json::from_slice(req.stdin).unwrap_or(Value::Null);
        let call = Call {
            plugin: plugin.clone(),
            env: req.env.to_vec(),
            stdin: stdin.clone(),
        };
        let (command, ifname, netns) = (
            call.command().to_string(),
            call.ifname().to_string(),
            call.env("CNI_NETNS").unwrap_or_default().to_string(),
        );
        let network = call.network().to_string();
        self.calls.lock().unwrap().push(call);
        let script = self.script.lock().unwrap();
        let scripted = script
            .get(&(plugin.clone(), command.clone()))
            .or_else(|| script.get(&(network, command.clone())));
        match scripted {
            Some(Behaviour::Fail(code, msg)) => {
                return Err(ExecError::Plugin {
                    plugin: req.plugin.to_path_buf(),
                    reply: ErrorReply::new(*code, msg.clone(), ""),
                    stderr: String::new(),
                });
            }
            Some(Behaviour::Raw(b)) => {
                return Ok(ExecOutput {
                    stdout: b.clone(),
                    stderr: Vec::new(),
                });
            }
            None => {}
        }
        if command != "ADD" {
            return Ok(ExecOutput::default());
        }
        let version = stdin["cniVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(CniVersion::V0_1_0);
        let out = match stdin.get("prevResult") {
            Some(prev) => prev.clone(),
            None => {
                let octet = ifname
                    .bytes()
                    .fold(0u8, |a, b| a.wrapping_mul(31).wrapping_add(b))
                    | 1;
                fake_result(version, &ifname, &netns, octet)
            }
        };
        Ok(ExecOutput {
            stdout: serde_json::to_vec(&out).unwrap_or_default(),
            stderr: Vec::new(),
        })
    }
}

/// A netns probe whose existing links are scripted; default-route edits are recorded (and fail with
/// `route_error` when set).
#[derive(Default)]
#[allow(dead_code, reason = "used by the ops tests")]
pub struct FakeNetns {
    /// Link names that "exist" in every netns.
    pub existing: Mutex<HashSet<String>>,
    /// When not empty, each dump answers the next of these (in order) instead of `existing`.
    pub dumps: Mutex<std::collections::VecDeque<Vec<String>>>,
    /// How many dumps were taken.
    pub dumped: std::sync::atomic::AtomicUsize,
    /// When set, every dump fails (as a namespace that cannot be entered would).
    pub dump_fails: std::sync::atomic::AtomicBool,
    /// Every default-route edit asked for, with its namespace.
    pub route_edits: Mutex<Vec<(PathBuf, plexus_netns::DefaultRouteEdit)>>,
    /// When set, default-route edits fail with this errno.
    pub route_error: Mutex<Option<plexus_netns::Errno>>,
    /// The default routes every netns "has".
    pub defaults: Mutex<Vec<(String, plexus_netns::RouteInfo)>>,
}

impl NetnsProbe for FakeNetns {
    fn link_names(&self, _netns: &Path) -> Result<Vec<String>, plexus_netns::NetnsError> {
        self.dumped
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.dump_fails.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(plexus_netns::NetnsError::Thread(
                "scripted dump failure".into(),
            ));
        }
        if let Some(scripted) = self.dumps.lock().unwrap().pop_front() {
            return Ok(scripted);
        }
        Ok(self.existing.lock().unwrap().iter().cloned().collect())
    }

    fn default_routes(
        &self,
        _netns: &Path,
    ) -> Result<Vec<(String, plexus_netns::RouteInfo)>, plexus_netns::NetnsError> {
        Ok(self.defaults.lock().unwrap().clone())
    }

    fn edit_default_routes(
        &self,
        netns: &Path,
        edit: plexus_netns::DefaultRouteEdit,
    ) -> Result<plexus_netns::DefaultRouteReport, plexus_netns::NetnsError> {
        self.route_edits
            .lock()
            .unwrap()
            .push((netns.to_path_buf(), edit.clone()));
        if let Some(errno) = *self.route_error.lock().unwrap() {
            return Err(plexus_netns::NetnsError::Kernel {
                op: "route add",
                path: netns.to_path_buf(),
                errno,
            });
        }
        Ok(plexus_netns::DefaultRouteReport {
            removed: Vec::new(),
            added: edit.add,
        })
    }
}

/// What every ops-level test starts from: a scratch directory, a recording exec and a scripted netns. Test
/// modules wrap it (`struct World(TestHost)` with `Deref`) and add their own ways to run plexus.
pub struct TestHost {
    /// Scratch directory (removed on drop).
    pub dir: tempfile::TempDir,
    /// The delegates.
    pub exec: FakeExec,
    /// The pod's namespace.
    pub netns: FakeNetns,
}

impl TestHost {
    /// A fresh host.
    pub fn new() -> TestHost {
        TestHost {
            dir: tempfile::tempdir().unwrap(),
            exec: FakeExec::default(),
            netns: FakeNetns::default(),
        }
    }

    /// `cniDir` inside the scratch directory.
    pub fn cni_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("cni")
    }
}

/// Pod `ns1/p1` of UID `uid-1`, as the runtime names it.
pub fn pod_ref() -> crate::pure::request::PodRef {
    crate::pure::request::PodRef {
        namespace: "ns1".into(),
        name: "p1".into(),
        uid: Some("uid-1".into()),
        infra_container_id: None,
    }
}
