//! Faults on the node's side, for the fault matrix (`tests/faults.rs`): the recording delegate
//! (`delegates/recorder`) as a misbehaving plugin chained before or after a real one, or in front of it,
//! plexus run as a process the test can SIGKILL at a chosen moment, read-only and full cache directories,
//! and the leak checks every fault case ends with (beyond [`World::assert_clean`]: every file under `cniDir` naming
//! the container, temp files of interrupted atomic writes, and plugin processes still running for it).

use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

use plexus::invoke::request_config;
use serde_json::{Value, json};

use super::{
    proc::run_bounded,
    runtime::{CniRuntime, PLUGIN_PATH},
    world::{Sandbox, World},
};

/// The recording delegate's plugin type.
pub const RECORDER: &str = "plexus-recorder";

/// The `plexus-recorder` binary: next to the binary under test, else built once with
/// `$CARGO build -p plexus-recorder` (a dependency's binaries are not built for another package's tests).
pub fn recorder_bin(plexus: &Path) -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = plexus.parent().expect("the plexus binary has a directory");
        let found = dir.join(RECORDER);
        if !found.is_file() {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-p", RECORDER, "--bin", RECORDER])
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            // The profile plexus was built with (release-thin for the shipped plexus): its directory's name.
            match dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => {}
                Some("release") => {
                    cmd.arg("--release");
                }
                Some(profile) => {
                    cmd.args(["--profile", profile]);
                }
            }
            let out = cmd.output().expect("run cargo to build plexus-recorder");
            assert!(
                out.status.success(),
                "building plexus-recorder failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(found.is_file(), "no plexus-recorder at {}", found.display());
        found
    })
}

/// Make the recorder available to plexus as a delegate: a link in the runtime's plugin directory (on
/// `CNI_PATH`). Returns the file its invocations are recorded in.
pub fn install_recorder(w: &World, plexus: &Path) -> PathBuf {
    let link = w.bin_dir().join(RECORDER);
    if !link.exists() {
        std::os::unix::fs::symlink(recorder_bin(plexus), &link).expect("link the recorder");
    }
    records_file(w)
}

/// Where the recorder delegates of `w` record their invocations.
pub fn records_file(w: &World) -> PathBuf {
    w.root().join("recorder.jsonl")
}

/// A recorder plugin entry for a conflist, behaving as `behaviour` (its README: `add`, `del`, … with
/// `sleepMs`, `signal`, `exitCode`, `garbage`, `hugeOutputBytes`, `error`, …). Without a `prevResult` it
/// answers ADD with a made-up result, with one it passes that result through.
pub fn recorder(w: &World, behaviour: Value) -> Value {
    json!({"type": RECORDER, "recordFile": records_file(w), "recorder": behaviour})
}

/// `plugin` (a real plugin's entry) with the recorder in front of it, in its place: every invocation is
/// recorded, an ADD first sleeps `add_sleep_ms`, and then the real plugin (the recorder's `exec`) does the
/// work and answers. A plexus killed during that sleep leaves an orphan that goes on to do the real
/// plugin's ADD, after the kill: the state a DEL racing it would leak.
pub fn front(w: &World, plugin: &Value, add_sleep_ms: u64) -> Value {
    let real = plugin["type"].as_str().expect("a plugin type").to_string();
    let mut entry = plugin.clone();
    entry["type"] = json!(RECORDER);
    entry["recordFile"] = json!(records_file(w));
    entry["recorder"] = json!({
        "add": {"sleepMs": add_sleep_ms, "exec": real},
        "all": {"exec": real},
    });
    entry
}

/// A conflist (named `name` when given; NADs get theirs injected) of `conf`'s plugin with `before` and
/// `after` chained around it.
pub fn chain(
    name: Option<&str>,
    conf: &Value,
    before: Option<Value>,
    after: Option<Value>,
) -> Value {
    let mut plugin = conf.clone();
    let version = plugin
        .as_object_mut()
        .and_then(|o| o.remove("cniVersion"))
        .unwrap_or_else(|| json!("1.0.0"));
    let plugins: Vec<Value> = before.into_iter().chain([plugin]).chain(after).collect();
    let mut list = json!({"cniVersion": version, "plugins": plugins});
    if let Some(n) = name {
        list["name"] = json!(n);
    }
    list
}

