//! The daemon's NAD cache (issue 20): a compact entry for every NAD of the cluster, and the whole config only
//! for the NADs this node uses, so the daemon's memory grows with what its pods select, not with the cluster.
//! docs/daemon.md ("The NAD cache") gives the design and the measured numbers.
//!
//! - Every NAD the watch reports keeps its name, a fingerprint of its `spec.config` and `resourceName`
//!   annotation, and the plugin and IPAM types its config names (shared between NADs naming the same types),
//!   which the missing-plugin report needs (`crate::edges::daemon::plugin_check`).
//! - A NAD is *loaded* (its config and `resourceName` kept) while a pod of this node selects it, or for
//!   [`RETAIN`] after a request last read it (the node's own `clusterNetwork`/`defaultNetworks` NADs, which no
//!   pod annotation names). The watch keeps a loaded NAD current, as it did every NAD before.
//! - A NAD that becomes wanted while compact is loaded by one GET ([`NadCache::select`] says which), or by
//!   the request that needed it ([`NadCache::offer`]); a fetched copy is kept only when its fingerprint is the
//!   one the watch last reported, so an older read never overwrites a newer event.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{
        Arc, RwLock, RwLockReadGuard, RwLockWriteGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::{NamespaceResourceScope, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::Resource;
use serde::{
    Deserialize, Deserializer,
    de::{IgnoredAny, MapAccess, SeqAccess, Visitor},
};
use serde_json::{Value, json};

use crate::pure::netconf::NetworkConfig;
use crate::{
    pure::annotations::RESOURCE_NAME_ANNOTATION, seams::k8s::nad::NetworkAttachmentDefinition,
};

/// How long a NAD no pod of the node selects stays loaded after a request last read it.
pub const RETAIN: Duration = Duration::from_secs(3600);

/// `(namespace, name)`.
pub type NadKey = (String, String);

/// What [`NadCache::with_each`] goes over: `(namespace, name, fingerprint, plugin types)`.
pub type NadIter<'a> = dyn Iterator<Item = (&'a str, &'a str, u64, Option<&'a PluginTypes>)> + 'a;

/// The binaries a NAD's config needs, each list without repeats, in order: its plugins' types (not those
/// plexus serves itself), and their `ipam.type`s, which the plugins run themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PluginTypes {
    /// The plugins plexus starts.
    pub plugins: Box<[Box<str>]>,
    /// The IPAM plugins those start.
    pub ipam: Box<[Box<str>]>,
}

/// A NAD as the watch decodes it: name, namespace, resourceVersion, the `resourceName` annotation and
/// `spec.config`. Everything else is skipped while decoding (no `serde_json::Value`, no managedFields, no
/// other annotations), so a list page costs little more than its text.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WatchedNad {
    #[serde(default, deserialize_with = "lean_meta")]
    metadata: ObjectMeta,
    #[serde(default, rename = "spec", deserialize_with = "spec_config")]
    config: Option<String>,
}

impl WatchedNad {
    /// `spec.config`, when it is a string.
    pub fn config(&self) -> Option<&str> {
        self.config.as_deref()
    }

    /// The `resourceName` annotation.
    pub fn resource_name(&self) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()?
            .get(RESOURCE_NAME_ANNOTATION)
            .map(String::as_str)
    }

    fn key(&self) -> (&str, &str) {
        (
            self.metadata.namespace.as_deref().unwrap_or_default(),
            self.metadata.name.as_deref().unwrap_or_default(),
        )
    }
}

// The watch and the loader's GET need kube's `Resource`; the API coordinates are the CRD type's own.
impl Resource for WatchedNad {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        NetworkAttachmentDefinition::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        NetworkAttachmentDefinition::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        NetworkAttachmentDefinition::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        NetworkAttachmentDefinition::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The metadata fields the cache reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default, deserialize_with = "resource_name_only")]
    annotations: Option<String>,
}

fn lean_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = LeanMeta::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        resource_version: m.resource_version,
        annotations: m
            .annotations
            .map(|v| BTreeMap::from([(RESOURCE_NAME_ANNOTATION.to_string(), v)])),
        ..ObjectMeta::default()
    })
}

