//! Read-only views and finance's notes: revenue, ledger entries, the audit trail, and the
//! reconciliation's exceptions and resolution notes.
//!
//! Rules held here: finance and operators read everything; a provider token reads only its
//! own provider's revenue, entries and audit records, whatever filter it asks for; notes are
//! appended by operators and finance, never edited.
//!
//! Must not: return the stored payment of an entry (it holds the payer's signature), or run
//! a reconciliation (that needs the chains: the gateway's `tollgate-recon` side).

use alloy_primitives::U256;
use serde_json::{Map, Value};
use tollgate_admin_api::types as api;
use tollgate_metering::{
    AuditQuery, AuditVerification, Decision, EntryFilter, EntryState, MeteringError, ReconException, ReconRun,
    RevenueLine, Role, TokenUnits,
};

use super::{Host, address, value, values};
use crate::{ControlError, Principal};

/// A provider's revenue in a time range (operators, finance, or the provider's own token).
pub async fn revenue<H: Host>(
    host: &H,
    p: &Principal,
    id: String,
    input: impl FnOnce() -> Result<api::RangeQuery, ControlError>,
) -> Result<api::Revenue, ControlError> {
    p.require_reader_of(&id, "read another provider's revenue")?;
    let q = input()?;
    let (from, to) = (q.from_unix_s.unwrap_or(0), q.to_unix_s.unwrap_or(i64::MAX as u64));
    let units = host.units(None);
    let lines = host.ledger().spend().revenue(&id, from, to).await?.iter().map(|l| revenue_line(l, &units)).collect();
    Ok(api::Revenue { provider: id, from_unix_s: from, to_unix_s: to, lines })
}

/// A value as a JSON object with `amounts` rewritten by [`TokenUnits::put`] (token units and
/// `_atomic` beside them) and the symbol added: the one shape of every amount an admin view
/// shows.
fn with_amounts<T: serde::Serialize>(v: &T, units: &TokenUnits, amounts: &[(&str, Option<U256>)]) -> Value {
    let mut o = match value(v) {
        Value::Object(o) => o,
        _ => Map::new(),
    };
    for (name, atomic) in amounts {
        units.put(&mut o, name, *atomic);
    }
    o.insert("symbol".to_owned(), Value::String(units.symbol.clone()));
    Value::Object(o)
}

fn revenue_line(l: &RevenueLine, units: &TokenUnits) -> Value {
    // The sum is written by the store as a decimal string of atomic units.
    let atomic = U256::from_str_radix(&l.amount, 10).ok();
    with_amounts(l, units, &[("amount", atomic)])
}

/// A recorded reconciliation run as the admin API shows it: totals in token units with their
/// atomic integers beside them.
pub fn run_view(r: &ReconRun, units: &TokenUnits) -> Value {
    let totals = [
        ("chain_total", Some(r.chain_total)),
        ("ledger_total", Some(r.ledger_total)),
        ("matched_total", Some(r.matched_total)),
    ];
    with_amounts(r, units, &totals)
}

/// A recorded exception as the admin API shows it: amounts in token units with their atomic
/// integers beside them.
pub fn exception_view(e: &ReconException, units: &TokenUnits) -> Value {
    with_amounts(e, units, &[("amount_ledger", e.amount_ledger.map(U256::from)), ("amount_chain", e.amount_chain)])
}

/// The provider filter a caller reads with: its own for a provider token (asking for another
/// is refused), the one asked for otherwise.
fn provider_filter(p: &Principal, asked: Option<String>, action: &'static str) -> Result<Option<String>, ControlError> {
    match p.role {
        Role::Operator | Role::Finance => Ok(asked),
        Role::Provider => {
            if asked.is_some() && asked != p.provider {
                return Err(ControlError::Forbidden { action });
            }
            Ok(p.provider.clone())
        }
    }
}

/// A page of ledger entries, without their stored payments.
pub async fn ledger_entries<H: Host>(
    host: &H,
    p: &Principal,
    input: impl FnOnce() -> Result<api::EntriesQuery, ControlError>,
) -> Result<api::LedgerEntries, ControlError> {
    let q = input()?;
    let provider = provider_filter(p, q.provider, "read another provider's ledger")?;
    let payer = q.payer.as_deref().map(|w| address("payer", w)).transpose()?;
    let state = q
        .state
        .as_deref()
        .map(|s| s.parse::<EntryState>().map_err(|_| ControlError::invalid("state", "not a ledger state")))
        .transpose()?;
    let filter = EntryFilter {
        provider,
        payer,
        from_unix_s: q.from_unix_s.unwrap_or(0),
        to_unix_s: q.to_unix_s.unwrap_or(i64::MAX as u64),
        state,
    };
    let entries = host.ledger().entries().page(&filter, q.offset.unwrap_or(0), q.limit.unwrap_or(100)).await?;
    // The stored payment (signature included) is not part of the view.
    let entries = entries
        .into_iter()
        .map(|e| {
            let mut v =
                with_amounts(&e, &host.units(Some(e.chain_id)), &[("amount", Some(U256::from(e.amount.get())))]);
            if let Some(o) = v.as_object_mut() {
                o.remove("payment");
            }
            v
        })
        .collect();
    Ok(api::LedgerEntries { entries })
}

