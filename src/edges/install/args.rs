//! The flags of `plexus install` (clap). The defaults are the container paths of Go Multus's thin
//! DaemonSet (docs/multus-compat.md, "Installation"): the host's `/opt/cni/bin`, `/etc/cni/net.d`
//! and `/etc/cni/multus/net.d` mounted under `/host`.
//!
//! Two kinds of path appear: where the installer reads and writes (inside its container, e.g.
//! `/host/etc/cni/net.d`), and what it writes into the config for the runtime and plexus, which run on
//! the host (e.g. `/etc/cni/net.d`). The `--host-*` flags give the host side; see [`Args::path_map`].

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{ArgAction, Parser, ValueEnum, builder::BoolishValueParser};
use plexus_cni::CniVersion;

use super::conf::PathMap;

/// The shim's binary name on the host, which is also its config's plugin type (daemon mode).
pub const SHIM_NAME: &str = "plexus-shim";

/// The default directory of the daemon's socket (the shim's `daemonSocketDir`, the daemon's `socketDir`).
pub const SOCKET_DIR: &str = plexus_shim::wire::DEFAULT_SOCKET_DIR;

const ABOUT: &str = "Install plexus on this node: copy the binary, write the node's kubeconfig and a \
plexus config in front of the cluster network's, then keep them up to date (--daemon: the shim's config, \
no kubeconfig)";

const LONG_ABOUT: &str = "\
Install plexus on this node (the DaemonSet's entrypoint). Every step is idempotent and atomic (temp file in \
the target directory, fsync, rename) and writes only when the content changes:

  1. copy the binary to <cni-bin-dir>/<binary-name> (a running copy is never overwritten in place);
  2. write a kubeconfig (mode 0600) with the service-account CA, the API server from \
KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT (and KUBERNETES_SERVICE_PROTOCOL, default https), and a \
token of the pod's ServiceAccount bound to this node's Node object, asked of the TokenRequest API with the \
pod's own token (--host-token, --node-name, --host-token-lifetime). While no such token can be had (the \
first start with the API refusing, or the last one expired), the pod's own token stands in, with a warning;
  3. wait (at most --wait-timeout) for the primary CNI config in <cni-conf-dir> and, when set, the \
readiness indicator file;
  4. write <conf-name>: a .conflist with one plexus plugin when the primary's cniVersion is 1.0.0 or \
later, a .conf before, whose clusterNetwork is the primary and whose capabilities are the primary's, so \
the runtime passes runtimeConfig on;
  5. watch (every --poll-interval): regenerate the config when the primary changes, rewrite the \
kubeconfig when the CA changes or the Node-bound token is renewed (at 4/5 of its lifetime; a refused \
request keeps the current kubeconfig, says why and is retried after 2 s, doubling up to a minute).

Daemon mode (--daemon), for a node running `plexus daemon`: step 1 also copies --shim-binary to \
<cni-bin-dir>/plexus-shim (before the config is written, so the runtime never runs a missing shim); step 2 \
is skipped, no service-account credential or KUBERNETES_SERVICE_* variable is needed, and a kubeconfig a \
thin install left at the kubeconfig path is removed once the shim's config is in place (the daemon has \
its own client: no token on the host); step 4 writes type plexus-shim with daemonSocketDir \
(--daemon-socket-dir) and cniDir and without kubeconfig. The shim forwards each call to the daemon's \
socket; when the daemon is down on DEL it runs the thin plexus from the same directory with this config, \
which therefore keeps everything a DEL from the cache needs (clusterNetwork, confDir, cniDir, binDir, \
capabilities, log keys). Primary selection, the watch, the readiness indicator and --check work as in \
thin mode.

The primary is the lexically first .conf, .conflist or .json file of <cni-conf-dir> that is not this \
installer's output, not a dotfile and not another meta-plugin's config (type plexus, plexus-shim, \
multus, multus-shim or <binary-name>): plexus never wraps itself. --primary-conf pins it instead.

