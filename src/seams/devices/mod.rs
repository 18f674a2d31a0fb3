//! Devices a pod's networks get: device-plugin and DRA resources resolved to device IDs and handed out one
//! per attachment (NPWG-13, EXT-3;
//! docs/multus-compat.md, "Devices"), and the Device Information Spec file names
//! (NPWG-70). This module is pure; the kubelet is behind [`kubelet::PodResources`] (gRPC in
//! [`podresources`], the checkpoint file in [`checkpoint`]) and the device-info files are in [`info`].
//!
//! ```text
//! kubelet (Get/List, else checkpoint) ─┐
//!                                      ├─► ResourceMap (sorted IDs) ──assign──► deviceID per attachment
//! DRA (ResourceClaims + ResourceSlices)┘          (NAD resourceName, annotation order)
//! ```

pub mod checkpoint;
pub mod info;
pub mod kubelet;
pub mod podresources;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde_json::Value;

use crate::pure::{
    netconf::{Kind, NetConfError, NetworkConfig},
    plan::NetworkRequest,
};

/// Device IDs per resource name (`intel.com/sriov_vf` → `["0000:03:00.2", …]`).
pub type ResourceMap = BTreeMap<String, Vec<String>>;

/// The pod's DRA devices, and its resource claims that could add more but do not exist (a claim from a
/// template the control plane generated none for), in words for the error of a network left without one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DraDevices {
    /// Device IDs per resource name of the pod's allocated claims.
    pub devices: ResourceMap,
    /// Each claim without a ResourceClaim, and why.
    pub missing: Vec<String>,
}

/// A network's resource that cannot be given a device (CNI code 7).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DeviceError {
    /// No (more) devices of the resource.
    #[error(
        "network {network:?} needs a device of resource {resource:?} (its NAD's k8s.v1.cni.cncf.io/resourceName), but {reason}"
    )]
    Unresolved {
        /// The network's status name.
        network: String,
        /// The resource.
        resource: String,
        /// Why, in words.
        reason: String,
    },
    /// The device could not be written into the delegate config.
    #[error("network {network:?}: cannot inject deviceID: {source}")]
    Inject {
        /// The network.
        network: String,
        /// Why.
        source: NetConfError,
    },
}

/// Add `from` to `into` (a resource in both gets both lists), then sort every list (Multus sorts them so
/// that plexus and other consumers such as OVN-Kubernetes hand out the same device to the same network).
pub fn merge(into: &mut ResourceMap, from: ResourceMap) {
    for (resource, ids) in from {
        into.entry(resource).or_default().extend(ids);
    }
    for ids in into.values_mut() {
        ids.sort();
    }
}

/// Whether any of `requests` names a resource (only then is the kubelet asked).
pub fn any_resource(requests: &[NetworkRequest]) -> bool {
    requests.iter().any(|r| r.resource_name.is_some())
}

/// Hand out devices: each network whose NAD names a resource gets that resource's next device ID, in
/// order (several NADs with one resource get successive devices). The ID goes to the delegate as the
/// `deviceID` capability and as `deviceID`/`pciBusID` in its config (every plugin of a list), as Go
/// Multus does. A resource-derived ID replaces a `deviceID` from the annotation, which is otherwise kept
/// (EXT-3). `unavailable` says why the map may be incomplete (the kubelet could not be asked, a DRA claim
/// does not exist); it is named in the error of a resource the map lacks.
pub fn assign(
    requests: &mut [NetworkRequest],
    map: &ResourceMap,
    unavailable: Option<&str>,
) -> Result<(), DeviceError> {
    let mut next: BTreeMap<&str, usize> = BTreeMap::new();
    for r in requests.iter_mut() {
        let Some(resource) = r.resource_name.as_deref() else {
            continue;
        };
        let taken = next.entry(resource).or_insert(0);
        let ids = map.get(resource).map(Vec::as_slice).unwrap_or_default();
        let Some(id) = ids.get(*taken) else {
            let mut reason = match ids.len() {
                0 => "the pod has no devices of that resource".to_string(),
                n => format!(
                    "the pod's {n} device(s) of that resource are all taken by earlier networks"
                ),
            };
            if let Some(why) = unavailable {
                reason.push_str(&format!("; the pod's devices may be incomplete: {why}"));
            }
            return Err(DeviceError::Unresolved {
                network: r.status_name.clone(),
                resource: resource.to_string(),
                reason,
            });
        };
        *taken += 1;
        r.network = inject_device(&r.network, id).map_err(|source| DeviceError::Inject {
            network: r.status_name.clone(),
            source,
        })?;
        r.requests.device_id = Some(id.clone());
    }
    Ok(())
}

