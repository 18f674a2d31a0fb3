//! The pure core of `plexus install`: which file of the runtime's config directory is the primary (cluster)
//! network, what plexus's own config says about it, the node's kubeconfig, and how host paths map to the
//! installer's container paths. No I/O: the caller lists and reads files.
//!
//! ```text
//! file names ──select()──▶ PrimaryInfo ──render()──▶ 00-plexus.conflist (or .conf) bytes
//!     ▲ read(name)            (version, capabilities)
//! ```
//!
//! Rules (docs/multus-compat.md, "Installation"; docs/spec-ids.md, CNI-58, EXT-10):
//! - candidates are the `.conf`, `.conflist` and `.json` files (libcni's extensions), lexically ordered,
//!   without dotfiles, without our own output (either extension) and so without backups (`*.bak`,
//!   `*.cilium_bak`, `*.old` have other extensions);
//! - a config whose `type` (a conflist: `plugins[0].type`) is a meta-plugin (`plexus`, `plexus-shim`,
//!   `multus`, `multus-shim`, the installed binary name) is skipped: plexus never wraps itself (#1324, #1108);
//! - the first candidate that is empty or not a CNI config yet (being written by the cluster network's
//!   installer) means "not ready": the installer waits rather than picking the next file (#1499) or
//!   writing an empty config (#1155);
//! - the output is a `.conflist` with one plugin when the cniVersion is 1.0.0 or later, a `.conf` before
//!   (as Go Multus's thin entrypoint), with `capabilities` = the union of the primary's enabled ones so
//!   the runtime sends `runtimeConfig`, and `confDir` (never Go Multus's `cniConf` typo).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use base64::Engine;
use plexus_cni::CniVersion;
use serde_json::{Map, Value, json};

/// Plugin types of meta-plugins: a config of one of these is never a primary (plexus's own thin and
/// daemon-mode configs, Go Multus's thin and thick ones).
pub const META_TYPES: [&str; 4] = ["plexus", "plexus-shim", "multus", "multus-shim"];

/// The extensions libcni loads configs from.
pub const CONFIG_EXTENSIONS: [&str; 3] = ["conf", "conflist", "json"];

/// The first version whose generated config is a conflist (as Go Multus, commit c943f9ff).
pub const FIRST_CONFLIST_VERSION: CniVersion = CniVersion::V1_0_0;

// === File names ===

fn extension(name: &str) -> Option<&str> {
    name.rsplit_once('.').map(|(_, e)| e)
}

/// Whether the runtime (libcni) would load `name` as a network config.
pub fn is_config_name(name: &str) -> bool {
    extension(name).is_some_and(|e| CONFIG_EXTENSIONS.contains(&e))
}

/// The two names the generated config may have.
pub fn output_names(stem: &str) -> [String; 2] {
    [format!("{stem}.conf"), format!("{stem}.conflist")]
}

/// Why a file of the config directory is not a primary candidate, from its name alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameClass {
    /// May be the primary.
    Candidate,
    /// The installer's own output.
    Own,
    /// A dotfile (temp files, hidden backups).
    Hidden,
    /// Not a config extension: backups (`.bak`, `.cilium_bak`, `.old`), other files.
    NotConfig,
}

/// Classify a file name of the config directory.
pub fn classify(name: &str, own_stem: &str) -> NameClass {
    if name.starts_with('.') {
        NameClass::Hidden
    } else if !is_config_name(name) {
        NameClass::NotConfig
    } else if output_names(own_stem).iter().any(|o| o == name) {
        NameClass::Own
    } else {
        NameClass::Candidate
    }
}

/// Config files the runtime would pick before `own_file` (it uses the lexically first): while any exists,
/// plexus's config is not used.
pub fn shadowing(names: &[String], own_stem: &str, own_file: &str) -> Vec<String> {
    let own = output_names(own_stem);
    let mut v: Vec<String> = names
        .iter()
        .filter(|n| is_config_name(n) && n.as_str() < own_file && !own.contains(n))
        .cloned()
        .collect();
    v.sort();
    v
}

// === The primary ===

/// What the installer needs from the primary config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryInfo {
    /// File name in the config directory.
    pub file: String,
    /// `cniVersion` as written (`None`: absent, which means 0.1.0).
    pub cni_version: Option<String>,
    /// A conflist (has `plugins`).
    pub is_list: bool,
    /// The network name, for logs.
    pub name: Option<String>,
    /// Capabilities set to `true` (conf: top level; conflist: any plugin), sorted.
    pub capabilities: BTreeSet<String>,
}

/// Why a file cannot be the primary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrimaryError {
    /// It could not be read.
    #[error("{file} cannot be read: {reason}")]
    Unreadable {
        /// File name.
        file: String,
        /// The I/O error.
        reason: String,
    },
    /// Empty, not JSON, or not a CNI config (yet).
    #[error("{file} is not a CNI network config (yet): {reason}")]
    NotAConfig {
        /// File name.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// A meta-plugin's config, plexus's included.
    #[error(
        "{file} is a {plugin_type} config (a meta-plugin): plexus never wraps a meta-plugin, itself included"
    )]
    MetaPlugin {
        /// File name.
        file: String,
        /// Its plugin type.
        plugin_type: String,
    },
}

