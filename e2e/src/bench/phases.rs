//! The measurements.

use std::{
    sync::{Arc, Barrier},
    thread,
    time::{Duration, Instant, SystemTime},
};

use plexus::seams::exec::{Exec, ProcessExec};
use plexus_e2e::apiserver::{FaultSpec, RequestRecord};
use serde::Serialize;
use serde_json::{Value, json};

use super::{
    analysis::{ApiCounts, sequential_round_trips},
    exec::{Memory, PeakRssExec},
    opts::Opts,
    profile::Invocation,
    setup::{Bench, MASTER, Op, Pod, Runner, nad_name},
    stats::{Stats, median, ms},
};

/// The network-status annotation.
const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";
/// The latency injected into event POSTs to see whether ADD waits for them.
pub const EVENT_LATENCY_MS: u64 = 200;

fn plexus_exec() -> Arc<dyn Exec> {
    Arc::new(ProcessExec)
}

/// Whether the pod's network-status annotation has `want` entries.
pub fn check_status(b: &Bench, pod: &Pod, want: usize) -> Result<(), String> {
    let text = b
        .api
        .pod_annotation(&pod.info.namespace, &pod.info.name, NETWORK_STATUS)
        .ok_or_else(|| format!("pod {}: no network-status annotation", pod.info.name))?;
    let n = serde_json::from_str::<Vec<Value>>(&text)
        .map_err(|e| format!("pod {}: network-status: {e}", pod.info.name))?
        .len();
    if n == want {
        Ok(())
    } else {
        Err(format!(
            "pod {}: network-status has {n} entries, expected {want}",
            pod.info.name
        ))
    }
}

/// The latency numbers of one K.
#[derive(Debug, Clone, Serialize)]
pub struct KResult {
    /// Secondary networks.
    pub k: usize,
    /// plexus ADD, as the runtime sees it.
    pub add: Stats,
    /// plexus DEL.
    pub del: Stats,
    /// The delegates' ADDs run directly in sequence.
    pub floor_add: Stats,
    /// The delegates' DELs run directly in reverse.
    pub floor_del: Stats,
    /// Median plexus ADD minus median floor ADD.
    pub overhead_add_ms: f64,
    /// Median plexus DEL minus median floor DEL.
    pub overhead_del_ms: f64,
    /// The median of the per-run differences plexus ADD − floor ADD (runs are paired in time).
    pub overhead_add_paired_ms: f64,
    /// The same for DEL.
    pub overhead_del_paired_ms: f64,
    /// plexus's API requests during one ADD (the most of any measured run; stand-in only).
    pub api_add: Option<ApiCounts>,
    /// The fewest API requests of any measured ADD (stand-in only).
    pub api_add_min: Option<usize>,
    /// The most API reads (GETs and LISTs of pods and NADs) of any measured ADD (stand-in only).
    pub api_add_reads_max: Option<usize>,
    /// The most API requests of any measured DEL (stand-in only).
    pub api_del_max: Option<usize>,
    /// Sequential round trips (stand-in only).
    pub round_trips: Option<RoundTrips>,
    /// Peak RSS of plexus's ADD (KiB).
    pub peak_rss_add_kib: Option<u64>,
    /// Peak RSS of plexus's DEL (KiB).
    pub peak_rss_del_kib: Option<u64>,
    /// plexus's memory at the exit of the ADD with the highest peak.
    pub memory_add: Option<Memory>,
    /// Each measured plexus ADD, in the order run (for per-call splits against the daemon's histograms).
    #[serde(skip)]
    pub add_runs: Vec<Duration>,
    /// Each measured plexus DEL, in the order run.
    #[serde(skip)]
    pub del_runs: Vec<Duration>,
}

fn stats(v: &[Duration]) -> Result<Stats, String> {
    Stats::of(v).ok_or_else(|| "no samples".to_string())
}

/// The API requests logged since the last [`Api::clear_requests`](super::api::Api::clear_requests)
/// (stand-in only), without long-lived watches (`watch=true` in the query): the daemon's watch caches are
/// not requests of an ADD.
pub fn requests(b: &Bench) -> Option<Vec<RequestRecord>> {
    b.api.requests().map(|v| {
        v.into_iter()
            .filter(|r| !is_watch(&r.query))
            .collect::<Vec<_>>()
    })
}

/// Whether a query string asks for a watch.
pub fn is_watch(query: &str) -> bool {
    query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1" || p == "watch")
}

