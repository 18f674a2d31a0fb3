//! The end-to-end harness: plexus as a Kubernetes node runs it, with real network namespaces, Debian's
//! CNI plugins and an API server (the stand-in, or a real one named by `E2E_KUBECONFIG`).
//!
//! - [`daemon`]: daemon mode (`E2E_MODE=daemon`): a `plexus daemon` per world and the shim in front.
//! - [`cluster`]: which API server, and the test's objects there ([`cluster::Cluster`]).
//! - [`kubeconfig`]: plexus's kubeconfig, pointing at the forwarder, with a ServiceAccount token.
//! - [`rbac`]: plexus's identity as `deploy/` defines it (ServiceAccount, ClusterRole, binding).
//! - [`runtime`]: the container runtime's side, with libcni's semantics (plexus's `Invoker`).
//! - [`world`]: one test's world, tying these together, with the checks every scenario ends with.
//! - [`chaos`]: node-side faults (misbehaving delegates, a SIGKILLed plexus, unwritable caches) and the
//!   leak checks of the fault matrix.
//!
//! Network namespaces, bounded processes, the leak listings and the API forwarder are
//! `plexus-testsupport`'s, shared with plexus's own integration tests.

pub mod chaos;
pub mod cluster;
pub mod daemon;
pub mod kubeconfig;
pub mod rbac;
pub mod runtime;
pub mod world;
