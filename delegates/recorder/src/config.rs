//! The recorder's inputs: stdin decoding, the network config keys it reads, and the per-command behaviour object.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

/// Env var naming the record file when the config has no `recordFile`.
pub const RECORD_FILE_ENV: &str = "PLEXUS_RECORDER_FILE";
/// Env var holding a behaviour object (JSON) used when the config has no `recorder` key.
pub const BEHAVIOUR_ENV: &str = "PLEXUS_RECORDER_BEHAVIOUR";
/// The version a config without `cniVersion` is taken to be in.
pub const DEFAULT_CONFIG_VERSION: &str = "0.1.0";
/// Config key naming the record file.
pub const RECORD_FILE_KEY: &str = "recordFile";
/// Config key holding the behaviour object.
pub const BEHAVIOUR_KEY: &str = "recorder";
/// Keys allowed in the behaviour object besides the command names.
const FALLBACK_KEY: &str = "all";
/// Lower-case command names allowed as behaviour keys.
const COMMAND_KEYS: [&str; 6] = ["add", "del", "check", "status", "gc", "version"];

/// What arrived on stdin.
#[derive(Debug, Clone, PartialEq)]
pub enum Stdin {
    /// Stdin parsed as JSON (any JSON value).
    Json(Value),
    /// Stdin that is not JSON, kept as text.
    Raw(String),
}

impl Stdin {
    /// Decodes stdin text; anything that is not JSON is kept raw.
    pub fn parse(text: &str) -> Self {
        match serde_json::from_str(text) {
            Ok(value) => Stdin::Json(value),
            Err(_) => Stdin::Raw(text.to_owned()),
        }
    }

    /// The value stored in a record line: the JSON itself, or `{"raw": text}`.
    pub fn record_value(&self) -> Value {
        match self {
            Stdin::Json(value) => value.clone(),
            Stdin::Raw(text) => {
                let mut map = Map::new();
                map.insert("raw".to_owned(), Value::String(text.clone()));
                Value::Object(map)
            }
        }
    }

    /// The network config, when stdin is a JSON object.
    pub fn net_conf(&self) -> Option<NetConf<'_>> {
        match self {
            Stdin::Json(Value::Object(map)) => Some(NetConf { map }),
            _ => None,
        }
    }
}

/// A view of the network config object with the keys the recorder reads.
#[derive(Debug, Clone, Copy)]
pub struct NetConf<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> NetConf<'a> {
    fn string(&self, key: &str) -> Option<&'a str> {
        self.map.get(key).and_then(Value::as_str)
    }

    /// The config's `cniVersion` as given, if it is a string.
    pub fn cni_version(&self) -> Option<&'a str> {
        self.string("cniVersion")
    }

    /// The config's `cniVersion`, or `0.1.0` when missing (as libcni assumes).
    pub fn effective_version(&self) -> &'a str {
        self.cni_version().unwrap_or(DEFAULT_CONFIG_VERSION)
    }

    /// The `recordFile` key.
    pub fn record_file(&self) -> Option<&'a str> {
        self.string(RECORD_FILE_KEY)
    }

    /// The `ip` key: the address the default ADD result reports.
    pub fn ip(&self) -> Option<&'a str> {
        self.string("ip")
    }

    /// The `prevResult` key, unless absent or null.
    pub fn prev_result(&self) -> Option<&'a Value> {
        self.map.get("prevResult").filter(|v| !v.is_null())
    }

    /// The `recorder` key, unless absent or null.
    pub fn behaviour(&self) -> Option<&'a Value> {
        self.map.get(BEHAVIOUR_KEY).filter(|v| !v.is_null())
    }
}

/// What to do for one command. Steps apply in the order: `stderr`, `sleepMs`,
/// `signal`, `exitCode`, `garbage`, `hugeOutputBytes`, `error`, `result`, `exec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Behaviour {
    /// Milliseconds to sleep before replying.
    pub sleep_ms: Option<u64>,
    /// A result to print verbatim (with `cniVersion` filled in when missing).
    pub result: Option<Value>,
    /// A CNI error to fail with.
    pub error: Option<ErrorSpec>,
    /// Text printed to stdout before exiting 1.
    pub garbage: Option<String>,
    /// Exit with this code, printing nothing.
    pub exit_code: Option<i32>,
    /// Text written to stderr before anything else.
    pub stderr: Option<String>,
    /// A signal name (`KILL`, `TERM`, `SEGV`, with or without `SIG`) to raise.
    pub signal: Option<String>,
    /// Print this many junk bytes to stdout, then exit 1.
    pub huge_output_bytes: Option<u64>,
    /// Apply `error` only when every named env var has the given value.
    pub fail_if_env: Option<BTreeMap<String, String>>,
    /// Apply this whole behaviour only while this file exists (else the default reply): a test switches a
    /// fault on and off under a config that plexus has cached.
    pub only_if_file_exists: Option<std::path::PathBuf>,
    /// A plugin type to hand the invocation to (after the sleep): the recorder then stands in front of a
    /// real plugin, which does the work and gives the reply.
    pub exec: Option<String>,
}

