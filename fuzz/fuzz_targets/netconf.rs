//! Delegate network configs, a conf or a conflist (`src/pure/netconf.rs`; a NAD's `spec.config`, a
//! `delegates` entry, a file in `confDir`; CNI-1, CNI-3, CNI-52).
//!
//! Invariants: no panic; a refusal's message is short (it never echoes a large value); an accepted config keeps its bytes, has a valid name or none, plugin types
//! (and IPAM types) that are never paths, a plugin count that matches its kind; rebuilt from its JSON
//! value it is the same network (parse of valid output is stable); the edits plexus makes (name,
//! version injection) keep it valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus::pure::netconf::{Kind, NetworkConfig};
use plexus_cni::{CniVersion, validate};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let n = match NetworkConfig::from_bytes(data) {
        Ok(n) => n,
        Err(e) => {
            // A refusal quotes at most 64 characters of any value (it reaches logs and events).
            let msg = e.to_string();
            assert!(
                msg.len() <= 1024,
                "error message of {} bytes: {msg:.300}",
                msg.len()
            );
            return;
        }
    };
    {
        check(&n);
        assert_eq!(n.bytes, data);
        let rebuilt = NetworkConfig::from_value(Value::Object(n.value.clone())).expect("rebuilt");
        same_network(&n, &rebuilt);
        let again = NetworkConfig::from_bytes(&rebuilt.bytes).expect("re-parsed");
        assert_eq!(again, rebuilt);
        let named = n
            .clone()
            .with_name_if_missing("fuzz-net")
            .expect("name injected");
        assert!(!named.name.is_empty());
        if n.name.is_empty() {
            assert_eq!(named.name, "fuzz-net");
        } else {
            assert_eq!(named.name, n.name);
        }
        check(&named);
        let versioned = named
            .with_version_if_missing(CniVersion::V1_0_0)
            .expect("version");
        assert!(versioned.kind == Kind::Conf || versioned.declares_version());
        check(&versioned);
    }
});

fn check(n: &NetworkConfig) {
    if !n.name.is_empty() {
        validate::network_name(&n.name).expect("accepted name");
    }
    match n.kind {
        Kind::Conf => assert_eq!(n.plugins.len(), 1),
        Kind::List => assert!(!n.plugins.is_empty()),
    }
    for p in &n.plugins {
        validate::plugin_type(&p.plugin_type).expect("accepted type");
        assert!(!p.plugin_type.contains('/') && !p.plugin_type.contains(".."));
        if let Some(t) = p
            .raw
            .get("ipam")
            .and_then(|i| i.get("type"))
            .and_then(Value::as_str)
            && !t.is_empty()
        {
            validate::plugin_type(t).expect("accepted ipam type");
        }
    }
}

fn same_network(a: &NetworkConfig, b: &NetworkConfig) {
    assert_eq!(a.name, b.name);
    assert_eq!(a.cni_version, b.cni_version);
    assert_eq!(a.kind, b.kind);
    assert_eq!(a.plugins, b.plugins);
    assert_eq!(a.disable_check, b.disable_check);
    assert_eq!(a.disable_gc, b.disable_gc);
    assert_eq!(a.value, b.value);
}
