//! One test's world: a [`Cluster`] with the test's namespace, a "host" network namespace where plexus and
//! every plugin run (with a veth pair whose end `mvmaster0` is the macvlan master), a [`Forwarder`] that
//! lets plexus reach the API from there, and a temporary directory with plexus's `confDir`/`cniDir`, the
//! plugins' state (host-local `dataDir`, tuning `dataDir`), the runtime's libcni cache and plexus's log.
//! Pods are [`Sandbox`]es: an API pod plus a "pod" network namespace and a container ID.
//!
//! plexus never gets the test's own (admin) credentials. Its kubeconfig carries only a token (from the
//! TokenRequest API, [`rbac::TOKEN_SECONDS`]) of ServiceAccount `plexus` in the test's namespace, bound by
//! ClusterRoleBinding `<namespace>` to `deploy/clusterrole.yaml`'s ClusterRole, as the DaemonSet's
//! identity is; so every scenario proves that ClusterRole is enough. [`World::with_cluster_role`] binds
//! another ClusterRole instead (the negative check: a role too small must make ADD fail).
//!
//! Drop order tears down the forwarder, then the host namespace (and with it anything a failed test left
//! there), then the API objects, then the directory — also when a test panics.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::api::{core::v1::Event, rbac::v1::ClusterRole};
use plexus::{
    pure::{annotations::NETWORK_STATUS_ANNOTATION, status},
    seams::invoke::RuntimeConf,
};
use plexus_testsupport::{
    forward::Forwarder,
    leaks::{plexus_files, reservations, results_for},
    netns::{Netns, check_environment},
    proc::random_hex,
};
pub use plexus_testsupport::{
    leaks::Reservation,
    netns::{MASTER, MASTER_PEER},
};
use serde_json::{Value, json};
use tempfile::TempDir;

use super::{
    cluster::{Cluster, NO_SUCH_NODE, PodInfo},
    daemon::{self, DaemonProcess, DaemonView, daemon_mode, shim_binary},
    kubeconfig, rbac,
    runtime::{CNI_BIN, CniFailure, CniRuntime, pod_runtime_conf, write_plexus_wrapper},
};

/// The name prefix of every network namespace the suite (and the bench) creates:
/// `plexus-e2e-<pid>-<n>-<role>`.
pub const NETNS_PREFIX: &str = "plexus-e2e-";
/// The cluster network's bridge.
pub const CLUSTER_BRIDGE: &str = "e2ecl0";
/// The cluster network's name (its status name: it comes from a file, not a NAD).
pub const CLUSTER_NETWORK: &str = "e2e-cluster";
/// Subnets (RFC 5737 documentation ranges), assigned only inside the test's namespaces.
pub const CLUSTER_SUBNET: &str = "192.0.2.0/24";
/// The macvlan networks' subnet.
pub const MACVLAN_SUBNET: &str = "198.51.100.0/24";
/// The bridge secondaries' subnet.
pub const BRIDGE_SUBNET: &str = "203.0.113.0/24";

/// Check the machine can run the suite: root, and Debian's plugins.
pub fn require_environment() {
    let plugins = [
        "bridge",
        "macvlan",
        "host-local",
        "static",
        "tuning",
        "portmap",
    ];
    if let Err(e) = check_environment(&plugins) {
        panic!("the end-to-end suite cannot run: {e}; run it with sudo");
    }
}

/// A network namespace of the suite's ([`NETNS_PREFIX`]) for `role`, deleted on drop.
pub fn netns(role: &str) -> Netns {
    Netns::with_prefix(NETNS_PREFIX, role)
}

/// A pod sandbox: the API pod, its network namespace, and the runtime's container ID.
pub struct Sandbox {
    /// The pod.
    pub pod: PodInfo,
    /// `CNI_CONTAINERID`.
    pub cid: String,
    /// The pod's network namespace.
    pub netns: Netns,
}

impl Sandbox {
    /// `CNI_NETNS`.
    pub fn path(&self) -> PathBuf {
        self.netns.path()
    }
}

