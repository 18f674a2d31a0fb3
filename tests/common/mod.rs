//! A harness for running the built `plexus` binary the way a container runtime does, with the recording
//! delegate `plexus-recorder` standing in for every delegate plugin.
//!
//! A [`Harness`] owns a temporary directory:
//!
//! ```text
//! <root>/bin/            binDir and the default CNI_PATH; `plexus-recorder` (and any other names) link to the recorder
//! <root>/cni/            cniDir: per-container caches, results/, .locks/
//! <root>/conf/           confDir: network files for clusterNetwork/defaultNetworks
//! <root>/record.jsonl    one JSON line per delegate invocation (PLEXUS_RECORDER_FILE)
//! ```
//!
//! [`Harness::cmd`] builds one plexus invocation ([`Invocation`]) with the `CNI_*` variables, `CNI_ARGS` and
//! the stdin config; [`Invocation::run`] returns an [`Output`] after checking the invariants every CNI
//! reply must keep (exit status 0 or 1, exactly one JSON document on stdout or nothing). [`Harness::records`]
//! reads what the delegates saw.
//!
//! # The pod network namespace
//!
//! Before each ADD plexus looks over netlink, inside `CNI_NETNS`, for an interface of the same name. That
//! needs a namespace plexus can enter (`setns` needs `CAP_SYS_ADMIN`):
//!
//! - as root, each harness creates a fresh, empty network namespace on a parked thread of the test process
//!   (`unshare(CLONE_NEWNET)`) and passes `/proc/<pid>/task/<tid>/ns/net`;
//! - without root, plexus runs under `unshare --user --map-root-user --net` (util-linux, unprivileged user
//!   namespaces) with `CNI_NETNS=/proc/self/ns/net` and `CNI_NETNS_OVERRIDE=1`;
//! - when neither works, tests that need a namespace fail with a message saying so.

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    fmt, fs,
    io::Write,
    os::unix::{fs::PermissionsExt, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{OnceLock, mpsc},
    thread,
    time::{Duration, Instant},
};

use plexus_testsupport::proc::finish_bounded;
use serde_json::{Map, Value, json};

/// Every CNI version plexus speaks, oldest first.
pub const VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// The container ID invocations use unless told otherwise.
pub const CID: &str = "cid-1";

/// How long one plexus run may take before the harness kills it and fails the test.
const WATCHDOG: Duration = Duration::from_secs(60);

/// Whether `v` (a version from [`VERSIONS`]) is at least `min`.
pub fn at_least(v: &str, min: &str) -> bool {
    let pos = |s: &str| {
        VERSIONS
            .iter()
            .position(|x| *x == s)
            .unwrap_or_else(|| panic!("unknown CNI version {s:?}"))
    };
    pos(v) >= pos(min)
}

/// The plexus binary under test.
pub fn plexus_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_plexus"))
}

/// The `plexus-recorder` binary: next to plexus, else built once (plexus-testsupport's `recorder_bin`).
pub fn recorder_bin() -> &'static Path {
    plexus_testsupport::proc::recorder_bin(&plexus_bin())
}

// ---------------------------------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------------------------------

/// How this process can give plexus a network namespace to inspect.
#[derive(Debug, Clone)]
enum NetnsMode {
    /// We may create namespaces ourselves (root).
    Thread,
    /// plexus runs in its own user+net namespace through util-linux `unshare`.
    UserNs,
    /// Neither works; the reason.
    Unavailable(String),
}

fn netns_mode() -> &'static NetnsMode {
    static MODE: OnceLock<NetnsMode> = OnceLock::new();
    MODE.get_or_init(|| {
        let thread_err = match NetnsHolder::new() {
            Ok(_) => return NetnsMode::Thread,
            Err(e) => e,
        };
        let userns = Command::new("unshare")
            .args(["--user", "--map-root-user", "--net", "true"])
            .stdin(Stdio::null())
            .output();
        match userns {
            Ok(o) if o.status.success() => NetnsMode::UserNs,
            Ok(o) => NetnsMode::Unavailable(format!(
                "cannot create a network namespace ({thread_err}) and `unshare --user --map-root-user --net` \
                 failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => NetnsMode::Unavailable(format!(
                "cannot create a network namespace ({thread_err}) and cannot run util-linux unshare: {e}"
            )),
        }
    })
}

