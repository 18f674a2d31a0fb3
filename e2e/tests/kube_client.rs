//! kube-rs (the client plexus uses) against the stand-in, through the
//! kubeconfig file it writes: TLS with its CA, bearer token, typed and dynamic
//! APIs, status patches, errors, watches, discovery. Each runs twice: with
//! kube's own client (HTTP/1.1) and with the one plexus builds
//! (`plexus::seams::k8s::transport`, HTTP/2 by ALPN). Last, plexus's `ApiCluster`
//! itself: an ADD's reads share one connection over HTTP/2, and a server
//! that offers only HTTP/1.1 still serves them.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config};
use plexus_e2e::apiserver::{ApiServer, Config as StandinConfig, FaultSpec};
use serde_json::json;

async fn kube_config(path: &std::path::Path) -> Config {
    let kubeconfig = Kubeconfig::read_from(path).expect("kubeconfig parses");
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kube config")
}

/// Which client: kube's own (`Client::try_from`, HTTP/1.1 only) or plexus's (HTTP/2 when offered).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Which {
    Kube,
    Plexus,
}

fn build(which: Which, config: Config) -> Client {
    match which {
        Which::Kube => Client::try_from(config).expect("kube client"),
        Which::Plexus => plexus::seams::k8s::transport::client(&config).expect("plexus client"),
    }
}

async fn kube_client(which: Which, path: &std::path::Path) -> Client {
    build(which, kube_config(path).await)
}

/// The protocol the stand-in served: every connection HTTP/1.1 for kube's client, HTTP/2 for plexus's.
fn assert_protocol(which: Which, server: &ApiServer) {
    let c = server.connections();
    assert!(c.accepted > 0, "{c:?}");
    match which {
        Which::Kube => assert_eq!(c.http2, 0, "{c:?}"),
        Which::Plexus => assert_eq!((c.http1, c.http2), (0, c.accepted), "{c:?}"),
    }
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "kube"}},
        "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap()
}

#[tokio::test]
async fn kube_rs_reads_and_patches_pod_status() {
    reads_and_patches_pod_status(Which::Kube).await;
}

#[tokio::test]
async fn plexus_client_reads_and_patches_pod_status_over_http2() {
    reads_and_patches_pod_status(Which::Plexus).await;
}

async fn reads_and_patches_pod_status(which: Which) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    let server = ApiServer::start(StandinConfig {
        kubeconfig: Some(path.clone()),
        nad_crd: true,
        ..StandinConfig::default()
    })
    .await
    .unwrap();
    let client = kube_client(which, &path).await;

    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");

    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.create(&PostParams::default(), &pod("web"))
        .await
        .unwrap();
    let got = pods.get("web").await.unwrap();
    assert_eq!(got.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(got.status.unwrap().phase.as_deref(), Some("Pending"));

    let patch = json!({
        "metadata": {"annotations": {"k8s.v1.cni.cncf.io/network-status": "[{\"name\":\"net1\"}]"}},
        "status": {"podIP": "10.1.2.3"}
    });
    let patched = pods
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let ann = patched.metadata.annotations.unwrap();
    assert_eq!(
        ann["k8s.v1.cni.cncf.io/network-status"],
        "[{\"name\":\"net1\"}]"
    );
    assert_eq!(patched.status.unwrap().pod_ip.as_deref(), Some("10.1.2.3"));
    let strategic = json!({"status": {"podIP": "10.1.2.4"}});
    let patched = pods
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(&strategic),
        )
        .await
        .unwrap();
    assert_eq!(patched.status.unwrap().pod_ip.as_deref(), Some("10.1.2.4"));
    // The status subresource ignores spec changes.
    let patched = pods
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"nodeName": "x"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.spec.unwrap().node_name.as_deref(), Some("node1"));

    // Errors come back as kube::Error::Api with the Status fields.
    match pods.get("missing").await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 404);
            assert_eq!(s.reason, "NotFound");
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    let mut stale = pod("web");
    stale.metadata.resource_version = Some("1".into());
    match pods.replace("web", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (409, "Conflict")),
        other => panic!("expected Conflict, got {other:?}"),
    }
    // kube 5 retries 429/503/504 by itself (Config::default_retry, honouring Retry-After)...
    server.inject(
        FaultSpec::status(503)
            .on("PATCH", "/pods/web/status")
            .times(1)
            .retry_after(0),
    );
    pods.patch_status("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("retried past one 503");
    // ...unless told not to; then the Status surfaces.
    let mut config = kube_config(&path).await;
    config.default_retry = false;
    let no_retry: Api<Pod> = Api::default_namespaced(build(which, config));
    server.inject(
        FaultSpec::status(503)
            .on("PATCH", "/pods/web/status")
            .times(1),
    );
    let err = no_retry
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 503),
        "{err:?}"
    );
    server.inject(FaultSpec::drop_connection().on("GET", "/pods/web").times(1));
    assert!(matches!(
        no_retry.get("web").await,
        Err(kube::Error::HyperError(_)) | Err(kube::Error::Service(_))
    ));

    let list = pods
        .list(
            &ListParams::default()
                .labels("app=kube")
                .fields("spec.nodeName=node1"),
        )
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);

    // NADs through the dynamic API, as plexus reads them.
    let gvk = GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "network-attachment-definitions");
    let nads: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let nad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "net1"}, "spec": {"config": "{\"cniVersion\":\"1.0.0\",\"type\":\"bridge\"}"}
    }))
    .unwrap();
    nads.create(&PostParams::default(), &nad).await.unwrap();
    let got = nads.get("net1").await.unwrap();
    assert_eq!(
        got.data["spec"]["config"],
        "{\"cniVersion\":\"1.0.0\",\"type\":\"bridge\"}"
    );

    // Discovery finds the CRD's group.
    let discovery = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .unwrap();
    assert!(discovery.groups().any(|g| g.name() == "k8s.cni.cncf.io"));

    assert_eq!(server.count_requests("PATCH", "/pods/web/status"), 6);
    assert_eq!(server.count_requests("GET", "/pods/web"), 2);
    assert_protocol(which, &server);
}

