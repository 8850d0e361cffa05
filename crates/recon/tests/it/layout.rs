//! ARCHITECTURE.md's invariants of this crate that a text check can hold (code lines only;
//! comments may name what the code must not use).

use std::path::{Path, PathBuf};

/// The code lines of a source file: comments left out.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn matcher_does_no_io() {
    // Goal: the pure matcher (src/matcher.rs) never gains async code, the runtime, the ledger, a chain, files or sockets.
    let text = code(&src().join("matcher.rs"));
    let io = ["async", ".await", "tokio", "Ledger", "dyn Chain", "tollgate_verifier", "std::fs", "std::net", "reqwest"];
    let found: Vec<&str> = io.into_iter().filter(|w| text.contains(w) && !class_name_only(&text, w)).collect();
    assert!(found.is_empty(), "src/matcher.rs uses {found:?}: the matcher does no IO");
}

/// `Ledger` also appears in two class names (`...InLedger`, `LedgerSettled...`); those are not IO.
fn class_name_only(text: &str, word: &str) -> bool {
    word == "Ledger"
        && text.replace("OnchainMissingInLedger", "").replace("LedgerSettledMissingOnchain", "").find(word).is_none()
}

#[test]
fn no_http_in_the_crate() {
    // Goal: no code in tollgate-recon names axum, hyper or HTTP status codes: reconciliation knows no HTTP.
    for entry in std::fs::read_dir(src()).unwrap() {
        let path = entry.unwrap().path();
        let text = code(&path);
        for word in ["axum", "hyper", "StatusCode", "http::"] {
            assert!(!text.contains(word), "{} uses {word}", path.display());
        }
    }
}
