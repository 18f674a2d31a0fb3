//! The API server the bench runs against.
//!
//! - **Stand-in** (default): the in-process [`ApiServer`], its listening socket made *inside the bench's
//!   host network namespace* (the server is started from a thread that entered it), so plexus reaches it
//!   on that namespace's loopback directly — no forwarder between them, as with an API server on a
//!   node's loopback. The bench creates its objects in the server's store directly and reads the server's
//!   request log to count plexus's requests.
//! - **Real** (`E2E_KUBECONFIG`): the harness's [`Cluster`] creates the objects through the API; plexus
//!   reaches the server through [`Forwarder`] (plexus-testsupport's, the suite's too), a TCP forwarder
//!   whose listening socket lives in the host namespace. Requests are not counted (TLS passes through
//!   untouched); the forwarder counts connections.
//!
//! Either way plexus runs as it is deployed: with a token (TokenRequest API) of `deploy/`'s
//! ServiceAccount bound to `deploy/`'s ClusterRole, never with the bench's own admin credentials.

use std::path::{Path, PathBuf};

use plexus_e2e::{
    apiserver::{ApiServer, Config as StandinConfig, FaultSpec, RequestRecord},
    harness::{
        cluster::{Cluster, NO_SUCH_NODE, PodInfo},
        kubeconfig, rbac,
    },
};
use plexus_testsupport::forward::Forwarder;
use serde_json::{Value, json};

/// The API server and what plexus needs to reach it.
pub enum Api {
    /// The stand-in, listening in the host namespace.
    Standin {
        /// The server (taken on drop to shut it down).
        server: Option<ApiServer>,
        /// Its runtime.
        rt: tokio::runtime::Runtime,
        /// The admin kubeconfig it wrote.
        admin: PathBuf,
    },
    /// A real server.
    Real {
        /// The objects the bench made there.
        cluster: Box<Cluster>,
        /// plexus's way to it.
        fwd: Forwarder,
    },
}

/// How long plexus's token is valid (the bench refreshes nothing).
const TOKEN_SECONDS: i64 = 4 * 3600;

