//! Go Multus's `/delegate` endpoint (multus-dynamic-networks-controller's hot-plug calls; docs/daemon.md,
//! "`/delegate`"): the request parsed (the `/cni` body, with one delegate config and `interfaceAttributes`),
//! the sandbox found from what its ADD left on disk, and the call run through the same hot-plug primitive
//! as an annotation change ([`crate::ops::hotplug::delegate`]); the reply in Go's format. No network-status
//! is written: the controller writes it.

use std::{path::PathBuf, sync::Arc, time::Instant};

use serde::Deserialize;
use serde_json::{Map, Value};

use plexus_cni::{CniVersion, ErrorReply, codes};
use plexus_shim::wire;

use super::{
    Shared,
    handler::{Reply, delegate_path, to_wire},
    hotplug::{HotplugSeams, sandbox_of, served_config},
};
use crate::{
    ops::{
        self, Done, Versioned,
        error::Error,
        hotplug::{DelegateCall, DelegateVerb, Delegated},
        invocation::Answer,
    },
    pure::{
        annotations::inject_cni_args,
        netconf::NetworkConfig,
        plan::{NetworkRequest, Requests},
        request::{CniEnv, Command},
    },
    store::{
        cache::{self, ReadOutcome},
        lock::ContainerLock,
    },
};

/// Go Multus's `interfaceAttributes`: the requests the controller read from the pod's selection.
/// Keys Go does not send are ignored, as Go's own decoder does.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct InterfaceAttributes {
    /// Static IPs (the `ips` capability).
    #[serde(default)]
    pub ips: Vec<String>,
    /// A MAC address (the `mac` capability).
    #[serde(default)]
    pub mac: Option<String>,
    /// Merged into the delegate's `args.cni`.
    #[serde(default, rename = "cni-args")]
    pub cni_args: Option<Map<String, Value>>,
}

/// A `/delegate` request, parsed.
#[derive(Debug, Clone)]
pub struct Call {
    /// ADD, DEL or CHECK.
    pub verb: DelegateVerb,
    /// The command, for the reply and the metrics.
    pub command: Command,
    /// The environment (`CNI_CONTAINERID`, `CNI_IFNAME`, `CNI_ARGS`, …).
    pub env: CniEnv,
    /// The caller's network, its interface attributes as its requests.
    pub network: NetworkRequest,
    /// `CNI_PATH`, split.
    pub path: Vec<PathBuf>,
    /// `PATH`, when the caller sent one.
    pub exec_path: Option<String>,
}

/// How long the container's lock is waited for when the cniDir's config is not known.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn bad(code: u32, msg: String) -> ErrorReply {
    ErrorReply::new(code, msg, "").with_cni_version(CniVersion::V1_0_0.as_str())
}

/// Parse a `/delegate` body: the env must name the command, container, interface and pod, the config must
/// be one network (conf or conflist), the attributes Go's three.
pub fn parse(req: wire::Request) -> Result<Call, ErrorReply> {
    let exec_path = req.env.get("PATH").cloned();
    let path: Vec<PathBuf> = req
        .env
        .get("CNI_PATH")
        .map(|p| {
            p.split(':')
                .filter(|d| !d.is_empty())
                .map(Into::into)
                .collect()
        })
        .unwrap_or_default();
    let env = CniEnv::from_vars(req.env)
        .map_err(|e| bad(codes::INVALID_ENV, format!("/delegate: {e}")))?
        .ok_or_else(|| {
            bad(
                codes::INVALID_ENV,
                "/delegate: CNI_COMMAND is not set".into(),
            )
        })?;
    let verb = match env.command {
        Command::Add => DelegateVerb::Add,
        Command::Del => DelegateVerb::Del,
        Command::Check => DelegateVerb::Check,
        other => {
            return Err(bad(
                codes::INVALID_ENV,
                format!("/delegate: CNI_COMMAND {other} is not served (ADD, DEL and CHECK are)"),
            ));
        }
    };
    let who = env.who();
    if env.pod().is_none() {
        return Err(bad(
            codes::INVALID_ENV,
            format!(
                "/delegate [{who}]: CNI_ARGS must name the pod (K8S_POD_NAMESPACE, K8S_POD_NAME)"
            ),
        ));
    }
    if env.container_id.is_none() || env.ifname().is_empty() {
        return Err(bad(
            codes::INVALID_ENV,
            format!("/delegate [{who}]: CNI_CONTAINERID and CNI_IFNAME must be set"),
        ));
    }
    let attrs: InterfaceAttributes = match req.interface_attributes {
        None | Some(Value::Null) => InterfaceAttributes::default(),
        Some(v) => serde_json::from_value(v).map_err(|e| {
            bad(
                codes::DECODE_FAILURE,
                format!("/delegate [{who}]: interfaceAttributes: {e}"),
            )
        })?,
    };
    let network = NetworkConfig::from_bytes(&req.config).map_err(|e| {
        bad(
            codes::INVALID_NETWORK_CONFIG,
            format!("/delegate [{who}]: the delegate config: {e}"),
        )
    })?;
    let network = match &attrs.cni_args {
        Some(args) => inject_cni_args(&network, args).map_err(|e| {
            bad(
                codes::INVALID_NETWORK_CONFIG,
                format!("/delegate [{who}]: network {}: cni-args: {e}", network.name),
            )
        })?,
        None => network,
    };
    let mut request = NetworkRequest::plain(network);
    request.ifname_request = Some(env.ifname().to_string());
    request.requests = Requests {
        ips: attrs.ips,
        mac: attrs.mac,
        ..Requests::default()
    };
    Ok(Call {
        verb,
        command: env.command,
        env,
        network: request,
        path,
        exec_path,
    })
}

