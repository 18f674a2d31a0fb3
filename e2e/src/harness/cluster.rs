//! The Kubernetes side of a test: which API server the suite runs against, and the objects a test makes
//! there (its namespaces, the NAD CRD, NADs, pods), all removed again when the fixture drops.
//!
//! **The mode is chosen here, in one place.** When `E2E_KUBECONFIG` names a kubeconfig, every test runs
//! against that server, unchanged; otherwise each test starts its own in-process stand-in
//! ([`crate::apiserver::ApiServer`]) on 127.0.0.1. Either way the test talks to the server only through
//! the Kubernetes API (kube-rs with the kubeconfig), so nothing depends on stand-in internals; only the
//! stand-in-only scenarios (fault injection, request counting) use [`Cluster::standin`].
//!
//! The test itself uses the kubeconfig's (admin) credentials; plexus does not. It gets a token of a
//! ServiceAccount in the test's namespace bound to `deploy/`'s ClusterRole (see [`crate::harness::rbac`]):
//! [`Cluster::hold_deploy_cluster_role`], [`Cluster::create_service_account`],
//! [`Cluster::bind_cluster_role`], [`Cluster::request_token`] (the TokenRequest API) and
//! [`Cluster::wait_authorized`] make that identity the same way on both servers.
//!
//! Everything made here is owned by the fixture: the ClusterRoleBindings and ClusterRoles it created,
//! pods deleted with a zero grace period (no kubelet will ever confirm them: they are bound to
//! [`NO_SUCH_NODE`]), then the namespaces (and with them the ServiceAccounts), then — when this suite
//! created them and no other test still uses them — deploy's ClusterRole and the
//! NetworkAttachmentDefinition CRD.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
    core::v1::{Event, Namespace, Node, Pod, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use kube::{
    Api, Client,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
        PostParams,
    },
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::{Value, json};
use tempfile::TempDir;

use super::rbac;
use crate::apiserver::{ApiServer, Config as StandinConfig};
use plexus_testsupport::proc::random_hex;

/// The environment variable naming a real API server's kubeconfig.
pub const KUBECONFIG_ENV: &str = "E2E_KUBECONFIG";
/// The node every test pod is bound to: it does not exist, so no scheduler or kubelet ever runs them.
pub const NO_SUCH_NODE: &str = "plexus-e2e-no-such-node";
/// The prefix of every namespace the suite creates.
pub const NAMESPACE_PREFIX: &str = "plexus-e2e-";
/// The NAD CRD as plexus ships it.
pub const NAD_CRD_YAML: &str = include_str!("../../../crds/network-attachment-definitions.yaml");
/// The CRD's name.
pub const NAD_CRD_NAME: &str = "network-attachment-definitions.k8s.cni.cncf.io";
/// Any single API call of the test itself gets at most this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for the CRD to be served, or the default ServiceAccount to appear.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The kubeconfig of a real API server, when the suite is to run against one.
pub fn real_server_kubeconfig() -> Option<PathBuf> {
    std::env::var_os(KUBECONFIG_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// For stand-in-only tests: `true` when running against the stand-in. Against a real server it prints
/// why `test` is skipped and returns `false`.
pub fn standin_only(test: &str, why: &str) -> bool {
    if let Some(kc) = real_server_kubeconfig() {
        eprintln!(
            "{test}: skipped (stand-in only: {why}); running against the real API server of {}",
            kc.display()
        );
        return false;
    }
    true
}

/// The API resource of NetworkAttachmentDefinitions.
pub fn nad_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition"),
        "network-attachment-definitions",
    )
}

fn crd_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    )
}

/// Whether `e` is an API error with HTTP status `code`.
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Per API server: how many fixtures hold the NAD CRD, and whether the suite created it.
static CRD_HOLDERS: Mutex<BTreeMap<String, (usize, bool)>> = Mutex::new(BTreeMap::new());
/// Per API server: how many fixtures hold deploy's ClusterRole, and whether the suite created it.
static ROLE_HOLDERS: Mutex<BTreeMap<String, (usize, bool)>> = Mutex::new(BTreeMap::new());

