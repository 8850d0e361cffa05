//! Integration tests of `tollgate-recon` through its public API and its sources.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod layout;
mod render;
