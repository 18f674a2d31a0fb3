//! Kubernetes: the pod's network annotations, NAD resolution and the network-status annotation.

pub mod annotations;
pub mod client;
pub mod events;
pub mod nad;
pub mod nadcache;
pub mod observe;
pub mod status;
pub mod tls;
pub mod transport;
pub mod watch;
