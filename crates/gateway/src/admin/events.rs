//! Handler of one ledger entry's event history; the rule of who reads which entry is
//! `tollgate_control::admin::events`'.
//!
//! Must not: return anything of the entry beyond its events.

use std::sync::Arc;

use axum::extract::{Path, State};

use super::auth::Auth;
use super::{AdminResult, ok};
use crate::app::Gateway;

pub(super) async fn entry_events(State(gw): State<Arc<Gateway>>, Auth(p): Auth, Path(id): Path<String>) -> AdminResult {
    ok(tollgate_control::admin::events::entry_events(&*gw, &p, &id).await?)
}
