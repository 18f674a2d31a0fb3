//! Running a delegate binary: lookup in the search path, a hard time limit that kills its process group,
//! bounded output capture and libcni's "text file busy" retry (CNI-52, CNI-54, CNI-55, CNI-56).

use std::{
    io::{Read, Write},
    os::unix::process::{CommandExt, ExitStatusExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use plexus_cni::{ErrorReply, validate};

/// The most of a delegate's stdout we read; a larger reply is refused.
pub const MAX_STDOUT: usize = 16 * 1024 * 1024;
/// The most of a delegate's stderr we keep for the log.
pub const MAX_STDERR: usize = 64 * 1024;

/// One delegate invocation.
#[derive(Debug, Clone)]
pub struct ExecRequest<'a> {
    /// The binary (already looked up).
    pub plugin: &'a Path,
    /// The complete environment of the child.
    pub env: &'a [(String, String)],
    /// The config on stdin.
    pub stdin: &'a [u8],
    /// Kill the child after this long.
    pub timeout: Duration,
}

/// What a successful delegate printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Stdout (the result, or empty).
    pub stdout: Vec<u8>,
    /// Stderr (for the log).
    pub stderr: Vec<u8>,
}

/// A delegate that could not be run or did not succeed.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ExecError {
    /// The type is a path, empty, or otherwise unsafe (CVE-2021-20206).
    #[error("refusing plugin type {plugin_type:?}: {reason}")]
    InvalidType {
        /// As given.
        plugin_type: String,
        /// Why.
        reason: String,
    },
    /// No executable file by that name in the search path.
    #[error("failed to find plugin {plugin_type:?} in path [{}]", join(.dirs))]
    NotFound {
        /// The type.
        plugin_type: String,
        /// Where we looked.
        dirs: Vec<PathBuf>,
    },
    /// The process could not be started.
    #[error("cannot start {}: {reason}", plugin.display())]
    Spawn {
        /// The binary.
        plugin: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// It ran past its time limit and was killed with its process group.
    #[error("{} did not finish within {:.1}s and was killed", plugin.display(), timeout.as_secs_f64())]
    Timeout {
        /// The binary.
        plugin: PathBuf,
        /// The limit.
        timeout: Duration,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// It was killed by a signal.
    #[error("{} was killed by signal {signal}", plugin.display())]
    Signal {
        /// The binary.
        plugin: PathBuf,
        /// The signal number.
        signal: i32,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// It failed and printed a CNI error (CNI-39: its code and message are kept).
    #[error("{}", reply.msg)]
    Plugin {
        /// The binary.
        plugin: PathBuf,
        /// Its error reply.
        reply: ErrorReply,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// It failed without a CNI error on stdout.
    #[error("{} failed (exit status {code}){}", plugin.display(), describe_output(.stdout, .stderr))]
    Failed {
        /// The binary.
        plugin: PathBuf,
        /// Exit status.
        code: i32,
        /// The start of its stdout.
        stdout: String,
        /// The start of its stderr.
        stderr: String,
    },
    /// It printed more than [`MAX_STDOUT`].
    #[error("{} printed more than {} bytes on stdout", plugin.display(), MAX_STDOUT)]
    OutputTooLarge {
        /// The binary.
        plugin: PathBuf,
    },
}

fn join(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn describe_output(stdout: &str, stderr: &str) -> String {
    let mut s = String::new();
    if !stdout.trim().is_empty() {
        s.push_str(&format!(": stdout {:?}", stdout.trim()));
    }
    if !stderr.trim().is_empty() {
        s.push_str(&format!(": stderr {:?}", stderr.trim()));
    }
    s
}

/// The seam through which plexus runs delegates; tests substitute a recording fake.
pub trait Exec: Send + Sync {
    /// Find the binary for `plugin_type` in `dirs` (first regular file wins).
    fn find(&self, plugin_type: &str, dirs: &[PathBuf]) -> Result<PathBuf, ExecError>;
    /// Run it to completion.
    fn run(&self, req: &ExecRequest<'_>) -> Result<ExecOutput, ExecError>;
}

/// Look up a plugin binary (libcni `FindInPath`), refusing any type that is a path (CNI-52).
pub fn find_in_path(plugin_type: &str, dirs: &[PathBuf]) -> Result<PathBuf, ExecError> {
    validate::plugin_type(plugin_type).map_err(|e| ExecError::InvalidType {
        plugin_type: plugin_type.to_string(),
        reason: e.to_string(),
    })?;
    for d in dirs {
        let p = d.join(plugin_type);
        // `metadata` follows symlinks, as libcni's stat does.
        if std::fs::metadata(&p).is_ok_and(|m| m.is_file()) {
            return Ok(p);
        }
    }
    Err(ExecError::NotFound {
        plugin_type: plugin_type.to_string(),
        dirs: dirs.to_vec(),
    })
}

/// Runs delegates as child processes.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessExec;

fn lossy(b: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(max)]).into_owned();
    if b.len() > max { format!("{s}…") } else { s }
}

fn read_capped(mut r: impl Read, cap: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let mut overflow = false;
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.len() + n > cap {
                    out.extend_from_slice(&buf[..cap - out.len()]);
                    overflow = true;
                    // Keep draining so the child is not blocked on a full pipe.
                } else if !overflow {
                    out.extend_from_slice(&buf[..n]);
                }
            }
        }
    }
    (out, overflow)
}

