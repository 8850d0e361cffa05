-- The tollgate ledger on PostgreSQL. Same semantics as ../sqlite/0001_ledger.sql; keep the two in step.
--
-- Every money invariant is held here as well as in Rust (crates/metering/src/types.rs):
-- * UNIQUE (chain_id, asset, payer, nonce) is the double-spend guard across gateway replicas. The
--   CHECKs on lowercase 0x-hex matter for it: a checksummed spelling of the same address would
--   otherwise slip past the constraint.
-- * amount > 0; a settling/settled entry has its transaction, a settled one its block and log.
-- * A trigger allows only the legal state transitions, keeps the authorization's columns immutable
--   and forbids deleting entries; ledger_events is append-only.

CREATE TABLE ledger_entries (
    id TEXT NOT NULL PRIMARY KEY CONSTRAINT ledger_entries_id_hex CHECK (id ~ '^[0-9a-f]{32}$'),
    chain_id BIGINT NOT NULL CONSTRAINT ledger_entries_chain_id_positive CHECK (chain_id > 0),
    asset TEXT NOT NULL CONSTRAINT ledger_entries_asset_hex CHECK (asset ~ '^0x[0-9a-f]{40}$'),
    payer TEXT NOT NULL CONSTRAINT ledger_entries_payer_hex CHECK (payer ~ '^0x[0-9a-f]{40}$'),
    pay_to TEXT NOT NULL CONSTRAINT ledger_entries_pay_to_hex CHECK (pay_to ~ '^0x[0-9a-f]{40}$'),
    nonce TEXT NOT NULL CONSTRAINT ledger_entries_nonce_hex CHECK (nonce ~ '^0x[0-9a-f]{64}$'),
    amount BIGINT NOT NULL CONSTRAINT ledger_entries_amount_positive CHECK (amount > 0),
    valid_before_unix_s BIGINT NOT NULL CONSTRAINT ledger_entries_valid_before_nonnegative
        CHECK (valid_before_unix_s >= 0),
    provider TEXT NOT NULL,
    route TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    mode TEXT NOT NULL CONSTRAINT ledger_entries_mode_known CHECK (mode IN ('after', 'before', 'deferred')),
    state TEXT NOT NULL CONSTRAINT ledger_entries_state_known
        CHECK (state IN ('reserved', 'forwarded', 'settling', 'settled', 'settle_failed', 'voided', 'refund_owed')),
    tx_hash TEXT NULL CONSTRAINT ledger_entries_tx_hash_hex CHECK (tx_hash ~ '^0x[0-9a-f]{64}$'),
    block_number BIGINT NULL CONSTRAINT ledger_entries_block_number_nonnegative CHECK (block_number >= 0),
    block_hash TEXT NULL CONSTRAINT ledger_entries_block_hash_hex CHECK (block_hash ~ '^0x[0-9a-f]{64}$'),
    log_index BIGINT NULL CONSTRAINT ledger_entries_log_index_nonnegative CHECK (log_index >= 0),
    upstream_status BIGINT NULL CONSTRAINT ledger_entries_upstream_status_range
        CHECK (upstream_status BETWEEN 100 AND 999),
    reason TEXT NULL,
    -- Opaque JSON the gateway needs to settle later; the ledger never parses it.
    payment TEXT NOT NULL,
    created_unix_s BIGINT NOT NULL CONSTRAINT ledger_entries_created_nonnegative CHECK (created_unix_s >= 0),
    updated_unix_s BIGINT NOT NULL CONSTRAINT ledger_entries_updated_nonnegative CHECK (updated_unix_s >= 0),
    -- refund_owed is reached from settled or (mode before, receipt still pending) from
    -- settling: it always keeps the transaction, and the block once it is known.
    CONSTRAINT ledger_entries_settling_has_tx
        CHECK (state NOT IN ('settling', 'settled', 'refund_owed') OR tx_hash IS NOT NULL),
    CONSTRAINT ledger_entries_settled_has_block
        CHECK (state <> 'settled'
            OR (block_number IS NOT NULL AND block_hash IS NOT NULL AND log_index IS NOT NULL)),
    CONSTRAINT ledger_entries_authorization_unique UNIQUE (chain_id, asset, payer, nonce)
);

-- Recovery scans (Ledger::unfinished) and the deferred settlement queue (Ledger::deferred_backlog).
-- Per-payer sums use the prefix of the UNIQUE index.
CREATE INDEX ledger_entries_unfinished ON ledger_entries (updated_unix_s)
    WHERE state IN ('reserved', 'forwarded', 'settling');
CREATE INDEX ledger_entries_deferred ON ledger_entries (created_unix_s)
    WHERE mode = 'deferred' AND state = 'forwarded';