/// A test's world (see the module docs).
pub struct World {
    /// Daemon mode: the world's `plexus daemon` (dropped first: stopped before its namespace goes).
    pub daemon: Option<DaemonProcess>,
    /// The test's name (for messages).
    pub test: String,
    /// Lets plexus reach the API from the host namespace.
    pub fwd: Forwarder,
    /// Where plexus and the plugins run.
    pub host: Netns,
    /// The API server and the test's objects there.
    pub cluster: Cluster,
    /// The test's namespace; also plexus's `multusNamespace`.
    pub ns: String,
    /// The ServiceAccount (in [`World::ns`]) whose token plexus's kubeconfig carries.
    pub service_account: String,
    /// plexus's user name on the API server: `system:serviceaccount:<ns>:<service_account>`.
    pub plexus_user: String,
    /// The ClusterRole that ServiceAccount is bound to (deploy's, unless [`World::with_cluster_role`]).
    pub cluster_role: String,
    /// Daemon mode: the socket of the last daemon the world started, kept when a test takes
    /// [`World::daemon`] out to kill and restart it, so the waits still find the daemon ([`World::daemon_socket`]).
    daemon_socket: Option<PathBuf>,
    dir: TempDir,
}

impl World {
    /// Set up everything for test `test`, running `plexus` (the binary under test) with the credentials
    /// of a ServiceAccount bound to deploy's ClusterRole.
    pub fn new(test: &str, plexus: &Path) -> World {
        Self::with_cluster_role(test, plexus, None)
    }

    /// [`World::new`], with plexus's ServiceAccount bound to a copy of `role` (named
    /// `<namespace>-<role's name>`, deleted with the world) instead of deploy's ClusterRole when given.
    pub fn with_cluster_role(test: &str, plexus: &Path, role: Option<&ClusterRole>) -> World {
        Self::build(test, plexus, role, daemon_mode())
    }

    /// [`World::new`] in thin mode whatever `E2E_MODE` says (what only thin mode has: the installer's host
    /// kubeconfig).
    pub fn thin(test: &str, plexus: &Path) -> World {
        Self::build(test, plexus, None, false)
    }

    /// [`World::new`] in daemon mode whatever `E2E_MODE` says (the daemon's own scenarios).
    pub fn with_daemon(test: &str, plexus: &Path) -> World {
        Self::build(test, plexus, None, true)
    }

