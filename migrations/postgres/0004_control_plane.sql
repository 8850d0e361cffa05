-- The control plane on PostgreSQL (crates/metering/src/control.rs). Same semantics as
-- ../sqlite/0004_control_plane.sql; keep the two in step (see the comments there).

CREATE TABLE admin_tokens (
    id TEXT NOT NULL PRIMARY KEY CONSTRAINT admin_tokens_id_hex CHECK (id ~ '^[0-9a-f]{16}$'),
    role TEXT NOT NULL CONSTRAINT admin_tokens_role_known CHECK (role IN ('operator', 'provider', 'finance')),
    provider TEXT NULL,
    token_hash TEXT NOT NULL UNIQUE CONSTRAINT admin_tokens_hash_hex CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    label TEXT NOT NULL CONSTRAINT admin_tokens_label_length CHECK (length(label) <= 128),
    created_unix_s BIGINT NOT NULL,
    revoked_unix_s BIGINT NULL,
    CONSTRAINT admin_tokens_provider_role CHECK ((role = 'provider') = (provider IS NOT NULL))
);

CREATE TABLE providers (
    id TEXT NOT NULL PRIMARY KEY CONSTRAINT providers_id_length CHECK (length(id) BETWEEN 1 AND 64),
    spec TEXT NOT NULL,
    source TEXT NOT NULL CONSTRAINT providers_source_known CHECK (source IN ('config', 'admin')),
    created_unix_s BIGINT NOT NULL,
    updated_unix_s BIGINT NOT NULL
);

CREATE TABLE endpoints (
    id BIGSERIAL PRIMARY KEY,
    provider TEXT NOT NULL REFERENCES providers (id),
    path TEXT NOT NULL,
    spec TEXT NOT NULL,
    source TEXT NOT NULL CONSTRAINT endpoints_source_known CHECK (source IN ('config', 'admin')),
    enabled BIGINT NOT NULL CONSTRAINT endpoints_enabled_bool CHECK (enabled IN (0, 1)),
    created_unix_s BIGINT NOT NULL,
    updated_unix_s BIGINT NOT NULL,
    CONSTRAINT endpoints_path_unique UNIQUE (provider, path)
);

CREATE TABLE price_versions (
    id BIGSERIAL PRIMARY KEY,
    endpoint_id BIGINT NOT NULL REFERENCES endpoints (id),
    prices TEXT NOT NULL,
    created_unix_s BIGINT NOT NULL
);

CREATE INDEX price_versions_endpoint ON price_versions (endpoint_id, id);

CREATE TABLE credentials (
    provider TEXT NOT NULL REFERENCES providers (id),
    name TEXT NOT NULL CONSTRAINT credentials_name_length CHECK (length(name) BETWEEN 1 AND 64),
    version BIGINT NOT NULL CONSTRAINT credentials_version_positive CHECK (version > 0),
    nonce TEXT NOT NULL CONSTRAINT credentials_nonce_hex CHECK (nonce ~ '^[0-9a-f]{24}$'),
    ciphertext TEXT NOT NULL CONSTRAINT credentials_ciphertext_hex CHECK (ciphertext ~ '^[0-9a-f]{34,}$'),
    created_unix_s BIGINT NOT NULL,
    revoked_unix_s BIGINT NULL,
    PRIMARY KEY (provider, name, version)
);

CREATE TABLE wallet_policies (
    scope TEXT NOT NULL,
    wallet TEXT NOT NULL CONSTRAINT wallet_policies_wallet_hex CHECK (wallet ~ '^0x[0-9a-f]{40}$'),
    revoked BIGINT NOT NULL CONSTRAINT wallet_policies_revoked_bool CHECK (revoked IN (0, 1)),
    registered BIGINT NOT NULL CONSTRAINT wallet_policies_registered_bool CHECK (registered IN (0, 1)),
    endpoints TEXT NULL,
    per_call_max BIGINT NULL CONSTRAINT wallet_policies_per_call_max_positive CHECK (per_call_max >= 0),
    daily_cap BIGINT NULL CONSTRAINT wallet_policies_daily_cap_positive CHECK (daily_cap >= 0),
    monthly_cap BIGINT NULL CONSTRAINT wallet_policies_monthly_cap_positive CHECK (monthly_cap >= 0),
    updated_unix_s BIGINT NOT NULL,
    PRIMARY KEY (scope, wallet)
);

