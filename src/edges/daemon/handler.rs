//! One `/cni` request, run in place on the thread that read it (`block_in_place`): the shim's environment
//! and config (with the daemon's keys laid over it) run through the same core as the thin binary
//! ([`crate::ops::invocation::run`]), and its typed answer is put in the wire format
//! (docs/daemon.md, "Wire format, and Go Multus's shim").

use std::sync::Arc;

use k8s_openapi::api::core::v1::Event;

use plexus_cni::{CniVersion, ErrorReply};
use plexus_shim::{
    transport::{CNI_ERROR_STATUS, Transport},
    wire,
};

use super::Shared;
use crate::{
    ops,
    ops::invocation::{self, Answer, Host},
    pure::request::Command,
    seams::{
        cluster::DeferredStatus,
        hostroot::HOST_PATH,
        k8s::{cached::Cached, client::ApiCluster},
    },
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
    /// The cluster the request ran against: the status write and the events are sent through it.
    pub api: Option<Arc<ApiCluster>>,
    /// ADD's durable writes, holding the container's lock, or DEL's unlinks of its trash
    /// ([`ops::Done::after_reply`]).
    pub finish: Option<ops::AfterReply>,
    /// ADD's network-status write (`statusWrite: afterReply`, [`ops::Done::status`]).
    pub status: Option<Box<DeferredStatus>>,
    /// The events the request collected.
    pub events: Vec<Event>,
}

/// The `PATH` delegates get when a request sends none (a Go Multus shim sends only the CNI variables, and
/// hot-plug has no request), since they look programs up in it (`iptables`): the host's usual one where
/// they run chrooted into the host, else the daemon's own.
pub(super) fn delegate_path(shared: &Shared) -> String {
    let path = match &shared.config.host_root {
        Some(_) => None,
        None => std::env::var("PATH").ok(),
    };
    path.unwrap_or_else(|| HOST_PATH.into())
}

/// Run one request. Returns the reply and what is left for after it.
pub fn serve(shared: &Shared, req: wire::Request) -> (Reply, Later) {
    let mut vars: Vec<(String, String)> = req.env.into_iter().collect();
    if !vars.iter().any(|(k, _)| k == "PATH") {
        vars.push(("PATH".into(), delegate_path(shared)));
    }
    let config = shared.config.overlay_on(&req.config);
    let raw = &config;
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
    let factory = |config: &crate::pure::config::Config,
                   command: Command|
     -> Option<Cached<Arc<ApiCluster>>> {
        if command == Command::Add {
            shared.served.note(config, raw, &cni_path);
        }
        // The missing-plugin report looks where the requests look (`super::plugin_check`).
        shared.search_path.observe(config.search_path(&cni_path));
        let defer = command == Command::Add
            && shared.config.status_write == super::config::StatusWrite::AfterReply;
        Some(shared.cluster(config, defer))
    };
    let exec = shared.metered_exec();
    let host = Host {
        exec: &exec,
        netns: shared.netns.as_ref(),
    };
    let mut ran = invocation::run(vars, &config, host, &factory, false, true);
    let (finish, status) = match &mut ran.answer {
        Answer::Done(done) => (done.after_reply.take(), done.status.take()),
        _ => (None, None),
    };
    let later = Later {
        api: ran.cluster.map(|c| c.inner),
        finish,
        status,
        events: ran.events,
    };
    (to_wire(ran.command, &ran.answer), later)
}

