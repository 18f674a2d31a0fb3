//! plexus-bench: what plexus costs beyond the delegates it runs (issue 5).
//!
//! ```sh
//! sudo cargo run --profile tools -p plexus-e2e --bin plexus-bench -- [--quick] [--mode thin|daemon|both] [--json PATH]
//! ```
//!
//! On real network namespaces with Debian's plugins (a `bridge` cluster network and K `macvlan`
//! secondaries, all with `host-local`) and an API server — the in-process stand-in listening on loopback
//! inside the bench's host namespace, or `E2E_KUBECONFIG`'s — it measures, for each K:
//!
//! - plexus's ADD and DEL as the container runtime sees them (plexus's own libcni-like [`Invoker`]
//!   running the node's conflist `[plexus]` on a thread inside the host namespace), and the *floor*: the
//!   same delegate configs run directly by the same runner, in sequence (DEL in reverse), with the
//!   same attachment parameters. Runs interleave plexus and floor, alternating which goes first;
//! - plexus's API requests per ADD and per DEL from the stand-in's request log, and the sequential
//!   round trips of an ADD (see [`analysis`]); whether ADD waits for its events (latency injected into
//!   event POSTs only);
//! - the peak RSS of the plexus process itself (see [`exec`]);
//!
//! and once: the binary's size, a burst of pods started concurrently (K=3) with a leak check, and
//! ADD latency with many unrelated NADs in the pod's namespace against a twin namespace without them.
//!
//! In daemon mode (`--mode daemon`, or `both`, the default; see [`daemon`]) the runtime runs `plexus-shim`
//! and `plexus daemon` serves it: the same per-K rows against the same floor, API reads per ADD in steady
//! state, the shim's peak RSS and size, and a storm of pods after a daemon restart under a memory limit;
//! then the hot-plug phase ([`hotplug`]: a running pod's networks annotation changed, and left alone), and
//! the scale phase ([`scale`]): the daemon with tens of thousands of NADs in the cluster, and one pod
//! naming a thousand missing NADs.
//!
//! [`Invoker`]: plexus::seams::invoke::Invoker

mod analysis;
mod api;
mod daemon;
mod exec;
mod hotplug;
mod opts;
mod phases;
mod profile;
mod report;
mod scale;
mod setup;
mod stats;
mod system;

use std::{collections::BTreeMap, io::Write, process::ExitCode, time::Instant};

use opts::{Opts, USAGE};
use report::{Report, Settings};
use setup::{Bench, Pod};

