//! The CNI error reply object and the well-known error codes (CNI-38, CNI-39, CNI-40, CNI-59).

use std::fmt;

use serde_json::{Map, Value};

use crate::version::CniVersion;

/// Well-known CNI error codes (CNI-38). 0 to 99 are reserved by the spec; 100 and up are plugin-specific.
pub mod codes {
    /// Library-only "unknown error" (Go `ErrUnknown`); not in the spec table.
    pub const UNKNOWN: u32 = 0;
    /// Incompatible CNI version (0.4.0).
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field; the message must name the key and value (0.4.0).
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist; the runtime need not DEL (0.4.0).
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid environment variables; the message must name them (1.0.0).
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure, e.g. reading stdin (1.0.0).
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content, e.g. JSON or a version string (1.0.0).
    pub const DECODE_FAILURE: u32 = 6;
    /// Invalid network config (1.0.0).
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// Library-only: `CNI_NETNS` is the plugin's own namespace (Go skel `ErrInvalidNetNS`).
    pub const INVALID_NETNS: u32 = 8;
    /// Transient failure; try again later (0.4.0).
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin is not available (1.1.0).
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available, and existing containers may have limited connectivity (1.1.0).
    pub const NOT_AVAILABLE_LIMITED: u32 = 51;
    /// Library-only: internal error (Go skel wraps untyped errors with it).
    pub const INTERNAL: u32 = 999;
}

/// A short human name for a code (CNI-38); `"reserved"` for other codes below 100,
/// `"plugin-specific"` for the rest.
pub fn code_name(code: u32) -> &'static str {
    match code {
        codes::UNKNOWN => "unknown error",
        codes::INCOMPATIBLE_VERSION => "incompatible CNI version",
        codes::UNSUPPORTED_FIELD => "unsupported field",
        codes::UNKNOWN_CONTAINER => "unknown container",
        codes::INVALID_ENV => "invalid environment variables",
        codes::IO_FAILURE => "i/o failure",
        codes::DECODE_FAILURE => "decoding failure",
        codes::INVALID_NETWORK_CONFIG => "invalid network config",
        codes::INVALID_NETNS => "invalid network namespace",
        codes::TRY_AGAIN_LATER => "try again later",
        codes::NOT_AVAILABLE => "plugin not available",
        codes::NOT_AVAILABLE_LIMITED => "plugin not available, existing containers limited",
        codes::INTERNAL => "internal error",
        c if c < 100 => "reserved",
        _ => "plugin-specific",
    }
}

/// The error object a plugin prints on failure (CNI-38):
/// `{"cniVersion": .., "code": .., "msg": .., "details": ..}`.
///
/// Empty `cniVersion` and `details` are left out of the JSON; parsing accepts
/// replies without them (Go's `types.Error` has no `cniVersion`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorReply {
    /// The config's `cniVersion`; empty to leave the key out.
    pub cni_version: String,
    /// The error code; see [`codes`].
    pub code: u32,
    /// The short message.
    pub msg: String,
    /// Longer details; empty to leave the key out.
    pub details: String,
}

impl ErrorReply {
    /// A reply with no `cniVersion`; add one with [`ErrorReply::with_cni_version`].
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> ErrorReply {
        ErrorReply {
            cni_version: String::new(),
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// Set the `cniVersion` key.
    pub fn with_cni_version(mut self, version: impl Into<String>) -> ErrorReply {
        self.cni_version = version.into();
        self
    }

    /// CNI-40: the code-1 reply Go skel gives for a version mismatch, byte for byte:
    /// msg `incompatible CNI versions`, details `config is "X", plugin supports ["0.1.0" ...]`.
    pub fn incompatible_version(config_version: &str, supported: &[CniVersion]) -> ErrorReply {
        let list: Vec<String> = supported
            .iter()
            .map(|v| format!("{:?}", v.as_str()))
            .collect();
        ErrorReply::new(
            codes::INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            format!(
                "config is {config_version:?}, plugin supports [{}]",
                list.join(" ")
            ),
        )
    }

    /// CNI-39: re-emit a delegate's error keeping its code and msg, adding `context`
    /// in front of the details.
    pub fn with_context(mut self, context: &str) -> ErrorReply {
        self.details = if self.details.is_empty() {
            context.to_owned()
        } else {
            format!("{context}: {}", self.details)
        };
        self
    }

    /// The reply as a JSON object, keys in the order cniVersion, code, msg, details.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        if !self.cni_version.is_empty() {
            m.insert("cniVersion".into(), Value::from(self.cni_version.as_str()));
        }
        m.insert("code".into(), Value::from(self.code));
        m.insert("msg".into(), Value::from(self.msg.as_str()));
        if !self.details.is_empty() {
            m.insert("details".into(), Value::from(self.details.as_str()));
        }
        Value::Object(m)
    }

