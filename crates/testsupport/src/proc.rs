//! Child processes with bounds: every external command gets a time limit, every wait a deadline, every
//! stop a SIGKILL after its grace; plus the `/proc` scans the leak checks use and the recorder binary.

use std::{
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// How often the waits here look again.
const POLL: Duration = Duration::from_millis(5);

/// The limit [`ip`] runs `ip` under.
pub const IP_TIMEOUT: Duration = Duration::from_secs(120);

/// What a finished process left.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit status (-1 when killed by a signal).
    pub code: i32,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

/// What a finished child left, as bytes.
#[derive(Debug)]
pub struct RawOutput {
    /// How it ended.
    pub status: ExitStatus,
    /// Whether it ran out of time and was killed.
    pub timed_out: bool,
    /// Stdout (empty when not piped).
    pub stdout: Vec<u8>,
    /// Stderr (empty when not piped).
    pub stderr: Vec<u8>,
}

/// Feed `stdin` to `child` (when its stdin is piped) and collect what it prints on piped stdout and stderr
/// until it exits; after `timeout` it is killed and reaped (`timed_out`).
pub fn finish_bounded(mut child: Child, stdin: &[u8], timeout: Duration) -> RawOutput {
    // Stdin and both outputs on their own threads: a child that fills one pipe never stalls the others,
    // and one that exits without reading (EPIPE) is fine.
    let writer = child.stdin.take().map(|mut input| {
        let data = stdin.to_vec();
        thread::spawn(move || {
            let _ = input.write_all(&data);
        })
    });
    let out = child.stdout.take().map(read_all);
    let err = child.stderr.take().map(read_all);
    let (status, timed_out) = match wait_bounded(&mut child, timeout) {
        Ok(status) => (status, false),
        Err(killed) => (killed, true),
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let collect = |h: Option<thread::JoinHandle<Vec<u8>>>| {
        h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
    };
    RawOutput {
        status,
        timed_out,
        stdout: collect(out),
        stderr: collect(err),
    }
}

/// Read `r` to its end on a thread.
fn read_all(mut r: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut b = Vec::new();
        let _ = r.read_to_end(&mut b);
        b
    })
}

/// Run `cmd` with `stdin`; kill it and panic after `timeout`.
pub fn run_bounded(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let out = finish_bounded(child, stdin, timeout);
    assert!(!out.timed_out, "{cmd:?} did not finish within {timeout:?}");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Run `ip <args>` (at most [`IP_TIMEOUT`]) and require success; returns stdout.
pub fn ip(args: &[&str]) -> String {
    let out = run_bounded(Command::new("ip").args(args), b"", IP_TIMEOUT);
    assert_eq!(
        out.code,
        0,
        "ip {} failed: {}{}",
        args.join(" "),
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// [`ip`] with the whitespace-separated words of `args`.
pub fn ipw(args: &str) -> String {
    ip(&args.split_whitespace().collect::<Vec<_>>())
}

/// The effective uid of this process, from /proc/self/status.
pub fn effective_uid() -> Option<u32> {
    fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// 16 random hex digits (from /dev/urandom), for names that must not collide across runs.
pub fn random_hex() -> String {
    let mut b = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read /dev/urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whether `ready()` holds within `limit` (asked again every few milliseconds).
pub fn wait_for(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if ready() {
            return true;
        }
        if started.elapsed() > limit {
            return false;
        }
        thread::sleep(POLL);
    }
}

/// Wait (up to `limit`) until `ready()` holds; panic naming `what` otherwise.
pub fn wait_until(what: &str, limit: Duration, ready: impl FnMut() -> bool) {
    assert!(
        wait_for(limit, ready),
        "{what}: not reached within {limit:?}"
    );
}

/// Wait for `child` to exit, at most `limit`: its status. After that it is SIGKILLed and reaped, and the
/// error holds the status it then ended with: a bounded wait never leaves a process behind.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Result<ExitStatus, ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            return Ok(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            return Err(child.wait().expect("reap a killed child"));
        }
        thread::sleep(POLL);
    }
}

/// Send `sig` to `child` and wait for it to exit, at most `grace` ([`wait_bounded`]: SIGKILL after that).
pub fn signal_and_wait(
    child: &mut Child,
    sig: Signal,
    grace: Duration,
) -> Result<ExitStatus, ExitStatus> {
    let _ = kill(Pid::from_raw(child.id() as i32), sig);
    wait_bounded(child, grace)
}

/// A running process, as `/proc` shows it.
#[derive(Debug, Clone)]
pub struct Process {
    /// Its pid.
    pub pid: u32,
    /// Its executable (`None` when unreadable: a kernel thread, another user's, or gone meanwhile).
    pub exe: Option<PathBuf>,
}

impl Process {
    /// Whether its environment holds `entry` (`KEY=value`, exactly).
    pub fn has_env(&self, entry: &str) -> bool {
        fs::read(format!("/proc/{}/environ", self.pid))
            .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == entry.as_bytes()))
    }
}

/// Every process running now.
pub fn processes() -> Vec<Process> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .map(|pid| Process {
            pid,
            exe: fs::read_link(format!("/proc/{pid}/exe")).ok(),
        })
        .collect()
}

/// The processes whose environment holds `entry` (`KEY=value`): e.g. plugins still running for a
/// container (`CNI_CONTAINERID=<id>`).
pub fn processes_with_env(entry: &str) -> Vec<Process> {
    processes()
        .into_iter()
        .filter(|p| p.has_env(entry))
        .collect()
}

/// Pids whose executable is `bin`.
pub fn processes_of(bin: &Path) -> Vec<u32> {
    let bin = fs::canonicalize(bin).unwrap_or_else(|_| bin.to_path_buf());
    processes()
        .into_iter()
        .filter(|p| p.exe.as_deref() == Some(bin.as_path()))
        .map(|p| p.pid)
        .collect()
}

/// Whether process `pid` still runs: it exists and is not a zombie (a zombie has exited; its descriptors and
/// locks are gone).
pub fn runs(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        // The state follows the command name, which may itself hold spaces and parentheses.
        !s.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// The recording delegate's name (delegates/recorder).
pub const RECORDER: &str = "plexus-recorder";

/// The `plexus-recorder` binary: next to `plexus` (the binary under test), else built once with
/// `$CARGO build -p plexus-recorder` in the same profile (a dependency's binaries are not built for
/// another package's tests).
pub fn recorder_bin(plexus: &Path) -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = plexus.parent().expect("the plexus binary has a directory");
        let found = dir.join(RECORDER);
        if found.is_file() {
            return found;
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", RECORDER, "--bin", RECORDER])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
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
        assert!(
            found.is_file(),
            "cargo built plexus-recorder but it is not at {}",
            found.display()
        );
        found
    })
}
