//! `kubectl` (when installed) against the stand-in through its kubeconfig:
//! apply, get with selectors, label, status patch, JSON patch, delete.
//! Skipped, with a note on stderr, where kubectl is not on PATH.

use std::path::Path;
use std::process::Command;

use plexus_e2e::apiserver::{ApiServer, Config};
use serde_json::Value;

const OBJECTS: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: Pod
metadata:
  name: p1
  namespace: demo
  labels: {app: web}
spec:
  nodeName: node1
  containers:
  - name: c
    image: busybox
";

fn kubectl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(args)
        .output()
        .expect("kubectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let (success, text) = kubectl(dir, args);
    assert!(success, "kubectl {args:?}: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_works_against_the_standin() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("kubectl not found; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = ApiServer::start(Config {
        kubeconfig: Some(d.join("kubeconfig")),
        ..Config::default()
    })
    .await
    .unwrap();
    std::fs::write(d.join("objects.yaml"), OBJECTS).unwrap();
    let crd = serde_json::to_string(&plexus_e2e::apiserver::resources::nad_crd()).unwrap();
    std::fs::write(d.join("crd.json"), crd).unwrap();
    let nad = r#"{"apiVersion":"k8s.cni.cncf.io/v1","kind":"NetworkAttachmentDefinition",
        "metadata":{"name":"net1","namespace":"demo"},"spec":{"config":"{\"type\":\"bridge\"}"}}"#;
    std::fs::write(d.join("nad.json"), nad).unwrap();

    tokio::task::spawn_blocking(move || {
        let d = dir.path();
        let objects = d.join("objects.yaml");
        let objects = objects.to_str().unwrap();
        assert!(ok(d, &["apply", "-f", objects]).contains("pod/p1 created"));
        assert!(ok(d, &["apply", "-f", objects]).contains("pod/p1 unchanged"));
        ok(d, &["apply", "-f", d.join("crd.json").to_str().unwrap()]);
        ok(
            d,
            &[
                "wait",
                "--for",
                "condition=established",
                "--timeout=5s",
                "crd/network-attachment-definitions.k8s.cni.cncf.io",
            ],
        );
        ok(d, &["apply", "-f", d.join("nad.json").to_str().unwrap()]);
        let nads: Value = serde_json::from_str(&ok(
            d,
            &["get", "net-attach-def", "-n", "demo", "-o", "json"],
        ))
        .unwrap();
        assert_eq!(nads["items"][0]["metadata"]["name"], "net1");

        ok(d, &["label", "pod", "p1", "-n", "demo", "tier=front"]);
        ok(
            d,
            &[
                "patch",
                "pod",
                "p1",
                "-n",
                "demo",
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"phase":"Running"}}"#,
            ],
        );
        ok(
            d,
            &[
                "patch",
                "pod",
                "p1",
                "-n",
                "demo",
                "--type=json",
                "-p",
                r#"[{"op":"add","path":"/metadata/annotations","value":{"a":"b"}}]"#,
            ],
        );
        let pods: Value = serde_json::from_str(&ok(
            d,
            &[
                "get",
                "pods",
                "-n",
                "demo",
                "-l",
                "tier=front",
                "--field-selector",
                "spec.nodeName=node1",
                "-o",
                "json",
            ],
        ))
        .unwrap();
        let p = &pods["items"][0];
        assert_eq!(p["status"]["phase"], "Running");
        assert_eq!(p["metadata"]["annotations"]["a"], "b");
        ok(d, &["delete", "pod", "p1", "-n", "demo"]);
        let (found, text) = kubectl(d, &["get", "pod", "p1", "-n", "demo"]);
        assert!(!found && text.contains("NotFound"), "{text}");
    })
    .await
    .unwrap();
    assert!(server.count_requests("PATCH", "/pods/p1/status") == 1);
}
