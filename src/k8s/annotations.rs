//! The `k8s.v1.cni.cncf.io/networks` and `v1.multus-cni.io/default-network` annotations (work in progress).
