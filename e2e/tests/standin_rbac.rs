//! The stand-in's ServiceAccount tokens (TokenRequest) and RBAC, over real HTTPS and through kube-rs:
//! deploy/clusterrole.yaml bound to a ServiceAccount allows exactly plexus's calls, and anything else gets
//! the real server's 403.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{Pod, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use plexus_e2e::apiserver::{ApiServer, Client, Config};
use serde_json::{Value, json};

const MERGE: &str = "application/merge-patch+json";
const NS: &str = "team";
const SA_USER: &str = "system:serviceaccount:team:plexus";
const PODS: &str = "/api/v1/namespaces/team/pods";
const CLUSTER_ROLE_YAML: &str = include_str!("../../deploy/clusterrole.yaml");
const TOKEN_ROLE_YAML: &str = include_str!("../../deploy/role-host-token.yaml");

fn deploy_cluster_role() -> Value {
    serde_saphyr::from_str(CLUSTER_ROLE_YAML).expect("deploy/clusterrole.yaml parses")
}

fn binding(name: &str, role: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "plexus", "namespace": NS}],
    })
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
}

/// A stand-in with namespace `team`, ServiceAccount `team/plexus` and pod `team/web`.
async fn start() -> (ApiServer, Client) {
    let server = ApiServer::start(Config {
        nad_crd: true,
        ..Config::default()
    })
    .await
    .expect("start");
    let admin = server.client();
    for (path, body) in [
        (
            "/api/v1/namespaces".to_string(),
            json!({"metadata": {"name": NS}}),
        ),
        (
            format!("/api/v1/namespaces/{NS}/serviceaccounts"),
            json!({"metadata": {"name": "plexus"}}),
        ),
        (PODS.to_string(), pod("web")),
    ] {
        let r = admin.post(&path, &body).await.unwrap();
        assert_eq!(r.status, 201, "{path}: {}", r.json());
    }
    (server, admin)
}

async fn token(admin: &Client, sa: &str, body: Value) -> (u16, Value) {
    let r = admin
        .post(
            &format!("/api/v1/namespaces/{NS}/serviceaccounts/{sa}/token"),
            &body,
        )
        .await
        .unwrap();
    (r.status, r.json())
}

fn token_request(seconds: i64) -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
           "spec": {"expirationSeconds": seconds}})
}

fn assert_forbidden(r: &plexus_e2e::apiserver::client::Reply, message: &str) {
    assert_eq!(r.status, 403, "{}", r.json());
    let s = r.json();
    assert_eq!(s["kind"], "Status");
    assert_eq!(s["apiVersion"], "v1");
    assert_eq!(s["status"], "Failure");
    assert_eq!(s["reason"], "Forbidden");
    assert_eq!(s["code"], 403);
    assert_eq!(s["message"], message);
}