/// The recorder's invocations (one JSON object per line).
pub fn records(w: &World) -> Vec<Value> {
    fs::read_to_string(records_file(w))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Whether the recorder has been called with `command` for container `cid` on `ifname`.
pub fn recorded(w: &World, command: &str, cid: &str, ifname: &str) -> bool {
    records(w).iter().any(|r| {
        r["command"] == command
            && r["env"]["CNI_CONTAINERID"] == cid
            && r["env"]["CNI_IFNAME"] == ifname
    })
}

// === plexus as a process the test can kill ===

/// A plexus invocation started by [`spawn_plexus`].
pub struct Running {
    child: Child,
    started: Instant,
    out: thread::JoinHandle<String>,
}

/// What a plexus invocation ended with.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Its stdout: one CNI result or error.
    pub stdout: String,
    /// How long it ran.
    pub took: Duration,
}

impl Finished {
    /// The CNI error code it printed, if it printed an error.
    pub fn cni_code(&self) -> Option<u64> {
        serde_json::from_str::<Value>(&self.stdout)
            .ok()
            .and_then(|v| v["code"].as_u64())
    }
}

/// Start `command` of the node's plexus (the first plugin of `rt`'s list, as the runtime would run it:
/// the same request config, `CNI_*` environment and plugin wrapper) for `sb`, without waiting.
pub fn spawn_plexus(w: &World, rt: &CniRuntime, sb: &Sandbox, command: &str) -> Running {
    let conf = w.rt(sb);
    let stdin = request_config(&rt.list, &rt.list.plugins[0], Some(&conf), None)
        .expect("plexus's request config");
    let path = rt
        .search_path
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    // `plexus`, or `plexus-shim` in daemon mode: whatever the list names.
    let mut child = Command::new(w.bin_dir().join(&rt.list.plugins[0].plugin_type))
        .env_clear()
        .env("PATH", PLUGIN_PATH)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &conf.container_id)
        .env("CNI_NETNS", sb.path())
        .env("CNI_IFNAME", &conf.ifname)
        .env("CNI_ARGS", conf.args.to_env_string())
        .env("CNI_PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start plexus");
    let started = Instant::now();
    {
        use std::io::Write;
        let mut input = child.stdin.take().expect("piped stdin");
        // plexus reads its whole config before anything else; the pipe holds it.
        let _ = input.write_all(&stdin);
    }
    let mut out = child.stdout.take().expect("piped stdout");
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    Running {
        child,
        started,
        out,
    }
}

impl Running {
    /// Wait for it to finish; panic (after killing it) when it runs longer than `limit`.
    pub fn wait(mut self, limit: Duration) -> Finished {
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for plexus") {
                return Finished {
                    code: status.code(),
                    stdout: self.out.join().unwrap_or_default(),
                    took: self.started.elapsed(),
                };
            }
            if self.started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("plexus did not finish within {limit:?}: it hangs");
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL it now (whatever it is doing) and reap it. Returns `false` when it had already finished.
    pub fn kill(mut self) -> bool {
        let running = matches!(self.child.try_wait(), Ok(None));
        let _ = self.child.kill();
        let _ = self.child.wait();
        running
    }

    /// How long it has been running.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Wait (up to `limit`) until `ready()` holds; panic naming `what` otherwise.
pub fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < limit,
            "{what}: not reached within {limit:?}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Assert an invocation that should end within `limit` (its configured timeouts plus a margin) did: a
/// bound on hanging, not a measurement of speed.
pub fn assert_bounded(what: &str, took: Duration, limit: Duration) {
    assert!(
        took <= limit,
        "{what} took {took:?}, beyond its bound of {limit:?}: a hang"
    );
}

// === Leaks beyond World::assert_clean ===

/// Every file under `dir` (recursively) whose name contains `needle`.
pub fn files_naming(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_naming(&p, needle));
        } else if e.file_name().to_string_lossy().contains(needle) {
            out.push(p);
        }
    }
    out
}

/// Processes (other than the recorder, the test's own instrument) whose environment has
/// `CNI_CONTAINERID=<cid>`: plexus or plugins still running for the container.
pub fn processes_for(cid: &str) -> Vec<String> {
    let needle = format!("CNI_CONTAINERID={cid}");
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(env) = fs::read(e.path().join("environ")) else {
            continue;
        };
        if !env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
            continue;
        }
        let exe = fs::read_link(e.path().join("exe"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if !exe.ends_with(RECORDER) {
            out.push(format!("pid {name} {exe}"));
        }
    }
    out
}

