//! The binary's edge: read the environment and stdin, run the operation ([`crate::ops::invocation`]), print
//! exactly one JSON reply on stdout, map the outcome to an exit status (CNI-9, CNI-59).

use std::{
    ffi::OsString,
    io::{self, Read, Write},
    process::ExitCode,
};

use plexus_cni::ErrorReply;

use super::panicked;
use crate::{
    ops::{
        error::Error,
        invocation::{ABOUT, Answer, ClusterFactory, Host, run},
    },
    pure::config::Config,
    seams::{
        cluster::Cluster,
        k8s::{
            client::ApiCluster,
            events::{self, Batch},
        },
        logging,
    },
};

const USAGE: &str = "usage: plexus [--version | --help | crd | install [FLAGS] | daemon [FLAGS]]
  crd        print the NetworkAttachmentDefinition CRD (YAML) for `kubectl apply -f -`
  install    set this node up for plexus (the DaemonSet's entrypoint; `plexus install --help`)
  daemon     runs plexus-daemon (next to this binary): serve CNI requests from plexus-shim on a unix socket,
             with watch caches (`plexus-daemon --help`)
plexus is a CNI plugin: the container runtime runs it with CNI_COMMAND and the other CNI_* variables set
and the network config on stdin. See the README for its config keys.";

fn lossy(v: OsString) -> String {
    v.into_string()
        .unwrap_or_else(|v| v.to_string_lossy().into_owned())
}

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

impl Outcome {
    /// The answer as this process prints it: a success's reply in the config's version (exit 0), an error
    /// reply (exit 1), or the about text on stderr.
    fn of(answer: &Answer) -> Outcome {
        match answer {
            Answer::About => Outcome {
                stdout: Vec::new(),
                stderr: format!("{ABOUT}\n"),
                code: 0,
                events: None,
            },
            Answer::Done(done) => Outcome {
                stdout: done.reply.to_stdout(),
                stderr: String::new(),
                code: 0,
                events: None,
            },
            Answer::Failed(reply) => failure(reply),
        }
    }
}

/// An error reply as the outcome: on stdout, exit status 1.
fn failure(reply: &ErrorReply) -> Outcome {
    Outcome {
        stdout: reply.to_json().into_bytes(),
        stderr: String::new(),
        code: 1,
        events: None,
    }
}

/// Run one CNI invocation with real processes and netns, and the cluster `cluster` makes.
pub fn invoke<C: Cluster>(
    vars: Vec<(String, String)>,
    stdin: &mut dyn Read,
    cluster: ClusterFactory<'_, C>,
) -> Outcome {
    let mut bytes = Vec::new();
    if let Err(e) = stdin.read_to_end(&mut bytes) {
        return failure(&Error::Stdin(e).to_reply(""));
    }
    let ran = run(vars, &bytes, Host::OWN, cluster, true, false);
    let mut out = Outcome::of(&ran.answer);
    out.events = Batch::encode(&bytes, ran.events);
    out
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

/// `plexus send-events`, the detached child of [`events::dispatch`]: read a [`Batch`] from stdin and post its
/// events.
fn send_events() -> ExitCode {
    let mut bytes = Vec::new();
    if io::stdin().read_to_end(&mut bytes).is_err() {
        return ExitCode::FAILURE;
    }
    let Ok(batch) = serde_json::from_slice::<Batch>(&bytes) else {
        return ExitCode::FAILURE;
    };
    let Ok(config_bytes) = serde_json::to_vec(&batch.config) else {
        return ExitCode::FAILURE;
    };
    let Ok(mut config) = Config::from_bytes(&config_bytes) else {
        return ExitCode::FAILURE;
    };
    // Nobody reads this process's stderr.
    config.log.to_stderr = false;
    logging::init(&config.log);
    match ApiCluster::from_config(&config) {
        Some(api) => {
            api.send_events(batch.events);
            ExitCode::SUCCESS
        }
        None => {
            tracing::warn!("events not sent: no kubeconfig and not in a cluster");
            ExitCode::FAILURE
        }
    }
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
        Some("install") => return crate::edges::install::main(args.collect()),
        Some("daemon") => return exec_daemon(args.collect()),
        Some(events::SUBCOMMAND) => return send_events(),
        Some("crd") => {
            let _ = io::stdout().write_all(crate::seams::k8s::nad::crd_yaml().as_bytes());
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
    let mut stdin = Vec::new();
    let out = match io::stdin().lock().read_to_end(&mut stdin) {
        Err(e) => failure(&Error::Stdin(e).to_reply("")),
        Ok(_) => {
            // Built panic = "abort" (Cargo.toml): no unwinding turns a panic into an error reply any more.
            panicked::reply_to_panics(panicked::PanicContext::new(&vars, &stdin));
            invoke(vars, &mut stdin.as_slice(), &|config, _| {
                ApiCluster::from_config(config)
            })
        }
    };
    if !out.stderr.is_empty() {
        let _ = io::stderr().write_all(out.stderr.as_bytes());
    }
    if !panicked::take_stdout() {
        // Another thread panicked and is printing its error reply; it ends the process.
        loop {
            std::thread::park();
        }
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
