//! The plexus config exactly as it arrives on stdin: every Go Multus key, unknown
//! keys kept (docs/multus-compat.md, "Config keys").

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `logOptions` as given (lumberjack-style rotation).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawLogOptions {
    /// Days to keep rotated files.
    pub max_age: Option<i64>,
    /// Megabytes before rotation.
    pub max_size: Option<i64>,
    /// Rotated files kept.
    pub max_backups: Option<i64>,
    /// Gzip rotated files.
    pub compress: Option<bool>,
}

/// The stdin config, field for field. Types follow Go Multus so a Multus config parses unchanged.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawConfig {
    /// CNI version of this config.
    pub cni_version: Option<String>,
    /// Network name.
    pub name: Option<String>,
    /// `plexus` or `multus`; used by the runtime only.
    #[serde(rename = "type")]
    pub plugin_type: Option<String>,
    /// Path to a kubeconfig.
    pub kubeconfig: Option<String>,
    /// Inline delegate configs (confs or conflists); the first is the cluster network.
    pub delegates: Option<Vec<Value>>,
    /// The cluster network: a path or a network name.
    pub cluster_network: Option<String>,
    /// Networks added to every pod.
    pub default_networks: Option<Vec<String>>,
    /// Namespaces whose pods do not get `defaultNetworks`.
    pub system_namespaces: Option<Vec<String>>,
    /// Namespace of NADs named by `clusterNetwork`/`defaultNetworks`.
    pub multus_namespace: Option<String>,
    /// Refuse cross-namespace NAD references.
    pub namespace_isolation: Option<bool>,
    /// Comma-separated namespaces any pod may reference.
    pub global_namespaces: Option<String>,
    /// Directory of on-disk network configs.
    pub conf_dir: Option<String>,
    /// Scratch cache directory.
    pub cni_dir: Option<String>,
    /// Delegate binary directory, searched before `CNI_PATH`.
    pub bin_dir: Option<String>,
    /// Log file.
    pub log_file: Option<String>,
    /// `debug`, `verbose`, `error` or `panic`.
    pub log_level: Option<String>,
    /// Also log to stderr.
    pub log_to_stderr: Option<bool>,
    /// Rotation settings.
    pub log_options: Option<RawLogOptions>,
    /// Wait for this file before ADD/STATUS/GC (Multus spells it in lower case).
    #[serde(rename = "readinessindicatorfile")]
    pub readiness_indicator_file: Option<String>,
    /// Capabilities the runtime sees (not read by the plugin).
    pub capabilities: Option<Map<String, Value>>,
    /// Filled in by the runtime.
    pub runtime_config: Option<Map<String, Value>>,
    /// Keep the cache when a delegate DEL fails.
    pub retry_delete_on_error: Option<bool>,
    /// Auxiliary chain directory name.
    #[serde(rename = "auxiliaryCNIChainName")]
    pub auxiliary_cni_chain_name: Option<String>,
    /// Accepted and ignored (plexus is not meant to be chained after another plugin).
    pub prev_result: Option<Value>,
    /// GC: the attachments still valid (CNI-22).
    #[serde(rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Value>,
    /// GC: the pre-rename key.
    #[serde(rename = "cni.dev/attachments")]
    pub attachments: Option<Value>,
    /// plexus: fail a request for a capability no plugin declares (default true; false restores Multus).
    pub strict_capabilities: Option<bool>,
    /// plexus: seconds a delegate may run before it is killed.
    pub delegate_timeout_seconds: Option<f64>,
    /// plexus: seconds to wait for the per-container lock.
    pub lock_timeout_seconds: Option<f64>,
    /// plexus: seconds ADD/STATUS/GC wait for the readiness indicator file (Multus: 45).
    pub readiness_indicator_timeout_seconds: Option<f64>,
    /// plexus: seconds one Kubernetes API request may take (Go Multus: 250 ms for GetPod;
    /// docs/multus-compat.md, "API client").
    pub api_timeout_seconds: Option<f64>,
    /// plexus: seconds all Kubernetes API calls of one operation may take, retries included.
    pub api_budget_seconds: Option<f64>,
    /// plexus: the most network attachments one pod may get, the node's own networks included.
    pub max_attachments_per_pod: Option<u64>,
    /// plexus: the kubelet PodResources socket (devices of NADs with a resourceName).
    pub pod_resources_socket: Option<String>,
    /// plexus: the kubelet device-manager checkpoint, read when the socket is missing.
    pub kubelet_checkpoint_file: Option<String>,
    /// plexus: the Device Information Spec directory (`dp/` and `cni/` below it).
    pub device_info_dir: Option<String>,
    /// plexus: the plugin types NADs may run (`allowlist`); checked there, so a wrong shape is code 7.
    pub allowed_plugin_types: Option<Value>,
    /// plexus: per NAD namespace, a list that replaces `allowedPluginTypes` there.
    pub allowed_plugin_types_by_namespace: Option<Value>,
    /// Every other key, kept as given.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl RawConfig {
    /// Parse stdin bytes; the error names the JSON path of a mistyped key.
    pub fn parse(bytes: &[u8]) -> Result<RawConfig, RawError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() || path == "." {
                RawError::Syntax(crate::pure::netconf::decode_reason(&inner))
            } else {
                RawError::Type {
                    path,
                    reason: inner.to_string(),
                }
            }
        })
    }
}

/// Why stdin could not be read as a config.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RawError {
    /// Not JSON, or not an object (CNI code 6).
    #[error("config is not a JSON object: {0}")]
    Syntax(String),
    /// A key has the wrong type (CNI code 6).
    #[error("config key {path}: {reason}")]
    Type {
        /// JSON path.
        path: String,
        /// The decoder's complaint.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multus_config_parses_with_unknown_keys_kept() {
        let raw = RawConfig::parse(
            br#"{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus",
                 "kubeconfig":"/etc/cni/net.d/multus.d/multus.kubeconfig",
                 "delegates":[{"type":"bridge","name":"b"}],
                 "readinessindicatorfile":"/run/ready","logOptions":{"maxAge":3},
                 "cniConf":"/etc/cni/multus/net.d","someVendorKey":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(raw.name.as_deref(), Some("multus-cni-network"));
        assert_eq!(raw.readiness_indicator_file.as_deref(), Some("/run/ready"));
        assert_eq!(raw.log_options.unwrap().max_age, Some(3));
        assert!(raw.extra.contains_key("cniConf"));
        assert!(raw.extra.contains_key("someVendorKey"));
    }

    #[test]
    fn mistyped_key_is_named() {
        let e = RawConfig::parse(br#"{"name":"x","namespaceIsolation":"yes"}"#).unwrap_err();
        match e {
            RawError::Type { path, .. } => assert_eq!(path, "namespaceIsolation"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_is_a_syntax_error() {
        assert!(matches!(
            RawConfig::parse(b"{not json"),
            Err(RawError::Syntax(_))
        ));
        assert!(matches!(
            RawConfig::parse(b"[1,2]"),
            Err(RawError::Syntax(_)) | Err(RawError::Type { .. })
        ));
    }
}
