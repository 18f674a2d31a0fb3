//! The real `plexus-shim` binary against a fake daemon: a std `UnixListener` on a thread, in a temporary
//! directory, speaking Go Multus's socket API
//! (docs/daemon.md, "Wire format, and Go Multus's shim").

use std::{
    fs,
    io::{self, Read, Write},
    os::unix::{fs::PermissionsExt, net::UnixListener},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc::{self, Receiver},
    thread,
    time::{Duration, Instant},
};

use base64::Engine;
use serde_json::{Value, json};

const SHIM: &str = env!("CARGO_BIN_EXE_plexus-shim");
/// No test may take longer than this; the fake daemon's threads stop after it too.
const LIMIT: Duration = Duration::from_secs(30);

/// One request as the fake daemon read it.
#[derive(Debug)]
struct Recorded {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// What the fake daemon does with one connection.
enum Reply {
    /// Read the request, write these bytes, close.
    Raw(Vec<u8>),
    /// Read the request, close without a reply (the daemon died mid-request).
    Drop,
}

fn with_length(status: &str, body: &str) -> Reply {
    Reply::Raw(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

/// Chunked as Go's net/http sends bodies it has no length for, in 7-byte chunks.
fn chunked(status: &str, body: &str) -> Reply {
    let mut out = format!("HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
    for chunk in body.as_bytes().chunks(7) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    Reply::Raw(out)
}

fn read_request(stream: &mut impl Read) -> io::Result<Recorded> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof in head"));
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let mut lines = head.trim_end().split("\r\n");
    let request_line = lines.next().unwrap().to_string();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; len];
    stream.read_exact(&mut body)?;
    Ok(Recorded {
        request_line,
        headers,
        body,
    })
}

/// Serve `replies` in order on a socket at `path`, bound after `delay`; every request read is sent on the
/// returned channel. The thread gives up after [`LIMIT`].
fn serve(path: &Path, delay: Duration, replies: Vec<Reply>) -> Receiver<Recorded> {
    let (tx, rx) = mpsc::channel();
    let path = path.to_path_buf();
    // Without a delay the socket exists before this returns: DEL does not wait for a daemon (it falls back
    // at once), so a bind left to the thread would race the shim.
    let bound = delay.is_zero().then(|| UnixListener::bind(&path).unwrap());
    thread::spawn(move || {
        let listener = bound.unwrap_or_else(|| {
            thread::sleep(delay);
            UnixListener::bind(&path).unwrap()
        });
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + LIMIT;
        for reply in replies {
            let mut stream = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            return;
                        }
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            };
            stream.set_nonblocking(false).unwrap();
            stream.set_read_timeout(Some(LIMIT)).unwrap();
            stream.set_write_timeout(Some(LIMIT)).unwrap();
            let Ok(recorded) = read_request(&mut stream) else {
                return;
            };
            let _ = tx.send(recorded);
            if let Reply::Raw(bytes) = reply {
                let _ = stream.write_all(&bytes);
            }
        }
    });
    rx
}

struct Run {
    stdout: String,
    stderr: String,
    code: i32,
    elapsed: Duration,
}

impl Run {
    fn error(&self) -> Value {
        assert_eq!(
            self.code, 1,
            "stdout {} stderr {}",
            self.stdout, self.stderr
        );
        let v: Value =
            serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", self.stdout));
        assert!(v["code"].is_u64(), "{v}");
        v
    }

    fn result(&self) -> Value {
        assert_eq!(
            self.code, 0,
            "stdout {} stderr {}",
            self.stdout, self.stderr
        );
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", self.stdout))
    }
}

