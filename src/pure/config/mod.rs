//! The plexus config validated into rich types, with Go Multus's defaults (docs/multus-compat.md,
//! "Config keys").

pub mod allowlist;
pub mod raw;

use std::{
    collections::BTreeMap,
    path::{Component, Path, PathBuf},
    time::Duration,
};

use plexus_cni::{CniVersion, GcAttachment, gc::parse_valid_attachments, validate};
use serde_json::{Map, Value};

pub use allowlist::PluginAllowList;
pub use raw::{RawConfig, RawError};

use crate::pure::netconf::{NetConfError, NetworkConfig};

/// Multus's default `confDir`.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/multus/net.d";
/// Multus's default `cniDir`.
pub const DEFAULT_CNI_DIR: &str = "/var/lib/cni/multus";
/// Multus's default `binDir`.
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
/// Multus's default `multusNamespace`.
pub const DEFAULT_MULTUS_NAMESPACE: &str = "kube-system";
/// The kubelet's PodResources socket.
pub const DEFAULT_POD_RESOURCES_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
/// The kubelet's device-manager checkpoint.
pub const DEFAULT_KUBELET_CHECKPOINT: &str =
    "/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint";
/// Where the Device Information Spec files live (NPWG-70); the `deviceInfoDir` default.
pub const DEFAULT_DEVICE_INFO_DIR: &str = "/var/run/k8s.cni.cncf.io/devinfo";
/// The `maxAttachmentsPerPod` default: each attachment costs the node about 45 KiB of kernel memory and
/// takes an address from a pool other pods share (README, "Configuration", says why 32).
pub const DEFAULT_MAX_ATTACHMENTS_PER_POD: usize = 32;

/// Where a network named in `clusterNetwork`/`defaultNetworks` comes from (docs/multus-compat.md,
/// "Cluster and default networks").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkRef {
    /// A value with `/`: a file (conf or conflist) or a directory.
    Path(PathBuf),
    /// A NAD in `multusNamespace`, else a network in `confDir` with that `name`.
    Name(String),
}

impl NetworkRef {
    fn parse(s: &str) -> NetworkRef {
        if s.contains('/') {
            NetworkRef::Path(PathBuf::from(s))
        } else {
            NetworkRef::Name(s.to_string())
        }
    }
}

impl std::fmt::Display for NetworkRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetworkRef::Path(p) => write!(f, "{}", p.display()),
            NetworkRef::Name(n) => f.write_str(n),
        }
    }
}

/// What runs on the cluster network's interface.
#[derive(Debug, Clone, PartialEq)]
pub enum Primary {
    /// Inline `delegates`; the first is the cluster network, the rest run after it.
    Delegates(Vec<NetworkConfig>),
    /// `clusterNetwork`.
    ClusterNetwork(NetworkRef),
}

/// Log verbosity, Multus's four levels (most to least verbose).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Everything.
    Debug,
    /// Informational and up.
    Verbose,
    /// Errors and warnings.
    Error,
    /// Nothing but panics: Multus's effective default.
    Panic,
}

impl LogLevel {
    fn parse(s: &str) -> Option<LogLevel> {
        Some(match s.to_ascii_lowercase().as_str() {
            "debug" => LogLevel::Debug,
            "verbose" => LogLevel::Verbose,
            "error" => LogLevel::Error,
            "panic" => LogLevel::Panic,
            _ => return None,
        })
    }
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    /// Verbosity.
    pub level: LogLevel,
    /// Log file, rotated.
    pub file: Option<PathBuf>,
    /// Also write to stderr (Multus default: true).
    pub to_stderr: bool,
    /// Days to keep rotated files (default 5).
    pub max_age_days: u32,
    /// Megabytes before rotating (default 100).
    pub max_size_mb: u32,
    /// Rotated files kept (default 5).
    pub max_backups: u32,
    /// Gzip rotated files (default true).
    pub compress: bool,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: LogLevel::Panic,
            file: None,
            to_stderr: true,
            max_age_days: 5,
            max_size_mb: 100,
            max_backups: 5,
            compress: true,
        }
    }
}

