//! The stand-in over real HTTPS, with its own CA and token. Watches, faults
//! and the request log are checked over HTTP/1.1 and over HTTP/2 (ALPN `h2`).

use std::time::{Duration, Instant};

use hyper::Version;
use plexus_e2e::apiserver::{ApiServer, Client, Config, FaultSpec};
use serde_json::{Value, json};

const MERGE: &str = "application/merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";
const STRATEGIC: &str = "application/strategic-merge-patch+json";
const PODS: &str = "/api/v1/namespaces/default/pods";
const NADS: &str = "/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions";

async fn start() -> (ApiServer, Client) {
    start_on(false).await
}

/// The stand-in and a client that speaks HTTP/2 (`h2`) or HTTP/1.1 to it; every request checks that the
/// protocol is the one asked for.
async fn start_on(h2: bool) -> (ApiServer, Client) {
    let server = ApiServer::start(Config::default()).await.expect("start");
    let client = server.client().with_http2(h2);
    let want = if h2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    assert_eq!(client.get("/version").await.unwrap().version, want);
    server.clear_requests();
    (server, client)
}

/// Every connection the stand-in accepted was served with the protocol asked for.
fn assert_served(server: &ApiServer, h2: bool) {
    let c = server.connections();
    let (want1, want2) = if h2 { (0, c.accepted) } else { (c.accepted, 0) };
    assert_eq!((c.http1, c.http2), (want1, want2), "{c:?}");
}

fn pod(name: &str, app: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}
    })
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn rv(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn authentication_like_a_cluster() {
    let (server, client) = start().await;
    for c in [client.with_token(None), client.with_token(Some("wrong"))] {
        let r = c.get(PODS).await.unwrap();
        assert_eq!(r.status, 401);
        let s = r.json();
        assert_eq!(s["kind"], "Status");
        assert_eq!(s["apiVersion"], "v1");
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "Unauthorized");
        assert_eq!(s["code"], 401);
        assert_eq!(c.get("/standin/requests").await.unwrap().status, 401);
    }
    let anon = client.with_token(None);
    assert_eq!(anon.get("/readyz").await.unwrap().status, 200);
    assert_eq!(client.get(PODS).await.unwrap().status, 200);
    assert_eq!(
        server.requests().iter().filter(|r| r.status == 401).count(),
        2
    );
}

#[tokio::test]
async fn pod_crud_selectors_and_conflicts() {
    let (_server, c) = start().await;
    let r = c.post(PODS, &pod("a", "web", "n1")).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.json());
    let a = r.json();
    assert_eq!(a["metadata"]["namespace"], "default");
    assert_eq!(a["metadata"]["uid"].as_str().unwrap().len(), 36);
    assert!(
        a["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(a["status"]["phase"], "Pending");
    c.post(PODS, &pod("b", "web", "n2")).await.unwrap();
    c.post(PODS, &pod("c", "db", "n1")).await.unwrap();

    let dup = c.post(PODS, &pod("a", "web", "n1")).await.unwrap();
    assert_eq!(dup.status, 409);
    assert_eq!(dup.json()["reason"], "AlreadyExists");

    let mut gen_pod = pod("", "gen", "n3");
    gen_pod["metadata"] = json!({"generateName": "gen-", "labels": {"app": "gen"}});
    let g = c.post(PODS, &gen_pod).await.unwrap().json();
    let gname = g["metadata"]["name"].as_str().unwrap();
    assert!(gname.starts_with("gen-") && gname.len() == 9, "{gname}");

    let list = c
        .get(&format!("{PODS}?labelSelector=app%3Dweb"))
        .await
        .unwrap()
        .json();
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(names(&list), ["a", "b"]);
    let list = c
        .get(&format!("{PODS}?fieldSelector=spec.nodeName%3Dn1"))
        .await
        .unwrap()
        .json();
    assert_eq!(names(&list), ["a", "c"]);
    let list = c
        .get(&format!(
            "{PODS}?fieldSelector=metadata.name=c&labelSelector=app+in+(db,web)"
        ))
        .await
        .unwrap()
        .json();
    assert_eq!(names(&list), ["c"]);
    let all = c
        .get("/api/v1/pods?labelSelector=app!%3Dgen")
        .await
        .unwrap()
        .json();
    assert_eq!(names(&all), ["a", "b", "c"]);
    let bad = c
        .get(&format!("{PODS}?fieldSelector=spec.bogus%3Dx"))
        .await
        .unwrap();
    assert_eq!(bad.status, 400);

    // UPDATE with the current resourceVersion, then with the stale one.
    let mut upd = a.clone();
    upd["metadata"]["labels"]["extra"] = json!("1");
    let r = c.put(&format!("{PODS}/a"), &upd).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(rv(&r.json()) > rv(&a));
    let r = c.put(&format!("{PODS}/a"), &upd).await.unwrap();
    assert_eq!(r.status, 409);
    let s = r.json();
    assert_eq!(s["reason"], "Conflict");
    assert_eq!(s["details"], json!({"name": "a", "kind": "pods"}));
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified")
    );

    // Spec is immutable (but for images), like the real server.
    let mut cur = c.get(&format!("{PODS}/a")).await.unwrap().json();
    cur["spec"]["nodeName"] = json!("elsewhere");
    let r = c.put(&format!("{PODS}/a"), &cur).await.unwrap();
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["reason"], "Invalid");

    let r = c.delete(&format!("{PODS}/a")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["metadata"]["name"], "a");
    let r = c.get(&format!("{PODS}/a")).await.unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "pods \"a\" not found", "reason": "NotFound",
               "details": {"name": "a", "kind": "pods"}, "code": 404})
    );
    assert_eq!(c.delete(&format!("{PODS}/a")).await.unwrap().status, 404);
}

