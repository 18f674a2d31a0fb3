//! Command-line options.

use std::path::PathBuf;

/// The usage text.
pub const USAGE: &str = "usage: plexus-bench [--quick] [--mode thin|daemon|both] [--runs N] [--warmup N] [--ks 0,1,3,8]
                    [--burst PODS] [--unrelated-nads N] [--rss-runs N] [--rt-runs N] [--latency-ms MS]
                    [--storm PODS] [--storm-memory-mib MIB] [--daemon-config JSON] [--json PATH]
                    [--scale LIST] [--scale-pods N] [--fanout-names N] [--baseline-daemon PATH]
                    [--baseline PATH] [--hotplug-runs N]

Measures plexus (ADD/DEL latency against the bare delegates, API requests and round trips, peak RSS,
binary size, a concurrent burst, the effect of unrelated NADs) on real network namespaces with
Debian's CNI plugins; in daemon mode (issue 8) the same latency rows with the runtime calling
plexus-shim and `plexus daemon` serving it, API reads per ADD, the shim's peak RSS and size, and a
storm of pods right after a daemon restart with the daemon in a memory-limited cgroup. Needs root.
The plexus binary is E2E_PLEXUS_BIN when set, else the bench builds it as it ships, with
`cargo build --profile release-thin -p plexus --bin plexus` (the root Cargo.toml); the daemon is
E2E_DAEMON_BIN or `cargo build --release -p plexus --bin plexus-daemon`; the shim likewise is
E2E_SHIM_BIN or, linked statically as it ships,
`cargo rustc --release -p plexus-shim --bin plexus-shim -- -C target-feature=+crt-static -C relocation-model=static`.
The API server is an in-process stand-in (listening on loopback inside the bench's host namespace),
or the real one named by E2E_KUBECONFIG.

  --mode MODE         thin (the plexus binary per call), daemon (plexus-shim + plexus daemon) or
                      both (default)

  --runs N            measured runs per K and per variant (default 30; --quick: 5)
  --warmup N          unmeasured runs first (default 3; --quick: 1)
  --ks LIST           numbers of secondary networks (default 0,1,3,8; at most 8)
  --burst PODS        pods started concurrently, K=3 (default 50; --quick: 8; 0 skips)
  --unrelated-nads N  unrelated NADs for the list-cost check (default 1000; --quick: 100; 0 skips)
  --rss-runs N        ptrace'd runs per K for peak RSS (default 3; --quick: 1)
  --rt-runs N         runs per K with injected API latency, for round trips (default 3; --quick: 1)
  --latency-ms MS     the latency injected for the round-trip count (default 50)
  --storm PODS        daemon mode: pods (K=3) ADDed at once right after a daemon restart (default 200;
                      --quick: 10; 0 skips; at most 250)
  --storm-memory-mib MIB  the daemon's cgroup memory limit during the storm (default 64)
  --daemon-config JSON  daemon mode: keys laid over the daemon config the bench writes, e.g.
                      '{\"maxConcurrency\":2}' (one limit of 2 for every verb: the defaults before DEL had
                      slots of its own, on 2 cores) or '{\"maxDelConcurrency\":50}'
  --scale LIST        daemon mode: NADs in the cluster for the scale phase (issue 20; stand-in only),
                      ascending (default 1000,10000,50000; --quick: 100; 0 skips): the daemon started
                      fresh at each, its start-to-ready time and memory, ADD of a K=3 pod
  --scale-pods N      pods on the node in the scale phase, selecting 3 NADs each (default 250; --quick: 4)
  --fanout-names N    the scale phase first ADDs a pod naming N NADs that do not exist, in thin mode and
                      through each daemon, and counts its API requests (default 1000; --quick: 20; 0 skips)
  --hotplug-runs N    daemon mode: hot-plug runs (issue 18): a K=1 pod's networks annotation patched to add
                      a second network, then to remove it, timed to the interface present (gone); then
                      the idle cost of annotation-neutral patches (default 30; --quick: 3; 0 skips)
  --baseline-daemon PATH  another plexus-daemon binary measured in the scale phase beside this build's
                      (an older build: old and new in one paired run)
  --baseline PATH     thin mode: also measure this other plexus binary (e.g. a build of the commit a change
                      starts from) in the same run: per K, its ADD and DEL interleaved with the measured
                      plexus's and the floor's, the per-run differences, and both peak RSS
  --json PATH         also write the results as JSON
  --quick             a smoke run: small defaults for everything not given

Diagnostics (they change what is measured; for profiling only):
  --wrap CMD          run plexus as `CMD <plexus>` (split on whitespace), e.g. 'strace -ff -tt -o /tmp/st'
  --plexus-log PATH   plexus logs at debug level to PATH (the daemon to PATH.daemon)";

/// Which plexus is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The thin binary, one process per call.
    Thin,
    /// `plexus daemon` behind `plexus-shim`.
    Daemon,
    /// Both, thin first.
    Both,
}

