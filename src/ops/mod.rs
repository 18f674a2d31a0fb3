//! The CNI operations over the seams: ADD as a transaction, DEL from the cache, CHECK, STATUS, GC, VERSION.
//! Each verb has its module; what two verbs share has its own (`transaction`: ADD's undo list and writes;
//! `teardown`: DEL of a list of attachments; `attached`: what a container has attached), and no verb
//! module reaches into another's.
//!
//! ```text
//!   cli ──► ops::execute ──► resolve (confdir, Cluster) ──► plan (pure) ──► cache + lock
//!                                   │
//!                                   └──► invoke (libcni semantics) ──► Exec (processes)
//!                                              NetnsProbe (netlink, dedicated thread)
//! ```

mod add;
mod attached;
mod auxiliary;
mod check;
mod default_route;
mod deferred;
mod del;
mod done;
pub mod error;
mod gc;
pub mod hotplug;
pub mod invocation;
mod kube;
mod status;
mod teardown;
mod transaction;

use std::{
    path::Path,
    thread,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Event;
use plexus_cni::CniVersion;

use crate::{
    ops::error::Error,
    pure::{
        config::{Config, NetworkRef, Primary},
        plan::{self, Attachment, NetworkRequest},
        request::{CniEnv, Command, PodRef},
    },
    seams::{
        cluster::{Cluster, ClusterError, PodNetworks},
        devices::kubelet::PodResources,
        exec::Exec,
        invoke::{Invoker, RuntimeConf},
        netns::NetnsProbe,
    },
    store::confdir,
};

/// The outside world an operation runs against.
pub struct Seams<'a> {
    /// Process execution.
    pub exec: &'a dyn Exec,
    /// Netns inspection.
    pub netns: &'a dyn NetnsProbe,
    /// The Kubernetes API (none: no Kubernetes, file-based networks only).
    pub cluster: Option<&'a dyn Cluster>,
    /// The kubelet's device allocations (asked only for networks whose NAD names a resource).
    pub kubelet: &'a dyn PodResources,
    /// Daemon mode: work is left for after the reply, in [`Done::after_reply`]. A successful ADD leaves
    /// its durable writes (the cache's fsync and rename, the result records; deferred until then) and the
    /// container's lock; a CHECK of the container waits for the lock, so it reads the records in place, and
    /// a DEL takes the writes over if they have not started. A DEL leaves the unlinks of the container's
    /// files, which it moved into `<cniDir>/.trash` ([`crate::store::trash`]). `false` (the thin binary, which
    /// exits anyway): done before the reply.
    pub defer_work: bool,
}

pub use done::{AfterReply, Done, Reply, Versioned};

/// One operation's context.
pub(crate) struct Ctx<'a> {
    pub env: &'a CniEnv,
    pub config: &'a Config,
    pub seams: &'a Seams<'a>,
    /// The pod in the API, as this operation reads it, and the events it collects.
    pub kube: kube::Kube<'a>,
}

/// How an operation ended, and the events it collected on the way (a failed ADD's Warning events too), for
/// the edge to post after the reply.
#[derive(Debug)]
pub struct Outcome {
    /// The typed reply, or the failure.
    pub result: Result<Done, Error>,
    /// Events about the pod, in the order they happened.
    pub events: Vec<Event>,
}

/// VERSION: echo the config's version and list ours (CNI-21); stdin need not be a valid config.
pub use plexus_cni::version::version_reply;

/// Run a command (other than VERSION) with a validated config, for a caller that posts no events (they
/// are dropped: see [`run`]). Returns the typed reply for the edge to render.
pub fn execute(env: &CniEnv, config: &Config, seams: &Seams<'_>) -> Result<Done, Error> {
    run(env, config, seams).result
}

/// The networks the pod `pod` selects, as ADD resolves them over `cluster` (a Warning event a rejection
/// leaves is dropped).
pub fn pod_networks(
    cluster: &dyn Cluster,
    pod: &PodRef,
    config: &Config,
) -> Result<PodNetworks, ClusterError> {
    kube::Kube::new(Some(cluster), config, false).pod_networks(pod)
}

/// Run a command (other than VERSION) with a validated config: the typed reply for the edge to render,
/// and the events to post after it.
pub fn run(env: &CniEnv, config: &Config, seams: &Seams<'_>) -> Outcome {
    let ctx = Ctx {
        env,
        config,
        seams,
        kube: kube::Kube::new(seams.cluster, config, env.command == Command::Add),
    };
    let gate = |needs: CniVersion| {
        if config.cni_version < needs {
            Err(Error::VersionGate {
                command: env.command,
                needs: needs.as_str(),
                has: config.cni_version.to_string(),
            })
        } else {
            Ok(())
        }
    };
    let started = Instant::now();
    tracing::info!(command = %env.command, container = env.container_id.as_deref().unwrap_or(""), who = %env.who(), "start");
    let out = match env.command {
        Command::Version => Ok(Done::empty()),
        Command::Add => add::add(&ctx),
        Command::Del => del::del(&ctx).map(|after_reply| Done {
            after_reply,
            ..Done::empty()
        }),
        Command::Check => gate(CniVersion::V0_4_0)
            .and_then(|()| check::check(&ctx))
            .map(|()| Done::empty()),
        Command::Status => gate(CniVersion::V1_1_0)
            .and_then(|()| status::status(&ctx))
            .map(|()| Done::empty()),
        Command::Gc => gate(CniVersion::V1_1_0)
            .and_then(|()| gc::gc(&ctx))
            .map(|()| Done::empty()),
    };
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match &out {
        Ok(_) => tracing::info!(command = %env.command, elapsed_ms, "done"),
        Err(e) => {
            tracing::error!(command = %env.command, elapsed_ms, code = e.cni_code(), "failed: {e}")
        }
    }
    Outcome {
        result: out,
        events: ctx.kube.take_events(),
    }
}

