//! The operation-level error and the one place that maps every internal error to a CNI error code and
//! reply (CNI-38, CNI-39, CNI-59). Plugin-specific codes start at 100 (CNI-38 leaves 100+ free):
//!
//! | code | meaning |
//! |---|---|
//! | 100 | a delegate did not finish within `delegateTimeoutSeconds` and was killed |
//! | 101 | a delegate failed without a CNI error: crash, signal, garbage or oversized output, invalid result |
//! | 102 | the interface name is already in use in the pod's network namespace |

use std::{path::PathBuf, time::Duration};

use plexus_cni::{ErrorReply, codes, result::ResultError};

use crate::{
    pure::{
        config::{ConfigError, allowlist::NotAllowed},
        netconf::NetConfError,
        plan::PlanError,
        request::{Command, RequestError},
        routes::RouteError,
    },
    seams::{cluster::ClusterError, devices::DeviceError, exec::ExecError, invoke::DelegateError},
    store::{confdir::LookupError, lock::LockError},
};

/// A delegate timed out.
pub const DELEGATE_TIMEOUT: u32 = 100;
/// A delegate failed without a CNI error.
pub const DELEGATE_FAILED: u32 = 101;
/// The interface name is taken in the pod netns.
pub const INTERFACE_EXISTS: u32 = 102;

