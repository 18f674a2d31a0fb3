//! Devices end to end (issue 7): the plexus binary, run as the runtime runs it, reads the pod and its NADs
//! from the API (the stand-in, or a real server with `E2E_KUBECONFIG`) with the credentials of deploy's
//! ClusterRole, asks the kubelet PodResources stand-in (`plexus_e2e::podresources`, real gRPC on a unix
//! socket) or the checkpoint file for the pod's devices, and hands them to `plexus-recorder` delegates,
//! which record what they got. Checked: `deviceID`/`pciBusID` in the delegate configs and
//! `runtimeConfig.deviceID`/`CNIDeviceInfoFile` for plugins declaring them (NPWG-13, NPWG-72), one
//! device per attachment in sorted order, the device-info file copied, published as `device-info` in
//! the network-status (NPWG-71, NPWG-73) and removed by DEL, `Get` with the `List` fallback, the
//! checkpoint fallback, a missing socket failing only a pod that needs devices, and DRA claims named
//! directly and by template (on both servers: the claims and allocations are ones a real server accepts).
//!
//! Run (as root: the pod gets a network namespace plexus inspects):
//! `cargo test -p plexus-e2e --test devices -- --include-ignored`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use plexus::pure::annotations::{NETWORK_STATUS_ANNOTATION, NETWORKS_ANNOTATION};
use plexus_e2e::{
    harness::{
        cluster::{Cluster, PodInfo, nad_resource},
        kubeconfig, rbac,
        world::netns,
    },
    podresources::{Allocations, PodResourcesStandin, pod},
};
use plexus_testsupport::{
    netns::Netns,
    proc::{recorder_bin, run_bounded},
};
use serde_json::{Value, json};

/// The plexus binary under test.
fn plexus() -> PathBuf {
    std::env::var_os("E2E_PLEXUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_plexus-under-test")))
}

/// `plexus-recorder`, next to the binary under test, else built once with cargo (its profile).
fn recorder() -> &'static Path {
    recorder_bin(Path::new(env!("CARGO_BIN_EXE_plexus-under-test")))
}

/// One test's node: the API, plexus's files, the kubelet's socket and checkpoint paths, a pod namespace.
struct Node {
    cluster: Cluster,
    client: Client,
    ns: String,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    netns: Netns,
}

