//! The container runtime, played by the test: it runs the node's network configuration list — plexus
//! first, optionally followed by chained plugins — with libcni's semantics, through plexus's own
//! [`Invoker`] over [`ProcessExec`] (CNI-25 ADD in order with `prevResult`, CNI-26 DEL in reverse with the
//! cached result, CNI-27 CHECK, CNI-29/CNI-30 request configs and capability-filtered `runtimeConfig`,
//! CNI-44 its own result cache).
//!
//! Every operation runs on a thread that has entered the test's "host" namespace, so each plugin it
//! starts (plexus, and chained plugins such as `portmap` with their iptables rules) works there, never in
//! the machine's namespace. plexus itself is found through a wrapper (`<bin>/plexus`:
//! `exec ip netns exec <host> <plexus binary>`) that pins it to the host namespace in any case; the
//! environment passes through.

use std::{
    fmt,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use plexus::{
    pure::netconf::NetworkConfig,
    seams::{
        exec::ProcessExec,
        invoke::{DelegateError, Invoker, RuntimeConf},
    },
};
use plexus_cni::CniArgs;
use serde_json::{Map, Value};

use super::cluster::PodInfo;

/// Where Debian's containernetworking-plugins installs the plugins.
pub const CNI_BIN: &str = plexus_testsupport::netns::PLUGIN_DIR;
/// The time limit of one plugin invocation.
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// The `PATH` plugins get (portmap runs iptables, the wrapper runs ip).
pub const PLUGIN_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// A failed operation as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniFailure {
    /// The CNI error code, when the plugin printed a CNI error.
    pub code: Option<u32>,
    /// The message (or the runtime's description of the failure).
    pub msg: String,
    /// The details.
    pub details: String,
}

impl CniFailure {
    fn from_delegate(e: &DelegateError) -> CniFailure {
        match e.plugin_reply() {
            Some(r) => CniFailure {
                code: Some(r.code),
                msg: r.msg.clone(),
                details: r.details.clone(),
            },
            None => CniFailure {
                code: None,
                msg: e.to_string(),
                details: String::new(),
            },
        }
    }

    /// Message and details together, for matching.
    pub fn text(&self) -> String {
        format!("{} {}", self.msg, self.details)
    }
}

impl fmt::Display for CniFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(c) => write!(f, "CNI error {c}: {}", self.text()),
            None => write!(f, "{}", self.text()),
        }
    }
}

/// A runtime operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// ADD.
    Add,
    /// CHECK.
    Check,
    /// DEL.
    Del,
}

/// Run one network (a conf or conflist) for `rt` inside the namespace at `host`, as libcni does; ADD
/// returns the final result (in the list's version).
pub fn run_network(
    host: &Path,
    net: &NetworkConfig,
    rt: &RuntimeConf,
    search_path: &[PathBuf],
    cache_dir: &Path,
    op: Op,
) -> Result<Option<Value>, CniFailure> {
    let (net, rt, search_path, cache_dir) = (
        net.clone(),
        rt.clone(),
        search_path.to_vec(),
        cache_dir.to_path_buf(),
    );
    plexus_netns::run_in_netns(host, move || {
        let exec = ProcessExec;
        let inv = Invoker {
            exec: &exec,
            search_path,
            base_env: vec![("PATH".into(), PLUGIN_PATH.into())],
            timeout: PLUGIN_TIMEOUT,
            cache_dir,
            cache_writes: plexus::seams::invoke::CacheWrites::LikeLibcni,
        };
        let out = match op {
            Op::Add => inv
                .add(&net, &rt)
                .and_then(|r| Ok(Some(r.to_value(net.cni_version)?))),
            Op::Check => inv.check(&net, &rt).map(|()| None),
            Op::Del => inv.del(&net, &rt).map(|()| None),
        };
        out.map_err(|e| CniFailure::from_delegate(&e))
    })
    .unwrap_or_else(|e| panic!("cannot run in the host netns {}: {e}", host.display()))
}

