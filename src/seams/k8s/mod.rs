//! Kubernetes: the API client behind the `crate::seams::cluster` seam, the daemon's watch caches and the
//! layer that puts them in front of it, events, the NAD type, and the in-memory API the tests share. What is
//! read from the annotations and written to network-status is decided in the pure layer
//! (`crate::pure::annotations`, `crate::pure::status`).

pub mod cached;
pub mod client;
pub mod events;
pub mod kubeconfig;
pub mod memory;
pub mod nad;
pub mod nadcache;
pub mod observe;
pub mod podview;
pub mod tls;
pub mod transport;
pub mod watch;
