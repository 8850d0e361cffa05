//! The persisted spending record: one JSON file holding one record per signed
//! authorization, and the budget arithmetic over it.
//!
//! Owns the file format, its durability and its locking. Every change is
//! read-modify-write under an exclusive `flock` on `<file>.lock` (so several processes
//! and clients may share one store), written to `<file>.tmp` (mode 0600), fsync'd, renamed
//! over the file, and the directory fsync'd: a crash leaves either the old or the new
//! file, never a torn one. A file that cannot be parsed stops all payments (budgets cannot
//! be honoured without it); it is never silently replaced.
//!
//! Must not: do network IO, or decide anything about HTTP answers (the client maps answers
//! to states; this module only stores them and sums them).
//!
//! Format (`version` 1):
//! ```json
//! {"version":1,"records":[{"nonce":"0x…","state":"paid","createdUnixS":1767225600,
//!   "updatedUnixS":1767225601,"method":"GET","url":"http://gw/weather/paris",
//!   "host":"gw:80","amount":"1000","network":"eip155:8453","asset":"0x8335…",
//!   "payTo":"0x…","payer":"0x…","validBeforeUnixS":1767225660,"x402Version":2,
//!   "headerName":"PAYMENT-SIGNATURE","header":"eyJ4NDAy…","transaction":"0x…",
//!   "reason":null,"httpStatus":200}]}
//! ```
//! The `header` is the signed payment itself: until `validBeforeUnixS` anyone holding the
//! file could submit it to the chain (only to the payee the agent chose), hence mode 0600.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use alloy_primitives::{Address, B256, U256};
use serde::{Deserialize, Serialize};
use tollgate_x402::{DecimalU256, Network};

use crate::config::SpendLimits;
use crate::error::{Budget, ClientError};

const FORMAT_VERSION: u32 = 1;

/// Where one authorization stands.
///
/// `signed → sent → paid | paid_pending | refused | failed`; `signed`, `sent`, `paid` and
/// `paid_pending` count against budgets (a payment in doubt counts as spent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// Signed and written; not yet handed to the network. A `signed` record left by a
    /// crashed process was never sent (`sent` is written before the first send).
    Signed,
    /// About to be, or was, sent; no final answer yet. Left by a crash or by a transport
    /// failure: the server may have it.
    Sent,
    /// A success receipt with a transaction hash.
    Paid,
    /// Paid as far as we can tell, but not confirmed: a success receipt whose settlement is
    /// pending or deferred, a 2xx without a receipt, or an answer to a re-send after a lost
    /// response.
    PaidPending,
    /// A definite 402 to the first delivery of this authorization: not charged.
    Refused,
    /// Never delivered (every attempt failed to connect), or answered with an error and no
    /// receipt on the first delivery (the server charged nothing).
    Failed,
}

impl RecordState {
    /// Whether budgets count this record.
    pub fn counts(self) -> bool {
        matches!(self, RecordState::Signed | RecordState::Sent | RecordState::Paid | RecordState::PaidPending)
    }

    /// Whether the outcome is still unknown (`signed` or `sent`).
    pub fn unresolved(self) -> bool {
        matches!(self, RecordState::Signed | RecordState::Sent)
    }
}

/// One signed authorization and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRecord {
    /// The EIP-3009 nonce: the record's id.
    pub nonce: B256,
    /// Where it stands.
    pub state: RecordState,
    /// When it was signed.
    pub created_unix_s: u64,
    /// Last state change.
    pub updated_unix_s: u64,
    /// HTTP method of the paid request.
    pub method: String,
    /// The paid URL.
    pub url: String,
    /// `host:port` (the per-host budget's key).
    pub host: String,
    /// Amount in atomic units.
    pub amount: DecimalU256,
    /// The chain.
    pub network: Network,
    /// The token.
    pub asset: Address,
    /// The payee.
    pub pay_to: Address,
    /// The payer (our address).
    pub payer: Address,
    /// The authorization's `validBefore`.
    pub valid_before_unix_s: u64,
    /// 1 or 2.
    pub x402_version: u8,
    /// `PAYMENT-SIGNATURE` or `X-PAYMENT`.
    pub header_name: String,
    /// The header value as sent (re-sent unchanged after a transport error).
    pub header: String,
    /// Settlement transaction hash from the receipt, when there was one.
    pub transaction: Option<String>,
    /// The server's code or our note for the last state change.
    pub reason: Option<String>,
    /// HTTP status of the final answer.
    pub http_status: Option<u16>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    records: Vec<PaymentRecord>,
}

