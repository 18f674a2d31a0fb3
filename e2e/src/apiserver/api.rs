//! The Kubernetes API itself: discovery, the verbs on resources, and watches.
//! Transport, authentication, faults and logging are in `server.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::patch::PatchType;
use super::rbac::{self, Attributes, UserInfo};
use super::resources::{ResourceType, StatusMode};
use super::routes::{ObjectPath, Route};
use super::server::State;
use super::store::{Change, ListOptions, Store};

/// What to answer.
#[derive(Debug)]
pub enum Reply {
    /// A JSON body with a status code.
    Json(u16, Value),
    /// A plain-text body (health checks).
    Text(u16, String),
    /// An error, as a `Status`.
    Error(ApiError),
    /// A watch: newline-delimited JSON events as they happen.
    Stream(mpsc::Receiver<Bytes>),
}

impl From<Result<Value, ApiError>> for Reply {
    fn from(r: Result<Value, ApiError>) -> Self {
        match r {
            Ok(v) => Reply::Json(200, v),
            Err(e) => Reply::Error(e),
        }
    }
}

/// The version the stand-in reports at `/version`.
pub const KUBE_VERSION: (&str, &str) = ("1", "35");

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Handles a request for the Kubernetes API (anything but `/standin/`).
pub fn handle(
    state: &Arc<State>,
    user: &UserInfo,
    method: &Method,
    route: Route,
    query: &BTreeMap<String, String>,
    content_type: &str,
    body: Bytes,
) -> Reply {
    let get = method == Method::GET || method == Method::HEAD;
    match route {
        Route::Health if get => Reply::Text(200, "ok".into()),
        Route::Version if get => Reply::Json(200, version()),
        Route::CoreVersions if get => Reply::Json(
            200,
            json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": state.addr.to_string()}
                ],
            }),
        ),
        Route::Groups if get => Reply::Json(200, groups(&state.lock_store())),
        Route::Group(g) if get => {
            let all = groups(&state.lock_store());
            match all["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["name"] == g)
            {
                Some(group) => {
                    let mut group = group.clone();
                    group["kind"] = json!("APIGroup");
                    group["apiVersion"] = json!("v1");
                    Reply::Json(200, group)
                }
                None => Reply::Error(ApiError::no_route()),
            }
        }
        Route::Resources { group, version } if get => {
            resource_list(&state.lock_store(), &group, &version).into()
        }
        Route::OpenApiV3(gv) if get => openapi_v3(&state.lock_store(), &gv).into(),
        Route::Object(op) => match object(state, user, method, op, query, content_type, &body) {
            Ok(reply) => reply,
            Err(e) => Reply::Error(e),
        },
        Route::Health
        | Route::Version
        | Route::CoreVersions
        | Route::Groups
        | Route::Group(_)
        | Route::Resources { .. }
        | Route::OpenApiV3(_) => Reply::Error(ApiError::method_not_allowed()),
        Route::Standin(_) | Route::Unknown => Reply::Error(ApiError::no_route()),
    }
}

