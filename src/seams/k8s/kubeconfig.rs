//! Reading a kubeconfig file as `kube::config::Kubeconfig::read_from` does (documents merged, relative
//! file paths made absolute), but through one `serde_json::Value` tree: the YAML deserializer is then
//! instantiated once, for `Value`, instead of once per kubeconfig type, which was 0.4 MB of the thin
//! binary's code (BENCHMARKS.md, "Issue 17").

use std::path::Path;

use kube::config::Kubeconfig;
use serde_json::Value;

/// The kubeconfig at `path`, every YAML document in it merged (the first wins, as in kube and kubectl).
pub fn read(path: &Path) -> Result<Kubeconfig, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    parse(&decode(bytes)?, path.parent())
}

/// A kubeconfig's text, as [`read`] reads it; relative file names are taken relative to `dir`, if given.
pub fn parse(text: &str, dir: Option<&Path>) -> Result<Kubeconfig, String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
    let mut merged: Option<Kubeconfig> = None;
    for mut doc in docs {
        if doc.is_null() {
            continue;
        }
        // Typed straight from YAML, `name: 1` is the string "1"; through a JSON tree it is a number.
        // No kubeconfig field is numeric, so every number is read back as its text.
        numbers_as_text(&mut doc);
        let mut kc: Kubeconfig = serde_json::from_value(doc).map_err(|e| e.to_string())?;
        if let Some(dir) = dir {
            absolute_paths(&mut kc, dir);
        }
        merged = Some(match merged {
            Some(m) => m.merge(kc).map_err(|e| e.to_string())?,
            None => kc,
        });
    }
    Ok(merged.unwrap_or_default())
}

/// The file's text: UTF-8 with or without a byte-order mark, or UTF-16 with one (kubectl on Windows).
fn decode(bytes: Vec<u8>) -> Result<String, String> {
    let utf16 = |rest: &[u8], big: bool| {
        let units: Vec<u16> = rest
            .chunks(2)
            .map(|c| {
                let pair = [c[0], *c.get(1).unwrap_or(&0)];
                if big {
                    u16::from_be_bytes(pair)
                } else {
                    u16::from_le_bytes(pair)
                }
            })
            .collect();
        String::from_utf16(&units).map_err(|_| "invalid UTF-16".to_string())
    };
    match bytes.as_slice() {
        [0xFF, 0xFE, rest @ ..] => utf16(rest, false),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, true),
        [0xEF, 0xBB, 0xBF, rest @ ..] => {
            String::from_utf8(rest.to_vec()).map_err(|_| "invalid UTF-8".to_string())
        }
        _ => String::from_utf8(bytes).map_err(|_| "invalid UTF-8".to_string()),
    }
}

fn numbers_as_text(v: &mut Value) {
    match v {
        Value::Number(n) => *v = Value::String(n.to_string()),
        Value::Array(items) => items.iter_mut().for_each(numbers_as_text),
        Value::Object(map) => map.values_mut().for_each(numbers_as_text),
        _ => {}
    }
}