/// Put an answer in the wire format: ADD's result under `Result` in CNI 1.0.0 or later (Go's `cni100`
/// type reads both; a 1.1.0 result keeps its 1.1 fields), other verbs an empty body; errors are `400` with
/// the CNI error reply, code and all.
pub fn to_wire(command: Option<Command>, answer: &Answer) -> Reply {
    let verb = command.map_or_else(|| "NONE".to_string(), |c| c.to_string());
    let done = match answer {
        Answer::Failed(reply) => return Reply::error(CNI_ERROR_STATUS, &verb, reply),
        Answer::About => {
            let failure = Transport::NoCommand;
            let reply = failure.reply("CNI_COMMAND is not set in the request's env", "");
            return Reply::error(status(failure), &verb, &reply);
        }
        Answer::Done(done) => done,
    };
    let body = match &done.reply {
        // VERSION is answered by the shim itself; a Go shim never sends it. Answer it anyway, raw.
        ops::Reply::Version(bytes) => bytes.clone(),
        ops::Reply::Added(result) => match result.at_least(wire::WIRE_RESULT_VERSION) {
            Ok(v) => serde_json::to_vec(&wire::Response { result: Some(v) }).unwrap_or_default(),
            Err(e) => return internal(&verb, format!("cannot render the result: {e}")),
        },
        ops::Reply::Empty => Vec::new(),
    };
    Reply {
        status: 200,
        body,
        verb,
        result: "ok".into(),
    }
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
    use plexus_cni::{CniResult, codes};

    /// A successful ADD whose result `json` is given in `version`.
    fn added(json: &str, version: CniVersion) -> Answer {
        let result = CniResult::parse(json.as_bytes(), version).unwrap();
        Answer::Done(ops::Done::answer(ops::Reply::Added(Box::new(
            ops::Versioned::new(result, version).unwrap(),
        ))))
    }

    #[test]
    fn add_result_goes_under_result_in_1_0_0_or_later() {
        let r = to_wire(
            Some(Command::Add),
            &added(
                r#"{"cniVersion":"0.3.1","interfaces":[{"name":"eth0"}],"ips":[{"version":"4","address":"10.1.0.5/16","interface":0}]}"#,
                CniVersion::V0_3_1,
            ),
        );
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["Result"]["cniVersion"], "1.0.0");
        assert_eq!(v["Result"]["ips"][0]["address"], "10.1.0.5/16");
        assert!(v["Result"]["ips"][0].get("version").is_none());
        let r = to_wire(
            Some(Command::Add),
            &added(r#"{"cniVersion":"1.1.0","ips":[]}"#, CniVersion::V1_1_0),
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["Result"]["cniVersion"], "1.1.0");
        assert_eq!((r.verb.as_str(), r.result.as_str()), ("ADD", "ok"));
    }

    /// The body is what the thin binary prints, under `Result`, byte for byte, for a result given in the
    /// wire version; one given in an older version holds what the runtime would read from it.
    #[test]
    fn a_result_in_the_wire_version_goes_in_as_the_thin_binary_prints_it() {
        let rendered = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/p"}],"ips":[{"address":"10.1.0.5/16","interface":0}],"dns":{}}"#;
        let answer = added(rendered, CniVersion::V1_0_0);
        let Answer::Done(done) = &answer else {
            unreachable!()
        };
        let printed = String::from_utf8(done.reply.to_stdout()).unwrap();
        let r = to_wire(Some(Command::Add), &answer);
        assert_eq!(r.status, 200);
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            format!(r#"{{"Result":{printed}}}"#)
        );
        // Given in 0.2.0: one address of each family and no interfaces, as the runtime would have read it.
        let r = to_wire(
            Some(Command::Add),
            &added(
                r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"10.1.0.5/16"},{"address":"10.2.0.5/16"}]}"#,
                CniVersion::V0_2_0,
            ),
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["Result"]["cniVersion"], "1.0.0");
        assert_eq!(v["Result"]["ips"].as_array().unwrap().len(), 1);
        assert!(v["Result"].get("interfaces").is_none());
    }

    #[test]
    fn other_verbs_answer_an_empty_200_and_errors_keep_their_code() {
        let r = to_wire(Some(Command::Del), &Answer::Done(ops::Done::empty()));
        assert_eq!((r.status, r.body.len()), (200, 0));
        let failed =
            Answer::Failed(ErrorReply::new(7, "network x: bad", "d").with_cni_version("1.0.0"));
        let r = to_wire(Some(Command::Del), &failed);
        assert_eq!(r.status, 400);
        let e = ErrorReply::parse(&r.body).unwrap();
        assert_eq!((e.code, e.msg.as_str()), (7, "network x: bad"));
        assert_eq!(r.result, "7");
    }

    #[test]
    fn a_request_without_a_command_is_an_error_and_version_is_answered_raw() {
        let r = to_wire(None, &Answer::About);
        assert_eq!(ErrorReply::parse(&r.body).unwrap().code, codes::INVALID_ENV);
        let version = Answer::Done(ops::Done::answer(ops::Reply::Version(
            br#"{"cniVersion":"1.1.0"}"#.to_vec(),
        )));
        let r = to_wire(Some(Command::Version), &version);
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &br#"{"cniVersion":"1.1.0"}"#[..])
        );
    }
}
