//! The control plane's storage: admin tokens (hashes only), providers, endpoints and their
//! price versions, credential versions (ciphertext only), wallet policies, the change counter
//! replicas watch, the hash-chained audit log and the admin change log.
//!
//! Owns: the rules that must hold under concurrency — wallet caps are checked inside the
//! reservation's transaction ([`evaluate_policies`], called by [`Ledger::reserve`]); audit
//! records are chained under a lock on `audit_head`, so replicas appending at once still
//! produce one chain; every admin change bumps `control_state.version` (and on PostgreSQL
//! sends `NOTIFY tollgate_control`) in the same transaction as the change.
//!
//! Must not: see a credential in clear or a master key (the gateway encrypts; this module
//! stores hex ciphertext), see a bearer token (only its SHA-256), know HTTP or roles' routes.

use std::fmt;

use alloy_primitives::Address;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::MeteringError;
use crate::ledger::{Db, Ledger, hex_address, to_i64, unsigned_column};

/// The PostgreSQL channel notified after every control-plane change.
pub const CONTROL_CHANNEL: &str = "tollgate_control";

/// Seconds in a UTC day.
const DAY_S: u64 = 86_400;

/// Role of an admin token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Operator,
    /// One provider's endpoints, credentials, revenue and audit.
    Provider,
    /// Read-only ledger, audit and reconciliation.
    Finance,
}

impl Role {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Provider => "provider",
            Role::Finance => "finance",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "operator" => Some(Role::Operator),
            "provider" => Some(Role::Provider),
            "finance" => Some(Role::Finance),
            _ => None,
        }
    }
}

/// An admin token's record (never the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminToken {
    /// Public id (16 hex digits).
    pub id: String,
    /// Its role.
    pub role: Role,
    /// The provider, for provider tokens.
    pub provider: Option<String>,
    /// SHA-256 of the token, hex.
    #[serde(skip)]
    pub token_hash: String,
    /// Free text.
    pub label: String,
    /// Creation time.
    pub created_unix_s: u64,
    /// Revocation time.
    pub revoked_unix_s: Option<u64>,
}

/// Who made an admin change (for the admin log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a provider or endpoint record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The TOML file (seeded at startup).
    Config,
    /// The admin API.
    Admin,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Admin => "admin",
        }
    }
    fn parse(s: &str) -> Source {
        if s == "config" { Source::Config } else { Source::Admin }
    }
}

/// A provider as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderRecord {
    /// Id.
    pub id: String,
    /// JSON spec (opaque here; the gateway validates it).
    pub spec: String,
    /// Origin.
    pub source: Source,
    /// Last change.
    pub updated_unix_s: u64,
}

/// An endpoint as stored, with its current price version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointRecord {
    /// Id.
    pub id: u64,
    /// Provider id.
    pub provider: String,
    /// Path pattern.
    pub path: String,
    /// JSON spec (opaque here).
    pub spec: String,
    /// Origin.
    pub source: Source,
    /// Whether it is served.
    pub enabled: bool,
    /// Current price version id.
    pub price_version: u64,
    /// Current prices, JSON (opaque here).
    pub prices: String,
    /// Last change.
    pub updated_unix_s: u64,
}

/// One price version of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PriceVersion {
    /// Id (recorded by ledger entries).
    pub id: u64,
    /// Endpoint id.
    pub endpoint_id: u64,
    /// Prices, JSON.
    pub prices: String,
    /// When it was created.
    pub created_unix_s: u64,
}

/// What `put_endpoint` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EndpointWrite {
    /// The endpoint id.
    pub endpoint_id: u64,
    /// Its current price version.
    pub price_version: u64,
    /// Whether this call created that version (the price changed or the endpoint is new).
    pub new_price_version: bool,
}

/// One stored credential version: ciphertext only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialVersion {
    /// Provider id.
    pub provider: String,
    /// Credential name.
    pub name: String,
    /// Version (1, 2, ...).
    pub version: u64,
    /// AES-GCM nonce, hex (never served by the admin API).
    #[serde(skip)]
    pub nonce: String,
    /// Ciphertext with tag, hex (never served by the admin API).
    #[serde(skip)]
    pub ciphertext: String,
    /// Upload time.
    pub created_unix_s: u64,
    /// Revocation time.
    pub revoked_unix_s: Option<u64>,
}

/// One line of a provider's revenue report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevenueLine {
    /// Endpoint name.
    pub endpoint: String,
    /// Ledger state (`settled` is revenue; `reserved`..`settling` is pending; the rest is not).
    pub state: String,
    /// Entries.
    pub count: u64,
    /// Sum in atomic units (decimal string).
    pub amount: String,
}

/// Which wallets a policy covers calls of: every provider (`*`) or one.
pub const GLOBAL_SCOPE: &str = "*";

/// A wallet's policy in one scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalletPolicy {
    /// `*` or a provider id.
    pub scope: String,
    /// The wallet.
    pub wallet: Address,
    /// Denied outright.
    pub revoked: bool,
    /// Registered (counts in allowlist mode).
    pub registered: bool,
    /// Allowed endpoint names (`provider:path`); `None` allows all.
    pub endpoints: Option<Vec<String>>,
    /// Largest amount per call (atomic units).
    pub per_call_max: Option<u64>,
    /// Largest spend per UTC day (atomic units, summed over every asset).
    pub daily_cap: Option<u64>,
    /// Largest spend per UTC calendar month.
    pub monthly_cap: Option<u64>,
    /// Last change.
    pub updated_unix_s: u64,
}

/// Why a wallet policy refused a call. `code()` is the stable error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyDenial {
    /// The wallet is revoked in this scope.
    #[error("wallet revoked (scope {scope})")]
    Revoked {
        /// `*` or the provider.
        scope: String,
    },
    /// Allowlist mode is on and the wallet is not registered.
    #[error("wallet not registered and the gateway only accepts registered wallets")]
    NotRegistered,
    /// The endpoint is not among the wallet's allowed endpoints.
    #[error("endpoint {endpoint} is outside the wallet's scope (scope {scope})")]
    OutOfScope {
        /// The endpoint name.
        endpoint: String,
        /// `*` or the provider.
        scope: String,
    },
    /// The call's amount is above the per-call maximum.
    #[error("amount {amount} is above the per-call maximum {max} (scope {scope})")]
    PerCallMax {
        /// The amount.
        amount: u64,
        /// The maximum.
        max: u64,
        /// `*` or the provider.
        scope: String,
    },
    /// The call would take the day's spend above the daily cap.
    #[error("daily cap {cap} reached: {spent} spent today, {amount} asked (scope {scope})")]
    DailyCap {
        /// The cap.
        cap: u64,
        /// Spent so far today.
        spent: u128,
        /// This call.
        amount: u64,
        /// `*` or the provider.
        scope: String,
    },
    /// The call would take the month's spend above the monthly cap.
    #[error("monthly cap {cap} reached: {spent} spent this month, {amount} asked (scope {scope})")]
    MonthlyCap {
        /// The cap.
        cap: u64,
        /// Spent so far this month.
        spent: u128,
        /// This call.
        amount: u64,
        /// `*` or the provider.
        scope: String,
    },
}

