-- The tollgate ledger on SQLite. Same semantics as ../postgres/0001_ledger.sql; keep the two in step.
--
-- Every money invariant is held here as well as in Rust (crates/metering/src/types.rs):
-- * UNIQUE (chain_id, asset, payer, nonce) is the double-spend guard across gateway replicas. The
--   CHECKs on lowercase 0x-hex matter for it: a checksummed spelling of the same address would
--   otherwise slip past the constraint.
-- * amount > 0; a settling/settled entry has its transaction, a settled one its block and log.
-- * A trigger allows only the legal state transitions, keeps the authorization's columns immutable
--   and forbids deleting entries; ledger_events is append-only.
-- STRICT tables: SQLite would otherwise store any value in any column (e.g. '1.5' as an amount).

CREATE TABLE ledger_entries (
    id TEXT NOT NULL PRIMARY KEY
        CONSTRAINT ledger_entries_id_hex CHECK (length(id) = 32 AND id NOT GLOB '*[^0-9a-f]*'),
    chain_id INTEGER NOT NULL CONSTRAINT ledger_entries_chain_id_positive CHECK (chain_id > 0),
    asset TEXT NOT NULL CONSTRAINT ledger_entries_asset_hex
        CHECK (length(asset) = 42 AND substr(asset, 1, 2) = '0x' AND substr(asset, 3) NOT GLOB '*[^0-9a-f]*'),
    payer TEXT NOT NULL CONSTRAINT ledger_entries_payer_hex
        CHECK (length(payer) = 42 AND substr(payer, 1, 2) = '0x' AND substr(payer, 3) NOT GLOB '*[^0-9a-f]*'),
    pay_to TEXT NOT NULL CONSTRAINT ledger_entries_pay_to_hex
        CHECK (length(pay_to) = 42 AND substr(pay_to, 1, 2) = '0x' AND substr(pay_to, 3) NOT GLOB '*[^0-9a-f]*'),
    nonce TEXT NOT NULL CONSTRAINT ledger_entries_nonce_hex
        CHECK (length(nonce) = 66 AND substr(nonce, 1, 2) = '0x' AND substr(nonce, 3) NOT GLOB '*[^0-9a-f]*'),
    amount INTEGER NOT NULL CONSTRAINT ledger_entries_amount_positive CHECK (amount > 0),
    valid_before_unix_s INTEGER NOT NULL CONSTRAINT ledger_entries_valid_before_nonnegative
        CHECK (valid_before_unix_s >= 0),
    provider TEXT NOT NULL,
    route TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    mode TEXT NOT NULL CONSTRAINT ledger_entries_mode_known CHECK (mode IN ('after', 'before', 'deferred')),
    state TEXT NOT NULL CONSTRAINT ledger_entries_state_known
        CHECK (state IN ('reserved', 'forwarded', 'settling', 'settled', 'settle_failed', 'voided', 'refund_owed')),
    tx_hash TEXT NULL CONSTRAINT ledger_entries_tx_hash_hex
        CHECK (tx_hash IS NULL OR (length(tx_hash) = 66 AND substr(tx_hash, 1, 2) = '0x'
            AND substr(tx_hash, 3) NOT GLOB '*[^0-9a-f]*')),
    block_number INTEGER NULL CONSTRAINT ledger_entries_block_number_nonnegative
        CHECK (block_number IS NULL OR block_number >= 0),
    block_hash TEXT NULL CONSTRAINT ledger_entries_block_hash_hex
        CHECK (block_hash IS NULL OR (length(block_hash) = 66 AND substr(block_hash, 1, 2) = '0x'
            AND substr(block_hash, 3) NOT GLOB '*[^0-9a-f]*')),
    log_index INTEGER NULL CONSTRAINT ledger_entries_log_index_nonnegative CHECK (log_index IS NULL OR log_index >= 0),
    upstream_status INTEGER NULL CONSTRAINT ledger_entries_upstream_status_range
        CHECK (upstream_status IS NULL OR upstream_status BETWEEN 100 AND 999),
    reason TEXT NULL,
    -- Opaque JSON the gateway needs to settle later; the ledger never parses it.
    payment TEXT NOT NULL,
    created_unix_s INTEGER NOT NULL CONSTRAINT ledger_entries_created_nonnegative CHECK (created_unix_s >= 0),
    updated_unix_s INTEGER NOT NULL CONSTRAINT ledger_entries_updated_nonnegative CHECK (updated_unix_s >= 0),
    -- refund_owed is reached from settled or (mode before, receipt still pending) from
    -- settling: it always keeps the transaction, and the block once it is known.
    CONSTRAINT ledger_entries_settling_has_tx
        CHECK (state NOT IN ('settling', 'settled', 'refund_owed') OR tx_hash IS NOT NULL),
    CONSTRAINT ledger_entries_settled_has_block
        CHECK (state <> 'settled'
            OR (block_number IS NOT NULL AND block_hash IS NOT NULL AND log_index IS NOT NULL)),
    CONSTRAINT ledger_entries_authorization_unique UNIQUE (chain_id, asset, payer, nonce)
) STRICT;

