//! Fault injection and the per-request log.
//!
//! Faults match requests by HTTP method and a substring of the path, and act
//! on the next `count` matches (or on every match when `count` is unset):
//! added latency, an error status (with `Retry-After` for 429/503), or closing
//! the connection without an answer. "Down" drops every API request. Requests
//! under `/standin/` are never faulted or logged. Each rule counts the requests
//! it has matched ([`Faults::hits`]), so a test can tell when a request is being
//! held by a latency rule (and kill its client right then).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One fault rule, as posted to `/standin/faults` (JSON, camelCase) or given to
/// [`Faults::add`]. At least one of `latency_ms`, `status`, `drop` must be set;
/// latency may be combined with either of the others.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultSpec {
    /// HTTP method to match (case-insensitive); any when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Substring of the request path to match; any when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Delay before the request is handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Answer with this status (as a Kubernetes `Status`) instead of handling the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `Retry-After` seconds sent with `status` (default 1 for 429 and 503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// `Status.message` for `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Close the connection without answering.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop: bool,
    /// How many matching requests this applies to; every one while unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}

impl FaultSpec {
    /// Adds `ms` of latency.
    pub fn latency(ms: u64) -> Self {
        FaultSpec {
            latency_ms: Some(ms),
            ..Default::default()
        }
    }

    /// Answers with `code` (a `Status` body; `Retry-After: 1` for 429/503).
    pub fn status(code: u16) -> Self {
        FaultSpec {
            status: Some(code),
            ..Default::default()
        }
    }

    /// Closes the connection without an answer.
    pub fn drop_connection() -> Self {
        FaultSpec {
            drop: true,
            ..Default::default()
        }
    }

    /// Only for requests with this method and a path containing `path`.
    pub fn on(mut self, method: &str, path: &str) -> Self {
        self.method = Some(method.to_string());
        self.path = Some(path.to_string());
        self
    }

    /// Only for requests whose path contains `path`.
    pub fn path(mut self, path: &str) -> Self {
        self.path = Some(path.to_string());
        self
    }

    /// Only for the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.count = Some(n);
        self
    }

    /// `Retry-After` seconds.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Checks that the rule does something.
    pub fn validate(&self) -> Result<(), String> {
        if self.latency_ms.is_none() && self.status.is_none() && !self.drop {
            return Err("a fault needs latencyMs, status or drop".into());
        }
        if self.status.is_some() && self.drop {
            return Err("status and drop exclude each other".into());
        }
        if let Some(code) = self.status.filter(|c| !(400..=599).contains(c)) {
            return Err(format!("status {code} is not an error status"));
        }
        Ok(())
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.path.as_deref().is_none_or(|p| path.contains(p))
    }
}

/// An installed rule and its id.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveFault {
    /// Id for removal.
    pub id: u64,
    /// The rule; `count` is what is left of it.
    #[serde(flatten)]
    pub spec: FaultSpec,
}

/// What to do with one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Total delay.
    pub latency: Duration,
    /// Answer with this status.
    pub status: Option<(u16, Option<u64>, Option<String>)>,
    /// Close the connection.
    pub drop: bool,
}

#[derive(Debug, Default)]
struct FaultState {
    next_id: u64,
    rules: Vec<ActiveFault>,
    down: Option<Option<Instant>>,
    /// Requests matched so far, by rule id (kept after a counted rule expires).
    hits: std::collections::BTreeMap<u64, u64>,
}