/// Everything an operation can fail with. Messages name the pod (or container) and the network.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `CNI_*` environment is invalid.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// Stdin could not be read.
    #[error("cannot read the config from stdin: {0}")]
    Stdin(std::io::Error),
    /// The plexus config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The command needs a newer config version (CNI-41).
    #[error(
        "config version does not allow {command}: {command} needs cniVersion {needs} or later, config has {has}"
    )]
    VersionGate {
        /// The command.
        command: Command,
        /// The minimum version.
        needs: &'static str,
        /// The config's version.
        has: String,
    },
    /// `CNI_NETNS` is plexus's own namespace (skel's check, code 8).
    #[error("[{who}]: CNI_NETNS {} is plexus's own network namespace; refusing (set CNI_NETNS_OVERRIDE=1 to allow)", netns.display())]
    OwnNetns {
        /// Pod or container.
        who: String,
        /// The path.
        netns: PathBuf,
    },
    /// A network could not be loaded from disk.
    #[error("[{who}:{network}]: {source}")]
    Lookup {
        /// Pod or container.
        who: String,
        /// The network reference.
        network: String,
        /// Why.
        source: LookupError,
    },
    /// A network config is unusable.
    #[error("[{who}:{network}]: invalid network config: {source}")]
    NetConf {
        /// Pod or container.
        who: String,
        /// The network.
        network: String,
        /// Why.
        source: NetConfError,
    },
    /// The attachments cannot be planned.
    #[error("[{who}]: {source}")]
    Plan {
        /// Pod or container.
        who: String,
        /// Why.
        source: PlanError,
    },
    /// A network's resource cannot be given a device (NPWG-13; docs/multus-compat.md, "Devices").
    #[error("[{who}]: {source}")]
    Devices {
        /// Pod or container.
        who: String,
        /// Why.
        source: DeviceError,
    },
    /// The cluster refused or could not answer.
    #[error("[{who}]: {source}")]
    Cluster {
        /// Pod or container.
        who: String,
        /// Why.
        source: ClusterError,
    },
    /// The per-container lock.
    #[error("[{who}]: {source}")]
    Lock {
        /// Pod or container.
        who: String,
        /// Why.
        source: LockError,
    },
    /// The scratch cache could not be written, read or removed.
    #[error("[{who}]: cannot {op} the cache {}: {source}", path.display())]
    Cache {
        /// Pod or container.
        who: String,
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The scratch cache is unreadable and the operation cannot proceed without it.
    #[error("[{who}]: the cache {} is corrupt: {reason}", path.display())]
    CacheCorrupt {
        /// Pod or container.
        who: String,
        /// The file.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },
    /// The pod's network namespace could not be inspected.
    #[error("[{who}:{network}]: cannot inspect network namespace {}: {source}", netns.display())]
    Netns {
        /// Pod or container.
        who: String,
        /// The network.
        network: String,
        /// The namespace.
        netns: PathBuf,
        /// Why.
        source: plexus_netns::NetnsError,
    },
    /// The interface name is taken in the pod (NPWG-26, CNI-12).
    #[error("[{who}:{network}]: interface {ifname:?} already exists in network namespace {}", netns.display())]
    InterfaceExists {
        /// Pod or container.
        who: String,
        /// The network.
        network: String,
        /// The interface.
        ifname: String,
        /// The namespace.
        netns: PathBuf,
    },
    /// A `default-route` request is invalid or could not be carried out (NPWG-34).
    #[error("[{who}]: default-route: {source}")]
    DefaultRoute {
        /// Pod or container.
        who: String,
        /// Why.
        source: RouteError,
    },
    /// ADD: a network names a plugin that cannot be found in the search path (or a type that is no plugin
    /// name, or a binary `exec::check_binary` refuses), found before any delegate ran, so nothing was attached (code 7). A NAD naming a plugin this
    /// node lacks fails the ADD of the pods that select it, never the node's STATUS.
    #[error("[{who}:{network}]: {}", plugin_missing(.network, .source))]
    PluginMissing {
        /// Pod or container.
        who: String,
        /// The network (`<namespace>/<NAD>` for a NAD).
        network: String,
        /// The lookup that failed (it names the plugin and the directories searched).
        source: ExecError,
    },
    /// ADD: a NAD names plugin types the node config's allow-list does not permit for its namespace
    /// (docs/security.md), found before anything ran, so nothing was attached (code 7).
    #[error("[{who}:{network}]: {}", plugin_not_allowed(.network, .refusal))]
    PluginNotAllowed {
        /// Pod or container.
        who: String,
        /// The NAD (`<namespace>/<NAD>`).
        network: String,
        /// The types refused and the key that refused them.
        refusal: NotAllowed,
    },
    /// A delegate operation failed.
    #[error("[{who}:{network}]: error {verb} network {network:?} (interface {ifname}): {source}")]
    Delegate {
        /// Pod or container.
        who: String,
        /// The network's status name.
        network: String,
        /// The interface.
        ifname: String,
        /// "adding container to", "deleting container from", ...
        verb: &'static str,
        /// Why.
        source: DelegateError,
    },
    /// The cluster network's result cannot be given in the config's version.
    #[error("[{who}:{network}]: cannot return the result as cniVersion {version}: {source}")]
    Result {
        /// Pod or container.
        who: String,
        /// The network.
        network: String,
        /// The requested version.
        version: String,
        /// Why.
        source: ResultError,
    },
    /// ADD failed and was rolled back; some rollback steps failed too.
    #[error("{original}; rollback left {} network(s) attached: {}", failures.len(), join(failures))]
    Rollback {
        /// The failure that started the rollback.
        original: Box<Error>,
        /// Rollback DELs that failed.
        failures: Vec<Error>,
    },
    /// Several independent failures (DEL, CHECK, GC continue past errors).
    #[error("{}", join(.0))]
    Many(Vec<Error>),
    /// The readiness indicator file did not appear.
    #[error(
        "readiness indicator file {} did not appear within {:.0}s; have you checked that your default network is ready?",
        path.display(), waited.as_secs_f64()
    )]
    NotReady {
        /// The file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
        /// For STATUS (code 50) rather than ADD/GC (code 11).
        for_status: bool,
    },
    /// STATUS could not even load a network every pod needs (code 50: plugin not available).
    #[error("not ready: {0}")]
    NotAvailable(Box<Error>),
    /// A `/delegate` call plexus will not carry out on this interface (docs/daemon.md, "`/delegate`").
    #[error("[{who}]: interface {ifname:?} of container {container_id}: {reason}")]
    NotDelegable {
        /// Pod or container.
        who: String,
        /// The container.
        container_id: String,
        /// The interface (`CNI_IFNAME`).
        ifname: String,
        /// Why.
        reason: String,
    },
    /// CHECK of a container plexus has no record of (code 3).
    #[error("[{who}]: no cached attachments for container {container_id}; was it added?")]
    UnknownContainer {
        /// Pod or container.
        who: String,
        /// The container.
        container_id: String,
    },
}

