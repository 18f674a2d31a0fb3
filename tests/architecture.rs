//! The library's module graph has no cycles (issue 17): neither among the top-level modules of `src/` nor
//! among the sibling files of any folder (a folder's own `mod.rs` aside: it owns its children). The graph
//! is read from the source: every `crate::…` and `super::…` path outside comments and strings is an edge.
//! Until the cycles found when this test was written are broken, they are listed, and the list may only
//! shrink.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file under `src/` (`src/ops/add.rs` → `["ops", "add"]`; `mod.rs` is its folder).
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

/// The source without comments (line comments, doc comments, block comments) and string literals' contents.
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// The paths a `prefix::` path starting at `s` names: `a::b`, or each of a `{a::b, c}` group, as segments.
fn paths_after(s: &str) -> Vec<Vec<String>> {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('{') {
        // Split the group at top-level commas.
        let mut depth = 0;
        let mut items = Vec::new();
        let mut start = 0;
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    items.push(&rest[start..i]);
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&rest[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return items
            .into_iter()
            .flat_map(|item| {
                let item = item.trim();
                let head: String = item
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if head.is_empty() || head == "self" {
                    return Vec::new();
                }
                let rest = &item[head.len()..];
                match rest.trim_start().strip_prefix("::") {
                    Some(r) => paths_after(r)
                        .into_iter()
                        .map(|mut p| {
                            p.insert(0, head.clone());
                            p
                        })
                        .collect(),
                    None => vec![vec![head]],
                }
            })
            .collect();
    }
    let head: String = s
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if head.is_empty() {
        return Vec::new();
    }
    match s[head.len()..].strip_prefix("::") {
        Some(r) => {
            let tails = paths_after(r);
            if tails.is_empty() {
                vec![vec![head]]
            } else {
                tails
                    .into_iter()
                    .map(|mut p| {
                        p.insert(0, head.clone());
                        p
                    })
                    .collect()
            }
        }
        None => vec![vec![head]],
    }
}

/// Every module path a file refers to, resolved to absolute segments (`super::` climbs from `module`).
fn references(module: &[String], code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let before = code[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        out.extend(paths_after(&code[i + "crate::".len()..]));
    }
    // `super::` of a file `a/b.rs` (module a::b) is `a`; of `a/mod.rs` (module a) is the crate root's level.
    let mut i = 0;
    while let Some(at) = code[i..].find("super::") {
        let at = i + at;
        i = at + "super::".len();
        let before = code[..at].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut ups = 1;
        let mut rest = &code[i..];
        while let Some(r) = rest.strip_prefix("super::") {
            ups += 1;
            rest = r;
        }
        // `super` of `a/b.rs` (module a::b) is `a`, of `a/mod.rs` (module a) the crate root. In a file's inline
        // `mod tests`, `super` is the file itself: those paths resolve to the file's own folder or to
        // itself, neither of which is an edge between siblings.
        let base = &module[..module.len().saturating_sub(ups)];
        for p in paths_after(rest) {
            let mut full = base.to_vec();
            full.extend(p);
            out.push(full);
        }
    }
    out
}

/// Strongly connected components of more than one node.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Tarjan's algorithm over a small graph.
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    impl<'a> T<'a> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    comp.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

/// The module graph of `src/`: for each folder (the crate root included), edges between its children.
fn graphs() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut modules: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut parsed = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        if rel.starts_with("bin") || rel == Path::new("main.rs") {
            continue;
        }
        let module = module_of(rel);
        modules.insert(module.clone());
        parsed.push((module, code(&fs::read_to_string(f).unwrap())));
    }
    let mut out: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (module, code) in &parsed {
        for r in references(module, code) {
            // The longest known module that prefixes the reference.
            let Some(target) = (1..=r.len())
                .rev()
                .map(|n| r[..n].to_vec())
                .find(|p| modules.contains(p))
            else {
                continue;
            };
            // The first level where the two paths part: an edge between siblings of that folder. A folder's
            // own mod.rs (the parent) is not one of its children.
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common >= module.len() || common >= target.len() {
                continue;
            }
            let folder = module[..common].join("::");
            let (from, to) = (module[common].clone(), target[common].clone());
            let g = out.entry(folder).or_default();
            g.entry(from).or_default().insert(to.clone());
            g.entry(to).or_default();
        }
    }
    out
}

/// Cycles not yet broken: none since issue 17 broke the last. The list only shrinks: a new cycle fails the
/// test, and so does a listed one that is gone (take it off the list).
const KNOWN_CYCLES: &[&str] = &[];

#[test]
fn no_module_cycles() {
    let mut found = Vec::new();
    for (folder, g) in graphs() {
        for c in cycles(&g) {
            let at = if folder.is_empty() {
                "crate".to_string()
            } else {
                folder.clone()
            };
            found.push(format!("{at}: {}", c.join(" ↔ ")));
        }
    }
    let new: Vec<&String> = found
        .iter()
        .filter(|c| !KNOWN_CYCLES.contains(&c.as_str()))
        .collect();
    assert!(new.is_empty(), "new import cycles:\n{new:#?}");
    let gone: Vec<&&str> = KNOWN_CYCLES
        .iter()
        .filter(|k| !found.iter().any(|c| c == *k))
        .collect();
    assert!(
        gone.is_empty(),
        "cycles broken (take them off KNOWN_CYCLES): {gone:#?}"
    );
}

