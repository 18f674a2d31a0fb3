//! The daemon's watch caches as a layer around the API (issue 8): a pod the watch has seen with the UID
//! the runtime names, and a NAD the cache holds loaded, are answered without a request; everything else is
//! asked of the inner [`Cluster`], and a NAD read there is offered to the cache (loaded when it is what the
//! watch last reported). Each lookup is told to the metrics, hit or miss.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use super::{nadcache::Lookup, observe::ApiObserver, watch::NodeCache};
use crate::{
    pure::request::PodRef,
    seams::{
        cluster::{Cluster, ClusterError, DeferredStatus, Nad, NadKey, NadsError, Reads, Written},
        devices::DraDevices,
    },
};

/// `inner` with the daemon's watch caches in front (none: every read goes to `inner`).
pub struct Cached<C> {
    /// What a lookup the caches cannot answer is asked of.
    pub inner: C,
    cache: Option<Arc<NodeCache>>,
    observer: Option<Arc<dyn ApiObserver>>,
}

impl<C: Cluster> Cached<C> {
    /// `inner` behind `cache`, lookups told to `observer`.
    pub fn new(
        inner: C,
        cache: Option<Arc<NodeCache>>,
        observer: Option<Arc<dyn ApiObserver>>,
    ) -> Cached<C> {
        Cached {
            inner,
            cache,
            observer,
        }
    }

    fn note_lookup(&self, kind: &'static str, hit: bool) {
        if let Some(o) = &self.observer {
            o.cache_lookup(kind, hit);
        }
    }

    /// The cached pod when the watch has seen it with the UID the runtime names (a pod recreated under the
    /// same name may not have reached the cache yet: then the API is asked).
    fn pod(&self, pod_ref: &PodRef) -> Option<Pod> {
        let cache = self.cache.as_ref()?;
        let hit = cache
            .pod(&pod_ref.namespace, &pod_ref.name)
            .filter(|p| match (&pod_ref.uid, &p.metadata.uid) {
                (Some(want), Some(got)) => want == got,
                _ => true,
            })
            .map(|p| (*p).clone());
        self.note_lookup("pod", hit.is_some());
        hit
    }

    /// The NAD when the cache holds it loaded (those this node uses); one held compact, or not seen (just
    /// created, or absent), is asked of the API, so a miss is never taken for "does not exist".
    fn nad(&self, (namespace, name): &NadKey) -> Option<Nad> {
        let cache = self.cache.as_ref()?;
        let hit = match cache.nad(namespace, name) {
            Lookup::Loaded(nad) => Some(Nad {
                config: nad.config.clone(),
                resource_name: nad.resource_name.clone(),
            }),
            Lookup::Compact | Lookup::Unknown => None,
        };
        self.note_lookup("network-attachment-definition", hit.is_some());
        hit
    }

    /// Each of `keys` as the cache answers it, and those it does not (to ask the API), in order.
    fn lookup(&self, keys: &[NadKey]) -> (Vec<Option<Nad>>, Vec<NadKey>) {
        let hits: Vec<Option<Nad>> = keys.iter().map(|k| self.nad(k)).collect();
        let misses = keys
            .iter()
            .zip(&hits)
            .filter(|(_, hit)| hit.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        (hits, misses)
    }

    /// A NAD read from the API loads it (`NodeCache::offer_nad`).
    fn offer(&self, (namespace, name): &NadKey, nad: &Nad) {
        if let Some(cache) = &self.cache {
            cache.nad_cache().offer(
                namespace,
                name,
                nad.config.clone(),
                nad.resource_name.clone(),
            );
        }
    }
}

impl<C: Cluster> Cluster for Cached<C> {
    fn read(&self, pod_ref: Option<&PodRef>, keys: &[NadKey]) -> Reads {
        let pod = pod_ref.and_then(|p| self.pod(p));
        let (hits, misses) = self.lookup(keys);
        let ask_pod = pod_ref.filter(|_| pod.is_none());
        let asked = if ask_pod.is_none() && misses.is_empty() {
            Reads::default()
        } else {
            self.inner.read(ask_pod, &misses)
        };
        let mut read = misses.iter().zip(asked.nads);
        let nads = hits
            .into_iter()
            .map(|hit| match hit {
                Some(nad) => Ok(Some(nad)),
                None => {
                    let (key, answer) = read.next().expect("one answer per NAD asked");
                    if let Ok(Some(nad)) = &answer {
                        self.offer(key, nad);
                    }
                    answer
                }
            })
            .collect();
        Reads {
            pod: pod.map(Ok).or(asked.pod),
            nads,
        }
    }

    fn read_nads_in_order(&self, keys: &[NadKey]) -> Result<Vec<Nad>, NadsError> {
        let (hits, misses) = self.lookup(keys);
        // A hit never fails, so the first failure among the misses is the first in order.
        let read = if misses.is_empty() {
            Vec::new()
        } else {
            self.inner.read_nads_in_order(&misses)?
        };
        for (key, nad) in misses.iter().zip(&read) {
            self.offer(key, nad);
        }
        let mut read = read.into_iter();
        Ok(hits
            .into_iter()
            .map(|hit| hit.unwrap_or_else(|| read.next().expect("one NAD per miss")))
            .collect())
    }

    fn write_status(&self, job: &DeferredStatus) -> Result<Written, ClusterError> {
        self.inner.write_status(job)
    }

    fn dra_devices(&self, pod_ref: &PodRef, pod: &Pod) -> Result<DraDevices, ClusterError> {
        self.inner.dra_devices(pod_ref, pod)
    }
}
