//! The scale phase (issue 20): what the NADs of a big cluster cost the daemon, and what one pod's long
//! annotation costs the API server.
//!
//! Stand-in only (tens of thousands of NADs are created in its store directly, [`ApiServer::create_all`]).
//! `--scale-pods` pods on the daemon's node (API objects, never ADDed) select 3 NADs each, all different. For
//! each N of `--scale` (ascending), the cluster is filled up to N NADs (those of earlier phases counted) in
//! 100 namespaces (each a short config and a 200-byte annotation, as in the measurement), then each
//! daemon measured — this
//! build's, and `--baseline-daemon`'s when given, alternating which goes first — is started fresh:
//! spawn to `/readyz` 200 (the caches synced), its memory once ready and after the ADDs (`VmRSS`, `VmHWM`),
//! the NADs it holds (all, and loaded), and `--runs` ADD+DEL of a K = 3 pod through the shim with the API's
//! NAD reads per ADD counted at the stand-in.
//!
//! Before that, with only the bench's own NADs: one ADD of a pod whose annotation names
//! `--fanout-names` NADs that do not exist, in thin mode and through each daemon; its API requests are
//! counted at the stand-in (the ADD fails: code 7).
//!
//! [`ApiServer::create_all`]: plexus_e2e::apiserver::ApiServer::create_all

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use plexus_e2e::harness::world::netns;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{
    analysis::ApiCounts,
    daemon::Daemon,
    exec::Memory,
    opts::Opts,
    phases::requests,
    setup::{Bench, Op, Pod, Runner},
    stats::{Stats, ms},
};

/// Namespaces the filler NADs are spread over.
const NAMESPACES: usize = 100;
/// NADs each pod on the node selects.
pub const SCALE_K: usize = 3;
/// The probe pod's secondary networks (the bench's own NADs).
const PROBE_K: usize = 3;
const MIB: f64 = 1024.0;

/// One daemon at one N.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleRow {
    /// NADs in the cluster.
    pub nads: usize,
    /// Which daemon: "baseline" or "this build".
    pub daemon: String,
    /// Its binary.
    pub binary: PathBuf,
    /// Spawn to `/readyz` 200.
    pub ready_ms: f64,
    /// CPU time (user + system) the daemon had used when it was ready.
    pub cpu_ready_ms: Option<f64>,
    /// Its memory once ready and its pods' NADs loaded.
    pub memory_ready: Option<Memory>,
    /// Its memory after the ADDs (`peak_kib`: `VmHWM`, its peak since it started).
    pub memory_steady: Option<Memory>,
    /// `VmRSS` after the ADDs, KiB.
    pub rss_kib: Option<u64>,
    /// NADs its cache holds (`plexus_cache_objects`).
    pub cached: Option<u64>,
    /// Of which loaded (`plexus_cache_nads_loaded`; `None`: a daemon that holds every NAD whole).
    pub loaded: Option<u64>,
    /// ADD of the K = 3 probe pod through the shim.
    pub add: Option<Stats>,
    /// The most NAD GETs any measured ADD sent to the API.
    pub add_nad_reads_max: usize,
    /// What went wrong.
    pub failures: Vec<String>,
}

/// One ADD of a pod naming many missing NADs.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutRow {
    /// "thin", or the daemon's name.
    pub mode: String,
    /// Names in the annotation.
    pub names: usize,
    /// The API requests the ADD made (watches not counted).
    pub requests: ApiCounts,
    /// The ADD's wall time (it fails).
    pub add_ms: f64,
    /// How it ended (the start of the error).
    pub outcome: String,
}

/// The phase's results.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ScaleReport {
    /// Pods on the node, each selecting [`SCALE_K`] NADs.
    pub pods: usize,
    /// Per N, per daemon.
    pub rows: Vec<ScaleRow>,
    /// Bulk creation of the filler NADs, per N: seconds.
    pub created_seconds: Vec<(usize, f64)>,
    /// The long annotation.
    pub fanout: Vec<FanoutRow>,
    /// Why the phase did not run.
    pub skipped: Option<String>,
}

