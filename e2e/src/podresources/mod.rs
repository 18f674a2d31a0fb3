//! A kubelet PodResources stand-in: the `v1.PodResourcesLister` gRPC service (`Get` and `List`) on a unix
//! socket, serving the device allocations a test gives it, so plexus's device lookup (issue 7) runs
//! against the real protocol without a kubelet. It speaks the same prost messages plexus's client does
//! ([`plexus::seams::devices::podresources::proto`]); `Get` can be switched off to answer `Unimplemented` like
//! a kubelet before Kubernetes 1.27. `plexus-podresources` runs it as a process.

use std::{
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex},
};

use hyper::{body::Incoming, server::conn::http2, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use plexus::seams::devices::podresources::{GET_PATH, LIST_PATH, proto};
use serde::Deserialize;
use tokio::{net::UnixListener, sync::oneshot};
use tonic::{Request, Response, Status, server::UnaryService};

/// What the stand-in serves.
#[derive(Debug, Clone, Default)]
pub struct Allocations {
    /// The node's pods and their devices.
    pub pods: Vec<proto::PodResources>,
    /// Whether `Get` is implemented (else `Unimplemented`, and clients must `List`).
    pub get: bool,
}

/// The seed file of `plexus-podresources`: `{"get": true, "pods": [{"namespace", "name", "containers":
/// [{"name", "devices": [{"resourceName", "deviceIDs": [...]}]}]}]}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seed {
    /// `Get` implemented (default true).
    #[serde(default = "yes")]
    pub get: bool,
    /// The pods.
    #[serde(default)]
    pub pods: Vec<SeedPod>,
}

fn yes() -> bool {
    true
}

/// A pod of the seed.
#[derive(Debug, Deserialize)]
pub struct SeedPod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Containers.
    #[serde(default)]
    pub containers: Vec<SeedContainer>,
}

/// A container of the seed.
#[derive(Debug, Deserialize)]
pub struct SeedContainer {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Devices.
    #[serde(default)]
    pub devices: Vec<SeedDevices>,
}

/// Devices of one resource.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedDevices {
    /// Resource name.
    pub resource_name: String,
    /// Device IDs.
    #[serde(rename = "deviceIDs", default)]
    pub device_ids: Vec<String>,
}

