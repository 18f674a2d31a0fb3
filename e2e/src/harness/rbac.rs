//! plexus's identity as `deploy/` defines it: the ServiceAccount, the least-privilege ClusterRole and the
//! ClusterRoleBinding, parsed from the manifests into their k8s-openapi types. The suite runs plexus with
//! a token of a ServiceAccount bound to exactly this ClusterRole (see [`super::world::World`]), so every
//! scenario proves the RBAC is enough; [`without`] makes the too-small copies that prove the suite would
//! notice if it were not.

use k8s_openapi::api::{
    core::v1::ServiceAccount,
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject},
};

/// `deploy/serviceaccount.yaml`.
pub const SERVICE_ACCOUNT_YAML: &str = include_str!("../../../deploy/serviceaccount.yaml");
/// `deploy/clusterrole.yaml`.
pub const CLUSTER_ROLE_YAML: &str = include_str!("../../../deploy/clusterrole.yaml");
/// `deploy/clusterrolebinding.yaml`.
pub const CLUSTER_ROLE_BINDING_YAML: &str = include_str!("../../../deploy/clusterrolebinding.yaml");
/// `deploy/role-host-token.yaml`: the installer's own API call, a Node-bound token of its ServiceAccount.
pub const HOST_TOKEN_ROLE_YAML: &str = include_str!("../../../deploy/role-host-token.yaml");
/// `deploy/rolebinding-host-token.yaml`.
pub const HOST_TOKEN_ROLE_BINDING_YAML: &str =
    include_str!("../../../deploy/rolebinding-host-token.yaml");
/// `deploy/daemon/clusterrole-daemon.yaml`: what daemon mode adds (list and watch pods and NADs).
pub const DAEMON_CLUSTER_ROLE_YAML: &str =
    include_str!("../../../deploy/daemon/clusterrole-daemon.yaml");
/// The lifetime of the tokens the suite requests for plexus: the shortest a real server issues.
pub const TOKEN_SECONDS: i64 = 600;

fn parse<T: serde::de::DeserializeOwned>(what: &str, yaml: &str) -> T {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("deploy/{what} does not parse: {e}"))
}

/// The ServiceAccount of `deploy/serviceaccount.yaml`.
pub fn deploy_service_account() -> ServiceAccount {
    parse("serviceaccount.yaml", SERVICE_ACCOUNT_YAML)
}

/// The ClusterRole of `deploy/clusterrole.yaml`.
pub fn deploy_cluster_role() -> ClusterRole {
    parse("clusterrole.yaml", CLUSTER_ROLE_YAML)
}

/// The ClusterRoleBinding of `deploy/clusterrolebinding.yaml`.
pub fn deploy_cluster_role_binding() -> ClusterRoleBinding {
    parse("clusterrolebinding.yaml", CLUSTER_ROLE_BINDING_YAML)
}

/// The Role of `deploy/role-host-token.yaml`, moved to namespace `ns` (its resourceNames name deploy's
/// ServiceAccount, which the suite makes in each test namespace).
pub fn host_token_role(ns: &str) -> Role {
    let mut r: Role = parse("role-host-token.yaml", HOST_TOKEN_ROLE_YAML);
    r.metadata.namespace = Some(ns.to_string());
    r
}

/// The RoleBinding of `deploy/rolebinding-host-token.yaml`, moved to namespace `ns`, binding Role `role` to
/// ServiceAccount `ns/sa`.
pub fn host_token_role_binding(ns: &str, role: &str, sa: &str) -> RoleBinding {
    let mut b: RoleBinding = parse("rolebinding-host-token.yaml", HOST_TOKEN_ROLE_BINDING_YAML);
    b.metadata.namespace = Some(ns.to_string());
    b.role_ref.name = role.to_string();
    b.subjects = Some(vec![Subject {
        kind: "ServiceAccount".into(),
        name: sa.to_string(),
        namespace: Some(ns.to_string()),
        api_group: None,
    }]);
    b
}

/// The ClusterRole of `deploy/daemon/clusterrole-daemon.yaml`.
pub fn daemon_cluster_role() -> ClusterRole {
    parse("daemon/clusterrole-daemon.yaml", DAEMON_CLUSTER_ROLE_YAML)
}

/// The name of deploy/daemon's extra ClusterRole.
pub fn daemon_cluster_role_name() -> String {
    daemon_cluster_role()
        .metadata
        .name
        .expect("deploy/daemon/clusterrole-daemon.yaml names its ClusterRole")
}

/// The name of deploy's ClusterRole.
pub fn deploy_cluster_role_name() -> String {
    deploy_cluster_role()
        .metadata
        .name
        .expect("deploy/clusterrole.yaml names its ClusterRole")
}

/// The name of deploy's ServiceAccount (the suite makes one of that name in each test namespace).
pub fn deploy_service_account_name() -> String {
    deploy_service_account()
        .metadata
        .name
        .expect("deploy/serviceaccount.yaml names its ServiceAccount")
}

/// deploy's ClusterRoleBinding renamed `name`, binding ClusterRole `role` to ServiceAccount `sa_ns/sa`.
pub fn binding(name: &str, role: &str, sa_ns: &str, sa: &str) -> ClusterRoleBinding {
    let mut b = deploy_cluster_role_binding();
    b.metadata = Default::default();
    b.metadata.name = Some(name.to_string());
    b.metadata.labels = deploy_cluster_role_binding().metadata.labels;
    b.role_ref.name = role.to_string();
    b.subjects = Some(vec![Subject {
        kind: "ServiceAccount".into(),
        name: sa.to_string(),
        namespace: Some(sa_ns.to_string()),
        api_group: None,
    }]);
    b
}

