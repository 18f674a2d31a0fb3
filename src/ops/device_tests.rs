//! Tests of ADD and DEL with devices (`crate::seams::devices`), over the fakes: the kubelet and DRA seams, IDs into
//! the delegate configs and runtimeConfig, device-info files copied, published and removed (NPWG-13,
//! NPWG-70..73, EXT-3).

use std::{path::Path, sync::Mutex};

use serde_json::{Value, json};

use super::{Seams, execute};
use crate::{
    pure::{
        annotations::NETWORKS_ANNOTATION,
        config::Config,
        request::{CniEnv, PodRef},
    },
    seams::{
        cluster::{self, Cluster},
        devices::{
            DraDevices, ResourceMap,
            kubelet::{KubeletError, PodResources},
        },
        k8s::memory::MemoryApi,
        testing::TestHost,
    },
};

/// The kubelet as a fixed answer, counting the questions.
struct FakeKubelet {
    answer: Result<ResourceMap, String>,
    asked: Mutex<usize>,
}

impl PodResources for FakeKubelet {
    fn devices(&self, _: &PodRef) -> Result<ResourceMap, KubeletError> {
        *self.asked.lock().unwrap() += 1;
        self.answer.clone().map_err(|_| KubeletError::Unavailable {
            socket: "/k/kubelet.sock".into(),
            checkpoint: "/k/checkpoint".into(),
        })
    }
}

fn kubelet(pairs: &[(&str, &[&str])]) -> FakeKubelet {
    FakeKubelet {
        answer: Ok(pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()),
        asked: Mutex::new(0),
    }
}

/// A NAD `ns1/<name>` the pod selects: its resource, the capabilities its plugin declares, and the
/// selection's element of the networks annotation (add request keys to it).
#[derive(Clone)]
struct Nad {
    name: String,
    resource: Option<String>,
    caps: Value,
    element: Value,
}

/// A NAD network `ns1/<name>` naming `resource`, whose plugin declares `caps`.
fn nad(name: &str, resource: Option<&str>, caps: Value) -> Nad {
    Nad {
        name: name.into(),
        resource: resource.map(str::to_string),
        caps,
        element: json!({"name": name}),
    }
}

/// The API of pod `ns1/pod1` selecting `nads`, its DRA devices `dra`.
fn cluster(nads: &[Nad], dra: DraDevices) -> MemoryApi {
    let elements: Vec<Value> = nads.iter().map(|n| n.element.clone()).collect();
    let annotation = Value::from(elements).to_string();
    let mut api = MemoryApi::new()
        .with_pod("ns1", "pod1", "u1", &[(NETWORKS_ANNOTATION, &annotation)])
        .with_dra(dra);
    for n in nads {
        let config =
            json!({"cniVersion": "1.0.0", "name": n.name, "type": "sriov", "capabilities": n.caps});
        let data = cluster::Nad {
            config: Some(config.to_string()),
            resource_name: n.resource.clone(),
        };
        api = api.with_nad_data("ns1", &n.name, data);
    }
    api
}

/// What was published: each network-status entry's name and device-info.
fn published(api: &MemoryApi) -> Vec<(String, Option<Value>)> {
    api.statuses()
        .into_iter()
        .flat_map(|(_, entries)| entries)
        .map(|e| (e.name, e.device_info))
        .collect()
}

struct World(TestHost);

impl std::ops::Deref for World {
    type Target = TestHost;
    fn deref(&self) -> &TestHost {
        &self.0
    }
}

impl World {
    fn new() -> World {
        World(TestHost::new())
    }

    fn devinfo(&self) -> std::path::PathBuf {
        self.dir.path().join("devinfo")
    }

    fn config(&self) -> Config {
        let v = json!({
            "cniVersion": "1.0.0", "name": "plexus-net", "type": "plexus",
            "cniDir": self.dir.path().join("cni"), "deviceInfoDir": self.devinfo(),
            "delegates": [{"cniVersion": "1.0.0", "name": "cluster", "type": "bridge"}]
        });
        Config::from_bytes(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    fn run(
        &self,
        command: &str,
        cluster: Option<&dyn Cluster>,
        kubelet: &dyn PodResources,
    ) -> Result<Vec<u8>, crate::ops::error::Error> {
        let env = CniEnv::from_vars([
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/test-pod"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod1;K8S_POD_UID=u1",
            ),
        ])
        .unwrap()
        .unwrap();
        let seams = Seams {
            exec: &self.exec,
            netns: &self.netns,
            cluster,
            kubelet,
            defer_work: false,
        };
        execute(&env, &self.config(), &seams).map(|d| d.reply.to_stdout())
    }

    /// The ADD request configs, by network name.
    fn add_stdin(&self, network: &str) -> Value {
        self.exec
            .calls()
            .into_iter()
            .find(|c| c.command() == "ADD" && c.network() == network)
            .unwrap_or_else(|| panic!("no ADD of {network}"))
            .stdin
    }
}

fn write(path: &Path, v: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, v.to_string()).unwrap();
}