#[tokio::test]
async fn token_request_mints_a_service_account_token() {
    let (server, admin) = start().await;

    // Validation, like the real server.
    let (code, s) = token(&admin, "plexus", token_request(599)).await;
    assert_eq!(code, 422, "{s}");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("may not specify a duration less than 10 minutes"),
        "{s}"
    );
    let (code, s) = token(&admin, "ghost", token_request(600)).await;
    assert_eq!(
        (code, s["message"].as_str()),
        (404, Some("serviceaccounts \"ghost\" not found"))
    );
    let r = admin
        .get(&format!(
            "/api/v1/namespaces/{NS}/serviceaccounts/plexus/token"
        ))
        .await
        .unwrap();
    assert_eq!(r.status, 405);

    let (code, tr) = token(&admin, "plexus", token_request(600)).await;
    assert_eq!(code, 201, "{tr}");
    assert_eq!(tr["kind"], "TokenRequest");
    assert_eq!(tr["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(tr["metadata"]["name"], "plexus");
    assert_eq!(tr["spec"]["expirationSeconds"], 600);
    assert_eq!(
        tr["spec"]["audiences"],
        json!(["https://kubernetes.default.svc.cluster.local"])
    );
    assert!(
        tr["status"]["expirationTimestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let t = tr["status"]["token"].as_str().unwrap().to_string();
    // JWT-shaped, with the claims a real bound token has.
    let parts: Vec<&str> = t.split('.').collect();
    assert_eq!(parts.len(), 3, "{t}");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["sub"], SA_USER);
    assert_eq!(claims["kubernetes.io"]["namespace"], NS);
    assert_eq!(claims["kubernetes.io"]["serviceaccount"]["name"], "plexus");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        600
    );

    // The token authenticates as the ServiceAccount: discovery is open to it, resources are not.
    let sa = admin.with_token(Some(&t));
    assert_eq!(sa.get("/api/v1").await.unwrap().status, 200);
    assert_eq!(sa.get("/version").await.unwrap().status, 200);
    let r = sa.get(&format!("{PODS}/web")).await.unwrap();
    assert_forbidden(
        &r,
        &format!(
            "pods \"web\" is forbidden: User \"{SA_USER}\" cannot get resource \"pods\" in API group \"\" \
             in the namespace \"{NS}\""
        ),
    );
    assert_eq!(r.json()["details"], json!({"name": "web", "kind": "pods"}));
    // Authorization comes before existence: a pod that does not exist is forbidden too, not 404.
    assert_eq!(sa.get(&format!("{PODS}/nope")).await.unwrap().status, 403);
    let (last, user) = server.requests_by_user().pop().unwrap();
    assert_eq!((last.status, user.as_deref()), (403, Some(SA_USER)));
    let over_http = admin
        .get("/standin/requests?path=/pods/nope")
        .await
        .unwrap()
        .json();
    assert_eq!(over_http[0]["user"], SA_USER);
    // The control endpoints take the bootstrap token only.
    assert_eq!(sa.get("/standin/requests").await.unwrap().status, 401);

    // A token for another audience is not for the API server.
    let mut other = token_request(600);
    other["spec"]["audiences"] = json!(["vault"]);
    let (code, tr) = token(&admin, "plexus", other).await;
    assert_eq!(code, 201);
    let vault = admin.with_token(tr["status"]["token"].as_str());
    assert_eq!(vault.get("/api/v1").await.unwrap().status, 401);

    // A token dies with its ServiceAccount, even when one of the same name comes back.
    let sa_path = format!("/api/v1/namespaces/{NS}/serviceaccounts/plexus");
    assert_eq!(admin.delete(&sa_path).await.unwrap().status, 200);
    assert_eq!(sa.get("/api/v1").await.unwrap().status, 401);
    let r = admin
        .post(
            &format!("/api/v1/namespaces/{NS}/serviceaccounts"),
            &json!({"metadata": {"name": "plexus"}}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(sa.get("/api/v1").await.unwrap().status, 401);
}

/// The JWT claims of `token` (its middle part).
fn claims_of(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn bound_request(kind: &str, api_version: &str, name: &str, uid: Option<&str>) -> Value {
    let mut r = token_request(600);
    r["spec"]["boundObjectRef"] = json!({"kind": kind, "apiVersion": api_version, "name": name});
    if let Some(uid) = uid {
        r["spec"]["boundObjectRef"]["uid"] = json!(uid);
    }
    r
}

/// `spec.boundObjectRef`, as a real server checks it, and the bound token's life: a Pod's token dies with
/// the pod (what restarting the installer's pod does to the host's kubeconfig when it holds the pod's
/// token), a Node's with the Node. deploy's Role lets plexus's own token ask for Node-bound tokens of
/// itself, and of no other ServiceAccount.
#[tokio::test]
async fn bound_tokens_live_as_long_as_their_pod_or_node() {
    let (_server, admin) = start().await;
    let r = admin
        .post("/api/v1/nodes", &json!({"metadata": {"name": "node-1"}}))
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.json());
    let node_uid = r.json()["metadata"]["uid"].as_str().unwrap().to_string();
    let mut installer = pod("installer");
    installer["spec"]["serviceAccountName"] = json!("plexus");
    installer["spec"]["nodeName"] = json!("node-1");
    let r = admin.post(PODS, &installer).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.json());
    let pod_uid = r.json()["metadata"]["uid"].as_str().unwrap().to_string();

    // What a real server refuses.
    for (body, code, message) in [
        (
            bound_request("Deployment", "apps/v1", "x", None),
            400,
            "cannot bind token to object of type apps/v1, Kind=Deployment",
        ),
        (
            bound_request("ConfigMap", "v1", "x", None),
            400,
            "cannot bind token to object of type /v1, Kind=ConfigMap",
        ),
        (
            bound_request("Node", "v1", "ghost", None),
            404,
            "nodes \"ghost\" not found",
        ),
        (
            bound_request("Pod", "v1", "ghost", None),
            404,
            "pods \"ghost\" not found",
        ),
        (
            bound_request("Secret", "v1", "s", None),
            404,
            "secrets \"s\" not found",
        ),
        (
            bound_request("Pod", "v1", "web", None),
            400,
            "cannot bind token for serviceaccount \"plexus\" to pod running with different serviceaccount name.",
        ),
        (
            bound_request("Node", "v1", "node-1", Some("not-its-uid")),
            409,
            "Operation cannot be fulfilled on Node \"node-1\": the UID in the bound object reference \
             (not-its-uid) does not match the UID in record. The object might have been deleted and then recreated",
        ),
    ] {
        let (got, s) = token(&admin, "plexus", body).await;
        assert_eq!((got, s["message"].as_str()), (code, Some(message)), "{s}");
    }

    // The installer pod's own token: its claims name the pod and its node.
    let (code, tr) = token(
        &admin,
        "plexus",
        bound_request("Pod", "v1", "installer", Some(&pod_uid)),
    )
    .await;
    assert_eq!(code, 201, "{tr}");
    let pod_token = tr["status"]["token"].as_str().unwrap().to_string();
    let k = &claims_of(&pod_token)["kubernetes.io"];
    assert_eq!(k["pod"], json!({"name": "installer", "uid": pod_uid}));
    assert_eq!(k["node"], json!({"name": "node-1", "uid": node_uid}));
    let as_pod = admin.with_token(Some(&pod_token));
    assert_eq!(as_pod.get("/api/v1").await.unwrap().status, 200);

    // deploy's Role, in this namespace: the pod's token may ask for Node-bound tokens of plexus only.
    let mut role: Value = serde_saphyr::from_str(TOKEN_ROLE_YAML).unwrap();
    role["metadata"]["namespace"] = json!(NS);
    let roles = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles");
    let r = admin.post(&roles, &role).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.json());
    let rb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": "plexus-host-token"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]},
                    "subjects": [{"kind": "ServiceAccount", "name": "plexus"}]});
    let r = admin
        .post(
            &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings"),
            &rb,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.json());
    let (code, tr) = token(
        &as_pod,
        "plexus",
        bound_request("Node", "v1", "node-1", None),
    )
    .await;
    assert_eq!(code, 201, "{tr}");
    let (code, _) = token(
        &as_pod,
        "default",
        bound_request("Node", "v1", "node-1", None),
    )
    .await;
    assert_eq!(code, 403, "tokens of its own ServiceAccount only");
    let node_token = tr["status"]["token"].as_str().unwrap().to_string();
    let k = &claims_of(&node_token)["kubernetes.io"];
    assert_eq!(k["node"], json!({"name": "node-1", "uid": node_uid}));
    assert!(k.get("pod").is_none(), "{k}");
    let as_node = admin.with_token(Some(&node_token));

    // Deleting the pod revokes its token, even when a pod of the same name comes back; the Node's lives on.
    assert_eq!(
        admin
            .delete(&format!("{PODS}/installer"))
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(as_pod.get("/api/v1").await.unwrap().status, 401);
    let r = admin.post(PODS, &installer).await.unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(as_pod.get("/api/v1").await.unwrap().status, 401);
    assert_eq!(as_node.get("/api/v1").await.unwrap().status, 200);
    let (code, _) = token(
        &as_node,
        "plexus",
        bound_request("Node", "v1", "node-1", None),
    )
    .await;
    assert_eq!(code, 201, "the Node's token renews itself");

    // Deleting the Node revokes its tokens.
    assert_eq!(
        admin.delete("/api/v1/nodes/node-1").await.unwrap().status,
        200
    );
    assert_eq!(as_node.get("/api/v1").await.unwrap().status, 401);
}

