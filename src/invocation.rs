//! One CNI invocation from its environment and config to what the process prints and how it exits: the
//! core that the thin binary ([`crate::cli`]) and the daemon's requests (`crate::daemon::handler`) share.

use plexus_cni::ErrorReply;

use crate::{
    cluster::{Cluster, NoCluster},
    config::Config,
    error::Error,
    exec::Exec,
    logging,
    netns::{KernelNetns, NetnsProbe},
    ops::{self, Seams},
    request::{CniEnv, Command},
};

/// The about text printed (to stderr) when no `CNI_COMMAND` is set.
pub const ABOUT: &str = concat!(
    "plexus ",
    env!("CARGO_PKG_VERSION"),
    ": meta-plugin that delegates to other CNI plugins (CNI spec 0.1.0 to 1.1.0)"
);

/// What the process prints and how it exits.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Stdout (one JSON document, or nothing).
    pub stdout: Vec<u8>,
    /// Stderr text from the edge itself (logs go through `tracing`).
    pub stderr: String,
    /// Exit status.
    pub code: u8,
    /// Events to send once the reply is out (a `k8s::events::Batch`), by a detached child.
    pub events: Option<Vec<u8>>,
}

/// An error reply as the outcome: on stdout, exit status 1.
pub(crate) fn failure(reply: ErrorReply) -> Outcome {
    Outcome {
        stdout: reply.to_json().into_bytes(),
        stderr: String::new(),
        code: 1,
        events: None,
    }
}

/// Makes the cluster seam for a validated config (`None`: no Kubernetes).
pub type ClusterFactory<'a> = &'a dyn Fn(&Config, Command) -> Option<Box<dyn Cluster>>;

/// One invocation as run by [`run`].
pub struct Ran {
    /// What to print and how to exit (`events` is left to the caller).
    pub outcome: Outcome,
    /// The command, once the environment parsed.
    pub command: Option<Command>,
    /// The cluster seam the operation ran against (its collected events not yet taken).
    pub cluster: Option<Box<dyn Cluster>>,
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
        exec: &crate::exec::ProcessExec,
        netns: &KernelNetns,
    };
}

/// Run one CNI invocation: environment `vars`, the config `stdin`, delegates and namespaces through `host`,
/// the cluster `cluster` makes. The thin binary and the daemon (one request each) both come through here;
/// `init_logging` sets the process's logging from the config (the thin binary; the daemon has its own);
/// `after_reply` takes work for after the reply (the daemon, see [`ops::Seams::after_reply`]).
pub fn run(
    vars: Vec<(String, String)>,
    stdin: &[u8],
    host: Host<'_>,
    cluster: ClusterFactory<'_>,
    init_logging: bool,
    after_reply: Option<&ops::AfterReply>,
) -> Ran {
    let done = |outcome: Outcome, command: Option<Command>| Ran {
        outcome,
        command,
        cluster: None,
    };
    let env = match CniEnv::from_vars(vars) {
        Ok(Some(env)) => env,
        Ok(None) => {
            let about = Outcome {
                stdout: Vec::new(),
                stderr: format!("{ABOUT}\n"),
                code: 0,
                events: None,
            };
            return done(about, None);
        }
        Err(e) => return done(failure(Error::from(e).to_reply("")), None),
    };
    let command = Some(env.command);
    if env.command == Command::Version {
        let version = Outcome {
            stdout: ops::version_reply(stdin),
            stderr: String::new(),
            code: 0,
            events: None,
        };
        return done(version, command);
    }
    let config = match Config::from_bytes(stdin) {
        Ok(c) => c,
        Err(e) => {
            let version = plexus_cni::version::declared_version(stdin).unwrap_or_default();
            return done(failure(Error::from(e).to_reply(&version)), command);
        }
    };
    if init_logging {
        logging::init(&config.log);
    }
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let api = cluster(&config, env.command);
    let kubelet = crate::devices::kubelet::Kubelet::from_config(&config);
    let seams = Seams {
        exec: host.exec,
        netns: host.netns,
        cluster: api.as_deref().unwrap_or(&NoCluster),
        kubelet: &kubelet,
        after_reply,
    };
    let outcome = match ops::execute(&env, &config, &seams) {
        Ok(stdout) => Outcome {
            stdout,
            stderr: String::new(),
            code: 0,
            events: None,
        },
        Err(e) => failure(e.to_reply(config.cni_version.as_str())),
    };
    Ran {
        outcome,
        command,
        cluster: api,
    }
}
