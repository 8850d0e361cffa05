//! Tests of the `tollgate` binary as a process.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod admin;
mod agent;
mod agent_crash;
mod architecture;
mod crash;
mod deploy;
mod faults;
#[path = "../../../client/tests/it/harness.rs"]
mod harness;
mod interop;
mod propagation;
mod reconcile_cli;
mod serve;
mod startup;
mod tls;