    fn build(test: &str, plexus: &Path, role: Option<&ClusterRole>, daemon: bool) -> World {
        require_environment();
        let mut cluster = Cluster::start();
        let ns = cluster.create_namespace("");
        let host = netns("host");
        host.add_veth_pair(MASTER, MASTER_PEER);
        let dir = tempfile::Builder::new()
            .prefix("plexus-e2e-")
            .tempdir()
            .expect("tempdir");

        // plexus's identity: a ServiceAccount bound to the ClusterRole, and a token of it.
        let cluster_role = match role {
            None => cluster.hold_deploy_cluster_role(),
            Some(r) => {
                let name = format!("{ns}-{}", r.metadata.name.as_deref().unwrap_or("role"));
                cluster.create_cluster_role(&rbac::renamed(r, &name))
            }
        };
        let service_account = rbac::deploy_service_account_name();
        cluster.create_service_account(&ns, &service_account);
        cluster.bind_cluster_role(&ns, &cluster_role, &ns, &service_account);
        if daemon {
            // The daemon also lists and watches pods and NADs: deploy/daemon's extra ClusterRole.
            let extra = rbac::renamed(
                &rbac::daemon_cluster_role(),
                &format!("{ns}-{}", rbac::daemon_cluster_role_name()),
            );
            let extra = cluster.create_cluster_role(&extra);
            cluster.bind_cluster_role(&format!("{ns}-daemon"), &extra, &ns, &service_account);
        }
        let token = cluster.request_token(&ns, &service_account, rbac::TOKEN_SECONDS);
        let plexus_user = format!("system:serviceaccount:{ns}:{service_account}");

        // plexus's kubeconfig: the server's cluster with only that token, through the forwarder in the
        // host namespace.
        let original = kubeconfig::read(cluster.kubeconfig()).expect("read the kubeconfig");
        let direct = kubeconfig::with_token(&original, cluster.kubeconfig(), &token, &plexus_user)
            .expect("the ServiceAccount's kubeconfig");
        let direct_path = dir.path().join("serviceaccount.kubeconfig");
        kubeconfig::write(&direct_path, &direct).expect("write the ServiceAccount's kubeconfig");
        cluster.wait_authorized(&direct_path, &ns);
        let upstream = kubeconfig::endpoint(&original)
            .and_then(|ep| ep.resolve())
            .expect("the API server's address");
        let fwd = Forwarder::start(&host.path(), upstream).expect("start the API forwarder");
        let forwarded = kubeconfig::forwarded(&direct, &direct_path, fwd.port())
            .expect("rewrite the kubeconfig");

        let mut w = World {
            daemon: None,
            test: test.to_string(),
            fwd,
            host,
            cluster,
            ns,
            service_account,
            plexus_user,
            cluster_role,
            daemon_socket: None,
            dir,
        };
        for d in [
            w.conf_dir(),
            w.cni_dir(),
            w.ipam_dir(),
            w.tuning_dir(),
            w.runtime_cache(),
        ] {
            fs::create_dir_all(d).expect("create dirs");
        }
        kubeconfig::write(&w.kubeconfig(), &forwarded).expect("write plexus's kubeconfig");
        write_plexus_wrapper(&w.bin_dir(), &w.host.name, plexus);
        w.write("cluster.conflist", &w.cluster_conflist());
        if daemon {
            let shim = w.bin_dir().join("plexus-shim");
            std::os::unix::fs::symlink(shim_binary(plexus), &shim).expect("link the shim");
            let d = DaemonProcess::start(
                plexus,
                &w.host.name,
                &w.daemon_config(),
                &w.root().join("daemon.json"),
            );
            w.daemon_socket = Some(d.socket().to_path_buf());
            w.daemon = Some(d);
        }
        w
    }

    /// Daemon mode: stop this world's daemon and start `plexus`'s with `config` (usually
    /// [`World::daemon_config`] with a key changed), seeing the filesystem as `view` says; wait until ready.
    pub fn restart_daemon(&mut self, plexus: &Path, config: &Value, view: DaemonView) {
        if let Some(mut old) = self.daemon.take() {
            old.stop();
        }
        let d = DaemonProcess::start_in(
            plexus,
            &self.host.name,
            config,
            &self.root().join("daemon.json"),
            view,
        );
        self.daemon_socket = Some(d.socket().to_path_buf());
        self.daemon = Some(d);
    }

    /// Daemon mode: the socket of the world's daemon, also while a test holds the daemon itself (taken out
    /// of [`World::daemon`] to kill or restart it). `None` in thin mode.
    pub fn daemon_socket(&self) -> Option<&Path> {
        match &self.daemon {
            Some(d) => Some(d.socket()),
            None => self.daemon_socket.as_deref(),
        }
    }

    /// The daemon config of daemon mode: this world's socket, kubeconfig and log, the suite's node.
    pub fn daemon_config(&self) -> Value {
        json!({
            "nodeName": NO_SUCH_NODE,
            "kubeconfig": self.kubeconfig(),
            "socketDir": self.socket_dir(),
            "metricsAddress": "",
            "logLevel": "debug",
            "logFile": self.daemon_log_file(),
            "logToStderr": false,
            "cacheSyncTimeoutSeconds": 20,
            "shutdownTimeoutSeconds": 20,
        })
    }

    /// Daemon mode: the daemon's socket directory.
    pub fn socket_dir(&self) -> PathBuf {
        self.root().join("run")
    }

    /// Daemon mode: the daemon's log file.
    pub fn daemon_log_file(&self) -> PathBuf {
        self.root().join("daemon.log")
    }