impl Node {
    fn new() -> Node {
        let mut cluster = Cluster::start();
        let ns = cluster.create_namespace("dev");
        let dir = tempfile::Builder::new()
            .prefix("plexus-e2e-devices-")
            .tempdir()
            .unwrap();
        // plexus's identity: a ServiceAccount bound to deploy's ClusterRole (so its DRA rules are tested).
        let role = cluster.hold_deploy_cluster_role();
        let sa = rbac::deploy_service_account_name();
        cluster.create_service_account(&ns, &sa);
        cluster.bind_cluster_role(&ns, &role, &ns, &sa);
        let token = cluster.request_token(&ns, &sa, rbac::TOKEN_SECONDS);
        let original = kubeconfig::read(cluster.kubeconfig()).unwrap();
        let user = format!("system:serviceaccount:{ns}:{sa}");
        let kc = kubeconfig::with_token(&original, cluster.kubeconfig(), &token, &user).unwrap();
        let path = dir.path().join("plexus.kubeconfig");
        kubeconfig::write(&path, &kc).unwrap();
        cluster.wait_authorized(&path, &ns);
        let admin = cluster.kubeconfig().to_path_buf();
        let client = cluster.block("client", async move {
            let kc = Kubeconfig::read_from(&admin).unwrap();
            let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .unwrap();
            Client::try_from(config).unwrap()
        });
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(recorder(), bin.join("plexus-recorder")).unwrap();
        Node {
            cluster,
            client,
            ns,
            kubeconfig: path,
            netns: netns("devpod"),
            dir,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn socket(&self) -> PathBuf {
        self.path("kubelet.sock")
    }

    fn checkpoint(&self) -> PathBuf {
        self.path("kubelet_internal_checkpoint")
    }

    fn devinfo(&self) -> PathBuf {
        self.path("devinfo")
    }

    fn records(&self) -> PathBuf {
        self.path("records.jsonl")
    }

    /// A recorder network whose plugin declares `caps`.
    fn recorder_net(&self, name: &str, caps: Value) -> Value {
        json!({"cniVersion": "1.0.0", "name": name, "type": "plexus-recorder",
               "recordFile": self.records(), "capabilities": caps})
    }

    /// NAD `name` (a recorder network declaring `caps`), annotated with `resource`.
    fn nad(&self, name: &str, resource: Option<&str>, caps: Value) {
        let mut meta = json!({"name": name, "namespace": self.ns});
        if let Some(r) = resource {
            meta["annotations"] = json!({"k8s.v1.cni.cncf.io/resourceName": r});
        }
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": meta,
            "spec": {"config": self.recorder_net(name, caps).to_string()},
        }))
        .unwrap();
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.ns, &nad_resource());
        self.cluster
            .block("create NAD", api.create(&PostParams::default(), &obj))
            .unwrap();
    }

    fn pod(&self, name: &str, networks: &str) -> PodInfo {
        self.cluster
            .create_pod(&self.ns, name, &[(NETWORKS_ANNOTATION, networks)])
    }

    /// Run plexus `command` for `pod` as container `cid`; the reply and exit status.
    fn plexus(&self, command: &str, pod: &PodInfo, cid: &str) -> (Value, bool) {
        let config = json!({
            "cniVersion": "1.0.0", "name": "plexus", "type": "plexus",
            "kubeconfig": self.kubeconfig, "cniDir": self.path("cni"), "binDir": self.path("bin"),
            "deviceInfoDir": self.devinfo(), "podResourcesSocket": self.socket(),
            "kubeletCheckpointFile": self.checkpoint(),
            "delegates": [self.recorder_net("cluster", json!({}))],
        });
        let mut cmd = Command::new(plexus());
        cmd.env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", cid)
            .env("CNI_NETNS", self.netns.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", self.path("bin"))
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID={}",
                    pod.namespace, pod.name, pod.uid
                ),
            );
        let out = run_bounded(
            &mut cmd,
            config.to_string().as_bytes(),
            Duration::from_secs(60),
        );
        let reply = if out.stdout.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&out.stdout)
                .unwrap_or_else(|e| panic!("plexus printed no JSON ({e}): {}", out.stdout))
        };
        (reply, out.code == 0)
    }

    /// The recorded ADD request config of network `name`, last first.
    fn recorded_add(&self, name: &str) -> Value {
        let text = std::fs::read_to_string(self.records()).unwrap_or_default();
        text.lines()
            .rev()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|r| r["command"] == "ADD" && r["stdin"]["name"] == name)
            .unwrap_or_else(|| panic!("no ADD of {name} recorded"))["stdin"]
            .clone()
    }

    fn status(&self, pod: &PodInfo) -> Vec<Value> {
        let s = self
            .cluster
            .pod_annotation(&pod.namespace, &pod.name, NETWORK_STATUS_ANNOTATION)
            .expect("network-status written");
        serde_json::from_str(&s).unwrap()
    }

    fn status_of<'a>(&self, status: &'a [Value], network: &str) -> &'a Value {
        let name = format!("{}/{network}", self.ns);
        status
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no status entry {name}: {status:?}"))
    }
}

fn both() -> Value {
    json!({"deviceID": true, "CNIDeviceInfoFile": true})
}

