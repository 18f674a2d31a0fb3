//! One shim invocation: read the CNI call, forward it to `plexus daemon` (waiting for the daemon on
//! ADD/CHECK/GC, falling back to the thin `plexus` on DEL), and turn the reply into what the runtime reads:
//! one JSON document on stdout (or nothing) and the exit status.

use std::{
    collections::BTreeMap,
    fs,
    io::{self, Read, Write},
    path::{Path, PathBuf},
    process::Stdio,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use plexus_cni::{CniResult, CniVersion, Command, ErrorReply, codes};
use serde_json::Value;

use crate::{
    conf::ShimConf,
    http::{self, CallError, Response, Timeouts, bounded},
    transport::{Transport, UNAVAILABLE_STATUS},
    wire,
};

/// The about line printed to stderr when `CNI_COMMAND` is unset.
pub const ABOUT: &str = concat!(
    "plexus-shim ",
    env!("CARGO_PKG_VERSION"),
    ": forwards CNI calls to plexus daemon (daemon mode of the plexus meta-plugin; CNI spec 0.1.0 to 1.1.0)"
);

/// How often ADD, CHECK and GC try an unreachable daemon again.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// The connect timeout of every attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The write timeout of the request.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// STATUS's read timeout (the other commands wait for their delegates as long as the runtime lets them).
pub const STATUS_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Further attempts DEL makes, [`RETRY_INTERVAL`] apart, when the daemon refuses the connection (it is
/// restarting) before falling back to the thin binary.
pub const DEL_REFUSED_RETRIES: u32 = 2;
/// How much of a non-CNI error body goes into the error reply.
pub const MAX_BODY_SHOWN: usize = 1024;
/// The thin binary's file name beside the shim.
pub const THIN_NAME: &str = "plexus";

/// What the process prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Stdout: one JSON document (result or error), or nothing.
    pub stdout: Vec<u8>,
    /// Stderr text (the about line, log lines).
    pub stderr: String,
    /// Exit status.
    pub code: u8,
}

impl Outcome {
    fn ok(stdout: Vec<u8>) -> Outcome {
        Outcome {
            stdout,
            stderr: String::new(),
            code: 0,
        }
    }

    fn error(reply: &ErrorReply) -> Outcome {
        Outcome {
            stdout: reply.to_json().into_bytes(),
            stderr: String::new(),
            code: 1,
        }
    }
}

/// The process's inputs.
pub struct Inputs<'a> {
    /// The environment (lossy UTF-8); forwarded to the daemon as it is.
    pub vars: Vec<(String, String)>,
    /// Stdin, read only once `CNI_COMMAND` is known to be set.
    pub stdin: &'a mut dyn Read,
    /// The shim's own path (`std::env::current_exe`), to find the thin `plexus` beside it.
    pub exe: Option<PathBuf>,
}

/// The VERSION reply, answered without the daemon, as the thin `plexus` answers it.
pub use plexus_cni::version::version_reply;

