//! GC request data: the list of still-valid attachments under `cni.dev/valid-attachments` (CNI-22, CNI-28, CNI-29).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The key the spec (HEAD) uses for the valid attachment list.
pub const VALID_ATTACHMENTS_KEY: &str = "cni.dev/valid-attachments";

/// The pre-rename key from the `spec-v1.1.0` tag; libcni still sends it too.
pub const LEGACY_ATTACHMENTS_KEY: &str = "cni.dev/attachments";

/// Errors from reading the valid attachment list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GcError {
    /// The config is not a JSON object.
    #[error("GC config is not a JSON object")]
    NotAnObject,
    /// The list is present but not an array of `{"containerID", "ifname"}` objects.
    #[error(
        "invalid {key} entry {index}: {reason}; expected {{\"containerID\": string, \"ifname\": string}}"
    )]
    InvalidEntry {
        /// Which key held the list.
        key: &'static str,
        /// Position in the list (0 when the value itself is not an array).
        index: usize,
        /// What was wrong.
        reason: String,
    },
}

/// One attachment that GC must keep (CNI-22).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GcAttachment {
    /// `CNI_CONTAINERID` of the attachment.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// `CNI_IFNAME` of the attachment.
    #[serde(rename = "ifname")]
    pub ifname: String,
}

impl GcAttachment {
    /// An attachment from its container ID and interface name.
    pub fn new(container_id: impl Into<String>, ifname: impl Into<String>) -> GcAttachment {
        GcAttachment {
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }

    /// `{"containerID": .., "ifname": ..}`.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "containerID".into(),
            Value::from(self.container_id.as_str()),
        );
        m.insert("ifname".into(), Value::from(self.ifname.as_str()));
        Value::Object(m)
    }
}

/// CNI-22: the valid attachments in a GC config, from `cni.dev/valid-attachments`,
/// or from `cni.dev/attachments` when the former is absent or null.
///
/// `None` when neither key holds a list, or the list is malformed (see
/// [`parse_valid_attachments`] to tell these apart). A caller must not read
/// `None` as "no attachment is valid".
pub fn valid_attachments(conf: &Value) -> Option<Vec<GcAttachment>> {
    parse_valid_attachments(conf).ok().flatten()
}

/// Strict form of [`valid_attachments`]: `Ok(None)` when neither key is present
/// (or both are null), an error when the chosen list is malformed.
pub fn parse_valid_attachments(conf: &Value) -> Result<Option<Vec<GcAttachment>>, GcError> {
    let obj = conf.as_object().ok_or(GcError::NotAnObject)?;
    for key in [VALID_ATTACHMENTS_KEY, LEGACY_ATTACHMENTS_KEY] {
        match obj.get(key) {
            None | Some(Value::Null) => continue,
            Some(list) => return parse_list(key, list).map(Some),
        }
    }
    Ok(None)
}

fn parse_list(key: &'static str, list: &Value) -> Result<Vec<GcAttachment>, GcError> {
    let bad = |index: usize, reason: String| GcError::InvalidEntry { key, index, reason };
    let items = list
        .as_array()
        .ok_or_else(|| bad(0, format!("the value {list} is not an array")))?;
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let field = |name: &str| -> Result<String, GcError> {
                item.get(name)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| bad(index, format!("{item} has no string {name:?}")))
            };
            Ok(GcAttachment {
                container_id: field("containerID")?,
                ifname: field("ifname")?,
            })
        })
        .collect()
}

/// CNI-22, CNI-29: put `attachments` into a GC request config under both the
/// current and the pre-rename key, as libcni does.
pub fn insert_valid_attachments(conf: &mut Map<String, Value>, attachments: &[GcAttachment]) {
    let list = Value::Array(attachments.iter().map(GcAttachment::to_value).collect());
    conf.insert(VALID_ATTACHMENTS_KEY.to_owned(), list.clone());
    conf.insert(LEGACY_ATTACHMENTS_KEY.to_owned(), list);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serialises_with_spec_keys() {
        let a = GcAttachment::new("c1", "net1");
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"containerID":"c1","ifname":"net1"}"#
        );
        assert_eq!(a.to_value(), json!({"containerID": "c1", "ifname": "net1"}));
        let back: GcAttachment =
            serde_json::from_str(r#"{"ifname":"eth0","containerID":"x"}"#).unwrap();
        assert_eq!(back, GcAttachment::new("x", "eth0"));
    }

    #[test]
    fn reads_current_key_cni_22() {
        let conf = json!({
            "cniVersion": "1.1.0",
            "name": "n",
            "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}, {"containerID": "b", "ifname": "net1"}],
            "cni.dev/attachments": [{"containerID": "old", "ifname": "eth0"}]
        });
        assert_eq!(
            valid_attachments(&conf),
            Some(vec![
                GcAttachment::new("a", "eth0"),
                GcAttachment::new("b", "net1")
            ])
        );
    }

    #[test]
    fn falls_back_to_pre_rename_key_cni_22() {
        let conf = json!({"cni.dev/attachments": [{"containerID": "old", "ifname": "eth0"}]});
        assert_eq!(
            valid_attachments(&conf),
            Some(vec![GcAttachment::new("old", "eth0")])
        );
        let conf = json!({"cni.dev/valid-attachments": null, "cni.dev/attachments": []});
        assert_eq!(valid_attachments(&conf), Some(vec![]));
    }

    #[test]
    fn absent_and_malformed_are_told_apart() {
        assert_eq!(valid_attachments(&json!({"name": "n"})), None);
        assert_eq!(parse_valid_attachments(&json!({"name": "n"})), Ok(None));
        let bad = json!({"cni.dev/valid-attachments": [{"containerID": "a"}]});
        assert_eq!(valid_attachments(&bad), None);
        let err = parse_valid_attachments(&bad).unwrap_err();
        assert!(matches!(err, GcError::InvalidEntry { index: 0, .. }));
        assert!(
            err.to_string().contains(r#"has no string "ifname""#),
            "{err}"
        );
        let not_list = json!({"cni.dev/valid-attachments": "x"});
        assert!(parse_valid_attachments(&not_list).is_err());
        assert_eq!(
            parse_valid_attachments(&json!([])),
            Err(GcError::NotAnObject)
        );
    }

    #[test]
    fn insert_writes_both_keys() {
        let mut conf = Map::new();
        insert_valid_attachments(&mut conf, &[GcAttachment::new("a", "net1")]);
        let v = Value::Object(conf);
        let want = json!([{"containerID": "a", "ifname": "net1"}]);
        assert_eq!(v[VALID_ATTACHMENTS_KEY], want);
        assert_eq!(v[LEGACY_ATTACHMENTS_KEY], want);
        assert_eq!(
            valid_attachments(&v),
            Some(vec![GcAttachment::new("a", "net1")])
        );
    }
}
