//! plexus end-to-end support: a Kubernetes API stand-in (work in progress).
