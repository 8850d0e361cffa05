//! Integration tests of the agent SDK against real components: anvil with the token at
//! Base's USDC address, the gateway in-process with a SQLite ledger, a real upstream, and
//! loopback proxies that lose responses. No mock of the gateway.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod budget;
mod harness;
mod no_double_pay;
mod pay;
