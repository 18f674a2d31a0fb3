//! plexus: a CNI meta-plugin that gives Kubernetes pods several networks, a drop-in for Go Multus.
//!
//! The container runtime runs the `plexus` binary ([`edges::cli`]) as its CNI plugin, or the `plexus-shim`
//! that forwards to the daemon ([`edges::daemon`]). Either way one invocation ([`ops::invocation`]) runs
//! one operation ([`ops`]): it resolves the networks a pod gets ([`pure::selection`] over the
//! [`seams::cluster`] reads), plans interfaces ([`pure::plan`]), runs the delegate plugins one after another
//! with libcni's semantics ([`seams::invoke`]), and keeps a crash-safe per-container cache in the Go Multus
//! format ([`store::cache`]) so DEL works from the cache alone.
//!
//! The folders are the layers, lowest first; a module uses its own layer and those below it, never one
//! above (`tests/architecture.rs` checks it):
//! - [`pure`]: the request, the config, annotations, selection, planning, routes, status rendering. No I/O.
//! - [`store`]: what lives on disk: caches, result records, locks, atomic writes, `confDir`.
//! - [`seams`]: the outside world behind narrow traits: delegate processes, network namespaces, devices,
//!   the Kubernetes API and its watch caches, logging.
//! - [`ops`]: the verbs (ADD, DEL, CHECK, GC, STATUS) over those seams, their typed outcome, and the one
//!   table that maps every error to its CNI code ([`ops::error`]).
//! - [`edges`]: what drives them: the thin binary's entry, the daemon and its socket, the installer.

pub mod pure;

pub mod store;

pub mod seams;

pub mod ops;

pub mod edges;
