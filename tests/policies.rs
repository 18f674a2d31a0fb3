//! deploy/admission-policies.yaml (SECURITY.md, "Admission policies"): its ValidatingAdmissionPolicies are
//! evaluated as shipped, with a CEL interpreter (the `cel` crate), in the order the API server applies them:
//! matchConstraints, matchConditions, variables, then every validation (a false one refuses the request with
//! its message or messageExpression). An evaluation error fails the test: the policies must refuse a request
//! they cannot judge with a message, never error.
//!
//! plexus's own requests, built by plexus's code (the network-status merge patch applied to a pod, its
//! events), and a token bound to the caller's own Node pass; a write to another node's pod, to anything of a
//! pod but network-status, an event about anything but a pod or outside the pod's namespace, a token bound
//! elsewhere or to nothing, and every request from a credential that names no node are refused; other
//! users are never matched.

use std::{collections::HashMap, fs, path::PathBuf};

use cel::{Context, Program, Value as Cel};
use k8s_openapi::api::{
    admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
    core::v1::ServiceAccount,
};
use plexus::{
    pure::{annotations::NETWORK_STATUS_ANNOTATION, request::PodRef},
    seams::k8s::{client::DeferredStatus, events},
};
use serde_json::{Value, json};

const FILE: &str = "deploy/admission-policies.yaml";
/// The user-info key the API server fills from a pod- or Node-bound service-account token.
const NODE_NAME: &str = "authentication.kubernetes.io/node-name";
const NODE: &str = "node-a";
const OTHER_NODE: &str = "node-b";
const NS: &str = "team-a";
const POD: &str = "web";
const POD_UID: &str = "6f1c2a1e-0000-4000-8000-000000000001";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn documents(rel: &str) -> Vec<Value> {
    let text = fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{rel}: not YAML: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// plexus's user name, from deploy/serviceaccount.yaml.
fn plexus_user() -> String {
    let docs = documents("deploy/serviceaccount.yaml");
    let sa: ServiceAccount = serde_json::from_value(docs[0].clone()).unwrap();
    format!(
        "system:serviceaccount:{}:{}",
        sa.metadata.namespace.unwrap(),
        sa.metadata.name.unwrap()
    )
}

fn policies() -> Vec<ValidatingAdmissionPolicy> {
    documents(FILE)
        .into_iter()
        .filter(|d| d["kind"] == "ValidatingAdmissionPolicy")
        .map(|d| serde_json::from_value(d).unwrap())
        .collect()
}

fn bindings() -> Vec<ValidatingAdmissionPolicyBinding> {
    documents(FILE)
        .into_iter()
        .filter(|d| d["kind"] == "ValidatingAdmissionPolicyBinding")
        .map(|d| serde_json::from_value(d).unwrap())
        .collect()
}

fn policy(name: &str) -> ValidatingAdmissionPolicy {
    policies()
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{FILE} has no policy {name}"))
}

/// One admission request: what the API server binds to `request`, `object` and `oldObject`.
struct Request {
    operation: &'static str,
    /// The resource with its subresource, as a policy's rules name it (`pods/status`).
    resource: &'static str,
    namespace: String,
    name: String,
    user: Value,
    object: Value,
    old_object: Value,
}

impl Request {
    /// `request` as the API server builds it (an AdmissionRequest converted to JSON, empty fields left out,
    /// so a user without extra info has no `extra` key).
    fn request(&self) -> Value {
        let (resource, sub) = self.resource.split_once('/').unwrap_or((self.resource, ""));
        let mut r = json!({
            "kind": {"group": "", "version": "v1", "kind": ""},
            "resource": {"group": "", "version": "v1", "resource": resource},
            "requestKind": {"group": "", "version": "v1", "kind": ""},
            "requestResource": {"group": "", "version": "v1", "resource": resource},
            "name": self.name,
            "operation": self.operation,
            "userInfo": self.user,
            "dryRun": false,
        });
        if !sub.is_empty() {
            r["subResource"] = sub.into();
            r["requestSubResource"] = sub.into();
        }
        if !self.namespace.is_empty() {
            r["namespace"] = self.namespace.clone().into();
        }
        r
    }
}

#[derive(Debug, PartialEq)]
enum Outcome {
    /// The policy does not apply to the request.
    NotMatched,
    Allowed,
    /// Refused, with the message of each failed validation.
    Denied(Vec<String>),
}

impl Outcome {
    /// The messages of a refusal of `what`.
    fn denied(&self, what: &str) -> &[String] {
        match self {
            Outcome::Denied(m) => m,
            other => panic!("{what}: expected a refusal, got {other:?}"),
        }
    }
}

fn eval(expr: &str, ctx: &Context, what: &str) -> Cel {
    let program = Program::compile(expr).unwrap_or_else(|e| panic!("{what}: does not parse: {e}"));
    program
        .execute(ctx)
        .unwrap_or_else(|e| panic!("{what}: evaluation error (the API server would refuse with an error, not the policy's message): {e}\n{expr}"))
}

fn eval_bool(expr: &str, ctx: &Context, what: &str) -> bool {
    match eval(expr, ctx, what) {
        Cel::Bool(b) => b,
        v => panic!("{what}: not a bool: {v:?}"),
    }
}

/// `policy` applied to `req` as the API server applies it.
fn admit(policy: &ValidatingAdmissionPolicy, req: &Request) -> Outcome {
    let name = policy.metadata.name.clone().unwrap();
    let spec = policy.spec.as_ref().unwrap();
    let rules = spec
        .match_constraints
        .as_ref()
        .and_then(|m| m.resource_rules.clone())
        .unwrap_or_default();
    let has =
        |list: &Option<Vec<String>>, v: &str| list.iter().flatten().any(|x| x == v || x == "*");
    if !rules.iter().any(|r| {
        has(&r.api_groups, "")
            && has(&r.api_versions, "v1")
            && has(&r.operations, req.operation)
            && has(&r.resources, req.resource)
    }) {
        return Outcome::NotMatched;
    }

    let mut ctx = Context::default();
    ctx.add_variable("request", req.request()).unwrap();
    ctx.add_variable("object", &req.object).unwrap();
    ctx.add_variable("oldObject", &req.old_object).unwrap();
    for c in spec.match_conditions.iter().flatten() {
        let what = format!("{name}: matchCondition {}", c.name);
        if !eval_bool(&c.expression, &ctx, &what) {
            return Outcome::NotMatched;
        }
    }
    // The API server evaluates a variable when an expression first reads it; evaluating each one here, in
    // order, is stricter: a variable that errors fails the test even when nothing reads it.
    let mut variables: HashMap<String, Cel> = HashMap::new();
    for v in spec.variables.iter().flatten() {
        let value = eval(&v.expression, &ctx, &format!("{name}: variable {}", v.name));
        variables.insert(v.name.clone(), value);
        ctx.add_variable_from_value("variables", variables.clone());
    }

    let mut refused = Vec::new();
    for (i, v) in spec.validations.iter().flatten().enumerate() {
        let what = format!("{name}: validation {i}");
        if eval_bool(&v.expression, &ctx, &what) {
            continue;
        }
        let message = match &v.message_expression {
            Some(m) => match eval(m, &ctx, &format!("{what}: messageExpression")) {
                Cel::String(s) => s.to_string(),
                other => panic!("{what}: messageExpression is not a string: {other:?}"),
            },
            None => v
                .message
                .clone()
                .unwrap_or_else(|| panic!("{what}: neither message nor messageExpression")),
        };
        refused.push(message);
    }
    if refused.is_empty() {
        Outcome::Allowed
    } else {
        Outcome::Denied(refused)
    }
}

// ---------------------------------------------------------------------------------------------------
// Who calls
// ---------------------------------------------------------------------------------------------------

/// plexus with the token of its pod on `node` (the installer's projected token; the daemon's own): the API
/// server adds the pod's and its node's name and UID.
fn plexus_in_pod_on(node: &str) -> Value {
    json!({
        "username": plexus_user(),
        "uid": "sa-uid",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
        "extra": {
            "authentication.kubernetes.io/credential-id": ["JTI=1"],
            NODE_NAME: [node],
            "authentication.kubernetes.io/node-uid": ["node-uid"],
            "authentication.kubernetes.io/pod-name": ["plexus-x7k2q"],
            "authentication.kubernetes.io/pod-uid": ["pod-uid"],
        },
    })
}

/// plexus with a token bound to the Node `node` (the host's kubeconfig, issue 19 item 1).
fn plexus_node_bound(node: &str) -> Value {
    json!({
        "username": plexus_user(),
        "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
        "extra": {
            "authentication.kubernetes.io/credential-id": ["JTI=2"],
            NODE_NAME: [node],
            "authentication.kubernetes.io/node-uid": ["node-uid"],
        },
    })
}

/// plexus with a token that names no node: bound to nothing (no extra at all), or to a Secret.
fn plexus_without_node(secret_bound: bool) -> Value {
    let mut user = json!({
        "username": plexus_user(),
        "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
    });
    if secret_bound {
        user["extra"] = json!({"authentication.kubernetes.io/credential-id": ["JTI=3"]});
    }
    user
}

fn user(name: &str) -> Value {
    json!({"username": name, "groups": ["system:authenticated"]})
}

// ---------------------------------------------------------------------------------------------------
// pods/status
// ---------------------------------------------------------------------------------------------------

/// A running pod on `node`, as the API server stores it.
fn pod_on(node: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": POD,
            "namespace": NS,
            "uid": POD_UID,
            "resourceVersion": "4711",
            "labels": {"app": "web"},
            "annotations": {"k8s.v1.cni.cncf.io/networks": "macvlan-conf"},
        },
        "spec": {
            "nodeName": node,
            "containers": [{"name": "web", "image": "registry.example/web:1"}],
        },
        "status": {
            "phase": "Pending",
            "qosClass": "BestEffort",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
        },
    })
}