/// A fresh network namespace held by a parked thread of this process; gone when dropped.
struct NetnsHolder {
    path: PathBuf,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl NetnsHolder {
    fn new() -> Result<NetnsHolder, String> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<i32, String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("netns-holder".into())
            .spawn(move || {
                // CLONE_NEWNET moves only this thread; it stays there until told to stop.
                match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                    Ok(()) => {
                        let _ = ready_tx.send(Ok(nix::unistd::gettid().as_raw()));
                        let _ = stop_rx.recv();
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("unshare(CLONE_NEWNET): {e}")));
                    }
                }
            })
            .map_err(|e| format!("spawn netns thread: {e}"))?;
        let tid = ready_rx
            .recv()
            .map_err(|_| "netns thread died".to_string())??;
        Ok(NetnsHolder {
            path: PathBuf::from(format!("/proc/{}/task/{tid}/ns/net", std::process::id())),
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for NetnsHolder {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------------

/// A temporary CNI node: binDir, cniDir, confDir and a record file.
pub struct Harness {
    tmp: tempfile::TempDir,
    /// The temporary directory.
    pub root: PathBuf,
    /// binDir (the recorder is installed here).
    pub bin: PathBuf,
    /// cniDir.
    pub cni: PathBuf,
    /// confDir.
    pub conf: PathBuf,
    /// The recorder's record file.
    pub record: PathBuf,
    netns: Option<NetnsHolder>,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// A new node with `plexus-recorder` installed in `bin/`.
    pub fn new() -> Harness {
        let tmp = tempfile::Builder::new()
            .prefix("plexus-bin-test-")
            .tempdir()
            .expect("create temp dir");
        let root = tmp.path().to_path_buf();
        let (bin, cni, conf) = (root.join("bin"), root.join("cni"), root.join("conf"));
        for d in [&bin, &conf] {
            fs::create_dir_all(d).expect("create harness dir");
        }
        let netns = match netns_mode() {
            NetnsMode::Thread => Some(NetnsHolder::new().expect("create a network namespace")),
            _ => None,
        };
        let h = Harness {
            record: root.join("record.jsonl"),
            tmp,
            root,
            bin,
            cni,
            conf,
            netns,
        };
        h.install("plexus-recorder");
        h
    }

    /// Install the recorder in `bin/` under `name` (a symlink). Returns its path.
    pub fn install(&self, name: &str) -> PathBuf {
        let p = self.bin.join(name);
        if !p.exists() {
            std::os::unix::fs::symlink(recorder_bin(), &p).expect("symlink the recorder");
        }
        p
    }

    /// Install `plexus` itself in `bin/` (for chaining it in a conflist run by a test-side runtime). Without
    /// root it is a wrapper script that gives plexus its own network namespace (see the module docs).
    pub fn install_plexus(&self) -> PathBuf {
        let p = self.bin.join("plexus");
        match netns_mode() {
            NetnsMode::UserNs => {
                self.write_script(
                    "plexus",
                    &format!(
                        "exec unshare --user --map-root-user --net -- {}",
                        plexus_bin().display()
                    ),
                );
            }
            _ => std::os::unix::fs::symlink(plexus_bin(), &p).expect("symlink plexus"),
        }
        p
    }

    /// Environment a test-side runtime must add when it runs `bin/plexus` itself (see
    /// [`Harness::install_plexus`]): `CNI_NETNS_OVERRIDE=1` when plexus gets its own namespace.
    pub fn plexus_env(&self) -> Vec<(String, String)> {
        match netns_mode() {
            NetnsMode::UserNs => vec![("CNI_NETNS_OVERRIDE".into(), "1".into())],
            _ => Vec::new(),
        }
    }

    /// Write an executable `#!/bin/sh` script `bin/<name>`.
    pub fn write_script(&self, name: &str, body: &str) -> PathBuf {
        let p = self.bin.join(name);
        write_executable(&p, body);
        p
    }

    /// The `CNI_NETNS` to pass for ADD and CHECK. Panics when no namespace can be had here.
    pub fn netns(&self) -> PathBuf {
        match (netns_mode(), &self.netns) {
            (_, Some(holder)) => holder.path.clone(),
            (NetnsMode::UserNs, None) => PathBuf::from("/proc/self/ns/net"),
            (NetnsMode::Unavailable(why), _) => panic!(
                "plexus binary tests need a network namespace plexus can enter: run them as root, or allow \
                 unprivileged user namespaces and install util-linux `unshare` ({why})"
            ),
            (NetnsMode::Thread, None) => unreachable!("root mode always holds a namespace"),
        }
    }

    /// The netns path as a string (what delegates see in `CNI_NETNS`).
    pub fn netns_str(&self) -> String {
        self.netns().display().to_string()
    }

    /// A file under the harness root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// A plexus config: `cniVersion`, `name`, `type`, `cniDir`, `confDir`, `binDir`, then `extra`'s keys.
    pub fn config(&self, version: &str, extra: Value) -> Value {
        let mut v = json!({
            "cniVersion": version,
            "name": "plexus-net",
            "type": "plexus",
            "cniDir": self.cni,
            "confDir": self.conf,
            "binDir": self.bin,
        });
        merge(&mut v, extra);
        v
    }

    /// Write `value` as JSON to `conf/<file>`; returns the path.
    pub fn write_conf(&self, file: &str, value: &Value) -> PathBuf {
        let p = self.conf.join(file);
        fs::write(&p, serde_json::to_vec_pretty(value).expect("serialise")).expect("write conf");
        p
    }

    /// Start an invocation of plexus with `CNI_COMMAND=command` and the defaults (see [`Invocation`]).
    pub fn cmd(&self, command: &str) -> Invocation<'_> {
        Invocation::new(self, Some(command))
    }

    /// An invocation with no `CNI_COMMAND` at all.
    pub fn cmd_without_command(&self) -> Invocation<'_> {
        Invocation::new(self, None)
    }

    /// Every delegate invocation recorded so far, in order.
    pub fn records(&self) -> Vec<Record> {
        let text = match fs::read_to_string(&self.record) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => panic!("read {}: {e}", self.record.display()),
        };
        text.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("bad record line {l:?}: {e}"));
                Record::from_value(v)
            })
            .collect()
    }

    /// The records so far, forgetting them (the next call starts empty).
    pub fn take_records(&self) -> Vec<Record> {
        let r = self.records();
        let _ = fs::remove_file(&self.record);
        r
    }

    /// [`Record::summary`] of [`Harness::take_records`].
    pub fn take_calls(&self) -> Vec<String> {
        self.take_records().iter().map(Record::summary).collect()
    }

    /// plexus's per-container cache file.
    pub fn cache_file(&self, cid: &str) -> PathBuf {
        self.cni.join(cid)
    }

    /// The per-container lock file.
    pub fn lock_file(&self, cid: &str) -> PathBuf {
        self.cni.join(".locks").join(cid)
    }

    /// Names of the files in `cniDir/results` (libcni's result cache), sorted.
    pub fn result_files(&self) -> Vec<String> {
        list_dir(&self.cni.join("results"))
    }

    /// The result-cache record of one attachment, parsed.
    pub fn result_record(&self, network: &str, cid: &str, ifname: &str) -> Value {
        let p = self
            .cni
            .join("results")
            .join(format!("{network}-{cid}-{ifname}"));
        let bytes = fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        serde_json::from_slice(&bytes).expect("result record is JSON")
    }

    /// Assert nothing of container `cid` is left in cniDir: no cache, no result records, no lock file.
    pub fn assert_no_trace(&self, cid: &str, context: &str) {
        assert!(
            !self.cache_file(cid).exists(),
            "{context}: the cache {} is still there",
            self.cache_file(cid).display()
        );
        let results: Vec<String> = self
            .result_files()
            .into_iter()
            .filter(|f| f.contains(&format!("-{cid}-")))
            .collect();
        assert!(
            results.is_empty(),
            "{context}: result cache files left: {results:?}"
        );
        assert!(
            !self.lock_file(cid).exists(),
            "{context}: lock file {} left",
            self.lock_file(cid).display()
        );
    }
}

