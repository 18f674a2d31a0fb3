//! The netns seam: what plexus asks of a pod's network namespace (interface-name collisions, NPWG-26, CNI-12).

use std::path::Path;

use plexus_netns::NetnsError;

/// Questions about a pod's network namespace; the real answers come over netlink on a dedicated thread.
pub trait NetnsProbe: Send + Sync {
    /// Whether a link named `ifname` already exists in the namespace at `netns`.
    fn link_exists(&self, netns: &Path, ifname: &str) -> Result<bool, NetnsError>;
}

/// Asks the kernel (netlink RTM_GETLINK inside the namespace, on a fresh thread).
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelNetns;

impl NetnsProbe for KernelNetns {
    fn link_exists(&self, netns: &Path, ifname: &str) -> Result<bool, NetnsError> {
        plexus_netns::link_exists(netns, ifname)
    }
}
