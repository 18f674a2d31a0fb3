//! The kubelet PodResources API v1 over its unix socket (`/var/lib/kubelet/pod-resources/kubelet.sock`):
//! `Get` for the one pod, `List` (every pod of the node) when the kubelet does not implement `Get`
//! (before Kubernetes 1.27). gRPC through tonic's client core with HTTP/2 from hyper; the messages are
//! prost structs written from the upstream `pkg/kubelet/apis/podresources/v1/api.proto` (package `v1`,
//! service `PodResourcesLister`), only the fields plexus reads (protobuf skips the others).

use std::{
    path::Path,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::uri::PathAndQuery;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::{Code, body::Body, client::Grpc};

use super::ResourceMap;

/// The messages of `v1.PodResourcesLister` that plexus uses (tags as in the upstream `api.proto`). The
/// e2e kubelet stand-in serves the same structs.
pub mod proto {
    /// `ListPodResourcesRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListPodResourcesRequest {}

    /// `ListPodResourcesResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListPodResourcesResponse {
        /// Every pod of the node.
        #[prost(message, repeated, tag = "1")]
        pub pod_resources: Vec<PodResources>,
    }

    /// `GetPodResourcesRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetPodResourcesRequest {
        /// The pod's name.
        #[prost(string, tag = "1")]
        pub pod_name: String,
        /// The pod's namespace.
        #[prost(string, tag = "2")]
        pub pod_namespace: String,
    }

    /// `GetPodResourcesResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetPodResourcesResponse {
        /// The pod.
        #[prost(message, optional, tag = "1")]
        pub pod_resources: Option<PodResources>,
    }

    /// `PodResources`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodResources {
        /// Pod name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Pod namespace.
        #[prost(string, tag = "2")]
        pub namespace: String,
        /// Its containers.
        #[prost(message, repeated, tag = "3")]
        pub containers: Vec<ContainerResources>,
    }

    /// `ContainerResources` (cpu_ids, memory and dynamic_resources are not read).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerResources {
        /// Container name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Device-plugin devices.
        #[prost(message, repeated, tag = "2")]
        pub devices: Vec<ContainerDevices>,
    }

    /// `ContainerDevices` (topology is not read).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerDevices {
        /// Resource name.
        #[prost(string, tag = "1")]
        pub resource_name: String,
        /// Device IDs.
        #[prost(string, repeated, tag = "2")]
        pub device_ids: Vec<String>,
    }
}

/// `/v1.PodResourcesLister/Get`.
pub const GET_PATH: &str = "/v1.PodResourcesLister/Get";
/// `/v1.PodResourcesLister/List`.
pub const LIST_PATH: &str = "/v1.PodResourcesLister/List";

/// A failed PodResources call.
#[derive(Debug, thiserror::Error)]
pub enum PodResourcesError {
    /// The socket could not be connected or spoken to.
    #[error("cannot talk to the kubelet at {socket}: {reason}")]
    Transport {
        /// The socket.
        socket: String,
        /// Why.
        reason: String,
    },
    /// The kubelet answered with an error.
    #[error("kubelet {method} at {socket}: {status}")]
    Status {
        /// `Get` or `List`.
        method: &'static str,
        /// The socket.
        socket: String,
        /// The gRPC status.
        status: String,
    },
    /// No answer in time.
    #[error("the kubelet at {socket} did not answer within {timeout:?}")]
    Timeout {
        /// The socket.
        socket: String,
        /// The limit.
        timeout: Duration,
    },
}

/// hyper's HTTP/2 connection as the tower service tonic's client drives.
struct H2(SendRequest<Body>);