/// Run one invocation.
pub fn run(inputs: Inputs<'_>) -> Outcome {
    let var = |name: &str| {
        inputs
            .vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(command) = var("CNI_COMMAND").filter(|c| !c.is_empty()) else {
        return Outcome {
            stdout: Vec::new(),
            stderr: format!("{ABOUT}\n"),
            code: 0,
        };
    };
    let mut stdin = Vec::new();
    if let Err(e) = inputs.stdin.read_to_end(&mut stdin) {
        return Outcome::error(&ErrorReply::new(
            codes::IO_FAILURE,
            "cannot read the network config from stdin",
            e.to_string(),
        ));
    }
    let cmd = Command::parse(command);
    if cmd == Some(Command::Version) {
        return Outcome::ok(version_reply(&stdin));
    }
    let conf = match ShimConf::parse(&stdin) {
        Ok(c) => c,
        Err(reply) => {
            let version = serde_json::from_slice::<Value>(&stdin)
                .ok()
                .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned))
                .unwrap_or_default();
            return Outcome::error(&reply.with_cni_version(version));
        }
    };
    let call = Call {
        cmd: command.to_owned(),
        who: format!(
            "{}/{}",
            var("CNI_CONTAINERID").unwrap_or("-"),
            var("CNI_IFNAME").unwrap_or("-")
        ),
        conf: &conf,
        socket: conf.socket_path(),
    };
    let Some(cmd) = cmd else {
        return call.fail(ErrorReply::new(
            codes::INVALID_ENV,
            format!("unknown CNI_COMMAND: {command}"),
            "",
        ));
    };
    // ADD's result is converted to the config's version: refuse a version plexus does not know before the
    // daemon attaches anything.
    let add_version = if cmd == Command::Add {
        match CniVersion::from_config_str(Some(conf.cni_version.as_str())) {
            Ok(v) => Some(v),
            Err(_) => {
                return call.fail(ErrorReply::incompatible_version(
                    &conf.cni_version,
                    &CniVersion::ALL,
                ));
            }
        }
    } else {
        None
    };
    let request = wire::Request {
        env: inputs.vars.iter().cloned().collect::<BTreeMap<_, _>>(),
        config: stdin,
        interface_attributes: None,
    };
    let body = match serde_json::to_vec(&request) {
        Ok(b) => b,
        Err(e) => {
            return call
                .fail(Transport::EncodeFailed.reply("cannot encode the request", e.to_string()));
        }
    };
    match cmd {
        Command::Add | Command::Check | Command::Gc => match call.waiting(&body) {
            Ok(resp) => call.reply(resp, add_version),
            Err(reply) => call.fail(reply),
        },
        Command::Status => call.status(&body),
        Command::Del => call.del(&body, &request.config, inputs.exe.as_deref()),
        // Answered above, without the daemon.
        Command::Version => Outcome::ok(version_reply(&request.config)),
    }
}

/// How an attempt went.
enum Attempt {
    /// The daemon answered (anything but 503).
    Reply(Response),
    /// The daemon cannot be reached now (nothing at the path, refused, connect timeout, or a 503), so
    /// trying again may help.
    Unreachable(String),
    /// A connect error that waiting will not fix (permission denied, not a socket, ...).
    ConnectFailed(String),
    /// Connected, but no complete reply: the daemon died mid-request or answered garbage.
    Dropped(String),
}

/// Why a DEL falls back to the thin `plexus`.
enum Fallback {
    /// The daemon could not be reached, or dropped the request.
    Unreachable(String),
    /// The daemon's DEL failed with this error.
    Failed(ErrorReply),
}

/// The CNI error in a daemon's failed reply (or one describing the reply when it holds none).
fn daemon_error(resp: &Response) -> ErrorReply {
    ErrorReply::parse(&resp.body).unwrap_or_else(|| {
        Transport::UnreadableReply.reply(
            format!(
                "plexus daemon answered HTTP {} {}",
                resp.status, resp.reason
            )
            .trim_end()
            .to_owned(),
            describe_body(&resp.body),
        )
    })
}

/// One forwarded call.
struct Call<'a> {
    cmd: String,
    who: String,
    conf: &'a ShimConf,
    socket: PathBuf,
}