CREATE TABLE control_state (
    id BIGINT NOT NULL PRIMARY KEY CONSTRAINT control_state_single CHECK (id = 1),
    allowlist_mode BIGINT NOT NULL CONSTRAINT control_state_allowlist_bool CHECK (allowlist_mode IN (0, 1)),
    version BIGINT NOT NULL
);
INSERT INTO control_state (id, allowlist_mode, version) VALUES (1, 0, 0);

CREATE TABLE audit_log (
    seq BIGINT NOT NULL PRIMARY KEY CONSTRAINT audit_log_seq_positive CHECK (seq > 0),
    at_unix_ms BIGINT NOT NULL,
    wallet TEXT NULL,
    provider TEXT NULL,
    endpoint TEXT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    price_version BIGINT NULL,
    decision TEXT NOT NULL CONSTRAINT audit_log_decision_known CHECK (decision IN ('accepted', 'denied')),
    reason TEXT NOT NULL,
    credential TEXT NULL,
    credential_version BIGINT NULL,
    upstream_status BIGINT NULL,
    latency_ms BIGINT NOT NULL,
    entry_id TEXT NULL,
    tx_hash TEXT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

CREATE INDEX audit_log_wallet ON audit_log (wallet, seq);
CREATE INDEX audit_log_provider ON audit_log (provider, seq);
CREATE INDEX audit_log_at ON audit_log (at_unix_ms);

CREATE TABLE audit_head (
    id BIGINT NOT NULL PRIMARY KEY CONSTRAINT audit_head_single CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
    VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE admin_log (
    id BIGSERIAL PRIMARY KEY,
    at_unix_s BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NULL
);

ALTER TABLE ledger_entries ADD COLUMN price_version BIGINT NULL;
ALTER TABLE ledger_entries ADD COLUMN credential TEXT NULL;
ALTER TABLE ledger_entries ADD COLUMN credential_version BIGINT NULL;

CREATE INDEX ledger_entries_payer_created ON ledger_entries (payer, created_unix_s);

CREATE FUNCTION tollgate_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'tollgate: % is append-only (% rejected)', TG_TABLE_NAME, TG_OP;
END
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION tollgate_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_append_only();
CREATE TRIGGER price_versions_append_only BEFORE UPDATE OR DELETE ON price_versions
    FOR EACH ROW EXECUTE FUNCTION tollgate_append_only();
CREATE TRIGGER admin_log_append_only BEFORE UPDATE OR DELETE ON admin_log
    FOR EACH ROW EXECUTE FUNCTION tollgate_append_only();

CREATE FUNCTION tollgate_credentials_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'tollgate: credential versions are never deleted';
    END IF;
    IF NEW.provider IS DISTINCT FROM OLD.provider OR NEW.name IS DISTINCT FROM OLD.name
        OR NEW.version IS DISTINCT FROM OLD.version OR NEW.nonce IS DISTINCT FROM OLD.nonce
        OR NEW.ciphertext IS DISTINCT FROM OLD.ciphertext
        OR (OLD.revoked_unix_s IS NOT NULL AND NEW.revoked_unix_s IS DISTINCT FROM OLD.revoked_unix_s)
    THEN
        RAISE EXCEPTION 'tollgate: credential versions are immutable except revocation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER credentials_guard BEFORE UPDATE OR DELETE ON credentials
    FOR EACH ROW EXECUTE FUNCTION tollgate_credentials_guard();
