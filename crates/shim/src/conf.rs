//! The few keys the shim reads from the network config on its stdin; the rest is the daemon's business.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use plexus_cni::{ErrorReply, codes};
use serde_json::{Map, Value};

use crate::wire;

/// How long ADD, CHECK and GC wait for an unreachable daemon by default (`daemonWaitSeconds`).
pub const DEFAULT_WAIT_SECONDS: u64 = 30;

/// The shim's view of its config.
#[derive(Debug, Clone, PartialEq)]
pub struct ShimConf {
    /// `cniVersion` as written (empty when absent).
    pub cni_version: String,
    /// `daemonSocketDir`, else `socketDir` (Go Multus's key), else [`wire::DEFAULT_SOCKET_DIR`].
    pub socket_dir: PathBuf,
    /// `daemonWaitSeconds`: how long ADD, CHECK and GC wait for an unreachable daemon.
    pub wait: Duration,
    /// `logFile`: where a failure is logged (one line, appended).
    pub log_file: Option<PathBuf>,
    /// `logToStderr` (default true, as plexus): whether a failure is logged to stderr too.
    pub log_to_stderr: bool,
    /// `thinBinary`: the thin `plexus` a DEL falls back to (absolute); `None` for the one beside the shim.
    pub thin_binary: Option<PathBuf>,
}

impl Default for ShimConf {
    fn default() -> Self {
        ShimConf {
            cni_version: String::new(),
            socket_dir: PathBuf::from(wire::DEFAULT_SOCKET_DIR),
            wait: Duration::from_secs(DEFAULT_WAIT_SECONDS),
            log_file: None,
            log_to_stderr: true,
            thin_binary: None,
        }
    }
}

fn invalid(key: &str, why: impl std::fmt::Display) -> ErrorReply {
    ErrorReply::new(
        codes::INVALID_NETWORK_CONFIG,
        "invalid network config",
        format!("{key}: {why}"),
    )
}

fn string<'a>(m: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, ErrorReply> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(invalid(key, format!("expected a string, got {other}"))),
    }
}

