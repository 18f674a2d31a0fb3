//! plexus: a CNI meta-plugin that gives Kubernetes pods several networks.