/// Run `bin` with only `env` (and PATH), `stdin` on its stdin; killed (and the test failed) after [`LIMIT`].
fn run_bin(bin: &Path, env: &[(&str, &str)], stdin: &str) -> Run {
    let start = Instant::now();
    let mut tries = 0;
    let mut child = loop {
        let spawned = Command::new(bin)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match spawned {
            // A copy just written by a parallel test may be open for writing in a forked child.
            Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                tries += 1;
                thread::sleep(Duration::from_millis(20));
            }
            other => break other.unwrap(),
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).map(|_| s)
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).map(|_| s)
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > LIMIT {
            child.kill().unwrap();
            panic!("{} did not finish in {LIMIT:?}", bin.display());
        }
        thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    Run {
        stdout: out.join().unwrap().unwrap(),
        stderr: err.join().unwrap().unwrap(),
        code: status.code().expect("exit code"),
        elapsed,
    }
}

fn run(env: &[(&str, &str)], stdin: &str) -> Run {
    run_bin(Path::new(SHIM), env, stdin)
}

/// A conf pointing at `dir`'s socket.
fn conf(dir: &Path, version: &str, extra: Value) -> String {
    let mut c = json!({
        "cniVersion": version,
        "name": "plexus-network",
        "type": "plexus-shim",
        "daemonSocketDir": dir,
        "logToStderr": true,
    });
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    c.to_string()
}

fn sock(dir: &Path) -> PathBuf {
    dir.join(plexus_shim::wire::SOCKET_NAME)
}

fn env(command: &str) -> Vec<(&str, &str)> {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "c0ffee"),
        ("CNI_NETNS", "/run/netns/pod"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        (
            "CNI_ARGS",
            "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod;K8S_POD_UID=u1",
        ),
        ("SOME_OTHER_VAR", "kept=as is"),
    ]
}

/// A 1.0.0 result, as the daemon puts it on the wire.
fn wire_result() -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/run/netns/pod"}],
        "ips": [{"interface": 0, "address": "10.1.0.5/24", "gateway": "10.1.0.1"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
        "dns": {"nameservers": ["10.96.0.10"]}
    })
}

fn ok_add() -> Reply {
    with_length("200 OK", &json!({"Result": wire_result()}).to_string())
}

fn recv(rx: &Receiver<Recorded>) -> Recorded {
    rx.recv_timeout(LIMIT)
        .expect("the fake daemon got a request")
}

/// The request (docs/daemon.md, "Wire format, and Go Multus's shim"): every env var of the shim and its stdin
/// (base64) in a JSON body, POST /cni over HTTP/1.1 with a fake host and keep-alive off.
#[test]
fn request_line_headers_and_body() {
    let dir = tempfile::tempdir().unwrap();
    let rx = serve(&sock(dir.path()), Duration::ZERO, vec![ok_add()]);
    let stdin = conf(dir.path(), "1.0.0", json!({"extra": {"kept": true}}));
    let out = run(&env("ADD"), &stdin);
    out.result();
    let req = recv(&rx);
    assert_eq!(req.request_line, "POST /cni HTTP/1.1");
    assert_eq!(req.header("Host"), Some("plexus"));
    assert_eq!(req.header("Content-Type"), Some("application/json"));
    assert_eq!(req.header("Connection"), Some("close"));
    assert_eq!(
        req.header("Content-Length"),
        Some(req.body.len().to_string().as_str())
    );
    let body = req.json();
    let sent_env = body["env"].as_object().unwrap();
    for (k, v) in env("ADD") {
        assert_eq!(sent_env[k], v, "{k}");
    }
    assert_eq!(sent_env["PATH"], "/usr/bin:/bin");
    assert_eq!(sent_env.len(), env("ADD").len() + 1, "{sent_env:?}");
    assert_eq!(
        body["config"],
        base64::engine::general_purpose::STANDARD.encode(stdin.as_bytes())
    );
    assert!(body.get("interfaceAttributes").is_none(), "{body}");
    // The shared wire type reads it back.
    let parsed: plexus_shim::wire::Request = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(parsed.config, stdin.as_bytes());
}

