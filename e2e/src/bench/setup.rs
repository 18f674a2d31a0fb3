//! The bench's world: a "host" network namespace where plexus and every plugin run (with a veth pair
//! whose end `bmaster0` is the macvlan master), the API server, a temporary directory with plexus's
//! `confDir`/`cniDir`, host-local's data, the runtime's caches and the cluster network's conflist, and
//! pods (an API pod with a network namespace). Everything is removed on drop.
//!
//! Networks: the cluster network is `bridge` + `host-local` (bridge `bcl0` in the host namespace,
//! gateway, default route); secondary network *i* (1..=8) is NAD `bench-net-i`: `macvlan` (bridge mode)
//! on `bmaster0` + `host-local`. Addresses come from 198.18.0.0/15 (RFC 2544, benchmarking), only
//! inside the bench's namespaces.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use plexus::{
    pure::netconf::NetworkConfig,
    seams::{
        exec::Exec,
        invoke::{DelegateError, Invoker, RuntimeConf},
    },
};
use plexus_e2e::harness::{
    cluster::PodInfo,
    runtime::{CNI_BIN, PLUGIN_PATH, kubelet_args},
    world::netns,
};
use plexus_testsupport::{
    leaks::{files_under, reservations},
    netns::Netns,
    proc::{processes_of, random_hex, wait_for},
};
use serde_json::{Map, Value, json};
use tempfile::TempDir;

use super::{api::Api, opts::MAX_K, stats::Stats};

/// The macvlan master in the host namespace.
pub const MASTER: &str = "bmaster0";
/// Its veth peer.
pub const MASTER_PEER: &str = "bpeer0";
/// The cluster network's bridge.
pub const CLUSTER_BRIDGE: &str = "bcl0";
/// The cluster network's name.
pub const CLUSTER_NETWORK: &str = "bench-cluster";
/// The name of secondary network `i`.
pub fn nad_name(i: usize) -> String {
    format!("bench-net-{i}")
}
/// The `k8s.v1.cni.cncf.io/networks` annotation selecting the first `k` secondaries.
pub fn networks_annotation(k: usize) -> String {
    (1..=k).map(nad_name).collect::<Vec<_>>().join(",")
}
/// How long one plugin may run.
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the shim's ADD waits for an unreachable daemon (`daemonWaitSeconds`): the storm starts while
/// the restarted daemon is still starting.
pub const DAEMON_WAIT_SECONDS: u64 = 60;

/// A runtime operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// ADD.
    Add,
    /// DEL.
    Del,
}

fn describe(e: &DelegateError) -> String {
    match e.plugin_reply() {
        Some(r) => format!("CNI error {}: {} {}", r.code, r.msg, r.details),
        None => e.to_string(),
    }
}

/// Runs plexus through the runtime's conflist, or the delegates directly, inside the host namespace,
/// with libcni's semantics (plexus's [`Invoker`]); times the operation on the thread that runs it.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The host namespace.
    pub host: PathBuf,
    /// The runtime's list: `{"plugins":[plexus]}`.
    pub list: NetworkConfig,
    /// `CNI_PATH`: the directory holding `plexus`, then Debian's plugins.
    pub search_path: Vec<PathBuf>,
    /// The runtime's result cache for plexus.
    pub cache: PathBuf,
    /// The runtime's result cache for the floor.
    pub floor_cache: PathBuf,
    /// The cluster network as plexus runs it.
    pub cluster: NetworkConfig,
    /// Secondary network `i` (index `i-1`) as plexus runs it: the NAD's config with its name.
    pub secondaries: Vec<NetworkConfig>,
}