/// Sorted file names in `dir` (empty when it does not exist).
pub fn list_dir(dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Write an executable `#!/bin/sh` script at `path`.
pub fn write_executable(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod script");
}

/// Merge the keys of object `extra` into object `base` (replacing; `null` removes).
pub fn merge(base: &mut Value, extra: Value) {
    let Value::Object(extra) = extra else {
        if !extra.is_null() {
            panic!("merge: extra is not an object: {extra}");
        }
        return;
    };
    let base = base.as_object_mut().expect("merge: base is not an object");
    for (k, v) in extra {
        if v.is_null() {
            base.remove(&k);
        } else {
            base.insert(k, v);
        }
    }
}

/// A recorder delegate config: `{"cniVersion", "name", "type": "plexus-recorder"}` plus `extra`'s keys.
pub fn recorder(name: &str, version: &str, extra: Value) -> Value {
    let mut v = json!({"cniVersion": version, "name": name, "type": "plexus-recorder"});
    merge(&mut v, extra);
    v
}

/// A recorder conflist of `plugins` (each a plugin object).
pub fn recorder_list(name: &str, version: &str, plugins: Vec<Value>) -> Value {
    json!({"cniVersion": version, "name": name, "plugins": plugins})
}

/// `v` with key `k` removed (for comparing request configs).
pub fn without(v: &Value, keys: &[&str]) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        for k in keys {
            m.remove(*k);
        }
    }
    v
}