/// Serve one `/delegate` body. The reply is Go's: 200 with `{"Result": …}` for ADD or empty, 400 with the
/// CNI error.
pub fn serve(shared: &Arc<Shared>, body: &[u8]) -> Reply {
    let arrived = Instant::now();
    shared.metrics.hotplug_attempt("delegate");
    let parsed = serde_json::from_slice::<wire::Request>(body)
        .map_err(|e| {
            bad(
                codes::DECODE_FAILURE,
                format!("/delegate: cannot decode the request: {e}"),
            )
        })
        .and_then(parse);
    let reply = match parsed {
        Ok(call) => run(shared, call),
        Err(e) => Reply::error(wire_status(), "NONE", &e),
    };
    let outcome = match (reply.status, reply.verb.as_str()) {
        (200, "ADD") => "attached",
        (200, "DEL") => "detached",
        (200, _) => "checked",
        _ => "failed",
    };
    shared.metrics.hotplugged("delegate", outcome, 1);
    shared
        .metrics
        .hotplug_latency("delegate", arrived.elapsed());
    reply
}

fn wire_status() -> u16 {
    plexus_shim::transport::CNI_ERROR_STATUS
}

fn run(shared: &Arc<Shared>, call: Call) -> Reply {
    let verb = call.command.to_string();
    let failed = |e: Error| {
        tracing::warn!("/delegate {verb}: {e}");
        Reply::error(
            wire_status(),
            &verb,
            &e.to_reply(CniVersion::V1_0_0.as_str()),
        )
    };
    let cid = call.env.container_id().to_string();
    let pod = call.env.pod().expect("parse checked the pod");
    // The sandbox, from what its ADD left in a served cniDir: plexus runs delegates only for sandboxes it set
    // up. An ADD just answered may still be writing its files after the reply, holding the container's lock:
    // the lock is waited for before they are read.
    let found = shared.served.all().into_iter().find_map(|served| {
        if !matches!(
            cache::read(&served.cni_dir, &cid),
            Ok(ReadOutcome::Found(_))
        ) {
            return None;
        }
        let timeout =
            served_config(&served, &pod.namespace, &pod.name).map_or(LOCK_WAIT, |c| c.lock_timeout);
        if let Ok(lock) = ContainerLock::acquire(&served.cni_dir, &cid, timeout) {
            drop(lock);
        }
        sandbox_of(&served, &cid).map(|(rec_pod, _, _, sandbox)| (served, rec_pod, sandbox))
    });
    let Some((served, rec_pod, sandbox)) = found else {
        return failed(Error::UnknownContainer {
            who: call.env.who(),
            container_id: cid,
        });
    };
    if (rec_pod.namespace.as_str(), rec_pod.name.as_str())
        != (pod.namespace.as_str(), pod.name.as_str())
    {
        return failed(Error::NotDelegable {
            who: call.env.who(),
            container_id: cid,
            ifname: call.env.ifname().to_string(),
            reason: format!("the container is pod {rec_pod}'s sandbox, not this pod's"),
        });
    }
    let Some(config) = served_config(&served, &pod.namespace, &pod.name) else {
        return failed(Error::NotDelegable {
            who: call.env.who(),
            container_id: cid,
            ifname: call.env.ifname().to_string(),
            reason: "no config is recorded for its cniDir (served by an older daemon); try again after an ADD there".into(),
        });
    };
    let parts = HotplugSeams::new(shared, &config);
    let seams = parts.seams();
    let path = if call.path.is_empty() {
        served.cni_path.clone()
    } else {
        call.path.clone()
    };
    let passthrough = [(
        "PATH".to_string(),
        call.exec_path
            .clone()
            .unwrap_or_else(|| delegate_path(shared)),
    )];
    let version = call.network.network.cni_version;
    let ifname = call.env.ifname().to_string();
    let Delegated { result, warnings } = ops::hotplug::delegate(
        &sandbox,
        &config,
        &seams,
        &path,
        &passthrough,
        DelegateCall {
            verb: call.verb,
            ifname: ifname.clone(),
            network: call.network,
        },
    );
    shared.post_events(config.api_timeout, warnings);
    let answer = match result {
        Ok(Some(result)) => match Versioned::new(result, version) {
            Ok(v) => Answer::Done(Done::answer(ops::Reply::Added(Box::new(v)))),
            Err(e) => Answer::Failed(bad(
                codes::INCOMPATIBLE_VERSION,
                format!("/delegate: cannot render the result: {e}"),
            )),
        },
        Ok(None) => Answer::Done(Done::empty()),
        Err(e) => return failed(e),
    };
    tracing::info!(pod = %pod, container = %cid, ifname, verb, "/delegate");
    to_wire(Some(call.command), &answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use serde_json::json;

    fn body(env: Value, config: Value, attrs: Value) -> wire::Request {
        serde_json::from_value(json!({
            "env": env,
            "config": base64::engine::general_purpose::STANDARD.encode(config.to_string()),
            "interfaceAttributes": attrs,
        }))
        .unwrap()
    }

    fn env(command: &str) -> Value {
        json!({
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": "c1",
            "CNI_NETNS": "/run/netns/c1",
            "CNI_IFNAME": "net7",
            "CNI_ARGS": "IgnoreUnknown=true;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=p1;K8S_POD_UID=u1",
            "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
        })
    }

    fn macvlan() -> Value {
        json!({"cniVersion": "1.0.0", "name": "tenant", "type": "macvlan", "args": {"cni": {"keep": 1}}})
    }

    /// A Go-format body: the env, the config (base64), and the three attributes as the delegate's
    /// requests, cni-args merged into `args.cni`.
    #[test]
    fn a_go_delegate_request_parses_into_one_network_with_its_requests() {
        let call = parse(body(
            env("ADD"),
            macvlan(),
            json!({"ips": ["10.9.0.5/24"], "mac": "02:00:00:00:00:07", "cni-args": {"a": "b"}}),
        ))
        .unwrap();
        assert_eq!(call.verb, DelegateVerb::Add);
        assert_eq!(call.env.container_id(), "c1");
        assert_eq!(call.env.ifname(), "net7");
        let pod = call.env.pod().unwrap();
        assert_eq!((pod.namespace.as_str(), pod.name.as_str()), ("ns1", "p1"));
        assert_eq!(call.network.status_name, "tenant");
        assert_eq!(call.network.ifname_request.as_deref(), Some("net7"));
        assert_eq!(call.network.requests.ips, ["10.9.0.5/24"]);
        assert_eq!(
            call.network.requests.mac.as_deref(),
            Some("02:00:00:00:00:07")
        );
        assert_eq!(
            call.network.network.value["args"]["cni"],
            json!({"keep": 1, "a": "b"})
        );
        assert_eq!(
            call.path,
            [PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        // DEL and CHECK, without attributes (Go sends null or leaves them out).
        let del = parse(body(env("DEL"), macvlan(), Value::Null)).unwrap();
        assert_eq!(del.verb, DelegateVerb::Del);
        assert!(del.network.requests.ips.is_empty());
        assert_eq!(
            parse(body(env("CHECK"), macvlan(), json!({})))
                .unwrap()
                .verb,
            DelegateVerb::Check
        );
    }

    /// What cannot be served is refused with the code that says why, naming the pod.
    #[test]
    fn a_bad_delegate_request_is_refused_with_its_code() {
        let e = parse(body(env("GC"), macvlan(), Value::Null)).unwrap_err();
        assert_eq!(e.code, codes::INVALID_ENV, "{e:?}");
        let mut no_pod = env("ADD");
        no_pod["CNI_ARGS"] = json!("IgnoreUnknown=true");
        let e = parse(body(no_pod, macvlan(), Value::Null)).unwrap_err();
        assert_eq!(e.code, codes::INVALID_ENV);
        assert!(e.msg.contains("K8S_POD_NAME"), "{e:?}");
        let e = parse(body(env("ADD"), json!({"name": "x"}), Value::Null)).unwrap_err();
        assert_eq!(e.code, codes::INVALID_NETWORK_CONFIG, "{e:?}");
        assert!(e.msg.contains("ns1/p1"), "{e:?}");
        let e = parse(body(env("ADD"), macvlan(), json!({"ips": "10.0.0.1"}))).unwrap_err();
        assert_eq!(e.code, codes::DECODE_FAILURE, "{e:?}");
        let e = parse(wire::Request::default()).unwrap_err();
        assert_eq!(e.code, codes::INVALID_ENV);
    }
}
