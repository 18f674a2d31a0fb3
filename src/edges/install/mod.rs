//! `plexus install`: the DaemonSet's entrypoint, which sets a node up for plexus and keeps it set up
//! (with its known field problems fixed: docs/multus-compat.md, "Installation").
//!
//! ```text
//! copy binary ─▶ kubeconfig ─▶ wait for primary (+ readiness file) ─▶ write config ─▶ watch ─▶ signal
//!  (once)         (token, CA)    (bounded, logged)                    (on change)     (poll)   keep | remove
//! ```
//!
//! The kubeconfig's token is, by default, one of the pod's ServiceAccount bound to this node's Node object,
//! asked of the TokenRequest API with the pod's own token and renewed before it expires ([`token`]): the
//! pod's own token dies with the pod, and the host must keep working while the pod restarts.
//!
//! With `--daemon` (a node running `plexus daemon`) the shim binary is copied too, no kubeconfig is written
//! (one a thin install left is removed once the shim's config is in place), and the config is the shim's:
//! type `plexus-shim`, `daemonSocketDir`, `cniDir`, no `kubeconfig`, and otherwise what the thin plexus
//! needs to tear a pod down from its cache, since the shim runs it for DEL while the daemon is down.
//!
//! [`conf`] is the pure core (which file is the primary, what the config and kubeconfig say); [`files`]
//! does the atomic writes; this module is the thin I/O loop over both. Every step only writes when the
//! content differs, so a restart, a second replica of the loop or a watch tick never churns the files
//! (#1220). Errors exit non-zero with one message (Go Multus's entrypoint exits 0); the disappearance of the
//! primary later on is not an error: the config is kept so pods can still be torn down.

pub mod args;
pub mod conf;
pub mod files;
pub mod token;

use std::{
    fs, io,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::mpsc,
    thread,
    time::{Duration, Instant, SystemTime},
};

use clap::Parser;
use nix::sys::signal::{SigSet, Signal};

pub use args::Args;
use args::HostToken;
use conf::{ConfOptions, PrimaryInfo, Rendered, Selection};
use files::Change;
use token::{ApiIssuer, Backoff, Caller, Issued, Issuer, Request};

/// How often a wait repeats its log line.
const WAIT_LOG_PERIOD: Duration = Duration::from_secs(10);

/// Parse `plexus install` arguments (`argv` without the program and subcommand names).
pub fn parse<I, T>(argv: I) -> Result<Args, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    Args::try_parse_from(
        std::iter::once(std::ffi::OsString::from("plexus install"))
            .chain(argv.into_iter().map(Into::into)),
    )
}

/// The process environment the installer reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    /// `KUBERNETES_SERVICE_HOST`.
    pub service_host: Option<String>,
    /// `KUBERNETES_SERVICE_PORT`.
    pub service_port: Option<String>,
    /// `KUBERNETES_SERVICE_PROTOCOL`.
    pub service_protocol: Option<String>,
    /// `PLEXUS_NODE_NAME`: this node, from the downward API (`spec.nodeName`).
    pub node_name: Option<String>,
}

impl Env {
    /// From this process's environment.
    pub fn from_process() -> Env {
        Env {
            service_host: std::env::var("KUBERNETES_SERVICE_HOST").ok(),
            service_port: std::env::var("KUBERNETES_SERVICE_PORT").ok(),
            service_protocol: std::env::var("KUBERNETES_SERVICE_PROTOCOL").ok(),
            node_name: std::env::var("PLEXUS_NODE_NAME")
                .ok()
                .filter(|n| !n.is_empty()),
        }
    }
}

/// Why the installer stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// The operation.
        what: &'static str,
        /// Its path (in the container).
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The kubeconfig cannot be built.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] conf::KubeconfigError),
    /// The config cannot be built from the primary.
    #[error(transparent)]
    Render(#[from] conf::RenderError),
    /// The pinned primary is a meta-plugin config.
    #[error("--primary-conf: {0}")]
    Refused(conf::PrimaryError),
    /// The bounded wait ran out.
    #[error("gave up after {}s (--wait-timeout): {reason}", waited.as_secs())]
    Timeout {
        /// How long it waited.
        waited: Duration,
        /// What was still missing.
        reason: String,
    },
    /// Signal handling could not be set up.
    #[error("cannot set up signal handling: {0}")]
    Signals(String),
    /// A Node-bound token cannot even be asked for (no node name, no ServiceAccount in the token).
    #[error("--host-token=node: {0}")]
    HostToken(String),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error + use<> {
    let path = path.to_path_buf();
    move |source| Error::Io { what, path, source }
}

/// One log line on stderr (the container log), with a UTC timestamp.
fn log(msg: impl AsRef<str>) {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    eprintln!("{now} plexus install: {}", msg.as_ref());
    #[cfg(test)]
    tests::LOGGED.with(|l| l.borrow_mut().push(msg.as_ref().to_string()));
}

/// `t` as RFC 3339 (UTC), for log lines.
fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{secs}s after the epoch"))
}

// === Signals ===

/// SIGTERM and SIGINT, received on a dedicated thread (the signals are blocked everywhere else), so the loop
/// can sleep on a channel and wake at once.
pub struct Stop {
    rx: Option<mpsc::Receiver<Signal>>,
}

impl Stop {
    /// Catch SIGTERM and SIGINT. Must run before any other thread is started (the mask is inherited).
    pub fn install() -> Result<Stop, Error> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGINT);
        set.thread_block()
            .map_err(|e| Error::Signals(e.to_string()))?;
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                while let Ok(sig) = set.wait() {
                    if tx.send(sig).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| Error::Signals(e.to_string()))?;
        Ok(Stop { rx: Some(rx) })
    }

    /// No signals: [`Stop::wait`] only sleeps (tests of the library).
    pub fn never() -> Stop {
        Stop { rx: None }
    }

    /// Sleep up to `d`; the signal when one arrives.
    pub fn wait(&self, d: Duration) -> Option<Signal> {
        match &self.rx {
            Some(rx) => rx.recv_timeout(d).ok(),
            None => {
                thread::sleep(d);
                None
            }
        }
    }
}

// === The installer ===

/// The executables the installer copies to the host.
#[derive(Debug, Clone, Copy)]
enum Executable {
    /// The plexus binary (the thin plugin, and the daemon mode's DEL fallback).
    Plugin,
    /// `plexus-shim` (--daemon).
    Shim,
}

/// Whether the node is ready for plexus's config.
enum Readiness {
    Ready(Rendered, PrimaryInfo),
    NotReady(String),
}

/// The Node-bound token's state (`--host-token=node`).
struct HostState {
    /// Asks the API server.
    issuer: Box<dyn Issuer>,
    /// The time (the tests' own clock).
    clock: Box<dyn Fn() -> SystemTime>,
    /// What to ask for, settled at the first kubeconfig write.
    request: Option<Request>,
    /// The token in the kubeconfig, when it is a Node-bound one.
    current: Option<Issued>,
    /// When to ask again after a refusal.
    backoff: Backoff,
    /// Whether the pod's own token stands in (said once per stretch).
    standing_in: bool,
}

