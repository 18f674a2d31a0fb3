//! The hot-plug phase (issue 18, daemon mode): how long a running pod waits for a network added to or
//! removed from its networks annotation, and what the reconcile costs when the annotation does not change.
//!
//! A daemon with `"hotplug": true` (docs/daemon.md, "Hot-plug") serves one pod ADDed through the shim with
//! K = 1. Then `--hotplug-runs` times: the pod's networks annotation is set to its first two networks with
//! a merge patch of its metadata through the API, as a user would, and the pod's netns is polled over
//! netlink (a tight loop, bounded) until `net2` is there; then the annotation goes back to one network and
//! the poll waits until `net2` is gone. Each time runs from just before the PATCH is sent; the PATCH's own
//! round trip is reported beside it. Before the next step the bench waits (unmeasured) until the daemon has
//! counted the hot-plug done (`plexus_hotplug_duration_seconds`, which runs to the network-status write),
//! and its own figure for each step is read from that histogram.
//!
//! The idle cost, with the pod in line with its annotation: the daemon is restarted, so its start-up pass
//! looks at the node's sandboxes; then an unrelated annotation of the pod is patched [`IDLE_TOUCHES`]
//! times. Reported from the stand-in's request log (the daemon's own requests, by its user) and the
//! daemon's metrics: delegate runs, API writes, hot-plug attempts; and the daemon's CPU time
//! (`/proc/<pid>/stat`) over the touches against an equally long window with no touches.

use std::{
    fmt::Write as _,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    daemon::{Daemon, histogram_sum},
    opts::Opts,
    scale::{cpu_ms, gauge},
    setup::{Bench, Op, Pod, Runner, networks_annotation},
    stats::{Stats, ms},
};

/// The networks annotation.
const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
/// The unrelated annotation the idle test patches.
const TOUCH: &str = "bench.plexus.dev/touched";
/// Patches of the unrelated annotation in the idle test.
pub const IDLE_TOUCHES: usize = 100;
/// The interface the second network gets (the first free `net<N>`).
const HOTPLUGGED: &str = "net2";
/// How long one step may take before the phase gives up.
const STEP_LIMIT: Duration = Duration::from_secs(30);
/// How long the daemon's watch gets to deliver the last touch before the CPU time is read.
const TOUCH_SETTLE: Duration = Duration::from_secs(1);
/// The annotation-triggered series of the hot-plug histogram.
const ANNOTATION: &str = "trigger=\"annotation\"";

/// What the phase measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HotplugReport {
    /// Measured attach+detach pairs.
    pub runs: usize,
    /// PATCH sent → `net2` present in the pod's netns.
    pub attach: Option<Stats>,
    /// PATCH sent → `net2` gone.
    pub detach: Option<Stats>,
    /// The merge PATCH's own round trip.
    pub patch: Option<Stats>,
    /// The daemon's own figure per attach (`plexus_hotplug_duration_seconds`: watch event → status written).
    pub daemon_attach: Option<Stats>,
    /// Likewise per detach.
    pub daemon_detach: Option<Stats>,
    /// One netlink poll of the pod's links (the bench's resolution).
    pub poll: Option<Stats>,
    /// The idle test.
    pub idle: Option<Idle>,
    /// What went wrong.
    pub failures: Vec<String>,
    /// What was left after the pod's DEL.
    pub leaks: Vec<String>,
}

/// What reconciling costs when no networks annotation changes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Idle {
    /// The restarted daemon's start-up pass: sandboxes looked at (`plexus_hotplug_attempts_total`, startup).
    pub startup_attempts: u64,
    /// Hot-plug changes it made (attached, detached, failed).
    pub startup_changes: u64,
    /// Delegate runs from the restart to the end of the touches (`plexus_delegate_duration_seconds`).
    pub delegate_runs: u64,
    /// The daemon's API requests over the restart, by method and path (stand-in only; watches left out).
    pub startup_requests: Option<Vec<String>>,
    /// Unrelated patches of the pod.
    pub touches: usize,
    /// The daemon's API requests over the touches (stand-in only; watches left out).
    pub touch_requests: Option<Vec<String>>,
    /// Annotation-triggered hot-plug attempts over the touches.
    pub touch_attempts: u64,
    /// Wall time of the touches plus the settle.
    pub touch_window_ms: f64,
    /// The daemon's CPU time (user + system) over that window, ms (10 ms ticks).
    pub touch_cpu_ms: Option<f64>,
    /// Its CPU time over an equally long window with no touches.
    pub quiet_cpu_ms: Option<f64>,
}

