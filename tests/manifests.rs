//! Every Kubernetes manifest of the repository (`deploy/`, `crds/`, `examples/`) parses into its
//! k8s-openapi type (or plexus's NetworkAttachmentDefinition) and serialises back to exactly what the file
//! says, so a misspelt or misplaced field fails here rather than being dropped by the API server. Each
//! `kustomization.yaml` only names files that exist, inside its own directory (kustomize loads no file
//! outside it). The DaemonSet's `plexus install` arguments parse with the real clap definition, its mounts
//! match the paths they name, and the ClusterRole grants exactly what the plugin calls; the installer's Role
//! grants exactly the host's Node-bound token, for its own ServiceAccount.
//!
//! `deploy/daemon/` (daemon mode) is checked the same way, and beyond: its copies of deploy/'s manifests are
//! the same objects, the daemon container sees every host path at the same path, its probes reach the
//! daemon config's metrics address, its config file is the ConfigMap's JSON with documented keys, and the
//! two roles together grant the thin role plus the daemon's watches. When `kubectl` is installed, its
//! kustomize builds both directories into exactly their files.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use k8s_openapi::{
    api::{
        admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
        apps::v1::{DaemonSet, Deployment},
        core::v1::{
            ConfigMap, Container, Namespace, Pod, PodSpec, Service, ServiceAccount, Volume,
            VolumeMount,
        },
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::{api::resource::Quantity, util::intstr::IntOrString},
};
use plexus::seams::k8s::nad::NetworkAttachmentDefinition;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// YAML files under `dir` (recursively, sorted); none when it does not exist.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(yaml_files(&p));
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn is_kustomization(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n == "kustomization.yaml" || n == "kustomization.yml")
}

/// The YAML documents of a file, as JSON values (empty documents dropped).
fn documents(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// The first path where `a` and `b` differ.
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(u), Some(v)) => first_difference(u, v, &format!("{at}.{k}")),
                (Some(_), None) => Some(format!(
                    "{at}.{k}: in the file, dropped by the type (unknown or misplaced field?)"
                )),
                (None, Some(_)) => Some(format!("{at}.{k}: added by the type")),
                (None, None) => None,
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| first_difference(u, v, &format!("{at}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{at}: {a} in the file, {b} after the round trip")),
    }
}

/// Parse `doc` as `T` and check that it serialises back to `doc`.
fn typed<T: DeserializeOwned + Serialize>(doc: &Value, ctx: &str) -> T {
    let t: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{ctx}: does not parse as its type: {e}"));
    let back = serde_json::to_value(&t).unwrap();
    if let Some(d) = first_difference(doc, &back, "") {
        panic!("{ctx}: {d}");
    }
    t
}

/// A manifest, typed.
enum Manifest {
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Role(Role),
    RoleBinding(RoleBinding),
    DaemonSet(Box<DaemonSet>),
    ConfigMap(ConfigMap),
    Nad(NetworkAttachmentDefinition),
    Pod(Box<Pod>),
    /// Parsed and round-tripped; no further checks.
    Other,
}

fn parse_manifest(doc: &Value, ctx: &str) -> Manifest {
    let api = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    match (api, kind) {
        ("v1", "ServiceAccount") => Manifest::ServiceAccount(typed(doc, ctx)),
        ("v1", "Namespace") => {
            typed::<Namespace>(doc, ctx);
            Manifest::Other
        }
        ("v1", "Pod") => Manifest::Pod(Box::new(typed(doc, ctx))),
        ("v1", "Service") => {
            typed::<Service>(doc, ctx);
            Manifest::Other
        }
        ("apps/v1", "Deployment") => {
            typed::<Deployment>(doc, ctx);
            Manifest::Other
        }
        ("v1", "ConfigMap") => Manifest::ConfigMap(typed(doc, ctx)),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => Manifest::ClusterRole(typed(doc, ctx)),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            Manifest::ClusterRoleBinding(typed(doc, ctx))
        }
        ("rbac.authorization.k8s.io/v1", "Role") => Manifest::Role(typed(doc, ctx)),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => Manifest::RoleBinding(typed(doc, ctx)),
        ("apps/v1", "DaemonSet") => Manifest::DaemonSet(Box::new(typed(doc, ctx))),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            typed::<CustomResourceDefinition>(doc, ctx);
            Manifest::Other
        }
        ("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition") => Manifest::Nad(typed(doc, ctx)),
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy") => {
            typed::<ValidatingAdmissionPolicy>(doc, ctx);
            Manifest::Other
        }
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding") => {
            typed::<ValidatingAdmissionPolicyBinding>(doc, ctx);
            Manifest::Other
        }
        _ => panic!("{ctx}: {api} {kind} is not a kind this test knows; add it to parse_manifest"),
    }
}

/// Every manifest under the repository's manifest directories, with a context string.
fn all_manifests() -> Vec<(String, Manifest)> {
    let mut out = Vec::new();
    for dir in ["deploy", "crds", "examples"] {
        for path in yaml_files(&repo().join(dir)) {
            if is_kustomization(&path) {
                continue;
            }
            let rel = path.strip_prefix(repo()).unwrap().display().to_string();
            for (i, doc) in documents(&path).iter().enumerate() {
                let ctx = format!("{rel} (document {})", i + 1);
                out.push((ctx.clone(), parse_manifest(doc, &ctx)));
            }
        }
    }
    out
}

/// Content checks beyond the types: NAD configs are CNI configs plexus accepts; pod network annotations
/// parse.
fn check_content(ctx: &str, m: &Manifest) {
    match m {
        Manifest::Nad(nad) => {
            if let Some(config) = nad.spec.config.as_deref().filter(|c| !c.trim().is_empty()) {
                plexus::pure::netconf::NetworkConfig::from_bytes(config.as_bytes()).unwrap_or_else(
                    |e| panic!("{ctx}: spec.config is not a valid CNI config: {e}"),
                );
            }
        }
        Manifest::Pod(pod) => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let ann = pod.metadata.annotations.clone().unwrap_or_default();
            if let Some(v) = ann.get(plexus::pure::annotations::NETWORKS_ANNOTATION) {
                plexus::pure::annotations::parse_networks(v, ns)
                    .unwrap_or_else(|e| panic!("{ctx}: networks annotation: {e}"));
            }
            if let Some(v) = ann.get(plexus::pure::annotations::DEFAULT_NETWORK_ANNOTATION) {
                plexus::pure::annotations::parse_default_network(v, "kube-system")
                    .unwrap_or_else(|e| panic!("{ctx}: default-network annotation: {e}"));
            }
        }
        _ => {}
    }
}