/// The installer's state over one run.
pub struct Installer {
    args: Args,
    env: Env,
    stem: String,
    opts: ConfOptions,
    /// Container path of the kubeconfig (`None`: --no-kubeconfig or --daemon).
    kubeconfig: Option<PathBuf>,
    /// --daemon: the container path of a kubeconfig a thin install may have left, removed once the
    /// shim's config is written.
    stale_kubeconfig: Option<PathBuf>,
    /// The readiness indicator: host path, container path.
    readiness: Option<(PathBuf, PathBuf)>,
    meta_types: Vec<String>,
    /// The primary the config was last generated from.
    primary: Option<String>,
    /// The file name of the config last written.
    written: Option<String>,
    /// The last watch-loop note, logged once per change.
    note: Option<String>,
    /// The last warning about configs sorting before ours.
    shadow: Vec<String>,
    /// The skipped meta-plugin configs last logged.
    skipped: Vec<String>,
    /// The host's Node-bound token.
    host: HostState,
}

impl Installer {
    /// An installer for `args`.
    pub fn new(args: Args, env: Env) -> Installer {
        let map = args.path_map();
        let kubeconfig = args
            .writes_kubeconfig()
            .then(|| map.to_container(&args.kubeconfig_host_path()));
        let stale_kubeconfig = args
            .daemon
            .then(|| map.to_container(&args.kubeconfig_host_path()));
        let readiness = args
            .readiness_indicator_file
            .clone()
            .map(|h| (h.clone(), map.to_container(&h)));
        let opts = ConfOptions {
            plugin_type: args.plugin_type().to_string(),
            network_name: args.network_name(),
            stem: args.conf_stem(),
            cni_version: args.cni_version,
            kubeconfig: args
                .writes_kubeconfig()
                .then(|| args.kubeconfig_host_path()),
            host_conf_dir: args.host_cni_conf_dir.clone(),
            conf_dir: args.host_plexus_conf_dir.clone(),
            cni_dir: args.cni_dir(),
            bin_dir: args.additional_bin_dir.clone(),
            daemon_socket_dir: args.daemon.then(|| args.daemon_socket_dir.clone()),
            thin_binary: args.thin_binary(),
            namespace_isolation: args.namespace_isolation,
            global_namespaces: args.global_namespaces.clone(),
            readiness_indicator_file: args.readiness_indicator_file.clone(),
            log_level: args.log_level.map(|l| l.as_str().to_string()),
            log_file: args.log_file.clone(),
            log_to_stderr: args.log_to_stderr,
            strict_capabilities: args.strict_capabilities,
            allowed_plugin_types: args.allowed_plugin_types.clone().map(|t| t.0),
            allowed_plugin_types_by_namespace: args
                .allowed_plugin_types_by_namespace
                .iter()
                .map(|n| (n.namespace.clone(), n.types.clone()))
                .collect(),
            auxiliary_cni_chain_name: args.auxiliary_cni_chain_name.clone(),
        };
        let mut meta_types: Vec<String> = conf::META_TYPES.iter().map(|s| s.to_string()).collect();
        for t in [&args.binary_name, args.plugin_type()] {
            if !meta_types.iter().any(|m| m == t) {
                meta_types.push(t.to_string());
            }
        }
        Installer {
            stem: args.conf_stem(),
            args,
            env,
            opts,
            kubeconfig,
            stale_kubeconfig,
            readiness,
            meta_types,
            primary: None,
            written: None,
            note: None,
            shadow: Vec::new(),
            skipped: Vec::new(),
            host: HostState {
                issuer: Box::new(ApiIssuer),
                clock: Box::new(SystemTime::now),
                request: None,
                current: None,
                backoff: Backoff::default(),
                standing_in: false,
            },
        }
    }

    /// Ask `issuer` for tokens and tell the time by `clock` (tests).
    #[cfg(test)]
    fn with_issuer(
        mut self,
        issuer: impl Issuer + 'static,
        clock: impl Fn() -> SystemTime + 'static,
    ) -> Installer {
        self.host.issuer = Box::new(issuer);
        self.host.clock = Box::new(clock);
        self
    }

    fn host_conf(&self, name: &str) -> String {
        self.args.host_cni_conf_dir.join(name).display().to_string()
    }

    /// Run until done (`--once`), stopped by a signal, or an error.
    pub fn run(&mut self, stop: &Stop) -> Result<(), Error> {
        log(format!(
            "plexus {} installing as {:?}{}: config {} in {}, binary in {}",
            env!("CARGO_PKG_VERSION"),
            self.args.binary_name,
            if self.args.daemon {
                format!(
                    " in daemon mode (shim {}, socket directory {})",
                    args::SHIM_NAME,
                    self.args.daemon_socket_dir.display()
                )
            } else {
                String::new()
            },
            self.stem,
            self.args.cni_conf_dir.display(),
            self.args.cni_bin_dir.display()
        ));
        if self.args.skip_binary_copy {
            log("not copying the binaries (--skip-binary-copy)");
        } else {
            // The thin binary first: the shim falls back to it, and the config comes after both.
            self.copy_executable(
                Executable::Plugin,
                &self.args.binary,
                &self.args.binary_name,
            )?;
            if self.args.daemon {
                let shim = self.args.shim_binary().map_err(io_err(
                    "locate (pass --shim-binary)",
                    Path::new("plexus-shim next to this executable"),
                ))?;
                self.copy_executable(Executable::Shim, &shim, args::SHIM_NAME)?;
            }
        }
        let dir = &self.args.plexus_conf_dir;
        crate::store::fsutil::ensure_dir(dir, 0o755).map_err(io_err("create directory", dir))?;
        self.refresh_kubeconfig(true)?;

        let Some((rendered, primary)) = self.wait_until_ready(stop)? else {
            return Ok(());
        };
        self.write_conf(&rendered, &primary)?;
        self.remove_stale_kubeconfig()?;
        if self.args.once {
            log("done (--once)");
            return Ok(());
        }
        log(format!(
            "watching every {:?}: {}{}",
            self.args.poll_interval,
            if self.args.skip_config_watch {
                "the primary config is not watched (--skip-config-watch); "
            } else {
                "the primary config, "
            },
            if self.kubeconfig.is_some() {
                "the service-account token and CA"
            } else if self.args.daemon {
                "no kubeconfig (--daemon)"
            } else {
                "no kubeconfig (--no-kubeconfig)"
            }
        ));
        loop {
            if let Some(sig) = stop.wait(self.args.poll_interval) {
                return self.stop(sig);
            }
            self.refresh_kubeconfig(false)?;
            if !self.args.skip_config_watch {
                self.watch_tick()?;
            }
        }
    }

    /// Copy the executable `src` to `<cni-bin-dir>/<name>`.
    fn copy_executable(&self, kind: Executable, src: &Path, name: &str) -> Result<(), Error> {
        let dst = self.args.cni_bin_dir.join(name);
        let (what, read, install) = match kind {
            Executable::Plugin => (
                "binary",
                "read the binary to install",
                "install the binary at",
            ),
            Executable::Shim => (
                "shim",
                "read the shim to install (--shim-binary)",
                "install the shim at",
            ),
        };
        fs::File::open(src).map_err(io_err(read, src))?;
        let change = files::install_executable(src, &dst).map_err(|source| Error::Io {
            what: install,
            path: dst.clone(),
            source,
        })?;
        match change {
            Change::Unchanged => log(format!("{what} {} is up to date", dst.display())),
            Change::Created => log(format!("installed the {what} at {}", dst.display())),
            Change::Replaced => log(format!("replaced the {what} at {}", dst.display())),
            Change::ModeFixed => log(format!("made {} executable (0755)", dst.display())),
        }
        Ok(())
    }

