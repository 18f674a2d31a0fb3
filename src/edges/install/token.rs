//! The host's credential in thin mode: a token of the installer's own ServiceAccount bound to this node's
//! Node object, asked of the TokenRequest API, with a bounded lifetime and renewed well before it ends
//! (docs/security.md, "The host's credential").
//!
//! The pod's own projected token is bound to the pod: the API server stops accepting it the moment the pod is
//! deleted, so a host kubeconfig holding it broke every ADD on the node while the DaemonSet's pod restarted.
//! A Node-bound token outlives any one installer pod and dies with the Node. This module says what to ask
//! for ([`Request`]), asks ([`ApiIssuer`], one short-lived API client per request), when to renew
//! ([`Issued::renew_at`]) and how long to wait after a refusal ([`Backoff`]); `super` decides what goes
//! into the kubeconfig.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use k8s_openapi::api::{
    authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
};
use kube::{Api, api::PostParams, config::KubeConfigOptions};
use serde_json::Value;

/// The shortest lifetime the API server issues (`spec.expirationSeconds` below 600 is refused).
pub const MIN_LIFETIME: Duration = Duration::from_secs(600);

/// A token is renewed once this share of its lifetime (in fifths) has passed: an hour's token after 48
/// minutes, so 12 minutes remain for retries when the API server is unavailable.
const RENEW_AT_FIFTHS: u32 = 4;

/// The first wait after a failed request; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(2);
/// The longest wait between two requests while they fail: well inside the 12 minutes an hour's token has
/// left when its renewal starts.
const MAX_RETRY: Duration = Duration::from_secs(60);

/// How long one TokenRequest may take (connect, TLS, answer); the installer's loop waits for it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A token for the host: what the installer asks the API server for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The ServiceAccount's namespace (the installer's own).
    pub namespace: String,
    /// The ServiceAccount (the installer's own: RBAC lets it create tokens for itself only).
    pub service_account: String,
    /// The Node the token is bound to.
    pub node: String,
    /// The lifetime asked for (the server may shorten it).
    pub lifetime: Duration,
}

impl Request {
    /// The TokenRequest: bound to the Node by name, for the API server's own audiences (none given), with
    /// the lifetime in whole seconds. No uid: the server binds the token to the Node it finds under that
    /// name, so the installer needs no right to read Nodes.
    pub fn body(&self) -> TokenRequest {
        TokenRequest {
            spec: Some(TokenRequestSpec {
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(self.node.clone()),
                    uid: None,
                }),
                expiration_seconds: Some(self.lifetime.as_secs() as i64),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        }
    }

    /// "a token of serviceaccount NS/NAME bound to Node N", for log lines.
    pub fn describe(&self) -> String {
        format!(
            "a token of serviceaccount {}/{} bound to Node {}",
            self.namespace, self.service_account, self.node
        )
    }
}

/// A token the API server issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The bearer token.
    pub token: String,
    /// When it was received (the local clock).
    pub issued: SystemTime,
    /// When it expires (the server's `status.expirationTimestamp`).
    pub expires: SystemTime,
}

impl Issued {
    /// When to ask for the next one: after four fifths of its lifetime.
    pub fn renew_at(&self) -> SystemTime {
        let lifetime = self
            .expires
            .duration_since(self.issued)
            .unwrap_or(Duration::ZERO);
        self.issued + lifetime * RENEW_AT_FIFTHS / 5
    }

    /// Whether it is still valid at `now` (as far as its expiry goes).
    pub fn alive_at(&self, now: SystemTime) -> bool {
        now < self.expires
    }

    /// A token found in a kubeconfig an earlier installer wrote, if its claims say it is bound to Node `node`
    /// (and to no pod) and give its lifetime: the installer keeps using it while the API refuses a new one.
    pub fn from_claims(token: &str, node: &str) -> Option<Issued> {
        let claims = claims(token)?;
        let k = claims.get("kubernetes.io")?;
        if k.pointer("/node/name").and_then(Value::as_str) != Some(node) || k.get("pod").is_some() {
            return None;
        }
        let at = |key: &str| {
            let secs = claims.get(key)?.as_u64()?;
            Some(UNIX_EPOCH + Duration::from_secs(secs))
        };
        Some(Issued {
            token: token.to_string(),
            issued: at("iat")?,
            expires: at("exp")?,
        })
    }
}

