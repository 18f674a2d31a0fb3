//! PATCH bodies: JSON merge patch, JSON patch, and a simplified strategic merge patch.
//!
//! Strategic merge patch is *simplified*: it merges like a JSON merge patch
//! (RFC 7386), so maps (labels, annotations, status fields) behave as on a real
//! server, but lists are replaced whole instead of merged by their merge key
//! (e.g. `containers` by `name`), and `$patch`/`$retainKeys` directives are
//! refused; `$setElementOrder/...` and `$deleteFromPrimitiveList/...` keys are
//! dropped. Server-side apply (`application/apply-patch+yaml`) is not implemented.

use serde_json::Value;

use super::error::ApiError;

/// The patch types a client may send, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json` (simplified, see the module doc).
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply; refused with 415).
    Apply,
}

impl PatchType {
    /// The patch type for a `Content-Type` header value.
    pub fn from_content_type(ct: &str) -> Result<Self, ApiError> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(PatchType::Apply),
            _ => Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, \
                 application/apply-patch+yaml (got {base:?})"
            ))),
        }
    }
}

fn strip_directives(v: &mut Value) -> Result<(), ApiError> {
    match v {
        Value::Object(map) => {
            if map.contains_key("$patch") || map.contains_key("$retainKeys") {
                return Err(ApiError::unsupported_media_type(
                    "the stand-in's strategic merge patch does not support $patch/$retainKeys directives",
                ));
            }
            map.retain(|k, _| {
                !(k.starts_with("$setElementOrder/") || k.starts_with("$deleteFromPrimitiveList/"))
            });
            map.values_mut().try_for_each(strip_directives)
        }
        Value::Array(items) => items.iter_mut().try_for_each(strip_directives),
        _ => Ok(()),
    }
}

fn parse(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
}

/// Applies `body` as a patch of type `pt` to `doc`.
pub fn apply(pt: PatchType, doc: &mut Value, body: &[u8]) -> Result<(), ApiError> {
    match pt {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding JSON patch: {e}")))?;
            json_patch::patch(doc, &ops).map_err(|e| {
                ApiError::new(
                    422,
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })
        }
        PatchType::Merge => {
            let patch = parse(body)?;
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(doc, &patch);
            Ok(())
        }
        PatchType::Strategic => {
            let mut patch = parse(body)?;
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            }
            strip_directives(&mut patch)?;
            json_patch::merge(doc, &patch);
            Ok(())
        }
        PatchType::Apply => Err(ApiError::unsupported_media_type(
            "the stand-in does not implement server-side apply (application/apply-patch+yaml); \
             use a merge, strategic merge or JSON patch",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_and_json_patches() {
        let mut doc =
            json!({"metadata": {"annotations": {"a": "1", "b": "2"}}, "spec": {"x": [1, 2]}});
        let body = br#"{"metadata":{"annotations":{"a":null,"c":"3"}}}"#;
        apply(PatchType::Merge, &mut doc, body).unwrap();
        assert_eq!(doc["metadata"]["annotations"], json!({"b": "2", "c": "3"}));

        let body = br#"[{"op":"add","path":"/spec/x/-","value":3},{"op":"test","path":"/spec/x/0","value":1}]"#;
        apply(PatchType::Json, &mut doc, body).unwrap();
        assert_eq!(doc["spec"]["x"], json!([1, 2, 3]));
        let err = apply(
            PatchType::Json,
            &mut doc,
            br#"[{"op":"remove","path":"/nope"}]"#,
        )
        .unwrap_err();
        assert_eq!(err.code, 422);

        let body = br#"{"$setElementOrder/x":[1],"spec":{"x":[9]}}"#;
        apply(PatchType::Strategic, &mut doc, body).unwrap();
        assert_eq!(doc["spec"]["x"], json!([9]));
        assert!(doc.get("$setElementOrder/x").is_none());
        let err = apply(PatchType::Apply, &mut doc, b"{}").unwrap_err();
        assert_eq!(err.code, 415);
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8").unwrap(),
            PatchType::Merge
        );
        assert_eq!(
            PatchType::from_content_type("text/plain").unwrap_err().code,
            415
        );
    }
}
