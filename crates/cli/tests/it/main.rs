//! Tests of the `tollgate` binary as a process.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod admin;
mod agent;
mod agent_crash;
mod agent_dx;
mod architecture;
mod console;
mod crash;
mod deploy;
mod faults;
#[path = "../../../client/tests/it/harness.rs"]
mod harness;
mod interop;
// The outside load bench's code, run by `serve_load` with a tiny N so it cannot rot.
// The bench's `main` uses what the test does not (the usage text).
#[path = "../../benches/serve_load/load.rs"]
#[allow(dead_code)]
mod load_bench;
mod propagation;
mod provider_ops;
mod reconcile_cli;
mod serve;
mod serve_load;
mod startup;
mod tls;