/// Why no token was issued: the API server's answer, or why there was none.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The installer's own credentials, to ask with.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The API server's URL.
    pub server: &'a str,
    /// Its CA (PEM).
    pub ca: &'a [u8],
    /// The pod's own token.
    pub token: &'a str,
}

/// Asks the API server for tokens ([`ApiIssuer`]; the installer's tests script the answers).
pub trait Issuer {
    /// Ask for `req` as `caller`; `now` is when the answer counts as received.
    fn issue(
        &mut self,
        caller: Caller<'_>,
        req: &Request,
        now: SystemTime,
    ) -> Result<Issued, Refused>;
}

/// The real [`Issuer`]: one API client per request, over the same transport as the plugin's, built from a
/// kubeconfig of the caller's credentials (so the CA is read as the plugin reads the host's).
#[derive(Debug, Default)]
pub struct ApiIssuer;

impl Issuer for ApiIssuer {
    fn issue(
        &mut self,
        caller: Caller<'_>,
        req: &Request,
        now: SystemTime,
    ) -> Result<Issued, Refused> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Refused(format!("cannot start the async runtime: {e}")))?;
        rt.block_on(async {
            let client = client(caller).await?;
            match tokio::time::timeout(REQUEST_TIMEOUT, request_token(client, req, now)).await {
                Ok(r) => r,
                Err(_) => Err(Refused(format!(
                    "no answer from the API server at {} within {}s",
                    caller.server,
                    REQUEST_TIMEOUT.as_secs()
                ))),
            }
        })
    }
}

/// An API client with `caller`'s credentials (call within a runtime).
async fn client(caller: Caller<'_>) -> Result<kube::Client, Refused> {
    let text = super::conf::render_kubeconfig(caller.server, caller.ca, caller.token, "plexus")
        .map_err(|e| Refused(e.to_string()))?;
    let kc = crate::seams::k8s::kubeconfig::parse(&text, None)
        .map_err(|e| Refused(format!("kubeconfig: {e}")))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| Refused(format!("API client settings: {e}")))?;
    config.connect_timeout = Some(REQUEST_TIMEOUT);
    config.read_timeout = Some(REQUEST_TIMEOUT);
    config.write_timeout = Some(REQUEST_TIMEOUT);
    // One attempt per call: the installer's own backoff decides when to ask again.
    config.default_retry = false;
    crate::seams::k8s::transport::client(&config).map_err(|e| Refused(format!("API client: {e}")))
}

/// `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token` with [`Request::body`] over `client`.
pub async fn request_token(
    client: kube::Client,
    req: &Request,
    now: SystemTime,
) -> Result<Issued, Refused> {
    let sas: Api<ServiceAccount> = Api::namespaced(client, &req.namespace);
    let answer = sas
        .create_token_request(&req.service_account, &PostParams::default(), &req.body())
        .await
        .map_err(|e| Refused(describe(&e)))?;
    let status = answer.status.unwrap_or_default();
    let token = status
        .token
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Refused("the API server answered no token".into()))?;
    let expires = status
        .expiration_timestamp
        .and_then(|t| u64::try_from(t.0.as_second()).ok())
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
        .ok_or_else(|| Refused("the API server answered no expirationTimestamp".into()))?;
    Ok(Issued {
        token,
        issued: now,
        expires,
    })
}

/// A failed request as a log line reads it: the server's code, reason and message, or why there was no
/// answer.
fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!(
            "the API server refused it: {} {}: {}",
            s.code,
            if s.reason.is_empty() {
                "(no reason)"
            } else {
                &s.reason
            },
            s.message
        ),
        other => format!("no answer from the API server: {other}"),
    }
}

/// The ServiceAccount a token belongs to: namespace and name from its `sub` claim
/// (`system:serviceaccount:<ns>:<name>`), in bound and legacy Secret tokens alike.
pub fn service_account_of(token: &str) -> Result<(String, String), String> {
    let claims = claims(token.trim()).ok_or(
        "the service-account token is not a JWT, so the installer cannot tell which ServiceAccount it is",
    )?;
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match sub
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
    {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains(':') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!(
            "the service-account token's subject {sub:?} is not a ServiceAccount (system:serviceaccount:NS:NAME)"
        )),
    }
}

