//! One CNI invocation from its environment and config to its typed [`Answer`]: the core that the thin binary
//! ([`crate::cli`]) and the daemon's requests (`crate::daemon::handler`) share, each rendering the answer.

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

/// Makes the cluster seam for a validated config (`None`: no Kubernetes).
pub type ClusterFactory<'a> = &'a dyn Fn(&Config, Command) -> Option<Box<dyn Cluster>>;

/// One invocation as run by [`run`].
pub struct Ran {
    /// How it ended.
    pub answer: Answer,
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
    let done = |answer: Answer, command: Option<Command>| Ran {
        answer,
        command,
        cluster: None,
    };
    let env = match CniEnv::from_vars(vars) {
        Ok(Some(env)) => env,
        Ok(None) => return done(Answer::About, None),
        Err(e) => return done(Answer::failed(Error::from(e), ""), None),
    };
    let command = Some(env.command);
    if env.command == Command::Version {
        let version = ops::Done {
            reply: ops::Reply::Version(ops::version_reply(stdin)),
        };
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
    let kubelet = crate::devices::kubelet::Kubelet::from_config(&config);
    let seams = Seams {
        exec: host.exec,
        netns: host.netns,
        cluster: api.as_deref().unwrap_or(&NoCluster),
        kubelet: &kubelet,
        after_reply,
    };
    let answer = match ops::execute(&env, &config, &seams) {
        Ok(done) => Answer::Done(done),
        Err(e) => Answer::failed(e, config.cni_version.as_str()),
    };
    Ran {
        answer,
        command,
        cluster: api,
    }
}
