//! One CNI invocation from its environment and config to its typed [`Answer`]: the core that the thin binary
//! ([`crate::edges::cli`]) and the daemon's requests (`crate::edges::daemon::handler`) share, each rendering the answer.

use k8s_openapi::api::core::v1::Event;
use plexus_cni::ErrorReply;

use crate::{
    ops::{self, Seams, error::Error},
    pure::{
        config::Config,
        request::{CniEnv, Command},
    },
    seams::{
        cluster::Cluster,
        exec::Exec,
        logging,
        netns::{KernelNetns, NetnsProbe},
    },
};

/// The about text printed (to stderr) when no `CNI_COMMAND` is set.
pub const ABOUT: &str = concat!(
    "plexus ",
    env!("CARGO_PKG_VERSION"),
    ": meta-plugin that delegates to other CNI plugins (CNI spec 0.1.0 to 1.1.0)"
);

/// How an invocation ended, for its edge to render: the thin binary prints it, the daemon answers its
/// socket with it.
#[derive(Debug)]
pub enum Answer {
    /// No `CNI_COMMAND`: the about text ([`ABOUT`]) goes to stderr, and the exit status is 0.
    About,
    /// Success, with the operation's typed reply.
    Done(ops::Done),
    /// Failure, as the CNI error reply ([`Error::to_reply`]).
    Failed(ErrorReply),
}

impl Answer {
    fn failed(e: Error, cni_version: &str) -> Answer {
        Answer::Failed(e.to_reply(cni_version))
    }
}

/// Makes the cluster seam `C` for a validated config (`None`: no Kubernetes).
pub type ClusterFactory<'a, C> = &'a dyn Fn(&Config, Command) -> Option<C>;

/// One invocation as run by [`run`].
pub struct Ran<C> {
    /// How it ended; a success carries the work left for after the reply ([`ops::Done`]).
    pub answer: Answer,
    /// The command, once the environment parsed.
    pub command: Option<Command>,
    /// The cluster seam the operation ran against (the daemon sends the deferred work through it).
    pub cluster: Option<C>,
    /// The events the operation collected (success or failure), to send after the reply.
    pub events: Vec<Event>,
}

/// What a run reaches directly: how delegates run and how pod network namespaces are opened. The thin
/// binary uses its own view ([`Host::OWN`]); a daemon in a container the host's, through `chrootDir`.
#[derive(Clone, Copy)]
pub struct Host<'a> {
    /// Runs delegates.
    pub exec: &'a dyn Exec,
    /// Opens pod network namespaces.
    pub netns: &'a dyn NetnsProbe,
}

impl Host<'static> {
    /// This process's own filesystem: delegates run as child processes, namespaces opened by their path.
    pub const OWN: Host<'static> = Host {
        exec: &crate::seams::exec::ProcessExec,
        netns: &KernelNetns,
    };
}

/// Run one CNI invocation: environment `vars`, the config `stdin`, delegates and namespaces through `host`,
/// the cluster `cluster` makes. The thin binary and the daemon (one request each) both come through here;
/// `init_logging` sets the process's logging from the config (the thin binary; the daemon has its own);
/// `defer_work` leaves work for after the reply in the answer (the daemon, see
/// [`ops::Seams::defer_work`]).
pub fn run<C: Cluster>(
    vars: Vec<(String, String)>,
    stdin: &[u8],
    host: Host<'_>,
    cluster: ClusterFactory<'_, C>,
    init_logging: bool,
    defer_work: bool,
) -> Ran<C> {
    let done = |answer: Answer, command: Option<Command>| Ran {
        answer,
        command,
        cluster: None,
        events: Vec::new(),
    };
    let env = match CniEnv::from_vars(vars) {
        Ok(Some(env)) => env,
        Ok(None) => return done(Answer::About, None),
        Err(e) => return done(Answer::failed(Error::from(e), ""), None),
    };
    let command = Some(env.command);
    if env.command == Command::Version {
        let version = ops::Done::answer(ops::Reply::Version(ops::version_reply(stdin)));
        return done(Answer::Done(version), command);
    }
    let config = match Config::from_bytes(stdin) {
        Ok(c) => c,
        Err(e) => {
            let version = plexus_cni::version::declared_version(stdin).unwrap_or_default();
            return done(Answer::failed(Error::from(e), &version), command);
        }
    };
    if init_logging {
        logging::init(&config.log);
    }
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let api = cluster(&config, env.command);
    let kubelet = crate::seams::devices::kubelet::Kubelet::from_config(&config);
    let seams = Seams {
        exec: host.exec,
        netns: host.netns,
        cluster: api.as_ref().map(|c| c as &dyn Cluster),
        kubelet: &kubelet,
        defer_work,
    };
    let ops::Outcome { result, events } = ops::run(&env, &config, &seams);
    // Whatever the outcome: a failed ADD's Warning events are sent too.
    let answer = match result {
        Ok(done) => Answer::Done(done),
        Err(e) => Answer::failed(e, config.cni_version.as_str()),
    };
    Ran {
        answer,
        command,
        cluster: api,
        events,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::seams::{k8s::memory::MemoryApi, testing::TestHost};

    /// The events an operation collected come back as a value whatever its outcome (a failed ADD's
    /// Warning is sent too), with the failure as its CNI error reply in the config's version.
    #[test]
    fn events_come_back_with_the_answer_on_failure_too() {
        let h = TestHost::new();
        let config = json!({
            "cniVersion": "1.0.0", "name": "plexus-net", "type": "plexus",
            "cniDir": h.cni_dir(), "binDir": "/opt/cni/bin",
            "delegates": [{"cniVersion": "1.0.0", "name": "cluster", "type": "bridge"}]
        });
        let vars = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/test-pod"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod1"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec();
        let host = Host {
            exec: &h.exec,
            netns: &h.netns,
        };
        let ran = run(
            vars,
            &serde_json::to_vec(&config).unwrap(),
            host,
            // The pod selects a NAD that does not exist: refused, with a Warning event.
            &|_, _| {
                Some(MemoryApi::new().with_pod(
                    "ns1",
                    "pod1",
                    "u1",
                    &[("k8s.v1.cni.cncf.io/networks", "ghost")],
                ))
            },
            false,
            false,
        );
        let Answer::Failed(reply) = &ran.answer else {
            panic!("the ADD fails: {:?}", ran.answer);
        };
        assert_eq!((reply.code, reply.cni_version.as_str()), (7, "1.0.0"));
        assert_eq!(ran.events.len(), 1);
        assert_eq!(ran.events[0].reason.as_deref(), Some("NoNetworkFound"));
        assert_eq!(ran.events[0].type_.as_deref(), Some("Warning"));
        assert_eq!(ran.command, Some(Command::Add));
    }
}
