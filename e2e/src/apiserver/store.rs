//! The in-memory object store: objects by type/namespace/name, the global
//! `resourceVersion`, selectors, and the change history that watches read.

use std::collections::{BTreeMap, VecDeque};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use super::dra;
use super::error::ApiError;
use super::patch::{self, PatchType};
use super::resources::{self, Flavor, ResourceType, StatusMode};
use super::selector::{FieldSelector, LabelSelector};
use super::util;

/// How many changes the store keeps for watches that start from a `resourceVersion`.
const HISTORY: usize = 10_000;

/// One write, as a watch reports it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The resourceVersion of the write.
    pub rv: u64,
    /// Storage key of the type.
    pub storage: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// The stored object before the write (modifications only).
    pub old: Option<Value>,
    /// The stored object after the write (for deletions: its last state).
    pub new: Value,
}

/// LIST (and watch) options from the query string.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `limit` (0: none).
    pub limit: usize,
    /// `continue` token from a previous page.
    pub continue_token: Option<String>,
}

impl ListOptions {
    /// Parses `labelSelector`, `fieldSelector`, `limit` and `continue` for type `rt`.
    pub fn from_query(rt: &ResourceType, q: &BTreeMap<String, String>) -> Result<Self, ApiError> {
        let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
        Ok(ListOptions {
            labels: LabelSelector::parse(get("labelSelector"))?,
            fields: FieldSelector::parse(get("fieldSelector"), rt.field_labels())?,
            limit: match get("limit") {
                "" => 0,
                l => l
                    .parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
            },
            continue_token: q.get("continue").filter(|c| !c.is_empty()).cloned(),
        })
    }

    /// Whether a stored object of type `rt` is selected.
    pub fn matches(&self, rt: &ResourceType, stored: &Value) -> bool {
        self.labels.matches(
            stored
                .pointer("/metadata/labels")
                .and_then(Value::as_object),
        ) && self.fields.matches(|f| rt.field_value(stored, f))
    }
}

type Key = (String, String);

/// All objects and served types.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    objects: BTreeMap<String, BTreeMap<Key, Value>>,
    builtins: Vec<ResourceType>,
    custom: BTreeMap<String, Vec<ResourceType>>,
    history: VecDeque<Change>,
    rv_tx: tokio::sync::watch::Sender<u64>,
}

impl Clone for Store {
    fn clone(&self) -> Self {
        Store {
            rv: self.rv,
            objects: self.objects.clone(),
            builtins: self.builtins.clone(),
            custom: self.custom.clone(),
            history: VecDeque::new(),
            rv_tx: tokio::sync::watch::Sender::new(self.rv),
        }
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

fn meta(v: &Value, field: &str) -> Option<String> {
    v.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .map(String::from)
}

fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    v["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

fn key(ns: &str, name: &str) -> Key {
    (ns.to_string(), name.to_string())
}

fn encode_continue(k: &Key) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}\u{0}{}", k.0, k.1))
}

fn decode_continue(token: &str) -> Result<Key, ApiError> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (ns, name) = raw.split_once('\u{0}').ok_or_else(bad)?;
    Ok(key(ns, name))
}

/// Everything but `metadata` (and `status` when a subresource owns it): what `generation` tracks.
fn spec_view(v: &Value, without_status: bool) -> Value {
    let mut v = v.clone();
    if let Value::Object(m) = &mut v {
        m.remove("metadata");
        if without_status {
            m.remove("status");
        }
    }
    v
}

impl Store {
    /// A store with the system namespaces and their `default` ServiceAccounts.
    pub fn new() -> Self {
        let mut s = Store {
            rv: 0,
            objects: BTreeMap::new(),
            builtins: resources::builtins(),
            custom: BTreeMap::new(),
            history: VecDeque::new(),
            rv_tx: tokio::sync::watch::Sender::new(0),
        };
        let ns = s.builtin("namespaces");
        for name in resources::SYSTEM_NAMESPACES {
            s.create(&ns, None, json!({"metadata": {"name": name}}), false)
                .expect("system namespace");
        }
        s
    }

    fn builtin(&self, plural: &str) -> ResourceType {
        self.builtins
            .iter()
            .find(|t| t.plural == plural && t.group.is_empty())
            .cloned()
            .expect("built-in type")
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// A receiver that sees every new resourceVersion.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.rv_tx.subscribe()
    }