#[tokio::test]
async fn pod_admission_and_namespaces() {
    let (_server, c) = start().await;
    let r = c
        .post("/api/v1/namespaces/nope/pods", &pod("p", "x", "n"))
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["message"], "namespaces \"nope\" not found");

    let r = c
        .post("/api/v1/namespaces", &json!({"metadata": {"name": "t1"}}))
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    // A new namespace gets its default ServiceAccount, so pods can be created in it.
    let sa = c
        .get("/api/v1/namespaces/t1/serviceaccounts/default")
        .await
        .unwrap();
    assert_eq!(sa.status, 200);
    let r = c
        .post("/api/v1/namespaces/t1/pods", &pod("p", "x", "n"))
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    c.delete("/api/v1/namespaces/t1/serviceaccounts/default")
        .await
        .unwrap();
    let r = c
        .post("/api/v1/namespaces/t1/pods", &pod("q", "x", "n"))
        .await
        .unwrap();
    assert_eq!(r.status, 403);

    let r = c
        .post(PODS, &json!({"metadata": {"name": "bad"}, "spec": {}}))
        .await
        .unwrap();
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["details"]["causes"][0]["field"], "spec.containers");
    let r = c
        .post(PODS, &json!({"metadata": {"name": "Bad_Name"}, "spec": {}}))
        .await
        .unwrap();
    assert_eq!(r.status, 422);

    // dryRun=All answers as if written, and writes nothing; YAML bodies are accepted.
    let yaml = b"metadata:\n  name: dry\nspec:\n  containers:\n  - {name: c, image: i}\n".to_vec();
    let r = c
        .request(
            hyper::Method::POST,
            "/api/v1/namespaces/default/pods?dryRun=All",
            Some("application/yaml"),
            Some(yaml),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(r.json()["metadata"]["name"], "dry");
    assert_eq!(
        c.get("/api/v1/namespaces/default/pods/dry")
            .await
            .unwrap()
            .status,
        404
    );

    let r = c.delete("/api/v1/namespaces/t1").await.unwrap();
    assert_eq!(r.json()["status"]["phase"], "Terminating");
    assert_eq!(
        c.get("/api/v1/namespaces/t1/pods/p").await.unwrap().status,
        404
    );
}