On SIGTERM or SIGINT the config is kept, so pods deleted while plexus is being upgraded are still torn \
down; --cleanup-config-on-exit removes it and the kubeconfig (uninstall); the binaries are left in place. Any error exits non-zero with a \
message; a primary that disappears later is not an error (the current config is kept).

Boolean flags take an optional value: --flag is --flag=true.";

/// Verbosity written into the config as `logLevel` (Go Multus's four levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PluginLogLevel {
    /// Everything.
    Debug,
    /// Informational and up.
    Verbose,
    /// Errors and warnings.
    Error,
    /// Nothing (plexus's default).
    Panic,
}

impl PluginLogLevel {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginLogLevel::Debug => "debug",
            PluginLogLevel::Verbose => "verbose",
            PluginLogLevel::Error => "error",
            PluginLogLevel::Panic => "panic",
        }
    }
}

/// Which token the host's kubeconfig carries (`--host-token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HostToken {
    /// A token of the pod's ServiceAccount bound to this node's Node object (TokenRequest).
    Node,
    /// The pod's own token (bound to the pod).
    ServiceAccount,
}

/// `plexus install` flags.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "plexus install",
    about = ABOUT,
    long_about = LONG_ABOUT,
    version,
    disable_version_flag = true,
    args_override_self = true,
    max_term_width = 100
)]
pub struct Args {
    // === Paths in the container ===
    /// Host CNI bin directory as mounted in the container; the binary (and with --daemon the shim) is
    /// copied here.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/host/opt/cni/bin",
        help_heading = "Paths in the container"
    )]
    pub cni_bin_dir: PathBuf,

    /// Host CNI config directory as mounted in the container: the primary is read and the config written here.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/host/etc/cni/net.d",
        help_heading = "Paths in the container"
    )]
    pub cni_conf_dir: PathBuf,

    /// plexus's own network directory (confDir) as mounted in the container; created when missing.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/host/etc/cni/multus/net.d",
        help_heading = "Paths in the container"
    )]
    pub plexus_conf_dir: PathBuf,

    /// Where host paths not under the two directories above are visible in the container (for
    /// --readiness-indicator-file).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/host",
        help_heading = "Paths in the container"
    )]
    pub host_prefix: PathBuf,

    // === Paths on the host ===
    /// The host path of --cni-bin-dir (with --daemon and a --binary-name other than plexus, the thin
    /// binary the shim falls back to is written as thinBinary with it).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/opt/cni/bin",
        value_parser = parse_absolute,
        help_heading = "Paths on the host (written into the config)"
    )]
    pub host_cni_bin_dir: PathBuf,

    /// The host path of --cni-conf-dir (clusterNetwork and the kubeconfig are written with it).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/etc/cni/net.d",
        help_heading = "Paths on the host (written into the config)"
    )]
    pub host_cni_conf_dir: PathBuf,

    /// The host path of --plexus-conf-dir, written as confDir.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/etc/cni/multus/net.d",
        help_heading = "Paths on the host (written into the config)"
    )]
    pub host_plexus_conf_dir: PathBuf,

    /// Host path of the kubeconfig, written as kubeconfig [default:
    /// /etc/cni/net.d/<binary-name>.d/<binary-name>.kubeconfig]. The file is written at the matching
    /// container path (under --cni-conf-dir for the default).
    #[arg(
        long,
        value_name = "PATH",
        help_heading = "Paths on the host (written into the config)"
    )]
    pub kubeconfig_host_path: Option<PathBuf>,

    // === Binary ===
    /// The binary to install [default: this executable, /proc/self/exe].
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/proc/self/exe",
        hide_default_value = true,
        help_heading = "Binary"
    )]
    pub binary: PathBuf,

    /// Name of the installed binary, which is also the config's plugin type. `multus` replaces a Go Multus
    /// thin install in place (config 00-multus.*, network multus-cni-network, kubeconfig under multus.d).
    #[arg(long, value_name = "NAME", default_value = "plexus", value_parser = parse_binary_name, help_heading = "Binary")]
    pub binary_name: String,

    /// Do not copy the binary, nor with --daemon the shim (they are installed by other means).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = BoolishValueParser::new(), action = ArgAction::Set, help_heading = "Binary")]
    pub skip_binary_copy: bool,

    // === Kubernetes credentials ===
    /// The pod's service-account directory (token, ca.crt).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount",
        help_heading = "Kubernetes credentials"
    )]
    pub service_account_dir: PathBuf,

    /// Write no kubeconfig and leave the kubeconfig key out of the config (plexus then runs without
    /// Kubernetes: file-based networks only).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = BoolishValueParser::new(), action = ArgAction::Set, help_heading = "Kubernetes credentials")]
    pub no_kubeconfig: bool,

    /// The token in the kubeconfig: `node` asks the API server (TokenRequest) for a token of this pod's
    /// ServiceAccount bound to this node's Node object, which outlives the pod and dies with the Node, and
    /// renews it at 4/5 of its lifetime; `service-account` copies the pod's own token, which stops working
    /// when the pod is deleted (plexus 0.1's way, for clusters before Kubernetes 1.31).
    #[arg(
        long,
        value_name = "KIND",
        value_enum,
        default_value = "node",
        help_heading = "Kubernetes credentials"
    )]
    pub host_token: HostToken,

    /// This node's name, which the Node-bound token names [default: $PLEXUS_NODE_NAME, which the DaemonSet
    /// sets from spec.nodeName].
    #[arg(long, value_name = "NAME", value_parser = parse_node_name, help_heading = "Kubernetes credentials")]
    pub node_name: Option<String>,

    /// How long a Node-bound token lives: a copy taken off the node is useless after that. At least 10m
    /// (the API server's minimum); the server may issue a shorter one (its
    /// --service-account-max-token-expiration), whose own expiry then counts. Units: m, h, s.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_token_lifetime, help_heading = "Kubernetes credentials")]
    pub host_token_lifetime: Duration,

    // === Daemon mode ===
    /// Daemon mode, for a node running `plexus daemon`: also install the shim, write a plexus-shim config
    /// (daemonSocketDir, no kubeconfig) and no kubeconfig file; no service-account credentials needed.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = BoolishValueParser::new(), action = ArgAction::Set, help_heading = "Daemon mode")]
    pub daemon: bool,

    /// With --daemon: the shim binary to install as <cni-bin-dir>/plexus-shim [default: plexus-shim in
    /// this executable's directory].
    #[arg(
        long,
        value_name = "PATH",
        requires = "daemon",
        help_heading = "Daemon mode"
    )]
    pub shim_binary: Option<PathBuf>,

    /// With --daemon: the directory of the daemon's socket (plexus.sock), a host path written as
    /// daemonSocketDir; the daemon's socketDir must name the same directory.
    #[arg(long, value_name = "DIR", default_value = SOCKET_DIR, value_parser = parse_absolute, requires = "daemon", help_heading = "Daemon mode")]
    pub daemon_socket_dir: PathBuf,

    // === The generated config ===
    /// File name of the generated config; its extension follows the primary's cniVersion (.conflist from
    /// 1.0.0, .conf before), and a stale file of the other extension is removed [default:
    /// 00-<binary-name>.conflist].
    #[arg(long, value_name = "NAME", value_parser = parse_conf_name, help_heading = "The generated config")]
    pub conf_name: Option<String>,

    /// Use this file of --cni-conf-dir as the primary instead of the lexically first one.
    #[arg(long, value_name = "FILE", value_parser = parse_file_name, help_heading = "The generated config")]
    pub primary_conf: Option<String>,

    /// cniVersion of the generated config [default: the primary's].
    #[arg(long, value_name = "VERSION", value_parser = parse_cni_version, help_heading = "The generated config")]
    pub cni_version: Option<CniVersion>,

    /// The config's network name [default: plexus-cni-network; multus-cni-network for --binary-name multus].
    #[arg(long, value_name = "NAME", value_parser = parse_network_name, help_heading = "The generated config")]
    pub network_name: Option<String>,

    /// namespaceIsolation: pods may reference NetworkAttachmentDefinitions of their own namespace only
    /// (and of --global-namespaces).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = BoolishValueParser::new(), action = ArgAction::Set, help_heading = "The generated config")]
    pub namespace_isolation: bool,

    /// globalNamespaces: comma-separated namespaces any pod may reference under isolation.
    #[arg(long, value_name = "NS,...", help_heading = "The generated config")]
    pub global_namespaces: Option<String>,

    /// readinessindicatorfile (a host path): written into the config, and the installer waits for it
    /// (under --host-prefix) before writing the config.
    #[arg(long, value_name = "PATH", value_parser = parse_absolute, help_heading = "The generated config")]
    pub readiness_indicator_file: Option<PathBuf>,

    /// cniDir: plexus's cache directory, a host path [default: not written in thin mode, plexus then uses
    /// /var/lib/cni/multus; always written with --daemon, so the daemon and the shim's DEL fallback read
    /// the same cache].
    #[arg(long, value_name = "DIR", value_parser = parse_absolute, help_heading = "The generated config")]
    pub cni_dir: Option<PathBuf>,

    /// binDir: a host directory searched for delegate plugins before CNI_PATH.
    #[arg(long, value_name = "DIR", value_parser = parse_absolute, help_heading = "The generated config")]
    pub additional_bin_dir: Option<PathBuf>,

    /// logLevel of the plugin.
    #[arg(long, value_name = "LEVEL", help_heading = "The generated config")]
    pub log_level: Option<PluginLogLevel>,

    /// logFile of the plugin (a host path).
    #[arg(long, value_name = "PATH", value_parser = parse_absolute, help_heading = "The generated config")]
    pub log_file: Option<PathBuf>,

    /// logToStderr of the plugin [default: not written; plexus logs to stderr].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new(), help_heading = "The generated config")]
    pub log_to_stderr: Option<bool>,

    /// strictCapabilities: `false` drops a pod's ips/mac/portMappings/bandwidth request on a network that
    /// does not declare the capability (with a warning), as Go Multus did, instead of failing the ADD
    /// [default: not written; plexus is strict].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new(), help_heading = "The generated config")]
    pub strict_capabilities: Option<bool>,

    /// allowedPluginTypes: the plugin types NetworkAttachmentDefinitions may run, comma-separated: each
    /// plugin of a NAD's config and its ipam type must be listed, or the pod's ADD fails (the node's own
    /// networks are exempt). An empty value allows none [default: not written; every type is allowed].
    #[arg(long, value_name = "TYPE,...", value_parser = parse_plugin_types, help_heading = "The generated config")]
    pub allowed_plugin_types: Option<PluginTypes>,

    /// allowedPluginTypesByNamespace: NAMESPACE=TYPE,... gives the NADs of that namespace this list instead
    /// of --allowed-plugin-types (it replaces it there, it does not add to it). Repeatable.
    #[arg(long, value_name = "NS=TYPE,...", value_parser = parse_namespace_plugin_types, help_heading = "The generated config")]
    pub allowed_plugin_types_by_namespace: Vec<NamespacePluginTypes>,

    /// auxiliaryCNIChainName: after every other network, run the plugin files of this directory (beside the
    /// cluster network's file) on each pod, as Go Multus does (docs/multus-compat.md, "Auxiliary chain")
    /// [default: not written; no chain].
    #[arg(long, value_name = "NAME", value_parser = parse_network_name, help_heading = "The generated config")]
    pub auxiliary_cni_chain_name: Option<String>,

    // === Lifecycle ===
    /// How long to wait for the primary config and the readiness indicator before failing (0: forever).
    /// Units: ms, s, m, h; a bare number is seconds.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration, help_heading = "Lifecycle")]
    pub wait_timeout: Duration,

    /// How often to look at the primary config, the token and the CA.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_poll_interval, help_heading = "Lifecycle")]
    pub poll_interval: Duration,

    /// Do one pass (copy, kubeconfig, wait, config) and exit 0: for init containers and tests.
    #[arg(long, conflicts_with_all = ["cleanup_config_on_exit", "check"], help_heading = "Lifecycle")]
    pub once: bool,

    /// On SIGTERM/SIGINT remove the config and the kubeconfig (uninstall). By default they are kept, so
    /// pods deleted while plexus is restarting or being upgraded are still torn down.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = BoolishValueParser::new(), action = ArgAction::Set, help_heading = "Lifecycle")]
    pub cleanup_config_on_exit: bool,

    /// Do not watch the primary config after writing ours (the kubeconfig is still refreshed when the
    /// token or CA rotates).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = BoolishValueParser::new(), action = ArgAction::Set, help_heading = "Lifecycle")]
    pub skip_config_watch: bool,

    /// Probe: exit 0 when the generated config exists in --cni-conf-dir and is of this binary, 1 otherwise;
    /// writes nothing (the DaemonSet's readiness probe).
    #[arg(long, help_heading = "Lifecycle")]
    pub check: bool,
}

