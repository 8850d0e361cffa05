//! Handlers of reconciliation (finance): running one against the chains (the gateway's side
//! of `tollgate-recon`, which needs its networks and chain clients), its runs, and the
//! exceptions and notes the control plane serves (`tollgate_control::admin::views`).
//!
//! Must not: match or render a report itself (`tollgate-recon` does), or write the control
//! plane.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::IntoResponse;
use tollgate_admin_api::types as api;
use tollgate_control::ControlError;
use tollgate_control::admin::views;
use tollgate_metering::Role;
use tollgate_recon::{
    ReconcileError, parse_time, reconcile_range, reconcile_resume, reconcile_times, render_csv, render_json,
    render_totals_csv,
};

use super::auth::{AdminBody, Auth, query};
use super::{AdminError, AdminResult, ok};
use crate::app::Gateway;
use crate::error::GatewayError;

type Gw = State<Arc<Gateway>>;

fn invalid(field: &str, reason: impl Into<String>) -> AdminError {
    AdminError::from(ControlError::invalid(field, reason))
}

fn network_of(gw: &Gateway, asked: Option<&str>) -> Result<tollgate_x402::Network, AdminError> {
    match (asked, gw.config.networks.as_slice()) {
        (Some(n), _) => {
            let n = tollgate_x402::Network::parse(n).map_err(|e| invalid("network", e.to_string()))?;
            gw.config.network(n).map(|c| c.network).ok_or_else(|| invalid("network", format!("{n} is not configured")))
        }
        (None, [only]) => Ok(only.network),
        (None, _) => Err(invalid("network", "required: several networks are configured")),
    }
}

fn recon_error(e: ReconcileError) -> AdminError {
    match e {
        ReconcileError::Chain(v) => AdminError(GatewayError::Verify(v)),
        ReconcileError::Ledger(m) => AdminError(GatewayError::from(m)),
        other => invalid("range", other.to_string()),
    }
}

/// Runs a reconciliation (blocks, times, or resume from the cursor), records it, and answers
/// with the report as JSON, its items as CSV with `?format=csv`, or its totals per UTC day,
/// UTC month, provider, route and payer as CSV with `?format=totals_csv`.
pub(super) async fn reconcile(State(gw): Gw, Auth(p): Auth, uri: Uri, body: AdminBody) -> AdminResult {
    p.require(&[Role::Operator, Role::Finance], "run reconciliations")?;
    let f: api::FormatQuery = query(&uri)?;
    let format = match f.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        Some("totals_csv") => Format::TotalsCsv,
        Some(other) => return Err(invalid("format", format!("`{other}`: expected json, csv or totals_csv"))),
    };
    let b: api::ReconcileBody = body.json()?;
    let network = network_of(&gw, b.network.as_deref())?;
    let mut opts = gw.config.reconciliation.options();
    let recon = crate::reconcile::reconciler(&gw);
    if let Some(c) = b.confirmations {
        opts.confirmations_min = c.max(1);
    }
    if let Some(c) = b.chunk_blocks {
        opts.chunk_blocks = c.clamp(1, 100_000);
    }
    let outcome = match (b.from_block, b.to_block, b.from_time, b.to_time, b.resume) {
        (Some(from), Some(to), None, None, false) => reconcile_range(&recon, network, from, to, opts).await,
        (None, None, Some(from), Some(to), false) => {
            let from = parse_time(&from).map_err(|e| invalid("from_time", e))?;
            let to = parse_time(&to).map_err(|e| invalid("to_time", e))?;
            reconcile_times(&recon, network, from, to, opts).await
        }
        (None, None, None, None, true) => {
            let c = &gw.config.reconciliation;
            match reconcile_resume(&recon, network, c.start_block, c.run_blocks_max, opts).await {
                Ok(Some(o)) => Ok(o),
                Ok(None) => return ok(serde_json::json!({ "run": null, "reason": "no new block since the last run" })),
                Err(e) => Err(e),
            }
        }
        _ => {
            return Err(invalid("range", "give from_block and to_block, or from_time and to_time, or resume: true"));
        }
    }
    .map_err(recon_error)?;
    let units = gw.config.units(Some(network.chain_id));
    let text = match format {
        Format::Json => return ok(render_json(&outcome, &units)),
        Format::Csv => render_csv(&outcome.report, &units),
        Format::TotalsCsv => render_totals_csv(&outcome.breakdown, &units),
    };
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/csv"), (header::CACHE_CONTROL, "no-store")], text)
        .into_response())
}

/// What a reconciliation answers with.
enum Format {
    /// The run (`render_json`): totals, per-period totals, tie-out and items.
    Json,
    /// The items as CSV.
    Csv,
    /// The totals per UTC day, UTC month, provider, route and payer as CSV.
    TotalsCsv,
}

pub(super) async fn recon_runs(State(gw): Gw, Auth(p): Auth, uri: Uri) -> AdminResult {
    p.require(&[Role::Operator, Role::Finance], "read reconciliation runs")?;
    let q: api::RunsQuery = query(&uri)?;
    let network = network_of(&gw, q.network.as_deref())?;
    let asset = gw.config.network(network).map(|n| n.asset).ok_or_else(|| invalid("network", "not configured"))?;
    let runs = gw.ledger.recon().runs(network.chain_id, asset, q.limit.unwrap_or(100).clamp(1, 1000)).await?;
    let units = gw.config.units(Some(network.chain_id));
    ok(api::ReconRuns { network: network.caip2(), runs: runs.iter().map(|r| views::run_view(r, &units)).collect() })
}

pub(super) async fn recon_exceptions(State(gw): Gw, Auth(p): Auth, Path(id): Path<String>) -> AdminResult {
    ok(views::recon_exceptions(&*gw, &p, &id).await?)
}

pub(super) async fn recon_notes(State(gw): Gw, Auth(p): Auth, Path(id): Path<String>) -> AdminResult {
    ok(views::recon_notes(&*gw, &p, &id).await?)
}

/// Appends a resolution note (who = the token) to an exception; notes are never edited.
pub(super) async fn add_recon_note(
    State(gw): Gw,
    Auth(p): Auth,
    Path(id): Path<String>,
    body: AdminBody,
) -> AdminResult {
    ok(views::add_recon_note(&*gw, &p, &id, || body.json()).await?)
}