/// The merge patch plexus sends (built by plexus's own code).
fn plexus_patch() -> Value {
    let pod = PodRef {
        namespace: NS.into(),
        name: POD.into(),
        uid: Some(POD_UID.into()),
        infra_container_id: None,
    };
    let rendered = r#"[{
    "name": "cbr0",
    "interface": "eth0",
    "ips": [
        "10.244.1.7"
    ],
    "default": true,
    "dns": {}
},{
    "name": "team-a/macvlan-conf",
    "interface": "net1",
    "ips": [
        "192.0.2.7"
    ],
    "dns": {}
}]"#;
    DeferredStatus::rendered(pod, POD_UID, rendered.into())
        .patch()
        .clone()
}

/// A pods/status PATCH of `old` with the merge patch `patch`, by `user`.
fn status_patch(user: Value, old: Value, patch: &Value) -> Request {
    let mut object = old.clone();
    json_patch::merge(&mut object, patch);
    Request {
        operation: "UPDATE",
        resource: "pods/status",
        namespace: NS.into(),
        name: POD.into(),
        user,
        object,
        old_object: old,
    }
}

/// A pods/status PATCH by plexus on its own node whose merge patch does what plexus's does, and `extra`.
fn plexus_patch_and(extra: &Value) -> Request {
    let mut req = status_patch(plexus_in_pod_on(NODE), pod_on(NODE), &plexus_patch());
    // Applied one after the other, as one patch holding both would be (merging `extra` into plexus's patch
    // would drop its nulls, which are removals).
    json_patch::merge(&mut req.object, extra);
    req
}