/// A kube client for the kubeconfig at `path`, with the suite's timeouts.
async fn client_for(path: &Path) -> Client {
    let kc = Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", path.display()));
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", path.display()));
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(20));
    Client::try_from(config).expect("API client")
}

/// A pod as the API server has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.uid` (what a runtime sends as `K8S_POD_UID`).
    pub uid: String,
}

/// The API server a test runs against, and the objects it made there.
pub struct Cluster {
    client: Client,
    server_key: String,
    holds_crd: bool,
    holds_role: bool,
    made: Mutex<Made>,
    standin: Option<ApiServer>,
    kubeconfig: PathBuf,
    _dir: Option<TempDir>,
    // Last: the runtime drives the stand-in and the client until everything above is gone.
    rt: tokio::runtime::Runtime,
}

#[derive(Default)]
struct Made {
    namespaces: Vec<String>,
    pods: Vec<(String, String)>,
    cluster_roles: Vec<String>,
    cluster_role_bindings: Vec<String>,
    nodes: Vec<String>,
}

impl Cluster {
    /// Connect to the server `E2E_KUBECONFIG` names, or start a fresh stand-in.
    pub fn start() -> Cluster {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let (standin, kubeconfig, dir) = match real_server_kubeconfig() {
            Some(path) => (None, path, None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("plexus-e2e-standin-")
                    .tempdir()
                    .expect("tempdir");
                let path = dir.path().join("kubeconfig");
                let server = rt
                    .block_on(ApiServer::start(StandinConfig {
                        kubeconfig: Some(path.clone()),
                        ..StandinConfig::default()
                    }))
                    .expect("start the API stand-in");
                (Some(server), path, Some(dir))
            }
        };
        let client = rt.block_on(client_for(&kubeconfig));
        // One CRD holder count per server: the real server's kubeconfig, or this stand-in's own.
        let server_key = kubeconfig.display().to_string();
        Cluster {
            client,
            server_key,
            holds_crd: false,
            holds_role: false,
            made: Mutex::default(),
            standin,
            kubeconfig,
            _dir: dir,
            rt,
        }
    }

    /// The stand-in, when the suite runs against it (`None` against a real server).
    pub fn standin(&self) -> Option<&ApiServer> {
        self.standin.as_ref()
    }

    /// For the part of `test` that needs the stand-in (`what`: counting its requests, say) while the rest runs
    /// against any server: the stand-in, or, against a real server, `None` after saying which part is left
    /// out there. (A test that needs the stand-in throughout returns at [`standin_only`].)
    pub fn standin_part(&self, test: &str, what: &str) -> Option<&ApiServer> {
        if self.standin.is_none() {
            eprintln!("{test}: against a real API server, without the stand-in-only part: {what}");
        }
        self.standin.as_ref()
    }

    /// Whether this is a real API server.
    pub fn is_real(&self) -> bool {
        self.standin.is_none()
    }

