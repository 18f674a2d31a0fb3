//! Authentication: the bootstrap token (an admin, in `system:masters`) and ServiceAccount tokens minted
//! by the TokenRequest API (`POST .../serviceaccounts/{name}/token`), as a real server's bound tokens:
//! JWT-shaped, with an audience and an expiry, and valid only while the ServiceAccount they were issued
//! for (same name *and* uid) exists, and, for a token bound to an object (`spec.boundObjectRef`: a Pod, a
//! Secret or a Node), while that object does: deleting the pod revokes its pod's token at once.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::error::ApiError;
use super::rbac::{UserInfo, service_account_user};
use super::store::Store;
use super::util;

/// The audience (and issuer) of the tokens the stand-in mints, as on a kubeadm cluster.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// `spec.expirationSeconds` when a TokenRequest sets none.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest expiry the real server accepts.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;

/// A minted token.
#[derive(Debug, Clone)]
struct Issued {
    namespace: String,
    name: String,
    uid: String,
    audiences: Vec<String>,
    expires: SystemTime,
    bound: Option<Bound>,
}

/// The object a token is bound to (`spec.boundObjectRef`), as found when it was minted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bound {
    /// `pods`, `secrets` or `nodes`.
    plural: &'static str,
    /// The object's namespace ("" for a Node).
    namespace: String,
    name: String,
    uid: String,
}

impl Bound {
    /// Whether the object still exists with the same uid (a real server also checks the uid: an object
    /// deleted and made again under the same name does not revive the token).
    fn exists(&self, store: &Store) -> bool {
        let Some(rt) = store.resolve("", "v1", self.plural) else {
            return false;
        };
        store
            .get(&rt, &self.namespace, &self.name)
            .ok()
            .and_then(|o| {
                o.pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .is_some_and(|uid| uid == self.uid)
    }
}

/// The object `reference` (a `spec.boundObjectRef`) names, for a token of ServiceAccount `ns/sa`: checked as
/// the real server checks it. Pods and Secrets are in the ServiceAccount's namespace, Nodes cluster-scoped;
/// a pod must run as that ServiceAccount; a missing object is its `404`, another kind (or group) `400`, and a
/// `uid` that differs from the object's `409`. The token's claims name the object (`kubernetes.io.pod`,
/// `.secret` or `.node`; a pod's token names the pod's node too).
fn bound_object(
    store: &Store,
    ns: &str,
    sa: &str,
    reference: &Value,
) -> Result<(Bound, Value), ApiError> {
    let field = |k: &str| {
        reference
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (api_version, kind, name, uid) = (
        field("apiVersion"),
        field("kind"),
        field("name"),
        field("uid"),
    );
    // The real server takes the group from apiVersion: `v1` (or nothing) is the core group.
    let plural = match (api_version.as_str(), kind.as_str()) {
        ("v1" | "", "Pod") => "pods",
        ("v1" | "", "Secret") => "secrets",
        ("v1" | "", "Node") => "nodes",
        _ => {
            let gv = if api_version.contains('/') {
                api_version.clone()
            } else {
                format!("/{api_version}")
            };
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {gv}, Kind={kind}"
            )));
        }
    };
    let namespace = if plural == "nodes" { "" } else { ns };
    let object = match store.resolve("", "v1", plural) {
        Some(rt) => store.get(&rt, namespace, &name)?,
        // The stand-in keeps no Secrets: every one is missing.
        None => {
            let mut e = ApiError::new(404, format!("{plural} \"{name}\" not found"));
            e.details = Some(json!({"name": name, "kind": plural}));
            return Err(e);
        }
    };
    if plural == "pods"
        && object
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            != Some(sa)
    {
        return Err(ApiError::bad_request(format!(
            "cannot bind token for serviceaccount \"{sa}\" to pod running with different serviceaccount name."
        )));
    }
    let actual = object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !uid.is_empty() && uid != actual {
        let mut e = ApiError::new(
            409,
            format!(
                "Operation cannot be fulfilled on {kind} \"{name}\": the UID in the bound object reference ({uid}) \
                 does not match the UID in record. The object might have been deleted and then recreated"
            ),
        );
        e.details = Some(json!({"name": name, "kind": kind}));
        return Err(e);
    }
    let mut claims = json!({});
    let singular = &plural[..plural.len() - 1];
    claims[singular] = json!({"name": name, "uid": actual});
    if plural == "pods"
        && let Some(node) = object.pointer("/spec/nodeName").and_then(Value::as_str)
    {
        let node_uid = store
            .resolve("", "v1", "nodes")
            .and_then(|rt| store.get(&rt, "", node).ok())
            .and_then(|n| {
                n.pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .map(String::from)
            });
        claims["node"] = match node_uid {
            Some(u) => json!({"name": node, "uid": u}),
            None => json!({"name": node}),
        };
    }
    let bound = Bound {
        plural,
        namespace: namespace.to_string(),
        name,
        uid: actual,
    };
    Ok((bound, claims))
}

