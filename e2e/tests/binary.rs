//! The `plexus-apiserver` binary: seed file, ready line, kubeconfig, SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use plexus_e2e::apiserver::Client;
use serde_json::Value;

const SEED: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: seeded
  namespace: demo
  annotations:
    k8s.v1.cni.cncf.io/networks: net1
spec:
  nodeName: node1
  containers:
  - name: c
    image: busybox
status:
  phase: Running
---
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: net1
  namespace: demo
spec:
  config: '{\"cniVersion\":\"1.0.0\",\"type\":\"bridge\"}'
";

#[tokio::test]
async fn binary_seeds_reports_ready_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    std::fs::write(&seed, SEED).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_plexus-apiserver"))
        .args([
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--nad-crd",
            "--token",
            "demo-token",
        ])
        .arg("--seed")
        .arg(&seed)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("url="))
        .expect("ready line has url=")
        .to_string();
    assert!(line.starts_with("plexus-apiserver ready "), "{line}");
    assert!(
        line.contains(&format!("kubeconfig={}", kubeconfig.display())),
        "{line}"
    );

    let config: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&kubeconfig).unwrap()).unwrap();
    assert_eq!(config["users"][0]["user"]["token"], "demo-token");
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(
            config["clusters"][0]["cluster"]["certificate-authority-data"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let c = Client::new(&url, &String::from_utf8(ca).unwrap(), Some("demo-token")).unwrap();
    let pod = c
        .get("/api/v1/namespaces/demo/pods/seeded")
        .await
        .unwrap()
        .json();
    assert_eq!(pod["status"]["phase"], "Running", "seeds keep their status");
    assert_eq!(
        pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"],
        "net1"
    );
    let nad = c
        .get("/apis/k8s.cni.cncf.io/v1/namespaces/demo/network-attachment-definitions/net1")
        .await
        .unwrap();
    assert_eq!(nad.status, 200);
    assert_eq!(
        c.get("/api/v1/namespaces/demo/serviceaccounts/default")
            .await
            .unwrap()
            .status,
        200
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn binary_rejects_bad_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_plexus-apiserver"))
        .arg("--port")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_plexus-apiserver"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--kubeconfig is required"));
}