impl ShimConf {
    /// Read the shim's keys from the config bytes.
    ///
    /// Not JSON, or not an object: code 6 (decoding failure). One of the shim's keys with the wrong type,
    /// a negative or huge `daemonWaitSeconds`, or a relative `thinBinary`: code 7. Other keys are not looked at.
    pub fn parse(bytes: &[u8]) -> Result<ShimConf, ErrorReply> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            ErrorReply::new(
                codes::DECODE_FAILURE,
                "cannot decode the network config",
                e.to_string(),
            )
        })?;
        let Value::Object(m) = value else {
            return Err(ErrorReply::new(
                codes::DECODE_FAILURE,
                "cannot decode the network config",
                "the network config is not a JSON object",
            ));
        };
        let mut conf = ShimConf {
            cni_version: string(&m, "cniVersion")?.unwrap_or_default().to_owned(),
            ..ShimConf::default()
        };
        let dir = match string(&m, "daemonSocketDir")?.filter(|s| !s.is_empty()) {
            Some(d) => Some(d),
            None => string(&m, "socketDir")?.filter(|s| !s.is_empty()),
        };
        if let Some(dir) = dir {
            conf.socket_dir = PathBuf::from(dir);
        }
        match m.get("daemonWaitSeconds") {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) => {
                let secs = n.as_f64().unwrap_or(-1.0);
                conf.wait = (secs >= 0.0)
                    .then(|| Duration::try_from_secs_f64(secs).ok())
                    .flatten()
                    .ok_or_else(|| {
                        invalid(
                            "daemonWaitSeconds",
                            format!("{n} is not a number of seconds ≥ 0"),
                        )
                    })?;
            }
            Some(other) => {
                return Err(invalid(
                    "daemonWaitSeconds",
                    format!("expected a number of seconds, got {other}"),
                ));
            }
        }
        conf.log_file = string(&m, "logFile")?
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        match m.get("logToStderr") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => conf.log_to_stderr = *b,
            Some(other) => {
                return Err(invalid(
                    "logToStderr",
                    format!("expected true or false, got {other}"),
                ));
            }
        }
        if let Some(thin) = string(&m, "thinBinary")?.filter(|s| !s.is_empty()) {
            if !Path::new(thin).is_absolute() {
                return Err(invalid(
                    "thinBinary",
                    format!("{thin:?} must be an absolute path"),
                ));
            }
            conf.thin_binary = Some(PathBuf::from(thin));
        }
        Ok(conf)
    }

    /// The daemon's socket: `<socket dir>/`[`wire::SOCKET_NAME`].
    pub fn socket_path(&self) -> PathBuf {
        self.socket_dir.join(wire::SOCKET_NAME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ShimConf, ErrorReply> {
        ShimConf::parse(s.as_bytes())
    }

    #[test]
    fn defaults_apply_to_a_bare_conf() {
        let c = parse(r#"{"cniVersion":"0.3.1","name":"n","type":"plexus-shim"}"#).unwrap();
        assert_eq!(c.cni_version, "0.3.1");
        assert_eq!(c.socket_path(), Path::new("/run/plexus/plexus.sock"));
        assert_eq!(c.wait, Duration::from_secs(30));
        assert_eq!(c.log_file, None);
        assert!(c.log_to_stderr);
        assert_eq!(c.thin_binary, None);
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(
            r#"{"cniVersion":"1.1.0","daemonSocketDir":"/host/run/p","daemonWaitSeconds":1.5,
                "logFile":"/var/log/shim.log","logToStderr":false,"thinBinary":"/opt/cni/bin/multus"}"#,
        )
        .unwrap();
        assert_eq!(c.socket_path(), Path::new("/host/run/p/plexus.sock"));
        assert_eq!(c.wait, Duration::from_millis(1500));
        assert_eq!(c.log_file.as_deref(), Some(Path::new("/var/log/shim.log")));
        assert!(!c.log_to_stderr);
        assert_eq!(
            c.thin_binary.as_deref(),
            Some(Path::new("/opt/cni/bin/multus"))
        );
    }

    /// Go Multus's conf names the directory `socketDir` (docs/multus-compat.md,
    /// "Daemon mode"); `daemonSocketDir` wins.
    #[test]
    fn socket_dir_alias_and_precedence() {
        let c = parse(r#"{"socketDir":"/run/multus"}"#).unwrap();
        assert_eq!(c.socket_dir, Path::new("/run/multus"));
        let c = parse(r#"{"socketDir":"/run/multus","daemonSocketDir":"/run/plexus2"}"#).unwrap();
        assert_eq!(c.socket_dir, Path::new("/run/plexus2"));
        let c = parse(r#"{"socketDir":"/run/multus","daemonSocketDir":""}"#).unwrap();
        assert_eq!(c.socket_dir, Path::new("/run/multus"));
    }

    #[test]
    fn not_json_or_not_an_object_is_a_decoding_failure() {
        for bad in ["", "{", "not json", "[1]", "\"x\""] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.code, codes::DECODE_FAILURE, "{bad:?}");
        }
    }

    #[test]
    fn wrong_types_and_values_are_invalid_config() {
        for (bad, key) in [
            (r#"{"cniVersion":1}"#, "cniVersion"),
            (r#"{"daemonSocketDir":5}"#, "daemonSocketDir"),
            (r#"{"daemonWaitSeconds":"30"}"#, "daemonWaitSeconds"),
            (r#"{"daemonWaitSeconds":-1}"#, "daemonWaitSeconds"),
            (r#"{"daemonWaitSeconds":1e300}"#, "daemonWaitSeconds"),
            (r#"{"logToStderr":"yes"}"#, "logToStderr"),
            (r#"{"thinBinary":"plexus"}"#, "thinBinary"),
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.code, codes::INVALID_NETWORK_CONFIG, "{bad}");
            assert!(e.details.starts_with(key), "{bad}: {}", e.details);
        }
    }

    #[test]
    fn zero_wait_and_nulls_are_accepted() {
        let c = parse(r#"{"daemonWaitSeconds":0,"logFile":null,"cniVersion":null}"#).unwrap();
        assert_eq!(c.wait, Duration::ZERO);
        assert_eq!(c.cni_version, "");
    }
}