#[tokio::test]
async fn kube_rs_watches() {
    watches(Which::Kube).await;
}

#[tokio::test]
async fn plexus_client_watches_over_http2() {
    watches(Which::Plexus).await;
}

async fn watches(which: Which) {
    use futures::{StreamExt, TryStreamExt};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    let server = ApiServer::start(StandinConfig {
        kubeconfig: Some(path.clone()),
        ..StandinConfig::default()
    })
    .await
    .unwrap();
    let pods: Api<Pod> = Api::default_namespaced(kube_client(which, &path).await);
    let rv = server.with_store(|s| s.resource_version()).to_string();
    let mut stream = pods
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    pods.create(&PostParams::default(), &pod("w"))
        .await
        .unwrap();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(p)) => assert_eq!(p.metadata.name.as_deref(), Some("w")),
        other => panic!("expected ADDED, got {other:?}"),
    }
    pods.delete("w", &Default::default()).await.unwrap();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Deleted(p)) => assert_eq!(p.metadata.name.as_deref(), Some("w")),
        other => panic!("expected DELETED, got {other:?}"),
    }
    assert_protocol(which, &server);
}

/// The ADD path's reads through plexus's `ApiCluster` (as the core drives it, `plexus::ops::pod_networks`):
/// the pod and the cluster network's NAD together, then eight selected NADs at once. The stand-in runs on a runtime of its own (`ApiCluster` blocks on
/// its own). Returns the networks found and the stand-in's connection counts.
fn add_reads(http1_only: bool) -> (usize, plexus_e2e::apiserver::Connections, usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt
        .block_on(ApiServer::start(StandinConfig {
            kubeconfig: Some(path.clone()),
            nad_crd: true,
            http1_only,
            ..StandinConfig::default()
        }))
        .unwrap();
    let nad = |ns: &str, name: &str| {
        json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
               "metadata": {"name": name, "namespace": ns},
               "spec": {"config": "{\"cniVersion\":\"1.0.0\",\"type\":\"bridge\"}"}})
    };
    server.create(nad("kube-system", "cluster-nad")).unwrap();
    let names: Vec<String> = (1..=8).map(|i| format!("net{i}")).collect();
    for n in &names {
        server.create(nad("default", n)).unwrap();
    }
    let mut web = serde_json::to_value(pod("web")).unwrap();
    web["metadata"]["namespace"] = json!("default");
    web["metadata"]["annotations"] = json!({"k8s.v1.cni.cncf.io/networks": names.join(",")});
    let web = server.create(web).unwrap();
    server.clear_requests();

    let config = plexus::pure::config::Config::from_bytes(
        json!({"cniVersion": "1.0.0", "name": "plexus", "kubeconfig": path,
               "clusterNetwork": "cluster-nad", "apiTimeoutSeconds": 5})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let cluster = plexus::seams::k8s::client::ApiCluster::from_config(&config).unwrap();
    let pod_ref = plexus::pure::request::PodRef {
        namespace: "default".into(),
        name: "web".into(),
        uid: web["metadata"]["uid"].as_str().map(String::from),
        infra_container_id: None,
    };
    let found = plexus::ops::pod_networks(&cluster, &pod_ref, &config).unwrap();
    let requests = server.count_requests("GET", "");
    (found.networks.len(), server.connections(), requests)
}

#[test]
fn api_cluster_add_reads_share_one_http2_connection() {
    let (networks, conns, requests) = add_reads(false);
    assert_eq!(networks, 8);
    assert_eq!(requests, 10, "the pod, the cluster network and eight NADs");
    assert_eq!(
        (conns.accepted, conns.http1, conns.http2),
        (1, 0, 1),
        "ten requests, one TLS connection"
    );
}

#[test]
fn api_cluster_add_reads_work_with_a_server_offering_only_http1() {
    let (networks, conns, requests) = add_reads(true);
    assert_eq!(networks, 8);
    assert_eq!(requests, 10);
    assert_eq!(
        conns.http2, 0,
        "no connection may be served HTTP/2: {conns:?}"
    );
    assert!(
        conns.http1 >= 1,
        "the reads were served over HTTP/1.1: {conns:?}"
    );
    // Concurrent requests over HTTP/1.1 need a connection each (how many exactly depends on timing).
    // The pool may also open a connection it no longer needs once another comes free, and drop it
    // (with the client) before its TLS handshake ends: such a connection counts as accepted only.
    assert!(conns.accepted >= 2, "{conns:?}");
    assert!(conns.http1 <= conns.accepted, "{conns:?}");
}