impl Runner {
    /// Run plexus for `rt`; the time the runtime's invocation took.
    pub fn plexus(
        &self,
        op: Op,
        rt: &RuntimeConf,
        exec: Arc<dyn Exec>,
    ) -> Result<Duration, String> {
        let (list, rt, search_path, cache) = (
            self.list.clone(),
            rt.clone(),
            self.search_path.clone(),
            self.cache.clone(),
        );
        plexus_netns::run_in_netns(&self.host, move || {
            let inv = Invoker {
                exec: &*exec,
                search_path,
                base_env: vec![("PATH".into(), PLUGIN_PATH.into())],
                timeout: PLUGIN_TIMEOUT,
                cache_dir: cache,
                // What libcni does, for plexus's own result and for the floor's.
                cache_writes: plexus::seams::invoke::CacheWrites::LikeLibcni,
            };
            let started = Instant::now();
            let r = match op {
                Op::Add => inv.add(&list, &rt).map(|_| ()),
                Op::Del => inv.del(&list, &rt),
            };
            let took = started.elapsed();
            r.map(|()| took)
                .map_err(|e| format!("plexus {op:?}: {}", describe(&e)))
        })
        .map_err(|e| format!("host netns: {e}"))?
    }

    /// The floor: the cluster network and the first `k` secondaries run directly, in sequence (DEL in
    /// reverse), with the attachment parameters plexus gives them (`eth0`, `net1`…).
    pub fn floor(&self, op: Op, k: usize, rt: &RuntimeConf) -> Result<Duration, String> {
        let mut nets = vec![(self.cluster.clone(), "eth0".to_string())];
        nets.extend(
            self.secondaries[..k]
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), format!("net{}", i + 1))),
        );
        let (rt, cache) = (rt.clone(), self.floor_cache.clone());
        let search_path = vec![PathBuf::from(CNI_BIN)];
        plexus_netns::run_in_netns(&self.host, move || {
            let exec = plexus::seams::exec::ProcessExec;
            let inv = Invoker {
                exec: &exec,
                search_path,
                base_env: vec![("PATH".into(), PLUGIN_PATH.into())],
                timeout: PLUGIN_TIMEOUT,
                cache_dir: cache,
                // What libcni does, for plexus's own result and for the floor's.
                cache_writes: plexus::seams::invoke::CacheWrites::LikeLibcni,
            };
            let conf = |ifname: &str| RuntimeConf {
                ifname: ifname.to_string(),
                capability_args: Map::new(),
                ..rt.clone()
            };
            let started = Instant::now();
            let mut errors = Vec::new();
            match op {
                Op::Add => {
                    for (net, ifname) in &nets {
                        if let Err(e) = inv.add(net, &conf(ifname)) {
                            errors.push(format!("{}: {}", net.name, describe(&e)));
                            break;
                        }
                    }
                }
                Op::Del => {
                    for (net, ifname) in nets.iter().rev() {
                        if let Err(e) = inv.del(net, &conf(ifname)) {
                            errors.push(format!("{}: {}", net.name, describe(&e)));
                        }
                    }
                }
            }
            let took = started.elapsed();
            if errors.is_empty() {
                Ok(took)
            } else {
                Err(format!("floor {op:?}: {}", errors.join("; ")))
            }
        })
        .map_err(|e| format!("host netns: {e}"))?
    }
}

/// A pod: the API object and its network namespace.
pub struct Pod {
    /// The API pod.
    pub info: PodInfo,
    /// Its network namespace.
    pub netns: Netns,
    /// Its number of secondary networks.
    pub k: usize,
}

impl Pod {
    /// The runtime's attachment parameters for sandbox `cid` (`eth0`, kubelet's `CNI_ARGS`).
    pub fn rt(&self, cid: &str) -> RuntimeConf {
        RuntimeConf {
            container_id: cid.to_string(),
            netns: Some(self.netns.path()),
            ifname: "eth0".into(),
            args: kubelet_args(&self.info, cid),
            capability_args: Map::new(),
        }
    }

    /// The links the pod has after a successful ADD: `eth0`, `net1`…`netK`, `lo` (sorted).
    pub fn expected_links(&self) -> Vec<String> {
        let mut v: Vec<String> = ["eth0", "lo"].iter().map(|s| s.to_string()).collect();
        v.extend((1..=self.k).map(|i| format!("net{i}")));
        v.sort();
        v
    }

