//! Daemon mode (issue 8): `E2E_MODE=daemon` runs every [`super::world::World`] with its own `plexus daemon`
//! (in the test's host namespace, watching the suite's node, through the same forwarded, least-privilege
//! kubeconfig) and the runtime calling `plexus-shim` instead of `plexus`. [`DaemonProcess`] starts, stops,
//! kills and restarts it, and asks it for `/readyz` and `/metrics` over its socket.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use plexus_testsupport::proc::signal_and_wait;
use serde_json::Value;

/// Whether this run is in daemon mode (`E2E_MODE=daemon`).
pub fn daemon_mode() -> bool {
    std::env::var("E2E_MODE").is_ok_and(|m| m == "daemon")
}

/// The shim under test: `E2E_SHIM_BIN`, else `plexus-shim-under-test` next to the plexus under test.
pub fn shim_binary(plexus: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("E2E_SHIM_BIN") {
        return PathBuf::from(p);
    }
    let p = plexus.with_file_name("plexus-shim-under-test");
    assert!(
        p.is_file(),
        "{} is missing: build the e2e package's binaries (cargo build -p plexus-e2e --bins) or set E2E_SHIM_BIN",
        p.display()
    );
    p
}

/// `GET path` on the daemon socket at `socket`: the status code and body, or `None` when nobody answers.
pub fn socket_get(socket: &Path, path: &str) -> Option<(u16, String)> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: plexus\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    let code = reply.split(' ').nth(1)?.parse().ok()?;
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// The daemon under test: `E2E_DAEMON_BIN`, else the daemon binary next to the plexus under test
/// (`plexus-daemon-under-test` beside `plexus-under-test`, `plexus-daemon` beside `plexus`).
pub fn daemon_binary(plexus: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("E2E_DAEMON_BIN") {
        return PathBuf::from(p);
    }
    let name = if plexus.file_name().is_some_and(|n| n == "plexus-under-test") {
        "plexus-daemon-under-test"
    } else {
        "plexus-daemon"
    };
    let p = plexus.with_file_name(name);
    assert!(
        p.is_file(),
        "{} is missing: build it (cargo build -p plexus-e2e --bins, or -p plexus --bins) or set E2E_DAEMON_BIN",
        p.display()
    );
    p
}

/// `cmd` (`ip`, or a wrapper that execs it) completed to run `plexus-daemon --config <config>` (the one
/// [`daemon_binary`] finds for `plexus`) in network namespace `netns`, stdout discarded, stderr inherited.
pub fn daemon_command<'a>(
    cmd: &'a mut Command,
    netns: &str,
    plexus: &Path,
    config: &Path,
) -> &'a mut Command {
    cmd.args(["netns", "exec", netns])
        .arg(daemon_binary(plexus))
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
}

/// What the daemon's process sees of the filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonView {
    /// The test's own, as a daemon run on the host sees it.
    Host,
    /// As a daemon in its container image sees it: a mount namespace of its own in which the host's
    /// programs (`/usr/sbin`: `iptables`, `ip`, …) and its network namespaces (`/run/netns`) are hidden,
    /// and the host's root is mounted at `hostroot` (an existing empty directory), as deploy/daemon mounts
    /// it. New mounts on the host (the pods' namespaces) still reach `hostroot`, as `HostToContainer`
    /// propagation does in a pod.
    Image {
        /// Where the host's root is mounted in the daemon's view.
        hostroot: PathBuf,
    },
}

/// The shell script that builds [`DaemonView::Image`] and then runs the daemon (`"$@"`).
const IMAGE_VIEW: &str = r#"set -e
mount --rbind / "$PLEXUS_E2E_HOSTROOT"
mount -t tmpfs -o size=64k plexus-e2e-image /usr/sbin
mount -t tmpfs -o size=64k plexus-e2e-image /run/netns
exec "$@""#;

/// One `plexus-daemon` process.
pub struct DaemonProcess {
    child: Option<Child>,
    plexus: PathBuf,
    host_netns: String,
    config: PathBuf,
    socket: PathBuf,
    view: DaemonView,
}

impl DaemonProcess {
    /// Write `config` to `config_path` and start the daemon in `host_netns`; wait until `/readyz` is 200.
    pub fn start(
        plexus: &Path,
        host_netns: &str,
        config: &Value,
        config_path: &Path,
    ) -> DaemonProcess {
        Self::start_in(plexus, host_netns, config, config_path, DaemonView::Host)
    }