#[tokio::test]
async fn pod_status_subresource_patches() {
    let (_server, c) = start().await;
    let created = c.post(PODS, &pod("p", "web", "n1")).await.unwrap().json();
    let status = format!("{PODS}/p/status");

    // Merge patch of annotations and status through /status.
    let r = c
        .patch(
            &status,
            MERGE,
            &json!({"metadata": {"annotations": {"k8s.v1.cni.cncf.io/network-status": "[]"}},
                    "status": {"podIP": "10.0.0.5"}}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.json());
    let p = r.json();
    assert_eq!(
        p["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"],
        "[]"
    );
    assert_eq!(p["status"]["podIP"], "10.0.0.5");
    assert!(rv(&p) > rv(&created));

    // JSON patch through /status.
    let r = c
        .patch(
            &status,
            JSON_PATCH,
            &json!([{"op": "add", "path": "/metadata/annotations/x", "value": "y"},
                    {"op": "replace", "path": "/status/phase", "value": "Running"}]),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["metadata"]["annotations"]["x"], "y");
    assert_eq!(r.json()["status"]["phase"], "Running");

    // /status ignores spec changes; the main resource ignores status changes.
    let r = c
        .patch(
            &status,
            MERGE,
            &json!({"spec": {"nodeName": "other"}, "status": {"message": "m"}}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["spec"]["nodeName"], "n1");
    assert_eq!(r.json()["status"]["message"], "m");
    let r = c
        .patch(
            &format!("{PODS}/p"),
            STRATEGIC,
            &json!({"metadata": {"labels": {"l": "v"}}, "status": {"phase": "Failed"}}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["metadata"]["labels"],
        json!({"app": "web", "l": "v"})
    );
    assert_eq!(r.json()["status"]["phase"], "Running");
    let got = c.get(&status).await.unwrap().json();
    assert_eq!(got["status"]["phase"], "Running");

    // A no-op patch is not a write.
    let before = rv(&got);
    let r = c
        .patch(&status, MERGE, &json!({"status": {"phase": "Running"}}))
        .await
        .unwrap();
    assert_eq!(rv(&r.json()), before);

    // resourceVersion in a patch is a precondition.
    let r = c
        .patch(
            &status,
            MERGE,
            &json!({"metadata": {"resourceVersion": "1"}, "status": {"phase": "x"}}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["reason"], "Conflict");
    let r = c
        .patch(&status, MERGE, &json!({"metadata": {"resourceVersion": before.to_string()}, "status": {"phase": "Succeeded"}}))
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    // A uid in a patch is a precondition: a pod re-created under the same name is not patched.
    let uid = got["metadata"]["uid"].as_str().unwrap().to_string();
    let r = c
        .patch(
            &status,
            MERGE,
            &json!({"metadata": {"uid": uid}, "status": {"reason": "ok"}}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    c.delete(&format!("{PODS}/p")).await.unwrap();
    c.post(PODS, &pod("p", "web", "n1")).await.unwrap();
    let r = c
        .patch(
            &status,
            MERGE,
            &json!({"metadata": {"uid": uid}, "status": {"reason": "stale"}}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 409);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("Precondition failed: UID in precondition")
    );

    // PUT of /status with a stale resourceVersion.
    let r = c.put(&status, &got).await.unwrap();
    assert_eq!(r.status, 409);

    // Unsupported patch types.
    let r = c
        .request(
            hyper::Method::PATCH,
            &status,
            Some("application/apply-patch+yaml"),
            Some(b"{}".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 415);
    let r = c
        .patch(&format!("{PODS}/missing/status"), MERGE, &json!({}))
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    let r = c
        .get("/api/v1/namespaces/default/serviceaccounts/default/status")
        .await
        .unwrap();
    assert_eq!(r.status, 404);
}

/// A DRA claim is refused (422, a `Status` shaped like a real server's) where a Kubernetes 1.36 server
/// refuses it: an allocation result whose `request` names no request of the claim (the fixture the
/// devices e2e test first had), a request without a device class, a changed spec; a pod's claim status
/// must name one of its `spec.resourceClaims`; a template claim's generated name must be a valid one.
#[tokio::test]
async fn dra_claims_are_validated_like_a_real_server() {
    let (_server, c) = start().await;
    const CLAIMS: &str = "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims";
    let claim = |name: &str, requests: Value| {
        json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
               "metadata": {"name": name}, "spec": {"devices": {"requests": requests}}})
    };
    let allocation = json!({"status": {"allocation": {"devices": {"results": [
        {"request": "nic", "driver": "nic.example.com", "pool": "pool0", "device": "vf0"}]}}}});

    // A claim with no requests is valid, but no allocation result can name a request of it.
    let r = c.post(CLAIMS, &claim("empty", json!([]))).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.json());
    let r = c
        .patch(&format!("{CLAIMS}/empty/status"), MERGE, &allocation)
        .await
        .unwrap();
    assert_eq!(r.status, 422, "{}", r.json());
    let s = r.json();
    let field = "status.allocation.devices.results[0].request";
    let msg = "Invalid value: \"nic\": must be the name of a request in the claim or the name of a \
               request and a subrequest separated by '/'";
    assert_eq!(
        s,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": format!("ResourceClaim.resource.k8s.io \"empty\" is invalid: {field}: {msg}"),
               "reason": "Invalid",
               "details": {"name": "empty", "group": "resource.k8s.io", "kind": "ResourceClaim",
                           "causes": [{"reason": "FieldValueInvalid", "message": msg, "field": field}]},
               "code": 422})
    );

    // A request needs a device class; a claim's status is not written on create.
    let r = c
        .post(
            CLAIMS,
            &claim("noclass", json!([{"name": "nic", "exactly": {}}])),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 422, "{}", r.json());
    assert_eq!(
        r.json()["details"]["causes"],
        json!([{"reason": "FieldValueRequired", "message": "Required value",
                "field": "spec.devices.requests[0].exactly.deviceClassName"}])
    );
    let mut valid = claim(
        "nic",
        json!([{"name": "nic", "exactly": {"deviceClassName": "nic.example.com"}}]),
    );
    valid["status"] = allocation["status"].clone();
    let r = c.post(CLAIMS, &valid).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.json());
    let created = r.json();
    assert!(created.get("status").is_none(), "{created}");
    assert_eq!(
        created["spec"]["devices"]["requests"][0]["exactly"],
        json!({"deviceClassName": "nic.example.com", "allocationMode": "ExactCount", "count": 1})
    );

    // The allocation goes through /status, once; the spec does not change.
    let r = c
        .patch(&format!("{CLAIMS}/nic/status"), MERGE, &allocation)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["status"], allocation["status"]);
    let moved = json!({"status": {"allocation": {"devices": {"results": [
        {"request": "nic", "driver": "nic.example.com", "pool": "pool0", "device": "vf1"}]}}}});
    let r = c
        .patch(&format!("{CLAIMS}/nic/status"), MERGE, &moved)
        .await
        .unwrap();
    assert_eq!(r.status, 422, "{}", r.json());
    assert_eq!(
        r.json()["details"]["causes"][0]["field"],
        "status.allocation"
    );
    let r = c
        .patch(
            &format!("{CLAIMS}/nic"),
            MERGE,
            &json!({"spec": {"devices": {"requests": [{"name": "other",
                     "exactly": {"deviceClassName": "nic.example.com"}}]}}}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 422, "{}", r.json());
    assert_eq!(r.json()["details"]["causes"][0]["field"], "spec");

    // A pod's claim status names one of its spec.resourceClaims.
    c.post(PODS, &pod("plain", "x", "n1")).await.unwrap();
    let mut with_claim = pod("claimer", "x", "n1");
    with_claim["spec"]["resourceClaims"] = json!([{"name": "nic", "resourceClaimName": "nic"}]);
    assert_eq!(c.post(PODS, &with_claim).await.unwrap().status, 201);
    let statuses =
        json!({"status": {"resourceClaimStatuses": [{"name": "nic", "resourceClaimName": "nic"}]}});
    let r = c
        .patch(&format!("{PODS}/plain/status"), MERGE, &statuses)
        .await
        .unwrap();
    assert_eq!(r.status, 422, "{}", r.json());
    assert_eq!(
        r.json()["details"]["causes"][0]["message"],
        "Invalid value: \"nic\": must match the name of an entry in `spec.resourceClaims`"
    );
    let r = c
        .patch(&format!("{PODS}/claimer/status"), MERGE, &statuses)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.json());

    // A template's claim is generated as `<pod>-<claim>`, checked against the pod's final (here
    // generated) name: 248 + 5 + "-nic" is more than a claim name may have. A claim named directly is
    // not affected.
    let mut long = pod("", "x", "n1");
    long["metadata"] = json!({"generateName": "g".repeat(248)});
    long["spec"]["resourceClaims"] = json!([{"name": "nic", "resourceClaimTemplateName": "t"}]);
    let r = c.post(PODS, &long).await.unwrap();
    assert_eq!(r.status, 422, "{}", r.json());
    let cause = &r.json()["details"]["causes"][0];
    assert_eq!(cause["field"], "spec.resourceClaims[0].name");
    assert!(
        cause["message"]
            .as_str()
            .unwrap()
            .ends_with("final ResourceClaim name: must be no more than 253 characters"),
        "{cause}"
    );
    long["spec"]["resourceClaims"] = json!([{"name": "nic", "resourceClaimName": "c"}]);
    assert_eq!(c.post(PODS, &long).await.unwrap().status, 201);
}

