//! Runs the built `plexus-recorder` binary as a CNI runtime would.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_plexus-recorder");

struct Outcome {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
    pid: u32,
}

impl Outcome {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout_text()))
    }
}

/// Runs the binary in `cwd` with exactly `env` and `stdin`.
fn run_in(cwd: &Path, env: &[(&str, &str)], stdin: &str) -> Outcome {
    let mut child = Command::new(BIN)
        .env_clear()
        .envs(env.iter().copied())
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn recorder");
    let pid = child.id();
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    Outcome {
        status: out.status,
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        pid,
    }
}

fn add_env<'a>(command: &'a str, container: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", container),
        ("CNI_NETNS", "/var/run/netns/test"),
        ("CNI_IFNAME", "net1"),
        ("CNI_ARGS", "K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns"),
        ("CNI_PATH", "/opt/cni/bin"),
        ("UNRELATED", "not recorded"),
    ]
}

fn read_records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("read record file")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = dir.path().join("records.jsonl");
    (dir, rec)
}

fn config(rec: &Path, extra: Value) -> String {
    let mut conf = json!({
        "cniVersion": "1.0.0",
        "name": "testnet",
        "type": "plexus-recorder",
        "recordFile": rec.to_str().expect("utf-8 path"),
    });
    if let (Some(map), Value::Object(extra)) = (conf.as_object_mut(), extra) {
        map.extend(extra);
    }
    conf.to_string()
}

fn now_ms() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    u64::try_from(ms).expect("fits")
}

#[test]
fn add_records_invocation_and_prints_result() {
    let (dir, rec) = setup();
    let stdin = config(&rec, json!({"ip": "192.168.7.9/24"}));
    let before = now_ms();
    let out = run_in(dir.path(), &add_env("ADD", "ctr-1"), &stdin);
    assert!(out.status.success(), "stderr: {}", out.stderr);

    let result = out.json();
    assert_eq!(result["cniVersion"], json!("1.0.0"));
    assert_eq!(result["interfaces"][0]["name"], json!("net1"));
    assert_eq!(
        result["interfaces"][0]["sandbox"],
        json!("/var/run/netns/test")
    );
    assert_eq!(
        result["ips"],
        json!([{"address": "192.168.7.9/24", "gateway": "192.168.7.1", "interface": 0}])
    );

    let records = read_records(&rec);
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r["command"], json!("ADD"));
    assert_eq!(
        r["env"],
        json!({
            "CNI_ARGS": "K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns",
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": "ctr-1",
            "CNI_IFNAME": "net1",
            "CNI_NETNS": "/var/run/netns/test",
            "CNI_PATH": "/opt/cni/bin",
        })
    );
    let sent: Value = serde_json::from_str(&stdin).expect("json");
    assert_eq!(r["stdin"], sent);
    assert_eq!(r["pid"], json!(out.pid));
    let t = r["time_ms"].as_u64().expect("time_ms");
    assert!(t >= before && t <= now_ms(), "time_ms {t} not in range");
}

#[test]
fn del_is_silent_and_recorded_after_add() {
    let (dir, rec) = setup();
    let rec_str = rec.to_str().expect("utf-8");
    let stdin = json!({"cniVersion": "0.4.0", "name": "n", "type": "plexus-recorder"}).to_string();
    let mut env = add_env("ADD", "ctr-2");
    env.push(("PLEXUS_RECORDER_FILE", rec_str));
    let add = run_in(dir.path(), &env, &stdin);
    assert!(add.status.success());
    assert_eq!(add.json()["ips"][0]["version"], json!("4"));

    let del_env = [
        ("CNI_COMMAND", "DEL"),
        ("CNI_CONTAINERID", "ctr-2"),
        ("CNI_IFNAME", "net1"),
        ("PLEXUS_RECORDER_FILE", rec_str),
    ];
    let del = run_in(dir.path(), &del_env, &stdin);
    assert!(del.status.success(), "stderr: {}", del.stderr);
    assert!(del.stdout.is_empty(), "DEL printed {:?}", del.stdout_text());

    let records = read_records(&rec);
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["command"], json!("ADD"));
    assert_eq!(records[1]["command"], json!("DEL"));
    assert_eq!(
        records[1]["env"],
        json!({"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "ctr-2", "CNI_IFNAME": "net1"})
    );
    assert!(records[1]["env"].get("PLEXUS_RECORDER_FILE").is_none());
}

#[test]
fn injected_error_is_cni_error_json_with_exit_1() {
    let (dir, rec) = setup();
    let behaviour = json!({"recorder": {"add": {"error": {"code": 11, "msg": "try later", "details": "busy"}}}});
    let out = run_in(dir.path(), &add_env("ADD", "c"), &config(&rec, behaviour));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        out.json(),
        json!({"cniVersion": "1.0.0", "code": 11, "msg": "try later", "details": "busy"})
    );
    assert_eq!(read_records(&rec).len(), 1);
}