/// Nothing to prepare before an ADD.
pub fn no_preparation(_: &Pod) -> Result<(), String> {
    Ok(())
}

/// ADD and DEL through `runner` (plexus's list, or the shim's) and of the floor, interleaved (the order
/// alternates), for `pod`; `prepare` runs, unmeasured, before each ADD through `runner` (daemon mode: wait
/// until the daemon's caches hold the pod and its NADs). With `--plexus-log`, each measured plexus
/// invocation is added to `invocations`.
pub fn latency(
    b: &Bench,
    runner: &Runner,
    pod: &Pod,
    opts: &Opts,
    invocations: &mut Vec<Invocation>,
    prepare: &dyn Fn(&Pod) -> Result<(), String>,
) -> Result<KResult, String> {
    let k = pod.k;
    let exec = plexus_exec();
    let (mut add, mut del, mut fadd, mut fdel) = (vec![], vec![], vec![], vec![]);
    let (mut api_add, mut api_add_min, mut api_del_max): (
        Option<ApiCounts>,
        Option<usize>,
        Option<usize>,
    ) = (None, None, None);
    let mut api_add_reads_max: Option<usize> = None;
    let started = Instant::now();
    for i in 0..opts.warmup + opts.runs {
        let measured = i >= opts.warmup;
        let plexus_first = i % 2 == 0;
        for plexus in [plexus_first, !plexus_first] {
            if plexus {
                let rt = pod.rt(&Bench::cid(&format!("k{k}-plexus")));
                prepare(pod)?;
                b.api.clear_requests();
                let t0 = SystemTime::now();
                let a = runner.plexus(Op::Add, &rt, exec.clone())?;
                let t1 = SystemTime::now();
                await_events(b, k + 1);
                let reqs = requests(b);
                if i == 0 {
                    pod.check_added()?;
                    check_status(b, pod, k + 1)?;
                }
                b.api.clear_requests();
                let t2 = SystemTime::now();
                let d = runner.plexus(Op::Del, &rt, exec.clone())?;
                let t3 = SystemTime::now();
                let del_reqs = requests(b);
                pod.check_clean()?;
                if measured && opts.plexus_log.is_some() {
                    for (op, start, end) in [(Op::Add, t0, t1), (Op::Del, t2, t3)] {
                        invocations.push(Invocation { k, op, start, end });
                    }
                }
                if measured {
                    add.push(a);
                    del.push(d);
                    if let Some(reqs) = reqs {
                        let c = ApiCounts::of(&reqs);
                        api_add_reads_max = Some(api_add_reads_max.unwrap_or(0).max(c.reads()));
                        api_add_min = Some(api_add_min.map_or(c.total, |m| m.min(c.total)));
                        if api_add.as_ref().is_none_or(|m| c.total > m.total) {
                            api_add = Some(c);
                        }
                    }
                    if let Some(r) = del_reqs {
                        api_del_max = Some(api_del_max.unwrap_or(0).max(r.len()));
                    }
                }
            } else {
                let rt = pod.rt(&Bench::cid(&format!("k{k}-floor")));
                let a = runner.floor(Op::Add, k, &rt)?;
                if i == 0 {
                    pod.check_added()?;
                }
                let d = runner.floor(Op::Del, k, &rt)?;
                pod.check_clean()?;
                if measured {
                    fadd.push(a);
                    fdel.push(d);
                }
            }
        }
    }
    let paired = |p: &[Duration], f: &[Duration]| -> f64 {
        median(p.iter().zip(f).map(|(p, f)| ms(*p) - ms(*f)).collect())
    };
    let (overhead_add_paired_ms, overhead_del_paired_ms) =
        (paired(&add, &fadd), paired(&del, &fdel));
    let (add_runs, del_runs) = (add.clone(), del.clone());
    let (add, del, floor_add, floor_del) =
        (stats(&add)?, stats(&del)?, stats(&fadd)?, stats(&fdel)?);
    eprintln!(
        "plexus-bench: K={k}: ADD {:.1} ms (floor {:.1}), DEL {:.1} ms (floor {:.1}) [{:.0} s]",
        add.median_ms,
        floor_add.median_ms,
        del.median_ms,
        floor_del.median_ms,
        started.elapsed().as_secs_f64()
    );
    Ok(KResult {
        k,
        overhead_add_ms: add.median_ms - floor_add.median_ms,
        overhead_del_ms: del.median_ms - floor_del.median_ms,
        overhead_add_paired_ms,
        overhead_del_paired_ms,
        add,
        del,
        floor_add,
        floor_del,
        api_add,
        api_add_min,
        api_add_reads_max,
        api_del_max,
        round_trips: None,
        peak_rss_add_kib: None,
        peak_rss_del_kib: None,
        memory_add: None,
        add_runs,
        del_runs,
    })
}

