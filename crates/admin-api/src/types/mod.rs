//! The admin API's request bodies, query parameters and answers.
//!
//! Bodies and queries refuse unknown fields (the gateway answers 400 naming the field).
//! Records the ledger owns (token records, credential versions, wallet policies, audit
//! records, ledger entries, reconciliation runs) travel as the ledger serialises them and are
//! documented as objects here; every envelope around them is typed.
//!
//! One module per resource; everything is re-exported here, so `types::X` names any of them.
//!
//! Must not: validate beyond the shape (the control plane's rules do), or print a secret.

mod audit;
mod catalog;
mod credentials;
mod error;
mod events;
mod ledger;
mod recon;
mod tokens;
mod wallets;

pub use audit::*;
pub use catalog::*;
pub use credentials::*;
pub use error::*;
pub use events::*;
pub use ledger::*;
pub use recon::*;
pub use tokens::*;
pub use wallets::*;