impl Behaviour {
    /// Whether the behaviour is switched on (`onlyIfFileExists`).
    pub fn in_effect(&self) -> bool {
        self.only_if_file_exists
            .as_deref()
            .is_none_or(std::path::Path::exists)
    }

    /// Whether `error` applies given the process environment (`failIfEnv`).
    pub fn error_applies(&self, env: &BTreeMap<String, String>) -> bool {
        match &self.fail_if_env {
            None => true,
            Some(wanted) => wanted
                .iter()
                .all(|(name, value)| env.get(name).is_some_and(|v| v == value)),
        }
    }
}

/// The error a behaviour injects.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorSpec {
    /// CNI error code (default 999, "internal").
    #[serde(default = "default_error_code")]
    pub code: u32,
    /// Error message.
    #[serde(default = "default_error_msg")]
    pub msg: String,
    /// Error details (left out of the reply when empty).
    #[serde(default)]
    pub details: String,
}

fn default_error_code() -> u32 {
    999
}

fn default_error_msg() -> String {
    "plexus-recorder: injected error".to_owned()
}

/// Behaviours keyed by lower-case command name, plus the `all` fallback.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BehaviourSet {
    by_key: BTreeMap<String, Behaviour>,
}

impl BehaviourSet {
    /// Parses a behaviour object such as `{"add": {...}, "all": {...}}`.
    /// Keys are matched case-insensitively; unknown keys and fields are errors,
    /// so that a typo in a test fails loudly instead of doing nothing.
    pub fn from_value(value: &Value) -> Result<Self, String> {
        let Value::Object(map) = value else {
            return Err("behaviour must be a JSON object".to_owned());
        };
        let mut by_key = BTreeMap::new();
        for (key, entry) in map {
            let lower = key.to_ascii_lowercase();
            if lower != FALLBACK_KEY && !COMMAND_KEYS.contains(&lower.as_str()) {
                return Err(format!(
                    "unknown behaviour key {key:?} (expected one of {}, {FALLBACK_KEY})",
                    COMMAND_KEYS.join(", ")
                ));
            }
            let behaviour =
                Behaviour::deserialize(entry).map_err(|e| format!("behaviour {key:?}: {e}"))?;
            by_key.insert(lower, behaviour);
        }
        Ok(Self { by_key })
    }

    /// Parses the JSON text of `PLEXUS_RECORDER_BEHAVIOUR`.
    pub fn from_json_text(text: &str) -> Result<Self, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("{BEHAVIOUR_ENV} is not JSON: {e}"))?;
        Self::from_value(&value)
    }

    /// The behaviour for `command` (any case), falling back to `all`.
    pub fn select(&self, command: &str) -> Option<&Behaviour> {
        self.by_key
            .get(&command.to_ascii_lowercase())
            .or_else(|| self.by_key.get(FALLBACK_KEY))
    }
}

