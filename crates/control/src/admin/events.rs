//! One ledger entry's event history (the console's entry detail, `tollgate admin ledger
//! events`).
//!
//! Rules held here: operators and finance read any entry's events; a provider token only
//! those of its own provider's entries, and learns nothing of any other id: an id that is
//! malformed, unknown or another provider's is the same 403 to it.
//!
//! Must not: return the entry's stored payment (events carry none), or change anything.

use tollgate_admin_api::types as api;
use tollgate_metering::{EntryId, Role};

use super::{Host, values};
use crate::{ControlError, Principal};

const ACTION: &str = "read another provider's ledger";

/// The events of entry `id`, oldest first; an unknown id is not found (400 when malformed).
pub async fn entry_events<H: Host>(host: &H, p: &Principal, id: &str) -> Result<api::EntryEvents, ControlError> {
    let parsed: Option<EntryId> = id.parse().ok();
    let entry = match &parsed {
        Some(entry_id) => host.ledger().entries().get(entry_id).await?,
        None => None,
    };
    let (Some(entry_id), Some(entry)) = (parsed, entry) else {
        p.require(&[Role::Operator, Role::Finance], ACTION)?;
        return Err(match id.parse::<EntryId>() {
            Ok(_) => ControlError::NotFound { what: "ledger entry", key: id.to_owned() },
            Err(_) => ControlError::invalid("id", "expected 32 lowercase hex digits"),
        });
    };
    p.require_reader_of(&entry.provider, ACTION)?;
    let events = values(host.ledger().entries().events(&entry_id).await?);
    Ok(api::EntryEvents { entry_id: entry_id.to_string(), events })
}
