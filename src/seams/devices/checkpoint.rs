//! The kubelet's device-manager checkpoint (`/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint`),
//! the fallback when the PodResources socket is missing (docs/multus-compat.md, "Devices").
//! Pure: parses bytes.
//!
//! `Data.PodDeviceEntries[]` holds one entry per container and resource: `PodUID`, `ResourceName` and
//! `DeviceIDs`, which is a map NUMA node → IDs since Kubernetes 1.20 and a plain list before.

use serde::Deserialize;

use super::ResourceMap;

#[derive(Debug, Deserialize)]
struct Checkpoint {
    #[serde(rename = "Data")]
    data: Data,
}

#[derive(Debug, Deserialize)]
struct Data {
    #[serde(rename = "PodDeviceEntries", default)]
    entries: Option<Vec<Entry>>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(rename = "PodUID", default)]
    pod_uid: String,
    #[serde(rename = "ResourceName", default)]
    resource_name: String,
    #[serde(rename = "DeviceIDs", default)]
    device_ids: DeviceIds,
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum DeviceIds {
    /// Kubernetes ≥ 1.20: per NUMA node.
    PerNuma(std::collections::BTreeMap<String, Vec<String>>),
    /// Older kubelets.
    List(Vec<String>),
    #[default]
    None,
}

/// The devices the checkpoint records for the pod with UID `pod_uid`, per resource, sorted.
pub fn pod_devices(bytes: &[u8], pod_uid: &str) -> Result<ResourceMap, serde_json::Error> {
    let cp: Checkpoint = serde_json::from_slice(bytes)?;
    let mut map = ResourceMap::new();
    for e in cp.data.entries.unwrap_or_default() {
        if e.pod_uid != pod_uid || e.resource_name.is_empty() {
            continue;
        }
        let ids = map.entry(e.resource_name).or_default();
        match e.device_ids {
            DeviceIds::PerNuma(per) => ids.extend(per.into_values().flatten()),
            DeviceIds::List(list) => ids.extend(list),
            DeviceIds::None => {}
        }
    }
    super::merge(&mut map, ResourceMap::new());
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entries_of_the_pod_by_uid_both_formats_sorted() {
        let cp = json!({"Data": {"PodDeviceEntries": [
            {"PodUID": "u1", "ContainerName": "a", "ResourceName": "intel.com/vf",
             "DeviceIDs": {"1": ["0000:81:00.3"], "0": ["0000:03:00.5"]}, "AllocResp": "CgA="},
            {"PodUID": "u1", "ContainerName": "b", "ResourceName": "intel.com/vf", "DeviceIDs": ["0000:03:00.4"]},
            {"PodUID": "u2", "ContainerName": "a", "ResourceName": "intel.com/vf", "DeviceIDs": ["other"]},
            {"PodUID": "u1", "ContainerName": "a", "ResourceName": "mlx/rdma", "DeviceIDs": {"0": ["m0"]}}
        ], "RegisteredDevices": {"intel.com/vf": ["x"]}}, "Checksum": 42});
        let m = pod_devices(cp.to_string().as_bytes(), "u1").unwrap();
        assert_eq!(
            m["intel.com/vf"],
            ["0000:03:00.4", "0000:03:00.5", "0000:81:00.3"]
        );
        assert_eq!(m["mlx/rdma"], ["m0"]);
        assert_eq!(m.len(), 2);
        assert!(
            pod_devices(cp.to_string().as_bytes(), "u9")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn garbage_and_empty_checkpoints() {
        assert!(pod_devices(b"{not json", "u").is_err());
        let empty = json!({"Data": {"PodDeviceEntries": null}, "Checksum": 0});
        assert!(
            pod_devices(empty.to_string().as_bytes(), "u")
                .unwrap()
                .is_empty()
        );
    }
}
