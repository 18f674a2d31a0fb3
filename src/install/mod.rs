//! `plexus install`: the DaemonSet's entrypoint, which sets a node up for plexus and keeps it set up
//! (with its known field problems fixed: docs/multus-compat.md, "Installation").
//!
//! ```text
//! copy binary ─▶ kubeconfig ─▶ wait for primary (+ readiness file) ─▶ write config ─▶ watch ─▶ signal
//!  (once)         (token, CA)    (bounded, logged)                    (on change)     (poll)   keep | remove
//! ```
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

use std::{
    fs, io,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use clap::Parser;
use nix::sys::signal::{SigSet, Signal};

pub use args::Args;
use conf::{ConfOptions, PrimaryInfo, Rendered, Selection};
use files::Change;

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
}

impl Env {
    /// From this process's environment.
    pub fn from_process() -> Env {
        Env {
            service_host: std::env::var("KUBERNETES_SERVICE_HOST").ok(),
            service_port: std::env::var("KUBERNETES_SERVICE_PORT").ok(),
            service_protocol: std::env::var("KUBERNETES_SERVICE_PROTOCOL").ok(),
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
        }
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
        crate::fsutil::ensure_dir(dir, 0o755).map_err(io_err("create directory", dir))?;
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

    fn refresh_kubeconfig(&self, initial: bool) -> Result<(), Error> {
        let Some(path) = &self.kubeconfig else {
            if initial && self.args.daemon {
                log("writing no kubeconfig (--daemon): plexus daemon uses its own service account");
            } else if initial {
                log("writing no kubeconfig (--no-kubeconfig): plexus runs without Kubernetes");
            }
            return Ok(());
        };
        let sa = &self.args.service_account_dir;
        let (token_path, ca_path) = (sa.join("token"), sa.join("ca.crt"));
        let token = fs::read_to_string(&token_path)
            .map_err(io_err("read the service-account token", &token_path))?;
        let ca = fs::read(&ca_path).map_err(io_err("read the service-account CA", &ca_path))?;
        let server = conf::api_server_url(
            self.env.service_host.as_deref(),
            self.env.service_port.as_deref(),
            self.env.service_protocol.as_deref(),
        )?;
        let text = conf::render_kubeconfig(&server, &ca, &token, &self.args.binary_name)?;
        if let Some(dir) = path.parent() {
            crate::fsutil::ensure_dir(dir, 0o700).map_err(io_err("create directory", dir))?;
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
    use super::*;

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
            ];
            v.extend(extra.iter().map(|s| s.to_string()));
            parse(v).unwrap()
        }

        fn env() -> Env {
            Env {
                service_host: Some("10.96.0.1".into()),
                service_port: Some("443".into()),
                service_protocol: None,
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
}
