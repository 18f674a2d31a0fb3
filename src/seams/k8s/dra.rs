//! Dynamic Resource Allocation (`resource.k8s.io/v1`): the devices of the pod's allocated ResourceClaims
//! whose ResourceSlice attributes carry `k8s.cni.cncf.io/resourceName` and `k8s.cni.cncf.io/deviceID`,
//! as a [`ResourceMap`] that joins the kubelet's (docs/devices.md). [`claim_names`] and [`device_map`] are
//! pure; the reads (one GET per claim, one LIST per driver filtered on driver and node) are
//! [`ApiCluster`]'s.
//!
//! A pod claim naming a ResourceClaim is read by that name; one naming a template by the claim its
//! `status.resourceClaimStatuses` entry names. Devices without the two attributes (a GPU next to a NIC)
//! or missing from every slice are skipped with a log line; a claim the pod names but that is not
//! allocated is an error.

use std::collections::BTreeSet;

use futures::future::join_all;
use k8s_openapi::api::{
    core::v1::Pod,
    resource::v1::{ResourceClaim, ResourceSlice},
};
use kube::{Api, api::ListParams};

use super::{ApiCluster, cluster_error};
use crate::{
    pure::request::PodRef,
    seams::{
        cluster::ClusterError,
        devices::{DraDevices, ResourceMap},
    },
};

/// The device attribute naming the device ID handed to the delegate.
pub const DEVICE_ID_ATTRIBUTE: &str = "k8s.cni.cncf.io/deviceID";
/// The device attribute naming the resource a NAD's `resourceName` matches.
pub const RESOURCE_NAME_ATTRIBUTE: &str = "k8s.cni.cncf.io/resourceName";

/// The ResourceClaims behind the pod's `spec.resourceClaims`, each once, in spec order: an entry with
/// `resourceClaimName` names its claim itself (the control plane writes no status entry for it); one with
/// `resourceClaimTemplateName` is the claim generated for it, named by its `status.resourceClaimStatuses`
/// entry (see [`ungenerated_claims`] for those without one).
pub fn claim_names(pod: &Pod) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (_, claim) in pod_claims(pod) {
        if let Ok(name) = claim
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    names
}

/// The pod's template claims that have no ResourceClaim to read, each in words (pod claim, template and
/// why): the error of a network whose resource is then missing names them.
pub fn ungenerated_claims(pod: &Pod) -> Vec<String> {
    pod_claims(pod)
        .filter_map(|(pod_claim, claim)| {
            claim
                .err()
                .map(|why| format!("pod claim {pod_claim:?} {why}"))
        })
        .collect()
}

/// Each of the pod's `spec.resourceClaims` with the ResourceClaim it stands for, or why there is none
/// (`resource.k8s.io/v1`, as the kubelet resolves them). An entry naming neither field is one the API
/// server rejects; it is skipped.
fn pod_claims(pod: &Pod) -> impl Iterator<Item = (&str, Result<String, String>)> {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.resource_claim_statuses.as_deref())
        .unwrap_or_default();
    pod.spec
        .as_ref()
        .and_then(|s| s.resource_claims.as_deref())
        .unwrap_or_default()
        .iter()
        .filter_map(move |c| {
            let claim = match (&c.resource_claim_name, &c.resource_claim_template_name) {
                (Some(name), _) => Ok(name.clone()),
                (None, Some(template)) => match statuses.iter().find(|s| s.name == c.name) {
                    Some(s) => s.resource_claim_name.clone().ok_or_else(|| {
                        format!(
                            "(template {template:?}): no ResourceClaim was generated for it (its \
                             status.resourceClaimStatuses entry names none)"
                        )
                    }),
                    None => Err(format!(
                        "(template {template:?}): no ResourceClaim has been generated for it yet (no \
                         status.resourceClaimStatuses entry)"
                    )),
                },
                (None, None) => return None,
            };
            Some((c.name.as_str(), claim))
        })
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
    /// The DRA devices (see the module docs) of `pod`, as the core read it (in daemon mode the watch
    /// cache's, trimmed to the fields read here); no claims, no request.
    pub(super) fn read_dra_devices(
        &self,
        pod_ref: &PodRef,
        pod: &Pod,
    ) -> Result<DraDevices, ClusterError> {
        let names = claim_names(pod);
        let missing = ungenerated_claims(pod);
        if names.is_empty() {
            return Ok(DraDevices {
                devices: ResourceMap::new(),
                missing,
            });
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
        let devices = device_map(&claims, &slices).map_err(ClusterError::Rejected)?;
        Ok(DraDevices { devices, missing })
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

    fn pod(claims: Value, statuses: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [], "resourceClaims": claims},
            "status": {"resourceClaimStatuses": statuses}
        }))
        .unwrap()
    }

    /// A real server writes status entries only for template claims: a claim named directly has none and
    /// is read by its own name.
    #[test]
    fn a_claim_named_directly_is_read_by_that_name() {
        let p = pod(
            json!([
                {"name": "nic", "resourceClaimName": "shared-nic"},
                {"name": "vf", "resourceClaimTemplateName": "vf-t"},
                {"name": "again", "resourceClaimName": "shared-nic"}
            ]),
            json!([{"name": "vf", "resourceClaimName": "p-vf-x7k2q"}]),
        );
        assert_eq!(
            claim_names(&p),
            ["shared-nic", "p-vf-x7k2q"],
            "spec order, each claim once"
        );
        assert!(ungenerated_claims(&p).is_empty());
        assert!(claim_names(&Pod::default()).is_empty());
    }

    /// The daemon reads pods from its watch cache, trimmed: the claims are still found there.
    #[test]
    fn claims_are_found_in_a_pod_trimmed_for_the_watch_cache() {
        let mut p = pod(
            json!([
                {"name": "nic", "resourceClaimName": "c1"},
                {"name": "vf", "resourceClaimTemplateName": "vf-t"}
            ]),
            json!([{"name": "vf", "resourceClaimName": "p-vf-x1"}]),
        );
        crate::seams::k8s::watch::trim_pod(&mut p);
        assert_eq!(claim_names(&p), ["c1", "p-vf-x1"]);
    }

    #[test]
    fn a_template_claim_is_the_one_its_status_entry_names() {
        let p = pod(
            json!([{"name": "nic", "resourceClaimTemplateName": "nic-t"}]),
            json!([{"name": "nic", "resourceClaimName": "p-nic-abc12"}]),
        );
        assert_eq!(claim_names(&p), ["p-nic-abc12"]);
        assert!(ungenerated_claims(&p).is_empty());
    }

    /// A status entry without a claim name means none was generated; no entry, none yet. Neither is read,
    /// and both are said.
    #[test]
    fn a_template_claim_without_a_generated_claim_is_named_not_read() {
        let p = pod(
            json!([
                {"name": "nic", "resourceClaimTemplateName": "nic-t"},
                {"name": "vf", "resourceClaimTemplateName": "vf-t"},
                {"name": "gpu", "resourceClaimName": "gpu"}
            ]),
            json!([{"name": "nic"}]),
        );
        assert_eq!(claim_names(&p), ["gpu"]);
        assert_eq!(
            ungenerated_claims(&p),
            [
                "pod claim \"nic\" (template \"nic-t\"): no ResourceClaim was generated for it (its \
                 status.resourceClaimStatuses entry names none)",
                "pod claim \"vf\" (template \"vf-t\"): no ResourceClaim has been generated for it yet \
                 (no status.resourceClaimStatuses entry)"
            ]
        );
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