impl Call<'_> {
    fn attempt(&self, body: &[u8], read: Option<Duration>) -> (Attempt, Option<io::ErrorKind>) {
        let t = Timeouts {
            connect: CONNECT_TIMEOUT,
            write: WRITE_TIMEOUT,
            read,
        };
        match http::post(&self.socket, wire::CNI_PATH, body, t) {
            Ok(r) if r.status == UNAVAILABLE_STATUS => {
                let why = format!(
                    "the daemon answered 503 (not ready): {}",
                    describe_body(&r.body)
                );
                (Attempt::Unreachable(why), None)
            }
            Ok(r) => (Attempt::Reply(r), None),
            Err(CallError::Connect(e)) => {
                let kind = e.kind();
                let transient = matches!(
                    kind,
                    io::ErrorKind::NotFound
                        | io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::WouldBlock
                );
                let why = e.to_string();
                if transient {
                    (Attempt::Unreachable(why), Some(kind))
                } else {
                    (Attempt::ConnectFailed(why), Some(kind))
                }
            }
            Err(e @ CallError::Exchange(_)) => (Attempt::Dropped(e.to_string()), None),
        }
    }

    /// ADD, CHECK, GC: try every [`RETRY_INTERVAL`] while the daemon is unreachable, for up to
    /// `daemonWaitSeconds`; then code 11. A dropped connection is code 11 at once (the runtime retries).
    fn waiting(&self, body: &[u8]) -> Result<Response, ErrorReply> {
        let start = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let last = match self.attempt(body, None).0 {
                Attempt::Reply(r) => return Ok(r),
                Attempt::Unreachable(why) => why,
                Attempt::ConnectFailed(why) => {
                    return Err(Transport::ConnectFailed.reply(
                        "cannot reach plexus daemon",
                        format!("connecting to {}: {why}", self.socket.display()),
                    ));
                }
                Attempt::Dropped(why) => {
                    return Err(Transport::Dropped.reply(
                        "plexus daemon dropped the request",
                        format!(
                            "the connection to {} ended without a complete reply: {why}",
                            self.socket.display()
                        ),
                    ));
                }
            };
            let elapsed = start.elapsed();
            if elapsed >= self.conf.wait {
                return Err(Transport::NotReachable.reply(
                    "plexus daemon not reachable",
                    format!(
                        "no answer from plexus daemon at {} after waiting {:.1}s ({attempts} attempts); last error: {last}",
                        self.socket.display(),
                        elapsed.as_secs_f64()
                    ),
                ));
            }
            thread::sleep(RETRY_INTERVAL.min(self.conf.wait - elapsed));
        }
    }

    /// STATUS: one attempt; an unreachable daemon is code 50 (plugin not available).
    fn status(&self, body: &[u8]) -> Outcome {
        let why = match self.attempt(body, Some(STATUS_READ_TIMEOUT)).0 {
            Attempt::Reply(r) => return self.reply(r, None),
            Attempt::Unreachable(why) | Attempt::ConnectFailed(why) | Attempt::Dropped(why) => why,
        };
        self.fail(Transport::StatusUnavailable.reply(
            "plexus daemon not available",
            format!("{}: {why}", self.socket.display()),
        ))
    }

    /// DEL: one attempt (a refused connection is tried [`DEL_REFUSED_RETRIES`] more times); a daemon that
    /// cannot be reached or drops the request leaves the DEL to the thin `plexus`, from the cache. So does a
    /// DEL the daemon failed: the cause may be its own view of the node (a delegate that runs a program its
    /// container lacks), and a DEL that keeps failing pins the pod; the thin plexus's answer counts.
    fn del(&self, body: &[u8], stdin: &[u8], exe: Option<&Path>) -> Outcome {
        let mut retries = 0;
        let why = loop {
            match self.attempt(body, None) {
                (Attempt::Reply(r), _) if (200..300).contains(&r.status) => {
                    return self.reply(r, None);
                }
                (Attempt::Reply(r), _) => {
                    let reply = daemon_error(&r);
                    return self.fallback(stdin, exe, &Fallback::Failed(reply));
                }
                (Attempt::Unreachable(_), Some(io::ErrorKind::ConnectionRefused))
                    if retries < DEL_REFUSED_RETRIES =>
                {
                    retries += 1;
                    thread::sleep(RETRY_INTERVAL);
                }
                (
                    Attempt::Unreachable(why) | Attempt::ConnectFailed(why) | Attempt::Dropped(why),
                    _,
                ) => break why,
            }
        };
        self.fallback(stdin, exe, &Fallback::Unreachable(why))
    }

    /// Run the thin `plexus` with this process's environment and `stdin`; relay its stdout and exit status.
    fn fallback(&self, stdin: &[u8], exe: Option<&Path>, why: &Fallback) -> Outcome {
        let thin = self
            .conf
            .thin_binary
            .clone()
            .or_else(|| exe.and_then(Path::parent).map(|dir| dir.join(THIN_NAME)));
        let missing = |what: String| match why {
            Fallback::Unreachable(why) => self.fail(Transport::NoFallback.reply(
                "plexus daemon not reachable and no thin plexus to fall back to",
                format!("{}: {why}; {what}", self.socket.display()),
            )),
            // The daemon's own answer stands.
            Fallback::Failed(reply) => {
                self.log(&format!(
                    "cannot do the failed DEL again on the host: {what}"
                ));
                self.fail(reply.clone())
            }
        };
        let Some(thin) = thin else {
            return missing(format!(
                "the shim's own path is unknown, so {THIN_NAME:?} beside it cannot be found"
            ));
        };
        // The thin binary is the shim itself (installed under the wrong name): running it would recurse.
        let is_self = exe.is_some_and(|exe| {
            matches!((fs::canonicalize(exe), fs::canonicalize(&thin)), (Ok(a), Ok(b)) if a == b)
        });
        if is_self {
            return missing(format!(
                "{} is this shim, not the thin plexus",
                thin.display()
            ));
        }
        let mut child = match spawn(&thin) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return missing(format!("thin plexus {} not found", thin.display()));
            }
            Err(e) => return missing(format!("cannot run thin plexus {}: {e}", thin.display())),
        };
        let feeder = child.stdin.take().map(|mut pipe| {
            let bytes = stdin.to_vec();
            // A thread, so a child that writes before it reads cannot deadlock against a full pipe.
            thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            })
        });
        let output = child.wait_with_output();
        if let Some(f) = feeder {
            let _ = f.join();
        }
        let mut outcome = match output {
            Err(e) => {
                return self.fail(Transport::FallbackFailed.reply(
                    "thin plexus fallback failed",
                    format!("waiting for {}: {e}", thin.display()),
                ));
            }
            Ok(out) => match out.status.code() {
                Some(code) => Outcome {
                    stdout: out.stdout,
                    stderr: String::new(),
                    code: u8::try_from(code).unwrap_or(1),
                },
                None if out.stdout.is_empty() => {
                    return self.fail(Transport::FallbackFailed.reply(
                        "thin plexus fallback failed",
                        format!(
                            "{} ended without an exit status: {}",
                            thin.display(),
                            out.status
                        ),
                    ));
                }
                None => Outcome {
                    stdout: out.stdout,
                    stderr: String::new(),
                    code: 1,
                },
            },
        };
        outcome.stderr = self.log(&match why {
            Fallback::Unreachable(why) => format!(
                "plexus daemon not reachable at {} ({why}); DEL done by thin plexus {}, exit status {}",
                self.socket.display(),
                thin.display(),
                outcome.code
            ),
            Fallback::Failed(reply) => format!(
                "plexus daemon's DEL failed (code {}: {reply}); DEL done again by thin plexus {} on the host, exit status {}",
                reply.code,
                thin.display(),
                outcome.code
            ),
        });
        outcome
    }

    /// The daemon's reply, for the runtime. `add_version`: ADD's result goes out in that version.
    fn reply(&self, resp: Response, add_version: Option<CniVersion>) -> Outcome {
        if (200..300).contains(&resp.status) {
            let Some(version) = add_version else {
                return Outcome::ok(Vec::new());
            };
            return match add_result(&resp.body, version) {
                Ok(json) => Outcome::ok(json.into_bytes()),
                Err(reply) => self.fail(reply),
            };
        }
        self.fail(daemon_error(&resp))
    }

    /// An error reply with the config's `cniVersion`, logged.
    fn fail(&self, mut reply: ErrorReply) -> Outcome {
        if !self.conf.cni_version.is_empty() {
            reply = reply.with_cni_version(self.conf.cni_version.as_str());
        }
        let mut out = Outcome::error(&reply);
        out.stderr = self.log(&format!(
            "error {} ({}): {reply}",
            reply.code,
            plexus_cni::code_name(reply.code)
        ));
        out
    }

    /// Append one line to `logFile`; returns it for stderr when `logToStderr`.
    fn log(&self, what: &str) -> String {
        let line = format!(
            "{} plexus-shim {} {}: {what}\n",
            rfc3339(SystemTime::now()),
            self.cmd,
            self.who
        );
        if let Some(path) = &self.conf.log_file {
            let _ = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(line.as_bytes()));
        }
        if self.conf.log_to_stderr {
            line
        } else {
            String::new()
        }
    }
}

