//! Bounded child processes: every external command the suite runs gets a time limit.

use std::{
    io::{Read, Write},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

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

/// Run `cmd` with `stdin`; kill it and panic after `timeout`.
pub fn run_bounded(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut input = child.stdin.take().expect("piped stdin");
    let data = stdin.to_vec();
    let writer = thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let mut out = child.stdout.take().expect("piped stdout");
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let mut err = child.stderr.take().expect("piped stderr");
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    Output {
        code: status.code().unwrap_or(-1),
        stdout: reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// Run `ip <args>` (at most 30 s) and require success; returns stdout.
pub fn ip(args: &[&str]) -> String {
    let out = run_bounded(Command::new("ip").args(args), b"", Duration::from_secs(30));
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

/// The effective uid of this process, from /proc/self/status.
pub fn effective_uid() -> Option<u32> {
    std::fs::read_to_string("/proc/self/status")
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
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read /dev/urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}
