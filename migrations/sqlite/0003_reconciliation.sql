-- Reconciliation of on-chain settlement against the ledger (crates/metering/src/reconcile.rs).
-- Same semantics as ../postgres/0003_reconciliation.sql; keep the two in step.
--
-- A run records its range, its cursor (the last block fully reconciled: confirmed and checked)
-- and its counts and totals; its exceptions (every item not matched) are kept with it. Amounts
-- are decimal TEXT: on-chain values are uint256 and sums may exceed 64 bits. Runs, exceptions
-- and notes are append-only: a resolution is a new note, never an edit.

CREATE TABLE recon_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chain_id INTEGER NOT NULL CONSTRAINT recon_runs_chain_id_positive CHECK (chain_id > 0),
    asset TEXT NOT NULL CONSTRAINT recon_runs_asset_hex
        CHECK (length(asset) = 42 AND substr(asset, 1, 2) = '0x' AND substr(asset, 3) NOT GLOB '*[^0-9a-f]*'),
    from_block INTEGER NOT NULL CONSTRAINT recon_runs_from_nonnegative CHECK (from_block >= 0),
    to_block INTEGER NOT NULL,
    cursor_block INTEGER NULL,
    started_unix_s INTEGER NOT NULL CONSTRAINT recon_runs_started_nonnegative CHECK (started_unix_s >= 0),
    finished_unix_s INTEGER NOT NULL,
    n_matched INTEGER NOT NULL CHECK (n_matched >= 0),
    n_ledger_settled_missing_onchain INTEGER NOT NULL CHECK (n_ledger_settled_missing_onchain >= 0),
    n_onchain_missing_in_ledger INTEGER NOT NULL CHECK (n_onchain_missing_in_ledger >= 0),
    n_amount_mismatch INTEGER NOT NULL CHECK (n_amount_mismatch >= 0),
    n_payee_mismatch INTEGER NOT NULL CHECK (n_payee_mismatch >= 0),
    n_unconfirmed INTEGER NOT NULL CHECK (n_unconfirmed >= 0),
    n_reorged INTEGER NOT NULL CHECK (n_reorged >= 0),
    chain_total TEXT NOT NULL CONSTRAINT recon_runs_chain_total_decimal
        CHECK (length(chain_total) BETWEEN 1 AND 78 AND chain_total NOT GLOB '*[^0-9]*'),
    ledger_total TEXT NOT NULL CONSTRAINT recon_runs_ledger_total_decimal
        CHECK (length(ledger_total) BETWEEN 1 AND 78 AND ledger_total NOT GLOB '*[^0-9]*'),
    matched_total TEXT NOT NULL CONSTRAINT recon_runs_matched_total_decimal
        CHECK (length(matched_total) BETWEEN 1 AND 78 AND matched_total NOT GLOB '*[^0-9]*'),
    tie_out_holds INTEGER NOT NULL CHECK (tie_out_holds IN (0, 1)),
    CONSTRAINT recon_runs_range CHECK (to_block >= from_block),
    CONSTRAINT recon_runs_cursor_in_range CHECK (cursor_block IS NULL OR cursor_block BETWEEN from_block AND to_block),
    CONSTRAINT recon_runs_finished_after_start CHECK (finished_unix_s >= started_unix_s)
) STRICT;

CREATE INDEX recon_runs_scope ON recon_runs (chain_id, asset, id);