#[test]
fn every_manifest_parses_into_its_type_and_round_trips() {
    let all = all_manifests();
    assert!(
        all.iter().any(|(c, _)| c.starts_with("deploy/"))
            && all.iter().any(|(c, _)| c.starts_with("crds/")),
        "deploy/ and crds/ hold manifests"
    );
    for (ctx, m) in &all {
        check_content(ctx, m);
    }
}

#[test]
fn kustomizations_name_existing_files_inside_their_directory() {
    let mut seen = 0;
    for dir in ["deploy", "crds", "examples"] {
        for path in yaml_files(&repo().join(dir))
            .into_iter()
            .filter(|p| is_kustomization(p))
        {
            seen += 1;
            let ctx = path.strip_prefix(repo()).unwrap().display().to_string();
            let base = path.parent().unwrap();
            let docs = documents(&path);
            assert_eq!(docs.len(), 1, "{ctx}");
            let k = &docs[0];
            assert_eq!(k["apiVersion"], "kustomize.config.k8s.io/v1beta1", "{ctx}");
            assert_eq!(k["kind"], "Kustomization", "{ctx}");
            let mut entries = Vec::new();
            for key in ["resources", "components", "crds"] {
                for e in k[key].as_array().into_iter().flatten() {
                    entries.push(
                        e.as_str()
                            .unwrap_or_else(|| panic!("{ctx}: {key} entry {e}"))
                            .to_string(),
                    );
                }
            }
            assert!(!entries.is_empty(), "{ctx}: lists nothing");
            for e in entries {
                let target = base.join(&e);
                if target.is_dir() {
                    assert!(
                        target.join("kustomization.yaml").is_file()
                            || target.join("kustomization.yml").is_file(),
                        "{ctx}: {e} is a directory without a kustomization"
                    );
                } else {
                    assert!(target.is_file(), "{ctx}: {e} does not exist");
                    // kustomize's default load restrictor refuses files outside the kustomization root.
                    let canon = target.canonicalize().unwrap();
                    assert!(
                        canon.starts_with(base.canonicalize().unwrap()),
                        "{ctx}: {e} is outside {} (kustomize refuses it)",
                        base.display()
                    );
                    // Every listed file is a manifest this test parses.
                    for (i, doc) in documents(&target).iter().enumerate() {
                        parse_manifest(doc, &format!("{ctx} → {e} (document {})", i + 1));
                    }
                }
            }
        }
    }
    assert!(
        seen >= 2,
        "deploy/kustomization.yaml and deploy/daemon/kustomization.yaml exist"
    );
    // Each variant lists every manifest file of its directory.
    for dir in [THIN, DAEMON] {
        let listed: BTreeSet<String> =
            documents(&repo().join(dir).join("kustomization.yaml"))[0]["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
        let files = manifest_files(dir);
        assert!(!files.is_empty(), "{dir} holds manifests");
        for f in files {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                listed.contains(&name),
                "{dir}/kustomization.yaml does not list {name}"
            );
        }
    }
}

#[test]
fn the_deploy_crd_is_the_generated_one() {
    // kustomize cannot load ../crds/, so deploy/ carries a copy; it must stay what src/seams/k8s/nad.rs generates.
    let copy =
        fs::read_to_string(repo().join("deploy/network-attachment-definitions.yaml")).unwrap();
    assert!(
        copy == plexus::seams::k8s::nad::crd_yaml(),
        "deploy/network-attachment-definitions.yaml is out of date; regenerate it with \
         `cargo run -- crd > deploy/network-attachment-definitions.yaml`"
    );
}

/// The thin variant: `kubectl apply -k deploy/`.
const THIN: &str = "deploy";
/// The daemon variant: `kubectl apply -k deploy/daemon/`.
const DAEMON: &str = "deploy/daemon";

/// The manifest files of one kustomization directory, without its subdirectories' (sorted).
fn manifest_files(dir: &str) -> Vec<PathBuf> {
    let base = repo().join(dir);
    yaml_files(&base)
        .into_iter()
        .filter(|p| !is_kustomization(p) && p.parent() == Some(base.as_path()))
        .collect()
}

/// The manifests of one kustomization directory (`THIN` or `DAEMON`), typed.
fn manifests_in(dir: &str) -> Vec<Manifest> {
    let mut out = Vec::new();
    for path in manifest_files(dir) {
        let rel = path.strip_prefix(repo()).unwrap().display().to_string();
        for (i, doc) in documents(&path).iter().enumerate() {
            out.push(parse_manifest(doc, &format!("{rel} (document {})", i + 1)));
        }
    }
    out
}

fn deploy_manifests() -> Vec<Manifest> {
    manifests_in(THIN)
}

fn the_daemonset_of(dir: &str) -> DaemonSet {
    let mut sets: Vec<DaemonSet> = manifests_in(dir)
        .into_iter()
        .filter_map(|m| match m {
            Manifest::DaemonSet(d) => Some(*d),
            _ => None,
        })
        .collect();
    assert_eq!(sets.len(), 1, "one DaemonSet in {dir}/");
    sets.remove(0)
}

fn the_daemonset() -> DaemonSet {
    the_daemonset_of(THIN)
}