    /// --daemon: remove the kubeconfig (a service-account token) a thin install left on the host. Called
    /// once the shim's config, which names no kubeconfig, has replaced the thin one.
    fn remove_stale_kubeconfig(&self) -> Result<(), Error> {
        let Some(k) = &self.stale_kubeconfig else {
            return Ok(());
        };
        if files::remove(k).map_err(io_err("remove the thin install's kubeconfig", k))? {
            log(format!(
                "removed {}, left by a thin install: in daemon mode no token is kept on the host",
                self.args.kubeconfig_host_path().display()
            ));
        }
        // And the directory the thin install made for it, once empty (something else in it stays).
        if let Some(dir) = self.args.own_kubeconfig_dir() {
            let dir = self.args.path_map().to_container(&dir);
            if fs::remove_dir(&dir).is_ok() {
                log(format!("removed the empty {}", dir.display()));
            }
        }
        Ok(())
    }

    fn refresh_kubeconfig(&mut self, initial: bool) -> Result<(), Error> {
        let Some(path) = self.kubeconfig.clone() else {
            if initial && self.args.daemon {
                log("writing no kubeconfig (--daemon): plexus daemon uses its own service account");
            } else if initial {
                log("writing no kubeconfig (--no-kubeconfig): plexus runs without Kubernetes");
            }
            return Ok(());
        };
        let path = &path;
        let sa = &self.args.service_account_dir;
        let (token_path, ca_path) = (sa.join("token"), sa.join("ca.crt"));
        let pod_token = fs::read_to_string(&token_path)
            .map_err(io_err("read the service-account token", &token_path))?;
        let ca = fs::read(&ca_path).map_err(io_err("read the service-account CA", &ca_path))?;
        let server = conf::api_server_url(
            self.env.service_host.as_deref(),
            self.env.service_port.as_deref(),
            self.env.service_protocol.as_deref(),
        )?;
        let token = match self.args.host_token {
            HostToken::ServiceAccount => pod_token,
            HostToken::Node => self.node_token(initial, path, &server, &ca, pod_token.trim())?,
        };
        let text = conf::render_kubeconfig(&server, &ca, &token, &self.args.binary_name)?;
        if let Some(dir) = path.parent() {
            crate::store::fsutil::ensure_dir(dir, 0o700)
                .map_err(io_err("create directory", dir))?;
        }
        let change = files::write_if_changed(path, text.as_bytes(), 0o600)
            .map_err(io_err("write the kubeconfig", path))?;
        let host = self.args.kubeconfig_host_path();
        match change {
            Change::Created => log(format!(
                "wrote the kubeconfig {} (API server {server})",
                host.display()
            )),
            Change::Replaced if initial => {
                log(format!("rewrote the kubeconfig {}", host.display()))
            }
            Change::Replaced => log(format!(
                "rewrote the kubeconfig {}: the token or CA changed",
                host.display()
            )),
            Change::ModeFixed => log(format!(
                "set the kubeconfig {} to mode 0600",
                host.display()
            )),
            Change::Unchanged if initial => {
                log(format!("kubeconfig {} is up to date", host.display()))
            }
            Change::Unchanged => {}
        }
        Ok(())
    }

    /// What to ask the API server for: a token of the pod's own ServiceAccount (named by `pod_token`'s
    /// subject) bound to this node.
    fn token_request(&self, pod_token: &str) -> Result<Request, Error> {
        let node = match (&self.args.node_name, &self.env.node_name) {
            (Some(n), _) => n.clone(),
            (None, Some(n)) if crate::pure::names::is_dns_subdomain(n) => n.clone(),
            (None, Some(n)) => {
                return Err(Error::HostToken(format!(
                    "PLEXUS_NODE_NAME {n:?} is not a Node name"
                )));
            }
            (None, None) => {
                return Err(Error::HostToken(
                    "this node's name is unknown: set PLEXUS_NODE_NAME from the downward API (spec.nodeName, as \
                     deploy/daemonset.yaml does) or pass --node-name; --host-token=service-account writes the \
                     pod's own token instead"
                        .into(),
                ));
            }
        };
        let (namespace, service_account) = token::service_account_of(pod_token).map_err(|e| {
            Error::HostToken(format!(
                "{e}; --host-token=service-account writes the token into the kubeconfig as it is"
            ))
        })?;
        Ok(Request {
            namespace,
            service_account,
            node,
            lifetime: self.args.host_token_lifetime,
        })
    }

    /// The token for the kubeconfig at `path` with `--host-token=node`: the Node-bound token, asked for at
    /// start and again at 4/5 of its lifetime (a refusal is logged and retried with backoff; meanwhile the
    /// current one stays). While there is no live one, the pod's own token stands in, with a warning.
    fn node_token(
        &mut self,
        initial: bool,
        path: &Path,
        server: &str,
        ca: &[u8],
        pod_token: &str,
    ) -> Result<String, Error> {
        let now = (self.host.clock)();
        if self.host.request.is_none() {
            let req = self.token_request(pod_token)?;
            log(format!(
                "the host's kubeconfig gets {} for {}s, renewed after 4/5 of that (--host-token=node)",
                req.describe(),
                req.lifetime.as_secs()
            ));
            // A token a previous installer pod left for this node is kept while the API refuses a new one.
            self.host.current = kubeconfig_token(path)
                .and_then(|t| Issued::from_claims(&t, &req.node))
                .filter(|t| t.alive_at(now));
            self.host.request = Some(req);
        }
        let Some(req) = self.host.request.clone() else {
            unreachable!("the request was settled above");
        };
        let due = initial
            || self
                .host
                .current
                .as_ref()
                .is_none_or(|t| now >= t.renew_at());
        if due && self.host.backoff.ready(now) {
            let caller = Caller {
                server,
                ca,
                token: pod_token,
            };
            match self.host.issuer.issue(caller, &req, now) {
                Ok(t) => {
                    log(format!(
                        "obtained {}: it expires at {}, and is renewed from {}",
                        req.describe(),
                        rfc3339(t.expires),
                        rfc3339(t.renew_at())
                    ));
                    self.host.current = Some(t);
                    self.host.backoff.reset();
                    self.host.standing_in = false;
                }
                Err(e) => {
                    let wait = self.host.backoff.failed(now);
                    let keep = match self.host.current.as_ref().filter(|t| t.alive_at(now)) {
                        Some(t) => format!(
                            "keeping the kubeconfig's current token (it expires at {}); ",
                            rfc3339(t.expires)
                        ),
                        None => String::new(),
                    };
                    log(format!(
                        "cannot get {}: {e}; {keep}asking again in {}s",
                        req.describe(),
                        wait.as_secs()
                    ));
                }
            }
        }
        if let Some(t) = self.host.current.as_ref().filter(|t| t.alive_at(now)) {
            return Ok(t.token.clone());
        }
        if !self.host.standing_in {
            log(format!(
                "warning: no live Node-bound token{}: the kubeconfig gets this pod's own token until one is \
                 issued, and ADDs on this node fail with 401 if this pod is deleted before that",
                match &self.host.current {
                    Some(t) => format!(" (the last one expired at {})", rfc3339(t.expires)),
                    None => String::new(),
                }
            ));
            self.host.standing_in = true;
        }
        Ok(pod_token.to_string())
    }

