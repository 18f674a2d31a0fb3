//! The pod requests of the thin path without `Pod`'s whole decoder: a GET decoded into the fields plexus
//! reads (the same ones the daemon's watch keeps, `super::watch::trim_pod`) and a status PATCH whose reply
//! is not decoded. The full decoder (containers, volumes, probes, ...) was 0.3 MB of the thin binary's
//! code (BENCHMARKS.md, "Issue 17").

use k8s_openapi::{
    api::core::v1::{Pod, PodResourceClaim, PodResourceClaimStatus, PodSpec, PodStatus},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Client, Resource,
    api::{GetParams, Patch, PatchParams},
    core::Request,
};
use serde::{Deserialize, de::IgnoredAny};

/// A pod as plexus reads it: all of its metadata, its node and DRA claims.
#[derive(Deserialize)]
struct PodView {
    metadata: ObjectMeta,
    spec: Option<SpecView>,
    status: Option<StatusView>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecView {
    node_name: Option<String>,
    resource_claims: Option<Vec<PodResourceClaim>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusView {
    resource_claim_statuses: Option<Vec<PodResourceClaimStatus>>,
}

impl From<PodView> for Pod {
    fn from(v: PodView) -> Pod {
        Pod {
            metadata: v.metadata,
            spec: v.spec.map(|s| PodSpec {
                node_name: s.node_name,
                resource_claims: s.resource_claims,
                ..PodSpec::default()
            }),
            status: v.status.map(|s| PodStatus {
                resource_claim_statuses: s.resource_claim_statuses,
                ..PodStatus::default()
            }),
        }
    }
}

fn pods(namespace: &str) -> Request {
    Request::new(Pod::url_path(&(), Some(namespace)))
}

/// GET the pod, as `Api::<Pod>::get` does (same request, same errors), keeping what plexus reads.
pub async fn get(client: &Client, namespace: &str, name: &str) -> Result<Pod, kube::Error> {
    let mut req = pods(namespace)
        .get(name, &GetParams::default())
        .map_err(kube::Error::BuildRequest)?;
    req.extensions_mut().insert("get");
    client.request::<PodView>(req).await.map(Pod::from)
}

/// PATCH the pod's status subresource, as `Api::<Pod>::patch_status` does; the pod it returns is skipped.
pub async fn patch_status<P: serde::Serialize + std::fmt::Debug>(
    client: &Client,
    namespace: &str,
    name: &str,
    params: &PatchParams,
    patch: &Patch<P>,
) -> Result<(), kube::Error> {
    let mut req = pods(namespace)
        .patch_subresource("status", name, params, patch)
        .map_err(kube::Error::BuildRequest)?;
    req.extensions_mut().insert("patch_status");
    client.request::<IgnoredAny>(req).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Everything plexus reads of a pod comes through the view as a full decode gives it.
    #[test]
    fn the_view_keeps_every_field_plexus_reads() {
        let body = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "resourceVersion": "7",
                "labels": {"app": "x"},
                "annotations": {"k8s.v1.cni.cncf.io/networks": "a,b", "other": "y"}},
            "spec": {"nodeName": "n1",
                "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}],
                "volumes": [{"name": "v", "emptyDir": {}}],
                "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "t"}]},
            "status": {"phase": "Running",
                "resourceClaimStatuses": [{"name": "gpu", "resourceClaimName": "p-gpu-x"}]}
        });
        let full: Pod = serde_json::from_value(body.clone()).unwrap();
        let view: Pod = serde_json::from_value::<PodView>(body).unwrap().into();
        assert_eq!(view.metadata, full.metadata);
        let (vs, fs) = (view.spec.unwrap(), full.spec.unwrap());
        assert_eq!(vs.node_name.as_deref(), Some("n1"));
        assert_eq!(vs.node_name, fs.node_name);
        assert_eq!(vs.resource_claims, fs.resource_claims);
        assert!(vs.resource_claims.is_some());
        assert!(vs.containers.is_empty() && vs.volumes.is_none());
        let (vst, fst) = (view.status.unwrap(), full.status.unwrap());
        assert_eq!(vst.resource_claim_statuses, fst.resource_claim_statuses);
        assert!(vst.resource_claim_statuses.is_some());
    }

    #[test]
    fn a_pod_without_spec_or_status_decodes() {
        let view: PodView = serde_json::from_value(json!({"metadata": {"name": "p"}})).unwrap();
        let pod = Pod::from(view);
        assert!(pod.spec.is_none() && pod.status.is_none());
        assert_eq!(pod.metadata.name.as_deref(), Some("p"));
    }
}
