//! `plexus daemon`: one per node. It watches this node's pods and every NAD ([`crate::seams::k8s::watch`]), serves
//! CNI requests from `plexus-shim` (or Go Multus's `multus-shim`) on a root-only unix socket ([`server`]),
//! runs each through the same core as the thin binary with a bounded number at once ([`handler`]), and
//! exports metrics and health ([`metrics`]); NADs naming a plugin the node lacks are a gauge and a log line,
//! never a STATUS failure ([`plugin_check`]). Config: [`config`].
//!
//! ```text
//!   runtime ─exec─► plexus-shim ─HTTP/unix─► server ─► queue (maxQueue) ─► maxConcurrency × handler in place
//!                                                         └► handler ─► invocation::run ─► ops (delegates, netns)
//!                                                                        └► Cached(ApiCluster) (cache, client)
//! ```

pub mod config;
pub mod delegate;
pub mod handler;
pub mod hotplug;
pub mod metrics;
pub mod plugin_check;
pub mod reconcile;
pub mod room;
pub mod server;
pub mod status_writer;

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use kube::{Client, config::KubeConfigOptions};

use k8s_openapi::api::core::v1::Event;

use self::{
    config::DaemonConfig,
    metrics::{MeteredExec, Metrics},
};
use crate::{
    pure::config::Config,
    seams::k8s::{cached::Cached, client::ApiCluster, watch::NodeCache},
};

/// What every request shares.
pub struct Shared {
    /// The daemon config.
    pub config: DaemonConfig,
    /// The runtime that drives the client and the caches.
    pub handle: tokio::runtime::Handle,
    /// The one API client.
    pub client: Client,
    /// The watch caches (`None` only in tests).
    pub cache: Option<Arc<NodeCache>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Network-status writes after the reply (`statusWrite: afterReply`) and the reconcile's.
    pub status: Arc<status_writer::StatusWriter>,
    /// The cniDirs ADDs were served from, for the reconcile after a restart.
    pub served: Arc<reconcile::ServedDirs>,
    /// Where the requests say the node's plugins are (for the missing-plugin report).
    pub search_path: Arc<plugin_check::SearchPath>,
    /// Runs the delegates (chrooted into the host's root with `chrootDir`).
    pub exec: Arc<dyn crate::seams::exec::Exec>,
    /// Opens the pods' network namespaces (through the host's root with `chrootDir`).
    pub netns: Arc<dyn crate::seams::netns::NetnsProbe>,
}

impl Shared {
    /// The API as a request or a hot-plug with node config `config` reads it: the daemon's client (its
    /// per-request timeout and budget from `config`, ADD's network-status handed back when `defer_status`),
    /// its watch caches in front, every call and lookup told to the metrics.
    pub(crate) fn cluster(&self, config: &Config, defer_status: bool) -> Cached<Arc<ApiCluster>> {
        let api = ApiCluster::shared(
            self.handle.clone(),
            self.client.clone(),
            Some(self.metrics.clone()),
            config,
        )
        .defer_status(defer_status);
        Cached::new(
            Arc::new(api),
            self.cache.clone(),
            Some(self.metrics.clone()),
        )
    }

    /// The delegates' exec seam, each run timed into the metrics.
    pub(crate) fn metered_exec(&self) -> MeteredExec<'_> {
        MeteredExec {
            inner: self.exec.as_ref(),
            metrics: &self.metrics,
        }
    }

    /// The daemon's own writer (network-status after the reply, events), each request bounded by `timeout`.
    pub(crate) fn writer(&self, timeout: Duration) -> Arc<ApiCluster> {
        Arc::new(ApiCluster::daemon_writer(
            self.handle.clone(),
            self.client.clone(),
            Some(self.metrics.clone()),
            timeout,
        ))
    }

    /// Post `events` in order on the daemon's runtime, not waiting for them (best effort).
    pub(crate) fn post_events(&self, timeout: Duration, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let sink = self.writer(timeout);
        self.handle
            .spawn(async move { sink.post_events(events).await });
    }
}