/// Whether the next key of `map` is `want` (`None` after the last), compared without being copied.
fn key_is<'de, A: MapAccess<'de>>(
    map: &mut A,
    want: &'static str,
) -> Result<Option<bool>, A::Error> {
    struct Is(&'static str);
    impl Visitor<'_> for Is {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string key")
        }
        fn visit_str<E>(self, v: &str) -> Result<bool, E> {
            Ok(v == self.0)
        }
    }
    impl<'de> serde::de::DeserializeSeed<'de> for Is {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_str(self)
        }
    }
    map.next_key_seed(Is(want))
}

/// A string, or `None` for any other JSON value (a NAD the schema did not check must not stop the watch).
struct LenientString(Option<String>);

impl<'de> Deserialize<'de> for LenientString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LenientString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<LenientString, E> {
                Ok(LenientString(Some(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<LenientString, E> {
                Ok(LenientString(Some(v)))
            }
            fn visit_unit<E>(self) -> Result<LenientString, E> {
                Ok(LenientString(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<LenientString, E> {
                Ok(LenientString(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<LenientString, E> {
                Ok(LenientString(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<LenientString, E> {
                Ok(LenientString(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<LenientString, E> {
                Ok(LenientString(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LenientString, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(LenientString(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LenientString, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(LenientString(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// The value under key `want` of a JSON object, when it is a string; other keys are skipped unread, and a
/// value that is not an object is `None`.
fn string_under<'de, D: Deserializer<'de>>(
    d: D,
    want: &'static str,
) -> Result<Option<String>, D::Error> {
    struct V(&'static str);
    impl<'de> Visitor<'de> for V {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
            let mut found = None;
            while let Some(is) = key_is(&mut map, self.0)? {
                if is {
                    found = map.next_value::<LenientString>()?.0;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
        fn visit_unit<E>(self) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<String>, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }
    d.deserialize_any(V(want))
}

fn resource_name_only<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    string_under(d, RESOURCE_NAME_ANNOTATION)
}

fn spec_config<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    string_under(d, "config")
}

/// What a loaded NAD keeps: what the requests read of it.
#[derive(Debug)]
pub struct NadData {
    /// `spec.config`.
    pub config: Option<String>,
    /// The `resourceName` annotation.
    pub resource_name: Option<String>,
    /// Seconds after the cache's start when a request last read it.
    last_used: AtomicU64,
}

/// What the cache holds of one NAD.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The whole NAD: a request needs no API read.
    Loaded(Arc<NadData>),
    /// The NAD exists (as the watch last said) but is not loaded.
    Compact,
    /// The watch has not reported it (not created, or created a moment ago).
    Unknown,
}

/// One NAD of the cluster.
#[derive(Debug)]
struct Entry {
    /// Of `spec.config` and `resourceName`: a change is a new fingerprint, and a fetched copy is kept only
    /// when it has the fingerprint the watch last reported.
    fingerprint: u64,
    /// The plugin types its config names; `None`: no config, or one that does not parse.
    types: Option<Arc<PluginTypes>>,
    /// Set while the NAD is loaded.
    full: Option<Arc<NadData>>,
    /// The list that last reported it (a re-list forgets NADs it did not report).
    generation: u32,
}

#[derive(Debug, Default)]
struct State {
    /// namespace → name → entry.
    nads: HashMap<Box<str>, HashMap<Box<str>, Entry>>,
    len: usize,
    loaded: usize,
    /// NADs the node's pods select: namespace → names (looked up by `&str`, without a copy, for every NAD
    /// the watch reports).
    by_pods: HashMap<String, HashSet<String>>,
    /// Each distinct list of plugin types once (most NADs of a cluster name one of a few).
    type_sets: HashSet<Arc<PluginTypes>>,
    generation: u32,
}

impl State {
    fn entry(&self, ns: &str, name: &str) -> Option<&Entry> {
        self.nads.get(ns)?.get(name)
    }

    fn entry_mut(&mut self, ns: &str, name: &str) -> Option<&mut Entry> {
        self.nads.get_mut(ns)?.get_mut(name)
    }

    fn wanted(&self, ns: &str, name: &str) -> bool {
        selected(&self.by_pods, ns, name)
    }

    fn intern(&mut self, types: PluginTypes) -> Arc<PluginTypes> {
        if let Some(t) = self.type_sets.get(&types) {
            return t.clone();
        }
        let t = Arc::new(types);
        self.type_sets.insert(t.clone());
        t
    }
}

fn selected(by_pods: &HashMap<String, HashSet<String>>, ns: &str, name: &str) -> bool {
    by_pods.get(ns).is_some_and(|names| names.contains(name))
}

/// The fingerprint of a NAD's config and resourceName.
fn fingerprint(config: Option<&str>, resource_name: Option<&str>) -> u64 {
    let mut h = DefaultHasher::new();
    config.hash(&mut h);
    resource_name.hash(&mut h);
    h.finish()
}

/// The plugin binaries `config` names ([`PluginTypes`]); `None` when it does not parse as a network config.
pub fn plugin_types(config: &str) -> Option<PluginTypes> {
    let network = NetworkConfig::from_bytes(config.as_bytes()).ok()?;
    let (mut plugins, mut ipam): (Vec<Box<str>>, Vec<Box<str>>) = Default::default();
    let add = |list: &mut Vec<Box<str>>, t: &str| {
        if !list.iter().any(|l| **l == *t) {
            list.push(t.into());
        }
    };
    // plexus serves these itself: no binary is needed, and none runs an IPAM plugin.
    for p in network
        .plugins
        .iter()
        .filter(|p| !crate::seams::invoke::is_internal(&p.plugin_type))
    {
        add(&mut plugins, &p.plugin_type);
        if let Some(t) = p.ipam_type() {
            add(&mut ipam, t);
        }
    }
    Some(PluginTypes {
        plugins: plugins.into(),
        ipam: ipam.into(),
    })
}

/// The cache (see the module docs). Cheap to share behind an `Arc`; lookups take a read lock.
#[derive(Debug)]
pub struct NadCache {
    state: RwLock<State>,
    started: Instant,
}

impl Default for NadCache {
    fn default() -> Self {
        NadCache {
            state: RwLock::default(),
            started: Instant::now(),
        }
    }
}

impl NadCache {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// What the cache holds of `namespace/name`; a loaded NAD is marked as read now.
    pub fn get(&self, namespace: &str, name: &str) -> Lookup {
        let s = self.read();
        match s.entry(namespace, name) {
            Some(Entry {
                full: Some(full), ..
            }) => {
                full.last_used.store(self.now(), Ordering::Relaxed);
                Lookup::Loaded(full.clone())
            }
            Some(_) => Lookup::Compact,
            None => Lookup::Unknown,
        }
    }

    /// NADs known.
    pub fn len(&self) -> usize {
        self.read().len
    }

    /// Whether no NAD is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// NADs loaded.
    pub fn loaded(&self) -> usize {
        self.read().loaded
    }

    /// A NAD the watch reported (listed, added or changed): its compact entry is replaced, and it stays or
    /// becomes loaded with the new config when it was loaded or a pod of the node selects it.
    pub fn apply(&self, nad: &WatchedNad) {
        let (ns, name) = nad.key();
        let fp = fingerprint(nad.config(), nad.resource_name());
        let mut s = self.write();
        let generation = s.generation;
        if let Some(e) = s.entry_mut(ns, name)
            && e.fingerprint == fp
        {
            // Unchanged (a re-list, or a change to fields plexus does not read).
            e.generation = generation;
            return;
        }
        let types = nad.config().and_then(plugin_types).map(|t| s.intern(t));
        let was = s
            .entry(ns, name)
            .map(|e| e.full.as_ref().map(|f| f.last_used.load(Ordering::Relaxed)));
        let keep = matches!(was, Some(Some(_))) || s.wanted(ns, name);
        let full = keep.then(|| {
            Arc::new(NadData {
                config: nad.config.clone(),
                resource_name: nad.resource_name().map(str::to_string),
                last_used: AtomicU64::new(was.flatten().unwrap_or_else(|| self.now())),
            })
        });
        let entry = Entry {
            fingerprint: fp,
            types,
            full,
            generation,
        };
        self.put(&mut s, ns, name, entry);
    }

    fn put(&self, s: &mut State, ns: &str, name: &str, entry: Entry) {
        let loaded = entry.full.is_some();
        let old = match s.nads.get_mut(ns) {
            Some(m) => m.insert(name.into(), entry),
            None => {
                s.nads
                    .insert(ns.into(), HashMap::from([(name.into(), entry)]));
                None
            }
        };
        match &old {
            None => s.len += 1,
            Some(o) if o.full.is_some() => s.loaded -= 1,
            Some(_) => {}
        }
        if loaded {
            s.loaded += 1;
        }
    }

    /// A NAD the watch reported deleted.
    pub fn delete(&self, nad: &WatchedNad) {
        let (ns, name) = nad.key();
        let mut s = self.write();
        Self::remove(&mut s, ns, name);
    }

    fn remove(s: &mut State, ns: &str, name: &str) {
        let Some(m) = s.nads.get_mut(ns) else { return };
        if let Some(old) = m.remove(name) {
            s.len -= 1;
            if old.full.is_some() {
                s.loaded -= 1;
            }
        }
        if m.is_empty() {
            s.nads.remove(ns);
        }
    }

    /// A complete list begins: what it does not report is gone once it ends ([`NadCache::list_done`]).
    pub fn list_started(&self) {
        let mut s = self.write();
        s.generation = s.generation.wrapping_add(1);
    }

    /// The list ended: NADs it did not report were deleted meanwhile.
    pub fn list_done(&self) {
        let mut s = self.write();
        let generation = s.generation;
        let gone: Vec<(Box<str>, Box<str>)> = s
            .nads
            .iter()
            .flat_map(|(ns, m)| {
                m.iter()
                    .filter(|(_, e)| e.generation != generation)
                    .map(|(name, _)| (ns.clone(), name.clone()))
            })
            .collect();
        for (ns, name) in gone {
            Self::remove(&mut s, &ns, &name);
        }
        s.type_sets.retain(|t| Arc::strong_count(t) > 1);
    }

    /// The NADs the node's pods select now. Returns those of them that exist but are not loaded: the
    /// caller loads them ([`NadCache::offer`]) before a request needs them.
    pub fn select(&self, by_pods: HashSet<NadKey>) -> Vec<NadKey> {
        let mut s = self.write();
        let mut out: Vec<NadKey> = by_pods
            .iter()
            .filter(|(ns, name)| s.entry(ns, name).is_some_and(|e| e.full.is_none()))
            .cloned()
            .collect();
        out.sort();
        s.by_pods.clear();
        for (ns, name) in by_pods {
            s.by_pods.entry(ns).or_default().insert(name);
        }
        out
    }

    /// Whether `namespace/name` exists, is not loaded, and a pod of the node selects it.
    pub fn needs_load(&self, namespace: &str, name: &str) -> bool {
        let s = self.read();
        s.entry(namespace, name).is_some_and(|e| e.full.is_none()) && s.wanted(namespace, name)
    }

    /// A copy of `namespace/name` read from the API (by a request, or by the loader for a pod's selection):
    /// kept, and the NAD loaded, when it is what the watch last reported. A copy the watch has not caught up
    /// with (or that is older than its last event) is not kept: the watch's next event loads the NAD, since it
    /// is wanted. Says whether the NAD is loaded now.
    pub fn offer(
        &self,
        namespace: &str,
        name: &str,
        config: Option<String>,
        resource_name: Option<String>,
    ) -> bool {
        let fp = fingerprint(config.as_deref(), resource_name.as_deref());
        let now = self.now();
        let mut s = self.write();
        let Some(e) = s.entry_mut(namespace, name) else {
            return false;
        };
        if let Some(full) = &e.full {
            full.last_used.store(now, Ordering::Relaxed);
            return true;
        }
        if e.fingerprint != fp {
            return false;
        }
        e.full = Some(Arc::new(NadData {
            config,
            resource_name,
            last_used: AtomicU64::new(now),
        }));
        s.loaded += 1;
        true
    }

    /// Unload the NADs no pod of the node selects and no request read for `retain` before `now`. Returns
    /// how many were unloaded.
    pub fn sweep(&self, now: Instant, retain: Duration) -> usize {
        let now = now.saturating_duration_since(self.started).as_secs();
        let mut s = self.write();
        let State { nads, by_pods, .. } = &mut *s;
        let mut unloaded = 0;
        for (ns, m) in nads.iter_mut() {
            for (name, e) in m.iter_mut() {
                let Some(full) = &e.full else { continue };
                let idle = now.saturating_sub(full.last_used.load(Ordering::Relaxed));
                if idle >= retain.as_secs() && !selected(by_pods, ns, name) {
                    e.full = None;
                    unloaded += 1;
                }
            }
        }
        s.loaded -= unloaded;
        unloaded
    }

    /// `f` over every NAD's namespace, name, fingerprint and plugin types, under the read lock (the
    /// missing-plugin report; nothing is copied).
    pub fn with_each<R>(&self, f: impl FnOnce(&mut NadIter<'_>) -> R) -> R {
        let s = self.read();
        let mut it = s.nads.iter().flat_map(|(ns, m)| {
            m.iter()
                .map(move |(name, e)| (&**ns, &**name, e.fingerprint, e.types.as_deref()))
        });
        f(&mut it)
    }

    /// What the cache holds of `namespace/name`, as JSON for `GET /cache/...` on the daemon's socket: the
    /// NAD's identity, its `resourceName` and `spec.config` when loaded, and `cache` saying whether it is
    /// loaded and which plugins it names.
    pub fn view(&self, namespace: &str, name: &str) -> Option<Value> {
        let s = self.read();
        let e = s.entry(namespace, name)?;
        let mut v = json!({
            "apiVersion": NetworkAttachmentDefinition::api_version(&()),
            "kind": NetworkAttachmentDefinition::kind(&()),
            "metadata": {"namespace": namespace, "name": name},
            "cache": {"loaded": e.full.is_some(), "plugins": e.types.as_ref().map(|t| &*t.plugins)},
        });
        if let Some(full) = &e.full {
            if let Some(r) = &full.resource_name {
                v["metadata"]["annotations"] = json!({ RESOURCE_NAME_ANNOTATION: r });
            }
            v["spec"] = match &full.config {
                Some(c) => json!({ "config": c }),
                None => json!({}),
            };
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MACVLAN: &str = r#"{"cniVersion":"1.0.0","type":"macvlan","master":"eth0"}"#;

    fn watched(ns: &str, name: &str, config: Option<&str>) -> WatchedNad {
        let mut v = json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": "1"},
            "spec": {}
        });
        if let Some(c) = config {
            v["spec"]["config"] = json!(c);
        }
        serde_json::from_value(v).unwrap()
    }

    fn key(ns: &str, name: &str) -> NadKey {
        (ns.to_string(), name.to_string())
    }

    fn config_of(l: &Lookup) -> Option<String> {
        match l {
            Lookup::Loaded(d) => d.config.clone(),
            _ => None,
        }
    }

    #[test]
    fn the_watch_decodes_only_what_plexus_reads() {
        let nad: WatchedNad = serde_json::from_value(json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "a", "namespace": "ns", "resourceVersion": "42", "uid": "u",
                "labels": {"x": "y"},
                "annotations": {"k8s.v1.cni.cncf.io/resourceName": "intel.com/sriov",
                                "description": "x".repeat(200)},
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"config": MACVLAN, "extra": {"deep": [1, 2]}}
        }))
        .unwrap();
        assert_eq!(nad.config(), Some(MACVLAN));
        assert_eq!(nad.resource_name(), Some("intel.com/sriov"));
        assert_eq!(nad.meta().resource_version.as_deref(), Some("42"));
        assert_eq!(nad.meta().annotations.as_ref().unwrap().len(), 1);
        assert!(nad.meta().managed_fields.is_none() && nad.meta().labels.is_none());
        // What no schema checked does not stop the watch: a config that is not a string, a spec that is not
        // an object, null annotations.
        for (spec, annotations) in [
            (json!({"config": {"type": "macvlan"}}), json!(null)),
            (json!("text"), json!({})),
            (json!(null), json!({"k8s.v1.cni.cncf.io/resourceName": 7})),
        ] {
            let nad: WatchedNad = serde_json::from_value(json!({
                "metadata": {"name": "b", "namespace": "ns", "annotations": annotations},
                "spec": spec
            }))
            .unwrap();
            assert_eq!((nad.config(), nad.resource_name()), (None, None));
        }
    }

    /// A NAD no pod of the node selects is held compact: no config, only what the missing-plugin report
    /// needs. On main every NAD was held whole.
    #[test]
    fn a_nad_no_pod_selects_stays_compact() {
        let c = NadCache::default();
        c.apply(&watched("ns", "unused", Some(MACVLAN)));
        assert!(matches!(c.get("ns", "unused"), Lookup::Compact));
        assert!(matches!(c.get("ns", "other"), Lookup::Unknown));
        assert_eq!((c.len(), c.loaded()), (1, 0));
        let view = c.view("ns", "unused").unwrap();
        assert_eq!(
            view["cache"],
            json!({"loaded": false, "plugins": ["macvlan"]})
        );
        assert!(view.get("spec").is_none(), "{view}");
        let seen: Vec<String> = c.with_each(|it| {
            it.map(|(ns, name, _, types)| format!("{ns}/{name}:{types:?}"))
                .collect()
        });
        assert_eq!(
            seen,
            [r#"ns/unused:Some(PluginTypes { plugins: ["macvlan"], ipam: [] })"#]
        );
    }

    /// A NAD a pod of the node selects is loaded from the watch's own event, and the watch's next event
    /// reaches the loaded copy.
    #[test]
    fn a_selected_nad_is_loaded_and_kept_current_by_the_watch() {
        let c = NadCache::default();
        assert_eq!(
            c.select(HashSet::from([key("ns", "used")])),
            Vec::<NadKey>::new()
        );
        c.apply(&watched("ns", "used", Some(MACVLAN)));
        assert_eq!(config_of(&c.get("ns", "used")).as_deref(), Some(MACVLAN));
        let changed = r#"{"cniVersion":"1.0.0","type":"ipvlan","master":"eth1"}"#;
        c.apply(&watched("ns", "used", Some(changed)));
        assert_eq!(config_of(&c.get("ns", "used")).as_deref(), Some(changed));
        assert_eq!(
            c.view("ns", "used").unwrap()["cache"]["plugins"],
            json!(["ipvlan"])
        );
        assert_eq!((c.len(), c.loaded()), (1, 1));
        c.delete(&watched("ns", "used", None));
        assert!(matches!(c.get("ns", "used"), Lookup::Unknown));
        assert_eq!((c.len(), c.loaded()), (0, 0));
    }

    /// A pod that selects a compact NAD makes it a load; a fetched copy is kept only when it is what the
    /// watch last reported.
    #[test]
    fn a_newly_selected_nad_is_loaded_from_a_matching_copy_only() {
        let c = NadCache::default();
        c.apply(&watched("ns", "a", Some(MACVLAN)));
        c.apply(&watched("ns", "b", Some(MACVLAN)));
        let to_load = c.select(HashSet::from([
            key("ns", "a"),
            key("ns", "b"),
            key("ns", "ghost"),
        ]));
        assert_eq!(to_load, [key("ns", "a"), key("ns", "b")]);
        assert!(c.needs_load("ns", "a") && !c.needs_load("ns", "ghost"));
        // An older (or newer) copy than the watch's is not kept.
        assert!(!c.offer("ns", "a", Some("{}".into()), None));
        assert!(matches!(c.get("ns", "a"), Lookup::Compact));
        assert!(c.offer("ns", "a", Some(MACVLAN.into()), None));
        assert_eq!(config_of(&c.get("ns", "a")).as_deref(), Some(MACVLAN));
        assert!(!c.needs_load("ns", "a"));
        // Nothing is made up for a NAD the watch has not reported.
        assert!(!c.offer("ns", "ghost", Some(MACVLAN.into()), None));
        assert_eq!((c.len(), c.loaded()), (2, 1));
    }

    /// A NAD a request loaded (no pod selects it) is unloaded once unused for the retention time; one a pod
    /// selects stays.
    #[test]
    fn unused_loaded_nads_are_unloaded_after_the_retention_time() {
        let c = NadCache::default();
        c.apply(&watched("ns", "cluster", Some(MACVLAN)));
        c.apply(&watched("ns", "selected", Some(MACVLAN)));
        c.select(HashSet::from([key("ns", "selected")]));
        assert!(c.offer("ns", "cluster", Some(MACVLAN.into()), None));
        assert!(c.offer("ns", "selected", Some(MACVLAN.into()), None));
        let retain = Duration::from_secs(60);
        assert_eq!(c.sweep(Instant::now(), retain), 0, "both used just now");
        assert_eq!(c.sweep(Instant::now() + retain * 2, retain), 1);
        assert!(matches!(c.get("ns", "cluster"), Lookup::Compact));
        assert!(matches!(c.get("ns", "selected"), Lookup::Loaded(_)));
        // No longer selected either: unloaded too.
        c.select(HashSet::new());
        assert_eq!(c.sweep(Instant::now() + retain * 2, retain), 1);
        assert_eq!(c.loaded(), 0);
    }

    /// A re-list forgets NADs deleted while the watch was down, and keeps loaded ones loaded.
    #[test]
    fn a_relist_forgets_what_it_does_not_report() {
        let c = NadCache::default();
        c.select(HashSet::from([key("ns", "kept")]));
        c.apply(&watched("ns", "kept", Some(MACVLAN)));
        c.apply(&watched("ns", "gone", Some(MACVLAN)));
        c.apply(&watched("other", "gone-too", None));
        c.list_started();
        c.apply(&watched("ns", "kept", Some(MACVLAN)));
        c.list_done();
        assert!(matches!(c.get("ns", "kept"), Lookup::Loaded(_)));
        assert!(matches!(c.get("ns", "gone"), Lookup::Unknown));
        assert!(matches!(c.get("other", "gone-too"), Lookup::Unknown));
        assert_eq!((c.len(), c.loaded()), (1, 1));
    }

    /// The IPAM types are kept apart from the plugins (the view lists the plugins only); an internal
    /// plugin needs neither a binary nor an IPAM one.
    #[test]
    fn ipam_types_are_kept_with_the_plugins_that_run_them() {
        let types = plugin_types(
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[
                {"type":"bridge","ipam":{"type":"host-local"}},
                {"type":"macvlan","ipam":{"type":"host-local"}},
                {"type":"tuning","ipam":{"type":""}},
                {"type":"passthru","ipam":{"type":"dhcp"}}]}"#,
        )
        .unwrap();
        let names = |l: &[Box<str>]| l.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&types.plugins), ["bridge", "macvlan", "tuning"]);
        assert_eq!(names(&types.ipam), ["host-local"]);
        let c = NadCache::default();
        c.apply(&watched(
            "ns",
            "n",
            Some(r#"{"cniVersion":"1.0.0","type":"macvlan","ipam":{"type":"host-local"}}"#),
        ));
        assert_eq!(
            c.view("ns", "n").unwrap()["cache"],
            json!({"loaded": false, "plugins": ["macvlan"]})
        );
    }

    #[test]
    fn nads_naming_the_same_plugins_share_one_list() {
        let c = NadCache::default();
        for i in 0..3 {
            c.apply(&watched("ns", &format!("n{i}"), Some(MACVLAN)));
        }
        c.apply(&watched("ns", "broken", Some("not json")));
        assert_eq!(c.read().type_sets.len(), 1);
        let mut types: Vec<(String, Option<usize>)> = c.with_each(|it| {
            it.map(|(_, n, _, t)| (n.to_string(), t.map(|t| t.plugins.len())))
                .collect()
        });
        types.sort();
        assert_eq!(types[0], ("broken".to_string(), None));
        assert!(types[1..].iter().all(|(_, t)| *t == Some(1)));
    }
}