    /// The config directory's entries that are not directories (a missing directory has none).
    fn list_conf_dir(&self) -> Result<Option<Vec<String>>, Error> {
        let dir = &self.args.cni_conf_dir;
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("list", dir)(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("list", dir))?;
            // Follows symlinks; a dangling one is kept (reading it says why it is unusable).
            if fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(Some(names))
    }

    fn select(&mut self) -> Result<Option<(Vec<String>, Selection)>, Error> {
        let Some(names) = self.list_conf_dir()? else {
            return Ok(None);
        };
        let dir = self.args.cni_conf_dir.clone();
        let meta: Vec<&str> = self.meta_types.iter().map(String::as_str).collect();
        let sel = conf::select(
            &names,
            &self.stem,
            &meta,
            self.args.primary_conf.as_deref(),
            |n| fs::read(dir.join(n)).map_err(|e| e.to_string()),
        );
        let skipped = match &sel {
            Selection::Found(_, s) | Selection::Missing(s) => {
                s.iter().map(|e| e.to_string()).collect()
            }
            _ => Vec::new(),
        };
        if skipped != self.skipped {
            for s in &skipped {
                log(format!("skipped: {s}"));
            }
            self.skipped = skipped;
        }
        Ok(Some((names, sel)))
    }

    fn assess(&mut self) -> Result<Readiness, Error> {
        let dir = self.args.host_cni_conf_dir.display().to_string();
        let Some((_, sel)) = self.select()? else {
            return Ok(Readiness::NotReady(format!(
                "the CNI config directory {dir} does not exist yet"
            )));
        };
        let primary = match sel {
            Selection::Found(p, _) => p,
            Selection::Pending(e) => return Ok(Readiness::NotReady(format!("primary {e}"))),
            Selection::Missing(_) => {
                return Ok(Readiness::NotReady(match &self.args.primary_conf {
                    Some(p) => format!(
                        "the primary config {} (--primary-conf) does not exist yet",
                        self.host_conf(p)
                    ),
                    None => format!("no primary CNI config (.conf, .conflist, .json) in {dir} yet"),
                }));
            }
            Selection::Refused(e) => return Err(Error::Refused(e)),
        };
        if let Some((host, container)) = &self.readiness
            && !container.exists()
        {
            return Ok(Readiness::NotReady(format!(
                "the readiness indicator file {} does not exist yet (looked for {})",
                host.display(),
                container.display()
            )));
        }
        let rendered = conf::render(&primary, &self.opts)?;
        Ok(Readiness::Ready(rendered, primary))
    }

    /// Wait (bounded) for the primary config and the readiness indicator. `None`: stopped by a signal.
    fn wait_until_ready(&mut self, stop: &Stop) -> Result<Option<(Rendered, PrimaryInfo)>, Error> {
        let start = Instant::now();
        let limit = self.args.wait_timeout;
        let mut last: Option<(String, Instant)> = None;
        loop {
            let reason = match self.assess()? {
                Readiness::Ready(r, p) => return Ok(Some((r, p))),
                Readiness::NotReady(reason) => reason,
            };
            let waited = start.elapsed();
            if !limit.is_zero() && waited >= limit {
                return Err(Error::Timeout { waited, reason });
            }
            let due = last
                .as_ref()
                .is_none_or(|(r, at)| *r != reason || at.elapsed() >= WAIT_LOG_PERIOD);
            if due {
                let of = if limit.is_zero() {
                    "no limit".to_string()
                } else {
                    format!("giving up after {}s", limit.as_secs_f64())
                };
                log(format!("waiting ({}s, {of}): {reason}", waited.as_secs()));
                last = Some((reason, Instant::now()));
            }
            let nap = if limit.is_zero() {
                self.args.poll_interval
            } else {
                self.args.poll_interval.min(limit.saturating_sub(waited))
            };
            if let Some(sig) = stop.wait(nap) {
                self.stop(sig)?;
                return Ok(None);
            }
            self.refresh_kubeconfig(false)?;
        }
    }