/// `plexus install` arguments of a command line `[/usr/local/bin/plexus, install, …]`, parsed by the real
/// clap definition.
fn install_args(cmd: &[String], ctx: &str) -> plexus::edges::install::Args {
    assert!(
        cmd.len() >= 2 && cmd[1] == "install",
        "{ctx}: runs `plexus install`: {cmd:?}"
    );
    assert!(
        cmd[0].ends_with("/plexus"),
        "{ctx}: runs the plexus binary: {cmd:?}"
    );
    plexus::edges::install::parse(&cmd[2..])
        .unwrap_or_else(|e| panic!("{ctx}: {cmd:?} does not parse:\n{e}"))
}

fn container_command(c: &Container) -> Vec<String> {
    let mut v = c.command.clone().unwrap_or_default();
    v.extend(c.args.clone().unwrap_or_default());
    v
}

#[test]
fn the_daemonset_runs_plexus_install_with_flags_that_parse_and_mounts_that_match() {
    let ds = the_daemonset();
    let pod = ds.spec.template.spec.as_ref().unwrap();
    assert_eq!(
        pod.host_network,
        Some(true),
        "the node's pod network is what it sets up"
    );
    let tolerations = pod.tolerations.clone().unwrap_or_default();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "tolerates every taint: {tolerations:?}"
    );
    assert!(pod.termination_grace_period_seconds.is_some());
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    let args = install_args(&container_command(c), "the install container");
    assert!(
        !args.cleanup_config_on_exit,
        "#1527: an upgrade must keep the config"
    );
    assert!(
        !args.once && !args.skip_config_watch,
        "it keeps watching (token rotation, #852)"
    );

    // The readiness probe checks the same config.
    let probe = c
        .readiness_probe
        .as_ref()
        .and_then(|p| p.exec.as_ref())
        .and_then(|e| e.command.clone())
        .expect("an exec readiness probe");
    let probe_args = install_args(&probe, "the readiness probe");
    assert!(probe_args.check, "the probe runs --check");
    assert_eq!(probe_args.cni_conf_dir, args.cni_conf_dir);
    assert_eq!(probe_args.binary_name, args.binary_name);
    assert_eq!(probe_args.conf_stem(), args.conf_stem());

    // Each directory the installer uses is a mount of the host directory the config names.
    let mounts = c.volume_mounts.clone().unwrap_or_default();
    let volumes = pod.volumes.clone().unwrap_or_default();
    let host_path_of = |container_dir: &Path| -> PathBuf {
        let m = mounts
            .iter()
            .find(|m| Path::new(&m.mount_path) == container_dir)
            .unwrap_or_else(|| panic!("{} is not a mount: {mounts:?}", container_dir.display()));
        let v = volumes
            .iter()
            .find(|v| v.name == m.name)
            .expect("the mount's volume");
        assert!(
            m.read_only != Some(true),
            "{} must be writable",
            container_dir.display()
        );
        PathBuf::from(&v.host_path.as_ref().expect("a hostPath volume").path)
    };
    assert_eq!(host_path_of(&args.cni_conf_dir), args.host_cni_conf_dir);
    assert_eq!(
        host_path_of(&args.plexus_conf_dir),
        args.host_plexus_conf_dir
    );
    assert_eq!(
        host_path_of(&args.cni_bin_dir),
        PathBuf::from("/opt/cni/bin")
    );
    assert!(
        args.kubeconfig_host_path()
            .starts_with(&args.host_cni_conf_dir),
        "the kubeconfig is written through the conf-dir mount"
    );

    // Requests and limits are set; no CPU limit (throttling a CNI installer helps nobody).
    let res = c.resources.as_ref().expect("resources");
    let req = res.requests.as_ref().expect("requests");
    let lim = res.limits.as_ref().expect("limits");
    assert!(req.contains_key("cpu") && req.contains_key("memory"));
    assert!(lim.contains_key("memory") && !lim.contains_key("cpu"));
    assert!(c.image.as_deref().is_some_and(|i| i.contains("plexus")));

    // The DaemonSet runs as the ServiceAccount of deploy/, which the binding binds to the role.
    let sa = deploy_manifests()
        .into_iter()
        .find_map(|m| match m {
            Manifest::ServiceAccount(s) => Some(s),
            _ => None,
        })
        .expect("a ServiceAccount");
    assert_eq!(pod.service_account_name, sa.metadata.name);
    assert_eq!(ds.metadata.namespace, sa.metadata.namespace);
}

/// Both DaemonSets give the node's plugin a log by default: a level that logs (not `panic`, plexus's silent
/// default) and a log file, an absolute host path outside the directories the runtime scans for configs and
/// plugins (plexus, or in daemon mode the shim and its thin DEL fallback, runs on the host, where nobody
/// reads its stderr unless the call fails).
#[test]
fn both_daemonsets_give_the_plugin_a_log_level_and_a_log_file() {
    use plexus::edges::install::args::PluginLogLevel;
    for dir in [THIN, DAEMON] {
        let ds = the_daemonset_of(dir);
        let pod = ds.spec.template.spec.as_ref().unwrap();
        let install = container(pod, "install");
        let ctx = format!("{dir}: the install container");
        let args = install_args(&container_command(install), &ctx);
        assert_eq!(args.log_level, Some(PluginLogLevel::Verbose), "{ctx}");
        let file = args
            .log_file
            .clone()
            .unwrap_or_else(|| panic!("{ctx}: no --log-file"));
        assert_eq!(file, Path::new("/var/log/plexus.log"), "{ctx}");
        for scanned in [&args.host_cni_conf_dir, &args.host_cni_bin_dir] {
            assert!(!file.starts_with(scanned), "{ctx}: {file:?} in {scanned:?}");
        }
        assert_ne!(args.log_to_stderr, Some(false), "{ctx}: stderr still logs");
    }
}

/// What a role grants, one `group/resource:verb` per entry.
fn grants(role: &ClusterRole) -> BTreeSet<String> {
    let mut granted = BTreeSet::new();
    for rule in role.rules.clone().unwrap_or_default() {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for g in rule.api_groups.clone().unwrap_or_default() {
            for r in rule.resources.clone().unwrap_or_default() {
                for v in &rule.verbs {
                    granted.insert(format!("{g}/{r}:{v}"));
                }
            }
        }
    }
    granted
}