// ---------------------------------------------------------------------------------------------------
// One invocation
// ---------------------------------------------------------------------------------------------------

/// One run of plexus. Defaults: `CNI_CONTAINERID=`[`CID`], `CNI_IFNAME=eth0`, `CNI_PATH=<bin>`, `CNI_NETNS`
/// the harness namespace for ADD, CHECK and DEL, `PLEXUS_RECORDER_FILE` the record file, `PATH=/usr/bin:/bin`;
/// no `CNI_ARGS`; empty stdin. Nothing else of the test's environment leaks in.
pub struct Invocation<'h> {
    h: &'h Harness,
    command: Option<String>,
    env: BTreeMap<String, Option<String>>,
    default_netns: bool,
    isolated: bool,
    stdin: Vec<u8>,
}

impl<'h> Invocation<'h> {
    fn new(h: &'h Harness, command: Option<&str>) -> Invocation<'h> {
        let mut env = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            env.insert(k.to_string(), Some(v));
        };
        set("PATH", "/usr/bin:/bin".into());
        set("PLEXUS_RECORDER_FILE", h.record.display().to_string());
        if let Some(c) = command {
            set("CNI_COMMAND", c.into());
            if matches!(c, "ADD" | "DEL" | "CHECK") {
                set("CNI_CONTAINERID", CID.into());
                set("CNI_IFNAME", "eth0".into());
            }
            set("CNI_PATH", h.bin.display().to_string());
        }
        Invocation {
            h,
            command: command.map(str::to_string),
            env,
            default_netns: matches!(command, Some("ADD" | "DEL" | "CHECK")),
            isolated: true,
            stdin: Vec::new(),
        }
    }