    /// Whether the pod's links are as after ADD.
    pub fn check_added(&self) -> Result<(), String> {
        let got = self.netns.link_names();
        let want = self.expected_links();
        if got == want {
            Ok(())
        } else {
            Err(format!(
                "pod {}: links {got:?}, expected {want:?}",
                self.info.name
            ))
        }
    }

    /// Whether the pod is back to `lo` only.
    pub fn check_clean(&self) -> Result<(), String> {
        let got = self.netns.link_names();
        if got == ["lo"] {
            Ok(())
        } else {
            Err(format!("pod {}: links {got:?} after DEL", self.info.name))
        }
    }
}

/// The bench's world (see the module docs). Drop order: pods (owned by the caller) first, then the host
/// namespace, the API server and its objects, the directory.
pub struct Bench {
    /// Where plexus and the plugins run.
    pub host: Netns,
    /// The API server.
    pub api: Api,
    /// The main namespace (plexus's `multusNamespace`), with NADs `bench-net-1..8`.
    pub ns: String,
    /// The ServiceAccount plexus authenticates as.
    pub plexus_user: String,
    /// Runs plexus and the floor.
    pub runner: Runner,
    /// The plexus binary measured.
    pub plexus: PathBuf,
    /// `--baseline`: the same runtime and list, finding the baseline binary as `plexus`.
    pub base_runner: Option<Runner>,
    /// Daemon mode: the runtime's list `{"plugins":[plexus-shim]}` (the same keys as plexus's, plus the
    /// shim's), run by the same runner.
    pub daemon_runner: Option<Runner>,
    /// Daemon mode: the shim binary measured.
    pub shim: Option<PathBuf>,
    /// Daemon mode: the daemon binary the bench built, which is not beside `plexus` (another cargo profile);
    /// `None`: the one the harness finds (`E2E_DAEMON_BIN`, or beside `plexus`).
    pub daemon: Option<PathBuf>,
    dir: TempDir,
}

impl Bench {
    /// What one crash-safe cache write (temp file, fsync, rename, fsync of the directory: plexus's
    /// `fsutil::atomic_write`) costs in plexus's `cniDir` on this machine, over `runs` writes of a 2 KB file.
    /// An ADD does one on its critical path (the container's cache, before the first delegate).
    pub fn cache_write_cost(&self, runs: usize) -> Result<Stats, String> {
        let dir = self.dir.path().join("cni");
        let file = dir.join("bench-fsync-probe");
        let mut v = Vec::with_capacity(runs);
        for i in 0..runs {
            let bytes = vec![b'a' + (i % 26) as u8; 2048];
            let t = std::time::Instant::now();
            plexus::store::fsutil::atomic_write(&file, &bytes, 0o600)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            v.push(t.elapsed());
        }
        let _ = std::fs::remove_file(&file);
        Stats::of(&v).ok_or_else(|| "no samples".to_string())
    }