#[test]
fn garbage_is_printed_verbatim() {
    let (dir, rec) = setup();
    let behaviour = json!({"recorder": {"all": {"garbage": "this is {not json"}}});
    let out = run_in(dir.path(), &add_env("DEL", "c"), &config(&rec, behaviour));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out.stdout_text(), "this is {not json");
}

#[test]
fn exit_code_prints_nothing() {
    let (dir, rec) = setup();
    let behaviour = json!({"recorder": {"add": {"exitCode": 42}}});
    let out = run_in(dir.path(), &add_env("ADD", "c"), &config(&rec, behaviour));
    assert_eq!(out.status.code(), Some(42));
    assert!(out.stdout.is_empty());
}

#[test]
fn signals_kill_the_process_after_recording() {
    let (dir, rec) = setup();
    for (name, signo) in [("KILL", 9), ("TERM", 15), ("SEGV", 11)] {
        let behaviour = json!({"recorder": {"add": {"signal": name}}});
        let out = run_in(dir.path(), &add_env("ADD", name), &config(&rec, behaviour));
        assert_eq!(out.status.signal(), Some(signo), "{name}: {:?}", out.status);
        assert!(out.stdout.is_empty());
    }
    let ids: Vec<Value> = read_records(&rec)
        .iter()
        .map(|r| r["env"]["CNI_CONTAINERID"].clone())
        .collect();
    assert_eq!(ids, vec![json!("KILL"), json!("TERM"), json!("SEGV")]);
}

#[test]
fn prev_result_passes_through() {
    let (dir, rec) = setup();
    let prev = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": "0a:00:00:00:00:01", "sandbox": "/x"}],
        "ips": [{"address": "10.1.2.3/16", "gateway": "10.1.0.1", "interface": 0}],
        "dns": {"nameservers": ["10.96.0.10"]}
    });
    let out = run_in(
        dir.path(),
        &add_env("ADD", "c"),
        &config(
            &rec,
            json!({"cniVersion": "1.1.0", "prevResult": prev.clone()}),
        ),
    );
    assert!(out.status.success(), "stderr: {}", out.stderr);
    let mut expected = prev;
    expected["cniVersion"] = json!("1.1.0");
    assert_eq!(out.json(), expected);
}

#[test]
fn env_steers_behaviour_when_config_has_none() {
    let (dir, rec) = setup();
    let mut env = add_env("CHECK", "c");
    env.push((
        "PLEXUS_RECORDER_BEHAVIOUR",
        r#"{"check": {"error": {"code": 100, "msg": "check failed"}}}"#,
    ));
    let out = run_in(dir.path(), &env, &config(&rec, json!({})));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out.json()["code"], json!(100));
    assert_eq!(out.json()["msg"], json!("check failed"));

    // The config's own behaviour wins over the env var.
    let out = run_in(
        dir.path(),
        &env,
        &config(&rec, json!({"recorder": {"check": {"exitCode": 3}}})),
    );
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn fail_if_env_selects_the_failing_attachment() {
    let (dir, rec) = setup();
    let behaviour = json!({"recorder": {"add": {
        "error": {"code": 100, "msg": "net2 fails"},
        "failIfEnv": {"CNI_IFNAME": "net2"}
    }}});
    let stdin = config(&rec, behaviour);
    let ok = run_in(dir.path(), &add_env("ADD", "c"), &stdin);
    assert!(ok.status.success());
    let mut env = add_env("ADD", "c");
    env.retain(|(k, _)| *k != "CNI_IFNAME");
    env.push(("CNI_IFNAME", "net2"));
    let failed = run_in(dir.path(), &env, &stdin);
    assert_eq!(failed.status.code(), Some(1));
    assert_eq!(failed.json()["msg"], json!("net2 fails"));
}

#[test]
fn stderr_text_and_sleep() {
    let (dir, rec) = setup();
    let behaviour = json!({"recorder": {"del": {"stderr": "delegate says hi\n", "sleepMs": 300}}});
    let start = Instant::now();
    let out = run_in(dir.path(), &add_env("DEL", "c"), &config(&rec, behaviour));
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(out.status.success());
    assert_eq!(out.stderr, "delegate says hi\n");
    assert!(out.stdout.is_empty());
}

