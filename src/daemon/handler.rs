//! One `/cni` request, run in place on the thread that read it (`block_in_place`): the shim's environment
//! and config (with the daemon's keys laid over it) run through the same core as the thin binary
//! ([`crate::invocation::run`]), and the outcome is put in the wire format
//! (docs/daemon.md, "Wire format, and Go Multus's shim").

use std::sync::{Arc, Mutex};

use plexus_cni::{CniResult, CniVersion, ErrorReply};
use plexus_shim::{
    transport::{CNI_ERROR_STATUS, Transport},
    wire,
};

use super::Shared;
use crate::{
    cluster::Cluster,
    exec::{Exec, ProcessExec},
    hostroot::{HOST_PATH, HostExec, HostNetns},
    invocation::{self, Host, Outcome},
    k8s::client::ApiCluster,
    netns::{KernelNetns, NetnsProbe},
    request::Command,
};

/// What goes back on the socket.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body (may be empty).
    pub body: Vec<u8>,
    /// For metrics: the verb.
    pub verb: String,
    /// For metrics: `ok` or the CNI error code.
    pub result: String,
}

impl Reply {
    /// A CNI error with an HTTP status.
    pub fn error(status: u16, verb: &str, reply: &ErrorReply) -> Reply {
        Reply {
            status,
            body: reply.to_json().into_bytes(),
            verb: verb.to_string(),
            result: reply.code.to_string(),
        }
    }
}

/// What a request leaves for after its reply.
#[derive(Default)]
pub struct Later {
    /// The cluster whose events (and deferred status write) are still to be sent.
    pub api: Option<Arc<ApiCluster>>,
    /// ADD's durable writes, holding the container's lock, or DEL's unlinks of its trash
    /// (`ops::Seams::after_reply`).
    pub finish: Option<Box<dyn FnOnce() + Send>>,
}

/// Run one request. Returns the reply and what is left for after it.
pub fn serve(shared: &Shared, req: wire::Request) -> (Reply, Later) {
    let mut vars: Vec<(String, String)> = req.env.into_iter().collect();
    if !vars.iter().any(|(k, _)| k == "PATH") {
        // A Go Multus shim sends only the CNI variables, and delegates look programs up in PATH
        // (`iptables`): the host's usual one where they run on the host, else the daemon's own.
        let path = match &shared.config.host_root {
            Some(_) => None,
            None => std::env::var("PATH").ok(),
        };
        vars.push(("PATH".into(), path.unwrap_or_else(|| HOST_PATH.into())));
    }
    let config = shared.config.overlay_on(&req.config);
    let slot: Mutex<Option<Arc<ApiCluster>>> = Mutex::new(None);
    let cni_path: Vec<std::path::PathBuf> = vars
        .iter()
        .find(|(k, _)| k == "CNI_PATH")
        .map(|(_, v)| {
            v.split(':')
                .filter(|d| !d.is_empty())
                .map(Into::into)
                .collect()
        })
        .unwrap_or_default();
    let factory = |config: &crate::config::Config, command: Command| -> Option<Box<dyn Cluster>> {
        if command == Command::Add {
            shared.served.note(config);
        }
        // The missing-plugin report looks where the requests look (`super::plugin_check`).
        shared.search_path.observe(config.search_path(&cni_path));
        let api = Arc::new(
            ApiCluster::shared(
                shared.handle.clone(),
                shared.client.clone(),
                shared.cache.clone(),
                Some(shared.metrics.clone()),
                config,
            )
            .with_events(command == Command::Add)
            .defer_status(
                command == Command::Add
                    && shared.config.status_write == super::config::StatusWrite::AfterReply,
            ),
        );
        if let Ok(mut s) = slot.lock() {
            *s = Some(api.clone());
        }
        Some(Box::new(api))
    };
    // Delegates and namespaces through the host's root when the daemon runs in a container (`chrootDir`).
    let (host_exec, host_netns);
    let (inner, netns): (&dyn Exec, &dyn NetnsProbe) = match &shared.config.host_root {
        Some(root) => {
            host_exec = HostExec { root: root.clone() };
            host_netns = HostNetns { root: root.clone() };
            (&host_exec, &host_netns)
        }
        None => (&ProcessExec, &KernelNetns),
    };
    let exec = super::metrics::MeteredExec {
        inner,
        metrics: &shared.metrics,
    };
    let after_reply = crate::ops::AfterReply::default();
    let host = Host { exec: &exec, netns };
    let ran = invocation::run(vars, &config, host, &factory, false, Some(&after_reply));
    drop(ran.cluster);
    let later = Later {
        api: slot.into_inner().ok().flatten(),
        finish: after_reply.into_inner().ok().flatten(),
    };
    (to_wire(ran.command, &ran.outcome), later)
}

