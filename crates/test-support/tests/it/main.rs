//! Tests of the test kit itself: each fixture does to real clients what it says it does.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod binary;
mod config;
mod pg_server;
mod rpc_fault;
mod upstream;
mod workspace;