/// The recorder processes still running for `cid`.
pub fn recorders_for(cid: &str) -> Vec<i32> {
    let needle = format!("CNI_CONTAINERID={cid}");
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<i32>().ok()?;
            let env = fs::read(e.path().join("environ")).ok()?;
            let exe = fs::read_link(e.path().join("exe")).ok()?;
            (env.split(|b| *b == 0).any(|v| v == needle.as_bytes())
                && exe.to_string_lossy().ends_with(RECORDER))
            .then_some(pid)
        })
        .collect()
}

/// The processes running for `cid` now, the recorder included (pids), after which this waits (up to 30 s)
/// for them to end: called right after a DEL, it says whether anything outlived the DEL, and a leak check
/// after it sees whatever that made.
pub fn outliving(cid: &str) -> Vec<String> {
    let mut now = processes_for(cid);
    now.extend(
        recorders_for(cid)
            .iter()
            .map(|p| format!("pid {p} {RECORDER}")),
    );
    let started = Instant::now();
    while !(processes_for(cid).is_empty() && recorders_for(cid).is_empty())
        && started.elapsed() < Duration::from_secs(30)
    {
        thread::sleep(Duration::from_millis(20));
    }
    now
}

/// [`World::assert_clean`] and more: no file anywhere under `cniDir` (caches, locks, result caches, temp
/// files of atomic writes) or the runtime's cache names the container, and no plexus or plugin process
/// is still running for it.
pub fn assert_no_leak(w: &World, sb: &Sandbox) {
    w.assert_clean(sb);
    assert_no_leak_of(w, sb);
}

/// [`assert_no_leak`] for `sb` alone, while other pods of the world stay attached: its namespace has only
/// `lo`, no host-local reservation is its, and no file or process names it.
pub fn assert_no_leak_of(w: &World, sb: &Sandbox) {
    // A daemon DEL's files wait in the trash until its work after the reply.
    w.wait_after_reply();
    assert_eq!(
        sb.netns.link_names(),
        ["lo"],
        "{}: pod netns links\nplexus log:\n{}",
        w.test,
        w.log()
    );
    let mine: Vec<_> = w
        .reservations()
        .into_iter()
        .filter(|r| r.owner == sb.cid)
        .collect();
    assert_eq!(
        mine,
        [],
        "{}: host-local reservations of {}",
        w.test,
        sb.cid
    );
    let mut files = files_naming(&w.cni_dir(), &sb.cid);
    files.extend(files_naming(&w.runtime_cache(), &sb.cid));
    assert_eq!(
        files,
        Vec::<PathBuf>::new(),
        "{}: files left for {}\nplexus log:\n{}",
        w.test,
        sb.cid,
        w.log()
    );
    // A plugin still running could yet create what the checks above did not find.
    let started = Instant::now();
    while !processes_for(&sb.cid).is_empty() && started.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        processes_for(&sb.cid),
        Vec::<String>::new(),
        "{}: processes still running for {}",
        w.test,
        sb.cid
    );
}

// === Cache directories that cannot be written ===

/// A mount over a directory, unmounted (lazily, so a busy mount never wedges a failed test) on drop.
pub struct Mount {
    target: PathBuf,
}

fn mount(args: &[&str]) {
    let out = run_bounded(
        Command::new("mount").args(args),
        b"",
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 0, "mount {}: {}", args.join(" "), out.stderr);
}

impl Mount {
    /// Make `dir` read-only by a read-only bind mount of itself (root ignores permission bits, so only a
    /// read-only mount really refuses writes).
    pub fn read_only(dir: &Path) -> Mount {
        let d = dir.to_str().expect("UTF-8 path");
        mount(&["--bind", d, d]);
        let m = Mount {
            target: dir.to_path_buf(),
        };
        mount(&["-o", "remount,ro,bind", d]);
        m
    }

    /// Put a tmpfs of `kib` KiB over `dir` (empty) and fill it, so the next write fails with ENOSPC.
    pub fn full(dir: &Path, kib: u32) -> Mount {
        let d = dir.to_str().expect("UTF-8 path");
        mount(&[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={kib}k,mode=0700"),
            "tmpfs",
            d,
        ]);
        let m = Mount {
            target: dir.to_path_buf(),
        };
        fill(dir);
        m
    }
}

/// Fill the file system of `dir` to the last byte (a filler file that is not a container's).
pub fn fill(dir: &Path) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(".filler"))
        .expect("create the filler");
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    for _ in 0..4096 {
        if f.write_all(&[0]).is_err() {
            break;
        }
    }
    let _ = f.sync_all();
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = run_bounded(
            Command::new("umount").arg("-l").arg(&self.target),
            b"",
            Duration::from_secs(30),
        );
    }
}
