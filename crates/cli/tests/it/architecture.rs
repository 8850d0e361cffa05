//! ARCHITECTURE.md's invariants that a tool can check: which crates may depend on what (read
//! from `cargo metadata`'s resolved graph, normal dependencies only, transitively), and that no
//! source file imports from a module that imports from it (read from the `crate::`/`super::`
//! paths of each crate's top-level modules).
//!
//! A rule here is a sentence of ARCHITECTURE.md; change both together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// What each workspace crate must not reach through its normal (non-dev, non-build)
/// dependencies, directly or transitively, and why (the sentence of ARCHITECTURE.md).
const FORBIDDEN: &[(&str, &[&str], &str)] = &[
    (
        "tollgate-x402",
        &["tokio", "reqwest", "hyper", "sqlx", "axum", "alloy-provider", "secp256k1", "k256", "rustls"],
        "x402: no IO, no async, no HTTP, no chain or crypto",
    ),
    (
        "tollgate-verifier",
        &["sqlx", "axum", "tollgate-metering", "tollgate-gateway"],
        "verifier: knows nothing of the database or of HTTP serving",
    ),
    (
        "tollgate-metering",
        &["alloy-provider", "alloy", "reqwest", "hyper", "axum", "tollgate-verifier", "tollgate-gateway"],
        "metering: knows nothing of alloy providers, HTTP or the verifier",
    ),
    (
        "tollgate-tls",
        &["axum", "sqlx", "alloy", "tollgate-x402", "tollgate-verifier", "tollgate-metering", "tollgate-gateway"],
        "tls: one TLS stack, knows nothing of the product",
    ),
    (
        "tollgate-recon",
        &["axum", "tollgate-gateway", "tollgate-client"],
        "recon: knows nothing of HTTP serving or the gateway",
    ),
    (
        "tollgate-control",
        &["axum", "hyper", "reqwest", "alloy", "tollgate-gateway", "tollgate-verifier"],
        "control: the control plane's rules know no HTTP, no chain and not the gateway",
    ),
    (
        "tollgate-admin-api",
        &["axum", "hyper", "reqwest", "sqlx", "tokio", "tollgate-metering", "tollgate-control", "tollgate-gateway"],
        "admin-api: the contract knows no server, no database and no control-plane code",
    ),
    (
        "tollgate-client",
        &["sqlx", "axum", "tollgate-metering", "tollgate-gateway", "tollgate-verifier"],
        "client: knows nothing of the gateway's internals, the ledger or sqlx",
    ),
];

/// Crates that may depend on `axum` directly: HTTP serving (status codes) lives in the gateway.
const AXUM_ALLOWED: &[&str] = &["tollgate-gateway"];

fn cargo(args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo).args(args).current_dir(workspace_root()).output().expect("cargo runs");
    assert!(out.status.success(), "cargo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("cargo prints UTF-8")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The workspace's package names.
fn members() -> BTreeSet<String> {
    let meta: Value =
        serde_json::from_str(&cargo(&["metadata", "--format-version", "1", "--no-deps", "--offline"])).unwrap();
    meta["packages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect()
}

/// The package names `krate` reaches through normal dependencies, up to `depth` (none: all),
/// with the features *it* enables (`cargo tree -p` resolves one package, unlike the
/// workspace-unified graph of `cargo metadata`, where every crate would seem to reach what any
/// crate turns on).
fn reach(krate: &str, depth: Option<u32>) -> BTreeSet<String> {
    let depth = depth.map(|d| d.to_string());
    let mut args = vec!["tree", "-p", krate, "-e", "normal", "--prefix", "none", "--offline", "-f", "{p}"];
    if let Some(d) = &depth {
        args.extend(["--depth", d.as_str()]);
    }
    cargo(&args)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != krate)
        .map(str::to_owned)
        .collect()
}

#[test]
fn crates_reach_only_what_architecture_allows() {
    // Goal: a crate that gains a forbidden dependency (an IO crate in tollgate-x402, sqlx in the
    // verifier, axum outside the gateway, the test kit in a shipped crate) fails here.
    let members = members();
    let mut broken = Vec::new();
    for name in &members {
        let reach_all = reach(name, None);
        for (krate, forbidden, why) in FORBIDDEN {
            if name == krate {
                for f in forbidden.iter().filter(|f| reach_all.contains(**f)) {
                    broken.push(format!("{name} reaches {f} ({why})"));
                }
            }
        }
        if reach_all.contains("tollgate-test-support") {
            broken.push(format!("{name} reaches tollgate-test-support outside dev-dependencies"));
        }
        if reach(name, Some(1)).contains("axum") && !AXUM_ALLOWED.contains(&name.as_str()) {
            broken.push(format!("{name} depends on axum: only {AXUM_ALLOWED:?} serve HTTP"));
        }
    }
    // Every rule names a crate that exists, so a rename cannot silently retire a rule.
    for (krate, _, _) in FORBIDDEN {
        assert!(members.contains(*krate), "rule for {krate}, which is not a workspace member");
    }
    assert!(broken.is_empty(), "dependency rules broken:\n{}", broken.join("\n"));
}

/// A crate's top-level modules: `src/foo.rs` or `src/foo/` is module `foo`; files under a
/// directory module belong to it.
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut mods: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            let mut files = Vec::new();
            rs_files(&path, &mut files);
            mods.entry(stem).or_default().extend(files);
        } else if path.extension().is_some_and(|e| e == "rs") && stem != "lib" && stem != "main" {
            mods.entry(stem).or_default().push(path);
        }
    }
    mods
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rs_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Names the crate root re-exports, mapped to the module they come from (`pub use m::{A, B}`).
fn reexports(root: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let flat = root.replace('\n', " ");
    for stmt in flat.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else { continue };
        let Some((module, names)) = rest.split_once("::") else { continue };
        for name in names.trim_matches(|c| c == '{' || c == '}' || c == ' ').split(',') {
            let name = name.trim();
            let name = name.rsplit(" as ").next().unwrap_or(name).trim();
            if !name.is_empty() {
                map.insert(name.to_owned(), module.trim().to_owned());
            }
        }
    }
    map
}