    /// Every served type: built-ins, then those of existing CRDs.
    pub fn types(&self) -> impl Iterator<Item = &ResourceType> {
        self.builtins.iter().chain(self.custom.values().flatten())
    }

    /// The type served at `group`/`version`/`plural`.
    pub fn resolve(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    /// The type for an object's `apiVersion` and `kind`.
    pub fn resolve_kind(&self, api_version: &str, kind: &str) -> Option<ResourceType> {
        self.types()
            .find(|t| t.api_version() == api_version && t.kind == kind)
            .cloned()
    }

    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, change: Change) {
        if self.history.len() >= HISTORY {
            self.history.pop_front();
        }
        let rv = change.rv;
        self.history.push_back(change);
        self.rv_tx.send_replace(rv);
    }

    /// Changes after `rv`, or `None` if the history no longer reaches back that far.
    pub fn changes_since(&self, rv: u64, storage: &str) -> Option<Vec<Change>> {
        let oldest = self.history.front().map_or(self.rv + 1, |c| c.rv);
        if rv + 1 < oldest && rv < self.rv {
            return None;
        }
        Some(
            self.history
                .iter()
                .filter(|c| c.rv > rv && c.storage == storage)
                .cloned()
                .collect(),
        )
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.objects
            .get("namespaces")
            .is_some_and(|m| m.contains_key(&key("", ns)))
    }

