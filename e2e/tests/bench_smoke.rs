//! Keeps the benchmark program (`plexus-bench`, issues 5 and 8) from rotting: one tiny run of it, K=0 only,
//! both modes (thin, and daemon: `plexus daemon` behind the shim, with a 4-pod storm after a restart),
//! against the fresh `plexus-under-test` and `plexus-shim-under-test` builds (no release build here), the
//! hot-plug phase (3 runs and the idle test) and the scale phase at 100 NADs, checked for tables and sane
//! numbers. The real measurements are made with the command in BENCHMARKS.md, not by the test suite.

use std::process::Command;

use serde_json::Value;

#[test]
#[ignore = "needs root: the bench creates network namespaces and runs Debian's CNI plugins"]
fn bench_quick_run_prints_a_sane_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json_path = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_plexus-bench"))
        .args(["--quick", "--ks", "0", "--runs", "2", "--warmup", "1"])
        .args(["--burst", "3", "--unrelated-nads", "5", "--rt-runs", "1"])
        .args(["--mode", "both", "--storm", "4"])
        .arg("--json")
        .arg(&json_path)
        .env("E2E_PLEXUS_BIN", env!("CARGO_BIN_EXE_plexus-under-test"))
        .env("E2E_SHIM_BIN", env!("CARGO_BIN_EXE_plexus-shim-under-test"))
        .output()
        .expect("run plexus-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "plexus-bench failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("| K | plexus ADD ms"),
        "no table header:\n{stdout}"
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| 0 |"))
        .unwrap_or_else(|| panic!("no row for K=0:\n{stdout}"));
    assert!(!row.contains("NaN"), "{row}");
    assert!(
        stdout.contains("| target | limit | measured | met |"),
        "{stdout}"
    );

    let report: Value = serde_json::from_slice(&std::fs::read(&json_path).expect("the JSON file"))
        .expect("the JSON parses");
    let k0 = &report["per_k"][0];
    assert_eq!(k0["k"], 0, "{k0:#}");
    assert_latencies(k0);
    let rss = k0["peak_rss_add_kib"].as_u64().expect("peak RSS measured");
    assert!((100..1024 * 1024).contains(&rss), "peak RSS {rss} KiB");
    if report["standin"] == true {
        // K=0: the pod GET, the status PATCH and one event; DEL from the cache asks nothing.
        assert_eq!(k0["api_add"]["get_pod"], 1, "{k0:#}");
        assert_eq!(k0["api_add"]["patch_status"], 1, "{k0:#}");
        assert_eq!(k0["api_del_max"], 0, "{k0:#}");
        let rt = k0["round_trips"]["sequential"]
            .as_u64()
            .expect("round trips");
        assert!((1..=10).contains(&rt), "{k0:#}");
    }
    assert!(report["binary"]["size_bytes"].as_u64().unwrap_or(0) > 0);
    assert_eq!(report["burst"]["pods"], 3);
    assert_eq!(
        report["burst"]["failures"],
        Value::Array(vec![]),
        "{report:#}"
    );
    assert_eq!(report["burst"]["leaks"], Value::Array(vec![]), "{report:#}");
    assert_eq!(report["final_leaks"], Value::Array(vec![]), "{report:#}");
    assert!(report["targets"].as_array().is_some_and(|t| t.len() >= 12));

    // Daemon mode: the same row through the shim, no API read in steady state, the storm.
    assert!(
        stdout.contains("| K | daemon ADD ms"),
        "no daemon-mode table:\n{stdout}"
    );
    let daemon = &report["daemon"];
    let d0 = &daemon["per_k"][0];
    assert_eq!(d0["k"], 0, "{daemon:#}");
    assert_latencies(d0);
    let shim_rss = d0["peak_rss_add_kib"]
        .as_u64()
        .expect("shim peak RSS measured");
    assert!(
        (100..1024 * 1024).contains(&shim_rss),
        "shim peak RSS {shim_rss} KiB"
    );
    assert!(daemon["shim"]["size_bytes"].as_u64().unwrap_or(0) > 0);
    if report["standin"] == true {
        // Steady state: pod and NAD come from the daemon's caches; the status PATCH and one event remain.
        assert_eq!(d0["api_add_reads_max"], 0, "{d0:#}");
        assert_eq!(d0["api_add"]["patch_status"], 1, "{d0:#}");
        assert_eq!(d0["api_del_max"], 0, "{d0:#}");
        assert_eq!(daemon["lookups"]["misses"], 0, "{daemon:#}");
    }
    assert_eq!(daemon["leaks"], Value::Array(vec![]), "{daemon:#}");
    let storm = &daemon["storm"];
    assert_eq!(storm["pods"], 4, "{storm:#}");
    assert_eq!(storm["failures"], Value::Array(vec![]), "{storm:#}");
    assert_eq!(storm["del_failures"], Value::Array(vec![]), "{storm:#}");
    assert_eq!(storm["leaks"], Value::Array(vec![]), "{storm:#}");
    assert_eq!(storm["daemon_survived"], true, "{storm:#}");
    // The daemon's unlinks after the DELs' replies ended, after the last reply.
    assert!(
        ms(&storm["del_drained_ms"]) >= ms(&storm["del_wall_ms"]),
        "{storm:#}"
    );
    if storm["cgroup"].is_object() {
        assert_eq!(storm["cgroup"]["oom_kills"], 0, "{storm:#}");
        assert_eq!(
            storm["cgroup"]["limit_bytes"],
            64 * 1024 * 1024,
            "{storm:#}"
        );
        let peak = storm["cgroup"]["max_usage_bytes"].as_u64().unwrap_or(0);
        assert!(peak > 0, "{storm:#}");
    } else {
        // No cgroup v1 memory controller: said so, not faked.
        assert!(storm["cgroup_unavailable"].is_string(), "{storm:#}");
    }
    // The hot-plug phase (issue 18), --quick: 3 attach/detach runs, then the idle test, which must show
    // no delegate run and no API write for patches that leave the networks annotation alone.
    let hp = &report["hotplug"];
    assert_eq!(hp["runs"], 3, "{hp:#}");
    assert_eq!(hp["failures"], Value::Array(vec![]), "{hp:#}");
    assert_eq!(hp["leaks"], Value::Array(vec![]), "{hp:#}");
    for what in ["attach", "detach"] {
        let (min, p90) = (ms(&hp[what]["min_ms"]), ms(&hp[what]["p90_ms"]));
        assert!(min > 0.0 && min <= p90 && p90 < 30_000.0, "{what}: {hp:#}");
    }
    assert_eq!(hp["daemon_attach"]["n"], 3, "{hp:#}");
    let idle = &hp["idle"];
    assert_eq!(idle["startup_attempts"], 1, "{idle:#}");
    assert_eq!(idle["startup_changes"], 0, "{idle:#}");
    assert_eq!(idle["delegate_runs"], 0, "{idle:#}");
    assert_eq!(idle["touch_attempts"], 0, "{idle:#}");
    if report["standin"] == true {
        for reqs in ["startup_requests", "touch_requests"] {
            let writes: Vec<&Value> = idle[reqs]
                .as_array()
                .expect("counted at the stand-in")
                .iter()
                .filter(|r| !r.as_str().unwrap_or_default().starts_with("GET "))
                .collect();
            assert!(writes.is_empty(), "{reqs}: {idle:#}");
        }
    }
    // The scale phase (issue 20), --quick: 100 NADs, 4 pods on the node, a 20-name annotation.
    let scale = &report["scale"];
    if report["standin"] == true {
        let row = &scale["rows"][0];
        assert_eq!(row["nads"], 100, "{scale:#}");
        assert_eq!(row["failures"], Value::Array(vec![]), "{scale:#}");
        assert_eq!(row["cached"], 100, "{scale:#}");
        assert_eq!(row["add_nad_reads_max"], 0, "{scale:#}");
        assert!(ms(&row["add"]["median_ms"]) > 0.0, "{scale:#}");
        assert!(row["rss_kib"].as_u64().unwrap_or(0) > 0, "{scale:#}");
        // The long annotation's NADs are read one GET each, in both modes (issue 20's item 1 bounds
        // how many of them are sent).
        let fanout = scale["fanout"].as_array().expect("fanout rows");
        assert_eq!(fanout.len(), 2, "thin and this build's daemon: {scale:#}");
        for f in fanout {
            let gets = f["requests"]["get_nad"].as_u64().unwrap_or(0);
            assert!((1..=20).contains(&gets), "{f:#}");
        }
    } else {
        assert!(scale["skipped"].is_string(), "{scale:#}");
    }
    let names: Vec<&str> = report["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names
            .iter()
            .filter(|n| n.starts_with("daemon mode:"))
            .count()
            == 4,
        "{names:?}"
    );
}

fn ms(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// A latency row (thin or daemon) of a `--runs 2` run: two samples each, ordered statistics, and a plexus run
/// that costs at least what its delegates cost, give or take noise.
fn assert_latencies(row: &Value) {
    for what in ["add", "del", "floor_add", "floor_del"] {
        let s = &row[what];
        assert_eq!(s["n"], 2, "{what}: {s}");
        let (min, median, p90) = (ms(&s["min_ms"]), ms(&s["median_ms"]), ms(&s["p90_ms"]));
        assert!(
            min > 0.0 && min <= median && median <= p90 && p90 < 60_000.0,
            "{what}: {s}"
        );
    }
    assert!(
        ms(&row["add"]["median_ms"]) > 0.5 * ms(&row["floor_add"]["median_ms"]),
        "{row:#}"
    );
}