impl Idle {
    /// Whether the daemon wrote to the API (anything but GET) in either window.
    pub fn api_writes(&self) -> usize {
        [&self.startup_requests, &self.touch_requests]
            .into_iter()
            .flatten()
            .flatten()
            .filter(|r| !r.starts_with("GET "))
            .count()
    }
}

/// The phase (see the module docs); `None` when `--hotplug-runs` is 0.
pub fn measure(b: &Bench, runner: &Runner, opts: &Opts) -> Result<Option<HotplugReport>, String> {
    if opts.hotplug_runs == 0 {
        return Ok(None);
    }
    let _ = super::system::settle(Duration::from_secs(10));
    let mut extra = Map::new();
    extra.insert("hotplug".into(), Value::Bool(true));
    let mut daemon = Daemon::start_with(b, opts, None, &extra)?;
    daemon.wait_ready()?;
    let pod = b.pod(&b.ns, "hotplug", 1)?;
    let rt = pod.rt(&Bench::cid("hotplug"));
    let exec: Arc<dyn plexus::seams::exec::Exec> = Arc::new(plexus::seams::exec::ProcessExec);
    let mut report = HotplugReport::default();
    daemon.wait_pod_cached(&pod)?;
    runner.plexus(Op::Add, &rt, exec.clone())?;
    let r = steps(b, &mut daemon, &pod, opts, &mut report)
        .and_then(|()| idle(b, &mut daemon, &pod).map(|i| report.idle = Some(i)));
    if let Err(e) = r {
        report.failures.push(format!(
            "{e}\n--- the daemon's log (last lines) ---\n{}",
            daemon.log_tail(20)
        ));
    }
    // Back to what the runtime attached before its DEL, so a failed step leaves no hot-plugged interface.
    let _ = b.api.set_pod_annotation(
        &b.host.path(),
        &b.ns,
        &pod.info.name,
        NETWORKS,
        &networks_annotation(1),
    );
    if let Err(e) = wait(
        || links_present(&pod).map(|p| !p),
        "net2 gone before the DEL",
    ) {
        report.failures.push(e);
    }
    if let Err(e) = runner.plexus(Op::Del, &rt, exec) {
        report.failures.push(e);
    }
    daemon.wait_after_reply()?;
    let pid = daemon.pid().unwrap_or(0);
    report.leaks = b.leaks_except(&[&pod], &[pid]);
    daemon.stop()?;
    Ok(Some(report))
}

/// Whether `net2` is in the pod's netns.
fn links_present(pod: &Pod) -> Result<bool, String> {
    plexus_netns::link_exists(&pod.netns.path(), HOTPLUGGED).map_err(|e| e.to_string())
}

/// Poll `done` in a tight loop until it says yes, at most [`STEP_LIMIT`].
fn wait(mut done: impl FnMut() -> Result<bool, String>, what: &str) -> Result<(), String> {
    let started = Instant::now();
    while !done()? {
        if started.elapsed() > STEP_LIMIT {
            return Err(format!("{what}: not within {STEP_LIMIT:?}"));
        }
    }
    Ok(())
}

/// The daemon's `/metrics`.
fn scrape(daemon: &Daemon) -> String {
    daemon.get("/metrics").map(|(_, t)| t).unwrap_or_default()
}

/// A counter's value, 0 when the series is absent.
fn counter(text: &str, name: &str, labels: &str) -> u64 {
    gauge(text, name, labels).unwrap_or(0)
}