CREATE TABLE recon_exceptions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES recon_runs (id),
    class TEXT NOT NULL CONSTRAINT recon_exceptions_class_known
        CHECK (class IN ('ledger_settled_missing_onchain', 'onchain_missing_in_ledger', 'amount_mismatch',
            'payee_mismatch', 'unconfirmed', 'reorged')),
    payer TEXT NOT NULL CONSTRAINT recon_exceptions_payer_hex
        CHECK (length(payer) = 42 AND substr(payer, 1, 2) = '0x' AND substr(payer, 3) NOT GLOB '*[^0-9a-f]*'),
    pay_to TEXT NOT NULL CONSTRAINT recon_exceptions_pay_to_hex
        CHECK (length(pay_to) = 42 AND substr(pay_to, 1, 2) = '0x' AND substr(pay_to, 3) NOT GLOB '*[^0-9a-f]*'),
    chain_to TEXT NULL CONSTRAINT recon_exceptions_chain_to_hex
        CHECK (chain_to IS NULL OR (length(chain_to) = 42 AND substr(chain_to, 1, 2) = '0x'
            AND substr(chain_to, 3) NOT GLOB '*[^0-9a-f]*')),
    nonce TEXT NULL CONSTRAINT recon_exceptions_nonce_hex
        CHECK (nonce IS NULL OR (length(nonce) = 66 AND substr(nonce, 1, 2) = '0x'
            AND substr(nonce, 3) NOT GLOB '*[^0-9a-f]*')),
    tx_hash TEXT NULL CONSTRAINT recon_exceptions_tx_hash_hex
        CHECK (tx_hash IS NULL OR (length(tx_hash) = 66 AND substr(tx_hash, 1, 2) = '0x'
            AND substr(tx_hash, 3) NOT GLOB '*[^0-9a-f]*')),
    block_number INTEGER NULL CHECK (block_number IS NULL OR block_number >= 0),
    log_index INTEGER NULL CHECK (log_index IS NULL OR log_index >= 0),
    entry_id TEXT NULL REFERENCES ledger_entries (id),
    amount_ledger TEXT NULL CONSTRAINT recon_exceptions_amount_ledger_decimal
        CHECK (amount_ledger IS NULL OR (length(amount_ledger) BETWEEN 1 AND 78
            AND amount_ledger NOT GLOB '*[^0-9]*')),
    amount_chain TEXT NULL CONSTRAINT recon_exceptions_amount_chain_decimal
        CHECK (amount_chain IS NULL OR (length(amount_chain) BETWEEN 1 AND 78 AND amount_chain NOT GLOB '*[^0-9]*'))
) STRICT;

CREATE INDEX recon_exceptions_run ON recon_exceptions (run_id, id);

CREATE TABLE recon_notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    exception_id INTEGER NOT NULL REFERENCES recon_exceptions (id),
    who TEXT NOT NULL CONSTRAINT recon_notes_who_length CHECK (length(who) BETWEEN 1 AND 256),
    why TEXT NOT NULL CONSTRAINT recon_notes_why_length CHECK (length(why) BETWEEN 1 AND 2048),
    at_unix_s INTEGER NOT NULL CHECK (at_unix_s >= 0)
) STRICT;

CREATE INDEX recon_notes_exception ON recon_notes (exception_id, id);

CREATE TRIGGER recon_runs_no_update BEFORE UPDATE ON recon_runs
BEGIN
    SELECT RAISE(ABORT, 'tollgate: recon_runs is append-only');
END;
CREATE TRIGGER recon_runs_no_delete BEFORE DELETE ON recon_runs
BEGIN
    SELECT RAISE(ABORT, 'tollgate: recon_runs is append-only');
END;
CREATE TRIGGER recon_exceptions_no_update BEFORE UPDATE ON recon_exceptions
BEGIN
    SELECT RAISE(ABORT, 'tollgate: recon_exceptions is append-only');
END;
CREATE TRIGGER recon_exceptions_no_delete BEFORE DELETE ON recon_exceptions
BEGIN
    SELECT RAISE(ABORT, 'tollgate: recon_exceptions is append-only');
END;
CREATE TRIGGER recon_notes_no_update BEFORE UPDATE ON recon_notes
BEGIN
    SELECT RAISE(ABORT, 'tollgate: recon_notes is append-only');
END;
CREATE TRIGGER recon_notes_no_delete BEFORE DELETE ON recon_notes
BEGIN
    SELECT RAISE(ABORT, 'tollgate: recon_notes is append-only');
END;

-- Reconciliation loads settled entries of one payee by block (Ledger::settled_entries).
CREATE INDEX ledger_entries_settled_by_block ON ledger_entries (chain_id, asset, pay_to, block_number)
    WHERE state IN ('settling', 'settled', 'refund_owed');