    // === Paths ===

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
    /// Every host-local `dataDir`.
    pub fn ipam_dir(&self) -> PathBuf {
        self.root().join("ipam")
    }
    /// tuning's `dataDir`.
    pub fn tuning_dir(&self) -> PathBuf {
        self.root().join("tuning")
    }
    /// The runtime's plugin directory (holds the `plexus` wrapper).
    pub fn bin_dir(&self) -> PathBuf {
        self.root().join("bin")
    }
    /// The runtime's libcni cache.
    pub fn runtime_cache(&self) -> PathBuf {
        self.root().join("runtime-cache")
    }
    /// plexus's kubeconfig (through the forwarder).
    pub fn kubeconfig(&self) -> PathBuf {
        self.root().join("kubeconfig")
    }
    /// The cluster network's conflist file (`clusterNetwork`).
    pub fn cluster_file(&self) -> PathBuf {
        self.root().join("cluster.conflist")
    }
    /// plexus's log file.
    pub fn log_file(&self) -> PathBuf {
        self.root().join("plexus.log")
    }

    /// plexus's log so far (for failure messages).
    pub fn log(&self) -> String {
        let mut log = fs::read_to_string(self.log_file()).unwrap_or_default();
        if self.daemon_socket().is_some() {
            log.push_str("\n--- plexus daemon log ---\n");
            log.push_str(&fs::read_to_string(self.daemon_log_file()).unwrap_or_default());
        }
        log
    }

    /// Write `value` as JSON to `rel` under the temporary directory.
    pub fn write(&self, rel: &str, value: &Value) -> PathBuf {
        let p = self.root().join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(&p, serde_json::to_vec_pretty(value).expect("json")).expect("write");
        p
    }

    // === Network configs ===

    /// A host-local IPAM section on `subnet` with its reservations in the test's directory.
    pub fn ipam(&self, subnet: &str) -> Value {
        json!({"type": "host-local", "dataDir": self.ipam_dir(), "ranges": [[{"subnet": subnet}]]})
    }

    /// The cluster network: bridge + host-local, gateway on the bridge, default route, no masquerading.
    pub fn cluster_conflist(&self) -> Value {
        let mut ipam = self.ipam(CLUSTER_SUBNET);
        ipam["routes"] = json!([{"dst": "0.0.0.0/0"}]);
        json!({
            "cniVersion": "1.0.0",
            "name": CLUSTER_NETWORK,
            "plugins": [{
                "type": "bridge", "bridge": CLUSTER_BRIDGE, "isGateway": true, "ipMasq": false,
                "ipam": ipam,
            }],
        })
    }

    /// A macvlan network on the host namespace's master (no `name`: NADs get theirs injected, NPWG-11).
    pub fn macvlan(&self, subnet: &str) -> Value {
        json!({"cniVersion": "1.0.0", "type": "macvlan", "master": MASTER, "mode": "bridge",
               "ipam": self.ipam(subnet)})
    }

