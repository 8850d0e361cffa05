-- The control plane on SQLite (crates/metering/src/control.rs). Same semantics as
-- ../postgres/0004_control_plane.sql; keep the two in step.
--
-- * admin_tokens: bearer tokens of the admin API, stored as SHA-256 hashes only.
-- * providers / endpoints / price_versions: what the gateway sells. The TOML file seeds them at
--   startup; the admin API changes them. A price change is a new price_versions row (never an
--   edit), and every ledger entry records the version it was quoted.
-- * credentials: upstream secrets, AES-256-GCM ciphertext only (the master key never enters the
--   database), one row per version; rotation adds a version, revocation stamps one.
-- * wallet_policies: per wallet, globally (scope '*') or for one provider (scope = provider id).
-- * control_state: one row; `version` increases with every control-plane change (replicas poll it
--   and, on PostgreSQL, are also woken by NOTIFY).
-- * audit_log + audit_head: one hash-chained record per paid-call attempt; audit_head holds the
--   last sequence number and hash so that a deleted tail is detected too.
-- * admin_log: one record per admin change (who, what), append-only.

CREATE TABLE admin_tokens (
    id TEXT NOT NULL PRIMARY KEY CONSTRAINT admin_tokens_id_hex
        CHECK (length(id) = 16 AND id NOT GLOB '*[^0-9a-f]*'),
    role TEXT NOT NULL CONSTRAINT admin_tokens_role_known CHECK (role IN ('operator', 'provider', 'finance')),
    provider TEXT NULL,
    token_hash TEXT NOT NULL UNIQUE CONSTRAINT admin_tokens_hash_hex
        CHECK (length(token_hash) = 64 AND token_hash NOT GLOB '*[^0-9a-f]*'),
    label TEXT NOT NULL CONSTRAINT admin_tokens_label_length CHECK (length(label) <= 128),
    created_unix_s INTEGER NOT NULL,
    revoked_unix_s INTEGER NULL,
    CONSTRAINT admin_tokens_provider_role CHECK ((role = 'provider') = (provider IS NOT NULL))
) STRICT;

CREATE TABLE providers (
    id TEXT NOT NULL PRIMARY KEY CONSTRAINT providers_id_length CHECK (length(id) BETWEEN 1 AND 64),
    -- The provider as written in the TOML file (without its routes), as JSON.
    spec TEXT NOT NULL,
    source TEXT NOT NULL CONSTRAINT providers_source_known CHECK (source IN ('config', 'admin')),
    created_unix_s INTEGER NOT NULL,
    updated_unix_s INTEGER NOT NULL
) STRICT;

CREATE TABLE endpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    provider TEXT NOT NULL REFERENCES providers (id),
    path TEXT NOT NULL,
    -- The route as written in the TOML file, as JSON (its price lives in price_versions).
    spec TEXT NOT NULL,
    source TEXT NOT NULL CONSTRAINT endpoints_source_known CHECK (source IN ('config', 'admin')),
    enabled INTEGER NOT NULL CONSTRAINT endpoints_enabled_bool CHECK (enabled IN (0, 1)),
    created_unix_s INTEGER NOT NULL,
    updated_unix_s INTEGER NOT NULL,
    CONSTRAINT endpoints_path_unique UNIQUE (provider, path)
) STRICT;

CREATE TABLE price_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id INTEGER NOT NULL REFERENCES endpoints (id),
    -- JSON array of {"network": "eip155:8453", "amount": "1000"} in atomic units.
    prices TEXT NOT NULL,
    created_unix_s INTEGER NOT NULL
) STRICT;

CREATE INDEX price_versions_endpoint ON price_versions (endpoint_id, id);

CREATE TABLE credentials (
    provider TEXT NOT NULL REFERENCES providers (id),
    name TEXT NOT NULL CONSTRAINT credentials_name_length CHECK (length(name) BETWEEN 1 AND 64),
    version INTEGER NOT NULL CONSTRAINT credentials_version_positive CHECK (version > 0),
    nonce TEXT NOT NULL CONSTRAINT credentials_nonce_hex CHECK (length(nonce) = 24 AND nonce NOT GLOB '*[^0-9a-f]*'),
    ciphertext TEXT NOT NULL CONSTRAINT credentials_ciphertext_hex
        CHECK (length(ciphertext) >= 34 AND ciphertext NOT GLOB '*[^0-9a-f]*'),
    created_unix_s INTEGER NOT NULL,
    revoked_unix_s INTEGER NULL,
    PRIMARY KEY (provider, name, version)
) STRICT;