/// Spawn `thin` with piped stdin and stdout, inheriting the environment and stderr. "Text file busy" (the
/// binary being replaced, Go Multus #1221) is tried again a few times.
fn spawn(thin: &Path) -> io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        let result = std::process::Command::new(thin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        match result {
            Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy && tries < 10 => {
                tries += 1;
                thread::sleep(Duration::from_millis(20 * tries));
            }
            other => return other,
        }
    }
}

/// ADD's `{"Result": <1.0.0 result>}` as the result in `version`, or the error reply.
fn add_result(body: &[u8], version: CniVersion) -> Result<String, ErrorReply> {
    let internal = |msg: &str, details: String| Transport::UnreadableReply.reply(msg, details);
    let response: wire::Response = serde_json::from_slice(body).map_err(|e| {
        internal(
            "plexus daemon's ADD reply is not valid",
            format!("{e}: {}", describe_body(body)),
        )
    })?;
    let value = response.result.filter(|v| !v.is_null()).ok_or_else(|| {
        internal(
            "plexus daemon returned no result for ADD",
            describe_body(body),
        )
    })?;
    CniResult::from_value(&value, wire::WIRE_RESULT_VERSION)
        .and_then(|r| r.to_json(version))
        .map_err(|e| {
            internal(
                "cannot convert the daemon's ADD result",
                format!("to cniVersion {version}: {e}"),
            )
        })
}

