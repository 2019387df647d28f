//! The architecture's dependency rules, checked on the source: which part of `src/` may import
//! which (ARCHITECTURE.md, "Code map"), and no import circle between parts but the one between
//! the error type and LSNs. A part is a top-level module of the crate (a folder of `src/` or a
//! file at its top). Reads every `crate::<part>` path in code (`use` lines and paths in
//! expressions, `use crate::{a, b::c}` groups included); comments, doc links and `#[cfg(test)]`
//! modules are not code a build depends on and are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each part may import, besides itself. Lower parts first; a part never imports one
/// listed after it, except where written here (the ffi layer and the crate root sit on top).
const RULES: &[(&str, &[&str])] = &[
    // Concurrency primitives: nothing of the crate.
    ("sync", &[]),
    // Vocabulary.
    ("error", &["lsn"]),
    ("lsn", &["error"]),
    ("labels", &[]),
    ("dsn", &["error"]),
    ("redact", &["dsn"]),
    // Configuration: its schema, defaults and bounds.
    ("config", &["dsn", "error", "labels", "redact"]),
    ("counters", &["labels", "sync"]),
    // One PostgreSQL server.
    (
        "server",
        &["config", "dsn", "error", "labels", "lsn", "redact", "sync"],
    ),
    // Pure policy and the parts that only do I/O of their own.
    ("health", &["config", "dsn", "labels", "lsn"]),
    (
        "discovery",
        &["config", "counters", "dsn", "redact", "sync"],
    ),
    (
        "sticking",
        &[
            "config", "counters", "error", "labels", "lsn", "redact", "sync",
        ],
    ),
    ("freshness", &["counters", "lsn", "sticking"]),
    // Where a read goes.
    (
        "routing",
        &[
            "config",
            "counters",
            "dsn",
            "error",
            "freshness",
            "health",
            "labels",
            "lsn",
            "redact",
            "server",
            "sticking",
            "sync",
        ],
    ),
    // Derived from routing's snapshots.
    (
        "events",
        &[
            "config", "dsn", "health", "labels", "routing", "server", "sync",
        ],
    ),
    (
        "observability",
        &[
            "config", "counters", "dsn", "health", "labels", "lsn", "routing", "server", "sync",
        ],
    ),
    // The background thread.
    (
        "monitor",
        &[
            "config",
            "counters",
            "discovery",
            "dsn",
            "error",
            "events",
            "health",
            "labels",
            "lsn",
            "redact",
            "routing",
            "server",
            "sticking",
            "sync",
        ],
    ),
    // The facade.
    (
        "balancer",
        &[
            "config",
            "counters",
            "discovery",
            "dsn",
            "error",
            "events",
            "freshness",
            "health",
            "labels",
            "lsn",
            "monitor",
            "observability",
            "redact",
            "routing",
            "server",
            "sticking",
            "sync",
        ],
    ),
];

/// Parts on top, which may import anything: the C ABI, the crate root, test scaffolding.
const TOP: &[&str] = &["ffi", "lib", "test_hooks", "fuzz_tests"];

/// The one import circle allowed: an error carries an LSN, and parsing an LSN fails with one.
const CIRCLES_ALLOWED: &[(&str, &str)] = &[("error", "lsn")];

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The part a file belongs to: its top-level module.
fn part_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The code of `text` a build depends on: without comments and without the `#[cfg(test)]`
/// module (by convention the last item of a file).
fn code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Whether `c` before a `crate::` makes it part of another path (`$crate::`, `mycrate::`).
fn continues_a_path(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$'
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The parts `code` names with `crate::`: `crate::a::x`, and the first segment of each item of
/// a `crate::{a, b::c, d::{e, f}}` group.
fn imported_parts(code: &str) -> BTreeSet<String> {
    let mut parts = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(continues_a_path) {
            continue; // `$crate::`, `mycrate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        rest = &group[j..];
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_ascii_alphabetic() || c == '_') => {
                        parts.insert(ident_at(&group[j..]).to_string());
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let id = ident_at(rest);
            if !id.is_empty() {
                parts.insert(id.to_string());
            }
        }
    }
    parts
}

/// Every part's imports of other parts, with the files that make them.
fn graph() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let mut g: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for f in files {
        let part = part_of(&src, &f);
        let text = std::fs::read_to_string(&f).unwrap();
        let entry = g.entry(part.clone()).or_default();
        for imported in imported_parts(&code(&text)) {
            if imported != part {
                let rel = f.strip_prefix(&src).unwrap().display().to_string();
                entry.entry(imported).or_default().insert(rel);
            }
        }
    }
    g
}

