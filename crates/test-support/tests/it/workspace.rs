//! The workspace's dependency rule (ARCHITECTURE.md, cross-cutting concerns): every
//! dependency version is declared once, in the root `[workspace.dependencies]`, and every
//! crate takes it with `workspace = true` (adding features at most).

use std::path::Path;

use tollgate_test_support::workspace_root;

/// `(crate manifest, table, dependency)` for each dependency not taken from the workspace.
fn own_versions(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let mut found = Vec::new();
    for table in ["dependencies", "dev-dependencies", "build-dependencies"] {
        let Some(deps) = doc.get(table).and_then(toml::Value::as_table) else { continue };
        for (name, spec) in deps {
            let inherited = spec.get("workspace").and_then(toml::Value::as_bool) == Some(true);
            if !inherited {
                found.push(format!("{}: [{table}] {name} = {spec:?}", manifest.display()));
            }
        }
    }
    found
}

// Goal: no crate declares a dependency version of its own; a crate that does (e.g. a second
// `rand` or `axum` line) fails here, naming the manifest and the line.
#[test]
fn every_dependency_comes_from_the_workspace() {
    let crates = workspace_root().join("crates");
    let mut manifests: Vec<_> = std::fs::read_dir(&crates)
        .unwrap()
        .map(|e| e.unwrap().path().join("Cargo.toml"))
        .filter(|p| p.exists())
        .collect();
    manifests.sort();
    assert!(manifests.len() >= 8, "the crates are found: {manifests:?}");
    let offenders: Vec<String> = manifests.iter().flat_map(|m| own_versions(m)).collect();
    assert!(offenders.is_empty(), "declare these in the root [workspace.dependencies]:\n{}", offenders.join("\n"));
}