/// The node's network configuration list and the runtime's state for it.
#[derive(Debug, Clone)]
pub struct CniRuntime {
    /// The list (plexus first).
    pub list: NetworkConfig,
    /// The host namespace everything runs in.
    pub host: PathBuf,
    /// `CNI_PATH`: the wrapper directory, then Debian's plugins.
    pub search_path: Vec<PathBuf>,
    /// The runtime's own libcni cache directory (`<dir>/results/<list>-<cid>-<ifname>`).
    pub cache_dir: PathBuf,
}

impl CniRuntime {
    /// A runtime for `list` (JSON) whose plugin directory `bin_dir` holds the plexus wrapper.
    pub fn new(list: &Value, host: &Path, bin_dir: &Path, cache_dir: &Path) -> CniRuntime {
        let list = NetworkConfig::from_value(list.clone())
            .unwrap_or_else(|e| panic!("the node's conflist is invalid: {e}\n{list:#}"));
        CniRuntime {
            list,
            host: host.to_path_buf(),
            search_path: vec![bin_dir.to_path_buf(), PathBuf::from(CNI_BIN)],
            cache_dir: cache_dir.to_path_buf(),
        }
    }

    fn run(&self, rt: &RuntimeConf, op: Op) -> Result<Option<Value>, CniFailure> {
        run_network(
            &self.host,
            &self.list,
            rt,
            &self.search_path,
            &self.cache_dir,
            op,
        )
    }

    /// ADD the list: the chain's final result.
    pub fn add(&self, rt: &RuntimeConf) -> Result<Value, CniFailure> {
        self.run(rt, Op::Add)
            .map(|v| v.expect("ADD returns a result"))
    }

    /// CHECK the list.
    pub fn check(&self, rt: &RuntimeConf) -> Result<(), CniFailure> {
        self.run(rt, Op::Check).map(|_| ())
    }

    /// DEL the list.
    pub fn del(&self, rt: &RuntimeConf) -> Result<(), CniFailure> {
        self.run(rt, Op::Del).map(|_| ())
    }

    /// The runtime's cached result files for container `cid`.
    pub fn cached_results(&self, cid: &str) -> Vec<PathBuf> {
        plexus_testsupport::leaks::results_for(&self.cache_dir, cid)
    }
}

/// `CNI_ARGS` as a Kubernetes CRI runtime sends them (CNI-51).
pub fn kubelet_args(pod: &PodInfo, cid: &str) -> CniArgs {
    CniArgs::parse(&format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID={}",
        pod.namespace, pod.name, pod.uid
    ))
    .expect("valid CNI_ARGS")
}

/// The attachment parameters of pod sandbox `cid` on `eth0`, with the capability arguments a kubelet
/// sends (`portMappings` always, empty when the pod has no host ports).
pub fn pod_runtime_conf(
    pod: &PodInfo,
    cid: &str,
    netns: &Path,
    port_mappings: Vec<Value>,
) -> RuntimeConf {
    let mut caps = Map::new();
    caps.insert("portMappings".into(), Value::Array(port_mappings));
    RuntimeConf {
        container_id: cid.to_string(),
        netns: Some(netns.to_path_buf()),
        ifname: "eth0".into(),
        args: kubelet_args(pod, cid),
        capability_args: caps,
    }
}

/// Write the `plexus` wrapper into `bin_dir`: `exec ip netns exec <host> <plexus>`.
pub fn write_plexus_wrapper(bin_dir: &Path, host_netns: &str, plexus: &Path) -> PathBuf {
    std::fs::create_dir_all(bin_dir).expect("create the wrapper dir");
    let p = bin_dir.join("plexus");
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\n# plexus, pinned to the test's host network namespace; the environment passes through.\nexec ip netns exec '{host_netns}' '{}' \"$@\"\n",
            plexus.display()
        ),
    )
    .expect("write the plexus wrapper");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the plexus wrapper");
    p
}
