//! The kubelet seam: which devices the kubelet allocated to a pod. [`Kubelet`] asks the PodResources
//! socket and falls back to the device-manager checkpoint file when the socket is missing or does not
//! answer (docs/multus-compat.md, "Devices"); tests use fakes.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use super::{ResourceMap, checkpoint, podresources};
use crate::pure::{config::Config, request::PodRef};

/// Why the kubelet's view of a pod's devices is unavailable.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// Neither source exists.
    #[error(
        "the kubelet PodResources socket {} does not exist and neither does the device-plugin checkpoint {} (config keys podResourcesSocket, kubeletCheckpointFile)",
        socket.display(), checkpoint.display()
    )]
    Unavailable {
        /// The socket.
        socket: PathBuf,
        /// The checkpoint.
        checkpoint: PathBuf,
    },
    /// The socket failed and there is no checkpoint.
    #[error(transparent)]
    PodResources(#[from] podresources::PodResourcesError),
    /// The checkpoint cannot be read or parsed.
    #[error("device-plugin checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The checkpoint is keyed by pod UID, and the runtime gave none.
    #[error("the runtime's CNI_ARGS carry no K8S_POD_UID, which the device-plugin checkpoint {} is keyed by", path.display())]
    NoUid {
        /// The file.
        path: PathBuf,
    },
}

/// The kubelet as the core sees it.
pub trait PodResources {
    /// The device IDs per resource the kubelet allocated to `pod`'s containers (any order).
    fn devices(&self, pod: &PodRef) -> Result<ResourceMap, KubeletError>;
}

/// The node's kubelet: the PodResources socket, else the checkpoint file.
#[derive(Debug, Clone)]
pub struct Kubelet {
    /// `podResourcesSocket`.
    pub socket: PathBuf,
    /// `kubeletCheckpointFile`.
    pub checkpoint: PathBuf,
    /// Time limit of the gRPC exchange (`apiTimeoutSeconds`).
    pub timeout: Duration,
}

impl Kubelet {
    /// The kubelet of `config`'s node.
    pub fn from_config(config: &Config) -> Kubelet {
        Kubelet {
            socket: config.pod_resources_socket.clone(),
            checkpoint: config.kubelet_checkpoint.clone(),
            timeout: config.api_timeout,
        }
    }

    fn read_checkpoint(&self, pod: &PodRef) -> Result<ResourceMap, KubeletError> {
        let path = &self.checkpoint;
        let uid = pod
            .uid
            .as_deref()
            .ok_or_else(|| KubeletError::NoUid { path: path.clone() })?;
        let bytes = std::fs::read(path).map_err(|e| KubeletError::Checkpoint {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        checkpoint::pod_devices(&bytes, uid).map_err(|e| KubeletError::Checkpoint {
            path: path.clone(),
            reason: format!("not a kubelet checkpoint: {e}"),
        })
    }

    fn ask_socket(&self, pod: &PodRef) -> Result<ResourceMap, KubeletError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| podresources::PodResourcesError::Transport {
                socket: self.socket.display().to_string(),
                reason: format!("cannot start the async runtime: {e}"),
            })?;
        Ok(rt.block_on(podresources::pod_devices(
            &self.socket,
            &pod.namespace,
            &pod.name,
            self.timeout,
        ))?)
    }
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

impl PodResources for Kubelet {
    fn devices(&self, pod: &PodRef) -> Result<ResourceMap, KubeletError> {
        if exists(&self.socket) {
            match self.ask_socket(pod) {
                Ok(map) => return Ok(map),
                Err(e) if exists(&self.checkpoint) => {
                    tracing::warn!("[{pod}]: {e}; reading the device-plugin checkpoint instead");
                }
                Err(e) => return Err(e),
            }
        } else if !exists(&self.checkpoint) {
            return Err(KubeletError::Unavailable {
                socket: self.socket.clone(),
                checkpoint: self.checkpoint.clone(),
            });
        }
        self.read_checkpoint(pod)
    }
}

/// No kubelet (tests, and runs where no network names a resource).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoKubelet;

impl PodResources for NoKubelet {
    fn devices(&self, _: &PodRef) -> Result<ResourceMap, KubeletError> {
        Ok(ResourceMap::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: Option<&str>) -> PodRef {
        PodRef {
            namespace: "ns".into(),
            name: "p".into(),
            uid: uid.map(str::to_string),
            infra_container_id: None,
        }
    }

    fn kubelet(dir: &Path) -> Kubelet {
        Kubelet {
            socket: dir.join("kubelet.sock"),
            checkpoint: dir.join("kubelet_internal_checkpoint"),
            timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn neither_source_names_both_paths() {
        let d = tempfile::tempdir().unwrap();
        let e = kubelet(d.path()).devices(&pod(Some("u"))).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("kubelet.sock") && msg.contains("kubelet_internal_checkpoint"),
            "{msg}"
        );
    }

    #[test]
    fn checkpoint_when_the_socket_is_missing_or_dead() {
        let d = tempfile::tempdir().unwrap();
        let k = kubelet(d.path());
        let cp = json!({"Data": {"PodDeviceEntries": [
            {"PodUID": "u", "ResourceName": "r", "DeviceIDs": {"0": ["d2", "d1"]}}]}, "Checksum": 1});
        std::fs::write(&k.checkpoint, cp.to_string()).unwrap();
        assert_eq!(k.devices(&pod(Some("u"))).unwrap()["r"], ["d1", "d2"]);
        assert!(matches!(
            k.devices(&pod(None)).unwrap_err(),
            KubeletError::NoUid { .. }
        ));
        // A socket file nobody listens on: the checkpoint still answers.
        let _listener = std::os::unix::net::UnixListener::bind(&k.socket).unwrap();
        drop(_listener);
        assert_eq!(k.devices(&pod(Some("u"))).unwrap()["r"], ["d1", "d2"]);
        std::fs::write(&k.checkpoint, "garbage").unwrap();
        let e = k.devices(&pod(Some("u"))).unwrap_err();
        assert!(e.to_string().contains("not a kubelet checkpoint"), "{e}");
    }
}
