//! Reading the stand-in's request log: what plexus asked for, and how many round trips it waited for
//! one after another.
//!
//! **Sequential round trips.** With a latency `L` (≥ 10 ms) injected into every API request, each
//! request occupies `[arrival, arrival + duration]` in the log (millisecond resolution, durations ≥ L),
//! and two requests were made one after the other exactly when the second arrived after the first was
//! answered. The number of sequential round trips of an operation is the longest chain of requests each
//! of which arrived after the previous one's answer. Requests made concurrently (NADs read together, the
//! events sent alongside the status PATCH) overlap and count once. TLS handshakes are not API requests
//! and are not counted.

use plexus_e2e::apiserver::RequestRecord;
use serde::Serialize;

/// plexus's API requests of one operation, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApiCounts {
    /// All.
    pub total: usize,
    /// GET of a pod.
    pub get_pod: usize,
    /// GET of one NetworkAttachmentDefinition.
    pub get_nad: usize,
    /// LIST of anything.
    pub list: usize,
    /// PATCH of `pods/{name}/status`.
    pub patch_status: usize,
    /// PUT of anything.
    pub put: usize,
    /// POST of an event.
    pub events: usize,
    /// Anything else.
    pub other: usize,
}

impl ApiCounts {
    /// Count `records`.
    pub fn of(records: &[RequestRecord]) -> ApiCounts {
        let mut c = ApiCounts {
            total: records.len(),
            ..ApiCounts::default()
        };
        for r in records {
            let segs: Vec<&str> = r.path.trim_matches('/').split('/').collect();
            let kind = |k: &str| segs.contains(&k);
            let named = |k: &str| {
                segs.iter()
                    .position(|s| *s == k)
                    .is_some_and(|i| i + 1 < segs.len())
            };
            match r.method.as_str() {
                "GET" if kind("pods") && named("pods") && !r.path.ends_with("/status") => {
                    c.get_pod += 1
                }
                "GET"
                    if kind("network-attachment-definitions")
                        && named("network-attachment-definitions") =>
                {
                    c.get_nad += 1
                }
                "GET" => c.list += 1,
                "PATCH" if kind("pods") && r.path.ends_with("/status") => c.patch_status += 1,
                "PUT" => c.put += 1,
                "POST" if kind("events") => c.events += 1,
                _ => c.other += 1,
            }
        }
        c
    }

    /// Reads: GETs of pods and NADs, and LISTs.
    pub fn reads(&self) -> usize {
        self.get_pod + self.get_nad + self.list
    }

    /// `1 GET pod, 3 GET NAD, 1 PATCH status, 4 POST event`.
    pub fn breakdown(&self) -> String {
        let mut parts = Vec::new();
        for (n, what) in [
            (self.get_pod, "GET pod"),
            (self.get_nad, "GET NAD"),
            (self.list, "LIST"),
            (self.patch_status, "PATCH pods/status"),
            (self.put, "PUT"),
            (self.events, "POST event"),
            (self.other, "other"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Nanoseconds since the epoch of an RFC 3339 UTC time (`2025-01-02T03:04:05.678901234Z`, any number
/// of fraction digits, or none).
pub fn parse_nanos(t: &str) -> Option<i128> {
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let time = time.strip_suffix('Z')?;
    let (hms, frac) = match time.split_once('.') {
        Some((a, b)) => (a, b),
        None => (time, "0"),
    };
    let mut p = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, s) = (p.next()??, p.next()??, p.next()??);
    if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_ns = format!("{frac:0<9}").parse::<i128>().ok()?;
    let secs = ((days_from_civil(y, mo, da) * 24 + h) * 60 + mi) * 60 + s;
    Some(i128::from(secs) * 1_000_000_000 + frac_ns)
}

/// Milliseconds since the epoch of an RFC 3339 UTC time as the stand-in writes it
/// (`2025-01-02T03:04:05.678Z`, or without the fraction when it is zero).
pub fn parse_millis(t: &str) -> Option<i64> {
    parse_nanos(t).map(|n| (n / 1_000_000) as i64)
}

/// The longest chain of requests each arriving after the previous one was answered.
pub fn sequential_round_trips(records: &[RequestRecord]) -> Result<usize, String> {
    let mut iv: Vec<(i64, i64)> = records
        .iter()
        .map(|r| {
            parse_millis(&r.time)
                .map(|t| (t, t + r.duration_ms as i64))
                .ok_or_else(|| format!("unreadable request time {:?}", r.time))
        })
        .collect::<Result<_, _>>()?;
    iv.sort();
    // Longest chain in an interval order: best[i] = 1 + max best[j] with end_j <= start_i.
    let mut best = vec![0usize; iv.len()];
    for i in 0..iv.len() {
        best[i] = 1
            + (0..i)
                .filter(|&j| iv[j].1 <= iv[i].0)
                .map(|j| best[j])
                .max()
                .unwrap_or(0);
    }
    Ok(best.into_iter().max().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(method: &str, path: &str, time: &str, ms: u64) -> RequestRecord {
        RequestRecord {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            status: 200,
            time: time.into(),
            duration_ms: ms,
            fault: None,
        }
    }

    #[test]
    fn times_parse() {
        assert_eq!(parse_millis("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(
            parse_nanos("1970-01-01T00:00:01.000000042Z"),
            Some(1_000_000_042)
        );
        assert_eq!(parse_millis("1970-01-02T00:00:00Z"), Some(86_400_000));
        assert_eq!(
            parse_millis("2024-03-01T00:00:00.001Z").unwrap()
                - parse_millis("2024-02-28T23:59:59.999Z").unwrap(),
            86_400_000 + 2
        );
    }

    #[test]
    fn counts_and_chains() {
        let ns = "/api/v1/namespaces/n";
        let nad = "/apis/k8s.cni.cncf.io/v1/namespaces/n/network-attachment-definitions";
        let log = vec![
            rec(
                "GET",
                &format!("{ns}/pods/p"),
                "2024-01-01T00:00:00.000Z",
                50,
            ),
            rec("GET", &format!("{nad}/a"), "2024-01-01T00:00:00.051Z", 50),
            rec("GET", &format!("{nad}/b"), "2024-01-01T00:00:00.052Z", 50),
            rec(
                "PATCH",
                &format!("{ns}/pods/p/status"),
                "2024-01-01T00:00:00.110Z",
                51,
            ),
            rec(
                "POST",
                &format!("{ns}/events"),
                "2024-01-01T00:00:00.111Z",
                50,
            ),
        ];
        let c = ApiCounts::of(&log);
        assert_eq!(
            (
                c.total,
                c.get_pod,
                c.get_nad,
                c.patch_status,
                c.events,
                c.list
            ),
            (5, 1, 2, 1, 1, 0)
        );
        assert_eq!(sequential_round_trips(&log).unwrap(), 3);
        assert_eq!(sequential_round_trips(&[]).unwrap(), 0);
        let list = [rec("GET", nad, "2024-01-01T00:00:00.000Z", 1)];
        assert_eq!(ApiCounts::of(&list).list, 1);
    }
}