/// The attach/detach runs.
fn steps(
    b: &Bench,
    daemon: &mut Daemon,
    pod: &Pod,
    opts: &Opts,
    report: &mut HotplugReport,
) -> Result<(), String> {
    let host = b.host.path();
    let (mut attach, mut detach, mut patch) = (Vec::new(), Vec::new(), Vec::new());
    let (mut daemon_attach, mut daemon_detach, mut poll) = (Vec::new(), Vec::new(), Vec::new());
    let warmup = opts.warmup.min(1);
    for i in 0..warmup + opts.hotplug_runs {
        for (k, present) in [(2, true), (1, false)] {
            let before = histogram_sum(
                &scrape(daemon),
                "plexus_hotplug_duration_seconds",
                &[ANNOTATION],
            );
            let started = Instant::now();
            b.api.set_pod_annotation(
                &host,
                &b.ns,
                &pod.info.name,
                NETWORKS,
                &networks_annotation(k),
            )?;
            let patched = started.elapsed();
            let mut polls = 0u32;
            wait(
                || {
                    polls += 1;
                    links_present(pod).map(|p| p == present)
                },
                &format!("run {i}: {HOTPLUGGED} present: {present}"),
            )?;
            let took = started.elapsed();
            // Unmeasured: the daemon is done with this step (status written) before the next one.
            let mut after = before;
            wait(
                || {
                    after = histogram_sum(
                        &scrape(daemon),
                        "plexus_hotplug_duration_seconds",
                        &[ANNOTATION],
                    );
                    Ok(after.1 > before.1)
                },
                &format!("run {i}: the daemon counting the hot-plug done"),
            )?;
            if i < warmup {
                continue;
            }
            let own = Duration::from_secs_f64((after.0 - before.0).max(0.0));
            patch.push(patched);
            poll.push((took - patched) / polls.max(1));
            if present {
                attach.push(took);
                daemon_attach.push(own);
            } else {
                detach.push(took);
                daemon_detach.push(own);
            }
        }
    }
    let text = scrape(daemon);
    let failed = counter(
        &text,
        "plexus_hotplugs_total",
        "trigger=\"annotation\",outcome=\"failed\"",
    );
    if failed > 0 {
        report.failures.push(format!(
            "{failed} hot-plug(s) failed (plexus_hotplugs_total)"
        ));
    }
    report.runs = attach.len();
    report.attach = Stats::of(&attach);
    report.detach = Stats::of(&detach);
    report.patch = Stats::of(&patch);
    report.daemon_attach = Stats::of(&daemon_attach);
    report.daemon_detach = Stats::of(&daemon_detach);
    report.poll = Stats::of(&poll);
    Ok(())
}

/// The daemon's own API requests logged since the last clear (stand-in only), watches left out, as
/// `METHOD path`.
fn daemon_requests(b: &Bench) -> Option<Vec<String>> {
    let s = b.api.standin()?;
    Some(
        s.requests_by_user()
            .into_iter()
            .filter(|(r, user)| {
                user.as_deref() == Some(b.plexus_user.as_str())
                    && !super::phases::is_watch(&r.query)
            })
            .map(|(r, _)| format!("{} {}", r.method, r.path))
            .collect(),
    )
}

