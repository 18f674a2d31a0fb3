//! Deciding what one invocation does: the behaviour steps in order, then the default reply.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::config::{Behaviour, Stdin, resolve_behaviours};
use crate::reply::{
    Attachment, CniError, LATEST_VERSION, Shape, default_add_result, fill_version, force_version,
    unsupported_version, version_reply,
};

/// The commands the recorder knows (`CNI_COMMAND` values, exact case).
pub const COMMANDS: [&str; 6] = ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"];

/// The final step of an invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Print nothing and exit with this code.
    Silent(i32),
    /// Print this JSON on one line and exit with the code.
    Json {
        /// The reply.
        body: Value,
        /// Exit status.
        exit: i32,
    },
    /// Print this text verbatim and exit with the code.
    Text {
        /// The text.
        body: String,
        /// Exit status.
        exit: i32,
    },
    /// Print this many junk bytes and exit 1.
    Junk(u64),
    /// Kill the process with this signal.
    Signal(Signal),
    /// Run this plugin with this stdin (and the recorder's environment), and reply as it replied.
    Exec {
        /// The plugin binary, found in `CNI_PATH`.
        plugin: PathBuf,
        /// Its stdin: the recorder's config.
        stdin: Vec<u8>,
    },
}

impl Action {
    /// A CNI error reply, exit status 1.
    pub fn error(err: &CniError, cni_version: &str) -> Self {
        Action::Json {
            body: err.to_json(cni_version),
            exit: 1,
        }
    }
}

/// Everything an invocation does after recording, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Written to stderr first.
    pub stderr: Option<String>,
    /// Slept next.
    pub sleep: Option<Duration>,
    /// Done last.
    pub action: Action,
}

impl Plan {
    /// A plan that only performs `action`.
    pub fn only(action: Action) -> Self {
        Self {
            stderr: None,
            sleep: None,
            action,
        }
    }

    /// A plan that fails with `err`.
    pub fn failure(err: &CniError, cni_version: &str) -> Self {
        Self::only(Action::error(err, cni_version))
    }
}

/// The `cniVersion` used in replies: the config's (missing = 0.1.0); for
/// VERSION the requested one (missing = latest); latest if stdin is no config.
pub fn reply_version<'a>(command: &str, stdin: &'a Stdin) -> &'a str {
    match stdin.net_conf() {
        Some(conf) if command == "VERSION" => conf.cni_version().unwrap_or(LATEST_VERSION),
        Some(conf) => conf.effective_version(),
        None => LATEST_VERSION,
    }
}

/// Parses `KILL`, `SIGKILL`, `term`, ... into a signal.
pub fn parse_signal(name: &str) -> Result<Signal, CniError> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&full).map_err(|_| {
        CniError::new(
            7,
            format!("invalid recorder behaviour: unknown signal {name:?}"),
        )
    })
}

/// Decides what to do for `command` given the environment and stdin.
pub fn decide(command: &str, env: &BTreeMap<String, String>, stdin: &Stdin) -> Plan {
    let version = reply_version(command, stdin);
    if !COMMANDS.contains(&command) {
        return Plan::failure(
            &CniError::new(4, format!("unknown CNI_COMMAND: {command}")),
            version,
        );
    }
    // VERSION ignores a stdin that is not a config, as Go's skel does.
    if command != "VERSION" {
        match stdin {
            Stdin::Raw(text) => {
                let mut err = CniError::new(6, "error decoding network config from stdin");
                if let Err(e) = serde_json::from_str::<Value>(text) {
                    err.details = e.to_string();
                }
                return Plan::failure(&err, version);
            }
            Stdin::Json(value) if !value.is_object() => {
                return Plan::failure(
                    &CniError::new(7, "network config on stdin must be a JSON object"),
                    version,
                );
            }
            Stdin::Json(_) => {}
        }
    }
    let behaviours = match resolve_behaviours(stdin.net_conf(), env) {
        Ok(set) => set,
        Err(e) => {
            return Plan::failure(
                &CniError::new(7, format!("invalid recorder behaviour: {e}")),
                version,
            );
        }
    };
    let behaviour = behaviours
        .select(command)
        .filter(|b| b.in_effect())
        .cloned()
        .unwrap_or_default();
    Plan {
        stderr: behaviour.stderr.clone(),
        sleep: behaviour.sleep_ms.map(Duration::from_millis),
        action: action_for(command, env, stdin, &behaviour, version),
    }
}