impl From<Seed> for Allocations {
    fn from(s: Seed) -> Allocations {
        Allocations {
            get: s.get,
            pods: s
                .pods
                .into_iter()
                .map(|p| proto::PodResources {
                    name: p.name,
                    namespace: p.namespace,
                    containers: p
                        .containers
                        .into_iter()
                        .map(|c| proto::ContainerResources {
                            name: c.name,
                            devices: c
                                .devices
                                .into_iter()
                                .map(|d| proto::ContainerDevices {
                                    resource_name: d.resource_name,
                                    device_ids: d.device_ids,
                                })
                                .collect(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// One pod with one container holding `devices` (resource name, IDs).
pub fn pod(namespace: &str, name: &str, devices: &[(&str, &[&str])]) -> proto::PodResources {
    proto::PodResources {
        name: name.into(),
        namespace: namespace.into(),
        containers: vec![proto::ContainerResources {
            name: "main".into(),
            devices: devices
                .iter()
                .map(|(r, ids)| proto::ContainerDevices {
                    resource_name: r.to_string(),
                    device_ids: ids.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
        }],
    }
}

#[derive(Default)]
struct Shared {
    allocations: Allocations,
    calls: Vec<String>,
}

type Fut<T> = Pin<Box<dyn Future<Output = Result<Response<T>, Status>> + Send>>;

struct GetSvc(Arc<Mutex<Shared>>);

impl UnaryService<proto::GetPodResourcesRequest> for GetSvc {
    type Response = proto::GetPodResourcesResponse;
    type Future = Fut<Self::Response>;

    fn call(&mut self, req: Request<proto::GetPodResourcesRequest>) -> Self::Future {
        let shared = self.0.clone();
        Box::pin(async move {
            let req = req.into_inner();
            let s = shared.lock().unwrap_or_else(|e| e.into_inner());
            if !s.allocations.get {
                return Err(Status::unimplemented("method Get not implemented"));
            }
            // The kubelet answers NotFound for a pod it does not know.
            let pod = s
                .allocations
                .pods
                .iter()
                .find(|p| p.namespace == req.pod_namespace && p.name == req.pod_name)
                .cloned()
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "pod {} in namespace {} not found",
                        req.pod_name, req.pod_namespace
                    ))
                })?;
            Ok(Response::new(proto::GetPodResourcesResponse {
                pod_resources: Some(pod),
            }))
        })
    }
}

struct ListSvc(Arc<Mutex<Shared>>);

impl UnaryService<proto::ListPodResourcesRequest> for ListSvc {
    type Response = proto::ListPodResourcesResponse;
    type Future = Fut<Self::Response>;

    fn call(&mut self, _: Request<proto::ListPodResourcesRequest>) -> Self::Future {
        let shared = self.0.clone();
        Box::pin(async move {
            let s = shared.lock().unwrap_or_else(|e| e.into_inner());
            Ok(Response::new(proto::ListPodResourcesResponse {
                pod_resources: s.allocations.pods.clone(),
            }))
        })
    }
}

async fn route(
    shared: Arc<Mutex<Shared>>,
    req: http::Request<Incoming>,
) -> Result<http::Response<tonic::body::Body>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    shared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .calls
        .push(path.clone());
    Ok(match path.as_str() {
        GET_PATH => {
            let codec = tonic_prost::ProstCodec::<
                proto::GetPodResourcesResponse,
                proto::GetPodResourcesRequest,
            >::default();
            tonic::server::Grpc::new(codec)
                .unary(GetSvc(shared), req)
                .await
        }
        LIST_PATH => {
            let codec = tonic_prost::ProstCodec::<
                proto::ListPodResourcesResponse,
                proto::ListPodResourcesRequest,
            >::default();
            tonic::server::Grpc::new(codec)
                .unary(ListSvc(shared), req)
                .await
        }
        other => Status::unimplemented(format!("no method {other}")).into_http(),
    })
}

/// Listen on `socket`, replacing a stale socket file (inside a tokio runtime).
pub fn bind(socket: &Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(socket);
    UnixListener::bind(socket)
}

/// Serve `allocations` on `listener` until `stop` fires.
pub async fn serve(
    listener: UnixListener,
    allocations: Allocations,
    stop: impl Future<Output = ()>,
) {
    let shared = Arc::new(Mutex::new(Shared {
        allocations,
        calls: Vec::new(),
    }));
    run(listener, shared, stop).await;
}

async fn run(listener: UnixListener, shared: Arc<Mutex<Shared>>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| route(shared.clone(), req));
                    let _ = http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        }
    }
}

/// The stand-in on its own thread, for synchronous tests: stops and removes its socket on drop.
pub struct PodResourcesStandin {
    socket: PathBuf,
    shared: Arc<Mutex<Shared>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PodResourcesStandin {
    /// Listen on `socket` (replacing a stale file) and serve `allocations`.
    pub fn start(socket: &Path, allocations: Allocations) -> std::io::Result<PodResourcesStandin> {
        let _ = std::fs::remove_file(socket);
        let std_listener = std::os::unix::net::UnixListener::bind(socket)?;
        std_listener.set_nonblocking(true)?;
        let shared = Arc::new(Mutex::new(Shared {
            allocations,
            calls: Vec::new(),
        }));
        let (tx, rx) = oneshot::channel::<()>();
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let listener = UnixListener::from_std(std_listener).expect("tokio listener");
                run(listener, s, async {
                    let _ = rx.await;
                })
                .await;
            });
        });
        Ok(PodResourcesStandin {
            socket: socket.to_path_buf(),
            shared,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The gRPC methods called so far (`/v1.PodResourcesLister/Get`, …), in order.
    pub fn calls(&self) -> Vec<String> {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .calls
            .clone()
    }
}

impl Drop for PodResourcesStandin {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}
