//! The paying HTTP gateway.
//!
//! Owns: the configuration file, the route table, the paid-request pipeline (402 quote →
//! decode → verify → reserve → forward with the provider's credential → settle or void),
//! settlement orchestration (modes `after`, `before`, `deferred`), the crash-recovery sweep,
//! the live control plane (snapshot, audit writer; the stored specs, the vault and the
//! permission rules are `tollgate-control`'s) and the admin API on its own
//! listener, reconciliation against the chain, and the **only** mapping from errors to HTTP
//! status codes (`error.rs`).
//!
//! Must not: let an unpaid call reach an upstream, forward before the ledger has the
//! reservation, charge when the upstream failed, print a credential (secrets live in
//! `secrecy` types; injected headers are marked sensitive), or panic on any request input.

pub mod admin;
pub mod admission;
pub mod app;
pub mod balances;
pub mod bazaar;
pub mod challenge;
pub mod config;
pub mod console;
pub mod control;
pub mod counters;
pub mod discovery;
pub mod error;
pub mod finality;
pub mod limits;
pub mod listener;
pub mod meters;
pub mod metrics;
pub mod paid;
pub mod proxy;
pub mod readiness;
pub mod readyz;
pub mod reconcile;
pub mod routes;
pub mod server;
pub mod settlement;
pub mod ssrf;
pub mod stored_payment;

pub use app::{Gateway, StartError};
pub use config::{Config, ConfigError};
pub use error::GatewayError;
pub use server::{reload_certificates, router, serve, serve_admin, serve_then};