    fn lookup(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<&Value, ApiError> {
        self.objects
            .get(&rt.storage)
            .and_then(|m| m.get(&key(ns, name)))
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// Stored objects of type `rt` (in `ns`, or all namespaces), in key order.
    pub fn stored(&self, rt: &ResourceType, ns: Option<&str>) -> Vec<Value> {
        self.objects
            .get(&rt.storage)
            .into_iter()
            .flatten()
            .filter(|((n, _), _)| ns.is_none_or(|ns| !rt.namespaced || n == ns))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Checks the shape of a request body for type `rt`: an object whose
    /// `apiVersion`/`kind` (if set) match, whose labels and annotations are strings.
    fn check_body(rt: &ResourceType, body: &Value) -> Result<(), ApiError> {
        let obj = body
            .as_object()
            .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
        if let Some(k) = obj
            .get("kind")
            .and_then(Value::as_str)
            .filter(|k| *k != rt.kind)
        {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )));
        }
        if let Some(av) = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .filter(|av| *av != rt.api_version())
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                rt.api_version()
            )));
        }
        match obj.get("metadata") {
            None | Some(Value::Object(_)) => {}
            Some(_) => return Err(ApiError::bad_request("metadata must be an object")),
        }
        for field in ["labels", "annotations"] {
            match body.pointer(&format!("/metadata/{field}")) {
                None | Some(Value::Null) => {}
                Some(Value::Object(m)) if m.values().all(Value::is_string) => {}
                Some(_) => {
                    return Err(ApiError::bad_request(format!(
                        "metadata.{field} must be a map of string keys to string values"
                    )));
                }
            }
        }
        Ok(())
    }

    /// POST: creates an object of type `rt` in `ns` (the URL's namespace).
    /// `seed` keeps a given `status` and skips admission, for objects that "already existed".
    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        body: Value,
        seed: bool,
    ) -> Result<Value, ApiError> {
        Self::check_body(rt, &body)?;
        let mut obj = rt.to_internal(body);
        let body_ns = meta(&obj, "namespace").filter(|n| !n.is_empty());
        let ns = if rt.namespaced {
            match (ns, body_ns) {
                (Some(u), Some(b)) if u != b => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                (Some(u), _) => u.to_string(),
                (None, Some(b)) => b,
                (None, None) => "default".to_string(),
            }
        } else {
            String::new()
        };
        let mut name = meta(&obj, "name").unwrap_or_default();
        if name.is_empty() {
            match meta(&obj, "generateName").filter(|g| !g.is_empty()) {
                Some(prefix) => name = format!("{prefix}{}", util::name_suffix()),
                None => {
                    return Err(ApiError::invalid(
                        rt,
                        "",
                        &[(
                            "metadata.name".into(),
                            "Required value: name or generateName is required".into(),
                        )],
                    ));
                }
            }
        }
        let label = rt.flavor == Flavor::Namespace;
        if !resources::valid_name(&name, label) {
            let what = if label {
                "RFC 1123 label"
            } else {
                "RFC 1123 subdomain"
            };
            return Err(ApiError::invalid(
                rt,
                &name,
                &[(
                    "metadata.name".into(),
                    format!(
                        "Invalid value: \"{name}\": a lowercase {what} must consist of lower case \
                         alphanumeric characters, '-' or '.', and must start and end with an \
                         alphanumeric character"
                    ),
                )],
            ));
        }
        if rt.namespaced && !self.namespace_exists(&ns) {
            return Err(ApiError::not_found(&self.builtin("namespaces"), &ns));
        }
        if self.lookup(rt, &ns, &name).is_ok() {
            return Err(ApiError::already_exists(rt, &name));
        }
        let mut causes = Vec::new();
        match &rt.flavor {
            Flavor::Pod => {
                if !seed || obj.get("status").is_none() {
                    obj["status"] = json!({"phase": "Pending"});
                }
                // Validated under its final name (a generated one too), as the real server does.
                meta_mut(&mut obj).insert("name".into(), json!(name));
                causes = resources::validate_pod(&obj);
                if causes.is_empty() && !seed {
                    let sa = ["serviceAccountName", "serviceAccount"]
                        .iter()
                        .find_map(|f| obj["spec"].get(*f).and_then(Value::as_str))
                        .filter(|s| !s.is_empty())
                        .unwrap_or("default")
                        .to_string();
                    obj["spec"]["serviceAccountName"] = json!(sa);
                    obj["spec"]["serviceAccount"] = json!(sa);
                    if self
                        .lookup(&self.builtin("serviceaccounts"), &ns, &sa)
                        .is_err()
                    {
                        return Err(ApiError::forbidden(
                            rt,
                            &name,
                            &format!(
                                "error looking up service account {ns}/{sa}: serviceaccount \"{sa}\" not found"
                            ),
                        ));
                    }
                }
            }
            Flavor::Namespace => {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
                obj["status"] = json!({"phase": "Active"});
            }
            Flavor::Crd => causes = resources::prepare_crd(&mut obj),
            Flavor::Rbac(kind) => causes = resources::prepare_rbac(*kind, &mut obj, None)?,
            Flavor::ResourceClaim => {
                let kept = obj.get("status").cloned().filter(|_| seed);
                causes = dra::prepare_claim(&mut obj, None)?;
                if let Some(status) = kept {
                    obj["status"] = status;
                }
            }
            Flavor::Custom(schema) => {
                if rt.status == StatusMode::StatusOnly
                    && !seed
                    && let Value::Object(m) = &mut obj
                {
                    m.remove("status");
                }
                if let Some(schema) = schema {
                    resources::prune_and_check(&mut obj, schema, "", true, &mut causes);
                }
            }
            _ => {}
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(rt, &name, &causes));
        }
        let rv = self.bump();
        let m = meta_mut(&mut obj);
        m.insert("name".into(), json!(name));
        if rt.namespaced {
            m.insert("namespace".into(), json!(ns));
        } else {
            m.remove("namespace");
        }
        m.insert("uid".into(), json!(util::new_uid()));
        m.insert("resourceVersion".into(), json!(rv.to_string()));
        if rt.has_generation() {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
        m.insert("creationTimestamp".into(), json!(util::now_rfc3339()));
        for f in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ] {
            m.remove(f);
        }
        if label {
            let labels = m.entry("labels").or_insert_with(|| json!({}));
            labels["kubernetes.io/metadata.name"] = json!(name);
        }
        self.objects
            .entry(rt.storage.clone())
            .or_default()
            .insert(key(&ns, &name), obj.clone());
        self.record(Change {
            rv,
            storage: rt.storage.clone(),
            kind: "ADDED",
            old: None,
            new: obj.clone(),
        });
        match rt.flavor {
            Flavor::Namespace => {
                // What the service account controller does in a real cluster.
                let sa = self.builtin("serviceaccounts");
                if self.lookup(&sa, &name, "default").is_err() {
                    self.create(
                        &sa,
                        Some(&name),
                        json!({"metadata": {"name": "default"}}),
                        false,
                    )?;
                }
            }
            Flavor::Crd => {
                self.custom.insert(name.clone(), resources::crd_types(&obj));
            }
            _ => {}
        }
        Ok(rt.to_external(&obj))
    }

    /// GET one object.
    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.lookup(rt, ns, name).map(|v| rt.to_external(v))
    }

    /// LIST: a `{Kind}List` of the selected objects (in `ns`, or all namespaces).
    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Value, ApiError> {
        let after = opts
            .continue_token
            .as_deref()
            .map(decode_continue)
            .transpose()?;
        let mut selected = self
            .objects
            .get(&rt.storage)
            .into_iter()
            .flatten()
            .filter(|((n, _), _)| ns.is_none_or(|ns| !rt.namespaced || n == ns))
            .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a))
            .filter(|(_, v)| opts.matches(rt, v));
        let mut items = Vec::new();
        let mut last_returned: Option<&Key> = None;
        let mut more = false;
        for (k, v) in selected.by_ref() {
            if opts.limit > 0 && items.len() == opts.limit {
                more = true;
                break;
            }
            items.push(rt.to_external(v));
            last_returned = Some(k);
        }
        let mut list_meta = json!({"resourceVersion": self.rv.to_string()});
        if let (true, Some(k)) = (more, last_returned) {
            list_meta["continue"] = json!(encode_continue(k));
            list_meta["remainingItemCount"] = json!(1 + selected.count());
        }
        Ok(json!({
            "apiVersion": rt.api_version(),
            "kind": format!("{}List", rt.kind),
            "metadata": list_meta,
            "items": items,
        }))
    }

    /// PUT of the object (`status == false`) or its `/status` subresource.
    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        body: Value,
        status: bool,
    ) -> Result<Value, ApiError> {
        Self::check_body(rt, &body)?;
        let old = self.lookup(rt, ns, name)?.clone();
        if let Some(n) = meta(&body, "name").filter(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        if meta(&body, "resourceVersion")
            .filter(|rv| !rv.is_empty())
            .is_some_and(|rv| Some(rv) != meta(&old, "resourceVersion"))
        {
            return Err(ApiError::stale(rt, name));
        }
        self.commit(rt, ns, name, old, rt.to_internal(body), status)
    }

    /// PATCH of the object or its `/status` subresource.
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        pt: PatchType,
        body: &[u8],
        status: bool,
    ) -> Result<Value, ApiError> {
        if pt == PatchType::Strategic && matches!(rt.flavor, Flavor::Custom(_)) {
            return Err(ApiError::unsupported_media_type(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            ));
        }
        let old = self.lookup(rt, ns, name)?.clone();
        let mut doc = rt.to_external(&old);
        patch::apply(pt, &mut doc, body)?;
        Self::check_body(rt, &doc)?;
        let rv = meta(&doc, "resourceVersion");
        if rv.is_some() && rv != meta(&old, "resourceVersion") {
            return Err(ApiError::stale(rt, name));
        }
        if meta(&doc, "name").as_deref() != Some(name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta(&doc, "name").unwrap_or_default()
            )));
        }
        self.commit(rt, ns, name, old, rt.to_internal(doc), status)
    }

    fn commit(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        old: Value,
        new: Value,
        status: bool,
    ) -> Result<Value, ApiError> {
        // A uid in the new object is a precondition (it guards against a pod
        // deleted and re-created under the same name).
        let old_uid = meta(&old, "uid").unwrap_or_default();
        if let Some(uid) = meta(&new, "uid").filter(|u| !u.is_empty() && *u != old_uid) {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {old_uid}"
                ),
            ));
        }
        let mut result;
        if status {
            result = old.clone();
            match new.get("status") {
                Some(s) => result["status"] = s.clone(),
                None => {
                    if let Value::Object(m) = &mut result {
                        m.remove("status");
                    }
                }
            }
            if rt.status == StatusMode::MetaAndStatus {
                let nm = new.get("metadata").cloned().unwrap_or(json!({}));
                let m = meta_mut(&mut result);
                for f in ["labels", "annotations"] {
                    match nm.get(f) {
                        Some(v) if !v.is_null() => m.insert(f.into(), v.clone()),
                        _ => m.remove(f),
                    };
                }
            }
            // What the real server checks on a status write: a claim's allocation and reservations, a
            // pod's claim statuses against its spec.
            let causes = match rt.flavor {
                Flavor::ResourceClaim => dra::validate_claim_status(&result, &old)?,
                Flavor::Pod => dra::validate_pod_claim_statuses(&result),
                _ => Vec::new(),
            };
            if !causes.is_empty() {
                return Err(ApiError::invalid(rt, name, &causes));
            }
        } else {
            result = new;
            if rt.status != StatusMode::None {
                match old.get("status") {
                    Some(s) => result["status"] = s.clone(),
                    None => {
                        if let Value::Object(m) = &mut result {
                            m.remove("status");
                        }
                    }
                }
            }
            let old_meta = old.get("metadata").cloned().unwrap_or(json!({}));
            let m = meta_mut(&mut result);
            for f in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                match old_meta.get(f) {
                    Some(v) => m.insert(f.into(), v.clone()),
                    None => m.remove(f),
                };
            }
            let mut causes = Vec::new();
            match &rt.flavor {
                Flavor::Pod => {
                    causes = resources::validate_pod(&result);
                    causes.extend(resources::pod_spec_change(&old, &result));
                }
                Flavor::Namespace => {
                    result["spec"] = old.get("spec").cloned().unwrap_or(json!({}));
                    let labels = meta_mut(&mut result)
                        .entry("labels")
                        .or_insert_with(|| json!({}));
                    if !labels.is_object() {
                        *labels = json!({});
                    }
                    labels["kubernetes.io/metadata.name"] = json!(name);
                }
                Flavor::Crd => {
                    causes = resources::prepare_crd(&mut result);
                    if causes.is_empty() && result["spec"]["group"] != old["spec"]["group"] {
                        causes.push((
                            "spec.group".into(),
                            "Invalid value: field is immutable".into(),
                        ));
                    }
                }
                Flavor::Custom(Some(schema)) => {
                    resources::prune_and_check(&mut result, schema, "", true, &mut causes);
                }
                Flavor::Rbac(kind) => {
                    causes = resources::prepare_rbac(*kind, &mut result, Some(&old))?;
                }
                Flavor::ResourceClaim => causes = dra::prepare_claim(&mut result, Some(&old))?,
                _ => {}
            }
            if !causes.is_empty() {
                return Err(ApiError::invalid(rt, name, &causes));
            }
            let owns_status = rt.status != StatusMode::None;
            if rt.has_generation()
                && spec_view(&result, owns_status) != spec_view(&old, owns_status)
            {
                let g = old
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                meta_mut(&mut result).insert("generation".into(), json!(g + 1));
            }
        }
        // A write that changes nothing is not a write: same resourceVersion, no event.
        meta_mut(&mut result).insert(
            "resourceVersion".into(),
            old["metadata"]["resourceVersion"].clone(),
        );
        if result == old {
            return Ok(rt.to_external(&old));
        }
        let rv = self.bump();
        meta_mut(&mut result).insert("resourceVersion".into(), json!(rv.to_string()));
        self.objects
            .entry(rt.storage.clone())
            .or_default()
            .insert(key(ns, name), result.clone());
        self.record(Change {
            rv,
            storage: rt.storage.clone(),
            kind: "MODIFIED",
            old: Some(old),
            new: result.clone(),
        });
        if rt.flavor == Flavor::Crd {
            self.custom
                .insert(name.to_string(), resources::crd_types(&result));
        }
        Ok(rt.to_external(&result))
    }

    /// DELETE. `preconditions` is `DeleteOptions.preconditions` (`uid`, `resourceVersion`).
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        preconditions: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let old = self.lookup(rt, ns, name)?.clone();
        if rt.flavor == Flavor::Namespace && resources::SYSTEM_NAMESPACES.contains(&name) {
            return Err(ApiError::forbidden(
                rt,
                name,
                "this namespace may not be deleted",
            ));
        }
        for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
            let want = preconditions
                .and_then(|p| p.get(field))
                .and_then(Value::as_str);
            let have = meta(&old, field).unwrap_or_default();
            if let Some(want) = want.filter(|w| *w != have) {
                return Err(ApiError::conflict(
                    rt,
                    name,
                    &format!(
                        "Precondition failed: {label} in precondition: {want}, {label} in object meta: {have}"
                    ),
                ));
            }
        }
        let rv = self.remove(rt, ns, name, old.clone());
        match rt.flavor {
            Flavor::Namespace => {
                // The namespace controller's job, done at once.
                let types: Vec<ResourceType> =
                    self.types().filter(|t| t.namespaced).cloned().collect();
                for t in types {
                    let keys: Vec<Key> = self
                        .objects
                        .get(&t.storage)
                        .into_iter()
                        .flat_map(|m| m.keys())
                        .filter(|(n, _)| n == name)
                        .cloned()
                        .collect();
                    for (n, obj_name) in keys {
                        if let Ok(obj) = self.lookup(&t, &n, &obj_name).cloned() {
                            self.remove(&t, &n, &obj_name, obj);
                        }
                    }
                }
            }
            Flavor::Crd => {
                for t in self
                    .custom
                    .remove(name)
                    .unwrap_or_default()
                    .into_iter()
                    .take(1)
                {
                    for obj in self.stored(&t, None) {
                        let (n, obj_name) = (
                            meta(&obj, "namespace").unwrap_or_default(),
                            meta(&obj, "name").unwrap_or_default(),
                        );
                        self.remove(&t, &n, &obj_name, obj);
                    }
                    self.objects.remove(&t.storage);
                }
            }
            _ => {}
        }
        let mut out = old;
        let m = meta_mut(&mut out);
        m.insert("resourceVersion".into(), json!(rv.to_string()));
        m.insert("deletionTimestamp".into(), json!(util::now_rfc3339()));
        if rt.flavor == Flavor::Namespace {
            out["status"]["phase"] = json!("Terminating");
        }
        Ok(rt.to_external(&out))
    }

    fn remove(&mut self, rt: &ResourceType, ns: &str, name: &str, mut last: Value) -> u64 {
        if let Some(m) = self.objects.get_mut(&rt.storage) {
            m.remove(&key(ns, name));
        }
        let rv = self.bump();
        meta_mut(&mut last).insert("resourceVersion".into(), json!(rv.to_string()));
        self.record(Change {
            rv,
            storage: rt.storage.clone(),
            kind: "DELETED",
            old: None,
            new: last,
        });
        rv
    }

    /// DELETE on a collection: deletes the selected objects, answers their list.
    pub fn delete_collection(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Value, ApiError> {
        let mut opts = opts.clone();
        opts.limit = 0;
        let list = self.list(rt, ns, &opts)?;
        let mut deleted = Vec::new();
        for item in list["items"].as_array().into_iter().flatten() {
            let (n, name) = (
                meta(item, "namespace").unwrap_or_default(),
                meta(item, "name").unwrap_or_default(),
            );
            deleted.push(self.delete(rt, &n, &name, None)?);
        }
        Ok(json!({
            "apiVersion": rt.api_version(),
            "kind": format!("{}List", rt.kind),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": deleted,
        }))
    }

    /// Creates an object by its `apiVersion`/`kind`, keeping its `status` (for seeding).
    pub fn seed(&mut self, obj: Value) -> Result<Value, ApiError> {
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let rt = self.resolve_kind(api_version, kind).ok_or_else(|| {
            ApiError::bad_request(format!(
                "no kind \"{kind}\" is registered for version \"{api_version}\""
            ))
        })?;
        let ns = meta(&obj, "namespace");
        self.create(&rt, ns.as_deref(), obj, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(s: &Store, plural: &str) -> ResourceType {
        s.resolve("", "v1", plural).unwrap()
    }

    fn pod(name: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"app": name}},
               "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    }

    #[test]
    fn starts_with_system_namespaces_and_service_accounts() {
        let s = Store::new();
        let ns = ty(&s, "namespaces");
        let sa = ty(&s, "serviceaccounts");
        let list = s.list(&ns, None, &ListOptions::default()).unwrap();
        assert_eq!(list["kind"], "NamespaceList");
        assert_eq!(list["items"].as_array().unwrap().len(), 4);
        assert!(s.get(&sa, "default", "default").is_ok());
        assert!(s.get(&sa, "kube-system", "default").is_ok());
        let d = s.get(&ns, "", "default").unwrap();
        assert_eq!(
            d["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "default"
        );
        assert_eq!(d["status"]["phase"], "Active");
    }

    #[test]
    fn create_update_delete_pod() {
        let mut s = Store::new();
        let pods = ty(&s, "pods");
        let p = s.create(&pods, Some("default"), pod("a"), false).unwrap();
        assert_eq!(p["status"]["phase"], "Pending");
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(p["metadata"]["generation"], 1);
        let rv: u64 = p["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(rv, s.resource_version());

        // A no-op update keeps the resourceVersion.
        let same = s.update(&pods, "default", "a", p.clone(), false).unwrap();
        assert_eq!(
            same["metadata"]["resourceVersion"],
            p["metadata"]["resourceVersion"]
        );

        let mut changed = p.clone();
        changed["metadata"]["labels"]["x"] = json!("y");
        changed["status"]["phase"] = json!("Running");
        let u = s
            .update(&pods, "default", "a", changed.clone(), false)
            .unwrap();
        assert_eq!(
            u["status"]["phase"], "Pending",
            "main resource ignores status"
        );
        assert_eq!(u["metadata"]["labels"]["x"], "y");
        assert_eq!(u["metadata"]["generation"], 1, "labels are not spec");
        let err = s.update(&pods, "default", "a", changed, false).unwrap_err();
        assert_eq!(err.reason, "Conflict");

        let mut other = s.get(&pods, "default", "a").unwrap();
        other["metadata"]["uid"] = json!("0000");
        other["metadata"]["resourceVersion"] = json!(null);
        let err = s.update(&pods, "default", "a", other, true).unwrap_err();
        assert!(
            err.message
                .contains("Precondition failed: UID in precondition: 0000")
        );
        let patch = br#"{"metadata":{"uid":"0000"},"status":{"phase":"Running"}}"#;
        let err = s
            .patch(&pods, "default", "a", PatchType::Merge, patch, true)
            .unwrap_err();
        assert_eq!(err.reason, "Conflict");

        let d = s.delete(&pods, "default", "a", None).unwrap();
        assert_eq!(d["metadata"]["name"], "a");
        assert_eq!(s.get(&pods, "default", "a").unwrap_err().code, 404);
    }

    #[test]
    fn namespace_delete_cascades_and_creates_sa() {
        let mut s = Store::new();
        let (ns, pods, sa) = (
            ty(&s, "namespaces"),
            ty(&s, "pods"),
            ty(&s, "serviceaccounts"),
        );
        s.create(&ns, None, json!({"metadata": {"name": "t"}}), false)
            .unwrap();
        assert!(s.get(&sa, "t", "default").is_ok());
        s.create(&pods, Some("t"), pod("p"), false).unwrap();
        assert_eq!(s.delete(&ns, "", "default", None).unwrap_err().code, 403);
        s.delete(&ns, "", "t", None).unwrap();
        assert!(s.get(&pods, "t", "p").is_err());
        assert!(s.get(&sa, "t", "default").is_err());
        let err = s.create(&pods, Some("t"), pod("p"), false).unwrap_err();
        assert_eq!(err.message, "namespaces \"t\" not found");
    }

    #[test]
    fn paging_and_watch_history() {
        let mut s = Store::new();
        let pods = ty(&s, "pods");
        let start = s.resource_version();
        for n in ["a", "b", "c"] {
            s.create(&pods, Some("default"), pod(n), false).unwrap();
        }
        let mut opts = ListOptions {
            limit: 2,
            ..Default::default()
        };
        let page = s.list(&pods, Some("default"), &opts).unwrap();
        assert_eq!(page["items"].as_array().unwrap().len(), 2);
        assert_eq!(page["metadata"]["remainingItemCount"], 1);
        opts.continue_token = page["metadata"]["continue"].as_str().map(String::from);
        let page = s.list(&pods, Some("default"), &opts).unwrap();
        assert_eq!(page["items"][0]["metadata"]["name"], "c");
        assert!(page["metadata"].get("continue").is_none());
        let changes = s.changes_since(start, "pods").unwrap();
        assert_eq!(changes.len(), 3);
        assert!(changes.iter().all(|c| c.kind == "ADDED"));
    }

    #[test]
    fn crd_serves_its_resources_until_deleted() {
        let mut s = Store::new();
        assert!(
            s.resolve("k8s.cni.cncf.io", "v1", "network-attachment-definitions")
                .is_none()
        );
        let crds = s
            .resolve("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .unwrap();
        s.create(&crds, None, resources::nad_crd(), false).unwrap();
        let nads = s
            .resolve("k8s.cni.cncf.io", "v1", "network-attachment-definitions")
            .unwrap();
        let nad = json!({"metadata": {"name": "n"}, "spec": {"config": "{}"}});
        s.create(&nads, Some("default"), nad, false).unwrap();
        let name = "network-attachment-definitions.k8s.cni.cncf.io";
        s.delete(&crds, "", name, None).unwrap();
        assert!(
            s.resolve("k8s.cni.cncf.io", "v1", "network-attachment-definitions")
                .is_none()
        );
        s.create(&crds, None, resources::nad_crd(), false).unwrap();
        let nads = s
            .resolve("k8s.cni.cncf.io", "v1", "network-attachment-definitions")
            .unwrap();
        assert!(
            s.get(&nads, "default", "n").is_err(),
            "CRs go with their CRD"
        );
    }
}
