//! The storage layer's shape, read from the source: the `crate::` paths each file of
//! `src/` names, resolved to the module that defines them. Checks the invariants that
//! ARCHITECTURE.md states for `tollgate-metering`: no file imports from a file that imports
//! from it, `db` knows no repository,
//! repositories import no other repository except `settings` and `entry_row`, and nothing
//! below `ledger` imports it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The module path of a source file (`src/repo/entries.rs` → `repo::entries`,
/// `src/db/mod.rs` → `db`, `src/lib.rs` → ``).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).filter(|p| *p != "mod" && *p != "lib").collect();
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::a::b::C` (or `$crate::...`) path in `text`, as its segments. A `use` with
/// braces (`crate::repo::{a, b::C}`) yields one path per item (`repo::a`, `repo::b::C`).
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let (prefix, tail) = segments(rest);
        match tail.strip_prefix('{') {
            Some(inner) => {
                let inner = &inner[..inner.find('}').unwrap_or(inner.len())];
                for item in inner.split(',') {
                    let (item, _) = segments(item.trim());
                    if !item.is_empty() {
                        paths.push(prefix.iter().cloned().chain(item).collect());
                    }
                }
            }
            None => paths.push(prefix),
        }
    }
    paths
}

/// The `::`-separated identifiers at the start of `text`, and what follows them.
fn segments(text: &str) -> (Vec<String>, &str) {
    let mut segments = Vec::new();
    let mut tail = text;
    loop {
        let end = tail.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(tail.len());
        if end == 0 {
            break;
        }
        segments.push(tail[..end].to_owned());
        tail = &tail[end..];
        match tail.strip_prefix("::") {
            Some(t) => tail = t,
            None => break,
        }
    }
    (segments, tail)
}

/// Where each name re-exported by `lib.rs` is defined (`MeteringError` → `error`).
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for stmt in lib.split(';') {
        let Some(at) = stmt.find("pub use ") else { continue };
        let stmt = &stmt[at + "pub use ".len()..];
        let (module, names) = match stmt.split_once("::{") {
            Some((module, names)) => (module.trim(), names.trim_end_matches(['}', ' ', '\n']).to_owned()),
            None => {
                let (module, name) = stmt.rsplit_once("::").unwrap();
                (module.trim(), name.to_owned())
            }
        };
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            map.insert(name.to_owned(), module.to_owned());
        }
    }
    map
}

/// The module graph of `src/`: file module → modules it names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let names = reexports(&lib);
    let mut graph = BTreeMap::new();
    for file in &files {
        let from = module_of(&src, file);
        if from.is_empty() {
            continue; // lib.rs declares and re-exports everything
        }
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests may reach anywhere, and comments (doc links) import nothing: the shape
        // is about the code.
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        let text: String =
            text.lines().filter(|line| !line.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
        let mut to = BTreeSet::new();
        for path in crate_paths(&text) {
            let target = (1..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|prefix| modules.contains(prefix))
                .or_else(|| path.first().and_then(|name| names.get(name).cloned()));
            let target = target.unwrap_or_else(|| panic!("{from}: cannot resolve crate::{}", path.join("::")));
            if target != from {
                to.insert(target);
            }
        }
        graph.insert(from, to);
    }
    graph
}

// Goal: the module graph of tollgate-metering has no cycle (no file imports from a file that
// imports from it, directly or around a loop); a cycle is reported with its path.
#[test]
fn metering_modules_have_no_cycle() {
    let merged = graph();
    assert!(merged.contains_key("repo::entries") && merged.contains_key("db"), "the graph was read: {merged:?}");
    fn visit(n: &str, g: &BTreeMap<String, BTreeSet<String>>, stack: &mut Vec<String>, done: &mut BTreeSet<String>) {
        if let Some(at) = stack.iter().position(|s| s == n) {
            panic!("import cycle: {} -> {n}", stack[at..].join(" -> "));
        }
        if done.contains(n) {
            return;
        }
        stack.push(n.to_owned());
        for next in g.get(n).into_iter().flatten() {
            visit(next, g, stack, done);
        }
        stack.pop();
        done.insert(n.to_owned());
    }
    let mut done = BTreeSet::new();
    for n in merged.keys() {
        visit(n, &merged, &mut Vec::new(), &mut done);
    }
}

// Goal: the layers hold. `db` and the pure rule modules know no repository and not the
// `Ledger`; a repository imports no other repository except `settings` (the change log) and
// `entry_row` (the row shape); nothing but `lib.rs` imports `ledger`.
#[test]
fn metering_layers_hold() {
    let g = graph();
    let mut broken = Vec::new();
    for (from, to) in &g {
        for t in to {
            let repo_to_repo = from.starts_with("repo::")
                && t.starts_with("repo::")
                && t != "repo::settings"
                && t != "repo::entry_row";
            let below_repos = ["db", "db::codec", "db::group", "error", "types", "checks", "policy", "reconcile"]
                .contains(&from.as_str());
            let up = below_repos && (t.starts_with("repo") || t == "ledger");
            if repo_to_repo || up || t == "ledger" {
                broken.push(format!("{from} -> {t}"));
            }
        }
    }
    assert!(g.get("repo::entries::reserve").is_some_and(|t| t.contains("db") && t.contains("policy")), "{g:?}");
    assert!(broken.is_empty(), "layer violations: {broken:?}");
}