/// The installed faults; shared by the server and its handle.
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<FaultState>,
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Installs a rule; returns its id.
    pub fn add(&self, spec: FaultSpec) -> Result<u64, String> {
        spec.validate()?;
        let mut s = self.lock();
        s.next_id += 1;
        let id = s.next_id;
        s.rules.push(ActiveFault { id, spec });
        Ok(id)
    }

    /// Removes one rule.
    pub fn remove(&self, id: u64) -> bool {
        let mut s = self.lock();
        let before = s.rules.len();
        s.rules.retain(|r| r.id != id);
        s.rules.len() != before
    }

    /// Removes every rule and ends "down".
    pub fn clear(&self) {
        let mut s = self.lock();
        s.rules.clear();
        s.down = None;
    }

    /// How many requests rule `id` has matched so far (counted when the request arrives, before any
    /// latency); 0 for an unknown id.
    pub fn hits(&self, id: u64) -> u64 {
        self.lock().hits.get(&id).copied().unwrap_or(0)
    }

    /// The installed rules.
    pub fn list(&self) -> Vec<ActiveFault> {
        self.lock().rules.clone()
    }

    /// "Down": every API request's connection is closed without an answer,
    /// for `duration` (or until set up again when `None`).
    pub fn set_down(&self, down: bool, duration: Option<Duration>) {
        self.lock().down = down.then(|| duration.map(|d| Instant::now() + d));
    }

    /// Whether the server is down now.
    pub fn is_down(&self) -> bool {
        let mut s = self.lock();
        match s.down {
            Some(Some(until)) if Instant::now() >= until => {
                s.down = None;
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Consumes the rules matching a request and says what to do with it:
    /// every matching latency-only rule adds up; the first matching status or
    /// drop rule decides the outcome.
    pub fn decide(&self, method: &str, path: &str) -> Decision {
        let mut s = self.lock();
        let mut d = Decision::default();
        let mut decided = false;
        let FaultState { rules, hits, .. } = &mut *s;
        for rule in rules.iter_mut() {
            let spec = &mut rule.spec;
            if !spec.matches(method, path) {
                continue;
            }
            let terminal = spec.status.is_some() || spec.drop;
            if terminal && decided {
                continue;
            }
            *hits.entry(rule.id).or_default() += 1;
            if let Some(ms) = spec.latency_ms {
                d.latency += Duration::from_millis(ms);
            }
            if let Some(code) = spec.status {
                let retry = spec.retry_after.or(matches!(code, 429 | 503).then_some(1));
                d.status = Some((code, retry, spec.message.clone()));
            }
            d.drop |= spec.drop;
            decided |= terminal;
            if let Some(n) = spec.count.as_mut() {
                *n = n.saturating_sub(1);
            }
        }
        s.rules.retain(|r| r.spec.count != Some(0));
        d
    }
}

/// One logged request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// Raw query string ("" if none).
    pub query: String,
    /// Status answered; 0 when the connection was closed without an answer.
    pub status: u16,
    /// When the request arrived (RFC 3339, milliseconds).
    pub time: String,
    /// Time to the answer (for watches: to the start of the stream).
    pub duration_ms: u64,
    /// The fault that hit it: "latency", "status", "drop" or "down".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

/// A logged request and who made it: the authenticated user's name (`system:serviceaccount:<ns>:<name>`
/// for a minted token), `None` when the token was missing or not valid.
pub type UserRecord = (RequestRecord, Option<String>);

/// The request log (the latest 100 000 requests).
#[derive(Debug, Default)]
pub struct RequestLog {
    records: Mutex<Vec<UserRecord>>,
}

const LOG_CAP: usize = 100_000;

impl RequestLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<UserRecord>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a record (of an unauthenticated request).
    pub fn push(&self, r: RequestRecord) {
        self.push_by(r, None);
    }

    /// Appends a record of a request made by `user`.
    pub fn push_by(&self, r: RequestRecord, user: Option<String>) {
        let mut v = self.lock();
        if v.len() >= LOG_CAP {
            v.remove(0);
        }
        v.push((r, user));
    }

    /// All records, oldest first.
    pub fn all(&self) -> Vec<RequestRecord> {
        self.lock().iter().map(|(r, _)| r.clone()).collect()
    }

    /// All records with their users, oldest first.
    pub fn all_by_user(&self) -> Vec<UserRecord> {
        self.lock().clone()
    }

    /// Records with `method` (any if empty) whose path contains `path`.
    pub fn filtered(&self, method: &str, path: &str) -> Vec<RequestRecord> {
        self.filtered_by_user(method, path)
            .into_iter()
            .map(|(r, _)| r)
            .collect()
    }

    /// [`RequestLog::filtered`], with the users.
    pub fn filtered_by_user(&self, method: &str, path: &str) -> Vec<UserRecord> {
        self.lock()
            .iter()
            .filter(|(r, _)| method.is_empty() || r.method.eq_ignore_ascii_case(method))
            .filter(|(r, _)| r.path.contains(path))
            .cloned()
            .collect()
    }

    /// Empties the log; returns how many records it had.
    pub fn clear(&self) -> usize {
        std::mem::take(&mut *self.lock()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_rules_expire_and_latency_adds_up() {
        let f = Faults::default();
        f.add(FaultSpec::latency(5)).unwrap();
        f.add(
            FaultSpec::status(503)
                .on("PATCH", "/pods/x/status")
                .times(1),
        )
        .unwrap();
        f.add(FaultSpec::drop_connection().path("/pods/x").times(2))
            .unwrap();
        assert!(f.add(FaultSpec::default()).is_err());

        let d = f.decide("PATCH", "/api/v1/namespaces/d/pods/x/status");
        assert_eq!(d.latency, Duration::from_millis(5));
        assert_eq!(d.status, Some((503, Some(1), None)));
        assert!(!d.drop);
        let d = f.decide("patch", "/api/v1/namespaces/d/pods/x/status");
        assert!(d.drop && d.status.is_none());
        let d = f.decide("GET", "/api/v1/namespaces/d/pods/x");
        assert!(d.drop);
        let d = f.decide("GET", "/api/v1/namespaces/d/pods/x");
        assert!(!d.drop);
        assert_eq!(f.list().len(), 1);
    }

    #[test]
    fn hits_count_matching_requests_and_outlive_counted_rules() {
        let f = Faults::default();
        let slow = f.add(FaultSpec::latency(1).on("GET", "/pods/x")).unwrap();
        let once = f
            .add(FaultSpec::status(500).on("GET", "/pods/x").times(1))
            .unwrap();
        assert_eq!((f.hits(slow), f.hits(once)), (0, 0));
        f.decide("GET", "/api/v1/namespaces/d/pods/y");
        assert_eq!(f.hits(slow), 0, "a request the rule does not match");
        f.decide("GET", "/api/v1/namespaces/d/pods/x");
        f.decide("GET", "/api/v1/namespaces/d/pods/x");
        assert_eq!((f.hits(slow), f.hits(once)), (2, 1));
        assert_eq!(f.hits(999), 0);
    }

    #[test]
    fn down_can_expire() {
        let f = Faults::default();
        f.set_down(true, Some(Duration::ZERO));
        assert!(!f.is_down());
        f.set_down(true, None);
        assert!(f.is_down());
        f.clear();
        assert!(!f.is_down());
    }

    #[test]
    fn spec_json_is_camel_case() {
        let s: FaultSpec =
            serde_json::from_str(r#"{"method":"GET","status":429,"retryAfter":3,"count":2}"#)
                .unwrap();
        assert_eq!(
            s,
            FaultSpec::status(429)
                .retry_after(3)
                .times(2)
                .on("GET", "")
                .path_unset()
        );
        assert!(serde_json::from_str::<FaultSpec>(r#"{"bogus":1}"#).is_err());
    }

    impl FaultSpec {
        fn path_unset(mut self) -> Self {
            self.path = None;
            self
        }
    }
}