/// Resolves the behaviour set: the config's `recorder` key, else the env var, else none.
pub fn resolve_behaviours(
    conf: Option<NetConf<'_>>,
    env: &BTreeMap<String, String>,
) -> Result<BehaviourSet, String> {
    if let Some(value) = conf.and_then(|c| c.behaviour()) {
        return BehaviourSet::from_value(value)
            .map_err(|e| format!("config key {BEHAVIOUR_KEY:?}: {e}"));
    }
    match env.get(BEHAVIOUR_ENV) {
        Some(text) if !text.trim().is_empty() => BehaviourSet::from_json_text(text),
        _ => Ok(BehaviourSet::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parses_every_field() {
        let set = BehaviourSet::from_value(&json!({
            "add": {
                "sleepMs": 250,
                "result": {"ips": []},
                "error": {"code": 11, "msg": "later", "details": "busy"},
                "garbage": "oops",
                "exitCode": 3,
                "stderr": "hello",
                "signal": "TERM",
                "hugeOutputBytes": 1000,
                "failIfEnv": {"CNI_IFNAME": "net1"}
            }
        }))
        .expect("parses");
        let add = set.select("ADD").expect("add present");
        assert_eq!(add.sleep_ms, Some(250));
        assert_eq!(add.result, Some(json!({"ips": []})));
        assert_eq!(
            add.error,
            Some(ErrorSpec {
                code: 11,
                msg: "later".into(),
                details: "busy".into()
            })
        );
        assert_eq!(add.garbage.as_deref(), Some("oops"));
        assert_eq!(add.exit_code, Some(3));
        assert_eq!(add.stderr.as_deref(), Some("hello"));
        assert_eq!(add.signal.as_deref(), Some("TERM"));
        assert_eq!(add.huge_output_bytes, Some(1000));
        assert_eq!(add.fail_if_env, Some(env(&[("CNI_IFNAME", "net1")])));
    }

    #[test]
    fn error_spec_defaults() {
        let set = BehaviourSet::from_value(&json!({"del": {"error": {}}})).expect("parses");
        let err = set
            .select("DEL")
            .and_then(|b| b.error.clone())
            .expect("error");
        assert_eq!(err.code, 999);
        assert!(err.msg.contains("injected"));
        assert!(err.details.is_empty());
    }

    #[test]
    fn specific_command_wins_over_all() {
        let set = BehaviourSet::from_value(&json!({
            "add": {"exitCode": 1},
            "all": {"exitCode": 2}
        }))
        .expect("parses");
        assert_eq!(set.select("ADD").and_then(|b| b.exit_code), Some(1));
        assert_eq!(set.select("DEL").and_then(|b| b.exit_code), Some(2));
        assert_eq!(set.select("version").and_then(|b| b.exit_code), Some(2));
    }

    #[test]
    fn no_fallback_means_none() {
        let set = BehaviourSet::from_value(&json!({"add": {}})).expect("parses");
        assert!(set.select("ADD").is_some());
        assert!(set.select("DEL").is_none());
        assert!(BehaviourSet::default().select("ADD").is_none());
    }

    #[test]
    fn keys_are_case_insensitive() {
        let set = BehaviourSet::from_value(&json!({"CHECK": {"exitCode": 5}})).expect("parses");
        assert_eq!(set.select("check").and_then(|b| b.exit_code), Some(5));
    }

    #[test]
    fn rejects_unknown_keys_and_fields() {
        let bad_key = BehaviourSet::from_value(&json!({"addd": {}})).unwrap_err();
        assert!(bad_key.contains("addd"), "{bad_key}");
        let bad_field = BehaviourSet::from_value(&json!({"add": {"sleep": 1}})).unwrap_err();
        assert!(bad_field.contains("sleep"), "{bad_field}");
        assert!(BehaviourSet::from_value(&json!([1])).is_err());
        assert!(BehaviourSet::from_value(&json!({"add": {"sleepMs": "x"}})).is_err());
    }

    #[test]
    fn fail_if_env_matching() {
        let b = Behaviour {
            fail_if_env: Some(env(&[("CNI_IFNAME", "net1"), ("X", "y")])),
            ..Behaviour::default()
        };
        assert!(b.error_applies(&env(&[("CNI_IFNAME", "net1"), ("X", "y")])));
        assert!(!b.error_applies(&env(&[("CNI_IFNAME", "net2"), ("X", "y")])));
        assert!(!b.error_applies(&env(&[("CNI_IFNAME", "net1")])));
        assert!(Behaviour::default().error_applies(&env(&[])));
    }

    #[test]
    fn config_behaviour_beats_env() {
        let stdin = Stdin::parse(r#"{"cniVersion":"1.0.0","recorder":{"add":{"exitCode":7}}}"#);
        let e = env(&[(BEHAVIOUR_ENV, r#"{"add":{"exitCode":9}}"#)]);
        let set = resolve_behaviours(stdin.net_conf(), &e).expect("resolves");
        assert_eq!(set.select("ADD").and_then(|b| b.exit_code), Some(7));
    }

    #[test]
    fn env_behaviour_used_without_config_key() {
        let stdin = Stdin::parse(r#"{"cniVersion":"1.0.0"}"#);
        let e = env(&[(BEHAVIOUR_ENV, r#"{"all":{"exitCode":9}}"#)]);
        let set = resolve_behaviours(stdin.net_conf(), &e).expect("resolves");
        assert_eq!(set.select("DEL").and_then(|b| b.exit_code), Some(9));
        let broken = env(&[(BEHAVIOUR_ENV, "{nope")]);
        let err = resolve_behaviours(stdin.net_conf(), &broken).unwrap_err();
        assert!(err.contains(BEHAVIOUR_ENV), "{err}");
        let none = resolve_behaviours(stdin.net_conf(), &env(&[])).expect("resolves");
        assert_eq!(none, BehaviourSet::default());
    }

    #[test]
    fn stdin_decoding_and_record_value() {
        assert_eq!(Stdin::parse("{\"a\":1}").record_value(), json!({"a": 1}));
        assert_eq!(
            Stdin::parse("not json").record_value(),
            json!({"raw": "not json"})
        );
        assert!(Stdin::parse("[1,2]").net_conf().is_none());
        assert!(Stdin::parse("not json").net_conf().is_none());
    }

    #[test]
    fn net_conf_keys() {
        let stdin = Stdin::parse(
            r#"{"recordFile":"/tmp/r","ip":"10.1.2.3/24","prevResult":null,"recorder":null}"#,
        );
        let conf = stdin.net_conf().expect("object");
        assert_eq!(conf.cni_version(), None);
        assert_eq!(conf.effective_version(), "0.1.0");
        assert_eq!(conf.record_file(), Some("/tmp/r"));
        assert_eq!(conf.ip(), Some("10.1.2.3/24"));
        assert!(conf.prev_result().is_none());
        assert!(conf.behaviour().is_none());
    }
}