    /// Set an environment variable.
    pub fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        if k == "CNI_NETNS" {
            self.default_netns = false;
        }
        self.env.insert(k.to_string(), Some(v.into()));
        self
    }

    /// Leave an environment variable out (including the defaults).
    pub fn unset(mut self, k: &str) -> Self {
        if k == "CNI_NETNS" {
            self.default_netns = false;
        }
        self.env.insert(k.to_string(), None);
        self
    }

    /// `CNI_CONTAINERID`.
    pub fn container(self, id: &str) -> Self {
        self.env("CNI_CONTAINERID", id)
    }

    /// `CNI_IFNAME`.
    pub fn ifname(self, name: &str) -> Self {
        self.env("CNI_IFNAME", name)
    }

    /// `CNI_ARGS`.
    pub fn args(self, args: &str) -> Self {
        self.env("CNI_ARGS", args)
    }

    /// `CNI_PATH`.
    pub fn cni_path(self, path: &str) -> Self {
        self.env("CNI_PATH", path)
    }

    /// No `CNI_NETNS` at all.
    pub fn no_netns(self) -> Self {
        self.unset("CNI_NETNS")
    }

    /// Run plexus as a plain child of the test (no user-namespace wrapper, no `CNI_NETNS_OVERRIDE`), for
    /// requests that must fail before plexus looks inside a namespace.
    pub fn in_host_netns(mut self) -> Self {
        self.isolated = false;
        self
    }

    /// Stdin bytes.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = bytes.into();
        self
    }

    /// Stdin: `config` as JSON.
    pub fn config(self, config: &Value) -> Self {
        let bytes = serde_json::to_vec(config).expect("serialise config");
        self.stdin(bytes)
    }

    /// Start plexus without waiting for it (its stdin written, stdout and stderr discarded): for a test
    /// that kills it part-way.
    pub fn spawn(self) -> std::process::Child {
        let mut cmd = self.command();
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn plexus");
        let mut stdin = child.stdin.take().expect("stdin pipe");
        // plexus reads its whole config first; a config fits the pipe.
        let _ = stdin.write_all(&self.stdin);
        child
    }

    /// The command that runs plexus, stdio piped.
    fn command(&self) -> Command {
        let mode = netns_mode();
        let mut env: BTreeMap<String, String> = self
            .env
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect();
        if self.default_netns {
            env.insert("CNI_NETNS".into(), self.h.netns_str());
        }
        let wrap = self.isolated && matches!(mode, NetnsMode::UserNs);
        let mut cmd = if wrap {
            env.insert("CNI_NETNS_OVERRIDE".into(), "1".into());
            let mut c = Command::new("unshare");
            c.args(["--user", "--map-root-user", "--net", "--"])
                .arg(plexus_bin());
            c
        } else {
            Command::new(plexus_bin())
        };
        cmd.env_clear()
            .envs(&env)
            .current_dir(&self.h.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Run plexus and check the reply invariants (see [`Output`]).
    pub fn run(self) -> Output {
        let mut cmd = self.command();
        let started = Instant::now();
        let child = cmd.spawn().expect("spawn plexus");
        let out = finish_bounded(child, &self.stdin, WATCHDOG);
        assert!(
            !out.timed_out,
            "plexus {:?} did not finish within {WATCHDOG:?}",
            self.command
        );
        let elapsed = started.elapsed();
        let output = Output {
            command: self.command.clone().unwrap_or_default(),
            status: out.status,
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed,
            doc: None,
        };
        output.checked()
    }
}

// ---------------------------------------------------------------------------------------------------
// What plexus printed
// ---------------------------------------------------------------------------------------------------

/// The outcome of one plexus run. [`Invocation::run`] has already checked that the exit status is 0 or 1,
/// that stdout is exactly one JSON document (an error object with `code` and `msg` on failure; the result
/// for ADD and VERSION) or empty (a successful DEL, CHECK, STATUS or GC, or no command) (CNI-9, CNI-59).
pub struct Output {
    /// `CNI_COMMAND` (empty for none).
    pub command: String,
    /// Exit status.
    pub status: ExitStatus,
    /// Stdout bytes.
    pub stdout: Vec<u8>,
    /// Stderr text.
    pub stderr: String,
    /// Wall time of the run.
    pub elapsed: Duration,
    doc: Option<Value>,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plexus {} exited {:?} after {:?}\n  stdout: {}\n  stderr: {}",
            self.command,
            self.status,
            self.elapsed,
            String::from_utf8_lossy(&self.stdout),
            self.stderr.trim_end()
        )
    }
}