#[test]
fn devices_reach_delegates_status_and_are_cleaned_up_on_del_npwg_13_70_73() {
    let w = World::new();
    let all = json!({"deviceID": true, "CNIDeviceInfoFile": true});
    let cluster = cluster(
        &[
            nad("a", Some("intel.com/vf"), all.clone()),
            nad("b", Some("mlx/rdma"), json!({})),
            nad("c", Some("intel.com/vf"), all.clone()),
        ],
        DraDevices::default(),
    );
    let k = kubelet(&[
        ("intel.com/vf", &["0000:03:00.3", "0000:03:00.2"]),
        ("mlx/rdma", &["0000:81:00.1"]),
    ]);
    let dp = json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:03:00.2"}});
    write(
        &w.devinfo().join("dp/intel.com-vf-0000:03:00.2-device.json"),
        &dp,
    );

    w.run("ADD", Some(&cluster), &k).unwrap();
    assert_eq!(*k.asked.lock().unwrap(), 1);

    // Sorted IDs, one per attachment in order (NPWG-13).
    let a = w.add_stdin("a");
    assert_eq!(a["deviceID"], "0000:03:00.2");
    assert_eq!(a["pciBusID"], "0000:03:00.2");
    let a_file = w.devinfo().join("cni/ns1-a-c1_net1");
    assert_eq!(
        a["runtimeConfig"],
        json!({"deviceID": "0000:03:00.2", "CNIDeviceInfoFile": a_file.display().to_string()}),
        "NPWG-72: a plugin declaring CNIDeviceInfoFile gets the file"
    );
    let c = w.add_stdin("c");
    assert_eq!(c["deviceID"], "0000:03:00.3");
    assert_eq!(c["runtimeConfig"]["deviceID"], "0000:03:00.3");
    // A plugin declaring neither capability gets the config keys but no runtimeConfig (CNI-30).
    let b = w.add_stdin("b");
    assert_eq!(b["deviceID"], "0000:81:00.1");
    assert!(b.get("runtimeConfig").is_none(), "{b}");
    assert!(w.add_stdin("cluster").get("deviceID").is_none());

    // NPWG-71: the device plugin's file was copied; NPWG-73: its content is in the status.
    assert_eq!(
        serde_json::from_slice::<Value>(&std::fs::read(&a_file).unwrap()).unwrap(),
        dp
    );
    let published = published(&cluster);
    assert_eq!(published[1], ("ns1/a".to_string(), Some(dp.clone())));
    assert_eq!(
        published[3],
        ("ns1/c".to_string(), None),
        "no device-plugin file"
    );

    // The cache records the file (a plexus key); DEL removes it (NPWG-71).
    let cache: Value =
        serde_json::from_slice(&std::fs::read(w.dir.path().join("cni/c1")).unwrap()).unwrap();
    assert_eq!(cache[1]["deviceID"], "0000:03:00.2");
    assert_eq!(cache[1]["resourceName"], "intel.com/vf");
    assert_eq!(
        cache[1]["plexusDeviceInfoFile"],
        a_file.display().to_string()
    );
    w.exec.clear();
    w.run("DEL", None, &k).unwrap();
    assert!(!a_file.exists(), "DEL removes the CNI device-info file");
    let del_a = w
        .exec
        .calls()
        .into_iter()
        .find(|c| c.network() == "a")
        .unwrap();
    assert_eq!(
        del_a.stdin["deviceID"], "0000:03:00.2",
        "DEL replays the cached config"
    );
    assert_eq!(*k.asked.lock().unwrap(), 1, "DEL never asks the kubelet");
}

#[test]
fn no_resource_no_kubelet_and_annotation_device_id_ext_3() {
    let w = World::new();
    let mut plain = nad("a", None, json!({"deviceID": true}));
    plain.element["deviceID"] = json!("0000:05:00.1");
    let cluster = cluster(&[plain], DraDevices::default());
    let k = FakeKubelet {
        answer: Err("down".into()),
        asked: Mutex::new(0),
    };
    w.run("ADD", Some(&cluster), &k).unwrap();
    assert_eq!(
        *k.asked.lock().unwrap(),
        0,
        "the kubelet is not asked without a resourceName"
    );
    let a = w.add_stdin("a");
    assert_eq!(a["runtimeConfig"]["deviceID"], "0000:05:00.1");
    assert!(a.get("deviceID").is_none(), "not injected into the config");
}

