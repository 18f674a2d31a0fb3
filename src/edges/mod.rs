//! The edges that drive the core: the thin CNI binary's entry (`cli`), the daemon and its socket, the node
//! installer.

pub mod cli;
pub mod daemon;
pub mod install;
pub mod panicked;
