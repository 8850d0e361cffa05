//! The outside load bench (`benches/serve_load`, issue 17) with a tiny N: the same code as
//! `cargo bench -p tollgate-cli --bench serve_load`, built in the test profile against the
//! test profile's binary, so a change that breaks the bench breaks the suite (CI builds no
//! benches). The numbers mean nothing here; the chain check must pass.

use crate::load_bench::{Settings, run};

async fn smoke(mode: &str) {
    let env = |k: &str| -> Option<String> {
        let v = match k {
            "TOLLGATE_LOAD_MODE" => mode,
            "TOLLGATE_LOAD_CALLS" => "20",
            "TOLLGATE_LOAD_WARMUP" => "4",
            "TOLLGATE_LOAD_IN_FLIGHT" => "4",
            "TOLLGATE_LOAD_RECEIPT_POLL_MS" => "20",
            // No perf or strace needed by the suite; the run says the count is unavailable.
            "TOLLGATE_LOAD_SYSCALLS" => "off",
            "TOLLGATE_LOAD_DRAIN_MAX_S" => "60",
            _ => return None,
        };
        Some(v.to_owned())
    };
    let settings = Settings::from_env(&env).unwrap();
    let report = run(&settings, env!("CARGO_BIN_EXE_tollgate")).await.unwrap();
    report.print();
    assert!(report.chain_ok(), "the chain check failed in mode {mode}");
    assert_eq!(report.calls(), 20);
}

// Goal: the load bench runs end to end against `tollgate serve` in mode `after` (SQLite):
// 20 paid calls answered, each settled exactly once on chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_load_smoke_after() {
    smoke("after").await;
}

// Goal: the same in mode `deferred`, through the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_load_smoke_deferred() {
    smoke("deferred").await;
}