/// What the thin plugin calls (and the daemon calls too).
const THIN_GRANTS: [&str; 7] = [
    "/pods:get",                                          // ADD reads the pod
    "/pods/status:patch",                                 // network-status, one PATCH
    "k8s.cni.cncf.io/network-attachment-definitions:get", // NADs by name
    "/events:create",                                     // AddedInterface, NoNetworkFound
    "/events:patch",
    "resource.k8s.io/resourceclaims:get", // DRA: the pod's claims by name
    "resource.k8s.io/resourceslices:list", // DRA: the allocated drivers' slices on the node
];

#[test]
fn the_cluster_role_grants_exactly_what_the_plugin_calls() {
    let (mut roles, mut bindings) = (Vec::new(), Vec::new());
    for m in deploy_manifests() {
        match m {
            Manifest::ClusterRole(r) => roles.push(r),
            Manifest::ClusterRoleBinding(b) => bindings.push(b),
            _ => {}
        }
    }
    assert_eq!((roles.len(), bindings.len()), (1, 1));
    let role = &roles[0];
    let granted = grants(role);
    let expected: BTreeSet<String> = THIN_GRANTS.into_iter().map(String::from).collect();
    assert_eq!(
        granted, expected,
        "least privilege: no watch, update or wildcard, and no list but DRA's ResourceSlices"
    );

    let b = &bindings[0];
    assert_eq!(b.role_ref.kind, "ClusterRole");
    assert_eq!(Some(&b.role_ref.name), role.metadata.name.as_ref());
    let subjects = b.subjects.clone().unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    let ds = the_daemonset();
    assert_eq!(
        Some(&subjects[0].name),
        ds.spec
            .template
            .spec
            .as_ref()
            .unwrap()
            .service_account_name
            .as_ref()
    );
    assert_eq!(subjects[0].namespace, ds.metadata.namespace);
}

/// The installer's own API call (thin mode): a token of its ServiceAccount bound to its node, for the host's
/// kubeconfig. One Role in the DaemonSet's namespace grants exactly `create` on `serviceaccounts/token` of that
/// ServiceAccount, bound to it alone; the DaemonSet names the node through the downward API and asks for
/// Node-bound tokens (the default, not turned off).
#[test]
fn the_installers_role_grants_only_tokens_of_its_own_service_account() {
    let (mut roles, mut bindings) = (Vec::new(), Vec::new());
    for m in deploy_manifests() {
        match m {
            Manifest::Role(r) => roles.push(r),
            Manifest::RoleBinding(b) => bindings.push(b),
            _ => {}
        }
    }
    assert_eq!((roles.len(), bindings.len()), (1, 1));
    let ds = the_daemonset();
    let pod = ds.spec.template.spec.as_ref().unwrap();
    let sa = pod.service_account_name.clone().unwrap();
    let (role, b) = (&roles[0], &bindings[0]);
    assert_eq!(role.metadata.namespace, ds.metadata.namespace);
    let rules = serde_json::to_value(role.rules.clone().unwrap()).unwrap();
    assert_eq!(
        rules,
        serde_json::json!([{"apiGroups": [""], "resources": ["serviceaccounts/token"],
                            "resourceNames": [sa], "verbs": ["create"]}]),
        "exactly the TokenRequest of its own ServiceAccount"
    );
    assert_eq!(b.metadata.namespace, ds.metadata.namespace);
    assert_eq!(
        (b.role_ref.kind.as_str(), Some(&b.role_ref.name)),
        ("Role", role.metadata.name.as_ref())
    );
    let subjects = b.subjects.clone().unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        (
            subjects[0].kind.as_str(),
            subjects[0].name.as_str(),
            &subjects[0].namespace
        ),
        ("ServiceAccount", sa.as_str(), &ds.metadata.namespace)
    );

    let install = container(pod, "install");
    let args = install_args(&container_command(install), "deploy/daemonset.yaml");
    assert_eq!(
        args.host_token,
        plexus::edges::install::args::HostToken::Node
    );
    assert!(
        args.node_name.is_none(),
        "the node comes from the downward API"
    );
    let env = install.env.clone().unwrap_or_default();
    let node = env
        .iter()
        .find(|e| e.name == "PLEXUS_NODE_NAME")
        .expect("PLEXUS_NODE_NAME");
    let field = node
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(field, Some("spec.nodeName"));
}

// ---------------------------------------------------------------------------------------------------
// deploy/daemon/: daemon mode
// ---------------------------------------------------------------------------------------------------

/// The daemon config file's keys that configure the daemon itself (deploy/README.md, "Daemon mode").
const DAEMON_CONFIG_KEYS: [&str; 15] = [
    "socketDir",
    "chrootDir",
    "nodeName",
    "kubeconfig",
    "metricsAddress",
    "maxConcurrency",
    "maxQueue",
    "cacheSyncTimeoutSeconds",
    "shutdownTimeoutSeconds",
    "statusWrite",
    "statusRetrySeconds",
    "logLevel",
    "logFile",
    "logToStderr",
    "logOptions",
];

/// Network-config keys a daemon config may overlay on every request (as Go Multus's daemon does).
const OVERLAY_KEYS: [&str; 12] = [
    "allowedPluginTypes",
    "allowedPluginTypesByNamespace",
    "confDir",
    "cniDir",
    "binDir",
    "namespaceIsolation",
    "globalNamespaces",
    "systemNamespaces",
    "multusNamespace",
    "defaultNetworks",
    "strictCapabilities",
    "maxAttachmentsPerPod",
];

/// Host paths the daemon container must see at the same path, and whether read-only. (Delegates, their
/// search path and the pods' namespaces are reached through the host's root, `chrootDir`.)
const DAEMON_HOST_PATHS: [(&str, bool); 7] = [
    ("/etc/cni/net.d", false),
    ("/etc/cni/multus/net.d", false),
    ("/var/lib/cni", false),
    ("/run/plexus", false),
    ("/var/run/k8s.cni.cncf.io", false),
    ("/var/lib/kubelet/pod-resources", true),
    ("/var/lib/kubelet/device-plugins", true),
];