impl LogSettings {
    /// Validate the log keys (`logLevel`, `logFile`, `logToStderr`, `logOptions`) of a network config or of
    /// the daemon config. Ignored values are described in `warnings`.
    pub fn from_raw(
        log_level: Option<String>,
        log_file: Option<String>,
        log_to_stderr: Option<bool>,
        log_options: Option<raw::RawLogOptions>,
        warnings: &mut Vec<String>,
    ) -> Result<LogSettings, ConfigError> {
        let mut log = LogSettings::default();
        if let Some(level) = log_level.filter(|l| !l.is_empty()) {
            match LogLevel::parse(&level) {
                Some(l) => log.level = l,
                None => warnings.push(format!(
                    "logLevel {level:?} ignored: valid levels are debug, verbose, error, panic"
                )),
            }
        }
        if let Some(file) = log_file.filter(|f| !f.is_empty()) {
            let p = PathBuf::from(&file);
            if !p.is_absolute() || p.file_name().is_none() {
                return Err(invalid(
                    "logFile",
                    format!("{file:?} must be an absolute path to a file"),
                ));
            }
            log.file = Some(clean(&p));
        }
        if let Some(b) = log_to_stderr {
            log.to_stderr = b;
        }
        if let Some(o) = log_options {
            let field = |key: &str, v: Option<i64>, default: u32| -> Result<u32, ConfigError> {
                match v {
                    None => Ok(default),
                    Some(n) if (0..=i64::from(u32::MAX)).contains(&n) => Ok(n as u32),
                    Some(n) => Err(invalid(
                        &format!("logOptions.{key}"),
                        format!("{n} must be a whole number ≥ 0"),
                    )),
                }
            };
            log.max_age_days = field("maxAge", o.max_age, log.max_age_days)?;
            log.max_size_mb = field("maxSize", o.max_size, log.max_size_mb)?;
            log.max_backups = field("maxBackups", o.max_backups, log.max_backups)?;
            if log.max_size_mb == 0 {
                log.max_size_mb = 100;
            }
            log.compress = o.compress.unwrap_or(log.compress);
        }
        Ok(log)
    }
}

/// The validated config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Version of this config; results returned to the runtime are converted to it.
    pub cni_version: CniVersion,
    /// Network name.
    pub name: String,
    /// `kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// The cluster network (and, for `delegates`, the static extra networks).
    pub primary: Primary,
    /// `defaultNetworks`.
    pub default_networks: Vec<NetworkRef>,
    /// `systemNamespaces` (default `["kube-system"]`).
    pub system_namespaces: Vec<String>,
    /// `multusNamespace` (default `kube-system`).
    pub multus_namespace: String,
    /// `namespaceIsolation`.
    pub namespace_isolation: bool,
    /// `globalNamespaces` (default `["default"]`; setting it replaces the default).
    pub global_namespaces: Vec<String>,
    /// `confDir`.
    pub conf_dir: PathBuf,
    /// `cniDir`: scratch caches and the delegates' libcni result cache.
    pub cni_dir: PathBuf,
    /// `binDir`, searched before `CNI_PATH`.
    pub bin_dir: PathBuf,
    /// Logging.
    pub log: LogSettings,
    /// `readinessindicatorfile`, cleaned and absolute.
    pub readiness_indicator: Option<PathBuf>,
    /// How long ADD/STATUS/GC wait for it.
    pub readiness_timeout: Duration,
    /// `capabilities` (what the runtime saw).
    pub capabilities: BTreeMap<String, bool>,
    /// `runtimeConfig` from the runtime, every key kept (goes to the cluster network only, NPWG-66).
    pub runtime_config: Map<String, Value>,
    /// `retryDeleteOnError`.
    pub retry_delete_on_error: bool,
    /// `auxiliaryCNIChainName`: the directory, next to the `clusterNetwork` file, whose plugins run as a
    /// last network behind the internal `passthru` (docs/multus-compat.md, "Auxiliary chain").
    pub auxiliary_chain: Option<String>,
    /// `strictCapabilities` (default true).
    pub strict_capabilities: bool,
    /// Per-delegate time limit (default 60 s).
    pub delegate_timeout: Duration,
    /// Per-container lock wait (default 60 s).
    pub lock_timeout: Duration,
    /// One Kubernetes API request's time limit (default 5 s).
    pub api_timeout: Duration,
    /// All Kubernetes API calls of one operation, retries included (default 30 s).
    pub api_budget: Duration,
    /// `maxAttachmentsPerPod`: the most attachments one pod may get, its share of the node's own networks
    /// included (default [`DEFAULT_MAX_ATTACHMENTS_PER_POD`]).
    pub max_attachments_per_pod: usize,
    /// `podResourcesSocket`: the kubelet PodResources API (default
    /// `/var/lib/kubelet/pod-resources/kubelet.sock`).
    pub pod_resources_socket: PathBuf,
    /// `kubeletCheckpointFile`: the device-manager checkpoint, the fallback when the socket is missing
    /// (default `/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint`).
    pub kubelet_checkpoint: PathBuf,
    /// `deviceInfoDir`: the Device Information Spec directory (default
    /// `/var/run/k8s.cni.cncf.io/devinfo`).
    pub device_info_dir: PathBuf,
    /// `allowedPluginTypes`, `allowedPluginTypesByNamespace`: the plugin types NADs may run (default:
    /// every type). The node's own networks are not subject to it.
    pub allowed_plugin_types: PluginAllowList,
    /// GC: attachments the runtime still considers valid.
    pub valid_attachments: Option<Vec<GcAttachment>>,
    /// Unknown keys, kept.
    pub extra: Map<String, Value>,
    /// Values that were ignored, to be logged once logging is up.
    pub warnings: Vec<String>,
}

