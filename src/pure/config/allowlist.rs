//! Which plugin types a NetworkAttachmentDefinition may run: the node config's `allowedPluginTypes` and
//! `allowedPluginTypesByNamespace`, validated, and the check of one NAD's network against them
//! (docs/security.md, "Plugin allow-list"). Pure.

use std::collections::{BTreeMap, BTreeSet};

use plexus_cni::validate;
use serde_json::Value;

use crate::pure::netconf::NetworkConfig;

/// The key of the list for NADs of every namespace without a list of its own.
pub const GLOBAL_KEY: &str = "allowedPluginTypes";
/// The key of the per-namespace lists (keyed by the NAD's namespace).
pub const BY_NAMESPACE_KEY: &str = "allowedPluginTypesByNamespace";

/// The plugin types NADs may run. Unset (the default): every type, as Go Multus. A namespace's own list
/// replaces the global one for the NADs of that namespace (it does not add to it), so a namespace can be
/// given less as well as more; an empty list allows no NAD there at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginAllowList {
    global: Option<BTreeSet<String>>,
    by_namespace: BTreeMap<String, BTreeSet<String>>,
}

/// A value of one of the two keys that cannot be used (CNI code 7 in a network config; the daemon refuses
/// to start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {reason}")]
pub struct AllowListError {
    /// [`GLOBAL_KEY`] or [`BY_NAMESPACE_KEY`].
    pub key: &'static str,
    /// Where in it: the key, or the entry (`allowedPluginTypes[2]`, `allowedPluginTypesByNamespace["a"][0]`).
    pub at: String,
    /// What is wrong and what is valid.
    pub reason: String,
}

/// A NAD's network names plugin types its namespace's list does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAllowed {
    /// The types refused, in the order the network runs them (a plugin, then its IPAM).
    pub plugin_types: Vec<String>,
    /// The key whose list refused them: `allowedPluginTypes` or `allowedPluginTypesByNamespace["<ns>"]`.
    pub key: String,
}

impl std::fmt::Display for NotAllowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let quoted: Vec<String> = self
            .plugin_types
            .iter()
            .map(|t| Value::from(t.as_str()).to_string())
            .collect();
        let (noun, verb) = if quoted.len() == 1 {
            ("type", "is")
        } else {
            ("types", "are")
        };
        write!(
            f,
            "plugin {noun} {} {verb} not allowed for NetworkAttachmentDefinitions by the node config's {}",
            quoted.join(", "),
            self.key
        )
    }
}

fn type_set(
    key: &'static str,
    at: &str,
    types: Vec<String>,
) -> Result<BTreeSet<String>, AllowListError> {
    types
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            validate::plugin_type(&t).map_err(|e| AllowListError {
                key,
                at: format!("{at}[{i}]"),
                reason: e.to_string(),
            })?;
            Ok(t)
        })
        .collect()
}

impl PluginAllowList {
    /// Validate the two keys as given: every entry must be a plugin type (never a path), every namespace
    /// a DNS-1123 label.
    pub fn new(
        global: Option<Vec<String>>,
        by_namespace: Option<BTreeMap<String, Vec<String>>>,
    ) -> Result<PluginAllowList, AllowListError> {
        let global = global
            .map(|g| type_set(GLOBAL_KEY, GLOBAL_KEY, g))
            .transpose()?;
        let mut lists = BTreeMap::new();
        for (ns, types) in by_namespace.unwrap_or_default() {
            if let Some(why) = crate::pure::names::label_error(&ns) {
                return Err(AllowListError {
                    key: BY_NAMESPACE_KEY,
                    at: BY_NAMESPACE_KEY.to_string(),
                    reason: format!("each key must be a namespace: {why}"),
                });
            }
            let at = format!("{BY_NAMESPACE_KEY}[{}]", Value::from(ns.as_str()));
            lists.insert(ns, type_set(BY_NAMESPACE_KEY, &at, types)?);
        }
        Ok(PluginAllowList {
            global,
            by_namespace: lists,
        })
    }