    fn write_conf(&mut self, r: &Rendered, primary: &PrimaryInfo) -> Result<(), Error> {
        let path = self.args.cni_conf_dir.join(&r.file_name);
        let change = files::write_if_changed(&path, &r.bytes, 0o644)
            .map_err(io_err("write the config", &path))?;
        let host = self.host_conf(&r.file_name);
        let from = format!(
            "cniVersion {}, cluster network {} ({}), capabilities [{}]",
            r.cni_version,
            self.host_conf(&primary.file),
            primary.name.as_deref().unwrap_or("unnamed"),
            primary
                .capabilities
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        let changed_primary = self.primary.as_deref().is_some_and(|p| p != primary.file);
        match change {
            Change::Created if self.written.as_deref() == Some(r.file_name.as_str()) => {
                log(format!("restored the missing config {host}: {from}"))
            }
            Change::Created | Change::Replaced if changed_primary => log(format!(
                "the primary is now {}: regenerated {host}: {from}",
                primary.file
            )),
            Change::Created => log(format!("wrote {host}: {from}")),
            Change::Replaced if self.written.is_none() => {
                log(format!("rewrote {host} (it held something else): {from}"))
            }
            Change::Replaced => log(format!("the primary changed: regenerated {host}: {from}")),
            Change::ModeFixed => log(format!("set {host} to mode 0644")),
            Change::Unchanged if self.primary.is_none() => {
                log(format!("{host} is up to date: {from}"))
            }
            Change::Unchanged => {}
        }
        self.primary = Some(primary.file.clone());
        self.written = Some(r.file_name.clone());
        let stale = self.args.cni_conf_dir.join(&r.stale_name);
        if files::remove(&stale).map_err(io_err("remove the stale config", &stale))? {
            log(format!(
                "removed the stale {} (the cniVersion is now {})",
                self.host_conf(&r.stale_name),
                r.cni_version
            ));
        }
        if let Some(names) = self.list_conf_dir()? {
            let shadow = conf::shadowing(&names, &self.stem, &r.file_name);
            if shadow != self.shadow && !shadow.is_empty() {
                log(format!(
                    "warning: the runtime uses the lexically first config, and {} sort(s) before {}: plexus is \
                     not used until they are removed or --conf-name sorts first",
                    shadow.join(", "),
                    r.file_name
                ));
            }
            self.shadow = shadow;
        }
        Ok(())
    }

    fn set_note(&mut self, note: String) {
        if self.note.as_ref() != Some(&note) {
            log(&note);
            self.note = Some(note);
        }
    }

    fn watch_tick(&mut self) -> Result<(), Error> {
        let current = self
            .primary
            .as_deref()
            .map(|p| self.host_conf(p))
            .unwrap_or_default();
        let keep = "keeping the current plexus config so pods can still be torn down";
        let Some((_, sel)) = self.select()? else {
            self.set_note(format!(
                "the CNI config directory {} is gone; {keep}",
                self.args.host_cni_conf_dir.display()
            ));
            return Ok(());
        };
        match sel {
            Selection::Found(primary, _) => match conf::render(&primary, &self.opts) {
                Ok(r) => {
                    self.note = None;
                    self.write_conf(&r, &primary)?;
                }
                Err(e) => self.set_note(format!("{e}; {keep}")),
            },
            Selection::Pending(e) => self.set_note(format!("primary {e}; {keep}")),
            Selection::Missing(_) => self.set_note(format!(
                "the primary config {current} is gone and no other was found; {keep}"
            )),
            Selection::Refused(e) => self.set_note(format!("--primary-conf: {e}; {keep}")),
        }
        Ok(())
    }

    /// Stop on `sig`: keep the config (default) or remove it and the kubeconfig (uninstall).
    fn stop(&self, sig: Signal) -> Result<(), Error> {
        let outputs = conf::output_names(&self.stem);
        if !self.args.cleanup_config_on_exit {
            let kept: Vec<String> = outputs
                .iter()
                .filter(|n| self.args.cni_conf_dir.join(n).exists())
                .map(|n| self.host_conf(n))
                .collect();
            let kept = if kept.is_empty() {
                "the config (none was written)".to_string()
            } else {
                kept.join(", ")
            };
            log(format!(
                "received {sig}: keeping {kept} so pods deleted meanwhile can still be torn down \
                 (--cleanup-config-on-exit removes it)"
            ));
            return Ok(());
        }
        log(format!(
            "received {sig}: removing the config (--cleanup-config-on-exit)"
        ));
        for name in &outputs {
            let p = self.args.cni_conf_dir.join(name);
            if files::remove(&p).map_err(io_err("remove", &p))? {
                log(format!("removed {}", self.host_conf(name)));
            }
        }
        if let Some(k) = &self.kubeconfig
            && files::remove(k).map_err(io_err("remove", k))?
        {
            log(format!(
                "removed {}",
                self.args.kubeconfig_host_path().display()
            ));
        }
        Ok(())
    }
}

/// The bearer token of the kubeconfig at `path` (one this installer wrote), if any.
fn kubeconfig_token(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let kc: serde_json::Value = serde_saphyr::from_str(&text).ok()?;
    kc.pointer("/users/0/user/token")?
        .as_str()
        .map(str::to_string)
}

/// `--check`: whether the generated config is in place (the readiness probe): a config of this mode's
/// type (`<binary-name>`, or `plexus-shim` with --daemon).
pub fn check(args: &Args) -> Result<PathBuf, String> {
    let stem = args.conf_stem();
    for name in conf::output_names(&stem) {
        let path = args.cni_conf_dir.join(&name);
        if let Ok(bytes) = fs::read(&path)
            && conf::generated_type(&bytes).as_deref() == Some(args.plugin_type())
        {
            return Ok(path);
        }
    }
    Err(format!(
        "no {stem}.conf or {stem}.conflist of type {} in {}",
        args.plugin_type(),
        args.cni_conf_dir.display()
    ))
}

/// `plexus install …`: `argv` are the arguments after `install`.
pub fn main(argv: Vec<String>) -> ExitCode {
    let args = match parse(argv) {
        Ok(a) => a,
        Err(e) => {
            // --help goes to stdout with status 0, usage errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    if args.check {
        return match check(&args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("plexus install --check: {e}");
                ExitCode::from(1)
            }
        };
    }
    let result =
        Stop::install().and_then(|stop| Installer::new(args, Env::from_process()).run(&stop));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log(format!("error: {e}"));
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, collections::VecDeque, rc::Rc, time::UNIX_EPOCH};

    use serde_json::json;

    use super::*;
    use crate::edges::install::token::{Refused, tests::jwt};

