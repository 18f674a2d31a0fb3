//! The outside world behind narrow seams: delegate processes (exec, invoke), network namespaces, the host's
//! root, devices, the Kubernetes API with its watch caches, logging. Depends on the pure core and the store.

pub mod cluster;
pub mod devices;
pub mod exec;
pub mod hostroot;
pub mod invoke;
pub mod k8s;
pub mod logging;
pub mod netns;
#[cfg(test)]
pub(crate) mod testing;