CREATE TABLE wallet_policies (
    scope TEXT NOT NULL,
    wallet TEXT NOT NULL CONSTRAINT wallet_policies_wallet_hex
        CHECK (length(wallet) = 42 AND substr(wallet, 1, 2) = '0x' AND substr(wallet, 3) NOT GLOB '*[^0-9a-f]*'),
    revoked INTEGER NOT NULL CONSTRAINT wallet_policies_revoked_bool CHECK (revoked IN (0, 1)),
    registered INTEGER NOT NULL CONSTRAINT wallet_policies_registered_bool CHECK (registered IN (0, 1)),
    -- JSON array of endpoint names (`provider:path`); NULL allows every endpoint.
    endpoints TEXT NULL,
    per_call_max INTEGER NULL CONSTRAINT wallet_policies_per_call_max_positive CHECK (per_call_max >= 0),
    daily_cap INTEGER NULL CONSTRAINT wallet_policies_daily_cap_positive CHECK (daily_cap >= 0),
    monthly_cap INTEGER NULL CONSTRAINT wallet_policies_monthly_cap_positive CHECK (monthly_cap >= 0),
    updated_unix_s INTEGER NOT NULL,
    PRIMARY KEY (scope, wallet)
) STRICT;

CREATE TABLE control_state (
    id INTEGER NOT NULL PRIMARY KEY CONSTRAINT control_state_single CHECK (id = 1),
    allowlist_mode INTEGER NOT NULL CONSTRAINT control_state_allowlist_bool CHECK (allowlist_mode IN (0, 1)),
    version INTEGER NOT NULL
) STRICT;
INSERT INTO control_state (id, allowlist_mode, version) VALUES (1, 0, 0);

CREATE TABLE audit_log (
    seq INTEGER NOT NULL PRIMARY KEY CONSTRAINT audit_log_seq_positive CHECK (seq > 0),
    at_unix_ms INTEGER NOT NULL,
    wallet TEXT NULL,
    provider TEXT NULL,
    endpoint TEXT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    price_version INTEGER NULL,
    decision TEXT NOT NULL CONSTRAINT audit_log_decision_known CHECK (decision IN ('accepted', 'denied')),
    reason TEXT NOT NULL,
    credential TEXT NULL,
    credential_version INTEGER NULL,
    upstream_status INTEGER NULL,
    latency_ms INTEGER NOT NULL,
    entry_id TEXT NULL,
    tx_hash TEXT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
) STRICT;

CREATE INDEX audit_log_wallet ON audit_log (wallet, seq);
CREATE INDEX audit_log_provider ON audit_log (provider, seq);
CREATE INDEX audit_log_at ON audit_log (at_unix_ms);

CREATE TABLE audit_head (
    id INTEGER NOT NULL PRIMARY KEY CONSTRAINT audit_head_single CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL
) STRICT;
INSERT INTO audit_head (id, seq, hash)
    VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE admin_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_unix_s INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NULL
) STRICT;

-- What a ledger entry was quoted and served with (never the credential's value).
ALTER TABLE ledger_entries ADD COLUMN price_version INTEGER NULL;
ALTER TABLE ledger_entries ADD COLUMN credential TEXT NULL;
ALTER TABLE ledger_entries ADD COLUMN credential_version INTEGER NULL;

-- Daily and monthly caps sum one payer's recent spend at reservation time.
CREATE INDEX ledger_entries_payer_created ON ledger_entries (payer, created_unix_s);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'tollgate: audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'tollgate: audit_log is append-only');
END;
CREATE TRIGGER price_versions_no_update BEFORE UPDATE ON price_versions
BEGIN
    SELECT RAISE(ABORT, 'tollgate: price_versions is append-only');
END;
CREATE TRIGGER price_versions_no_delete BEFORE DELETE ON price_versions
BEGIN
    SELECT RAISE(ABORT, 'tollgate: price_versions is append-only');
END;
CREATE TRIGGER admin_log_no_update BEFORE UPDATE ON admin_log
BEGIN
    SELECT RAISE(ABORT, 'tollgate: admin_log is append-only');
END;
CREATE TRIGGER admin_log_no_delete BEFORE DELETE ON admin_log
BEGIN
    SELECT RAISE(ABORT, 'tollgate: admin_log is append-only');
END;
-- A credential version's ciphertext never changes; only its revocation stamp may be set, once.
CREATE TRIGGER credentials_guard BEFORE UPDATE ON credentials
BEGIN
    SELECT RAISE(ABORT, 'tollgate: credential versions are immutable except revocation')
    WHERE NEW.provider IS NOT OLD.provider OR NEW.name IS NOT OLD.name OR NEW.version IS NOT OLD.version
        OR NEW.nonce IS NOT OLD.nonce OR NEW.ciphertext IS NOT OLD.ciphertext
        OR (OLD.revoked_unix_s IS NOT NULL AND NEW.revoked_unix_s IS NOT OLD.revoked_unix_s);
END;
CREATE TRIGGER credentials_no_delete BEFORE DELETE ON credentials
BEGIN
    SELECT RAISE(ABORT, 'tollgate: credential versions are never deleted');
END;