#[test]
fn unavailable_kubelet_fails_only_a_network_that_needs_it_and_leaves_nothing() {
    let w = World::new();
    let cluster = cluster(
        &[nad("a", Some("intel.com/vf"), json!({}))],
        DraDevices::default(),
    );
    let k = FakeKubelet {
        answer: Err("down".into()),
        asked: Mutex::new(0),
    };
    let e = w.run("ADD", Some(&cluster), &k).unwrap_err();
    assert_eq!(e.cni_code(), 7);
    let msg = e.to_string();
    assert!(
        msg.starts_with(
            "[ns1/pod1/u1]: network \"ns1/a\" needs a device of resource \"intel.com/vf\""
        ) && msg.contains("/k/kubelet.sock"),
        "{msg}"
    );
    assert!(w.exec.calls().is_empty(), "nothing ran");
    assert!(!w.dir.path().join("cni/c1").exists(), "no cache");
}

#[test]
fn dra_devices_join_the_kubelet_s() {
    let w = World::new();
    let cluster = cluster(
        &[
            nad("a", Some("example.com/nic"), json!({})),
            nad("b", Some("example.com/nic"), json!({})),
        ],
        DraDevices {
            devices: [("example.com/nic".to_string(), vec!["pci-2".to_string()])].into(),
            missing: Vec::new(),
        },
    );
    // The kubelet is down, but DRA alone covers the first network only.
    let down = FakeKubelet {
        answer: Err("down".into()),
        asked: Mutex::new(0),
    };
    let e = w.run("ADD", Some(&cluster), &down).unwrap_err();
    assert!(
        e.to_string().contains("\"ns1/b\"") && e.to_string().contains("all taken"),
        "{e}"
    );
    let k = kubelet(&[("example.com/nic", &["pci-1"])]);
    w.run("ADD", Some(&cluster), &k).unwrap();
    assert_eq!(w.add_stdin("a")["deviceID"], "pci-1");
    assert_eq!(w.add_stdin("b")["deviceID"], "pci-2");
}

/// A template claim the control plane made no ResourceClaim for cannot be read; a network whose resource
/// is then missing says so.
#[test]
fn a_missing_dra_claim_is_named_when_a_network_lacks_its_device() {
    let w = World::new();
    let missing = "pod claim \"nic\" (template \"nic-t\"): no ResourceClaim was generated for it";
    let cluster = cluster(
        &[nad("a", Some("example.com/nic"), json!({}))],
        DraDevices {
            devices: ResourceMap::new(),
            missing: vec![missing.to_string()],
        },
    );
    let e = w.run("ADD", Some(&cluster), &kubelet(&[])).unwrap_err();
    assert_eq!(e.cni_code(), 7);
    assert!(
        e.to_string().ends_with(&format!(
            "but the pod has no devices of that resource; the pod's devices may be incomplete: DRA: {missing}"
        )),
        "{e}"
    );
    assert!(w.exec.calls().is_empty(), "nothing ran");
    // A network whose device is there does not care.
    let k = kubelet(&[("example.com/nic", &["pci-1"])]);
    w.run("ADD", Some(&cluster), &k).unwrap();
    assert_eq!(w.add_stdin("a")["deviceID"], "pci-1");
}

#[test]
fn infiniband_guid_reaches_declaring_plugins_only_npwg_35() {
    let w = World::new();
    let mut ib = nad("ib", None, json!({"infinibandGUID": true}));
    ib.element["infiniband-guid"] = json!("c2:11:22:33:44:55:66:77");
    let cluster = cluster(&[ib.clone()], DraDevices::default());
    let k = kubelet(&[]);
    w.run("ADD", Some(&cluster), &k).unwrap();
    assert_eq!(
        w.add_stdin("ib")["runtimeConfig"],
        json!({"infinibandGUID": "c2:11:22:33:44:55:66:77"})
    );
    w.run("DEL", None, &k).unwrap();

    // A network whose plugins do not declare the capability refuses the request
    // (docs/multus-compat.md, "Capability checks").
    let mut undeclared = nad("plain", None, json!({}));
    undeclared.element["infiniband-guid"] = ib.element["infiniband-guid"].clone();
    let cluster = self::cluster(&[undeclared], DraDevices::default());
    w.exec.clear();
    let e = w.run("ADD", Some(&cluster), &k).unwrap_err();
    assert_eq!(e.cni_code(), 7);
    assert!(
        e.to_string().contains(
            "infiniband-guid was requested but no plugin of the network declares the \"infinibandGUID\" capability"
        ),
        "{e}"
    );
    assert!(w.exec.calls().is_empty());
}