    /// The two keys of a JSON object (the daemon's config checks them at start), `null` meaning unset.
    pub fn from_json(
        global: Option<&Value>,
        by_namespace: Option<&Value>,
    ) -> Result<PluginAllowList, AllowListError> {
        fn decode<T: serde::de::DeserializeOwned>(
            key: &'static str,
            v: Option<&Value>,
            shape: &str,
        ) -> Result<Option<T>, AllowListError> {
            match v {
                None | Some(Value::Null) => Ok(None),
                Some(v) => {
                    serde_json::from_value(v.clone())
                        .map(Some)
                        .map_err(|_| AllowListError {
                            key,
                            at: key.to_string(),
                            reason: format!("expected {shape}"),
                        })
                }
            }
        }
        PluginAllowList::new(
            decode(GLOBAL_KEY, global, "a list of plugin types")?,
            decode(
                BY_NAMESPACE_KEY,
                by_namespace,
                "an object of namespace: list of plugin types",
            )?,
        )
    }

    /// Whether any list is set (unset: NADs may run every type).
    pub fn restricts(&self) -> bool {
        self.global.is_some() || !self.by_namespace.is_empty()
    }

    /// The list for NADs of `namespace`, and the key it comes from; `None`: every type.
    fn list_for(&self, namespace: &str) -> Option<(&BTreeSet<String>, String)> {
        match self.by_namespace.get(namespace) {
            Some(list) => Some((
                list,
                format!("{BY_NAMESPACE_KEY}[{}]", Value::from(namespace)),
            )),
            None => self.global.as_ref().map(|g| (g, GLOBAL_KEY.to_string())),
        }
    }

    /// Check the network of a NAD in `namespace`: every type it names (see [`plugin_types`]) must be in
    /// that namespace's list.
    pub fn check(&self, namespace: &str, network: &NetworkConfig) -> Result<(), NotAllowed> {
        let Some((list, key)) = self.list_for(namespace) else {
            return Ok(());
        };
        let refused: Vec<String> = plugin_types(network)
            .into_iter()
            .filter(|t| !list.contains(*t))
            .map(str::to_string)
            .collect();
        if refused.is_empty() {
            Ok(())
        } else {
            Err(NotAllowed {
                plugin_types: refused,
                key,
            })
        }
    }
}

