//! Where plexus's time goes (with `--plexus-log`): each measured plexus invocation cut into phases from
//! plexus's own debug log (timestamps to the nanosecond, the same clock as the bench's) and the
//! runtime's view of the invocation (when it started the process, when the invocation returned).
//!
//! Debug logging costs plexus a little (opening the log file, formatting some 20–60 lines); the phases
//! are for seeing what dominates, not for the overhead figures.

use std::time::SystemTime;

use serde::Serialize;

use super::{analysis::parse_nanos, setup::Op, stats::Stats};

/// One plexus invocation as the runtime saw it.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Secondary networks.
    pub k: usize,
    /// ADD or DEL.
    pub op: Op,
    /// When the runtime started it.
    pub start: SystemTime,
    /// When the runtime's invocation returned.
    pub end: SystemTime,
}

/// The median of each phase over the invocations of one K and operation.
#[derive(Debug, Clone, Serialize)]
pub struct Breakdown {
    /// Secondary networks.
    pub k: usize,
    /// "ADD" or "DEL".
    pub op: String,
    /// Invocations found in the log.
    pub runs: usize,
    /// (phase, median ms).
    pub phases: Vec<(String, f64)>,
}

fn nanos(t: SystemTime) -> i128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// The phases of one invocation (ms), from the log lines inside its window.
fn phases(lines: &[(i128, &str)], inv: &Invocation) -> Option<Vec<(&'static str, f64)>> {
    let (t0, t9) = (nanos(inv.start), nanos(inv.end));
    let mine: Vec<&(i128, &str)> = lines.iter().filter(|(t, _)| *t >= t0 && *t <= t9).collect();
    let start = mine.iter().find(|(_, l)| l.contains(" start command="))?.0;
    let done = mine.iter().find(|(_, l)| l.contains(" done command="))?.0;
    // (start, end) of each delegate: it logs its run time when it returns.
    let delegates: Vec<(i128, i128)> = mine
        .iter()
        .filter(|(_, l)| l.contains("delegate succeeded"))
        .filter_map(|(t, l)| {
            let ms: f64 = l
                .split("elapsed_ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((*t - (ms * 1e6) as i128, *t))
        })
        .collect();
    let first = delegates.first()?.0;
    let last = delegates.last()?.1;
    let in_delegates: i128 = delegates.iter().map(|(a, b)| b - a).sum();
    let api_before = mine
        .iter()
        .filter(|(t, l)| *t < first && l.contains("stream closed"))
        .map(|(t, _)| *t)
        .max();
    let ms = |n: i128| n as f64 / 1e6;
    let mut out = vec![(
        "runtime starts plexus; exec, config, log set-up",
        ms(start - t0),
    )];
    // DEL asks the API nothing: its "API reads" phase is empty.
    let local_from = api_before.unwrap_or(start);
    out.push((
        "API reads: client set-up, TLS, pod (and NADs)",
        ms(local_from - start),
    ));
    out.push((
        "before the first delegate: cache, lock, plan, probe",
        ms(first - local_from),
    ));
    out.push(("delegates (their own run time)", ms(in_delegates)));
    out.push((
        "between delegates: result caches, probes",
        ms(last - first - in_delegates),
    ));
    out.push(match inv.op {
        Op::Add => (
            "after the delegates: status PATCH and events",
            ms(done - last),
        ),
        Op::Del => ("after the delegates: cache removal", ms(done - last)),
    });
    out.push(("plexus exits; runtime caches its result", ms(t9 - done)));
    Some(out)
}

/// The breakdowns of `invocations`, from the log text `log`.
pub fn breakdown(log: &str, invocations: &[Invocation]) -> Vec<Breakdown> {
    let lines: Vec<(i128, &str)> = log
        .lines()
        .filter_map(|l| Some((parse_nanos(l.split_whitespace().next()?)?, l)))
        .collect();
    type Runs = Vec<Vec<(&'static str, f64)>>;
    let mut groups: Vec<((usize, Op), Runs)> = Vec::new();
    for inv in invocations {
        let Some(p) = phases(&lines, inv) else {
            continue;
        };
        match groups.iter_mut().find(|(key, _)| *key == (inv.k, inv.op)) {
            Some((_, v)) => v.push(p),
            None => groups.push(((inv.k, inv.op), vec![p])),
        }
    }
    groups
        .into_iter()
        .map(|((k, op), runs)| {
            let names: Vec<&str> = runs[0].iter().map(|(n, _)| *n).collect();
            let phases = names
                .iter()
                .map(|name| {
                    let v: Vec<std::time::Duration> = runs
                        .iter()
                        .filter_map(|r| r.iter().find(|(n, _)| n == name))
                        .map(|(_, ms)| std::time::Duration::from_secs_f64(ms.max(0.0) / 1e3))
                        .collect();
                    (
                        name.to_string(),
                        Stats::of(&v).map_or(f64::NAN, |s| s.median_ms),
                    )
                })
                .collect();
            Breakdown {
                k,
                op: match op {
                    Op::Add => "ADD".into(),
                    Op::Del => "DEL".into(),
                },
                runs: runs.len(),
                phases,
            }
        })
        .collect()
}
