//! Summary statistics of latency samples.

use std::time::Duration;

use serde::Serialize;

/// Median, p90, p99, min, max and mean of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Stats {
    /// Samples.
    pub n: usize,
    /// Median (mean of the two middle samples when `n` is even).
    pub median_ms: f64,
    /// 90th percentile (nearest rank).
    pub p90_ms: f64,
    /// 99th percentile (nearest rank).
    pub p99_ms: f64,
    /// Smallest.
    pub min_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// Milliseconds of `d`.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median of `v` (sorted here; NaN when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The nearest-rank `p`-quantile (0 < p ≤ 1) of sorted `v`.
fn rank(v: &[f64], p: f64) -> f64 {
    let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

impl Stats {
    /// The statistics of `samples`; `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Stats> {
        let mut v: Vec<f64> = samples.iter().copied().map(ms).collect();
        if v.is_empty() {
            return None;
        }
        let median = median(v.clone());
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(Stats {
            n,
            median_ms: median,
            p90_ms: rank(&v, 0.90),
            p99_ms: rank(&v, 0.99),
            min_ms: v[0],
            max_ms: v[n - 1],
            mean_ms: v.iter().sum::<f64>() / n as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_ranks() {
        let d = |v: &[u64]| {
            v.iter()
                .map(|&x| Duration::from_millis(x))
                .collect::<Vec<_>>()
        };
        let s = Stats::of(&d(&[5, 1, 3])).unwrap();
        assert_eq!(
            (s.median_ms, s.min_ms, s.max_ms, s.p90_ms),
            (3.0, 1.0, 5.0, 5.0)
        );
        let s = Stats::of(&d(&(1..=10).collect::<Vec<_>>())).unwrap();
        assert_eq!((s.median_ms, s.p90_ms, s.p99_ms), (5.5, 9.0, 10.0));
        assert!(Stats::of(&[]).is_none());
        assert_eq!(median(vec![4.0, -1.0, 2.0, 10.0]), 3.0);
        assert!(median(vec![]).is_nan());
    }
}
