//! The admin API's contract, shared by the gateway (server side) and the CLI (client side).
//!
//! Owns: the request bodies and query parameters ([`types`]), the answers the gateway builds
//! itself, the route table ([`routes::ROUTES`]: method, path, operation, the roles that may
//! call it) and the OpenAPI document generated from both ([`openapi::document`]). Nothing
//! else writes a route down: the gateway mounts its handlers from the table, the CLI builds
//! its bodies from these types, and tests check the served document against the table.
//!
//! Must not: depend on the server (no axum, no database, no gateway), know HTTP status codes
//! beyond documenting them, or carry a secret in anything that prints (`Secret` redacts).

pub mod openapi;
pub mod routes;
pub mod types;

pub use routes::{Method, Operation, ROUTES, Role, Route};
