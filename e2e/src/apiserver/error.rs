//! Kubernetes `Status` errors, shaped like the real apiserver's.

use serde_json::{Value, json};

use super::resources::ResourceType;

/// An API error, answered as a `Status` object with `code` as the HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason` (`NotFound`, `Conflict`, ...).
    pub reason: String,
    /// Human-readable `Status.message`.
    pub message: String,
    /// `Status.details`, when the real server sets it.
    pub details: Option<Value>,
    /// Seconds for a `Retry-After` header (and `details.retryAfterSeconds`).
    pub retry_after: Option<u64>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// The `reason` the real apiserver uses for an HTTP status code.
pub fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

fn details(rt: &ResourceType, name: &str, kind: &str) -> Value {
    let mut d = json!({ "name": name });
    if !rt.group.is_empty() {
        d["group"] = json!(rt.group);
    }
    d["kind"] = json!(kind);
    d
}

impl ApiError {
    /// An error with the standard reason for `code`.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason: reason_for(code).to_string(),
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// 401 Unauthorized, as answered for a missing or wrong bearer token.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized")
    }

    /// 404 for a path that names no resource the server knows.
    pub fn no_route() -> Self {
        let mut e = Self::new(404, "the server could not find the requested resource");
        e.details = Some(json!({}));
        e
    }

    /// 404 NotFound for `name` of resource type `rt`.
    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        let mut e = Self::new(
            404,
            format!("{} \"{name}\" not found", rt.qualified_resource()),
        );
        e.details = Some(details(rt, name, &rt.plural));
        e
    }

    /// 409 AlreadyExists.
    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        let mut e = Self::new(
            409,
            format!("{} \"{name}\" already exists", rt.qualified_resource()),
        );
        e.reason = "AlreadyExists".into();
        e.details = Some(details(rt, name, &rt.plural));
        e
    }

    /// 409 Conflict: the object changed since the client read it.
    pub fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        let mut e = Self::new(
            409,
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                rt.qualified_resource()
            ),
        );
        e.details = Some(details(rt, name, &rt.plural));
        e
    }

    /// 409 Conflict for a stale `resourceVersion`.
    pub fn stale(rt: &ResourceType, name: &str) -> Self {
        Self::conflict(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid, one cause per `(field, message)`.
    pub fn invalid(rt: &ResourceType, name: &str, causes: &[(String, String)]) -> Self {
        let text: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let text = if text.len() == 1 {
            text[0].clone()
        } else {
            format!("[{}]", text.join(", "))
        };
        let mut e = Self::new(
            422,
            format!("{} \"{name}\" is invalid: {text}", rt.qualified_kind()),
        );
        let mut d = details(rt, name, &rt.kind);
        d["causes"] = causes
            .iter()
            .map(|(f, m)| {
                // The cause's reason follows the message's type, as `field.Error` pairs them.
                let reason = [
                    ("Required value", "FieldValueRequired"),
                    ("Forbidden", "FieldValueForbidden"),
                    ("Duplicate value", "FieldValueDuplicate"),
                    ("Unsupported value", "FieldValueNotSupported"),
                    ("Too long", "FieldValueTooLong"),
                    ("Too many", "FieldValueTooMany"),
                ]
                .iter()
                .find(|(prefix, _)| m.starts_with(prefix))
                .map_or("FieldValueInvalid", |(_, r)| r);
                json!({ "reason": reason, "message": m, "field": f })
            })
            .collect();
        e.details = Some(d);
        e
    }

    /// 403 Forbidden for `name` of `rt`.
    pub fn forbidden(rt: &ResourceType, name: &str, why: &str) -> Self {
        let mut e = Self::new(
            403,
            format!("{} \"{name}\" is forbidden: {why}", rt.qualified_resource()),
        );
        e.details = Some(details(rt, name, &rt.plural));
        e
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed() -> Self {
        let mut e = Self::new(
            405,
            "the server does not allow this method on the requested resource",
        );
        e.details = Some(json!({}));
        e
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, message)
    }

    /// The `Status` object the real apiserver answers with.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        });
        let mut details = self.details.clone();
        if let Some(secs) = self.retry_after {
            let d = details.get_or_insert_with(|| json!({}));
            d["retryAfterSeconds"] = json!(secs);
        }
        if let Some(d) = details {
            s["details"] = d;
        }
        s["code"] = json!(self.code);
        s
    }
}
