//! The kubeconfig plexus gets: a copy of the server's kubeconfig that talks to the forwarder in the host
//! namespace (`server: https://127.0.0.1:<port>`) while checking the server's certificate against the
//! original host name (`tls-server-name`, which kube-rs honours).

use std::{
    fs,
    io::Write,
    net::{SocketAddr, ToSocketAddrs},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use serde_json::Value;

/// The API server a kubeconfig's current context names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host as written in the URL (an IPv6 address without brackets).
    pub host: String,
    /// Port (443 when the URL has none).
    pub port: u16,
}

impl Endpoint {
    /// Resolve to a socket address (IPv4 first), in the machine's namespace.
    pub fn resolve(&self) -> Result<SocketAddr, String> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}:{}: {e}", self.host, self.port))?
            .collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| format!("{}:{} resolves to no address", self.host, self.port))
    }
}

/// Read a kubeconfig (YAML or JSON).
pub fn read(path: &Path) -> Result<Value, String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_saphyr::from_str::<Value>(&text)
        .map_err(|e| format!("{} is not a kubeconfig: {e}", path.display()))
}

/// Index of the `clusters` entry the current context uses.
fn current_cluster(kc: &Value) -> Result<usize, String> {
    let ctx_name = kc["current-context"]
        .as_str()
        .ok_or("the kubeconfig has no current-context")?;
    let ctx = kc["contexts"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == ctx_name))
        .ok_or_else(|| format!("context {ctx_name:?} not found"))?;
    let cluster_name = ctx["context"]["cluster"]
        .as_str()
        .ok_or_else(|| format!("context {ctx_name:?} names no cluster"))?;
    kc["clusters"]
        .as_array()
        .and_then(|c| c.iter().position(|c| c["name"] == cluster_name))
        .ok_or_else(|| format!("cluster {cluster_name:?} not found"))
}

/// The server of the current context.
pub fn endpoint(kc: &Value) -> Result<Endpoint, String> {
    let i = current_cluster(kc)?;
    let server = kc["clusters"][i]["cluster"]["server"]
        .as_str()
        .ok_or("the current cluster has no server")?;
    parse_url(server)
}

/// `https://host[:port][/path]` → host and port.
pub fn parse_url(url: &str) -> Result<Endpoint, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("server {url:?} is not an https:// URL"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("bad server {url:?}"))?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| format!("bad port in {url:?}"))?,
        None => 443,
    };
    if host.is_empty() {
        return Err(format!("no host in {url:?}"));
    }
    Ok(Endpoint { host, port })
}

/// The CA (PEM) the current cluster trusts: its `certificate-authority-data`, or the file its
/// `certificate-authority` names (relative to `path`, the kubeconfig's own file).
pub fn ca_pem(kc: &Value, path: &Path) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let i = current_cluster(kc)?;
    let cluster = &kc["clusters"][i]["cluster"];
    if let Some(data) = cluster
        .get("certificate-authority-data")
        .and_then(Value::as_str)
    {
        return base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("certificate-authority-data is not base64: {e}"));
    }
    if let Some(file) = cluster.get("certificate-authority").and_then(Value::as_str) {
        let file = path.parent().unwrap_or(Path::new("/")).join(file);
        return fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()));
    }
    Err("the current cluster names no CA (certificate-authority or -data)".into())
}

/// The current cluster's `tls-server-name`, if it sets one.
pub fn tls_server_name(kc: &Value) -> Option<String> {
    let i = current_cluster(kc).ok()?;
    kc["clusters"][i]["cluster"]["tls-server-name"]
        .as_str()
        .map(String::from)
}

/// The bearer token of the current context's user, if it has one inline.
pub fn token(kc: &Value) -> Option<String> {
    let ctx_name = kc["current-context"].as_str()?;
    let ctx = kc["contexts"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == ctx_name)?;
    let user = ctx["context"]["user"].as_str()?;
    kc["users"].as_array()?.iter().find(|u| u["name"] == user)?["user"]["token"]
        .as_str()
        .map(String::from)
}

/// Make a file reference relative to the kubeconfig's directory absolute (the copy lives elsewhere).
fn absolutize(v: &mut Value, key: &str, dir: &Path) {
    if let Some(p) = v.get(key).and_then(Value::as_str)
        && !p.is_empty()
        && !Path::new(p).is_absolute()
    {
        v[key] = Value::String(dir.join(p).display().to_string());
    }
}

/// A copy of `original` (read from `original_path`) for a client that reaches the server through
/// `127.0.0.1:<port>`: the current cluster's `server` points there and `tls-server-name` keeps the
/// original host (unless the kubeconfig sets one already); relative file paths become absolute.
pub fn forwarded(original: &Value, original_path: &Path, port: u16) -> Result<Value, String> {
    let mut kc = original.clone();
    let ep = endpoint(&kc)?;
    let i = current_cluster(&kc)?;
    let dir = original_path.parent().unwrap_or(Path::new("/"));
    let cluster = &mut kc["clusters"][i]["cluster"];
    cluster["server"] = Value::String(format!("https://127.0.0.1:{port}"));
    if cluster
        .get("tls-server-name")
        .and_then(Value::as_str)
        .is_none()
    {
        cluster["tls-server-name"] = Value::String(ep.host.clone());
    }
    absolutize(cluster, "certificate-authority", dir);
    if let Some(users) = kc["users"].as_array_mut() {
        for u in users {
            let user = &mut u["user"];
            for key in ["client-certificate", "client-key", "tokenFile"] {
                absolutize(user, key, dir);
            }
        }
    }
    Ok(kc)
}