/// Put an outcome in the wire format: ADD's result under `Result` in CNI 1.0.0 or later (Go's `cni100`
/// type reads both; a 1.1.0 result keeps its 1.1 fields), other verbs an empty body; errors are `400` with
/// the CNI error reply, code and all.
pub fn to_wire(command: Option<Command>, out: &Outcome) -> Reply {
    let verb = command.map_or_else(|| "NONE".to_string(), |c| c.to_string());
    if out.code != 0 {
        let reply = ErrorReply::parse(&out.stdout).unwrap_or_else(|| {
            Transport::Unrenderable.reply(String::from_utf8_lossy(&out.stdout).into_owned(), "")
        });
        return Reply::error(CNI_ERROR_STATUS, &verb, &reply);
    }
    let body = match command {
        None => {
            let failure = Transport::NoCommand;
            let reply = failure.reply("CNI_COMMAND is not set in the request's env", "");
            return Reply::error(status(failure), &verb, &reply);
        }
        // VERSION is answered by the shim itself; a Go shim never sends it. Answer it anyway, raw.
        Some(Command::Version) => out.stdout.clone(),
        Some(Command::Add) => match add_body(&out.stdout) {
            Ok(body) => body,
            Err(msg) => return internal(&verb, msg),
        },
        Some(_) => Vec::new(),
    };
    Reply {
        status: 200,
        body,
        verb,
        result: "ok".into(),
    }
}

/// ADD's body: `{"Result": ...}`. A result that names the wire version or a later one is the core's own
/// rendering of a parsed result, and goes in as it is (with no second parse and render on the reply's
/// path); an older or unnamed one is converted up to the wire version.
fn add_body(stdout: &[u8]) -> Result<Vec<u8>, String> {
    #[derive(serde::Deserialize)]
    struct Named<'a> {
        #[serde(rename = "cniVersion", borrow, default)]
        cni_version: Option<std::borrow::Cow<'a, str>>,
    }
    let named = serde_json::from_slice::<Named<'_>>(stdout)
        .ok()
        .and_then(|n| n.cni_version)
        .and_then(|v| v.parse::<CniVersion>().ok());
    // An object only: a derived struct would also read a JSON array.
    let object = stdout.trim_ascii_start().first() == Some(&b'{');
    if object && named.is_some_and(|v| v >= wire::WIRE_RESULT_VERSION) {
        let mut body = Vec::with_capacity(stdout.len() + 12);
        body.extend_from_slice(br#"{"Result":"#);
        body.extend_from_slice(stdout);
        body.push(b'}');
        return Ok(body);
    }
    let result = CniResult::parse(stdout, wire::WIRE_RESULT_VERSION)
        .map_err(|e| format!("ADD produced no valid result: {e}"))?;
    let version = result.cni_version.max(wire::WIRE_RESULT_VERSION);
    let v = result
        .to_value(version)
        .map_err(|e| format!("cannot render the result: {e}"))?;
    Ok(serde_json::to_vec(&wire::Response { result: Some(v) }).unwrap_or_default())
}

