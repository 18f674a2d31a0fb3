//! The kubeconfig the stand-in writes: one cluster (its URL and CA), one user
//! (its bearer token), one context, made current.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The cluster, user and context name used in the kubeconfig.
pub const NAME: &str = "plexus-standin";

/// A YAML-quoted scalar (a JSON string is a valid YAML double-quoted scalar).
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// Renders a kubeconfig for `server` (https URL), trusting `ca_pem`, authenticating with `token`.
pub fn render(server: &str, ca_pem: &str, token: &str) -> String {
    let ca = STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {NAME}
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {NAME}
  user:
    token: {token}
contexts:
- name: {NAME}
  context:
    cluster: {NAME}
    user: {NAME}
    namespace: default
current-context: {NAME}
preferences: {{}}
",
        server = q(server),
        token = q(token),
    )
}

/// Writes the kubeconfig to `path` (mode 0600, replaced atomically).
pub fn write(path: &Path, server: &str, ca_pem: &str, token: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp-standin");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(render(server, ca_pem, token).as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn renders_parsable_yaml() {
        let y = render(
            "https://127.0.0.1:6443",
            "-----BEGIN CERTIFICATE-----\n",
            "t:ok\"x",
        );
        let v: Value = serde_saphyr::from_str(&y).unwrap();
        assert_eq!(v["kind"], "Config");
        assert_eq!(v["current-context"], NAME);
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        assert_eq!(v["users"][0]["user"]["token"], "t:ok\"x");
        let ca = v["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .unwrap();
        assert_eq!(
            STANDARD.decode(ca).unwrap(),
            b"-----BEGIN CERTIFICATE-----\n"
        );
        assert_eq!(v["contexts"][0]["context"]["user"], NAME);
    }
}
