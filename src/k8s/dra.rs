//! Dynamic Resource Allocation (`resource.k8s.io/v1`): the devices of the pod's allocated ResourceClaims
//! whose ResourceSlice attributes carry `k8s.cni.cncf.io/resourceName` and `k8s.cni.cncf.io/deviceID`,
//! as a [`ResourceMap`] that joins the kubelet's (multus-features.md §3.5). [`device_map`] is pure; the
//! reads (one GET per claim, one LIST per driver filtered on driver and node) are [`ApiCluster`]'s.
//!
//! Devices without the two attributes (a GPU next to a NIC) or missing from every slice are skipped with
//! a log line; a claim the pod names but that is not allocated is an error.

use std::collections::BTreeSet;

use futures::future::join_all;
use k8s_openapi::api::{
    core::v1::Pod,
    resource::v1::{ResourceClaim, ResourceSlice},
};
use kube::{Api, api::ListParams};

use super::{ApiCluster, cluster_error};
use crate::{cluster::ClusterError, devices::ResourceMap, request::PodRef};

/// The device attribute naming the device ID handed to the delegate.
pub const DEVICE_ID_ATTRIBUTE: &str = "k8s.cni.cncf.io/deviceID";
/// The device attribute naming the resource a NAD's `resourceName` matches.
pub const RESOURCE_NAME_ATTRIBUTE: &str = "k8s.cni.cncf.io/resourceName";

/// The ResourceClaims the pod's status says were made for it (`status.resourceClaimStatuses`; an entry
/// without a claim name needs no claim).
pub fn claim_names(pod: &Pod) -> Vec<String> {
    pod.status
        .as_ref()
        .and_then(|s| s.resource_claim_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|s| s.resource_claim_name.clone())
        .collect()
}

/// The drivers of the claims' allocated devices, each once.
pub fn drivers(claims: &[ResourceClaim]) -> BTreeSet<String> {
    claims
        .iter()
        .flat_map(allocated)
        .map(|r| r.driver.clone())
        .collect()
}

fn allocated(
    claim: &ResourceClaim,
) -> impl Iterator<Item = &k8s_openapi::api::resource::v1::DeviceRequestAllocationResult> {
    claim
        .status
        .as_ref()
        .and_then(|s| s.allocation.as_ref())
        .and_then(|a| a.devices.as_ref())
        .and_then(|d| d.results.as_ref())
        .into_iter()
        .flatten()
}

fn string_attribute(device: &k8s_openapi::api::resource::v1::Device, name: &str) -> Option<String> {
    device
        .attributes
        .as_ref()?
        .get(name)?
        .string
        .clone()
        .filter(|s| !s.is_empty())
}

/// Device IDs per resource of the claims' allocated devices, looked up in `slices` by driver, pool and
/// device name. Fails for a claim that is not allocated.
pub fn device_map(
    claims: &[ResourceClaim],
    slices: &[ResourceSlice],
) -> Result<ResourceMap, String> {
    let mut map = ResourceMap::new();
    for claim in claims {
        let name = claim.metadata.name.as_deref().unwrap_or_default();
        if claim
            .status
            .as_ref()
            .and_then(|s| s.allocation.as_ref())
            .is_none()
        {
            return Err(format!("resource claim {name:?} is not allocated"));
        }
        for r in allocated(claim) {
            let device = slices
                .iter()
                .filter(|s| s.spec.driver == r.driver && s.spec.pool.name == r.pool)
                .flat_map(|s| s.spec.devices.iter().flatten())
                .find(|d| d.name == r.device);
            let Some(device) = device else {
                tracing::warn!(
                    "resource claim {name:?}: device {}/{}/{} is in no ResourceSlice; skipped",
                    r.driver,
                    r.pool,
                    r.device
                );
                continue;
            };
            match (
                string_attribute(device, RESOURCE_NAME_ATTRIBUTE),
                string_attribute(device, DEVICE_ID_ATTRIBUTE),
            ) {
                (Some(resource), Some(id)) => map.entry(resource).or_default().push(id),
                _ => tracing::debug!(
                    "resource claim {name:?}: device {}/{} has no {RESOURCE_NAME_ATTRIBUTE}/{DEVICE_ID_ATTRIBUTE} attributes; not a network device",
                    r.driver,
                    r.device
                ),
            }
        }
    }
    Ok(map)
}