#[tokio::test]
async fn nads_need_their_crd() {
    let (server, c) = start().await;
    let nad = json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                     "metadata": {"name": "macvlan", "labels": {"net": "a"}},
                     "spec": {"config": "{\"cniVersion\":\"1.0.0\",\"type\":\"macvlan\"}"}});
    assert_eq!(c.get(NADS).await.unwrap().status, 404);
    assert_eq!(c.post(NADS, &nad).await.unwrap().status, 404);

    let crd = plexus_e2e::apiserver::resources::nad_crd();
    let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let r = c.post(crds, &crd).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(c.post(crds, &crd).await.unwrap().status, 409);
    server.install_nad_crd().unwrap();
    let got = c
        .get(&format!(
            "{crds}/network-attachment-definitions.k8s.cni.cncf.io"
        ))
        .await
        .unwrap()
        .json();
    assert_eq!(got["status"]["conditions"][1]["type"], "Established");

    let r = c.post(NADS, &nad).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.json());
    let list = c
        .get(&format!("{NADS}?labelSelector=net%3Da"))
        .await
        .unwrap()
        .json();
    assert_eq!(list["kind"], "NetworkAttachmentDefinitionList");
    assert_eq!(list["apiVersion"], "k8s.cni.cncf.io/v1");
    assert_eq!(names(&list), ["macvlan"]);
    let r = c
        .patch(
            &format!("{NADS}/macvlan"),
            MERGE,
            &json!({"spec": {"config": "{}", "junk": 1}}),
        )
        .await
        .unwrap();
    assert_eq!(
        r.json()["spec"],
        json!({"config": "{}"}),
        "unknown fields are pruned"
    );
    let r = c
        .patch(&format!("{NADS}/macvlan"), STRATEGIC, &json!({}))
        .await
        .unwrap();
    assert_eq!(
        r.status, 415,
        "no strategic merge patch for custom resources"
    );
    let mut bad = nad.clone();
    bad["metadata"]["name"] = json!("bad");
    bad["spec"]["config"] = json!({"type": "macvlan"});
    let r = c.post(NADS, &bad).await.unwrap();
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["details"]["causes"][0]["field"], "spec.config");

    // Discovery lists the group while the CRD exists.
    let groups = c.get("/apis").await.unwrap().json();
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "k8s.cni.cncf.io")
    );
    let res = c.get("/apis/k8s.cni.cncf.io/v1").await.unwrap().json();
    assert_eq!(
        res["resources"][0]["name"],
        "network-attachment-definitions"
    );

    let r = c.delete(&format!("{NADS}/macvlan")).await.unwrap();
    assert_eq!(r.status, 200);
    let r = c.get(&format!("{NADS}/macvlan")).await.unwrap().json();
    assert_eq!(
        r["message"],
        "network-attachment-definitions.k8s.cni.cncf.io \"macvlan\" not found"
    );
    assert_eq!(r["details"]["group"], "k8s.cni.cncf.io");

    let r = c
        .delete(&format!(
            "{crds}/network-attachment-definitions.k8s.cni.cncf.io"
        ))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(c.get(NADS).await.unwrap().status, 404);
}