    /// Set everything up for `plexus`, and for daemon mode when `shim` is given: `plexus-shim` in the
    /// runtime's plugin directory, deploy/daemon's extra ClusterRole bound to plexus's ServiceAccount.
    pub fn setup(
        plexus: &Path,
        shim: Option<&Path>,
        opts: &super::opts::Opts,
    ) -> Result<Bench, String> {
        let dir = tempfile::Builder::new()
            .prefix("plexus-bench-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let root = dir.path().to_path_buf();
        let host = netns("bench-host");
        host.add_veth_pair(MASTER, MASTER_PEER);
        for d in [
            "net.d",
            "cni",
            "ipam",
            "bin",
            "runtime-cache",
            "floor-cache",
            "run",
            "base-bin",
        ] {
            fs::create_dir_all(root.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
        }
        // The runtime finds `plexus` in its plugin directory: the binary itself, no wrapper (the
        // runtime's thread is in the host namespace already, so plexus is too) — unless `--wrap`.
        match &opts.wrap {
            None => std::os::unix::fs::symlink(plexus, root.join("bin/plexus"))
                .map_err(|e| format!("link the plexus binary: {e}"))?,
            Some(cmd) => {
                use std::os::unix::fs::PermissionsExt;
                let p = root.join("bin/plexus");
                fs::write(
                    &p,
                    format!("#!/bin/sh\nexec {cmd} '{}' \"$@\"\n", plexus.display()),
                )
                .map_err(|e| format!("write the wrapper: {e}"))?;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
                    .map_err(|e| format!("chmod the wrapper: {e}"))?;
            }
        }

        if let Some(base) = &opts.baseline {
            std::os::unix::fs::symlink(base, root.join("base-bin/plexus"))
                .map_err(|e| format!("link the baseline binary: {e}"))?;
        }
        if let Some(shim) = shim {
            std::os::unix::fs::symlink(shim, root.join("bin/plexus-shim"))
                .map_err(|e| format!("link the shim binary: {e}"))?;
        }

        let mut api = Api::start(&host.path(), &root.join("admin.kubeconfig"))?;
        let ns = api.create_namespace("plexus-bench")?;
        let kubeconfig = root.join("kubeconfig");
        let plexus_user = api.plexus_kubeconfig(&host.path(), &ns, &kubeconfig, shim.is_some())?;

        let ipam = |subnet: &str| json!({"type": "host-local", "dataDir": root.join("ipam"), "ranges": [[{"subnet": subnet}]]});
        let mut cluster_ipam = ipam("198.18.0.0/24");
        cluster_ipam["routes"] = json!([{"dst": "0.0.0.0/0"}]);
        let cluster_conflist = json!({
            "cniVersion": "1.0.0",
            "name": CLUSTER_NETWORK,
            "plugins": [{"type": "bridge", "bridge": CLUSTER_BRIDGE, "isGateway": true,
                         "ipMasq": false, "ipam": cluster_ipam}],
        });
        let cluster_file = root.join("cluster.conflist");
        fs::write(&cluster_file, cluster_conflist.to_string())
            .map_err(|e| format!("write the cluster conflist: {e}"))?;
        let mut secondaries = Vec::new();
        for i in 1..=MAX_K {
            let conf = json!({"cniVersion": "1.0.0", "type": "macvlan", "master": MASTER,
                              "mode": "bridge", "ipam": ipam(&format!("198.18.{}.0/24", 10 + i))});
            api.create_nad(&ns, &nad_name(i), &conf)?;
            let mut named = conf.clone();
            named["name"] = Value::String(nad_name(i));
            secondaries
                .push(NetworkConfig::from_value(named).map_err(|e| format!("secondary {i}: {e}"))?);
        }
        let mut plexus_conf = json!({
            "type": "plexus",
            "kubeconfig": kubeconfig,
            "clusterNetwork": cluster_file,
            "confDir": root.join("net.d"),
            "cniDir": root.join("cni"),
            "binDir": CNI_BIN,
            "multusNamespace": ns,
        });
        if let Some(log) = &opts.plexus_log {
            plexus_conf["logLevel"] = json!("debug");
            plexus_conf["logFile"] = json!(log);
            plexus_conf["logToStderr"] = json!(false);
        }
        // Daemon mode: the shim's config is plexus's with the shim's keys (as `plexus install --daemon`
        // writes it); its DEL fallback would run the thin plexus with the same keys.
        let mut shim_conf = plexus_conf.clone();
        shim_conf["type"] = json!("plexus-shim");
        shim_conf["daemonSocketDir"] = json!(root.join("run"));
        shim_conf["daemonWaitSeconds"] = json!(DAEMON_WAIT_SECONDS);
        shim_conf["thinBinary"] = json!(root.join("bin/plexus"));
        let shim_list =
            json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [shim_conf]});
        let list =
            json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [plexus_conf]});
        let runner = Runner {
            host: host.path(),
            list: NetworkConfig::from_value(list).map_err(|e| format!("the conflist: {e}"))?,
            search_path: vec![root.join("bin"), PathBuf::from(CNI_BIN)],
            cache: root.join("runtime-cache"),
            floor_cache: root.join("floor-cache"),
            cluster: NetworkConfig::from_value(cluster_conflist)
                .map_err(|e| format!("the cluster network: {e}"))?,
            secondaries,
        };
        let daemon_runner = match shim {
            Some(_) => Some(Runner {
                list: NetworkConfig::from_value(shim_list)
                    .map_err(|e| format!("the shim's conflist: {e}"))?,
                ..runner.clone()
            }),
            None => None,
        };
        let base_runner = opts.baseline.as_ref().map(|_| Runner {
            search_path: vec![root.join("base-bin"), PathBuf::from(CNI_BIN)],
            ..runner.clone()
        });
        Ok(Bench {
            host,
            api,
            ns,
            plexus_user,
            base_runner,
            runner,
            plexus: plexus.to_path_buf(),
            daemon_runner,
            shim: shim.map(Path::to_path_buf),
            daemon: None,
            dir,
        })
    }

    /// The temporary directory.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Daemon mode: the daemon's socket directory (the shim's `daemonSocketDir`).
    pub fn socket_dir(&self) -> PathBuf {
        self.root().join("run")
    }

    /// Daemon mode: the daemon's kubeconfig (plexus's: the same ServiceAccount, with deploy/daemon's extra
    /// ClusterRole bound to it).
    pub fn kubeconfig(&self) -> PathBuf {
        self.root().join("kubeconfig")
    }

    /// Create pod `name` in `ns` selecting `k` secondaries, with its network namespace.
    pub fn pod(&self, ns: &str, name: &str, k: usize) -> Result<Pod, String> {
        let info = self.api.create_pod(ns, name, &networks_annotation(k))?;
        Ok(Pod {
            info,
            netns: netns("bench-pod"),
            k,
        })
    }

    /// A fresh container ID.
    pub fn cid(prefix: &str) -> String {
        format!("{prefix}-{}", &random_hex()[..12])
    }

    /// Everything that outlives a DEL when something leaks: links in `pods`, host-local reservations,
    /// files in plexus's `cniDir` and the runtime's caches, links in the host namespace besides the
    /// master pair and the cluster bridge, plexus (and shim) processes still running.
    pub fn leaks(&self, pods: &[&Pod]) -> Vec<String> {
        self.leaks_except(pods, &[])
    }

    /// [`Bench::leaks`], with the processes `running` (a daemon that is meant to be up) not counted.
    pub fn leaks_except(&self, pods: &[&Pod], running: &[u32]) -> Vec<String> {
        let mut out = Vec::new();
        for p in pods {
            if let Err(e) = p.check_clean() {
                out.push(e);
            }
        }
        let ipam = self.root().join("ipam");
        for r in reservations(&ipam) {
            let file = ipam.join(&r.network).join(r.ip.to_string());
            out.push(format!("host-local reservation {}", file.display()));
        }
        for d in ["cni", "runtime-cache", "floor-cache"] {
            for f in files_under(&self.root().join(d)) {
                out.push(format!("file left: {}", f.display()));
            }
        }
        let allowed = ["lo", MASTER, MASTER_PEER, CLUSTER_BRIDGE];
        let extra = || -> Vec<String> {
            self.host
                .link_names()
                .into_iter()
                .filter(|l| !allowed.contains(&l.as_str()))
                .collect()
        };
        wait_for(Duration::from_secs(5), || extra().is_empty());
        for l in extra() {
            out.push(format!("host netns link {l}"));
        }
        for pid in processes_of(&self.plexus) {
            if !running.contains(&pid) {
                out.push(format!("plexus process {pid} still running"));
            }
        }
        if let Some(shim) = &self.shim {
            for pid in processes_of(shim) {
                out.push(format!("plexus-shim process {pid} still running"));
            }
        }
        out
    }
}