/// `deviceID` and `pciBusID` set to `id` at the top of a conf, or in every plugin of a list
/// (docs/multus-compat.md, "Delegate arguments").
pub fn inject_device(net: &NetworkConfig, id: &str) -> Result<NetworkConfig, NetConfError> {
    let set = |obj: &mut serde_json::Map<String, Value>| {
        obj.insert("deviceID".into(), Value::String(id.to_string()));
        obj.insert("pciBusID".into(), Value::String(id.to_string()));
    };
    let kind = net.kind;
    net.edited(|top| match kind {
        Kind::Conf => set(top),
        Kind::List => {
            if let Some(Value::Array(plugins)) = top.get_mut("plugins") {
                for p in plugins.iter_mut().filter_map(Value::as_object_mut) {
                    set(p);
                }
            }
        }
    })
}

/// A file name as the Device Information Spec makes it: `/` becomes `-`.
fn clean(name: &str) -> String {
    name.replace('/', "-")
}

/// The device plugin's file for `device` of `resource`: `<dir>/dp/<resource>-<device>-device.json`
/// (NPWG-70).
pub fn dp_file(dir: &Path, resource: &str, device: &str) -> PathBuf {
    dir.join("dp")
        .join(clean(&format!("{resource}-{device}-device.json")))
}