/// The program: parse, run, print.
pub fn main() -> ExitCode {
    let opts = match Opts::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("plexus-bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if opts.help {
        let _ = writeln!(std::io::stdout(), "{USAGE}");
        return ExitCode::SUCCESS;
    }
    match run(&opts) {
        Ok(report) => {
            let _ = write!(std::io::stdout().lock(), "{}", report.markdown());
            if let Some(path) = &opts.json {
                let text = serde_json::to_string_pretty(&report).unwrap_or_default();
                if let Err(e) = std::fs::write(path, text + "\n") {
                    eprintln!("plexus-bench: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("plexus-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn require_environment() -> Result<(), String> {
    plexus_testsupport::netns::check_environment(&["bridge", "macvlan", "host-local"])
        .map_err(|e| format!("{e}: run it with sudo"))
}

/// Run every phase.
pub fn run(opts: &Opts) -> Result<Report, String> {
    let started = Instant::now();
    require_environment()?;
    let machine = system::Machine::describe();
    let binary = system::plexus_binary()?;
    eprintln!(
        "plexus-bench: measuring {} ({})",
        binary.path.display(),
        binary.origin
    );
    let baseline = match &opts.baseline {
        Some(p) => {
            let b = system::baseline_binary(p)?;
            eprintln!("plexus-bench: against the baseline {}", b.path.display());
            Some(b)
        }
        None => None,
    };
    let shim = if opts.mode.daemon() {
        let shim = system::shim_binary()?;
        eprintln!(
            "plexus-bench: daemon mode: shim {} ({})",
            shim.path.display(),
            shim.origin
        );
        // The bench's own plexus build is not beside the daemon's (another cargo profile): it builds the daemon
        // too and hands its path to every daemon it starts. A plexus given by E2E_PLEXUS_BIN comes with its
        // daemon (E2E_DAEMON_BIN, or the one beside it, as the harness finds it).
        let daemon = if binary.release_build || std::env::var_os("E2E_DAEMON_BIN").is_some() {
            let daemon = system::daemon_binary()?;
            eprintln!(
                "plexus-bench: daemon mode: daemon {} ({})",
                daemon.path.display(),
                daemon.origin
            );
            Some(daemon.path)
        } else {
            eprintln!(
                "plexus-bench: daemon mode: the daemon beside {}",
                binary.path.display()
            );
            None
        };
        Some((shim, daemon))
    } else {
        None
    };
    let (shim, daemon) = match shim {
        Some((shim, daemon)) => (Some(shim), daemon),
        None => (None, None),
    };
    let build_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut bench = Bench::setup(&binary.path, shim.as_ref().map(|s| s.path.as_path()), opts)?;
    bench.daemon = daemon;
    let busy_before = system::busy_while_idle();
    let cache_write = bench.cache_write_cost(opts.runs.max(10))?;
    eprintln!("plexus-bench: API server: {}", bench.api.describe());

    let thin = if opts.mode.thin() {
        Some(thin(&mut bench, opts)?)
    } else {
        None
    };
    let (daemon, daemon_pods) = match shim {
        Some(shim) => {
            let (r, pods) = daemon::measure(&bench, shim, opts)?;
            (Some(r), pods)
        }
        None => (None, Vec::new()),
    };
    // Before the scale phase, which leaves tens of thousands of NADs in the cluster.
    let hotplug = match &bench.daemon_runner {
        Some(runner) => hotplug::measure(&bench, runner, opts)?,
        None => None,
    };
    let scale = match &bench.daemon_runner {
        Some(runner) if !opts.scale.is_empty() => Some(scale::measure(&bench, runner, opts)?),
        _ => None,
    };
    let Thin {
        per_k,
        events_probe,
        unrelated_nads,
        burst,
        pods,
        invocations,
        versus,
    } = thin.unwrap_or_default();

    let mut all: Vec<&Pod> = pods.iter().collect();
    all.extend(daemon_pods.iter());
    let final_leaks = bench.leaks(&all);
    let busy_after = system::busy_while_idle();

    let profile = match &opts.plexus_log {
        Some(path) if opts.mode.thin() => profile::breakdown(
            &std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
            &invocations,
        ),
        _ => Vec::new(),
    };
    let mut report = Report {
        profile,
        api: bench.api.describe(),
        standin: bench.api.standin().is_some(),
        plexus_user: bench.plexus_user.clone(),
        machine,
        binary,
        baseline,
        versus,
        settings: Settings::from(opts),
        per_k,
        events_probe,
        unrelated_nads,
        burst,
        daemon,
        hotplug,
        scale,
        final_leaks,
        forwarded_connections: bench.api.forwarded_connections(),
        targets: Vec::new(),
        seconds: 0.0,
        build_seconds,
        busy_while_idle: (busy_before, busy_after),
        cache_write,
    };
    // Pods go before the world they live in.
    drop(all);
    drop(pods);
    drop(daemon_pods);
    drop(bench);
    report.seconds = started.elapsed().as_secs_f64();
    report.evaluate();
    Ok(report)
}

/// What the thin mode measured, and the pods it made (kept for the final leak check).
#[derive(Default)]
struct Thin {
    per_k: Vec<phases::KResult>,
    events_probe: Option<phases::EventsProbe>,
    unrelated_nads: Option<phases::NadsResult>,
    burst: Option<phases::BurstResult>,
    pods: Vec<Pod>,
    invocations: Vec<profile::Invocation>,
    /// `--baseline`: per K, against the baseline binary.
    versus: Vec<phases::Versus>,
}

/// The thin mode's phases: per K, the unrelated NADs, the burst.
fn thin(bench: &mut Bench, opts: &Opts) -> Result<Thin, String> {
    // Latency, requests, round trips, events, RSS: per K, each K with its own pod.
    let mut pods: BTreeMap<usize, Pod> = BTreeMap::new();
    let mut per_k = Vec::new();
    let mut invocations = Vec::new();
    let mut events_probe = None;
    let probe_k = if opts.ks.contains(&3) {
        3
    } else {
        *opts.ks.last().unwrap_or(&0)
    };
    let none = phases::no_preparation;
    let mut versus = Vec::new();
    for &k in &opts.ks {
        let pod = bench.pod(&bench.ns, &format!("bench-k{k}"), k)?;
        let mut r = phases::latency(bench, &bench.runner, &pod, opts, &mut invocations, &none)?;
        r.round_trips = phases::round_trips(bench, &pod, opts, r.add.median_ms)?;
        if k == probe_k {
            events_probe = phases::events_probe(bench, &pod, opts, r.add.median_ms)?;
        }
        if opts.rss_runs > 0 {
            let (a, d) = phases::peak_rss(&bench.runner, &pod, opts, &none)?;
            r.peak_rss_add_kib = a.map(|m| m.peak_kib);
            r.peak_rss_del_kib = d.map(|m| m.peak_kib);
            r.memory_add = a;
        }
        if let Some(base) = &bench.base_runner {
            versus.push(phases::versus(bench, base, &pod, opts)?);
        }
        per_k.push(r);
        pods.insert(k, pod);
    }

    // Unrelated NADs: a K=3 pod here against a K=3 pod in a namespace full of other NADs.
    let pod_a = match pods.remove(&3) {
        Some(p) => p,
        None => bench.pod(&bench.ns.clone(), "bench-nads-base", 3)?,
    };
    let nads = phases::unrelated_nads(bench, &pod_a, opts)?;
    let (unrelated_nads, pod_b) = match nads {
        Some((r, p)) => (Some(r), Some(p)),
        None => (None, None),
    };

    let burst = phases::burst(bench, 3, opts)?;

    let mut all: Vec<Pod> = pods.into_values().collect();
    all.push(pod_a);
    all.extend(pod_b);
    Ok(Thin {
        per_k,
        events_probe,
        unrelated_nads,
        burst,
        pods: all,
        invocations,
        versus,
    })
}
