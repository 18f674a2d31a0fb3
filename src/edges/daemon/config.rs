//! The daemon's own config file (`plexus daemon --config`): its keys, their defaults, and the overlay of
//! every other key on each request's network config, as Go Multus's daemon does
//! (docs/multus-compat.md, "Daemon mode").

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::{Map, Value};

use crate::seams::hostroot::HostRoot;

/// Where the daemon config lives by default (next to Go Multus's `multus.d/daemon-config.json`).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/cni/net.d/plexus.d/daemon-config.json";
/// Environment variables that name this node, in order (the downward API sets one of them).
pub const NODE_NAME_VARS: [&str; 3] = ["PLEXUS_NODE_NAME", "MULTUS_NODE_NAME", "NODE_NAME"];

/// DELs run at once by default. A DEL's delegates mostly wait on the kernel (a link's removal waits for
/// RCU grace periods), not on the CPUs, so the cores are the wrong measure; each in-flight DEL costs one
/// delegate process and a thread, and those beyond `maxConcurrency` wait for room under the memory limit
/// (docs/daemon.md, "Admission", has the storms behind this number).
pub const DEFAULT_MAX_DEL_CONCURRENCY: usize = 16;

/// Keys that configure the daemon itself and are never overlaid on a request.
const DAEMON_KEYS: &[&str] = &[
    "socketDir",
    "nodeName",
    "metricsAddress",
    "maxConcurrency",
    "maxDelConcurrency",
    "maxQueue",
    "cacheSyncTimeoutSeconds",
    "shutdownTimeoutSeconds",
    "statusWrite",
    "statusRetrySeconds",
    "hotplug",
    // The daemon's one client serves every request: a request's kubeconfig is not used.
    "kubeconfig",
    // Logging is the daemon's, set once at start.
    "logFile",
    "logLevel",
    "logToStderr",
    "logOptions",
    // Where the host's root is mounted: delegates run chrooted there.
    "chrootDir",
    // Go Multus daemon keys that have no meaning here (plexus install writes the shim config).
    "multusConfigFile",
    "multusAutoconfigDir",
    "multusMasterCNI",
    "cniConfigDir",
    "forceCNIVersion",
    "overrideNetworkName",
    "perNodeCertificate",
    "enablePprof",
    "metricsPort",
    "connectionLimit",
    "readinessindicatorfile",
];

/// A daemon config that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DaemonConfigError {
    /// The file could not be read.
    #[error("cannot read daemon config {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// Not a JSON object.
    #[error("daemon config {path}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A key has the wrong type or value.
    #[error("daemon config key {key:?}: {reason}")]
    Key {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No node name anywhere.
    #[error(
        "no node name: set \"nodeName\" in the daemon config or PLEXUS_NODE_NAME from the downward API (spec.nodeName)"
    )]
    NoNodeName,
}

/// When ADD's network-status write happens (daemon mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusWrite {
    /// After the reply (the default): the pod's networks are up and the runtime has its result one API round
    /// trip sooner; the daemon writes the status right after, retrying for `statusRetrySeconds` while the
    /// API is unavailable, and a write that never lands is a Warning event on the pod, an error in the log
    /// and `plexus_status_writes_total{outcome="failed"}`. A failed write no longer fails the ADD.
    AfterReply,
    /// Before the reply, as the thin binary and Go Multus do: a write that fails within the API budget fails
    /// the ADD, which is rolled back.
    BeforeReply,
}

