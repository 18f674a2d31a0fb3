//! The daemon's report of cached NADs that name a plugin this node does not have (issue 16): the gauge
//! `plexus_nads_missing_plugins` and one log line per such NAD, computed on a thread of its own, off the
//! request path, from the plugin types the NAD cache keeps of every NAD (`k8s::nadcache`), loaded or not.
//! STATUS never looks at NADs (any user may create one); a pod that selects such a NAD fails its own ADD
//! with code 7 (`ops::add`).

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use prometheus_client::metrics::gauge::Gauge;

use crate::seams::{exec::Exec, k8s::watch::NodeCache};

/// How often the NADs are checked again though none changed: plugins may be installed (or removed) at any
/// time, and nothing tells the daemon.
pub const PERIOD: Duration = Duration::from_secs(30);

/// How often the thread looks for a changed NAD cache or search path.
const POLL: Duration = Duration::from_secs(1);

/// Where the node's plugins are, as the daemon's requests say: their `binDir`, then their `CNI_PATH`
/// (`Config::search_path`). Unknown until the first request: the daemon has no other way to learn it.
#[derive(Debug, Default)]
pub struct SearchPath(Mutex<Option<Vec<PathBuf>>>);

impl SearchPath {
    /// A request's search path.
    pub fn observe(&self, dirs: Vec<PathBuf>) {
        if let Ok(mut known) = self.0.lock() {
            *known = Some(dirs);
        }
    }

    /// The last request's search path.
    pub fn get(&self) -> Option<Vec<PathBuf>> {
        self.0.lock().ok().and_then(|k| k.clone())
    }
}

/// What a pass found that the log must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A NAD (new, changed, or usable before) names these plugins, which are not installed.
    Missing {
        /// `namespace/name`.
        nad: String,
        /// The plugin types not found.
        plugins: Vec<String>,
    },
    /// A NAD reported missing before can be used now (plugin installed, or its config fixed).
    Usable {
        /// `namespace/name`.
        nad: String,
    },
}

/// The NADs reported missing, so each is reported once, not once per pass: namespace → name → the
/// fingerprint of its config when reported (a changed config is reported again).
#[derive(Debug, Default)]
pub struct Checker {
    missing: HashMap<String, HashMap<String, u64>>,
}

impl Checker {
    fn was_missing(&self, ns: &str, name: &str) -> Option<u64> {
        self.missing.get(ns)?.get(name).copied()
    }

    /// One pass over every NAD the cache holds, as `(namespace, name, fingerprint, plugin types)` (`None`
    /// types: no config, or one that does not parse, which is not counted): how many name a plugin
    /// `installed` says is absent, and the changes to log, in `namespace/name` order. Nothing is kept of the
    /// NADs that name no missing plugin.
    pub fn pass<'a>(
        &mut self,
        nads: impl IntoIterator<Item = (&'a str, &'a str, u64, Option<&'a [Box<str>]>)>,
        installed: &mut dyn FnMut(&str) -> bool,
    ) -> (usize, Vec<Change>) {
        let mut now: HashMap<String, HashMap<String, u64>> = HashMap::new();
        let mut changes = Vec::new();
        for (ns, name, fp, types) in nads {
            let missing: Vec<String> = types
                .into_iter()
                .flatten()
                .filter(|t| !installed(t))
                .map(|t| t.to_string())
                .collect();
            let before = self.was_missing(ns, name);
            if missing.is_empty() {
                if before.is_some() {
                    changes.push(Change::Usable {
                        nad: format!("{ns}/{name}"),
                    });
                }
                continue;
            }
            if before != Some(fp) {
                changes.push(Change::Missing {
                    nad: format!("{ns}/{name}"),
                    plugins: missing,
                });
            }
            now.entry(ns.to_string())
                .or_default()
                .insert(name.to_string(), fp);
        }
        // A NAD deleted meanwhile is forgotten: created again, it is reported again.
        self.missing = now;
        let count = self.missing.values().map(HashMap::len).sum();
        changes.sort_by(|a, b| a.nad().cmp(b.nad()));
        (count, changes)
    }
}

impl Change {
    fn nad(&self) -> &str {
        match self {
            Change::Missing { nad, .. } | Change::Usable { nad } => nad,
        }
    }
}

fn log(changes: Vec<Change>, dirs: &[PathBuf]) {
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let dirs = dirs.join(" ");
    for c in changes {
        match c {
            Change::Missing { nad, plugins } => tracing::warn!(
                nad = %nad,
                "NAD {nad} names plugin(s) {plugins:?} not installed in [{dirs}]: pods selecting it fail \
                 their ADD (CNI code 7) until the plugin is installed; the node's STATUS is not affected"
            ),
            Change::Usable { nad } => tracing::info!(
                nad = %nad,
                "NAD {nad} can be used now: every plugin it names is installed in [{dirs}]"
            ),
        }
    }
}