fn container<'p>(pod: &'p PodSpec, name: &str) -> &'p Container {
    pod.containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The mount of `c` at `path` and its volume.
fn mount_at<'p>(pod: &'p PodSpec, c: &'p Container, path: &Path) -> (&'p VolumeMount, &'p Volume) {
    let m = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| Path::new(&m.mount_path) == path)
        .unwrap_or_else(|| panic!("{}: nothing mounted at {}", c.name, path.display()));
    let v = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == m.name)
        .unwrap_or_else(|| panic!("{}: no volume {}", c.name, m.name));
    (m, v)
}

/// The host directory mounted at `path` in `c`.
fn host_dir_at(pod: &PodSpec, c: &Container, path: &Path) -> PathBuf {
    let (_, v) = mount_at(pod, c, path);
    PathBuf::from(
        &v.host_path
            .as_ref()
            .unwrap_or_else(|| panic!("{}: {} is not a hostPath", c.name, path.display()))
            .path,
    )
}

fn the_daemon_configmap() -> ConfigMap {
    let mut maps: Vec<ConfigMap> = manifests_in(DAEMON)
        .into_iter()
        .filter_map(|m| match m {
            Manifest::ConfigMap(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(maps.len(), 1, "one ConfigMap in {DAEMON}/");
    maps.remove(0)
}

/// The daemon config as the daemon reads it: the file `--config` names, from the ConfigMap mounted there.
fn the_daemon_config(pod: &PodSpec) -> serde_json::Map<String, Value> {
    let daemon = container(pod, "daemon");
    let cmd = container_command(daemon);
    assert_eq!(
        cmd[..2],
        ["/usr/local/bin/plexus-daemon", "--config"],
        "the daemon container runs `plexus-daemon --config FILE`: {cmd:?}"
    );
    assert_eq!(cmd.len(), 3, "{cmd:?}");
    let file = Path::new(&cmd[2]);
    let (m, v) = mount_at(pod, daemon, file.parent().unwrap());
    assert_eq!(m.read_only, Some(true), "the config is read-only");
    let cm = the_daemon_configmap();
    assert_eq!(
        v.config_map.as_ref().map(|c| c.name.as_str()),
        cm.metadata.name.as_deref(),
        "the config directory is the ConfigMap"
    );
    let key = file.file_name().unwrap().to_str().unwrap();
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .unwrap_or_else(|| panic!("the ConfigMap has no key {key}"));
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => m,
        Ok(v) => panic!("{key} is not a JSON object: {v}"),
        Err(e) => panic!("{key} is not JSON: {e}\n{text}"),
    }
}

#[test]
fn the_daemon_variant_copies_deploys_manifests_unchanged() {
    // kustomize refuses files outside deploy/daemon/ and `resources: [..]` (a cycle), so it has copies.
    let copy = fs::read_to_string(
        repo()
            .join(DAEMON)
            .join("network-attachment-definitions.yaml"),
    )
    .unwrap();
    assert!(
        copy == plexus::seams::k8s::nad::crd_yaml(),
        "{DAEMON}/network-attachment-definitions.yaml is out of date; regenerate it with \
         `cargo run -- crd > {DAEMON}/network-attachment-definitions.yaml`"
    );
    for f in [
        "serviceaccount.yaml",
        "clusterrole.yaml",
        "clusterrolebinding.yaml",
        "admission-policies.yaml",
    ] {
        let original = documents(&repo().join(THIN).join(f));
        let copy = documents(&repo().join(DAEMON).join(f));
        assert_eq!(
            copy, original,
            "{DAEMON}/{f} must be the same objects as {THIN}/{f} (comments may differ)"
        );
    }
    // The DaemonSet replaces the thin one in place: same name, namespace, selector, ServiceAccount.
    let (thin, daemon) = (the_daemonset(), the_daemonset_of(DAEMON));
    assert_eq!(daemon.metadata.name, thin.metadata.name);
    assert_eq!(daemon.metadata.namespace, thin.metadata.namespace);
    assert_eq!(daemon.spec.selector, thin.spec.selector);
    let sa = |d: &DaemonSet| {
        d.spec
            .template
            .spec
            .as_ref()
            .unwrap()
            .service_account_name
            .clone()
    };
    assert_eq!(sa(&daemon), sa(&thin));
}

#[test]
fn the_daemon_daemonset_installs_the_shim_and_runs_the_daemon_with_host_paths_at_their_own_paths() {
    let ds = the_daemonset_of(DAEMON);
    let pod = ds.spec.template.spec.as_ref().unwrap();
    assert_eq!(
        pod.host_network,
        Some(true),
        "the node's pod network is what it sets up"
    );
    assert_eq!(
        pod.host_pid,
        Some(true),
        "CNI_NETNS may be /proc/<pid>/ns/net: a host PID"
    );
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert!(
        pod.tolerations
            .iter()
            .flatten()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "tolerates every taint"
    );
    let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["install", "daemon"]);
    let config = the_daemon_config(pod);

    // The installer: --daemon, watching, with flags that parse; its probe checks the shim's config.
    let install = container(pod, "install");
    let args = install_args(&container_command(install), "the install container");
    assert!(args.daemon, "the installer runs with --daemon");
    assert_eq!(args.plugin_type(), "plexus-shim");
    assert!(!args.writes_kubeconfig());
    assert!(
        !args.once && !args.skip_config_watch,
        "it keeps watching the primary"
    );
    assert!(
        !args.cleanup_config_on_exit,
        "#1527: an upgrade must keep the config"
    );
    assert_eq!(
        args.shim_binary, None,
        "the shim is found next to /usr/local/bin/plexus, where the image has it"
    );
    let probe = install
        .readiness_probe
        .as_ref()
        .and_then(|p| p.exec.as_ref())
        .and_then(|e| e.command.clone())
        .expect("an exec readiness probe");
    let probe_args = install_args(&probe, "the install container's readiness probe");
    assert!(
        probe_args.check && probe_args.daemon,
        "--check --daemon: {probe:?}"
    );
    assert_eq!(probe_args.cni_conf_dir, args.cni_conf_dir);
    assert_eq!(probe_args.conf_stem(), args.conf_stem());
    assert_eq!(probe_args.plugin_type(), args.plugin_type());
    assert_eq!(
        host_dir_at(pod, install, &args.cni_conf_dir),
        args.host_cni_conf_dir
    );
    assert_eq!(
        host_dir_at(pod, install, &args.plexus_conf_dir),
        args.host_plexus_conf_dir
    );
    assert_eq!(
        host_dir_at(pod, install, &args.cni_bin_dir),
        args.host_cni_bin_dir
    );

    // The daemon: privileged, its node from the downward API, every host path at the same path.
    let daemon = container(pod, "daemon");
    assert_eq!(
        daemon.security_context.as_ref().and_then(|s| s.privileged),
        Some(true)
    );
    let node = daemon
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "PLEXUS_NODE_NAME")
        .expect("PLEXUS_NODE_NAME");
    assert_eq!(
        node.value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("spec.nodeName"),
        "the node name comes from the downward API"
    );
    assert!(
        !config.contains_key("nodeName"),
        "the env names the node, not a shared ConfigMap"
    );
    for (path, read_only) in DAEMON_HOST_PATHS {
        let path = Path::new(path);
        assert_eq!(
            host_dir_at(pod, daemon, path),
            path,
            "mounted at its own path"
        );
        let (m, _) = mount_at(pod, daemon, path);
        assert_eq!(
            m.read_only.unwrap_or(false),
            read_only,
            "{}",
            path.display()
        );
    }
    // Issue 21: the host's root, read-write, at chrootDir, where the delegates run; mounts made on the host
    // later (the pods' namespaces) must appear in it.
    let chroot_dir = config["chrootDir"].as_str().expect("chrootDir is set");
    let (root, _) = mount_at(pod, daemon, Path::new(chroot_dir));
    assert_eq!(
        host_dir_at(pod, daemon, Path::new(chroot_dir)),
        Path::new("/")
    );
    assert_eq!(
        root.mount_propagation.as_deref(),
        Some("HostToContainer"),
        "namespaces created after the pod started must appear in it"
    );
    assert!(
        !root.read_only.unwrap_or(false),
        "delegates write host state"
    );
    // Every other hostPath the daemon mounts is at its own path (the shim's config names host paths).
    for m in daemon.volume_mounts.iter().flatten() {
        if let Some(h) = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .and_then(|v| v.host_path.as_ref())
            .filter(|_| m.mount_path != chroot_dir)
        {
            assert_eq!(m.mount_path, h.path, "volume {}", m.name);
        }
    }
    // What the shim config names, the daemon sees: the directories the installer writes into it.
    for (what, host) in [
        ("clusterNetwork's directory", &args.host_cni_conf_dir),
        ("confDir", &args.host_plexus_conf_dir),
    ] {
        assert_eq!(&host_dir_at(pod, daemon, host), host, "{what}");
    }
    let cni_dir = args.cni_dir().expect("daemon mode writes cniDir");
    assert!(
        cni_dir.starts_with("/var/lib/cni"),
        "cniDir {} is under the cache mount",
        cni_dir.display()
    );
    // One socket directory: the daemon's socketDir, the shim's daemonSocketDir, a mount at that path.
    let socket_dir = config["socketDir"].as_str().expect("socketDir");
    assert_eq!(Path::new(socket_dir), args.daemon_socket_dir);
    assert_eq!(
        host_dir_at(pod, daemon, Path::new(socket_dir)),
        Path::new(socket_dir)
    );

    // Probes: /healthz and /readyz on the metrics address (the kubelet shares the host network).
    let addr: std::net::SocketAddr = config["metricsAddress"]
        .as_str()
        .expect("metricsAddress")
        .parse()
        .expect("metricsAddress is ip:port");
    for (probe, path) in [
        (daemon.liveness_probe.as_ref(), "/healthz"),
        (daemon.readiness_probe.as_ref(), "/readyz"),
    ] {
        let get = probe
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("an httpGet probe on {path}"));
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.host.as_deref(), Some(addr.ip().to_string().as_str()));
        assert_eq!(get.port, IntOrString::Int(i32::from(addr.port())));
    }

    // Resources: the daemon's budget (delegates run inside it too: see the manifest), no CPU limit.
    let res = daemon.resources.as_ref().expect("resources");
    let q = |m: &Option<std::collections::BTreeMap<String, Quantity>>, k: &str| {
        m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone())
    };
    assert_eq!(q(&res.limits, "memory").as_deref(), Some("256Mi"));
    assert_eq!(q(&res.limits, "cpu"), None);
    assert_eq!(q(&res.requests, "memory").as_deref(), Some("32Mi"));
    assert_eq!(q(&res.requests, "cpu").as_deref(), Some("50m"));

    // The daemon drains within the grace period.
    let grace = pod
        .termination_grace_period_seconds
        .expect("a grace period");
    assert_eq!(grace, 30);
    let drain = config
        .get("shutdownTimeoutSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(25);
    assert!(
        drain < grace,
        "shutdownTimeoutSeconds {drain} must end before the kill at {grace}s"
    );
}