/// A copy of `role` (rules and labels) named `name`.
pub fn renamed(role: &ClusterRole, name: &str) -> ClusterRole {
    let mut out = role.clone();
    out.metadata = Default::default();
    out.metadata.name = Some(name.to_string());
    out.metadata.labels = role.metadata.labels.clone();
    out
}

/// A copy of `role` named `name` that no longer allows `verb` on `resource` (`pods/status`, say) in API
/// group `group`: the verb is taken out of every rule that grants it there, and rules left without a
/// verb or resource are dropped. Panics when `role` did not grant it (the copy would prove nothing).
pub fn without(
    role: &ClusterRole,
    name: &str,
    group: &str,
    resource: &str,
    verb: &str,
) -> ClusterRole {
    let mut out = renamed(role, name);
    let grants = |r: &PolicyRule| {
        r.api_groups.iter().flatten().any(|g| g == group)
            && r.resources.iter().flatten().any(|x| x == resource)
            && r.verbs.iter().any(|v| v == verb)
    };
    let rules = role.rules.clone().unwrap_or_default();
    assert!(
        rules.iter().any(grants),
        "ClusterRole {:?} does not grant {verb} on {resource:?} in group {group:?}",
        role.metadata.name
    );
    let mut kept = Vec::new();
    for rule in rules {
        if !grants(&rule) {
            kept.push(rule);
            continue;
        }
        // Split the rule: its other resources, and this resource in its other groups, keep every verb;
        // this resource in this group keeps every verb but `verb`.
        let mut other_resources = rule.clone();
        other_resources.resources = Some(
            rule.resources
                .iter()
                .flatten()
                .filter(|x| *x != resource)
                .cloned()
                .collect(),
        );
        let mut other_groups = rule.clone();
        other_groups.resources = Some(vec![resource.to_string()]);
        other_groups.api_groups = Some(
            rule.api_groups
                .iter()
                .flatten()
                .filter(|g| *g != group)
                .cloned()
                .collect(),
        );
        let mut this = rule;
        this.resources = Some(vec![resource.to_string()]);
        this.api_groups = Some(vec![group.to_string()]);
        this.verbs.retain(|v| v != verb);
        kept.extend([other_resources, other_groups, this]);
    }
    kept.retain(|r| {
        !r.verbs.is_empty()
            && r.resources.as_ref().is_some_and(|x| !x.is_empty())
            && r.api_groups.as_ref().is_some_and(|x| !x.is_empty())
    });
    out.rules = Some(kept);
    out
}

/// Whether `rules` grant `verb` on `resource` in `group` by name (no wildcards: deploy's role has none).
pub fn grants(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        r.api_groups.iter().flatten().any(|g| g == group)
            && r.resources.iter().flatten().any(|x| x == resource)
            && r.verbs.iter().any(|v| v == verb)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_manifests_parse_and_agree() {
        let role = deploy_cluster_role();
        let rules = role.rules.clone().unwrap();
        assert!(grants(&rules, "", "pods", "get"));
        assert!(grants(&rules, "", "pods/status", "patch"));
        assert!(grants(
            &rules,
            "k8s.cni.cncf.io",
            "network-attachment-definitions",
            "get"
        ));
        assert!(grants(&rules, "", "events", "create"));
        let token_role = host_token_role("ns1");
        assert_eq!(token_role.metadata.namespace.as_deref(), Some("ns1"));
        assert_eq!(
            token_role.rules.unwrap()[0].resource_names,
            deploy_service_account().metadata.name.map(|n| vec![n])
        );
        let tb = host_token_role_binding("ns1", "r", "plexus");
        assert_eq!(
            (tb.role_ref.kind.as_str(), tb.role_ref.name.as_str()),
            ("Role", "r")
        );
        assert_eq!(tb.subjects.unwrap()[0].namespace.as_deref(), Some("ns1"));
        let b = deploy_cluster_role_binding();
        assert_eq!(b.role_ref.kind, "ClusterRole");
        assert_eq!(Some(b.role_ref.name), role.metadata.name);
        let subject = &b.subjects.unwrap()[0];
        assert_eq!(
            Some(&subject.name),
            deploy_service_account().metadata.name.as_ref()
        );

        let mine = binding("plexus-e2e-x", "plexus", "ns1", "plexus");
        assert_eq!(mine.metadata.name.as_deref(), Some("plexus-e2e-x"));
        assert_eq!(
            mine.subjects.as_ref().unwrap()[0].namespace.as_deref(),
            Some("ns1")
        );
        assert_eq!(
            mine.role_ref.api_group.as_deref(),
            Some("rbac.authorization.k8s.io")
        );
    }

    #[test]
    fn without_takes_out_exactly_one_grant() {
        let role = deploy_cluster_role();
        let small = without(&role, "small", "", "pods/status", "patch");
        let rules = small.rules.clone().unwrap();
        assert_eq!(small.metadata.name.as_deref(), Some("small"));
        assert!(!grants(&rules, "", "pods/status", "patch"));
        assert!(grants(&rules, "", "pods", "get"));
        assert!(grants(
            &rules,
            "k8s.cni.cncf.io",
            "network-attachment-definitions",
            "get"
        ));
        assert!(grants(&rules, "", "events", "create") && grants(&rules, "", "events", "patch"));
        assert_eq!(rules.len(), role.rules.unwrap().len() - 1);

        // A rule with several resources is split.
        let wide: ClusterRole = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "wide"},
            "rules": [{"apiGroups": [""], "resources": ["pods", "pods/status"], "verbs": ["get", "patch"]}],
        }))
        .unwrap();
        let rules = without(&wide, "w", "", "pods/status", "patch")
            .rules
            .unwrap();
        assert!(grants(&rules, "", "pods", "patch") && grants(&rules, "", "pods/status", "get"));
        assert!(!grants(&rules, "", "pods/status", "patch"));
    }
}