/// The audit filter a caller may use: a provider token only ever reads its own provider's
/// records; the page size is 1 to 1,000 (default 100).
pub fn audit_filter(p: &Principal, q: api::AuditParams) -> Result<AuditQuery, ControlError> {
    let provider = provider_filter(p, q.provider, "read another provider's audit trail")?;
    Ok(AuditQuery {
        wallet: q.wallet.as_deref().map(|w| address("wallet", w)).transpose()?,
        endpoint: q.endpoint,
        provider,
        from_unix_ms: q.from_unix_ms,
        to_unix_ms: q.to_unix_ms,
        decision: q
            .decision
            .as_deref()
            .map(|d| Decision::parse(d).ok_or_else(|| ControlError::invalid("decision", "expected accepted or denied")))
            .transpose()?,
        after_seq: q.after_seq,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
    })
}

/// One page of audit records, with the cursor of the next page when this one is full.
pub async fn audit_page<H: Host>(
    host: &H,
    p: &Principal,
    input: impl FnOnce() -> Result<api::AuditParams, ControlError>,
) -> Result<api::AuditPage, ControlError> {
    let filter = audit_filter(p, input()?)?;
    let records = host.ledger().audit().query(&filter).await?;
    let next = if records.len() == filter.limit as usize { records.last().map(|r| r.seq) } else { None };
    Ok(api::AuditPage { records: values(records), next_after_seq: next })
}

/// Verifies the whole audit chain (operators and finance).
pub async fn audit_verify<H: Host>(host: &H, p: &Principal) -> Result<AuditVerification, ControlError> {
    p.require(&[Role::Operator, Role::Finance], "verify the audit chain")?;
    Ok(host.ledger().audit().verify().await?)
}

/// The exceptions of a reconciliation run (operators and finance).
pub async fn recon_exceptions<H: Host>(
    host: &H,
    p: &Principal,
    id: &str,
) -> Result<api::ReconExceptions, ControlError> {
    p.require(&[Role::Operator, Role::Finance], "read reconciliation exceptions")?;
    let id: i64 = id.parse().map_err(|_| ControlError::invalid("id", "expected a run id"))?;
    let exceptions = host.ledger().recon().exceptions(id).await?;
    let exceptions = exceptions.iter().map(|e| exception_view(e, &host.units(Some(e.chain_id)))).collect();
    Ok(api::ReconExceptions { run_id: id, exceptions })
}

/// The notes of a reconciliation exception (operators and finance).
pub async fn recon_notes<H: Host>(host: &H, p: &Principal, id: &str) -> Result<api::ReconNotes, ControlError> {
    p.require(&[Role::Operator, Role::Finance], "read reconciliation notes")?;
    let id: i64 = id.parse().map_err(|_| ControlError::invalid("id", "expected an exception id"))?;
    Ok(api::ReconNotes { exception_id: id, notes: values(host.ledger().recon().notes(id).await?) })
}

/// Appends a resolution note (who = the caller's token) to an exception.
pub async fn add_recon_note<H: Host>(
    host: &H,
    p: &Principal,
    id: &str,
    input: impl FnOnce() -> Result<api::NoteBody, ControlError>,
) -> Result<api::NoteAdded, ControlError> {
    p.require(&[Role::Operator, Role::Finance], "annotate reconciliation exceptions")?;
    let b = input()?;
    let id: i64 = id.parse().map_err(|_| ControlError::invalid("id", "expected an exception id"))?;
    if b.why.trim().is_empty() {
        return Err(ControlError::invalid("why", "must not be empty"));
    }
    let who = p.actor().0;
    let note_id = host.ledger().recon().add_note(id, &who, &b.why, host.now_unix_s()).await.map_err(|e| match e {
        // A foreign-key failure: no such exception.
        MeteringError::Database { retryable: false, .. } => {
            ControlError::NotFound { what: "reconciliation exception", key: id.to_string() }
        }
        other => ControlError::from(other),
    })?;
    Ok(api::NoteAdded { exception_id: id, note_id, who })
}
