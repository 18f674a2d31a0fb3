//! plexus end-to-end support: a Kubernetes API server stand-in
//! ([`apiserver`]) that the end-to-end suite and the local demo run against.

pub mod apiserver;