fn not_a_config(file: &str, reason: impl Into<String>) -> PrimaryError {
    PrimaryError::NotAConfig {
        file: file.to_string(),
        reason: reason.into(),
    }
}

fn true_capabilities(v: Option<&Value>, into: &mut BTreeSet<String>) {
    if let Some(Value::Object(m)) = v {
        for (k, on) in m {
            if on.as_bool() == Some(true) {
                into.insert(k.clone());
            }
        }
    }
}

/// The plugin type of a config or conflist (`plugins[0].type`), and whether it is a list.
fn plugin_type_of(file: &str, obj: &Map<String, Value>) -> Result<(String, bool), PrimaryError> {
    if let Some(plugins) = obj.get("plugins") {
        let list = plugins
            .as_array()
            .ok_or_else(|| not_a_config(file, "plugins is not a list"))?;
        let first = list
            .first()
            .ok_or_else(|| not_a_config(file, "plugins is empty"))?;
        let t = first
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| not_a_config(file, "plugins[0] has no type"))?;
        return Ok((t.to_string(), true));
    }
    let t = obj
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| not_a_config(file, "no type and no plugins"))?;
    Ok((t.to_string(), false))
}

/// Read what matters of a candidate file. `meta_types` are the plugin types that make it a meta-plugin
/// config.
pub fn inspect(file: &str, bytes: &[u8], meta_types: &[&str]) -> Result<PrimaryInfo, PrimaryError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(not_a_config(file, "the file is empty"));
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| not_a_config(file, e.to_string()))?;
    let obj = value
        .as_object()
        .ok_or_else(|| not_a_config(file, "not a JSON object"))?;
    let (plugin_type, is_list) = plugin_type_of(file, obj)?;
    if meta_types.contains(&plugin_type.as_str()) {
        return Err(PrimaryError::MetaPlugin {
            file: file.to_string(),
            plugin_type,
        });
    }
    let cni_version = match obj.get("cniVersion") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(not_a_config(file, "cniVersion is not a string")),
    };
    let mut capabilities = BTreeSet::new();
    if is_list {
        for p in obj["plugins"].as_array().into_iter().flatten() {
            true_capabilities(p.get("capabilities"), &mut capabilities);
        }
    } else {
        true_capabilities(obj.get("capabilities"), &mut capabilities);
    }
    Ok(PrimaryInfo {
        file: file.to_string(),
        cni_version,
        is_list,
        name: obj.get("name").and_then(Value::as_str).map(str::to_string),
        capabilities,
    })
}

/// The outcome of looking for the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The primary, and the meta-plugin configs skipped on the way.
    Found(PrimaryInfo, Vec<PrimaryError>),
    /// The primary is there but not usable yet (empty, unreadable, not a config): wait for it.
    Pending(PrimaryError),
    /// No candidate at all (`skipped`: meta-plugin configs passed over).
    Missing(Vec<PrimaryError>),
    /// The pinned file is a meta-plugin config: never usable.
    Refused(PrimaryError),
}

/// Choose the primary among `names` (the config directory's files). `read` gives a file's bytes.
/// `pinned` names the only file to consider.
pub fn select(
    names: &[String],
    own_stem: &str,
    meta_types: &[&str],
    pinned: Option<&str>,
    mut read: impl FnMut(&str) -> Result<Vec<u8>, String>,
) -> Selection {
    let mut sorted: Vec<&String> = names.iter().collect();
    sorted.sort();
    let look = |name: &str, read: &mut dyn FnMut(&str) -> Result<Vec<u8>, String>| match read(name)
    {
        Ok(bytes) => inspect(name, &bytes, meta_types),
        Err(reason) => Err(PrimaryError::Unreadable {
            file: name.to_string(),
            reason,
        }),
    };
    if let Some(pinned) = pinned {
        if !names.iter().any(|n| n == pinned) {
            return Selection::Missing(Vec::new());
        }
        return match look(pinned, &mut read) {
            Ok(info) => Selection::Found(info, Vec::new()),
            Err(e @ PrimaryError::MetaPlugin { .. }) => Selection::Refused(e),
            Err(e) => Selection::Pending(e),
        };
    }
    let mut skipped = Vec::new();
    for name in sorted {
        if classify(name, own_stem) != NameClass::Candidate {
            continue;
        }
        match look(name, &mut read) {
            Ok(info) => return Selection::Found(info, skipped),
            Err(e @ PrimaryError::MetaPlugin { .. }) => skipped.push(e),
            Err(e) => return Selection::Pending(e),
        }
    }
    Selection::Missing(skipped)
}

// === The generated config ===