/// The tokens minted so far.
#[derive(Debug, Default)]
pub struct Tokens {
    issued: Mutex<BTreeMap<String, Issued>>,
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

impl Tokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Issued>> {
        self.issued.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The user a bearer token (not the bootstrap one) stands for, if it is a live token of an existing
    /// ServiceAccount whose audiences include the API server's, and its bound object (if any) still exists.
    pub fn authenticate(&self, store: &Store, token: &str) -> Option<UserInfo> {
        let issued = self.lock().get(token).cloned()?;
        if SystemTime::now() >= issued.expires
            || !issued.audiences.iter().any(|a| a == API_AUDIENCE)
            || issued.bound.as_ref().is_some_and(|b| !b.exists(store))
        {
            return None;
        }
        let sas = store.resolve("", "v1", "serviceaccounts")?;
        let sa = store.get(&sas, &issued.namespace, &issued.name).ok()?;
        if sa.pointer("/metadata/uid").and_then(Value::as_str) != Some(issued.uid.as_str()) {
            return None;
        }
        Some(UserInfo::service_account(&issued.namespace, &issued.name))
    }

    /// Handles a TokenRequest (`body`) for ServiceAccount `ns/name`: validates it like the real server,
    /// mints a token unless `dry_run`, and answers the TokenRequest with `status.token` and
    /// `status.expirationTimestamp`.
    pub fn request(
        &self,
        store: &Store,
        ns: &str,
        name: &str,
        body: &Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let obj = body
            .as_object()
            .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
        for (field, want) in [
            ("kind", "TokenRequest"),
            ("apiVersion", "authentication.k8s.io/v1"),
        ] {
            if let Some(got) = obj
                .get(field)
                .and_then(Value::as_str)
                .filter(|g| *g != want)
            {
                return Err(ApiError::bad_request(format!(
                    "the {field} in the data ({got}) does not match the expected {field} ({want})"
                )));
            }
        }
        let sas = store
            .resolve("", "v1", "serviceaccounts")
            .ok_or_else(ApiError::no_route)?;
        let sa = store.get(&sas, ns, name)?;
        let uid = sa
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let spec = body.get("spec").cloned().unwrap_or(json!({}));
        let seconds = match spec.get("expirationSeconds") {
            None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
            Some(v) => v.as_i64().ok_or_else(|| {
                ApiError::bad_request(format!("spec.expirationSeconds: not an integer: {v}"))
            })?,
        };
        let invalid = |msg: String| {
            let mut e = ApiError::new(
                422,
                format!(
                    "TokenRequest.authentication.k8s.io \"{name}\" is invalid: spec.expirationSeconds: \
                     Invalid value: {seconds}: {msg}"
                ),
            );
            e.details = Some(
                json!({"name": name, "group": "authentication.k8s.io", "kind": "TokenRequest",
                "causes": [{"reason": "FieldValueInvalid", "message": format!("Invalid value: {seconds}: {msg}"),
                            "field": "spec.expirationSeconds"}]}),
            );
            e
        };
        if seconds < MIN_EXPIRATION_SECONDS {
            return Err(invalid(
                "may not specify a duration less than 10 minutes".into(),
            ));
        }
        if seconds > 1 << 32 {
            return Err(invalid(
                "may not specify a duration larger than 2^32 seconds".into(),
            ));
        }
        let (bound, bound_claims) = match spec.get("boundObjectRef").filter(|b| !b.is_null()) {
            Some(reference) => {
                let (b, c) = bound_object(store, ns, name, reference)?;
                (Some(b), c)
            }
            None => (None, json!({})),
        };
        let audiences: Vec<String> = match spec.get("audiences").and_then(Value::as_array) {
            Some(a) if !a.is_empty() => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            _ => vec![API_AUDIENCE.to_string()],
        };
        let now = SystemTime::now();
        let now_secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let expires = now + Duration::from_secs(seconds as u64);
        let mut claims = json!({
            "aud": audiences,
            "exp": now_secs + seconds as u64,
            "iat": now_secs,
            "nbf": now_secs,
            "iss": API_AUDIENCE,
            "jti": util::new_uid(),
            "sub": service_account_user(ns, name),
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name, "uid": uid}},
        });
        for (k, v) in bound_claims.as_object().into_iter().flatten() {
            claims["kubernetes.io"][k] = v.clone();
        }
        let header = json!({"alg": "RS256", "kid": "plexus-standin"});
        let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let token = format!(
            "{}.{}.{}",
            part(&header),
            part(&claims),
            URL_SAFE_NO_PAD.encode(util::random_bytes(64))
        );
        if !dry_run {
            self.lock().insert(
                token.clone(),
                Issued {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    uid,
                    audiences: audiences.clone(),
                    expires,
                    bound,
                },
            );
        }
        let mut spec_out =
            json!({"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": null});
        if let Some(b) = spec.get("boundObjectRef").filter(|b| !b.is_null()) {
            spec_out["boundObjectRef"] = b.clone();
        }
        Ok(json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": rfc3339(now)},
            "spec": spec_out,
            "status": {"token": token, "expirationTimestamp": rfc3339(expires)},
        }))
    }
}
