//! Daemon mode (issue 8): `plexus daemon` in the bench's host namespace (where the thin plexus runs, so its
//! delegates run there too) serving `plexus-shim`, which the runtime runs instead of `plexus`.
//!
//! Per K, the same rows as the thin mode ([`phases::latency`] through the shim's list, interleaved with the
//! same floor), with the pod and its NADs confirmed in the daemon's watch caches (`GET /cache/...` on its
//! socket, unmeasured) before every ADD, so the rows are the steady state; API requests per ADD and DEL
//! from the stand-in's log without the daemon's long-lived watches (`watch=true`); the shim's peak RSS
//! ([`phases::peak_rss`] traces whatever the runtime runs). Once: the shim answering VERSION by itself
//! (its start-up cost), the daemon's own cache-lookup counters over the steady state, its memory, and the
//! storm ([`storm`]).
//!
//! **The storm.** The daemon is stopped (SIGTERM, graceful) and started again — a fresh process, caches
//! cold — inside a cgroup-v1 memory cgroup limited to `--storm-memory-mib` (64 MiB): the daemon's shell
//! trampoline writes its own pid into `cgroup.procs` before it execs `nsenter --net=… plexus daemon`, so
//! everything the daemon allocates, and every delegate it starts, is charged to the cgroup from the
//! first instruction. Right after the spawn (the daemon is still starting: the shims wait for its socket,
//! `daemonWaitSeconds`), `--storm` pods with K = 3 are ADDed at once through the shim, then DELed at once.
//! Reported: failures, OOM kills (`memory.oom_control`'s `oom_kill`), `memory.failcnt` (how often the
//! limit was hit: the kernel then reclaims, page cache first), `memory.max_usage_in_bytes` (anonymous
//! memory and page cache charged to the cgroup), the cgroup's peak anonymous memory (`total_rss`, sampled
//! every 10 ms), the daemon's own `VmHWM`, wall time, per-pod p50/p99, and leaks after the DELs.
//!
//! The cgroup is made under the bench's own memory cgroup (`/sys/fs/cgroup/memory/plexus-bench-<pid>` when
//! the bench runs in the root cgroup, as on a plain node), so no process leaves a cgroup something else
//! put it in; it is removed afterwards.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};
use plexus_e2e::harness::cluster::NO_SUCH_NODE;
use plexus_testsupport::proc::signal_and_wait;
use serde::Serialize;
use serde_json::json;

use super::{
    analysis::ApiCounts,
    exec::{Memory, memory},
    opts::Opts,
    phases::{self, KResult, await_events, check_status, concurrently, requests},
    setup::{Bench, Op, Pod, Runner, nad_name},
    stats::{Stats, median, ms},
    system::Binary,
};

/// The storm's pods have K = 3 secondary networks, as the thin burst's.
pub const STORM_K: usize = 3;
/// How long the daemon may take to report ready.
const READY_LIMIT: Duration = Duration::from_secs(60);
/// How long a pod or NAD may take to reach the daemon's cache.
const CACHED_LIMIT: Duration = Duration::from_secs(10);
/// The cgroup-v1 memory controller's mount.
const MEMCG_ROOT: &str = "/sys/fs/cgroup/memory";
const MIB: u64 = 1024 * 1024;

/// `GET path` on the daemon socket (the harness's client).
pub use plexus_e2e::harness::daemon::socket_get as http_get;
use plexus_e2e::harness::daemon::{
    daemon_binary, daemon_command, wait_after_reply, wait_nad_loaded, wait_status_writes,
};

/// One `plexus daemon` process in the bench's host namespace.
pub struct Daemon {
    child: Option<Child>,
    plexus: PathBuf,
    /// The daemon binary when it is not the one [`daemon_binary`] finds (the bench's own build, or the scale
    /// phase's baseline).
    bin: Option<PathBuf>,
    netns: String,
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Write the daemon's config for `b` and start it (not waiting: see [`Daemon::wait_ready`]).
    pub fn start(b: &Bench, opts: &Opts) -> Result<Daemon, String> {
        Self::start_with(b, opts, None, &serde_json::Map::new())
    }

    /// [`Daemon::start`] with daemon binary `bin` instead of the one [`daemon_binary`] finds, and `extra`
    /// laid over its config after `--daemon-config`.
    pub fn start_with(
        b: &Bench,
        opts: &Opts,
        bin: Option<&Path>,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Daemon, String> {
        let log = match &opts.plexus_log {
            Some(p) => PathBuf::from(format!("{}.daemon", p.display())),
            None => b.root().join("daemon.log"),
        };
        let mut config = json!({
            "nodeName": NO_SUCH_NODE,
            "kubeconfig": b.kubeconfig(),
            "socketDir": b.socket_dir(),
            "metricsAddress": "",
            // As quiet as the thin plexus is by default (it logs nothing), but errors are kept.
            "logLevel": if opts.plexus_log.is_some() { "debug" } else { "error" },
            "logFile": log,
            "logToStderr": false,
            "cacheSyncTimeoutSeconds": 20,
            "shutdownTimeoutSeconds": 30,
        });
        for (k, v) in opts.daemon_config.iter().chain(extra) {
            config[k] = v.clone();
        }
        let path = b.root().join("daemon.json");
        fs::write(&path, config.to_string())
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        let mut d = Daemon {
            child: None,
            plexus: fs::canonicalize(&b.plexus).unwrap_or_else(|_| b.plexus.clone()),
            bin: bin
                .or(b.daemon.as_deref())
                .map(|p| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())),
            netns: b.host.name.clone(),
            config: path,
            socket: b.socket_dir().join(plexus_shim::wire::SOCKET_NAME),
            log,
        };
        d.spawn(None)?;
        Ok(d)
    }