/// The validated daemon config.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// The socket directory (recreated 0700 at start).
    pub socket_dir: PathBuf,
    /// This node (pods are watched with `spec.nodeName=<node>`).
    pub node_name: String,
    /// A kubeconfig; `None`: in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// Where /metrics, /healthz and /readyz are served over TCP; `None`: not served.
    pub metrics_address: Option<SocketAddr>,
    /// CNI requests other than DEL run at once (every verb's, when `max_del_concurrency` is `None`).
    pub max_concurrency: usize,
    /// DELs run at once, in slots of their own; `None`: DEL shares `max_concurrency`'s slots (an explicit
    /// `maxConcurrency` without `maxDelConcurrency`: one limit for every request, as it always meant).
    pub max_del_concurrency: Option<usize>,
    /// Requests waiting for a slot; more are refused with "try again later" (code 11).
    pub max_queue: usize,
    /// How long start-up waits for the watch caches before serving with live reads.
    pub cache_sync_timeout: Duration,
    /// How long SIGTERM waits for in-flight and queued requests (and status writes still to send).
    pub shutdown_timeout: Duration,
    /// When ADD's network-status is written.
    pub status_write: StatusWrite,
    /// How long a status write after the reply is retried while the API is unavailable.
    pub status_retry: Duration,
    /// `hotplug`: a change of a running pod's networks annotation attaches and detaches its networks
    /// (docs/daemon.md, "Hot-plug"). Off by default.
    pub hotplug: bool,
    /// `chrootDir`: the host's root as mounted in the daemon's container. Delegates run chrooted into it
    /// and host paths the runtime names (`CNI_NETNS`, `CNI_PATH`) are resolved in it; `None` (unset, or
    /// `/`): the daemon already sees the host's filesystem.
    pub host_root: Option<HostRoot>,
    /// Logging (`logFile`, `logLevel`, `logToStderr`), as in a network config.
    pub log: Map<String, Value>,
    /// Every other key: overlaid on each request's config.
    pub overlay: Map<String, Value>,
}