/// The violations of [`RULES`] in `g`.
fn violations(g: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>) -> Vec<String> {
    let rules: BTreeMap<&str, &[&str]> = RULES.iter().copied().collect();
    let mut bad = Vec::new();
    for (part, imports) in g {
        if TOP.contains(&part.as_str()) {
            continue;
        }
        let Some(allowed) = rules.get(part.as_str()) else {
            bad.push(format!(
                "src/{part}: a part with no rule in tests/architecture.rs (add it, and a row to ARCHITECTURE.md)"
            ));
            continue;
        };
        for (imported, files) in imports {
            if !allowed.contains(&imported.as_str()) {
                bad.push(format!(
                    "{part} must not import {imported} (in {})",
                    files.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    bad
}

/// Pairs of parts that import each other, other than [`CIRCLES_ALLOWED`], and longer circles
/// through parts (found by a depth-first search).
fn circles(g: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>) -> Vec<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        node: &str,
        path: &mut Vec<String>,
        found: &mut BTreeSet<Vec<String>>,
    ) {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut c: Vec<String> = path[at..].to_vec();
            let min = c.iter().enumerate().min_by_key(|(_, p)| *p).unwrap().0;
            c.rotate_left(min);
            found.insert(c);
            return;
        }
        path.push(node.to_string());
        if let Some(next) = g.get(node) {
            for n in next.keys() {
                visit(g, n, path, found);
            }
        }
        path.pop();
    }
    let mut found = BTreeSet::new();
    for n in g.keys() {
        if !TOP.contains(&n.as_str()) {
            visit(g, n, &mut Vec::new(), &mut found);
        }
    }
    found
        .into_iter()
        .filter(|c| !c.iter().any(|p| TOP.contains(&p.as_str())))
        .filter(|c| {
            !(c.len() == 2
                && CIRCLES_ALLOWED
                    .iter()
                    .any(|(a, b)| (c[0] == *a && c[1] == *b) || (c[0] == *b && c[1] == *a)))
        })
        .collect()
}

#[test]
fn parts_import_only_what_the_architecture_allows() {
    let bad = violations(&graph());
    assert!(
        bad.is_empty(),
        "dependency rules broken (ARCHITECTURE.md, Code map):\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_import_circle_but_error_and_lsn() {
    let c = circles(&graph());
    assert!(c.is_empty(), "import circles: {c:?}");
}

/// The modules (files) `code` names with `crate::` paths: `crate::server::host::Host` is
/// `server/host` when `src/server/host.rs` exists, else the longest prefix that is a module.
fn imported_modules(src: &Path, code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        if code[..i].chars().last().is_some_and(continues_a_path) {
            continue;
        }
        let path = &code[i + "crate::".len()..];
        let end = path
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(path.len());
        let segs: Vec<&str> = path[..end].split("::").filter(|s| !s.is_empty()).collect();
        let mut module = None;
        for n in 1..=segs.len() {
            let m = segs[..n].join("/");
            if src.join(format!("{m}.rs")).exists() || src.join(&m).join("mod.rs").exists() {
                module = Some(m);
            }
        }
        out.extend(module);
    }
    out
}

/// Import circles between two files (`crate::` paths only: a parent module and its children
/// are one unit), other than [`CIRCLES_ALLOWED`].
#[test]
fn no_import_circle_between_files_but_error_and_lsn() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let module_of = |f: &Path| {
        let rel = f.strip_prefix(&src).unwrap().with_extension("");
        let m = rel.display().to_string();
        m.strip_suffix("/mod").map(str::to_string).unwrap_or(m)
    };
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let m = module_of(f);
        if TOP
            .iter()
            .any(|t| m == *t || m.starts_with(&format!("{t}/")))
        {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        let deps = imported_modules(&src, &code(&text));
        g.entry(m.clone())
            .or_default()
            .extend(deps.into_iter().filter(|d| {
                // A module and its own submodules or parents are one unit.
                d != &m && !d.starts_with(&format!("{m}/")) && !m.starts_with(&format!("{d}/"))
            }));
    }
    let mut bad = Vec::new();
    for (a, deps) in &g {
        for b in deps {
            if a < b && g.get(b).is_some_and(|d| d.contains(a)) {
                let allowed = CIRCLES_ALLOWED
                    .iter()
                    .any(|(x, y)| (a == x && b == y) || (a == y && b == x));
                if !allowed {
                    bad.push(format!("{a} <-> {b}"));
                }
            }
        }
    }
    assert!(bad.is_empty(), "import circles between files: {bad:?}");
}

#[test]
fn every_rule_names_a_part_that_exists() {
    let g = graph();
    for (part, allowed) in RULES {
        assert!(g.contains_key(*part), "rule for missing part {part}");
        for a in *allowed {
            assert!(g.contains_key(*a), "{part} may import missing part {a}");
        }
    }
}

/// The checker itself: a lower part made to import a higher one is caught, and so is a
/// circle; groups and paths in expressions are read, comments and test modules are not.
#[test]
fn the_rules_catch_a_lower_part_importing_a_higher_one() {
    let parsed = imported_parts(&code(
        "use crate::{lsn::Lsn, sync::{stripe, fork}, error};\n\
         // use crate::balancer::Balancer;\n\
         /// [`crate::monitor`]\n\
         let x = crate::routing::store_key(1, k);\n\
         $crate::ignored::x;\n\
         #[cfg(test)]\nmod tests { use crate::ffi; }\n",
    ));
    let want: BTreeSet<String> = ["error", "lsn", "routing", "sync"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(parsed, want);

    let mut g = graph();
    g.get_mut("sync")
        .unwrap()
        .entry("routing".into())
        .or_default()
        .insert("sync/stripe.rs".into());
    let bad = violations(&g);
    assert!(
        bad.iter()
            .any(|b| b.starts_with("sync must not import routing")),
        "{bad:?}"
    );
    assert!(
        circles(&g).iter().any(|c| c.contains(&"sync".to_string())),
        "{:?}",
        circles(&g)
    );
}