/// ADD prints the result converted to the shim conf's cniVersion (docs/daemon.md, "The shim").
#[test]
fn add_result_is_converted_to_the_conf_version() {
    for (version, chunk) in [("0.3.1", false), ("0.4.0", true), ("1.1.0", true)] {
        let dir = tempfile::tempdir().unwrap();
        let body = json!({"Result": wire_result()}).to_string();
        let reply = if chunk {
            chunked("200 OK", &body)
        } else {
            with_length("200 OK", &body)
        };
        let _rx = serve(&sock(dir.path()), Duration::ZERO, vec![reply]);
        let out = run(&env("ADD"), &conf(dir.path(), version, json!({})));
        let r = out.result();
        assert_eq!(r["cniVersion"], version);
        assert_eq!(r["interfaces"][0]["name"], "eth0");
        assert_eq!(r["ips"][0]["address"], "10.1.0.5/24");
        assert_eq!(r["ips"][0]["interface"], 0);
        assert_eq!(r["routes"][0]["gw"], "10.1.0.1");
        assert_eq!(r["dns"]["nameservers"][0], "10.96.0.10");
        if version == "1.1.0" {
            assert!(r["ips"][0].get("version").is_none(), "{r}");
        } else {
            assert_eq!(r["ips"][0]["version"], "4", "{r}");
        }
        assert!(out.stderr.is_empty(), "{}", out.stderr);
    }
}

#[test]
fn add_without_a_result_is_999() {
    let dir = tempfile::tempdir().unwrap();
    let _rx = serve(
        &sock(dir.path()),
        Duration::ZERO,
        vec![with_length("200 OK", "{}")],
    );
    let e = run(&env("ADD"), &conf(dir.path(), "1.0.0", json!({}))).error();
    assert_eq!(e["code"], 999);
    assert!(e["msg"].as_str().unwrap().contains("no result"), "{e}");
}

/// CNI error replies keep their code, ADD and DEL alike: Go's shim exits 0 on every DEL (Go Multus #1239);
/// plexus does not hide DEL failures (docs/multus-compat.md, "Daemon mode"). (A failed DEL is first done
/// again by the thin plexus; with none there, the daemon's error stands.)
#[test]
fn error_replies_pass_through_with_their_code_for_add_and_del() {
    for (command, code) in [("ADD", 7), ("DEL", 3)] {
        let dir = tempfile::tempdir().unwrap();
        let body = json!({"code": code, "msg": "daemon says no", "details": "because"}).to_string();
        let _rx = serve(
            &sock(dir.path()),
            Duration::ZERO,
            vec![chunked("400 Bad Request", &body)],
        );
        let no_thin = json!({"thinBinary": dir.path().join("no-thin-plexus")});
        let out = run(&env(command), &conf(dir.path(), "0.4.0", no_thin));
        let e = out.error();
        assert_eq!(e["code"], code, "{command}");
        assert_eq!(e["msg"], "daemon says no");
        assert_eq!(e["details"], "because");
        assert_eq!(e["cniVersion"], "0.4.0");
        assert!(out.stderr.contains("daemon says no"), "{}", out.stderr);
    }
}

#[test]
fn del_check_gc_success_prints_nothing() {
    for command in ["DEL", "CHECK", "GC", "STATUS"] {
        let dir = tempfile::tempdir().unwrap();
        let rx = serve(
            &sock(dir.path()),
            Duration::ZERO,
            vec![with_length("200 OK", "")],
        );
        let out = run(&env(command), &conf(dir.path(), "1.1.0", json!({})));
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (0, ""),
            "{command}: {}",
            out.stderr
        );
        assert_eq!(recv(&rx).json()["env"]["CNI_COMMAND"], command);
    }
}