/// [`Error::PluginMissing`]'s message without the pod (also the text of the pod's Warning event).
pub fn plugin_missing(network: &str, source: &ExecError) -> String {
    format!("network {network:?} cannot be attached: {source}; nothing was attached")
}

/// [`Error::PluginNotAllowed`]'s message without the pod (also the text of the pod's Warning event).
pub fn plugin_not_allowed(network: &str, refusal: &NotAllowed) -> String {
    format!("network {network:?} cannot be attached: {refusal}; nothing was attached")
}

fn join(errors: &[Error]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(" / ")
}

fn exec_code(e: &ExecError) -> u32 {
    match e {
        ExecError::InvalidType { .. } | ExecError::NotFound { .. } => codes::INVALID_NETWORK_CONFIG,
        // Like a plugin that is not there: this node cannot run the network as configured.
        ExecError::Unsafe { .. } => codes::INVALID_NETWORK_CONFIG,
        ExecError::Spawn { .. } => codes::IO_FAILURE,
        ExecError::Timeout { .. } => DELEGATE_TIMEOUT,
        ExecError::Signal { .. } | ExecError::Failed { .. } | ExecError::OutputTooLarge { .. } => {
            DELEGATE_FAILED
        }
        ExecError::Plugin { reply, .. } => reply.code,
    }
}

fn delegate_code(e: &DelegateError) -> u32 {
    match e {
        DelegateError::Exec { source, .. } => exec_code(source),
        DelegateError::BadResult { .. } | DelegateError::Convert(_) => DELEGATE_FAILED,
        DelegateError::CheckNotSupported { .. } => codes::INCOMPATIBLE_VERSION,
        DelegateError::NoCachedResult => codes::UNKNOWN_CONTAINER,
        DelegateError::Cache(_) => codes::IO_FAILURE,
    }
}

fn route_code(e: &RouteError) -> u32 {
    use plexus_netns::Errno;
    match e {
        RouteError::Twice { .. } | RouteError::Gateway { .. } | RouteError::PerFamily { .. } => {
            codes::INVALID_NETWORK_CONFIG
        }
        // The gateway is not on any of the network's subnets: the request does not fit the network.
        RouteError::Apply { source, .. }
            if matches!(
                source.errno(),
                Some(Errno::ENETUNREACH | Errno::EHOSTUNREACH)
            ) =>
        {
            codes::INVALID_NETWORK_CONFIG
        }
        RouteError::Apply { .. } | RouteError::Drift { .. } => codes::INTERNAL,
    }
}

