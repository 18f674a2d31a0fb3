//! Every Kubernetes manifest of the repository (`deploy/`, `crds/`, `examples/`) parses into its
//! k8s-openapi type (or plexus's NetworkAttachmentDefinition) and serialises back to exactly what the file
//! says, so a misspelt or misplaced field fails here rather than being dropped by the API server. Each
//! `kustomization.yaml` only names files that exist, inside its own directory (kustomize loads no file
//! outside it). The DaemonSet's `plexus install` arguments parse with the real clap definition, its mounts
//! match the paths they name, and the ClusterRole grants exactly what the plugin calls.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment},
        core::v1::{ConfigMap, Container, Namespace, Pod, Service, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use plexus::k8s::nad::NetworkAttachmentDefinition;
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
    DaemonSet(Box<DaemonSet>),
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
        ("v1", "ConfigMap") => {
            typed::<ConfigMap>(doc, ctx);
            Manifest::Other
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => Manifest::ClusterRole(typed(doc, ctx)),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            Manifest::ClusterRoleBinding(typed(doc, ctx))
        }
        ("apps/v1", "DaemonSet") => Manifest::DaemonSet(Box::new(typed(doc, ctx))),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            typed::<CustomResourceDefinition>(doc, ctx);
            Manifest::Other
        }
        ("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition") => Manifest::Nad(typed(doc, ctx)),
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
                plexus::netconf::NetworkConfig::from_bytes(config.as_bytes()).unwrap_or_else(|e| {
                    panic!("{ctx}: spec.config is not a valid CNI config: {e}")
                });
            }
        }
        Manifest::Pod(pod) => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let ann = pod.metadata.annotations.clone().unwrap_or_default();
            if let Some(v) = ann.get(plexus::k8s::annotations::NETWORKS_ANNOTATION) {
                plexus::k8s::annotations::parse_networks(v, ns)
                    .unwrap_or_else(|e| panic!("{ctx}: networks annotation: {e}"));
            }
            if let Some(v) = ann.get(plexus::k8s::annotations::DEFAULT_NETWORK_ANNOTATION) {
                plexus::k8s::annotations::parse_default_network(v, "kube-system")
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
    assert!(seen >= 1, "deploy/kustomization.yaml exists");
    // deploy/ lists every manifest file it holds.
    let listed: BTreeSet<String> =
        documents(&repo().join("deploy/kustomization.yaml"))[0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
    for f in yaml_files(&repo().join("deploy")) {
        if !is_kustomization(&f) {
            let name = f
                .strip_prefix(repo().join("deploy"))
                .unwrap()
                .display()
                .to_string();
            assert!(
                listed.contains(&name),
                "deploy/kustomization.yaml does not list {name}"
            );
        }
    }
}

#[test]
fn the_deploy_crd_is_the_generated_one() {
    // kustomize cannot load ../crds/, so deploy/ carries a copy; it must stay what src/k8s/nad.rs generates.
    let copy =
        fs::read_to_string(repo().join("deploy/network-attachment-definitions.yaml")).unwrap();
    assert!(
        copy == plexus::k8s::nad::crd_yaml(),
        "deploy/network-attachment-definitions.yaml is out of date; regenerate it with \
         `cargo run -- crd > deploy/network-attachment-definitions.yaml`"
    );
}

fn deploy_manifests() -> Vec<Manifest> {
    all_manifests()
        .into_iter()
        .filter(|(c, _)| c.starts_with("deploy/"))
        .map(|(_, m)| m)
        .collect()
}

fn the_daemonset() -> DaemonSet {
    let mut sets: Vec<DaemonSet> = deploy_manifests()
        .into_iter()
        .filter_map(|m| match m {
            Manifest::DaemonSet(d) => Some(*d),
            _ => None,
        })
        .collect();
    assert_eq!(sets.len(), 1, "one DaemonSet in deploy/");
    sets.remove(0)
}

/// `plexus install` arguments of a command line `[/usr/local/bin/plexus, install, …]`, parsed by the real
/// clap definition.
fn install_args(cmd: &[String], ctx: &str) -> plexus::install::Args {
    assert!(
        cmd.len() >= 2 && cmd[1] == "install",
        "{ctx}: runs `plexus install`: {cmd:?}"
    );
    assert!(
        cmd[0].ends_with("/plexus"),
        "{ctx}: runs the plexus binary: {cmd:?}"
    );
    plexus::install::parse(&cmd[2..])
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
    let expected: BTreeSet<String> = [
        "/pods:get",                                          // ADD reads the pod
        "/pods/status:patch",                                 // network-status, one PATCH
        "k8s.cni.cncf.io/network-attachment-definitions:get", // NADs by name
        "/events:create",                                     // AddedInterface, NoNetworkFound
        "/events:patch",
        "resource.k8s.io/resourceclaims:get", // DRA: the pod's claims by name
        "resource.k8s.io/resourceslices:list", // DRA: the allocated drivers' slices on the node
    ]
    .into_iter()
    .map(String::from)
    .collect();
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
