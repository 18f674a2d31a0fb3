//! What the sources cite lives in the repository: no comment points at a numbered section or a file of notes
//! kept outside it (only RFC sections may be cited by number), and every specification id the code and docs
//! cite (`NPWG-n`, `CNI-n`, `EXT-n`, `DIS-n`, `DECIDE-xn`) has its entry in docs/spec-ids.md.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

/// The repository's root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` and `.md` file under `dir`, build output, git data and fuzz inputs aside.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        if p.is_dir() {
            if !matches!(
                name.to_str(),
                Some("target" | ".git" | "corpus" | "artifacts")
            ) {
                files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs" || x == "md") {
            out.push(p);
        }
    }
}

/// The repository's sources and docs, as (path relative to the root, text).
fn sources() -> Vec<(String, String)> {
    let root = root();
    let mut paths = Vec::new();
    files(&root, &mut paths);
    assert!(
        paths.len() > 50,
        "found only {} files under {}",
        paths.len(),
        root.display()
    );
    paths
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&root).unwrap().display().to_string();
            (rel, fs::read_to_string(&p).unwrap_or_default())
        })
        .collect()
}

/// The section sign, spelled so this file does not cite a section itself.
const SECTION: char = '\u{a7}';

/// The lines of `text` that cite a section by number (a section sign before a digit) other than an RFC's
/// (`RFC <n>` before it), or one of the reference notes that are not in the repository.
fn bad_citations(text: &str) -> Vec<String> {
    let notes = ["multus-features", "decisions", "specs"].map(|n| format!("{n}.md"));
    let mut bad = Vec::new();
    for line in text.lines() {
        let mut rest = line;
        let mut cites_section = false;
        while let Some(i) = rest.find(SECTION) {
            let after = &rest[i + SECTION.len_utf8()..];
            if after.starts_with(|c: char| c.is_ascii_digit()) {
                // Only an RFC, its number just before the sign, may be cited by section.
                let before = rest[..i].trim_end();
                let number = before.trim_end_matches(|c: char| c.is_ascii_digit());
                let is_rfc = number.len() < before.len() && number.trim_end().ends_with("RFC");
                cites_section |= !is_rfc;
            }
            rest = after;
        }
        if cites_section || notes.iter().any(|n| line.contains(n.as_str())) {
            bad.push(line.trim().to_string());
        }
    }
    bad
}

/// The specification ids `text` cites, ranges (`NPWG-70..73`) and pairs (`NPWG-22/24`) spelled out.
fn cited_ids(text: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let b = text.as_bytes();
    for prefix in ["NPWG-", "CNI-", "EXT-", "DIS-", "DECIDE-"] {
        let mut from = 0;
        while let Some(i) = text[from..].find(prefix).map(|i| i + from) {
            from = i + prefix.len();
            // A whole word: `XCNI-1` or `ABCNI-` is not an id.
            if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_') {
                continue;
            }
            let tail = &text[from..];
            if prefix == "DECIDE-" {
                let id: String = tail
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
                    .collect();
                if id.len() > 1 {
                    ids.insert(format!("{prefix}{id}"));
                }
                continue;
            }
            let digits =
                |s: &str| -> String { s.chars().take_while(char::is_ascii_digit).collect() };
            let first = digits(tail);
            let Ok(a) = first.parse::<u32>() else {
                continue;
            };
            ids.insert(format!("{prefix}{a}"));
            let tail = &tail[first.len()..];
            if let Some(r) = tail.strip_prefix("..")
                && let Ok(z) = digits(r).parse::<u32>()
            {
                ids.extend((a..=z).map(|n| format!("{prefix}{n}")));
            } else if let Some(r) = tail.strip_prefix('/')
                && let Ok(z) = digits(r).parse::<u32>()
            {
                ids.insert(format!("{prefix}{z}"));
            }
        }
    }
    ids
}

/// The ids docs/spec-ids.md defines: each list entry opens with `- **ID**`.
fn listed_ids(doc: &str) -> BTreeSet<String> {
    doc.lines()
        .filter_map(|l| {
            l.strip_prefix("- **")?
                .split_once("**")
                .map(|(id, _)| id.to_string())
        })
        .collect()
}

#[test]
fn comments_cite_only_what_is_in_the_repository() {
    let mut bad = Vec::new();
    for (path, text) in sources() {
        bad.extend(
            bad_citations(&text)
                .into_iter()
                .map(|l| format!("{path}: {l}")),
        );
    }
    assert!(
        bad.is_empty(),
        "cite docs/multus-compat.md or docs/daemon.md by heading instead of a section number or a file \
         outside the repository:\n{}",
        bad.join("\n")
    );
}

#[test]
fn every_cited_spec_id_is_listed_in_docs_spec_ids() {
    let doc = fs::read_to_string(root().join("docs/spec-ids.md")).expect("docs/spec-ids.md");
    let listed = listed_ids(&doc);
    let mut missing = BTreeSet::new();
    let mut cited = 0;
    for (path, text) in sources() {
        // The list itself, and this file's samples of what a citation looks like.
        if path == "docs/spec-ids.md" || path == "tests/citations.rs" {
            continue;
        }
        for id in cited_ids(&text) {
            cited += 1;
            if !listed.contains(&id) {
                missing.insert(format!("{id} ({path})"));
            }
        }
    }
    assert!(
        cited > 100,
        "only {cited} citations found: is the scan looking in the right place?"
    );
    assert!(
        missing.is_empty(),
        "cited but not in docs/spec-ids.md:\n{}",
        missing.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_checks_find_what_they_look_for() {
    let s = SECTION;
    assert_eq!(
        bad_citations(&format!("// roll back ({s}10 #19).")).len(),
        1
    );
    assert_eq!(
        bad_citations(&format!("/// naming ({s}3.4) and {s}5.1 step 8")).len(),
        1
    );
    assert!(bad_citations(&format!("// the body runs to the close (RFC 9112 {s}6.3).")).is_empty());
    assert_eq!(
        bad_citations(&format!("// RFC 9112 {s}6.3 and {s}2")).len(),
        1
    );
    assert!(bad_citations(&format!("// a {s} sign alone")).is_empty());
    assert_eq!(bad_citations(&format!("//! see specs{}md", '.')).len(), 1);
    assert!(bad_citations("//! see docs/spec-ids.md").is_empty());

    let ids = cited_ids("NPWG-70..72, NPWG-22/24, CNI-5; XCNI-9, DECIDE-A1 and CNI-n");
    let want = [
        "CNI-5",
        "DECIDE-A1",
        "NPWG-22",
        "NPWG-24",
        "NPWG-70",
        "NPWG-71",
        "NPWG-72",
    ];
    assert_eq!(ids, want.iter().map(|s| s.to_string()).collect());
    let listed = listed_ids("- **CNI-5**: a line.\n- **NPWG-9**: another.\ntext **CNI-6**");
    assert_eq!(
        listed,
        ["CNI-5", "NPWG-9"].iter().map(|s| s.to_string()).collect()
    );
}