/// Every plugin type a network runs, once each, in order: each plugin of the conf or conflist (chained
/// plugins included) and its `ipam.type`, the binary the plugin itself runs for addresses.
pub fn plugin_types(network: &NetworkConfig) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for p in &network.plugins {
        for t in std::iter::once(p.plugin_type.as_str()).chain(p.ipam_type()) {
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn net(v: Value) -> NetworkConfig {
        NetworkConfig::from_bytes(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    fn list(v: Value) -> PluginAllowList {
        PluginAllowList::from_json(v.get(GLOBAL_KEY), v.get(BY_NAMESPACE_KEY)).unwrap()
    }

    fn refused(l: &PluginAllowList, ns: &str, network: Value) -> Option<(Vec<String>, String)> {
        l.check(ns, &net(network))
            .err()
            .map(|e| (e.plugin_types, e.key))
    }

    fn macvlan_host_local() -> Value {
        json!({"cniVersion": "1.0.0", "name": "m", "type": "macvlan", "master": "eth0",
               "ipam": {"type": "host-local", "subnet": "10.1.0.0/16"}})
    }

    #[test]
    fn unset_allows_every_type_as_go_multus() {
        let l = PluginAllowList::default();
        assert!(!l.restricts());
        assert_eq!(
            refused(&l, "a", json!({"name": "x", "type": "anything"})),
            None
        );
        assert_eq!(
            list(json!({"allowedPluginTypes": null})),
            l,
            "null is unset"
        );
    }

    #[test]
    fn the_global_list_checks_the_plugin_and_its_ipam() {
        let l = list(json!({"allowedPluginTypes": ["macvlan", "host-local"]}));
        assert!(l.restricts());
        assert_eq!(refused(&l, "a", macvlan_host_local()), None);
        assert_eq!(
            refused(
                &l,
                "a",
                json!({"name": "x", "type": "host-device", "device": "eth0"})
            ),
            Some((vec!["host-device".into()], "allowedPluginTypes".into()))
        );
        // The main plugin allowed, its IPAM not.
        let mut dhcp = macvlan_host_local();
        dhcp["ipam"] = json!({"type": "dhcp"});
        assert_eq!(
            refused(&l, "a", dhcp),
            Some((vec!["dhcp".into()], "allowedPluginTypes".into()))
        );
        // An empty list allows nothing.
        let none = list(json!({"allowedPluginTypes": []}));
        assert_eq!(
            refused(&none, "a", macvlan_host_local()),
            Some((
                vec!["macvlan".into(), "host-local".into()],
                "allowedPluginTypes".into()
            ))
        );
    }

    #[test]
    fn every_chained_plugin_and_each_ipam_of_a_conflist_is_checked() {
        let l = list(json!({"allowedPluginTypes": ["bridge", "host-local", "tuning"]}));
        let chain = |third: &str, ipam: &str| {
            json!({"cniVersion": "1.0.0", "name": "c", "plugins": [
                {"type": "bridge", "ipam": {"type": ipam}},
                {"type": "tuning"},
                {"type": third},
            ]})
        };
        assert_eq!(refused(&l, "a", chain("tuning", "host-local")), None);
        assert_eq!(
            refused(&l, "a", chain("portmap", "host-local")),
            Some((vec!["portmap".into()], "allowedPluginTypes".into()))
        );
        assert_eq!(
            refused(&l, "a", chain("firewall", "whereabouts")),
            Some((
                vec!["whereabouts".into(), "firewall".into()],
                "allowedPluginTypes".into()
            )),
            "every refused type, in the order they would run"
        );
        assert_eq!(
            plugin_types(&net(chain("bridge", "host-local"))),
            ["bridge", "host-local", "tuning"],
            "each type once"
        );
    }

    #[test]
    fn a_namespaces_list_replaces_the_global_one_for_its_nads() {
        let l = list(json!({
            "allowedPluginTypes": ["macvlan", "host-local"],
            "allowedPluginTypesByNamespace": {"sriov-team": ["sriov", "host-local"], "locked": []},
        }));
        let sriov = json!({"name": "s", "type": "sriov", "ipam": {"type": "host-local"}});
        assert_eq!(refused(&l, "sriov-team", sriov.clone()), None);
        assert_eq!(
            refused(&l, "other", sriov),
            Some((vec!["sriov".into()], "allowedPluginTypes".into()))
        );
        // Replaces, does not extend: the global list's macvlan is not allowed in sriov-team.
        assert_eq!(
            refused(&l, "sriov-team", macvlan_host_local()),
            Some((
                vec!["macvlan".into()],
                r#"allowedPluginTypesByNamespace["sriov-team"]"#.into()
            ))
        );
        assert_eq!(
            refused(&l, "locked", macvlan_host_local()).map(|r| r.1),
            Some(r#"allowedPluginTypesByNamespace["locked"]"#.into())
        );
        // Only per-namespace lists: other namespaces stay unrestricted.
        let only = list(json!({"allowedPluginTypesByNamespace": {"locked": ["bridge"]}}));
        assert!(only.restricts());
        assert_eq!(refused(&only, "free", macvlan_host_local()), None);
        assert!(refused(&only, "locked", macvlan_host_local()).is_some());
    }

    #[test]
    fn the_refusal_names_the_types_and_the_key() {
        let e = NotAllowed {
            plugin_types: vec!["host-device".into()],
            key: GLOBAL_KEY.into(),
        };
        assert_eq!(
            e.to_string(),
            "plugin type \"host-device\" is not allowed for NetworkAttachmentDefinitions by the node config's allowedPluginTypes"
        );
        let e = NotAllowed {
            plugin_types: vec!["a".into(), "b".into()],
            key: GLOBAL_KEY.into(),
        };
        assert!(
            e.to_string()
                .starts_with("plugin types \"a\", \"b\" are not"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_the_key_and_the_entry() {
        let bad = |v: Value| {
            PluginAllowList::from_json(v.get(GLOBAL_KEY), v.get(BY_NAMESPACE_KEY)).unwrap_err()
        };
        let e = bad(json!({"allowedPluginTypes": ["bridge", "../sh"]}));
        assert_eq!(
            (e.key, e.at.as_str()),
            (GLOBAL_KEY, "allowedPluginTypes[1]")
        );
        assert!(e.reason.contains("path separator"), "{e}");
        let e = bad(json!({"allowedPluginTypes": "bridge,macvlan"}));
        assert_eq!(
            e.to_string(),
            "allowedPluginTypes: expected a list of plugin types"
        );
        let e = bad(json!({"allowedPluginTypesByNamespace": {"Team_A": ["bridge"]}}));
        assert_eq!(e.key, BY_NAMESPACE_KEY);
        assert!(e.reason.contains("not a DNS-1123 label"), "{e}");
        let e = bad(json!({"allowedPluginTypesByNamespace": {"a": ["/bin/sh"]}}));
        assert_eq!(e.at, r#"allowedPluginTypesByNamespace["a"][0]"#);
        let e = bad(json!({"allowedPluginTypesByNamespace": ["a"]}));
        assert_eq!(e.key, BY_NAMESPACE_KEY);
    }
}
