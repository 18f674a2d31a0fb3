//! The resource types the stand-in serves, and the per-type rules the real
//! apiserver applies (pod spec immutability, namespace defaults, CRD schemas,
//! the two representations of events).

use serde_json::{Map, Value, json};

/// How a type's `status` subresource treats writes.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusMode {
    /// No status subresource: the main resource writes everything.
    None,
    /// Built-in types (pods, namespaces): `/status` writes `status` plus
    /// `metadata.labels`/`annotations`; the main resource ignores `status`.
    MetaAndStatus,
    /// Custom resources and ResourceClaims: `/status` writes only `status`; the main resource ignores it.
    StatusOnly,
}

/// Which per-type rules apply.
#[derive(Debug, Clone, PartialEq)]
pub enum Flavor {
    /// No special rules.
    Plain,
    /// `v1` Namespace: finalizer, phase and name label defaults; cascading delete.
    Namespace,
    /// `v1` Pod: `Pending` status on create, container checks, service account admission,
    /// spec immutability.
    Pod,
    /// `v1` Event (the stored representation of events).
    CoreEvent,
    /// `events.k8s.io/v1` Event: converted to and from the `v1` representation.
    EventV1,
    /// CustomResourceDefinition: serving its resources while it exists.
    Crd,
    /// A custom resource, pruned and type-checked against its schema.
    Custom(Option<Value>),
    /// `rbac.authorization.k8s.io/v1` Role, ClusterRole, RoleBinding or ClusterRoleBinding: validated like
    /// the real server does, and read by the authorizer ([`super::rbac`]).
    Rbac(RbacKind),
    /// `resource.k8s.io/v1` ResourceClaim: spec and `/status` validated like the real server does
    /// ([`super::dra`]).
    ResourceClaim,
}

/// The four RBAC kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RbacKind {
    /// Namespaced rules.
    Role,
    /// Cluster-wide rules.
    ClusterRole,
    /// Grants a Role or ClusterRole in one namespace.
    RoleBinding,
    /// Grants a ClusterRole everywhere.
    ClusterRoleBinding,
}

/// One served resource (a group/version/plural).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    /// API group, "" for core.
    pub group: String,
    /// API version.
    pub version: String,
    /// Plural resource name used in paths.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names (discovery only).
    pub short_names: Vec<String>,
    /// Status subresource behaviour.
    pub status: StatusMode,
    /// Storage key; two types sharing it see the same objects.
    pub storage: String,
    /// Per-type rules.
    pub flavor: Flavor,
}

