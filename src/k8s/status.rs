//! The `k8s.v1.cni.cncf.io/network-status` annotation (work in progress).