/// The spending record on disk.
#[derive(Debug, Clone)]
pub struct SpendStore {
    path: PathBuf,
    lock_path: PathBuf,
    tmp_path: PathBuf,
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "spend.json".into());
    name.push(suffix);
    path.with_file_name(name)
}

fn open_private(path: &Path, truncate: bool) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(truncate);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

impl SpendStore {
    /// Opens (creating the directory when missing) and checks that the file, if any, parses.
    pub fn open(path: impl Into<PathBuf>) -> Result<SpendStore, ClientError> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(|e| ClientError::store(&path, format!("creating its directory: {e}")))?;
        }
        let store = SpendStore { lock_path: sibling(&path, ".lock"), tmp_path: sibling(&path, ".tmp"), path };
        store.records()?;
        Ok(store)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every record, oldest first (under a shared lock).
    pub fn records(&self) -> Result<Vec<PaymentRecord>, ClientError> {
        let lock = self.lock_file()?;
        lock.lock_shared().map_err(|e| ClientError::store(&self.path, format!("locking: {e}")))?;
        let records = self.load();
        drop(lock);
        records
    }

    /// Runs `f` on the records under the exclusive lock and durably writes the result when
    /// `f` succeeds. `f` sees what every other process has written.
    pub(crate) fn update<T>(
        &self,
        f: impl FnOnce(&mut Vec<PaymentRecord>) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let lock = self.lock_file()?;
        lock.lock().map_err(|e| ClientError::store(&self.path, format!("locking: {e}")))?;
        let mut records = self.load()?;
        let out = f(&mut records)?;
        self.save(&records)?;
        drop(lock);
        Ok(out)
    }

    /// Sets the state (and outcome fields) of the record with `nonce`.
    pub(crate) fn set_state(
        &self,
        nonce: B256,
        state: RecordState,
        outcome: Outcome,
        now_unix_s: u64,
    ) -> Result<PaymentRecord, ClientError> {
        self.update(|records| {
            let r = records
                .iter_mut()
                .find(|r| r.nonce == nonce)
                .ok_or_else(|| ClientError::store(&self.path, format!("record {nonce} disappeared")))?;
            r.state = state;
            r.updated_unix_s = now_unix_s;
            if outcome.transaction.is_some() {
                r.transaction = outcome.transaction;
            }
            if outcome.reason.is_some() {
                r.reason = outcome.reason;
            }
            if outcome.http_status.is_some() {
                r.http_status = outcome.http_status;
            }
            Ok(r.clone())
        })
    }

    fn lock_file(&self) -> Result<File, ClientError> {
        open_private(&self.lock_path, false).map_err(|e| ClientError::store(&self.path, format!("lock file: {e}")))
    }

    fn load(&self) -> Result<Vec<PaymentRecord>, ClientError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ClientError::store(&self.path, format!("reading: {e}"))),
        };
        let file: StoreFile = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::store(&self.path, format!("not a spending record ({e}); refusing to pay")))?;
        if file.version != FORMAT_VERSION {
            return Err(ClientError::store(&self.path, format!("unsupported format version {}", file.version)));
        }
        Ok(file.records)
    }

    fn save(&self, records: &[PaymentRecord]) -> Result<(), ClientError> {
        let err = |what: &str, e: std::io::Error| ClientError::store(&self.path, format!("{what}: {e}"));
        let body = serde_json::to_vec_pretty(&StoreFile { version: FORMAT_VERSION, records: records.to_vec() })
            .map_err(|e| ClientError::store(&self.path, format!("encoding: {e}")))?;
        let mut tmp = open_private(&self.tmp_path, true).map_err(|e| err("creating the temporary file", e))?;
        tmp.write_all(&body).map_err(|e| err("writing", e))?;
        tmp.sync_all().map_err(|e| err("fsync", e))?;
        drop(tmp);
        fs::rename(&self.tmp_path, &self.path).map_err(|e| err("renaming into place", e))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(|e| err("fsync of the directory", e))?;
        }
        Ok(())
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// Outcome fields set with a state change (`None` leaves a field as it was).
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome {
    pub transaction: Option<String>,
    pub reason: Option<String>,
    pub http_status: Option<u16>,
}

