//! End-to-end tests of the gateway: a real anvil chain with the token at Base's USDC
//! address, a real HTTP upstream that requires the injected key, the gateway on a free
//! loopback port, and the ledger on SQLite and PostgreSQL (the harness is `harness.rs`, on
//! the test kit of `tollgate-test-support`).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod after;
mod batch;
mod catalog;
mod concurrency;
mod control;
mod deferred_before;
mod discovery;
mod entry_events;
mod errors;
mod finality;
mod flows;
mod harness;
mod hostile_upstream;
mod limits;
mod money_truth;
mod ops;
mod payment_id;
mod readiness;
mod reconcile;
mod secrets;
mod tls;