    /// The reply as compact JSON.
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }

    /// Recognise an error reply in a plugin's output.
    ///
    /// `Some` only when `bytes` is a JSON object with an unsigned integer `code`
    /// (fitting in u32) and a string `msg`. `cniVersion` and `details` are optional;
    /// when present with a non-string value they are taken as empty.
    pub fn parse(bytes: &[u8]) -> Option<ErrorReply> {
        let value: Value = serde_json::from_slice(bytes).ok()?;
        ErrorReply::from_value(&value)
    }

    /// As [`ErrorReply::parse`], from an already decoded value.
    pub fn from_value(value: &Value) -> Option<ErrorReply> {
        let obj = value.as_object()?;
        let code = u32::try_from(obj.get("code")?.as_u64()?).ok()?;
        let msg = obj.get("msg")?.as_str()?.to_owned();
        let text = |key: &str| {
            obj.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Some(ErrorReply {
            cni_version: text("cniVersion"),
            code,
            msg,
            details: text("details"),
        })
    }
}

impl fmt::Display for ErrorReply {
    /// As Go's `types.Error.Error()`: the msg, then `; details` when there are details.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)?;
        if !self.details.is_empty() {
            write!(f, "; {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for ErrorReply {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_spec_table_cni_38() {
        assert_eq!(codes::INCOMPATIBLE_VERSION, 1);
        assert_eq!(codes::UNSUPPORTED_FIELD, 2);
        assert_eq!(codes::UNKNOWN_CONTAINER, 3);
        assert_eq!(codes::INVALID_ENV, 4);
        assert_eq!(codes::IO_FAILURE, 5);
        assert_eq!(codes::DECODE_FAILURE, 6);
        assert_eq!(codes::INVALID_NETWORK_CONFIG, 7);
        assert_eq!(codes::INVALID_NETNS, 8);
        assert_eq!(codes::TRY_AGAIN_LATER, 11);
        assert_eq!(codes::NOT_AVAILABLE, 50);
        assert_eq!(codes::NOT_AVAILABLE_LIMITED, 51);
        assert_eq!(codes::INTERNAL, 999);
    }

    #[test]
    fn code_names() {
        assert_eq!(code_name(1), "incompatible CNI version");
        assert_eq!(code_name(7), "invalid network config");
        assert_eq!(code_name(50), "plugin not available");
        assert_eq!(code_name(999), "internal error");
        assert_eq!(code_name(42), "reserved");
        assert_eq!(code_name(100), "plugin-specific");
    }

    #[test]
    fn json_omits_empty_version_and_details() {
        let e = ErrorReply::new(codes::INVALID_ENV, "bad env", "");
        assert_eq!(e.to_json(), r#"{"code":4,"msg":"bad env"}"#);
        let e = ErrorReply::new(7, "bad config", "field x").with_cni_version("1.0.0");
        assert_eq!(
            e.to_json(),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"bad config","details":"field x"}"#
        );
    }

    #[test]
    fn parse_round_trips_and_accepts_go_shape() {
        let e = ErrorReply::new(11, "busy", "try later").with_cni_version("0.4.0");
        assert_eq!(ErrorReply::parse(e.to_json().as_bytes()), Some(e));
        // Go's types.Error has no cniVersion and may omit details.
        let go = ErrorReply::parse(br#"{"code":3,"msg":"no such container"}"#).unwrap();
        assert_eq!(go, ErrorReply::new(3, "no such container", ""));
    }

    #[test]
    fn parse_refuses_non_error_output() {
        for bad in [
            &b"not json"[..],
            br#"[1,2]"#,
            br#"{"msg":"no code"}"#,
            br#"{"code":"7","msg":"string code"}"#,
            br#"{"code":-1,"msg":"negative"}"#,
            br#"{"code":1.5,"msg":"fraction"}"#,
            br#"{"code":4294967296,"msg":"too big"}"#,
            br#"{"code":7}"#,
            br#"{"code":7,"msg":5}"#,
            br#"{"cniVersion":"1.0.0","interfaces":[]}"#,
        ] {
            assert_eq!(
                ErrorReply::parse(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn incompatible_version_matches_skel_cni_40() {
        let e =
            ErrorReply::incompatible_version("0.9.0", &[CniVersion::V0_4_0, CniVersion::V1_0_0]);
        assert_eq!(e.code, 1);
        assert_eq!(e.msg, "incompatible CNI versions");
        assert_eq!(
            e.details,
            r#"config is "0.9.0", plugin supports ["0.4.0" "1.0.0"]"#
        );
    }

    #[test]
    fn context_keeps_code_and_msg_cni_39() {
        let e = ErrorReply::new(11, "ipam busy", "lock held").with_context("delegate macvlan");
        assert_eq!(e.code, 11);
        assert_eq!(e.msg, "ipam busy");
        assert_eq!(e.details, "delegate macvlan: lock held");
        let e = ErrorReply::new(5, "read", "").with_context("delegate x");
        assert_eq!(e.details, "delegate x");
    }

    #[test]
    fn display_like_go() {
        assert_eq!(ErrorReply::new(1, "m", "").to_string(), "m");
        assert_eq!(ErrorReply::new(1, "m", "d").to_string(), "m; d");
    }
}