    /// The server's kubeconfig (for the test's own access; plexus gets a forwarded copy).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Run `f` to completion within the suite's per-call time limit.
    pub fn block<T>(&self, what: &str, f: impl Future<Output = T>) -> T {
        self.rt
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, f).await })
            .unwrap_or_else(|_| panic!("{what}: no answer from the API within {CALL_TIMEOUT:?}"))
    }

    /// Create a namespace `plexus-e2e-<random>[-<suffix>]` (with its `default` ServiceAccount), owned by
    /// the fixture. The first call also makes sure the NAD CRD is installed and served.
    pub fn create_namespace(&mut self, suffix: &str) -> String {
        let mut name = format!("{NAMESPACE_PREFIX}{}", &random_hex()[..10]);
        if !suffix.is_empty() {
            name = format!("{name}-{suffix}");
        }
        let nss: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/created-by": "plexus-e2e"}},
        }))
        .expect("namespace object");
        self.block("create namespace", nss.create(&PostParams::default(), &ns))
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        self.made
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .namespaces
            .push(name.clone());
        self.ensure_default_service_account(&name);
        if !self.holds_crd {
            self.hold_nad_crd();
            self.holds_crd = true;
        }
        self.wait_nads_served(&name);
        name
    }

    /// Pods need the namespace's `default` ServiceAccount; a server without controllers (the stand-in
    /// makes it itself, a bare apiserver does not) gets it from us.
    fn ensure_default_service_account(&self, ns: &str) {
        let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        match self.block("get serviceaccount", sas.get_opt("default")) {
            Ok(Some(_)) => {}
            Ok(None) => {
                let sa: ServiceAccount = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"},
                }))
                .expect("serviceaccount object");
                match self.block(
                    "create serviceaccount",
                    sas.create(&PostParams::default(), &sa),
                ) {
                    Ok(_) => {}
                    Err(e) if is_status(&e, 409) => {} // the controller was quicker
                    Err(e) => panic!("create serviceaccount {ns}/default: {e}"),
                }
            }
            Err(e) => panic!("get serviceaccount {ns}/default: {e}"),
        }
    }

    /// Install the NAD CRD from `crds/` through the API unless it exists; count this fixture as a holder.
    fn hold_nad_crd(&self) {
        let mut holders = CRD_HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        let entry = holders.entry(self.server_key.clone()).or_insert((0, false));
        if entry.0 == 0 {
            let crds: Api<DynamicObject> = Api::all_with(self.client.clone(), &crd_resource());
            let exists = self
                .block("get CRD", crds.get_opt(NAD_CRD_NAME))
                .unwrap_or_else(|e| panic!("get CRD {NAD_CRD_NAME}: {e}"))
                .is_some();
            if !exists {
                let obj: Value = serde_saphyr::from_str(NAD_CRD_YAML).expect("crds/ YAML parses");
                let obj: DynamicObject = serde_json::from_value(obj).expect("CRD object");
                match self.block("create CRD", crds.create(&PostParams::default(), &obj)) {
                    Ok(_) => entry.1 = true,
                    Err(e) if is_status(&e, 409) => {}
                    Err(e) => panic!("create CRD {NAD_CRD_NAME}: {e}"),
                }
            }
        }
        entry.0 += 1;
    }

    /// Wait until NADs are served in `ns` (a fresh CRD takes a moment on a real server).
    fn wait_nads_served(&self, ns: &str) {
        let nads: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), ns, &nad_resource());
        let started = Instant::now();
        loop {
            match self.block("list NADs", nads.list(&ListParams::default().limit(1))) {
                Ok(_) => return,
                Err(_) if started.elapsed() < SETTLE_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => {
                    panic!("NetworkAttachmentDefinitions not served after {SETTLE_TIMEOUT:?}: {e}")
                }
            }
        }
    }

    /// Create NetworkAttachmentDefinition `ns/name` whose `spec.config` is `config` (JSON text);
    /// `None` makes a NAD with an empty spec.
    pub fn create_nad(&self, ns: &str, name: &str, config: Option<&Value>) {
        let mut spec = json!({});
        if let Some(c) = config {
            spec["config"] = Value::String(c.to_string());
        }
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }))
        .expect("NAD object");
        let nads: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), ns, &nad_resource());
        self.block("create NAD", nads.create(&PostParams::default(), &obj))
            .unwrap_or_else(|e| panic!("create NAD {ns}/{name}: {e}"));
    }

    /// Replace the `spec.config` of NAD `ns/name` with `config` (a JSON merge patch).
    pub fn set_nad_config(&self, ns: &str, name: &str, config: &Value) {
        let nads: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), ns, &nad_resource());
        let patch = json!({"spec": {"config": config.to_string()}});
        self.block(
            "patch NAD",
            nads.patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .unwrap_or_else(|e| panic!("patch NAD {ns}/{name}: {e}"));
    }

    /// Create pod `ns/name` with `annotations`, bound to [`NO_SUCH_NODE`] with one trivial container.
    pub fn create_pod(&self, ns: &str, name: &str, annotations: &[(&str, &str)]) -> PodInfo {
        self.create_pod_with_spec(ns, name, annotations, json!({}))
    }

    /// [`Cluster::create_pod`] with more `spec` fields (say `resourceClaims`: a pod's spec cannot
    /// change once created).
    pub fn create_pod_with_spec(
        &self,
        ns: &str,
        name: &str,
        annotations: &[(&str, &str)],
        more_spec: Value,
    ) -> PodInfo {
        let annotations: HashMap<&str, &str> = annotations.iter().copied().collect();
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": annotations,
                         "labels": {"app.kubernetes.io/created-by": "plexus-e2e"}},
            "spec": {
                "nodeName": NO_SUCH_NODE,
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 0,
                "automountServiceAccountToken": false,
                "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}],
            },
        });
        for (k, v) in more_spec.as_object().into_iter().flatten() {
            pod["spec"][k] = v.clone();
        }
        let pod: Pod = serde_json::from_value(pod).expect("pod object");
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let created = self
            .block("create pod", pods.create(&PostParams::default(), &pod))
            .unwrap_or_else(|e| panic!("create pod {ns}/{name}: {e}"));
        self.made
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pods
            .push((ns.to_string(), name.to_string()));
        PodInfo {
            namespace: ns.to_string(),
            name: name.to_string(),
            uid: created.metadata.uid.expect("the server sets metadata.uid"),
        }
    }

    /// Delete pod `ns/name` with a zero grace period (no kubelet will confirm it) and wait until the
    /// server no longer has it.
    pub fn delete_pod(&self, ns: &str, name: &str) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let zero = DeleteParams::background().grace_period(0);
        self.block("delete pod", pods.delete(name, &zero))
            .unwrap_or_else(|e| panic!("delete pod {ns}/{name}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.block("get pod", pods.get_opt(name)) {
                Ok(None) => return,
                _ if Instant::now() > deadline => panic!("pod {ns}/{name} still there after 30 s"),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Create Node `name`, owned by the fixture: an object to bind tokens to. No kubelet reports on it (on
    /// a real server the node controller marks it not ready); nothing is scheduled there. Returns its uid.
    pub fn create_node(&self, name: &str) -> String {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/created-by": "plexus-e2e"}},
        }))
        .expect("node object");
        let created = self
            .block("create node", nodes.create(&PostParams::default(), &node))
            .unwrap_or_else(|e| panic!("create node {name}: {e}"));
        self.made
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .nodes
            .push(name.to_string());
        created.metadata.uid.expect("the server sets metadata.uid")
    }

    /// Delete Node `name` and wait until the server no longer has it.
    pub fn delete_node(&self, name: &str) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        self.block(
            "delete node",
            nodes.delete(name, &DeleteParams::background()),
        )
        .unwrap_or_else(|e| panic!("delete node {name}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.block("get node", nodes.get_opt(name)) {
                Ok(None) => return,
                _ if Instant::now() > deadline => panic!("node {name} still there after 30 s"),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The pod as the server has it now.
    pub fn get_pod(&self, ns: &str, name: &str) -> Pod {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        self.block("get pod", pods.get(name))
            .unwrap_or_else(|e| panic!("get pod {ns}/{name}: {e}"))
    }

    /// Set annotation `key` of pod `ns/name` to `value` as a user would (`kubectl annotate --overwrite`): a
    /// merge patch of the pod's metadata.
    pub fn set_pod_annotation(&self, ns: &str, name: &str, key: &str, value: &str) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let patch = json!({"metadata": {"annotations": {key: value}}});
        self.block(
            "patch pod",
            pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .unwrap_or_else(|e| panic!("annotate pod {ns}/{name}: {e}"));
    }

    /// One annotation of the pod, if set.
    pub fn pod_annotation(&self, ns: &str, name: &str, key: &str) -> Option<String> {
        self.get_pod(ns, name)
            .metadata
            .annotations
            .and_then(|a| a.get(key).cloned())
    }

    /// The events about pod `ns/name` (core/v1), oldest first as listed.
    pub fn pod_events(&self, ns: &str, name: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), ns);
        let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
        self.block("list events", events.list(&lp))
            .unwrap_or_else(|e| panic!("list events of {ns}/{name}: {e}"))
            .items
    }

    // === plexus's identity ===

    /// deploy/clusterrole.yaml's ClusterRole on the server, by its name there (to bind to). It is created
    /// from the file unless it exists, and then deleted again when the last fixture holding it drops. A
    /// ClusterRole of that name the suite did not create is used only when its rules are the file's;
    /// otherwise (another plexus version is installed) this fixture gets its own copy of the file's role,
    /// `<name>-e2e-<random>`, so that what is tested is always the file.
    pub fn hold_deploy_cluster_role(&mut self) -> String {
        let role = rbac::deploy_cluster_role();
        let name = rbac::deploy_cluster_role_name();
        if self.holds_role {
            return name;
        }
        let roles: Api<ClusterRole> = Api::all(self.client.clone());
        let mut holders = ROLE_HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        let entry = holders.entry(self.server_key.clone()).or_insert((0, false));
        if entry.0 == 0 {
            let existing = self
                .block("get ClusterRole", roles.get_opt(&name))
                .unwrap_or_else(|e| panic!("get ClusterRole {name}: {e}"));
            match existing {
                Some(found) if found.rules != role.rules => {
                    eprintln!(
                        "the server's ClusterRole {name} has other rules than deploy/clusterrole.yaml; \
                         testing a copy of the file's"
                    );
                    drop(holders);
                    let copy = rbac::renamed(&role, &format!("{name}-e2e-{}", &random_hex()[..10]));
                    return self.create_cluster_role(&copy);
                }
                Some(_) => {}
                None => {
                    match self.block(
                        "create ClusterRole",
                        roles.create(&PostParams::default(), &role),
                    ) {
                        Ok(_) => entry.1 = true,
                        Err(e) if is_status(&e, 409) => {}
                        Err(e) => panic!("create ClusterRole {name}: {e}"),
                    }
                }
            }
        }
        entry.0 += 1;
        self.holds_role = true;
        name
    }

    /// Create ClusterRole `role` (named in its metadata), owned by the fixture; returns its name.
    pub fn create_cluster_role(&self, role: &ClusterRole) -> String {
        let name = role
            .metadata
            .name
            .clone()
            .expect("the ClusterRole has a name");
        let roles: Api<ClusterRole> = Api::all(self.client.clone());
        self.block(
            "create ClusterRole",
            roles.create(&PostParams::default(), role),
        )
        .unwrap_or_else(|e| panic!("create ClusterRole {name}: {e}"));
        self.made
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cluster_roles
            .push(name.clone());
        name
    }

    /// Create ServiceAccount `ns/name` (it goes with the namespace).
    pub fn create_service_account(&self, ns: &str, name: &str) {
        let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        let mut sa = rbac::deploy_service_account();
        sa.metadata = Default::default();
        sa.metadata.name = Some(name.to_string());
        sa.metadata.labels = rbac::deploy_service_account().metadata.labels;
        self.block(
            "create serviceaccount",
            sas.create(&PostParams::default(), &sa),
        )
        .unwrap_or_else(|e| panic!("create serviceaccount {ns}/{name}: {e}"));
    }

    /// Create ClusterRoleBinding `name` (deploy's, renamed) of ClusterRole `role` to ServiceAccount
    /// `sa_ns/sa`, owned by the fixture.
    pub fn bind_cluster_role(&self, name: &str, role: &str, sa_ns: &str, sa: &str) {
        let bindings: Api<ClusterRoleBinding> = Api::all(self.client.clone());
        let b = rbac::binding(name, role, sa_ns, sa);
        self.block(
            "create ClusterRoleBinding",
            bindings.create(&PostParams::default(), &b),
        )
        .unwrap_or_else(|e| panic!("create ClusterRoleBinding {name}: {e}"));
        self.made
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cluster_role_bindings
            .push(name.to_string());
    }

    /// A token of ServiceAccount `ns/sa` from the TokenRequest API, valid for `seconds`.
    pub fn request_token(&self, ns: &str, sa: &str, seconds: i64) -> String {
        let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(seconds),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let answer = self
            .block(
                "request a token",
                sas.create_token_request(sa, &PostParams::default(), &request),
            )
            .unwrap_or_else(|e| panic!("TokenRequest for serviceaccount {ns}/{sa}: {e}"));
        answer
            .status
            .and_then(|s| s.token)
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| panic!("TokenRequest for {ns}/{sa} answered no token"))
    }

    /// A token of ServiceAccount `ns/sa`, valid for `seconds`, bound to the `kind` (`Pod`, `Node`) object
    /// `name` with uid `uid`: what the kubelet projects into a pod is bound to it this way.
    pub fn request_bound_token(
        &self,
        ns: &str,
        sa: &str,
        seconds: i64,
        kind: &str,
        name: &str,
        uid: &str,
    ) -> String {
        let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some(kind.into()),
                    name: Some(name.into()),
                    uid: Some(uid.into()),
                }),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let answer = self
            .block(
                "request a bound token",
                sas.create_token_request(sa, &PostParams::default(), &request),
            )
            .unwrap_or_else(|e| panic!("TokenRequest for {ns}/{sa} bound to {kind} {name}: {e}"));
        answer
            .status
            .and_then(|s| s.token)
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| panic!("TokenRequest for {ns}/{sa} answered no token"))
    }

    /// Create `role` and `binding` in their namespace (they go with it).
    pub fn create_role_and_binding(&self, role: &Role, binding: &RoleBinding) {
        let ns = role.metadata.namespace.clone().expect("a namespaced Role");
        let roles: Api<Role> = Api::namespaced(self.client.clone(), &ns);
        self.block("create Role", roles.create(&PostParams::default(), role))
            .unwrap_or_else(|e| panic!("create Role in {ns}: {e}"));
        let bindings: Api<RoleBinding> = Api::namespaced(self.client.clone(), &ns);
        self.block(
            "create RoleBinding",
            bindings.create(&PostParams::default(), binding),
        )
        .unwrap_or_else(|e| panic!("create RoleBinding in {ns}: {e}"));
    }

    /// Wait until the server refuses the credentials of the kubeconfig at `path` (401): a real server's
    /// authenticator caches the objects tokens are bound to for a moment.
    pub fn wait_unauthenticated(&self, path: &Path, ns: &str) {
        let client = self.rt.block_on(client_for(path));
        let pods: Api<Pod> = Api::namespaced(client, ns);
        let started = Instant::now();
        loop {
            match self.block("probe credentials", pods.get_opt("plexus-e2e-rbac-probe")) {
                Err(e) if is_status(&e, 401) => return,
                r if started.elapsed() > SETTLE_TIMEOUT => panic!(
                    "the credentials of {} are still accepted after {:?}: {r:?}",
                    path.display(),
                    started.elapsed()
                ),
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Wait until the credentials of the kubeconfig at `path` are accepted and authorized to read pods
    /// in `ns` (a real server's authenticator and RBAC caches take a moment to see a new ServiceAccount
    /// and binding): GET of a pod that does not exist must answer 404, not 401 or 403.
    pub fn wait_authorized(&self, path: &Path, ns: &str) {
        let client = self.rt.block_on(client_for(path));
        let pods: Api<Pod> = Api::namespaced(client, ns);
        let started = Instant::now();
        loop {
            match self.block("probe credentials", pods.get_opt("plexus-e2e-rbac-probe")) {
                Ok(_) => return,
                Err(e)
                    if (is_status(&e, 401) || is_status(&e, 403))
                        && started.elapsed() < SETTLE_TIMEOUT =>
                {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!(
                    "the credentials of {} cannot read pods in {ns} after {:?}: {e}",
                    path.display(),
                    started.elapsed()
                ),
            }
        }
    }

    /// Delete one cluster-scoped object (best effort).
    fn delete_cluster_scoped<K>(&self, what: &str, name: &str)
    where
        K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::all(self.client.clone());
        let r = self.rt.block_on(async {
            tokio::time::timeout(CALL_TIMEOUT, api.delete(name, &DeleteParams::background())).await
        });
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if is_status(&e, 404) => {}
            other => eprintln!("cleanup: delete {what} {name}: {other:?}"),
        }
    }

    /// Delete everything the fixture made (best effort; errors are printed, not raised).
    fn cleanup(&mut self) {
        let made = std::mem::take(&mut *self.made.lock().unwrap_or_else(|e| e.into_inner()));
        for name in &made.cluster_role_bindings {
            self.delete_cluster_scoped::<ClusterRoleBinding>("ClusterRoleBinding", name);
        }
        for name in &made.cluster_roles {
            self.delete_cluster_scoped::<ClusterRole>("ClusterRole", name);
        }
        let zero = DeleteParams::background().grace_period(0);
        for (ns, name) in &made.pods {
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            let r = self.rt.block_on(async {
                tokio::time::timeout(CALL_TIMEOUT, pods.delete(name, &zero)).await
            });
            match r {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if is_status(&e, 404) => {}
                other => eprintln!("cleanup: delete pod {ns}/{name}: {other:?}"),
            }
        }
        for name in &made.nodes {
            self.delete_cluster_scoped::<Node>("Node", name);
        }
        let nss: Api<Namespace> = Api::all(self.client.clone());
        for ns in &made.namespaces {
            let r = self.rt.block_on(async {
                tokio::time::timeout(CALL_TIMEOUT, nss.delete(ns, &DeleteParams::background()))
                    .await
            });
            match r {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if is_status(&e, 404) => {}
                other => eprintln!("cleanup: delete namespace {ns}: {other:?}"),
            }
        }
        if self.holds_role {
            self.holds_role = false;
            let mut holders = ROLE_HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
            let last_created = match holders.get_mut(&self.server_key) {
                Some(entry) => {
                    entry.0 = entry.0.saturating_sub(1);
                    (entry.0 == 0).then_some(entry.1)
                }
                None => None,
            };
            if let Some(created) = last_created {
                holders.remove(&self.server_key);
                // Only a ClusterRole this suite created is removed; an existing one belongs to the cluster.
                if created {
                    let name = rbac::deploy_cluster_role_name();
                    self.delete_cluster_scoped::<ClusterRole>("ClusterRole", &name);
                }
            }
        }
        if self.holds_crd {
            self.holds_crd = false;
            let mut holders = CRD_HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
            let last_created = match holders.get_mut(&self.server_key) {
                Some(entry) => {
                    entry.0 = entry.0.saturating_sub(1);
                    (entry.0 == 0).then_some(entry.1)
                }
                None => None,
            };
            if let Some(created) = last_created {
                holders.remove(&self.server_key);
                // Only a CRD this suite installed is removed; an existing one belongs to the cluster.
                if created {
                    let crds: Api<DynamicObject> =
                        Api::all_with(self.client.clone(), &crd_resource());
                    let r = self.rt.block_on(async {
                        tokio::time::timeout(
                            CALL_TIMEOUT,
                            crds.delete(NAD_CRD_NAME, &DeleteParams::background()),
                        )
                        .await
                    });
                    if !matches!(r, Ok(Ok(_))) {
                        eprintln!("cleanup: delete CRD {NAD_CRD_NAME}: {r:?}");
                    }
                }
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.cleanup();
        if let Some(server) = self.standin.take() {
            self.rt.block_on(server.shutdown());
        }
    }
}