/// Bulk set-up: many objects under one lock, listed in pages as a watch's initial list reads them; a bad
/// object stops the bulk create, and what came before it stays.
#[tokio::test]
async fn create_all_makes_many_nads_at_once() {
    let (server, c) = start().await;
    server.install_nad_crd().unwrap();
    let nad = |i: usize| {
        json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
               "metadata": {"name": format!("n{i:04}"), "namespace": "default"},
               "spec": {"config": "{\"cniVersion\":\"1.0.0\",\"type\":\"macvlan\"}"}})
    };
    assert_eq!(server.create_all((0..1200).map(nad)).unwrap(), 1200);
    let mut seen = Vec::new();
    let mut next = String::new();
    loop {
        let page = c
            .get(&format!("{NADS}?limit=500{next}"))
            .await
            .unwrap()
            .json();
        seen.extend(names(&page));
        match page["metadata"]["continue"].as_str() {
            Some(token) => next = format!("&continue={token}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 1200);
    assert_eq!((seen[0].as_str(), seen[1199].as_str()), ("n0000", "n1199"));
    let mut bad = nad(2000);
    bad["spec"]["config"] = json!({"type": "macvlan"});
    let err = server
        .create_all([nad(1500), bad, nad(1501)])
        .expect_err("spec.config must be a string");
    assert_eq!(err.code, 422, "{err:?}");
    assert_eq!(c.get(&format!("{NADS}/n1500")).await.unwrap().status, 200);
    assert_eq!(c.get(&format!("{NADS}/n1501")).await.unwrap().status, 404);
}

#[tokio::test]
async fn events_in_both_apis() {
    let (_server, c) = start().await;
    let ev = json!({"metadata": {"name": "p.1"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
                    "reason": "AddedInterface", "message": "net1 added", "type": "Normal",
                    "source": {"component": "plexus"}});
    let r = c
        .post("/api/v1/namespaces/default/events", &ev)
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    let v1 = c
        .get("/apis/events.k8s.io/v1/namespaces/default/events?fieldSelector=regarding.name%3Dp")
        .await
        .unwrap()
        .json();
    assert_eq!(v1["kind"], "EventList");
    assert_eq!(v1["items"][0]["note"], "net1 added");
    assert_eq!(v1["items"][0]["regarding"]["name"], "p");
    assert_eq!(v1["items"][0]["deprecatedSource"]["component"], "plexus");
    let new = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "p.2"},
                     "regarding": {"kind": "Pod", "name": "p"}, "note": "n", "reason": "R",
                     "reportingController": "plexus", "reportingInstance": "node1", "action": "Add",
                     "eventTime": "2026-01-01T00:00:00.000000Z", "type": "Warning"});
    assert_eq!(
        c.post("/apis/events.k8s.io/v1/namespaces/default/events", &new)
            .await
            .unwrap()
            .status,
        201
    );
    let core = c
        .get("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dp,type%3DWarning")
        .await
        .unwrap()
        .json();
    assert_eq!(names(&core), ["p.2"]);
    assert_eq!(core["items"][0]["message"], "n");
    assert_eq!(core["items"][0]["reportingComponent"], "plexus");
}