#[test]
fn plexus_writes_network_status_of_pods_on_its_own_node() {
    let p = policy("plexus-pod-status");
    let patch = plexus_patch();
    assert_eq!(
        patch["metadata"]["annotations"]
            .as_object()
            .map(|a| a.keys().collect::<Vec<_>>()),
        Some(vec![&NETWORK_STATUS_ANNOTATION.to_string()]),
        "plexus's patch sets network-status: {patch}"
    );
    // Thin mode (the installer pod's token, or a Node-bound one) and daemon mode (its pod's token) alike.
    for user in [plexus_in_pod_on(NODE), plexus_node_bound(NODE)] {
        let req = status_patch(user.clone(), pod_on(NODE), &patch);
        assert_eq!(admit(&p, &req), Outcome::Allowed, "{user}");
    }
    // Over an earlier network-status (a re-ADD), and on a pod without any annotation.
    let mut annotated = pod_on(NODE);
    annotated["metadata"]["annotations"][NETWORK_STATUS_ANNOTATION] = "[]".into();
    let mut bare = pod_on(NODE);
    bare["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    bare["metadata"].as_object_mut().unwrap().remove("labels");
    for old in [annotated, bare] {
        let req = status_patch(plexus_in_pod_on(NODE), old, &patch);
        assert_eq!(admit(&p, &req), Outcome::Allowed);
    }
    // Removing it (a merge patch with null) is within the policy too.
    let removal = json!({"metadata": {"annotations": {NETWORK_STATUS_ANNOTATION: null}}});
    let mut old = pod_on(NODE);
    old["metadata"]["annotations"][NETWORK_STATUS_ANNOTATION] = "[]".into();
    let req = status_patch(plexus_in_pod_on(NODE), old, &removal);
    assert_eq!(admit(&p, &req), Outcome::Allowed);
}

#[test]
fn plexus_may_not_write_pods_of_another_node_or_unscheduled_ones() {
    let p = policy("plexus-pod-status");
    let req = status_patch(plexus_in_pod_on(NODE), pod_on(OTHER_NODE), &plexus_patch());
    let refused = admit(&p, &req);
    assert_eq!(
        refused.denied("another node"),
        [format!(
            "plexus on node {NODE} may write only the status of pods on that node; this pod is on node {OTHER_NODE}"
        )]
    );
    let req = status_patch(plexus_node_bound(OTHER_NODE), pod_on(NODE), &plexus_patch());
    assert_eq!(
        admit(&p, &req)
            .denied("a Node-bound token of another node")
            .len(),
        1
    );

    let mut pending = pod_on(NODE);
    pending["spec"].as_object_mut().unwrap().remove("nodeName");
    let req = status_patch(plexus_in_pod_on(NODE), pending, &plexus_patch());
    assert!(
        admit(&p, &req).denied("an unscheduled pod")[0].ends_with("this pod is not scheduled"),
        "{:?}",
        admit(&p, &req)
    );
}

#[test]
fn plexus_may_change_nothing_of_a_pod_but_network_status() {
    let p = policy("plexus-pod-status");
    let cases = [
        (
            "another annotation changed",
            json!({"metadata": {"annotations": {"k8s.v1.cni.cncf.io/networks": "host-device-conf"}}}),
            "annotation",
        ),
        (
            "an annotation added",
            json!({"metadata": {"annotations": {"v1.multus-cni.io/default-network": "kube-system/evil"}}}),
            "annotation",
        ),
        (
            "an annotation removed",
            json!({"metadata": {"annotations": {"k8s.v1.cni.cncf.io/networks": null}}}),
            "annotation",
        ),
        (
            "a label changed",
            json!({"metadata": {"labels": {"app": "db"}}}),
            "label",
        ),
        (
            "a label added",
            json!({"metadata": {"labels": {"role": "admin"}}}),
            "label",
        ),
        (
            "the labels removed",
            json!({"metadata": {"labels": null}}),
            "label",
        ),
        (
            "a finalizer added",
            json!({"metadata": {"finalizers": ["example.com/hold"]}}),
            "finalizer",
        ),
        (
            "the phase changed",
            json!({"status": {"phase": "Failed"}}),
            "status",
        ),
        (
            "the pod IP set",
            json!({"status": {"podIP": "203.0.113.9"}}),
            "status",
        ),
        (
            "the spec changed",
            json!({"spec": {"nodeName": NODE, "hostNetwork": true}}),
            "spec",
        ),
    ];
    for (what, extra, word) in cases {
        let req = plexus_patch_and(&extra);
        let outcome = admit(&p, &req);
        let refused = outcome.denied(what);
        assert_eq!(refused.len(), 1, "{what}: {refused:?}");
        assert!(refused[0].contains(word), "{what}: {refused:?}");
    }
}

#[test]
fn a_credential_that_names_no_node_writes_no_pod() {
    let p = policy("plexus-pod-status");
    for secret_bound in [false, true] {
        let req = status_patch(
            plexus_without_node(secret_bound),
            pod_on(NODE),
            &plexus_patch(),
        );
        let outcome = admit(&p, &req);
        let refused = outcome.denied("no node name");
        assert!(
            refused[0].starts_with("plexus's credential names no node"),
            "{refused:?}"
        );
    }
    // Two node names is not one.
    let mut user = plexus_in_pod_on(NODE);
    user["extra"][NODE_NAME] = json!([NODE, OTHER_NODE]);
    let req = status_patch(user, pod_on(NODE), &plexus_patch());
    assert!(matches!(admit(&p, &req), Outcome::Denied(_)));
}

#[test]
fn other_users_are_not_judged_by_the_pod_status_policy() {
    let p = policy("plexus-pod-status");
    // The kubelet rewrites the whole status of its pods; another workload named plexus elsewhere; a user with
    // no name at all: none is matched, whatever it writes.
    let anything = json!({"metadata": {"labels": {"x": "y"}}, "status": {"phase": "Running"}});
    for user in [
        user("system:node:node-b"),
        user("system:serviceaccount:team-a:plexus"),
        json!({"groups": ["system:unauthenticated"]}),
    ] {
        let req = status_patch(user.clone(), pod_on(NODE), &anything);
        assert_eq!(admit(&p, &req), Outcome::NotMatched, "{user}");
    }
    // And only pods/status updates are judged.
    let mut req = status_patch(plexus_in_pod_on(NODE), pod_on(OTHER_NODE), &plexus_patch());
    req.resource = "pods";
    assert_eq!(admit(&p, &req), Outcome::NotMatched);
}

// ---------------------------------------------------------------------------------------------------
// events
// ---------------------------------------------------------------------------------------------------

/// The event plexus posts about the pod (built by plexus's own code), as a POST to its namespace.
fn plexus_event(user: Value) -> Request {
    let pod = PodRef {
        namespace: NS.into(),
        name: POD.into(),
        uid: Some(POD_UID.into()),
        infra_container_id: None,
    };
    let involved = DeferredStatus::rendered(pod, POD_UID, "[]".into())
        .involved
        .expect("the pod as the events' involved object");
    let ev = events::event(
        &involved,
        "Normal",
        "AddedInterface",
        "Add net1 [192.0.2.7/24] from team-a/macvlan-conf".into(),
    );
    let object = serde_json::to_value(&ev).unwrap();
    Request {
        operation: "CREATE",
        resource: "events",
        namespace: ev.metadata.namespace.clone().unwrap(),
        name: String::new(),
        user,
        object,
        old_object: Value::Null,
    }
}

#[test]
fn plexus_writes_events_about_pods_in_their_namespace() {
    let p = policy("plexus-events");
    let req = plexus_event(plexus_in_pod_on(NODE));
    assert_eq!(req.object["involvedObject"]["kind"], "Pod");
    assert_eq!(admit(&p, &req), Outcome::Allowed);
    let req = plexus_event(plexus_node_bound(NODE));
    assert_eq!(admit(&p, &req), Outcome::Allowed);
    // A PATCH of such an event (a repeated event's count) too.
    let mut req = plexus_event(plexus_in_pod_on(NODE));
    req.operation = "UPDATE";
    req.old_object = req.object.clone();
    req.object["count"] = 2.into();
    assert_eq!(admit(&p, &req), Outcome::Allowed);
}

/// A change to a request, in a table of cases.
type Change = fn(&mut Request);

#[test]
fn plexus_writes_no_event_about_other_objects_or_in_other_namespaces() {
    let p = policy("plexus-events");
    fn about_node(r: &mut Request) {
        r.object["involvedObject"] =
            json!({"apiVersion": "v1", "kind": "Node", "name": OTHER_NODE});
    }
    let cases: [(&str, Change, &str); 6] = [
        ("about a Node", about_node, "only about pods"),
        (
            "about a Secret",
            |r| r.object["involvedObject"]["kind"] = "Secret".into(),
            "only about pods",
        ),
        (
            "about another API's Pod",
            |r| r.object["involvedObject"]["apiVersion"] = "example.com/v1".into(),
            "only about pods",
        ),
        (
            "about an object of no kind",
            |r| {
                r.object["involvedObject"]
                    .as_object_mut()
                    .unwrap()
                    .remove("kind");
            },
            "only about pods",
        ),
        (
            "in another namespace",
            |r| {
                r.namespace = "kube-system".into();
                r.object["metadata"]["namespace"] = "kube-system".into();
            },
            "in the namespace of the pod",
        ),
        (
            "about an object with no namespace",
            |r| {
                r.object["involvedObject"]
                    .as_object_mut()
                    .unwrap()
                    .remove("namespace");
            },
            "in the namespace of the pod",
        ),
    ];
    for (what, change, word) in cases {
        let mut req = plexus_event(plexus_in_pod_on(NODE));
        change(&mut req);
        let outcome = admit(&p, &req);
        let refused = outcome.denied(what);
        assert!(
            refused.iter().any(|m| m.contains(word)),
            "{what}: {refused:?}"
        );
    }
    // Other users' events are not judged.
    let mut req = plexus_event(user("system:node:node-a"));
    about_node(&mut req);
    assert_eq!(admit(&p, &req), Outcome::NotMatched);
}

// ---------------------------------------------------------------------------------------------------
// serviceaccounts/token
// ---------------------------------------------------------------------------------------------------

/// A TokenRequest for ServiceAccount kube-system/plexus bound to `bound` (none: unbound), by `user`.
fn token_request(user: Value, bound: Option<Value>) -> Request {
    let mut spec =
        json!({"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600});
    if let Some(b) = bound {
        spec["boundObjectRef"] = b;
    }
    Request {
        operation: "CREATE",
        resource: "serviceaccounts/token",
        namespace: "kube-system".into(),
        name: "plexus".into(),
        user,
        object: json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "metadata": {"name": "plexus", "namespace": "kube-system"}, "spec": spec}),
        old_object: Value::Null,
    }
}

fn node_ref(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "name": name, "uid": "node-uid"})
}