/// The first applicable step among signal, exitCode, garbage, hugeOutputBytes,
/// error, result, exec; else the default reply.
fn action_for(
    command: &str,
    env: &BTreeMap<String, String>,
    stdin: &Stdin,
    b: &Behaviour,
    version: &str,
) -> Action {
    if let Some(name) = &b.signal {
        return match parse_signal(name) {
            Ok(sig) => Action::Signal(sig),
            Err(e) => Action::error(&e, version),
        };
    }
    if let Some(code) = b.exit_code {
        return Action::Silent(code);
    }
    if let Some(text) = &b.garbage {
        return Action::Text {
            body: text.clone(),
            exit: 1,
        };
    }
    if let Some(n) = b.huge_output_bytes {
        return Action::Junk(n);
    }
    if let Some(spec) = &b.error
        && b.error_applies(env)
    {
        let err = CniError {
            code: spec.code,
            msg: spec.msg.clone(),
            details: spec.details.clone(),
        };
        return Action::error(&err, version);
    }
    if let Some(result) = &b.result {
        return Action::Json {
            body: fill_version(result.clone(), version),
            exit: 0,
        };
    }
    if let Some(plugin_type) = &b.exec {
        return match find_plugin(plugin_type, env) {
            Ok(plugin) => Action::Exec {
                plugin,
                stdin: match stdin {
                    Stdin::Json(v) => serde_json::to_vec(v).unwrap_or_default(),
                    Stdin::Raw(text) => text.clone().into_bytes(),
                },
            },
            Err(e) => Action::error(&e, version),
        };
    }
    match default_reply(command, env, stdin, version) {
        Ok(action) => action,
        Err(e) => Action::error(&e, version),
    }
}