impl Error {
    /// The CNI error code: the single mapping from internal errors to the protocol.
    pub fn cni_code(&self) -> u32 {
        match self {
            Error::Request(_) => codes::INVALID_ENV,
            Error::Stdin(_) => codes::IO_FAILURE,
            Error::Config(ConfigError::Raw(_)) => codes::DECODE_FAILURE,
            Error::Config(ConfigError::Version { .. }) => codes::INCOMPATIBLE_VERSION,
            Error::Config(ConfigError::Delegate {
                source: NetConfError::Version { .. },
                ..
            }) => codes::INCOMPATIBLE_VERSION,
            Error::Config(_) => codes::INVALID_NETWORK_CONFIG,
            Error::VersionGate { .. } => codes::INCOMPATIBLE_VERSION,
            Error::OwnNetns { .. } => codes::INVALID_NETNS,
            Error::Lookup { .. }
            | Error::PluginMissing { .. }
            | Error::PluginNotAllowed { .. }
            | Error::NetConf { .. }
            | Error::Plan { .. }
            | Error::Devices { .. } => codes::INVALID_NETWORK_CONFIG,
            Error::Cluster { source, .. } => match source {
                ClusterError::Unavailable(_) => codes::TRY_AGAIN_LATER,
                ClusterError::Rejected(_) => codes::INVALID_NETWORK_CONFIG,
                ClusterError::Other(_) => codes::INTERNAL,
            },
            Error::Lock {
                source: LockError::Timeout { .. },
                ..
            } => codes::TRY_AGAIN_LATER,
            Error::Lock { .. } | Error::Cache { .. } | Error::CacheCorrupt { .. } => {
                codes::IO_FAILURE
            }
            Error::Netns { .. } => codes::INVALID_ENV,
            Error::InterfaceExists { .. } => INTERFACE_EXISTS,
            Error::DefaultRoute { source, .. } => route_code(source),
            Error::Delegate { source, .. } => delegate_code(source),
            Error::Result { .. } => codes::INCOMPATIBLE_VERSION,
            Error::Rollback { original, .. } => original.cni_code(),
            Error::Many(errors) => errors.first().map_or(codes::INTERNAL, Error::cni_code),
            Error::NotReady {
                for_status: true, ..
            } => codes::NOT_AVAILABLE,
            Error::NotReady { .. } => codes::TRY_AGAIN_LATER,
            Error::UnknownContainer { .. } => codes::UNKNOWN_CONTAINER,
            Error::NotDelegable { .. } => codes::INVALID_ENV,
            Error::NotAvailable(_) => codes::NOT_AVAILABLE,
        }
    }

    /// Extra detail for the reply: a delegate's own `details` and stderr, a rollback's failures.
    pub fn details(&self) -> String {
        match self {
            Error::Delegate {
                source: DelegateError::Exec { source, .. },
                ..
            } => match source {
                ExecError::Plugin { reply, stderr, .. } => {
                    let mut d = reply.details.clone();
                    if !stderr.trim().is_empty() {
                        if !d.is_empty() {
                            d.push_str("; ");
                        }
                        d.push_str(&format!("stderr: {}", stderr.trim()));
                    }
                    d
                }
                ExecError::Timeout { stderr, .. } | ExecError::Signal { stderr, .. }
                    if !stderr.trim().is_empty() =>
                {
                    format!("stderr: {}", stderr.trim())
                }
                _ => String::new(),
            },
            Error::Rollback { original, .. } => original.details(),
            Error::Many(errors) => errors
                .iter()
                .map(Error::details)
                .filter(|d| !d.is_empty())
                .collect::<Vec<_>>()
                .join(" / "),
            _ => String::new(),
        }
    }