impl tower_service::Service<http::Request<Body>> for H2 {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

/// The device IDs per resource of pod `namespace/name`, from the kubelet at `socket` (unsorted).
/// Must run inside a tokio runtime (the connection's driver is spawned on it).
pub async fn pod_devices(
    socket: &Path,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<ResourceMap, PodResourcesError> {
    let display = socket.display().to_string();
    let call = async {
        let transport = |reason: String| PodResourcesError::Transport {
            socket: display.clone(),
            reason,
        };
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| transport(e.to_string()))?;
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| transport(e.to_string()))?;
        tokio::spawn(conn);
        // The authority is a placeholder (a unix socket has none); the kubelet ignores it.
        let mut grpc = Grpc::with_origin(H2(send), http::Uri::from_static("http://localhost"));
        grpc.ready().await.map_err(|e| transport(e.to_string()))?;
        let get = grpc
            .unary(
                tonic::Request::new(proto::GetPodResourcesRequest {
                    pod_name: name.to_string(),
                    pod_namespace: namespace.to_string(),
                }),
                PathAndQuery::from_static(GET_PATH),
                tonic_prost::ProstCodec::<_, proto::GetPodResourcesResponse>::default(),
            )
            .await;
        let pods = match get {
            Ok(resp) => resp.into_inner().pod_resources.into_iter().collect(),
            // Kubernetes before 1.27 (or Get behind a disabled feature gate): List every pod.
            Err(s) if s.code() == Code::Unimplemented => {
                tracing::debug!("kubelet has no PodResources Get; using List");
                grpc.ready().await.map_err(|e| transport(e.to_string()))?;
                let list = grpc
                    .unary(
                        tonic::Request::new(proto::ListPodResourcesRequest {}),
                        PathAndQuery::from_static(LIST_PATH),
                        tonic_prost::ProstCodec::<_, proto::ListPodResourcesResponse>::default(),
                    )
                    .await
                    .map_err(|s| PodResourcesError::Status {
                        method: "List",
                        socket: display.clone(),
                        status: status_text(&s),
                    })?;
                list.into_inner().pod_resources
            }
            Err(s) => {
                return Err(PodResourcesError::Status {
                    method: "Get",
                    socket: display.clone(),
                    status: status_text(&s),
                });
            }
        };
        Ok(devices_of(&pods, namespace, name))
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(PodResourcesError::Timeout {
            socket: display.clone(),
            timeout,
        }),
    }
}

fn status_text(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// The devices of pod `namespace/name` among `pods`, per resource, over all its containers.
pub fn devices_of(pods: &[proto::PodResources], namespace: &str, name: &str) -> ResourceMap {
    let mut map = ResourceMap::new();
    for pod in pods
        .iter()
        .filter(|p| p.namespace == namespace && p.name == name)
    {
        for d in pod.containers.iter().flat_map(|c| &c.devices) {
            map.entry(d.resource_name.clone())
                .or_default()
                .extend(d.device_ids.iter().cloned());
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::{proto::*, *};

    fn pod(ns: &str, name: &str, devs: &[(&str, &[&str])]) -> PodResources {
        PodResources {
            name: name.into(),
            namespace: ns.into(),
            containers: vec![ContainerResources {
                name: "c".into(),
                devices: devs
                    .iter()
                    .map(|(r, ids)| ContainerDevices {
                        resource_name: r.to_string(),
                        device_ids: ids.iter().map(|s| s.to_string()).collect(),
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn devices_of_filters_by_pod_and_groups_by_resource() {
        let pods = vec![
            pod("ns", "p", &[("r1", &["b", "a"]), ("r2", &["x"])]),
            pod("ns", "other", &[("r1", &["z"])]),
            pod("ns2", "p", &[("r1", &["y"])]),
            pod("ns", "p", &[("r1", &["c"])]),
        ];
        let m = devices_of(&pods, "ns", "p");
        assert_eq!(m["r1"], ["b", "a", "c"]);
        assert_eq!(m["r2"], ["x"]);
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn messages_round_trip_with_upstream_tags() {
        use prost::Message;
        let resp = GetPodResourcesResponse {
            pod_resources: Some(pod("ns", "p", &[("r", &["d"])])),
        };
        let bytes = resp.encode_to_vec();
        // Field 1 (pod_resources), wire type 2: 0x0a, as protoc encodes it.
        assert_eq!(bytes[0], 0x0a);
        assert_eq!(GetPodResourcesResponse::decode(&*bytes).unwrap(), resp);
    }

    #[test]
    fn a_missing_socket_is_a_transport_error_naming_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("kubelet.sock");
        let e = rt
            .block_on(pod_devices(&sock, "ns", "p", Duration::from_secs(2)))
            .unwrap_err();
        assert!(
            matches!(e, PodResourcesError::Transport { .. })
                && e.to_string().contains(&sock.display().to_string()),
            "{e}"
        );
    }
}