/// The binary of `plugin_type` in `CNI_PATH`, first match wins, as a runtime looks it up; a type that
/// is a path is refused.
fn find_plugin(plugin_type: &str, env: &BTreeMap<String, String>) -> Result<PathBuf, CniError> {
    let path = env.get("CNI_PATH").map(String::as_str).unwrap_or_default();
    if !plugin_type.contains('/') && !plugin_type.is_empty() && plugin_type != ".." {
        for dir in path.split(':').filter(|d| !d.is_empty()) {
            let p = PathBuf::from(dir).join(plugin_type);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(CniError::new(
        7,
        format!("invalid recorder behaviour: no plugin {plugin_type:?} in CNI_PATH {path:?}"),
    ))
}

/// The reply when no behaviour step decided it.
fn default_reply(
    command: &str,
    env: &BTreeMap<String, String>,
    stdin: &Stdin,
    version: &str,
) -> Result<Action, CniError> {
    match command {
        "ADD" => default_add(env, stdin, version).map(|body| Action::Json { body, exit: 0 }),
        "VERSION" => {
            let requested = stdin.net_conf().and_then(|c| c.cni_version());
            Ok(Action::Json {
                body: version_reply(requested),
                exit: 0,
            })
        }
        _ => Ok(Action::Silent(0)),
    }
}

/// ADD: the prevResult passed through, or a made-up result for the attachment.
fn default_add(
    env: &BTreeMap<String, String>,
    stdin: &Stdin,
    version: &str,
) -> Result<Value, CniError> {
    let get = |name: &str| env.get(name).map(String::as_str).unwrap_or("");
    let missing: Vec<&str> = ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"]
        .into_iter()
        .filter(|name| get(name).is_empty())
        .collect();
    if !missing.is_empty() {
        return Err(CniError::new(
            4,
            format!("required env variables [{}] missing", missing.join(",")),
        ));
    }
    if Shape::of(version).is_none() {
        return Err(unsupported_version(version));
    }
    let conf = stdin.net_conf();
    if let Some(prev) = conf.and_then(|c| c.prev_result()) {
        if !prev.is_object() {
            return Err(CniError::new(7, "prevResult must be a JSON object"));
        }
        return Ok(force_version(prev.clone(), version));
    }
    let att = Attachment {
        container_id: get("CNI_CONTAINERID"),
        ifname: get("CNI_IFNAME"),
        netns: get("CNI_NETNS"),
    };
    default_add_result(version, &att, conf.and_then(|c| c.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BEHAVIOUR_ENV;
    use serde_json::json;

    fn add_env() -> BTreeMap<String, String> {
        [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/proc/1/ns/net"),
            ("CNI_IFNAME", "net1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn conf(value: Value) -> Stdin {
        Stdin::Json(value)
    }

    fn json_body(plan: &Plan) -> (&Value, i32) {
        match &plan.action {
            Action::Json { body, exit } => (body, *exit),
            other => panic!("expected JSON, got {other:?}"),
        }
    }

    #[test]
    fn steps_apply_in_order() {
        let full = json!({
            "stderr": "e", "sleepMs": 5, "signal": "KILL", "exitCode": 3,
            "garbage": "g", "hugeOutputBytes": 10,
            "error": {"code": 11, "msg": "m"}, "result": {"x": 1}
        });
        let expected = [
            ("signal", Action::Signal(Signal::SIGKILL)),
            ("exitCode", Action::Silent(3)),
            (
                "garbage",
                Action::Text {
                    body: "g".into(),
                    exit: 1,
                },
            ),
            ("hugeOutputBytes", Action::Junk(10)),
            (
                "error",
                Action::Json {
                    body: json!({"cniVersion": "1.0.0", "code": 11, "msg": "m"}),
                    exit: 1,
                },
            ),
            (
                "result",
                Action::Json {
                    body: json!({"x": 1, "cniVersion": "1.0.0"}),
                    exit: 0,
                },
            ),
        ];
        let mut behaviour = full.as_object().cloned().expect("object");
        for (key, action) in expected {
            let stdin =
                conf(json!({"cniVersion": "1.0.0", "recorder": {"add": behaviour.clone()}}));
            let plan = decide("ADD", &add_env(), &stdin);
            assert_eq!(plan.action, action, "with {key} first");
            assert_eq!(plan.stderr.as_deref(), Some("e"));
            assert_eq!(plan.sleep, Some(Duration::from_millis(5)));
            behaviour.remove(key);
        }
    }

    #[test]
    fn only_if_file_exists_switches_the_behaviour() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("on");
        let b = json!({"add": {"sleepMs": 7, "exitCode": 3, "onlyIfFileExists": marker}});
        let stdin = Stdin::Json(json!({"cniVersion": "1.0.0", "recorder": b}));
        let env = BTreeMap::from([
            ("CNI_CONTAINERID".to_string(), "c".to_string()),
            ("CNI_NETNS".to_string(), "/n".to_string()),
            ("CNI_IFNAME".to_string(), "net1".to_string()),
        ]);
        let off = decide("ADD", &env, &stdin);
        assert_eq!(off.sleep, None);
        assert!(!matches!(off.action, Action::Silent(_)), "{:?}", off.action);
        std::fs::write(&marker, "").unwrap();
        let on = decide("ADD", &env, &stdin);
        assert_eq!(on.sleep, Some(Duration::from_millis(7)));
        assert!(matches!(on.action, Action::Silent(3)), "{:?}", on.action);
    }

    #[test]
    fn fail_if_env_gates_error() {
        let b = json!({"error": {"code": 100, "msg": "net2 only"}, "failIfEnv": {"CNI_IFNAME": "net2"}});
        let stdin = conf(json!({"cniVersion": "1.0.0", "recorder": {"add": b}}));
        let plan = decide("ADD", &add_env(), &stdin);
        let (body, exit) = json_body(&plan);
        assert_eq!(exit, 0);
        assert!(body.get("ips").is_some());
        let mut env = add_env();
        env.insert("CNI_IFNAME".into(), "net2".into());
        let plan = decide("ADD", &env, &stdin);
        let (body, exit) = json_body(&plan);
        assert_eq!(exit, 1);
        assert_eq!(body["code"], json!(100));
    }

    #[test]
    fn default_add_shapes() {
        let plan = decide("ADD", &add_env(), &conf(json!({"cniVersion": "0.3.1"})));
        let (body, exit) = json_body(&plan);
        assert_eq!(exit, 0);
        assert_eq!(body["cniVersion"], json!("0.3.1"));
        assert_eq!(body["ips"][0]["version"], json!("4"));
        assert_eq!(body["interfaces"][0]["sandbox"], json!("/proc/1/ns/net"));
        let plan = decide("ADD", &add_env(), &conf(json!({"name": "n"})));
        let (body, _) = json_body(&plan);
        assert_eq!(body["cniVersion"], json!("0.1.0"));
        assert!(body.get("ip4").is_some());
    }

    #[test]
    fn default_add_needs_env() {
        let mut env = add_env();
        env.remove("CNI_NETNS");
        env.insert("CNI_IFNAME".into(), String::new());
        let plan = decide("ADD", &env, &conf(json!({"cniVersion": "1.0.0"})));
        let (body, exit) = json_body(&plan);
        assert_eq!(exit, 1);
        assert_eq!(body["code"], json!(4));
        let msg = body["msg"].as_str().expect("msg");
        assert!(
            msg.contains("CNI_NETNS") && msg.contains("CNI_IFNAME"),
            "{msg}"
        );
        assert!(!msg.contains("CNI_CONTAINERID"), "{msg}");
    }

    #[test]
    fn prev_result_passthrough() {
        let prev =
            json!({"cniVersion": "0.4.0", "ips": [{"address": "1.2.3.4/32", "version": "4"}]});
        let stdin = conf(json!({"cniVersion": "1.0.0", "prevResult": prev}));
        let plan = decide("ADD", &add_env(), &stdin);
        let (body, exit) = json_body(&plan);
        assert_eq!(exit, 0);
        assert_eq!(
            body,
            &json!({"cniVersion": "1.0.0", "ips": [{"address": "1.2.3.4/32", "version": "4"}]})
        );
    }

    #[test]
    fn other_commands_are_silent() {
        let stdin = conf(json!({"cniVersion": "1.1.0"}));
        for cmd in ["DEL", "CHECK", "STATUS", "GC"] {
            assert_eq!(
                decide(cmd, &BTreeMap::new(), &stdin).action,
                Action::Silent(0)
            );
        }
    }

    #[test]
    fn version_command() {
        let plan = decide(
            "VERSION",
            &BTreeMap::new(),
            &conf(json!({"cniVersion": "0.4.0"})),
        );
        let (body, _) = json_body(&plan);
        assert_eq!(body["cniVersion"], json!("0.4.0"));
        let plan = decide("VERSION", &BTreeMap::new(), &Stdin::parse(""));
        let (body, exit) = json_body(&plan);
        assert_eq!(exit, 0);
        assert_eq!(body["cniVersion"], json!("1.1.0"));
    }

    #[test]
    fn unknown_command_and_bad_stdin() {
        let plan = decide(
            "FROB",
            &BTreeMap::new(),
            &conf(json!({"cniVersion": "1.0.0"})),
        );
        let (body, _) = json_body(&plan);
        assert_eq!(body["code"], json!(4));
        assert_eq!(body["msg"], json!("unknown CNI_COMMAND: FROB"));

        let plan = decide("ADD", &add_env(), &Stdin::parse("{not json"));
        let (body, exit) = json_body(&plan);
        assert_eq!((body["code"].clone(), exit), (json!(6), 1));
        assert!(body.get("details").is_some());

        let plan = decide("DEL", &add_env(), &Stdin::parse("[1]"));
        let (body, _) = json_body(&plan);
        assert_eq!(body["code"], json!(7));
    }

    #[test]
    fn env_behaviour_and_invalid_behaviour() {
        let mut env = add_env();
        env.insert(BEHAVIOUR_ENV.into(), r#"{"del":{"exitCode":4}}"#.into());
        let stdin = conf(json!({"cniVersion": "1.0.0"}));
        assert_eq!(decide("DEL", &env, &stdin).action, Action::Silent(4));
        env.insert(BEHAVIOUR_ENV.into(), r#"{"del":{"exitcode":4}}"#.into());
        let plan = decide("DEL", &env, &stdin);
        let (body, _) = json_body(&plan);
        assert_eq!(body["code"], json!(7));
        assert!(body["msg"].as_str().is_some_and(|m| m.contains("exitcode")));
    }

    #[test]
    fn signal_names() {
        assert_eq!(parse_signal("KILL"), Ok(Signal::SIGKILL));
        assert_eq!(parse_signal("sigterm"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("SEGV"), Ok(Signal::SIGSEGV));
        assert_eq!(parse_signal("BOGUS").map_err(|e| e.code), Err(7));
    }

    #[test]
    fn unsupported_config_version() {
        let plan = decide("ADD", &add_env(), &conf(json!({"cniVersion": "9.9.9"})));
        let (body, _) = json_body(&plan);
        assert_eq!(body["code"], json!(1));
        assert_eq!(body["cniVersion"], json!("9.9.9"));
    }
}