impl Mode {
    /// Whether the thin rows are measured.
    pub fn thin(self) -> bool {
        matches!(self, Mode::Thin | Mode::Both)
    }
    /// Whether the daemon rows are measured.
    pub fn daemon(self) -> bool {
        matches!(self, Mode::Daemon | Mode::Both)
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opts {
    /// Thin, daemon or both.
    pub mode: Mode,
    /// Measured runs per K.
    pub runs: usize,
    /// Warm-up runs per K.
    pub warmup: usize,
    /// The Ks.
    pub ks: Vec<usize>,
    /// Burst size (0: skip).
    pub burst: usize,
    /// Unrelated NADs (0: skip).
    pub unrelated_nads: usize,
    /// Traced runs per K for the peak RSS.
    pub rss_runs: usize,
    /// Runs per K with injected latency.
    pub rt_runs: usize,
    /// The injected latency.
    pub latency_ms: u64,
    /// Pods in the daemon-mode storm (0: skip).
    pub storm: usize,
    /// The daemon's memory limit during the storm, MiB.
    pub storm_memory_mib: u64,
    /// `--daemon-config`: keys laid over the daemon's config.
    pub daemon_config: serde_json::Map<String, serde_json::Value>,
    /// The scale phase's numbers of NADs, ascending (empty: skipped).
    pub scale: Vec<usize>,
    /// Pods on the node in the scale phase.
    pub scale_pods: usize,
    /// Names in the scale phase's long annotation (0: skipped).
    pub fanout_names: usize,
    /// Hot-plug attach/detach runs (0: the hot-plug phase is skipped).
    pub hotplug_runs: usize,
    /// A daemon binary measured beside this build's in the scale phase.
    pub baseline_daemon: Option<PathBuf>,
    /// Where to write JSON.
    pub json: Option<PathBuf>,
    /// `--quick`.
    pub quick: bool,
    /// `--wrap`: a command plexus runs under.
    pub wrap: Option<String>,
    /// `--plexus-log`.
    pub plexus_log: Option<PathBuf>,
    /// `--baseline`: another plexus binary compared in thin mode.
    pub baseline: Option<PathBuf>,
    /// `--help`.
    pub help: bool,
}

/// The most secondary networks a K may ask for.
pub const MAX_K: usize = 8;
/// The most pods a storm may have (each network's /24 holds 253 addresses).
pub const MAX_STORM: usize = 250;

impl Opts {
    /// Parse the arguments (without the program name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Opts, String> {
        let mut it = args.into_iter();
        let (mut runs, mut warmup, mut burst, mut nads, mut rss, mut rt, mut storm) =
            (None, None, None, None, None, None, None);
        let mut mode = Mode::Both;
        let mut storm_memory_mib = 64;
        let mut daemon_config = serde_json::Map::new();
        let mut ks = vec![0, 1, 3, 8];
        let mut latency_ms = 50;
        let mut json = None;
        let (mut scale, mut scale_pods, mut fanout_names, mut baseline_daemon) =
            (None::<Vec<usize>>, None, None, None);
        let (mut wrap, mut plexus_log, mut baseline) = (None, None, None);
        let mut hotplug_runs = None;
        let (mut quick, mut help) = (false, false);
        let num = |flag: &str, v: Option<String>| -> Result<usize, String> {
            v.ok_or_else(|| format!("{flag} needs a value"))?
                .parse::<usize>()
                .map_err(|e| format!("{flag}: {e}"))
        };
        while let Some(a) = it.next() {
            match a.as_str() {
                "--runs" => runs = Some(num("--runs", it.next())?),
                "--warmup" => warmup = Some(num("--warmup", it.next())?),
                "--burst" => burst = Some(num("--burst", it.next())?),
                "--unrelated-nads" => nads = Some(num("--unrelated-nads", it.next())?),
                "--rss-runs" => rss = Some(num("--rss-runs", it.next())?),
                "--rt-runs" => rt = Some(num("--rt-runs", it.next())?),
                "--latency-ms" => latency_ms = num("--latency-ms", it.next())? as u64,
                "--storm" => storm = Some(num("--storm", it.next())?),
                "--storm-memory-mib" => {
                    storm_memory_mib = num("--storm-memory-mib", it.next())? as u64
                }
                "--mode" => {
                    mode = match it.next().as_deref() {
                        Some("thin") => Mode::Thin,
                        Some("daemon") => Mode::Daemon,
                        Some("both") => Mode::Both,
                        Some(other) => {
                            return Err(format!("--mode: {other:?} is not thin, daemon or both"));
                        }
                        None => return Err("--mode needs a value".into()),
                    }
                }
                "--ks" => {
                    let v = it.next().ok_or("--ks needs a value")?;
                    ks = v
                        .split(',')
                        .map(|k| k.trim().parse::<usize>().map_err(|e| format!("--ks: {e}")))
                        .collect::<Result<_, _>>()?;
                }
                "--daemon-config" => {
                    let v = it.next().ok_or("--daemon-config needs a JSON object")?;
                    match serde_json::from_str(&v) {
                        Ok(serde_json::Value::Object(m)) => daemon_config = m,
                        _ => return Err(format!("--daemon-config: {v:?} is not a JSON object")),
                    }
                }
                "--json" => json = Some(PathBuf::from(it.next().ok_or("--json needs a path")?)),
                "--scale" => {
                    let v = it.next().ok_or("--scale needs a value")?;
                    let mut list: Vec<usize> = v
                        .split(',')
                        .map(|n| {
                            n.trim()
                                .parse::<usize>()
                                .map_err(|e| format!("--scale: {e}"))
                        })
                        .collect::<Result<_, _>>()?;
                    list.retain(|&n| n > 0);
                    scale = Some(list);
                }
                "--scale-pods" => scale_pods = Some(num("--scale-pods", it.next())?),
                "--fanout-names" => fanout_names = Some(num("--fanout-names", it.next())?),
                "--hotplug-runs" => hotplug_runs = Some(num("--hotplug-runs", it.next())?),
                "--baseline-daemon" => {
                    baseline_daemon = Some(PathBuf::from(
                        it.next().ok_or("--baseline-daemon needs a path")?,
                    ))
                }
                "--wrap" => wrap = Some(it.next().ok_or("--wrap needs a command")?),
                "--plexus-log" => {
                    plexus_log = Some(PathBuf::from(it.next().ok_or("--plexus-log needs a path")?))
                }
                "--baseline" => {
                    baseline = Some(PathBuf::from(it.next().ok_or("--baseline needs a path")?))
                }
                "--quick" => quick = true,
                "-h" | "--help" => help = true,
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if ks.is_empty() || ks.iter().any(|&k| k > MAX_K) {
            return Err(format!("--ks: each K must be 0..={MAX_K}"));
        }
        ks.sort_unstable();
        ks.dedup();
        let pick = |v: Option<usize>, full: usize, small: usize| {
            v.unwrap_or(if quick { small } else { full })
        };
        let opts = Opts {
            mode,
            storm: pick(storm, 200, 10),
            storm_memory_mib,
            daemon_config,
            runs: pick(runs, 30, 5),
            warmup: pick(warmup, 3, 1),
            ks,
            burst: pick(burst, 50, 8),
            unrelated_nads: pick(nads, 1000, 100),
            rss_runs: pick(rss, 3, 1),
            rt_runs: pick(rt, 3, 1),
            latency_ms,
            scale: scale.unwrap_or_else(|| {
                if quick {
                    vec![100]
                } else {
                    vec![1000, 10_000, 50_000]
                }
            }),
            scale_pods: pick(scale_pods, 250, 4),
            fanout_names: pick(fanout_names, 1000, 20),
            hotplug_runs: pick(hotplug_runs, 30, 3),
            baseline_daemon,
            json,
            quick,
            wrap,
            plexus_log,
            baseline,
            help,
        };
        if opts.baseline.is_some() && (!opts.mode.thin() || opts.wrap.is_some()) {
            return Err(
                "--baseline compares thin binaries: it needs thin mode and no --wrap".into(),
            );
        }
        if opts.storm > MAX_STORM {
            return Err(format!("--storm: at most {MAX_STORM} pods"));
        }
        if opts.storm_memory_mib < 8 {
            return Err("--storm-memory-mib must be at least 8".into());
        }
        let mut sorted = opts.scale.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted != opts.scale {
            return Err("--scale: give each number once, ascending".into());
        }
        if let Some(&first) = opts.scale.first()
            && first < MAX_K + super::scale::SCALE_K * opts.scale_pods
        {
            return Err(format!(
                "--scale: at least {} NADs (the bench's {MAX_K} and {} for --scale-pods {})",
                MAX_K + super::scale::SCALE_K * opts.scale_pods,
                super::scale::SCALE_K * opts.scale_pods,
                opts.scale_pods
            ));
        }
        if opts.fanout_names > plexus::pure::annotations::MAX_ELEMENTS {
            return Err(format!(
                "--fanout-names: at most {} (the annotation's own limit)",
                plexus::pure::annotations::MAX_ELEMENTS
            ));
        }
        if opts.runs == 0 {
            return Err("--runs must be at least 1".into());
        }
        if opts.latency_ms < 10 {
            return Err(
                "--latency-ms must be at least 10 (the request log has millisecond resolution)"
                    .into(),
            );
        }
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Opts, String> {
        Opts::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn mode_and_storm() {
        let o = parse(&[]).unwrap();
        assert_eq!((o.mode, o.storm, o.storm_memory_mib), (Mode::Both, 200, 64));
        assert!(o.mode.thin() && o.mode.daemon());
        let o = parse(&["--quick", "--mode", "daemon"]).unwrap();
        assert_eq!((o.mode, o.storm, o.runs), (Mode::Daemon, 10, 5));
        assert!(!o.mode.thin() && o.mode.daemon());
        let o = parse(&["--mode", "thin", "--storm", "0"]).unwrap();
        assert!(o.mode.thin() && !o.mode.daemon());
        assert_eq!(o.storm, 0);
        assert!(parse(&["--mode", "thick"]).is_err());
        assert!(parse(&["--mode"]).is_err());
        assert!(parse(&["--storm", "251"]).is_err());
        assert!(parse(&["--storm-memory-mib", "4"]).is_err());
    }

    #[test]
    fn scale_phase_options() {
        let o = parse(&[]).unwrap();
        assert_eq!(
            (o.scale.clone(), o.scale_pods, o.fanout_names),
            (vec![1000, 10_000, 50_000], 250, 1000)
        );
        let o = parse(&["--quick"]).unwrap();
        assert_eq!(
            (o.scale.clone(), o.scale_pods, o.fanout_names),
            (vec![100], 4, 20)
        );
        let o = parse(&["--scale", "0"]).unwrap();
        assert!(o.scale.is_empty(), "0 skips");
        let o = parse(&["--baseline-daemon", "/tmp/old", "--scale", "800,2000"]).unwrap();
        assert_eq!(o.baseline_daemon, Some(PathBuf::from("/tmp/old")));
        assert!(parse(&["--scale", "2000,800"]).is_err(), "ascending");
        assert!(
            parse(&["--scale", "100"]).is_err(),
            "room for 250 pods' NADs"
        );
        assert!(parse(&["--fanout-names", "1025"]).is_err());
    }

    #[test]
    fn hotplug_runs() {
        assert_eq!(parse(&[]).unwrap().hotplug_runs, 30);
        assert_eq!(parse(&["--quick"]).unwrap().hotplug_runs, 3);
        assert_eq!(
            parse(&["--hotplug-runs", "0"]).unwrap().hotplug_runs,
            0,
            "0 skips"
        );
        assert_eq!(
            parse(&["--quick", "--hotplug-runs", "12"])
                .unwrap()
                .hotplug_runs,
            12
        );
        assert!(parse(&["--hotplug-runs"]).is_err());
        assert!(parse(&["--hotplug-runs", "-1"]).is_err());
        assert!(parse(&["--hotplug-runs", "many"]).is_err());
    }

    #[test]
    fn daemon_config_is_an_object() {
        assert!(parse(&[]).unwrap().daemon_config.is_empty());
        let o = parse(&["--daemon-config", r#"{"maxConcurrency":2}"#]).unwrap();
        assert_eq!(o.daemon_config["maxConcurrency"], 2);
        assert!(parse(&["--daemon-config", "[1]"]).is_err());
        assert!(parse(&["--daemon-config"]).is_err());
    }

    #[test]
    fn baseline() {
        assert_eq!(parse(&[]).unwrap().baseline, None);
        let o = parse(&["--mode", "thin", "--baseline", "/tmp/old"]).unwrap();
        assert_eq!(o.baseline, Some(PathBuf::from("/tmp/old")));
        assert!(parse(&["--mode", "daemon", "--baseline", "/tmp/old"]).is_err());
        assert!(parse(&["--baseline", "/tmp/old", "--wrap", "strace"]).is_err());
        assert!(parse(&["--baseline"]).is_err());
    }
}