const ETXTBSY_RETRIES: u32 = 5;

impl ProcessExec {
    fn spawn(req: &ExecRequest<'_>) -> Result<std::process::Child, ExecError> {
        let mut attempt = 0;
        loop {
            let mut cmd = Command::new(req.plugin);
            cmd.env_clear()
                .envs(req.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                // Its own process group, so a timeout kills whatever it started too.
                .process_group(0);
            match cmd.spawn() {
                Ok(child) => return Ok(child),
                Err(e)
                    if e.raw_os_error() == Some(nix::libc::ETXTBSY)
                        && attempt < ETXTBSY_RETRIES =>
                {
                    // The binary is being replaced (CNI-55): libcni retries with a pause.
                    attempt += 1;
                    thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
                }
                Err(e) => {
                    return Err(ExecError::Spawn {
                        plugin: req.plugin.to_path_buf(),
                        reason: e.to_string(),
                    });
                }
            }
        }
    }
}

impl Exec for ProcessExec {
    fn find(&self, plugin_type: &str, dirs: &[PathBuf]) -> Result<PathBuf, ExecError> {
        find_in_path(plugin_type, dirs)
    }

    fn run(&self, req: &ExecRequest<'_>) -> Result<ExecOutput, ExecError> {
        let started = Instant::now();
        let mut child = Self::spawn(req)?;
        let pid = child.id() as i32;
        let plugin = req.plugin.to_path_buf();

        let mut stdin = child.stdin.take();
        let input = req.stdin.to_vec();
        let writer = thread::spawn(move || {
            if let Some(s) = stdin.as_mut() {
                // A child that exits without reading gets EPIPE here; that is its business.
                let _ = s.write_all(&input);
            }
        });
        let (out_tx, out_rx) = mpsc::channel();
        let (err_tx, err_rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            thread::spawn(move || {
                let _ = out_tx.send(read_capped(out, MAX_STDOUT));
            });
        }
        if let Some(err) = child.stderr.take() {
            thread::spawn(move || {
                let _ = err_tx.send(read_capped(err, MAX_STDERR).0);
            });
        }
        let (wait_tx, wait_rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = wait_tx.send(child.wait());
        });