/// On error the daemon may answer a plain-text message; it becomes code 999 (docs/multus-compat.md, "Daemon
/// mode").
#[test]
fn a_non_cni_error_body_becomes_999() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("  ContainerID:c0ffee ERRORED: boom {}\n", "x".repeat(3000));
    let _rx = serve(
        &sock(dir.path()),
        Duration::ZERO,
        vec![with_length("500 Internal Server Error", &text)],
    );
    let e = run(&env("ADD"), &conf(dir.path(), "1.0.0", json!({}))).error();
    assert_eq!(e["code"], 999);
    assert!(e["msg"].as_str().unwrap().contains("500"), "{e}");
    let details = e["details"].as_str().unwrap();
    assert!(
        details.starts_with("ContainerID:c0ffee ERRORED: boom"),
        "{details}"
    );
    assert!(details.len() < 1100, "{}", details.len());
}

/// The daemon is not up yet (Go Multus #1165; docs/daemon.md, "The shim"): ADD waits for the socket instead
/// of failing.
#[test]
fn add_waits_for_the_daemon_to_come_up() {
    let dir = tempfile::tempdir().unwrap();
    let rx = serve(
        &sock(dir.path()),
        Duration::from_millis(500),
        vec![ok_add()],
    );
    let out = run(
        &env("ADD"),
        &conf(dir.path(), "1.0.0", json!({"daemonWaitSeconds": 10})),
    );
    assert_eq!(out.result()["ips"][0]["address"], "10.1.0.5/24");
    assert!(
        out.elapsed >= Duration::from_millis(450),
        "{:?}",
        out.elapsed
    );
    recv(&rx);
}

/// A daemon that answers 503 (not ready, `/readyz`; docs/daemon.md, "The shim") is waited for like one that
/// is not there.
#[test]
fn add_retries_while_the_daemon_answers_503() {
    let dir = tempfile::tempdir().unwrap();
    let not_ready = json!({"code": 11, "msg": "plexus daemon is starting"}).to_string();
    let rx = serve(
        &sock(dir.path()),
        Duration::ZERO,
        vec![with_length("503 Service Unavailable", &not_ready), ok_add()],
    );
    let out = run(
        &env("ADD"),
        &conf(dir.path(), "1.0.0", json!({"daemonWaitSeconds": 10})),
    );
    out.result();
    recv(&rx);
    recv(&rx);
}

#[test]
fn add_gives_up_with_code_11_after_daemon_wait_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &env("ADD"),
        &conf(dir.path(), "1.0.0", json!({"daemonWaitSeconds": 1})),
    );
    let e = out.error();
    assert_eq!(e["code"], 11);
    let details = e["details"].as_str().unwrap();
    assert!(
        details.contains(sock(dir.path()).to_str().unwrap()),
        "{details}"
    );
    assert!(details.contains("after waiting 1."), "{details}");
    assert!(
        out.elapsed >= Duration::from_millis(950),
        "{:?}",
        out.elapsed
    );
    assert!(out.elapsed < Duration::from_secs(5), "{:?}", out.elapsed);
}

/// A socket file nobody listens on (a daemon that died): connection refused, waited for, then code 11.
#[test]
fn add_to_a_dead_socket_gives_up_naming_the_refusal() {
    let dir = tempfile::tempdir().unwrap();
    drop(UnixListener::bind(sock(dir.path())).unwrap());
    let out = run(
        &env("CHECK"),
        &conf(dir.path(), "1.0.0", json!({"daemonWaitSeconds": 0.3})),
    );
    let e = out.error();
    assert_eq!(e["code"], 11);
    assert!(e["details"].as_str().unwrap().contains("refused"), "{e}");
}

/// A daemon that dies mid-ADD: code 11 at once, no second attempt (the runtime DELs and retries).
#[test]
fn add_dropped_mid_request_is_11_without_retry() {
    let dir = tempfile::tempdir().unwrap();
    let rx = serve(
        &sock(dir.path()),
        Duration::ZERO,
        vec![Reply::Drop, ok_add()],
    );
    let out = run(
        &env("ADD"),
        &conf(dir.path(), "1.0.0", json!({"daemonWaitSeconds": 10})),
    );
    let e = out.error();
    assert_eq!(e["code"], 11);
    assert!(e["msg"].as_str().unwrap().contains("dropped"), "{e}");
    recv(&rx);
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "ADD was retried"
    );
    assert!(out.elapsed < Duration::from_secs(2), "{:?}", out.elapsed);
}

