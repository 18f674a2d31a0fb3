//! Kubernetes: the pod's network annotations, the network-status annotation, the API client behind the
//! `crate::cluster` seam, the daemon's watch caches around it, and the in-memory API the tests share.

pub mod annotations;
pub mod cached;
pub mod client;
pub mod events;
pub mod memory;
pub mod nad;
pub mod nadcache;
pub mod observe;
pub mod status;
pub mod tls;
pub mod transport;
pub mod watch;
