//! The binary's edge: read the environment and stdin, run the operation, print exactly one JSON reply on
//! stdout, map the outcome to an exit status (CNI-9, CNI-59).

use std::{
    ffi::OsString,
    io::{self, Read, Write},
    process::ExitCode,
};

use plexus_cni::ErrorReply;

use crate::{
    cluster::{Cluster, NoCluster},
    config::Config,
    error::Error,
    exec::{Exec, ProcessExec},
    k8s::events::{self, Batch},
    logging,
    netns::KernelNetns,
    ops::{self, Seams},
    request::{CniEnv, Command},
};

/// The about text printed (to stderr) when no `CNI_COMMAND` is set.
pub const ABOUT: &str = concat!(
    "plexus ",
    env!("CARGO_PKG_VERSION"),
    ": meta-plugin that delegates to other CNI plugins (CNI spec 0.1.0 to 1.1.0)"
);

const USAGE: &str = "usage: plexus [--version | --help | crd | install [FLAGS] | daemon [FLAGS]]
  crd        print the NetworkAttachmentDefinition CRD (YAML) for `kubectl apply -f -`
  install    set this node up for plexus (the DaemonSet's entrypoint; `plexus install --help`)
  daemon     runs plexus-daemon (next to this binary): serve CNI requests from plexus-shim on a unix socket,
             with watch caches (`plexus-daemon --help`)
plexus is a CNI plugin: the container runtime runs it with CNI_COMMAND and the other CNI_* variables set
and the network config on stdin. See the README for its config keys.";

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

fn lossy(v: OsString) -> String {
    v.into_string()
        .unwrap_or_else(|v| v.to_string_lossy().into_owned())
}

fn failure(reply: ErrorReply) -> Outcome {
    Outcome {
        stdout: reply.to_json().into_bytes(),
        stderr: String::new(),
        code: 1,
        events: None,
    }
}

/// Makes the cluster seam for a validated config (`None`: no Kubernetes).
pub type ClusterFactory<'a> = &'a dyn Fn(&Config, Command) -> Option<Box<dyn Cluster>>;

/// Run one CNI invocation with real processes and netns, and the cluster `cluster` makes.
pub fn invoke(
    vars: Vec<(String, String)>,
    stdin: &mut dyn Read,
    cluster: ClusterFactory<'_>,
) -> Outcome {
    let mut bytes = Vec::new();
    if let Err(e) = stdin.read_to_end(&mut bytes) {
        return failure(Error::Stdin(e).to_reply(""));
    }
    let ran = run(vars, &bytes, &ProcessExec, cluster, true, None);
    let mut out = ran.outcome;
    if let Some(api) = ran.cluster {
        out.events = Batch::encode(&bytes, api.take_events());
    }
    out
}

/// One invocation as run by [`run`].
pub struct Ran {
    /// What to print and how to exit (`events` is left to the caller).
    pub outcome: Outcome,
    /// The command, once the environment parsed.
    pub command: Option<Command>,
    /// The cluster seam the operation ran against (its collected events not yet taken).
    pub cluster: Option<Box<dyn Cluster>>,
}

/// Run one CNI invocation: environment `vars`, the config `stdin`, delegates through `exec`, real netns,
/// the cluster `cluster` makes. The thin binary and the daemon (one request each) both come through here;
/// `init_logging` sets the process's logging from the config (the thin binary; the daemon has its own);
/// `after_reply` takes work for after the reply (the daemon, see [`ops::Seams::after_reply`]).
pub fn run(
    vars: Vec<(String, String)>,
    stdin: &[u8],
    exec: &dyn Exec,
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
        exec,
        netns: &KernelNetns,
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

/// The daemon's binary, beside this one.
pub const DAEMON_BINARY: &str = "plexus-daemon";

/// `plexus daemon ARGS`: an alias that execs `plexus-daemon ARGS` from this binary's directory (the daemon is
/// a binary of its own, so this one links none of its code).
fn exec_daemon(args: Vec<String>) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let daemon = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name(DAEMON_BINARY),
        Err(e) => {
            eprintln!(
                "plexus daemon: cannot tell where this binary is ({e}); run {DAEMON_BINARY} instead"
            );
            return ExitCode::from(2);
        }
    };
    // Only returns on failure.
    let e = std::process::Command::new(&daemon).args(args).exec();
    eprintln!(
        "plexus daemon: cannot run {} ({e}): the daemon ships as its own binary, {DAEMON_BINARY}, next to plexus",
        daemon.display()
    );
    ExitCode::from(2)
}

/// The process entry point.
pub fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).map(lossy);
    match args.next().as_deref() {
        None => {}
        Some("-v" | "-version" | "--version") => {
            let _ = writeln!(io::stdout(), "plexus {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some("install") => return crate::install::main(args.collect()),
        Some("daemon") => return exec_daemon(args.collect()),
        Some(events::SUBCOMMAND) => return events::send_main(),
        Some("crd") => {
            let _ = io::stdout().write_all(crate::k8s::nad::crd_yaml().as_bytes());
            return ExitCode::SUCCESS;
        }
        Some("-h" | "--help" | "help") => {
            let _ = writeln!(io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("plexus: unknown argument {other:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let vars: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| (lossy(k), lossy(v)))
        .collect();
    let out = invoke(vars, &mut io::stdin().lock(), &|config, command| {
        crate::k8s::client::ApiCluster::from_config(config)
            .map(|c| Box::new(c.with_events(command == Command::Add)) as Box<dyn Cluster>)
    });
    if !out.stderr.is_empty() {
        let _ = io::stderr().write_all(out.stderr.as_bytes());
    }
    let mut stdout = io::stdout().lock();
    // A closed stdout (the runtime gave up) is not worth a panic.
    let _ = stdout.write_all(&out.stdout).and_then(|()| stdout.flush());
    drop(stdout);
    if let Some(batch) = out.events
        && let Err(e) = events::dispatch(&batch)
    {
        tracing::warn!("cannot start the event sender: {e}; events not sent");
    }
    ExitCode::from(out.code)
}