/// A config that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// Stdin is not a config (code 6).
    #[error(transparent)]
    Raw(#[from] RawError),
    /// The version is not one we speak (code 1).
    #[error(
        "incompatible CNI versions: config is {given:?}, plugin supports [{}]",
        supported()
    )]
    Version {
        /// As given.
        given: String,
    },
    /// A key's value is invalid (code 7).
    #[error("config key {key}: {reason}")]
    Invalid {
        /// The key.
        key: String,
        /// What is wrong and what is valid.
        reason: String,
    },
    /// A `delegates` entry is invalid (code 7).
    #[error("config key delegates[{index}]: {source}")]
    Delegate {
        /// Position in `delegates`.
        index: usize,
        /// Why.
        source: NetConfError,
    },
}

fn supported() -> String {
    CniVersion::ALL
        .iter()
        .map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        reason: reason.into(),
    }
}

fn seconds(key: &str, v: Option<f64>, default: f64) -> Result<Duration, ConfigError> {
    let s = v.unwrap_or(default);
    if !(s.is_finite() && s > 0.0 && s <= 86_400.0) {
        return Err(invalid(
            key,
            format!("{s} is not a number of seconds between 0 (exclusive) and 86400"),
        ));
    }
    Ok(Duration::from_secs_f64(s))
}

fn absolute_dir(key: &str, v: Option<String>, default: &str) -> Result<PathBuf, ConfigError> {
    let s = v
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.to_string());
    let p = PathBuf::from(&s);
    if !p.is_absolute() {
        return Err(invalid(key, format!("{s:?} must be an absolute path")));
    }
    Ok(clean(&p))
}