impl Args {
    /// The config's plugin type: the installed binary's name, or the shim's with --daemon.
    pub fn plugin_type(&self) -> &str {
        if self.daemon {
            SHIM_NAME
        } else {
            &self.binary_name
        }
    }

    /// Whether a kubeconfig is written (and named in the config): not with --no-kubeconfig or --daemon.
    pub fn writes_kubeconfig(&self) -> bool {
        !self.no_kubeconfig && !self.daemon
    }

    /// The shim binary to install with --daemon: --shim-binary, else `plexus-shim` next to this
    /// executable.
    pub fn shim_binary(&self) -> std::io::Result<PathBuf> {
        if let Some(p) = &self.shim_binary {
            return Ok(p.clone());
        }
        let exe = std::env::current_exe()?;
        Ok(exe.with_file_name(SHIM_NAME))
    }

    /// With --daemon, the `thinBinary` the shim runs for a DEL while the daemon is down: `None` (the
    /// `plexus` beside the shim) unless the binary is installed under another name.
    pub fn thin_binary(&self) -> Option<PathBuf> {
        (self.daemon && self.binary_name != "plexus")
            .then(|| self.host_cni_bin_dir.join(&self.binary_name))
    }

    /// The cniDir written into the config: --cni-dir, or plexus's default with --daemon.
    pub fn cni_dir(&self) -> Option<PathBuf> {
        self.cni_dir.clone().or_else(|| {
            self.daemon
                .then(|| PathBuf::from(crate::pure::config::DEFAULT_CNI_DIR))
        })
    }