#[test]
fn plexus_gets_tokens_bound_to_its_own_node_only() {
    let p = policy("plexus-token");
    // The installer asks with its pod's token; it renews with the node-bound one.
    for user in [plexus_in_pod_on(NODE), plexus_node_bound(NODE)] {
        let req = token_request(user.clone(), Some(node_ref(NODE)));
        assert_eq!(admit(&p, &req), Outcome::Allowed, "{user}");
    }
    // Without a uid in the reference (the API server fills it in).
    let req = token_request(
        plexus_in_pod_on(NODE),
        Some(json!({"apiVersion": "v1", "kind": "Node", "name": NODE})),
    );
    assert_eq!(admit(&p, &req), Outcome::Allowed);

    let refused = [
        ("another node", Some(node_ref(OTHER_NODE))),
        (
            "a pod",
            Some(
                json!({"apiVersion": "v1", "kind": "Pod", "name": "plexus-x7k2q", "uid": "pod-uid"}),
            ),
        ),
        (
            "a Secret",
            Some(json!({"apiVersion": "v1", "kind": "Secret", "name": NODE})),
        ),
        ("nothing", None),
        (
            "a reference with no kind",
            Some(json!({"apiVersion": "v1", "name": NODE})),
        ),
    ];
    for (what, bound) in refused {
        let req = token_request(plexus_in_pod_on(NODE), bound);
        let outcome = admit(&p, &req);
        assert_eq!(
            outcome.denied(what),
            [format!(
                "plexus on node {NODE} may request only a token bound to Node {NODE}"
            )],
            "bound to {what}"
        );
    }
    // A credential that names no node gets no token, not even one bound to "its" node.
    for secret_bound in [false, true] {
        let req = token_request(plexus_without_node(secret_bound), Some(node_ref(NODE)));
        assert!(
            admit(&p, &req).denied("no node name")[0]
                .starts_with("plexus's credential names no node"),
            "{:?}",
            admit(&p, &req)
        );
    }
    // The cluster's own token requests (the kubelet's for its pods) are not judged.
    let req = token_request(user("system:node:node-a"), None);
    assert_eq!(admit(&p, &req), Outcome::NotMatched);
}