fn version() -> Value {
    let (major, minor) = KUBE_VERSION;
    json!({
        "major": major,
        "minor": minor,
        "gitVersion": format!("v{major}.{minor}.0-plexus-standin"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "none",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

fn groups(store: &Store) -> Value {
    let mut by_group: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for t in store.types().filter(|t| !t.group.is_empty()) {
        by_group.entry(&t.group).or_default().insert(&t.version);
    }
    let groups: Vec<Value> = by_group
        .iter()
        .map(|(g, versions)| {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": vs.clone(), "preferredVersion": vs[vs.len() - 1]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(store: &Store, group: &str, version: &str) -> Result<Value, ApiError> {
    let types: Vec<&ResourceType> = store
        .types()
        .filter(|t| t.group == group && t.version == version)
        .collect();
    if types.is_empty() {
        return Err(ApiError::no_route());
    }
    let mut resources = Vec::new();
    for t in types {
        let mut r = json!({
            "name": t.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": VERBS,
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        resources.push(r);
        if t.status != StatusMode::None {
            resources.push(json!({
                "name": format!("{}/status", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if is_service_accounts(t) {
            resources.push(json!({
                "name": "serviceaccounts/token",
                "singularName": "",
                "namespaced": true,
                "group": "authentication.k8s.io",
                "version": "v1",
                "kind": "TokenRequest",
                "verbs": ["create"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn group_versions(store: &Store) -> BTreeSet<(String, String)> {
    store
        .types()
        .map(|t| (t.group.clone(), t.version.clone()))
        .collect()
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// A minimal OpenAPI v3 description: the index, and per group/version the
/// operations with their `x-kubernetes-group-version-kind` and query parameters
/// (no schemas). Enough for kubectl to see that the server validates fields
/// itself (`fieldValidation`), so `kubectl apply` works without `--validate=false`.
fn openapi_v3(store: &Store, gv: &str) -> Result<Value, ApiError> {
    if gv.is_empty() {
        let paths: serde_json::Map<String, Value> = group_versions(store)
            .iter()
            .map(|(g, v)| {
                let p = gv_path(g, v);
                let url = format!("/openapi/v3/{p}?hash={}", store.resource_version());
                (p, json!({"serverRelativeURL": url}))
            })
            .collect();
        return Ok(json!({"paths": paths}));
    }
    let Some((group, version)) = group_versions(store)
        .into_iter()
        .find(|(g, v)| gv_path(g, v) == gv)
    else {
        return Err(ApiError::no_route());
    };
    let param = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let op = |t: &ResourceType, action: &str, params: &[&str]| {
        json!({
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": {"group": t.group, "version": t.version, "kind": t.kind},
            "parameters": params.iter().map(|p| param(p)).collect::<Vec<_>>(),
            "responses": {"200": {"description": "OK"}},
        })
    };
    let write = ["dryRun", "fieldManager", "fieldValidation"];
    let patch = ["dryRun", "fieldManager", "fieldValidation", "force"];
    let mut paths = serde_json::Map::new();
    for t in store
        .types()
        .filter(|t| t.group == group && t.version == version)
    {
        let base = format!("/{}", gv_path(&t.group, &t.version));
        let coll = if t.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", t.plural)
        } else {
            format!("{base}/{}", t.plural)
        };
        paths.insert(coll.clone(), json!({
            "get": op(t, "list", &["labelSelector", "fieldSelector", "limit", "continue", "watch"]),
            "post": op(t, "post", &write),
            "delete": op(t, "deletecollection", &["labelSelector", "fieldSelector", "dryRun"]),
        }));
        let item = format!("{coll}/{{name}}");
        paths.insert(
            item.clone(),
            json!({
                "get": op(t, "get", &[]),
                "put": op(t, "put", &write),
                "patch": op(t, "patch", &patch),
                "delete": op(t, "delete", &["dryRun"]),
            }),
        );
        if t.status != StatusMode::None {
            paths.insert(
                format!("{item}/status"),
                json!({
                    "get": op(t, "get", &[]),
                    "put": op(t, "put", &write),
                    "patch": op(t, "patch", &patch),
                }),
            );
        }
    }
    let (major, minor) = KUBE_VERSION;
    Ok(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (plexus stand-in)", "version": format!("v{major}.{minor}.0")},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

/// Decodes a JSON (or YAML) request body.
fn decode(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let base = content_type.split(';').next().unwrap_or("").trim();
    match base {
        "" | "application/json" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}"))),
        "application/yaml" => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("the YAML body is not UTF-8"))?;
            serde_saphyr::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML body: {e}")))
        }
        other => Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: \
             application/json, application/yaml (got {other:?})"
        ))),
    }
}

fn is_service_accounts(t: &ResourceType) -> bool {
    t.group.is_empty() && t.plural == "serviceaccounts"
}

/// The request's authorization attributes, from its path, method and query, as the real server's
/// `RequestInfo`: GET is `get` on an object and `list` (or `watch`) on a collection; DELETE of a
/// collection is `deletecollection`; a namespace's own path is in that namespace.
fn attributes(method: &Method, op: &ObjectPath, query: &BTreeMap<String, String>) -> Attributes {
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let named = op.name.is_some();
    let verb = match *method {
        Method::GET | Method::HEAD if watch => "watch".to_string(),
        Method::GET | Method::HEAD if named => "get".to_string(),
        Method::GET | Method::HEAD => "list".to_string(),
        Method::POST => "create".to_string(),
        Method::PUT => "update".to_string(),
        Method::PATCH => "patch".to_string(),
        Method::DELETE if named => "delete".to_string(),
        Method::DELETE => "deletecollection".to_string(),
        ref other => other.as_str().to_lowercase(),
    };
    let namespace = match (
        &op.namespace,
        op.group.as_str(),
        op.plural.as_str(),
        &op.name,
    ) {
        (Some(ns), ..) => ns.clone(),
        (None, "", "namespaces", Some(name)) => name.clone(),
        _ => String::new(),
    };
    Attributes {
        verb,
        group: op.group.clone(),
        resource: op.plural.clone(),
        subresource: op.subresource.clone().unwrap_or_default(),
        namespace,
        name: op.name.clone().unwrap_or_default(),
    }
}

fn object(
    state: &Arc<State>,
    user: &UserInfo,
    method: &Method,
    op: ObjectPath,
    query: &BTreeMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let mut guard = state.lock_store();
    // Authorization comes first, as on a real server: a forbidden request learns nothing, not even
    // whether the resource exists.
    rbac::authorize(&guard, user, &attributes(method, &op, query))?;
    let rt = guard
        .resolve(&op.group, &op.version, &op.plural)
        .ok_or_else(ApiError::no_route)?;
    if op.namespace.is_some() && !rt.namespaced {
        return Err(ApiError::no_route());
    }
    if rt.namespaced && op.namespace.is_none() && op.name.is_some() {
        return Err(ApiError::no_route());
    }
    let ns = op.namespace.clone().unwrap_or_default();
    let dry_run = query.get("dryRun").is_some_and(|d| d == "All");
    let mut scratch;
    let store: &mut Store = if dry_run {
        scratch = guard.clone();
        &mut scratch
    } else {
        &mut guard
    };
    let is_status = match op.subresource.as_deref() {
        None => false,
        Some("status") if rt.status != StatusMode::None => true,
        Some("token") if is_service_accounts(&rt) && op.name.is_some() => {
            if *method != Method::POST {
                return Err(ApiError::method_not_allowed());
            }
            let name = op.name.as_deref().unwrap_or_default();
            let request = decode(content_type, body)?;
            let reply = state.tokens.request(store, &ns, name, &request, dry_run)?;
            return Ok(Reply::Json(201, reply));
        }
        Some(_) => return Err(ApiError::no_route()),
    };
    let patch_type = || PatchType::from_content_type(content_type);
    let Some(name) = op.name.as_deref() else {
        let opts = ListOptions::from_query(&rt, query)?;
        let ns_filter = op.namespace.as_deref();
        return Ok(match *method {
            Method::GET | Method::HEAD => {
                if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
                    drop(guard);
                    watch(state.clone(), rt, op.namespace, opts, query)?
                } else {
                    store.list(&rt, ns_filter, &opts).into()
                }
            }
            Method::POST if rt.namespaced && ns_filter.is_none() => {
                return Err(ApiError::method_not_allowed());
            }
            Method::POST => {
                match store.create(&rt, ns_filter, decode(content_type, body)?, false) {
                    Ok(v) => Reply::Json(201, v),
                    Err(e) => Reply::Error(e),
                }
            }
            Method::DELETE => store.delete_collection(&rt, ns_filter, &opts).into(),
            _ => return Err(ApiError::method_not_allowed()),
        });
    };
    Ok(match *method {
        Method::GET | Method::HEAD => store.get(&rt, &ns, name).into(),
        Method::PUT => store
            .update(&rt, &ns, name, decode(content_type, body)?, is_status)
            .into(),
        Method::PATCH => store
            .patch(&rt, &ns, name, patch_type()?, body, is_status)
            .into(),
        Method::DELETE if !is_status => {
            let options = if body.is_empty() {
                Value::Null
            } else {
                decode(content_type, body)?
            };
            store
                .delete(&rt, &ns, name, options.get("preconditions"))
                .into()
        }
        _ => return Err(ApiError::method_not_allowed()),
    })
}

fn line(event: &Value) -> Bytes {
    let mut b = serde_json::to_vec(event).expect("JSON values serialize");
    b.push(b'\n');
    Bytes::from(b)
}

fn expired(rv: u64, current: u64) -> Value {
    let mut e = ApiError::new(410, format!("too old resource version: {rv} ({current})"));
    e.reason = "Expired".into();
    json!({"type": "ERROR", "object": e.to_status()})
}

/// The event a change produces for a watcher, if any (objects moving into or
/// out of the selection are reported as ADDED/DELETED, like the real server).
fn event_for(rt: &ResourceType, ns: Option<&str>, opts: &ListOptions, c: &Change) -> Option<Value> {
    if let Some(ns) = ns.filter(|_| rt.namespaced)
        && c.new.pointer("/metadata/namespace").and_then(Value::as_str) != Some(ns)
    {
        return None;
    }
    let now = opts.matches(rt, &c.new);
    let before = c.old.as_ref().map(|o| opts.matches(rt, o));
    let kind = match (c.kind, before, now) {
        ("ADDED", _, true) => "ADDED",
        ("DELETED", _, true) => "DELETED",
        ("MODIFIED", Some(true), true) => "MODIFIED",
        ("MODIFIED", Some(false), true) => "ADDED",
        ("MODIFIED", Some(true), false) => "DELETED",
        _ => return None,
    };
    Some(json!({"type": kind, "object": rt.to_external(&c.new)}))
}

fn watch(
    state: Arc<State>,
    rt: ResourceType,
    ns: Option<String>,
    opts: ListOptions,
    query: &BTreeMap<String, String>,
) -> Result<Reply, ApiError> {
    let timeout = match query.get("timeoutSeconds").map(String::as_str) {
        None | Some("") => None,
        Some(t) => Some(Duration::from_secs(t.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid timeoutSeconds {t:?}"))
        })?)),
    };
    let send_initial = query.get("sendInitialEvents").is_some_and(|v| v == "true");
    let mut initial = Vec::new();
    let (mut since, mut rv_changes) = {
        let store = state.lock_store();
        let current = store.resource_version();
        let since = match query.get("resourceVersion").map(String::as_str) {
            None | Some("") | Some("0") => {
                for obj in store.stored(&rt, ns.as_deref()) {
                    if opts.matches(&rt, &obj) {
                        initial.push(json!({"type": "ADDED", "object": rt.to_external(&obj)}));
                    }
                }
                current
            }
            Some(v) => {
                let rv: u64 = v
                    .parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}")))?;
                if store.changes_since(rv, &rt.storage).is_none() {
                    initial.push(expired(rv, current));
                }
                rv
            }
        };
        if send_initial {
            initial.push(json!({"type": "BOOKMARK", "object": {
                "apiVersion": rt.api_version(), "kind": rt.kind,
                "metadata": {"resourceVersion": current.to_string(),
                             "annotations": {"k8s.io/initial-events-end": "true"}}}}));
        }
        (since, store.subscribe())
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        let deadline =
            tokio::time::Instant::now() + timeout.unwrap_or(Duration::from_secs(365 * 24 * 3600));
        let ended = initial.iter().any(|e| e["type"] == "ERROR");
        for e in &initial {
            if tx.send(line(e)).await.is_err() {
                return;
            }
        }
        if ended {
            return;
        }
        loop {
            let batch = {
                let store = state.lock_store();
                let current = store.resource_version();
                let changes = store.changes_since(since, &rt.storage);
                let batch = changes.map(|cs| {
                    cs.iter()
                        .filter_map(|c| event_for(&rt, ns.as_deref(), &opts, c))
                        .collect::<Vec<_>>()
                });
                let before = since;
                since = current;
                batch.ok_or_else(|| expired(before, current))
            };
            match batch {
                Ok(events) => {
                    for e in &events {
                        if tx.send(line(e)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(err) => {
                    let _ = tx.send(line(&err)).await;
                    return;
                }
            }
            tokio::select! {
                changed = rv_changes.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
        }
    });
    Ok(Reply::Stream(rx))
}