/// In front of a real plugin: after its sleep the recorder hands the invocation over (same stdin and
/// environment, looked up in `CNI_PATH`), and the plugin's reply and exit status are the recorder's.
#[test]
fn exec_hands_the_invocation_to_a_plugin_in_cni_path() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, rec) = setup();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let plugin = bin.join("real");
    std::fs::write(
        &plugin,
        "#!/bin/sh\nprintf '{\"got\":%s,\"ifname\":\"%s\"}' \"$(cat)\" \"$CNI_IFNAME\"\necho real stderr >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("/nonexistent:{}", bin.display());
    let mut env = add_env("ADD", "c");
    env.retain(|(k, _)| *k != "CNI_PATH");
    env.push(("CNI_PATH", &path));
    env.push(("PATH", "/usr/bin:/bin"));
    let behaviour = json!({"recorder": {"add": {"sleepMs": 200, "exec": "real"}}, "bridge": "b0"});
    let stdin = config(&rec, behaviour);
    let start = Instant::now();
    let out = run_in(dir.path(), &env, &stdin);
    assert!(start.elapsed() >= Duration::from_millis(200), "slept first");
    assert_eq!(out.status.code(), Some(3), "the plugin's exit status");
    let reply = out.json();
    assert_eq!(reply["ifname"], "net1", "the recorder's environment");
    assert_eq!(
        reply["got"],
        serde_json::from_str::<Value>(&stdin).unwrap(),
        "the recorder's config"
    );
    assert_eq!(out.stderr, "real stderr\n");
    assert_eq!(read_records(&rec).len(), 1, "recorded before handing over");

    // A type not in CNI_PATH, or a path, is refused with code 7.
    for bad in ["nope", "../bin/real"] {
        let stdin = config(&rec, json!({"recorder": {"add": {"exec": bad}}}));
        let out = run_in(dir.path(), &env, &stdin);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert_eq!(out.json()["code"], 7, "{bad}");
    }
}

#[test]
fn huge_output() {
    let (dir, rec) = setup();
    let n = 3 * 1024 * 1024 + 17;
    let behaviour = json!({"recorder": {"add": {"hugeOutputBytes": n}}});
    let out = run_in(dir.path(), &add_env("ADD", "c"), &config(&rec, behaviour));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out.stdout.len(), n);
    assert!(serde_json::from_slice::<Value>(&out.stdout).is_err());
}

#[test]
fn version_is_recorded_and_echoes_version() {
    let (dir, rec) = setup();
    let rec_str = rec.to_str().expect("utf-8");
    let env = [
        ("CNI_COMMAND", "VERSION"),
        ("PLEXUS_RECORDER_FILE", rec_str),
    ];
    let out = run_in(dir.path(), &env, r#"{"cniVersion":"0.4.0"}"#);
    assert!(out.status.success());
    let reply = out.json();
    assert_eq!(reply["cniVersion"], json!("0.4.0"));
    assert!(
        reply["supportedVersions"]
            .as_array()
            .is_some_and(|v| v.contains(&json!("1.1.0")) && v.contains(&json!("0.1.0")))
    );
    let records = read_records(&rec);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["command"], json!("VERSION"));
}

#[test]
fn no_command_prints_about_and_records_nothing() {
    let (dir, rec) = setup();
    let rec_str = rec.to_str().expect("utf-8");
    let out = run_in(dir.path(), &[("PLEXUS_RECORDER_FILE", rec_str)], "");
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert!(out.stderr.contains("plexus-recorder"), "{}", out.stderr);
    assert!(!rec.exists());
}

#[test]
fn unknown_command_and_bad_stdin_are_recorded_errors() {
    let (dir, rec) = setup();
    let rec_str = rec.to_str().expect("utf-8");
    let env = [("CNI_COMMAND", "FROB"), ("PLEXUS_RECORDER_FILE", rec_str)];
    let out = run_in(dir.path(), &env, "{}");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out.json()["code"], json!(4));
    assert_eq!(out.json()["msg"], json!("unknown CNI_COMMAND: FROB"));

    let mut env = add_env("ADD", "c");
    env.push(("PLEXUS_RECORDER_FILE", rec_str));
    let out = run_in(dir.path(), &env, "definitely { not json");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out.json()["code"], json!(6));

    let records = read_records(&rec);
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["command"], json!("FROB"));
    assert_eq!(records[1]["stdin"], json!({"raw": "definitely { not json"}));
}

#[test]
fn unwritable_record_file_is_an_io_error() {
    let (dir, _) = setup();
    // The record path is a directory, so it cannot be opened for appending.
    let out = run_in(
        dir.path(),
        &add_env("ADD", "c"),
        &config(dir.path(), json!({})),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out.json()["code"], json!(5));
}

#[test]
fn concurrent_invocations_append_intact_lines() {
    let (dir, rec) = setup();
    // Lines well above PIPE_BUF, so only the lock keeps them whole.
    let padding = "p".repeat(20_000);
    let stdin = config(&rec, json!({"padding": padding}));
    let ids: Vec<String> = (0..20).map(|i| format!("ctr-{i}")).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .map(|id| {
                let (dir, stdin) = (dir.path(), stdin.as_str());
                s.spawn(move || run_in(dir, &add_env("ADD", id), stdin))
            })
            .collect();
        for h in handles {
            let out = h.join().expect("thread");
            assert!(out.status.success(), "stderr: {}", out.stderr);
        }
    });
    let records = read_records(&rec);
    assert_eq!(records.len(), 20);
    let seen: BTreeSet<String> = records
        .iter()
        .map(|r| {
            assert_eq!(r["stdin"]["padding"].as_str().map(str::len), Some(20_000));
            r["env"]["CNI_CONTAINERID"]
                .as_str()
                .expect("container id")
                .to_owned()
        })
        .collect();
    assert_eq!(seen, ids.into_iter().collect());
}
