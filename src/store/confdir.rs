//! On-disk network configs: a file, a directory, or a network found by name in `confDir` (NPWG-10;
//! docs/multus-compat.md, "Cluster and default networks").

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde_json::Value;

use crate::pure::netconf::{Kind, NetConfError, NetworkConfig};

/// Why an on-disk network could not be loaded (CNI code 7).
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// What was read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no usable config.
    #[error("invalid network config in {}: {source}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        source: NetConfError,
    },
    /// A directory named as a network holds no config file.
    #[error("no .conf, .conflist or .json file in {}", .0.display())]
    EmptyDir(PathBuf),
    /// No file in `confDir` has that network name.
    #[error("cannot find network {name:?}: no .conflist, .conf or .json file in {} has \"name\": {name:?}", dir.display())]
    NotFound {
        /// The network name.
        name: String,
        /// The directory searched.
        dir: PathBuf,
    },
}

const EXTENSIONS: [&str; 3] = ["conf", "json", "conflist"];

fn has_ext(p: &Path, exts: &[&str]) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.contains(&e))
}

fn sorted_files(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>, LookupError> {
    let rd = fs::read_dir(dir).map_err(|source| LookupError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && has_ext(p, exts))
        .collect();
    files.sort();
    Ok(files)
}

/// Load one file: `.conflist` as a list (with its subdirectory plugins), anything else as a single conf.
pub fn load_file(path: &Path) -> Result<NetworkConfig, LookupError> {
    let bytes = fs::read(path).map_err(|source| LookupError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |source| LookupError::Invalid {
        path: path.to_path_buf(),
        source,
    };
    let net = NetworkConfig::from_bytes(&bytes).map_err(invalid)?;
    if has_ext(path, &["conflist"]) {
        if net.kind != Kind::List {
            return Err(invalid(NetConfError::Field {
                field: "plugins".into(),
                reason: "a .conflist file needs a non-empty \"plugins\" list".into(),
            }));
        }
        net.require_name().map_err(invalid)?;
        with_subdirectory_plugins(net, path).map_err(|e| match e {
            LookupError::Invalid { .. } | LookupError::Read { .. } => e,
            other => other,
        })
    } else {
        if net.kind != Kind::Conf {
            return Err(invalid(NetConfError::ConfWithoutType));
        }
        net.require_name().map_err(invalid)?;
        Ok(net)
    }
}

/// libcni's plugin aggregation (CNI-4): `*.conf` plugin objects in `<dir>/<list name>/` are appended to the
/// list, unless `loadOnlyInlinedPlugins` is set.
fn with_subdirectory_plugins(
    net: NetworkConfig,
    path: &Path,
) -> Result<NetworkConfig, LookupError> {
    if net
        .value
        .get("loadOnlyInlinedPlugins")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return Ok(net);
    }
    let Some(dir) = path.parent().map(|d| d.join(&net.name)) else {
        return Ok(net);
    };
    let extra = subdirectory_plugins(&dir)?;
    if extra.is_empty() {
        return Ok(net);
    }
    net.edited(|v| {
        if let Some(Value::Array(plugins)) = v.get_mut("plugins") {
            plugins.extend(extra);
        }
    })
    .map_err(|source| LookupError::Invalid {
        path: path.to_path_buf(),
        source,
    })
}

/// The plugin objects of a subdirectory, as libcni aggregates them (CNI-4): every `*.conf` file in `dir`, in
/// file-name order, each a plugin object with a `type`. A missing directory has none. Shared by a
/// `.conflist`'s own subdirectory and the auxiliary chain (docs/multus-compat.md, "Auxiliary chain").
pub fn subdirectory_plugins(dir: &Path) -> Result<Vec<Value>, LookupError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut plugins = Vec::new();
    for f in sorted_files(dir, &["conf"])? {
        let bytes = fs::read(&f).map_err(|source| LookupError::Read {
            path: f.clone(),
            source,
        })?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| LookupError::Invalid {
            path: f.clone(),
            source: NetConfError::Decode(e.to_string()),
        })?;
        // Validate it as a plugin (type present, not a path).
        NetworkConfig::from_value(v.clone())
            .and_then(|n| {
                if n.kind == Kind::Conf {
                    Ok(n)
                } else {
                    Err(NetConfError::ConfWithoutType)
                }
            })
            .map_err(|source| LookupError::Invalid {
                path: f.clone(),
                source,
            })?;
        plugins.push(v);
    }
    Ok(plugins)
}

/// Load a directory: the lexically first `.conf`, `.json` or `.conflist` file in it.
pub fn load_dir(dir: &Path) -> Result<NetworkConfig, LookupError> {
    let files = sorted_files(dir, &EXTENSIONS)?;
    let first = files
        .first()
        .ok_or_else(|| LookupError::EmptyDir(dir.to_path_buf()))?;
    load_file(first)
}