/// What goes into the generated config besides the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfOptions {
    /// The plugin type (the installed binary's name).
    pub plugin_type: String,
    /// The network name.
    pub network_name: String,
    /// File name without extension.
    pub stem: String,
    /// Overrides the primary's cniVersion.
    pub cni_version: Option<CniVersion>,
    /// Host path of the kubeconfig (`None`: no Kubernetes).
    pub kubeconfig: Option<PathBuf>,
    /// Host path of the runtime's config directory (where the primary is).
    pub host_conf_dir: PathBuf,
    /// Host path written as `confDir`.
    pub conf_dir: PathBuf,
    /// `cniDir`: the cache directory (host path).
    pub cni_dir: Option<PathBuf>,
    /// `binDir`.
    pub bin_dir: Option<PathBuf>,
    /// `daemonSocketDir` (daemon mode: the shim's config).
    pub daemon_socket_dir: Option<PathBuf>,
    /// `thinBinary` (daemon mode, when the thin binary is not `plexus`): the host path of the binary the
    /// shim runs for a DEL while the daemon is down (by default the `plexus` beside the shim).
    pub thin_binary: Option<PathBuf>,
    /// `namespaceIsolation` (written when true).
    pub namespace_isolation: bool,
    /// `globalNamespaces`.
    pub global_namespaces: Option<String>,
    /// `readinessindicatorfile`.
    pub readiness_indicator_file: Option<PathBuf>,
    /// `logLevel`.
    pub log_level: Option<String>,
    /// `logFile`.
    pub log_file: Option<PathBuf>,
    /// `logToStderr`.
    pub log_to_stderr: Option<bool>,
    /// `strictCapabilities`.
    pub strict_capabilities: Option<bool>,
    /// `allowedPluginTypes` (`None`: not written, every type allowed).
    pub allowed_plugin_types: Option<Vec<String>>,
    /// `allowedPluginTypesByNamespace` (written when not empty).
    pub allowed_plugin_types_by_namespace: BTreeMap<String, Vec<String>>,
    /// `auxiliaryCNIChainName`.
    pub auxiliary_cni_chain_name: Option<String>,
}

/// A generated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Its file name (`<stem>.conflist` or `<stem>.conf`).
    pub file_name: String,
    /// The name of the other extension, removed when present.
    pub stale_name: String,
    /// The file's content (pretty JSON and a newline).
    pub bytes: Vec<u8>,
    /// Its cniVersion.
    pub cni_version: CniVersion,
}

/// Why no config can be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The primary's version is not one plexus speaks.
    #[error(
        "the primary {file} has cniVersion {version:?}, which plexus does not support; pass --cni-version to choose the version of plexus's config"
    )]
    Version {
        /// The primary.
        file: String,
        /// Its version.
        version: String,
    },
}

fn path_str(p: &Path) -> Value {
    Value::String(p.to_string_lossy().into_owned())
}

/// The generated config for `primary`.
pub fn render(primary: &PrimaryInfo, opts: &ConfOptions) -> Result<Rendered, RenderError> {
    let version = match opts.cni_version {
        Some(v) => v,
        None => CniVersion::from_config_str(primary.cni_version.as_deref()).map_err(|_| {
            RenderError::Version {
                file: primary.file.clone(),
                version: primary.cni_version.clone().unwrap_or_default(),
            }
        })?,
    };
    let mut plugin = Map::new();
    plugin.insert("type".into(), json!(opts.plugin_type));
    if !primary.capabilities.is_empty() {
        let caps: Map<String, Value> = primary
            .capabilities
            .iter()
            .map(|c| (c.clone(), Value::Bool(true)))
            .collect();
        plugin.insert("capabilities".into(), Value::Object(caps));
    }
    if let Some(k) = &opts.kubeconfig {
        plugin.insert("kubeconfig".into(), path_str(k));
    }
    plugin.insert(
        "clusterNetwork".into(),
        path_str(&opts.host_conf_dir.join(&primary.file)),
    );
    plugin.insert("confDir".into(), path_str(&opts.conf_dir));
    if let Some(c) = &opts.cni_dir {
        plugin.insert("cniDir".into(), path_str(c));
    }
    if let Some(b) = &opts.bin_dir {
        plugin.insert("binDir".into(), path_str(b));
    }
    if let Some(d) = &opts.daemon_socket_dir {
        plugin.insert("daemonSocketDir".into(), path_str(d));
    }
    if let Some(t) = &opts.thin_binary {
        plugin.insert("thinBinary".into(), path_str(t));
    }
    if opts.namespace_isolation {
        plugin.insert("namespaceIsolation".into(), Value::Bool(true));
    }
    if let Some(g) = &opts.global_namespaces {
        plugin.insert("globalNamespaces".into(), json!(g));
    }
    if let Some(r) = &opts.readiness_indicator_file {
        plugin.insert("readinessindicatorfile".into(), path_str(r));
    }
    if let Some(l) = &opts.log_level {
        plugin.insert("logLevel".into(), json!(l));
    }
    if let Some(f) = &opts.log_file {
        plugin.insert("logFile".into(), path_str(f));
    }
    if let Some(b) = opts.log_to_stderr {
        plugin.insert("logToStderr".into(), Value::Bool(b));
    }
    if let Some(b) = opts.strict_capabilities {
        plugin.insert("strictCapabilities".into(), Value::Bool(b));
    }
    if let Some(types) = &opts.allowed_plugin_types {
        plugin.insert("allowedPluginTypes".into(), json!(types));
    }
    if !opts.allowed_plugin_types_by_namespace.is_empty() {
        plugin.insert(
            "allowedPluginTypesByNamespace".into(),
            json!(opts.allowed_plugin_types_by_namespace),
        );
    }
    if let Some(chain) = &opts.auxiliary_cni_chain_name {
        plugin.insert("auxiliaryCNIChainName".into(), json!(chain));
    }

    let [conf_name, list_name] = output_names(&opts.stem);
    let mut top = Map::new();
    top.insert("cniVersion".into(), json!(version.as_str()));
    top.insert("name".into(), json!(opts.network_name));
    let (file_name, stale_name) = if version >= FIRST_CONFLIST_VERSION {
        top.insert("plugins".into(), Value::Array(vec![Value::Object(plugin)]));
        (list_name, conf_name)
    } else {
        top.extend(plugin);
        (conf_name, list_name)
    };
    // Serialising a JSON value built here cannot fail.
    let mut bytes = serde_json::to_vec_pretty(&Value::Object(top)).unwrap_or_default();
    bytes.push(b'\n');
    Ok(Rendered {
        file_name,
        stale_name,
        bytes,
        cni_version: version,
    })
}

