//! A **stand-in** for the Kubernetes API server, for plexus's end-to-end tests
//! and local demo. It is *not* a real apiserver: it keeps a handful of resource
//! types in memory and imitates the real server's behaviour for what plexus and
//! its suite use, so the same suite also runs unchanged against a real cluster.
//!
//! What it serves (see `e2e/STANDIN.md` for the full list of what it does and
//! does not do):
//! - HTTPS (HTTP/2 or HTTP/1.1, by ALPN) with a CA and serving certificate made at start ([`tls`]), bearer
//!   token authentication, and a kubeconfig pointing at itself ([`kubeconfig`]);
//! - ServiceAccount tokens from the TokenRequest API ([`auth`]) and RBAC
//!   authorization of their requests (Roles, ClusterRoles and their bindings,
//!   [`rbac`]); the bootstrap token is an admin (`system:masters`);
//! - namespaces, serviceaccounts (and `serviceaccounts/token`), pods (with
//!   `status`), events (`v1` and `events.k8s.io/v1`, one store), the four RBAC
//!   kinds, CRDs, and the resources of any CRD while it
//!   exists (the NetworkAttachmentDefinition CRD can be pre-created);
//! - GET, LIST (label/field selectors, paging), WATCH, CREATE, UPDATE, PATCH
//!   (merge, JSON, simplified strategic), DELETE, DELETE collection, with
//!   `resourceVersion`, `uid`, `generation` and errors as Kubernetes `Status`;
//! - fault injection and a request log, from Rust ([`ApiServer::faults`],
//!   [`ApiServer::requests`]) or over HTTP under `/standin/`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use plexus_e2e::apiserver::{ApiServer, Config, FaultSpec};
//! let server = ApiServer::start(Config { nad_crd: true, ..Config::default() }).await?;
//! server.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"))?;
//! server.inject(FaultSpec::status(503).on("PATCH", "/pods/web/status").times(1));
//! // ... run plexus against it ...
//! assert_eq!(server.count_requests("PATCH", "/status"), 2);
//! # Ok(()) }
//! ```

mod api;
pub mod auth;
pub mod client;
pub mod dra;
pub mod error;
pub mod faults;
pub mod kubeconfig;
pub mod patch;
pub mod rbac;
pub mod resources;
pub mod routes;
pub mod selector;
mod server;
pub mod store;
pub mod tls;
mod util;

pub use api::KUBE_VERSION;
pub use client::Client;
pub use error::ApiError;
pub use faults::{ActiveFault, FaultSpec, Faults, RequestRecord, UserRecord};
pub use rbac::UserInfo;
pub use server::{ApiServer, Config, Connections, StartError, parse_seed};
pub use store::Store;