#[tokio::test]
async fn deploy_cluster_role_allows_exactly_plexus_calls() {
    let (_server, admin) = start().await;
    let (_, tr) = token(&admin, "plexus", token_request(600)).await;
    let sa = admin.with_token(tr["status"]["token"].as_str());

    // RBAC objects are ordinary objects: created, read and listed through the API.
    let r = admin
        .post(
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            &deploy_cluster_role(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.json());
    let r = admin
        .post(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            &binding("plexus-e2e", "plexus"),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.json());
    let list = admin
        .get("/apis/rbac.authorization.k8s.io/v1/clusterroles")
        .await
        .unwrap()
        .json();
    assert_eq!(list["kind"], "ClusterRoleList");
    assert_eq!(
        list["items"][0]["rules"][1]["resources"],
        json!(["pods/status"])
    );
    let groups = admin.get("/apis").await.unwrap().json();
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "rbac.authorization.k8s.io")
    );

    // What plexus does: get the pod, get NADs by name, patch pods/status, create events.
    assert_eq!(sa.get(&format!("{PODS}/web")).await.unwrap().status, 200);
    let nads = format!("/apis/k8s.cni.cncf.io/v1/namespaces/{NS}/network-attachment-definitions");
    assert_eq!(
        sa.get(&format!("{nads}/n")).await.unwrap().status,
        404,
        "allowed, absent"
    );
    let patch = json!({"metadata": {"annotations": {"k8s.v1.cni.cncf.io/network-status": "[]"}}});
    let r = sa
        .patch(&format!("{PODS}/web/status"), MERGE, &patch)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.json());
    let event = json!({"metadata": {"generateName": "web."}, "involvedObject": {"kind": "Pod", "name": "web"},
                       "reason": "AddedInterface", "type": "Normal", "message": "m"});
    let r = sa
        .post(&format!("/api/v1/namespaces/{NS}/events"), &event)
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.json());

    // Nothing more.
    let refused = |verb: &str, resource: &str, group: &str, scope: &str| {
        format!(
            "User \"{SA_USER}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" {scope}"
        )
    };
    let here = format!("in the namespace \"{NS}\"");
    let r = sa
        .patch(&format!("{PODS}/web"), MERGE, &patch)
        .await
        .unwrap();
    assert_forbidden(
        &r,
        &format!(
            "pods \"web\" is forbidden: {}",
            refused("patch", "pods", "", &here)
        ),
    );
    let r = sa
        .put(&format!("{PODS}/web/status"), &pod("web"))
        .await
        .unwrap();
    assert_forbidden(
        &r,
        &format!(
            "pods \"web\" is forbidden: {}",
            refused("update", "pods/status", "", &here)
        ),
    );
    let r = sa.get(PODS).await.unwrap();
    assert_forbidden(
        &r,
        &format!("pods is forbidden: {}", refused("list", "pods", "", &here)),
    );
    let r = sa.get(&format!("{PODS}?watch=true")).await.unwrap();
    assert_forbidden(
        &r,
        &format!("pods is forbidden: {}", refused("watch", "pods", "", &here)),
    );
    let r = sa.delete(&format!("{PODS}/web")).await.unwrap();
    assert_forbidden(
        &r,
        &format!(
            "pods \"web\" is forbidden: {}",
            refused("delete", "pods", "", &here)
        ),
    );
    let r = sa.get(&nads).await.unwrap();
    assert_forbidden(
        &r,
        &format!(
            "network-attachment-definitions.k8s.cni.cncf.io is forbidden: {}",
            refused(
                "list",
                "network-attachment-definitions",
                "k8s.cni.cncf.io",
                &here
            )
        ),
    );
    let r = sa
        .post(
            &format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 403, "the events.k8s.io API is another group");
    let r = sa.get("/api/v1/namespaces").await.unwrap();
    assert_forbidden(
        &r,
        &format!(
            "namespaces is forbidden: {}",
            refused("list", "namespaces", "", "at the cluster scope")
        ),
    );
    let r = sa.get(&format!("/api/v1/namespaces/{NS}")).await.unwrap();
    assert_forbidden(
        &r,
        &format!(
            "namespaces \"{NS}\" is forbidden: {}",
            refused("get", "namespaces", "", &here)
        ),
    );
    let (code, _) = {
        let r = sa
            .post(
                &format!("/api/v1/namespaces/{NS}/serviceaccounts/plexus/token"),
                &token_request(600),
            )
            .await
            .unwrap();
        (r.status, r.json())
    };
    assert_eq!(code, 403, "no token for itself");
    let r = sa
        .post(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            &binding("mine", "cluster-admin"),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 403, "no binding for itself");

    // Without the binding, nothing at all; a RoleBinding to the same ClusterRole gives it back in its
    // namespace only.
    let r = admin
        .delete("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/plexus-e2e")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(sa.get(&format!("{PODS}/web")).await.unwrap().status, 403);
    let mut rb = binding("plexus", "plexus");
    rb["kind"] = json!("RoleBinding");
    rb["subjects"][0]
        .as_object_mut()
        .unwrap()
        .remove("namespace");
    let r = admin
        .post(
            &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings"),
            &rb,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(sa.get(&format!("{PODS}/web")).await.unwrap().status, 200);
    assert_eq!(
        sa.get("/api/v1/namespaces/default/pods/x")
            .await
            .unwrap()
            .status,
        403
    );

    // Validation of RBAC objects.
    let mut bad = deploy_cluster_role();
    bad["metadata"]["name"] = json!("bad");
    bad["rules"][0]["verbs"] = json!([]);
    let r = admin
        .post("/apis/rbac.authorization.k8s.io/v1/clusterroles", &bad)
        .await
        .unwrap();
    assert_eq!(r.status, 422, "{}", r.json());
    assert_eq!(
        r.json()["message"],
        "ClusterRole.rbac.authorization.k8s.io \"bad\" is invalid: rules[0].verbs: Required value: \
         verbs must contain at least one value"
    );
}

