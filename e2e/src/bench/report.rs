//! The results: JSON, a markdown table, and the targets.

use std::fmt::Write as _;

use serde::Serialize;

use super::{
    daemon::DaemonReport,
    opts::{Mode, Opts},
    phases::{BurstResult, EventsProbe, KResult, NadsResult, Versus},
    profile::Breakdown,
    stats::Stats,
    system::{Binary, Machine},
};

/// How the run was configured.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Thin, daemon or both.
    pub mode: Mode,
    /// Pods in the daemon-mode storm.
    pub storm: usize,
    /// The daemon's memory limit during the storm, MiB.
    pub storm_memory_mib: u64,
    /// Measured runs per K.
    pub runs: usize,
    /// Warm-up runs per K.
    pub warmup: usize,
    /// The Ks.
    pub ks: Vec<usize>,
    /// Traced runs per K for the peak RSS.
    pub rss_runs: usize,
    /// Runs with injected latency per K.
    pub rt_runs: usize,
    /// The latency injected to count round trips.
    pub latency_ms: u64,
    /// `--quick`.
    pub quick: bool,
    /// Diagnostics in effect (`--wrap`, `--plexus-log`): the numbers are then not plexus's own.
    pub diagnostics: Option<String>,
}

impl From<&Opts> for Settings {
    fn from(o: &Opts) -> Settings {
        Settings {
            mode: o.mode,
            storm: o.storm,
            storm_memory_mib: o.storm_memory_mib,
            runs: o.runs,
            warmup: o.warmup,
            ks: o.ks.clone(),
            rss_runs: o.rss_runs,
            rt_runs: o.rt_runs,
            latency_ms: o.latency_ms,
            quick: o.quick,
            diagnostics: match (&o.wrap, &o.plexus_log) {
                (None, None) => None,
                (w, l) => Some(format!(
                    "{}{}",
                    w.as_ref()
                        .map(|w| format!("plexus run under `{w}`; "))
                        .unwrap_or_default(),
                    l.as_ref()
                        .map(|l| format!("plexus logging at debug level to {}", l.display()))
                        .unwrap_or_default()
                )),
            },
        }
    }
}

/// One of issue 5's targets.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What.
    pub name: String,
    /// The limit, in words.
    pub limit: String,
    /// What was measured.
    pub measured: String,
    /// Met, not met, or not measured (`None`).
    pub met: Option<bool>,
}

/// Everything measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The API server.
    pub api: String,
    /// Whether it was the stand-in.
    pub standin: bool,
    /// Who plexus authenticates as.
    pub plexus_user: String,
    /// The machine.
    pub machine: Machine,
    /// The plexus binary.
    pub binary: Binary,
    /// `--baseline`: the binary compared against.
    pub baseline: Option<Binary>,
    /// `--baseline`: per K, the two binaries measured side by side.
    pub versus: Vec<Versus>,
    /// Settings.
    pub settings: Settings,
    /// Per K.
    pub per_k: Vec<KResult>,
    /// Whether ADD waits for its events.
    pub events_probe: Option<EventsProbe>,
    /// Unrelated NADs.
    pub unrelated_nads: Option<NadsResult>,
    /// The burst.
    pub burst: Option<BurstResult>,
    /// Daemon mode (issue 8).
    pub daemon: Option<DaemonReport>,
    /// The hot-plug phase (issue 18).
    pub hotplug: Option<super::hotplug::HotplugReport>,
    /// The scale phase (issue 20).
    pub scale: Option<super::scale::ScaleReport>,
    /// What was left at the very end, after every phase.
    pub final_leaks: Vec<String>,
    /// Connections the forwarder accepted (real API server only).
    pub forwarded_connections: Option<usize>,
    /// Where plexus's time goes (`--plexus-log` only).
    pub profile: Vec<Breakdown>,
    /// The targets.
    pub targets: Vec<Target>,
    /// Wall time of the measurements (set-up to clean-up).
    pub seconds: f64,
    /// Wall time of finding or building the plexus binary before that.
    pub build_seconds: f64,
    /// How busy the CPUs were (0..1) in a second of the bench doing nothing, before measuring and
    /// at the end: other work on the machine skews every number.
    pub busy_while_idle: (f64, f64),
    /// One crash-safe cache write (temp file, fsync, rename, directory fsync) in plexus's `cniDir`: ADD does
    /// one on its critical path, before its first delegate.
    pub cache_write: Stats,
}

fn st_diag(r: &Report) -> Option<String> {
    r.settings.diagnostics.clone()
}

const MIB: f64 = 1024.0 * 1024.0;