/// Load a path given in `clusterNetwork`/`defaultNetworks`: a directory or a file.
pub fn load_path(path: &Path) -> Result<NetworkConfig, LookupError> {
    let meta = fs::metadata(path).map_err(|source| LookupError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        load_dir(path)
    } else {
        load_file(path)
    }
}

/// Find the network whose `name` is `name` in `dir`: conflists first, then `.conf`, then `.json`
/// (NPWG-10; docs/multus-compat.md, "Cluster and default networks"). Unreadable or invalid files
/// are skipped, as they cannot be the one asked for.
pub fn find_by_name(dir: &Path, name: &str) -> Result<NetworkConfig, LookupError> {
    let not_found = || LookupError::NotFound {
        name: name.to_string(),
        dir: dir.to_path_buf(),
    };
    let files = match sorted_files(dir, &EXTENSIONS) {
        Ok(f) => f,
        Err(LookupError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(not_found());
        }
        Err(e) => return Err(e),
    };
    for ext in ["conflist", "conf", "json"] {
        for f in files.iter().filter(|f| has_ext(f, &[ext])) {
            let Ok(bytes) = fs::read(f) else { continue };
            let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            if obj.get("name").and_then(Value::as_str) == Some(name) {
                return load_file(f);
            }
        }
    }
    Err(not_found())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn conflist_first_then_conf_then_json() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.json", r#"{"name":"n","type":"json-one"}"#);
        write(d.path(), "b.conf", r#"{"name":"n","type":"conf-one"}"#);
        write(
            d.path(),
            "c.conflist",
            r#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"list-one"}]}"#,
        );
        let n = find_by_name(d.path(), "n").unwrap();
        assert_eq!(n.plugins[0].plugin_type, "list-one");
        fs::remove_file(d.path().join("c.conflist")).unwrap();
        assert_eq!(
            find_by_name(d.path(), "n").unwrap().plugins[0].plugin_type,
            "conf-one"
        );
        fs::remove_file(d.path().join("b.conf")).unwrap();
        assert_eq!(
            find_by_name(d.path(), "n").unwrap().plugins[0].plugin_type,
            "json-one"
        );
    }

    #[test]
    fn not_found_names_network_and_dir() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "x.conf", r#"{"name":"other","type":"a"}"#);
        write(d.path(), "broken.conf", "{");
        let e = find_by_name(d.path(), "want").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("\"want\"") && msg.contains(&d.path().display().to_string()),
            "{msg}"
        );
        let e = find_by_name(&d.path().join("missing"), "want").unwrap_err();
        assert!(matches!(e, LookupError::NotFound { .. }));
    }

    #[test]
    fn dir_takes_lexically_first() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "20-b.conf", r#"{"name":"b","type":"b"}"#);
        write(
            d.path(),
            "10-a.conflist",
            r#"{"name":"a","cniVersion":"0.4.0","plugins":[{"type":"a"}]}"#,
        );
        write(d.path(), "05-ignored.txt", "x");
        assert_eq!(load_path(d.path()).unwrap().name, "a");
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            load_dir(empty.path()),
            Err(LookupError::EmptyDir(_))
        ));
    }

    #[test]
    fn conf_file_without_type_hints_conflist() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "x.conf",
            r#"{"name":"x","plugins":[{"type":"a"}]}"#,
        );
        let e = load_file(&p).unwrap_err();
        assert!(e.to_string().contains("perhaps this is a .conflist"), "{e}");
    }

    #[test]
    fn subdirectory_plugins_are_appended_unless_inlined_only_cni_4() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "10-net.conflist",
            r#"{"name":"net","cniVersion":"1.0.0","plugins":[{"type":"bridge","custom":1}]}"#,
        );
        write(
            d.path(),
            "net/20-tuning.conf",
            r#"{"type":"tuning","sysctl":{"a":"1"}}"#,
        );
        write(
            d.path(),
            "net/10-portmap.conf",
            r#"{"type":"portmap","capabilities":{"portMappings":true}}"#,
        );
        let n = load_file(&p).unwrap();
        let types: Vec<_> = n.plugins.iter().map(|p| p.plugin_type.as_str()).collect();
        assert_eq!(types, ["bridge", "portmap", "tuning"]);
        assert_eq!(n.plugins[0].raw["custom"], 1, "plugin-specific keys kept");
        let bytes: Value = serde_json::from_slice(&n.bytes).unwrap();
        assert_eq!(
            bytes["plugins"].as_array().unwrap().len(),
            3,
            "cached bytes include appended plugins"
        );

        let p = write(
            d.path(),
            "10-net.conflist",
            r#"{"name":"net","cniVersion":"1.0.0","loadOnlyInlinedPlugins":true,"plugins":[{"type":"bridge"}]}"#,
        );
        assert_eq!(load_file(&p).unwrap().plugins.len(), 1);
    }

    #[test]
    fn hostile_subdirectory_plugin_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "n.conflist",
            r#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#,
        );
        write(d.path(), "n/x.conf", r#"{"type":"../../bin/sh"}"#);
        let e = load_file(&p).unwrap_err();
        assert!(e.to_string().contains("type"), "{e}");
    }
}
