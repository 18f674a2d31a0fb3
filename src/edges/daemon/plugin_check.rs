//! The daemon's report of cached NADs that name a plugin this node cannot run (issue 16): not installed
//! (the gauge `plexus_nads_missing_plugins`), or installed but refused by plexus's binary check
//! (`exec::check_binary`; the gauge `plexus_nads_refused_plugins`), their IPAM plugins included; one log line
//! per such NAD, computed on a thread of its own, off the request path, from the plugin types the NAD cache
//! keeps of every NAD (`k8s::nadcache`), loaded or not. STATUS never looks at NADs (any user may create
//! one); a pod that selects such a NAD fails its own ADD (`ops::add`).

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    path::PathBuf,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use prometheus_client::metrics::gauge::Gauge;

use crate::seams::{
    exec::{Exec, ExecError},
    k8s::{nadcache::PluginTypes, watch::NodeCache},
};

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

/// What looking up one plugin binary found.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lookup {
    /// Installed, and plexus would run it.
    Installed,
    /// Not in the search path.
    Missing,
    /// Installed, but someone besides root could replace it, so plexus refuses it: the refusal, naming the
    /// file and why.
    Refused(String),
}

impl Lookup {
    /// What [`Exec::find`] answered: a refusal of the file itself is told apart from no file at all.
    pub fn of(found: Result<PathBuf, ExecError>) -> Lookup {
        match found {
            Ok(_) => Lookup::Installed,
            Err(e @ ExecError::Unsafe { .. }) => Lookup::Refused(e.to_string()),
            Err(_) => Lookup::Missing,
        }
    }
}

/// What is wrong with the plugins one NAD names (each list in the config's order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Findings {
    /// Plugin types not installed.
    pub missing: Vec<String>,
    /// IPAM types not installed.
    pub missing_ipam: Vec<String>,
    /// Plugins whose binary is refused: the type and the refusal.
    pub refused: Vec<(String, String)>,
    /// IPAM plugins whose binary fails the same check (their plugin runs them, not plexus).
    pub refused_ipam: Vec<(String, String)>,
}

impl Findings {
    /// Look up every binary `types` names.
    fn of(types: &PluginTypes, lookup: &mut dyn FnMut(&str) -> Lookup) -> Findings {
        let mut f = Findings::default();
        for (list, missing, refused) in [
            (&types.plugins, &mut f.missing, &mut f.refused),
            (&types.ipam, &mut f.missing_ipam, &mut f.refused_ipam),
        ] {
            for t in list.iter() {
                match lookup(t) {
                    Lookup::Installed => {}
                    Lookup::Missing => missing.push(t.to_string()),
                    Lookup::Refused(why) => refused.push((t.to_string(), why)),
                }
            }
        }
        f
    }

    fn is_missing(&self) -> bool {
        !(self.missing.is_empty() && self.missing_ipam.is_empty())
    }

    fn is_refused(&self) -> bool {
        !(self.refused.is_empty() && self.refused_ipam.is_empty())
    }
}

/// What a pass found that the log must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A NAD names plugins this node cannot run: new, changed (its config, or what was found), or usable
    /// before.
    Unusable {
        /// `namespace/name`.
        nad: String,
        /// What is wrong.
        findings: Findings,
    },
    /// A NAD reported before can be used now (plugin installed or fixed, or its config fixed).
    Usable {
        /// `namespace/name`.
        nad: String,
    },
}

/// How many NADs a pass found naming a missing plugin, and a refused one (a NAD may be in both).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// `plexus_nads_missing_plugins`.
    pub missing: usize,
    /// `plexus_nads_refused_plugins`.
    pub refused: usize,
}

/// A NAD reported: a hash of its config's fingerprint and of the findings reported (either changed: reported
/// again), and which gauges count it.
#[derive(Debug, Clone, Copy)]
struct Reported {
    key: u64,
    missing: bool,
    refused: bool,
}

/// The NADs reported, so each is reported once, not once per pass: namespace → name → what was reported.
#[derive(Debug, Default)]
pub struct Checker {
    reported: HashMap<String, HashMap<String, Reported>>,
}

impl Checker {
    fn was_reported(&self, ns: &str, name: &str) -> Option<u64> {
        self.reported.get(ns)?.get(name).map(|r| r.key)
    }

