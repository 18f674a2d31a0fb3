//! Peak resident memory of the plexus process itself.
//!
//! `wait4`'s `ru_maxrss` is no good here: Linux fills it with `RUSAGE_BOTH` of the child, the larger of
//! its own high-water mark and that of every descendant it waited for, and plexus waits for its
//! delegates (Go binaries, often larger than plexus). So the runtime's [`Exec`] here starts plexus
//! stopped (`sh -c 'kill -STOP $$ && exec plexus'`), attaches with `PTRACE_SEIZE` and
//! `PTRACE_O_TRACEEXIT`, and when plexus stops at its exit — its memory still mapped — reads `VmHWM`
//! from `/proc/<pid>/status`: the high-water mark of plexus's own resident set, the value the kernel
//! would put into plexus's own `ru_maxrss`. Delegates are plexus's children and not traced. Only the
//! dedicated RSS runs use this (tracing costs a little time); latency runs use plexus's own
//! [`ProcessExec`](plexus::seams::exec::ProcessExec).

use std::{
    io::{Read, Write},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Mutex, mpsc},
    thread,
};

use nix::{
    sys::{
        ptrace,
        signal::{Signal, kill},
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};
use plexus::seams::exec::{Exec, ExecError, ExecOutput, ExecRequest, find_in_path};
use plexus_cni::ErrorReply;

/// What `/proc/<pid>/status` said about a process's memory as it exited (KiB).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Memory {
    /// `VmHWM`: the peak resident set.
    pub peak_kib: u64,
    /// `RssAnon` at exit: heap, stacks.
    pub anon_kib: u64,
    /// `RssFile` at exit: mapped files (the binary's pages, libc).
    pub file_kib: u64,
}

/// Runs each plugin under ptrace and records its memory at exit.
#[derive(Debug, Default)]
pub struct PeakRssExec {
    peaks: Mutex<Vec<(PathBuf, Option<Memory>)>>,
}

impl PeakRssExec {
    /// What was recorded so far, by binary, and forget it.
    pub fn take(&self) -> Vec<(PathBuf, Option<Memory>)> {
        std::mem::take(&mut *self.peaks.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn read_all(mut r: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// The memory of `pid` from `/proc/<pid>/status` (of a live process: `VmHWM` is its peak so far).
pub fn memory(pid: Pid) -> Option<Memory> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some(Memory {
        peak_kib: field("VmHWM:")?,
        anon_kib: field("RssAnon:").unwrap_or(0),
        file_kib: field("RssFile:").unwrap_or(0),
    })
}

/// How the traced process ended, and its peak.
struct Traced {
    code: Option<i32>,
    signal: Option<i32>,
    memory: Option<Memory>,
}

/// Attach to the stopped `pid`, let it run to its exit and read its high-water mark there.
fn trace(pid: Pid) -> Result<Traced, String> {
    match waitpid(pid, Some(WaitPidFlag::WUNTRACED)).map_err(|e| format!("waitpid: {e}"))? {
        WaitStatus::Stopped(_, Signal::SIGSTOP) => {}
        other => return Err(format!("the trampoline did not stop: {other:?}")),
    }
    ptrace::seize(pid, ptrace::Options::PTRACE_O_TRACEEXIT)
        .map_err(|e| format!("PTRACE_SEIZE: {e}"))?;
    kill(pid, Signal::SIGCONT).map_err(|e| format!("SIGCONT: {e}"))?;
    let mut mem = None;
    loop {
        match waitpid(pid, None).map_err(|e| format!("waitpid: {e}"))? {
            WaitStatus::PtraceEvent(_, _, ev) if ev == ptrace::Event::PTRACE_EVENT_EXIT as i32 => {
                mem = memory(pid);
                let _ = ptrace::cont(pid, None);
            }
            // Group-stop (PTRACE_EVENT_STOP) and other events: resume.
            WaitStatus::PtraceEvent(..) => {
                let _ = ptrace::cont(pid, None);
            }
            // Signal-delivery-stop: deliver it (SIGCHLD from its delegates, our SIGCONT).
            WaitStatus::Stopped(_, sig) => {
                let sig = (sig != Signal::SIGSTOP).then_some(sig);
                let _ = ptrace::cont(pid, sig);
            }
            WaitStatus::Exited(_, code) => {
                return Ok(Traced {
                    code: Some(code),
                    signal: None,
                    memory: mem,
                });
            }
            WaitStatus::Signaled(_, sig, _) => {
                return Ok(Traced {
                    code: None,
                    signal: Some(sig as i32),
                    memory: mem,
                });
            }
            _ => {}
        }
    }
}

impl Exec for PeakRssExec {
    fn find(&self, plugin_type: &str, dirs: &[PathBuf]) -> Result<PathBuf, ExecError> {
        find_in_path(plugin_type, dirs)
    }

    fn run(&self, req: &ExecRequest<'_>) -> Result<ExecOutput, ExecError> {
        let plugin = req.plugin.to_path_buf();
        let spawn_err = |reason: String| ExecError::Spawn {
            plugin: plugin.clone(),
            reason,
        };
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg("kill -STOP $$ && exec \"$0\"")
            .arg(req.plugin)
            .env_clear()
            .envs(req.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_err(e.to_string()))?;
        let pid = Pid::from_raw(child.id() as i32);
        let mut stdin = child.stdin.take();
        let input = req.stdin.to_vec();
        let writer = thread::spawn(move || {
            if let Some(s) = stdin.as_mut() {
                let _ = s.write_all(&input);
            }
        });
        let out = child.stdout.take().map(read_all);
        let err = child.stderr.take().map(read_all);
        // A watchdog: the process group is not ours to kill, the process is.
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let timeout = req.timeout;
        let watchdog = thread::spawn(move || {
            if done_rx.recv_timeout(timeout).is_err() {
                let _ = kill(pid, Signal::SIGKILL);
            }
        });
        let traced = trace(pid);
        let _ = done_tx.send(());
        let _ = watchdog.join();
        let _ = writer.join();
        let stdout = out.and_then(|h| h.join().ok()).unwrap_or_default();
        let stderr = err.and_then(|h| h.join().ok()).unwrap_or_default();
        // The child was reaped by `trace`; `child` is only dropped.
        drop(child);
        let traced = traced.map_err(spawn_err)?;
        self.peaks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((plugin.clone(), traced.memory));
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match (traced.code, traced.signal) {
            (Some(0), _) => Ok(ExecOutput { stdout, stderr }),
            (Some(code), _) => match ErrorReply::parse(&stdout) {
                Some(reply) => Err(ExecError::Plugin {
                    plugin,
                    reply,
                    stderr: text(&stderr),
                }),
                None => Err(ExecError::Failed {
                    plugin,
                    code,
                    stdout: text(&stdout),
                    stderr: text(&stderr),
                }),
            },
            (None, signal) => Err(ExecError::Signal {
                plugin,
                signal: signal.unwrap_or(0),
                stderr: text(&stderr),
            }),
        }
    }
}