impl Ctx<'_> {
    pub fn who(&self) -> String {
        self.env.who()
    }

    pub fn invoker(&self) -> Invoker<'_> {
        Invoker {
            exec: self.seams.exec,
            search_path: self.config.search_path(&self.env.path),
            base_env: self
                .env
                .passthrough
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            timeout: self.config.delegate_timeout,
            cache_dir: self.config.cni_dir.clone(),
            cache_writes: crate::seams::invoke::CacheWrites::Durable,
        }
    }

    /// The runtime parameters of one attachment of container `cid`. `netns` is `CNI_NETNS` (absent on
    /// some DELs and on GC). `new` is true for an attachment being added: only then does
    /// `strictCapabilities` refuse an undeclared request. Teardown and CHECK replay cached requests (Go Multus
    /// never checked them), so there an undeclared one is dropped with a warning, as libcni does.
    pub fn runtime_conf(
        &self,
        a: &Attachment,
        cid: &str,
        netns: Option<&Path>,
        new: bool,
    ) -> Result<RuntimeConf, Error> {
        let (capability_args, warnings) = plan::capability_args(
            a,
            &self.config.runtime_config,
            plan::Undeclared::for_attachment(new, self.config.strict_capabilities),
        )
        .map_err(|source| Error::Plan {
            who: self.who(),
            source,
        })?;
        for w in warnings {
            tracing::warn!("[{}]: {w}", self.who());
        }
        Ok(RuntimeConf {
            container_id: cid.to_string(),
            netns: netns.map(Path::to_path_buf),
            ifname: a.ifname.clone(),
            args: plan::delegate_args(&self.env.args, &a.requests),
            capability_args,
        })
    }

    /// Load a network named in `clusterNetwork`/`defaultNetworks` (docs/multus-compat.md,
    /// "Cluster and default networks"): a path is a file or directory; a name is a NAD in
    /// `multusNamespace`, then a network in `confDir`.
    pub fn resolve_ref(&self, r: &NetworkRef) -> Result<NetworkRequest, Error> {
        let lookup = |source| Error::Lookup {
            who: self.who(),
            network: r.to_string(),
            source,
        };
        let netconf = |source| Error::NetConf {
            who: self.who(),
            network: r.to_string(),
            source,
        };
        let network = match r {
            NetworkRef::Path(p) => confdir::load_path(p).map_err(lookup)?,
            NetworkRef::Name(name) => {
                // Only a Kubernetes runtime's request may reach the API (without K8S_POD_* keys, no
                // API access at all: docs/multus-compat.md, "Non-Kubernetes runtimes"). STATUS and
                // GC never carry pod keys but must still find a cluster network that is a NAD.
                let may_use_api = self.env.pod().is_some()
                    || matches!(self.env.command, Command::Status | Command::Gc);
                let nad = if may_use_api {
                    self.kube
                        .network_by_name(name)
                        .map_err(|source| Error::Cluster {
                            who: self.who(),
                            source,
                        })?
                } else {
                    None
                };
                match nad {
                    Some(req) => return Ok(req),
                    None => confdir::find_by_name(&self.config.conf_dir, name).map_err(lookup)?,
                }
            }
        };
        let network = network
            .with_version_if_missing(self.config.cni_version)
            .map_err(netconf)?;
        Ok(NetworkRequest::plain(network))
    }

    /// The node's own networks: the cluster network first, then static delegates or `defaultNetworks`
    /// (skipped for pods in `systemNamespaces`). `pod_default` replaces the cluster network.
    pub fn node_networks(
        &self,
        pod_default: Option<NetworkRequest>,
    ) -> Result<Vec<NetworkRequest>, Error> {
        let mut out = Vec::new();
        match &self.config.primary {
            Primary::Delegates(list) => out.extend(list.iter().cloned().map(NetworkRequest::plain)),
            Primary::ClusterNetwork(r) => {
                if pod_default.is_none() {
                    out.push(self.resolve_ref(r)?);
                }
                let system = self
                    .env
                    .pod()
                    .is_some_and(|p| self.config.system_namespaces.contains(&p.namespace));
                if !system {
                    for r in &self.config.default_networks {
                        out.push(self.resolve_ref(r)?);
                    }
                }
            }
        }
        if let Some(d) = pod_default {
            if matches!(self.config.primary, Primary::Delegates(_)) && !out.is_empty() {
                out[0] = d;
            } else {
                out.insert(0, d);
            }
        }
        Ok(out)
    }

    /// Wait for the readiness indicator file (NPWG-60): ADD, STATUS and GC poll up to the configured time.
    pub fn wait_ready(&self, for_status: bool) -> Result<(), Error> {
        let Some(path) = &self.config.readiness_indicator else {
            return Ok(());
        };
        let started = Instant::now();
        loop {
            if path.exists() {
                return Ok(());
            }
            let waited = started.elapsed();
            if waited >= self.config.readiness_timeout {
                return Err(Error::NotReady {
                    path: path.clone(),
                    waited,
                    for_status,
                });
            }
            if waited.is_zero() {
                tracing::info!(path = %path.display(), "waiting for the readiness indicator file");
            }
            thread::sleep(Duration::from_millis(250).min(self.config.readiness_timeout - waited));
        }
    }
}

#[cfg(test)]
mod device_tests;
#[cfg(test)]
mod hotplug_tests;
#[cfg(test)]
pub(crate) mod tests;