/// STATUS does not wait (Go's shim waits up to 60 s for `/readyz`; docs/multus-compat.md,
/// "Daemon mode"): code 50 at once.
#[test]
fn status_with_no_daemon_is_50_immediately() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &env("STATUS"),
        &conf(dir.path(), "1.1.0", json!({"daemonWaitSeconds": 30})),
    );
    let e = out.error();
    assert_eq!(e["code"], 50);
    assert_eq!(e["cniVersion"], "1.1.0");
    assert!(
        e["details"]
            .as_str()
            .unwrap()
            .contains(sock(dir.path()).to_str().unwrap()),
        "{e}"
    );
    assert!(out.elapsed < Duration::from_secs(1), "{:?}", out.elapsed);
}

#[test]
fn version_is_answered_without_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &[("CNI_COMMAND", "VERSION")],
        &conf(dir.path(), "0.4.0", json!({})),
    );
    let v = out.result();
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(v["supportedVersions"][6], "1.1.0");
}

#[test]
fn no_command_prints_the_about_line() {
    let out = run(&[], "");
    assert_eq!((out.code, out.stdout.as_str()), (0, ""));
    assert!(out.stderr.starts_with("plexus-shim "), "{}", out.stderr);
}

#[test]
fn a_conf_that_is_not_json_is_code_6() {
    let e = run(&env("ADD"), "{\"cniVersion\": ").error();
    assert_eq!(e["code"], 6);
}

/// A copy of the shim in a fresh `bin` directory, with a fake thin `plexus` beside it (when `script` is
/// given) that records its environment and stdin under `dir`.
fn install(dir: &Path, script: Option<&str>) -> PathBuf {
    let bin = dir.join("bin");
    fs::create_dir(&bin).unwrap();
    let shim = bin.join("plexus-shim");
    fs::copy(SHIM, &shim).unwrap();
    if let Some(tail) = script {
        write_script(&bin.join("plexus"), dir, tail);
    }
    shim
}

fn write_script(path: &Path, record_dir: &Path, tail: &str) {
    let text = format!(
        "#!/bin/sh\nenv > '{0}/thin.env'\ncat > '{0}/thin.stdin'\n{tail}\n",
        record_dir.display()
    );
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// The daemon is gone (uninstalled, crashed; Go Multus #1146; docs/multus-compat.md, "Daemon mode"): DEL is
/// done by the thin plexus beside the shim, from the cache, with the same environment and stdin.
#[test]
fn del_with_no_daemon_runs_the_thin_plexus() {
    let dir = tempfile::tempdir().unwrap();
    let shim = install(dir.path(), Some("exit 0"));
    let stdin = conf(dir.path(), "1.0.0", json!({}));
    let out = run_bin(&shim, &env("DEL"), &stdin);
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{}", out.stderr);
    let recorded_env = fs::read_to_string(dir.path().join("thin.env")).unwrap();
    for (k, v) in env("DEL") {
        assert!(
            recorded_env.lines().any(|l| l == format!("{k}={v}")),
            "{k}: {recorded_env}"
        );
    }
    assert_eq!(
        fs::read_to_string(dir.path().join("thin.stdin")).unwrap(),
        stdin
    );
    assert!(
        out.stderr.contains("DEL done by thin plexus"),
        "{}",
        out.stderr
    );
    // One attempt, no waiting for the daemon.
    assert!(out.elapsed < Duration::from_secs(2), "{:?}", out.elapsed);
}

#[test]
fn del_relays_the_thin_plexus_output_and_exit_code_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let reply = r#"{"cniVersion":"1.0.0","code":5,"msg":"from thin"}"#;
    let shim = install(dir.path(), Some(&format!("printf '%s' '{reply}'\nexit 3")));
    let out = run_bin(&shim, &env("DEL"), &conf(dir.path(), "1.0.0", json!({})));
    assert_eq!(out.code, 3);
    assert_eq!(out.stdout, reply);
}

