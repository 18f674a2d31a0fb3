//! The Kubernetes seam: the few things plexus asks of the API (read the pod, read NADs, write the pod's
//! network-status, read DRA allocations), as a narrow trait. Which networks a pod gets is decided outside it,
//! by the pure policy (`crate::pure::selection`) the core (`crate::ops`) drives over these reads. The HTTP adapter
//! is `crate::seams::k8s::client`, the daemon's watch cache a layer around it (`crate::seams::k8s::cached`), and
//! `crate::seams::k8s::memory` the one in-memory double the tests share.

use k8s_openapi::api::core::v1::{Event, ObjectReference, Pod};
use serde_json::Value;

// The data the seam's calls carry live in the pure layer, where the selection policy uses them too.
pub use crate::pure::cluster::{ClusterError, Nad, NadKey, PodNetworks};
use crate::{pure::request::PodRef, seams::devices::DraDevices};

/// A network-status write: the merge patch of `pods/status` and the `AddedInterface` events to post once
/// it lands. The core builds it; [`Cluster::write_status`] sends it, or (daemon mode,
/// `statusWrite: "afterReply"`) hands it back for the caller to send after the reply.
#[derive(Debug, Clone, PartialEq)]
pub struct DeferredStatus {
    /// The pod.
    pub pod: PodRef,
    /// The pod as an event's involved object (for a Warning when the write never lands).
    pub involved: Option<ObjectReference>,
    /// The merge patch of `pods/status` (`crate::pure::status::patch`).
    pub(crate) patch: Value,
    /// Posted after the write.
    pub added: Vec<Event>,
}

/// What one [`Cluster::read`] found: the pod (when asked for) and each NAD asked for, in order
/// (`Ok(None)`: no such NAD).
#[derive(Debug, Clone, Default)]
pub struct Reads {
    /// The pod, when one was asked for.
    pub pod: Option<Result<Pod, ClusterError>>,
    /// One answer per NAD asked for, in the order asked.
    pub nads: Vec<Result<Option<Nad>, ClusterError>>,
}

/// Why [`Cluster::read_nads_in_order`] stopped: the first NAD in order that is missing, or whose read
/// failed (the error names it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NadsError {
    /// No such NAD.
    Missing(NadKey),
    /// The read failed.
    Failed(ClusterError),
}

/// How a [`Cluster::write_status`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The write landed.
    Sent,
    /// The pod is gone (404): nothing to record.
    PodGone,
    /// Not sent: the caller sends it after the reply (daemon mode, `statusWrite: "afterReply"`).
    Deferred,
}

/// What plexus asks of the Kubernetes API. Calls block (an implementation drives its own runtime);
/// failures come back as [`ClusterError`]s naming what was read.
pub trait Cluster {
    /// Read the pod (when `pod` is given) and the NADs `nads`, all at once.
    fn read(&self, pod: Option<&PodRef>, nads: &[NadKey]) -> Reads;
    /// Read the NADs `keys` in order, a few at a time (`crate::seams::k8s::client::NAD_READS_IN_FLIGHT`), stopping
    /// at the first that is missing or fails: the reads after it are not started (or are dropped).
    fn read_nads_in_order(&self, keys: &[NadKey]) -> Result<Vec<Nad>, NadsError>;
    /// Send a network-status write (retrying a conflict within the budget), or hand it back.
    fn write_status(&self, job: &DeferredStatus) -> Result<Written, ClusterError>;
    /// Device IDs per resource name of `pod`'s allocated DRA resource claims: devices whose attributes
    /// carry `k8s.cni.cncf.io/resourceName` and `k8s.cni.cncf.io/deviceID` (docs/devices.md), and the
    /// pod's claims that have no ResourceClaim.
    fn dra_devices(&self, pod_ref: &PodRef, pod: &Pod) -> Result<DraDevices, ClusterError>;
}

/// A shared cluster (the daemon keeps its HTTP client to send the status write and events after the reply).
impl<T: Cluster + ?Sized> Cluster for std::sync::Arc<T> {
    fn read(&self, pod: Option<&PodRef>, nads: &[NadKey]) -> Reads {
        (**self).read(pod, nads)
    }
    fn read_nads_in_order(&self, keys: &[NadKey]) -> Result<Vec<Nad>, NadsError> {
        (**self).read_nads_in_order(keys)
    }
    fn write_status(&self, job: &DeferredStatus) -> Result<Written, ClusterError> {
        (**self).write_status(job)
    }
    fn dra_devices(&self, pod_ref: &PodRef, pod: &Pod) -> Result<DraDevices, ClusterError> {
        (**self).dra_devices(pod_ref, pod)
    }
}