/// Lexically clean a path: drop `.` and resolve `..` (Go's filepath.Clean).
pub fn clean(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

impl Config {
    /// Parse and validate stdin bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Config, ConfigError> {
        let raw = RawConfig::parse(bytes)?;
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| RawError::Syntax(crate::pure::netconf::decode_reason(&e)))?;
        Self::validate(raw, &value)
    }

    /// Validate a raw config. `value` is the same config as JSON (for the GC attachment keys).
    pub fn validate(raw: RawConfig, value: &Value) -> Result<Config, ConfigError> {
        let RawConfig {
            cni_version,
            name,
            plugin_type: _,
            kubeconfig,
            delegates,
            cluster_network,
            default_networks,
            system_namespaces,
            multus_namespace,
            namespace_isolation,
            global_namespaces,
            conf_dir,
            cni_dir,
            bin_dir,
            log_file,
            log_level,
            log_to_stderr,
            log_options,
            readiness_indicator_file,
            capabilities,
            runtime_config,
            retry_delete_on_error,
            auxiliary_cni_chain_name,
            prev_result: _,
            valid_attachments: _,
            attachments: _,
            strict_capabilities,
            delegate_timeout_seconds,
            lock_timeout_seconds,
            readiness_indicator_timeout_seconds,
            api_timeout_seconds,
            api_budget_seconds,
            max_attachments_per_pod,
            pod_resources_socket,
            kubelet_checkpoint_file,
            device_info_dir,
            allowed_plugin_types,
            allowed_plugin_types_by_namespace,
            extra,
        } = raw;
        let mut warnings = Vec::new();

        let cni_version = CniVersion::from_config_str(cni_version.as_deref()).map_err(|_| {
            ConfigError::Version {
                given: cni_version.clone().unwrap_or_default(),
            }
        })?;
        let name = name.unwrap_or_default();
        if name.is_empty() {
            return Err(invalid("name", "missing network name"));
        }
        validate::network_name(&name).map_err(|e| invalid("name", e.to_string()))?;

        let cluster_network = cluster_network.filter(|s| !s.trim().is_empty());
        let primary = match (cluster_network, delegates) {
            (Some(cn), delegates) => {
                if delegates.as_ref().is_some_and(|d| !d.is_empty()) {
                    warnings.push(
                        "both clusterNetwork and delegates are set; delegates are ignored"
                            .to_string(),
                    );
                }
                Primary::ClusterNetwork(NetworkRef::parse(cn.trim()))
            }
            (None, Some(delegates)) if !delegates.is_empty() => {
                let mut list = Vec::with_capacity(delegates.len());
                for (index, d) in delegates.into_iter().enumerate() {
                    let net = NetworkConfig::from_value(d)
                        .and_then(|n| n.with_version_if_missing(cni_version))
                        .map_err(|source| ConfigError::Delegate { index, source })?;
                    net.require_name()
                        .map_err(|source| ConfigError::Delegate { index, source })?;
                    list.push(net);
                }
                Primary::Delegates(list)
            }
            _ => {
                return Err(invalid(
                    "delegates",
                    "at least one delegate/clusterNetwork must be specified (clusterNetwork: a path or network name; delegates: a list of CNI configs)",
                ));
            }
        };

        let default_networks = default_networks
            .unwrap_or_default()
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(NetworkRef::parse)
            .collect();

        let global_namespaces = match global_namespaces {
            Some(g) => g
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            None => vec!["default".to_string()],
        };

        let log = LogSettings::from_raw(
            log_level,
            log_file,
            log_to_stderr,
            log_options,
            &mut warnings,
        )?;

        let readiness_indicator = match readiness_indicator_file.filter(|s| !s.is_empty()) {
            None => None,
            Some(f) => {
                let p = PathBuf::from(&f);
                let p = if p.is_absolute() {
                    p
                } else {
                    std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
                };
                Some(clean(&p))
            }
        };

        let capabilities = capabilities
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| v.as_bool().map(|b| (k, b)))
            .collect();

        let auxiliary_chain = auxiliary_cni_chain_name.filter(|s| !s.is_empty());
        // It names a directory and the chain's network: a network name can hold no path (CNI-1).
        if let Some(aux) = &auxiliary_chain {
            validate::network_name(aux)
                .map_err(|e| invalid("auxiliaryCNIChainName", e.to_string()))?;
        }
        let kubeconfig = kubeconfig.filter(|s| !s.is_empty()).map(PathBuf::from);
        let multus_namespace = multus_namespace
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_MULTUS_NAMESPACE.to_string());
        // It becomes part of API paths (hostile input, issue 6).
        if let Some(why) = crate::pure::names::label_error(&multus_namespace) {
            return Err(invalid("multusNamespace", format!("{why} (NPWG-9)")));
        }

        Ok(Config {
            cni_version,
            name,
            kubeconfig,
            primary,
            default_networks,
            system_namespaces: system_namespaces.unwrap_or_else(|| vec!["kube-system".to_string()]),
            multus_namespace,
            namespace_isolation: namespace_isolation.unwrap_or(false),
            global_namespaces,
            conf_dir: absolute_dir("confDir", conf_dir, DEFAULT_CONF_DIR)?,
            cni_dir: absolute_dir("cniDir", cni_dir, DEFAULT_CNI_DIR)?,
            bin_dir: absolute_dir("binDir", bin_dir, DEFAULT_BIN_DIR)?,
            log,
            readiness_indicator,
            readiness_timeout: seconds(
                "readinessIndicatorTimeoutSeconds",
                readiness_indicator_timeout_seconds,
                45.0,
            )?,
            capabilities,
            runtime_config: runtime_config.unwrap_or_default(),
            retry_delete_on_error: retry_delete_on_error.unwrap_or(false),
            auxiliary_chain,
            strict_capabilities: strict_capabilities.unwrap_or(true),
            delegate_timeout: seconds("delegateTimeoutSeconds", delegate_timeout_seconds, 60.0)?,
            lock_timeout: seconds("lockTimeoutSeconds", lock_timeout_seconds, 60.0)?,
            api_timeout: seconds("apiTimeoutSeconds", api_timeout_seconds, 5.0)?,
            api_budget: seconds("apiBudgetSeconds", api_budget_seconds, 30.0)?,
            max_attachments_per_pod: match max_attachments_per_pod {
                None => DEFAULT_MAX_ATTACHMENTS_PER_POD,
                Some(0) => {
                    return Err(invalid(
                        "maxAttachmentsPerPod",
                        "0 would refuse every pod; it must be at least 1 (the cluster network)",
                    ));
                }
                Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            },
            pod_resources_socket: absolute_dir(
                "podResourcesSocket",
                pod_resources_socket,
                DEFAULT_POD_RESOURCES_SOCKET,
            )?,
            kubelet_checkpoint: absolute_dir(
                "kubeletCheckpointFile",
                kubelet_checkpoint_file,
                DEFAULT_KUBELET_CHECKPOINT,
            )?,
            device_info_dir: absolute_dir(
                "deviceInfoDir",
                device_info_dir,
                DEFAULT_DEVICE_INFO_DIR,
            )?,
            allowed_plugin_types: PluginAllowList::from_json(
                allowed_plugin_types.as_ref(),
                allowed_plugin_types_by_namespace.as_ref(),
            )
            .map_err(|e| invalid(&e.at, e.reason))?,
            valid_attachments: parse_valid_attachments(value)
                .map_err(|e| invalid("cni.dev/valid-attachments", e.to_string()))?,
            extra,
            warnings,
        })
    }

    /// How many of the node's own networks a pod in `namespace` gets: the static `delegates`, or the
    /// cluster network and (outside `systemNamespaces`) `defaultNetworks`, as `ops` attaches them. The
    /// default-network annotation replaces the cluster network, so it adds none.
    pub fn node_network_count(&self, namespace: &str) -> usize {
        match &self.primary {
            Primary::Delegates(list) => list.len(),
            Primary::ClusterNetwork(_) if self.system_namespaces.iter().any(|n| n == namespace) => {
                1
            }
            Primary::ClusterNetwork(_) => 1 + self.default_networks.len(),
        }
    }

    /// `maxAttachmentsPerPod` for a pod in `namespace` whose networks annotation selects `selected`
    /// networks: the refusal, when the node's networks and those are more than the limit.
    pub fn check_attachment_limit(&self, namespace: &str, selected: usize) -> Result<(), String> {
        let node = self.node_network_count(namespace);
        let total = node + selected;
        let limit = self.max_attachments_per_pod;
        if total <= limit {
            return Ok(());
        }
        Err(format!(
            "the pod would get {total} network attachments ({node} of the node's own networks and {selected} \
             selected by its k8s.v1.cni.cncf.io/networks annotation); this node allows at most {limit} per pod \
             (config key maxAttachmentsPerPod)"
        ))
    }

    /// The delegate search path: `binDir`, then `CNI_PATH` (docs/multus-compat.md, "Config keys").
    pub fn search_path(&self, cni_path: &[PathBuf]) -> Vec<PathBuf> {
        let mut dirs = vec![self.bin_dir.clone()];
        for d in cni_path {
            if !dirs.contains(d) {
                dirs.push(d.clone());
            }
        }
        dirs
    }
}