/// One K measured against the `--baseline` binary: both plexus binaries and the floor, interleaved.
#[derive(Debug, Clone, Serialize)]
pub struct Versus {
    /// Secondary networks.
    pub k: usize,
    /// The baseline's ADD.
    pub base_add: Stats,
    /// The measured plexus's ADD.
    pub head_add: Stats,
    /// The floor's ADD.
    pub floor_add: Stats,
    /// The baseline's DEL.
    pub base_del: Stats,
    /// The measured plexus's DEL.
    pub head_del: Stats,
    /// The floor's DEL.
    pub floor_del: Stats,
    /// The median of the per-run differences baseline ADD − floor ADD (the same round's runs).
    pub base_overhead_add_ms: f64,
    /// The same for the measured plexus.
    pub head_overhead_add_ms: f64,
    /// The median of the per-run differences measured ADD − baseline ADD (negative: faster).
    pub head_minus_base_add_ms: f64,
    /// The same for DEL.
    pub head_minus_base_del_ms: f64,
    /// Peak RSS of the baseline's ADD (KiB).
    pub base_peak_rss_add_kib: Option<u64>,
    /// Peak RSS of the measured plexus's ADD in the same phase (KiB).
    pub head_peak_rss_add_kib: Option<u64>,
}

/// ADD and DEL of the baseline (`base`), the measured plexus and the floor for `pod`, one of each per round,
/// in an order that rotates every round so no variant always runs first; then peak RSS of both binaries.
pub fn versus(b: &Bench, base: &Runner, pod: &Pod, opts: &Opts) -> Result<Versus, String> {
    let k = pod.k;
    let exec = plexus_exec();
    // Per variant (0 baseline, 1 measured, 2 floor): ADD and DEL samples.
    let mut add: [Vec<Duration>; 3] = Default::default();
    let mut del: [Vec<Duration>; 3] = Default::default();
    let started = Instant::now();
    for i in 0..opts.warmup + opts.runs {
        for j in 0..3 {
            let v = (i + j) % 3;
            let (a, d) = match v {
                2 => {
                    let rt = pod.rt(&Bench::cid(&format!("k{k}-vs-floor")));
                    let a = b.runner.floor(Op::Add, k, &rt)?;
                    let d = b.runner.floor(Op::Del, k, &rt)?;
                    (a, d)
                }
                _ => {
                    let (runner, name) = if v == 0 {
                        (base, "base")
                    } else {
                        (&b.runner, "head")
                    };
                    let rt = pod.rt(&Bench::cid(&format!("k{k}-vs-{name}")));
                    b.api.clear_requests();
                    let a = runner.plexus(Op::Add, &rt, exec.clone())?;
                    // Its events, sent after the reply, are not left to overlap the DEL (as in `latency`).
                    await_events(b, k + 1);
                    if i == 0 {
                        pod.check_added()?;
                    }
                    let d = runner.plexus(Op::Del, &rt, exec.clone())?;
                    (a, d)
                }
            };
            pod.check_clean()?;
            if i >= opts.warmup {
                add[v].push(a);
                del[v].push(d);
            }
        }
    }
    let paired = |p: &[Duration], q: &[Duration]| -> f64 {
        median(p.iter().zip(q).map(|(p, q)| ms(*p) - ms(*q)).collect())
    };
    let (base_rss, head_rss) = if opts.rss_runs > 0 {
        let none = no_preparation;
        let (a, _) = peak_rss(base, pod, opts, &none)?;
        let (h, _) = peak_rss(&b.runner, pod, opts, &none)?;
        (a.map(|m| m.peak_kib), h.map(|m| m.peak_kib))
    } else {
        (None, None)
    };
    let r = Versus {
        k,
        base_overhead_add_ms: paired(&add[0], &add[2]),
        head_overhead_add_ms: paired(&add[1], &add[2]),
        head_minus_base_add_ms: paired(&add[1], &add[0]),
        head_minus_base_del_ms: paired(&del[1], &del[0]),
        base_add: stats(&add[0])?,
        head_add: stats(&add[1])?,
        floor_add: stats(&add[2])?,
        base_del: stats(&del[0])?,
        head_del: stats(&del[1])?,
        floor_del: stats(&del[2])?,
        base_peak_rss_add_kib: base_rss,
        head_peak_rss_add_kib: head_rss,
    };
    eprintln!(
        "plexus-bench: K={k} against the baseline: ADD {:.1} ms (baseline {:.1}, floor {:.1}), paired {:+.2} ms [{:.0} s]",
        r.head_add.median_ms,
        r.base_add.median_ms,
        r.floor_add.median_ms,
        r.head_minus_base_add_ms,
        started.elapsed().as_secs_f64()
    );
    Ok(r)
}

