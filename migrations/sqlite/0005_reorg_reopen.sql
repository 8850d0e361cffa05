-- A settlement whose block was reorged away goes back to `settling` (its block data cleared)
-- to be re-checked: Ledger::reopen_reorged, called by reconciliation. Same semantics as
-- ../postgres/0005_reorg_reopen.sql. Otherwise the guard of 0001, with the columns 0004 added
-- (price version, credential) immutable too.

DROP TRIGGER ledger_entries_update_guard;

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
        OR NEW.created_unix_s IS NOT OLD.created_unix_s
        OR NEW.price_version IS NOT OLD.price_version
        OR NEW.credential IS NOT OLD.credential
        OR NEW.credential_version IS NOT OLD.credential_version;
    SELECT RAISE(ABORT, 'tollgate: illegal state transition')
    WHERE OLD.state || '>' || NEW.state NOT IN (
        'reserved>forwarded', 'reserved>settling', 'reserved>voided',
        'forwarded>settling', 'forwarded>settle_failed', 'forwarded>voided',
        'settling>settling', 'settling>settled', 'settling>settle_failed', 'settling>voided',
        'settling>refund_owed', 'settled>refund_owed', 'settled>settling');
    SELECT RAISE(ABORT, 'tollgate: settled -> settling only clears a reorged block')
    WHERE OLD.state = 'settled' AND NEW.state = 'settling'
        AND (NEW.block_number IS NOT NULL OR NEW.block_hash IS NOT NULL OR NEW.log_index IS NOT NULL);
END;