/// A JWT's claims (its middle part), unverified: the installer only reads what it was given, the API
/// server judges the token.
fn claims(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(Value::is_object)
}

/// When to ask again after failed requests: 2 s, then doubling up to a minute; a success resets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    /// Failures in a row.
    failures: u32,
    /// No request before this.
    until: Option<SystemTime>,
}

impl Backoff {
    /// Whether a request may go out at `now`.
    pub fn ready(&self, now: SystemTime) -> bool {
        self.until.is_none_or(|u| now >= u)
    }

    /// Note a failure at `now`; the wait before the next request.
    pub fn failed(&mut self, now: SystemTime) -> Duration {
        let wait = FIRST_RETRY
            .saturating_mul(1 << self.failures.min(16))
            .min(MAX_RETRY);
        self.failures = self.failures.saturating_add(1);
        self.until = Some(now + wait);
        wait
    }

    /// Note a success.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{
        io::{BufRead, BufReader, Read, Write},
        net::TcpListener,
        sync::{Arc, Mutex},
        thread,
    };

    use serde_json::json;

    use super::*;

    /// A JWT-shaped token with `claims` (the signature is not checked by anyone here).
    pub(crate) fn jwt(claims: Value) -> String {
        let part =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.c2ln", part(&json!({"alg": "RS256"})), part(&claims))
    }

    fn request() -> Request {
        Request {
            namespace: "kube-system".into(),
            service_account: "plexus".into(),
            node: "node-1".into(),
            lifetime: Duration::from_secs(3600),
        }
    }

    #[test]
    fn the_request_binds_the_token_to_the_node_by_name_for_an_hour() {
        let body = serde_json::to_value(request().body()).unwrap();
        assert_eq!(
            body,
            json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "metadata": {},
                "spec": {
                    "boundObjectRef": {"apiVersion": "v1", "kind": "Node", "name": "node-1"},
                    "expirationSeconds": 3600,
                },
            })
        );
        assert_eq!(
            request().describe(),
            "a token of serviceaccount kube-system/plexus bound to Node node-1"
        );
    }

    #[test]
    fn renewal_comes_at_four_fifths_of_the_lifetime() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let t = Issued {
            token: "t".into(),
            issued: t0,
            expires: t0 + Duration::from_secs(3600),
        };
        assert_eq!(t.renew_at(), t0 + Duration::from_secs(2880));
        assert!(t.alive_at(t0 + Duration::from_secs(3599)));
        assert!(!t.alive_at(t0 + Duration::from_secs(3600)));
        // A token already expired when it arrived (clocks apart) is renewed at once.
        let late = Issued {
            expires: t0 - Duration::from_secs(1),
            ..t
        };
        assert_eq!(late.renew_at(), t0);
    }

    #[test]
    fn the_service_account_comes_from_the_tokens_subject() {
        let bound = jwt(json!({"sub": "system:serviceaccount:kube-system:plexus",
                               "kubernetes.io": {"namespace": "kube-system"}}));
        assert_eq!(
            service_account_of(&format!("{bound}\n")),
            Ok(("kube-system".into(), "plexus".into()))
        );
        let e = service_account_of(&jwt(json!({"sub": "admin"}))).unwrap_err();
        assert!(e.contains("\"admin\" is not a ServiceAccount"), "{e}");
        let e = service_account_of("opaque-token").unwrap_err();
        assert!(e.contains("not a JWT"), "{e}");
    }

    #[test]
    fn a_kubeconfig_token_counts_only_when_bound_to_this_node() {
        let node = jwt(json!({"iat": 100, "exp": 3700,
                              "kubernetes.io": {"node": {"name": "node-1", "uid": "u"}}}));
        let t = Issued::from_claims(&node, "node-1").unwrap();
        assert_eq!(
            (t.issued, t.expires),
            (
                UNIX_EPOCH + Duration::from_secs(100),
                UNIX_EPOCH + Duration::from_secs(3700)
            )
        );
        assert_eq!(Issued::from_claims(&node, "node-2"), None);
        // A pod's token names the pod's node too, but dies with the pod.
        let pod = jwt(json!({"iat": 100, "exp": 3700, "kubernetes.io": {
            "node": {"name": "node-1"}, "pod": {"name": "plexus-x"}}}));
        assert_eq!(Issued::from_claims(&pod, "node-1"), None);
        assert_eq!(Issued::from_claims("tok", "node-1"), None);
    }

    #[test]
    fn backoff_doubles_up_to_a_minute_and_resets() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut b = Backoff::default();
        assert!(b.ready(t0));
        let waits: Vec<u64> = (0..7).map(|_| b.failed(t0).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60]);
        assert!(!b.ready(t0 + Duration::from_secs(59)));
        assert!(b.ready(t0 + Duration::from_secs(60)));
        b.reset();
        assert!(b.ready(t0));
        assert_eq!(b.failed(t0), Duration::from_secs(2));
    }

    /// One request as the test server saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        line: String,
        authorization: String,
        body: Value,
    }

    /// A plain-HTTP server on 127.0.0.1 answering each request with the next of `answers` (status, body).
    fn server(answers: Vec<(u16, Value)>) -> (String, Arc<Mutex<Vec<Seen>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        thread::spawn(move || {
            for (code, body) in answers {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (mut line, mut auth, mut len) = (String::new(), String::new(), 0);
                reader.read_line(&mut line).unwrap();
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap();
                    match k.to_ascii_lowercase().as_str() {
                        "authorization" => auth = v.trim().to_string(),
                        "content-length" => len = v.trim().parse().unwrap(),
                        _ => {}
                    }
                }
                let mut buf = vec![0; len];
                reader.read_exact(&mut buf).unwrap();
                log.lock().unwrap().push(Seen {
                    line: line.trim_end().to_string(),
                    authorization: auth,
                    body: serde_json::from_slice(&buf).unwrap_or(Value::Null),
                });
                let text = body.to_string();
                let mut stream = stream;
                write!(
                    stream,
                    "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                )
                .unwrap();
            }
        });
        (url, seen)
    }

    /// Any certificate in PEM: a plain-HTTP server never checks it, but the kubeconfig needs a CA.
    fn ca_pem() -> String {
        crate::seams::k8s::tls::testpki::Ca::new("test-ca")
            .leaf(&["127.0.0.1"], false)
            .cert_pem
    }

    fn status(code: u16, reason: &str, message: &str) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "reason": reason, "message": message, "code": code})
    }

    #[test]
    fn the_api_issuer_posts_the_request_with_the_pods_token_and_reads_the_answer() {
        let (url, seen) = server(vec![
            (
                201,
                json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                       "spec": {"expirationSeconds": 3600},
                       "status": {"token": "node-token", "expirationTimestamp": "2030-01-01T00:00:00Z"}}),
            ),
            (
                403,
                status(
                    403,
                    "Forbidden",
                    "serviceaccounts \"plexus\" is forbidden: User \"system:serviceaccount:kube-system:plexus\" \
                     cannot create resource \"serviceaccounts/token\"",
                ),
            ),
            (
                503,
                status(503, "ServiceUnavailable", "the server is shutting down"),
            ),
        ]);
        let ca = ca_pem();
        let caller = Caller {
            server: &url,
            ca: ca.as_bytes(),
            token: "pod-token",
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let t = ApiIssuer.issue(caller, &request(), now).unwrap();
        assert_eq!(t.token, "node-token");
        assert_eq!(
            (t.issued, t.expires),
            (now, UNIX_EPOCH + Duration::from_secs(1_893_456_000))
        );
        let s = seen.lock().unwrap()[0].clone();
        assert_eq!(
            s.line,
            "POST /api/v1/namespaces/kube-system/serviceaccounts/plexus/token? HTTP/1.1"
        );
        assert_eq!(s.authorization, "Bearer pod-token");
        assert_eq!(s.body, serde_json::to_value(request().body()).unwrap());

        let e = ApiIssuer.issue(caller, &request(), now).unwrap_err();
        assert!(
            e.0.starts_with(
                "the API server refused it: 403 Forbidden: serviceaccounts \"plexus\" is forbidden"
            ),
            "{e}"
        );
        let e = ApiIssuer.issue(caller, &request(), now).unwrap_err();
        assert_eq!(
            e.0,
            "the API server refused it: 503 ServiceUnavailable: the server is shutting down"
        );
        // Nobody listening.
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let e = ApiIssuer
            .issue(
                Caller {
                    server: &closed,
                    ..caller
                },
                &request(),
                now,
            )
            .unwrap_err();
        assert!(e.0.starts_with("no answer from the API server"), "{e}");
    }
}