        let status = match wait_rx.recv_timeout(req.timeout) {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => {
                return Err(ExecError::Spawn {
                    plugin,
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = wait_rx.recv_timeout(Duration::from_secs(5));
                let stderr = err_rx
                    .recv_timeout(Duration::from_millis(200))
                    .unwrap_or_default();
                return Err(ExecError::Timeout {
                    plugin,
                    timeout: req.timeout,
                    stderr: lossy(&stderr, 4096),
                });
            }
        };
        // Grandchildren may hold the pipes open; do not wait for them beyond a short grace.
        let grace = Duration::from_millis(500);
        let (stdout, overflow) = out_rx.recv_timeout(grace).unwrap_or_default();
        let stderr = err_rx.recv_timeout(grace).unwrap_or_default();
        let _ = writer.join();
        tracing::trace!(plugin = %plugin.display(), elapsed_ms = started.elapsed().as_millis() as u64, "delegate exited");

        if overflow {
            return Err(ExecError::OutputTooLarge { plugin });
        }
        if let Some(signal) = status.signal() {
            return Err(ExecError::Signal {
                plugin,
                signal,
                stderr: lossy(&stderr, 4096),
            });
        }
        if status.success() {
            return Ok(ExecOutput { stdout, stderr });
        }
        let code = status.code().unwrap_or(-1);
        match ErrorReply::parse(&stdout) {
            Some(reply) => Err(ExecError::Plugin {
                plugin,
                reply,
                stderr: lossy(&stderr, 4096),
            }),
            None => Err(ExecError::Failed {
                plugin,
                code,
                stdout: lossy(&stdout, 512),
                stderr: lossy(&stderr, 4096),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn run(p: &Path, stdin: &[u8], timeout: Duration) -> Result<ExecOutput, ExecError> {
        let env = vec![
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ("X".to_string(), "y".to_string()),
        ];
        ProcessExec.run(&ExecRequest {
            plugin: p,
            env: &env,
            stdin,
            timeout,
        })
    }

    #[test]
    fn find_refuses_paths_and_reports_dirs() {
        let d = tempfile::tempdir().unwrap();
        for t in ["../../bin/sh", "/bin/sh", "", ".."] {
            assert!(
                matches!(
                    find_in_path(t, &[d.path().into()]),
                    Err(ExecError::InvalidType { .. })
                ),
                "{t}"
            );
        }
        let e = find_in_path("nope", &[d.path().into()]).unwrap_err();
        assert!(e.to_string().contains(&d.path().display().to_string()));
        std::fs::create_dir(d.path().join("adir")).unwrap();
        assert!(
            find_in_path("adir", &[d.path().into()]).is_err(),
            "a directory is not a plugin"
        );
        let p = script(d.path(), "ok", "true");
        assert_eq!(
            find_in_path("ok", &[PathBuf::from("/nonexistent"), d.path().into()]).unwrap(),
            p
        );
    }

    #[test]
    fn stdin_env_stdout_stderr() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "echo", "cat; echo \"$X\" >&2");
        let out = run(&p, b"{\"a\":1}", Duration::from_secs(10)).unwrap();
        assert_eq!(out.stdout, b"{\"a\":1}");
        assert_eq!(out.stderr, b"y\n");
    }

    #[test]
    fn cni_error_is_kept_cni_39() {
        let d = tempfile::tempdir().unwrap();
        let p = script(
            d.path(),
            "f",
            r#"echo '{"code":7,"msg":"bad conf","details":"d"}'; exit 1"#,
        );
        match run(&p, b"", Duration::from_secs(10)).unwrap_err() {
            ExecError::Plugin { reply, .. } => {
                assert_eq!((reply.code, reply.msg.as_str()), (7, "bad conf"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_and_exit_code() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "g", "echo garbage; echo oops >&2; exit 3");
        match run(&p, b"", Duration::from_secs(10)).unwrap_err() {
            e @ ExecError::Failed { code: 3, .. } => {
                let m = e.to_string();
                assert!(m.contains("garbage") && m.contains("oops"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn timeout_kills_the_process_group() {
        let d = tempfile::tempdir().unwrap();
        let marker = d.path().join("survived");
        let p = script(
            d.path(),
            "hang",
            &format!("(sleep 2; touch {}) & sleep 30", marker.display()),
        );
        let t = Instant::now();
        let e = run(&p, b"", Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, ExecError::Timeout { .. }), "{e:?}");
        assert!(t.elapsed() < Duration::from_secs(10));
        thread::sleep(Duration::from_millis(2500));
        assert!(
            !marker.exists(),
            "the background child must have been killed with the group"
        );
    }

    #[test]
    fn signal_is_reported() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "k", "kill -9 $$");
        assert!(matches!(
            run(&p, b"", Duration::from_secs(10)),
            Err(ExecError::Signal { signal: 9, .. })
        ));
    }

    #[test]
    fn huge_output_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "h", "head -c 20000000 /dev/zero");
        assert!(matches!(
            run(&p, b"", Duration::from_secs(30)),
            Err(ExecError::OutputTooLarge { .. })
        ));
    }

    #[test]
    fn big_stdin_to_a_child_that_does_not_read_does_not_hang() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "n", "exit 0");
        let big = vec![b'x'; 4 * 1024 * 1024];
        assert!(run(&p, &big, Duration::from_secs(10)).is_ok());
    }
}