    /// A bridge network on bridge `bridge` (created in the host namespace), no gateway.
    pub fn bridge(&self, bridge: &str, subnet: &str) -> Value {
        json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": bridge, "ipMasq": false,
               "ipam": self.ipam(subnet)})
    }

    /// Create NetworkAttachmentDefinition `name` in the test's namespace.
    pub fn nad(&self, name: &str, config: &Value) {
        self.cluster.create_nad(&self.ns, name, Some(config));
    }

    // === The runtime ===

    /// plexus's entry in the node's conflist: the test's directories and API settings, with `extra`
    /// merged on top. It declares `portMappings`, so the runtime passes those on (CNI-58).
    pub fn plexus_plugin(&self, extra: Value) -> Value {
        let mut p = json!({
            "type": "plexus",
            "kubeconfig": self.kubeconfig(),
            "clusterNetwork": self.cluster_file(),
            "confDir": self.conf_dir(),
            "cniDir": self.cni_dir(),
            "binDir": CNI_BIN,
            "multusNamespace": self.ns,
            "apiTimeoutSeconds": 5,
            "apiBudgetSeconds": 15,
            "delegateTimeoutSeconds": 60,
            "lockTimeoutSeconds": 30,
            "logLevel": "debug",
            "logFile": self.log_file(),
            "logToStderr": false,
            "capabilities": {"portMappings": true},
        });
        if self.daemon.is_some() {
            // The shim's config: the same keys (its DEL fallback runs the thin plexus with them).
            p["type"] = json!("plexus-shim");
            p["daemonSocketDir"] = json!(self.socket_dir());
            p["daemonWaitSeconds"] = json!(20);
            p["thinBinary"] = json!(self.bin_dir().join("plexus"));
        }
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                p[&k] = v;
            }
        }
        p
    }

    /// The runtime with `{"name":"k8s-pod-network","plugins":[plexus, …chained]}`.
    pub fn runtime_with(&self, plexus_extra: Value, chained: Vec<Value>) -> CniRuntime {
        let mut plugins = vec![self.plexus_plugin(plexus_extra)];
        plugins.extend(chained);
        let list = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": plugins});
        CniRuntime::new(
            &list,
            &self.host.path(),
            &self.bin_dir(),
            &self.runtime_cache(),
        )
    }

    /// The runtime with plexus alone and `plexus_extra` config keys.
    pub fn runtime(&self, plexus_extra: Value) -> CniRuntime {
        self.runtime_with(plexus_extra, Vec::new())
    }

    /// Create pod `name` with `annotations` in the test's namespace, and its sandbox.
    pub fn sandbox(&self, name: &str, annotations: &[(&str, &str)]) -> Sandbox {
        self.sandbox_in(&self.ns, name, annotations)
    }

    /// Create pod `ns/name` with `annotations`, and its sandbox.
    pub fn sandbox_in(&self, ns: &str, name: &str, annotations: &[(&str, &str)]) -> Sandbox {
        let pod = self.cluster.create_pod(ns, name, annotations);
        Sandbox {
            cid: format!("{name}-{}", random_hex()),
            netns: netns("pod"),
            pod,
        }
    }

    /// The runtime's attachment parameters for `sb` (no host ports).
    pub fn rt(&self, sb: &Sandbox) -> RuntimeConf {
        pod_runtime_conf(&sb.pod, &sb.cid, &sb.path(), Vec::new())
    }

    /// ADD, which must succeed; returns the runtime's result.
    pub fn add_ok(&self, rt: &CniRuntime, sb: &Sandbox) -> Value {
        rt.add(&self.rt(sb)).unwrap_or_else(|e| {
            panic!(
                "{}: ADD failed: {e}\nplexus log:\n{}",
                self.test,
                self.log()
            )
        })
    }

    /// CHECK, which must succeed.
    pub fn check_ok(&self, rt: &CniRuntime, sb: &Sandbox) {
        rt.check(&self.rt(sb)).unwrap_or_else(|e| {
            panic!(
                "{}: CHECK failed: {e}\nplexus log:\n{}",
                self.test,
                self.log()
            )
        })
    }

    /// DEL, which must succeed.
    pub fn del_ok(&self, rt: &CniRuntime, sb: &Sandbox) {
        rt.del(&self.rt(sb)).unwrap_or_else(|e| {
            panic!(
                "{}: DEL failed: {e}\nplexus log:\n{}",
                self.test,
                self.log()
            )
        })
    }

    /// ADD, which must fail; returns the failure.
    pub fn add_fails(&self, rt: &CniRuntime, sb: &Sandbox) -> CniFailure {
        match rt.add(&self.rt(sb)) {
            Ok(r) => panic!(
                "{}: ADD succeeded but should fail: {r:#}\nplexus log:\n{}",
                self.test,
                self.log()
            ),
            Err(e) => e,
        }
    }

    // === What the pod and the API show ===

    /// Daemon mode: wait until the daemon's network-status writes after its replies have ended (at most
    /// 20 s), so the annotation says what the last ADD did. Thin mode writes it before ADD's reply.
    pub fn wait_status_writes(&self) {
        if let Some(socket) = self.daemon_socket()
            && let Err(e) = daemon::wait_status_writes(socket, Duration::from_secs(20))
        {
            panic!("{}: {e}", self.test);
        }
    }

    /// Daemon mode: wait until the work the daemon left for after its replies has ended (at most 20 s): a
    /// DEL's files wait in `<cniDir>/.trash` until then. Thin mode does it all before the reply.
    pub fn wait_after_reply(&self) {
        // By the socket, not the handle: a test that took the daemon out (to kill and restart it) still
        // checks for leaks, and a DEL's files stay in the trash until this work ends.
        if let Some(socket) = self.daemon_socket()
            && let Err(e) = daemon::wait_after_reply(socket, Duration::from_secs(20))
        {
            panic!("{}: {e}", self.test);
        }
    }

    /// The pod's network-status annotation: parsed with plexus's parser, and raw.
    pub fn network_status(&self, sb: &Sandbox) -> (Vec<status::NetworkStatus>, Vec<Value>) {
        self.wait_status_writes();
        let text = self
            .cluster
            .pod_annotation(&sb.pod.namespace, &sb.pod.name, NETWORK_STATUS_ANNOTATION)
            .unwrap_or_else(|| {
                panic!(
                    "{}: pod {}/{} has no {NETWORK_STATUS_ANNOTATION} annotation\nplexus log:\n{}",
                    self.test,
                    sb.pod.namespace,
                    sb.pod.name,
                    self.log()
                )
            });
        let parsed = status::parse(&text)
            .unwrap_or_else(|e| panic!("network-status does not parse ({e}): {text}"));
        let raw: Vec<Value> = serde_json::from_str(&text).expect("network-status is JSON");
        (parsed, raw)
    }

    /// Check the network-status annotation against `expected` `(name, interface, default)` entries in
    /// order, and every entry against the pod's namespace: its `ips` are exactly the interface's
    /// addresses, its `mac` the interface's MAC; `dns` is present; at most one entry is the default
    /// (NPWG-41, NPWG-44, NPWG-46..NPWG-51). Returns the entries.
    pub fn assert_status(
        &self,
        sb: &Sandbox,
        expected: &[(&str, &str, bool)],
    ) -> Vec<status::NetworkStatus> {
        let (entries, raw) = self.network_status(sb);
        let got: Vec<(&str, &str, bool)> = entries
            .iter()
            .map(|e| (e.name.as_str(), e.interface.as_str(), e.default))
            .collect();
        assert_eq!(got, expected, "{}: network-status {raw:#?}", self.test);
        let addrs = sb.netns.addresses();
        for (e, r) in entries.iter().zip(&raw) {
            let mut want: Vec<String> = addrs
                .get(&e.interface)
                .map(|v| v.iter().map(|a| a.addr().to_string()).collect())
                .unwrap_or_default();
            want.sort();
            let mut ips = e.ips.clone();
            ips.sort();
            assert_eq!(
                ips, want,
                "{}: status ips of {} vs the pod's addresses",
                self.test, e.interface
            );
            let mac = sb.netns.mac(&e.interface).unwrap_or_default();
            assert!(
                e.mac.eq_ignore_ascii_case(&mac),
                "{}: status mac {} of {} vs the pod's {mac}",
                self.test,
                e.mac,
                e.interface
            );
            assert!(
                r.get("dns").is_some_and(Value::is_object),
                "{}: entry without dns: {r}",
                self.test
            );
        }
        assert!(
            entries.iter().filter(|e| e.default).count() <= 1,
            "{}: more than one default entry",
            self.test
        );
        entries
    }

    /// The pod has no network-status annotation (nothing was attached).
    pub fn assert_no_status(&self, sb: &Sandbox) {
        self.wait_status_writes();
        let v =
            self.cluster
                .pod_annotation(&sb.pod.namespace, &sb.pod.name, NETWORK_STATUS_ANNOTATION);
        assert_eq!(v, None, "{}: network-status after a failed ADD", self.test);
    }

    /// A failed ADD of `sb` was refused because NAD `nad` (`namespace/name`) names `plugin`, which is not
    /// installed: code 7 naming the pod, the NAD and the plugin, and a `NoPluginFound` Warning event on the
    /// pod naming the NAD and the plugin.
    pub fn assert_plugin_missing(&self, err: &CniFailure, sb: &Sandbox, nad: &str, plugin: &str) {
        assert_eq!(err.code, Some(7), "{err}");
        let text = err.text();
        for part in [
            format!("{}/{}", sb.pod.namespace, sb.pod.name),
            nad.to_string(),
            format!("\"{plugin}\""),
        ] {
            assert!(text.contains(&part), "names {part}: {err}");
        }
        let warnings = self.warnings(sb);
        assert!(
            warnings
                .iter()
                .any(|(reason, msg)| reason == "NoPluginFound"
                    && msg.contains(nad)
                    && msg.contains(plugin)),
            "{warnings:?}"
        );
    }

    /// The pod's Warning events as `(reason, message)`. plexus sends events after its reply, from a
    /// detached process, so this waits (up to 10 s) for the first one to arrive.
    pub fn warnings(&self, sb: &Sandbox) -> Vec<(String, String)> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let found: Vec<(String, String)> = self
                .cluster
                .pod_events(&sb.pod.namespace, &sb.pod.name)
                .into_iter()
                .filter(|e: &Event| e.type_.as_deref() == Some("Warning"))
                .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
                .collect();
            if !found.is_empty() || std::time::Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The NAT rules in the host namespace (`iptables -t nat -S`).
    pub fn host_nat_rules(&self) -> String {
        self.host.exec(
            &["iptables", "-w", "5", "-t", "nat", "-S"],
            Duration::from_secs(30),
        )
    }

    // === Leaks ===

    /// Every host-local reservation in the test's data directories.
    pub fn reservations(&self) -> Vec<Reservation> {
        reservations(&self.ipam_dir())
    }

    /// What is left on disk for container `cid`: plexus's cache and lock file, its delegates' and the
    /// runtime's result-cache entries, tuning backups, and (once a daemon's work after its replies ended)
    /// anything of it still in the trash.
    pub fn leftovers(&self, cid: &str) -> Vec<PathBuf> {
        self.wait_after_reply();
        // The entries of `dir` itself (files or directories) whose names contain the container id.
        let naming = |dir: PathBuf| -> Vec<PathBuf> {
            let Ok(rd) = fs::read_dir(dir) else {
                return Vec::new();
            };
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().contains(cid))
                .map(|e| e.path())
                .collect()
        };
        let mut out = plexus_files(&self.cni_dir(), cid);
        // A daemon DEL's files until its work after the reply unlinked them.
        out.extend(naming(self.cni_dir().join(".trash")));
        out.extend(results_for(&self.runtime_cache(), cid));
        out.extend(naming(self.tuning_dir()));
        out
    }

    /// Nothing of `sb`'s networks remains: the pod namespace has only `lo`, no host-local reservation
    /// exists, nothing is on disk for the container, and the host namespace has no veth but the macvlan
    /// master's pair (bridge host ends are gone).
    pub fn assert_clean(&self, sb: &Sandbox) {
        let log = || format!("\nplexus log:\n{}", self.log());
        assert_eq!(
            sb.netns.link_names(),
            ["lo"],
            "{}: pod netns links{}",
            self.test,
            log()
        );
        assert_eq!(
            self.reservations(),
            [],
            "{}: host-local reservations left{}",
            self.test,
            log()
        );
        assert_eq!(
            self.leftovers(&sb.cid),
            Vec::<PathBuf>::new(),
            "{}: files left for {}{}",
            self.test,
            sb.cid,
            log()
        );
        assert_eq!(
            self.host
                .settled_veths(&[MASTER, MASTER_PEER], Duration::from_secs(10)),
            [MASTER, MASTER_PEER],
            "{}: host netns veths{}",
            self.test,
            log()
        );
    }
}
