//! A small HTTPS client for the stand-in (or any apiserver): one connection
//! per request, the given CA as the only trust root, an optional bearer token,
//! HTTP/1.1 (no ALPN) or, with [`Client::with_http2`], whatever the server
//! picks of `h2` and `http/1.1`. Tests use it to poke at raw HTTP behaviour and
//! at `/standin/` endpoints.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderMap};
use hyper::{Method, Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Client errors (transport: connect, TLS, the connection closing early).
pub type ClientError = Box<dyn std::error::Error + Send + Sync>;

/// One answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Raw body.
    pub body: Bytes,
    /// The protocol it came over (`HTTP_11` or `HTTP_2`).
    pub version: Version,
}

impl Reply {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// An HTTPS client for one server.
#[derive(Clone)]
pub struct Client {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    tls: Arc<ClientConfig>,
    token: Option<String>,
    http2: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `url` (`https://host:port`) trusting `ca_pem`.
    pub fn new(url: &str, ca_pem: &str, token: Option<&str>) -> Result<Client, ClientError> {
        let authority = url
            .strip_prefix("https://")
            .ok_or("the URL must start with https://")?
            .trim_end_matches('/');
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or("the URL must have a port")?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert?)?;
        }
        let config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Client {
            server_name: ServerName::try_from(host.clone())?,
            host,
            port: port.parse()?,
            tls: Arc::new(config),
            token: token.map(String::from),
            http2: false,
        })
    }

    /// The same client with another token (or none).
    pub fn with_token(&self, token: Option<&str>) -> Client {
        Client {
            token: token.map(String::from),
            ..self.clone()
        }
    }

    /// The same client offering ALPN `h2` and `http/1.1` (`true`) or no ALPN, so HTTP/1.1 (`false`, the
    /// default). Each request still opens its own connection.
    pub fn with_http2(&self, http2: bool) -> Client {
        let mut tls = (*self.tls).clone();
        tls.alpn_protocols = if http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            Vec::new()
        };
        Client {
            tls: Arc::new(tls),
            http2,
            ..self.clone()
        }
    }

    /// Sends one request; `body` is sent with `content_type`.
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, ClientError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        let tls = TlsConnector::from(self.tls.clone())
            .connect(self.server_name.clone(), tcp)
            .await?;
        let h2 = self.http2 && tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
        let authority = match self.server_name {
            ServerName::IpAddress(_) if self.host.contains(':') => {
                format!("[{}]:{}", self.host, self.port)
            }
            _ => format!("{}:{}", self.host, self.port),
        };
        let mut req = Request::builder().method(method);
        req = if h2 {
            // HTTP/2 takes the authority from the URI (`:authority`), not from a Host header.
            req.uri(format!("https://{authority}{path_and_query}"))
        } else {
            req.uri(path_and_query).header(HOST, authority)
        };
        if let Some(t) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let io = TokioIo::new(tls);
        let (resp, driver) = if h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            let driver = tokio::spawn(conn);
            (sender.send_request(req).await, driver)
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            let driver = tokio::spawn(conn);
            (sender.send_request(req).await, driver)
        };
        let result = async {
            let resp = resp?;
            let status = resp.status().as_u16();
            let version = resp.version();
            let headers = resp.headers().clone();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, ClientError>(Reply {
                status,
                headers,
                body,
                version,
            })
        }
        .await;
        driver.abort();
        result
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Result<Reply, ClientError> {
        self.request(Method::GET, path, None, None).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> Result<Reply, ClientError> {
        self.request(Method::DELETE, path, None, None).await
    }

    /// POST a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Reply, ClientError> {
        self.send_json(Method::POST, path, "application/json", body)
            .await
    }

    /// PUT a JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> Result<Reply, ClientError> {
        self.send_json(Method::PUT, path, "application/json", body)
            .await
    }

    /// PATCH with a patch `content_type` (merge, strategic, JSON patch).
    pub async fn patch(
        &self,
        path: &str,
        content_type: &str,
        body: &Value,
    ) -> Result<Reply, ClientError> {
        self.send_json(Method::PATCH, path, content_type, body)
            .await
    }

    async fn send_json(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: &Value,
    ) -> Result<Reply, ClientError> {
        let bytes = serde_json::to_vec(body)?;
        self.request(method, path, Some(content_type), Some(bytes))
            .await
    }
}
