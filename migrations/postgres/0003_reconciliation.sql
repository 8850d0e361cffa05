-- Reconciliation of on-chain settlement against the ledger (crates/metering/src/reconcile.rs).
-- Same semantics as ../sqlite/0003_reconciliation.sql; keep the two in step.
--
-- A run records its range, its cursor (the last block fully reconciled: confirmed and checked)
-- and its counts and totals; its exceptions (every item not matched) are kept with it. Amounts
-- are decimal TEXT: on-chain values are uint256 and sums may exceed 64 bits. Runs, exceptions
-- and notes are append-only: a resolution is a new note, never an edit.

CREATE TABLE recon_runs (
    id BIGSERIAL PRIMARY KEY,
    chain_id BIGINT NOT NULL CONSTRAINT recon_runs_chain_id_positive CHECK (chain_id > 0),
    asset TEXT NOT NULL CONSTRAINT recon_runs_asset_hex CHECK (asset ~ '^0x[0-9a-f]{40}$'),
    from_block BIGINT NOT NULL CONSTRAINT recon_runs_from_nonnegative CHECK (from_block >= 0),
    to_block BIGINT NOT NULL,
    cursor_block BIGINT NULL,
    started_unix_s BIGINT NOT NULL CONSTRAINT recon_runs_started_nonnegative CHECK (started_unix_s >= 0),
    finished_unix_s BIGINT NOT NULL,
    n_matched BIGINT NOT NULL CHECK (n_matched >= 0),
    n_ledger_settled_missing_onchain BIGINT NOT NULL CHECK (n_ledger_settled_missing_onchain >= 0),
    n_onchain_missing_in_ledger BIGINT NOT NULL CHECK (n_onchain_missing_in_ledger >= 0),
    n_amount_mismatch BIGINT NOT NULL CHECK (n_amount_mismatch >= 0),
    n_payee_mismatch BIGINT NOT NULL CHECK (n_payee_mismatch >= 0),
    n_unconfirmed BIGINT NOT NULL CHECK (n_unconfirmed >= 0),
    n_reorged BIGINT NOT NULL CHECK (n_reorged >= 0),
    chain_total TEXT NOT NULL CONSTRAINT recon_runs_chain_total_decimal CHECK (chain_total ~ '^[0-9]{1,78}$'),
    ledger_total TEXT NOT NULL CONSTRAINT recon_runs_ledger_total_decimal CHECK (ledger_total ~ '^[0-9]{1,78}$'),
    matched_total TEXT NOT NULL CONSTRAINT recon_runs_matched_total_decimal CHECK (matched_total ~ '^[0-9]{1,78}$'),
    tie_out_holds BIGINT NOT NULL CHECK (tie_out_holds IN (0, 1)),
    CONSTRAINT recon_runs_range CHECK (to_block >= from_block),
    CONSTRAINT recon_runs_cursor_in_range CHECK (cursor_block BETWEEN from_block AND to_block),
    CONSTRAINT recon_runs_finished_after_start CHECK (finished_unix_s >= started_unix_s)
);

CREATE INDEX recon_runs_scope ON recon_runs (chain_id, asset, id);

CREATE TABLE recon_exceptions (
    id BIGSERIAL PRIMARY KEY,
    run_id BIGINT NOT NULL REFERENCES recon_runs (id),
    class TEXT NOT NULL CONSTRAINT recon_exceptions_class_known
        CHECK (class IN ('ledger_settled_missing_onchain', 'onchain_missing_in_ledger', 'amount_mismatch',
            'payee_mismatch', 'unconfirmed', 'reorged')),
    payer TEXT NOT NULL CONSTRAINT recon_exceptions_payer_hex CHECK (payer ~ '^0x[0-9a-f]{40}$'),
    pay_to TEXT NOT NULL CONSTRAINT recon_exceptions_pay_to_hex CHECK (pay_to ~ '^0x[0-9a-f]{40}$'),
    chain_to TEXT NULL CONSTRAINT recon_exceptions_chain_to_hex CHECK (chain_to ~ '^0x[0-9a-f]{40}$'),
    nonce TEXT NULL CONSTRAINT recon_exceptions_nonce_hex CHECK (nonce ~ '^0x[0-9a-f]{64}$'),
    tx_hash TEXT NULL CONSTRAINT recon_exceptions_tx_hash_hex CHECK (tx_hash ~ '^0x[0-9a-f]{64}$'),
    block_number BIGINT NULL CHECK (block_number >= 0),
    log_index BIGINT NULL CHECK (log_index >= 0),
    entry_id TEXT NULL REFERENCES ledger_entries (id),
    amount_ledger TEXT NULL CONSTRAINT recon_exceptions_amount_ledger_decimal
        CHECK (amount_ledger ~ '^[0-9]{1,78}$'),
    amount_chain TEXT NULL CONSTRAINT recon_exceptions_amount_chain_decimal CHECK (amount_chain ~ '^[0-9]{1,78}$')
);

CREATE INDEX recon_exceptions_run ON recon_exceptions (run_id, id);

CREATE TABLE recon_notes (
    id BIGSERIAL PRIMARY KEY,
    exception_id BIGINT NOT NULL REFERENCES recon_exceptions (id),
    who TEXT NOT NULL CONSTRAINT recon_notes_who_length CHECK (length(who) BETWEEN 1 AND 256),
    why TEXT NOT NULL CONSTRAINT recon_notes_why_length CHECK (length(why) BETWEEN 1 AND 2048),
    at_unix_s BIGINT NOT NULL CHECK (at_unix_s >= 0)
);

CREATE INDEX recon_notes_exception ON recon_notes (exception_id, id);

CREATE FUNCTION tollgate_recon_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'tollgate: % is append-only (% rejected)', TG_TABLE_NAME, TG_OP;
END
$$;

CREATE TRIGGER recon_runs_append_only BEFORE UPDATE OR DELETE ON recon_runs
    FOR EACH ROW EXECUTE FUNCTION tollgate_recon_append_only();
CREATE TRIGGER recon_runs_no_truncate BEFORE TRUNCATE ON recon_runs
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_recon_append_only();
CREATE TRIGGER recon_exceptions_append_only BEFORE UPDATE OR DELETE ON recon_exceptions
    FOR EACH ROW EXECUTE FUNCTION tollgate_recon_append_only();
CREATE TRIGGER recon_exceptions_no_truncate BEFORE TRUNCATE ON recon_exceptions
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_recon_append_only();
CREATE TRIGGER recon_notes_append_only BEFORE UPDATE OR DELETE ON recon_notes
    FOR EACH ROW EXECUTE FUNCTION tollgate_recon_append_only();
CREATE TRIGGER recon_notes_no_truncate BEFORE TRUNCATE ON recon_notes
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_recon_append_only();

-- Reconciliation loads settled entries of one payee by block (Ledger::settled_entries).
CREATE INDEX ledger_entries_settled_by_block ON ledger_entries (chain_id, asset, pay_to, block_number)
    WHERE state IN ('settling', 'settled', 'refund_owed');
