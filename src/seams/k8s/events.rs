//! Kubernetes events about a pod, kept off the CNI reply's critical path (issue 5): an invocation only
//! collects them; once its reply is written, [`dispatch`] hands them to a detached child
//! (`plexus send-events`, `crate::edges::cli::send_events`), whose stdio is not the runtime's, so the runtime gets its answer without
//! waiting for the event POSTs. The child reads the same plexus config and posts the events within the
//! same per-request timeout and overall budget; a failure is logged, never reported to the runtime.

use std::{
    io::{self, Write},
    os::unix::process::CommandExt,
    process::{Command, Stdio},
};

use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time},
    jiff::Timestamp,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The event source component.
pub const COMPONENT: &str = "plexus";

/// The hidden subcommand the detached child runs.
pub const SUBCOMMAND: &str = "send-events";

/// An event about `pod`.
pub fn event(pod: &ObjectReference, type_: &str, reason: &str, message: String) -> Event {
    let now = Timestamp::now();
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", pod.name.clone().unwrap_or_default())),
            namespace: pod.namespace.clone(),
            ..Default::default()
        },
        involved_object: pod.clone(),
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some(type_.into()),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: None,
        }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: std::env::var("HOSTNAME").ok().or(Some(COMPONENT.into())),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        action: Some(reason.into()),
        count: Some(1),
        ..Default::default()
    }
}

/// What the child is given on stdin: the invocation's plexus config (as it came, so the child connects and
/// logs exactly as the invocation did) and the events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The plexus config (stdin of the invocation).
    pub config: Value,
    /// The events, in the order they happened.
    pub events: Vec<Event>,
}

impl Batch {
    /// The batch for `events` under the config bytes `config`; `None` when there is nothing to send or the
    /// config is not JSON (then there was no API client either).
    pub fn encode(config: &[u8], events: Vec<Event>) -> Option<Vec<u8>> {
        if events.is_empty() {
            return None;
        }
        let config = serde_json::from_slice(config).ok()?;
        serde_json::to_vec(&Batch { config, events }).ok()
    }
}

/// Start the detached child that sends `batch` (from [`Batch::encode`]) and return without waiting for it.
/// Its stdout and stderr are /dev/null (the runtime waits for its pipes to close, so the child must not
/// hold them) and it runs in its own process group (a runtime killing the plugin's group after the reply
/// does not cut the events short).
pub fn dispatch(batch: &[u8]) -> io::Result<()> {
    let mut child = Command::new("/proc/self/exe")
        .arg(SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("no stdin pipe"))?;
    stdin.write_all(batch)
    // Dropping `child` neither waits nor kills: the child outlives this process and is reaped by init (or
    // the nearest subreaper).
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> ObjectReference {
        ObjectReference {
            name: Some("web".into()),
            namespace: Some("ns1".into()),
            uid: Some("u1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn event_names_the_pod_and_plexus() {
        let ev = event(
            &pod(),
            "Normal",
            "AddedInterface",
            "Add net1 [10.1.1.2/24] from ns1/a".into(),
        );
        assert_eq!(ev.metadata.generate_name.as_deref(), Some("web."));
        assert_eq!(ev.metadata.namespace.as_deref(), Some("ns1"));
        assert_eq!(ev.involved_object.uid.as_deref(), Some("u1"));
        assert_eq!(ev.reason.as_deref(), Some("AddedInterface"));
        assert_eq!(ev.type_.as_deref(), Some("Normal"));
        assert_eq!(ev.reporting_component.as_deref(), Some(COMPONENT));
        assert_eq!(
            ev.source.and_then(|s| s.component).as_deref(),
            Some(COMPONENT)
        );
    }

    #[test]
    fn batch_round_trips_and_is_empty_without_events() {
        let config = br#"{"cniVersion":"1.0.0","name":"plexus","type":"plexus","kubeconfig":"/k"}"#;
        assert_eq!(Batch::encode(config, Vec::new()), None);
        let ev = event(&pod(), "Warning", "NoNetworkFound", "no NAD ns1/x".into());
        let bytes = Batch::encode(config, vec![ev.clone()]).expect("a batch");
        let back: Batch = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.events.len(), 1);
        assert_eq!(back.events[0].reason, ev.reason);
        assert_eq!(back.events[0].message, ev.message);
        assert_eq!(back.events[0].involved_object, ev.involved_object);
        assert_eq!(back.config["kubeconfig"], "/k");
        // A config that is not JSON had no client to send with.
        assert_eq!(
            Batch::encode(
                b"not json",
                vec![event(&pod(), "Normal", "x", String::new())]
            ),
            None
        );
    }
}
