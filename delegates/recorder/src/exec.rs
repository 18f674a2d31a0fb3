//! Carrying out a plan: stderr text, sleep, then the reply, exit code or signal, or a real plugin's.

use std::io::{self, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;

use nix::sys::signal::{SigSet, Signal, raise};
use serde_json::Value;

use crate::plan::{Action, Plan};

/// Performs `plan` and returns the exit status (unless a signal ends the process).
pub fn carry_out(plan: Plan) -> i32 {
    if let Some(text) = &plan.stderr {
        let mut err = io::stderr().lock();
        if let Err(e) = err.write_all(text.as_bytes()).and_then(|()| err.flush()) {
            eprintln!("plexus-recorder: writing stderr text: {e}");
        }
    }
    if let Some(duration) = plan.sleep {
        thread::sleep(duration);
    }
    match plan.action {
        Action::Silent(code) => code,
        Action::Json { body, exit } => {
            write_stdout(&json_line(&body));
            exit
        }
        Action::Text { body, exit } => {
            write_stdout(body.as_bytes());
            exit
        }
        Action::Junk(n) => {
            write_junk(n);
            1
        }
        Action::Signal(sig) => raise_signal(sig),
        Action::Exec { plugin, stdin } => run_plugin(&plugin, &stdin),
    }
}

/// Runs `plugin` as a child (the environment and inherited descriptors are the recorder's, stderr goes
/// straight through), feeds it `stdin`, prints what it printed and returns its exit status.
fn run_plugin(plugin: &Path, stdin: &[u8]) -> i32 {
    let child = Command::new(plugin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("plexus-recorder: cannot run {}: {e}", plugin.display());
            return 1;
        }
    };
    if let Some(mut input) = child.stdin.take() {
        // A plugin that exits without reading its config: its reply says why.
        let _ = input.write_all(stdin);
    }
    match child.wait_with_output() {
        Ok(out) => {
            write_stdout(&out.stdout);
            out.status
                .code()
                .or_else(|| out.status.signal().map(|s| 128 + s))
                .unwrap_or(1)
        }
        Err(e) => {
            eprintln!("plexus-recorder: waiting for {}: {e}", plugin.display());
            1
        }
    }
}

fn json_line(body: &Value) -> Vec<u8> {
    // Serialising a Value cannot fail; fall back to an empty object regardless.
    let mut line = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    line
}

fn write_stdout(bytes: &[u8]) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        eprintln!("plexus-recorder: writing stdout: {e}");
    }
}

/// Writes `n` bytes of non-JSON junk to stdout, stopping early if the reader goes away.
fn write_junk(n: u64) {
    const CHUNK: usize = 64 * 1024;
    let pattern = b"plexus-recorder junk output ";
    let block: Vec<u8> = pattern.iter().copied().cycle().take(CHUNK).collect();
    let mut out = io::stdout().lock();
    let mut left = n;
    while left > 0 {
        let len = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
        if let Err(e) = out.write_all(&block[..len]) {
            eprintln!("plexus-recorder: writing junk: {e}");
            return;
        }
        left -= len as u64;
    }
    if let Err(e) = out.flush() {
        eprintln!("plexus-recorder: writing junk: {e}");
    }
}

/// Raises `sig` at this process. Raised twice because Rust's runtime handles the
/// first SIGSEGV itself (it restores the default action and returns); if the
/// process still lives (signal ignored), exits with 128 + signal number.
fn raise_signal(sig: Signal) -> i32 {
    let mut set = SigSet::empty();
    set.add(sig);
    if let Err(e) = set.thread_unblock() {
        eprintln!("plexus-recorder: unblocking {sig}: {e}");
    }
    for _ in 0..2 {
        if let Err(e) = raise(sig) {
            eprintln!("plexus-recorder: raising {sig}: {e}");
            break;
        }
    }
    let code = 128 + sig as i32;
    eprintln!("plexus-recorder: still alive after raising {sig}; exiting {code}");
    code
}