    /// The generated config's file name without extension.
    pub fn conf_stem(&self) -> String {
        match &self.conf_name {
            Some(n) => n
                .strip_suffix(".conflist")
                .or_else(|| n.strip_suffix(".conf"))
                .unwrap_or(n)
                .to_string(),
            None => format!("00-{}", self.binary_name),
        }
    }

    /// The network name in the config.
    pub fn network_name(&self) -> String {
        self.network_name
            .clone()
            .unwrap_or_else(|| format!("{}-cni-network", self.binary_name))
    }

    /// The kubeconfig's host path.
    pub fn kubeconfig_host_path(&self) -> PathBuf {
        self.kubeconfig_host_path.clone().unwrap_or_else(|| {
            self.host_cni_conf_dir
                .join(format!("{}.d", self.binary_name))
                .join(format!("{}.kubeconfig", self.binary_name))
        })
    }

    /// The directory the installer makes for the kubeconfig (`<conf dir>/<binary>.d`), when the kubeconfig
    /// goes to its default place; `None` when `--kubeconfig-host-path` names another.
    pub fn own_kubeconfig_dir(&self) -> Option<PathBuf> {
        self.kubeconfig_host_path
            .is_none()
            .then(|| self.kubeconfig_host_path().parent().map(Path::to_path_buf))
            .flatten()
    }