#[tokio::test]
async fn watch_streams_changes() {
    watch_streams_changes_on(false).await;
}

#[tokio::test]
async fn watch_streams_changes_over_http2() {
    watch_streams_changes_on(true).await;
}

async fn watch_streams_changes_on(h2: bool) {
    let (server, c) = start_on(h2).await;
    let start_rv = server.with_store(|s| s.resource_version());
    c.post(PODS, &pod("w1", "w", "n")).await.unwrap();

    // From a resourceVersion: history first.
    let url = format!("{PODS}?watch=true&resourceVersion={start_rv}&timeoutSeconds=1");
    let body = c.get(&url).await.unwrap();
    assert_eq!(body.status, 200);
    let events: Vec<Value> = body
        .body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "w1");

    // Live: a change made while the watch is open.
    let watcher = {
        let c = c.clone();
        tokio::spawn(async move {
            c.get(&format!(
                "{PODS}?watch=1&labelSelector=app%3Dw&timeoutSeconds=2"
            ))
            .await
            .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.patch(
        &format!("{PODS}/w1"),
        MERGE,
        &json!({"metadata": {"labels": {"app": "gone"}}}),
    )
    .await
    .unwrap();
    c.post(PODS, &pod("w2", "w", "n")).await.unwrap();
    let body = watcher.await.unwrap();
    let types: Vec<(String, String)> = body
        .body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice::<Value>(l).unwrap())
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    let expect = [("ADDED", "w1"), ("DELETED", "w1"), ("ADDED", "w2")]
        .map(|(a, b)| (a.to_string(), b.to_string()));
    assert_eq!(types, expect);
    assert_served(&server, h2);
}

#[tokio::test]
async fn fault_status_for_matching_requests_only() {
    fault_status_for_matching_requests_only_on(false).await;
}

#[tokio::test]
async fn fault_status_for_matching_requests_only_over_http2() {
    fault_status_for_matching_requests_only_on(true).await;
}

async fn fault_status_for_matching_requests_only_on(h2: bool) {
    let (server, c) = start_on(h2).await;
    c.post(PODS, &pod("x", "a", "n")).await.unwrap();
    c.post(PODS, &pod("y", "a", "n")).await.unwrap();
    let status = format!("{PODS}/x/status");
    server.inject(
        FaultSpec::status(503)
            .on("PATCH", "/pods/x/status")
            .times(2)
            .retry_after(7),
    );

    let patch = json!({"status": {"podIP": "1.2.3.4"}});
    assert_eq!(
        c.get(&status).await.unwrap().status,
        200,
        "GET does not match"
    );
    assert_eq!(
        c.patch(&format!("{PODS}/y/status"), MERGE, &patch)
            .await
            .unwrap()
            .status,
        200
    );
    for _ in 0..2 {
        let r = c.patch(&status, MERGE, &patch).await.unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.headers["retry-after"], "7");
        assert_eq!(r.json()["reason"], "ServiceUnavailable");
        assert_eq!(r.json()["details"]["retryAfterSeconds"], 7);
    }
    assert_eq!(c.patch(&status, MERGE, &patch).await.unwrap().status, 200);
    assert!(server.faults().list().is_empty());

    server.inject(FaultSpec::status(429).times(1));
    let r = c.get(PODS).await.unwrap();
    assert_eq!(
        (r.status, r.json()["reason"].as_str()),
        (429, Some("TooManyRequests"))
    );
    assert_eq!(r.headers["retry-after"], "1");
    server.inject(FaultSpec::status(409).path("/pods/y").times(1));
    assert_eq!(
        c.get(&format!("{PODS}/y")).await.unwrap().json()["reason"],
        "Conflict"
    );
    server.inject(FaultSpec::status(500).times(1));
    assert_eq!(c.get(PODS).await.unwrap().json()["reason"], "InternalError");
    assert_eq!(c.get(PODS).await.unwrap().status, 200);
    assert_eq!(server.count_requests("PATCH", "/pods/x/status"), 3);
    assert_eq!(
        server
            .requests()
            .iter()
            .filter(|r| r.fault.as_deref() == Some("status"))
            .count(),
        5
    );
    assert_served(&server, h2);
}

#[tokio::test]
async fn fault_latency_drop_and_down() {
    fault_latency_drop_and_down_on(false).await;
}

#[tokio::test]
async fn fault_latency_drop_and_down_over_http2() {
    fault_latency_drop_and_down_on(true).await;
}

