//! Hostile input at the binary level (issue 6, part 3; docs/hostile-input.md): what a pod author, a NAD
//! author or a broken runtime can hand plexus is refused with a clear CNI error (right code, naming the
//! pod, the network and the limit) before anything runs, never a panic, and secrets never reach a log.
//!
//! The Kubernetes side is a small in-process fake API server (plain HTTP on 127.0.0.1, [`FakeApi`]) that
//! serves one pod and its NADs, answers the status PATCH and events, and records every request with its
//! `Authorization` header. plexus must share the test's network namespace to reach it: the refusal tests
//! run plexus in the host namespace (they fail before any namespace work); the tests that run a whole ADD
//! need root (they are `#[ignore]`d with the reason; CI runs them as root).

mod common;

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    thread,
};

use common::{CID, Harness, Output, merge, recorder};
use serde_json::{Value, json};

const NS: &str = "pods";
const POD: &str = "web";
const UID: &str = "0f6c6d8e-1c4b-4c55-9b5e-2d2a8c9e7a11";
/// The bearer token in every kubeconfig these tests write; it must never appear in a log or a reply.
const TOKEN: &str = "plexus-test-token-9d1e3b7c5a0f4e62b8c1d7a9e3f50b2c";
/// Key material in a kubeconfig's `client-key-data`; it must never appear either.
const KEY_MATERIAL: &str = "PLEXUSSECRETKEYMATERIAL0123456789abcdef";

// ---------------------------------------------------------------------------------------------------
// A fake Kubernetes API server
// ---------------------------------------------------------------------------------------------------

/// One request the fake API saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
}

/// A plain-HTTP Kubernetes API stand-in for one pod: `GET` of the pod and of NADs from [`FakeApi::put`],
/// `PATCH` of the pod's status (answered with the pod), `POST` of events (echoed); anything else is a
/// `404` Status. Every request is recorded.
struct FakeApi {
    port: u16,
    objects: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeApi {
    fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake API");
        let port = listener.local_addr().unwrap().port();
        let objects: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (o, s) = (objects.clone(), seen.clone());
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (o, s) = (o.clone(), s.clone());
                thread::spawn(move || {
                    let _ = serve(stream, &o, &s);
                });
            }
        });
        FakeApi {
            port,
            objects,
            seen,
        }
    }

    /// Serve `body` at `path` (GET; the pod's path also answers its status PATCH).
    fn put(&self, path: &str, body: Vec<u8>) {
        self.objects.lock().unwrap().insert(path.to_string(), body);
    }

    /// The pod `pods/web` with `annotations`.
    fn put_pod(&self, annotations: Value) {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": POD, "namespace": NS, "uid": UID, "annotations": annotations},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        });
        self.put(&pod_path(), serde_json::to_vec(&pod).unwrap());
    }

    /// A NAD `pods/<name>` whose `spec.config` is `config`.
    fn put_nad(&self, name: &str, config: &Value) {
        let nad = json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"config": config.to_string()},
        });
        self.put(
            &format!(
                "/apis/k8s.cni.cncf.io/v1/namespaces/{NS}/network-attachment-definitions/{name}"
            ),
            serde_json::to_vec(&nad).unwrap(),
        );
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// A kubeconfig for this server with the bearer [`TOKEN`] (and, with `client_key`, a client
    /// certificate and key), written with `mode`.
    fn kubeconfig(&self, h: &Harness, mode: u32, client_key: bool) -> PathBuf {
        let mut user = format!("    token: {TOKEN}\n");
        if client_key {
            let cert =
                b64(b"-----BEGIN CERTIFICATE-----\nMIIBnotacert\n-----END CERTIFICATE-----\n");
            let key = b64(format!(
                "-----BEGIN PRIVATE KEY-----\n{KEY_MATERIAL}\n-----END PRIVATE KEY-----\n"
            )
            .as_bytes());
            user.push_str(&format!(
                "    client-certificate-data: {cert}\n    client-key-data: {key}\n"
            ));
        }
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{}\n\
             users:\n- name: plexus\n  user:\n{user}contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: plexus\n\
             current-context: fake\n",
            self.port
        );
        let p = h.path("plexus.kubeconfig");
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }
}