    /// How host paths map to container paths.
    pub fn path_map(&self) -> PathMap {
        PathMap::new(
            vec![
                (self.host_cni_conf_dir.clone(), self.cni_conf_dir.clone()),
                (
                    self.host_plexus_conf_dir.clone(),
                    self.plexus_conf_dir.clone(),
                ),
            ],
            self.host_prefix.clone(),
        )
    }
}

/// A comma-separated list of plugin types (`--allowed-plugin-types`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginTypes(pub Vec<String>);

/// One `--allowed-plugin-types-by-namespace` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePluginTypes {
    /// The NADs' namespace.
    pub namespace: String,
    /// Its list.
    pub types: Vec<String>,
}

fn parse_plugin_types(s: &str) -> Result<PluginTypes, String> {
    let mut out: Vec<String> = Vec::new();
    for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        plexus_cni::validate::plugin_type(t).map_err(|e| e.to_string())?;
        if !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    Ok(PluginTypes(out))
}

fn parse_namespace_plugin_types(s: &str) -> Result<NamespacePluginTypes, String> {
    let (ns, types) = s
        .split_once('=')
        .ok_or_else(|| "expected NAMESPACE=TYPE,TYPE,...".to_string())?;
    crate::pure::names::check_label(ns.trim())?;
    Ok(NamespacePluginTypes {
        namespace: ns.trim().to_string(),
        types: parse_plugin_types(types)?.0,
    })
}