async fn fault_latency_drop_and_down_on(h2: bool) {
    let (server, c) = start_on(h2).await;
    let id = server.inject(FaultSpec::latency(300).on("GET", "/namespaces/default/pods"));
    let t = Instant::now();
    assert_eq!(c.get(PODS).await.unwrap().status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    let t = Instant::now();
    c.get("/api/v1/namespaces").await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(300));
    assert!(server.faults().remove(id));

    server.inject(FaultSpec::drop_connection().on("GET", "/pods").times(1));
    assert!(
        c.get(PODS).await.is_err(),
        "the connection closes without an answer"
    );
    assert_eq!(c.get(PODS).await.unwrap().status, 200);

    server.faults().set_down(true, None);
    assert!(c.get(PODS).await.is_err());
    assert!(c.get("/api/v1/namespaces").await.is_err());
    server.faults().set_down(false, None);
    assert_eq!(c.get(PODS).await.unwrap().status, 200);

    let logged: Vec<_> = server
        .requests()
        .into_iter()
        .map(|r| (r.status, r.fault))
        .collect();
    assert_eq!(logged[0], (200, Some("latency".to_string())));
    assert_eq!(logged[2], (0, Some("drop".to_string())));
    assert_eq!(logged[4], (0, Some("down".to_string())));
    assert_served(&server, h2);
}

#[tokio::test]
async fn faults_and_log_over_http() {
    faults_and_log_over_http_on(false).await;
}

#[tokio::test]
async fn faults_and_log_over_http_over_http2() {
    faults_and_log_over_http_on(true).await;
}

async fn faults_and_log_over_http_on(h2: bool) {
    let (server, c) = start_on(h2).await;
    let r = c
        .post(
            "/standin/faults",
            &json!({"method": "GET", "path": "/pods", "status": 503, "count": 1}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_u64().unwrap();
    let listed = c.get("/standin/faults").await.unwrap().json();
    assert_eq!(listed["faults"][0]["id"], id);
    assert_eq!(listed["faults"][0]["status"], 503);
    assert_eq!(c.get(PODS).await.unwrap().status, 503);
    assert_eq!(c.get(PODS).await.unwrap().status, 200);
    assert_eq!(
        c.post("/standin/faults", &json!({"bogus": true}))
            .await
            .unwrap()
            .status,
        400
    );
    assert_eq!(
        c.post("/standin/faults", &json!({"path": "/x"}))
            .await
            .unwrap()
            .status,
        400
    );

    let r = c
        .post("/standin/faults", &json!({"latencyMs": 1}))
        .await
        .unwrap();
    let id = r.json()["id"].as_u64().unwrap();
    assert_eq!(
        c.delete(&format!("/standin/faults/{id}"))
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        c.delete(&format!("/standin/faults/{id}"))
            .await
            .unwrap()
            .status,
        404
    );

    // Down over HTTP: API requests drop, /standin/ still answers, and it can be lifted.
    c.post("/standin/faults", &json!({"down": true}))
        .await
        .unwrap();
    assert!(c.get(PODS).await.is_err());
    assert_eq!(c.get("/standin/faults").await.unwrap().json()["down"], true);
    c.delete("/standin/faults").await.unwrap();
    assert_eq!(c.get(PODS).await.unwrap().status, 200);
    c.post("/standin/faults", &json!({"down": true, "forMs": 200}))
        .await
        .unwrap();
    assert!(c.get(PODS).await.is_err());
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(c.get(PODS).await.unwrap().status, 200);

    let log = c
        .get("/standin/requests?method=GET&path=/pods")
        .await
        .unwrap()
        .json();
    let statuses: Vec<u64> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [503, 200, 0, 200, 0, 200]);
    assert_eq!(log[0]["method"], "GET");
    assert_eq!(log[0]["path"], PODS);
    assert!(log[0]["time"].as_str().is_some());
    assert_eq!(server.count_requests("GET", PODS), 6);
    assert_eq!(
        c.delete("/standin/requests").await.unwrap().json()["cleared"],
        6
    );
    assert!(server.requests().is_empty());
    c.get(&format!("{PODS}?limit=1")).await.unwrap();
    assert_eq!(server.requests()[0].query, "limit=1");
    assert_served(&server, h2);
}

#[tokio::test]
async fn kubeconfig_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    let server = ApiServer::start(Config {
        kubeconfig: Some(path.clone()),
        ..Config::default()
    })
    .await
    .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let v: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(v["apiVersion"], "v1");
    assert_eq!(v["kind"], "Config");
    assert_eq!(v["current-context"], "plexus-standin");
    let cluster = &v["clusters"][0]["cluster"];
    assert_eq!(cluster["server"], server.url());
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(cluster["certificate-authority-data"].as_str().unwrap())
        .unwrap();
    assert_eq!(String::from_utf8(ca).unwrap(), server.ca_pem());
    assert_eq!(v["users"][0]["user"]["token"], server.token());
    assert_eq!(v["contexts"][0]["context"]["cluster"], "plexus-standin");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A client trusting only the written CA, and that CA for "localhost" too.
    let c = Client::new(
        &server.url().replace("127.0.0.1", "localhost"),
        &String::from_utf8_lossy(
            &base64::engine::general_purpose::STANDARD
                .decode(cluster["certificate-authority-data"].as_str().unwrap())
                .unwrap(),
        ),
        Some(server.token()),
    )
    .unwrap();
    assert_eq!(
        c.get("/api/v1/namespaces/default").await.unwrap().status,
        200
    );
}

