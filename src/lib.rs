//! plexus: a CNI meta-plugin that gives Kubernetes pods several networks, a drop-in for Go Multus.
//!
//! The container runtime runs the `plexus` binary ([`cli`]) as its CNI plugin. plexus resolves the networks
//! a pod gets ([`confdir`], the [`cluster`] seam), plans interfaces ([`plan`], pure), and runs the delegate
//! plugins one after another with libcni's semantics ([`invoke`] over the [`exec`] seam), keeping a
//! crash-safe per-container [`cache`] in the Go Multus format so DEL works from the cache alone.
//!
//! Layers, outside in: [`cli`] (or a [`daemon`] request) → [`invocation`] → [`ops`] → ([`plan`], [`config`],
//! [`netconf`]: pure) → seams ([`exec::Exec`], [`netns::NetnsProbe`], [`cluster::Cluster`]). Errors map to
//! CNI codes in [`error`].

pub mod cache;
pub mod cli;
pub mod cluster;
pub mod confdir;
pub mod config;
pub mod daemon;
pub mod devices;
pub mod error;
pub mod exec;
pub mod fsutil;
pub mod hostroot;
pub mod install;
pub mod invocation;
pub mod invoke;
pub mod k8s;
pub mod lock;
pub mod logging;
pub mod names;
pub mod netconf;
pub mod netns;
pub mod ops;
pub mod panicked;
pub mod plan;
pub mod request;
pub mod resultcache;
pub mod routes;
#[cfg(test)]
pub(crate) mod testing;
pub mod trash;