#[test]
#[ignore = "needs root: gives the pod a network namespace plexus inspects"]
fn several_resources_and_attachments_through_get_with_device_info_npwg_13_71_73() {
    let n = Node::new();
    n.nad("vf-a", Some("intel.com/vf"), both());
    n.nad("rdma", Some("mlx.com/rdma"), json!({}));
    n.nad("vf-b", Some("intel.com/vf"), both());
    let p = n.pod("p1", "vf-a,rdma,vf-b");
    let kubelet = PodResourcesStandin::start(
        &n.socket(),
        Allocations {
            get: true,
            pods: vec![
                pod(
                    &n.ns,
                    "p1",
                    &[
                        ("intel.com/vf", &["0000:03:00.5", "0000:03:00.4"]),
                        ("mlx.com/rdma", &["0000:81:00.1"]),
                    ],
                ),
                pod(&n.ns, "other", &[("intel.com/vf", &["0000:03:00.1"])]),
            ],
        },
    )
    .unwrap();
    let dp = json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:03:00.4"}});
    let dp_file = n.devinfo().join("dp/intel.com-vf-0000:03:00.4-device.json");
    std::fs::create_dir_all(dp_file.parent().unwrap()).unwrap();
    std::fs::write(&dp_file, dp.to_string()).unwrap();

    let (reply, ok) = n.plexus("ADD", &p, "cid-dev1");
    assert!(ok, "{reply}");
    assert_eq!(
        kubelet.calls(),
        ["/v1.PodResourcesLister/Get"],
        "one Get, no List"
    );

    let a = n.recorded_add("vf-a");
    let a_file = n.devinfo().join(format!("cni/{}-vf-a-cid-dev1_net1", n.ns));
    assert_eq!(
        (&a["deviceID"], &a["pciBusID"]),
        (&json!("0000:03:00.4"), &json!("0000:03:00.4"))
    );
    assert_eq!(
        a["runtimeConfig"],
        json!({"deviceID": "0000:03:00.4", "CNIDeviceInfoFile": a_file.display().to_string()})
    );
    let b = n.recorded_add("vf-b");
    assert_eq!(
        b["deviceID"], "0000:03:00.5",
        "the second device of the resource"
    );
    let r = n.recorded_add("rdma");
    assert_eq!(r["deviceID"], "0000:81:00.1");
    assert!(
        r.get("runtimeConfig").is_none(),
        "no capability declared: {r}"
    );
    assert!(n.recorded_add("cluster").get("deviceID").is_none());

    // The device plugin's file was copied (NPWG-71) and published (NPWG-73).
    assert!(a_file.is_file());
    let status = n.status(&p);
    assert_eq!(n.status_of(&status, "vf-a")["device-info"], dp);
    assert!(n.status_of(&status, "vf-b").get("device-info").is_none());

    let (reply, ok) = n.plexus("DEL", &p, "cid-dev1");
    assert!(ok, "{reply}");
    assert!(!a_file.exists(), "DEL removes the CNI device-info file");
    assert!(!n.path("cni/cid-dev1").exists(), "no cache left");
    assert_eq!(kubelet.calls().len(), 1, "DEL does not ask the kubelet");
}

#[test]
#[ignore = "needs root: gives the pod a network namespace plexus inspects"]
fn list_when_get_is_unimplemented() {
    let n = Node::new();
    n.nad("vf", Some("intel.com/vf"), both());
    let p = n.pod("p2", "vf");
    let kubelet = PodResourcesStandin::start(
        &n.socket(),
        Allocations {
            get: false,
            pods: vec![
                pod("elsewhere", "p2", &[("intel.com/vf", &["wrong"])]),
                pod(&n.ns, "p2", &[("intel.com/vf", &["0000:05:00.2"])]),
            ],
        },
    )
    .unwrap();
    let (reply, ok) = n.plexus("ADD", &p, "cid-dev2");
    assert!(ok, "{reply}");
    assert_eq!(
        kubelet.calls(),
        ["/v1.PodResourcesLister/Get", "/v1.PodResourcesLister/List"]
    );
    assert_eq!(
        n.recorded_add("vf")["deviceID"],
        "0000:05:00.2",
        "filtered by namespace and name"
    );
    assert!(n.plexus("DEL", &p, "cid-dev2").1);
}

#[test]
#[ignore = "needs root: gives the pod a network namespace plexus inspects"]
fn checkpoint_when_there_is_no_socket() {
    let n = Node::new();
    n.nad("vf", Some("intel.com/vf"), both());
    let p = n.pod("p3", "vf");
    let cp = json!({"Data": {"PodDeviceEntries": [
        {"PodUID": p.uid, "ContainerName": "pause", "ResourceName": "intel.com/vf",
         "DeviceIDs": {"0": ["0000:06:00.3", "0000:06:00.2"]}, "AllocResp": ""},
        {"PodUID": "someone-else", "ContainerName": "c", "ResourceName": "intel.com/vf",
         "DeviceIDs": {"0": ["0000:06:00.1"]}, "AllocResp": ""}
    ]}, "Checksum": 0});
    std::fs::write(n.checkpoint(), cp.to_string()).unwrap();
    let (reply, ok) = n.plexus("ADD", &p, "cid-dev3");
    assert!(ok, "{reply}");
    assert_eq!(
        n.recorded_add("vf")["deviceID"],
        "0000:06:00.2",
        "the pod's first, sorted"
    );
    assert!(n.plexus("DEL", &p, "cid-dev3").1);
}

