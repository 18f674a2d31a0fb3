//! Delegate network configurations: a single conf or a conflist, parsed losslessly and validated (CNI-1, CNI-3, CNI-52).

use std::collections::BTreeMap;

use plexus_cni::{CniVersion, validate, version::highest_supported};
use serde_json::{Map, Value};

/// Whether a delegate config is a single plugin conf or a conflist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A single plugin object with a `type`.
    Conf,
    /// A list with `plugins`.
    List,
}

/// One plugin object of a network config.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConf {
    /// The binary name; validated never to be a path (CVE-2021-20206).
    pub plugin_type: String,
    /// `capabilities` entries set to true.
    pub capabilities: BTreeMap<String, bool>,
    /// The whole plugin object as given.
    pub raw: Map<String, Value>,
}

impl PluginConf {
    /// Whether this plugin declared `capability` true (CNI-30).
    pub fn has_capability(&self, capability: &str) -> bool {
        self.capabilities.get(capability).copied().unwrap_or(false)
    }

    /// Its `ipam.type`: the IPAM binary the plugin runs itself (validated like `type` when parsed); `None`
    /// when it has none or it is empty.
    pub fn ipam_type(&self) -> Option<&str> {
        self.raw
            .get("ipam")
            .and_then(|i| i.get("type"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
    }
}

/// A delegate network configuration, with the exact bytes it was built from.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    /// The network `name`.
    pub name: String,
    /// The version the network runs at: a conf's `cniVersion`, or the highest supported of a list's `cniVersion`/`cniVersions` (CNI-2).
    pub cni_version: CniVersion,
    /// Conf or list.
    pub kind: Kind,
    /// The plugins to run, in order (one for a conf).
    pub plugins: Vec<PluginConf>,
    /// CNI-5.
    pub disable_check: bool,
    /// CNI-5.
    pub disable_gc: bool,
    /// The config as JSON (key order kept).
    pub value: Map<String, Value>,
    /// The exact serialised config; what is cached and what libcni would hash.
    pub bytes: Vec<u8>,
}

/// A delegate config that cannot be used; maps to CNI code 7 except where noted.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NetConfError {
    /// Not JSON at all (code 6).
    #[error("not valid JSON: {0}")]
    Decode(String),
    /// JSON but not an object.
    #[error("a network config must be a JSON object")]
    NotAnObject,
    /// Neither `type` nor `plugins`.
    #[error(
        "a network config needs either \"type\" (a single plugin) or a non-empty \"plugins\" list"
    )]
    NeitherConfNorList,
    /// A `.conf` that has `plugins` but no `type`.
    #[error("a conf file needs \"type\"; perhaps this is a .conflist?")]
    ConfWithoutType,
    /// A field has the wrong shape.
    #[error("{field}: {reason}")]
    Field {
        /// JSON path of the field.
        field: String,
        /// What is wrong and what is valid.
        reason: String,
    },
    /// A version we do not speak (code 1).
    #[error(
        "{field}: unsupported CNI version {}; supported: {}",
        validate::shown(value),
        supported()
    )]
    Version {
        /// JSON path of the field.
        field: String,
        /// The value given.
        value: String,
    },
}

/// The deepest JSON nesting accepted in a config (serde_json's recursion limit); deeper input is refused
/// with a message saying so (hostile input, issue 6).
pub const MAX_JSON_DEPTH: usize = 128;

/// A JSON decoder's complaint, with the nesting limit spelled out when that is what was hit.
pub fn decode_reason(e: &serde_json::Error) -> String {
    let reason = e.to_string();
    if reason.contains("recursion limit") {
        format!("nesting is deeper than {MAX_JSON_DEPTH} levels ({reason})")
    } else {
        reason
    }
}

