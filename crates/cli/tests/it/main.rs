//! Tests of the `tollgate` binary as a process.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod agent;
mod agent_crash;
mod crash;
#[path = "../../../client/tests/it/harness.rs"]
mod harness;
mod interop;