impl PolicyDenial {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            PolicyDenial::Revoked { .. } => "wallet_revoked",
            PolicyDenial::NotRegistered => "wallet_not_registered",
            PolicyDenial::OutOfScope { .. } => "endpoint_not_in_wallet_scope",
            PolicyDenial::PerCallMax { .. } => "per_call_max_exceeded",
            PolicyDenial::DailyCap { .. } => "daily_cap_exceeded",
            PolicyDenial::MonthlyCap { .. } => "monthly_cap_exceeded",
        }
    }
}

/// The control plane's global settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ControlState {
    /// Only registered wallets may pay.
    pub allowlist_mode: bool,
    /// Increases with every change.
    pub version: u64,
}

/// Accepted or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The payment was accepted (the call was forwarded or settled).
    Accepted,
    /// The attempt was refused.
    Denied,
}

impl Decision {
    fn as_str(self) -> &'static str {
        match self {
            Decision::Accepted => "accepted",
            Decision::Denied => "denied",
        }
    }
    /// Parses `accepted` / `denied`.
    pub fn parse(s: &str) -> Option<Decision> {
        match s {
            "accepted" => Some(Decision::Accepted),
            "denied" => Some(Decision::Denied),
            _ => None,
        }
    }
}

/// One paid-call attempt to audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewAuditRecord {
    /// When the attempt finished (ms).
    pub at_unix_ms: u64,
    /// The payer, when the payment decoded.
    pub wallet: Option<Address>,
    /// The provider.
    pub provider: Option<String>,
    /// The endpoint name.
    pub endpoint: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Price version quoted.
    pub price_version: Option<u64>,
    /// Accepted or denied.
    pub decision: Decision,
    /// Stable reason code (`ok` when accepted and served).
    pub reason: String,
    /// Credential id that served the call.
    pub credential: Option<String>,
    /// Its version.
    pub credential_version: Option<u64>,
    /// Upstream status.
    pub upstream_status: Option<u16>,
    /// Time spent in the gateway.
    pub latency_ms: u64,
    /// Ledger entry id.
    pub entry_id: Option<String>,
    /// Settlement transaction.
    pub tx_hash: Option<String>,
}

/// A stored audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// Position in the chain (1, 2, ...).
    pub seq: u64,
    /// The record.
    #[serde(flatten)]
    pub record: NewAuditRecord,
    /// The previous record's hash (zeros for the first).
    pub prev_hash: String,
    /// SHA-256 over the previous hash and this record.
    pub hash: String,
}

/// Filters of an audit query; all optional. Pages by `after_seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Payer.
    pub wallet: Option<Address>,
    /// Endpoint name.
    pub endpoint: Option<String>,
    /// Provider.
    pub provider: Option<String>,
    /// From (inclusive, ms).
    pub from_unix_ms: Option<u64>,
    /// To (exclusive, ms).
    pub to_unix_ms: Option<u64>,
    /// Decision.
    pub decision: Option<Decision>,
    /// Records after this sequence number.
    pub after_seq: Option<u64>,
    /// Page size (capped at 1000).
    pub limit: u32,
}

/// What [`Ledger::verify_audit`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditVerification {
    /// Records checked.
    pub records: u64,
    /// The chain is intact.
    pub intact: bool,
    /// The first record where it breaks.
    pub broken_at_seq: Option<u64>,
    /// What is wrong there.
    pub problem: Option<String>,
}

