//! The two commands that open the database directly, without a running gateway: `bootstrap`
//! (the first operator token) and `audit verify --config` (the audit hash chain).
//!
//! Must not: write anything but the bootstrap token's record.

use std::path::Path;

use secrecy::ExposeSecret;
use serde_json::Value;
use tollgate_admin_api::types as api;
use tollgate_gateway::Config;
use tollgate_metering::{Actor, Ledger, LedgerOptions, Role, token_hash};

use super::output::{print_created, print_json, verdict};
use crate::{EXIT_FAILURE, Failure};

async fn open_ledger(path: &Path) -> Result<Ledger, Failure> {
    let config = Config::load(path).map_err(|e| Failure::new(EXIT_FAILURE, e))?;
    let db = &config.database;
    let opts = LedgerOptions {
        max_connections: db.max_connections.min(2),
        statement_timeout_ms: db.statement_timeout_ms,
        sqlite_synchronous_full: db.sqlite_synchronous_full,
        ..LedgerOptions::default()
    };
    Ledger::connect(db.url.expose_secret(), opts)
        .await
        .map_err(|e| Failure::new(EXIT_FAILURE, format!("cannot open the database: {e}")))
}

pub(super) async fn bootstrap(config: &Path, label: &str, out: Option<&Path>, force: bool) -> Result<u8, Failure> {
    if label.len() > 128 {
        return Err(Failure::usage("--label: at most 128 bytes"));
    }
    let ledger = open_ledger(config).await?;
    let created = async {
        let db_fail = |e: tollgate_metering::MeteringError| Failure::new(EXIT_FAILURE, e);
        let existing = ledger.tokens().list().await.map_err(db_fail)?;
        if let Some(t) = existing.iter().find(|t| t.role == Role::Operator && t.revoked_unix_s.is_none())
            && !force
        {
            return Err(Failure::new(
                EXIT_FAILURE,
                format!(
                    "an operator token exists already (id {}): create more with `tollgate admin token create`, \
                     or pass --force",
                    t.id
                ),
            ));
        }
        let token = tollgate_gateway::admin::new_token();
        let now_unix_s =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let record = ledger
            .tokens()
            .create(Role::Operator, None, &token_hash(&token), label, &Actor("cli:bootstrap".to_owned()), now_unix_s)
            .await
            .map_err(db_fail)?;
        // The same answer as the admin API's token creation (`CreatedToken`).
        let record = serde_json::to_value(&record).unwrap_or(Value::Null);
        Ok(serde_json::to_value(api::CreatedToken { token, record }).unwrap_or(Value::Null))
    }
    .await;
    ledger.close().await;
    print_created(created?, out)
}

pub(super) async fn verify_offline(config: &Path) -> Result<u8, Failure> {
    let ledger = open_ledger(config).await?;
    let verified = ledger.audit().verify().await;
    ledger.close().await;
    let v = verified.map_err(|e| Failure::new(EXIT_FAILURE, e))?;
    print_json(&serde_json::to_value(&v).unwrap_or(Value::Null));
    verdict(v.intact, v.broken_at_seq, v.problem.as_deref())
}