#[test]
fn the_daemon_config_is_json_with_documented_keys() {
    let pod = the_daemonset_of(DAEMON).spec.template.spec.unwrap();
    let config = the_daemon_config(&pod);
    for (k, v) in &config {
        assert!(
            DAEMON_CONFIG_KEYS.contains(&k.as_str()) || OVERLAY_KEYS.contains(&k.as_str()),
            "{k} is not a documented daemon config key"
        );
        match k.as_str() {
            "socketDir" | "kubeconfig" | "logFile" | "chrootDir" => assert!(
                v.as_str().is_some_and(|p| Path::new(p).is_absolute()),
                "{k}: an absolute path, not {v}"
            ),
            "maxConcurrency"
            | "maxQueue"
            | "cacheSyncTimeoutSeconds"
            | "shutdownTimeoutSeconds"
            | "statusRetrySeconds"
            | "maxAttachmentsPerPod" => {
                assert!(
                    v.as_u64().is_some_and(|n| n > 0),
                    "{k}: a positive integer, not {v}"
                )
            }
            "logToStderr" => assert!(v.is_boolean(), "{k}: {v}"),
            "statusWrite" => assert!(
                ["afterReply", "beforeReply"].contains(&v.as_str().unwrap_or_default()),
                "{k}: {v}"
            ),
            "logLevel" => assert!(
                ["debug", "verbose", "error", "panic"].contains(&v.as_str().unwrap_or_default()),
                "{k}: {v}"
            ),
            _ => {}
        }
    }
    for k in ["socketDir", "metricsAddress"] {
        assert!(
            config.contains_key(k),
            "the probes and the shim depend on {k}"
        );
    }
    // `plexus daemon` itself accepts it, with the node name from the downward API's variable.
    let env = |k: &str| (k == "PLEXUS_NODE_NAME").then(|| "node-1".to_string());
    let parsed = plexus::edges::daemon::config::DaemonConfig::from_bytes(
        &serde_json::to_vec(&config).unwrap(),
        "daemon.json",
        &env,
    )
    .unwrap_or_else(|e| panic!("plexus daemon refuses the ConfigMap's daemon.json: {e}"));
    assert_eq!(parsed.node_name, "node-1");
    assert_eq!(
        parsed.socket_dir.to_str(),
        config["socketDir"].as_str(),
        "socketDir"
    );
    assert_eq!(
        parsed.metrics_address.map(|a| a.to_string()).as_deref(),
        config["metricsAddress"].as_str()
    );
    assert_eq!(
        parsed.host_root.as_ref().map(|r| r.dir().to_path_buf()),
        config["chrootDir"].as_str().map(PathBuf::from),
        "chrootDir"
    );
    // The shim's config names these, and the thin plexus the shim falls back to for DEL reads them there:
    // overlaid here, the daemon would read another cache than the fallback.
    for k in ["cniDir", "confDir", "binDir"] {
        assert!(
            !config.contains_key(k),
            "{k} belongs in the shim's config (plexus install flags)"
        );
    }
    // deploy/README.md documents every key.
    let readme = fs::read_to_string(repo().join("deploy/README.md")).unwrap();
    let section = readme
        .split("## Daemon mode")
        .nth(1)
        .expect("deploy/README.md has a \"Daemon mode\" section");
    for k in DAEMON_CONFIG_KEYS {
        assert!(
            section.contains(&format!("`{k}`")),
            "deploy/README.md does not document {k}"
        );
    }
}

