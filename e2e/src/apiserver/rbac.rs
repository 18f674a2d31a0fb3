//! RBAC authorization, as the real apiserver's `RBAC` authorizer does it, for every identity but the
//! bootstrap token's (which is in `system:masters` and, as on a real server, is never checked).
//!
//! A resource request is described by its [`Attributes`] (verb, API group, resource, subresource,
//! namespace, name), taken from the URL like the real server's `RequestInfo`. It is allowed when any
//! binding that applies to the user grants a rule that covers it:
//!
//! - every ClusterRoleBinding whose subjects include the user, with its ClusterRole's rules, everywhere;
//! - when the request is in a namespace, every RoleBinding *in that namespace* whose subjects include the
//!   user, with its Role's (same namespace) or ClusterRole's rules, in that namespace only.
//!
//! A rule covers a request when its `verbs`, `apiGroups` and `resources` each contain the request's
//! value or `*` (a resource is `pods` or `pods/status`; `*/status` covers every status subresource) and,
//! when it has `resourceNames`, the request names one of them (so a list or create never matches such a
//! rule). Subjects are `User` (by name), `Group` (by one of the user's groups) and `ServiceAccount`
//! (`system:serviceaccount:<namespace>:<name>`; in a RoleBinding the namespace defaults to the binding's).
//! Bindings to roles that do not exist grant nothing. Otherwise the answer is the real server's 403.

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject,
};
use serde_json::{Value, json};

use super::error::ApiError;
use super::resources::RBAC_GROUP;
use super::store::Store;

/// The group whose members bypass authorization (the bootstrap token's user is in it).
pub const MASTERS_GROUP: &str = "system:masters";
/// Every authenticated user is in this group.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// User name (`system:serviceaccount:<ns>:<name>` for a service account).
    pub name: String,
    /// Groups, `system:authenticated` included.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The bootstrap token's user: a member of `system:masters`.
    pub fn admin() -> UserInfo {
        UserInfo {
            name: "plexus-standin-admin".into(),
            groups: vec![MASTERS_GROUP.into(), AUTHENTICATED_GROUP.into()],
        }
    }

    /// Who a request without (valid) credentials is: only public paths answer it.
    pub fn anonymous() -> UserInfo {
        UserInfo {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    /// The identity of ServiceAccount `ns/name`.
    pub fn service_account(ns: &str, name: &str) -> UserInfo {
        UserInfo {
            name: service_account_user(ns, name),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                AUTHENTICATED_GROUP.into(),
            ],
        }
    }

    /// Whether RBAC is bypassed for this user.
    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS_GROUP)
    }
}

/// `system:serviceaccount:<ns>:<name>`.
pub fn service_account_user(ns: &str, name: &str) -> String {
    format!("system:serviceaccount:{ns}:{name}")
}

/// What a resource request asks to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// API group ("" for core).
    pub group: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource ("" for none).
    pub subresource: String,
    /// Namespace ("" for cluster scope).
    pub namespace: String,
    /// Object name ("" for a collection).
    pub name: String,
}

impl Attributes {
    /// `resource` or `resource/subresource`.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

fn contains_or_star(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

/// Whether `rule` covers the request (the real `RuleAllows` for resource requests).
pub fn rule_allows(rule: &PolicyRule, a: &Attributes) -> bool {
    let empty = Vec::new();
    let groups = rule.api_groups.as_ref().unwrap_or(&empty);
    let resources = rule.resources.as_ref().unwrap_or(&empty);
    let combined = a.combined_resource();
    let resource_ok = resources.iter().any(|r| {
        r == "*"
            || *r == combined
            || (!a.subresource.is_empty() && r.strip_prefix("*/") == Some(a.subresource.as_str()))
    });
    let name_ok = rule
        .resource_names
        .as_ref()
        .is_none_or(|names| names.is_empty() || names.contains(&a.name));
    contains_or_star(&rule.verbs, &a.verb)
        && contains_or_star(groups, &a.group)
        && resource_ok
        && name_ok
}

/// Whether `subject` of a binding in `binding_ns` ("" for a ClusterRoleBinding) is `user`.
pub fn applies_to(subject: &Subject, user: &UserInfo, binding_ns: &str) -> bool {
    match subject.kind.as_str() {
        "User" => subject.name == user.name,
        "Group" => user.groups.contains(&subject.name),
        "ServiceAccount" => {
            let ns = subject
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            !ns.is_empty() && service_account_user(ns, &subject.name) == user.name
        }
        _ => false,
    }
}

fn typed<T: serde::de::DeserializeOwned>(store: &Store, plural: &str, ns: Option<&str>) -> Vec<T> {
    let Some(rt) = store.resolve(RBAC_GROUP, "v1", plural) else {
        return Vec::new();
    };
    store
        .stored(&rt, ns)
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect()
}

fn named<'a, T>(items: &'a [T], name: &str, meta: impl Fn(&T) -> Option<&String>) -> Option<&'a T> {
    items.iter().find(|i| meta(i).is_some_and(|n| n == name))
}

