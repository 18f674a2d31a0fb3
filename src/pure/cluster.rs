//! What the core knows of the cluster's objects, as data: a NAD as the selection policy reads it, the
//! networks a pod gets, and how a lookup failed. No I/O: the reads are the seam's (`crate::seams::cluster`).

use crate::pure::plan::NetworkRequest;

/// What a pod asks for beyond the node's configured networks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodNetworks {
    /// A replacement for the cluster network (`v1.multus-cni.io/default-network`).
    pub default_network: Option<NetworkRequest>,
    /// The selected networks (`k8s.v1.cni.cncf.io/networks`), in annotation order.
    pub networks: Vec<NetworkRequest>,
}

/// A NetworkAttachmentDefinition's namespace and name.
pub type NadKey = (String, String);

/// What plexus keeps of a NAD: its `spec.config` (absent or empty: a network in `confDir` of the NAD's
/// name) and its `resourceName` annotation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nad {
    /// `spec.config`, as written.
    pub config: Option<String>,
    /// The `k8s.v1.cni.cncf.io/resourceName` annotation.
    pub resource_name: Option<String>,
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