/// Test support for every layer's unit tests (a layer's tests may use only what is at or below it).
#[cfg(test)]
pub(crate) mod testing {
    use serde_json::{Value, json};

    /// A node config for the Kubernetes path's tests: CNI 1.0.0, the cluster network the NAD `cluster-nad`,
    /// with `extra`'s keys laid over it.
    pub fn kube_config(extra: Value) -> super::Config {
        let mut v =
            json!({"cniVersion": "1.0.0", "name": "plexus", "clusterNetwork": "cluster-nad"});
        for (k, val) in extra.as_object().expect("an object") {
            v[k] = val.clone();
        }
        super::Config::from_bytes(&serde_json::to_vec(&v).expect("JSON")).expect("a config")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: Value) -> Result<Config, ConfigError> {
        Config::from_bytes(&serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn multus_defaults() {
        let c =
            cfg(json!({"cniVersion": "0.3.1", "name": "m", "clusterNetwork": "flannel"})).unwrap();
        assert_eq!(c.conf_dir, PathBuf::from("/etc/cni/multus/net.d"));
        assert_eq!(c.cni_dir, PathBuf::from("/var/lib/cni/multus"));
        assert_eq!(c.bin_dir, PathBuf::from("/opt/cni/bin"));
        assert_eq!(c.multus_namespace, "kube-system");
        assert_eq!(c.system_namespaces, vec!["kube-system"]);
        assert_eq!(c.global_namespaces, vec!["default"]);
        assert!(!c.namespace_isolation);
        assert!(c.log.to_stderr);
        assert_eq!(c.log.level, LogLevel::Panic);
        assert_eq!(
            (
                c.log.max_age_days,
                c.log.max_size_mb,
                c.log.max_backups,
                c.log.compress
            ),
            (5, 100, 5, true)
        );
        assert_eq!(c.readiness_timeout, Duration::from_secs(45));
        assert_eq!(
            (c.api_timeout, c.api_budget),
            (Duration::from_secs(5), Duration::from_secs(30))
        );
        assert!(!c.retry_delete_on_error);
        assert!(c.strict_capabilities);
        assert_eq!(
            c.pod_resources_socket,
            PathBuf::from("/var/lib/kubelet/pod-resources/kubelet.sock")
        );
        assert_eq!(
            c.kubelet_checkpoint,
            PathBuf::from("/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint")
        );
        assert_eq!(
            c.device_info_dir,
            PathBuf::from("/var/run/k8s.cni.cncf.io/devinfo")
        );
        assert_eq!(
            c.primary,
            Primary::ClusterNetwork(NetworkRef::Name("flannel".into()))
        );
    }

    #[test]
    fn device_keys_are_absolute_paths() {
        let c = cfg(json!({"name": "m", "clusterNetwork": "c",
            "podResourcesSocket": "/run/k/pr.sock", "kubeletCheckpointFile": "/k/cp",
            "deviceInfoDir": "/d/./i"}))
        .unwrap();
        assert_eq!(c.pod_resources_socket, PathBuf::from("/run/k/pr.sock"));
        assert_eq!(c.kubelet_checkpoint, PathBuf::from("/k/cp"));
        assert_eq!(c.device_info_dir, PathBuf::from("/d/i"));
        for key in [
            "podResourcesSocket",
            "kubeletCheckpointFile",
            "deviceInfoDir",
        ] {
            let e = cfg(json!({"name": "m", "clusterNetwork": "c", key: "rel/x"})).unwrap_err();
            assert!(
                e.to_string().starts_with(&format!("config key {key}:")),
                "{e}"
            );
        }
    }

    #[test]
    fn cluster_network_path_vs_name() {
        let c = cfg(
            json!({"name": "m", "clusterNetwork": "/etc/cni/net.d/10-x.conflist",
                          "defaultNetworks": ["a", "/x/y.conf", " "]}),
        )
        .unwrap();
        assert_eq!(
            c.primary,
            Primary::ClusterNetwork(NetworkRef::Path("/etc/cni/net.d/10-x.conflist".into()))
        );
        assert_eq!(
            c.default_networks,
            vec![
                NetworkRef::Name("a".into()),
                NetworkRef::Path("/x/y.conf".into())
            ]
        );
    }

    #[test]
    fn delegates_inline_conf_and_conflist() {
        let c = cfg(json!({"cniVersion": "1.0.0", "name": "m", "delegates": [
            {"cniVersion": "0.3.1", "name": "a", "type": "bridge"},
            {"name": "b", "plugins": [{"type": "macvlan"}, {"type": "tuning"}]}
        ]}))
        .unwrap();
        let Primary::Delegates(d) = c.primary else {
            panic!()
        };
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[1].cni_version,
            CniVersion::V1_0_0,
            "a list without version takes plexus's"
        );
    }

    #[test]
    fn no_network_is_refused_with_what_is_valid() {
        let e = cfg(json!({"name": "m"})).unwrap_err();
        assert!(
            e.to_string()
                .contains("at least one delegate/clusterNetwork"),
            "{e}"
        );
        let e = cfg(json!({"name": "m", "delegates": []})).unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { .. }));
    }

    #[test]
    fn bad_delegate_is_named_by_index() {
        let e = cfg(json!({"name": "m", "delegates": [{"name": "a", "type": "bridge"}, {"name": "b", "type": "../../bin/sh"}]}))
            .unwrap_err();
        assert!(
            e.to_string().starts_with("config key delegates[1]: type:"),
            "{e}"
        );
    }

    #[test]
    fn missing_name_and_bad_version() {
        assert!(
            cfg(json!({"clusterNetwork": "x"}))
                .unwrap_err()
                .to_string()
                .contains("missing network name")
        );
        let e =
            cfg(json!({"name": "m", "cniVersion": "9.9.9", "clusterNetwork": "x"})).unwrap_err();
        assert!(matches!(e, ConfigError::Version { .. }));
        assert!(e.to_string().contains("9.9.9"));
    }

    #[test]
    fn log_settings_and_warnings() {
        let c = cfg(json!({"name": "m", "clusterNetwork": "x", "logLevel": "VERBOSE", "logFile": "/var/log/p.log",
                          "logToStderr": false, "logOptions": {"maxAge": 1, "maxSize": 2, "maxBackups": 3, "compress": false}}))
        .unwrap();
        assert_eq!(c.log.level, LogLevel::Verbose);
        assert_eq!(c.log.file, Some(PathBuf::from("/var/log/p.log")));
        assert!(!c.log.to_stderr);
        assert_eq!(
            (
                c.log.max_age_days,
                c.log.max_size_mb,
                c.log.max_backups,
                c.log.compress
            ),
            (1, 2, 3, false)
        );
        let c = cfg(json!({"name": "m", "clusterNetwork": "x", "logLevel": "loud"})).unwrap();
        assert_eq!(c.log.level, LogLevel::Panic);
        assert!(c.warnings[0].contains("debug, verbose, error, panic"));
        let e = cfg(json!({"name": "m", "clusterNetwork": "x", "logFile": "rel.log"})).unwrap_err();
        assert!(e.to_string().contains("logFile"));
        let e = cfg(json!({"name": "m", "clusterNetwork": "x", "logOptions": {"maxAge": -1}}))
            .unwrap_err();
        assert!(e.to_string().contains("logOptions.maxAge"));
    }

    #[test]
    fn global_namespaces_replace_default_and_readiness_is_cleaned() {
        let c = cfg(
            json!({"name": "m", "clusterNetwork": "x", "globalNamespaces": " a, b ,,",
                          "readinessindicatorfile": "/run/x/../ready"}),
        )
        .unwrap();
        assert_eq!(c.global_namespaces, vec!["a", "b"]);
        assert_eq!(c.readiness_indicator, Some(PathBuf::from("/run/ready")));
    }

    #[test]
    fn dirs_must_be_absolute_and_timeouts_positive() {
        assert!(
            cfg(json!({"name": "m", "clusterNetwork": "x", "cniDir": "rel"}))
                .unwrap_err()
                .to_string()
                .contains("cniDir")
        );
        let e = cfg(json!({"name": "m", "clusterNetwork": "x", "delegateTimeoutSeconds": 0}))
            .unwrap_err();
        assert!(e.to_string().contains("delegateTimeoutSeconds"), "{e}");
    }

    /// Hostile input (issue 6): multusNamespace becomes part of API paths, so it must be a namespace name.
    #[test]
    fn multus_namespace_must_be_a_dns_label_npwg_9() {
        let base = json!({"cniVersion": "1.0.0", "name": "m", "clusterNetwork": "c"});
        for ns in ["..", "a/b", "Kube-System", "a.b", "-x"] {
            let mut v = base.clone();
            v["multusNamespace"] = json!(ns);
            let e = cfg(v).unwrap_err();
            assert!(
                e.to_string().starts_with(&format!(
                    "config key multusNamespace: \"{ns}\" is not a DNS-1123 label"
                )),
                "{e}"
            );
        }
        let mut v = base.clone();
        v["multusNamespace"] = json!("net-defs");
        assert_eq!(cfg(v).unwrap().multus_namespace, "net-defs");
    }

    /// Issue 20: `maxAttachmentsPerPod` counts the node's own networks a pod gets (none of the default
    /// networks for a pod in `systemNamespaces`) and the networks its annotation selects.
    #[test]
    fn max_attachments_per_pod_counts_the_node_networks_too() {
        let base = json!({"cniVersion": "1.0.0", "name": "m", "clusterNetwork": "c",
                          "defaultNetworks": ["d1", "d2"]});
        let c = cfg(base.clone()).unwrap();
        assert_eq!(c.max_attachments_per_pod, DEFAULT_MAX_ATTACHMENTS_PER_POD);
        assert_eq!(c.node_network_count("tenant"), 3);
        assert_eq!(c.node_network_count("kube-system"), 1);
        assert_eq!(c.check_attachment_limit("tenant", 29), Ok(()));
        let e = c.check_attachment_limit("tenant", 30).unwrap_err();
        for part in [
            "33 network attachments",
            "3 of the node's own networks and 30 selected",
            "at most 32 per pod",
            "maxAttachmentsPerPod",
        ] {
            assert!(e.contains(part), "{part}: {e}");
        }
        // A system namespace's pod gets no default networks, so they do not count against it.
        assert_eq!(c.check_attachment_limit("kube-system", 31), Ok(()));

        let mut v = base.clone();
        v["maxAttachmentsPerPod"] = json!(4);
        let c = cfg(v).unwrap();
        assert_eq!(c.check_attachment_limit("tenant", 1), Ok(()));
        assert!(c.check_attachment_limit("tenant", 2).is_err());
        // Static delegates are the node's networks as they are (defaultNetworks do not apply).
        let c = cfg(
            json!({"name": "m", "maxAttachmentsPerPod": 2, "delegates": [
            {"cniVersion": "1.0.0", "name": "a", "type": "bridge"},
            {"cniVersion": "1.0.0", "name": "b", "type": "bridge"}]}),
        )
        .unwrap();
        assert_eq!(c.node_network_count("tenant"), 2);
        assert!(c.check_attachment_limit("tenant", 1).is_err());

        let mut v = base.clone();
        v["maxAttachmentsPerPod"] = json!(0);
        assert!(
            matches!(cfg(v).unwrap_err(), ConfigError::Invalid { key, .. } if key == "maxAttachmentsPerPod")
        );
        for bad in [json!(-1), json!("32"), json!(1.5)] {
            let mut v = base.clone();
            v["maxAttachmentsPerPod"] = bad.clone();
            assert!(
                matches!(cfg(v).unwrap_err(), ConfigError::Raw(RawError::Type { path, .. }) if path == "maxAttachmentsPerPod"),
                "{bad}"
            );
        }
    }

    /// Hostile input (issue 6): stdin nested past the limit is refused (code 6) saying the limit.
    #[test]
    fn deep_nesting_is_refused_with_the_limit() {
        let deep = format!(
            r#"{{"cniVersion":"1.0.0","name":"n","x":{}1{}}}"#,
            "[".repeat(1000),
            "]".repeat(1000)
        );
        let e = Config::from_bytes(deep.as_bytes()).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Raw(RawError::Syntax(m)) if m.starts_with("nesting is deeper than 128 levels")),
            "{e}"
        );
    }

    #[test]
    fn gc_attachments_both_keys() {
        let c = cfg(
            json!({"cniVersion": "1.1.0", "name": "m", "clusterNetwork": "x",
                          "cni.dev/attachments": [{"containerID": "c1", "ifname": "eth0"}]}),
        )
        .unwrap();
        assert_eq!(c.valid_attachments.unwrap()[0].container_id, "c1");
    }

    /// Issue 22: the chain is run, not ignored with a warning; its name becomes a directory and the chain's
    /// network name, so it must be a network name (CNI-1): no path can hide in it.
    #[test]
    fn auxiliary_chain_name_is_taken_without_warning_and_must_be_a_network_name_cni_1() {
        let c = cfg(
            json!({"name": "m", "clusterNetwork": "/etc/cni/net.d/10-x.conflist",
            "auxiliaryCNIChainName": "vendor-cni-chain"}),
        )
        .unwrap();
        assert_eq!(c.auxiliary_chain.as_deref(), Some("vendor-cni-chain"));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let c =
            cfg(json!({"name": "m", "clusterNetwork": "x", "auxiliaryCNIChainName": ""})).unwrap();
        assert_eq!(
            c.auxiliary_chain, None,
            "empty means no chain, as in Go Multus"
        );
        for bad in ["../etc", "a/b", ".hidden", "with space"] {
            let e = cfg(json!({"name": "m", "clusterNetwork": "x", "auxiliaryCNIChainName": bad}))
                .unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("config key auxiliaryCNIChainName:"),
                "{bad:?}: {e}"
            );
        }
    }

    /// Issue 19, item 3: the plugin allow-list keys (unset: every type, as Go Multus); a bad entry is a
    /// config error (code 7) naming it.
    #[test]
    fn the_plugin_allow_list_keys() {
        let c = cfg(json!({"name": "m", "clusterNetwork": "x"})).unwrap();
        assert!(!c.allowed_plugin_types.restricts());
        let c = cfg(json!({"name": "m", "clusterNetwork": "x",
            "allowedPluginTypes": ["bridge"], "allowedPluginTypesByNamespace": {"a": []}}))
        .unwrap();
        assert!(c.allowed_plugin_types.restricts());
        assert!(!c.extra.contains_key("allowedPluginTypes"), "a known key");
        let e = cfg(json!({"name": "m", "clusterNetwork": "x",
            "allowedPluginTypesByNamespace": {"a": ["bridge", "/bin/sh"]}}))
        .unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with(r#"config key allowedPluginTypesByNamespace["a"][1]: "#),
            "{e}"
        );
    }

    #[test]
    fn search_path_puts_bin_dir_first() {
        let c = cfg(json!({"name": "m", "clusterNetwork": "x", "binDir": "/b"})).unwrap();
        assert_eq!(
            c.search_path(&[PathBuf::from("/a"), PathBuf::from("/b")]),
            vec![PathBuf::from("/b"), PathBuf::from("/a")]
        );
    }
}