#[tokio::test]
async fn discovery_and_version() {
    let (_server, c) = start().await;
    let v = c.get("/version").await.unwrap().json();
    assert_eq!(v["major"], "1");
    let api = c.get("/api").await.unwrap().json();
    assert_eq!(api["versions"], json!(["v1"]));
    let core = c.get("/api/v1").await.unwrap().json();
    let names: Vec<&str> = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"pods") && names.contains(&"pods/status") && names.contains(&"namespaces")
    );
    let g = c.get("/apis/events.k8s.io").await.unwrap().json();
    assert_eq!(g["preferredVersion"]["groupVersion"], "events.k8s.io/v1");
    assert_eq!(c.get("/apis/nope/v1").await.unwrap().status, 404);
    let index = c.get("/openapi/v3").await.unwrap().json();
    let url = index["paths"]["api/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap();
    assert!(url.starts_with("/openapi/v3/api/v1?hash="), "{url}");
    let doc = c.get(url).await.unwrap().json();
    let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/status"]["patch"];
    assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Pod");
    assert!(
        patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation")
    );
    // Nodes are served (tokens are bound to them); a type the stand-in does not keep is not.
    assert_eq!(
        c.get("/api/v1/nodes").await.unwrap().json()["kind"],
        "NodeList"
    );
    assert_eq!(c.get("/api/v1/configmaps").await.unwrap().status, 404);
}

#[tokio::test]
async fn alpn_picks_http2_unless_the_server_is_http1_only() {
    let (server, c) = start().await;
    let h2 = c.with_http2(true);
    assert_eq!(h2.get(PODS).await.unwrap().version, Version::HTTP_2);
    assert_eq!(c.get(PODS).await.unwrap().version, Version::HTTP_11);
    let counts = c.get("/standin/connections").await.unwrap().json();
    // start()'s /version, the two GETs, and this one.
    assert_eq!(counts, json!({"accepted": 4, "http1": 3, "http2": 1}));
    assert_eq!(server.connections().http2, 1);
    assert_eq!(
        server.count_requests("GET", PODS),
        2,
        "both protocols are logged"
    );

    let old = ApiServer::start(Config {
        http1_only: true,
        ..Config::default()
    })
    .await
    .unwrap();
    let r = old.client().with_http2(true).get(PODS).await.unwrap();
    assert_eq!((r.status, r.version), (200, Version::HTTP_11));
    assert_eq!(old.connections().http2, 0);
}

#[tokio::test]
async fn http2_requests_share_a_connection_and_a_drop_resets_only_its_own() {
    let (server, c) = start_on(true).await;
    c.post(PODS, &pod("x", "a", "n")).await.unwrap();
    // One HTTP/2 connection, several requests at once, as plexus makes them; the stand-in's own client
    // opens a connection per request, so kube's hyper client is used here through plexus's transport.
    let kc = server.kubeconfig();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, kc).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = plexus::seams::k8s::transport::client(&config).unwrap();
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client, "default");
    pods.get("x").await.unwrap();
    let before = server.connections();
    server.inject(FaultSpec::latency(300).on("GET", "/pods/x"));
    server.inject(
        FaultSpec::drop_connection()
            .on("GET", "/pods/gone")
            .times(1),
    );
    let (slow, dropped, other) = tokio::join!(pods.get("x"), pods.get("gone"), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        pods.get_opt("y").await
    });
    assert!(dropped.is_err(), "the dropped request fails");
    assert_eq!(
        slow.unwrap().metadata.name.as_deref(),
        Some("x"),
        "held, then answered"
    );
    assert!(
        other.unwrap().is_none(),
        "a request after the drop on the same connection"
    );
    assert_eq!(
        server.connections(),
        before,
        "no new connection: {before:?}"
    );
    let drops: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.fault.as_deref() == Some("drop"))
        .map(|r| (r.path, r.status))
        .collect();
    assert_eq!(
        drops,
        [("/api/v1/namespaces/default/pods/gone".to_string(), 0)]
    );
}