/// Filler NAD `n`: its namespace and name.
fn filler(n: usize) -> (String, String) {
    (
        format!("scale-{:02}", n % NAMESPACES),
        format!("nad-{n:05}"),
    )
}

fn filler_object(n: usize) -> Value {
    let (ns, name) = filler(n);
    let config = json!({
        "cniVersion": "1.0.0", "name": name, "type": "macvlan", "master": "eth0", "mode": "bridge",
        "ipam": {"type": "host-local", "subnet": format!("10.{}.{}.0/24", n / 256 % 256, n % 256)},
    });
    json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": ns,
                     "annotations": {"example.com/description": "d".repeat(200)}},
        "spec": {"config": config.to_string()},
    })
}

/// A daemon to measure: its name and binary (`None`: the one the bench found for this build).
type Variant = (&'static str, Option<PathBuf>);

/// Run the phase (see the module docs).
pub fn measure(b: &Bench, runner: &Runner, opts: &Opts) -> Result<ScaleReport, String> {
    let mut report = ScaleReport {
        pods: opts.scale_pods,
        ..ScaleReport::default()
    };
    let Some(server) = b.api.standin() else {
        report.skipped = Some(
            "a real API server: tens of thousands of NADs are created in the stand-in's store only"
                .into(),
        );
        return Ok(report);
    };
    let mut variants: Vec<Variant> = vec![("this build", None)];
    if let Some(base) = &opts.baseline_daemon {
        variants.insert(0, ("baseline", Some(base.clone())));
    }
    // Every daemon here must be ready only once synced.
    let extra: Map<String, Value> = [("cacheSyncTimeoutSeconds".to_string(), json!(600))]
        .into_iter()
        .collect();

    if opts.fanout_names > 0 {
        report.fanout = fanout(b, runner, opts, &variants, &extra)?;
    }

    let namespaces: Vec<Value> = (0..NAMESPACES)
        .map(|i| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("scale-{i:02}")}}))
        .collect();
    server
        .create_all(namespaces)
        .map_err(|e| format!("create the scale namespaces: {e}"))?;
    // The NADs earlier phases made (the bench's own, the thin mode's unrelated ones) count towards N.
    let existing = server.with_store(|st| {
        st.resolve("k8s.cni.cncf.io", "v1", "network-attachment-definitions")
            .map_or(0, |rt| st.stored(&rt, None).len())
    });
    let first = opts.scale.first().copied().unwrap_or(0);
    let fillers = first.saturating_sub(existing);
    if fillers < SCALE_K * opts.scale_pods {
        return Err(format!(
            "--scale {first}: the cluster holds {existing} NADs already, which leaves {fillers} for the {} \
             that --scale-pods {} select",
            SCALE_K * opts.scale_pods,
            opts.scale_pods
        ));
    }
    for i in 0..opts.scale_pods {
        let networks: Vec<String> = (0..SCALE_K)
            .map(|j| {
                let (ns, name) = filler((i * SCALE_K + j) % fillers.max(1));
                format!("{ns}/{name}")
            })
            .collect();
        b.api
            .create_pod(&b.ns, &format!("scale-pod-{i:03}"), &networks.join(","))?;
    }
    let probe = b.pod(&b.ns, "scale-probe", PROBE_K)?;

    let mut made = 0;
    for (level, &n) in opts.scale.iter().enumerate() {
        let want = n.saturating_sub(existing);
        let started = Instant::now();
        server
            .create_all((made..want).map(filler_object))
            .map_err(|e| format!("create NADs {made}..{want}: {e}"))?;
        let took = started.elapsed().as_secs_f64();
        eprintln!(
            "plexus-bench: scale: {} NADs in the cluster ({} created in {took:.1} s)",
            want + existing,
            want.saturating_sub(made)
        );
        report.created_seconds.push((n, took));
        made = want.max(made);
        // Alternate which daemon goes first, so neither always follows the bulk creation.
        let mut order: Vec<&Variant> = variants.iter().collect();
        if level % 2 == 1 {
            order.reverse();
        }
        for (name, bin) in order {
            let row = one(b, runner, opts, &probe, n, name, bin.as_deref(), &extra)?;
            eprintln!(
                "plexus-bench: scale: N={n} {name}: ready in {:.0} ms, RSS {} MiB (peak {} MiB), ADD p50 {:.1} ms, NAD reads per ADD ≤ {}",
                row.ready_ms,
                row.rss_kib
                    .map_or("n/a".into(), |k| format!("{:.1}", k as f64 / MIB)),
                row.memory_steady
                    .map_or("n/a".into(), |m| format!("{:.1}", m.peak_kib as f64 / MIB)),
                row.add.map_or(f64::NAN, |s| s.median_ms),
                row.add_nad_reads_max,
            );
            report.rows.push(row);
        }
    }
    drop(probe);
    Ok(report)
}

