//! ADD's network-status write after the reply (`statusWrite: "afterReply"`, the daemon's default): sent as
//! soon as the reply is out, retried with backoff while the API is unavailable (for `statusRetrySeconds`),
//! superseded by a newer ADD of the same pod or a DEL of the same container, and never two at once for one
//! pod. The `AddedInterface` events follow a write that lands; a Warning event on the pod and an error in
//! the log follow one that never does. Graceful shutdown waits for the writes still pending.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Event;

use super::metrics::{Metrics, StatusWriteOutcome as Outcome};
use crate::seams::k8s::{
    client::{ApiCluster, DeferredStatus, StatusFailure, describe_error, status_failure},
    events::event,
};

/// Where the writes go: the API (an [`ApiCluster`] over the daemon's client), or a fake in tests.
pub trait StatusSink: Send + Sync + 'static {
    /// One attempt at the write.
    fn patch(
        &self,
        job: &DeferredStatus,
    ) -> impl Future<Output = Result<(), (StatusFailure, String)>> + Send;
    /// Post events, in order; best effort.
    fn post(&self, events: Vec<Event>) -> impl Future<Output = ()> + Send;
}

impl StatusSink for ApiCluster {
    async fn patch(&self, job: &DeferredStatus) -> Result<(), (StatusFailure, String)> {
        self.patch_status_once(job)
            .await
            .map_err(|e| (status_failure(&e), describe_error(&e)))
    }

    async fn post(&self, events: Vec<Event>) {
        self.post_events(events).await;
    }
}

/// The latest write of one pod.
struct Slot {
    generation: u64,
    container: String,
    /// Held across each attempt: one write per pod at a time, so an older one never lands after a newer.
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// A pod: namespace and name.
type PodKey = (String, String);

/// The last generation handed out, and each pod's latest write.
type Slots = (u64, HashMap<PodKey, Slot>);

/// The daemon's status writes.
pub struct StatusWriter {
    retry_for: Duration,
    first_pause: Duration,
    metrics: Option<Arc<Metrics>>,
    pending: AtomicUsize,
    pods: Mutex<Slots>,
}

impl StatusWriter {
    /// Writes retried for `retry_for` while the API is unavailable, counted in `metrics`.
    pub fn new(retry_for: Duration, metrics: Option<Arc<Metrics>>) -> Arc<StatusWriter> {
        Arc::new(StatusWriter {
            retry_for,
            first_pause: Duration::from_millis(50),
            metrics,
            pending: AtomicUsize::new(0),
            pods: Mutex::new((0, HashMap::new())),
        })
    }

    /// Writes submitted and not yet ended, or whose events are still being posted (the drain waits for
    /// them).
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The turn of `pod`'s write `generation`, or `None` when a newer one (or a DEL) superseded it.
    fn current(&self, pod: &PodKey, generation: u64) -> Option<Arc<tokio::sync::Mutex<()>>> {
        self.slots()
            .1
            .get(pod)
            .filter(|s| s.generation == generation)
            .map(|s| s.turn.clone())
    }

    /// Take `job` (the ADD of `container`) for writing: it is pending from now on (so call this before the
    /// reply), and any earlier write of the same pod still pending is superseded. The returned future does
    /// the write; spawn it once the reply is on its way.
    pub fn submit<S: StatusSink>(
        self: &Arc<Self>,
        sink: Arc<S>,
        container: &str,
        job: DeferredStatus,
    ) -> impl Future<Output = Outcome> + Send + 'static {
        self.submit_then(sink, container, job, |_| {})
    }