#[test]
#[ignore = "needs root: gives the pod a network namespace plexus inspects"]
fn a_missing_socket_fails_only_a_pod_whose_networks_need_devices() {
    let n = Node::new();
    n.nad("plain", None, json!({}));
    n.nad("vf", Some("intel.com/vf"), both());
    let plain = n.pod("p4", "plain");
    let (reply, ok) = n.plexus("ADD", &plain, "cid-dev4");
    assert!(ok, "no resourceName, no kubelet needed: {reply}");
    assert!(n.plexus("DEL", &plain, "cid-dev4").1);

    let needs = n.pod("p5", "plain,vf");
    let (reply, ok) = n.plexus("ADD", &needs, "cid-dev5");
    assert!(!ok);
    assert_eq!(reply["code"], 7, "{reply}");
    let msg = reply["msg"].as_str().unwrap();
    for part in [
        format!("{}/p5", n.ns),
        format!("network \"{}/vf\"", n.ns),
        "intel.com/vf".to_string(),
        n.socket().display().to_string(),
        n.checkpoint().display().to_string(),
    ] {
        assert!(msg.contains(&part), "{part:?} not in {msg}");
    }
    assert!(
        !n.path("cni/cid-dev5").exists(),
        "a failed ADD leaves no cache"
    );
    assert!(
        !std::fs::read_to_string(n.records())
            .unwrap_or_default()
            .contains("cid-dev5"),
        "no delegate ran"
    );
}

/// Deletes the test's ResourceSlice (cluster-scoped, so the namespace's removal does not) however the test
/// ends.
struct SliceGuard<'a> {
    node: &'a Node,
    api: Api<DynamicObject>,
    name: String,
}

impl Drop for SliceGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.node.cluster.block(
            "delete slice",
            self.api.delete(&self.name, &Default::default()),
        ) {
            eprintln!("deleting ResourceSlice {}: {e}", self.name);
        }
    }
}