    /// Start the process: `ip netns exec <host> plexus-daemon --config …`, through a shell that first puts
    /// itself into the cgroup whose `cgroup.procs` is `procs`, when given (the pid stays the same through
    /// both execs).
    pub fn spawn(&mut self, procs: Option<&Path>) -> Result<(), String> {
        if self.child.is_some() {
            return Err("the daemon is running already".into());
        }
        let mut cmd = match procs {
            None => Command::new("ip"),
            Some(procs) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c")
                    .arg("p=$1; shift; echo $$ > \"$p\" && exec \"$@\"")
                    .arg("sh")
                    .arg(procs);
                c
            }
        };
        if procs.is_some() {
            // `nsenter`, not `ip netns exec`: the latter remounts /sys for the namespace, and the cgroup
            // file systems with it, so the daemon could not read its memory cgroup (admission reads its
            // room, `daemon::room`). The namespace is the same; the delegates use netlink and /proc.
            cmd.arg("nsenter")
                .arg(format!("--net=/run/netns/{}", self.netns))
                .arg("--")
                .arg(self.binary())
                .arg("--config")
                .arg(&self.config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
        } else if let Some(bin) = &self.bin {
            cmd.args(["netns", "exec", &self.netns])
                .arg(bin)
                .arg("--config")
                .arg(&self.config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
        } else {
            daemon_command(&mut cmd, &self.netns, &self.plexus, &self.config);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("start plexus daemon: {e}"))?;
        self.child = Some(child);
        Ok(())
    }

    /// The daemon binary it runs.
    pub fn binary(&self) -> PathBuf {
        self.bin
            .clone()
            .unwrap_or_else(|| daemon_binary(&self.plexus))
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Wait until `/readyz` answers 200 (caches synced, or their time-out passed); how long that took
    /// from now. Also checks that the pid is plexus's (both execs happened), so its memory is plexus's.
    pub fn wait_ready(&mut self) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            if http_get(&self.socket, "/readyz").is_some_and(|(code, _)| code == 200) {
                break;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("plexus daemon exited while starting: {status}"));
            }
            if started.elapsed() > READY_LIMIT {
                return Err(format!(
                    "plexus daemon not ready on {} within {READY_LIMIT:?}",
                    self.socket.display()
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
        let took = started.elapsed();
        let pid = self.pid().ok_or("the daemon is not running")?;
        let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        // plexus-daemon, or plexus itself where the daemon binary is a wrapper running `plexus daemon` (a
        // build from before plexus-daemon, measured against a newer one).
        let daemon = self.binary();
        let daemon = fs::canonicalize(&daemon).unwrap_or(daemon);
        if exe != daemon && exe != self.plexus {
            return Err(format!(
                "pid {pid} runs {}, not {} or {}",
                exe.display(),
                daemon.display(),
                self.plexus.display()
            ));
        }
        Ok(took)
    }

    /// `GET path` on the daemon's socket.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.socket, path)
    }

    /// Wait until the daemon's watch cache holds `kind/ns/name` (`pods` or
    /// `network-attachment-definitions`).
    pub fn wait_cached(&self, kind: &str, ns: &str, name: &str) -> Result<(), String> {
        let path = format!("/cache/{kind}/{ns}/{name}");
        let started = Instant::now();
        while self.get(&path).is_none_or(|(code, _)| code != 200) {
            if started.elapsed() > CACHED_LIMIT {
                return Err(format!(
                    "the daemon's cache did not get {kind} {ns}/{name} within {CACHED_LIMIT:?}"
                ));
            }
            thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Wait until the daemon has sent every network-status write it left for after its replies
    /// (`statusWrite: "afterReply"`), so a pod's annotation can be read; at most [`CACHED_LIMIT`].
    pub fn wait_status_writes(&self) -> Result<(), String> {
        wait_status_writes(&self.socket, CACHED_LIMIT)
    }

    /// Wait until the work the daemon left for after its replies has ended (a DEL's files wait in
    /// `<cniDir>/.trash` until then), so a leak check sees what is really left; at most [`CACHED_LIMIT`].
    pub fn wait_after_reply(&self) -> Result<(), String> {
        wait_after_reply(&self.socket, CACHED_LIMIT)
    }

    /// Wait until the daemon's caches hold `pod` and its K NADs (in the pod's namespace) loaded: an ADD of
    /// the pod then reads nothing from the API before its reply.
    pub fn wait_pod_cached(&self, pod: &Pod) -> Result<(), String> {
        let ns = &pod.info.namespace;
        self.wait_cached("pods", ns, &pod.info.name)?;
        for i in 1..=pod.k {
            wait_nad_loaded(&self.socket, ns, &nad_name(i), CACHED_LIMIT)?;
        }
        Ok(())
    }

    /// The daemon's memory now (`VmHWM`: its peak since it started).
    pub fn memory(&self) -> Option<Memory> {
        memory(Pid::from_raw(self.pid()? as i32))
    }

    /// SIGTERM and wait for the graceful shutdown (at most 60 s, then SIGKILL).
    pub fn stop(&mut self) -> Result<ExitStatus, String> {
        let mut child = self.child.take().ok_or("the daemon is not running")?;
        signal_and_wait(&mut child, Signal::SIGTERM, Duration::from_secs(60))
            .map_err(|_| "the daemon did not stop within 60 s of SIGTERM; killed".to_string())
    }

    /// The last `n` lines of its log (for error messages).
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

/// The pod and NAD lookups the daemon answered from its caches (hit) or sent to the API (miss), from
/// `plexus_cache_lookups_total` on its `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Lookups {
    /// Answered by the cache.
    pub hits: u64,
    /// Sent to the API.
    pub misses: u64,
}

impl Lookups {
    /// Read the counters from a metrics exposition.
    pub fn parse(text: &str) -> Lookups {
        let mut l = Lookups::default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("plexus_cache_lookups_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.split_once('}') else {
                continue;
            };
            let n = value
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0) as u64;
            if labels.contains("result=\"hit\"") {
                l.hits += n;
            } else if labels.contains("result=\"miss\"") {
                l.misses += n;
            }
        }
        l
    }

    fn since(self, before: Lookups) -> Lookups {
        Lookups {
            hits: self.hits.saturating_sub(before.hits),
            misses: self.misses.saturating_sub(before.misses),
        }
    }
}

/// The sum (seconds) and count of the histogram series of family `name` whose labels contain every one
/// of `labels` (`key="value"`), summed over the matching series.
pub fn histogram_sum(text: &str, name: &str, labels: &[&str]) -> (f64, u64) {
    let (mut sum, mut count) = (0.0, 0u64);
    for line in text.lines() {
        for (suffix, is_sum) in [("_sum{", true), ("_count{", false)] {
            let Some(rest) = line.strip_prefix(name).and_then(|r| r.strip_prefix(suffix)) else {
                continue;
            };
            let Some((l, value)) = rest.split_once('}') else {
                continue;
            };
            if !labels.iter().all(|want| l.split(',').any(|x| x == *want)) {
                continue;
            }
            let v = value
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
            if is_sum {
                sum += v;
            } else {
                count += v as u64;
            }
        }
    }
    (sum, count)
}

/// Where a daemon-mode call's time goes, from the daemon's own histograms over one K's measured runs:
/// means per call, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Split {
    /// Calls counted.
    pub calls: u64,
    /// The daemon's handling: from the request's arrival on the socket to its reply.
    pub daemon_ms: f64,
    /// Of which the delegates it ran (plugin processes, start to exit).
    pub delegates_ms: f64,
}

/// [`Split`]s of ADD and DEL between two scrapes of `/metrics`.
fn splits(before: &str, after: &str) -> (Split, Split) {
    let one = |verb: &str| {
        let v = format!("verb=\"{verb}\"");
        let ok = "result=\"ok\"";
        let d = |t: &str, name: &str| histogram_sum(t, name, &[&v, ok]);
        let (rs1, rc1) = d(after, "plexus_cni_request_duration_seconds");
        let (rs0, rc0) = d(before, "plexus_cni_request_duration_seconds");
        let (ds1, _) = d(after, "plexus_delegate_duration_seconds");
        let (ds0, _) = d(before, "plexus_delegate_duration_seconds");
        let calls = rc1.saturating_sub(rc0);
        let per = |x: f64| {
            if calls == 0 {
                f64::NAN
            } else {
                x * 1000.0 / calls as f64
            }
        };
        Split {
            calls,
            daemon_ms: per(rs1 - rs0),
            delegates_ms: per(ds1 - ds0),
        }
    };
    (one("ADD"), one("DEL"))
}

/// Where the calls' time goes, call by call: each measured call against the daemon's histograms scraped
/// just before it and just after (between two scrapes the daemon served exactly that run's ADD and DEL).
/// Medians over the calls, ms. Unlike [`Split`]'s means, one slow call moves these little; and the last,
/// the call minus the delegates it ran, is plexus's overhead without the delegates' own run-to-run
/// spread, which the floor comparison carries twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CallSplit {
    /// Calls measured.
    pub calls: usize,
    /// The runtime's call minus the daemon's handling: the shim process, the socket and the daemon's HTTP.
    pub shim_and_socket_ms: f64,
    /// The daemon's handling minus its delegates.
    pub own_work_ms: f64,
    /// The runtime's call minus the delegates the daemon ran for it.
    pub over_delegates_ms: f64,
    /// The delegates the daemon ran for the call (compare the floor's median: a daemon that made its
    /// delegates slower would hide that here, not in `over_delegates_ms`).
    pub delegates_ms: f64,
}