fn parse_binary_name(s: &str) -> Result<String, String> {
    plexus_cni::validate::plugin_type(s).map_err(|e| e.to_string())?;
    if s.starts_with('.') {
        return Err("must not start with a dot".into());
    }
    Ok(s.to_string())
}

fn parse_file_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains('/') || s == "." || s == ".." {
        return Err("must be a file name (no directory)".into());
    }
    Ok(s.to_string())
}

fn parse_conf_name(s: &str) -> Result<String, String> {
    let name = parse_file_name(s)?;
    if name.starts_with('.') {
        return Err("must not start with a dot".into());
    }
    Ok(name)
}

fn parse_network_name(s: &str) -> Result<String, String> {
    plexus_cni::validate::network_name(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

fn parse_cni_version(s: &str) -> Result<CniVersion, String> {
    s.parse::<CniVersion>().map_err(|_| {
        let all: Vec<&str> = CniVersion::ALL.iter().map(|v| v.as_str()).collect();
        format!("supported versions: {}", all.join(", "))
    })
}

fn parse_absolute(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    if !p.is_absolute() {
        return Err("must be an absolute path".into());
    }
    Ok(p)
}

/// A duration: a number with `ms`, `s`, `m` or `h`, or bare seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 1s, 5m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_token_lifetime(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < super::token::MIN_LIFETIME {
        return Err("must be at least 10m (the API server issues no shorter token)".into());
    }
    Ok(Duration::from_secs(d.as_secs()))
}

fn parse_node_name(s: &str) -> Result<String, String> {
    if !crate::pure::names::is_dns_subdomain(s) {
        return Err(format!("{s:?} is not a Node name (a DNS subdomain)"));
    }
    Ok(s.to_string())
}