/// `s` cut to 64 characters (with `…`): messages never echo hostile input whole (issue 6).
fn cut(s: &str) -> String {
    match s.char_indices().nth(validate::MAX_QUOTED_CHARS) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// A JSON value as text, cut as [`cut`] does.
fn cut_json(v: &Value) -> String {
    cut(&v.to_string())
}

fn supported() -> String {
    CniVersion::ALL
        .iter()
        .map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn field(field: impl Into<String>, reason: impl Into<String>) -> NetConfError {
    NetConfError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

fn bool_field(obj: &Map<String, Value>, key: &str) -> Result<bool, NetConfError> {
    // libcni also accepts "true"/"false" strings for the list booleans (CNI-1).
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(field(
            key,
            format!("must be a boolean, got {}", cut_json(other)),
        )),
    }
}

fn parse_plugin(obj: &Map<String, Value>, at: &str) -> Result<PluginConf, NetConfError> {
    let plugin_type = match obj.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(other) => {
            return Err(field(
                format!("{at}type"),
                format!("must be a string, got {}", cut_json(other)),
            ));
        }
        None => return Err(field(format!("{at}type"), "is required")),
    };
    validate::plugin_type(&plugin_type).map_err(|e| field(format!("{at}type"), e.to_string()))?;
    if let Some(ipam) = obj.get("ipam") {
        match ipam {
            Value::Object(ipam) => {
                if let Some(t) = ipam.get("type") {
                    let t = t
                        .as_str()
                        .ok_or_else(|| field(format!("{at}ipam.type"), "must be a string"))?;
                    if !t.is_empty() {
                        validate::plugin_type(t)
                            .map_err(|e| field(format!("{at}ipam.type"), e.to_string()))?;
                    }
                }
            }
            Value::Null => {}
            _ => return Err(field(format!("{at}ipam"), "must be an object")),
        }
    }
    let mut capabilities = BTreeMap::new();
    match obj.get("capabilities") {
        None | Some(Value::Null) => {}
        Some(Value::Object(caps)) => {
            for (k, v) in caps {
                let b = v.as_bool().ok_or_else(|| {
                    field(format!("{at}capabilities.{}", cut(k)), "must be a boolean")
                })?;
                if b {
                    capabilities.insert(k.clone(), true);
                }
            }
        }
        Some(_) => {
            return Err(field(
                format!("{at}capabilities"),
                "must be an object of booleans",
            ));
        }
    }
    Ok(PluginConf {
        plugin_type,
        capabilities,
        raw: obj.clone(),
    })
}

impl NetworkConfig {
    /// Parse bytes (a conf or a conflist), keeping them as given.
    pub fn from_bytes(bytes: &[u8]) -> Result<NetworkConfig, NetConfError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| NetConfError::Decode(decode_reason(&e)))?;
        let Value::Object(obj) = value else {
            return Err(NetConfError::NotAnObject);
        };
        Self::build(obj, bytes.to_vec())
    }

    /// Build from a JSON value; the bytes are its compact serialisation.
    pub fn from_value(value: Value) -> Result<NetworkConfig, NetConfError> {
        let Value::Object(obj) = value else {
            return Err(NetConfError::NotAnObject);
        };
        let bytes = serde_json::to_vec(&obj).map_err(|e| NetConfError::Decode(e.to_string()))?;
        Self::build(obj, bytes)
    }

    fn build(obj: Map<String, Value>, bytes: Vec<u8>) -> Result<NetworkConfig, NetConfError> {
        let name = match obj.get("name") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(field(
                    "name",
                    format!("must be a string, got {}", cut_json(other)),
                ));
            }
        };
        let has_type = obj.contains_key("type");
        let plugins_value = obj.get("plugins");
        let kind = if has_type {
            Kind::Conf
        } else if matches!(plugins_value, Some(Value::Array(p)) if !p.is_empty()) {
            Kind::List
        } else {
            return Err(NetConfError::NeitherConfNorList);
        };
        let version_str = |key: &str| -> Result<Option<String>, NetConfError> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(field(
                    key,
                    format!("must be a string, got {}", cut_json(other)),
                )),
            }
        };
        let (cni_version, plugins) = match kind {
            Kind::Conf => {
                let v = version_str("cniVersion")?;
                let version = CniVersion::from_config_str(v.as_deref()).map_err(|_| {
                    NetConfError::Version {
                        field: "cniVersion".into(),
                        value: v.unwrap_or_default(),
                    }
                })?;
                (version, vec![parse_plugin(&obj, "")?])
            }
            Kind::List => {
                let v = version_str("cniVersion")?;
                let mut candidates: Vec<String> = v.iter().cloned().collect();
                match obj.get("cniVersions") {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(list)) => {
                        for (i, item) in list.iter().enumerate() {
                            let s = item.as_str().ok_or_else(|| {
                                field(format!("cniVersions[{i}]"), "must be a string")
                            })?;
                            candidates.push(s.to_string());
                        }
                    }
                    Some(_) => return Err(field("cniVersions", "must be a list of strings")),
                }
                let version = if candidates.is_empty() {
                    CniVersion::V0_1_0
                } else {
                    let refs: Vec<&str> = candidates.iter().map(String::as_str).collect();
                    highest_supported(&refs).ok_or_else(|| NetConfError::Version {
                        field: "cniVersion".into(),
                        value: candidates.join(","),
                    })?
                };
                let mut plugins = Vec::new();
                for (i, p) in plugins_value
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let p = p
                        .as_object()
                        .ok_or_else(|| field(format!("plugins[{i}]"), "must be an object"))?;
                    plugins.push(parse_plugin(p, &format!("plugins[{i}]."))?);
                }
                (version, plugins)
            }
        };
        if !name.is_empty() {
            validate::network_name(&name).map_err(|e| field("name", e.to_string()))?;
        }
        Ok(NetworkConfig {
            name,
            cni_version,
            kind,
            plugins,
            disable_check: bool_field(&obj, "disableCheck")?,
            disable_gc: bool_field(&obj, "disableGC")?,
            value: obj,
            bytes,
        })
    }

    /// Whether a list declares a version; a conf without one is 0.1.0 by the spec.
    pub fn declares_version(&self) -> bool {
        self.value
            .get("cniVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
            || self
                .value
                .get("cniVersions")
                .is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
    }

    /// Require a network name (libcni validates it before every ADD, CNI-53).
    pub fn require_name(&self) -> Result<(), NetConfError> {
        if self.name.is_empty() {
            return Err(field(
                "name",
                "is required (a network name matching ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$)",
            ));
        }
        Ok(())
    }

    /// Return a copy with top-level keys changed by `edit`, re-serialised and re-validated.
    pub fn edited(
        &self,
        edit: impl FnOnce(&mut Map<String, Value>),
    ) -> Result<NetworkConfig, NetConfError> {
        let mut value = self.value.clone();
        edit(&mut value);
        Self::from_value(Value::Object(value))
    }

    /// Inject `name` when missing or empty (NPWG-11).
    pub fn with_name_if_missing(self, name: &str) -> Result<NetworkConfig, NetConfError> {
        if !self.name.is_empty() {
            return Ok(self);
        }
        self.edited(|v| {
            v.insert("name".into(), Value::String(name.to_string()));
        })
    }

    /// Inject `cniVersion` into a list that declares none, so ADD and DEL agree on the version.
    pub fn with_version_if_missing(
        self,
        version: CniVersion,
    ) -> Result<NetworkConfig, NetConfError> {
        if self.kind == Kind::Conf || self.declares_version() {
            return Ok(self);
        }
        self.edited(|v| {
            v.insert(
                "cniVersion".into(),
                Value::String(version.as_str().to_string()),
            );
        })
    }

    /// Whether any plugin declares `capability` (NPWG-22/24/31/33/35).
    pub fn any_capability(&self, capability: &str) -> bool {
        self.plugins.iter().any(|p| p.has_capability(capability))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Regression, fuzz target `netconf`/`annotation` (issue 6): a config edited by plexus (name,
    /// version, cni-args) is re-serialised; a number in it must parse back to the same value. Without
    /// serde_json's `float_roundtrip` 3.3333333333333334e31 came back as 3.333333333333334e31.
    #[test]
    fn numbers_survive_an_edit_exactly() {
        let bytes = br#"{"cniVersion":"1.0.0","name":"n","type":"bandwidth","ingressRate":33333333333333333333333333330000,"x":[0.1,1e-7,2.5e300]}"#;
        let n = NetworkConfig::from_bytes(bytes).unwrap();
        let edited = n.edited(|_| {}).unwrap();
        let again = NetworkConfig::from_bytes(&edited.bytes).unwrap();
        assert_eq!(again.value, n.value);
        assert_eq!(again.bytes, edited.bytes);
    }

    /// Hostile input (issue 6; fuzz target `netconf` asserts it): a refusal quotes at most 64
    /// characters of a value, however large the value is.
    #[test]
    fn messages_never_echo_a_large_value() {
        let big = "x".repeat(1 << 20);
        for v in [
            json!({"cniVersion": "1.0.0", "name": "n", "type": [big]}),
            json!({"cniVersion": "1.0.0", "name": {"k": big}, "type": "t"}),
            json!({"cniVersion": big, "name": "n", "type": "t"}),
            json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "capabilities": {big.clone(): 1}}),
            json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "disableCheck": [big]}),
            json!({"cniVersion": "1.0.0", "name": format!("-{big}"), "type": "t"}),
            json!({"cniVersion": "1.0.0", "name": "n", "type": format!("/{big}")}),
        ] {
            let e = NetworkConfig::from_value(v).unwrap_err().to_string();
            assert!(e.len() < 600, "{} bytes: {e:.200}", e.len());
            assert!(e.contains('…'), "{e:.200}");
        }
    }

    /// Hostile input (issue 6): a NAD's spec.config nested past the limit is refused saying the limit.
    #[test]
    fn deep_nesting_is_refused_with_the_limit() {
        let deep = format!(
            r#"{{"cniVersion":"1.0.0","name":"n","type":"t","x":{}1{}}}"#,
            "[".repeat(MAX_JSON_DEPTH + 1),
            "]".repeat(MAX_JSON_DEPTH + 1)
        );
        let e = NetworkConfig::from_bytes(deep.as_bytes()).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "not valid JSON: nesting is deeper than 128 levels (recursion limit exceeded"
            ),
            "{e}"
        );
        let ok = format!(
            r#"{{"cniVersion":"1.0.0","name":"n","type":"t","x":{}1{}}}"#,
            "[".repeat(MAX_JSON_DEPTH - 2),
            "]".repeat(MAX_JSON_DEPTH - 2)
        );
        assert!(NetworkConfig::from_bytes(ok.as_bytes()).is_ok());
    }

    #[test]
    fn conf_is_detected_and_bytes_are_kept() {
        let bytes = br#"{"cniVersion":"0.3.1","name":"a","type":"bridge","custom":{"k":1}}"#;
        let n = NetworkConfig::from_bytes(bytes).unwrap();
        assert_eq!(n.kind, Kind::Conf);
        assert_eq!(n.cni_version, CniVersion::V0_3_1);
        assert_eq!(n.bytes, bytes.to_vec());
        assert_eq!(n.plugins[0].plugin_type, "bridge");
    }

    #[test]
    fn list_picks_highest_supported_version_cni_2() {
        let n = NetworkConfig::from_value(json!({
            "name": "l", "cniVersion": "0.4.0", "cniVersions": ["1.0.0", "9.0.0"],
            "plugins": [{"type": "bridge", "capabilities": {"portMappings": true, "mac": false}}, {"type": "tuning"}]
        }))
        .unwrap();
        assert_eq!(n.kind, Kind::List);
        assert_eq!(n.cni_version, CniVersion::V1_0_0);
        assert!(n.plugins[0].has_capability("portMappings"));
        assert!(!n.plugins[0].has_capability("mac"));
        assert!(n.any_capability("portMappings"));
    }

    #[test]
    fn path_like_types_are_refused_cve_2021_20206() {
        for t in ["../../bin/sh", "/bin/sh", "a\\b", ".."] {
            let e = NetworkConfig::from_value(json!({"name": "x", "type": t})).unwrap_err();
            assert!(e.to_string().starts_with("type:"), "{t}: {e}");
            let e = NetworkConfig::from_value(
                json!({"name": "x", "plugins": [{"type": "bridge"}, {"type": t}]}),
            )
            .unwrap_err();
            assert!(e.to_string().starts_with("plugins[1].type:"), "{t}: {e}");
            let e = NetworkConfig::from_value(
                json!({"name": "x", "type": "bridge", "ipam": {"type": t}}),
            )
            .unwrap_err();
            assert!(e.to_string().starts_with("ipam.type:"), "{t}: {e}");
        }
    }

    #[test]
    fn neither_conf_nor_list_is_refused() {
        assert_eq!(
            NetworkConfig::from_value(json!({"name": "x", "plugins": []})).unwrap_err(),
            NetConfError::NeitherConfNorList
        );
        assert_eq!(
            NetworkConfig::from_value(json!([1])).unwrap_err(),
            NetConfError::NotAnObject
        );
        assert!(matches!(
            NetworkConfig::from_bytes(b"{nope").unwrap_err(),
            NetConfError::Decode(_)
        ));
    }

    #[test]
    fn bad_versions_are_named() {
        let e = NetworkConfig::from_value(json!({"name": "x", "cniVersion": "9.9.9", "type": "a"}))
            .unwrap_err();
        assert!(matches!(e, NetConfError::Version { .. }), "{e}");
        assert!(e.to_string().contains("9.9.9"));
    }

    #[test]
    fn name_injection_only_when_missing_npwg_11() {
        let n =
            NetworkConfig::from_value(json!({"cniVersion": "1.0.0", "type": "macvlan"})).unwrap();
        let n = n.with_name_if_missing("nad1").unwrap();
        assert_eq!(n.name, "nad1");
        assert_eq!(n.value["name"], "nad1");
        let n = n.with_name_if_missing("other").unwrap();
        assert_eq!(n.name, "nad1");
    }

    #[test]
    fn list_without_version_gets_one_injected() {
        let n =
            NetworkConfig::from_value(json!({"name": "l", "plugins": [{"type": "a"}]})).unwrap();
        assert_eq!(n.cni_version, CniVersion::V0_1_0);
        let n = n.with_version_if_missing(CniVersion::V1_0_0).unwrap();
        assert_eq!(n.cni_version, CniVersion::V1_0_0);
        assert_eq!(n.value["cniVersion"], "1.0.0");
    }

    #[test]
    fn string_booleans_accepted_for_disable_check() {
        let n = NetworkConfig::from_value(json!({"name": "l", "cniVersion": "1.0.0", "disableCheck": "true", "plugins": [{"type": "a"}]}))
            .unwrap();
        assert!(n.disable_check);
        let e = NetworkConfig::from_value(
            json!({"name": "l", "disableGC": 3, "plugins": [{"type": "a"}]}),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("disableGC:"));
    }

    #[test]
    fn invalid_name_refused() {
        let e = NetworkConfig::from_value(json!({"name": "bad name", "type": "a"})).unwrap_err();
        assert!(e.to_string().starts_with("name:"), "{e}");
    }
}