    thread_local! {
        /// The installer's log lines on this thread (each test runs on its own).
        pub(super) static LOGGED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    /// The log lines since the last call.
    fn logged() -> Vec<String> {
        LOGGED.with(|l| std::mem::take(&mut *l.borrow_mut()))
    }

    struct Node {
        _tmp: tempfile::TempDir,
        root: PathBuf,
    }

    impl Node {
        fn new() -> Node {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().to_path_buf();
            for d in ["host/etc/cni/net.d", "host/opt/cni/bin", "sa"] {
                fs::create_dir_all(root.join(d)).unwrap();
            }
            fs::write(root.join("sa/token"), "tok").unwrap();
            fs::write(root.join("sa/ca.crt"), "ca").unwrap();
            Node { _tmp: tmp, root }
        }

        fn args(&self, extra: &[&str]) -> Args {
            let r = self.root.display();
            let mut v = vec![
                format!("--cni-conf-dir={r}/host/etc/cni/net.d"),
                format!("--cni-bin-dir={r}/host/opt/cni/bin"),
                format!("--plexus-conf-dir={r}/host/etc/cni/multus/net.d"),
                format!("--host-prefix={r}/host"),
                format!("--service-account-dir={r}/sa"),
                "--skip-binary-copy".into(),
                "--once".into(),
                "--wait-timeout=200ms".into(),
                "--poll-interval=20ms".into(),
                // The pod's own token, as before; the Node-bound token's tests ask for `node`.
                "--host-token=service-account".into(),
            ];
            v.extend(extra.iter().map(|s| s.to_string()));
            parse(v).unwrap()
        }

        fn env() -> Env {
            Env {
                service_host: Some("10.96.0.1".into()),
                service_port: Some("443".into()),
                service_protocol: None,
                node_name: None,
            }
        }

        fn conf_dir(&self) -> PathBuf {
            self.root.join("host/etc/cni/net.d")
        }
    }

    #[test]
    fn once_writes_the_kubeconfig_and_the_config() {
        let n = Node::new();
        fs::write(
            n.conf_dir().join("10-flannel.conflist"),
            r#"{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"flannel"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
        )
        .unwrap();
        Installer::new(n.args(&[]), Node::env())
            .run(&Stop::never())
            .unwrap();
        let conf: serde_json::Value =
            serde_json::from_slice(&fs::read(n.conf_dir().join("00-plexus.conflist")).unwrap())
                .unwrap();
        assert_eq!(
            conf["plugins"][0]["clusterNetwork"],
            "/etc/cni/net.d/10-flannel.conflist"
        );
        assert_eq!(conf["plugins"][0]["capabilities"]["portMappings"], true);
        let k = n.conf_dir().join("plexus.d/plexus.kubeconfig");
        let text = fs::read_to_string(&k).unwrap();
        assert!(text.contains("https://10.96.0.1:443") && text.contains("tok"));
        assert!(n.root.join("host/etc/cni/multus/net.d").is_dir());
        // Thin mode: the plexus type and its kubeconfig, none of the daemon mode's keys.
        let plugin = &conf["plugins"][0];
        assert_eq!(plugin["type"], "plexus");
        assert_eq!(
            plugin["kubeconfig"],
            "/etc/cni/net.d/plexus.d/plexus.kubeconfig"
        );
        for key in ["daemonSocketDir", "cniDir", "thinBinary"] {
            assert!(
                plugin.get(key).is_none(),
                "{key} in a thin config: {plugin}"
            );
        }
        assert!(check(&n.args(&[])).is_ok());
        assert!(
            check(&n.args(&["--daemon"])).is_err(),
            "a thin config is not the shim's"
        );
    }

    /// Stand-ins for the two binaries in the image.
    fn image_binaries(n: &Node) -> (PathBuf, PathBuf) {
        let (plexus, shim) = (n.root.join("img/plexus"), n.root.join("img/plexus-shim"));
        fs::create_dir_all(n.root.join("img")).unwrap();
        fs::write(&plexus, "#!/bin/sh\necho thin\n").unwrap();
        fs::write(&shim, "#!/bin/sh\necho shim\n").unwrap();
        (plexus, shim)
    }

    fn daemon_args(n: &Node, extra: &[&str]) -> Args {
        let (plexus, shim) = image_binaries(n);
        let mut v = vec![
            "--daemon".to_string(),
            "--skip-binary-copy=false".into(),
            format!("--binary={}", plexus.display()),
            format!("--shim-binary={}", shim.display()),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        n.args(&v.iter().map(String::as_str).collect::<Vec<_>>())
    }

    const FLANNEL: &str = r#"{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"flannel"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#;

    #[test]
    fn daemon_mode_copies_both_binaries_and_writes_the_shim_config_without_credentials() {
        let n = Node::new();
        fs::write(n.conf_dir().join("10-flannel.conflist"), FLANNEL).unwrap();
        // No service account and no KUBERNETES_SERVICE_* variables: daemon mode needs neither.
        fs::remove_dir_all(n.root.join("sa")).unwrap();
        Installer::new(daemon_args(&n, &[]), Env::default())
            .run(&Stop::never())
            .unwrap();

        let bin = n.root.join("host/opt/cni/bin");
        assert_eq!(
            fs::read_to_string(bin.join("plexus")).unwrap(),
            "#!/bin/sh\necho thin\n"
        );
        assert_eq!(
            fs::read_to_string(bin.join("plexus-shim")).unwrap(),
            "#!/bin/sh\necho shim\n"
        );
        for b in ["plexus", "plexus-shim"] {
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &fs::metadata(bin.join(b)).unwrap().permissions(),
            );
            assert_eq!(mode & 0o777, 0o755, "{b}");
        }

        let path = n.conf_dir().join("00-plexus.conflist");
        let conf: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        let plugin = &conf["plugins"][0];
        assert_eq!(plugin["type"], "plexus-shim");
        assert_eq!(plugin["daemonSocketDir"], "/run/plexus");
        assert_eq!(
            plugin["clusterNetwork"],
            "/etc/cni/net.d/10-flannel.conflist"
        );
        assert_eq!(plugin["cniDir"], "/var/lib/cni/multus");
        assert_eq!(plugin["confDir"], "/etc/cni/multus/net.d");
        assert_eq!(plugin["capabilities"]["portMappings"], true);
        assert!(plugin.get("kubeconfig").is_none(), "{plugin}");
        assert!(
            plugin.get("thinBinary").is_none(),
            "the thin binary is plexus: {plugin}"
        );
        assert!(
            !n.conf_dir().join("plexus.d").exists(),
            "no kubeconfig written, nor its directory"
        );
        // --check knows the mode.
        assert_eq!(check(&daemon_args(&n, &[])), Ok(path));
        assert!(
            check(&n.args(&[])).is_err(),
            "the shim's config is not a thin one"
        );
    }

    #[test]
    fn daemon_mode_options_and_a_missing_shim() {
        let n = Node::new();
        fs::write(n.conf_dir().join("10-flannel.conflist"), FLANNEL).unwrap();
        Installer::new(
            daemon_args(
                &n,
                &[
                    "--daemon-socket-dir=/run/multus",
                    "--cni-dir=/var/lib/cni/plexus",
                    "--binary-name=multus",
                ],
            ),
            Env::default(),
        )
        .run(&Stop::never())
        .unwrap();
        let conf: serde_json::Value =
            serde_json::from_slice(&fs::read(n.conf_dir().join("00-multus.conflist")).unwrap())
                .unwrap();
        let plugin = &conf["plugins"][0];
        assert_eq!(plugin["type"], "plexus-shim");
        assert_eq!(plugin["daemonSocketDir"], "/run/multus");
        assert_eq!(plugin["cniDir"], "/var/lib/cni/plexus");
        assert_eq!(plugin["thinBinary"], "/opt/cni/bin/multus");
        assert!(n.root.join("host/opt/cni/bin/multus").is_file());
        assert!(n.root.join("host/opt/cni/bin/plexus-shim").is_file());

        let n = Node::new();
        fs::write(n.conf_dir().join("10-flannel.conflist"), FLANNEL).unwrap();
        let mut args = daemon_args(&n, &[]);
        args.shim_binary = Some(n.root.join("img/missing-shim"));
        let e = Installer::new(args, Env::default())
            .run(&Stop::never())
            .unwrap_err();
        assert!(e.to_string().contains("--shim-binary"), "{e}");
        assert!(
            !n.conf_dir().join("00-plexus.conflist").exists(),
            "no config names a shim that is not installed"
        );
    }

    #[test]
    fn daemon_mode_replaces_a_thin_install_and_removes_its_kubeconfig() {
        let n = Node::new();
        fs::write(n.conf_dir().join("10-flannel.conflist"), FLANNEL).unwrap();
        Installer::new(n.args(&[]), Node::env())
            .run(&Stop::never())
            .unwrap();
        let k = n.conf_dir().join("plexus.d/plexus.kubeconfig");
        assert!(k.is_file());
        Installer::new(daemon_args(&n, &[]), Env::default())
            .run(&Stop::never())
            .unwrap();
        let conf = fs::read(n.conf_dir().join("00-plexus.conflist")).unwrap();
        assert_eq!(conf::generated_type(&conf).as_deref(), Some("plexus-shim"));
        assert!(
            !k.exists(),
            "the thin install's token is not left on the host"
        );
        assert!(
            !k.parent().unwrap().exists(),
            "nor the directory the thin install made for it"
        );
        // And back: thin mode writes its kubeconfig and type again.
        Installer::new(n.args(&[]), Node::env())
            .run(&Stop::never())
            .unwrap();
        let conf = fs::read(n.conf_dir().join("00-plexus.conflist")).unwrap();
        assert_eq!(conf::generated_type(&conf).as_deref(), Some("plexus"));
        assert!(k.is_file());
    }

    #[test]
    fn waiting_is_bounded_and_names_what_is_missing() {
        let n = Node::new();
        let e = Installer::new(n.args(&[]), Node::env())
            .run(&Stop::never())
            .unwrap_err();
        assert!(
            matches!(&e, Error::Timeout { reason, .. } if reason.contains("no primary CNI config")),
            "{e}"
        );
        fs::write(
            n.conf_dir().join("10-x.conf"),
            r#"{"cniVersion":"0.4.0","name":"x","type":"bridge"}"#,
        )
        .unwrap();
        let e = Installer::new(
            n.args(&["--readiness-indicator-file=/run/ready"]),
            Node::env(),
        )
        .run(&Stop::never())
        .unwrap_err();
        assert!(e.to_string().contains("/run/ready"), "{e}");
        assert!(
            !n.conf_dir().join("00-plexus.conf").exists(),
            "nothing written before ready (NPWG-58)"
        );
        fs::create_dir_all(n.root.join("host/run")).unwrap();
        fs::write(n.root.join("host/run/ready"), "").unwrap();
        Installer::new(
            n.args(&["--readiness-indicator-file=/run/ready"]),
            Node::env(),
        )
        .run(&Stop::never())
        .unwrap();
        assert!(n.conf_dir().join("00-plexus.conf").exists());
    }

    #[test]
    fn missing_credentials_or_api_environment_are_errors() {
        let n = Node::new();
        let e = Installer::new(n.args(&[]), Env::default())
            .run(&Stop::never())
            .unwrap_err();
        assert!(e.to_string().contains("KUBERNETES_SERVICE_HOST"), "{e}");
        fs::remove_file(n.root.join("sa/token")).unwrap();
        let e = Installer::new(n.args(&[]), Node::env())
            .run(&Stop::never())
            .unwrap_err();
        assert!(e.to_string().contains("service-account token"), "{e}");
    }

    // === The Node-bound token (--host-token=node) ===

    /// The pod's own projected token: JWT-shaped, bound to its pod, as the kubelet mounts it.
    fn pod_token() -> String {
        jwt(
            json!({"sub": "system:serviceaccount:kube-system:plexus", "iat": 0, "exp": 4_000_000_000u64,
                   "kubernetes.io": {"namespace": "kube-system", "pod": {"name": "plexus-abcde"},
                                     "node": {"name": "node-1"}}}),
        )
    }

    /// A token of the Node `node` as the API server issues it, from `iat` for `secs`.
    fn node_token(node: &str, iat: u64, secs: u64) -> String {
        jwt(
            json!({"sub": "system:serviceaccount:kube-system:plexus", "iat": iat, "exp": iat + secs,
                   "kubernetes.io": {"namespace": "kube-system", "node": {"name": node, "uid": "n-uid"}}}),
        )
    }

    /// One TokenRequest the scripted issuer answered: the request and the caller's token.
    type Asked = Rc<RefCell<Vec<(Request, String)>>>;

    /// An issuer that answers from a script: `Ok(lifetime in seconds)` issues `node-token-<n>`.
    struct Script {
        answers: VecDeque<Result<u64, Refused>>,
        asked: Asked,
    }

    impl Issuer for Script {
        fn issue(
            &mut self,
            caller: Caller<'_>,
            req: &Request,
            now: SystemTime,
        ) -> Result<Issued, Refused> {
            let mut asked = self.asked.borrow_mut();
            asked.push((req.clone(), caller.token.to_string()));
            let n = asked.len();
            let answer = self
                .answers
                .pop_front()
                .unwrap_or_else(|| panic!("request {n} was not expected: {req:?}"));
            answer.map(|secs| Issued {
                token: format!("node-token-{n}"),
                issued: now,
                expires: now + Duration::from_secs(secs),
            })
        }
    }

    /// The time the tests start at.
    const T0: u64 = 1_800_000_000;

    /// A node whose installer asks for Node-bound tokens, answered by `answers`, at the time in the cell.
    fn node_mode(
        n: &Node,
        extra: &[&str],
        answers: Vec<Result<u64, Refused>>,
    ) -> (Installer, Asked, Rc<RefCell<SystemTime>>) {
        fs::write(n.root.join("sa/token"), pod_token()).unwrap();
        let mut args = vec!["--host-token=node"];
        args.extend_from_slice(extra);
        let env = Env {
            node_name: Some("node-1".into()),
            ..Node::env()
        };
        let asked: Asked = Rc::default();
        let now = Rc::new(RefCell::new(UNIX_EPOCH + Duration::from_secs(T0)));
        let clock = now.clone();
        let inst = Installer::new(n.args(&args), env).with_issuer(
            Script {
                answers: answers.into(),
                asked: asked.clone(),
            },
            move || *clock.borrow(),
        );
        (inst, asked, now)
    }

    fn at(now: &Rc<RefCell<SystemTime>>, secs: u64) {
        *now.borrow_mut() = UNIX_EPOCH + Duration::from_secs(T0 + secs);
    }

    fn host_kubeconfig_token(n: &Node) -> String {
        kubeconfig_token(&n.conf_dir().join("plexus.d/plexus.kubeconfig")).unwrap()
    }

    fn refused_403() -> Refused {
        Refused(
            "the API server refused it: 403 Forbidden: serviceaccounts \"plexus\" is forbidden: User \
             \"system:serviceaccount:kube-system:plexus\" cannot create resource \"serviceaccounts/token\""
                .into(),
        )
    }

    #[test]
    fn the_host_gets_a_token_bound_to_its_node_asked_for_with_the_pods_own() {
        let n = Node::new();
        fs::write(n.conf_dir().join("10-flannel.conflist"), FLANNEL).unwrap();
        let (mut inst, asked, _) = node_mode(&n, &[], vec![Ok(3600)]);
        inst.run(&Stop::never()).unwrap();
        let want = Request {
            namespace: "kube-system".into(),
            service_account: "plexus".into(),
            node: "node-1".into(),
            lifetime: Duration::from_secs(3600),
        };
        assert_eq!(*asked.borrow(), [(want, pod_token())]);
        assert_eq!(host_kubeconfig_token(&n), "node-token-1");
        let log = logged().join("\n");
        assert!(
            log.contains(
                "obtained a token of serviceaccount kube-system/plexus bound to Node node-1: it expires at \
                 2027-01-15T09:00:00Z, and is renewed from 2027-01-15T08:48:00Z"
            ),
            "{log}"
        );
        assert!(!log.contains("warning"), "{log}");

        // --node-name wins over PLEXUS_NODE_NAME; the lifetime is a flag.
        let n = Node::new();
        fs::write(n.conf_dir().join("10-flannel.conflist"), FLANNEL).unwrap();
        let (mut inst, asked, _) = node_mode(
            &n,
            &["--node-name=node-2", "--host-token-lifetime=2h"],
            vec![Ok(7200)],
        );
        inst.run(&Stop::never()).unwrap();
        let (req, _) = asked.borrow()[0].clone();
        assert_eq!(
            (req.node.as_str(), req.lifetime.as_secs()),
            ("node-2", 7200)
        );
        assert!(
            parse(["--host-token-lifetime=9m"]).is_err(),
            "below the API server's minimum"
        );
    }

    #[test]
    fn the_node_token_is_renewed_at_four_fifths_of_its_lifetime() {
        let n = Node::new();
        let (mut inst, asked, now) = node_mode(&n, &[], vec![Ok(3600), Ok(3000)]);
        inst.refresh_kubeconfig(true).unwrap();
        assert_eq!(host_kubeconfig_token(&n), "node-token-1");
        for t in [1, 600, 2879] {
            at(&now, t);
            inst.refresh_kubeconfig(false).unwrap();
        }
        assert_eq!(asked.borrow().len(), 1, "not due before 48 minutes");
        assert_eq!(host_kubeconfig_token(&n), "node-token-1");
        at(&now, 2880);
        inst.refresh_kubeconfig(false).unwrap();
        assert_eq!(asked.borrow().len(), 2);
        assert_eq!(host_kubeconfig_token(&n), "node-token-2");
        assert!(
            logged()
                .iter()
                .any(|l| l.ends_with("the token or CA changed")),
            "the rewrite is logged"
        );
        // The next renewal counts from the new token's own (shorter) lifetime: 2880 + 4/5 of 3000.
        at(&now, 2880 + 2399);
        inst.refresh_kubeconfig(false).unwrap();
        assert_eq!(asked.borrow().len(), 2);
    }

    #[test]
    fn a_refused_request_keeps_the_current_kubeconfig_says_why_and_is_retried_with_backoff() {
        let n = Node::new();
        let (mut inst, asked, now) = node_mode(
            &n,
            &[],
            vec![
                Ok(3600),
                Err(refused_403()),
                Err(Refused(
                    "no answer from the API server: connection refused".into(),
                )),
                Ok(3600),
            ],
        );
        inst.refresh_kubeconfig(true).unwrap();
        let k = n.conf_dir().join("plexus.d/plexus.kubeconfig");
        let before = fs::read(&k).unwrap();
        logged();
        at(&now, 2880);
        inst.refresh_kubeconfig(false).unwrap();
        assert_eq!(
            fs::read(&k).unwrap(),
            before,
            "the kubeconfig is left alone"
        );
        assert_eq!(
            logged(),
            [
                "cannot get a token of serviceaccount kube-system/plexus bound to Node node-1: the API server \
              refused it: 403 Forbidden: serviceaccounts \"plexus\" is forbidden: User \
              \"system:serviceaccount:kube-system:plexus\" cannot create resource \"serviceaccounts/token\"; \
              keeping the kubeconfig's current token (it expires at 2027-01-15T09:00:00Z); asking again in 2s"
            ]
        );
        at(&now, 2881);
        inst.refresh_kubeconfig(false).unwrap();
        assert_eq!(asked.borrow().len(), 2, "no request within the backoff");
        at(&now, 2882);
        inst.refresh_kubeconfig(false).unwrap();
        assert_eq!(asked.borrow().len(), 3);
        assert!(logged()[0].ends_with("asking again in 4s"));
        assert_eq!(fs::read(&k).unwrap(), before);
        at(&now, 2886);
        inst.refresh_kubeconfig(false).unwrap();
        assert_eq!(asked.borrow().len(), 4);
        assert_eq!(host_kubeconfig_token(&n), "node-token-4");
    }

    #[test]
    fn once_the_node_token_expires_unrenewed_the_pods_own_stands_in_with_a_warning() {
        let n = Node::new();
        let refusals = (0..40).map(|_| Err(refused_403()));
        let (mut inst, _, now) =
            node_mode(&n, &[], std::iter::once(Ok(3600)).chain(refusals).collect());
        inst.refresh_kubeconfig(true).unwrap();
        for t in (2880..3600).step_by(30) {
            at(&now, t);
            inst.refresh_kubeconfig(false).unwrap();
            assert_eq!(host_kubeconfig_token(&n), "node-token-1", "at {t}s");
        }
        logged();
        at(&now, 3600);
        inst.refresh_kubeconfig(false).unwrap();
        assert_eq!(host_kubeconfig_token(&n), pod_token());
        let log = logged();
        assert!(
            log.iter().any(|l| l.starts_with(
                "warning: no live Node-bound token (the last one expired at 2027-01-15T09:00:00Z): the \
                 kubeconfig gets this pod's own token"
            )),
            "{log:?}"
        );
    }

    #[test]
    fn at_the_first_install_a_refused_request_leaves_the_pods_own_token_until_one_is_issued() {
        let n = Node::new();
        let (mut inst, asked, now) = node_mode(&n, &[], vec![Err(refused_403()), Ok(3600)]);
        inst.refresh_kubeconfig(true).unwrap();
        assert_eq!(host_kubeconfig_token(&n), pod_token());
        let log = logged();
        assert!(
            log.iter().any(|l| l.starts_with(
                "cannot get a token of serviceaccount kube-system/plexus bound to Node node-1: the API server \
                 refused it: 403 Forbidden"
            ) && l.ends_with("asking again in 2s")),
            "{log:?}"
        );
        assert!(
            log.iter().any(|l| l.starts_with(
                "warning: no live Node-bound token: the kubeconfig gets this pod's own token"
            )),
            "{log:?}"
        );
        at(&now, 2);
        inst.refresh_kubeconfig(false).unwrap();
        assert_eq!(asked.borrow().len(), 2);
        assert_eq!(host_kubeconfig_token(&n), "node-token-2");
    }

    #[test]
    fn a_restarted_installer_keeps_the_node_token_it_finds_while_the_api_refuses() {
        let n = Node::new();
        let k = n.conf_dir().join("plexus.d/plexus.kubeconfig");
        let write = |token: &str| {
            fs::create_dir_all(k.parent().unwrap()).unwrap();
            let text =
                conf::render_kubeconfig("https://10.96.0.1:443", b"ca", token, "plexus").unwrap();
            fs::write(&k, text).unwrap();
        };
        // This node's token, 10 minutes old: kept, and asked to be renewed at once (a new pod starts).
        let left = node_token("node-1", T0 - 600, 3600);
        write(&left);
        let (mut inst, asked, _) = node_mode(&n, &[], vec![Err(refused_403())]);
        inst.refresh_kubeconfig(true).unwrap();
        assert_eq!(asked.borrow().len(), 1);
        assert_eq!(host_kubeconfig_token(&n), left);
        assert!(logged().iter().any(|l| l.contains(
            "keeping the kubeconfig's current token (it expires at 2027-01-15T08:50:00Z)"
        )));
        // Another node's token, an expired one, or a pod's: not kept.
        for other in [
            node_token("node-2", T0 - 600, 3600),
            node_token("node-1", T0 - 3600, 3600),
            pod_token(),
        ] {
            write(&other);
            let (mut inst, _, _) = node_mode(&n, &[], vec![Err(refused_403())]);
            inst.refresh_kubeconfig(true).unwrap();
            assert_eq!(host_kubeconfig_token(&n), pod_token());
        }
    }

    #[test]
    fn a_node_token_needs_the_node_name_and_a_service_account_token() {
        let n = Node::new();
        let (inst, _, _) = node_mode(&n, &[], vec![]);
        let mut inst = Installer {
            env: Node::env(),
            ..inst
        };
        let e = inst.refresh_kubeconfig(true).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "--host-token=node: this node's name is unknown: set PLEXUS_NODE_NAME from the downward API"
            ),
            "{e}"
        );
        assert!(!n.conf_dir().join("plexus.d/plexus.kubeconfig").exists());

        let (mut inst, _, _) = node_mode(&n, &[], vec![]);
        fs::write(n.root.join("sa/token"), "opaque").unwrap();
        let e = inst.refresh_kubeconfig(true).unwrap_err();
        assert!(e.to_string().contains("not a JWT"), "{e}");
        assert!(
            e.to_string().contains("--host-token=service-account"),
            "{e}"
        );
    }
}
