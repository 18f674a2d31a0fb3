//! NetworkAttachmentDefinition objects as the API returns them (`src/seams/k8s/nad.rs`) and their
//! `spec.config` taken the way the API client takes it (`src/seams/k8s/client.rs` `network_for`: trimmed,
//! named after the NAD when it has no name, given the plexus config's version, `cni-args` merged).
//!
//! Invariants: no panic; a NAD object that deserialises serialises back to the same object; every
//! name the networks annotation accepts is a valid CNI network name, so a nameless `spec.config`
//! takes it; the prepared network has the NAD's name (or its own), a version, and plugin types that
//! are never paths (CNI-52).
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus::{pure::{annotations, netconf::{Kind, NetworkConfig}}, seams::k8s::nad::NetworkAttachmentDefinition};
use plexus_cni::{CniVersion, validate};
use serde_json::{Map, Value, json};

fuzz_target!(|data: &[u8]| {
    let Ok(nad) = serde_json::from_slice::<NetworkAttachmentDefinition>(data) else {
        return;
    };
    let value = serde_json::to_value(&nad).expect("NAD serialises");
    let back: NetworkAttachmentDefinition = serde_json::from_value(value).expect("NAD round trip");
    assert_eq!(back.spec, nad.spec);
    assert_eq!(back.metadata.name, nad.metadata.name);

    // The NAD as a pod would select it: `namespace/name`, refused unless both are DNS names.
    let ns = nad.metadata.namespace.as_deref().unwrap_or("default");
    let name = nad.metadata.name.as_deref().unwrap_or_default();
    let Ok(selection) = annotations::parse_networks(&format!("{ns}/{name}"), "default") else {
        return;
    };
    let [selection] = selection.as_slice() else {
        return;
    };
    validate::network_name(&selection.name).expect("a selectable NAD name is a network name");

    let Some(config) = nad
        .spec
        .config
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
    else {
        return;
    };
    let Ok(network) = NetworkConfig::from_bytes(config.as_bytes()) else {
        return;
    };
    let own_name = network.name.clone();
    let network = network
        .with_name_if_missing(&selection.name)
        .expect("NAD name injected");
    if own_name.is_empty() {
        assert_eq!(network.name, selection.name);
    }
    let network = network
        .with_version_if_missing(CniVersion::V1_1_0)
        .expect("version injected");
    assert!(network.kind == Kind::Conf || network.declares_version());
    let args: Map<String, Value> = json!({"fuzz": "1"})
        .as_object()
        .cloned()
        .unwrap_or_default();
    if let Ok(merged) = annotations::inject_cni_args(&network, &args) {
        let again = NetworkConfig::from_bytes(&merged.bytes).expect("merged conf parses");
        assert_eq!(again.name, network.name);
        assert_eq!(again.plugins.len(), network.plugins.len());
    }
    for p in &network.plugins {
        validate::plugin_type(&p.plugin_type).expect("accepted plugin type");
    }
});
