//! plexus end-to-end support: a Kubernetes API server stand-in ([`apiserver`]) that the end-to-end suite
//! and the local demo run against, a kubelet PodResources stand-in ([`podresources`]), and the suite's
//! [`harness`].

pub mod apiserver;
pub mod harness;
pub mod podresources;