const USAGE: &str = "usage: plexus-daemon [--config PATH]
Serve CNI requests from plexus-shim on <socketDir>/plexus.sock (and Go Multus's multus.sock name), with
watch caches of this node's pods and all NetworkAttachmentDefinitions. PATH defaults to
/etc/cni/net.d/plexus.d/daemon-config.json (a missing file at the default path means every default).
Keys: socketDir, nodeName (else $PLEXUS_NODE_NAME, $MULTUS_NODE_NAME, $NODE_NAME), kubeconfig (else
in-cluster), metricsAddress (\"\" turns it off; default 127.0.0.1:9091), maxConcurrency,
maxDelConcurrency, maxQueue, cacheSyncTimeoutSeconds, shutdownTimeoutSeconds, statusWrite (afterReply,
the default, or beforeReply), statusRetrySeconds, hotplug (true: running pods' networks follow their
networks annotation), chrootDir (the host's root mounted in the daemon's
container: delegates run chrooted there), logFile, logLevel, logToStderr; every other key is laid over
each request's config. See docs/daemon.md.";

/// The entry point of `plexus-daemon` (and of its alias `plexus daemon`).
pub fn main(args: Vec<String>) -> ExitCode {
    let mut path = PathBuf::from(config::DEFAULT_CONFIG_PATH);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" | "-config" => match it.next() {
                Some(p) => path = PathBuf::from(p),
                None => return usage("--config needs a path"),
            },
            s if s.starts_with("--config=") => path = PathBuf::from(&s["--config=".len()..]),
            "-h" | "--help" => {
                eprintln!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    let config = match DaemonConfig::load(&path, &|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("plexus-daemon: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    if !nix::unistd::geteuid().is_root() {
        tracing::error!(
            "plexus-daemon must run as root (it runs delegates and enters network namespaces)"
        );
        eprintln!("plexus-daemon: must run as root");
        return ExitCode::from(2);
    }
    // One async worker: it only parses requests, keeps the watches and talks to the API server; the CNI work
    // (maxConcurrency requests at once) runs in place on the thread that read the request, while the worker's
    // other work moves to a pool thread (`block_in_place`). With a second worker the hops of one API call (the
    // calling thread, kube's buffer task, hyper's connection task) land on different threads and each
    // wake-up costs: the status PATCH's round trip measured about 0.7 ms longer on the recorded machine.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(
            (config.max_concurrency + config.max_del_concurrency.unwrap_or(0)) * 2 + 4,
        )
        .thread_name("plexus-daemon")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("plexus-daemon: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("plexus-daemon: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("plexus-daemon: {msg}\n{USAGE}");
    ExitCode::from(2)
}

fn init_logging(config: &DaemonConfig) {
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Log {
        log_level: Option<String>,
        log_file: Option<String>,
        log_to_stderr: Option<bool>,
        log_options: Option<crate::pure::config::raw::RawLogOptions>,
    }
    let raw: Log =
        serde_json::from_value(serde_json::Value::Object(config.log.clone())).unwrap_or_default();
    let mut warnings = Vec::new();
    // A daemon says what it does unless told otherwise (the thin binary's default is silence).
    let level = raw.log_level.or_else(|| Some("verbose".into()));
    let settings = crate::pure::config::LogSettings::from_raw(
        level,
        raw.log_file,
        raw.log_to_stderr,
        raw.log_options,
        &mut warnings,
    )
    .unwrap_or_else(|e| {
        eprintln!("plexus-daemon: log settings ignored: {e}");
        crate::pure::config::LogSettings {
            level: crate::pure::config::LogLevel::Verbose,
            ..Default::default()
        }
    });
    crate::seams::logging::init(&settings);
    for w in warnings {
        tracing::warn!("{w}");
    }
}

async fn client(config: &DaemonConfig) -> anyhow::Result<Client> {
    use anyhow::Context;
    let mut kc = match &config.kubeconfig {
        Some(p) => {
            let kubeconfig = crate::seams::k8s::kubeconfig::read(p)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("cannot read kubeconfig {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("invalid kubeconfig {}", p.display()))?
        }
        None => kube::Config::incluster()
            .context("in-cluster API settings (set \"kubeconfig\" outside a pod)")?,
    };
    // Requests are bounded by each config's apiTimeoutSeconds and budget; watches need no read timeout.
    kc.read_timeout = None;
    kc.default_retry = false;
    Client::try_from(kc).context("cannot build the API client")
}

async fn run(config: DaemonConfig) -> anyhow::Result<()> {
    if let Some(root) = &config.host_root
        && !root.dir().join("proc").is_dir()
    {
        anyhow::bail!(
            "chrootDir {}: the host's root is not mounted there (no proc directory in it); mount the host's / \
             there (deploy/daemon/daemonset.yaml), or remove chrootDir when the daemon runs on the host itself",
            root.dir().display()
        );
    }
    let client = client(&config).await?;
    let metrics = Metrics::new();
    // A default-network annotation without a namespace names a NAD of multusNamespace: the daemon's own
    // setting when it lays one over the requests, else the default.
    let multus_namespace = config
        .overlay
        .get("multusNamespace")
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(crate::pure::config::DEFAULT_MULTUS_NAMESPACE)
        .to_string();
    let cache = NodeCache::start(
        &client,
        &config.node_name,
        &multus_namespace,
        Some(metrics.clone()),
    );
    tracing::info!(
        node = %config.node_name,
        socket = %config.socket_path().display(),
        max_concurrency = config.max_concurrency,
        max_del_concurrency = ?config.max_del_concurrency,
        max_queue = config.max_queue,
        host_root = ?config.host_root.as_ref().map(|r| r.dir().display().to_string()),
        "plexus daemon starting"
    );
    let status = status_writer::StatusWriter::new(config.status_retry, Some(metrics.clone()));
    let served = Arc::new(reconcile::ServedDirs::load(reconcile::served_file(
        &config.socket_dir,
    )));
    let search_path = Arc::new(plugin_check::SearchPath::default());
    let (exec, netns) = crate::seams::hostroot::seams(config.host_root.as_ref());
    if let Err(e) = plugin_check::spawn(
        cache.clone(),
        search_path.clone(),
        plugin_check::Gauges {
            missing: metrics.nads_missing_plugins.clone(),
            refused: metrics.nads_refused_plugins.clone(),
        },
        exec.clone(),
    ) {
        tracing::warn!("cannot start the missing-plugin report's thread: {e}");
    }
    let shared = Arc::new(Shared {
        config,
        handle: tokio::runtime::Handle::current(),
        client,
        cache: Some(cache),
        status,
        metrics,
        served: served.clone(),
        search_path,
        exec,
        netns,
    });
    // A status write lost with an earlier daemon (killed between a reply and its write) is written now.
    tokio::spawn(reconcile::run(shared.clone(), served));
    // Running pods' networks follow their annotation (`hotplug: true`; off, changes are only logged).
    tokio::spawn(hotplug::run(shared.clone()));
    server::serve(shared).await
}