fn pod_path() -> String {
    format!("/api/v1/namespaces/{NS}/pods/{POD}")
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn serve(
    stream: TcpStream,
    objects: &Mutex<BTreeMap<String, Vec<u8>>>,
    seen: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let path = target.split('?').next().unwrap_or_default().to_string();
    let (mut length, mut authorization) = (0usize, None);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().unwrap_or(0),
                "authorization" => authorization = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        authorization,
    });
    let pod_status = format!("{}/status", pod_path());
    let objects = objects.lock().unwrap();
    let (status, reply) = match method.as_str() {
        "GET" => match objects.get(&path) {
            Some(b) => (200, b.clone()),
            None => (404, not_found(&path)),
        },
        "PATCH" if path == pod_status => match objects.get(&pod_path()) {
            Some(b) => (200, b.clone()),
            None => (404, not_found(&path)),
        },
        "POST" if path.ends_with("/events") => (201, body),
        _ => (404, not_found(&path)),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.len()
    )?;
    stream.write_all(&reply)?;
    stream.flush()
}

fn not_found(path: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": format!("{path} not found"), "reason": "NotFound", "code": 404,
    }))
    .unwrap()
}

// ---------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------

fn pod_args() -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={NS};K8S_POD_NAME={POD};K8S_POD_INFRA_CONTAINER_ID={CID};K8S_POD_UID={UID}"
    )
}

/// A plexus config using the fake API, with the recorder as the cluster network.
fn k8s_config(h: &Harness, kubeconfig: &Path, extra: Value) -> Value {
    let mut cfg = h.config(
        "1.0.0",
        json!({"kubeconfig": kubeconfig, "delegates": [recorder("cluster", "1.0.0", json!({}))]}),
    );
    merge(&mut cfg, extra);
    cfg
}

/// ADD for the fake pod, run in the test's network namespace (it must fail before any namespace work).
fn refused_add(h: &Harness, cfg: &Value) -> Output {
    h.cmd("ADD")
        .args(&pod_args())
        .env("CNI_NETNS_OVERRIDE", "1")
        .in_host_netns()
        .config(cfg)
        .run()
}

/// Assert a refusal with `code` that names the pod and contains every one of `needles`; nothing ran
/// and nothing was left behind.
fn assert_refused(h: &Harness, out: &Output, code: u64, needles: &[&str], ctx: &str) {
    out.error(code);
    let msg = out.msg();
    assert!(
        msg.contains(&format!("{NS}/{POD}")),
        "{ctx}: the error names the pod: {out:?}"
    );
    for n in needles {
        assert!(msg.contains(n), "{ctx}: the error says {n:?}: {out:?}");
    }
    assert!(
        h.records().is_empty(),
        "{ctx}: no delegate runs, not even the cluster network: {out:?}"
    );
    h.assert_no_trace(CID, ctx);
}

// ---------------------------------------------------------------------------------------------------
// Plugin types that are paths (CNI-52, CVE-2021-20206)
// ---------------------------------------------------------------------------------------------------

#[test]
fn plugin_types_that_are_paths_are_refused_in_nads() {
    let cases = [
        (
            "conf type",
            json!({"cniVersion": "1.0.0", "type": "../../bin/sh"}),
            "type",
        ),
        (
            "absolute type",
            json!({"cniVersion": "1.0.0", "type": "/bin/sh"}),
            "type",
        ),
        (
            "dot-dot type",
            json!({"cniVersion": "1.0.0", "type": ".."}),
            "type",
        ),
        (
            "ipam type",
            json!({"cniVersion": "1.0.0", "type": "plexus-recorder", "ipam": {"type": "../host-local"}}),
            "ipam.type",
        ),
        (
            "chained plugin",
            json!({"cniVersion": "1.0.0", "plugins": [{"type": "plexus-recorder"}, {"type": "x/../../sh"}]}),
            "plugins[1].type",
        ),
    ];
    for (ctx, config, field) in cases {
        let h = Harness::new();
        let api = FakeApi::start();
        api.put_pod(json!({"k8s.v1.cni.cncf.io/networks": "evil"}));
        api.put_nad("evil", &config);
        let kc = api.kubeconfig(&h, 0o600, false);
        let out = refused_add(&h, &k8s_config(&h, &kc, json!({})));
        assert_refused(&h, &out, 7, &[&format!("{NS}/evil"), field], ctx);
    }
}