// ---------------------------------------------------------------------------------------------------
// The file as a whole
// ---------------------------------------------------------------------------------------------------

#[test]
fn each_policy_is_bound_to_deny_fails_closed_and_matches_plexus_alone() {
    let policies = policies();
    let mut names: Vec<String> = policies
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["plexus-events", "plexus-pod-status", "plexus-token"]
    );
    let bindings = bindings();
    assert_eq!(bindings.len(), policies.len(), "one binding per policy");
    let who = plexus_user();
    for p in &policies {
        let name = p.metadata.name.clone().unwrap();
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.failure_policy.as_deref(), Some("Fail"), "{name}");
        assert!(spec.param_kind.is_none(), "{name}: no parameters");
        // Exactly one matchCondition, on the user name: no other request pays for more than one comparison.
        let conditions = spec.match_conditions.clone().unwrap_or_default();
        assert_eq!(conditions.len(), 1, "{name}");
        assert!(
            conditions[0].expression.contains(&format!("'{who}'")),
            "{name}: matches {who}: {}",
            conditions[0].expression
        );
        // What the API server's validation of a policy asks of these fields.
        for v in spec.validations.iter().flatten() {
            if let Some(m) = &v.message {
                assert!(!m.trim().is_empty(), "{name}: message {m:?}");
            }
            // A message may not hold a line break; the expressions have none either (folded YAML), so the
            // API server's error text quotes each on one line.
            for text in [
                Some(&v.expression),
                v.message.as_ref(),
                v.message_expression.as_ref(),
            ]
            .into_iter()
            .flatten()
            {
                assert!(!text.contains(['\n', '\r']), "{name}: {text:?}");
            }
            assert!(
                v.reason.as_deref().is_none_or(|r| {
                    [
                        "Unauthorized",
                        "Forbidden",
                        "Invalid",
                        "RequestEntityTooLarge",
                    ]
                    .contains(&r)
                }),
                "{name}: reason {:?}",
                v.reason
            );
        }
        let b: Vec<_> = bindings
            .iter()
            .filter(|b| b.spec.policy_name == name)
            .collect();
        assert_eq!(b.len(), 1, "{name}: one binding");
        let s = &b[0].spec;
        assert_eq!(s.validation_actions, ["Deny"], "{name}");
        assert!(
            s.param_ref.is_none() && s.match_resources.is_none(),
            "{name}: applies everywhere"
        );
    }
}