-- Recovery scans (Ledger::unfinished) and the deferred settlement queue (Ledger::deferred_backlog).
-- Per-payer sums use the prefix of the UNIQUE index.
CREATE INDEX ledger_entries_unfinished ON ledger_entries (updated_unix_s)
    WHERE state IN ('reserved', 'forwarded', 'settling');
CREATE INDEX ledger_entries_deferred ON ledger_entries (created_unix_s)
    WHERE mode = 'deferred' AND state = 'forwarded';

CREATE TABLE ledger_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_id TEXT NOT NULL REFERENCES ledger_entries (id),
    from_state TEXT NULL CONSTRAINT ledger_events_from_state_known
        CHECK (from_state IS NULL
            OR from_state IN ('reserved', 'forwarded', 'settling', 'settled', 'settle_failed', 'voided', 'refund_owed')),
    to_state TEXT NOT NULL CONSTRAINT ledger_events_to_state_known
        CHECK (to_state IN ('reserved', 'forwarded', 'settling', 'settled', 'settle_failed', 'voided', 'refund_owed')),
    cause TEXT NOT NULL CONSTRAINT ledger_events_cause_length CHECK (length(cause) BETWEEN 1 AND 64),
    detail TEXT NULL,
    -- The transaction this transition recorded (settling, settled), so replaced hashes stay on record.
    tx_hash TEXT NULL CONSTRAINT ledger_events_tx_hash_hex
        CHECK (tx_hash IS NULL OR (length(tx_hash) = 66 AND substr(tx_hash, 1, 2) = '0x'
            AND substr(tx_hash, 3) NOT GLOB '*[^0-9a-f]*')),
    at_unix_s INTEGER NOT NULL CONSTRAINT ledger_events_at_nonnegative CHECK (at_unix_s >= 0),
    -- Only the reservation has no previous state.
    CONSTRAINT ledger_events_first_is_reservation CHECK ((from_state IS NULL) = (to_state = 'reserved'))
) STRICT;

CREATE INDEX ledger_events_entry ON ledger_events (entry_id, id);

CREATE TABLE leases (
    name TEXT NOT NULL PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_unix_s INTEGER NOT NULL
) STRICT;

-- An entry is born reserved; every later state is reached through an UPDATE checked below.
CREATE TRIGGER ledger_entries_insert_guard BEFORE INSERT ON ledger_entries
WHEN NEW.state <> 'reserved'
BEGIN
    SELECT RAISE(ABORT, 'tollgate: a ledger entry must be inserted in state reserved');
END;

-- The same transition table as EntryState::can_go_to in crates/metering/src/types.rs.
CREATE TRIGGER ledger_entries_update_guard BEFORE UPDATE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'tollgate: immutable ledger column changed')
    WHERE NEW.id IS NOT OLD.id
        OR NEW.chain_id IS NOT OLD.chain_id
        OR NEW.asset IS NOT OLD.asset
        OR NEW.payer IS NOT OLD.payer
        OR NEW.pay_to IS NOT OLD.pay_to
        OR NEW.nonce IS NOT OLD.nonce
        OR NEW.amount IS NOT OLD.amount
        OR NEW.valid_before_unix_s IS NOT OLD.valid_before_unix_s
        OR NEW.provider IS NOT OLD.provider
        OR NEW.route IS NOT OLD.route
        OR NEW.method IS NOT OLD.method
        OR NEW.path IS NOT OLD.path
        OR NEW.mode IS NOT OLD.mode
        OR NEW.payment IS NOT OLD.payment
        OR NEW.created_unix_s IS NOT OLD.created_unix_s;
    SELECT RAISE(ABORT, 'tollgate: illegal state transition')
    WHERE OLD.state || '>' || NEW.state NOT IN (
        'reserved>forwarded', 'reserved>settling', 'reserved>voided',
        'forwarded>settling', 'forwarded>settle_failed', 'forwarded>voided',
        'settling>settling', 'settling>settled', 'settling>settle_failed', 'settling>voided',
        'settling>refund_owed', 'settled>refund_owed');
END;

-- Deleting an entry would also delete the double-spend guard for its authorization.
CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'tollgate: ledger entries are never deleted');
END;

CREATE TRIGGER ledger_events_no_update BEFORE UPDATE ON ledger_events
BEGIN
    SELECT RAISE(ABORT, 'tollgate: ledger_events is append-only');
END;

CREATE TRIGGER ledger_events_no_delete BEFORE DELETE ON ledger_events
BEGIN
    SELECT RAISE(ABORT, 'tollgate: ledger_events is append-only');
END;