CREATE TABLE ledger_events (
    id BIGSERIAL PRIMARY KEY,
    entry_id TEXT NOT NULL REFERENCES ledger_entries (id),
    from_state TEXT NULL CONSTRAINT ledger_events_from_state_known
        CHECK (from_state IN ('reserved', 'forwarded', 'settling', 'settled', 'settle_failed', 'voided', 'refund_owed')),
    to_state TEXT NOT NULL CONSTRAINT ledger_events_to_state_known
        CHECK (to_state IN ('reserved', 'forwarded', 'settling', 'settled', 'settle_failed', 'voided', 'refund_owed')),
    cause TEXT NOT NULL CONSTRAINT ledger_events_cause_length CHECK (length(cause) BETWEEN 1 AND 64),
    detail TEXT NULL,
    -- The transaction this transition recorded (settling, settled), so replaced hashes stay on record.
    tx_hash TEXT NULL CONSTRAINT ledger_events_tx_hash_hex CHECK (tx_hash ~ '^0x[0-9a-f]{64}$'),
    at_unix_s BIGINT NOT NULL CONSTRAINT ledger_events_at_nonnegative CHECK (at_unix_s >= 0),
    -- Only the reservation has no previous state.
    CONSTRAINT ledger_events_first_is_reservation CHECK ((from_state IS NULL) = (to_state = 'reserved'))
);

CREATE INDEX ledger_events_entry ON ledger_events (entry_id, id);

CREATE TABLE leases (
    name TEXT NOT NULL PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_unix_s BIGINT NOT NULL
);

-- An entry is born reserved and is never deleted; an UPDATE must be a legal transition (the same
-- table as EntryState::can_go_to in crates/metering/src/types.rs) and leave the authorization's
-- columns alone.
CREATE FUNCTION tollgate_ledger_entries_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.state <> 'reserved' THEN
            RAISE EXCEPTION 'tollgate: a ledger entry must be inserted in state reserved (got %)', NEW.state;
        END IF;
        RETURN NEW;
    END IF;
    IF TG_OP <> 'UPDATE' THEN
        -- Deleting an entry would also delete the double-spend guard for its authorization.
        RAISE EXCEPTION 'tollgate: ledger entries are never deleted (% on ledger_entries)', TG_OP;
    END IF;
    IF NEW.id IS DISTINCT FROM OLD.id
        OR NEW.chain_id IS DISTINCT FROM OLD.chain_id
        OR NEW.asset IS DISTINCT FROM OLD.asset
        OR NEW.payer IS DISTINCT FROM OLD.payer
        OR NEW.pay_to IS DISTINCT FROM OLD.pay_to
        OR NEW.nonce IS DISTINCT FROM OLD.nonce
        OR NEW.amount IS DISTINCT FROM OLD.amount
        OR NEW.valid_before_unix_s IS DISTINCT FROM OLD.valid_before_unix_s
        OR NEW.provider IS DISTINCT FROM OLD.provider
        OR NEW.route IS DISTINCT FROM OLD.route
        OR NEW.method IS DISTINCT FROM OLD.method
        OR NEW.path IS DISTINCT FROM OLD.path
        OR NEW.mode IS DISTINCT FROM OLD.mode
        OR NEW.payment IS DISTINCT FROM OLD.payment
        OR NEW.created_unix_s IS DISTINCT FROM OLD.created_unix_s
    THEN
        RAISE EXCEPTION 'tollgate: immutable ledger column changed on entry %', OLD.id;
    END IF;
    IF (OLD.state || '>' || NEW.state) NOT IN (
        'reserved>forwarded', 'reserved>settling', 'reserved>voided',
        'forwarded>settling', 'forwarded>settle_failed', 'forwarded>voided',
        'settling>settling', 'settling>settled', 'settling>settle_failed', 'settling>voided',
        'settling>refund_owed', 'settled>refund_owed')
    THEN
        RAISE EXCEPTION 'tollgate: illegal state transition % -> % on entry %', OLD.state, NEW.state, OLD.id;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER ledger_entries_guard BEFORE INSERT OR UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION tollgate_ledger_entries_guard();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_ledger_entries_guard();

CREATE FUNCTION tollgate_ledger_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'tollgate: ledger_events is append-only (% rejected)', TG_OP;
END
$$;

CREATE TRIGGER ledger_events_append_only BEFORE UPDATE OR DELETE ON ledger_events
    FOR EACH ROW EXECUTE FUNCTION tollgate_ledger_events_append_only();
CREATE TRIGGER ledger_events_no_truncate BEFORE TRUNCATE ON ledger_events
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_ledger_events_append_only();
