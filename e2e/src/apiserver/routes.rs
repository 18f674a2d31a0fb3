//! Request paths: which API endpoint (discovery, a resource, the stand-in's
//! own `/standin/` endpoints) a path names.

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/healthz`, `/livez`, `/readyz` (and their sub-checks).
    Health,
    /// `/version`.
    Version,
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    Groups,
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`.
    Resources {
        /// API group ("" for core).
        group: String,
        /// Version.
        version: String,
    },
    /// A resource collection, object, or subresource.
    Object(ObjectPath),
    /// `/openapi/v3` (the index) or `/openapi/v3/api/v1`, `/openapi/v3/apis/{g}/{v}`
    /// (the group/version path after `/openapi/v3/`, "" for the index).
    OpenApiV3(String),
    /// `/standin/...` (the segments after `standin`).
    Standin(Vec<String>),
    /// Anything else.
    Unknown,
}

/// `/api[s]/{group}/{version}/[namespaces/{ns}/]{plural}[/{name}[/{sub}]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPath {
    /// API group ("" for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Namespace from the path, if any.
    pub namespace: Option<String>,
    /// Resource (plural).
    pub plural: String,
    /// Object name, if the path names one.
    pub name: Option<String>,
    /// Subresource (`status`), if any.
    pub subresource: Option<String>,
}

/// Parses a request path (already without the query).
pub fn parse(path: &str) -> Route {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        [h, ..] if matches!(*h, "healthz" | "livez" | "readyz") => Route::Health,
        ["version"] => Route::Version,
        ["openapi", "v3", rest @ ..] => Route::OpenApiV3(rest.join("/")),
        ["standin", rest @ ..] => Route::Standin(rest.iter().map(|s| s.to_string()).collect()),
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::Groups,
        ["apis", g] => Route::Group(g.to_string()),
        ["api", v] => Route::Resources {
            group: String::new(),
            version: v.to_string(),
        },
        ["apis", g, v] => Route::Resources {
            group: g.to_string(),
            version: v.to_string(),
        },
        ["api", v, rest @ ..] => object("", v, rest),
        ["apis", g, v, rest @ ..] => object(g, v, rest),
        _ => Route::Unknown,
    }
}

fn object(group: &str, version: &str, rest: &[&str]) -> Route {
    let mk = |ns: Option<&str>, r: &[&str]| {
        if r.is_empty() || r.len() > 3 {
            return Route::Unknown;
        }
        Route::Object(ObjectPath {
            group: group.to_string(),
            version: version.to_string(),
            namespace: ns.map(String::from),
            plural: r[0].to_string(),
            name: r.get(1).map(|s| s.to_string()),
            subresource: r.get(2).map(|s| s.to_string()),
        })
    };
    match rest {
        // `namespaces/{name}/status|finalize` is a namespace's subresource, not a collection.
        ["namespaces", _, sub] if group.is_empty() && matches!(*sub, "status" | "finalize") => {
            mk(None, rest)
        }
        ["namespaces", ns, r @ ..] if !r.is_empty() => mk(Some(ns), r),
        _ => mk(None, rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(r: Route) -> ObjectPath {
        match r {
            Route::Object(o) => o,
            other => panic!("not an object route: {other:?}"),
        }
    }

    #[test]
    fn parses_paths() {
        let o = obj(parse("/api/v1/namespaces/d/pods/p/status"));
        assert_eq!(o.namespace.as_deref(), Some("d"));
        assert_eq!((o.plural.as_str(), o.name.as_deref()), ("pods", Some("p")));
        assert_eq!(o.subresource.as_deref(), Some("status"));

        let o = obj(parse("/api/v1/namespaces/d"));
        assert_eq!(
            (o.plural.as_str(), o.name.as_deref(), o.namespace),
            ("namespaces", Some("d"), None)
        );
        let o = obj(parse("/api/v1/namespaces/d/status"));
        assert_eq!(
            (o.name.as_deref(), o.subresource.as_deref()),
            (Some("d"), Some("status"))
        );
        let o = obj(parse("/api/v1/namespaces/d/serviceaccounts"));
        assert_eq!((o.plural.as_str(), o.name), ("serviceaccounts", None));

        let o = obj(parse(
            "/apis/k8s.cni.cncf.io/v1/namespaces/d/network-attachment-definitions/n",
        ));
        assert_eq!(o.group, "k8s.cni.cncf.io");
        assert_eq!(o.name.as_deref(), Some("n"));
        let o = obj(parse("/api/v1/pods"));
        assert_eq!((o.namespace, o.name), (None, None));

        assert_eq!(parse("/apis"), Route::Groups);
        assert_eq!(
            parse("/apis/events.k8s.io"),
            Route::Group("events.k8s.io".into())
        );
        assert_eq!(parse("/readyz/ping"), Route::Health);
        assert_eq!(parse("/openapi/v3"), Route::OpenApiV3(String::new()));
        assert_eq!(
            parse("/openapi/v3/apis/g/v1"),
            Route::OpenApiV3("apis/g/v1".into())
        );
        assert_eq!(
            parse("/standin/faults/3"),
            Route::Standin(vec!["faults".into(), "3".into()])
        );
        assert_eq!(
            parse("/api/v1/namespaces/d/pods/p/status/x"),
            Route::Unknown
        );
        assert_eq!(parse("/foo"), Route::Unknown);
    }
}