/// `VmRSS` of `pid`, KiB.
fn vm_rss(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time (user + system) `pid` has used, ms (`/proc/<pid>/stat` counts in USER_HZ ticks, 100 a second
/// on Linux).
pub(super) fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command's name, which may hold spaces: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (u64, u64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    Some((utime + stime) as f64 * 10.0)
}

/// A gauge's value (its first series containing `labels`) in a metrics exposition.
pub(super) fn gauge(text: &str, name: &str, labels: &str) -> Option<u64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .find(|l| l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

/// One daemon, started fresh with `n` NADs in the cluster.
#[allow(clippy::too_many_arguments)]
fn one(
    b: &Bench,
    runner: &Runner,
    opts: &Opts,
    probe: &Pod,
    n: usize,
    name: &str,
    bin: Option<&Path>,
    extra: &Map<String, Value>,
) -> Result<ScaleRow, String> {
    let _ = super::system::settle(Duration::from_secs(10));
    let mut daemon = Daemon::start_with(b, opts, bin, extra)?;
    let ready = daemon
        .wait_ready()
        .map_err(|e| format!("{name} daemon, N={n}: {e}"))?;
    let cpu_ready_ms = daemon.pid().and_then(cpu_ms);
    let mut failures = Vec::new();
    if let Err(e) = daemon.wait_pod_cached(probe) {
        failures.push(e);
    }
    let memory_ready = daemon.memory();
    let exec: Arc<dyn plexus::seams::exec::Exec> = Arc::new(plexus::seams::exec::ProcessExec);
    let (mut times, mut reads_max) = (Vec::new(), 0);
    for i in 0..opts.warmup + opts.runs {
        let rt = probe.rt(&Bench::cid("scale"));
        if let Err(e) = daemon.wait_pod_cached(probe) {
            failures.push(e);
            break;
        }
        b.api.clear_requests();
        match runner.plexus(Op::Add, &rt, exec.clone()) {
            Ok(d) if i >= opts.warmup => times.push(d),
            Ok(_) => {}
            Err(e) => failures.push(e),
        }
        let counts = ApiCounts::of(&requests(b).unwrap_or_default());
        reads_max = reads_max.max(counts.get_nad);
        // The status write follows the reply; a DEL right after would only supersede it.
        let _ = daemon.wait_status_writes();
        if let Err(e) = runner.plexus(Op::Del, &rt, exec.clone()) {
            failures.push(e);
        }
    }
    let _ = daemon.wait_after_reply();
    let memory_steady = daemon.memory();
    let rss_kib = daemon.pid().and_then(vm_rss);
    let metrics = daemon.get("/metrics").map(|(_, t)| t).unwrap_or_default();
    let cached = gauge(
        &metrics,
        "plexus_cache_objects",
        "kind=\"network-attachment-definitions\"",
    );
    let loaded = gauge(&metrics, "plexus_cache_nads_loaded", "");
    let binary = daemon.binary();
    daemon.stop()?;
    Ok(ScaleRow {
        nads: n,
        daemon: name.to_string(),
        binary,
        ready_ms: ms(ready),
        cpu_ready_ms,
        memory_ready,
        memory_steady,
        rss_kib,
        cached,
        loaded,
        add: Stats::of(&times),
        add_nad_reads_max: reads_max,
        failures,
    })
}

/// The long annotation: one ADD in thin mode, one through each daemon.
fn fanout(
    b: &Bench,
    daemon_runner: &Runner,
    opts: &Opts,
    variants: &[Variant],
    extra: &Map<String, Value>,
) -> Result<Vec<FanoutRow>, String> {
    let names: Vec<String> = (0..opts.fanout_names)
        .map(|i| format!("missing-{i:04}"))
        .collect();
    let info = b.api.create_pod(&b.ns, "scale-fanout", &names.join(","))?;
    let pod = Pod {
        info,
        netns: netns("bench-pod"),
        k: 0,
    };
    let exec: Arc<dyn plexus::seams::exec::Exec> = Arc::new(plexus::seams::exec::ProcessExec);
    let run = |runner: &Runner, mode: &str| -> FanoutRow {
        let rt = pod.rt(&Bench::cid("fanout"));
        b.api.clear_requests();
        let started = Instant::now();
        let r = runner.plexus(Op::Add, &rt, exec.clone());
        let took = started.elapsed();
        let counts = ApiCounts::of(&requests(b).unwrap_or_default());
        let _ = runner.plexus(Op::Del, &rt, exec.clone());
        FanoutRow {
            mode: mode.to_string(),
            names: names.len(),
            requests: counts,
            add_ms: ms(took),
            outcome: match r {
                Ok(_) => "succeeded".into(),
                Err(e) => outcome(&e),
            },
        }
    };
    let mut rows = vec![run(&b.runner, "thin")];
    for (name, bin) in variants {
        let mut daemon = Daemon::start_with(b, opts, bin.as_deref(), extra)?;
        daemon.wait_ready()?;
        daemon.wait_cached("pods", &b.ns, "scale-fanout")?;
        rows.push(run(daemon_runner, &format!("daemon ({name})")));
        let _ = daemon.wait_after_reply();
        daemon.stop()?;
    }
    for r in &rows {
        eprintln!(
            "plexus-bench: scale: {} names, {}: {} request(s) ({}) in {:.0} ms",
            r.names,
            r.mode,
            r.requests.total,
            r.requests.breakdown(),
            r.add_ms
        );
    }
    // Gone before the scale daemons start: they would each hold its selections.
    b.api.delete_pod(&b.ns, "scale-fanout")?;
    Ok(rows)
}

/// A failed ADD in short: its CNI code and what it says after the pod's name.
fn outcome(error: &str) -> String {
    let code = error
        .split_once("CNI error ")
        .and_then(|(_, r)| r.split(':').next())
        .map_or("failed".to_string(), |c| format!("code {c}"));
    let what = error.rsplit("]: ").next().unwrap_or(error);
    format!("{code}: {}", what.chars().take(100).collect::<String>())
}

/// The phase's section of the report.
pub fn markdown(s: &mut String, r: &ScaleReport) {
    let _ = writeln!(s, "### Scale (issue 20)\n");
    if let Some(why) = &r.skipped {
        let _ = writeln!(s, "- skipped: {why}\n");
        return;
    }
    if !r.fanout.is_empty() {
        let _ = writeln!(
            s,
            "One ADD of a pod naming {} NADs that do not exist (it fails):\n\n| mode | API requests | of which | ADD ms | outcome |\n|---|---|---|---|---|",
            r.fanout[0].names
        );
        for f in &r.fanout {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.0} | {} |",
                f.mode,
                f.requests.total,
                f.requests.breakdown(),
                f.add_ms,
                f.outcome.replace('|', "/")
            );
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "{} pods on the node selecting {SCALE_K} NADs each; the daemon started fresh at each N; ADD of a K = {PROBE_K} pod through the shim:\n",
        r.pods
    );
    let _ = writeln!(
        s,
        "| NADs | daemon | ready ms (CPU ms) | RSS ready MiB | RSS after ADDs MiB | peak (VmHWM) MiB | anon MiB | cached / loaded | ADD p50 ms | ADD p90 ms | NAD reads per ADD | failures |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let mib = |k: u64| format!("{:.1}", k as f64 / MIB);
    for row in &r.rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} ({}) | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} |",
            row.nads,
            row.daemon,
            row.ready_ms,
            row.cpu_ready_ms.map_or("n/a".into(), |c| format!("{c:.0}")),
            row.memory_ready
                .map_or("n/a".into(), |m| mib(m.anon_kib + m.file_kib)),
            row.rss_kib.map_or("n/a".into(), mib),
            row.memory_steady.map_or("n/a".into(), |m| mib(m.peak_kib)),
            row.memory_steady.map_or("n/a".into(), |m| mib(m.anon_kib)),
            row.cached.map_or("n/a".into(), |c| c.to_string()),
            row.loaded.map_or("all".into(), |c| c.to_string()),
            row.add
                .map_or("n/a".into(), |a| format!("{:.1}", a.median_ms)),
            row.add.map_or("n/a".into(), |a| format!("{:.1}", a.p90_ms)),
            row.add_nad_reads_max,
            if row.failures.is_empty() {
                "none".to_string()
            } else {
                row.failures.join("; ").replace('|', "/")
            }
        );
    }
    let _ = writeln!(
        s,
        "\n(RSS ready: right after `/readyz` and its pods' NADs loaded, `RssAnon` + `RssFile`; after ADDs: `VmRSS`. Bulk creation of the NADs: {}.)\n",
        r.created_seconds
            .iter()
            .map(|(n, t)| format!("{t:.1} s up to {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fillers_spread_over_namespaces_with_a_200_byte_annotation() {
        assert_eq!(filler(0), ("scale-00".into(), "nad-00000".into()));
        assert_eq!(filler(12345), ("scale-45".into(), "nad-12345".into()));
        let o = filler_object(7);
        assert_eq!(
            o["metadata"]["annotations"]["example.com/description"]
                .as_str()
                .unwrap()
                .len(),
            200
        );
        let config: Value = serde_json::from_str(o["spec"]["config"].as_str().unwrap()).unwrap();
        assert_eq!(config["type"], "macvlan");
    }

    #[test]
    fn a_failed_add_in_short() {
        assert_eq!(
            outcome(
                "plexus Add: CNI error 7: [ns/p/uid]: cannot find a network-attachment-definition (m-0) in namespace (ns)"
            ),
            "code 7: cannot find a network-attachment-definition (m-0) in namespace (ns)"
        );
        assert_eq!(outcome("host netns: gone"), "failed: host netns: gone");
    }

    #[test]
    fn cpu_time_of_this_process() {
        let spent = cpu_ms(std::process::id()).expect("our own /proc/self/stat");
        assert!(spent >= 0.0);
    }

    #[test]
    fn gauges_are_read_by_name_and_labels() {
        let text = "plexus_cache_objects{kind=\"pods\"} 250\n\
                    plexus_cache_objects{kind=\"network-attachment-definitions\"} 50000\n\
                    plexus_cache_nads_loaded 753\n";
        assert_eq!(
            gauge(
                text,
                "plexus_cache_objects",
                "kind=\"network-attachment-definitions\""
            ),
            Some(50000)
        );
        assert_eq!(gauge(text, "plexus_cache_nads_loaded", ""), Some(753));
        assert_eq!(gauge(text, "plexus_cache", ""), None);
    }
}
