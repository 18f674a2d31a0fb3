//! The daemon's Prometheus metrics: per-verb and per-delegate latency, API requests, cache sizes and
//! staleness, in-flight and queued requests, plus Go Multus's `multus_server_request_total` so existing
//! dashboards keep working (docs/multus-compat.md, "Daemon mode").

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::seams::{
    exec::{Exec, ExecError, ExecOutput, ExecRequest},
    k8s::{
        client::{ApiObserver, ApiOutcome},
        watch::NodeCache,
    },
};

/// How one of `super::status_writer`'s writes ended (the `outcome` label of `plexus_status_writes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusWriteOutcome {
    /// The annotation is on the pod.
    Written,
    /// The pod was deleted first: nothing to record.
    Gone,
    /// A newer ADD of the pod, or a DEL of the container, came first.
    Superseded,
    /// Refused for good, or the API stayed unavailable for `statusRetrySeconds`.
    Failed,
}

impl StatusWriteOutcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            StatusWriteOutcome::Written => "written",
            StatusWriteOutcome::Gone => "gone",
            StatusWriteOutcome::Superseded => "superseded",
            StatusWriteOutcome::Failed => "failed",
        }
    }
}

type Labels = Vec<(&'static str, String)>;

fn latency() -> Histogram {
    // 1 ms to ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<Labels, Histogram, fn() -> Histogram>,
    delegates: Family<Labels, Histogram, fn() -> Histogram>,
    api: Family<Labels, Histogram, fn() -> Histogram>,
    lookups: Family<Labels, Counter>,
    go_requests: Family<Labels, Counter>,
    rejected: Counter,
    /// Mirrors [`crate::store::lock::orphans_killed`] at each render.
    orphans_killed: Counter,
    /// Requests running now.
    pub in_flight: Gauge,
    /// Requests waiting for a slot.
    pub queued: Gauge,
    cache_objects: Family<Labels, Gauge>,
    cache_staleness: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    cache_restarts: Family<Labels, Gauge>,
    cache_synced: Gauge,
    cache_nads_loaded: Gauge,
    ready: Gauge,
    status_writes: Family<Labels, Counter>,
    hotplugs: Family<Labels, Counter>,
    hotplug_attempts: Family<Labels, Counter>,
    hotplug_latency: Family<Labels, Histogram, fn() -> Histogram>,
    hotplug_queue: Gauge,
    status_delay: Histogram,
    /// Network-status writes after the reply not yet ended.
    pub status_pending: Gauge,
    /// Cached NADs naming a plugin or IPAM plugin not installed (set by `super::plugin_check`).
    pub nads_missing_plugins: Gauge,
    /// Cached NADs naming a plugin or IPAM plugin whose binary fails plexus's check (`super::plugin_check`).
    pub nads_refused_plugins: Gauge,
    /// Work left for after the reply (ADD's durable writes, DEL's unlinks) not yet ended.
    pub after_reply_pending: Gauge,
}

impl Metrics {
    /// A fresh set, registered.
    pub fn new() -> Arc<Metrics> {
        let mut r = Registry::default();
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            requests: Family::new_with_constructor(latency as fn() -> Histogram),
            delegates: Family::new_with_constructor(latency as fn() -> Histogram),
            api: Family::new_with_constructor(latency as fn() -> Histogram),
            lookups: Family::default(),
            go_requests: Family::default(),
            rejected: Counter::default(),
            orphans_killed: Counter::default(),
            in_flight: Gauge::default(),
            queued: Gauge::default(),
            cache_objects: Family::default(),
            cache_staleness: Family::default(),
            cache_restarts: Family::default(),
            cache_synced: Gauge::default(),
            cache_nads_loaded: Gauge::default(),
            ready: Gauge::default(),
            status_writes: Family::default(),
            hotplugs: Family::default(),
            hotplug_attempts: Family::default(),
            hotplug_latency: Family::new_with_constructor(latency),
            hotplug_queue: Gauge::default(),
            status_delay: latency(),
            status_pending: Gauge::default(),
            nads_missing_plugins: Gauge::default(),
            nads_refused_plugins: Gauge::default(),
            after_reply_pending: Gauge::default(),
        };
        r.register(
            "plexus_cni_request_duration_seconds",
            "CNI requests served, by verb and result (ok or the CNI error code), seconds from arrival to reply",
            m.requests.clone(),
        );
        r.register(
            "plexus_delegate_duration_seconds",
            "Delegate plugin runs, by plugin, verb and result",
            m.delegates.clone(),
        );
        r.register(
            "plexus_api_request_duration_seconds",
            "Kubernetes API requests made while serving CNI requests, by request and status code",
            m.api.clone(),
        );
        r.register(
            "plexus_cache_lookups",
            "Pod and NAD lookups, answered by the watch cache (hit) or sent to the API (miss)",
            m.lookups.clone(),
        );
        r.register(
            "plexus_requests_rejected",
            "CNI requests refused because the queue was full (CNI code 11)",
            m.rejected.clone(),
        );
        r.register(
            "plexus_orphans_killed",
            "Processes killed because they held a container's lock after the plexus that took it died (orphans \
             of a SIGKILLed daemon or plexus, and their process groups; RELIABILITY.md)",
            m.orphans_killed.clone(),
        );
        r.register(
            "plexus_requests_in_flight",
            "CNI requests running now",
            m.in_flight.clone(),
        );
        r.register(
            "plexus_requests_queued",
            "CNI requests waiting for a slot",
            m.queued.clone(),
        );
        r.register(
            "plexus_cache_objects",
            "Objects in each watch cache",
            m.cache_objects.clone(),
        );
        r.register(
            "plexus_cache_staleness_seconds",
            "Seconds since each watch last heard from the API (an event, list or bookmark)",
            m.cache_staleness.clone(),
        );
        r.register(
            "plexus_cache_watch_restarts",
            "Watch errors so far, each followed by a backed-off restart",
            m.cache_restarts.clone(),
        );
        r.register(
            "plexus_cache_synced",
            "1 once both watch caches hold their initial list",
            m.cache_synced.clone(),
        );
        r.register(
            "plexus_cache_nads_loaded",
            "NADs whose config the daemon holds: those the node's pods select or its requests read within the \
             hour; every other NAD is held compact (plexus_cache_objects counts them all)",
            m.cache_nads_loaded.clone(),
        );
        r.register(
            "plexus_ready",
            "1 while /readyz answers 200",
            m.ready.clone(),
        );
        r.register(
            "plexus_status_writes",
            "Network-status writes after the reply (statusWrite: afterReply), by outcome: written, gone (the pod \
             was deleted), superseded (a newer ADD of the pod or a DEL of the container), failed",
            m.status_writes.clone(),
        );
        r.register(
            "plexus_hotplugs",
            "Hot-plug changes of running pods' networks (docs/daemon.md, \"Hot-plug\"), by trigger (annotation, \
             startup, delegate) and outcome: attached, detached, failed (refused or failed)",
            m.hotplugs.clone(),
        );
        r.register(
            "plexus_hotplug_attempts",
            "Hot-plug attempts: sandboxes reconciled with their annotation (trigger annotation, or startup for \
             the pass after the watch listed) and /delegate calls (trigger delegate)",
            m.hotplug_attempts.clone(),
        );
        r.register(
            "plexus_hotplug_duration_seconds",
            "Seconds from an annotation change seen by the watch to its network-status written (trigger \
             annotation), or from a /delegate call's arrival to its reply (trigger delegate)",
            m.hotplug_latency.clone(),
        );
        r.register(
            "plexus_hotplug_queue_depth",
            "Pods waiting in the hot-plug reconcile queue",
            m.hotplug_queue.clone(),
        );
        r.register(
            "plexus_status_write_delay_seconds",
            "Seconds from ADD's reply until its network-status write ended",
            m.status_delay.clone(),
        );
        r.register(
            "plexus_status_writes_pending",
            "Network-status writes after the reply not yet ended",
            m.status_pending.clone(),
        );
        r.register(
            "plexus_nads_missing_plugins",
            "Cached NADs whose config names a plugin or IPAM plugin not installed in binDir or CNI_PATH (as \
             the daemon's requests give them); pods selecting one fail their ADD, the node stays ready",
            m.nads_missing_plugins.clone(),
        );
        r.register(
            "plexus_nads_refused_plugins",
            "Cached NADs whose config names a plugin or IPAM plugin whose binary is installed but fails \
             plexus's check (not owned by root, or writable by its group or others): plexus refuses to run \
             such a plugin, so pods selecting one fail their ADD; an IPAM binary, run by its plugin, is only \
             reported; the node stays ready",
            m.nads_refused_plugins.clone(),
        );
        r.register(
            "plexus_after_reply_pending",
            "Work left for after the reply not yet ended: ADD's durable writes (the container's cache and result \
             records), DEL's unlinks of the files it moved into <cniDir>/.trash",
            m.after_reply_pending.clone(),
        );
        r.register(
            "multus_server_request",
            "Go Multus's request counter, by handler, HTTP code and method",
            m.go_requests.clone(),
        );
        *m.registry.lock().unwrap_or_else(|p| p.into_inner()) = r;
        Arc::new(m)
    }

    /// One CNI request's end.
    pub fn request(&self, verb: &str, result: &str, elapsed: Duration) {
        self.requests
            .get_or_create(&vec![
                ("verb", verb.to_string()),
                ("result", result.to_string()),
            ])
            .observe(elapsed.as_secs_f64());
    }

    /// One HTTP request on the socket (Go Multus's counter).
    pub fn http(&self, handler: &str, code: u16, method: &str) {
        self.go_requests
            .get_or_create(&vec![
                ("handler", handler.to_string()),
                ("code", code.to_string()),
                ("method", method.to_string()),
            ])
            .inc();
    }

    /// `n` hot-plug changes ended as `outcome` (`attached`, `detached` or `failed`).
    pub fn hotplugged(&self, trigger: &'static str, outcome: &'static str, n: usize) {
        if n > 0 {
            self.hotplugs
                .get_or_create(&vec![
                    ("trigger", trigger.to_string()),
                    ("outcome", outcome.to_string()),
                ])
                .inc_by(n as u64);
        }
    }

    /// A hot-plug attempt: a sandbox reconciled, or a `/delegate` call.
    pub fn hotplug_attempt(&self, trigger: &'static str) {
        self.hotplug_attempts
            .get_or_create(&vec![("trigger", trigger.to_string())])
            .inc();
    }

    /// A hot-plug's latency (see `plexus_hotplug_duration_seconds`).
    pub fn hotplug_latency(&self, trigger: &'static str, elapsed: Duration) {
        self.hotplug_latency
            .get_or_create(&vec![("trigger", trigger.to_string())])
            .observe(elapsed.as_secs_f64());
    }

    /// A network-status write after the reply ended.
    pub fn status_write(&self, outcome: StatusWriteOutcome, elapsed: Duration) {
        self.status_writes
            .get_or_create(&vec![("outcome", outcome.label().to_string())])
            .inc();
        self.status_delay.observe(elapsed.as_secs_f64());
    }

    /// A request refused for a full queue.
    pub fn rejected(&self) {
        self.rejected.inc();
    }

    /// The text exposition, with the cache gauges read now.
    pub fn render(&self, cache: Option<&NodeCache>, ready: bool) -> String {
        if let Some(c) = cache {
            let s = c.stats();
            for (kind, n, stale, restarts) in [
                ("pods", s.pods, s.pods_staleness, s.errors.0),
                (
                    "network-attachment-definitions",
                    s.nads,
                    s.nads_staleness,
                    s.errors.1,
                ),
            ] {
                let l = vec![("kind", kind.to_string())];
                self.cache_objects.get_or_create(&l).set(n as i64);
                self.cache_staleness
                    .get_or_create(&l)
                    .set(stale.unwrap_or(-1.0));
                self.cache_restarts.get_or_create(&l).set(restarts as i64);
            }
            self.cache_synced.set(i64::from(s.synced));
            self.hotplug_queue
                .set(i64::try_from(c.changed_pods().depth()).unwrap_or(i64::MAX));
            self.cache_nads_loaded
                .set(i64::try_from(s.nads_loaded).unwrap_or(i64::MAX));
        }
        self.ready.set(i64::from(ready));
        // The kills happen in the lock code, which knows no metrics: the counter catches up here.
        let killed = crate::store::lock::orphans_killed();
        let shown = self.orphans_killed.get();
        if killed > shown {
            self.orphans_killed.inc_by(killed - shown);
        }
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

impl ApiObserver for Metrics {
    fn api_request(&self, what: &'static str, elapsed: Duration, outcome: ApiOutcome) {
        let code = match outcome {
            ApiOutcome::Ok => "2xx".to_string(),
            ApiOutcome::Status(c) => c.to_string(),
            ApiOutcome::Failed => "none".to_string(),
        };
        self.api
            .get_or_create(&vec![("request", what.to_string()), ("code", code)])
            .observe(elapsed.as_secs_f64());
    }

    fn cache_lookup(&self, kind: &'static str, hit: bool) {
        self.lookups
            .get_or_create(&vec![
                ("kind", kind.to_string()),
                ("result", if hit { "hit" } else { "miss" }.to_string()),
            ])
            .inc();
    }
}

/// The exec seam with each delegate run timed.
pub struct MeteredExec<'a> {
    /// What runs the processes.
    pub inner: &'a dyn Exec,
    /// Where the timings go.
    pub metrics: &'a Metrics,
}

impl Exec for MeteredExec<'_> {
    fn find(
        &self,
        plugin_type: &str,
        dirs: &[std::path::PathBuf],
    ) -> Result<std::path::PathBuf, ExecError> {
        self.inner.find(plugin_type, dirs)
    }

    fn run(&self, req: &ExecRequest<'_>) -> Result<ExecOutput, ExecError> {
        let started = Instant::now();
        let out = self.inner.run(req);
        let plugin = req
            .plugin
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let verb = req
            .env
            .iter()
            .find(|(k, _)| k == "CNI_COMMAND")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let result = match &out {
            Ok(_) => "ok".to_string(),
            Err(ExecError::Plugin { reply, .. }) => reply.code.to_string(),
            Err(_) => "failed".to_string(),
        };
        self.metrics
            .delegates
            .get_or_create(&vec![
                ("plugin", plugin),
                ("verb", verb),
                ("result", result),
            ])
            .observe(started.elapsed().as_secs_f64());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_family_and_counts_what_happened() {
        let m = Metrics::new();
        m.request("ADD", "ok", Duration::from_millis(3));
        m.request("DEL", "11", Duration::from_millis(1));
        m.http("cni", 200, "POST");
        m.api_request("get pod", Duration::from_millis(2), ApiOutcome::Status(404));
        m.cache_lookup("pod", true);
        m.cache_lookup("pod", true);
        m.in_flight.set(2);
        m.nads_missing_plugins.set(2);
        m.nads_refused_plugins.set(1);
        m.rejected();
        let text = m.render(None, true);
        for needle in [
            "plexus_cni_request_duration_seconds_count{verb=\"ADD\",result=\"ok\"} 1",
            "plexus_cni_request_duration_seconds_count{verb=\"DEL\",result=\"11\"} 1",
            "plexus_api_request_duration_seconds_count{request=\"get pod\",code=\"404\"} 1",
            "plexus_cache_lookups_total{kind=\"pod\",result=\"hit\"} 2",
            "plexus_requests_in_flight 2",
            "plexus_requests_rejected_total 1",
            "multus_server_request_total{handler=\"cni\",code=\"200\",method=\"POST\"} 1",
            "plexus_ready 1",
            "plexus_nads_missing_plugins 2",
            "plexus_nads_refused_plugins 1",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(m.render(None, false).contains("plexus_ready 0"));
    }

    /// The count of orphans the lock code killed (`store::lock` tests make it move) is shown as it is at
    /// each render; other tests kill meanwhile, so the value is bounded by the counts around the render.
    #[test]
    fn the_orphans_killed_counter_shows_the_lock_codes_count() {
        let m = Metrics::new();
        let before = crate::store::lock::orphans_killed();
        let text = m.render(None, true);
        let after = crate::store::lock::orphans_killed();
        let shown: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("plexus_orphans_killed_total "))
            .unwrap_or_else(|| panic!("no plexus_orphans_killed_total in\n{text}"))
            .parse()
            .unwrap();
        assert!(
            (before..=after).contains(&shown),
            "{before} <= {shown} <= {after}"
        );
    }

    /// Hot-plug's attempts, outcomes (by trigger) and latency each move when told.
    #[test]
    fn hotplug_attempts_outcomes_and_latency_are_counted_by_trigger() {
        let m = Metrics::new();
        m.hotplug_attempt("annotation");
        m.hotplug_attempt("delegate");
        m.hotplug_attempt("delegate");
        m.hotplugged("annotation", "attached", 2);
        m.hotplugged("delegate", "failed", 1);
        m.hotplugged("delegate", "detached", 0);
        m.hotplug_latency("annotation", Duration::from_millis(40));
        m.hotplug_latency("delegate", Duration::from_millis(3));
        let text = m.render(None, true);
        for needle in [
            "plexus_hotplug_attempts_total{trigger=\"annotation\"} 1",
            "plexus_hotplug_attempts_total{trigger=\"delegate\"} 2",
            "plexus_hotplugs_total{trigger=\"annotation\",outcome=\"attached\"} 2",
            "plexus_hotplugs_total{trigger=\"delegate\",outcome=\"failed\"} 1",
            "plexus_hotplug_duration_seconds_count{trigger=\"annotation\"} 1",
            "plexus_hotplug_duration_seconds_sum{trigger=\"delegate\"} 0.003",
            "plexus_hotplug_queue_depth 0",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(
            !text.contains("outcome=\"detached\""),
            "none detached: {text}"
        );
    }
}