/// Seconds in a UTC day (Unix time has no leap seconds, so days are exact multiples).
const DAY_S: u64 = 86_400;

/// The UTC day of `unix_s` as `YYYY-MM-DD` (the key of the per-day budgets and totals).
pub fn utc_day(unix_s: u64) -> String {
    let day_start = unix_s - unix_s % DAY_S;
    i64::try_from(day_start)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .map_or_else(|| format!("day {}", unix_s / DAY_S), |t| t.date().to_string())
}

/// Sums of counted records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub total: U256,
    pub per_host: BTreeMap<String, U256>,
    /// Per UTC day (`YYYY-MM-DD`) of `created_unix_s`.
    pub per_day: BTreeMap<String, U256>,
    /// Per UTC day, then per host.
    pub per_day_host: BTreeMap<(String, String), U256>,
}

pub(crate) fn totals(records: &[PaymentRecord]) -> Totals {
    let mut t = Totals::default();
    for r in records.iter().filter(|r| r.state.counts()) {
        // Saturating: an absurd sum only makes the budgets stricter.
        let add = |sum: &mut U256| *sum = sum.saturating_add(r.amount.0);
        add(&mut t.total);
        add(t.per_host.entry(r.host.clone()).or_default());
        let day = utc_day(r.created_unix_s);
        add(t.per_day.entry(day.clone()).or_default());
        add(t.per_day_host.entry((day, r.host.clone())).or_default());
    }
    t
}