/// The plugin type of a generated config file's content (for the readiness probe).
pub fn generated_type(bytes: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let obj = v.as_object()?;
    plugin_type_of("", obj).ok().map(|(t, _)| t)
}

// === The kubeconfig ===

/// Why no kubeconfig can be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeconfigError {
    /// KUBERNETES_SERVICE_HOST/PORT are missing or invalid.
    #[error("{0}")]
    Server(String),
    /// The token is empty or malformed.
    #[error("the service-account token is empty or contains whitespace")]
    Token,
    /// The CA is empty.
    #[error("the service-account CA (ca.crt) is empty")]
    Ca,
}

/// The API server URL from `KUBERNETES_SERVICE_HOST`, `_PORT` and `_PROTOCOL` (default https), as Go
/// Multus builds it.
pub fn api_server_url(
    host: Option<&str>,
    port: Option<&str>,
    protocol: Option<&str>,
) -> Result<String, KubeconfigError> {
    let (Some(host), Some(port)) = (
        host.map(str::trim).filter(|h| !h.is_empty()),
        port.map(str::trim).filter(|p| !p.is_empty()),
    ) else {
        return Err(KubeconfigError::Server(
            "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set (the installer runs in a pod; \
             pass --no-kubeconfig to run plexus without Kubernetes)"
                .into(),
        ));
    };
    if port.parse::<u16>().is_err() {
        return Err(KubeconfigError::Server(format!(
            "KUBERNETES_SERVICE_PORT {port:?} is not a port number"
        )));
    }
    let protocol = protocol
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .unwrap_or("https");
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Ok(format!("{protocol}://{host}:{port}"))
}

/// The node's kubeconfig (YAML): the API server, the CA inline, the token inline. The plugin runs on the
/// host and cannot read the pod's projected token, so the installer rewrites this file when the token
/// rotates (docs/multus-compat.md, "Installation").
pub fn render_kubeconfig(
    server: &str,
    ca: &[u8],
    token: &str,
    user: &str,
) -> Result<String, KubeconfigError> {
    let token = token.trim();
    if token.is_empty() || token.chars().any(char::is_whitespace) {
        return Err(KubeconfigError::Token);
    }
    if ca.iter().all(u8::is_ascii_whitespace) {
        return Err(KubeconfigError::Ca);
    }
    let ca = base64::engine::general_purpose::STANDARD.encode(ca);
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": format!("{user}-context"), "context": {"cluster": "local", "user": user}}],
        "current-context": format!("{user}-context"),
    });
    let body = serde_saphyr::to_string(&doc).map_err(|e| KubeconfigError::Server(e.to_string()))?;
    Ok(format!(
        "# Written by `plexus install` from its service account; rewritten when the token or CA rotates.\n{body}"
    ))
}

// === Paths ===

/// Maps host paths to where the installer sees them: each mounted directory (host → container), else
/// under a prefix where the host's paths are visible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathMap {
    dirs: Vec<(PathBuf, PathBuf)>,
    prefix: PathBuf,
}

impl PathMap {
    /// A map from (host dir, container dir) pairs and the fallback prefix.
    pub fn new(dirs: Vec<(PathBuf, PathBuf)>, prefix: PathBuf) -> PathMap {
        PathMap { dirs, prefix }
    }