/// The CNI device-info file of an attachment: `<dir>/cni/<network>-<containerID>_<ifname>`, unique per
/// attachment, named as Go Multus names it (NPWG-70, NPWG-71).
pub fn cni_file(dir: &Path, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    dir.join("cni")
        .join(clean(&format!("{network}-{container_id}_{ifname}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(name: &str, resource: Option<&str>, net: Value) -> NetworkRequest {
        let mut r = NetworkRequest::plain(NetworkConfig::from_value(net).unwrap());
        r.status_name = name.to_string();
        r.resource_name = resource.map(str::to_string);
        r
    }

    fn conf(name: &str) -> Value {
        json!({"cniVersion": "1.0.0", "name": name, "type": "sriov"})
    }

    fn map(pairs: &[(&str, &[&str])]) -> ResourceMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn merge_appends_and_sorts() {
        let mut m = map(&[("a", &["2", "1"])]);
        merge(&mut m, map(&[("a", &["0"]), ("b", &["y", "x"])]));
        assert_eq!(m, map(&[("a", &["0", "1", "2"]), ("b", &["x", "y"])]));
    }

    #[test]
    fn ids_go_out_in_order_per_resource_npwg_13() {
        let mut reqs = vec![
            req("cluster", None, conf("c")),
            req("ns/a", Some("intel.com/vf"), conf("a")),
            req("ns/b", Some("mlx/rdma"), conf("b")),
            req("ns/c", Some("intel.com/vf"), conf("c2")),
        ];
        let m = map(&[
            ("intel.com/vf", &["0000:03:00.2", "0000:03:00.3"]),
            ("mlx/rdma", &["0000:81:00.1"]),
        ]);
        assign(&mut reqs, &m, None).unwrap();
        let ids: Vec<_> = reqs
            .iter()
            .map(|r| r.requests.device_id.as_deref())
            .collect();
        assert_eq!(
            ids,
            [
                None,
                Some("0000:03:00.2"),
                Some("0000:81:00.1"),
                Some("0000:03:00.3")
            ]
        );
        assert_eq!(reqs[1].network.value["deviceID"], "0000:03:00.2");
        assert_eq!(reqs[1].network.value["pciBusID"], "0000:03:00.2");
        let bytes: Value = serde_json::from_slice(&reqs[3].network.bytes).unwrap();
        assert_eq!(
            bytes["deviceID"], "0000:03:00.3",
            "the bytes that run carry it"
        );
        assert!(reqs[0].network.value.get("deviceID").is_none());
    }

    #[test]
    fn a_list_gets_the_device_in_every_plugin() {
        let list = json!({"cniVersion": "1.0.0", "name": "l", "plugins": [{"type": "sriov"}, {"type": "tuning"}]});
        let mut reqs = vec![req("ns/l", Some("r"), list)];
        assign(&mut reqs, &map(&[("r", &["d1"])]), None).unwrap();
        for p in reqs[0].network.value["plugins"].as_array().unwrap() {
            assert_eq!(p["deviceID"], "d1");
            assert_eq!(p["pciBusID"], "d1");
        }
        assert!(reqs[0].network.value.get("deviceID").is_none());
    }

    #[test]
    fn annotation_device_id_kept_without_a_resource_ext_3() {
        let mut plain = req("ns/a", None, conf("a"));
        plain.requests.device_id = Some("from-annotation".into());
        let mut with_res = req("ns/b", Some("r"), conf("b"));
        with_res.requests.device_id = Some("from-annotation".into());
        let mut reqs = vec![plain, with_res];
        assign(&mut reqs, &map(&[("r", &["d1"])]), None).unwrap();
        assert_eq!(
            reqs[0].requests.device_id.as_deref(),
            Some("from-annotation")
        );
        assert!(
            reqs[0].network.value.get("deviceID").is_none(),
            "not injected (EXT-3)"
        );
        assert_eq!(reqs[1].requests.device_id.as_deref(), Some("d1"));
    }

    #[test]
    fn missing_or_exhausted_resources_are_named() {
        let mut reqs = vec![req("ns/a", Some("r"), conf("a"))];
        let e = assign(&mut reqs, &ResourceMap::new(), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "network \"ns/a\" needs a device of resource \"r\" (its NAD's k8s.v1.cni.cncf.io/resourceName), but the pod has no devices of that resource"
        );
        let e = assign(&mut reqs, &ResourceMap::new(), Some("no socket")).unwrap_err();
        assert!(
            e.to_string().ends_with(
                "the pod has no devices of that resource; the pod's devices may be incomplete: no socket"
            ),
            "{e}"
        );
        let mut two = vec![
            req("ns/a", Some("r"), conf("a")),
            req("ns/b", Some("r"), conf("b")),
        ];
        let e = assign(&mut two, &map(&[("r", &["d1"])]), None).unwrap_err();
        assert!(
            e.to_string().starts_with("network \"ns/b\"")
                && e.to_string()
                    .contains("1 device(s) of that resource are all taken"),
            "{e}"
        );
        // A source that could add devices is named also when some were found.
        let e = assign(&mut two, &map(&[("r", &["d1"])]), Some("no socket")).unwrap_err();
        assert!(
            e.to_string().ends_with(
                "all taken by earlier networks; the pod's devices may be incomplete: no socket"
            ),
            "{e}"
        );
    }

    #[test]
    fn device_info_file_names_npwg_70() {
        let d = Path::new("/var/run/k8s.cni.cncf.io/devinfo");
        assert_eq!(
            dp_file(d, "intel.com/sriov_vf", "0000:03:00.2"),
            Path::new(
                "/var/run/k8s.cni.cncf.io/devinfo/dp/intel.com-sriov_vf-0000:03:00.2-device.json"
            )
        );
        assert_eq!(
            cni_file(d, "ns/sriov-net", "c0ffee", "net1"),
            Path::new("/var/run/k8s.cni.cncf.io/devinfo/cni/ns-sriov-net-c0ffee_net1")
        );
    }
}