// ---------------------------------------------------------------------------------------------------
// NAD names and namespaces that are not DNS names (NPWG-9)
// ---------------------------------------------------------------------------------------------------

#[test]
fn nad_references_that_are_not_dns_names_are_refused_without_asking_the_api() {
    // Each value, and what the refusal says besides the pod, the annotation key and the element.
    let label = "is not a DNS-1123 label";
    let subdomain = "is not a DNS-1123 subdomain";
    let cases = [
        ("../x", label),
        ("x/..", subdomain),
        ("../../etc/passwd", "has more than one '/'"),
        ("ns/../x", "has more than one '/'"),
        ("Upper", subdomain),
        ("x%2F..", subdomain),
        ("x..y", subdomain),
        (r#"[{"name": "../x"}]"#, subdomain),
        (r#"[{"name": "x/y"}]"#, subdomain),
        (r#"[{"name": "x", "namespace": "../kube-system"}]"#, label),
        (r#"[{"name": "x", "namespace": "a.b"}]"#, label),
        (r#"[{"name": "-x"}]"#, subdomain),
    ];
    for (value, why) in cases {
        let h = Harness::new();
        let api = FakeApi::start();
        api.put_pod(json!({"k8s.v1.cni.cncf.io/networks": value}));
        let kc = api.kubeconfig(&h, 0o600, false);
        let cfg = k8s_config(&h, &kc, json!({}));
        let out = refused_add(&h, &cfg);
        assert_refused(
            &h,
            &out,
            7,
            &["k8s.v1.cni.cncf.io/networks", "element 0", why],
            value,
        );
        let nad_reads: Vec<_> = api
            .seen()
            .into_iter()
            .filter(|s| s.path.contains("network-attachment-definitions"))
            .collect();
        assert!(
            nad_reads.is_empty(),
            "{value}: no NAD is read: {nad_reads:?}"
        );
    }
    // The default-network annotation (EXT-4) is held to the same rule.
    let h = Harness::new();
    let api = FakeApi::start();
    api.put_pod(json!({"v1.multus-cni.io/default-network": "../x"}));
    let kc = api.kubeconfig(&h, 0o600, false);
    let out = refused_add(&h, &k8s_config(&h, &kc, json!({})));
    assert_refused(
        &h,
        &out,
        7,
        &["v1.multus-cni.io/default-network", label],
        "default-network",
    );
}

// ---------------------------------------------------------------------------------------------------
// Interface names (CNI-53, NPWG-25)
// ---------------------------------------------------------------------------------------------------

#[test]
fn invalid_interface_names_in_annotations_are_refused() {
    let sixteen = "abcdefghijklmnop";
    let cases = [
        json!([{"name": "net", "interface": "a/b"}]),
        json!([{"name": "net", "interface": " "}]),
        json!([{"name": "net", "interface": "a b"}]),
        json!([{"name": "net", "interface": "."}]),
        json!([{"name": "net", "interface": ".."}]),
        json!([{"name": "net", "interface": "a:b"}]),
        json!([{"name": "net", "interface": sixteen}]),
        json!([{"name": "net", "interface": "ééééééééé"}]),
        json!([{"name": "net", "interfaceRequest": "../eth0"}]),
        json!("net@.."),
        json!("net@a:b"),
        json!(format!("net@{sixteen}")),
        json!("net@"),
    ];
    for case in cases {
        let value = match &case {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let h = Harness::new();
        let api = FakeApi::start();
        api.put_pod(json!({"k8s.v1.cni.cncf.io/networks": value}));
        api.put_nad("net", &recorder("net", "1.0.0", json!({})));
        let kc = api.kubeconfig(&h, 0o600, false);
        let out = refused_add(&h, &k8s_config(&h, &kc, json!({})));
        assert_refused(&h, &out, 7, &["element 0", "interface"], &value);
    }
}

#[test]
fn invalid_cni_ifname_is_refused_with_code_4() {
    let h = Harness::new();
    let cfg = h.config(
        "1.0.0",
        json!({"delegates": [recorder("cluster", "1.0.0", json!({}))]}),
    );
    for ifname in ["..", ".", "a/b", "a b", "a:b", "abcdefghijklmnop", "eth0\n"] {
        let out = h
            .cmd("ADD")
            .ifname(ifname)
            .in_host_netns()
            .config(&cfg)
            .run();
        out.error(4);
        assert!(out.msg().contains("CNI_IFNAME"), "{ifname:?}: {out:?}");
        assert!(h.records().is_empty(), "{ifname:?}");
    }
    // An empty CNI_IFNAME is a missing one (CNI-8).
    let out = h.cmd("ADD").ifname("").in_host_netns().config(&cfg).run();
    out.error(4);
    assert!(out.msg().contains("CNI_IFNAME"), "{out:?}");
}

#[test]
fn container_ids_that_are_not_identifiers_are_refused_with_code_4() {
    // The container ID names the cache file and the lock under cniDir (CNI-53).
    let h = Harness::new();
    let cfg = h.config(
        "1.0.0",
        json!({"delegates": [recorder("cluster", "1.0.0", json!({}))]}),
    );
    for id in ["../escape", "a/b", ".hidden", "-x", "a b", "a;b", "é"] {
        for command in ["ADD", "DEL"] {
            let out = h
                .cmd(command)
                .container(id)
                .in_host_netns()
                .config(&cfg)
                .run();
            out.error(4);
            assert!(out.msg().contains("CNI_CONTAINERID"), "{id:?}: {out:?}");
        }
        assert!(h.records().is_empty(), "{id:?}");
        assert!(!h.root.join("escape").exists() && !h.path("cni/escape").exists());
    }
}

// ---------------------------------------------------------------------------------------------------
// Size and nesting limits
// ---------------------------------------------------------------------------------------------------

#[test]
fn huge_and_deep_annotations_are_refused_with_the_limit_in_the_error() {
    let many_text = vec!["net"; 5000].join(",");
    let many_json = Value::Array(vec![json!({"name": "net"}); 5000]).to_string();
    // Megabytes of JSON: one element with a 3 MiB string.
    let megabytes = json!([{"name": "net", "x.example/pad": "a".repeat(3 << 20)}]).to_string();
    let deep = format!(
        r#"[{{"name": "net", "cni-args": {{"x": {}1{}}}}}]"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let cases = [
        ("5000 text elements", many_text, "at most 1024"),
        ("5000 JSON elements", many_json, "at most 1024"),
        ("3 MiB of JSON", megabytes, "at most 262144 bytes"),
        (
            "10000 levels of nesting",
            deep,
            "nesting is deeper than 128 levels",
        ),
    ];
    for (ctx, value, limit) in cases {
        let h = Harness::new();
        let api = FakeApi::start();
        api.put_pod(json!({"k8s.v1.cni.cncf.io/networks": value}));
        api.put_nad("net", &recorder("net", "1.0.0", json!({})));
        let kc = api.kubeconfig(&h, 0o600, false);
        let out = refused_add(&h, &k8s_config(&h, &kc, json!({})));
        assert_refused(&h, &out, 7, &["k8s.v1.cni.cncf.io/networks", limit], ctx);
        assert!(
            out.stdout.len() < 4096,
            "{ctx}: the error does not echo the value ({} bytes)",
            out.stdout.len()
        );
    }
}

#[test]
fn deeply_nested_nad_config_and_stdin_are_refused() {
    let h = Harness::new();
    let api = FakeApi::start();
    api.put_pod(json!({"k8s.v1.cni.cncf.io/networks": "deep"}));
    let deep_config = format!(
        r#"{{"cniVersion": "1.0.0", "type": "plexus-recorder", "x": {}1{}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let nad = json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "deep", "namespace": NS}, "spec": {"config": deep_config},
    });
    api.put(
        &format!("/apis/k8s.cni.cncf.io/v1/namespaces/{NS}/network-attachment-definitions/deep"),
        serde_json::to_vec(&nad).unwrap(),
    );
    let kc = api.kubeconfig(&h, 0o600, false);
    let out = refused_add(&h, &k8s_config(&h, &kc, json!({})));
    assert_refused(
        &h,
        &out,
        7,
        &[&format!("{NS}/deep"), "nesting is deeper than 128 levels"],
        "deep NAD",
    );

    // The plexus config itself on stdin: code 6 (not a JSON config).
    let h = Harness::new();
    let stdin = format!(
        r#"{{"cniVersion": "1.0.0", "name": "n", "x": {}1{}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let out = h.cmd("ADD").in_host_netns().stdin(stdin).run();
    out.error(6);
    assert!(
        out.msg().contains("nesting is deeper than 128 levels"),
        "{out:?}"
    );
    assert!(h.records().is_empty());
}

// ---------------------------------------------------------------------------------------------------
// Non-UTF-8 input
// ---------------------------------------------------------------------------------------------------

/// Run plexus with raw environment bytes (the harness only takes strings).
fn run_raw(h: &Harness, env: &[(&str, &[u8])], stdin: &[u8]) -> (i32, Value) {
    let mut cmd = Command::new(common::plexus_bin());
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("PLEXUS_RECORDER_FILE", &h.record)
        .env("CNI_NETNS_OVERRIDE", "1")
        .env("CNI_NETNS", "/proc/self/ns/net");
    for (k, v) in env {
        cmd.env(k, OsStr::from_bytes(v));
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plexus");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    let code = out
        .status
        .code()
        .expect("plexus exits, never dies by a signal");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is one JSON document ({e}): {:?} / {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, doc)
}

#[test]
fn non_utf8_environment_and_stdin_are_refused() {
    let h = Harness::new();
    let cfg = serde_json::to_vec(&h.config(
        "1.0.0",
        json!({"delegates": [recorder("cluster", "1.0.0", json!({}))]}),
    ))
    .unwrap();
    let base: [(&str, &[u8]); 3] = [
        ("CNI_COMMAND", b"ADD"),
        ("CNI_CONTAINERID", CID.as_bytes()),
        ("CNI_IFNAME", b"eth0"),
    ];
    for (var, bad) in [
        ("CNI_IFNAME", &b"eth\xff"[..]),
        ("CNI_CONTAINERID", &b"cid-\xc3\x28"[..]),
        (
            "CNI_ARGS",
            &b"K8S_POD_NAME=\xfe\xfe;K8S_POD_NAMESPACE=pods"[..],
        ),
        ("CNI_PATH", &b"/opt/\xffbin"[..]),
        ("CNI_NETNS", &b"/proc/self/ns/\xff"[..]),
    ] {
        let mut env: Vec<(&str, &[u8])> = base.iter().filter(|(k, _)| *k != var).copied().collect();
        env.push((var, bad));
        let (code, doc) = run_raw(&h, &env, &cfg);
        assert_eq!(code, 1, "{var}: {doc}");
        assert_eq!(doc["code"], 4, "{var}: invalid environment: {doc}");
        let msg = doc["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains(var) && msg.contains("UTF-8"),
            "{var}: the error names the variable: {doc}"
        );
        assert!(h.records().is_empty(), "{var}");
    }
    // Stdin: invalid UTF-8 inside a string, and as a bare byte.
    for stdin in [
        br#"{"cniVersion": "1.0.0", "name": "n\xff", "delegates": []}"#.to_vec(),
        b"{\"cniVersion\": \"1.0.0\", \xff}".to_vec(),
        b"\xef\xbb\xbf\xff\xfe".to_vec(),
    ] {
        let (code, doc) = run_raw(&h, &base, &stdin);
        assert_eq!(code, 1, "{doc}");
        assert_eq!(doc["code"], 6, "stdin is not a JSON config: {doc}");
        assert!(h.records().is_empty());
    }
}

#[test]
fn a_pod_whose_annotation_is_not_utf8_is_refused_naming_the_pod() {
    let h = Harness::new();
    let api = FakeApi::start();
    // The API server never sends this; a broken proxy might. The pod cannot be decoded.
    let mut pod = serde_json::to_vec(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": POD, "namespace": NS, "uid": UID,
                     "annotations": {"k8s.v1.cni.cncf.io/networks": "netXX"}},
    }))
    .unwrap();
    let at = pod.windows(5).position(|w| w == b"netXX").unwrap();
    pod[at + 3] = 0xff;
    pod[at + 4] = 0xfe;
    api.put(&pod_path(), pod);
    let kc = api.kubeconfig(&h, 0o600, false);
    let out = refused_add(&h, &k8s_config(&h, &kc, json!({})));
    out.error(999);
    assert!(out.msg().contains(&format!("{NS}/{POD}")), "{out:?}");
    assert!(h.records().is_empty());
    h.assert_no_trace(CID, "non-UTF-8 pod");

    // JSON escapes of lone surrogates inside the annotation value: valid pod JSON, invalid annotation.
    let h = Harness::new();
    let api = FakeApi::start();
    api.put_pod(json!({"k8s.v1.cni.cncf.io/networks": r#"[{"name": "\ud800"}]"#}));
    let kc = api.kubeconfig(&h, 0o600, false);
    let out = refused_add(&h, &k8s_config(&h, &kc, json!({})));
    assert_refused(
        &h,
        &out,
        7,
        &["k8s.v1.cni.cncf.io/networks", "not valid JSON"],
        "surrogate",
    );
}

// ---------------------------------------------------------------------------------------------------
// Credentials: the kubeconfig's mode, and no secret in any log line
// ---------------------------------------------------------------------------------------------------

/// Everything plexus wrote that a person could read: stdout, stderr and the log file.
fn everything_written(out: &Output, log: &Path) -> String {
    format!(
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        out.stderr,
        fs::read_to_string(log).unwrap_or_default()
    )
}

fn assert_no_secret(text: &str, ctx: &str) {
    let secrets = [
        TOKEN.to_string(),
        TOKEN[..24].to_string(),
        KEY_MATERIAL.to_string(),
        b64(KEY_MATERIAL.as_bytes()),
        b64(TOKEN.as_bytes()),
    ];
    for s in &secrets {
        assert!(
            !text.contains(s.as_str()),
            "{ctx}: a secret ({s:.12}…) appears in plexus's output:\n{text}"
        );
    }
}

#[test]
fn no_token_or_key_in_any_log_line_on_refusals() {
    // Refused ADDs at debug level: the API is asked with the token, the log says why it failed.
    for (ctx, annotation, client_key) in [
        ("invalid annotation", "../x", false),
        ("missing NAD", "absent", false),
        ("client key in the kubeconfig", "absent", true),
    ] {
        let h = Harness::new();
        let api = FakeApi::start();
        api.put_pod(json!({"k8s.v1.cni.cncf.io/networks": annotation}));
        let kc = api.kubeconfig(&h, 0o600, client_key);
        let log = h.path("plexus.log");
        let cfg = k8s_config(&h, &kc, json!({"logLevel": "debug", "logFile": log}));
        let out = refused_add(&h, &cfg);
        assert!(!out.success(), "{ctx}: {out:?}");
        let text = everything_written(&out, &log);
        // An unparsable client key fails the client's build before anything is logged at debug level (the
        // system CA roots, whose loading logged there, are not loaded for it any more); the others reach the
        // API with debug logging on.
        assert!(
            text.contains("DEBUG") || (client_key && text.contains("cannot build the API client")),
            "{ctx}: debug logging is on:\n{text}"
        );
        assert_no_secret(&text, ctx);
        if !client_key {
            let seen = api.seen();
            assert!(
                seen.iter()
                    .any(|s| s.authorization.as_deref() == Some(&format!("Bearer {TOKEN}"))),
                "{ctx}: plexus sent the token, so it was there to leak: {seen:?}"
            );
        }
    }
}

#[test]
#[ignore = "needs root: plexus must probe a pod network namespace while reaching the test's fake API server"]
fn no_token_in_any_log_line_on_a_full_add_check_del() {
    let h = Harness::new();
    let api = FakeApi::start();
    api.put_pod(json!({"k8s.v1.cni.cncf.io/networks": "net@net1"}));
    api.put_nad("net", &recorder("net", "1.0.0", json!({})));
    let kc = api.kubeconfig(&h, 0o600, false);
    let log = h.path("plexus.log");
    let cfg = k8s_config(&h, &kc, json!({"logLevel": "debug", "logFile": log}));
    let mut text = String::new();
    for command in ["ADD", "CHECK", "DEL"] {
        let out = h.cmd(command).args(&pod_args()).config(&cfg).run();
        out.ok();
        text.push_str(&everything_written(&out, &log));
    }
    assert!(text.contains("DEBUG"), "debug logging is on:\n{text}");
    assert_no_secret(&text, "ADD, CHECK, DEL");
    let seen = api.seen();
    assert!(
        seen.iter().any(|s| s.method == "PATCH")
            && seen
                .iter()
                .all(|s| s.authorization.as_deref() == Some(&format!("Bearer {TOKEN}"))),
        "every request carried the token: {seen:?}"
    );
    assert_eq!(
        common::calls(&h.records()),
        [
            "ADD cluster eth0",
            "ADD net net1",
            "CHECK cluster eth0",
            "CHECK net net1",
            "DEL net net1",
            "DEL cluster eth0"
        ]
    );
}

#[test]
#[ignore = "needs root: plexus must probe a pod network namespace while reaching the test's fake API server"]
fn a_kubeconfig_readable_by_others_is_warned_about_and_still_works() {
    for (mode, warned) in [(0o644, true), (0o640, true), (0o600, false), (0o400, false)] {
        let h = Harness::new();
        let api = FakeApi::start();
        api.put_pod(json!({}));
        let kc = api.kubeconfig(&h, mode, false);
        let cfg = k8s_config(&h, &kc, json!({"logLevel": "error"}));
        let out = h.cmd("ADD").args(&pod_args()).config(&cfg).run();
        out.result();
        assert_eq!(
            out.stderr.contains("is readable by other users"),
            warned,
            "mode {mode:o}: {out:?}"
        );
        if warned {
            assert!(out.stderr.contains(&format!("{:o}", mode)), "{out:?}");
        }
        assert_no_secret(&out.stderr, "kubeconfig warning");
        assert!(
            api.seen().iter().any(|s| s.method == "PATCH"),
            "mode {mode:o}: plexus used the API"
        );
        h.cmd("DEL").args(&pod_args()).config(&cfg).run().ok();
    }
}

#[test]
fn node_network_names_that_are_not_dns_names_never_reach_the_api_as_paths() {
    // clusterNetwork/defaultNetworks names (no '/') are looked up as NADs in multusNamespace, then in
    // confDir. A name no NAD can have is not asked of the API (it would be a URL path: "..", "a?b").
    for name in ["..", ".", "a?b", "a#b", "a b", "%2e%2e"] {
        let h = Harness::new();
        let api = FakeApi::start();
        api.put_pod(json!({}));
        let kc = api.kubeconfig(&h, 0o600, false);
        let cfg = h.config("1.0.0", json!({"kubeconfig": kc, "clusterNetwork": name}));
        let out = refused_add(&h, &cfg);
        out.error(7);
        assert!(out.msg().contains(name), "{name}: {out:?}");
        let odd: Vec<_> = api
            .seen()
            .into_iter()
            .filter(|s| s.path.contains("network-attachment-definitions"))
            .collect();
        assert!(odd.is_empty(), "{name}: {odd:?}");
        assert!(h.records().is_empty());
    }
    // multusNamespace must be a namespace name.
    for ns in ["..", "a/b", "Kube-System"] {
        let h = Harness::new();
        let api = FakeApi::start();
        api.put_pod(json!({}));
        let kc = api.kubeconfig(&h, 0o600, false);
        let cfg = h.config(
            "1.0.0",
            json!({"kubeconfig": kc, "clusterNetwork": "cluster", "multusNamespace": ns}),
        );
        let out = refused_add(&h, &cfg);
        out.error(7);
        assert!(out.msg().contains("multusNamespace"), "{ns}: {out:?}");
        assert!(api.seen().is_empty(), "{ns}: {:?}", api.seen());
    }
}