impl ResourceType {
    fn builtin(
        group: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        short: &[&str],
        status: StatusMode,
        flavor: Flavor,
    ) -> Self {
        ResourceType {
            group: group.into(),
            version: "v1".into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            namespaced,
            short_names: short.iter().map(|s| s.to_string()).collect(),
            status,
            storage: plural.into(),
            flavor,
        }
    }

    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `plural.group`, as in error messages.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Pod` or `Kind.group`, as in Invalid error messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Whether `metadata.generation` is kept.
    pub fn has_generation(&self) -> bool {
        matches!(self.flavor, Flavor::Pod | Flavor::Crd | Flavor::Custom(_))
    }

    /// Field selector labels this type supports (besides none others, like the real server).
    pub fn field_labels(&self) -> &'static [&'static str] {
        match self.flavor {
            Flavor::Pod => &[
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ],
            Flavor::Namespace => &["metadata.name", "status.phase"],
            Flavor::CoreEvent => &[
                "metadata.name",
                "metadata.namespace",
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ],
            Flavor::EventV1 => &[
                "metadata.name",
                "metadata.namespace",
                "regarding.kind",
                "regarding.namespace",
                "regarding.name",
                "regarding.uid",
                "regarding.apiVersion",
                "regarding.resourceVersion",
                "regarding.fieldPath",
                "reason",
                "reportingController",
                "type",
            ],
            // ResourceSlices are listed per driver and node (plexus's DRA lookup does both).
            _ if self.group == DRA_GROUP && self.plural == "resourceslices" => {
                &["metadata.name", "spec.nodeName", "spec.driver"]
            }
            _ => &["metadata.name", "metadata.namespace"],
        }
    }

    /// A field selector's value for a stored object.
    pub fn field_value(&self, stored: &Value, field: &str) -> String {
        let field = match self.flavor {
            Flavor::EventV1 => {
                if let Some(rest) = field.strip_prefix("regarding.") {
                    format!("involvedObject.{rest}")
                } else if field == "reportingController" {
                    "reportingComponent".into()
                } else {
                    field.into()
                }
            }
            _ => field.into(),
        };
        match (&self.flavor, field.as_str()) {
            (Flavor::CoreEvent, "source") => {
                super::selector::field_value(stored, "source.component")
            }
            (Flavor::Pod, "spec.hostNetwork") => {
                (stored.pointer("/spec/hostNetwork") == Some(&Value::Bool(true))).to_string()
            }
            (_, f) => super::selector::field_value(stored, f),
        }
    }

    /// The object as clients of this type see it.
    pub fn to_external(&self, stored: &Value) -> Value {
        let mut v = match self.flavor {
            Flavor::EventV1 => rename(stored, CORE_TO_V1),
            _ => stored.clone(),
        };
        set_type_meta(&mut v, &self.api_version(), &self.kind);
        v
    }

    /// The object as stored, from what a client of this type sent.
    pub fn to_internal(&self, external: Value) -> Value {
        match self.flavor {
            Flavor::EventV1 => {
                let mut v = rename(&external, V1_TO_CORE);
                set_type_meta(&mut v, "v1", "Event");
                v
            }
            _ => {
                let mut v = external;
                set_type_meta(&mut v, &self.api_version(), &self.kind);
                v
            }
        }
    }
}

/// Sets `apiVersion` and `kind`, keeping them first in the object.
pub fn set_type_meta(v: &mut Value, api_version: &str, kind: &str) {
    if let Value::Object(map) = v {
        let mut out = Map::new();
        out.insert("apiVersion".into(), json!(api_version));
        out.insert("kind".into(), json!(kind));
        for (k, val) in std::mem::take(map) {
            if k != "apiVersion" && k != "kind" {
                out.insert(k, val);
            }
        }
        *map = out;
    }
}

const CORE_TO_V1: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];
const V1_TO_CORE: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(v: &Value, table: &[(&str, &str)]) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, val)| {
                    let k = table
                        .iter()
                        .find(|(from, _)| from == k)
                        .map_or(k.as_str(), |(_, to)| to);
                    (k.to_string(), val.clone())
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The types served from the start.
pub fn builtins() -> Vec<ResourceType> {
    use StatusMode as S;
    let mut events_v1 = ResourceType::builtin(
        "events.k8s.io",
        "events",
        "Event",
        true,
        &["ev"],
        S::None,
        Flavor::EventV1,
    );
    events_v1.storage = "events".into();
    vec![
        ResourceType::builtin(
            "",
            "namespaces",
            "Namespace",
            false,
            &["ns"],
            S::MetaAndStatus,
            Flavor::Namespace,
        ),
        ResourceType::builtin(
            "",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            S::None,
            Flavor::Plain,
        ),
        ResourceType::builtin(
            "",
            "pods",
            "Pod",
            true,
            &["po"],
            S::MetaAndStatus,
            Flavor::Pod,
        ),
        // Nodes are plain objects (no kubelet reports on them): the suite makes one to bind tokens to.
        ResourceType::builtin(
            "",
            "nodes",
            "Node",
            false,
            &["no"],
            S::MetaAndStatus,
            Flavor::Plain,
        ),
        ResourceType::builtin(
            "",
            "events",
            "Event",
            true,
            &["ev"],
            S::None,
            Flavor::CoreEvent,
        ),
        events_v1,
        ResourceType::builtin(
            RBAC_GROUP,
            "roles",
            "Role",
            true,
            &[],
            S::None,
            Flavor::Rbac(RbacKind::Role),
        ),
        ResourceType::builtin(
            RBAC_GROUP,
            "clusterroles",
            "ClusterRole",
            false,
            &[],
            S::None,
            Flavor::Rbac(RbacKind::ClusterRole),
        ),
        ResourceType::builtin(
            RBAC_GROUP,
            "rolebindings",
            "RoleBinding",
            true,
            &[],
            S::None,
            Flavor::Rbac(RbacKind::RoleBinding),
        ),
        ResourceType::builtin(
            RBAC_GROUP,
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            &[],
            S::None,
            Flavor::Rbac(RbacKind::ClusterRoleBinding),
        ),
        // DRA (`resource.k8s.io/v1`): a claim is validated, and its allocation written through `/status`
        // (which writes nothing else); slices are plain objects.
        ResourceType::builtin(
            DRA_GROUP,
            "resourceclaims",
            "ResourceClaim",
            true,
            &[],
            S::StatusOnly,
            Flavor::ResourceClaim,
        ),
        ResourceType::builtin(
            DRA_GROUP,
            "resourceslices",
            "ResourceSlice",
            false,
            &[],
            S::None,
            Flavor::Plain,
        ),
        ResourceType::builtin(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            S::MetaAndStatus,
            Flavor::Crd,
        ),
    ]
}

/// The Dynamic Resource Allocation API group.
pub const DRA_GROUP: &str = "resource.k8s.io";

/// The RBAC API group.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Namespaces that exist from the start and cannot be deleted.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

type Causes = Vec<(String, String)>;

fn required(causes: &mut Causes, field: &str) {
    causes.push((field.into(), "Required value".into()));
}

fn nonempty_str(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str).is_some_and(|s| !s.is_empty())
}

/// RFC 1123 label (`namespace` names) or subdomain (most other names).
pub fn valid_name(name: &str, label: bool) -> bool {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !p.starts_with('-')
            && !p.ends_with('-')
    };
    if label {
        name.len() <= 63 && part_ok(name)
    } else {
        name.len() <= 253 && name.split('.').all(part_ok)
    }
}

/// Field errors for a pod on create or update.
pub fn validate_pod(pod: &Value) -> Causes {
    let mut causes = Vec::new();
    match pod.pointer("/spec/containers").and_then(Value::as_array) {
        Some(cs) if !cs.is_empty() => {
            for (i, c) in cs.iter().enumerate() {
                if !nonempty_str(c.get("name")) {
                    required(&mut causes, &format!("spec.containers[{i}].name"));
                }
                if !nonempty_str(c.get("image")) {
                    required(&mut causes, &format!("spec.containers[{i}].image"));
                }
            }
        }
        _ => required(&mut causes, "spec.containers"),
    }
    causes.extend(super::dra::validate_pod_claims(pod));
    causes
}

fn mutable_view(spec: Option<&Value>) -> Value {
    let mut s = spec.cloned().unwrap_or(Value::Null);
    if let Value::Object(map) = &mut s {
        for list in ["containers", "initContainers"] {
            if let Some(Value::Array(items)) = map.get_mut(list) {
                for c in items.iter_mut().filter_map(Value::as_object_mut) {
                    c.remove("image");
                }
            }
        }
        map.remove("activeDeadlineSeconds");
        map.remove("tolerations");
    }
    s
}

/// The error for a pod update that changes an immutable part of the spec.
pub fn pod_spec_change(old: &Value, new: &Value) -> Option<(String, String)> {
    if mutable_view(old.get("spec")) == mutable_view(new.get("spec")) {
        return None;
    }
    Some((
        "spec".into(),
        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,\
         `spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` \
         (only additions to existing tolerations)"
            .into(),
    ))
}

fn str_list(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Checks an RBAC object's field types the way the real server decodes it (a 400 when, say, `verbs` is not
/// a list of strings), then applies its defaults and validation: rules need verbs and either API groups and
/// resources or (ClusterRoles only) non-resource URLs; bindings need a `roleRef` to a Role or ClusterRole in
/// `rbac.authorization.k8s.io` (ClusterRoleBindings: ClusterRole only), immutable once set (`old`), and
/// subjects of kind ServiceAccount (with a namespace in ClusterRoleBindings), User or Group, whose
/// `apiGroup` defaults as in `rbac/v1`.
pub fn prepare_rbac(
    kind: RbacKind,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<Causes, super::error::ApiError> {
    use k8s_openapi::api::rbac::v1 as rbac;
    let decoded = match kind {
        RbacKind::Role => serde_json::from_value::<rbac::Role>(obj.clone()).map(drop),
        RbacKind::ClusterRole => serde_json::from_value::<rbac::ClusterRole>(obj.clone()).map(drop),
        RbacKind::RoleBinding => serde_json::from_value::<rbac::RoleBinding>(obj.clone()).map(drop),
        RbacKind::ClusterRoleBinding => {
            serde_json::from_value::<rbac::ClusterRoleBinding>(obj.clone()).map(drop)
        }
    };
    if let Err(e) = decoded {
        return Err(super::error::ApiError::bad_request(format!(
            "error decoding request body: {e}"
        )));
    }
    let mut causes = Vec::new();
    match kind {
        RbacKind::Role | RbacKind::ClusterRole => {
            let rules = obj.get("rules").and_then(Value::as_array).cloned();
            for (i, rule) in rules.unwrap_or_default().iter().enumerate() {
                let at = |f: &str| format!("rules[{i}].{f}");
                if str_list(rule.get("verbs")).is_empty() {
                    causes.push((
                        at("verbs"),
                        "Required value: verbs must contain at least one value".into(),
                    ));
                }
                let urls = str_list(rule.get("nonResourceURLs"));
                let groups = rule
                    .get("apiGroups")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                let resources = str_list(rule.get("resources"));
                if !urls.is_empty() {
                    if kind == RbacKind::Role {
                        causes.push((
                            at("nonResourceURLs"),
                            "Invalid value: namespaced rules cannot apply to non-resource URLs"
                                .into(),
                        ));
                    }
                    if groups > 0 || !resources.is_empty() {
                        causes.push((
                            at("nonResourceURLs"),
                            "Invalid value: rules cannot apply to both regular resources and non-resource URLs"
                                .into(),
                        ));
                    }
                } else {
                    if groups == 0 {
                        causes.push((
                            at("apiGroups"),
                            "Required value: resource rules must supply at least one api group"
                                .into(),
                        ));
                    }
                    if resources.is_empty() {
                        causes.push((
                            at("resources"),
                            "Required value: resource rules must supply at least one resource"
                                .into(),
                        ));
                    }
                }
            }
        }
        RbacKind::RoleBinding | RbacKind::ClusterRoleBinding => {
            let role_ref = obj.get("roleRef").cloned().unwrap_or(Value::Null);
            let s = |f: &str| role_ref.get(f).and_then(Value::as_str).unwrap_or("");
            if s("apiGroup") != RBAC_GROUP {
                causes.push((
                    "roleRef.apiGroup".into(),
                    format!(
                        "Unsupported value: \"{}\": supported values: \"{RBAC_GROUP}\"",
                        s("apiGroup")
                    ),
                ));
            }
            let kinds: &[&str] = if kind == RbacKind::RoleBinding {
                &["Role", "ClusterRole"]
            } else {
                &["ClusterRole"]
            };
            if !kinds.contains(&s("kind")) {
                let supported: Vec<String> = kinds.iter().map(|k| format!("\"{k}\"")).collect();
                causes.push((
                    "roleRef.kind".into(),
                    format!(
                        "Unsupported value: \"{}\": supported values: {}",
                        s("kind"),
                        supported.join(", ")
                    ),
                ));
            }
            if s("name").is_empty() {
                required(&mut causes, "roleRef.name");
            }
            if let Some(old_ref) = old.map(|o| o.get("roleRef").cloned().unwrap_or(Value::Null))
                && old_ref != role_ref
            {
                causes.push((
                    "roleRef".into(),
                    "Invalid value: cannot change roleRef".into(),
                ));
            }
            if let Some(subjects) = obj.get_mut("subjects").and_then(Value::as_array_mut) {
                for (i, subject) in subjects.iter_mut().enumerate() {
                    let at = |f: &str| format!("subjects[{i}].{f}");
                    let sk = subject
                        .get("kind")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    let group = subject
                        .get("apiGroup")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let want_group = match sk.as_str() {
                        "ServiceAccount" => "",
                        "User" | "Group" => RBAC_GROUP,
                        other => {
                            causes.push((
                                at("kind"),
                                format!("Unsupported value: \"{other}\": supported values: \"ServiceAccount\", \"User\", \"Group\""),
                            ));
                            continue;
                        }
                    };
                    if group.is_empty() {
                        if !want_group.is_empty() {
                            subject["apiGroup"] = json!(want_group);
                        }
                    } else if group != want_group {
                        causes.push((
                            at("apiGroup"),
                            format!(
                                "Unsupported value: \"{group}\": supported values: \"{want_group}\""
                            ),
                        ));
                    }
                    if !nonempty_str(subject.get("name")) {
                        required(&mut causes, &at("name"));
                    }
                    if sk == "ServiceAccount"
                        && kind == RbacKind::ClusterRoleBinding
                        && !nonempty_str(subject.get("namespace"))
                    {
                        required(&mut causes, &at("namespace"));
                    }
                }
            }
        }
    }
    Ok(causes)
}

/// Validates a CRD and fills in the defaults and status the real server sets.
pub fn prepare_crd(crd: &mut Value) -> Causes {
    let mut causes = Vec::new();
    let spec = crd.get("spec").cloned().unwrap_or(Value::Null);
    let group = spec.get("group").and_then(Value::as_str).unwrap_or("");
    let plural = spec
        .pointer("/names/plural")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = spec
        .pointer("/names/kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    if group.is_empty() {
        required(&mut causes, "spec.group");
    }
    if plural.is_empty() {
        required(&mut causes, "spec.names.plural");
    }
    if kind.is_empty() {
        required(&mut causes, "spec.names.kind");
    }
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push((
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    match spec.get("scope").and_then(Value::as_str) {
        Some("Namespaced") | Some("Cluster") => {}
        _ => causes.push((
            "spec.scope".into(),
            "Unsupported value: must be \"Namespaced\" or \"Cluster\"".into(),
        )),
    }
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        required(&mut causes, "spec.versions");
    }
    let storage: Vec<&Value> = versions
        .iter()
        .filter(|v| v.get("storage") == Some(&json!(true)))
        .collect();
    if !versions.is_empty() && storage.len() != 1 {
        causes.push((
            "spec.versions".into(),
            "Invalid value: must have exactly one version marked as storage version".into(),
        ));
    }
    for (i, v) in versions.iter().enumerate() {
        if !nonempty_str(v.get("name")) {
            required(&mut causes, &format!("spec.versions[{i}].name"));
        }
        if v.pointer("/schema/openAPIV3Schema").is_none() {
            causes.push((
                format!("spec.versions[{i}].schema.openAPIV3Schema"),
                "Required value: schemas are required".into(),
            ));
        }
    }
    if !causes.is_empty() {
        return causes;
    }
    let names = &mut crd["spec"]["names"];
    if !nonempty_str(names.get("singular")) {
        names["singular"] = json!(kind.to_lowercase());
    }
    if !nonempty_str(names.get("listKind")) {
        names["listKind"] = json!(format!("{kind}List"));
    }
    let accepted = names.clone();
    if crd["spec"].get("conversion").is_none() {
        crd["spec"]["conversion"] = json!({"strategy": "None"});
    }
    let now = super::util::now_rfc3339();
    let stored_version = storage[0]["name"].clone();
    crd["status"] = json!({
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now,
             "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": now,
             "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}
        ],
        "acceptedNames": accepted,
        "storedVersions": [stored_version],
    });
    causes
}

/// The resource types a (validated) CRD serves.
pub fn crd_types(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let s = |p: &str| {
        spec.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (group, plural, kind) = (s("/group"), s("/names/plural"), s("/names/kind"));
    let singular = Some(s("/names/singular"))
        .filter(|x| !x.is_empty())
        .unwrap_or_else(|| kind.to_lowercase());
    let short_names: Vec<String> = spec
        .pointer("/names/shortNames")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let namespaced = s("/scope") == "Namespaced";
    spec.get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("served") != Some(&json!(false)))
        .map(|v| ResourceType {
            group: group.clone(),
            version: v["name"].as_str().unwrap_or("").to_string(),
            plural: plural.clone(),
            singular: singular.clone(),
            kind: kind.clone(),
            namespaced,
            short_names: short_names.clone(),
            status: if v.pointer("/subresources/status").is_some() {
                StatusMode::StatusOnly
            } else {
                StatusMode::None
            },
            storage: format!("{plural}.{group}"),
            flavor: Flavor::Custom(v.pointer("/schema/openAPIV3Schema").cloned()),
        })
        .collect()
}

fn type_ok(v: &Value, schema: &Value) -> Result<(), String> {
    if schema.get("x-kubernetes-int-or-string") == Some(&json!(true)) {
        return if v.is_string() || v.is_i64() || v.is_u64() {
            Ok(())
        } else {
            Err("integer or string".into())
        };
    }
    let Some(t) = schema.get("type").and_then(Value::as_str) else {
        return Ok(());
    };
    let ok = match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    };
    if ok { Ok(()) } else { Err(t.to_string()) }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Prunes unknown fields and checks types against a structural schema, as the
/// real server does for custom resources. `metadata` is left alone.
pub fn prune_and_check(v: &mut Value, schema: &Value, path: &str, root: bool, causes: &mut Causes) {
    if let Err(want) = type_ok(v, schema) {
        causes.push((
            path.into(),
            format!(
                "Invalid value: \"{got}\": {path} in body must be of type {want}: \"{got}\"",
                got = json_type(v)
            ),
        ));
        return;
    }
    match v {
        Value::Object(map) => {
            let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let child_schema = props
                    .and_then(|p| p.get(&k))
                    .or(additional.filter(|a| a.is_object()));
                let child_path = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match child_schema {
                    Some(cs) => {
                        if map[&k].is_null() && cs.get("nullable") != Some(&json!(true)) {
                            map.remove(&k);
                        } else if let Some(child) = map.get_mut(&k) {
                            prune_and_check(child, cs, &child_path, false, causes);
                        }
                    }
                    None if preserve || additional == Some(&json!(true)) => {}
                    None => {
                        map.remove(&k);
                    }
                }
            }
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(r) = r.as_str().filter(|r| !map.contains_key(*r)) {
                    let f = if path.is_empty() {
                        r.to_string()
                    } else {
                        format!("{path}.{r}")
                    };
                    required(causes, &f);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_and_check(item, item_schema, &format!("{path}[{i}]"), false, causes);
                }
            }
        }
        _ => {}
    }
}

/// The NetworkAttachmentDefinition CRD (as in the Network Plumbing Working Group's spec).
pub fn nad_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "network-attachment-definitions.k8s.cni.cncf.io"},
        "spec": {
            "group": "k8s.cni.cncf.io",
            "scope": "Namespaced",
            "names": {
                "plural": "network-attachment-definitions",
                "singular": "network-attachment-definition",
                "kind": "NetworkAttachmentDefinition",
                "shortNames": ["net-attach-def"]
            },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {
                    "description": "NetworkAttachmentDefinition is a CRD schema specified by the Network Plumbing Working Group to express the intent for attaching pods to one or more logical or physical networks.",
                    "type": "object",
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": {
                            "description": "NetworkAttachmentDefinition spec defines the desired state of a network attachment",
                            "type": "object",
                            "properties": {
                                "config": {
                                    "description": "NetworkAttachmentDefinition config is a JSON-formatted CNI configuration",
                                    "type": "string"
                                }
                            }
                        }
                    }
                }}
            }]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("a-b.c", false));
        assert!(!valid_name("a-b.c", true));
        assert!(!valid_name("A", false));
        assert!(!valid_name("-a", false));
        assert!(!valid_name("", false));
    }

    #[test]
    fn crd_schema_prunes_and_checks() {
        let mut crd = nad_crd();
        assert!(prepare_crd(&mut crd).is_empty());
        assert_eq!(crd["status"]["conditions"][1]["type"], "Established");
        let types = crd_types(&crd);
        assert_eq!(types.len(), 1);
        let Flavor::Custom(Some(schema)) = &types[0].flavor else {
            panic!()
        };
        let mut nad = json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "n", "x": 1}, "spec": {"config": "{}", "extra": true}, "junk": 1});
        let mut causes = Vec::new();
        prune_and_check(&mut nad, schema, "", true, &mut causes);
        assert!(causes.is_empty());
        assert_eq!(nad["spec"], json!({"config": "{}"}));
        assert!(nad.get("junk").is_none());
        assert_eq!(nad["metadata"]["x"], 1);
        let mut bad = json!({"spec": {"config": {"cniVersion": "1.0.0"}}});
        prune_and_check(&mut bad, schema, "", true, &mut causes);
        assert_eq!(causes[0].0, "spec.config");
    }

    #[test]
    fn events_convert_both_ways() {
        let v1 = builtins()
            .into_iter()
            .find(|t| t.flavor == Flavor::EventV1)
            .unwrap();
        let ext = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "hi", "reportingController": "plexus"});
        let stored = v1.to_internal(ext.clone());
        assert_eq!(stored["involvedObject"]["name"], "p");
        assert_eq!(stored["message"], "hi");
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(v1.to_external(&stored), ext);
        assert_eq!(v1.field_value(&stored, "regarding.name"), "p");
    }

    #[test]
    fn pod_rules() {
        let old = json!({"spec": {"containers": [{"name": "c", "image": "a"}], "nodeName": "n"}});
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("b");
        assert!(pod_spec_change(&old, &new).is_none());
        new["spec"]["nodeName"] = json!("m");
        assert!(pod_spec_change(&old, &new).is_some());
        assert!(validate_pod(&old).is_empty());
        assert_eq!(validate_pod(&json!({"spec": {}}))[0].0, "spec.containers");
    }
}
