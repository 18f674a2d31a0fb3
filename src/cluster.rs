//! The Kubernetes seam: what the core asks of the cluster. The thin binary's API-server implementation
//! arrives with the Kubernetes issue; [`NoCluster`] serves runs without a kubeconfig (file-based networks).

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use plexus_cni::CniResult;
use serde_json::Value;

use crate::{
    config::Config,
    devices::DraDevices,
    plan::{Attachment, NetworkRequest},
    request::PodRef,
};

/// What a pod asks for beyond the node's configured networks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodNetworks {
    /// A replacement for the cluster network (`v1.multus-cni.io/default-network`).
    pub default_network: Option<NetworkRequest>,
    /// The selected networks (`k8s.v1.cni.cncf.io/networks`), in annotation order.
    pub networks: Vec<NetworkRequest>,
}

/// A network-status write put off until after ADD's reply (daemon mode, `statusWrite: "afterReply"`):
/// the merge patch, and the `AddedInterface` events to post once it lands. [`Cluster::publish_status`]
/// returns it to the caller, which sends it once the reply is out.
#[derive(Debug, Clone, PartialEq)]
pub struct DeferredStatus {
    /// The pod.
    pub pod: PodRef,
    /// The pod as an event's involved object (for a Warning when the write never lands).
    pub involved: Option<ObjectReference>,
    /// The merge patch of `pods/status` (made by the API adapter, `crate::k8s::client`).
    pub(crate) patch: Value,
    /// Posted after the write.
    pub added: Vec<Event>,
}

/// A cluster lookup that failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ClusterError {
    /// The API could not be reached in time (CNI code 11: try again later).
    #[error("kubernetes API unavailable: {0}")]
    Unavailable(String),
    /// The pod's request is invalid or not allowed: bad annotation, missing NAD, isolation (CNI code 7).
    #[error("{0}")]
    Rejected(String),
    /// Anything else (CNI code 999).
    #[error("{0}")]
    Other(String),
}

/// The cluster as the core sees it. Implementations must be cheap to call more than once per operation.
pub trait Cluster {
    /// The pod's own networks.
    fn pod_networks(&self, pod: &PodRef, config: &Config) -> Result<PodNetworks, ClusterError>;
    /// A network named in `clusterNetwork`/`defaultNetworks`, looked up as a NAD in `multusNamespace`;
    /// `Ok(None)` sends the lookup on to `confDir`.
    fn network_by_name(
        &self,
        config: &Config,
        name: &str,
    ) -> Result<Option<NetworkRequest>, ClusterError>;
    /// Record the outcome of a successful ADD (the network-status annotation). `Some`: the write is not
    /// sent but returned, for the caller to send after the reply (daemon mode).
    fn publish_status(
        &self,
        pod: &PodRef,
        attached: &[(Attachment, CniResult)],
    ) -> Result<Option<DeferredStatus>, ClusterError>;
    /// Device IDs per resource name of the pod's allocated DRA resource claims: devices whose attributes
    /// carry `k8s.cni.cncf.io/resourceName` and `k8s.cni.cncf.io/deviceID` (docs/devices.md), and the
    /// pod's claims that have no ResourceClaim. Asked on ADD after
    /// [`Cluster::pod_networks`], only when some network names a resource.
    fn dra_devices(&self, _pod: &PodRef) -> Result<DraDevices, ClusterError> {
        Ok(DraDevices::default())
    }
    /// Record a Warning event with `reason` and `message` on the pod [`Cluster::pod_networks`] read, to be
    /// sent with the invocation's other events; nothing when no pod was read or events are off.
    fn warn_pod(&self, _reason: &str, _message: String) {}
    /// The events this invocation has collected (and forgets them): `crate::invocation::run` takes them
    /// once the operation ended, and its edge sends them after the reply (`k8s::events`), so they never
    /// delay it.
    fn take_events(&self) -> Vec<Event> {
        Vec::new()
    }
}

/// A shared cluster (the daemon keeps one to send its events after the reply).
impl<T: Cluster + ?Sized> Cluster for std::sync::Arc<T> {
    fn pod_networks(&self, pod: &PodRef, config: &Config) -> Result<PodNetworks, ClusterError> {
        (**self).pod_networks(pod, config)
    }
    fn network_by_name(
        &self,
        config: &Config,
        name: &str,
    ) -> Result<Option<NetworkRequest>, ClusterError> {
        (**self).network_by_name(config, name)
    }
    fn publish_status(
        &self,
        pod: &PodRef,
        attached: &[(Attachment, CniResult)],
    ) -> Result<Option<DeferredStatus>, ClusterError> {
        (**self).publish_status(pod, attached)
    }
    fn dra_devices(&self, pod: &PodRef) -> Result<DraDevices, ClusterError> {
        (**self).dra_devices(pod)
    }
    fn warn_pod(&self, reason: &str, message: String) {
        (**self).warn_pod(reason, message)
    }
    fn take_events(&self) -> Vec<Event> {
        (**self).take_events()
    }
}

/// No Kubernetes: no pod networks, names resolve in `confDir` only, nothing is published.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCluster;

impl Cluster for NoCluster {
    fn pod_networks(&self, _: &PodRef, _: &Config) -> Result<PodNetworks, ClusterError> {
        Ok(PodNetworks::default())
    }

    fn network_by_name(&self, _: &Config, _: &str) -> Result<Option<NetworkRequest>, ClusterError> {
        Ok(None)
    }

    fn publish_status(
        &self,
        _: &PodRef,
        _: &[(Attachment, CniResult)],
    ) -> Result<Option<DeferredStatus>, ClusterError> {
        Ok(None)
    }
}