impl Api {
    /// Start the stand-in in `host` (its admin kubeconfig written to `admin_kubeconfig`), or connect to
    /// `E2E_KUBECONFIG`'s server.
    pub fn start(host: &Path, admin_kubeconfig: &Path) -> Result<Api, String> {
        if plexus_e2e::harness::cluster::real_server_kubeconfig().is_some() {
            let cluster = Cluster::start();
            let original = kubeconfig::read(cluster.kubeconfig())?;
            let upstream = kubeconfig::endpoint(&original).and_then(|ep| ep.resolve())?;
            let fwd = Forwarder::start(host, upstream).map_err(|e| format!("forwarder: {e}"))?;
            return Ok(Api::Real {
                cluster: Box::new(cluster),
                fwd,
            });
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let handle = rt.handle().clone();
        let config = StandinConfig {
            kubeconfig: Some(admin_kubeconfig.to_path_buf()),
            nad_crd: true,
            ..StandinConfig::default()
        };
        // Bound on a thread inside the host namespace: the socket belongs there; accepting and serving
        // then run on the runtime's workers.
        let server = plexus_netns::run_in_netns(host, move || {
            handle
                .block_on(ApiServer::start(config))
                .map_err(|e| e.to_string())
        })
        .map_err(|e| format!("start the stand-in in the host netns: {e}"))?
        .map_err(|e| format!("start the stand-in: {e}"))?;
        Ok(Api::Standin {
            server: Some(server),
            rt,
            admin: admin_kubeconfig.to_path_buf(),
        })
    }

    /// plexus's identity as `deploy/` defines it — ServiceAccount `plexus` in `ns` bound to the
    /// ClusterRole, and with `daemon` also to deploy/daemon's extra ClusterRole (list and watch pods and
    /// NADs) — and a kubeconfig at `path` with only a token of it, reaching the server from `host`.
    /// Returns the ServiceAccount's user name.
    pub fn plexus_kubeconfig(
        &mut self,
        host: &Path,
        ns: &str,
        path: &Path,
        daemon: bool,
    ) -> Result<String, String> {
        let sa = rbac::deploy_service_account_name();
        let user = format!("system:serviceaccount:{ns}:{sa}");
        let binding_name = format!("{ns}-plexus-bench");
        let write = |kc: &Value| {
            kubeconfig::write(path, kc).map_err(|e| format!("write {}: {e}", path.display()))
        };
        match self {
            Api::Standin { server, admin, .. } => {
                let s = server.as_ref().ok_or("stand-in stopped")?;
                let mut account = rbac::deploy_service_account();
                account.metadata.namespace = Some(ns.to_string());
                account.metadata.name = Some(sa.clone());
                s.create(json(&account))
                    .map_err(|e| format!("create serviceaccount {ns}/{sa}: {e}"))?;
                // A ClusterRole (shared by the bench's namespaces: it may exist already), bound to the account.
                let grant = |role: Value, role_name: String, binding_name: String| {
                    match s.create(role) {
                        Err(e) if e.reason != "AlreadyExists" => {
                            return Err(format!("create ClusterRole {role_name}: {e}"));
                        }
                        _ => {}
                    }
                    s.create(json(&rbac::binding(&binding_name, &role_name, ns, &sa)))
                        .map(|_| ())
                        .map_err(|e| format!("create ClusterRoleBinding {binding_name}: {e}"))
                };
                grant(
                    json(&rbac::deploy_cluster_role()),
                    rbac::deploy_cluster_role_name(),
                    binding_name.clone(),
                )?;
                if daemon {
                    grant(
                        json(&rbac::daemon_cluster_role()),
                        rbac::daemon_cluster_role_name(),
                        format!("{binding_name}-daemon"),
                    )?;
                }
                // TokenRequest over HTTPS, from inside the host namespace where the server listens.
                let client = s.client();
                let token_path = format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token");
                let body = serde_json::json!({
                    "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                    "spec": {"expirationSeconds": TOKEN_SECONDS},
                });
                let reply = plexus_netns::run_in_netns(host, move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?
                        .block_on(client.post(&token_path, &body))
                        .map_err(|e| e.to_string())
                })
                .map_err(|e| format!("host netns: {e}"))?
                .map_err(|e| format!("TokenRequest for {ns}/{sa}: {e}"))?;
                let token = reply.json()["status"]["token"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        format!("TokenRequest for {ns}/{sa}: no token in {}", reply.json())
                    })?
                    .to_string();
                let original = kubeconfig::read(admin)?;
                write(&kubeconfig::with_token(&original, admin, &token, &user)?)?;
            }
            Api::Real { cluster, fwd } => {
                let role = cluster.hold_deploy_cluster_role();
                cluster.create_service_account(ns, &sa);
                cluster.bind_cluster_role(&binding_name, &role, ns, &sa);
                if daemon {
                    let extra = rbac::renamed(
                        &rbac::daemon_cluster_role(),
                        &format!("{ns}-{}", rbac::daemon_cluster_role_name()),
                    );
                    let extra = cluster.create_cluster_role(&extra);
                    cluster.bind_cluster_role(&format!("{binding_name}-daemon"), &extra, ns, &sa);
                }
                let token = cluster.request_token(ns, &sa, TOKEN_SECONDS);
                let original = kubeconfig::read(cluster.kubeconfig())?;
                let direct =
                    kubeconfig::with_token(&original, cluster.kubeconfig(), &token, &user)?;
                write(&direct)?;
                cluster.wait_authorized(path, ns);
                write(&kubeconfig::forwarded(&direct, path, fwd.port())?)?;
            }
        }
        Ok(user)
    }

    /// The stand-in, if that is the server.
    pub fn standin(&self) -> Option<&ApiServer> {
        match self {
            Api::Standin { server, .. } => server.as_ref(),
            Api::Real { .. } => None,
        }
    }

    /// A short description.
    pub fn describe(&self) -> String {
        match self {
            Api::Standin { server, .. } => format!(
                "the in-process API stand-in, on loopback inside the host netns ({})",
                server.as_ref().map(|s| s.url()).unwrap_or_default()
            ),
            Api::Real { cluster, .. } => format!(
                "a real API server (E2E_KUBECONFIG={}), through a TCP forwarder",
                cluster.kubeconfig().display()
            ),
        }
    }

    /// Create namespace `name` (stand-in) or `plexus-e2e-<random>-<name>` (real); returns its name.
    pub fn create_namespace(&mut self, name: &str) -> Result<String, String> {
        match self {
            Api::Standin { server, .. } => {
                let s = server.as_ref().ok_or("stand-in stopped")?;
                s.create(
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
                )
                .map_err(|e| format!("create namespace {name}: {e}"))?;
                Ok(name.to_string())
            }
            Api::Real { cluster, .. } => Ok(cluster.create_namespace(name)),
        }
    }

    /// Create NAD `ns/name` with `config`.
    pub fn create_nad(&self, ns: &str, name: &str, config: &Value) -> Result<(), String> {
        match self {
            Api::Standin { server, .. } => {
                let s = server.as_ref().ok_or("stand-in stopped")?;
                s.create(json!({
                    "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"config": config.to_string()},
                }))
                .map(|_| ())
                .map_err(|e| format!("create NAD {ns}/{name}: {e}"))
            }
            Api::Real { cluster, .. } => {
                cluster.create_nad(ns, name, Some(config));
                Ok(())
            }
        }
    }

    /// Create pod `ns/name` annotated with `networks` (none when empty).
    pub fn create_pod(&self, ns: &str, name: &str, networks: &str) -> Result<PodInfo, String> {
        let annotations: Vec<(&str, &str)> = if networks.is_empty() {
            Vec::new()
        } else {
            vec![("k8s.v1.cni.cncf.io/networks", networks)]
        };
        match self {
            Api::Standin { server, .. } => {
                let s = server.as_ref().ok_or("stand-in stopped")?;
                let ann: serde_json::Map<String, Value> = annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                    .collect();
                let created = s
                    .create(json!({
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": name, "namespace": ns, "annotations": ann},
                        "spec": {
                            "nodeName": NO_SUCH_NODE,
                            "restartPolicy": "Never",
                            "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}],
                        },
                    }))
                    .map_err(|e| format!("create pod {ns}/{name}: {e}"))?;
                let uid = created["metadata"]["uid"]
                    .as_str()
                    .ok_or("the stand-in set no uid")?
                    .to_string();
                Ok(PodInfo {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    uid,
                })
            }
            Api::Real { cluster, .. } => Ok(cluster.create_pod(ns, name, &annotations)),
        }
    }

    /// Delete pod `ns/name` (stand-in only: the scale phase's set-up; a real server is not used there).
    pub fn delete_pod(&self, ns: &str, name: &str) -> Result<(), String> {
        let s = self.standin().ok_or("delete_pod: stand-in only")?;
        s.with_store(|st| {
            let rt = st.resolve("", "v1", "pods").ok_or("no pods type")?;
            st.delete(&rt, ns, name, None)
                .map(|_| ())
                .map_err(|e| format!("delete pod {ns}/{name}: {e}"))
        })
    }

    /// One annotation of pod `ns/name`.
    pub fn pod_annotation(&self, ns: &str, name: &str, key: &str) -> Option<String> {
        match self {
            Api::Standin { server, .. } => server
                .as_ref()?
                .get("v1", "Pod", ns, name)?
                .pointer(&format!(
                    "/metadata/annotations/{}",
                    key.replace('~', "~0").replace('/', "~1")
                ))?
                .as_str()
                .map(str::to_string),
            Api::Real { cluster, .. } => cluster.pod_annotation(ns, name, key),
        }
    }

    /// Set one annotation of pod `ns/name` with a merge patch of its metadata through the API, as a user
    /// (`kubectl annotate --overwrite`) would. The stand-in listens inside `host`, so its request is sent
    /// from a thread there.
    pub fn set_pod_annotation(
        &self,
        host: &Path,
        ns: &str,
        name: &str,
        key: &str,
        value: &str,
    ) -> Result<(), String> {
        match self {
            Api::Standin { server, .. } => {
                let client = server.as_ref().ok_or("stand-in stopped")?.client();
                let path = format!("/api/v1/namespaces/{ns}/pods/{name}");
                let body = json!({"metadata": {"annotations": {key: value}}});
                let reply = plexus_netns::run_in_netns(host, move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?
                        .block_on(client.patch(&path, "application/merge-patch+json", &body))
                        .map_err(|e| e.to_string())
                })
                .map_err(|e| format!("host netns: {e}"))?
                .map_err(|e| format!("patch pod {ns}/{name}: {e}"))?;
                if reply.status != 200 {
                    return Err(format!(
                        "patch pod {ns}/{name}: {} {}",
                        reply.status,
                        String::from_utf8_lossy(&reply.body)
                    ));
                }
                Ok(())
            }
            Api::Real { cluster, .. } => {
                cluster.set_pod_annotation(ns, name, key, value);
                Ok(())
            }
        }
    }

    /// Forget the request log (stand-in only).
    pub fn clear_requests(&self) {
        if let Some(s) = self.standin() {
            s.clear_requests();
        }
    }

    /// The request log (stand-in only).
    pub fn requests(&self) -> Option<Vec<RequestRecord>> {
        self.standin().map(ApiServer::requests)
    }

    /// Inject a fault (stand-in only); returns its id.
    pub fn inject(&self, spec: FaultSpec) -> Option<u64> {
        self.standin().map(|s| s.inject(spec))
    }

    /// Remove every fault (stand-in only).
    pub fn clear_faults(&self) {
        if let Some(s) = self.standin() {
            s.faults().clear();
        }
    }

    /// Connections the forwarder accepted (real server only).
    pub fn forwarded_connections(&self) -> Option<usize> {
        match self {
            Api::Real { fwd, .. } => Some(fwd.accepted()),
            Api::Standin { .. } => None,
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Api::Standin { server, rt, .. } = self
            && let Some(s) = server.take()
        {
            rt.block_on(s.shutdown());
        }
    }
}

/// A k8s-openapi object as JSON, for the stand-in's `create`.
fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}