/// [`CallSplit`]s of ADD and DEL from the runtime's call times (`add`, `del`, in the order run) and the
/// `/metrics` scrapes around them (one more than the calls: before each, and after the last).
pub fn call_splits(
    add: &[Duration],
    del: &[Duration],
    scrapes: &[String],
) -> (CallSplit, CallSplit) {
    let mut per_call: [Vec<[f64; 4]>; 2] = [vec![], vec![]];
    for ((a, d), s) in add.iter().zip(del).zip(scrapes.windows(2)) {
        let (sa, sd) = splits(&s[0], &s[1]);
        for (i, (call, split)) in [(a, sa), (d, sd)].into_iter().enumerate() {
            // A scrape that missed (or a call the daemon did not count as ok) leaves the call out.
            if split.calls == 1 {
                let call = ms(*call);
                per_call[i].push([
                    call - split.daemon_ms,
                    split.daemon_ms - split.delegates_ms,
                    call - split.delegates_ms,
                    split.delegates_ms,
                ]);
            }
        }
    }
    let [add, del] = per_call.map(|v| {
        let m = |i: usize| median(v.iter().map(|x| x[i]).collect());
        CallSplit {
            calls: v.len(),
            shim_and_socket_ms: m(0),
            own_work_ms: m(1),
            over_delegates_ms: m(2),
            delegates_ms: m(3),
        }
    });
    (add, del)
}

/// A cgroup-v1 memory cgroup with a limit, removed on drop.
pub struct Cgroup {
    dir: PathBuf,
    parent: PathBuf,
}