    /// [`StatusWriter::submit`], with `ended` called as soon as the write has ended (landed, failed or been
    /// superseded), before its events are posted: the moment the pod's network-status is (or is not) there.
    pub fn submit_then<S: StatusSink>(
        self: &Arc<Self>,
        sink: Arc<S>,
        container: &str,
        job: DeferredStatus,
        ended: impl FnOnce(Outcome) + Send + 'static,
    ) -> impl Future<Output = Outcome> + Send + 'static {
        let pod = (job.pod.namespace.clone(), job.pod.name.clone());
        let generation = {
            let mut slots = self.slots();
            slots.0 += 1;
            let generation = slots.0;
            let turn = slots
                .1
                .get(&pod)
                .map_or_else(Default::default, |s| s.turn.clone());
            slots.1.insert(
                pod.clone(),
                Slot {
                    generation,
                    container: container.to_string(),
                    turn,
                },
            );
            generation
        };
        self.pending.fetch_add(1, Ordering::SeqCst);
        if let Some(m) = &self.metrics {
            m.status_pending.inc();
        }
        let this = self.clone();
        let submitted = Instant::now();
        async move {
            let outcome = this.write(&*sink, &pod, generation, &job).await;
            {
                let mut slots = this.slots();
                if slots
                    .1
                    .get(&pod)
                    .is_some_and(|s| s.generation == generation)
                {
                    slots.1.remove(&pod);
                }
            }
            // The write has ended (what `plexus_status_writes_pending` counts); its events follow.
            if let Some(m) = &this.metrics {
                m.status_write(outcome, submitted.elapsed());
                m.status_pending.dec();
            }
            ended(outcome);
            match outcome {
                Outcome::Written => sink.post(job.added).await,
                Outcome::Failed => {
                    if let Some(pod) = &job.involved {
                        let warning = event(
                            pod,
                            "Warning",
                            "NetworkStatusNotWritten",
                            "plexus could not write the k8s.v1.cni.cncf.io/network-status annotation; \
                             the pod's networks are attached (see the plexus daemon's log)"
                                .to_string(),
                        );
                        sink.post(vec![warning]).await;
                    }
                }
                Outcome::Gone | Outcome::Superseded => {}
            }
            this.pending.fetch_sub(1, Ordering::SeqCst);
            outcome
        }
    }

    async fn write<S: StatusSink>(
        &self,
        sink: &S,
        pod: &PodKey,
        generation: u64,
        job: &DeferredStatus,
    ) -> Outcome {
        let started = Instant::now();
        let mut pause = self.first_pause;
        let who = format!("{}/{}", pod.0, pod.1);
        loop {
            let Some(turn) = self.current(pod, generation) else {
                return Outcome::Superseded;
            };
            let held = turn.lock().await;
            if self.current(pod, generation).is_none() {
                return Outcome::Superseded;
            }
            let (kind, why) = match sink.patch(job).await {
                Ok(()) => return Outcome::Written,
                Err(e) => e,
            };
            drop(held);
            match kind {
                StatusFailure::Gone => {
                    tracing::warn!("pod {who} is gone; network-status not written");
                    return Outcome::Gone;
                }
                StatusFailure::Refused => {
                    tracing::error!(
                        "network-status of pod {who} not written: the API refused it: {why} \
                         (check plexus's credentials and its RBAC: patch pods/status)"
                    );
                    return Outcome::Failed;
                }
                StatusFailure::Retry if started.elapsed() + pause > self.retry_for => {
                    tracing::error!(
                        "network-status of pod {who} not written: the API was unavailable for {}s \
                         (statusRetrySeconds): {why}",
                        self.retry_for.as_secs()
                    );
                    return Outcome::Failed;
                }
                StatusFailure::Retry => {
                    tracing::warn!(
                        "network-status of pod {who}: {why}; trying again in {} ms",
                        pause.as_millis()
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Whether a write of pod `namespace/name` is pending.
    pub fn is_pending(&self, namespace: &str, name: &str) -> bool {
        self.slots()
            .1
            .contains_key(&(namespace.to_string(), name.to_string()))
    }

    /// A DEL of `container` arrived: a write of its ADD still pending is dropped (the sandbox is going).
    pub fn cancel(&self, container: &str) {
        self.slots().1.retain(|_, s| s.container != container);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use k8s_openapi::api::core::v1::ObjectReference;

    use super::*;
    use crate::pure::request::PodRef;

    /// Answers each write from a script (then succeeds); records the writes and the posted events.
    #[derive(Default)]
    struct Fake {
        answers: Mutex<VecDeque<Result<(), StatusFailure>>>,
        /// Each write waits this long first (so a test can overtake it).
        delay: Duration,
        writes: Mutex<Vec<String>>,
        posted: Mutex<Vec<String>>,
    }

    impl Fake {
        fn answering(answers: &[Result<(), StatusFailure>]) -> Arc<Fake> {
            Arc::new(Fake {
                answers: Mutex::new(answers.iter().copied().collect()),
                ..Fake::default()
            })
        }
        fn writes(&self) -> Vec<String> {
            self.writes.lock().unwrap().clone()
        }
        fn posted(&self) -> Vec<String> {
            self.posted.lock().unwrap().clone()
        }
    }

    impl StatusSink for Fake {
        async fn patch(&self, job: &DeferredStatus) -> Result<(), (StatusFailure, String)> {
            tokio::time::sleep(self.delay).await;
            self.writes
                .lock()
                .unwrap()
                .push(job.pod.uid.clone().unwrap_or_default());
            match self.answers.lock().unwrap().pop_front() {
                Some(Err(kind)) => Err((kind, format!("{kind:?}"))),
                _ => Ok(()),
            }
        }
        async fn post(&self, events: Vec<Event>) {
            let mut posted = self.posted.lock().unwrap();
            posted.extend(events.into_iter().map(|e| e.reason.unwrap_or_default()));
        }
    }

    /// A job for pod `ns/name`, its UID standing for the ADD it records, with one `AddedInterface` event.
    fn job(name: &str, add: &str) -> DeferredStatus {
        let pod = PodRef {
            namespace: "ns".into(),
            name: name.into(),
            uid: Some(add.into()),
            infra_container_id: None,
        };
        let involved = ObjectReference {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            ..Default::default()
        };
        let added = vec![event(&involved, "Normal", "AddedInterface", "net1".into())];
        DeferredStatus::new(pod, Some(involved), serde_json::json!({}), added)
    }

    /// A writer whose first retry waits `pause`.
    fn writer(retry_for: Duration, pause: u64) -> Arc<StatusWriter> {
        let mut w = StatusWriter::new(retry_for, Some(Metrics::new()));
        Arc::get_mut(&mut w).unwrap().first_pause = Duration::from_millis(pause);
        w
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn an_unavailable_api_is_retried_and_the_events_follow_the_write() {
        let w = writer(Duration::from_secs(30), 1);
        let sink = Fake::answering(&[Err(StatusFailure::Retry), Err(StatusFailure::Retry)]);
        let write = w.submit(sink.clone(), "c1", job("p", "a1"));
        assert_eq!(
            w.pending(),
            1,
            "pending from the submit on, before the reply"
        );
        assert!(sink.posted().is_empty());
        assert_eq!(rt().block_on(write), Outcome::Written);
        assert_eq!(sink.writes(), ["a1", "a1", "a1"]);
        assert_eq!(sink.posted(), ["AddedInterface"]);
        assert_eq!(w.pending(), 0);
        let m = w.metrics.as_ref().unwrap().render(None, true);
        assert!(
            m.contains(r#"plexus_status_writes_total{outcome="written"} 1"#),
            "{m}"
        );
        assert!(m.contains("plexus_status_writes_pending 0"), "{m}");
    }

    /// What waits for a status write to land (hot-plug's latency) is told when it lands, not after the
    /// events that follow it.
    #[test]
    fn the_end_of_a_write_is_told_before_its_events_are_posted() {
        let w = writer(Duration::from_secs(30), 1);
        let sink = Fake::answering(&[]);
        let seen = Arc::new(Mutex::new(None));
        let write = w.submit_then(sink.clone(), "c1", job("p", "a1"), {
            let (sink, seen) = (sink.clone(), seen.clone());
            move |outcome| *seen.lock().unwrap() = Some((outcome, sink.writes(), sink.posted()))
        });
        assert_eq!(rt().block_on(write), Outcome::Written);
        let told = seen.lock().unwrap().clone();
        assert_eq!(
            told,
            Some((Outcome::Written, vec!["a1".to_string()], Vec::new())),
            "told once written, with no event posted yet"
        );
        assert_eq!(sink.posted(), ["AddedInterface"]);
    }

    #[test]
    fn a_deleted_pod_ends_the_write_quietly_and_a_refusal_warns_on_the_pod() {
        let w = writer(Duration::from_secs(30), 1);
        let sink = Fake::answering(&[Err(StatusFailure::Gone)]);
        assert_eq!(
            rt().block_on(w.submit(sink.clone(), "c1", job("p", "a1"))),
            Outcome::Gone
        );
        assert!(sink.posted().is_empty(), "no AddedInterface, no Warning");

        // A refusal (RBAC, credentials) is not retried: it would only be refused again.
        let sink = Fake::answering(&[Err(StatusFailure::Refused)]);
        assert_eq!(
            rt().block_on(w.submit(sink.clone(), "c1", job("p", "a1"))),
            Outcome::Failed
        );
        assert_eq!(sink.writes().len(), 1);
        assert_eq!(sink.posted(), ["NetworkStatusNotWritten"]);
        assert_eq!(w.pending(), 0);
    }

    #[test]
    fn an_api_down_longer_than_status_retry_seconds_fails_the_write() {
        let w = writer(Duration::from_millis(40), 1);
        let sink = Fake::answering(&[Err(StatusFailure::Retry); 100]);
        let started = Instant::now();
        assert_eq!(
            rt().block_on(w.submit(sink.clone(), "c1", job("p", "a1"))),
            Outcome::Failed
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(sink.writes().len() >= 2, "retried: {:?}", sink.writes());
        assert_eq!(sink.posted(), ["NetworkStatusNotWritten"]);
    }

    #[test]
    fn a_newer_add_of_the_pod_supersedes_a_write_still_retrying() {
        // The first retry waits long enough for the test to overtake it.
        let w = writer(Duration::from_secs(30), 300);
        // The first write fails and backs off; meanwhile the pod's sandbox is re-created and ADDed again.
        let sink = Fake::answering(&[Err(StatusFailure::Retry)]);
        rt().block_on(async {
            let old = tokio::spawn(w.submit(sink.clone(), "c1", job("p", "old")));
            while sink.writes().is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let new = tokio::spawn(w.submit(sink.clone(), "c2", job("p", "new")));
            assert_eq!(new.await.unwrap(), Outcome::Written);
            assert_eq!(old.await.unwrap(), Outcome::Superseded);
        });
        // The old status never lands after the new one.
        assert_eq!(sink.writes(), ["old", "new"]);
        assert_eq!(sink.posted(), ["AddedInterface"]);
        assert_eq!(w.pending(), 0);
    }

    #[test]
    fn writes_of_one_pod_never_overlap_and_other_pods_do_not_wait() {
        let w = writer(Duration::from_secs(30), 1);
        let sink = Arc::new(Fake {
            delay: Duration::from_millis(30),
            ..Fake::default()
        });
        rt().block_on(async {
            // "a1" is in flight when "a2" arrives: "a2" waits its turn, then writes; "b" runs alongside.
            let a1 = tokio::spawn(w.submit(sink.clone(), "c1", job("a", "a1")));
            tokio::time::sleep(Duration::from_millis(5)).await;
            let a2 = tokio::spawn(w.submit(sink.clone(), "c2", job("a", "a2")));
            let b = tokio::spawn(w.submit(sink.clone(), "c3", job("b", "b")));
            assert_eq!(a1.await.unwrap(), Outcome::Written);
            assert_eq!(a2.await.unwrap(), Outcome::Written);
            assert_eq!(b.await.unwrap(), Outcome::Written);
        });
        assert_eq!(sink.writes(), ["a1", "b", "a2"]);
    }

    #[test]
    fn a_del_of_the_container_drops_its_pending_write() {
        let w = writer(Duration::from_secs(30), 300);
        let sink = Fake::answering(&[Err(StatusFailure::Retry)]);
        let other = Fake::answering(&[]);
        rt().block_on(async {
            let write = tokio::spawn(w.submit(sink.clone(), "c1", job("p", "a1")));
            let unrelated = w.submit(other.clone(), "c9", job("q", "q1"));
            while sink.writes().is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            w.cancel("c1");
            assert_eq!(write.await.unwrap(), Outcome::Superseded);
            assert_eq!(
                unrelated.await,
                Outcome::Written,
                "other containers untouched"
            );
        });
        assert_eq!(sink.writes(), ["a1"]);
        assert!(sink.posted().is_empty());
        assert_eq!(w.pending(), 0);
    }
}