/// Checks the spend controls for a payment of `amount` to `host` signed at `now_unix_s`.
pub(crate) fn check_budgets(
    records: &[PaymentRecord],
    limits: &SpendLimits,
    host: &str,
    amount: U256,
    now_unix_s: u64,
) -> Result<(), ClientError> {
    let over = |budget, limit: U256, spent: U256| {
        if spent.saturating_add(amount) > limit {
            Err(ClientError::BudgetExceeded { budget, limit, spent, requested: amount })
        } else {
            Ok(())
        }
    };
    if let Some(limit) = limits.max_per_call_atomic {
        over(Budget::PerCall, limit, U256::ZERO)?;
    }
    let t = totals(records);
    if let Some(limit) = limits.total_budget_atomic {
        over(Budget::Total, limit, t.total)?;
    }
    if let Some(limit) = limits.per_host_budget_atomic {
        let spent = t.per_host.get(host).copied().unwrap_or_default();
        over(Budget::Host { host: host.to_owned() }, limit, spent)?;
    }
    let day = utc_day(now_unix_s);
    if let Some(limit) = limits.daily_budget_atomic {
        let spent = t.per_day.get(&day).copied().unwrap_or_default();
        over(Budget::Daily, limit, spent)?;
    }
    if let Some(limit) = limits.per_host_daily_budget_atomic {
        let spent = t.per_day_host.get(&(day, host.to_owned())).copied().unwrap_or_default();
        over(Budget::HostDaily { host: host.into() }, limit, spent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(host: &str, amount: u64, state: RecordState) -> PaymentRecord {
        PaymentRecord {
            nonce: B256::with_last_byte(amount as u8),
            state,
            created_unix_s: 1,
            updated_unix_s: 1,
            method: "GET".into(),
            url: format!("http://{host}/x"),
            host: host.into(),
            amount: DecimalU256::from(amount),
            network: Network::BASE,
            asset: Address::ZERO,
            pay_to: Address::ZERO,
            payer: Address::ZERO,
            valid_before_unix_s: 100,
            x402_version: 2,
            header_name: "PAYMENT-SIGNATURE".into(),
            header: "e30=".into(),
            transaction: None,
            reason: None,
            http_status: None,
        }
    }

    // Goal: budgets count signed, sent, paid and paid_pending, never refused or failed,
    // and name the control that refused.
    #[test]
    fn budgets_count_only_spendable_states() {
        let records = vec![
            record("a:80", 10, RecordState::Signed),
            record("a:80", 20, RecordState::Sent),
            record("b:80", 30, RecordState::Paid),
            record("b:80", 40, RecordState::PaidPending),
            record("a:80", 1000, RecordState::Refused),
            record("a:80", 1000, RecordState::Failed),
        ];
        let t = totals(&records);
        assert_eq!(t.total, U256::from(100));
        assert_eq!(t.per_host["a:80"], U256::from(30));
        let limits = SpendLimits {
            max_per_call_atomic: Some(U256::from(50)),
            total_budget_atomic: Some(U256::from(150)),
            per_host_budget_atomic: Some(U256::from(60)),
            ..SpendLimits::default()
        };
        assert!(check_budgets(&records, &limits, "a:80", U256::from(30), 1).is_ok());
        let e = check_budgets(&records, &limits, "a:80", U256::from(51), 1).unwrap_err();
        assert!(matches!(e, ClientError::BudgetExceeded { budget: Budget::PerCall, .. }), "{e}");
        let e = check_budgets(&records, &limits, "a:80", U256::from(31), 1).unwrap_err();
        assert!(matches!(e, ClientError::BudgetExceeded { budget: Budget::Host { .. }, .. }), "{e}");
        let limits = SpendLimits { total_budget_atomic: Some(U256::from(120)), ..limits };
        let e = check_budgets(&records, &limits, "c:80", U256::from(21), 1).unwrap_err();
        match e {
            ClientError::BudgetExceeded { budget: Budget::Total, limit, spent, requested } => {
                assert_eq!((limit, spent, requested), (U256::from(120), U256::from(100), U256::from(21)));
            }
            other => panic!("{other}"),
        }
    }

    // Goal: the per-day budgets count only the records signed on the current UTC day
    // (across hosts, and per host), so yesterday's spending frees up at 00:00 UTC.
    #[test]
    fn daily_budgets_count_the_current_utc_day() {
        // 2026-12-07T23:59:59Z and one second later.
        let late = 1_796_687_999;
        let next_day = late + 1;
        let mut records = vec![record("a:80", 30, RecordState::Paid), record("b:80", 20, RecordState::Paid)];
        for r in &mut records {
            r.created_unix_s = late;
        }
        assert_eq!(utc_day(late), "2026-12-07");
        assert_eq!(utc_day(next_day), "2026-12-08");
        let daily = SpendLimits { daily_budget_atomic: Some(U256::from(60)), ..SpendLimits::default() };
        let e = check_budgets(&records, &daily, "c:80", U256::from(11), late).unwrap_err();
        assert!(
            matches!(&e, ClientError::BudgetExceeded { budget: Budget::Daily, spent, .. }
                if *spent == U256::from(50)),
            "{e}"
        );
        assert!(e.to_string().contains("daily budget (UTC day) exceeded"), "{e}");
        assert!(check_budgets(&records, &daily, "c:80", U256::from(10), late).is_ok());
        assert!(check_budgets(&records, &daily, "c:80", U256::from(60), next_day).is_ok());
        let host_daily = SpendLimits { per_host_daily_budget_atomic: Some(U256::from(35)), ..SpendLimits::default() };
        let e = check_budgets(&records, &host_daily, "a:80", U256::from(6), late).unwrap_err();
        assert!(matches!(e, ClientError::BudgetExceeded { budget: Budget::HostDaily { .. }, .. }), "{e}");
        assert!(check_budgets(&records, &host_daily, "b:80", U256::from(15), late).is_ok());
        assert!(check_budgets(&records, &host_daily, "a:80", U256::from(35), next_day).is_ok());
    }

    // Goal: the store survives a reopen, writes mode 0600, and refuses a corrupt file
    // instead of starting from zero.
    #[test]
    fn persists_privately_and_refuses_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/spend.json");
        let store = SpendStore::open(&path).unwrap();
        store
            .update(|r| {
                r.push(record("a:80", 5, RecordState::Sent));
                Ok(())
            })
            .unwrap();
        let again = SpendStore::open(&path).unwrap();
        assert_eq!(again.records().unwrap().len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        fs::write(&path, b"{not json").unwrap();
        assert!(matches!(SpendStore::open(&path), Err(ClientError::Store { .. })));
    }
}