/// The first cells of a latency row, thin or daemon: K, ADD median / p90 / min, floor ADD, ADD overhead, the
/// same for DEL.
fn latency_cells(r: &KResult) -> String {
    format!(
        "{} | {:.1} / {:.1} / {:.1} | {:.1} | {:+.1} | {:.1} / {:.1} / {:.1} | {:.1} | {:+.1}",
        r.k,
        r.add.median_ms,
        r.add.p90_ms,
        r.add.min_ms,
        r.floor_add.median_ms,
        r.overhead_add_ms,
        r.del.median_ms,
        r.del.p90_ms,
        r.del.min_ms,
        r.floor_del.median_ms,
        r.overhead_del_ms,
    )
}

/// The peak RSS cell of a latency row: `ADD / DEL` in MiB.
fn rss_cells(r: &KResult) -> String {
    let rss = |v: Option<u64>| v.map_or("n/a".into(), |k| format!("{:.2}", mib_kib(k)));
    format!("{} / {}", rss(r.peak_rss_add_kib), rss(r.peak_rss_del_kib))
}

/// `K=0 +1.2 / +0.3, K=1 …`: the paired ADD / DEL overheads of each K.
fn paired_overheads(per_k: &[KResult]) -> String {
    per_k
        .iter()
        .map(|r| {
            format!(
                "K={} {:+.1} / {:+.1}",
                r.k, r.overhead_add_paired_ms, r.overhead_del_paired_ms
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn mib_kib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Report {
    /// Evaluate issue 5's targets (thin mode) and issue 8's (daemon mode).
    pub fn evaluate(&mut self) {
        let mut t = Vec::new();
        if self.settings.mode.thin() {
            self.evaluate_thin(&mut t);
        }
        if let Some(d) = &self.daemon {
            evaluate_daemon(d, self.standin, &mut t);
        }
        self.targets = t;
    }

    fn evaluate_thin(&self, t: &mut Vec<Target>) {
        let worst = |f: fn(&KResult) -> f64| {
            self.per_k
                .iter()
                .map(|r| (r.k, f(r)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
        };
        let per_k = |f: fn(&KResult) -> f64| {
            self.per_k
                .iter()
                .map(|r| format!("K={}: {:.1}", r.k, f(r)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let add = worst(|r| r.overhead_add_ms);
        let del = worst(|r| r.overhead_del_ms);
        t.push(Target {
            name: "median ADD overhead over the floor, every K".into(),
            limit: "≤ 8 ms".into(),
            measured: format!(
                "{} ms (of which one crash-safe cache write: {:.1} ms median on this disk)",
                per_k(|r| r.overhead_add_ms),
                self.cache_write.median_ms
            ),
            met: add.map(|(_, v)| v <= 8.0),
        });
        t.push(Target {
            name: "median DEL overhead over the floor, every K".into(),
            limit: "≤ 8 ms".into(),
            measured: format!("{} ms", per_k(|r| r.overhead_del_ms)),
            met: del.map(|(_, v)| v <= 8.0),
        });
        let rts: Vec<(usize, usize)> = self
            .per_k
            .iter()
            .filter_map(|r| r.round_trips.as_ref().map(|x| (r.k, x.sequential)))
            .collect();
        t.push(Target {
            name: "sequential API round trips per ADD, whatever K".into(),
            limit: "≤ 3".into(),
            measured: if rts.is_empty() {
                "not measured (stand-in only)".into()
            } else {
                rts.iter()
                    .map(|(k, n)| format!("K={k}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            met: (!rts.is_empty()).then(|| rts.iter().all(|(_, n)| *n <= 3)),
        });
        t.push(Target {
            name: "events off ADD's critical path".into(),
            limit: "ADD does not wait for event POSTs".into(),
            measured: match &self.events_probe {
                Some(p) => format!(
                    "{} ms injected into every event POST (K={}): ADD median {:.1} → {:.1} ms ({:+.1} ms)",
                    p.injected_ms, p.k, p.add_median_ms, p.add_median_with_ms, p.delta_ms
                ),
                None => "not measured (stand-in only)".into(),
            },
            met: self.events_probe.as_ref().map(|p| !p.on_critical_path),
        });
        let dels: Vec<usize> = self.per_k.iter().filter_map(|r| r.api_del_max).collect();
        t.push(Target {
            name: "API requests of a DEL with the cache present".into(),
            limit: "0".into(),
            measured: if dels.is_empty() {
                "not measured (stand-in only)".into()
            } else {
                format!("at most {}", dels.iter().max().copied().unwrap_or(0))
            },
            met: (!dels.is_empty()).then(|| dels.iter().all(|&n| n == 0)),
        });
        let rss = self
            .per_k
            .iter()
            .flat_map(|r| [r.peak_rss_add_kib, r.peak_rss_del_kib])
            .flatten()
            .max();
        t.push(Target {
            name: "peak RSS of the plexus process".into(),
            limit: "≤ 10 MiB".into(),
            measured: rss.map_or("not measured".into(), |k| {
                format!("{:.2} MiB ({k} KiB)", mib_kib(k))
            }),
            met: rss.map(|k| k <= 10 * 1024),
        });
        let size = self.binary.stripped_bytes.unwrap_or(self.binary.size_bytes);
        t.push(Target {
            name: "stripped release binary".into(),
            limit: "≤ 15 MiB".into(),
            measured: format!(
                "{:.2} MiB ({size} bytes){}",
                size as f64 / MIB,
                if self.binary.release_build {
                    ""
                } else {
                    " — not the bench's release build"
                }
            ),
            met: Some(size as f64 <= 15.0 * MIB),
        });
        t.push(Target {
            name: "unrelated NADs in the pod's namespace".into(),
            limit: "change ADD latency < 10 %".into(),
            measured: match &self.unrelated_nads {
                Some(n) => format!(
                    "{} NADs: median ADD {:.1} → {:.1} ms ({:+.1} %)",
                    n.unrelated, n.base.median_ms, n.with.median_ms, n.change_pct
                ),
                None => "not measured".into(),
            },
            met: self
                .unrelated_nads
                .as_ref()
                .map(|n| n.change_pct.abs() < 10.0),
        });
        t.push(Target {
            name: "burst: no failure, no leak".into(),
            limit: "0 failures, 0 leaks".into(),
            measured: match &self.burst {
                Some(b) => format!(
                    "{} pods: {} ADD failure(s), {} DEL failure(s), {} leak(s); {} leak(s) at the end",
                    b.pods,
                    b.failures.len(),
                    b.del_failures.len(),
                    b.leaks.len(),
                    self.final_leaks.len()
                ),
                None => "not measured".into(),
            },
            met: self.burst.as_ref().map(|b| {
                b.failures.is_empty()
                    && b.del_failures.is_empty()
                    && b.leaks.is_empty()
                    && self.final_leaks.is_empty()
            }),
        });
    }

    /// The markdown report.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(s, "## plexus-bench\n");
        let busy = self.busy_while_idle.0.max(self.busy_while_idle.1);
        if busy > 0.1 {
            let _ = writeln!(
                s,
                "**Other work kept the CPUs {:.0} % busy while the bench was idle: it skews every number.**\n",
                busy * 100.0
            );
        }
        let _ = writeln!(
            s,
            "- machine: {} CPUs, {}, kernel {}, {}",
            m.cpus, m.cpu_model, m.kernel, m.plugins
        );
        let _ = writeln!(
            s,
            "- one crash-safe cache write in `cniDir` (temp file, fsync, rename, directory fsync): median {:.2} ms, p90 {:.2} ms — ADD does one before its first delegate; the delegates' result records are written behind, overlapping the next delegate",
            self.cache_write.median_ms, self.cache_write.p90_ms
        );
        let _ = writeln!(
            s,
            "- plexus: `{}` — {}; {} bytes{}",
            self.binary.path.display(),
            self.binary.origin,
            self.binary.size_bytes,
            self.binary
                .stripped_bytes
                .map(|b| format!(" ({b} after `strip`)"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "- API server: {}; plexus authenticates as {} (deploy/'s ClusterRole)",
            self.api, self.plexus_user
        );
        if let Some(d) = &st_diag(self) {
            let _ = writeln!(s, "- **diagnostics on — not plexus's own numbers**: {d}");
        }
        let st = &self.settings;
        if !st.mode.thin() {
            let _ = writeln!(s);
            if let Some(d) = &self.daemon {
                daemon_markdown(&mut s, d, st);
            }
            if let Some(r) = &self.hotplug {
                let _ = writeln!(s);
                super::hotplug::markdown(&mut s, r);
            }
            if let Some(r) = &self.scale {
                let _ = writeln!(s);
                super::scale::markdown(&mut s, r);
            }
            self.markdown_end(&mut s);
            return s;
        }
        let _ = writeln!(
            s,
            "- {} measured runs (+{} warm-up) per K and variant, plexus and floor interleaved; peak RSS over {} traced ADD+DEL; round trips over {} ADD(s) with {} ms injected per request{}\n",
            st.runs,
            st.warmup,
            st.rss_runs,
            st.rt_runs,
            st.latency_ms,
            if st.quick { "; --quick" } else { "" }
        );
        let _ = writeln!(
            s,
            "| K | plexus ADD ms: median / p90 / min | floor ADD ms (median) | ADD overhead ms | plexus DEL ms: median / p90 / min | floor DEL ms (median) | DEL overhead ms | API requests / ADD | sequential round trips / ADD | API requests / DEL | peak RSS MiB (ADD / DEL) |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
        for r in &self.per_k {
            let api_add = match (&r.api_add, r.api_add_min) {
                (Some(c), Some(min)) if min != c.total => format!("{min}–{}", c.total),
                (Some(c), _) => c.total.to_string(),
                _ => "n/a".into(),
            };
            let rt = r
                .round_trips
                .as_ref()
                .map_or("n/a".into(), |x| x.sequential.to_string());
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                latency_cells(r),
                api_add,
                rt,
                r.api_del_max.map_or("n/a".into(), |n| n.to_string()),
                rss_cells(r),
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "- overhead as the median of per-run differences (each plexus run paired with the floor run next to it), ADD / DEL ms: {}",
            paired_overheads(&self.per_k)
        );
        for r in &self.per_k {
            if let Some(c) = &r.api_add {
                let _ = writeln!(s, "- K={}: ADD's requests: {}", r.k, c.breakdown());
            }
        }
        for r in &self.per_k {
            if let Some(x) = &r.round_trips {
                let _ = writeln!(
                    s,
                    "- K={}: with {} ms added to every API request, the longest chain of requests each sent after the previous one's answer was {} (most of {} ADDs); ADD's median grew {:.0} → {:.0} ms, ≈ {:.1} × {} ms",
                    r.k,
                    x.latency_ms,
                    x.sequential,
                    x.runs,
                    r.add.median_ms,
                    x.add_median_ms,
                    x.latencies_waited,
                    x.latency_ms
                );
            }
        }
        for r in &self.per_k {
            if let Some(m) = &r.memory_add {
                let _ = writeln!(
                    s,
                    "- K={}: plexus's ADD peaked at {:.2} MiB resident; at its exit {:.2} MiB anonymous (heap, stacks) and {:.2} MiB file-backed (its binary, libc)",
                    r.k,
                    mib_kib(m.peak_kib),
                    mib_kib(m.anon_kib),
                    mib_kib(m.file_kib)
                );
            }
        }
        if let Some(n) = self.forwarded_connections {
            let _ = writeln!(
                s,
                "- API requests are not counted against a real server (TLS passes the forwarder untouched); the forwarder accepted {n} connections in all"
            );
        }
        if let Some(p) = &self.events_probe {
            let _ = writeln!(
                s,
                "- events: with {} ms added to every event POST, K={} ADD's median went {:.1} → {:.1} ms ({:+.1} ms): {}",
                p.injected_ms,
                p.k,
                p.add_median_ms,
                p.add_median_with_ms,
                p.delta_ms,
                if p.on_critical_path {
                    "ADD waits for its events"
                } else {
                    "ADD does not wait for its events"
                }
            );
        }
        if let Some(n) = &self.unrelated_nads {
            let _ = writeln!(
                s,
                "- {} unrelated NADs in the pod's namespace (K={}): ADD median / p90 {:.1} / {:.1} ms without, {:.1} / {:.1} ms with: {:+.1} %",
                n.unrelated,
                n.k,
                n.base.median_ms,
                n.base.p90_ms,
                n.with.median_ms,
                n.with.p90_ms,
                n.change_pct
            );
        }
        if let Some(b) = &self.burst {
            let _ = writeln!(
                s,
                "- burst: {} pods (K={}) at once: all ADDs done in {:.0} ms; per pod p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {} ADD failure(s); concurrent DEL of all in {:.0} ms, {} failure(s); leaks: {}",
                b.pods,
                b.k,
                b.wall_ms,
                b.per_pod.map_or(0.0, |x| x.median_ms),
                b.per_pod.map_or(0.0, |x| x.p99_ms),
                b.per_pod.map_or(0.0, |x| x.max_ms),
                b.failures.len(),
                b.del_wall_ms,
                b.del_failures.len(),
                if b.leaks.is_empty() {
                    "none".to_string()
                } else {
                    b.leaks.join("; ")
                }
            );
            for f in b.failures.iter().chain(&b.del_failures).take(5) {
                let _ = writeln!(s, "  - {f}");
            }
        }
        if let Some(first) = self.profile.first() {
            let _ = writeln!(
                s,
                "\nWhere plexus's time goes (medians, ms; from its debug log, which costs a little itself):\n"
            );
            let _ = write!(s, "| phase |");
            for b in &self.profile {
                let _ = write!(s, " K={} {} |", b.k, b.op);
            }
            let _ = writeln!(s);
            let _ = writeln!(s, "|---|{}", "---|".repeat(self.profile.len()));
            for (i, (name, _)) in first.phases.iter().enumerate() {
                let _ = write!(s, "| {name} |");
                for b in &self.profile {
                    let v = b.phases.get(i).map_or(f64::NAN, |(_, v)| *v);
                    let _ = write!(s, " {v:.1} |");
                }
                let _ = writeln!(s);
            }
            let _ = writeln!(s);
        }
        self.versus_markdown(&mut s);
        if let Some(d) = &self.daemon {
            let _ = writeln!(s);
            daemon_markdown(&mut s, d, st);
        }
        if let Some(r) = &self.hotplug {
            let _ = writeln!(s);
            super::hotplug::markdown(&mut s, r);
        }
        if let Some(r) = &self.scale {
            let _ = writeln!(s);
            super::scale::markdown(&mut s, r);
        }
        self.markdown_end(&mut s);
        s
    }

    /// `--baseline`: the two thin binaries side by side.
    fn versus_markdown(&self, s: &mut String) {
        let Some(base) = &self.baseline else {
            return;
        };
        let size = |b: &Binary| match b.stripped_bytes {
            Some(x) => format!("{} bytes, {x} stripped ({:.2} MiB)", b.size_bytes, mib(x)),
            None => format!("{} bytes", b.size_bytes),
        };
        let _ = writeln!(
            s,
            "\n### Against the baseline\n\n- baseline `{}`: {}\n- measured `{}`: {}\n- per K, one ADD and DEL of each binary and of the floor per round, the order rotating every round; \
             overheads and differences are medians of per-round differences\n",
            base.path.display(),
            size(base),
            self.binary.path.display(),
            size(&self.binary),
        );
        let _ = writeln!(
            s,
            "| K | ADD ms, median: baseline / measured / floor | ADD overhead ms (paired): baseline / measured | measured − baseline ADD ms (paired) | DEL ms, median: baseline / measured / floor | measured − baseline DEL ms (paired) | ADD peak RSS MiB: baseline / measured |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        for v in &self.versus {
            let rss = |k: Option<u64>| k.map_or("n/a".into(), |k| format!("{:.2}", mib_kib(k)));
            let _ = writeln!(
                s,
                "| {} | {:.1} / {:.1} / {:.1} | {:+.1} / {:+.1} | {:+.2} | {:.1} / {:.1} / {:.1} | {:+.2} | {} / {} |",
                v.k,
                v.base_add.median_ms,
                v.head_add.median_ms,
                v.floor_add.median_ms,
                v.base_overhead_add_ms,
                v.head_overhead_add_ms,
                v.head_minus_base_add_ms,
                v.base_del.median_ms,
                v.head_del.median_ms,
                v.floor_del.median_ms,
                v.head_minus_base_del_ms,
                rss(v.base_peak_rss_add_kib),
                rss(v.head_peak_rss_add_kib),
            );
        }
    }

    /// The final leaks, the targets and the wall time.
    fn markdown_end(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "- leaks after every phase: {}",
            if self.final_leaks.is_empty() {
                "none".to_string()
            } else {
                self.final_leaks.join("; ")
            }
        );
        let _ = writeln!(
            s,
            "\n| target | limit | measured | met |\n|---|---|---|---|"
        );
        for t in &self.targets {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                t.name,
                t.limit,
                t.measured,
                match t.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "n/a",
                }
            );
        }
        let _ = writeln!(
            s,
            "\n(bench wall time {:.0} s, after {:.0} s getting the plexus binary; CPUs {:.0} % busy with other work before measuring, {:.0} % at the end)",
            self.seconds,
            self.build_seconds,
            self.busy_while_idle.0 * 100.0,
            self.busy_while_idle.1 * 100.0
        );
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

fn opt_mib(v: Option<u64>) -> String {
    v.map_or("n/a".into(), |b| format!("{:.1}", mib(b)))
}

/// Issue 8's targets for the daemon mode.
fn evaluate_daemon(d: &DaemonReport, standin: bool, t: &mut Vec<Target>) {
    let per_k = |f: fn(&KResult) -> f64| {
        d.per_k
            .iter()
            .map(|r| format!("K={}: {:.1}", r.k, f(r)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Decided call by call (the call minus the delegates it ran): the floor comparison subtracts two
    // samples of the delegates' own spread, several ms on a small VM, from each other.
    let calls: Vec<(usize, f64)> = d
        .per_k
        .iter()
        .zip(&d.per_call)
        .filter(|(_, (add, _))| add.calls > 0)
        .map(|(r, (add, _))| (r.k, add.over_delegates_ms))
        .collect();
    let worst_add = calls
        .iter()
        .map(|(_, v)| *v)
        .max_by(f64::total_cmp)
        .filter(|_| calls.len() == d.per_k.len());
    t.push(Target {
        name: "daemon mode: median ADD overhead, every K".into(),
        limit: "≤ 3 ms".into(),
        measured: format!(
            "call by call, the call minus the delegates it ran: {} ms; against the floor: {} ms (paired: {} ms)",
            calls
                .iter()
                .map(|(k, v)| format!("K={k}: {v:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
            per_k(|r| r.overhead_add_ms),
            per_k(|r| r.overhead_add_paired_ms)
        ),
        met: worst_add.map(|v| v <= 3.0),
    });
    let rss = d
        .per_k
        .iter()
        .flat_map(|r| [r.peak_rss_add_kib, r.peak_rss_del_kib])
        .flatten()
        .max();
    let size = d.shim.stripped_bytes.unwrap_or(d.shim.size_bytes);
    t.push(Target {
        name: "daemon mode: peak RSS of the shim process".into(),
        limit: "≤ 4 MiB".into(),
        measured: rss.map_or("not measured".into(), |k| {
            format!(
                "{:.2} MiB ({k} KiB); shim binary {:.2} MiB stripped{}",
                mib_kib(k),
                size as f64 / MIB,
                if d.shim.release_build {
                    ""
                } else {
                    " — not the bench's release build"
                }
            )
        }),
        met: rss.map(|k| k <= 4 * 1024),
    });
    let reads: Vec<(usize, usize)> = d
        .per_k
        .iter()
        .filter_map(|r| r.api_add_reads_max.map(|n| (r.k, n)))
        .collect();
    t.push(Target {
        name: "daemon mode: API reads per ADD in steady state".into(),
        limit: "0".into(),
        measured: if reads.is_empty() || !standin {
            "not measured (stand-in only)".into()
        } else {
            format!(
                "at most {} ({}); daemon cache misses: {}",
                reads.iter().map(|(_, n)| *n).max().unwrap_or(0),
                reads
                    .iter()
                    .map(|(k, n)| format!("K={k}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                d.lookups.map_or("n/a".into(), |l| format!(
                    "{} of {}",
                    l.misses,
                    l.hits + l.misses
                ))
            )
        },
        met: (!reads.is_empty() && standin).then(|| reads.iter().all(|(_, n)| *n == 0)),
    });
    t.push(Target {
        name: "daemon mode: storm after a daemon restart, daemon in a memory-limited cgroup".into(),
        limit: "no failure (and no OOM kill, no leak) under 64 MiB".into(),
        measured: match &d.storm {
            None => "not measured".into(),
            Some(s) => {
                let mut m = format!(
                    "{} pods (K={}): {} ADD failure(s), {} DEL failure(s), {} leak(s)",
                    s.pods,
                    s.k,
                    s.failures.len(),
                    s.del_failures.len(),
                    s.leaks.len()
                );
                match (&s.cgroup, &s.cgroup_unavailable) {
                    (Some(c), _) => {
                        let _ = write!(
                            m,
                            "; limit {:.0} MiB, OOM kills {}, peak usage {} MiB (anonymous {} MiB), daemon VmHWM {}",
                            mib(c.limit_bytes),
                            c.oom_kills.map_or("n/a".into(), |n| n.to_string()),
                            opt_mib(c.max_usage_bytes),
                            opt_mib(c.peak_rss_bytes),
                            s.daemon_memory
                                .map_or("n/a".into(), |m| format!("{:.1} MiB", mib_kib(m.peak_kib)))
                        );
                    }
                    (None, why) => {
                        let _ = write!(
                            m,
                            "; **no memory limit**: {}",
                            why.as_deref().unwrap_or("no cgroup")
                        );
                    }
                }
                m
            }
        },
        met: d.storm.as_ref().and_then(|s| {
            let c = s.cgroup.as_ref()?;
            Some(
                s.failures.is_empty()
                    && s.del_failures.is_empty()
                    && s.leaks.is_empty()
                    && s.daemon_survived
                    && c.oom_kills == Some(0)
                    && c.limit_bytes <= 64 * 1024 * 1024,
            )
        }),
    });
}

/// The daemon-mode section of the markdown report.
fn daemon_markdown(s: &mut String, d: &DaemonReport, st: &Settings) {
    let _ = writeln!(
        s,
        "### daemon mode: the runtime runs plexus-shim, plexus daemon serves it\n"
    );
    let _ = writeln!(
        s,
        "- shim: `{}` — {}; {} bytes{}; answering VERSION by itself (exec to exit, no daemon; after the per-K runs, interleaved with `/bin/true` exec'd the same way): median {} ms, p90 {} ms (`/bin/true`: median {} ms); a `GET /readyz` round trip on the daemon's socket from the bench (connect, request, reply, close; no CNI work): median {} ms",
        d.shim.path.display(),
        d.shim.origin,
        d.shim.size_bytes,
        d.shim
            .stripped_bytes
            .map(|b| format!(" ({b} after `strip`)"))
            .unwrap_or_default(),
        d.shim_version
            .map_or("n/a".into(), |v| format!("{:.2}", v.median_ms)),
        d.shim_version
            .map_or("n/a".into(), |v| format!("{:.2}", v.p90_ms)),
        d.exec_baseline
            .map_or("n/a".into(), |v| format!("{:.2}", v.median_ms)),
        d.socket_round_trip
            .map_or("n/a".into(), |v| format!("{:.2}", v.median_ms)),
    );
    let _ = writeln!(
        s,
        "- daemon: `plexus daemon` (the plexus binary above) in the host netns, {}, logLevel error; started after {:.0} s waiting for the CPUs to go quiet ({:.0} % busy in the last second); ready {:.0} ms after its start; after the per-K runs: {}",
        if d.daemon_config.is_empty() {
            "its default limits (maxConcurrency: the cores; maxDelConcurrency)".to_string()
        } else {
            format!(
                "with {} laid over its config",
                serde_json::Value::Object(d.daemon_config.clone())
            )
        },
        d.settled.0,
        d.settled.1 * 100.0,
        d.ready_after_ms,
        d.memory_steady.map_or("n/a".into(), |m| format!(
            "VmHWM {:.1} MiB, resident now {:.1} MiB anonymous + {:.1} MiB file-backed",
            mib_kib(m.peak_kib),
            mib_kib(m.anon_kib),
            mib_kib(m.file_kib)
        ))
    );
    let _ = writeln!(
        s,
        "- {} measured runs (+{} warm-up) per K, shim and floor interleaved, the floor as in thin mode; before each ADD (unmeasured) the pod and its NADs are confirmed in the daemon's caches (`GET /cache/...`); shim peak RSS over {} traced ADD+DEL; API requests counted at the stand-in without the daemon's watches\n",
        st.runs, st.warmup, st.rss_runs
    );
    let _ = writeln!(
        s,
        "| K | daemon ADD ms: median / p90 / min | floor ADD ms (median) | ADD overhead ms | daemon DEL ms: median / p90 / min | floor DEL ms (median) | DEL overhead ms | API reads / ADD | PATCH / ADD | event POSTs / ADD | API requests / DEL | shim peak RSS MiB (ADD / DEL) |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    let na = || "n/a".to_string();
    for r in &d.per_k {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            latency_cells(r),
            r.api_add_reads_max.map_or(na(), |n| n.to_string()),
            r.api_add
                .as_ref()
                .map_or(na(), |c| c.patch_status.to_string()),
            r.api_add.as_ref().map_or(na(), |c| c.events.to_string()),
            r.api_del_max.map_or(na(), |n| n.to_string()),
            rss_cells(r),
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "- overhead as the median of per-run differences (each shim run paired with the floor run next to it), ADD / DEL ms: {}",
        paired_overheads(&d.per_k)
    );
    for r in &d.per_k {
        if let Some(c) = &r.api_add {
            let _ = writeln!(
                s,
                "- K={}: ADD's requests (the most of any run): {}",
                r.k,
                c.breakdown()
            );
        }
    }
    for (r, (add, del)) in d.per_k.iter().zip(&d.splits) {
        if add.calls == 0 {
            continue;
        }
        let _ = writeln!(
            s,
            "- K={}: where the time goes (means over the {} measured ADDs / {} DELs; the daemon's side from its own histograms): the runtime's call {:.1} / {:.1} ms = shim and socket {:.1} / {:.1} + the daemon's handling {:.1} / {:.1}, of which its delegates {:.1} / {:.1} (the floor's delegates, run by the bench: {:.1} / {:.1}) and its own work {:.1} / {:.1}",
            r.k,
            add.calls,
            del.calls,
            r.add.mean_ms,
            r.del.mean_ms,
            r.add.mean_ms - add.daemon_ms,
            r.del.mean_ms - del.daemon_ms,
            add.daemon_ms,
            del.daemon_ms,
            add.delegates_ms,
            del.delegates_ms,
            r.floor_add.mean_ms,
            r.floor_del.mean_ms,
            add.daemon_ms - add.delegates_ms,
            del.daemon_ms - del.delegates_ms,
        );
    }
    for (r, (add, del)) in d.per_k.iter().zip(&d.per_call) {
        if add.calls == 0 {
            continue;
        }
        let _ = writeln!(
            s,
            "- K={}: call by call (medians over {} ADDs / {} DELs, each against the daemon's histograms scraped just before and after it): shim and socket {:.2} / {:.2} ms, the daemon's own work {:.2} / {:.2}, its delegates {:.1} / {:.1} (the floor's median: {:.1} / {:.1}); **the call minus its delegates {:.2} / {:.2}**",
            r.k,
            add.calls,
            del.calls,
            add.shim_and_socket_ms,
            del.shim_and_socket_ms,
            add.own_work_ms,
            del.own_work_ms,
            add.delegates_ms,
            del.delegates_ms,
            r.floor_add.median_ms,
            r.floor_del.median_ms,
            add.over_delegates_ms,
            del.over_delegates_ms,
        );
    }
    if let Some(l) = d.lookups {
        let _ = writeln!(
            s,
            "- the daemon's own counters over the per-K runs: {} pod/NAD lookups answered by its caches, {} sent to the API",
            l.hits, l.misses
        );
    }
    for r in &d.per_k {
        if let Some(m) = &r.memory_add {
            let _ = writeln!(
                s,
                "- K={}: the shim's ADD peaked at {:.2} MiB resident; at its exit {:.2} MiB anonymous and {:.2} MiB file-backed",
                r.k,
                mib_kib(m.peak_kib),
                mib_kib(m.anon_kib),
                mib_kib(m.file_kib)
            );
        }
    }
    if !d.leaks.is_empty() {
        let _ = writeln!(s, "- leaks after the per-K runs: {}", d.leaks.join("; "));
    }
    if let Some(x) = &d.storm {
        let limit = match (&x.cgroup, &x.cgroup_unavailable) {
            (Some(c), _) => format!(
                "inside memory cgroup `{}` limited to {:.0} MiB",
                c.path,
                mib(c.limit_bytes)
            ),
            (None, why) => format!(
                "**without a memory limit** ({})",
                why.as_deref().unwrap_or("no cgroup")
            ),
        };
        let ps = |v: &Option<Stats>| {
            v.map_or(na(), |p| {
                format!(
                    "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                    p.median_ms, p.p99_ms, p.max_ms
                )
            })
        };
        let _ = writeln!(
            s,
            "- storm: the daemon restarted (previous one's exit after SIGTERM: {}) {limit}, and right after its start {} pods (K={}) ADDed at once through the shim: all done in {:.0} ms (the daemon ready {} after its start); per pod {}; {} ADD failure(s); API requests while the ADDs ran (LISTs: the watch caches' initial lists; GETs: pods or NADs read before the caches had them): {}; concurrent DEL of all in {:.0} ms (the daemon's work after their replies ended {}), per pod {}, {} failure(s), {} API read(s)",
            x.previous_exit,
            x.pods,
            x.k,
            x.wall_ms,
            x.ready_after_ms
                .map_or("n/a".into(), |v| format!("{v:.0} ms")),
            ps(&x.per_pod),
            x.failures.len(),
            x.api_add.breakdown(),
            x.del_wall_ms,
            x.del_drained_ms
                .map_or("n/a".into(), |v| format!("at {v:.0} ms")),
            ps(&x.del_per_pod),
            x.del_failures.len(),
            x.del_api_reads
        );
        if let Some(c) = &x.cgroup {
            let _ = writeln!(
                s,
                "- storm memory: cgroup peak usage (`memory.max_usage_in_bytes`: anonymous memory, page cache and kernel memory charged to it, the delegates' included) {} MiB, of which kernel memory peaked at {} MiB (`memory.kmem.max_usage_in_bytes`); after the last ADD: usage {}, anonymous {}, page cache {}, kernel {} MiB; after the last DEL: usage {}, anonymous {}, page cache {}, kernel {} MiB; peak anonymous memory (`total_rss`, sampled every 10 ms) {} MiB; limit hit (`memory.failcnt`) {} times; OOM kills {}; the daemon's own peak RSS (VmHWM) {}; daemon still running afterwards: {}; its exit after SIGTERM: {}",
                opt_mib(c.max_usage_bytes),
                opt_mib(c.kmem_max_usage_bytes),
                opt_mib(c.after_add.map(|a| a.usage_bytes)),
                opt_mib(c.after_add.map(|a| a.rss_bytes)),
                opt_mib(c.after_add.map(|a| a.cache_bytes)),
                opt_mib(c.after_add.map(|a| a.kmem_bytes)),
                opt_mib(c.after_del.map(|a| a.usage_bytes)),
                opt_mib(c.after_del.map(|a| a.rss_bytes)),
                opt_mib(c.after_del.map(|a| a.cache_bytes)),
                opt_mib(c.after_del.map(|a| a.kmem_bytes)),
                opt_mib(c.peak_rss_bytes),
                c.failcnt.map_or(na(), |n| n.to_string()),
                c.oom_kills.map_or(na(), |n| n.to_string()),
                x.daemon_memory
                    .map_or(na(), |m| format!("{:.1} MiB", mib_kib(m.peak_kib))),
                if x.daemon_survived { "yes" } else { "**no**" },
                x.exit
            );
        }
        let _ = writeln!(
            s,
            "- storm leaks: {}",
            if x.leaks.is_empty() {
                "none".to_string()
            } else {
                x.leaks.join("; ")
            }
        );
        for f in x.failures.iter().chain(&x.del_failures).take(5) {
            let _ = writeln!(s, "  - {f}");
        }
    }
    let _ = writeln!(s);
}