/// The rules that apply to `user` for a request in `namespace` ("" for cluster scope).
pub fn rules_for(store: &Store, user: &UserInfo, namespace: &str) -> Vec<PolicyRule> {
    let cluster_roles: Vec<ClusterRole> = typed(store, "clusterroles", None);
    let cluster_role_rules = |name: &str| {
        named(&cluster_roles, name, |r: &ClusterRole| {
            r.metadata.name.as_ref()
        })
        .and_then(|r| r.rules.clone())
        .unwrap_or_default()
    };
    let mut rules = Vec::new();
    for b in typed::<ClusterRoleBinding>(store, "clusterrolebindings", None) {
        let subjects = b.subjects.unwrap_or_default();
        if b.role_ref.kind == "ClusterRole" && subjects.iter().any(|s| applies_to(s, user, "")) {
            rules.extend(cluster_role_rules(&b.role_ref.name));
        }
    }
    if !namespace.is_empty() {
        let roles: Vec<Role> = typed(store, "roles", Some(namespace));
        for b in typed::<RoleBinding>(store, "rolebindings", Some(namespace)) {
            let subjects = b.subjects.unwrap_or_default();
            if !subjects.iter().any(|s| applies_to(s, user, namespace)) {
                continue;
            }
            match b.role_ref.kind.as_str() {
                "ClusterRole" => rules.extend(cluster_role_rules(&b.role_ref.name)),
                "Role" => rules.extend(
                    named(&roles, &b.role_ref.name, |r: &Role| {
                        r.metadata.name.as_ref()
                    })
                    .and_then(|r| r.rules.clone())
                    .unwrap_or_default(),
                ),
                _ => {}
            }
        }
    }
    rules
}

/// Whether `user` may make the request `a`.
pub fn allowed(store: &Store, user: &UserInfo, a: &Attributes) -> bool {
    user.is_master()
        || rules_for(store, user, &a.namespace)
            .iter()
            .any(|r| rule_allows(r, a))
}

/// `Ok` when allowed, else the real server's 403.
pub fn authorize(store: &Store, user: &UserInfo, a: &Attributes) -> Result<(), ApiError> {
    if allowed(store, user, a) {
        Ok(())
    } else {
        Err(forbidden(user, a))
    }
}