#[test]
fn the_daemon_roles_grant_the_thin_role_plus_the_daemons_watches() {
    let (mut roles, mut bindings) = (Vec::new(), Vec::new());
    for m in manifests_in(DAEMON) {
        match m {
            Manifest::ClusterRole(r) => roles.push(r),
            Manifest::ClusterRoleBinding(b) => bindings.push(b),
            _ => {}
        }
    }
    assert_eq!((roles.len(), bindings.len()), (2, 2));
    let added: BTreeSet<String> = [
        "/pods:list", // the node's pods: LIST + WATCH with a field selector
        "/pods:watch",
        "k8s.cni.cncf.io/network-attachment-definitions:list", // every NAD: LIST + WATCH
        "k8s.cni.cncf.io/network-attachment-definitions:watch",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let thin: BTreeSet<String> = THIN_GRANTS.into_iter().map(String::from).collect();
    let by_name = |n: &str| {
        roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(n))
            .unwrap_or_else(|| panic!("no ClusterRole {n}"))
    };
    assert_eq!(grants(by_name("plexus")), thin, "the thin role, unchanged");
    assert_eq!(
        grants(by_name("plexus-daemon")),
        added,
        "only what the daemon adds"
    );

    // Both roles are bound to the DaemonSet's ServiceAccount.
    let ds = the_daemonset_of(DAEMON);
    let sa = ds
        .spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .service_account_name
        .clone();
    let mut bound = BTreeSet::new();
    for b in &bindings {
        assert_eq!(b.role_ref.kind, "ClusterRole");
        let subjects = b.subjects.clone().unwrap_or_default();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(Some(&subjects[0].name), sa.as_ref());
        assert_eq!(subjects[0].namespace, ds.metadata.namespace);
        bound.insert(b.role_ref.name.clone());
    }
    assert_eq!(
        bound,
        BTreeSet::from(["plexus".to_string(), "plexus-daemon".to_string()])
    );
}

#[test]
fn the_image_ships_the_shim_where_the_installer_looks_for_it() {
    // The install container's --shim-binary default is plexus-shim next to the running plexus.
    let containerfile = fs::read_to_string(repo().join("deploy/Containerfile")).unwrap();
    let copies: Vec<&str> = containerfile
        .lines()
        .filter(|l| l.starts_with("COPY --from=build"))
        .collect();
    for bin in [
        "/usr/local/bin/plexus",
        "/usr/local/bin/plexus-daemon",
        "/usr/local/bin/plexus-shim",
    ] {
        assert!(
            copies
                .iter()
                .any(|l| l.trim_end().ends_with(&format!(" {bin}"))),
            "deploy/Containerfile does not install {bin}: {copies:?}"
        );
    }
    // The shim runs on the host, whatever its glibc: it is linked statically and not position-independent (no
    // relocations to apply at each start), as the bench builds it.
    assert!(
        containerfile.lines().any(|l| l.contains("cargo rustc")
            && l.contains("--package plexus-shim")
            && l.contains("-- -C target-feature=+crt-static -C relocation-model=static")),
        "deploy/Containerfile does not build plexus-shim statically"
    );
    let pod = the_daemonset_of(DAEMON).spec.template.spec.unwrap();
    let cmd = container_command(container(&pod, "install"));
    assert_eq!(
        Path::new(&cmd[0]).with_file_name("plexus-shim"),
        Path::new("/usr/local/bin/plexus-shim")
    );
}

