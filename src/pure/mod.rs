//! The pure core: the CNI request, the config, delegate network configs, annotations, selection policy,
//! planning, default routes and status rendering. No I/O: nothing here reads a file, runs a process or asks the API.

pub mod annotations;
pub mod cluster;
pub mod config;
pub mod hotplug;
pub mod names;
pub mod netconf;
pub mod plan;
pub mod request;
pub mod routes;
pub mod selection;
pub mod status;
