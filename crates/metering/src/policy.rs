//! Wallet policy rules: what a payer's policies allow (revocation, allowlist mode, endpoint
//! scope, per-call maximum, daily and monthly caps), and the statements that read them inside
//! the reservation's transaction.
//!
//! Owns the decision and its stable codes ([`PolicyDenial::code`]). The repository that stores
//! policies is `repo::policies`; the reservation (`repo::entries`) runs [`SELECT_POLICY_CHECK`],
//! [`evaluate_policies`] and the cap checks in the same transaction as its insert, so concurrent
//! calls and replicas cannot overspend a cap.
//!
//! Must not: import a repository or `db` (it is pure: rows in, decision out), know HTTP.

/// Seconds in a UTC day.
const DAY_S: u64 = 86_400;

/// Which wallets a policy covers calls of: every provider (`*`) or one.
pub const GLOBAL_SCOPE: &str = "*";

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

/// Start of the UTC day and of the UTC calendar month containing `now_unix_s`.
pub fn period_starts(now_unix_s: u64) -> (u64, u64) {
    let day_start = now_unix_s - now_unix_s % DAY_S;
    // The month's first day, by the `time` crate's calendar. Past year 9999 (beyond any clock
    // this runs under) the month is taken to start with the day.
    let month_start = i64::try_from(now_unix_s)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.replace_day(1).ok())
        .and_then(|t| u64::try_from(t.unix_timestamp()).ok())
        .map_or(day_start, |first_day| first_day - first_day % DAY_S);
    (day_start, month_start)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_starts_are_utc_day_and_month() {
        // Goal: caps count from the start of the UTC day and of the UTC calendar month.
        // 2026-11-30T12:34:56Z
        let now = 1_796_042_096;
        let (day, month) = period_starts(now);
        assert_eq!(day, 1_795_996_800); // 2026-11-30T00:00:00Z
        assert_eq!(month, 1_793_491_200); // 2026-11-01T00:00:00Z
        // 2024-02-29 (leap day) → month starts 2024-02-01.
        assert_eq!(period_starts(1_709_208_000).1, 1_706_745_600);
        assert_eq!(period_starts(0), (0, 0));
    }
}
