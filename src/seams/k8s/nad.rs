//! The NetworkAttachmentDefinition type (`k8s.cni.cncf.io/v1`, NPWG-4/5/6) and the CRD generated from it.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// NetworkAttachmentDefinition spec defines the desired state of a network attachment.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "k8s.cni.cncf.io",
    version = "v1",
    kind = "NetworkAttachmentDefinition",
    plural = "network-attachment-definitions",
    singular = "network-attachment-definition",
    shortname = "net-attach-def",
    shortname = "nad",
    namespaced,
    doc = "NetworkAttachmentDefinition is a CRD schema specified by the Network Plumbing Working Group to express the intent for attaching pods to one or more logical or physical networks. More information available at: https://github.com/k8snetworkplumbingwg/multi-net-spec"
)]
pub struct NetworkAttachmentDefinitionSpec {
    /// NetworkAttachmentDefinition config is a JSON-formatted CNI configuration
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

/// The CRD as plexus ships it in `crds/`. `spec` is optional (NPWG-5: a NAD may have no config), so the
/// derived `required: [spec]` is dropped: existing NADs without a spec must stay valid.
pub fn crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = NetworkAttachmentDefinition::crd();
    for v in &mut crd.spec.versions {
        if let Some(schema) = v
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            if let Some(required) = schema.required.as_mut() {
                required.retain(|r| r != "spec");
            }
            if schema.required.as_ref().is_some_and(Vec::is_empty) {
                schema.required = None;
            }
        }
    }
    crd
}

/// The CRD as YAML, exactly as in `crds/network-attachment-definitions.yaml`.
pub fn crd_yaml() -> String {
    let body = serde_saphyr::to_string(&crd()).unwrap_or_default();
    format!("# Generated from src/seams/k8s/nad.rs by `plexus crd`; do not edit by hand.\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    /// The API surface plexus relies on; a change here would fail silently against real clusters (NPWG-4).
    #[test]
    fn pins_group_version_kind_plural() {
        assert_eq!(NetworkAttachmentDefinition::group(&()), "k8s.cni.cncf.io");
        assert_eq!(NetworkAttachmentDefinition::version(&()), "v1");
        assert_eq!(
            NetworkAttachmentDefinition::kind(&()),
            "NetworkAttachmentDefinition"
        );
        assert_eq!(
            NetworkAttachmentDefinition::plural(&()),
            "network-attachment-definitions"
        );
        assert_eq!(
            NetworkAttachmentDefinition::api_version(&()),
            "k8s.cni.cncf.io/v1"
        );
        let c = crd();
        assert_eq!(
            c.metadata.name.as_deref(),
            Some("network-attachment-definitions.k8s.cni.cncf.io")
        );
        assert_eq!(c.spec.scope, "Namespaced");
        assert_eq!(
            c.spec.names.singular.as_deref(),
            Some("network-attachment-definition")
        );
        let short = c.spec.names.short_names.clone().unwrap_or_default();
        assert!(
            short.contains(&"net-attach-def".to_string()) && short.contains(&"nad".to_string())
        );
        let v = &c.spec.versions[0];
        assert!(v.served && v.storage);
        let schema = serde_json::to_value(
            v.schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            schema["properties"]["spec"]["properties"]["config"]["type"],
            "string"
        );
        assert!(
            schema.get("required").is_none_or(|r| !r
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == "spec"))
        );
    }

    /// `crds/` must hold exactly what the types generate. Regenerate with `cargo run -- crd > crds/network-attachment-definitions.yaml`.
    #[test]
    fn crds_dir_matches_the_types() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("crds/network-attachment-definitions.yaml");
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == crd_yaml(),
            "{} is out of date; regenerate it with `cargo run -- crd > crds/network-attachment-definitions.yaml`",
            path.display()
        );
    }

    #[test]
    fn nad_without_spec_config_round_trips() {
        let nad: NetworkAttachmentDefinition = serde_json::from_value(serde_json::json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "x", "namespace": "ns"}, "spec": {}
        }))
        .unwrap();
        assert_eq!(nad.spec.config, None);
    }
}