/// The checker sees a cycle when there is one (and not where there is none).
#[test]
fn the_cycle_finder_finds_cycles() {
    let g = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    assert_eq!(
        cycles(&g(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])),
        [vec!["a".to_string(), "b".into(), "c".into()]]
    );
    assert!(cycles(&g(&[("a", "b"), ("b", "c"), ("a", "c")])).is_empty());
    assert_eq!(
        paths_after("{cache::{self, ReadOutcome}, error::Error, lock}"),
        [
            vec!["cache".to_string(), "ReadOutcome".into()],
            vec!["error".to_string(), "Error".into()],
            vec!["lock".to_string()]
        ]
    );
    let refs = references(
        &["ops".to_string(), "add".to_string()],
        "use super::{Ctx, del::teardown}; use crate::k8s::client::X;",
    );
    assert!(refs.contains(&vec!["ops".to_string(), "del".into(), "teardown".into()]));
    assert!(refs.contains(&vec!["k8s".to_string(), "client".into(), "X".into()]));
}

/// Issue 17, item 2: the policy of which networks a pod gets is pure. `src/pure/selection.rs` reads only the
/// pure layer (the annotation parser, the config, network configs, the plan's types, the cluster's data):
/// nothing of the API client, the daemon, the core that does I/O, or the filesystem helpers.
#[test]
fn the_selection_policy_imports_nothing_that_does_io() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/pure/selection.rs");
    let text = fs::read_to_string(&path).expect("the pure policy lives in src/pure/selection.rs");
    // The policy, not its tests (they may use the crate's test support).
    let text = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or_default()
        .to_string();
    let refs = references(&["pure".to_string(), "selection".to_string()], &code(&text));
    assert!(!refs.is_empty(), "the reader found its imports");
    const PURE: &[&[&str]] = &[&["pure"]];
    let impure: Vec<String> = refs
        .iter()
        .filter(|r| {
            !PURE.iter().any(|p| {
                r.len() >= p.len() && r[..p.len()].iter().zip(p.iter()).all(|(a, b)| a == b)
            })
        })
        .map(|r| r.join("::"))
        .collect();
    assert!(impure.is_empty(), "selection.rs imports {impure:?}");
    for io in ["std::fs", "std::net::TcpStream", "tokio", "kube::"] {
        assert!(!code(&text).contains(io), "selection.rs uses {io}");
    }
}

/// Issue 17, item 2: one test double of the Kubernetes seam. The only implementations of
/// `cluster::Cluster` are the HTTP adapter, the daemon's cache layer, the in-memory API the tests share and
/// the blanket one for `Arc`; no test writes its own.
#[test]
fn the_kubernetes_seam_has_one_test_double() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    sources(&root.join("tests"), &mut files);
    let mut found: Vec<String> = Vec::new();
    for f in &files {
        // Line by line (a raw string elsewhere in the file must not hide an `impl`).
        let text = fs::read_to_string(f).unwrap();
        let hits = text
            .lines()
            .map(str::trim_start)
            .filter(|l| l.starts_with("impl") && l.contains(" Cluster for "))
            .count();
        for _ in 0..hits {
            found.push(f.strip_prefix(root).unwrap().display().to_string());
        }
    }
    found.sort();
    assert_eq!(
        found,
        [
            "src/seams/cluster.rs",
            "src/seams/k8s/cached.rs",
            "src/seams/k8s/client.rs",
            "src/seams/k8s/memory.rs"
        ],
        "implementations of the Kubernetes seam"
    );
}

/// The layers of `src/`, lowest first (README, "Layout"): a module uses its own layer and the ones below it,
/// never one above. The pure core reaches nothing else; the edges may reach everything.
const LAYERS: &[&str] = &["pure", "store", "seams", "ops", "edges"];

/// The edges of the crate's top-level graph that reach up a layer, or leave the layers.
fn upward(top: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut wrong = Vec::new();
    for (from, tos) in top {
        let Some(rf) = rank(from) else {
            wrong.push(format!("{from}: not in a layer"));
            continue;
        };
        for to in tos {
            match rank(to) {
                Some(rt) if rt <= rf => {}
                _ => wrong.push(format!("{from} → {to}")),
            }
        }
    }
    wrong
}

#[test]
fn every_module_sits_in_a_layer_and_reaches_only_down() {
    let g = graphs();
    let top = g.get("").expect("the crate's top-level module graph");
    let wrong = upward(top);
    assert!(wrong.is_empty(), "references up the layers:\n{wrong:#?}");
    let found: BTreeSet<&str> = top.keys().map(String::as_str).collect();
    assert_eq!(found, LAYERS.iter().copied().collect::<BTreeSet<_>>());
}

/// The layer check sees a reference up a layer, and a module outside the layers.
#[test]
fn the_layer_check_sees_upward_references() {
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    top.entry("seams".into()).or_default().insert("pure".into());
    top.entry("ops".into()).or_default().insert("seams".into());
    assert!(upward(&top).is_empty());
    top.entry("store".into()).or_default().insert("ops".into());
    top.entry("misc".into()).or_default();
    assert_eq!(upward(&top), ["misc: not in a layer", "store → ops"]);
}