/// Files named relative to the kubeconfig are relative to its directory; an exec command only when it
/// names a path (has a separator), not a program looked up in `PATH`.
fn absolute_paths(kc: &mut Kubeconfig, dir: &Path) {
    let fix = |p: &mut Option<String>| {
        if let Some(rel) = p.as_deref().filter(|s| Path::new(s).is_relative())
            && let Some(abs) = dir.join(rel).to_str()
        {
            *p = Some(abs.to_owned());
        }
    };
    for cluster in kc.clusters.iter_mut().filter_map(|n| n.cluster.as_mut()) {
        fix(&mut cluster.certificate_authority);
    }
    for user in kc
        .auth_infos
        .iter_mut()
        .filter_map(|n| n.auth_info.as_mut())
    {
        fix(&mut user.client_certificate);
        fix(&mut user.client_key);
        fix(&mut user.token_file);
        if let Some(exec) = user.exec.as_mut()
            && exec
                .command
                .as_deref()
                .is_some_and(|c| c.contains(std::path::MAIN_SEPARATOR))
        {
            fix(&mut exec.command);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What kube's own reader makes of `text` and what ours makes of it, as JSON (secrets included, since
    /// kube serializes them).
    fn both(text: &[u8]) -> (Value, Value) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, text).unwrap();
        let theirs = Kubeconfig::read_from(&path).expect("kube reads it");
        let ours = read(&path).expect("plexus reads it");
        (
            serde_json::to_value(theirs).unwrap(),
            serde_json::to_value(ours).unwrap(),
        )
    }

    const FULL: &str = r#"apiVersion: v1
kind: Config
current-context: plexus
preferences: {}
clusters:
- name: local
  cluster:
    server: https://10.96.0.1:443
    certificate-authority: ca.crt
    tls-server-name: kubernetes.default.svc
    insecure-skip-tls-verify: false
    proxy-url: http://proxy:3128
- name: 42
  cluster:
    server: https://[fd00::1]:6443
    certificate-authority-data: Zm9v
contexts:
- name: plexus
  context: {cluster: local, user: plexus, namespace: kube-system}
users:
- name: plexus
  user:
    token: abc.def
    tokenFile: /var/run/secrets/token
    client-certificate: certs/client.crt
    client-key: /abs/client.key
- name: exec-rel
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: ./bin/get-token
      args: [--port, 8080, "--x"]
      env: [{name: A, value: "1"}]
      provideClusterInfo: true
      interactiveMode: Never
- name: exec-path
  user:
    exec: {apiVersion: client.authentication.k8s.io/v1, command: aws}
- name: provider
  user:
    auth-provider: {name: oidc, config: {client-id: x, expires-in: 3600}}
"#;

    #[test]
    fn reads_a_kubeconfig_as_kube_does() {
        let (theirs, ours) = both(FULL.as_bytes());
        assert_eq!(ours, theirs);
        // The cases that differ from a plain parse, checked on their own so a change in kube shows here.
        let users = &ours["users"];
        assert!(
            users[0]["user"]["client-certificate"]
                .as_str()
                .unwrap()
                .ends_with("/certs/client.crt")
        );
        assert_eq!(users[0]["user"]["client-key"], "/abs/client.key");
        assert!(
            users[1]["user"]["exec"]["command"]
                .as_str()
                .unwrap()
                .ends_with("/./bin/get-token")
        );
        assert_eq!(users[1]["user"]["exec"]["args"][1], "8080");
        assert_eq!(users[2]["user"]["exec"]["command"], "aws");
        assert_eq!(ours["clusters"][1]["name"], "42");
    }

    #[test]
    fn merges_documents_and_reads_byte_order_marks_as_kube_does() {
        let two = "current-context: a\nclusters:\n- name: c\n  cluster: {server: https://a}\n---\n\
                   current-context: b\nclusters:\n- name: c\n  cluster: {server: https://b}\n- name: d\n  \
                   cluster: {server: https://d}\n";
        let (theirs, ours) = both(two.as_bytes());
        assert_eq!(ours, theirs);
        assert_eq!(ours["current-context"], "a");
        assert_eq!(ours["clusters"].as_array().unwrap().len(), 2);

        let mut bom = vec![0xEF, 0xBB, 0xBF];
        bom.extend_from_slice(FULL.as_bytes());
        let (theirs, ours) = both(&bom);
        assert_eq!(ours, theirs);

        let mut le = vec![0xFF, 0xFE];
        le.extend(FULL.encode_utf16().flat_map(u16::to_le_bytes));
        let (theirs, ours) = both(&le);
        assert_eq!(ours, theirs);
        assert_eq!(ours["current-context"], "plexus");
    }

    #[test]
    fn an_empty_file_is_an_empty_kubeconfig_and_bad_yaml_an_error() {
        let (theirs, ours) = both(b"");
        assert_eq!(ours, theirs);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad");
        std::fs::write(&path, "clusters: [unclosed").unwrap();
        assert!(read(&path).is_err());
        std::fs::write(&path, "clusters: 7").unwrap();
        assert!(read(&path).is_err(), "a scalar where a list belongs");
    }
}