/// The daemon dies mid-DEL: DEL is idempotent, so the thin plexus does it.
#[test]
fn del_dropped_mid_request_falls_back_to_the_thin_plexus() {
    let dir = tempfile::tempdir().unwrap();
    let shim = install(dir.path(), Some("exit 0"));
    let rx = serve(&sock(dir.path()), Duration::ZERO, vec![Reply::Drop]);
    let out = run_bin(&shim, &env("DEL"), &conf(dir.path(), "1.0.0", json!({})));
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{}", out.stderr);
    recv(&rx);
    assert!(dir.path().join("thin.env").exists());
}

/// A DEL the daemon failed is done again by the thin plexus on the host (what failed may be the daemon's
/// own view, e.g. a program missing from its image); the thin plexus's answer is the one the runtime gets.
#[test]
fn del_the_daemon_failed_is_done_again_by_the_thin_plexus() {
    let dir = tempfile::tempdir().unwrap();
    let shim = install(dir.path(), Some("exit 0"));
    let body =
        json!({"code": 999, "msg": "iptables: executable file not found in $PATH"}).to_string();
    let rx = serve(
        &sock(dir.path()),
        Duration::ZERO,
        vec![chunked("400 Bad Request", &body)],
    );
    let stdin = conf(dir.path(), "1.0.0", json!({}));
    let out = run_bin(&shim, &env("DEL"), &stdin);
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{}", out.stderr);
    recv(&rx);
    assert_eq!(
        fs::read_to_string(dir.path().join("thin.stdin")).unwrap(),
        stdin
    );
    assert!(
        out.stderr.contains("DEL done again by thin plexus") && out.stderr.contains("iptables"),
        "the log says why: {}",
        out.stderr
    );
    // A thin plexus that fails too: its error is the answer.
    let dir = tempfile::tempdir().unwrap();
    let reply = r#"{"cniVersion":"1.0.0","code":5,"msg":"from thin"}"#;
    let shim = install(dir.path(), Some(&format!("printf '%s' '{reply}'\nexit 1")));
    let _rx = serve(
        &sock(dir.path()),
        Duration::ZERO,
        vec![chunked("400 Bad Request", &body)],
    );
    let out = run_bin(&shim, &env("DEL"), &conf(dir.path(), "1.0.0", json!({})));
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (1, reply),
        "{}",
        out.stderr
    );
}

/// `thinBinary` names the fallback binary anywhere (here the shim is not copied).
#[test]
fn del_fallback_binary_can_be_named_in_the_conf() {
    let dir = tempfile::tempdir().unwrap();
    let thin = dir.path().join("my-thin-plexus");
    write_script(&thin, dir.path(), "exit 0");
    let stdin = conf(dir.path(), "1.0.0", json!({"thinBinary": thin}));
    let out = run(&env("DEL"), &stdin);
    assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
    assert_eq!(
        fs::read_to_string(dir.path().join("thin.stdin")).unwrap(),
        stdin
    );
}

#[test]
fn del_with_no_daemon_and_no_thin_plexus_is_11() {
    let dir = tempfile::tempdir().unwrap();
    let shim = install(dir.path(), None);
    let out = run_bin(&shim, &env("DEL"), &conf(dir.path(), "1.0.0", json!({})));
    let e = out.error();
    assert_eq!(e["code"], 11);
    let details = e["details"].as_str().unwrap();
    assert!(
        details.contains(sock(dir.path()).to_str().unwrap()),
        "{details}"
    );
    assert!(
        details.contains(dir.path().join("bin/plexus").to_str().unwrap()),
        "{details}"
    );
}