/// DRA on either server (`resource.k8s.io/v1`, GA since Kubernetes 1.34). The pod has two claims, as a
/// real cluster records them: `nic` names an existing ResourceClaim directly (the control plane writes no
/// `resourceClaimStatuses` entry for it), and `vf` names a template, so the claim made for it is found
/// through the pod's status entry. The test plays the scheduler, the driver and the claim controller: it
/// publishes a ResourceSlice, creates both claims (the generated one as the controller does: a
/// `generateName` of `<pod>-<claim>-` and the pod as its owner), writes their allocations through
/// `/status` and the pod's entry for `vf`, all of which a real server validates (a result's `request`
/// must name a request of the claim; a claim status must name one of the pod's `spec.resourceClaims`).
/// No DeviceClass or ResourceClaimTemplate is needed: a claim naming a class that does not exist, and a
/// pod naming a template that does not exist, are accepted, and nothing schedules the pod (it is bound
/// to a node that does not exist).
#[test]
#[ignore = "needs root: gives the pod a network namespace plexus inspects"]
fn dra_claim_devices_with_the_attributes_multus_3_5() {
    let n = Node::new();
    n.nad("dra-nic", Some("example.com/nic"), both());
    n.nad("dra-vf", Some("example.com/vf"), both());
    let p = n.cluster.create_pod_with_spec(
        &n.ns,
        "p6",
        &[(NETWORKS_ANNOTATION, "dra-nic,dra-vf")],
        json!({"resourceClaims": [{"name": "nic", "resourceClaimName": "p6-nic"},
                                  {"name": "vf", "resourceClaimTemplateName": "vf-template"}]}),
    );
    let node = n
        .cluster
        .get_pod(&n.ns, "p6")
        .spec
        .unwrap()
        .node_name
        .unwrap();
    let slices: Api<DynamicObject> = Api::all_with(
        n.client.clone(),
        &kube::api::ApiResource::erase::<k8s_openapi::api::resource::v1::ResourceSlice>(&()),
    );
    let attr = |resource: &str, id: &str| json!({"k8s.cni.cncf.io/resourceName": {"string": resource}, "k8s.cni.cncf.io/deviceID": {"string": id}});
    let slice_name = format!("{}-nic", n.ns);
    let slice: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
        "metadata": {"name": slice_name},
        "spec": {"driver": "nic.example.com", "nodeName": node,
                 "pool": {"name": "pool0", "generation": 1, "resourceSliceCount": 1},
                 "devices": [{"name": "vf0", "attributes": attr("example.com/nic", "0000:07:00.1")},
                             {"name": "vf1", "attributes": attr("example.com/vf", "0000:08:00.1")},
                             {"name": "gpu0", "attributes": {"model": {"string": "x"}}}]}
    }))
    .unwrap();
    n.cluster
        .block(
            "create slice",
            slices.create(&PostParams::default(), &slice),
        )
        .unwrap();
    let _slice = SliceGuard {
        node: &n,
        api: slices,
        name: slice_name,
    };
    let claims: Api<DynamicObject> = Api::namespaced_with(
        n.client.clone(),
        &n.ns,
        &kube::api::ApiResource::erase::<k8s_openapi::api::resource::v1::ResourceClaim>(&()),
    );
    // Create a claim and allocate its requests (`(request, device)`); the claim's name.
    let claim = |metadata: Value, requests: &[(&str, &str)]| -> String {
        let spec: Vec<Value> = requests
            .iter()
            .map(|(r, _)| json!({"name": r, "exactly": {"deviceClassName": format!("{r}.example.com")}}))
            .collect();
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": metadata, "spec": {"devices": {"requests": spec}}
        }))
        .unwrap();
        let created = n
            .cluster
            .block("create claim", claims.create(&PostParams::default(), &obj))
            .unwrap();
        let name = created.metadata.name.expect("the server names the claim");
        let results: Vec<Value> = requests
            .iter()
            .map(|(r, d)| json!({"request": r, "driver": "nic.example.com", "pool": "pool0", "device": d}))
            .collect();
        let allocation = json!({"status": {"allocation": {"devices": {"results": results}}}});
        n.cluster
            .block(
                "allocate claim",
                claims.patch_status(&name, &PatchParams::default(), &Patch::Merge(&allocation)),
            )
            .unwrap();
        name
    };
    // Two requests, one per allocated device: the NIC plexus hands on, and a GPU it must skip.
    claim(
        json!({"name": "p6-nic"}),
        &[("nic", "vf0"), ("gpu", "gpu0")],
    );
    let generated = claim(
        json!({"generateName": "p6-vf-", "ownerReferences": [{"apiVersion": "v1", "kind": "Pod",
               "name": "p6", "uid": p.uid, "controller": true}]}),
        &[("vf", "vf1")],
    );
    let pods: Api<Pod> = Api::namespaced(n.client.clone(), &n.ns);
    let claimed = json!({"status": {"resourceClaimStatuses": [{"name": "vf", "resourceClaimName": generated}]}});
    n.cluster
        .block(
            "pod claim status",
            pods.patch_status("p6", &PatchParams::default(), &Patch::Merge(&claimed)),
        )
        .unwrap();

    // No kubelet socket and no checkpoint: DRA alone answers.
    let (reply, ok) = n.plexus("ADD", &p, "cid-dev6");
    assert!(ok, "{reply}");
    let rec = n.recorded_add("dra-nic");
    assert_eq!(rec["deviceID"], "0000:07:00.1", "the claim named directly");
    assert_eq!(rec["runtimeConfig"]["deviceID"], "0000:07:00.1");
    let rec = n.recorded_add("dra-vf");
    assert_eq!(
        rec["deviceID"], "0000:08:00.1",
        "the claim made from the template"
    );
    assert_eq!(rec["runtimeConfig"]["deviceID"], "0000:08:00.1");
    assert!(n.plexus("DEL", &p, "cid-dev6").1);
}

#[test]
fn the_podresources_binary_serves_a_seed_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.json");
    std::fs::write(
        &seed,
        json!({"get": false, "pods": [{"namespace": "ns", "name": "p", "containers": [
            {"name": "c", "devices": [{"resourceName": "r", "deviceIDs": ["d2", "d1"]}]}]}]})
        .to_string(),
    )
    .unwrap();
    let socket = dir.path().join("kubelet.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_plexus-podresources"))
        .arg("--socket")
        .arg(&socket)
        .arg("--seed")
        .arg(&seed)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        format!("plexus-podresources ready socket={}", socket.display())
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let map = rt
        .block_on(plexus::seams::devices::podresources::pod_devices(
            &socket,
            "ns",
            "p",
            Duration::from_secs(5),
        ))
        .unwrap();
    assert_eq!(map["r"], ["d2", "d1"], "through List (get: false)");
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(child.wait().unwrap().success());
    assert!(!socket.exists(), "the socket is removed on exit");
}