/// A kubeconfig for the same server as `original` (read from `original_path`) that authenticates with
/// the bearer `token` only: its current cluster (file paths made absolute), one user `user` with the
/// token, and one context (the current one, keeping its namespace) tying them together. Nothing of the
/// original's credentials is kept.
pub fn with_token(
    original: &Value,
    original_path: &Path,
    token: &str,
    user: &str,
) -> Result<Value, String> {
    let i = current_cluster(original)?;
    let mut cluster = original["clusters"][i].clone();
    let dir = original_path.parent().unwrap_or(Path::new("/"));
    absolutize(&mut cluster["cluster"], "certificate-authority", dir);
    let ctx_name = original["current-context"]
        .as_str()
        .ok_or("the kubeconfig has no current-context")?;
    let mut ctx = original["contexts"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == ctx_name))
        .cloned()
        .ok_or_else(|| format!("context {ctx_name:?} not found"))?;
    ctx["context"]["user"] = Value::String(user.to_string());
    Ok(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [ctx],
        "current-context": ctx_name,
        "preferences": {},
    }))
}

/// Write `kc` to `path` as JSON (valid YAML), mode 0600: it holds credentials.
pub fn write(path: &Path, kc: &Value) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(&serde_json::to_vec_pretty(kc).map_err(std::io::Error::other)?)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ca_and_token_of_the_current_context() {
        let kc = json!({
            "current-context": "b",
            "contexts": [{"name": "b", "context": {"cluster": "cb", "user": "u"}}],
            "clusters": [{"name": "cb", "cluster": {"server": "https://b.invalid:6443",
                                                     "certificate-authority-data": "Y2EtcGVt"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
        });
        assert_eq!(ca_pem(&kc, Path::new("/x/config")).unwrap(), b"ca-pem");
        assert_eq!(token(&kc).as_deref(), Some("t"));
        let mut file = kc.clone();
        file["clusters"][0]["cluster"] = json!({"certificate-authority": "no-such-ca.crt"});
        let e = ca_pem(&file, Path::new("/nonexistent/config")).unwrap_err();
        assert!(e.contains("/nonexistent/no-such-ca.crt"), "{e}");
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("https://127.0.0.1:6443").unwrap(),
            Endpoint {
                host: "127.0.0.1".into(),
                port: 6443
            }
        );
        assert_eq!(parse_url("https://api.example.invalid").unwrap().port, 443);
        assert_eq!(parse_url("https://[::1]:8443/x").unwrap().host, "::1");
        assert!(parse_url("http://x:1").is_err());
    }

    #[test]
    fn forwarded_rewrites_the_current_cluster_only() {
        let kc = json!({
            "current-context": "b",
            "contexts": [{"name": "a", "context": {"cluster": "ca", "user": "u"}},
                         {"name": "b", "context": {"cluster": "cb", "user": "u"}}],
            "clusters": [{"name": "ca", "cluster": {"server": "https://a.invalid:1"}},
                         {"name": "cb", "cluster": {"server": "https://b.invalid:6443", "certificate-authority": "ca.crt"}}],
            "users": [{"name": "u", "user": {"client-key": "k.pem", "token": "t"}}],
        });
        let out = forwarded(&kc, Path::new("/etc/kube/config"), 4242).unwrap();
        let cb = &out["clusters"][1]["cluster"];
        assert_eq!(cb["server"], "https://127.0.0.1:4242");
        assert_eq!(cb["tls-server-name"], "b.invalid");
        assert_eq!(cb["certificate-authority"], "/etc/kube/ca.crt");
        assert_eq!(out["clusters"][0], kc["clusters"][0]);
        assert_eq!(out["users"][0]["user"]["client-key"], "/etc/kube/k.pem");
        assert_eq!(out["users"][0]["user"]["token"], "t");
    }

    #[test]
    fn with_token_keeps_only_the_current_cluster_and_the_token() {
        let kc = json!({
            "current-context": "b",
            "contexts": [{"name": "a", "context": {"cluster": "ca", "user": "admin"}},
                         {"name": "b", "context": {"cluster": "cb", "user": "admin", "namespace": "x"}}],
            "clusters": [{"name": "ca", "cluster": {"server": "https://a.invalid:1"}},
                         {"name": "cb", "cluster": {"server": "https://b.invalid:6443", "certificate-authority": "ca.crt"}}],
            "users": [{"name": "admin", "user": {"client-key": "k.pem", "client-certificate": "c.pem"}}],
        });
        let out = with_token(&kc, Path::new("/etc/kube/config"), "sa-token", "sa").unwrap();
        assert_eq!(out["clusters"].as_array().unwrap().len(), 1);
        assert_eq!(out["clusters"][0]["name"], "cb");
        assert_eq!(
            out["clusters"][0]["cluster"]["certificate-authority"],
            "/etc/kube/ca.crt"
        );
        assert_eq!(
            out["users"],
            json!([{"name": "sa", "user": {"token": "sa-token"}}])
        );
        assert_eq!(
            out["contexts"],
            json!([{"name": "b", "context": {"cluster": "cb", "user": "sa", "namespace": "x"}}])
        );
        assert_eq!(out["current-context"], "b");
        // It still goes through the forwarder like any kubeconfig.
        let fwd = forwarded(&out, Path::new("/tmp/sa"), 4242).unwrap();
        assert_eq!(
            fwd["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:4242"
        );
        assert_eq!(fwd["users"][0]["user"]["token"], "sa-token");
    }
}