fn internal(verb: &str, msg: String) -> Reply {
    let failure = Transport::Unrenderable;
    Reply::error(
        status(failure),
        verb,
        &failure
            .reply(msg, "")
            .with_cni_version(CniVersion::V1_0_0.as_str()),
    )
}

/// The HTTP status of a failure the daemon answers itself (every one the handler meets has one).
fn status(failure: Transport) -> u16 {
    failure.status().unwrap_or(CNI_ERROR_STATUS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_cni::codes;

    fn ok(stdout: &str) -> Outcome {
        Outcome {
            stdout: stdout.as_bytes().to_vec(),
            stderr: String::new(),
            code: 0,
            events: None,
        }
    }

    #[test]
    fn add_result_goes_under_result_in_1_0_0_or_later() {
        let r = to_wire(
            Some(Command::Add),
            &ok(
                r#"{"cniVersion":"0.3.1","interfaces":[{"name":"eth0"}],"ips":[{"version":"4","address":"10.1.0.5/16","interface":0}]}"#,
            ),
        );
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["Result"]["cniVersion"], "1.0.0");
        assert_eq!(v["Result"]["ips"][0]["address"], "10.1.0.5/16");
        assert!(v["Result"]["ips"][0].get("version").is_none());
        let r = to_wire(
            Some(Command::Add),
            &ok(r#"{"cniVersion":"1.1.0","ips":[]}"#),
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["Result"]["cniVersion"], "1.1.0");
        assert_eq!((r.verb.as_str(), r.result.as_str()), ("ADD", "ok"));
    }

    #[test]
    fn a_result_in_the_wire_version_goes_in_as_rendered_and_an_unnamed_one_is_converted() {
        let rendered = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/p"}],"ips":[{"address":"10.1.0.5/16","interface":0}],"dns":{}}"#;
        let r = to_wire(Some(Command::Add), &ok(rendered));
        assert_eq!(r.status, 200);
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            format!(r#"{{"Result":{rendered}}}"#)
        );
        // No version named: read as the wire version, and named in the reply.
        let r = to_wire(
            Some(Command::Add),
            &ok(r#"{"ips":[{"address":"10.1.0.5/16"}]}"#),
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["Result"]["cniVersion"], "1.0.0");
        assert_eq!(v["Result"]["ips"][0]["address"], "10.1.0.5/16");
        // A version this build does not know, or a result that is not an object, is refused, not passed on.
        for bad in [r#"{"cniVersion":"9.9.9"}"#, r#"["1.0.0"]"#] {
            let r = to_wire(Some(Command::Add), &ok(bad));
            assert_eq!(
                ErrorReply::parse(&r.body).unwrap().code,
                codes::INTERNAL,
                "{bad}"
            );
        }
    }

    #[test]
    fn other_verbs_answer_an_empty_200_and_errors_keep_their_code() {
        let r = to_wire(Some(Command::Del), &ok(""));
        assert_eq!((r.status, r.body.len()), (200, 0));
        let failed = Outcome {
            stdout: br#"{"cniVersion":"1.0.0","code":7,"msg":"network x: bad","details":"d"}"#
                .to_vec(),
            stderr: String::new(),
            code: 1,
            events: None,
        };
        let r = to_wire(Some(Command::Del), &failed);
        assert_eq!(r.status, 400);
        let e = ErrorReply::parse(&r.body).unwrap();
        assert_eq!((e.code, e.msg.as_str()), (7, "network x: bad"));
        assert_eq!(r.result, "7");
    }

    #[test]
    fn an_add_without_a_result_or_without_a_command_is_an_error() {
        let r = to_wire(Some(Command::Add), &ok("not json"));
        assert_eq!(r.status, 400);
        assert_eq!(ErrorReply::parse(&r.body).unwrap().code, codes::INTERNAL);
        let r = to_wire(None, &ok(""));
        assert_eq!(ErrorReply::parse(&r.body).unwrap().code, codes::INVALID_ENV);
    }
}