/// The idle test (see the module docs): the daemon restarted over an in-line sandbox, then unrelated
/// patches of the pod.
fn idle(b: &Bench, daemon: &mut Daemon, pod: &Pod) -> Result<Idle, String> {
    daemon.stop()?;
    b.api.clear_requests();
    daemon.spawn(None)?;
    daemon.wait_ready()?;
    let mut text = String::new();
    wait(
        || {
            text = scrape(daemon);
            Ok(counter(
                &text,
                "plexus_hotplug_attempts_total",
                "trigger=\"startup\"",
            ) >= 1)
        },
        "the start-up pass looking at the sandbox",
    )?;
    daemon.wait_pod_cached(pod)?;
    // Whatever the start-up pass would send has had time to go.
    thread::sleep(TOUCH_SETTLE);
    let text = scrape(daemon);
    let startup_changes = ["attached", "detached", "failed"]
        .iter()
        .map(|o| {
            counter(
                &text,
                "plexus_hotplugs_total",
                &format!("trigger=\"startup\",outcome=\"{o}\""),
            )
        })
        .sum();
    let mut idle = Idle {
        startup_attempts: counter(
            &text,
            "plexus_hotplug_attempts_total",
            "trigger=\"startup\"",
        ),
        startup_changes,
        startup_requests: daemon_requests(b),
        touches: IDLE_TOUCHES,
        ..Idle::default()
    };
    let pid = daemon.pid().ok_or("the daemon is not running")?;
    let attempts = |t: &str| counter(t, "plexus_hotplug_attempts_total", ANNOTATION);
    let attempts_before = attempts(&text);

    b.api.clear_requests();
    let cpu_before = cpu_ms(pid);
    let started = Instant::now();
    let host = b.host.path();
    for i in 0..IDLE_TOUCHES {
        b.api
            .set_pod_annotation(&host, &b.ns, &pod.info.name, TOUCH, &i.to_string())?;
    }
    thread::sleep(TOUCH_SETTLE);
    let window = started.elapsed();
    let cpu_after = cpu_ms(pid);
    idle.touch_window_ms = ms(window);
    idle.touch_cpu_ms = cpu_before.zip(cpu_after).map(|(a, z)| z - a);
    idle.touch_requests = daemon_requests(b);
    let text = scrape(daemon);
    idle.touch_attempts = attempts(&text).saturating_sub(attempts_before);
    idle.delegate_runs = histogram_sum(&text, "plexus_delegate_duration_seconds", &[]).1;

    // The control: as long, nothing touched.
    let cpu_before = cpu_ms(pid);
    thread::sleep(window);
    idle.quiet_cpu_ms = cpu_before.zip(cpu_ms(pid)).map(|(a, z)| z - a);
    Ok(idle)
}

/// The report's section.
pub fn markdown(s: &mut String, r: &HotplugReport) {
    let _ = writeln!(s, "### Hot-plug (issue 18)\n");
    let _ = writeln!(
        s,
        "One pod with K = 1 through the shim, daemon `\"hotplug\": true`; {} runs of: a merge patch of the networks annotation adding a second network, then one removing it. Times from the PATCH sent to `{HOTPLUGGED}` present (gone) in the pod's netns, netlink polled in a tight loop.\n",
        r.runs
    );
    let _ = writeln!(
        s,
        "| step | n | median ms | p90 ms | min ms | max ms |\n|---|---|---|---|---|---|"
    );
    for (name, st) in [
        ("attach: PATCH sent → interface present", &r.attach),
        ("detach: PATCH sent → interface gone", &r.detach),
        ("the PATCH's round trip", &r.patch),
        (
            "daemon's attach (plexus_hotplug_duration_seconds)",
            &r.daemon_attach,
        ),
        ("daemon's detach (same histogram)", &r.daemon_detach),
        ("one netlink poll (the resolution)", &r.poll),
    ] {
        if let Some(st) = st {
            let _ = writeln!(
                s,
                "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
                st.n, st.median_ms, st.p90_ms, st.min_ms, st.max_ms
            );
        }
    }
    let _ = writeln!(s);
    if let Some(i) = &r.idle {
        let opt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.0}"));
        let reqs = |v: &Option<Vec<String>>| match v {
            None => "not counted (real API server)".to_string(),
            Some(v) if v.is_empty() => "none".to_string(),
            Some(v) => v.join(", "),
        };
        let _ = writeln!(
            s,
            "Idle (no networks annotation change):\n\n- daemon restarted over the in-line sandbox: start-up pass looked at {} sandbox(es), changed {}; its API requests: {}\n- {} patches of an unrelated annotation: {} hot-plug attempt(s); the daemon's API requests: {}\n- delegate runs since the restart: {}; API writes (not GET): {}\n- the daemon's CPU time over the touches ({:.0} ms window): {} ms; over as long with nothing touched: {} ms (10 ms ticks)\n",
            i.startup_attempts,
            i.startup_changes,
            reqs(&i.startup_requests),
            i.touches,
            i.touch_attempts,
            reqs(&i.touch_requests),
            i.delegate_runs,
            i.api_writes(),
            i.touch_window_ms,
            opt(i.touch_cpu_ms),
            opt(i.quiet_cpu_ms),
        );
    }
    for f in &r.failures {
        let _ = writeln!(s, "- **failure**: {}", f.lines().next().unwrap_or_default());
    }
    if !r.leaks.is_empty() {
        let _ = writeln!(s, "- **leaks**: {}", r.leaks.join("; "));
    }
    let _ = writeln!(s);
}