/// The 403 the real server answers (`responsewriters.Forbidden` with `apierrors.NewForbidden`), e.g.
/// `pods "x" is forbidden: User "system:serviceaccount:ns:sa" cannot patch resource "pods/status" in API
/// group "" in the namespace "ns"`.
pub fn forbidden(user: &UserInfo, a: &Attributes) -> ApiError {
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    let why = format!(
        "User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
        user.name,
        a.verb,
        a.combined_resource(),
        a.group
    );
    let qualified = if a.group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.group)
    };
    let message = if a.name.is_empty() {
        format!("{qualified} is forbidden: {why}")
    } else {
        format!("{qualified} \"{}\" is forbidden: {why}", a.name)
    };
    let mut e = ApiError::new(403, message);
    let mut details = serde_json::Map::new();
    if !a.name.is_empty() {
        details.insert("name".into(), json!(a.name));
    }
    if !a.group.is_empty() {
        details.insert("group".into(), json!(a.group));
    }
    details.insert("kind".into(), json!(a.resource));
    e.details = Some(Value::Object(details));
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "team";

    fn sa() -> UserInfo {
        UserInfo::service_account(NS, "plexus")
    }

    fn attrs(verb: &str, group: &str, resource: &str, ns: &str, name: &str) -> Attributes {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        Attributes {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn store_with(objs: &[Value]) -> Store {
        let mut s = Store::new();
        for ns in [NS, "other"] {
            s.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
                .unwrap();
        }
        for o in objs {
            s.seed(o.clone()).unwrap_or_else(|e| panic!("{e}: {o}"));
        }
        s
    }

    fn cluster_role(name: &str, rules: Value) -> Value {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": name}, "rules": rules})
    }

    fn role(ns: &str, name: &str, rules: Value) -> Value {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": name, "namespace": ns}, "rules": rules})
    }

    fn sa_subject() -> Value {
        json!({"kind": "ServiceAccount", "name": "plexus", "namespace": NS})
    }

    fn crb(role: &str, subject: Value) -> Value {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": format!("bind-{role}")},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
               "subjects": [subject]})
    }

    fn rb(ns: &str, kind: &str, role: &str, subject: Value) -> Value {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": format!("bind-{role}"), "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
               "subjects": [subject]})
    }

    /// deploy/clusterrole.yaml's rules.
    fn plexus_rules() -> Value {
        json!([
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch"]},
            {"apiGroups": ["k8s.cni.cncf.io"], "resources": ["network-attachment-definitions"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
        ])
    }

    #[test]
    fn admin_bypasses_and_nobody_else_has_anything_by_default() {
        let s = store_with(&[]);
        let a = attrs("delete", "", "namespaces", "x", "x");
        assert!(allowed(&s, &UserInfo::admin(), &a));
        assert!(!allowed(&s, &sa(), &a));
        assert!(!allowed(&s, &sa(), &attrs("get", "", "pods", NS, "p")));
    }

    #[test]
    fn verbs_and_subresources_of_the_plexus_cluster_role() {
        let s = store_with(&[
            cluster_role("plexus", plexus_rules()),
            crb("plexus", sa_subject()),
        ]);
        let u = sa();
        let ok = |verb: &str, group: &str, res: &str, ns: &str, name: &str| {
            allowed(&s, &u, &attrs(verb, group, res, ns, name))
        };
        assert!(ok("get", "", "pods", NS, "p"));
        assert!(
            ok("get", "", "pods", "other", "p"),
            "a ClusterRoleBinding applies in every namespace"
        );
        assert!(!ok("list", "", "pods", NS, ""), "get does not give list");
        assert!(!ok("watch", "", "pods", NS, ""));
        assert!(!ok("update", "", "pods", NS, "p"));
        assert!(
            !ok("patch", "", "pods", NS, "p"),
            "patch of pods/status is not patch of pods"
        );
        assert!(ok("patch", "", "pods/status", NS, "p"));
        assert!(!ok("update", "", "pods/status", NS, "p"));
        assert!(
            !ok("get", "", "pods/status", NS, "p"),
            "get of pods is not get of pods/status"
        );
        assert!(!ok("create", "", "pods/binding", NS, "p"));
        assert!(ok(
            "get",
            "k8s.cni.cncf.io",
            "network-attachment-definitions",
            NS,
            "n"
        ));
        assert!(
            !ok("get", "", "network-attachment-definitions", NS, "n"),
            "wrong group"
        );
        assert!(!ok(
            "list",
            "k8s.cni.cncf.io",
            "network-attachment-definitions",
            NS,
            ""
        ));
        assert!(ok("create", "", "events", NS, ""));
        assert!(ok("patch", "", "events", NS, "e"));
        assert!(
            !ok("create", "events.k8s.io", "events", NS, ""),
            "the other events API is another group"
        );
        assert!(!ok("delete", "", "events", NS, "e"));
        assert!(
            !ok("list", "", "pods", "", ""),
            "no list of pods across namespaces"
        );
        // Another identity, even in the same namespace, gets nothing.
        let other = UserInfo::service_account(NS, "default");
        assert!(!allowed(&s, &other, &attrs("get", "", "pods", NS, "p")));
    }

    #[test]
    fn wildcards() {
        let s = store_with(&[
            cluster_role(
                "verbs",
                json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]),
            ),
            cluster_role(
                "groups",
                json!([{"apiGroups": ["*"], "resources": ["widgets"], "verbs": ["get"]}]),
            ),
            cluster_role(
                "resources",
                json!([{"apiGroups": ["apps"], "resources": ["*"], "verbs": ["list"]}]),
            ),
            cluster_role(
                "statuses",
                json!([{"apiGroups": [""], "resources": ["*/status"], "verbs": ["patch"]}]),
            ),
            crb("verbs", sa_subject()),
            crb("groups", sa_subject()),
            crb("resources", sa_subject()),
            crb("statuses", sa_subject()),
        ]);
        let ok = |verb: &str, group: &str, res: &str| {
            allowed(&s, &sa(), &attrs(verb, group, res, NS, "x"))
        };
        for verb in [
            "get",
            "list",
            "watch",
            "create",
            "update",
            "patch",
            "delete",
            "deletecollection",
        ] {
            assert!(ok(verb, "", "configmaps"), "{verb}");
        }
        assert!(
            !ok("get", "", "configmaps/status"),
            "* verbs do not widen resources"
        );
        assert!(ok("get", "a.example", "widgets") && ok("get", "", "widgets"));
        assert!(!ok("list", "a.example", "widgets"));
        assert!(ok("list", "apps", "deployments") && ok("list", "apps", "deployments/scale"));
        assert!(!ok("list", "", "deployments"));
        assert!(ok("patch", "", "pods/status") && ok("patch", "", "namespaces/status"));
        assert!(
            !ok("patch", "", "pods"),
            "*/status is not the main resource"
        );
        assert!(!ok("patch", "", "pods/statusx"));
    }

    #[test]
    fn resource_names_restrict_to_named_requests() {
        let s = store_with(&[
            cluster_role(
                "one-pod",
                json!([{"apiGroups": [""], "resources": ["pods"], "resourceNames": ["web"], "verbs": ["get", "list", "create"]}]),
            ),
            crb("one-pod", sa_subject()),
        ]);
        let ok = |verb: &str, name: &str| allowed(&s, &sa(), &attrs(verb, "", "pods", NS, name));
        assert!(ok("get", "web"));
        assert!(!ok("get", "db"));
        assert!(!ok("list", ""), "a collection request names nothing");
        assert!(!ok("create", ""));
    }

    #[test]
    fn role_binding_scope_vs_cluster_role_binding() {
        let s = store_with(&[
            cluster_role(
                "reader",
                json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
            ),
            role(
                NS,
                "lister",
                json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]),
            ),
            role(
                "other",
                "deleter",
                json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}]),
            ),
            // A RoleBinding to a ClusterRole grants it in the binding's namespace only; its ServiceAccount
            // subject without a namespace means the binding's namespace.
            rb(
                NS,
                "ClusterRole",
                "reader",
                json!({"kind": "ServiceAccount", "name": "plexus"}),
            ),
            rb(NS, "Role", "lister", sa_subject()),
            // A Role of another namespace cannot be bound from here, and this binding is in "other" anyway.
            rb(
                "other",
                "Role",
                "deleter",
                json!({"kind": "ServiceAccount", "name": "plexus"}),
            ),
        ]);
        let ok = |verb: &str, ns: &str| allowed(&s, &sa(), &attrs(verb, "", "pods", ns, "p"));
        assert!(ok("get", NS));
        assert!(!ok("get", "other"), "the RoleBinding is in {NS}");
        assert!(!ok("get", ""), "nor at the cluster scope");
        assert!(ok("list", NS));
        assert!(!ok("list", "other"));
        assert!(
            !ok("delete", "other"),
            "the subject defaults to the binding's namespace: other:plexus"
        );
        assert!(!ok("delete", NS));

        // The same ClusterRole through a ClusterRoleBinding: everywhere, cluster scope too.
        let s = store_with(&[
            cluster_role(
                "reader",
                json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
            ),
            crb("reader", sa_subject()),
        ]);
        for ns in [NS, "other", ""] {
            assert!(
                allowed(&s, &sa(), &attrs("get", "", "pods", ns, "p")),
                "{ns:?}"
            );
        }
    }

    #[test]
    fn subjects_users_groups_and_missing_roles() {
        let s = store_with(&[
            cluster_role(
                "reader",
                json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
            ),
            crb(
                "reader",
                json!({"kind": "Group", "name": "system:serviceaccounts:team"}),
            ),
            crb("ghost", json!({"kind": "User", "name": "alice"})),
            rb(
                "other",
                "ClusterRole",
                "reader",
                json!({"kind": "User", "name": "bob"}),
            ),
        ]);
        let get = |u: &UserInfo, ns: &str| allowed(&s, u, &attrs("get", "", "pods", ns, "p"));
        assert!(
            get(&UserInfo::service_account(NS, "anyone"), "other"),
            "by group"
        );
        assert!(!get(&UserInfo::service_account("other", "anyone"), "other"));
        let user = |n: &str| UserInfo {
            name: n.into(),
            groups: vec![AUTHENTICATED_GROUP.into()],
        };
        assert!(
            !get(&user("alice"), NS),
            "bound to a ClusterRole that does not exist"
        );
        assert!(get(&user("bob"), "other"));
        assert!(!get(&user("bob"), NS));
    }

    #[test]
    fn forbidden_reads_like_the_real_server() {
        let u = sa();
        let e = forbidden(&u, &attrs("patch", "", "pods/status", NS, "x"));
        assert_eq!(e.code, 403);
        assert_eq!(e.reason, "Forbidden");
        assert_eq!(
            e.message,
            "pods \"x\" is forbidden: User \"system:serviceaccount:team:plexus\" cannot patch resource \
             \"pods/status\" in API group \"\" in the namespace \"team\""
        );
        assert_eq!(e.details, Some(json!({"name": "x", "kind": "pods"})));
        let e = forbidden(
            &u,
            &attrs(
                "list",
                "k8s.cni.cncf.io",
                "network-attachment-definitions",
                "",
                "",
            ),
        );
        assert_eq!(
            e.message,
            "network-attachment-definitions.k8s.cni.cncf.io is forbidden: User \
             \"system:serviceaccount:team:plexus\" cannot list resource \"network-attachment-definitions\" \
             in API group \"k8s.cni.cncf.io\" at the cluster scope"
        );
        assert_eq!(
            e.details,
            Some(json!({"group": "k8s.cni.cncf.io", "kind": "network-attachment-definitions"}))
        );
    }

    #[test]
    fn rbac_objects_are_validated() {
        let mut s = store_with(&[]);
        let bad_rule = cluster_role(
            "r",
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": []}]),
        );
        let e = s.seed(bad_rule).unwrap_err();
        assert_eq!(e.code, 422, "{e}");
        assert!(e.message.contains("rules[0].verbs"), "{e}");
        let no_group = cluster_role("r", json!([{"resources": ["pods"], "verbs": ["get"]}]));
        assert!(s.seed(no_group).unwrap_err().message.contains("api group"));
        let e = s
            .seed(cluster_role(
                "r",
                json!([{"apiGroups": [""], "resources": ["pods"], "verbs": "get"}]),
            ))
            .unwrap_err();
        assert_eq!(e.code, 400, "verbs is not a list: {e}");
        let mut b = crb("r", json!({"kind": "ServiceAccount", "name": "plexus"}));
        let e = s.seed(b.clone()).unwrap_err();
        assert!(
            e.message.contains("subjects[0].namespace: Required value"),
            "{e}"
        );
        b["subjects"][0]["namespace"] = json!(NS);
        b["roleRef"]["kind"] = json!("Role");
        assert!(
            s.seed(b.clone())
                .unwrap_err()
                .message
                .contains("roleRef.kind")
        );
        b["roleRef"]["kind"] = json!("ClusterRole");
        s.seed(b.clone()).unwrap();
        // roleRef is immutable.
        let crbs = s.resolve(RBAC_GROUP, "v1", "clusterrolebindings").unwrap();
        let mut changed = s.get(&crbs, "", "bind-r").unwrap();
        changed["roleRef"]["name"] = json!("other");
        let e = s.update(&crbs, "", "bind-r", changed, false).unwrap_err();
        assert!(e.message.contains("cannot change roleRef"), "{e}");
        // User subjects get their apiGroup defaulted.
        let u = s
            .seed(rb(
                NS,
                "Role",
                "x",
                json!({"kind": "User", "name": "alice"}),
            ))
            .unwrap();
        assert_eq!(u["subjects"][0]["apiGroup"], RBAC_GROUP);
    }
}