impl Output {
    fn checked(mut self) -> Output {
        let code = match (self.status.code(), self.status.signal()) {
            (Some(c @ (0 | 1)), _) => c,
            _ => panic!("exit status must be 0 or 1 (CNI-9): {self:?}"),
        };
        let docs: Vec<Value> = serde_json::Deserializer::from_slice(&self.stdout)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"));
        match docs.len() {
            0 => {
                let quiet = matches!(
                    self.command.as_str(),
                    "" | "DEL" | "CHECK" | "STATUS" | "GC"
                );
                assert!(
                    code == 0 && quiet,
                    "stdout must hold one JSON document: {self:?}"
                );
            }
            1 => {
                let doc = &docs[0];
                if code == 1 {
                    assert!(
                        doc.get("code").is_some_and(Value::is_u64)
                            && doc.get("msg").is_some_and(Value::is_string),
                        "a failure must print a CNI error object (CNI-38): {self:?}"
                    );
                } else {
                    assert!(
                        matches!(self.command.as_str(), "ADD" | "VERSION"),
                        "a successful {} prints nothing: {self:?}",
                        self.command
                    );
                }
            }
            n => panic!("stdout holds {n} JSON documents, not one: {self:?}"),
        }
        self.doc = docs.into_iter().next();
        self
    }

    /// Whether plexus exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The JSON document on stdout. Panics when there is none.
    pub fn json(&self) -> &Value {
        self.doc
            .as_ref()
            .unwrap_or_else(|| panic!("no JSON on stdout: {self:?}"))
    }

    /// Assert success; returns self.
    pub fn ok(&self) -> &Output {
        assert!(self.success(), "expected success: {self:?}");
        self
    }

    /// Assert success and return the result printed (ADD, VERSION).
    pub fn result(&self) -> &Value {
        self.ok().json()
    }

    /// Assert failure with CNI error `code`; returns the error object.
    pub fn error(&self, code: u64) -> &Value {
        assert!(!self.success(), "expected CNI error {code}: {self:?}");
        let doc = self.json();
        assert_eq!(
            doc["code"].as_u64(),
            Some(code),
            "wrong error code: {self:?}"
        );
        doc
    }

    /// The error message (panics when stdout is no error object).
    pub fn msg(&self) -> &str {
        self.json()["msg"]
            .as_str()
            .unwrap_or_else(|| panic!("no msg: {self:?}"))
    }
}

// ---------------------------------------------------------------------------------------------------
// Delegate invocations
// ---------------------------------------------------------------------------------------------------

/// One delegate invocation as the recorder saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// `CNI_COMMAND`.
    pub command: String,
    /// Every `CNI_*` variable the delegate got.
    pub env: BTreeMap<String, String>,
    /// Its stdin, parsed (`{"raw": text}` when not JSON).
    pub stdin: Value,
    /// Its process ID.
    pub pid: u32,
    /// When it started (ms since the epoch).
    pub time_ms: u64,
}

impl Record {
    fn from_value(v: Value) -> Record {
        let env = v["env"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        Record {
            command: v["command"].as_str().unwrap_or_default().to_string(),
            env,
            stdin: v["stdin"].clone(),
            pid: v["pid"].as_u64().unwrap_or_default() as u32,
            time_ms: v["time_ms"].as_u64().unwrap_or_default(),
        }
    }

    /// A `CNI_*` variable ("" when absent).
    pub fn var(&self, k: &str) -> &str {
        self.env.get(k).map(String::as_str).unwrap_or_default()
    }

    /// `CNI_IFNAME`.
    pub fn ifname(&self) -> &str {
        self.var("CNI_IFNAME")
    }

    /// The network name on stdin.
    pub fn network(&self) -> &str {
        self.stdin["name"].as_str().unwrap_or_default()
    }

    /// `"<COMMAND> <network> <ifname>"`, plus `#<step>` when the plugin config has a `step` key (to tell the
    /// plugins of a conflist apart).
    pub fn summary(&self) -> String {
        let mut s = format!("{} {} {}", self.command, self.network(), self.ifname());
        if let Some(step) = self.stdin.get("step") {
            s.push_str(&format!(" #{step}"));
        }
        s.trim_end().to_string()
    }
}

/// Summaries of `records` (see [`Record::summary`]).
pub fn calls(records: &[Record]) -> Vec<String> {
    records.iter().map(Record::summary).collect()
}

/// A JSON object from `pairs` (for building expected values).
pub fn object(pairs: &[(&str, Value)]) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        m.insert((*k).to_string(), v.clone());
    }
    Value::Object(m)
}