    /// One pass over every NAD the cache holds, as `(namespace, name, fingerprint, plugin types)` (`None`
    /// types: no config, or one that does not parse, which is not counted): how many name a plugin
    /// `lookup` finds missing or refused, and the changes to log, in `namespace/name` order. Nothing is
    /// kept of the NADs whose plugins are all usable.
    pub fn pass<'a>(
        &mut self,
        nads: impl IntoIterator<Item = (&'a str, &'a str, u64, Option<&'a PluginTypes>)>,
        lookup: &mut dyn FnMut(&str) -> Lookup,
    ) -> (Counts, Vec<Change>) {
        let mut now: HashMap<String, HashMap<String, Reported>> = HashMap::new();
        let mut changes = Vec::new();
        for (ns, name, fp, types) in nads {
            let findings = types.map(|t| Findings::of(t, lookup)).unwrap_or_default();
            let before = self.was_reported(ns, name);
            if findings == Findings::default() {
                if before.is_some() {
                    changes.push(Change::Usable {
                        nad: format!("{ns}/{name}"),
                    });
                }
                continue;
            }
            let mut h = DefaultHasher::new();
            (fp, &findings).hash(&mut h);
            let key = h.finish();
            let reported = Reported {
                key,
                missing: findings.is_missing(),
                refused: findings.is_refused(),
            };
            if before != Some(key) {
                changes.push(Change::Unusable {
                    nad: format!("{ns}/{name}"),
                    findings,
                });
            }
            now.entry(ns.to_string())
                .or_default()
                .insert(name.to_string(), reported);
        }
        // A NAD deleted meanwhile is forgotten: created again, it is reported again.
        self.reported = now;
        let mut counts = Counts::default();
        for r in self.reported.values().flat_map(HashMap::values) {
            counts.missing += usize::from(r.missing);
            counts.refused += usize::from(r.refused);
        }
        changes.sort_by(|a, b| a.nad().cmp(b.nad()));
        (counts, changes)
    }
}

impl Change {
    fn nad(&self) -> &str {
        match self {
            Change::Unusable { nad, .. } | Change::Usable { nad } => nad,
        }
    }
}

/// The log lines for `changes`: one per NAD and kind of finding.
fn lines(changes: Vec<Change>, dirs: &[PathBuf]) -> Vec<(tracing::Level, String)> {
    use tracing::Level;
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let dirs = dirs.join(" ");
    let mut out = Vec::new();
    for c in changes {
        let (nad, f) = match c {
            Change::Usable { nad } => {
                out.push((
                    Level::INFO,
                    format!(
                        "NAD {nad} can be used now: every plugin it names is installed in [{dirs}]"
                    ),
                ));
                continue;
            }
            Change::Unusable { nad, findings } => (nad, findings),
        };
        if !f.missing.is_empty() {
            out.push((
                Level::WARN,
                format!(
                    "NAD {nad} names plugin(s) {:?} not installed in [{dirs}]: pods selecting it fail their \
                     ADD (CNI code 7) until the plugin is installed; the node's STATUS is not affected",
                    f.missing
                ),
            ));
        }
        if !f.missing_ipam.is_empty() {
            out.push((
                Level::WARN,
                format!(
                    "NAD {nad} names IPAM plugin(s) {:?} not installed in [{dirs}]: pods selecting it fail their \
                     ADD (their plugin cannot find its IPAM plugin) until it is installed; the node's STATUS \
                     is not affected",
                    f.missing_ipam
                ),
            ));
        }
        for (plugin, why) in &f.refused {
            out.push((
                Level::WARN,
                format!(
                    "NAD {nad} names plugin {plugin:?}, installed but refused: {why}. Pods selecting it fail \
                     their ADD (CNI code 7) until the file's owner or mode is fixed; the node's STATUS is not \
                     affected"
                ),
            ));
        }
        for (plugin, why) in &f.refused_ipam {
            // plexus refuses what it starts; an IPAM binary is started by its plugin, so it still runs.
            out.push((
                Level::WARN,
                format!(
                    "NAD {nad} names IPAM plugin {plugin:?}, which plexus would refuse: {why}. Its plugin, not \
                     plexus, starts it, so pods selecting the NAD still run it: fix the file's owner or mode"
                ),
            ));
        }
    }
    out
}