impl ApiCluster {
    /// The pod's DRA devices (see the module docs). Uses the pod read by `pod_networks`; no claims, no
    /// request.
    pub(super) fn read_dra_devices(&self, pod_ref: &PodRef) -> Result<ResourceMap, ClusterError> {
        let Some(pod) = self.pod.lock().ok().and_then(|p| p.clone()) else {
            return Ok(ResourceMap::new());
        };
        let names = claim_names(&pod);
        if names.is_empty() {
            return Ok(ResourceMap::new());
        }
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let ns = &pod_ref.namespace;
        let (claims, slices) = self.run(|client| async move {
            let api: Api<ResourceClaim> = Api::namespaced(client.clone(), ns);
            let claims = join_all(names.iter().map(|n| {
                let api = api.clone();
                async move {
                    self.retry("get resourceclaim", || api.get(n))
                        .await
                        .map_err(|e| cluster_error(&format!("reading resource claim {ns}/{n}"), &e))
                }
            }))
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
            let slices_api: Api<ResourceSlice> = Api::all(client.clone());
            let lists = join_all(drivers(&claims).into_iter().map(|driver| {
                let api = slices_api.clone();
                let mut fields = format!("spec.driver={driver}");
                if let Some(n) = &node {
                    fields.push_str(&format!(",spec.nodeName={n}"));
                }
                async move {
                    let lp = ListParams::default().fields(&fields);
                    self.retry("list resourceslices", || api.list(&lp))
                        .await
                        .map(|l| l.items)
                        .map_err(|e| {
                            cluster_error(&format!("listing resource slices of {driver}"), &e)
                        })
                }
            }))
            .await;
            let mut slices = Vec::new();
            for l in lists {
                slices.extend(l?);
            }
            Ok::<_, ClusterError>((claims, slices))
        })??;
        device_map(&claims, &slices).map_err(ClusterError::Rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn claim(name: &str, results: Option<Value>) -> ResourceClaim {
        let mut v = json!({"metadata": {"name": name, "namespace": "ns"}, "spec": {}});
        if let Some(r) = results {
            v["status"] = json!({"allocation": {"devices": {"results": r}}});
        }
        serde_json::from_value(v).unwrap()
    }

    fn slice(driver: &str, pool: &str, devices: Value) -> ResourceSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{driver}-{pool}")},
            "spec": {"driver": driver, "nodeName": "n1",
                     "pool": {"name": pool, "generation": 1, "resourceSliceCount": 1},
                     "devices": devices}
        }))
        .unwrap()
    }

    fn nic(name: &str, resource: &str, id: &str) -> Value {
        json!({"name": name, "attributes": {
            RESOURCE_NAME_ATTRIBUTE: {"string": resource}, DEVICE_ID_ATTRIBUTE: {"string": id}}})
    }

    fn result(driver: &str, pool: &str, device: &str) -> Value {
        json!({"request": "r", "driver": driver, "pool": pool, "device": device})
    }

    #[test]
    fn claim_names_from_pod_status() {
        let pod: Pod = serde_json::from_value(json!({"status": {"resourceClaimStatuses": [
            {"name": "nic", "resourceClaimName": "pod-nic-abc"}, {"name": "none"}]}}))
        .unwrap();
        assert_eq!(claim_names(&pod), ["pod-nic-abc"]);
        assert!(claim_names(&Pod::default()).is_empty());
    }

    #[test]
    fn network_devices_by_attribute_others_skipped() {
        let claims = [
            claim(
                "c1",
                Some(json!([
                    result("nic.example.com", "p1", "vf1"),
                    result("gpu.example.com", "g", "gpu0"),
                    result("nic.example.com", "p1", "gone"),
                ])),
            ),
            claim("c2", Some(json!([result("nic.example.com", "p2", "vf0")]))),
        ];
        let slices = [
            slice(
                "nic.example.com",
                "p1",
                json!([
                    nic("vf0", "example.com/vf", "0000:03:00.1"),
                    nic("vf1", "example.com/vf", "0000:03:00.2")
                ]),
            ),
            slice(
                "nic.example.com",
                "p2",
                json!([nic("vf0", "example.com/vf", "0000:04:00.1")]),
            ),
            slice(
                "gpu.example.com",
                "g",
                json!([{"name": "gpu0", "attributes": {"model": {"string": "x"}}}]),
            ),
        ];
        assert_eq!(
            drivers(&claims).into_iter().collect::<Vec<_>>(),
            ["gpu.example.com", "nic.example.com"]
        );
        let m = device_map(&claims, &slices).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(
            m["example.com/vf"],
            ["0000:03:00.2", "0000:04:00.1"],
            "pool p1's vf1 and pool p2's vf0; the GPU and the missing device are skipped"
        );
    }

    #[test]
    fn an_unallocated_claim_is_an_error() {
        let e = device_map(&[claim("c1", None)], &[]).unwrap_err();
        assert_eq!(e, "resource claim \"c1\" is not allocated");
    }
}
