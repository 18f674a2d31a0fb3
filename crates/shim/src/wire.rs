//! The daemon socket's wire format: HTTP/1.1 over a unix socket, JSON bodies, as Go Multus's thick plugin
//! speaks it (docs/daemon.md, "Wire format, and Go Multus's shim"), so a Go `multus-shim` can talk
//! to `plexus daemon` during a rollout.
//!
//! - `POST /cni` with a [`Request`]: the shim's whole environment and its stdin (base64, Go's `[]byte`).
//! - `200` with a [`Response`] (`{"Result": <CNI 1.0.0 result>}`) for ADD, an empty body otherwise.
//! - `400` (or `503` when the daemon cannot take work) with a CNI error reply `{code, msg, details}`.
//! - `GET /healthz` (alive) and `GET /readyz` (ready for ADD; `503` once shutting down).

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The default directory of the daemon's socket (shim key `daemonSocketDir`, daemon key `socketDir`).
pub const DEFAULT_SOCKET_DIR: &str = "/run/plexus";
/// The socket's file name in that directory.
pub const SOCKET_NAME: &str = "plexus.sock";
/// The name Go Multus's shim dials in the same directory (the daemon links it to [`SOCKET_NAME`]).
pub const GO_SOCKET_NAME: &str = "multus.sock";
/// The CNI endpoint.
pub const CNI_PATH: &str = "/cni";
/// Liveness.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Readiness.
pub const READYZ_PATH: &str = "/readyz";
/// The CNI version of results on the wire (Go Multus's `cni100.Result`).
pub const WIRE_RESULT_VERSION: plexus_cni::CniVersion = plexus_cni::CniVersion::V1_0_0;

/// One CNI call, as the shim forwards it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The shim's environment (`CNI_COMMAND`, `CNI_CONTAINERID`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The network config the runtime gave on stdin.
    #[serde(default, with = "go_bytes", skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<u8>,
    /// Go Multus's hot-plug attributes (`/delegate` only); kept so such a request parses.
    #[serde(
        default,
        rename = "interfaceAttributes",
        skip_serializing_if = "Option::is_none"
    )]
    pub interface_attributes: Option<Value>,
}

/// A successful reply's body (ADD only carries a result).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The result in [`WIRE_RESULT_VERSION`] form.
    #[serde(rename = "Result", default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// Go encodes `[]byte` as standard base64 with padding, and `null` for nil.
mod go_bytes {
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        match s {
            None => Ok(Vec::new()),
            Some(s) => base64::engine::general_purpose::STANDARD
                .decode(s.as_bytes())
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_with_go_field_names_and_base64_config() {
        let mut env = BTreeMap::new();
        env.insert("CNI_COMMAND".to_string(), "ADD".to_string());
        let req = Request {
            env,
            config: br#"{"cniVersion":"1.0.0"}"#.to_vec(),
            interface_attributes: None,
        };
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["env"]["CNI_COMMAND"], "ADD");
        assert_eq!(json["config"], "eyJjbmlWZXJzaW9uIjoiMS4wLjAifQ==");
        assert!(json.get("interfaceAttributes").is_none());
        let back: Request = serde_json::from_value(json).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn a_go_request_with_null_config_and_attributes_parses() {
        let req: Request = serde_json::from_str(
            r#"{"env":{"CNI_COMMAND":"DEL"},"config":null,"interfaceAttributes":{"mac":"aa"}}"#,
        )
        .unwrap();
        assert!(req.config.is_empty());
        assert_eq!(req.interface_attributes.unwrap()["mac"], "aa");
        assert!(serde_json::from_str::<Request>(r#"{"config":"not base64!"}"#).is_err());
    }

    #[test]
    fn response_uses_gos_capitalised_result_key() {
        let r: Response = serde_json::from_str(r#"{"Result":{"cniVersion":"1.0.0"}}"#).unwrap();
        assert_eq!(r.result.unwrap()["cniVersion"], "1.0.0");
        assert_eq!(serde_json::to_string(&Response::default()).unwrap(), "{}");
    }
}