/// Sequential API round trips of one ADD.
#[derive(Debug, Clone, Serialize)]
pub struct RoundTrips {
    /// The latency injected into every API request.
    pub latency_ms: u64,
    /// ADDs measured.
    pub runs: usize,
    /// The longest chain of requests each made after the previous was answered (the most of any run).
    pub sequential: usize,
    /// Median ADD with the latency.
    pub add_median_ms: f64,
    /// (median ADD with the latency − median ADD without) / latency: how many request latencies ADD
    /// waited for, one after another.
    pub latencies_waited: f64,
}

/// plexus posts an ADD's events after its reply, from a detached process (the daemon from a thread of its
/// own): wait (up to 10 s) until `n` event POSTs have reached the stand-in, so they count with that ADD
/// and never with what follows.
pub fn await_events(b: &Bench, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(reqs) = b.api.requests() {
        let posted = reqs
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
            .count();
        if posted >= n || Instant::now() > deadline {
            return;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// ADD `runs` times for `pod` with `fault` injected; the requests of each ADD and the ADD times.
fn add_with_fault(
    b: &Bench,
    pod: &Pod,
    fault: FaultSpec,
    runs: usize,
) -> Result<Vec<(Duration, Vec<plexus_e2e::apiserver::RequestRecord>)>, String> {
    let exec = plexus_exec();
    b.api.inject(fault);
    let mut out = Vec::new();
    let r = (|| {
        for _ in 0..runs {
            let rt = pod.rt(&Bench::cid(&format!("k{}-fault", pod.k)));
            b.api.clear_requests();
            let a = b.runner.plexus(Op::Add, &rt, exec.clone())?;
            // What ADD's critical path asked: the events come later (below), from plexus's detached sender.
            let reqs = b.api.requests().unwrap_or_default();
            await_events(b, pod.k + 1);
            b.runner.plexus(Op::Del, &rt, exec.clone())?;
            pod.check_clean()?;
            out.push((a, reqs));
        }
        Ok::<_, String>(())
    })();
    b.api.clear_faults();
    r.map(|()| out)
}

/// Round trips of ADD for `pod` (stand-in only), given its median ADD without latency.
pub fn round_trips(
    b: &Bench,
    pod: &Pod,
    opts: &Opts,
    base_median_ms: f64,
) -> Result<Option<RoundTrips>, String> {
    if b.api.standin().is_none() || opts.rt_runs == 0 {
        return Ok(None);
    }
    let runs = add_with_fault(b, pod, FaultSpec::latency(opts.latency_ms), opts.rt_runs)?;
    let mut sequential = 0;
    for (_, reqs) in &runs {
        sequential = sequential.max(sequential_round_trips(reqs)?);
    }
    let times: Vec<Duration> = runs.iter().map(|(d, _)| *d).collect();
    let median = stats(&times)?.median_ms;
    Ok(Some(RoundTrips {
        latency_ms: opts.latency_ms,
        runs: runs.len(),
        sequential,
        add_median_ms: median,
        latencies_waited: (median - base_median_ms) / opts.latency_ms as f64,
    }))
}

/// Does ADD wait for its events?
#[derive(Debug, Clone, Serialize)]
pub struct EventsProbe {
    /// Secondary networks of the pod.
    pub k: usize,
    /// Latency injected into every event POST (only).
    pub injected_ms: u64,
    /// Median ADD without it.
    pub add_median_ms: f64,
    /// Median ADD with it.
    pub add_median_with_ms: f64,
    /// The difference.
    pub delta_ms: f64,
    /// Whether ADD waited for the events (the difference is more than half the injected latency).
    pub on_critical_path: bool,
}

/// Slow every event POST down and see what ADD does (stand-in only).
pub fn events_probe(
    b: &Bench,
    pod: &Pod,
    opts: &Opts,
    base_median_ms: f64,
) -> Result<Option<EventsProbe>, String> {
    if b.api.standin().is_none() || opts.rt_runs == 0 {
        return Ok(None);
    }
    let fault = FaultSpec::latency(EVENT_LATENCY_MS).on("POST", "/events");
    let runs = add_with_fault(b, pod, fault, opts.rt_runs)?;
    let times: Vec<Duration> = runs.iter().map(|(d, _)| *d).collect();
    let with = stats(&times)?.median_ms;
    let delta = with - base_median_ms;
    Ok(Some(EventsProbe {
        k: pod.k,
        injected_ms: EVENT_LATENCY_MS,
        add_median_ms: base_median_ms,
        add_median_with_ms: with,
        delta_ms: delta,
        on_critical_path: delta > EVENT_LATENCY_MS as f64 / 2.0,
    }))
}

/// The memory of the process the runtime runs through `runner` (plexus, or the shim) in its ADD and DEL
/// for `pod`: the run with the highest peak of each, over `opts.rss_runs` traced runs.
pub fn peak_rss(
    runner: &Runner,
    pod: &Pod,
    opts: &Opts,
    prepare: &dyn Fn(&Pod) -> Result<(), String>,
) -> Result<(Option<Memory>, Option<Memory>), String> {
    let tracer = Arc::new(PeakRssExec::default());
    let exec: Arc<dyn Exec> = tracer.clone();
    let (mut add, mut del) = (None::<Memory>, None::<Memory>);
    let most = |acc: Option<Memory>, v: Vec<(std::path::PathBuf, Option<Memory>)>| {
        v.into_iter()
            .filter_map(|(_, m)| m)
            .chain(acc)
            .max_by_key(|m| m.peak_kib)
    };
    for _ in 0..opts.rss_runs {
        let rt = pod.rt(&Bench::cid(&format!("k{}-rss", pod.k)));
        prepare(pod)?;
        runner.plexus(Op::Add, &rt, exec.clone())?;
        add = most(add, tracer.take());
        runner.plexus(Op::Del, &rt, exec.clone())?;
        del = most(del, tracer.take());
        pod.check_clean()?;
    }
    Ok((add, del))
}

/// ADD latency with many unrelated NADs in the pod's namespace.
#[derive(Debug, Clone, Serialize)]
pub struct NadsResult {
    /// Unrelated NADs in the second namespace.
    pub unrelated: usize,
    /// Secondary networks of both pods.
    pub k: usize,
    /// ADD of a pod whose namespace has only its own NADs.
    pub base: Stats,
    /// ADD of a pod whose namespace also has the unrelated ones.
    pub with: Stats,
    /// (median with − median base) / median base, in percent.
    pub change_pct: f64,
}

/// Two namespaces, alike but for `opts.unrelated_nads` unrelated NADs in the second; ADD (and DEL) a
/// K=3 pod in each, alternately. `pod_a` is a K=3 pod in the main namespace.
pub fn unrelated_nads(
    b: &mut Bench,
    pod_a: &Pod,
    opts: &Opts,
) -> Result<Option<(NadsResult, Pod)>, String> {
    if opts.unrelated_nads == 0 {
        return Ok(None);
    }
    let k = pod_a.k;
    let started = Instant::now();
    let ns_b = b.api.create_namespace("plexus-bench-nads")?;
    for i in 1..=k {
        let mut conf = b.runner.secondaries[i - 1].value.clone();
        conf.remove("name");
        let conf = Value::Object(conf);
        b.api.create_nad(&ns_b, &nad_name(i), &conf)?;
    }
    for j in 0..opts.unrelated_nads {
        let conf = json!({"cniVersion": "1.0.0", "type": "macvlan", "master": MASTER, "mode": "bridge",
                          "ipam": {"type": "host-local",
                                   "ranges": [[{"subnet": format!("10.{}.{}.0/24", 100 + j / 256, j % 256)}]]}});
        b.api
            .create_nad(&ns_b, &format!("unrelated-{j:04}"), &conf)?;
    }
    eprintln!(
        "plexus-bench: created {} unrelated NADs in {ns_b} [{:.1} s]",
        opts.unrelated_nads,
        started.elapsed().as_secs_f64()
    );
    let pod_b = b.pod(&ns_b, "bench-nads", k)?;
    let exec = plexus_exec();
    let (mut base, mut with) = (vec![], vec![]);
    for i in 0..opts.warmup + opts.runs {
        let a_first = i % 2 == 0;
        for a in [a_first, !a_first] {
            let pod = if a { pod_a } else { &pod_b };
            let rt = pod.rt(&Bench::cid("nads"));
            let took = b.runner.plexus(Op::Add, &rt, exec.clone())?;
            b.runner.plexus(Op::Del, &rt, exec.clone())?;
            pod.check_clean()?;
            if i >= opts.warmup {
                if a { &mut base } else { &mut with }.push(took);
            }
        }
    }
    let (base, with) = (stats(&base)?, stats(&with)?);
    eprintln!(
        "plexus-bench: {} unrelated NADs: ADD {:.1} ms vs {:.1} ms",
        opts.unrelated_nads, with.median_ms, base.median_ms
    );
    Ok(Some((
        NadsResult {
            unrelated: opts.unrelated_nads,
            k,
            change_pct: (with.median_ms - base.median_ms) / base.median_ms * 100.0,
            base,
            with,
        },
        pod_b,
    )))
}

/// A burst of pods started at once.
#[derive(Debug, Clone, Serialize)]
pub struct BurstResult {
    /// Pods.
    pub pods: usize,
    /// Secondary networks of each.
    pub k: usize,
    /// From the start until the last ADD returned.
    pub wall_ms: f64,
    /// Each pod's ADD.
    pub per_pod: Option<Stats>,
    /// Failed ADDs (and pods without their interfaces or network-status).
    pub failures: Vec<String>,
    /// From the start of the concurrent DELs until the last returned.
    pub del_wall_ms: f64,
    /// Failed DELs.
    pub del_failures: Vec<String>,
    /// What was left afterwards.
    pub leaks: Vec<String>,
}

/// Run `op` through `runner` for every pod at once; each pod's time (or error), and the wall time.
pub fn concurrently(
    runner: &Runner,
    pods: &[Pod],
    cids: &[String],
    op: Op,
) -> (Vec<Result<Duration, String>>, Duration) {
    let barrier = Arc::new(Barrier::new(pods.len() + 1));
    let handles: Vec<_> = pods
        .iter()
        .zip(cids)
        .map(|(pod, cid)| {
            let (runner, rt, barrier) = (runner.clone(), pod.rt(cid), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                runner.plexus(op, &rt, plexus_exec())
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    let results = handles
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())))
        .collect();
    (results, started.elapsed())
}

/// `opts.burst` pods with K=3 (fewer when the runs allow fewer), ADD all at once, then DEL all at once,
/// then look for leftovers.
pub fn burst(b: &Bench, k: usize, opts: &Opts) -> Result<Option<BurstResult>, String> {
    if opts.burst == 0 {
        return Ok(None);
    }
    let pods: Vec<Pod> = (0..opts.burst)
        .map(|i| b.pod(&b.ns, &format!("burst-{i:02}"), k))
        .collect::<Result<_, _>>()?;
    let cids: Vec<String> = (0..pods.len())
        .map(|i| Bench::cid(&format!("burst-{i:02}")))
        .collect();
    let (adds, wall) = concurrently(&b.runner, &pods, &cids, Op::Add);
    let mut failures = Vec::new();
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
    let (dels, del_wall) = concurrently(&b.runner, &pods, &cids, Op::Del);
    let del_failures: Vec<String> = pods
        .iter()
        .zip(&dels)
        .filter_map(|(p, r)| {
            r.as_ref()
                .err()
                .map(|e| format!("pod {}: {e}", p.info.name))
        })
        .collect();
    let leaks = b.leaks(&pods.iter().collect::<Vec<_>>());
    let per_pod = Stats::of(&times);
    eprintln!(
        "plexus-bench: burst of {}: {:.0} ms, p50 {:.0} ms, {} failure(s), {} leak(s)",
        pods.len(),
        ms(wall),
        per_pod.map_or(0.0, |s| s.median_ms),
        failures.len(),
        leaks.len()
    );
    Ok(Some(BurstResult {
        pods: pods.len(),
        k,
        wall_ms: ms(wall),
        per_pod,
        failures,
        del_wall_ms: ms(del_wall),
        del_failures,
        leaks,
    }))
}