/// The identifiers that follow `prefix` in `text` (`crate::ledger` → `ledger`; `crate::{a, b}`
/// → `a`, `b`).
fn paths_after(text: &str, prefix: &str) -> Vec<String> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut out = Vec::new();
    for (i, _) in text.match_indices(prefix) {
        let rest = &text[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            out.extend(group.split(',').map(|p| ident(p.trim())).filter(|p| !p.is_empty()));
        } else {
            out.push(ident(rest));
        }
    }
    out
}

/// Edges between a crate's top-level modules: `a → b` when a file of `a` names `crate::b` (or
/// an item the crate root re-exports from `b`). Comments and unit tests are skipped.
fn module_edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let root = ["lib.rs", "main.rs"].iter().find_map(|f| std::fs::read_to_string(src.join(f)).ok()).unwrap_or_default();
    let reexported = reexports(&root);
    let mods = modules(src);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, files) in &mods {
        for file in files {
            // Unit tests (`#[cfg(test)]`, last in a file by house convention) may reach across
            // modules: they are not part of the crate's structure.
            let code: String = std::fs::read_to_string(file)
                .unwrap()
                .lines()
                .take_while(|l| l.trim() != "#[cfg(test)]")
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            // `super::x` from a top-level module file is `crate::x`.
            let top_level = file.parent() == Some(src);
            let mut named = paths_after(&code, "crate::");
            if top_level {
                named.extend(paths_after(&code, "super::"));
            }
            for name in named {
                let target = if mods.contains_key(&name) { Some(name) } else { reexported.get(&name).cloned() };
                if let Some(t) = target.filter(|t| t != module && mods.contains_key(t)) {
                    edges.entry(module.clone()).or_default().insert(t);
                }
            }
        }
    }
    edges
}

/// Cycles among modules (strongly connected components of more than one module).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges.keys().chain(edges.values().flatten()).collect();
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for m in edges.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    stack.push(m.clone());
                }
            }
        }
        seen
    };
    let closure: BTreeMap<&String, BTreeSet<String>> = nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut found: BTreeSet<Vec<String>> = BTreeSet::new();
    for n in &nodes {
        let mut scc: Vec<String> = nodes
            .iter()
            .filter(|m| closure[*n].contains(**m) && closure[*m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        if scc.len() > 1 {
            scc.sort();
            found.insert(scc);
        }
    }
    found.into_iter().collect()
}

/// Module cycles that exist today and are being taken apart (issue 16). The list may only
/// shrink: a new cycle fails the test, and so does a listed one that is gone (delete its line).
const KNOWN_CYCLES: &[&str] = &[
    // gateway: none left (config/upstream_allow.rs and the readiness/metrics services above
    // `app` took them apart).
    // metering: none left (the storage layer's repositories and checks.rs took them apart).
];

#[test]
fn no_file_imports_from_a_file_that_imports_from_it() {
    // Goal: a module cycle inside any crate (a imports b, b imports a, directly or around a
    // longer loop) fails here, naming the modules (style.md rule 17), except the listed ones
    // still being taken apart, whose list cannot go stale.
    let crates = workspace_root().join("crates");
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(&crates).unwrap() {
        let dir = entry.unwrap().path();
        let src = dir.join("src");
        if !src.is_dir() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        for cycle in cycles(&module_edges(&src)) {
            found.insert(format!("{name}: {}", cycle.join(" <-> ")));
        }
    }
    let known: BTreeSet<String> = KNOWN_CYCLES.iter().map(|c| (*c).to_owned()).collect();
    let new: Vec<&String> = found.difference(&known).collect();
    let gone: Vec<&String> = known.difference(&found).collect();
    assert!(new.is_empty(), "new module cycles:\n{new:#?}");
    assert!(gone.is_empty(), "cycles no longer present; delete them from KNOWN_CYCLES:\n{gone:#?}");
}

#[test]
fn the_cycle_check_sees_a_cycle() {
    // Goal: the checker itself finds a planted two-module cycle and a re-exported name, so a
    // parser gap cannot make the real check pass vacuously.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\npub use b::{Thing, Other as O};\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::Thing;\npub struct A;\n").unwrap();
    std::fs::write(src.join("b.rs"), "// crate::c is only a comment\nuse crate::{a::A};\npub struct Thing;\n#[cfg(test)]\nmod tests { use crate::c; }\n").unwrap();
    std::fs::write(src.join("c.rs"), "use super::b::Thing;\n").unwrap();
    let edges = module_edges(src);
    assert_eq!(cycles(&edges), vec![vec!["a".to_owned(), "b".to_owned()]]);
    assert!(edges["c"].contains("b"));
    assert!(!edges["b"].contains("c"), "comments and unit tests are not imports");
}