/// What the memory cgroup recorded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CgroupStats {
    /// The cgroup.
    pub path: String,
    /// `memory.limit_in_bytes`.
    pub limit_bytes: u64,
    /// `memory.max_usage_in_bytes`: the peak of anonymous memory and page cache charged to it.
    pub max_usage_bytes: Option<u64>,
    /// `memory.failcnt`: how often the limit was hit (the kernel then reclaims; an OOM kill only when
    /// nothing can be reclaimed).
    pub failcnt: Option<u64>,
    /// `oom_kill` from `memory.oom_control`: processes the OOM killer killed in the cgroup.
    pub oom_kills: Option<u64>,
    /// The largest `total_rss` (anonymous memory) of `memory.stat`, sampled every 10 ms.
    pub peak_rss_bytes: Option<u64>,
    /// `memory.kmem.max_usage_in_bytes`: the peak of kernel memory charged to it (slab, page tables, and
    /// the network devices, addresses and routes the delegates made for the pods), included in
    /// `max_usage_bytes` and not reclaimable while the pods exist.
    pub kmem_max_usage_bytes: Option<u64>,
    /// Right after the last ADD returned (the pods' interfaces all exist).
    pub after_add: Option<CgroupSnapshot>,
    /// Right after the last DEL returned.
    pub after_del: Option<CgroupSnapshot>,
}

/// What a memory cgroup holds at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CgroupSnapshot {
    /// `memory.usage_in_bytes`.
    pub usage_bytes: u64,
    /// `total_rss` of `memory.stat`: anonymous memory.
    pub rss_bytes: u64,
    /// `total_cache`: page cache.
    pub cache_bytes: u64,
    /// `memory.kmem.usage_in_bytes`: kernel memory.
    pub kmem_bytes: u64,
}

/// The value of `key` in a `key value` file (`memory.stat`, `memory.oom_control`).
fn field(path: &Path, key: &str) -> Option<u64> {
    fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The bench's own memory cgroup, relative to the controller's mount (`/` for the root cgroup).
fn own_memory_cgroup() -> Option<String> {
    fs::read_to_string("/proc/self/cgroup")
        .ok()?
        .lines()
        .find_map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, controllers, path) = (p.next()?, p.next()?, p.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then(|| path.to_string())
        })
}

impl Cgroup {
    /// Make `plexus-bench-<pid>` under the bench's own memory cgroup, limited to `limit` bytes.
    pub fn create(limit: u64) -> Result<Cgroup, String> {
        let root = Path::new(MEMCG_ROOT);
        if !root.join("memory.limit_in_bytes").is_file() {
            return Err(
                if Path::new("/sys/fs/cgroup/cgroup.controllers").is_file() {
                    "this machine has cgroup v2 only; the bench drives cgroup v1's memory controller"
                        .to_string()
                } else {
                    format!("no cgroup v1 memory controller at {MEMCG_ROOT}")
                },
            );
        }
        let own = own_memory_cgroup().unwrap_or_else(|| "/".into());
        let parent = root.join(own.trim_start_matches('/'));
        let dir = parent.join(format!("plexus-bench-{}", std::process::id()));
        fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let cg = Cgroup { dir, parent };
        cg.write("memory.limit_in_bytes", limit)?;
        // No swap on the machines this runs on; where there is, memory+swap gets the same limit.
        let _ = cg.write("memory.memsw.limit_in_bytes", limit);
        let got = cg.read_u64("memory.limit_in_bytes");
        if got != Some(limit) {
            return Err(format!(
                "{}: memory.limit_in_bytes is {got:?} after writing {limit}",
                cg.dir.display()
            ));
        }
        Ok(cg)
    }

    /// Its `cgroup.procs`.
    pub fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    fn write(&self, file: &str, v: u64) -> Result<(), String> {
        let p = self.dir.join(file);
        fs::write(&p, v.to_string()).map_err(|e| format!("write {v} to {}: {e}", p.display()))
    }