#[tokio::test]
async fn kube_rs_requests_a_token_and_sees_forbidden() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    let server = ApiServer::start(Config {
        kubeconfig: Some(path.clone()),
        nad_crd: true,
        ..Config::default()
    })
    .await
    .unwrap();
    let client_for = |kc: Kubeconfig| async move {
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    };
    let admin = client_for(Kubeconfig::read_from(&path).unwrap()).await;

    // Typed RBAC objects, the ClusterRole straight from deploy/.
    let role: ClusterRole = serde_saphyr::from_str(CLUSTER_ROLE_YAML).unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let mut b = binding("plexus-e2e", "plexus");
    b["subjects"][0]["namespace"] = json!("default");
    let crb: ClusterRoleBinding = serde_json::from_value(b).unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &crb)
        .await
        .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "plexus"}})).unwrap(),
    )
    .await
    .unwrap();
    let tr = sas
        .create_token_request(
            "plexus",
            &PostParams::default(),
            &TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(600),
                    ..TokenRequestSpec::default()
                }),
                ..TokenRequest::default()
            },
        )
        .await
        .unwrap();
    let token = tr.status.and_then(|s| s.token).unwrap();
    let pods: Api<Pod> = Api::default_namespaced(admin.clone());
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod("web")).unwrap(),
    )
    .await
    .unwrap();

    // The same kubeconfig with the token instead.
    let mut kc: Value = serde_saphyr::from_str(&server.kubeconfig()).unwrap();
    kc["users"][0]["user"] = json!({"token": token});
    let sa = client_for(serde_json::from_value(kc).unwrap()).await;
    let pods: Api<Pod> = Api::default_namespaced(sa.clone());
    pods.get("web").await.unwrap();
    let patch = json!({"metadata": {"annotations": {"k8s.v1.cni.cncf.io/network-status": "[]"}}});
    pods.patch_status("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let nads: Api<DynamicObject> = Api::default_namespaced_with(
        sa.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition"),
            "network-attachment-definitions",
        ),
    );
    assert!(nads.get_opt("n").await.unwrap().is_none());
    match pods.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
            assert_eq!(
                s.message,
                "pods is forbidden: User \"system:serviceaccount:default:plexus\" cannot list resource \
                 \"pods\" in API group \"\" in the namespace \"default\""
            );
        }
        other => panic!("LIST must be forbidden: {other:?}"),
    }
    match pods
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{}", s.message),
        other => panic!("PATCH of the pod itself must be forbidden: {other:?}"),
    }
}