impl DaemonConfig {
    /// Read and validate `path`; `env` looks up the node-name variables.
    pub fn load(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, DaemonConfigError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            // No file: every default (the node name must then come from the environment).
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && path == Path::new(DEFAULT_CONFIG_PATH) =>
            {
                b"{}".to_vec()
            }
            Err(e) => {
                return Err(DaemonConfigError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                });
            }
        };
        Self::from_bytes(&bytes, &path.display().to_string(), env)
    }

    /// Validate a config's bytes (`what` names it in errors).
    pub fn from_bytes(
        bytes: &[u8],
        what: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, DaemonConfigError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| DaemonConfigError::Parse {
            path: what.to_string(),
            reason: e.to_string(),
        })?;
        let Value::Object(map) = value else {
            return Err(DaemonConfigError::Parse {
                path: what.to_string(),
                reason: "not a JSON object".into(),
            });
        };
        let string = |key: &'static str| -> Result<Option<String>, DaemonConfigError> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(DaemonConfigError::Key {
                    key,
                    reason: format!("expected a string, got {other}"),
                }),
            }
        };
        let number =
            |key: &'static str, default: u64, min: u64| -> Result<u64, DaemonConfigError> {
                match map.get(key) {
                    None | Some(Value::Null) => Ok(default),
                    Some(v) => match v.as_u64() {
                        Some(n) if n >= min => Ok(n),
                        _ => Err(DaemonConfigError::Key {
                            key,
                            reason: format!("expected a whole number of at least {min}, got {v}"),
                        }),
                    },
                }
            };
        let node_name = match string("nodeName")? {
            Some(n) => n,
            None => NODE_NAME_VARS
                .iter()
                .find_map(|v| env(v).filter(|s| !s.is_empty()))
                .ok_or(DaemonConfigError::NoNodeName)?,
        };
        let metrics_address = match map.get("metricsAddress") {
            None | Some(Value::Null) => Some(SocketAddr::from(([127, 0, 0, 1], 9091))),
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.parse().map_err(|e| DaemonConfigError::Key {
                key: "metricsAddress",
                reason: format!("{s:?} is not an address:port ({e}); \"\" turns metrics off"),
            })?),
            Some(other) => {
                return Err(DaemonConfigError::Key {
                    key: "metricsAddress",
                    reason: format!("expected a string, got {other}"),
                });
            }
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (max_concurrency, max_del_concurrency) = match (
            number("maxConcurrency", 0, 0)?,
            number("maxDelConcurrency", 0, 0)?,
        ) {
            // Never fewer DEL slots than the others get.
            (0, 0) => (cores, Some(DEFAULT_MAX_DEL_CONCURRENCY.max(cores))),
            (0, del) => (cores, Some(del as usize)),
            (n, 0) => (n as usize, None),
            (n, del) => (n as usize, Some(del as usize)),
        };
        let status_write = match string("statusWrite")?.as_deref() {
            None | Some("afterReply") => StatusWrite::AfterReply,
            Some("beforeReply") => StatusWrite::BeforeReply,
            Some(other) => {
                return Err(DaemonConfigError::Key {
                    key: "statusWrite",
                    reason: format!("{other:?}: expected \"afterReply\" or \"beforeReply\""),
                });
            }
        };
        let hotplug = match map.get("hotplug") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(DaemonConfigError::Key {
                    key: "hotplug",
                    reason: format!("expected true or false, got {other}"),
                });
            }
        };
        let host_root = match string("chrootDir")? {
            Some(d) if !Path::new(&d).is_absolute() => {
                return Err(DaemonConfigError::Key {
                    key: "chrootDir",
                    reason: format!("{d:?} is not an absolute path"),
                });
            }
            d => d.and_then(HostRoot::new),
        };
        // A network key, overlaid on every request like any other (the daemon config is the node's, so it
        // wins over the shim's), but checked here: a bad value stops the daemon at start instead of failing
        // every ADD.
        number(
            "maxAttachmentsPerPod",
            crate::pure::config::DEFAULT_MAX_ATTACHMENTS_PER_POD as u64,
            1,
        )?;
        // Overlaid on every request like any network-config key, but a bad list is refused here, at start,
        // rather than failing every ADD of the node.
        {
            use crate::pure::config::allowlist::{BY_NAMESPACE_KEY, GLOBAL_KEY, PluginAllowList};
            PluginAllowList::from_json(map.get(GLOBAL_KEY), map.get(BY_NAMESPACE_KEY)).map_err(
                |e| DaemonConfigError::Key {
                    key: e.key,
                    reason: e.to_string(),
                },
            )?;
        }
        let mut log = Map::new();
        let mut overlay = Map::new();
        for (k, v) in &map {
            if matches!(
                k.as_str(),
                "logFile" | "logLevel" | "logToStderr" | "logOptions"
            ) {
                log.insert(k.clone(), v.clone());
            } else if !DAEMON_KEYS.contains(&k.as_str()) {
                overlay.insert(k.clone(), v.clone());
            }
        }
        Ok(DaemonConfig {
            socket_dir: PathBuf::from(
                string("socketDir")?
                    .unwrap_or_else(|| plexus_shim::wire::DEFAULT_SOCKET_DIR.to_string()),
            ),
            node_name,
            kubeconfig: string("kubeconfig")?.map(PathBuf::from),
            metrics_address,
            max_concurrency,
            max_del_concurrency,
            max_queue: number("maxQueue", 1024, 0)? as usize,
            cache_sync_timeout: Duration::from_secs(number("cacheSyncTimeoutSeconds", 20, 0)?),
            shutdown_timeout: Duration::from_secs(number("shutdownTimeoutSeconds", 25, 0)?),
            status_write,
            status_retry: Duration::from_secs(number("statusRetrySeconds", 300, 1)?),
            hotplug,
            host_root,
            log,
            overlay,
        })
    }

    /// The cniDir of requests that do not name their own: the overlay's `cniDir`, else the default.
    pub fn cni_dir(&self) -> PathBuf {
        let dir = self
            .overlay
            .get("cniDir")
            .and_then(Value::as_str)
            .map(Path::new)
            .filter(|p| p.is_absolute())
            .unwrap_or(Path::new(crate::pure::config::DEFAULT_CNI_DIR));
        crate::pure::config::clean(dir)
    }

    /// The socket's path.
    pub fn socket_path(&self) -> PathBuf {
        self.socket_dir.join(plexus_shim::wire::SOCKET_NAME)
    }

    /// A request's config with the daemon's keys laid over it (Go Multus: every daemon key wins). A config
    /// that is not a JSON object is returned as it is, for the config parser to refuse with its own words.
    pub fn overlay_on(&self, request_config: &[u8]) -> Vec<u8> {
        if self.overlay.is_empty() {
            return request_config.to_vec();
        }
        match serde_json::from_slice::<Value>(request_config) {
            Ok(Value::Object(mut conf)) => {
                for (k, v) in &self.overlay {
                    conf.insert(k.clone(), v.clone());
                }
                serde_json::to_vec(&Value::Object(conf)).unwrap_or_else(|_| request_config.to_vec())
            }
            _ => request_config.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn chroot_dir_names_the_host_root_and_is_never_overlaid() {
        let env = |_: &str| Some("n".to_string());
        let c = DaemonConfig::from_bytes(br#"{"chrootDir": "/hostroot"}"#, "t", &env).unwrap();
        assert_eq!(c.host_root, HostRoot::new("/hostroot"));
        assert!(c.host_root.is_some());
        assert!(!c.overlay.contains_key("chrootDir"));
        for unset in [r#"{}"#, r#"{"chrootDir": ""}"#, r#"{"chrootDir": "/"}"#] {
            let c = DaemonConfig::from_bytes(unset.as_bytes(), "t", &env).unwrap();
            assert_eq!(c.host_root, None, "{unset}");
        }
        let e = DaemonConfig::from_bytes(br#"{"chrootDir": "hostroot"}"#, "t", &env).unwrap_err();
        assert!(e.to_string().contains("chrootDir"), "{e}");
    }

    #[test]
    fn defaults_and_the_node_name_from_the_downward_api_variable() {
        let env = |k: &str| (k == "MULTUS_NODE_NAME").then(|| "node-a".to_string());
        let c = DaemonConfig::from_bytes(b"{}", "t", &env).unwrap();
        assert_eq!(c.node_name, "node-a");
        assert_eq!(c.socket_path(), Path::new("/run/plexus/plexus.sock"));
        assert_eq!(c.metrics_address, Some("127.0.0.1:9091".parse().unwrap()));
        assert!(c.max_concurrency >= 1);
        assert_eq!(c.max_queue, 1024);
        assert_eq!(c.cache_sync_timeout, Duration::from_secs(20));
        assert!(c.kubeconfig.is_none());
        assert!(c.overlay.is_empty());
        assert_eq!(c.status_write, StatusWrite::AfterReply);
        assert_eq!(c.status_retry, Duration::from_secs(300));
        let c = DaemonConfig::from_bytes(
            br#"{"statusWrite":"beforeReply","statusRetrySeconds":7}"#,
            "t",
            &env,
        )
        .unwrap();
        assert_eq!(c.status_write, StatusWrite::BeforeReply);
        assert_eq!(c.status_retry, Duration::from_secs(7));
        assert!(
            c.overlay.is_empty(),
            "daemon keys, never laid over a request"
        );
    }

    /// DEL has slots of its own by default (its delegates wait on the kernel, not on the CPUs); an explicit
    /// `maxConcurrency` alone is one limit for every request, as it was before DEL had its own.
    #[test]
    fn del_has_its_own_slots_unless_max_concurrency_alone_says_otherwise() {
        let env = |k: &str| (k == "NODE_NAME").then(|| "n".to_string());
        let limits = |json: &str| {
            let c = DaemonConfig::from_bytes(json.as_bytes(), "t", &env).unwrap();
            (c.max_concurrency, c.max_del_concurrency)
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let del = DEFAULT_MAX_DEL_CONCURRENCY.max(cores);
        assert_eq!(limits("{}"), (cores, Some(del)));
        assert!(DEFAULT_MAX_DEL_CONCURRENCY > cores.min(2));
        assert_eq!(limits(r#"{"maxConcurrency":3}"#), (3, None));
        assert_eq!(limits(r#"{"maxDelConcurrency":5}"#), (cores, Some(5)));
        assert_eq!(
            limits(r#"{"maxConcurrency":3,"maxDelConcurrency":40}"#),
            (3, Some(40))
        );
        // 0 is "the default", as for maxConcurrency.
        assert_eq!(
            limits(r#"{"maxConcurrency":0,"maxDelConcurrency":0}"#),
            (cores, Some(del))
        );
        let c = DaemonConfig::from_bytes(br#"{"maxDelConcurrency":5}"#, "t", &env).unwrap();
        assert!(
            c.overlay.is_empty(),
            "a daemon key, never laid over a request"
        );
        assert!(matches!(
            DaemonConfig::from_bytes(br#"{"maxDelConcurrency":"many"}"#, "t", &env),
            Err(DaemonConfigError::Key {
                key: "maxDelConcurrency",
                ..
            })
        ));
    }

    #[test]
    fn the_cni_dir_is_the_overlays_or_the_default() {
        let env = |k: &str| (k == "NODE_NAME").then(|| "n".to_string());
        let dir = |json: &str| {
            DaemonConfig::from_bytes(json.as_bytes(), "t", &env)
                .unwrap()
                .cni_dir()
        };
        assert_eq!(dir("{}"), Path::new(crate::pure::config::DEFAULT_CNI_DIR));
        assert_eq!(
            dir(r#"{"cniDir":"/var/lib/x/./y/"}"#),
            Path::new("/var/lib/x/y")
        );
        assert_eq!(
            dir(r#"{"cniDir":"relative"}"#),
            Path::new(crate::pure::config::DEFAULT_CNI_DIR)
        );
    }

    /// Issue 18: hot-plug is off unless the daemon config says `"hotplug": true`; a daemon key, never laid
    /// over a request; anything but a boolean stops the daemon at start.
    #[test]
    fn hotplug_is_off_by_default_and_a_boolean() {
        let env = |k: &str| (k == "NODE_NAME").then(|| "n".to_string());
        let c = DaemonConfig::from_bytes(b"{}", "t", &env).unwrap();
        assert!(!c.hotplug);
        let c = DaemonConfig::from_bytes(br#"{"hotplug": true}"#, "t", &env).unwrap();
        assert!(c.hotplug);
        assert!(c.overlay.is_empty(), "a daemon key");
        for bad in [r#"{"hotplug": "yes"}"#, r#"{"hotplug": 1}"#] {
            match DaemonConfig::from_bytes(bad.as_bytes(), "t", &env) {
                Err(e @ DaemonConfigError::Key { key: "hotplug", .. }) => {
                    assert!(e.to_string().contains("true or false"), "{e}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn no_node_name_is_an_error_that_says_how_to_set_one() {
        let e = DaemonConfig::from_bytes(b"{}", "t", &no_env).unwrap_err();
        assert_eq!(e, DaemonConfigError::NoNodeName);
        assert!(e.to_string().contains("PLEXUS_NODE_NAME"));
    }

    #[test]
    fn bad_values_name_the_key() {
        for (json, key) in [
            (r#"{"nodeName":"n","maxQueue":-1}"#, "maxQueue"),
            (
                r#"{"nodeName":"n","metricsAddress":"nope"}"#,
                "metricsAddress",
            ),
            (r#"{"nodeName":5}"#, "nodeName"),
            (
                r#"{"nodeName":"n","statusWrite":"whenever"}"#,
                "statusWrite",
            ),
            (
                r#"{"nodeName":"n","statusRetrySeconds":0}"#,
                "statusRetrySeconds",
            ),
            (
                r#"{"nodeName":"n","maxAttachmentsPerPod":0}"#,
                "maxAttachmentsPerPod",
            ),
            (
                r#"{"nodeName":"n","maxAttachmentsPerPod":"32"}"#,
                "maxAttachmentsPerPod",
            ),
        ] {
            match DaemonConfig::from_bytes(json.as_bytes(), "t", &no_env) {
                Err(DaemonConfigError::Key { key: k, .. }) => assert_eq!(k, key, "{json}"),
                other => panic!("{json}: {other:?}"),
            }
        }
        assert!(matches!(
            DaemonConfig::from_bytes(b"[]", "t", &no_env),
            Err(DaemonConfigError::Parse { .. })
        ));
    }

    /// Issue 20: the node's per-pod attachment limit, set in the daemon config, is checked at start and
    /// replaces whatever the shim's config says.
    #[test]
    fn max_attachments_per_pod_is_the_daemons_when_it_sets_one() {
        let c = DaemonConfig::from_bytes(
            br#"{"nodeName":"n","maxAttachmentsPerPod":5}"#,
            "t",
            &no_env,
        )
        .unwrap();
        assert_eq!(c.overlay.get("maxAttachmentsPerPod"), Some(&Value::from(5)));
        let merged = c.overlay_on(
            br#"{"cniVersion":"1.0.0","name":"n","type":"plexus-shim","clusterNetwork":"c","maxAttachmentsPerPod":900}"#,
        );
        let config = crate::pure::config::Config::from_bytes(&merged).unwrap();
        assert_eq!(config.max_attachments_per_pod, 5);
    }

    /// The plugin allow-list (docs/security.md): checked when the daemon starts, and laid over every
    /// request (daemon keys win), so a NAD is checked against the daemon's list whatever the shim's says.
    #[test]
    fn the_plugin_allow_list_is_checked_at_start_and_overrides_the_request() {
        let c = DaemonConfig::from_bytes(
            br#"{"nodeName":"n","allowedPluginTypes":["macvlan","host-local"],
                "allowedPluginTypesByNamespace":{"sriov-team":["sriov","host-local"]}}"#,
            "t",
            &no_env,
        )
        .unwrap();
        let merged = c.overlay_on(
            br#"{"cniVersion":"1.0.0","name":"n","type":"plexus-shim","clusterNetwork":"/c",
                "allowedPluginTypes":["host-device"]}"#,
        );
        let config = crate::pure::config::Config::from_bytes(&merged).unwrap();
        let nad = crate::pure::netconf::NetworkConfig::from_bytes(
            br#"{"cniVersion":"1.0.0","name":"x","type":"host-device","device":"eth0"}"#,
        )
        .unwrap();
        let refusal = config
            .allowed_plugin_types
            .check("team-a", &nad)
            .unwrap_err();
        assert_eq!(refusal.plugin_types, ["host-device"]);
        let sriov = crate::pure::netconf::NetworkConfig::from_bytes(
            br#"{"cniVersion":"1.0.0","name":"s","type":"sriov","ipam":{"type":"host-local"}}"#,
        )
        .unwrap();
        assert!(
            config
                .allowed_plugin_types
                .check("sriov-team", &sriov)
                .is_ok()
        );
        for (json, key) in [
            (
                r#"{"nodeName":"n","allowedPluginTypes":["ok","../../bin/sh"]}"#,
                "allowedPluginTypes",
            ),
            (
                r#"{"nodeName":"n","allowedPluginTypes":"bridge"}"#,
                "allowedPluginTypes",
            ),
            (
                r#"{"nodeName":"n","allowedPluginTypesByNamespace":{"a/b":["bridge"]}}"#,
                "allowedPluginTypesByNamespace",
            ),
        ] {
            match DaemonConfig::from_bytes(json.as_bytes(), "t", &no_env) {
                Err(e @ DaemonConfigError::Key { key: k, .. }) => {
                    assert_eq!(k, key, "{json}");
                    assert!(e.to_string().contains(key), "{e}");
                }
                other => panic!("{json}: {other:?}"),
            }
        }
    }

    #[test]
    fn daemon_keys_stay_home_and_every_other_key_overrides_the_request() {
        let c = DaemonConfig::from_bytes(
            br#"{"nodeName":"n","socketDir":"/run/x","kubeconfig":"/k","logLevel":"debug","metricsAddress":"",
                "confDir":"/etc/nets","namespaceIsolation":true}"#,
            "t",
            &no_env,
        )
        .unwrap();
        assert_eq!(c.metrics_address, None);
        assert_eq!(c.kubeconfig.as_deref(), Some(Path::new("/k")));
        assert_eq!(c.log.get("logLevel"), Some(&Value::from("debug")));
        let keys: Vec<&str> = c.overlay.keys().map(String::as_str).collect();
        assert_eq!(keys, ["confDir", "namespaceIsolation"]);
        let merged: Value = serde_json::from_slice(&c.overlay_on(
            br#"{"cniVersion":"1.0.0","name":"n","type":"plexus-shim","confDir":"/mine","cniDir":"/c"}"#,
        ))
        .unwrap();
        assert_eq!(merged["confDir"], "/etc/nets");
        assert_eq!(merged["namespaceIsolation"], true);
        assert_eq!(merged["cniDir"], "/c");
        // Not an object: left for the config parser to refuse.
        assert_eq!(c.overlay_on(b"[1]"), b"[1]");
    }
}