    /// The CNI error reply, in the config's version (empty when unknown).
    pub fn to_reply(&self, cni_version: &str) -> ErrorReply {
        ErrorReply::new(self.cni_code(), self.to_string(), self.details())
            .with_cni_version(cni_version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::config::RawError;

    fn plugin_err(code: u32) -> DelegateError {
        DelegateError::Exec {
            plugin_type: "bridge".into(),
            source: ExecError::Plugin {
                plugin: "/opt/cni/bin/bridge".into(),
                reply: ErrorReply::new(code, "boom", "inner"),
                stderr: "log line".into(),
            },
        }
    }

    fn delegate(source: DelegateError) -> Error {
        Error::Delegate {
            who: "ns/p".into(),
            network: "n".into(),
            ifname: "net1".into(),
            verb: "adding container to",
            source,
        }
    }

    fn exec(source: ExecError) -> Error {
        delegate(DelegateError::Exec {
            plugin_type: "x".into(),
            source,
        })
    }

    /// Every error kind and its CNI code, in one table.
    #[test]
    fn code_table() {
        let p = PathBuf::from("/x");
        let io = || std::io::Error::other("disk");
        let table: Vec<(Error, u32)> = vec![
            (Error::Request(RequestError::Missing(vec!["CNI_NETNS"])), 4),
            (Error::Stdin(io()), 5),
            (
                Error::Config(ConfigError::Raw(RawError::Syntax("x".into()))),
                6,
            ),
            (Error::Config(ConfigError::Version { given: "9".into() }), 1),
            (
                Error::Config(ConfigError::Invalid {
                    key: "name".into(),
                    reason: "r".into(),
                }),
                7,
            ),
            (
                Error::Config(ConfigError::Delegate {
                    index: 0,
                    source: NetConfError::Version {
                        field: "cniVersion".into(),
                        value: "9".into(),
                    },
                }),
                1,
            ),
            (
                Error::Config(ConfigError::Delegate {
                    index: 0,
                    source: NetConfError::NotAnObject,
                }),
                7,
            ),
            (
                Error::VersionGate {
                    command: Command::Check,
                    needs: "0.4.0",
                    has: "0.3.1".into(),
                },
                1,
            ),
            (
                Error::OwnNetns {
                    who: "w".into(),
                    netns: p.clone(),
                },
                8,
            ),
            (
                Error::Lookup {
                    who: "w".into(),
                    network: "n".into(),
                    source: LookupError::EmptyDir(p.clone()),
                },
                7,
            ),
            (
                Error::NetConf {
                    who: "w".into(),
                    network: "n".into(),
                    source: NetConfError::NotAnObject,
                },
                7,
            ),
            (
                Error::Plan {
                    who: "w".into(),
                    source: PlanError::Empty,
                },
                7,
            ),
            (
                Error::PluginMissing {
                    who: "w".into(),
                    network: "ns/n".into(),
                    source: ExecError::NotFound {
                        plugin_type: "x".into(),
                        dirs: vec![],
                    },
                },
                7,
            ),
            (
                Error::Cluster {
                    who: "w".into(),
                    source: ClusterError::Unavailable("x".into()),
                },
                11,
            ),
            (
                Error::Cluster {
                    who: "w".into(),
                    source: ClusterError::Rejected("x".into()),
                },
                7,
            ),
            (
                Error::Cluster {
                    who: "w".into(),
                    source: ClusterError::Other("x".into()),
                },
                999,
            ),
            (
                Error::Lock {
                    who: "w".into(),
                    source: LockError::Timeout {
                        container_id: "c".into(),
                        waited: Duration::from_secs(1),
                    },
                },
                11,
            ),
            (
                Error::Lock {
                    who: "w".into(),
                    source: LockError::Io {
                        path: p.clone(),
                        source: io(),
                    },
                },
                5,
            ),
            (
                Error::Cache {
                    who: "w".into(),
                    op: "write",
                    path: p.clone(),
                    source: io(),
                },
                5,
            ),
            (
                Error::CacheCorrupt {
                    who: "w".into(),
                    path: p.clone(),
                    reason: "r".into(),
                },
                5,
            ),
            (
                Error::Netns {
                    who: "w".into(),
                    network: "n".into(),
                    netns: p.clone(),
                    source: plexus_netns::NetnsError::Thread("t".into()),
                },
                4,
            ),
            (
                Error::InterfaceExists {
                    who: "w".into(),
                    network: "n".into(),
                    ifname: "net1".into(),
                    netns: p.clone(),
                },
                102,
            ),
            (
                Error::DefaultRoute {
                    who: "w".into(),
                    source: RouteError::Twice {
                        first: "a".into(),
                        second: "b".into(),
                    },
                },
                7,
            ),
            (
                Error::DefaultRoute {
                    who: "w".into(),
                    source: RouteError::Apply {
                        network: "a".into(),
                        ifname: "net1".into(),
                        gateways: vec![],
                        source: plexus_netns::NetnsError::Kernel {
                            op: "route add",
                            path: p.clone(),
                            errno: plexus_netns::Errno::ENETUNREACH,
                        },
                    },
                },
                7,
            ),
            (
                Error::DefaultRoute {
                    who: "w".into(),
                    source: RouteError::Apply {
                        network: "a".into(),
                        ifname: "net1".into(),
                        gateways: vec![],
                        source: plexus_netns::NetnsError::Thread("t".into()),
                    },
                },
                999,
            ),
            (delegate(plugin_err(7)), 7),
            (delegate(plugin_err(11)), 11),
            (
                exec(ExecError::InvalidType {
                    plugin_type: "/bin/sh".into(),
                    reason: "r".into(),
                }),
                7,
            ),
            (
                exec(ExecError::NotFound {
                    plugin_type: "x".into(),
                    dirs: vec![],
                }),
                7,
            ),
            (
                exec(ExecError::Spawn {
                    plugin: p.clone(),
                    reason: "r".into(),
                }),
                5,
            ),
            (
                exec(ExecError::Timeout {
                    plugin: p.clone(),
                    timeout: Duration::from_secs(1),
                    stderr: String::new(),
                }),
                100,
            ),
            (
                exec(ExecError::Signal {
                    plugin: p.clone(),
                    signal: 9,
                    stderr: String::new(),
                }),
                101,
            ),
            (
                exec(ExecError::Failed {
                    plugin: p.clone(),
                    code: 1,
                    stdout: "g".into(),
                    stderr: String::new(),
                }),
                101,
            ),
            (exec(ExecError::OutputTooLarge { plugin: p.clone() }), 101),
            (
                delegate(DelegateError::BadResult {
                    plugin_type: "x".into(),
                    reason: "r".into(),
                }),
                101,
            ),
            (
                delegate(DelegateError::CheckNotSupported {
                    version: plexus_cni::CniVersion::V0_3_1,
                }),
                1,
            ),
            (delegate(DelegateError::NoCachedResult), 3),
            (delegate(DelegateError::Cache("x".into())), 5),
            (
                Error::Result {
                    who: "w".into(),
                    network: "n".into(),
                    version: "0.2.0".into(),
                    source: ResultError::NoIpAddresses,
                },
                1,
            ),
            (
                Error::Rollback {
                    original: Box::new(delegate(plugin_err(42))),
                    failures: vec![],
                },
                42,
            ),
            (
                Error::Many(vec![delegate(plugin_err(33)), Error::Stdin(io())]),
                33,
            ),
            (
                Error::NotReady {
                    path: p.clone(),
                    waited: Duration::from_secs(45),
                    for_status: true,
                },
                50,
            ),
            (
                Error::NotReady {
                    path: p.clone(),
                    waited: Duration::from_secs(45),
                    for_status: false,
                },
                11,
            ),
            (
                Error::UnknownContainer {
                    who: "w".into(),
                    container_id: "c".into(),
                },
                3,
            ),
            (
                Error::NotAvailable(Box::new(Error::Plan {
                    who: "w".into(),
                    source: PlanError::Empty,
                })),
                50,
            ),
        ];
        for (err, code) in table {
            assert_eq!(err.cni_code(), code, "{err:?}");
        }
    }

    #[test]
    fn delegate_reply_keeps_code_and_names_pod_and_network_cni_39() {
        let r = delegate(plugin_err(7)).to_reply("1.0.0");
        assert_eq!(r.code, 7);
        assert_eq!(r.cni_version, "1.0.0");
        assert!(
            r.msg.starts_with(
                "[ns/p:n]: error adding container to network \"n\" (interface net1): "
            ),
            "{}",
            r.msg
        );
        assert!(r.msg.ends_with("boom"), "{}", r.msg);
        assert_eq!(r.details, "inner; stderr: log line");
    }

    #[test]
    fn rollback_message_lists_failures() {
        let e = Error::Rollback {
            original: Box::new(delegate(plugin_err(7))),
            failures: vec![delegate(plugin_err(5)), delegate(plugin_err(6))],
        };
        let m = e.to_string();
        assert!(m.contains("rollback left 2 network(s) attached"), "{m}");
        assert_eq!(m.matches("boom").count(), 3);
    }
}
