//! Handlers of the read-only views: revenue, ledger entries and the audit trail (page, export
//! as JSON lines, chain verification). The rules of who reads what are
//! `tollgate_control::admin::views`'; the streaming export is HTTP and stays here.
//!
//! Must not: widen a filter the control plane built, or return an entry's stored payment.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::IntoResponse;
use tollgate_admin_api::types as api;
use tollgate_control::admin::views;

use super::auth::{Auth, query};
use super::{AdminResult, ok};
use crate::app::Gateway;

type Gw = State<Arc<Gateway>>;

pub(super) async fn revenue(State(gw): Gw, Auth(p): Auth, Path(id): Path<String>, uri: Uri) -> AdminResult {
    ok(views::revenue(&*gw, &p, id, || query(&uri)).await?)
}

pub(super) async fn ledger_entries(State(gw): Gw, Auth(p): Auth, uri: Uri) -> AdminResult {
    ok(views::ledger_entries(&*gw, &p, || query(&uri)).await?)
}

pub(super) async fn audit_query(State(gw): Gw, Auth(p): Auth, uri: Uri) -> AdminResult {
    ok(views::audit_page(&*gw, &p, || query(&uri)).await?)
}

/// JSON lines, every matching record, streamed page by page (1,000 records a page, at most
/// 1,000 pages): memory stays at one page whatever the size of the trail.
pub(super) async fn audit_export(State(gw): Gw, Auth(p): Auth, uri: Uri) -> AdminResult {
    let q: api::AuditParams = query(&uri)?;
    let mut filter = views::audit_filter(&p, q)?;
    filter.limit = 1000;
    // The first page is read here, so that a failing database is an error status, not a cut body.
    let first = gw.ledger.audit().query(&filter).await?;
    let pages = futures_util::stream::unfold((gw, filter, Some(first), 0u32), |(gw, mut filter, page, n)| async move {
        let page = match page {
            Some(p) => p,
            None if n >= 1000 => return None,
            None => match gw.ledger.audit().query(&filter).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "audit export cut short");
                    return None;
                }
            },
        };
        if page.is_empty() {
            return None;
        }
        let mut chunk = String::new();
        for r in &page {
            if let Ok(line) = serde_json::to_string(r) {
                chunk.push_str(&line);
                chunk.push('\n');
            }
        }
        let full = page.len() == 1000;
        filter.after_seq = page.last().map(|r| r.seq);
        let next = if full { None } else { Some(Vec::new()) };
        Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), (gw, filter, next, n + 1)))
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson"), (header::CACHE_CONTROL, "no-store")],
        axum::body::Body::from_stream(pages),
    )
        .into_response())
}

pub(super) async fn audit_verify(State(gw): Gw, Auth(p): Auth) -> AdminResult {
    ok(views::audit_verify(&*gw, &p).await?)
}