    fn read_u64(&self, file: &str) -> Option<u64> {
        fs::read_to_string(self.dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn field(&self, file: &str, key: &str) -> Option<u64> {
        field(&self.dir.join(file), key)
    }

    /// What it holds now.
    pub fn snapshot(&self) -> CgroupSnapshot {
        CgroupSnapshot {
            usage_bytes: self.read_u64("memory.usage_in_bytes").unwrap_or(0),
            rss_bytes: self.field("memory.stat", "total_rss").unwrap_or(0),
            cache_bytes: self.field("memory.stat", "total_cache").unwrap_or(0),
            kmem_bytes: self.read_u64("memory.kmem.usage_in_bytes").unwrap_or(0),
        }
    }

    /// What it recorded so far (`peak_rss` from the sampler; snapshots taken after the ADDs and DELs).
    pub fn stats(
        &self,
        peak_rss: Option<u64>,
        after_add: Option<CgroupSnapshot>,
        after_del: Option<CgroupSnapshot>,
    ) -> CgroupStats {
        CgroupStats {
            path: self.dir.display().to_string(),
            limit_bytes: self.read_u64("memory.limit_in_bytes").unwrap_or(0),
            max_usage_bytes: self.read_u64("memory.max_usage_in_bytes"),
            failcnt: self.read_u64("memory.failcnt"),
            oom_kills: self.field("memory.oom_control", "oom_kill"),
            peak_rss_bytes: peak_rss,
            kmem_max_usage_bytes: self.read_u64("memory.kmem.max_usage_in_bytes"),
            after_add,
            after_del,
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Anything still inside goes back to the bench's own cgroup; then the (empty) cgroup goes.
        let procs = fs::read_to_string(self.procs()).unwrap_or_default();
        for pid in procs.split_whitespace() {
            let _ = fs::write(self.parent.join("cgroup.procs"), pid);
        }
        for _ in 0..100 {
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "plexus-bench: could not remove the cgroup {}",
            self.dir.display()
        );
    }
}

/// The storm.
#[derive(Debug, Clone, Serialize)]
pub struct StormResult {
    /// Pods.
    pub pods: usize,
    /// Secondary networks of each.
    pub k: usize,
    /// The memory limit asked for (bytes).
    pub memory_limit_bytes: u64,
    /// What the cgroup recorded (`None` when no cgroup could be made: see `cgroup_unavailable`).
    pub cgroup: Option<CgroupStats>,
    /// Why there was no cgroup (the storm then ran without a limit).
    pub cgroup_unavailable: Option<String>,
    /// The previous daemon's exit status after SIGTERM.
    pub previous_exit: String,
    /// From the restarted daemon's spawn to its `/readyz` 200 (sampled every 10 ms while the storm ran).
    pub ready_after_ms: Option<f64>,
    /// From the start of the ADDs (right after the spawn) until the last returned.
    pub wall_ms: f64,
    /// Each pod's ADD, as the runtime saw it (queueing in the shim and the daemon included).
    pub per_pod: Option<Stats>,
    /// Failed ADDs (and pods without their interfaces or network-status).
    pub failures: Vec<String>,
    /// The API requests of the storm's ADDs (watches not counted): the caches are cold, so reads happen.
    pub api_add: ApiCounts,
    /// From the start of the concurrent DELs until the last returned.
    pub del_wall_ms: f64,
    /// From the start of the concurrent DELs until the daemon's work after their replies (the unlinks)
    /// had ended too (`None`: it had not within 10 s).
    pub del_drained_ms: Option<f64>,
    /// Each pod's DEL.
    pub del_per_pod: Option<Stats>,
    /// Failed DELs.
    pub del_failures: Vec<String>,
    /// API reads during the DELs.
    pub del_api_reads: usize,
    /// Whether the daemon was still running after the ADDs and DELs.
    pub daemon_survived: bool,
    /// The daemon's own memory after the storm (`VmHWM`: its peak since the restart).
    pub daemon_memory: Option<Memory>,
    /// The daemon's exit status after SIGTERM at the end (the graceful shutdown).
    pub exit: String,
    /// What was left after the DELs.
    pub leaks: Vec<String>,
}

/// Everything measured in daemon mode.
#[derive(Debug, Clone, Serialize)]
pub struct DaemonReport {
    /// The shim binary.
    pub shim: Binary,
    /// What `--daemon-config` laid over the daemon's config (empty: its defaults, e.g. of
    /// `maxConcurrency` and `maxDelConcurrency`).
    pub daemon_config: serde_json::Map<String, serde_json::Value>,
    /// From the first spawn to `/readyz` 200.
    pub ready_after_ms: f64,
    /// How long the bench waited before the daemon phase for the CPUs to go quiet, and how busy the
    /// last one-second window was (0..1).
    pub settled: (f64, f64),
    /// The shim answering VERSION by itself (no daemon involved): exec to exit.
    pub shim_version: Option<Stats>,
    /// `/bin/true` exec'd the same way: what starting any process costs here.
    pub exec_baseline: Option<Stats>,
    /// `GET /readyz` on the daemon's socket from the bench (connect, request, reply, close): the socket
    /// and the daemon's HTTP server without any CNI work.
    pub socket_round_trip: Option<Stats>,
    /// Per K, as the thin rows (the peak RSS fields are the shim's).
    pub per_k: Vec<KResult>,
    /// Per K (same order): where ADD's and DEL's time went, from the daemon's histograms.
    pub splits: Vec<(Split, Split)>,
    /// Per K (same order): the same call by call, medians.
    pub per_call: Vec<(CallSplit, CallSplit)>,
    /// The daemon's cache lookups over the per-K runs (its own counters).
    pub lookups: Option<Lookups>,
    /// The daemon's memory after the per-K runs (`VmHWM`: its peak so far).
    pub memory_steady: Option<Memory>,
    /// The storm.
    pub storm: Option<StormResult>,
    /// What was left after the per-K runs (the daemon still running is not a leak).
    pub leaks: Vec<String>,
}

/// Exec `program` with `CNI_COMMAND=VERSION` and a one-line config on stdin, as the runtime execs a
/// plugin (spawn to exit, output read); how long it took, and whether it exited 0 with `want` in its output.
fn exec_once(program: &Path, want: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let mut child = Command::new(program)
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("run {}: {e}", program.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(br#"{"cniVersion":"1.0.0"}"#);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait for {}: {e}", program.display()))?;
    let took = started.elapsed();
    if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains(want) {
        return Err(format!(
            "{} VERSION failed ({}): {}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    Ok(took)
}

/// What the shim's own start and answer cost (VERSION, answered without the daemon), and `/bin/true`
/// exec'd the same way for comparison: `runs` of each, interleaved (after two of each that warm the page
/// cache), so both see the same machine.
fn shim_start(shim: &Path, runs: usize) -> Result<(Stats, Option<Stats>), String> {
    let (mut version, mut baseline) = (Vec::new(), Vec::new());
    let mut baseline_ok = true;
    for i in 0..runs + 2 {
        let v = exec_once(shim, "\"supportedVersions\"")?;
        let t = exec_once(Path::new("/bin/true"), "");
        baseline_ok &= t.is_ok();
        if i >= 2 {
            version.push(v);
            baseline.extend(t.ok());
        }
    }
    let version = Stats::of(&version).ok_or("no samples")?;
    Ok((version, Stats::of(&baseline).filter(|_| baseline_ok)))
}

/// `runs` `GET /readyz` round trips on the daemon's socket (after two unmeasured ones).
fn round_trip(daemon: &Daemon, runs: usize) -> Result<Stats, String> {
    let mut v = Vec::with_capacity(runs);
    for i in 0..runs + 2 {
        let started = Instant::now();
        match daemon.get("/readyz") {
            Some((200, _)) => {}
            other => return Err(format!("GET /readyz on the daemon's socket: {other:?}")),
        }
        if i >= 2 {
            v.push(started.elapsed());
        }
    }
    Stats::of(&v).ok_or_else(|| "no samples".into())
}

/// Daemon mode: start the daemon, measure, storm, stop it. Returns the report and the pods made (for the
/// bench's final leak check).
pub fn measure(b: &Bench, shim: Binary, opts: &Opts) -> Result<(DaemonReport, Vec<Pod>), String> {
    let runner = b
        .daemon_runner
        .clone()
        .ok_or("the bench was set up without the shim")?;
    // What the thin phases left (pods' namespaces are torn down by the kernel after they are deleted)
    // must not be charged to the daemon's first rows.
    let settled = super::system::settle(Duration::from_secs(30));
    let mut daemon = Daemon::start(b, opts)?;
    let r = measure_with(b, &mut daemon, &runner, shim, opts, settled);
    r.map_err(|e| {
        format!(
            "{e}\n--- the daemon's log (last lines) ---\n{}",
            daemon.log_tail(40)
        )
    })
}

fn measure_with(
    b: &Bench,
    daemon: &mut Daemon,
    runner: &Runner,
    shim: Binary,
    opts: &Opts,
    (settled, busy): (Duration, f64),
) -> Result<(DaemonReport, Vec<Pod>), String> {
    let ready_after = daemon.wait_ready()?;
    eprintln!(
        "plexus-bench: daemon mode: plexus daemon (pid {}) ready after {:.0} ms; shim {}",
        daemon.pid().unwrap_or(0),
        ms(ready_after),
        shim.path.display()
    );
    let lookups_before = daemon.get("/metrics").map(|(_, t)| Lookups::parse(&t));
    let prepare = |pod: &Pod| daemon.wait_pod_cached(pod);
    let mut pods = Vec::new();
    let mut per_k = Vec::new();
    let mut split = Vec::new();
    let mut per_call = Vec::new();
    let mut unused = Vec::new();
    let scrape = || daemon.get("/metrics").map(|(_, t)| t).unwrap_or_default();
    for &k in &opts.ks {
        let pod = b.pod(&b.ns, &format!("daemon-k{k}"), k)?;
        // The daemon's histograms over the measured runs only: scraped just before each measured ADD
        // (prepare runs once per run, before its ADD) and right after the last run.
        let calls = std::cell::Cell::new(0usize);
        let scrapes = std::cell::RefCell::new(Vec::new());
        let prepare_and_mark = |pod: &Pod| {
            prepare(pod)?;
            if calls.get() >= opts.warmup {
                scrapes.borrow_mut().push(scrape());
            }
            calls.set(calls.get() + 1);
            Ok(())
        };
        let mut r = phases::latency(b, runner, &pod, opts, &mut unused, &prepare_and_mark)?;
        let mut scrapes = scrapes.into_inner();
        scrapes.push(scrape());
        split.push(splits(&scrapes[0], &scrapes[scrapes.len() - 1]));
        per_call.push(call_splits(&r.add_runs, &r.del_runs, &scrapes));
        if opts.rss_runs > 0 {
            let (a, d) = phases::peak_rss(runner, &pod, opts, &prepare)?;
            r.peak_rss_add_kib = a.map(|m| m.peak_kib);
            r.peak_rss_del_kib = d.map(|m| m.peak_kib);
            r.memory_add = a;
        }
        eprintln!(
            "plexus-bench: daemon mode K={k}: API reads per ADD at most {}, shim peak RSS {} KiB",
            r.api_add_reads_max
                .map_or("n/a".to_string(), |n| n.to_string()),
            r.peak_rss_add_kib.unwrap_or(0)
        );
        per_k.push(r);
        pods.push(pod);
    }
    let lookups = match (
        lookups_before,
        daemon.get("/metrics").map(|(_, t)| Lookups::parse(&t)),
    ) {
        (Some(a), Some(z)) => Some(z.since(a)),
        _ => None,
    };
    let memory_steady = daemon.memory();
    let (shim_version, exec_baseline) = shim_start(&shim.path, opts.runs.max(10))?;
    let socket_round_trip = round_trip(daemon, opts.runs.max(10))?;
    let pid = daemon.pid().unwrap_or(0);
    daemon.wait_after_reply()?;
    let leaks = b.leaks_except(&pods.iter().collect::<Vec<_>>(), &[pid]);
    let storm = storm(b, daemon, runner, opts)?;
    if daemon.pid().is_some() {
        daemon.stop()?;
    }
    Ok((
        DaemonReport {
            shim,
            daemon_config: opts.daemon_config.clone(),
            ready_after_ms: ms(ready_after),
            settled: (settled.as_secs_f64(), busy),
            shim_version: Some(shim_version),
            exec_baseline,
            socket_round_trip: Some(socket_round_trip),
            per_k,
            splits: split,
            per_call,
            lookups,
            memory_steady,
            storm,
            leaks,
        },
        pods,
    ))
}

/// Samples the cgroup's anonymous memory and the daemon's readiness while the storm runs.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<(Option<u64>, Option<Duration>)>,
}

impl Sampler {
    fn start(cgroup_stat: Option<PathBuf>, socket: PathBuf, spawned: Instant) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = thread::spawn(move || {
            let (mut peak, mut ready) = (None::<u64>, None);
            while !s.load(Ordering::SeqCst) {
                // The anonymous memory charged to the cgroup now.
                if let Some(rss) = cgroup_stat.as_ref().and_then(|p| field(p, "total_rss")) {
                    peak = Some(peak.map_or(rss, |p| p.max(rss)));
                }
                if ready.is_none()
                    && http_get(&socket, "/readyz").is_some_and(|(code, _)| code == 200)
                {
                    ready = Some(spawned.elapsed());
                }
                thread::sleep(Duration::from_millis(10));
            }
            (peak, ready)
        });
        Sampler { stop, handle }
    }

    fn finish(self) -> (Option<u64>, Option<Duration>) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap_or((None, None))
    }
}

/// Restart the daemon inside a memory-limited cgroup and ADD `opts.storm` K=3 pods through the shim at
/// once, then DEL them all at once (see the module docs).
pub fn storm(
    b: &Bench,
    daemon: &mut Daemon,
    runner: &Runner,
    opts: &Opts,
) -> Result<Option<StormResult>, String> {
    if opts.storm == 0 {
        return Ok(None);
    }
    let k = STORM_K;
    let started = Instant::now();
    let pods: Vec<Pod> = (0..opts.storm)
        .map(|i| b.pod(&b.ns, &format!("storm-{i:03}"), k))
        .collect::<Result<_, _>>()?;
    let cids: Vec<String> = (0..pods.len())
        .map(|i| Bench::cid(&format!("storm-{i:03}")))
        .collect();
    eprintln!(
        "plexus-bench: storm: {} pods (K={k}) made [{:.1} s]",
        pods.len(),
        started.elapsed().as_secs_f64()
    );
    let limit = opts.storm_memory_mib * MIB;
    let (cgroup, cgroup_unavailable) = match Cgroup::create(limit) {
        Ok(c) => (Some(c), None),
        Err(e) => {
            eprintln!(
                "plexus-bench: storm: no memory cgroup ({e}); the storm runs without a limit"
            );
            (None, Some(e))
        }
    };
    // Restart: a fresh process, caches cold, in the cgroup from its first instruction.
    let previous_exit = daemon.stop()?;
    b.api.clear_requests();
    let spawned = Instant::now();
    daemon.spawn(cgroup.as_ref().map(Cgroup::procs).as_deref())?;
    let sampler = Sampler::start(
        cgroup.as_ref().map(|c| c.dir.join("memory.stat")),
        daemon.socket().to_path_buf(),
        spawned,
    );
    let (adds, wall) = concurrently(runner, &pods, &cids, Op::Add);
    let mut failures = Vec::new();
    // The status writes go out after the replies: the annotations are read once they have all landed.
    if let Err(e) = daemon.wait_status_writes() {
        failures.push(e);
    }
    let mut times = Vec::new();
    for (pod, r) in pods.iter().zip(&adds) {
        match r {
            Ok(d) => {
                times.push(*d);
                if let Err(e) = pod.check_added().and_then(|()| check_status(b, pod, k + 1)) {
                    failures.push(e);
                }
            }
            Err(e) => failures.push(format!("pod {}: {e}", pod.info.name)),
        }
    }
    let after_add = cgroup.as_ref().map(Cgroup::snapshot);
    let api_add = ApiCounts::of(&requests(b).unwrap_or_default());
    // The events of the last ADDs are still being posted: let them land before counting the DELs'.
    await_events(b, api_add.events.max(pods.len() * (k + 1)));
    b.api.clear_requests();
    let alive_after_add = daemon.alive();
    let del_started = Instant::now();
    let (dels, del_wall) = concurrently(runner, &pods, &cids, Op::Del);
    // The daemon's work after the DELs' replies (the unlinks of their files); what it left, if anything,
    // is a leak below.
    let del_drained = daemon
        .wait_after_reply()
        .ok()
        .map(|()| del_started.elapsed());
    let del_api_reads = requests(b).map_or(0, |r| ApiCounts::of(&r).reads());
    let mut del_times = Vec::new();
    let mut del_failures = Vec::new();
    for (p, r) in pods.iter().zip(&dels) {
        match r {
            Ok(d) => del_times.push(*d),
            Err(e) => del_failures.push(format!("pod {}: {e}", p.info.name)),
        }
    }
    let after_del = cgroup.as_ref().map(Cgroup::snapshot);
    let (peak_rss, ready) = sampler.finish();
    let daemon_survived = alive_after_add && daemon.alive();
    let daemon_memory = daemon.memory();
    let cgroup_stats = cgroup
        .as_ref()
        .map(|c| c.stats(peak_rss, after_add, after_del));
    let pid = daemon.pid().unwrap_or(0);
    let leaks = b.leaks_except(&pods.iter().collect::<Vec<_>>(), &[pid]);
    let exit = match daemon.pid() {
        Some(_) => match daemon.stop() {
            Ok(s) => s.to_string(),
            Err(e) => e,
        },
        None => "not running".into(),
    };
    drop(cgroup);
    let per_pod = Stats::of(&times);
    eprintln!(
        "plexus-bench: storm of {}: {:.0} ms, p50 {:.0} ms, p99 {:.0} ms, {} failure(s), {} leak(s); cgroup peak {} MiB, OOM kills {:?}",
        pods.len(),
        ms(wall),
        per_pod.map_or(0.0, |s| s.median_ms),
        per_pod.map_or(0.0, |s| s.p99_ms),
        failures.len() + del_failures.len(),
        leaks.len(),
        cgroup_stats
            .as_ref()
            .and_then(|c| c.max_usage_bytes)
            .map_or("n/a".into(), |v| format!("{:.1}", v as f64 / MIB as f64)),
        cgroup_stats.as_ref().and_then(|c| c.oom_kills),
    );
    Ok(Some(StormResult {
        pods: pods.len(),
        k,
        memory_limit_bytes: limit,
        cgroup: cgroup_stats,
        cgroup_unavailable,
        previous_exit: previous_exit.to_string(),
        ready_after_ms: ready.map(ms),
        wall_ms: ms(wall),
        per_pod,
        failures,
        api_add,
        del_wall_ms: ms(del_wall),
        del_drained_ms: del_drained.map(ms),
        del_per_pod: Stats::of(&del_times),
        del_failures,
        del_api_reads,
        daemon_survived,
        daemon_memory,
        exit,
        leaks,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_are_read_from_the_exposition() {
        let text = "# TYPE plexus_cache_lookups counter\n\
            plexus_cache_lookups_total{kind=\"pod\",result=\"hit\"} 7\n\
            plexus_cache_lookups_total{kind=\"nad\",result=\"hit\"} 21\n\
            plexus_cache_lookups_total{kind=\"pod\",result=\"miss\"} 2\n\
            plexus_cache_lookups_created{kind=\"pod\",result=\"miss\"} 1.7e9\n\
            plexus_requests_rejected_total 0\n";
        let l = Lookups::parse(text);
        assert_eq!(
            l,
            Lookups {
                hits: 28,
                misses: 2
            }
        );
        assert_eq!(
            l.since(Lookups { hits: 8, misses: 2 }),
            Lookups {
                hits: 20,
                misses: 0
            }
        );
        assert_eq!(Lookups::parse(""), Lookups::default());
    }

    #[test]
    fn histograms_are_summed_by_label() {
        let a = "plexus_cni_request_duration_seconds_sum{verb=\"ADD\",result=\"ok\"} 0.5\n\
            plexus_cni_request_duration_seconds_count{verb=\"ADD\",result=\"ok\"} 10\n\
            plexus_cni_request_duration_seconds_bucket{le=\"0.001\",verb=\"ADD\",result=\"ok\"} 0\n\
            plexus_cni_request_duration_seconds_sum{verb=\"DEL\",result=\"ok\"} 0.2\n\
            plexus_cni_request_duration_seconds_count{verb=\"DEL\",result=\"ok\"} 4\n\
            plexus_delegate_duration_seconds_sum{plugin=\"bridge\",verb=\"ADD\",result=\"ok\"} 0.3\n\
            plexus_delegate_duration_seconds_sum{plugin=\"macvlan\",verb=\"ADD\",result=\"ok\"} 0.1\n\
            plexus_delegate_duration_seconds_count{plugin=\"macvlan\",verb=\"ADD\",result=\"ok\"} 10\n";
        assert_eq!(
            histogram_sum(a, "plexus_cni_request_duration_seconds", &["verb=\"ADD\""]),
            (0.5, 10)
        );
        let (s, _) = histogram_sum(a, "plexus_delegate_duration_seconds", &["verb=\"ADD\""]);
        assert!((s - 0.4).abs() < 1e-9);
        let (add, del) = splits("", a);
        assert_eq!(add.calls, 10);
        assert!((add.daemon_ms - 50.0).abs() < 1e-9 && (add.delegates_ms - 40.0).abs() < 1e-9);
        assert_eq!(del.calls, 4);
        assert!((del.daemon_ms - 50.0).abs() < 1e-9 && del.delegates_ms == 0.0);
        let (none, _) = splits(a, a);
        assert_eq!(none.calls, 0);
        assert!(none.daemon_ms.is_nan());
    }

    /// `/metrics` after `n` ADDs of `add` s handling (of which `add_dl` s delegates) and `n` DELs of `del` s.
    fn exposition(n: u64, add: f64, add_dl: f64, del: f64) -> String {
        let nf = n as f64;
        format!(
            "plexus_cni_request_duration_seconds_sum{{verb=\"ADD\",result=\"ok\"}} {}\n\
             plexus_cni_request_duration_seconds_count{{verb=\"ADD\",result=\"ok\"}} {n}\n\
             plexus_delegate_duration_seconds_sum{{plugin=\"bridge\",verb=\"ADD\",result=\"ok\"}} {}\n\
             plexus_cni_request_duration_seconds_sum{{verb=\"DEL\",result=\"ok\"}} {}\n\
             plexus_cni_request_duration_seconds_count{{verb=\"DEL\",result=\"ok\"}} {n}\n",
            add * nf,
            add_dl * nf,
            del * nf
        )
    }

    #[test]
    fn calls_are_split_one_by_one_and_a_missed_scrape_leaves_its_call_out() {
        // Three runs; the daemon handles each ADD in 5 ms (4 ms of delegates) and each DEL in 2 ms. The
        // runtime saw ADDs of 7, 8 and 30 ms (the last one slow outside the daemon).
        let ms = |v: u64| Duration::from_millis(v);
        let scrapes: Vec<String> = (0..4).map(|n| exposition(n, 0.005, 0.004, 0.002)).collect();
        let (add, del) = call_splits(&[ms(7), ms(8), ms(30)], &[ms(3), ms(3), ms(4)], &scrapes);
        assert_eq!((add.calls, del.calls), (3, 3));
        let near = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert!(near(add.shim_and_socket_ms, 3.0), "{add:?}");
        assert!(near(add.own_work_ms, 1.0), "{add:?}");
        assert!(near(add.over_delegates_ms, 4.0), "{add:?}");
        assert!(near(add.delegates_ms, 4.0), "{add:?}");
        assert!(
            near(del.shim_and_socket_ms, 1.0) && near(del.over_delegates_ms, 3.0),
            "{del:?}"
        );
        // A scrape that failed (empty) makes its neighbours' windows count zero or two calls: both out.
        let mut holes = scrapes.clone();
        holes[2] = String::new();
        let (add, _) = call_splits(&[ms(7), ms(8), ms(30)], &[ms(3), ms(3), ms(4)], &holes);
        assert_eq!(add.calls, 1);
        assert!(near(add.over_delegates_ms, 3.0), "{add:?}");
        // No scrapes: nothing.
        let (none, _) = call_splits(&[ms(7)], &[ms(3)], &[]);
        assert_eq!(none.calls, 0);
        assert!(none.over_delegates_ms.is_nan());
    }

    #[test]
    fn watches_are_told_apart() {
        assert!(phases::is_watch(
            "fieldSelector=spec.nodeName%3Dn&watch=true&timeoutSeconds=290"
        ));
        assert!(phases::is_watch("watch=1"));
        assert!(!phases::is_watch(
            "fieldSelector=spec.nodeName%3Dn&limit=500"
        ));
        assert!(!phases::is_watch(""));
    }
}