/// The `key = value` lines of one `[section]` of a TOML file (no nesting needed for Cargo.toml's profiles).
fn toml_section<'a>(text: &'a str, section: &str) -> Vec<&'a str> {
    text.lines()
        .skip_while(|l| l.trim() != section)
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

#[test]
fn the_image_ships_the_thin_plexus_built_to_abort_and_the_daemon_built_to_unwind() {
    // Issue 17: the thin binary aborts on a panic (its hook still replies: tests/panic_reply.rs), which takes
    // its unwind tables and landing pads out; the daemon must unwind to survive a request's panic.
    let cargo = fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let thin = toml_section(&cargo, "[profile.release-thin]");
    assert!(
        thin.contains(&r#"inherits = "release""#) && thin.contains(&r#"panic = "abort""#),
        "Cargo.toml [profile.release-thin]: {thin:?}"
    );
    let release = toml_section(&cargo, "[profile.release]");
    assert!(
        !release.iter().any(|l| l.starts_with("panic")),
        "Cargo.toml [profile.release] must unwind (plexus-daemon): {release:?}"
    );
    let containerfile = fs::read_to_string(repo().join("deploy/Containerfile")).unwrap();
    let builds = |needle: &[&str]| {
        containerfile
            .lines()
            .any(|l| needle.iter().all(|n| l.contains(n)))
    };
    assert!(
        builds(&["cargo build", "--profile release-thin", "--bin plexus "]),
        "deploy/Containerfile does not build plexus with the release-thin profile"
    );
    assert!(
        builds(&["cargo build", "--release", "--bin plexus-daemon"]),
        "deploy/Containerfile does not build plexus-daemon with the release profile"
    );
    assert!(
        builds(&["install", "target/release-thin/plexus /out/plexus "])
            && builds(&[
                "install",
                "target/release/plexus-daemon /out/plexus-daemon "
            ]),
        "deploy/Containerfile does not install the binaries of those builds"
    );
}

/// `kubectl` on PATH, if any.
fn kubectl() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
}

/// A manifest's identity in a kustomize build.
fn identity(doc: &Value) -> String {
    format!(
        "{} {} {}/{}",
        doc["apiVersion"].as_str().unwrap_or_default(),
        doc["kind"].as_str().unwrap_or_default(),
        doc["metadata"]["namespace"].as_str().unwrap_or_default(),
        doc["metadata"]["name"].as_str().unwrap_or_default()
    )
}

#[test]
fn kustomize_builds_each_variant_into_exactly_its_files() {
    let Some(kubectl) = kubectl() else {
        eprintln!("kubectl is not installed: `kubectl kustomize` not checked");
        return;
    };
    for dir in [THIN, DAEMON] {
        let out = std::process::Command::new(&kubectl)
            .arg("kustomize")
            .arg(repo().join(dir))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl kustomize {dir}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let built: Vec<Value> =
            serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout)).unwrap();
        let built: std::collections::BTreeMap<String, Value> = built
            .into_iter()
            .filter(|d| !d.is_null())
            .map(|d| (identity(&d), d))
            .collect();
        let files: std::collections::BTreeMap<String, Value> = manifest_files(dir)
            .iter()
            .flat_map(|f| documents(f))
            .map(|d| (identity(&d), d))
            .collect();
        assert_eq!(
            built.keys().collect::<Vec<_>>(),
            files.keys().collect::<Vec<_>>(),
            "{dir}: what kustomize builds"
        );
        for (id, doc) in &files {
            if let Some(d) = first_difference(doc, &built[id], "") {
                panic!("{dir}: {id}: kustomize changed {d}");
            }
        }
    }
}

/// The lines of `file` (under the repository) that are comments starting with `prefix` after the `#`,
/// uncommented.
fn commented(file: &str, prefix: &str) -> Vec<String> {
    fs::read_to_string(repo().join(file))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix('#'))
        .map(str::trim)
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Issue 19, item 3: the recommended plugin allow-list, shown commented in the thin DaemonSet's install
/// arguments and in the daemon's ConfigMap, parses as what each is (install flags; daemon config keys the
/// daemon accepts), and both recommend the same lists.
#[test]
fn the_recommended_plugin_allow_lists_parse_and_agree() {
    let flags: Vec<String> = commented(
        &format!("{THIN}/daemonset.yaml"),
        "- --allowed-plugin-types",
    )
    .iter()
    .map(|l| l.trim_start_matches("- ").to_string())
    .collect();
    assert_eq!(
        flags.len(),
        2,
        "the global and a per-namespace list: {flags:?}"
    );
    let mut cmd = vec!["/usr/local/bin/plexus".to_string(), "install".to_string()];
    cmd.extend(flags);
    let args = install_args(&cmd, "the commented allow-list flags");
    let global = args.allowed_plugin_types.expect("--allowed-plugin-types").0;
    let by_ns: std::collections::BTreeMap<String, Vec<String>> = args
        .allowed_plugin_types_by_namespace
        .into_iter()
        .map(|n| (n.namespace, n.types))
        .collect();

    let keys = commented(&format!("{DAEMON}/configmap.yaml"), "\"allowedPluginTypes");
    assert_eq!(keys.len(), 2, "{keys:?}");
    let object = format!("{{{}}}", keys.join(" ").trim_end_matches(','));
    let json: Value = serde_json::from_str(&object)
        .unwrap_or_else(|e| panic!("the ConfigMap's commented keys are not JSON: {e}\n{object}"));
    let mut config = json.clone();
    config["nodeName"] = "n".into();
    plexus::edges::daemon::config::DaemonConfig::from_bytes(
        &serde_json::to_vec(&config).unwrap(),
        "the ConfigMap's commented keys",
        &|_| None,
    )
    .unwrap_or_else(|e| panic!("plexus daemon refuses the recommended list: {e}"));
    assert_eq!(json["allowedPluginTypes"], serde_json::json!(global));
    assert_eq!(
        json["allowedPluginTypesByNamespace"],
        serde_json::json!(by_ns)
    );
    for left_out in ["host-device", "portmap", "firewall"] {
        assert!(
            !global.iter().any(|t| t == left_out),
            "{left_out} is recommended"
        );
    }
}