const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// SHA-256 of a bearer token, hex: what `admin_tokens` stores.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The hash of an audit record: SHA-256 over the previous hash and a canonical JSON array of
/// the sequence number and every field, in a fixed order.
pub fn audit_hash(seq: u64, r: &NewAuditRecord, prev_hash: &str) -> String {
    let canonical = serde_json::json!([
        seq,
        r.at_unix_ms,
        r.wallet.map(hex_address),
        r.provider,
        r.endpoint,
        r.method,
        r.path,
        r.price_version,
        r.decision.as_str(),
        r.reason,
        r.credential,
        r.credential_version,
        r.upstream_status,
        r.latency_ms,
        r.entry_id,
        r.tx_hash,
    ]);
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// Start of the UTC day and of the UTC calendar month containing `now_unix_s`.
pub fn period_starts(now_unix_s: u64) -> (u64, u64) {
    let day_start = now_unix_s - now_unix_s % DAY_S;
    let days = now_unix_s / DAY_S;
    let (y, m, _) = civil_from_days(days);
    (day_start, days_from_civil(y, m, 1) * DAY_S)
}

// Howard Hinnant's civil-date algorithms, for days since 1970-01-01 (non-negative only).
fn civil_from_days(z: u64) -> (u64, u64, u64) {
    let z = z + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

// ---------------------------------------------------------------------------------------
// Rows.

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: String,
    role: String,
    provider: Option<String>,
    token_hash: String,
    label: String,
    created_unix_s: i64,
    revoked_unix_s: Option<i64>,
}

impl TokenRow {
    fn into_token(self) -> Result<AdminToken, MeteringError> {
        Ok(AdminToken {
            role: Role::parse(&self.role)
                .ok_or_else(|| MeteringError::Corrupt { column: "role".to_owned(), reason: self.role.clone() })?,
            id: self.id,
            provider: self.provider,
            token_hash: self.token_hash,
            label: self.label,
            created_unix_s: unsigned_column("created_unix_s", self.created_unix_s)?,
            revoked_unix_s: self.revoked_unix_s.map(|v| unsigned_column("revoked_unix_s", v)).transpose()?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct EndpointRow {
    id: i64,
    provider: String,
    path: String,
    spec: String,
    source: String,
    enabled: i64,
    price_version: i64,
    prices: String,
    updated_unix_s: i64,
}

#[derive(sqlx::FromRow)]
struct CredentialRow {
    provider: String,
    name: String,
    version: i64,
    nonce: String,
    ciphertext: String,
    created_unix_s: i64,
    revoked_unix_s: Option<i64>,
}

impl CredentialRow {
    fn into_version(self) -> Result<CredentialVersion, MeteringError> {
        Ok(CredentialVersion {
            provider: self.provider,
            name: self.name,
            version: unsigned_column("version", self.version)?,
            nonce: self.nonce,
            ciphertext: self.ciphertext,
            created_unix_s: unsigned_column("created_unix_s", self.created_unix_s)?,
            revoked_unix_s: self.revoked_unix_s.map(|v| unsigned_column("revoked_unix_s", v)).transpose()?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct PolicyRow {
    scope: String,
    wallet: String,
    revoked: i64,
    registered: i64,
    endpoints: Option<String>,
    per_call_max: Option<i64>,
    daily_cap: Option<i64>,
    monthly_cap: Option<i64>,
    updated_unix_s: i64,
}

impl PolicyRow {
    fn into_policy(self) -> Result<WalletPolicy, MeteringError> {
        let opt = |column: &'static str, v: Option<i64>| v.map(|v| unsigned_column(column, v)).transpose();
        Ok(WalletPolicy {
            wallet: self
                .wallet
                .parse()
                .map_err(|_| MeteringError::Corrupt { column: "wallet".to_owned(), reason: self.wallet.clone() })?,
            scope: self.scope,
            revoked: self.revoked != 0,
            registered: self.registered != 0,
            endpoints: self
                .endpoints
                .as_deref()
                .map(serde_json::from_str::<Vec<String>>)
                .transpose()
                .map_err(|e| MeteringError::Corrupt { column: "endpoints".to_owned(), reason: e.to_string() })?,
            per_call_max: opt("per_call_max", self.per_call_max)?,
            daily_cap: opt("daily_cap", self.daily_cap)?,
            monthly_cap: opt("monthly_cap", self.monthly_cap)?,
            updated_unix_s: unsigned_column("updated_unix_s", self.updated_unix_s)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    seq: i64,
    at_unix_ms: i64,
    wallet: Option<String>,
    provider: Option<String>,
    endpoint: Option<String>,
    method: String,
    path: String,
    price_version: Option<i64>,
    decision: String,
    reason: String,
    credential: Option<String>,
    credential_version: Option<i64>,
    upstream_status: Option<i64>,
    latency_ms: i64,
    entry_id: Option<String>,
    tx_hash: Option<String>,
    prev_hash: String,
    hash: String,
}

impl AuditRow {
    fn into_record(self) -> Result<AuditRecord, MeteringError> {
        let opt = |column: &'static str, v: Option<i64>| v.map(|v| unsigned_column(column, v)).transpose();
        Ok(AuditRecord {
            seq: unsigned_column("seq", self.seq)?,
            record: NewAuditRecord {
                at_unix_ms: unsigned_column("at_unix_ms", self.at_unix_ms)?,
                wallet: self.wallet.as_deref().map(str::parse).transpose().map_err(|_| MeteringError::Corrupt {
                    column: "wallet".to_owned(),
                    reason: "not an address".to_owned(),
                })?,
                provider: self.provider,
                endpoint: self.endpoint,
                method: self.method,
                path: self.path,
                price_version: opt("price_version", self.price_version)?,
                decision: Decision::parse(&self.decision).ok_or_else(|| MeteringError::Corrupt {
                    column: "decision".to_owned(),
                    reason: self.decision.clone(),
                })?,
                reason: self.reason,
                credential: self.credential,
                credential_version: opt("credential_version", self.credential_version)?,
                upstream_status: self.upstream_status.map(u16::try_from).transpose().map_err(|_| {
                    MeteringError::Corrupt { column: "upstream_status".to_owned(), reason: "range".to_owned() }
                })?,
                latency_ms: unsigned_column("latency_ms", self.latency_ms)?,
                entry_id: self.entry_id,
                tx_hash: self.tx_hash,
            },
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

/// The policy rows of one payer for one call, plus the allowlist flag, as read in the
/// reservation's transaction.
#[derive(sqlx::FromRow)]
pub(crate) struct PolicyCheckRow {
    pub(crate) allowlist_mode: i64,
    pub(crate) scope: Option<String>,
    pub(crate) revoked: Option<i64>,
    pub(crate) registered: Option<i64>,
    pub(crate) endpoints: Option<String>,
    pub(crate) per_call_max: Option<i64>,
    pub(crate) daily_cap: Option<i64>,
    pub(crate) monthly_cap: Option<i64>,
}

/// Reads the payer's global and provider policies with the allowlist flag (one row with NULL
/// policy columns when the payer has none).
pub(crate) const SELECT_POLICY_CHECK: &str = "SELECT s.allowlist_mode, p.scope, p.revoked, p.registered, \
     p.endpoints, p.per_call_max, p.daily_cap, p.monthly_cap FROM control_state s \
     LEFT JOIN wallet_policies p ON p.wallet = $1 AND p.scope IN ('*', $2) WHERE s.id = 1";

/// Locks the payer's policy rows until the reservation commits (PostgreSQL), so concurrent
/// reservations of one wallet check their caps one after the other.
pub(crate) const LOCK_POLICIES_PG: &str =
    "SELECT scope FROM wallet_policies WHERE wallet = $1 AND scope IN ('*', $2) ORDER BY scope FOR UPDATE";

/// Spend of a payer since a time, optionally at one provider: what counts against caps
/// (everything that may be or has been charged).
pub(crate) const SELECT_CAP_SPEND: &str = "SELECT COUNT(*) AS n, \
     CAST(COALESCE(SUM(amount / 4294967296), 0) AS BIGINT) AS hi, \
     CAST(COALESCE(SUM(amount % 4294967296), 0) AS BIGINT) AS lo \
     FROM ledger_entries WHERE payer = $1 AND created_unix_s >= $2 AND ($3 IS NULL OR provider = $3) \
     AND state IN ('reserved', 'forwarded', 'settling', 'settled', 'refund_owed')";

/// A cap that needs the spend of a period: (scope, cap, period start, daily?).
pub(crate) struct CapCheck {
    pub(crate) scope: String,
    pub(crate) cap: u64,
    pub(crate) since_unix_s: u64,
    pub(crate) daily: bool,
}

/// The checks that need no spend figures (revocation, allowlist, scope, per-call maximum),
/// then the caps to check against spend. Global policies are checked before provider ones.
pub(crate) fn evaluate_policies(
    rows: &[PolicyCheckRow],
    endpoint: &str,
    amount: u64,
    now_unix_s: u64,
) -> Result<Vec<CapCheck>, PolicyDenial> {
    let allowlist = rows.first().is_some_and(|r| r.allowlist_mode != 0);
    let mut policies: Vec<&PolicyCheckRow> = rows.iter().filter(|r| r.scope.is_some()).collect();
    policies.sort_by_key(|r| r.scope.as_deref() != Some(GLOBAL_SCOPE));
    if allowlist && !policies.iter().any(|p| p.registered == Some(1)) {
        return Err(PolicyDenial::NotRegistered);
    }
    let (day_start, month_start) = period_starts(now_unix_s);
    let mut caps = Vec::new();
    for p in policies {
        let scope = p.scope.clone().unwrap_or_default();
        if p.revoked == Some(1) {
            return Err(PolicyDenial::Revoked { scope });
        }
        if let Some(list) = &p.endpoints {
            let allowed: Vec<String> = serde_json::from_str(list).unwrap_or_default();
            if !allowed.iter().any(|e| e == endpoint) {
                return Err(PolicyDenial::OutOfScope { endpoint: endpoint.to_owned(), scope });
            }
        }
        if let Some(max) = p.per_call_max.and_then(|v| u64::try_from(v).ok())
            && amount > max
        {
            return Err(PolicyDenial::PerCallMax { amount, max, scope });
        }
        if let Some(cap) = p.daily_cap.and_then(|v| u64::try_from(v).ok()) {
            caps.push(CapCheck { scope: scope.clone(), cap, since_unix_s: day_start, daily: true });
        }
        if let Some(cap) = p.monthly_cap.and_then(|v| u64::try_from(v).ok()) {
            caps.push(CapCheck { scope, cap, since_unix_s: month_start, daily: false });
        }
    }
    Ok(caps)
}

/// Whether `spent + amount` stays within the cap.
pub(crate) fn check_cap(c: &CapCheck, spent: u128, amount: u64) -> Result<(), PolicyDenial> {
    if spent + u128::from(amount) <= u128::from(c.cap) {
        return Ok(());
    }
    let scope = c.scope.clone();
    Err(if c.daily {
        PolicyDenial::DailyCap { cap: c.cap, spent, amount, scope }
    } else {
        PolicyDenial::MonthlyCap { cap: c.cap, spent, amount, scope }
    })
}

// ---------------------------------------------------------------------------------------
// Queries.

const BUMP_VERSION: &str = "UPDATE control_state SET version = version + 1 WHERE id = 1 RETURNING version";
const INSERT_ADMIN_LOG: &str =
    "INSERT INTO admin_log (at_unix_s, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)";
const NOTIFY: &str = "SELECT pg_notify('tollgate_control', $1)";

const ENDPOINT_SELECT: &str = "SELECT e.id, e.provider, e.path, e.spec, e.source, e.enabled, \
     p.id AS price_version, p.prices, e.updated_unix_s FROM endpoints e \
     JOIN price_versions p ON p.id = (SELECT MAX(id) FROM price_versions WHERE endpoint_id = e.id)";

const POLICY_COLUMNS: &str =
    "scope, wallet, revoked, registered, endpoints, per_call_max, daily_cap, monthly_cap, updated_unix_s";

const AUDIT_COLUMNS: &str = "seq, at_unix_ms, wallet, provider, endpoint, method, path, price_version, decision, \
     reason, credential, credential_version, upstream_status, latency_ms, entry_id, tx_hash, prev_hash, hash";

/// Inside an open transaction `$tx`: bump the change counter, log the change, and notify
/// other replicas (PostgreSQL) on commit.
macro_rules! record_change {
    ($self:expr, $tx:expr, $err:expr, $actor:expr, $action:expr, $target:expr, $detail:expr, $now:expr) => {{
        let (version,): (i64,) = sqlx::query_as(BUMP_VERSION).fetch_one(&mut *$tx).await.map_err($err)?;
        sqlx::query(INSERT_ADMIN_LOG)
            .bind($now)
            .bind(&$actor.0)
            .bind($action)
            .bind($target)
            .bind($detail)
            .execute(&mut *$tx)
            .await
            .map_err($err)?;
        if matches!($self.db, Db::Postgres(_)) {
            sqlx::query(NOTIFY).bind(version.to_string()).execute(&mut *$tx).await.map_err($err)?;
        }
    }};
}

/// Wakes on `NOTIFY tollgate_control` (PostgreSQL only).
pub struct ControlListener(sqlx::postgres::PgListener);

impl fmt::Debug for ControlListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ControlListener")
    }
}

impl ControlListener {
    /// Waits for the next change notification.
    pub async fn recv(&mut self) -> Result<(), MeteringError> {
        self.0.recv().await.map(|_| ()).map_err(|e| MeteringError::Database {
            op: "control_listener",
            reason: e.to_string(),
            retryable: true,
        })
    }
}

fn opt_i64(field: &'static str, v: Option<u64>) -> Result<Option<i64>, MeteringError> {
    v.map(|v| to_i64(field, v)).transpose()
}

impl Ledger {
    /// A listener for control-plane changes: `Some` on PostgreSQL, `None` on SQLite (which
    /// has no notifications; replicas poll [`Ledger::control_state`]).
    pub async fn control_listener(&self) -> Result<Option<ControlListener>, MeteringError> {
        const OP: &str = "control_listener";
        let Db::Postgres(pool) = &self.db else { return Ok(None) };
        let err = |e: sqlx::Error| self.db_error(OP, e);
        self.bounded(OP, async {
            let mut l = sqlx::postgres::PgListener::connect_with(pool).await.map_err(err)?;
            l.listen(CONTROL_CHANNEL).await.map_err(err)?;
            Ok(Some(ControlListener(l)))
        })
        .await
    }

    /// Stores a new admin token's hash and returns its record.
    pub async fn create_admin_token(
        &self,
        role: Role,
        provider: Option<&str>,
        token_hash_hex: &str,
        label: &str,
        actor: &Actor,
        now_unix_s: u64,
    ) -> Result<AdminToken, MeteringError> {
        const OP: &str = "create_admin_token";
        if (role == Role::Provider) != provider.is_some() {
            return Err(MeteringError::InvalidValue {
                what: "provider",
                reason: "required for provider tokens and only for them".to_owned(),
            });
        }
        let id = hex::encode(crate::types::random_bytes::<8>()?);
        let now = to_i64("now_unix_s", now_unix_s)?;
        let err = |e: sqlx::Error| self.db_error(OP, e);
        self.bounded(OP, async {
            on_db!(write self, |pool, begin| {
                let mut tx = pool.begin_with(begin).await.map_err(err)?;
                sqlx::query(
                    "INSERT INTO admin_tokens (id, role, provider, token_hash, label, created_unix_s) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&id)
                .bind(role.as_str())
                .bind(provider)
                .bind(token_hash_hex)
                .bind(label)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
                record_change!(self, tx, err, actor, "token.create", &id, Some(role.as_str()), now);
                tx.commit().await.map_err(err)
            })
        })
        .await?;
        Ok(AdminToken {
            id,
            role,
            provider: provider.map(str::to_owned),
            token_hash: token_hash_hex.to_owned(),
            label: label.to_owned(),
            created_unix_s: now_unix_s,
            revoked_unix_s: None,
        })
    }

    /// The token with this hash, revoked or not.
    pub async fn admin_token_by_hash(&self, token_hash_hex: &str) -> Result<Option<AdminToken>, MeteringError> {
        const OP: &str = "admin_token_by_hash";
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let row: Option<TokenRow> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as(
                        "SELECT id, role, provider, token_hash, label, created_unix_s, revoked_unix_s \
                         FROM admin_tokens WHERE token_hash = $1",
                    )
                    .bind(token_hash_hex)
                    .fetch_optional(pool)
                    .await
                    .map_err(err)
                })
            })
            .await?;
        row.map(TokenRow::into_token).transpose()
    }

    /// Every token record (never the tokens).
    pub async fn admin_tokens(&self) -> Result<Vec<AdminToken>, MeteringError> {
        const OP: &str = "admin_tokens";
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let rows: Vec<TokenRow> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as(
                        "SELECT id, role, provider, token_hash, label, created_unix_s, revoked_unix_s \
                         FROM admin_tokens ORDER BY created_unix_s, id",
                    )
                    .fetch_all(pool)
                    .await
                    .map_err(err)
                })
            })
            .await?;
        rows.into_iter().map(TokenRow::into_token).collect()
    }

    /// Revokes a token; `false` when it is unknown or already revoked.
    pub async fn revoke_admin_token(&self, id: &str, actor: &Actor, now_unix_s: u64) -> Result<bool, MeteringError> {
        const OP: &str = "revoke_admin_token";
        let now = to_i64("now_unix_s", now_unix_s)?;
        let err = |e: sqlx::Error| self.db_error(OP, e);
        self.bounded(OP, async {
            on_db!(write self, |pool, begin| {
                let mut tx = pool.begin_with(begin).await.map_err(err)?;
                let done =
                    sqlx::query("UPDATE admin_tokens SET revoked_unix_s = $1 WHERE id = $2 AND revoked_unix_s IS NULL")
                        .bind(now)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(err)?
                        .rows_affected()
                        == 1;
                if done {
                    record_change!(self, tx, err, actor, "token.revoke", id, None::<&str>, now);
                }
                tx.commit().await.map_err(err)?;
                Ok(done)
            })
        })
        .await
    }

    /// Creates or replaces a provider's spec.
    pub async fn put_provider(
        &self,
        id: &str,
        spec: &str,
        source: Source,
        actor: &Actor,
        now_unix_s: u64,
    ) -> Result<(), MeteringError> {
        const OP: &str = "put_provider";
        let now = to_i64("now_unix_s", now_unix_s)?;
        let err = |e: sqlx::Error| self.db_error(OP, e);
        self.bounded(OP, async {
            on_db!(write self, |pool, begin| {
                let mut tx = pool.begin_with(begin).await.map_err(err)?;
                let changed = sqlx::query(
                    "INSERT INTO providers (id, spec, source, created_unix_s, updated_unix_s) \
                     VALUES ($1, $2, $3, $4, $4) ON CONFLICT (id) DO UPDATE SET spec = excluded.spec, \
                     source = excluded.source, updated_unix_s = excluded.updated_unix_s \
                     WHERE providers.spec <> excluded.spec OR providers.source <> excluded.source",
                )
                .bind(id)
                .bind(spec)
                .bind(source.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(err)?
                .rows_affected()
                    > 0;
                if changed {
                    record_change!(self, tx, err, actor, "provider.put", id, Some(spec), now);
                }
                tx.commit().await.map_err(err)
            })
        })
        .await
    }

    /// Every provider.
    pub async fn providers(&self) -> Result<Vec<ProviderRecord>, MeteringError> {
        const OP: &str = "providers";
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let rows: Vec<(String, String, String, i64)> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as("SELECT id, spec, source, updated_unix_s FROM providers ORDER BY id")
                        .fetch_all(pool)
                        .await
                        .map_err(err)
                })
            })
            .await?;
        rows.into_iter()
            .map(|(id, spec, source, updated)| {
                Ok(ProviderRecord {
                    id,
                    spec,
                    source: Source::parse(&source),
                    updated_unix_s: unsigned_column("updated_unix_s", updated)?,
                })
            })
            .collect()
    }

    /// Creates or updates an endpoint; a price different from the current one (or a new
    /// endpoint) makes a new price version. Re-enables a disabled endpoint.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_endpoint(
        &self,
        provider: &str,
        path: &str,
        spec: &str,
        prices: &str,
        source: Source,
        actor: &Actor,
        now_unix_s: u64,
    ) -> Result<EndpointWrite, MeteringError> {
        const OP: &str = "put_endpoint";
        let now = to_i64("now_unix_s", now_unix_s)?;
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let target = format!("{provider}:{path}");
        self.bounded(OP, async {
            on_db!(write self, |pool, begin| {
                let mut tx = pool.begin_with(begin).await.map_err(err)?;
                let known: Option<(String,)> = sqlx::query_as("SELECT id FROM providers WHERE id = $1")
                    .bind(provider)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(err)?;
                if known.is_none() {
                    return Err(MeteringError::UnknownRecord { what: "provider", key: provider.to_owned() });
                }
                // Insert if absent; replicas seeding the same file at once wait on each other
                // here (the UNIQUE key), then see the committed row below.
                let inserted: Option<(i64,)> = sqlx::query_as(
                    "INSERT INTO endpoints (provider, path, spec, source, enabled, created_unix_s, updated_unix_s) \
                     VALUES ($1, $2, $3, $4, 1, $5, $5) ON CONFLICT (provider, path) DO NOTHING RETURNING id",
                )
                .bind(provider)
                .bind(path)
                .bind(spec)
                .bind(source.as_str())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await
                .map_err(err)?;
                let (endpoint_id, mut changed) = match inserted {
                    Some((id,)) => (id, true),
                    None => {
                        // Locked until commit (PostgreSQL), so that two writers of one endpoint
                        // compare prices one after the other and make at most one new version.
                        let lock = if matches!(self.db, Db::Postgres(_)) { " FOR UPDATE" } else { "" };
                        let (id, old_spec, old_source, enabled): (i64, String, String, i64) = sqlx::query_as(&format!(
                            "SELECT id, spec, source, enabled FROM endpoints WHERE provider = $1 AND path = $2{lock}"
                        ))
                        .bind(provider)
                        .bind(path)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(err)?;
                        let changed = old_spec != spec || old_source != source.as_str() || enabled != 1;
                        if changed {
                            sqlx::query(
                                "UPDATE endpoints SET spec = $1, source = $2, enabled = 1, updated_unix_s = $3 \
                                 WHERE id = $4",
                            )
                            .bind(spec)
                            .bind(source.as_str())
                            .bind(now)
                            .bind(id)
                            .execute(&mut *tx)
                            .await
                            .map_err(err)?;
                        }
                        (id, changed)
                    }
                };
                let current: Option<(i64, String)> = sqlx::query_as(
                    "SELECT id, prices FROM price_versions WHERE endpoint_id = $1 ORDER BY id DESC LIMIT 1",
                )
                .bind(endpoint_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(err)?;
                let (price_version, new_price_version) = match current {
                    Some((id, old)) if old == prices => (id, false),
                    _ => {
                        let (id,): (i64,) = sqlx::query_as(
                            "INSERT INTO price_versions (endpoint_id, prices, created_unix_s) VALUES ($1, $2, $3) \
                             RETURNING id",
                        )
                        .bind(endpoint_id)
                        .bind(prices)
                        .bind(now)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(err)?;
                        changed = true;
                        (id, true)
                    }
                };
                if changed {
                    let detail = serde_json::json!({ "spec": spec, "prices": prices, "price_version": price_version });
                    record_change!(self, tx, err, actor, "endpoint.put", &target, Some(detail.to_string()), now);
                }
                tx.commit().await.map_err(err)?;
                Ok(EndpointWrite {
                    endpoint_id: unsigned_column("id", endpoint_id)?,
                    price_version: unsigned_column("price_version", price_version)?,
                    new_price_version,
                })
            })
        })
        .await
    }

    /// Enables or disables an endpoint; `false` when it does not exist or already is so.
    pub async fn set_endpoint_enabled(
        &self,
        provider: &str,
        path: &str,
        enabled: bool,
        actor: &Actor,
        now_unix_s: u64,
    ) -> Result<bool, MeteringError> {
        const OP: &str = "set_endpoint_enabled";
        let now = to_i64("now_unix_s", now_unix_s)?;
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let target = format!("{provider}:{path}");
        self.bounded(OP, async {
            on_db!(write self, |pool, begin| {
                let mut tx = pool.begin_with(begin).await.map_err(err)?;
                let done = sqlx::query(
                    "UPDATE endpoints SET enabled = $1, updated_unix_s = $2 WHERE provider = $3 AND path = $4 \
                     AND enabled <> $1",
                )
                .bind(i64::from(enabled))
                .bind(now)
                .bind(provider)
                .bind(path)
                .execute(&mut *tx)
                .await
                .map_err(err)?
                .rows_affected()
                    == 1;
                if done {
                    let action = if enabled { "endpoint.enable" } else { "endpoint.disable" };
                    record_change!(self, tx, err, actor, action, &target, None::<&str>, now);
                }
                tx.commit().await.map_err(err)?;
                Ok(done)
            })
        })
        .await
    }

    /// Every endpoint with its current price version, optionally of one provider.
    pub async fn endpoints(&self, provider: Option<&str>) -> Result<Vec<EndpointRecord>, MeteringError> {
        const OP: &str = "endpoints";
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let sql = format!("{ENDPOINT_SELECT} WHERE ($1 IS NULL OR e.provider = $1) ORDER BY e.id");
        let rows: Vec<EndpointRow> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| { sqlx::query_as(&sql).bind(provider).fetch_all(pool).await.map_err(err) })
            })
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(EndpointRecord {
                    id: unsigned_column("id", r.id)?,
                    provider: r.provider,
                    path: r.path,
                    spec: r.spec,
                    source: Source::parse(&r.source),
                    enabled: r.enabled != 0,
                    price_version: unsigned_column("price_version", r.price_version)?,
                    prices: r.prices,
                    updated_unix_s: unsigned_column("updated_unix_s", r.updated_unix_s)?,
                })
            })
            .collect()
    }

    /// Every price version of an endpoint, oldest first.
    pub async fn price_versions(&self, endpoint_id: u64) -> Result<Vec<PriceVersion>, MeteringError> {
        const OP: &str = "price_versions";
        let id = to_i64("endpoint_id", endpoint_id)?;
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let rows: Vec<(i64, i64, String, i64)> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as(
                        "SELECT id, endpoint_id, prices, created_unix_s FROM price_versions \
                         WHERE endpoint_id = $1 ORDER BY id",
                    )
                    .bind(id)
                    .fetch_all(pool)
                    .await
                    .map_err(err)
                })
            })
            .await?;
        rows.into_iter()
            .map(|(id, endpoint_id, prices, created)| {
                Ok(PriceVersion {
                    id: unsigned_column("id", id)?,
                    endpoint_id: unsigned_column("endpoint_id", endpoint_id)?,
                    prices,
                    created_unix_s: unsigned_column("created_unix_s", created)?,
                })
            })
            .collect()
    }

    /// Stores a new version of a credential (ciphertext) and returns its version number.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_credential_version(
        &self,
        provider: &str,
        name: &str,
        nonce_hex: &str,
        ciphertext_hex: &str,
        actor: &Actor,
        now_unix_s: u64,
    ) -> Result<u64, MeteringError> {
        const OP: &str = "add_credential_version";
        let now = to_i64("now_unix_s", now_unix_s)?;
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let target = format!("{provider}/{name}");
        let version = self
            .bounded(OP, async {
                on_db!(write self, |pool, begin| {
                    let mut tx = pool.begin_with(begin).await.map_err(err)?;
                    // The provider row is locked (PostgreSQL; SQLite holds its write lock) so that
                    // concurrent uploads number their versions one after the other.
                    let lock = if matches!(self.db, Db::Postgres(_)) { " FOR UPDATE" } else { "" };
                    let known: Option<(String,)> =
                        sqlx::query_as(&format!("SELECT id FROM providers WHERE id = $1{lock}"))
                            .bind(provider)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(err)?;
                    if known.is_none() {
                        return Err(MeteringError::UnknownRecord { what: "provider", key: provider.to_owned() });
                    }
                    let (version,): (i64,) = sqlx::query_as(
                        "INSERT INTO credentials (provider, name, version, nonce, ciphertext, created_unix_s) \
                         SELECT $1, $2, COALESCE(MAX(version), 0) + 1, $3, $4, $5 FROM credentials \
                         WHERE provider = $1 AND name = $2 RETURNING version",
                    )
                    .bind(provider)
                    .bind(name)
                    .bind(nonce_hex)
                    .bind(ciphertext_hex)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(err)?;
                    let detail = format!("version {version}");
                    record_change!(self, tx, err, actor, "credential.add", &target, Some(detail), now);
                    tx.commit().await.map_err(err)?;
                    Ok(version)
                })
            })
            .await?;
        unsigned_column("version", version)
    }

    /// Revokes one version of a credential; `false` when unknown or already revoked.
    pub async fn revoke_credential_version(
        &self,
        provider: &str,
        name: &str,
        version: u64,
        actor: &Actor,
        now_unix_s: u64,
    ) -> Result<bool, MeteringError> {
        const OP: &str = "revoke_credential_version";
        let now = to_i64("now_unix_s", now_unix_s)?;
        let v = to_i64("version", version)?;
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let target = format!("{provider}/{name}/{version}");
        self.bounded(OP, async {
            on_db!(write self, |pool, begin| {
                let mut tx = pool.begin_with(begin).await.map_err(err)?;
                let done = sqlx::query(
                    "UPDATE credentials SET revoked_unix_s = $1 WHERE provider = $2 AND name = $3 AND version = $4 \
                     AND revoked_unix_s IS NULL",
                )
                .bind(now)
                .bind(provider)
                .bind(name)
                .bind(v)
                .execute(&mut *tx)
                .await
                .map_err(err)?
                .rows_affected()
                    == 1;
                if done {
                    record_change!(self, tx, err, actor, "credential.revoke", &target, None::<&str>, now);
                }
                tx.commit().await.map_err(err)?;
                Ok(done)
            })
        })
        .await
    }

    /// Credential versions (ciphertext included, for the gateway's decryption), optionally of
    /// one provider, ordered by provider, name, version.
    pub async fn credential_versions(&self, provider: Option<&str>) -> Result<Vec<CredentialVersion>, MeteringError> {
        const OP: &str = "credential_versions";
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let rows: Vec<CredentialRow> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as(
                        "SELECT provider, name, version, nonce, ciphertext, created_unix_s, revoked_unix_s \
                         FROM credentials WHERE ($1 IS NULL OR provider = $1) ORDER BY provider, name, version",
                    )
                    .bind(provider)
                    .fetch_all(pool)
                    .await
                    .map_err(err)
                })
            })
            .await?;
        rows.into_iter().map(CredentialRow::into_version).collect()
    }

    /// Creates or replaces a wallet's policy in its scope.
    pub async fn put_wallet_policy(&self, p: &WalletPolicy, actor: &Actor) -> Result<(), MeteringError> {
        const OP: &str = "put_wallet_policy";
        let now = to_i64("updated_unix_s", p.updated_unix_s)?;
        let endpoints = p
            .endpoints
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| MeteringError::InvalidValue { what: "endpoints", reason: e.to_string() })?;
        let per_call_max = opt_i64("per_call_max", p.per_call_max)?;
        let daily_cap = opt_i64("daily_cap", p.daily_cap)?;
        let monthly_cap = opt_i64("monthly_cap", p.monthly_cap)?;
        let wallet = hex_address(p.wallet);
        let target = format!("{}/{wallet}", p.scope);
        let detail = serde_json::to_string(p).ok();
        let err = |e: sqlx::Error| self.db_error(OP, e);
        self.bounded(OP, async {
            on_db!(write self, |pool, begin| {
                let mut tx = pool.begin_with(begin).await.map_err(err)?;
                sqlx::query(
                    "INSERT INTO wallet_policies (scope, wallet, revoked, registered, endpoints, per_call_max, \
                     daily_cap, monthly_cap, updated_unix_s) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                     ON CONFLICT (scope, wallet) DO UPDATE SET revoked = excluded.revoked, \
                     registered = excluded.registered, endpoints = excluded.endpoints, \
                     per_call_max = excluded.per_call_max, daily_cap = excluded.daily_cap, \
                     monthly_cap = excluded.monthly_cap, updated_unix_s = excluded.updated_unix_s",
                )
                .bind(&p.scope)
                .bind(&wallet)
                .bind(i64::from(p.revoked))
                .bind(i64::from(p.registered))
                .bind(endpoints.as_deref())
                .bind(per_call_max)
                .bind(daily_cap)
                .bind(monthly_cap)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
                record_change!(self, tx, err, actor, "wallet.put", &target, detail.as_deref(), now);
                tx.commit().await.map_err(err)
            })
        })
        .await
    }

    /// Revokes or reinstates a wallet in a scope, creating its policy if it has none (other
    /// fields untouched).
    pub async fn set_wallet_revoked(
        &self,
        scope: &str,
        wallet: Address,
        revoked: bool,
        actor: &Actor,
        now_unix_s: u64,
    ) -> Result<(), MeteringError> {
        const OP: &str = "set_wallet_revoked";
        let now = to_i64("now_unix_s", now_unix_s)?;
        let wallet = hex_address(wallet);
        let target = format!("{scope}/{wallet}");
        let err = |e: sqlx::Error| self.db_error(OP, e);
        self.bounded(OP, async {
            on_db!(write self, |pool, begin| {
                let mut tx = pool.begin_with(begin).await.map_err(err)?;
                sqlx::query(
                    "INSERT INTO wallet_policies (scope, wallet, revoked, registered, updated_unix_s)                      VALUES ($1, $2, $3, 0, $4) ON CONFLICT (scope, wallet) DO UPDATE SET                      revoked = excluded.revoked, updated_unix_s = excluded.updated_unix_s",
                )
                .bind(scope)
                .bind(&wallet)
                .bind(i64::from(revoked))
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
                let action = if revoked { "wallet.revoke" } else { "wallet.reinstate" };
                record_change!(self, tx, err, actor, action, &target, None::<&str>, now);
                tx.commit().await.map_err(err)
            })
        })
        .await
    }

    /// A provider's revenue by endpoint and state, for entries reserved in `[from, to)`.
    pub async fn revenue(
        &self,
        provider: &str,
        from_unix_s: u64,
        to_unix_s: u64,
    ) -> Result<Vec<RevenueLine>, MeteringError> {
        const OP: &str = "revenue";
        let (from, to) = (to_i64("from_unix_s", from_unix_s)?, to_i64("to_unix_s", to_unix_s)?);
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let rows: Vec<(String, String, i64, i64, i64)> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as(
                        "SELECT route, state, COUNT(*) AS n,                          CAST(COALESCE(SUM(amount / 4294967296), 0) AS BIGINT) AS hi,                          CAST(COALESCE(SUM(amount % 4294967296), 0) AS BIGINT) AS lo                          FROM ledger_entries WHERE provider = $1 AND created_unix_s >= $2 AND created_unix_s < $3                          GROUP BY route, state ORDER BY route, state",
                    )
                    .bind(provider)
                    .bind(from)
                    .bind(to)
                    .fetch_all(pool)
                    .await
                    .map_err(err)
                })
            })
            .await?;
        rows.into_iter()
            .map(|(endpoint, state, n, hi, lo)| {
                let hi = u128::from(unsigned_column("sum", hi)?);
                let lo = u128::from(unsigned_column("sum", lo)?);
                Ok(RevenueLine {
                    endpoint,
                    state,
                    count: unsigned_column("count", n)?,
                    amount: ((hi << 32) + lo).to_string(),
                })
            })
            .collect()
    }

    /// Wallet policies, optionally of one scope and/or one wallet.
    pub async fn wallet_policies(
        &self,
        scope: Option<&str>,
        wallet: Option<Address>,
    ) -> Result<Vec<WalletPolicy>, MeteringError> {
        const OP: &str = "wallet_policies";
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let wallet = wallet.map(hex_address);
        let sql = format!(
            "SELECT {POLICY_COLUMNS} FROM wallet_policies WHERE ($1 IS NULL OR scope = $1) \
             AND ($2 IS NULL OR wallet = $2) ORDER BY scope, wallet"
        );
        let rows: Vec<PolicyRow> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as(&sql).bind(scope).bind(wallet.as_deref()).fetch_all(pool).await.map_err(err)
                })
            })
            .await?;
        rows.into_iter().map(PolicyRow::into_policy).collect()
    }

    /// Turns allowlist mode on or off.
    pub async fn set_allowlist_mode(&self, on: bool, actor: &Actor, now_unix_s: u64) -> Result<(), MeteringError> {
        const OP: &str = "set_allowlist_mode";
        let now = to_i64("now_unix_s", now_unix_s)?;
        let err = |e: sqlx::Error| self.db_error(OP, e);
        self.bounded(OP, async {
            on_db!(write self, |pool, begin| {
                let mut tx = pool.begin_with(begin).await.map_err(err)?;
                sqlx::query("UPDATE control_state SET allowlist_mode = $1 WHERE id = 1")
                    .bind(i64::from(on))
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                let detail = if on { "on" } else { "off" };
                record_change!(self, tx, err, actor, "settings.allowlist_mode", "control", Some(detail), now);
                tx.commit().await.map_err(err)
            })
        })
        .await
    }

    /// The global settings and change counter.
    pub async fn control_state(&self) -> Result<ControlState, MeteringError> {
        const OP: &str = "control_state";
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let (allowlist, version): (i64, i64) = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as("SELECT allowlist_mode, version FROM control_state WHERE id = 1")
                        .fetch_one(pool)
                        .await
                        .map_err(err)
                })
            })
            .await?;
        Ok(ControlState { allowlist_mode: allowlist != 0, version: unsigned_column("version", version)? })
    }

    /// Appends audit records to the chain, in order, and returns the last sequence number.
    pub async fn append_audit(&self, records: &[NewAuditRecord]) -> Result<u64, MeteringError> {
        const OP: &str = "append_audit";
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let lock = match self.db {
            Db::Postgres(_) => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
            Db::Sqlite(_) => "SELECT seq, hash FROM audit_head WHERE id = 1",
        };
        let last = self
            .bounded(OP, async {
                on_db!(write self, |pool, begin| {
                    let mut tx = pool.begin_with(begin).await.map_err(err)?;
                    let (mut seq, mut prev): (i64, String) =
                        sqlx::query_as(lock).fetch_one(&mut *tx).await.map_err(err)?;
                    for r in records {
                        seq += 1;
                        let useq = unsigned_column("seq", seq)?;
                        let hash = audit_hash(useq, r, &prev);
                        sqlx::query(
                            "INSERT INTO audit_log (seq, at_unix_ms, wallet, provider, endpoint, method, path, \
                             price_version, decision, reason, credential, credential_version, upstream_status, \
                             latency_ms, entry_id, tx_hash, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, \
                             $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
                        )
                        .bind(seq)
                        .bind(to_i64("at_unix_ms", r.at_unix_ms)?)
                        .bind(r.wallet.map(hex_address))
                        .bind(r.provider.as_deref())
                        .bind(r.endpoint.as_deref())
                        .bind(&r.method)
                        .bind(&r.path)
                        .bind(opt_i64("price_version", r.price_version)?)
                        .bind(r.decision.as_str())
                        .bind(&r.reason)
                        .bind(r.credential.as_deref())
                        .bind(opt_i64("credential_version", r.credential_version)?)
                        .bind(r.upstream_status.map(i64::from))
                        .bind(to_i64("latency_ms", r.latency_ms)?)
                        .bind(r.entry_id.as_deref())
                        .bind(r.tx_hash.as_deref())
                        .bind(&prev)
                        .bind(&hash)
                        .execute(&mut *tx)
                        .await
                        .map_err(err)?;
                        prev = hash;
                    }
                    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                        .bind(seq)
                        .bind(&prev)
                        .execute(&mut *tx)
                        .await
                        .map_err(err)?;
                    tx.commit().await.map_err(err)?;
                    Ok(seq)
                })
            })
            .await?;
        unsigned_column("seq", last)
    }

    /// Audit records matching the query, by sequence number.
    pub async fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, MeteringError> {
        const OP: &str = "audit";
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE ($1 IS NULL OR wallet = $1) \
             AND ($2 IS NULL OR endpoint = $2) AND ($3 IS NULL OR provider = $3) \
             AND ($4 IS NULL OR at_unix_ms >= $4) AND ($5 IS NULL OR at_unix_ms < $5) \
             AND ($6 IS NULL OR decision = $6) AND seq > $7 ORDER BY seq LIMIT $8"
        );
        let wallet = q.wallet.map(hex_address);
        let from = opt_i64("from_unix_ms", q.from_unix_ms)?;
        let to = opt_i64("to_unix_ms", q.to_unix_ms)?;
        let after = to_i64("after_seq", q.after_seq.unwrap_or(0))?;
        let limit = i64::from(q.limit.clamp(1, 1000));
        let rows: Vec<AuditRow> = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as(&sql)
                        .bind(wallet.as_deref())
                        .bind(q.endpoint.as_deref())
                        .bind(q.provider.as_deref())
                        .bind(from)
                        .bind(to)
                        .bind(q.decision.map(Decision::as_str))
                        .bind(after)
                        .bind(limit)
                        .fetch_all(pool)
                        .await
                        .map_err(err)
                })
            })
            .await?;
        rows.into_iter().map(AuditRow::into_record).collect()
    }

    /// Walks the whole audit chain: sequence numbers without gaps, each record's `prev_hash`
    /// equal to the previous record's hash, each hash recomputed, and the head matching the
    /// last record (a deleted tail). Reports the first break.
    pub async fn verify_audit(&self) -> Result<AuditVerification, MeteringError> {
        const OP: &str = "verify_audit";
        const PAGE: i64 = 1000;
        let err = |e: sqlx::Error| self.db_error(OP, e);
        let broken = |records: u64, seq: u64, problem: String| AuditVerification {
            records,
            intact: false,
            broken_at_seq: Some(seq),
            problem: Some(problem),
        };
        // The head first: records appended while the walk runs are beyond it and not judged.
        let (head_seq, head_hash): (i64, String) = self
            .bounded(OP, async {
                on_db!(&self.db, |pool| {
                    sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_one(pool).await.map_err(err)
                })
            })
            .await?;
        let head_seq = unsigned_column("seq", head_seq)?;
        let mut expected_seq: u64 = 1;
        let mut prev = ZERO_HASH.to_owned();
        let mut records: u64 = 0;
        while expected_seq <= head_seq {
            let after = to_i64("seq", expected_seq - 1)?;
            let head = to_i64("seq", head_seq)?;
            let sql =
                format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > $1 AND seq <= $3 ORDER BY seq LIMIT $2");
            let rows: Vec<AuditRow> = self
                .bounded(OP, async {
                    on_db!(&self.db, |pool| {
                        sqlx::query_as(&sql).bind(after).bind(PAGE).bind(head).fetch_all(pool).await.map_err(err)
                    })
                })
                .await?;
            let n = rows.len();
            for row in rows {
                let r = row.into_record()?;
                records += 1;
                if r.seq != expected_seq {
                    return Ok(broken(records, expected_seq, format!("record {expected_seq} is missing")));
                }
                if r.prev_hash != prev {
                    return Ok(broken(records, r.seq, "does not link to the previous record".to_owned()));
                }
                if audit_hash(r.seq, &r.record, &prev) != r.hash {
                    return Ok(broken(records, r.seq, "content does not match its hash (edited)".to_owned()));
                }
                prev = r.hash;
                expected_seq += 1;
            }
            if n < usize::try_from(PAGE).unwrap_or(usize::MAX) {
                break;
            }
        }
        if head_seq != expected_seq - 1 || head_hash != prev {
            return Ok(broken(
                records,
                expected_seq,
                format!("the chain ends at {} but its head says {head_seq} (records deleted)", expected_seq - 1),
            ));
        }
        Ok(AuditVerification { records, intact: true, broken_at_seq: None, problem: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_starts_are_utc_day_and_month() {
        // 2026-11-30T12:34:56Z
        let now = 1_796_042_096;
        let (day, month) = period_starts(now);
        assert_eq!(day, 1_795_996_800); // 2026-11-30T00:00:00Z
        assert_eq!(month, 1_793_491_200); // 2026-11-01T00:00:00Z
        // 2024-02-29 (leap day) → month starts 2024-02-01.
        assert_eq!(period_starts(1_709_208_000).1, 1_706_745_600);
        assert_eq!(period_starts(0), (0, 0));
    }

    #[test]
    fn audit_hash_covers_every_field_and_the_link() {
        let r = NewAuditRecord {
            at_unix_ms: 1,
            wallet: None,
            provider: Some("p".into()),
            endpoint: Some("p:/x".into()),
            method: "GET".into(),
            path: "/x".into(),
            price_version: Some(1),
            decision: Decision::Accepted,
            reason: "ok".into(),
            credential: None,
            credential_version: None,
            upstream_status: Some(200),
            latency_ms: 3,
            entry_id: None,
            tx_hash: None,
        };
        let h = audit_hash(1, &r, ZERO_HASH);
        assert_ne!(h, audit_hash(2, &r, ZERO_HASH));
        assert_ne!(h, audit_hash(1, &r, &"1".repeat(64)));
        let mut edited = r.clone();
        edited.upstream_status = Some(500);
        assert_ne!(h, audit_hash(1, &edited, ZERO_HASH));
    }
}