    /// Where the installer finds host path `host`: under the longest matching mounted directory, else
    /// under the prefix.
    pub fn to_container(&self, host: &Path) -> PathBuf {
        let best = self
            .dirs
            .iter()
            .filter_map(|(h, c)| host.strip_prefix(h).ok().map(|rest| (h, c, rest)))
            .max_by_key(|(h, _, _)| h.components().count());
        match best {
            Some((_, c, rest)) if rest.as_os_str().is_empty() => c.clone(),
            Some((_, c, rest)) => c.join(rest),
            None => self.prefix.join(host.strip_prefix("/").unwrap_or(host)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn select_in(files: &BTreeMap<&str, &str>, stem: &str, pinned: Option<&str>) -> Selection {
        let list: Vec<String> = files.keys().map(|s| s.to_string()).collect();
        select(&list, stem, &META_TYPES, pinned, |n| {
            files
                .get(n)
                .map(|s| s.as_bytes().to_vec())
                .ok_or_else(|| "gone".to_string())
        })
    }

    fn opts() -> ConfOptions {
        ConfOptions {
            plugin_type: "plexus".into(),
            network_name: "plexus-cni-network".into(),
            stem: "00-plexus".into(),
            cni_version: None,
            kubeconfig: Some("/etc/cni/net.d/plexus.d/plexus.kubeconfig".into()),
            host_conf_dir: "/etc/cni/net.d".into(),
            conf_dir: "/etc/cni/multus/net.d".into(),
            cni_dir: None,
            bin_dir: None,
            daemon_socket_dir: None,
            thin_binary: None,
            namespace_isolation: false,
            global_namespaces: None,
            readiness_indicator_file: None,
            log_level: None,
            log_file: None,
            log_to_stderr: None,
            strict_capabilities: None,
            allowed_plugin_types: None,
            allowed_plugin_types_by_namespace: BTreeMap::new(),
            auxiliary_cni_chain_name: None,
        }
    }

    const CALICO: &str = r#"{"cniVersion":"0.3.1","name":"k8s-pod-network","plugins":[
        {"type":"calico","capabilities":{}},
        {"type":"bandwidth","capabilities":{"bandwidth":true}},
        {"type":"portmap","capabilities":{"portMappings":true,"snat":false}}]}"#;

    #[test]
    fn names_are_classified_like_libcni_with_backups_dotfiles_and_our_output_out() {
        for (name, class) in [
            ("10-calico.conflist", NameClass::Candidate),
            ("10-flannel.conf", NameClass::Candidate),
            ("10-x.json", NameClass::Candidate),
            ("00-plexus.conflist", NameClass::Own),
            ("00-plexus.conf", NameClass::Own),
            ("00-multus.conf", NameClass::Candidate),
            ("10-calico.conflist.bak", NameClass::NotConfig),
            ("05-cilium.conflist.cilium_bak", NameClass::NotConfig),
            ("10-x.conf.old", NameClass::NotConfig),
            ("plexus.d", NameClass::NotConfig),
            (".00-plexus.conflist.plexus-tmp", NameClass::Hidden),
            (".hidden.conf", NameClass::Hidden),
        ] {
            assert_eq!(classify(name, "00-plexus"), class, "{name}");
        }
    }

    #[test]
    fn the_lexically_first_candidate_wins_and_capabilities_are_unioned_across_plugins() {
        let files = BTreeMap::from([
            (
                "20-other.conf",
                r#"{"cniVersion":"1.0.0","name":"o","type":"bridge"}"#,
            ),
            ("10-calico.conflist", CALICO),
            (
                "00-plexus.conflist",
                r#"{"cniVersion":"1.0.0","name":"p","plugins":[{"type":"plexus"}]}"#,
            ),
            ("05-backup.conflist.bak", CALICO),
        ]);
        let Selection::Found(p, skipped) = select_in(&files, "00-plexus", None) else {
            panic!("no primary");
        };
        assert!(skipped.is_empty(), "our own output is not even inspected");
        assert_eq!(p.file, "10-calico.conflist");
        assert!(p.is_list);
        assert_eq!(p.cni_version.as_deref(), Some("0.3.1"));
        assert_eq!(
            p.capabilities.iter().collect::<Vec<_>>(),
            ["bandwidth", "portMappings"],
            "true ones only, from every plugin"
        );
    }

    #[test]
    fn meta_plugin_configs_are_skipped_never_wrapped() {
        // #1324/#1108: after a restart Go Multus wrapped its own config. Any meta-plugin config is passed over.
        let files = BTreeMap::from([
            (
                "00-multus.conf",
                r#"{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus","delegates":[]}"#,
            ),
            (
                "01-shim.conflist",
                r#"{"cniVersion":"1.0.0","name":"m","plugins":[{"type":"multus-shim"}]}"#,
            ),
            (
                "02-old-plexus.conf",
                r#"{"cniVersion":"1.0.0","name":"x","type":"plexus"}"#,
            ),
            (
                "10-flannel.conflist",
                r#"{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"flannel"}]}"#,
            ),
        ]);
        let Selection::Found(p, skipped) = select_in(&files, "00-plexus", None) else {
            panic!("no primary");
        };
        assert_eq!(p.file, "10-flannel.conflist");
        assert_eq!(skipped.len(), 3);
        assert!(
            skipped
                .iter()
                .all(|e| matches!(e, PrimaryError::MetaPlugin { .. }))
        );

        let only_meta = BTreeMap::from([("00-multus.conf", files["00-multus.conf"])]);
        assert!(
            matches!(select_in(&only_meta, "00-plexus", None), Selection::Missing(s) if s.len() == 1)
        );
        // Pinning a meta-plugin config is refused outright.
        assert!(matches!(
            select_in(&files, "00-plexus", Some("00-multus.conf")),
            Selection::Refused(PrimaryError::MetaPlugin { .. })
        ));
    }

    #[test]
    fn a_half_written_first_candidate_means_wait_not_the_next_file() {
        // #1499: picking the next file during a boot race wraps the wrong network; #1155: never write empty.
        for bad in [
            "",
            "  \n",
            "{\"cniVersion\":",
            "[]",
            r#"{"name":"x"}"#,
            r#"{"plugins":[]}"#,
        ] {
            let files =
                BTreeMap::from([("05-cilium.conflist", bad), ("10-calico.conflist", CALICO)]);
            assert!(
                matches!(
                    select_in(&files, "00-plexus", None),
                    Selection::Pending(PrimaryError::NotAConfig { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn no_candidate_is_missing_and_a_pinned_file_is_the_only_one_considered() {
        let files = BTreeMap::from([
            ("10-calico.conflist", CALICO),
            (
                "99-late.conf",
                r#"{"cniVersion":"0.4.0","name":"late","type":"ptp"}"#,
            ),
        ]);
        assert_eq!(
            select_in(&BTreeMap::new(), "00-plexus", None),
            Selection::Missing(vec![])
        );
        let Selection::Found(p, _) = select_in(&files, "00-plexus", Some("99-late.conf")) else {
            panic!()
        };
        assert_eq!(p.file, "99-late.conf");
        assert_eq!(
            select_in(&files, "00-plexus", Some("50-absent.conf")),
            Selection::Missing(vec![])
        );
    }

    #[test]
    fn a_conf_primary_below_1_0_0_gives_a_conf_with_top_level_keys() {
        let p = inspect(
            "10-flannel.conf",
            br#"{"cniVersion":"0.3.1","name":"cbr0","type":"flannel","capabilities":{"portMappings":true,"ips":false}}"#,
            &META_TYPES,
        )
        .unwrap();
        let r = render(&p, &opts()).unwrap();
        assert_eq!(r.file_name, "00-plexus.conf");
        assert_eq!(r.stale_name, "00-plexus.conflist");
        let v: Value = serde_json::from_slice(&r.bytes).unwrap();
        assert_eq!(
            v,
            json!({
                "cniVersion": "0.3.1",
                "name": "plexus-cni-network",
                "type": "plexus",
                "capabilities": {"portMappings": true},
                "kubeconfig": "/etc/cni/net.d/plexus.d/plexus.kubeconfig",
                "clusterNetwork": "/etc/cni/net.d/10-flannel.conf",
                "confDir": "/etc/cni/multus/net.d",
            })
        );
        assert!(
            v.get("cniConf").is_none(),
            "confDir, not the cniConf typo (docs/multus-compat.md, \"Installation\")"
        );
        // plexus itself accepts it.
        crate::pure::config::Config::from_bytes(&r.bytes).unwrap();
    }

    #[test]
    fn from_1_0_0_the_output_is_a_conflist_with_one_plugin() {
        for v in ["1.0.0", "1.1.0"] {
            let p = inspect(
                "10-x.conflist",
                CALICO.replace("0.3.1", v).as_bytes(),
                &META_TYPES,
            )
            .unwrap();
            let r = render(&p, &opts()).unwrap();
            assert_eq!(r.file_name, "00-plexus.conflist");
            assert_eq!(r.stale_name, "00-plexus.conf");
            let doc: Value = serde_json::from_slice(&r.bytes).unwrap();
            assert_eq!(doc["cniVersion"], v);
            assert_eq!(doc["name"], "plexus-cni-network");
            let plugins = doc["plugins"].as_array().unwrap();
            assert_eq!(plugins.len(), 1);
            assert_eq!(plugins[0]["type"], "plexus");
            assert_eq!(
                plugins[0]["capabilities"],
                json!({"bandwidth": true, "portMappings": true})
            );
            assert!(plugins[0].get("cniVersion").is_none());
        }
    }

    #[test]
    fn options_are_written_and_the_version_can_be_overridden() {
        let p = inspect(
            "10-x.conf",
            br#"{"cniVersion":"0.4.0","name":"x","type":"bridge"}"#,
            &META_TYPES,
        )
        .unwrap();
        let mut o = opts();
        o.cni_version = Some(CniVersion::V1_1_0);
        o.namespace_isolation = true;
        o.global_namespaces = Some("default,shared".into());
        o.readiness_indicator_file = Some("/run/flannel/subnet.env".into());
        o.log_level = Some("verbose".into());
        o.log_file = Some("/var/log/plexus.log".into());
        o.log_to_stderr = Some(false);
        o.strict_capabilities = Some(false);
        o.bin_dir = Some("/opt/extra/bin".into());
        o.kubeconfig = None;
        o.allowed_plugin_types = Some(vec!["macvlan".into(), "host-local".into()]);
        o.allowed_plugin_types_by_namespace =
            BTreeMap::from([("sriov-team".to_string(), vec!["sriov".to_string()])]);
        o.auxiliary_cni_chain_name = Some("vendor-cni-chain".into());
        let r = render(&p, &o).unwrap();
        assert_eq!(r.cni_version, CniVersion::V1_1_0);
        let doc: Value = serde_json::from_slice(&r.bytes).unwrap();
        let plugin = &doc["plugins"][0];
        assert_eq!(plugin["namespaceIsolation"], true);
        assert_eq!(plugin["globalNamespaces"], "default,shared");
        assert_eq!(plugin["readinessindicatorfile"], "/run/flannel/subnet.env");
        assert_eq!(plugin["logLevel"], "verbose");
        assert_eq!(plugin["logFile"], "/var/log/plexus.log");
        assert_eq!(plugin["logToStderr"], false);
        assert_eq!(plugin["strictCapabilities"], false);
        assert_eq!(plugin["binDir"], "/opt/extra/bin");
        assert_eq!(
            plugin["allowedPluginTypes"],
            json!(["macvlan", "host-local"])
        );
        assert_eq!(
            plugin["allowedPluginTypesByNamespace"],
            json!({"sriov-team": ["sriov"]})
        );
        assert_eq!(plugin["auxiliaryCNIChainName"], "vendor-cni-chain");
        // plexus accepts them as the runtime passes its entry (with the list's name and version).
        let mut entry = plugin.clone();
        entry["cniVersion"] = doc["cniVersion"].clone();
        entry["name"] = doc["name"].clone();
        let config =
            crate::pure::config::Config::from_bytes(&serde_json::to_vec(&entry).unwrap()).unwrap();
        assert!(config.allowed_plugin_types.restricts());
        assert!(plugin.get("kubeconfig").is_none());
        assert!(
            plugin.get("capabilities").is_none(),
            "no capability, no key"
        );
    }

    #[test]
    fn daemon_mode_renders_the_shim_config_which_thin_plexus_can_tear_down_from() {
        let p = inspect(
            "10-calico.conflist",
            CALICO.replace("0.3.1", "1.0.0").as_bytes(),
            &META_TYPES,
        )
        .unwrap();
        let mut o = opts();
        o.plugin_type = "plexus-shim".into();
        o.kubeconfig = None;
        o.cni_dir = Some("/var/lib/cni/multus".into());
        o.daemon_socket_dir = Some("/run/plexus".into());
        let r = render(&p, &o).unwrap();
        assert_eq!(r.file_name, "00-plexus.conflist");
        let doc: Value = serde_json::from_slice(&r.bytes).unwrap();
        assert_eq!(
            doc,
            json!({
                "cniVersion": "1.0.0",
                "name": "plexus-cni-network",
                "plugins": [{
                    "type": "plexus-shim",
                    "capabilities": {"bandwidth": true, "portMappings": true},
                    "clusterNetwork": "/etc/cni/net.d/10-calico.conflist",
                    "confDir": "/etc/cni/multus/net.d",
                    "cniDir": "/var/lib/cni/multus",
                    "daemonSocketDir": "/run/plexus",
                }]
            }),
            "no kubeconfig: the daemon has its own client"
        );
        assert_eq!(generated_type(&r.bytes).as_deref(), Some("plexus-shim"));
        // The shim's DEL fallback hands this config (as the runtime gives a conflist's plugin) to the thin
        // plexus, which must accept it and find the cluster network and the cache in it.
        let mut plugin = doc["plugins"][0].clone();
        plugin["name"] = doc["name"].clone();
        plugin["cniVersion"] = doc["cniVersion"].clone();
        let c =
            crate::pure::config::Config::from_bytes(&serde_json::to_vec(&plugin).unwrap()).unwrap();
        assert_eq!(c.kubeconfig, None);
        assert_eq!(c.cni_dir, PathBuf::from("/var/lib/cni/multus"));
        assert!(
            matches!(c.primary, crate::pure::config::Primary::ClusterNetwork(_)),
            "{:?}",
            c.primary
        );

        // The shim reads its own keys from the same config.
        let shim =
            plexus_shim::conf::ShimConf::parse(&serde_json::to_vec(&plugin).unwrap()).unwrap();
        assert_eq!(shim.socket_path(), PathBuf::from("/run/plexus/plexus.sock"));
        assert_eq!(
            shim.socket_dir,
            PathBuf::from(plexus_shim::wire::DEFAULT_SOCKET_DIR)
        );
        assert_eq!(shim.thin_binary, None, "the plexus beside the shim");

        // A thin binary not named plexus is named for the fallback.
        o.thin_binary = Some("/opt/cni/bin/multus".into());
        let doc: Value = serde_json::from_slice(&render(&p, &o).unwrap().bytes).unwrap();
        assert_eq!(doc["plugins"][0]["thinBinary"], "/opt/cni/bin/multus");
        let shim =
            plexus_shim::conf::ShimConf::parse(&serde_json::to_vec(&doc["plugins"][0]).unwrap())
                .unwrap();
        assert_eq!(shim.thin_binary, Some(PathBuf::from("/opt/cni/bin/multus")));
    }

    #[test]
    fn a_plexus_shim_config_is_a_meta_plugin_config() {
        let files = BTreeMap::from([
            (
                "00-plexus.conflist",
                r#"{"cniVersion":"1.0.0","name":"p","plugins":[{"type":"plexus-shim"}]}"#,
            ),
            (
                "01-leftover.conf",
                r#"{"cniVersion":"0.4.0","name":"p","type":"plexus-shim","daemonSocketDir":"/run/plexus"}"#,
            ),
            ("10-calico.conflist", CALICO),
        ]);
        // Under another stem, our own daemon-mode output is skipped for its type, never wrapped.
        let Selection::Found(p, skipped) = select_in(&files, "05-other", None) else {
            panic!("no primary");
        };
        assert_eq!(p.file, "10-calico.conflist");
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(matches!(
            select_in(&files, "05-other", Some("01-leftover.conf")),
            Selection::Refused(PrimaryError::MetaPlugin { plugin_type, .. }) if plugin_type == "plexus-shim"
        ));
    }

    #[test]
    fn an_unknown_primary_version_needs_an_override() {
        let p = inspect(
            "10-x.conf",
            br#"{"cniVersion":"9.9.9","name":"x","type":"bridge"}"#,
            &META_TYPES,
        )
        .unwrap();
        assert!(matches!(
            render(&p, &opts()),
            Err(RenderError::Version { .. })
        ));
        let mut o = opts();
        o.cni_version = Some(CniVersion::V1_0_0);
        assert!(render(&p, &o).is_ok());
        // A missing cniVersion is 0.1.0 (CNI-40).
        let p = inspect("10-x.conf", br#"{"name":"x","type":"bridge"}"#, &META_TYPES).unwrap();
        assert_eq!(render(&p, &opts()).unwrap().cni_version, CniVersion::V0_1_0);
    }

    #[test]
    fn shadowing_lists_config_files_the_runtime_would_pick_first() {
        let n = names(&[
            "00-multus.conf",
            "00-plexus.conf",
            "00-plexus.conflist",
            "10-calico.conflist",
            "00-a.bak",
        ]);
        assert_eq!(
            shadowing(&n, "00-plexus", "00-plexus.conflist"),
            ["00-multus.conf"]
        );
        assert!(
            shadowing(
                &names(&["10-calico.conflist"]),
                "00-plexus",
                "00-plexus.conf"
            )
            .is_empty()
        );
    }

    #[test]
    fn generated_type_reads_confs_and_conflists() {
        assert_eq!(
            generated_type(br#"{"type":"multus"}"#).as_deref(),
            Some("multus")
        );
        assert_eq!(
            generated_type(br#"{"plugins":[{"type":"plexus"}]}"#).as_deref(),
            Some("plexus")
        );
        assert_eq!(generated_type(b"nope"), None);
    }

    #[test]
    fn server_urls() {
        assert_eq!(
            api_server_url(Some("10.96.0.1"), Some("443"), None).unwrap(),
            "https://10.96.0.1:443"
        );
        assert_eq!(
            api_server_url(Some("fd00::1"), Some("6443"), Some("https")).unwrap(),
            "https://[fd00::1]:6443"
        );
        assert!(api_server_url(None, Some("443"), None).is_err());
        assert!(api_server_url(Some("h"), Some("https"), None).is_err());
    }

    #[test]
    fn the_kubeconfig_is_what_kube_rs_reads() {
        let text = render_kubeconfig(
            "https://10.96.0.1:443",
            b"-----BEGIN CERTIFICATE-----\nabc\n",
            "tok.en-1\n",
            "plexus",
        )
        .unwrap();
        let k = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(k.current_context.as_deref(), Some("plexus-context"));
        let cluster = k.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.96.0.1:443"));
        let ca = base64::engine::general_purpose::STANDARD
            .decode(cluster.certificate_authority_data.as_ref().unwrap())
            .unwrap();
        assert_eq!(ca, b"-----BEGIN CERTIFICATE-----\nabc\n");
        let user = k.auth_infos[0].auth_info.as_ref().unwrap();
        // kube-rs serialises the secret as written.
        assert_eq!(serde_json::to_value(user).unwrap()["token"], "tok.en-1");
        assert_eq!(
            render_kubeconfig("s", b"ca", "", "plexus"),
            Err(KubeconfigError::Token)
        );
        assert_eq!(
            render_kubeconfig("s", b"ca", "a b", "plexus"),
            Err(KubeconfigError::Token)
        );
        assert_eq!(
            render_kubeconfig("s", b"\n", "t", "plexus"),
            Err(KubeconfigError::Ca)
        );
    }

    #[test]
    fn host_paths_map_to_the_longest_mounted_directory_else_the_prefix() {
        let m = PathMap::new(
            vec![
                ("/etc/cni/net.d".into(), "/host/etc/cni/net.d".into()),
                ("/etc/cni/net.d/sub".into(), "/elsewhere".into()),
            ],
            "/host".into(),
        );
        assert_eq!(
            m.to_container(Path::new("/etc/cni/net.d/plexus.d/k")),
            PathBuf::from("/host/etc/cni/net.d/plexus.d/k")
        );
        assert_eq!(
            m.to_container(Path::new("/etc/cni/net.d/sub/x")),
            PathBuf::from("/elsewhere/x")
        );
        assert_eq!(
            m.to_container(Path::new("/etc/cni/net.d")),
            PathBuf::from("/host/etc/cni/net.d")
        );
        assert_eq!(
            m.to_container(Path::new("/etc/cni/net.dx")),
            PathBuf::from("/host/etc/cni/net.dx")
        );
        assert_eq!(
            m.to_container(Path::new("/run/flannel/subnet.env")),
            PathBuf::from("/host/run/flannel/subnet.env")
        );
    }
}