fn parse_poll_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(10) {
        return Err("must be at least 10ms".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("plexus install").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn the_clap_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_are_multus_container_paths_and_plexus_names() {
        let a = parse(&[]);
        assert_eq!(a.cni_bin_dir, PathBuf::from("/host/opt/cni/bin"));
        assert_eq!(a.cni_conf_dir, PathBuf::from("/host/etc/cni/net.d"));
        assert_eq!(
            a.plexus_conf_dir,
            PathBuf::from("/host/etc/cni/multus/net.d")
        );
        assert_eq!(a.binary, PathBuf::from("/proc/self/exe"));
        assert_eq!(a.conf_stem(), "00-plexus");
        assert_eq!(a.network_name(), "plexus-cni-network");
        assert_eq!(
            a.kubeconfig_host_path(),
            PathBuf::from("/etc/cni/net.d/plexus.d/plexus.kubeconfig")
        );
        assert_eq!(a.poll_interval, Duration::from_secs(1));
        assert!(!a.cleanup_config_on_exit && !a.skip_config_watch && !a.once);
        assert_eq!(a.log_to_stderr, None);
    }

    #[test]
    fn binary_name_multus_gives_go_multus_names() {
        let a = parse(&["--binary-name", "multus"]);
        assert_eq!(a.conf_stem(), "00-multus");
        assert_eq!(a.network_name(), "multus-cni-network");
        assert_eq!(
            a.kubeconfig_host_path(),
            PathBuf::from("/etc/cni/net.d/multus.d/multus.kubeconfig")
        );
    }

    #[test]
    fn daemon_mode_switches_the_type_and_drops_the_kubeconfig() {
        let thin = parse(&[]);
        assert!(!thin.daemon);
        assert_eq!(thin.plugin_type(), "plexus");
        assert!(thin.writes_kubeconfig());
        assert_eq!(
            thin.cni_dir(),
            None,
            "thin mode writes no cniDir by default"
        );
        assert!(!parse(&["--no-kubeconfig"]).writes_kubeconfig());

        let d = parse(&["--daemon"]);
        assert!(d.daemon);
        assert_eq!(d.plugin_type(), SHIM_NAME);
        assert!(!d.writes_kubeconfig());
        assert_eq!(d.daemon_socket_dir, PathBuf::from("/run/plexus"));
        assert_eq!(d.cni_dir(), Some(PathBuf::from("/var/lib/cni/multus")));
        // The binary's name, config name and network name stay the thin ones: the shim replaces the
        // thin config in place, and the DEL fallback runs <binary-name>.
        assert_eq!(d.binary_name, "plexus");
        assert_eq!(d.conf_stem(), "00-plexus");
        assert_eq!(d.network_name(), "plexus-cni-network");
        // The default shim is the one next to this executable.
        let exe = std::env::current_exe().unwrap();
        assert_eq!(
            d.shim_binary().unwrap(),
            exe.parent().unwrap().join("plexus-shim")
        );

        let d = parse(&[
            "--daemon=true",
            "--shim-binary=/img/shim",
            "--daemon-socket-dir=/run/multus",
            "--cni-dir=/var/lib/cni/plexus",
        ]);
        assert_eq!(d.shim_binary().unwrap(), PathBuf::from("/img/shim"));
        assert_eq!(d.daemon_socket_dir, PathBuf::from("/run/multus"));
        assert_eq!(d.cni_dir(), Some(PathBuf::from("/var/lib/cni/plexus")));
        assert_eq!(d.thin_binary(), None, "plexus beside the shim");
        assert_eq!(
            parse(&[
                "--daemon",
                "--binary-name=multus",
                "--host-cni-bin-dir=/usr/libexec/cni"
            ])
            .thin_binary(),
            Some(PathBuf::from("/usr/libexec/cni/multus"))
        );
        assert_eq!(
            parse(&["--binary-name=multus"]).thin_binary(),
            None,
            "thin mode"
        );
        assert_eq!(
            parse(&["--cni-dir=/c"]).cni_dir(),
            Some(PathBuf::from("/c")),
            "thin mode writes an explicit cniDir"
        );
    }

    #[test]
    fn booleans_take_an_optional_value() {
        let a = parse(&[
            "--cleanup-config-on-exit",
            "--namespace-isolation=false",
            "--log-to-stderr=false",
        ]);
        assert!(a.cleanup_config_on_exit);
        assert!(!a.namespace_isolation);
        assert_eq!(a.log_to_stderr, Some(false));
    }

    #[test]
    fn auxiliary_chain_flag() {
        let a = parse(&["--auxiliary-cni-chain-name=vendor-cni-chain"]);
        assert_eq!(
            a.auxiliary_cni_chain_name.as_deref(),
            Some("vendor-cni-chain")
        );
        assert_eq!(parse(&[]).auxiliary_cni_chain_name, None);
    }

    #[test]
    fn plugin_allow_list_flags() {
        let a = parse(&[
            "--allowed-plugin-types=bridge, macvlan,,host-local,bridge",
            "--allowed-plugin-types-by-namespace=sriov-team=sriov,host-local",
            "--allowed-plugin-types-by-namespace",
            "locked=",
        ]);
        assert_eq!(
            a.allowed_plugin_types,
            Some(PluginTypes(vec![
                "bridge".into(),
                "macvlan".into(),
                "host-local".into()
            ]))
        );
        assert_eq!(
            a.allowed_plugin_types_by_namespace,
            [
                NamespacePluginTypes {
                    namespace: "sriov-team".into(),
                    types: vec!["sriov".into(), "host-local".into()]
                },
                NamespacePluginTypes {
                    namespace: "locked".into(),
                    types: vec![]
                }
            ]
        );
        let none = parse(&[]);
        assert_eq!(none.allowed_plugin_types, None);
        assert!(none.allowed_plugin_types_by_namespace.is_empty());
        assert_eq!(
            parse(&["--allowed-plugin-types="]).allowed_plugin_types,
            Some(PluginTypes(vec![])),
            "an empty list allows none"
        );
    }

    #[test]
    fn conf_name_extension_is_dropped_from_the_stem() {
        assert_eq!(parse(&["--conf-name", "05-x.conf"]).conf_stem(), "05-x");
        assert_eq!(parse(&["--conf-name", "05-x.conflist"]).conf_stem(), "05-x");
        assert_eq!(parse(&["--conf-name", "05-x"]).conf_stem(), "05-x");
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            &["--binary-name", "../sh"][..],
            &["--binary-name", "/bin/sh"],
            &["--primary-conf", "a/b.conf"],
            &["--conf-name", ".hidden"],
            &["--cni-version", "2.0.0"],
            &["--readiness-indicator-file", "relative"],
            &["--poll-interval", "1ms"],
            &["--wait-timeout", "3 weeks"],
            &["--log-level", "loud"],
            &["--once", "--cleanup-config-on-exit"],
            &["--shim-binary", "/img/shim"],
            &["--daemon-socket-dir", "/run/x"],
            &["--daemon", "--daemon-socket-dir", "run/x"],
            &["--daemon", "--cni-dir", "var/lib/cni"],
            &["--daemon=maybe"],
            &["--allowed-plugin-types", "bridge,../sh"],
            &["--allowed-plugin-types-by-namespace", "bridge,macvlan"],
            &["--allowed-plugin-types-by-namespace", "Team_A=bridge"],
            &["--allowed-plugin-types-by-namespace", "a=/bin/sh"],
            &["--auxiliary-cni-chain-name", "../chain"],
            &["--auxiliary-cni-chain-name", "a/b"],
        ] {
            let r =
                Args::try_parse_from(std::iter::once("plexus install").chain(bad.iter().copied()));
            assert!(r.is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn every_flag_is_documented() {
        let cmd = Args::command();
        for arg in cmd.get_arguments() {
            assert!(
                arg.get_help().is_some() || arg.get_long_help().is_some(),
                "--{} has no help",
                arg.get_id()
            );
        }
    }
}