/// A body for an error message: trimmed text, at most [`MAX_BODY_SHOWN`] bytes.
fn describe_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        "(empty body)".to_owned()
    } else {
        bounded(text, MAX_BODY_SHOWN)
    }
}

/// `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(vars: &[(&str, &str)], stdin: &str) -> Outcome {
        run(Inputs {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            stdin: &mut stdin.as_bytes(),
            exe: None,
        })
    }

    fn reply(out: &Outcome) -> ErrorReply {
        ErrorReply::parse(&out.stdout).expect("an error reply on stdout")
    }

    /// No socket at this path: every test below that reaches the daemon finds none.
    const NOWHERE: &str = r#""daemonSocketDir":"/nonexistent/plexus-shim-test""#;

    #[test]
    fn no_command_prints_the_about_line_and_does_not_read_stdin() {
        struct Unreadable;
        impl Read for Unreadable {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                panic!("stdin read without CNI_COMMAND")
            }
        }
        for vars in [vec![], vec![("CNI_COMMAND".to_string(), String::new())]] {
            let out = run(Inputs {
                vars,
                stdin: &mut Unreadable,
                exe: None,
            });
            assert_eq!(out.code, 0);
            assert!(out.stdout.is_empty());
            assert_eq!(out.stderr, format!("{ABOUT}\n"));
        }
    }

    #[test]
    fn version_echoes_the_conf_version_or_1_1_0() {
        let out = run_with(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"0.4.0"}"#);
        assert_eq!(out.code, 0);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 7);
        for stdin in ["", "not json", "{}"] {
            let out = run_with(&[("CNI_COMMAND", "VERSION")], stdin);
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["cniVersion"], "1.1.0", "{stdin:?}");
        }
    }

    #[test]
    fn undecodable_conf_is_code_6() {
        let out = run_with(&[("CNI_COMMAND", "ADD")], "{not json");
        assert_eq!(out.code, 1);
        assert_eq!(reply(&out).code, codes::DECODE_FAILURE);
    }

    #[test]
    fn invalid_conf_key_is_code_7_with_the_conf_version() {
        let out = run_with(
            &[("CNI_COMMAND", "DEL")],
            r#"{"cniVersion":"0.4.0","daemonWaitSeconds":"x"}"#,
        );
        let r = reply(&out);
        assert_eq!(
            (r.code, r.cni_version.as_str()),
            (codes::INVALID_NETWORK_CONFIG, "0.4.0")
        );
    }

    #[test]
    fn unknown_command_is_code_4_without_the_daemon() {
        let out = run_with(&[("CNI_COMMAND", "FROB")], &format!("{{{NOWHERE}}}"));
        let r = reply(&out);
        assert_eq!(r.code, codes::INVALID_ENV);
        assert!(r.msg.contains("FROB"));
    }

    #[test]
    fn add_with_an_unknown_cni_version_is_code_1_without_the_daemon() {
        let start = Instant::now();
        let out = run_with(
            &[("CNI_COMMAND", "ADD")],
            &format!(r#"{{"cniVersion":"9.9.9",{NOWHERE}}}"#),
        );
        let r = reply(&out);
        assert_eq!(r.code, codes::INCOMPATIBLE_VERSION);
        assert_eq!(r.cni_version, "9.9.9");
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn add_result_is_converted_and_missing_result_is_999() {
        let body = br#"{"Result":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}}"#;
        let v: Value =
            serde_json::from_str(&add_result(body, CniVersion::V0_3_1).unwrap()).unwrap();
        assert_eq!(v["cniVersion"], "0.3.1");
        assert_eq!(v["ips"][0]["version"], "4");
        for body in [&b"{}"[..], br#"{"Result":null}"#, b""] {
            let e = add_result(body, CniVersion::V1_0_0).unwrap_err();
            assert_eq!(e.code, codes::INTERNAL);
        }
        let e = add_result(b"{}", CniVersion::V1_0_0).unwrap_err();
        assert!(e.msg.contains("no result"), "{e}");
    }

    #[test]
    fn a_result_without_cni_version_is_read_as_the_wire_version() {
        // 1.0.0 has no ips[].version; a 0.3.x reading would have needed one.
        let body = br#"{"Result":{"ips":[{"address":"fd00::2/64"}]}}"#;
        let v: Value =
            serde_json::from_str(&add_result(body, CniVersion::V0_4_0).unwrap()).unwrap();
        assert_eq!(v["ips"][0]["version"], "6");
    }

    #[test]
    fn describe_body_trims_and_bounds() {
        assert_eq!(describe_body(b"  oops \n"), "oops");
        assert_eq!(describe_body(b" \n"), "(empty body)");
        let long = "x".repeat(5000);
        let shown = describe_body(long.as_bytes());
        assert!(shown.len() <= MAX_BODY_SHOWN + '…'.len_utf8());
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_251_199_123); // a leap day
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn failures_are_logged_to_the_log_file_and_stderr_on_request() {
        let dir = std::env::temp_dir().join(format!("plexus-shim-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("shim.log");
        let _ = fs::remove_file(&log);
        let conf = format!(
            r#"{{"cniVersion":"1.0.0","daemonWaitSeconds":0,{NOWHERE},"logFile":{:?},"logToStderr":false}}"#,
            log.display().to_string()
        );
        let out = run_with(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_IFNAME", "eth0"),
            ],
            &conf,
        );
        assert_eq!(reply(&out).code, codes::TRY_AGAIN_LATER);
        assert!(out.stderr.is_empty(), "{}", out.stderr);
        let logged = fs::read_to_string(&log).unwrap();
        assert_eq!(logged.lines().count(), 1, "{logged}");
        assert!(
            logged.contains("plexus-shim ADD c1/eth0: error 11"),
            "{logged}"
        );
        let out = run_with(
            &[("CNI_COMMAND", "CHECK")],
            &format!(r#"{{"daemonWaitSeconds":0,{NOWHERE}}}"#),
        );
        assert!(
            out.stderr.contains("plexus-shim CHECK -/-: error 11"),
            "{}",
            out.stderr
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