/// Start the thread: a pass whenever the NAD cache or the search path changed (looked at every second),
/// and every [`PERIOD`] anyway; each sets `gauge` and logs what changed.
pub fn spawn(
    cache: Arc<NodeCache>,
    search_path: Arc<SearchPath>,
    gauge: Gauge,
    exec: Arc<dyn Exec>,
) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("plexus-nadcheck".into())
        .spawn(move || {
            let mut checker = Checker::default();
            let mut last: Option<(u64, Vec<PathBuf>, Instant)> = None;
            loop {
                thread::sleep(POLL);
                let Some(dirs) = search_path.get() else {
                    continue;
                };
                // Read before the configs: a change while they are read makes the next poll pass again.
                let changes = cache.nad_changes();
                if let Some((c, d, at)) = &last
                    && *c == changes
                    && *d == dirs
                    && at.elapsed() < PERIOD
                {
                    continue;
                }
                let mut seen: HashMap<String, bool> = HashMap::new();
                let mut installed = |t: &str| match seen.get(t) {
                    Some(found) => *found,
                    // Looked up as the requests' delegates are (in the host's root, when they run there).
                    None => *seen
                        .entry(t.to_string())
                        .or_insert_with(|| exec.find(t, &dirs).is_ok()),
                };
                // Under the cache's read lock, nothing copied: with tens of thousands of NADs a copy would
                // be the thread's largest allocation.
                let (count, found) = cache
                    .nad_cache()
                    .with_each(|nads| checker.pass(nads, &mut installed));
                gauge.set(i64::try_from(count).unwrap_or(i64::MAX));
                log(found, &dirs);
                last = Some((changes, dirs, Instant::now()));
            }
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::seams::k8s::nadcache::{NadCache, WatchedNad};

    fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const GOOD: &str = r#"{"cniVersion":"1.0.0","type":"macvlan"}"#;
    const TYPO: &str = r#"{"cniVersion":"1.0.0","type":"no-such-plugin"}"#;
    /// The missing plugin is chained after one that exists.
    const CHAINED: &str =
        r#"{"cniVersion":"1.0.0","plugins":[{"type":"macvlan"},{"type":"also-missing"}]}"#;

    fn missing(nad: &str, plugins: &[&str]) -> Change {
        Change::Missing {
            nad: nad.into(),
            plugins: plugins.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// `passthru` is served by plexus (docs/multus-compat.md, "Auxiliary chain"): no binary is missing.
    /// One pass over `nads` (`namespace/name` → config) as the NAD watch puts them in the cache.
    fn pass_over(
        c: &mut Checker,
        nads: &BTreeMap<String, String>,
        installed: &mut dyn FnMut(&str) -> bool,
    ) -> (usize, Vec<Change>) {
        let cache = NadCache::default();
        for (k, config) in nads {
            let (ns, name) = k.split_once('/').unwrap();
            let nad: WatchedNad = serde_json::from_value(serde_json::json!({
                "metadata": {"namespace": ns, "name": name}, "spec": {"config": config}
            }))
            .unwrap();
            cache.apply(&nad);
        }
        cache.with_each(|it| c.pass(it, installed))
    }

    #[test]
    fn passthru_needs_no_binary() {
        let mut c = Checker::default();
        let nads = configs(&[(
            "a/p",
            r#"{"cniVersion":"1.0.0","plugins":[{"type":"passthru"},{"type":"macvlan"}]}"#,
        )]);
        assert_eq!(
            pass_over(&mut c, &nads, &mut |t| t == "macvlan"),
            (0, vec![])
        );
    }

    #[test]
    fn each_nad_is_reported_once_again_when_changed_and_when_usable() {
        let mut installed = vec!["macvlan".to_string()];
        let mut c = Checker::default();
        let mut nads = configs(&[
            ("a/good", GOOD),
            ("a/typo", TYPO),
            ("b/chained", CHAINED),
            ("b/broken", "not json"),
        ]);
        fn pass(
            c: &mut Checker,
            nads: &BTreeMap<String, String>,
            inst: &[String],
        ) -> (usize, Vec<Change>) {
            pass_over(c, nads, &mut |t| inst.iter().any(|i| i == t))
        }
        let (n, changes) = pass(&mut c, &nads, &installed);
        assert_eq!(n, 2, "a config that does not parse is not counted");
        assert_eq!(
            changes,
            [
                missing("a/typo", &["no-such-plugin"]),
                missing("b/chained", &["also-missing"])
            ]
        );
        // Nothing changed: counted, not logged again.
        assert_eq!(pass(&mut c, &nads, &installed), (2, vec![]));
        // A changed config that still names a missing plugin is reported again.
        nads.insert(
            "a/typo".into(),
            r#"{"cniVersion":"1.0.0","type":"no-such-plugin2"}"#.into(),
        );
        assert_eq!(
            pass(&mut c, &nads, &installed),
            (2, vec![missing("a/typo", &["no-such-plugin2"])])
        );
        // The plugin is installed: one info line, no longer counted.
        installed.push("also-missing".into());
        assert_eq!(
            pass(&mut c, &nads, &installed),
            (
                1,
                vec![Change::Usable {
                    nad: "b/chained".into()
                }]
            )
        );
        // A deleted NAD is forgotten; created again, it is reported again.
        let typo = nads.remove("a/typo").unwrap();
        assert_eq!(pass(&mut c, &nads, &installed), (0, vec![]));
        nads.insert("a/typo".into(), typo);
        assert_eq!(
            pass(&mut c, &nads, &installed),
            (1, vec![missing("a/typo", &["no-such-plugin2"])])
        );
    }

    #[test]
    fn the_search_path_is_the_last_requests() {
        let p = SearchPath::default();
        assert_eq!(p.get(), None, "unknown before any request");
        p.observe(vec!["/opt/cni/bin".into()]);
        p.observe(vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()]);
        assert_eq!(
            p.get(),
            Some(vec![
                PathBuf::from("/opt/cni/bin"),
                PathBuf::from("/usr/lib/cni")
            ])
        );
    }
}