fn log(changes: Vec<Change>, dirs: &[PathBuf]) {
    for (level, line) in lines(changes, dirs) {
        if level == tracing::Level::INFO {
            tracing::info!("{line}");
        } else {
            tracing::warn!("{line}");
        }
    }
}

/// The gauges a pass sets.
pub struct Gauges {
    /// `plexus_nads_missing_plugins`.
    pub missing: Gauge,
    /// `plexus_nads_refused_plugins`.
    pub refused: Gauge,
}

/// Start the thread: a pass whenever the NAD cache or the search path changed (looked at every second),
/// and every [`PERIOD`] anyway; each sets `gauges` and logs what changed.
pub fn spawn(
    cache: Arc<NodeCache>,
    search_path: Arc<SearchPath>,
    gauges: Gauges,
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
                let mut seen: HashMap<String, Lookup> = HashMap::new();
                let mut lookup = |t: &str| match seen.get(t) {
                    Some(found) => found.clone(),
                    // Looked up as the requests' delegates are (in the host's root, when they run there).
                    None => seen
                        .entry(t.to_string())
                        .or_insert_with(|| Lookup::of(exec.find(t, &dirs)))
                        .clone(),
                };
                // Under the cache's read lock, nothing copied: with tens of thousands of NADs a copy would
                // be the thread's largest allocation.
                let (counts, found) = cache
                    .nad_cache()
                    .with_each(|nads| checker.pass(nads, &mut lookup));
                gauges
                    .missing
                    .set(i64::try_from(counts.missing).unwrap_or(i64::MAX));
                gauges
                    .refused
                    .set(i64::try_from(counts.refused).unwrap_or(i64::MAX));
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

    fn found(missing: usize, refused: usize) -> Counts {
        Counts { missing, refused }
    }

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
        Change::Unusable {
            nad: nad.into(),
            findings: Findings {
                missing: plugins.iter().map(|p| p.to_string()).collect(),
                ..Findings::default()
            },
        }
    }

    /// [`pass_with`] where every binary is installed or missing: the NADs naming a missing one, and the
    /// changes.
    fn pass_over(
        c: &mut Checker,
        nads: &BTreeMap<String, String>,
        installed: &mut dyn FnMut(&str) -> bool,
    ) -> (usize, Vec<Change>) {
        let (counts, changes) = pass_with(c, nads, &mut |t| {
            if installed(t) {
                Lookup::Installed
            } else {
                Lookup::Missing
            }
        });
        assert_eq!(counts.refused, 0);
        (counts.missing, changes)
    }

    /// One pass over `nads` (`namespace/name` → config) as the NAD watch puts them in the cache.
    fn pass_with(
        c: &mut Checker,
        nads: &BTreeMap<String, String>,
        lookup: &mut dyn FnMut(&str) -> Lookup,
    ) -> (Counts, Vec<Change>) {
        let cache = NadCache::default();
        for (k, config) in nads {
            let (ns, name) = k.split_once('/').unwrap();
            let nad: WatchedNad = serde_json::from_value(serde_json::json!({
                "metadata": {"namespace": ns, "name": name}, "spec": {"config": config}
            }))
            .unwrap();
            cache.apply(&nad);
        }
        cache.with_each(|it| c.pass(it, lookup))
    }

    /// `passthru` is served by plexus (docs/multus-compat.md, "Auxiliary chain"): no binary is missing.
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

    /// A binary that is installed but refused (group-writable here) is reported as refused, with the
    /// refusal naming the file and why, and counted apart from the missing ones; fixed, the NAD is usable;
    /// removed, it is reported again, now as missing.
    #[test]
    fn a_refused_binary_is_reported_as_refused_not_missing() {
        use std::os::unix::fs::PermissionsExt;
        let bin = tempfile::tempdir().unwrap();
        let file = bin.path().join("macvlan");
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o775)).unwrap();
        let dirs = [bin.path().to_path_buf()];
        let mut lookup = |t: &str| Lookup::of(crate::seams::exec::find_in_path(t, &dirs));
        let refusal = match lookup("macvlan") {
            Lookup::Refused(why) => why,
            other => panic!("a group-writable binary: {other:?}"),
        };
        assert!(
            refusal.contains(&file.display().to_string())
                && refusal.contains("writable by its group"),
            "{refusal}"
        );
        assert_eq!(lookup("no-such-plugin"), Lookup::Missing);

        let mut c = Checker::default();
        let nads = configs(&[("a/good", GOOD), ("a/typo", TYPO)]);
        let (counts, changes) = pass_with(&mut c, &nads, &mut lookup);
        assert_eq!(counts, found(1, 1));
        let refused = Change::Unusable {
            nad: "a/good".into(),
            findings: Findings {
                refused: vec![("macvlan".into(), refusal.clone())],
                ..Findings::default()
            },
        };
        assert_eq!(changes, [refused, missing("a/typo", &["no-such-plugin"])]);
        let lines = lines(changes, &dirs);
        let good: Vec<&String> = lines
            .iter()
            .map(|(_, l)| l)
            .filter(|l| l.starts_with("NAD a/good "))
            .collect();
        assert_eq!(good.len(), 1, "{lines:?}");
        assert!(
            good[0].contains("installed but refused")
                && good[0].contains(&refusal)
                && !good[0].contains("not installed"),
            "{}",
            good[0]
        );
        // Reported once.
        assert_eq!(
            pass_with(&mut c, &nads, &mut lookup).1,
            Vec::<Change>::new()
        );

        // Fixed: usable.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (counts, changes) = pass_with(&mut c, &nads, &mut lookup);
        assert_eq!(counts, found(1, 0));
        assert_eq!(
            changes,
            [Change::Usable {
                nad: "a/good".into()
            }]
        );
        // Refused again, then removed: what is found changed, the config did not; each is reported.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o757)).unwrap();
        let (counts, changes) = pass_with(&mut c, &nads, &mut lookup);
        assert_eq!(counts, found(1, 1));
        assert!(
            matches!(&changes[..], [Change::Unusable { nad, findings }] if nad == "a/good" && findings.refused.len() == 1),
            "{changes:?}"
        );
        std::fs::remove_file(&file).unwrap();
        let (counts, changes) = pass_with(&mut c, &nads, &mut lookup);
        assert_eq!(counts, found(2, 0));
        assert_eq!(changes, [missing("a/good", &["macvlan"])]);
    }

    /// A NAD's IPAM plugins are looked up like its plugins: one not installed is reported missing, one
    /// refused is reported (plexus does not start it: its plugin does, so the line says it still runs).
    #[test]
    fn ipam_plugins_are_checked_too() {
        let mut c = Checker::default();
        let nads = configs(&[
            (
                "a/ipam-typo",
                r#"{"cniVersion":"1.0.0","type":"macvlan","ipam":{"type":"no-such-ipam"}}"#,
            ),
            (
                "a/ipam-unsafe",
                r#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge","ipam":{"type":"whereabouts"}},{"type":"tuning"}]}"#,
            ),
            (
                "a/ipam-ok",
                r#"{"cniVersion":"1.0.0","type":"macvlan","ipam":{"type":"host-local"}}"#,
            ),
            (
                "a/no-ipam",
                r#"{"cniVersion":"1.0.0","type":"macvlan","ipam":{}}"#,
            ),
        ]);
        let why = "refusing to run /opt/cni/bin/whereabouts: it is writable by others (mode 0777)";
        let mut lookup = |t: &str| match t {
            "no-such-ipam" => Lookup::Missing,
            "whereabouts" => Lookup::Refused(why.into()),
            _ => Lookup::Installed,
        };
        let (counts, changes) = pass_with(&mut c, &nads, &mut lookup);
        assert_eq!(counts, found(1, 1));
        assert_eq!(
            changes,
            [
                Change::Unusable {
                    nad: "a/ipam-typo".into(),
                    findings: Findings {
                        missing_ipam: vec!["no-such-ipam".into()],
                        ..Findings::default()
                    },
                },
                Change::Unusable {
                    nad: "a/ipam-unsafe".into(),
                    findings: Findings {
                        refused_ipam: vec![("whereabouts".into(), why.into())],
                        ..Findings::default()
                    },
                },
            ]
        );
        let lines: Vec<String> = lines(changes, &[PathBuf::from("/opt/cni/bin")])
            .into_iter()
            .map(|(_, l)| l)
            .collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].contains("IPAM plugin(s) [\"no-such-ipam\"] not installed in [/opt/cni/bin]"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("IPAM plugin \"whereabouts\"")
                && lines[1].contains(why)
                && lines[1].contains("still run it"),
            "{}",
            lines[1]
        );
    }
}