    /// [`DaemonProcess::start`], the daemon seeing the filesystem as `view` says.
    pub fn start_in(
        plexus: &Path,
        host_netns: &str,
        config: &Value,
        config_path: &Path,
        view: DaemonView,
    ) -> DaemonProcess {
        std::fs::write(
            config_path,
            serde_json::to_vec_pretty(config).expect("daemon config"),
        )
        .expect("write the daemon config");
        let socket_dir = config["socketDir"].as_str().expect("socketDir set");
        let mut d = DaemonProcess {
            child: None,
            plexus: plexus.to_path_buf(),
            host_netns: host_netns.to_string(),
            config: config_path.to_path_buf(),
            socket: Path::new(socket_dir).join(plexus_shim::wire::SOCKET_NAME),
            view,
        };
        d.spawn();
        d.wait_ready(Duration::from_secs(30));
        d
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's pid (while running).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("ip");
        let child = match &self.view {
            DaemonView::Host => {
                daemon_command(&mut cmd, &self.host_netns, &self.plexus, &self.config).spawn()
            }
            // `ip netns exec NS unshare … sh -c SCRIPT plexus-e2e-image DAEMON --config CONFIG`: unshare's
            // mount namespace stays a slave of the host's, so the pods' namespaces still arrive.
            DaemonView::Image { hostroot } => cmd
                .args(["netns", "exec", &self.host_netns])
                .args(["unshare", "--mount", "--propagation", "slave", "--"])
                .args(["sh", "-c", IMAGE_VIEW, "plexus-e2e-image"])
                .env("PLEXUS_E2E_HOSTROOT", hostroot)
                .arg(daemon_binary(&self.plexus))
                .arg("--config")
                .arg(&self.config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn(),
        }
        .expect("start plexus daemon");
        self.child = Some(child);
    }

    /// Wait until `/readyz` answers 200 (the caches synced), at most `limit`; panics otherwise.
    pub fn wait_ready(&mut self, limit: Duration) {
        let started = Instant::now();
        loop {
            if self.get("/readyz").is_some_and(|(code, _)| code == 200) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("plexus daemon exited while starting: {status}");
            }
            assert!(
                started.elapsed() < limit,
                "plexus daemon not ready on {} within {limit:?}",
                self.socket.display()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET path` on the socket: the status code and body, or `None` when nobody answers.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        socket_get(&self.socket, path)
    }

    /// Wait until the daemon's watch cache holds `kind/ns/name` (`kind`: `pods` or
    /// `network-attachment-definitions`), at most 10 s.
    pub fn wait_cached(&self, kind: &str, ns: &str, name: &str) {
        let path = format!("/cache/{kind}/{ns}/{name}");
        let started = Instant::now();
        while self.get(&path).is_none_or(|(code, _)| code != 200) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the daemon's cache never saw {kind} {ns}/{name}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait until the daemon holds NAD `ns/name` loaded, its config and all, so an ADD selecting it reads
    /// nothing from the API (a NAD no pod of the node selects is held compact: docs/daemon.md, "The NAD
    /// cache"), at most 10 s.
    pub fn wait_nad_loaded(&self, ns: &str, name: &str) {
        if let Err(e) = wait_nad_loaded(&self.socket, ns, name, Duration::from_secs(10)) {
            panic!("{e}");
        }
    }

    /// Wait until every network-status write the daemon does after its replies (`statusWrite: afterReply`,
    /// its default) has ended (`plexus_status_writes_pending` is 0), at most `limit`.
    pub fn wait_status_writes(&self, limit: Duration) {
        if let Err(e) = wait_status_writes(&self.socket, limit) {
            panic!("{e}");
        }
    }

    /// Wait until the work the daemon left for after its replies has ended (ADD's durable writes, DEL's
    /// unlinks of the files it moved into `<cniDir>/.trash`), at most `limit`.
    pub fn wait_after_reply(&self, limit: Duration) {
        if let Err(e) = wait_after_reply(&self.socket, limit) {
            panic!("{e}");
        }
    }

    /// SIGTERM and wait (at most 40 s, then SIGKILL): the graceful shutdown.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let stopped = signal_and_wait(&mut child, Signal::SIGTERM, Duration::from_secs(40));
        Some(stopped.unwrap_or_else(|killed| killed))
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again (after [`DaemonProcess::stop`] or [`DaemonProcess::kill`]), without waiting.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the daemon is still running");
        self.spawn();
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether a `GET /cache/network-attachment-definitions/...` body says the NAD is loaded. A daemon from
/// before the compact cache (issue 20) says nothing: it held every NAD whole.
pub fn nad_loaded(body: &str) -> bool {
    serde_json::from_str::<Value>(body)
        .ok()
        .is_some_and(|v| v["cache"]["loaded"].as_bool().unwrap_or(true))
}

/// Wait until the daemon on `socket` holds NAD `ns/name` loaded ([`nad_loaded`]); an error after `limit`.
pub fn wait_nad_loaded(socket: &Path, ns: &str, name: &str, limit: Duration) -> Result<(), String> {
    let path = format!("/cache/network-attachment-definitions/{ns}/{name}");
    let started = Instant::now();
    loop {
        let got = socket_get(socket, &path);
        if got
            .as_ref()
            .is_some_and(|(code, body)| *code == 200 && nad_loaded(body))
        {
            return Ok(());
        }
        if started.elapsed() > limit {
            return Err(format!(
                "the daemon did not load NAD {ns}/{name} within {limit:?} (last answer: {got:?})"
            ));
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Wait until the daemon on `socket` has ended every network-status write it left for after its replies
/// (`statusWrite: "afterReply"`, its default): `plexus_status_writes_pending` is 0 on its `/metrics`. An
/// error after `limit`, with the last count seen.
pub fn wait_status_writes(socket: &Path, limit: Duration) -> Result<(), String> {
    wait_gauge(socket, "plexus_status_writes_pending", limit, false).map_err(|seen| {
        format!("the daemon's network-status writes still pending after {limit:?} ({seen:?})")
    })
}

/// Wait until the daemon on `socket` has ended the work it left for after its replies (ADD's durable
/// writes, DEL's unlinks of the files it moved into `<cniDir>/.trash`): `plexus_after_reply_pending` is 0.
/// A daemon that does not answer, or that has no such gauge (a build from before DEL unlinked after its
/// reply), has nothing pending that a leak check could wait for. An error after `limit`.
pub fn wait_after_reply(socket: &Path, limit: Duration) -> Result<(), String> {
    wait_gauge(socket, "plexus_after_reply_pending", limit, true).map_err(|seen| {
        format!("the daemon's work after its replies still pending after {limit:?} ({seen:?})")
    })
}

/// Poll `/metrics` until gauge `name` reads 0 (or, with `absent_is_zero`, is missing from the metrics or
/// nothing listens on `socket`); the last value seen after `limit`. A daemon that listens but does not
/// answer (busy, or a torn reply) is asked again: its work may well be pending.
fn wait_gauge(
    socket: &Path,
    name: &str,
    limit: Duration,
    absent_is_zero: bool,
) -> Result<(), Option<i64>> {
    let started = Instant::now();
    let prefix = format!("{name} ");
    loop {
        let metrics = socket_get(socket, "/metrics").map(|(_, body)| body);
        let pending = metrics.as_deref().and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .and_then(|v| v.trim().parse::<i64>().ok())
        });
        let absent = pending.is_none() && (metrics.is_some() || !listening(socket));
        if pending == Some(0) || (absent_is_zero && absent) {
            return Ok(());
        }
        if started.elapsed() > limit {
            return Err(pending);
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Whether something accepts connections on `socket` (no daemon: none was started, or it was killed).
fn listening(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}

/// A stand-in for a daemon's `/metrics` on a socket, for tests of the waits above: every gauge it is
/// given reads 1 for its first `busy` answers, then 0. It can also hang up once without an answer first.
pub struct PendingGauges {
    asked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl PendingGauges {
    /// Serve on `socket` (made here) until the process ends.
    pub fn serve(
        socket: &Path,
        gauges: &[&str],
        busy: usize,
        hang_up_first: bool,
    ) -> PendingGauges {
        use std::sync::{Arc, atomic::Ordering};
        let listener =
            std::os::unix::net::UnixListener::bind(socket).expect("bind the stand-in socket");
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let gauges: Vec<String> = gauges.iter().map(|g| g.to_string()).collect();
        let count = asked.clone();
        thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let n = count.fetch_add(1, Ordering::SeqCst);
                if hang_up_first && n == 0 {
                    continue;
                }
                // The whole request head first: a socket closed with bytes unread resets the client's.
                let mut head = Vec::new();
                let mut chunk = [0u8; 256];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                let value = usize::from(n < busy.saturating_add(usize::from(hang_up_first)));
                let body: String = gauges.iter().map(|g| format!("{g} {value}\n")).collect();
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        PendingGauges { asked }
    }

    /// How many connections it has taken.
    pub fn asked(&self) -> usize {
        self.asked.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAUGE: &str = "plexus_after_reply_pending";

    #[test]
    fn the_wait_lasts_until_the_gauge_reads_zero() {
        let d = tempfile::tempdir().unwrap();
        let socket = d.path().join("s");
        let fake = PendingGauges::serve(&socket, &[GAUGE], 3, false);
        wait_after_reply(&socket, Duration::from_secs(20)).unwrap();
        assert_eq!(fake.asked(), 4, "three answers of 1, then the 0");
    }

    #[test]
    fn a_daemon_that_hangs_up_without_an_answer_is_asked_again() {
        let d = tempfile::tempdir().unwrap();
        let socket = d.path().join("s");
        let fake = PendingGauges::serve(&socket, &[GAUGE], 2, true);
        wait_after_reply(&socket, Duration::from_secs(20)).unwrap();
        assert!(fake.asked() >= 4, "{} connections", fake.asked());
    }

    #[test]
    fn nothing_listening_or_no_such_gauge_is_nothing_pending() {
        let d = tempfile::tempdir().unwrap();
        let socket = d.path().join("s");
        wait_after_reply(&socket, Duration::ZERO).unwrap();
        let _fake = PendingGauges::serve(&socket, &["plexus_other"], 100, false);
        wait_after_reply(&socket, Duration::ZERO).unwrap();
        // The gauge itself is not: a wait that never sees 0 fails.
        let other = d.path().join("t");
        let _busy = PendingGauges::serve(&other, &[GAUGE], usize::MAX - 1, false);
        assert_eq!(
            wait_after_reply(&other, Duration::from_millis(50)).unwrap_err(),
            "the daemon's work after its replies still pending after 50ms (Some(1))"
        );
    }
}
