//! Test support shared by plexus's integration tests (`tests/`, a dev-dependency there) and the
//! end-to-end suite and bench (`e2e/`): one implementation of what both sides need.
//!
//! - [`proc`]: bounded child processes, waits, graceful stops, `/proc` scans, the recorder binary.
//! - [`netns`]: network namespaces that delete themselves, and the environment the real-plugin tests need.
//! - [`leaks`]: what a teardown may leave behind: host-local reservations, plexus's and libcni's files.
//! - [`forward`]: a TCP forwarder from inside a network namespace to an address outside it.
//! - [`result`]: reading addresses out of CNI results.

pub mod forward;
pub mod leaks;
pub mod netns;
pub mod proc;
pub mod result;
