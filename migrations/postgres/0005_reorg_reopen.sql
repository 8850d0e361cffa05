-- A settlement whose block was reorged away goes back to `settling` (its block data cleared)
-- to be re-checked: Ledger::reopen_reorged, called by reconciliation. Same semantics as
-- ../sqlite/0005_reorg_reopen.sql. Otherwise the guard of 0001, with the columns 0004 added
-- (price version, credential) immutable too.

CREATE OR REPLACE FUNCTION tollgate_ledger_entries_guard() RETURNS trigger LANGUAGE plpgsql AS $$
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
        OR NEW.price_version IS DISTINCT FROM OLD.price_version
        OR NEW.credential IS DISTINCT FROM OLD.credential
        OR NEW.credential_version IS DISTINCT FROM OLD.credential_version
    THEN
        RAISE EXCEPTION 'tollgate: immutable ledger column changed on entry %', OLD.id;
    END IF;
    IF (OLD.state || '>' || NEW.state) NOT IN (
        'reserved>forwarded', 'reserved>settling', 'reserved>voided',
        'forwarded>settling', 'forwarded>settle_failed', 'forwarded>voided',
        'settling>settling', 'settling>settled', 'settling>settle_failed', 'settling>voided',
        'settling>refund_owed', 'settled>refund_owed', 'settled>settling')
    THEN
        RAISE EXCEPTION 'tollgate: illegal state transition % -> % on entry %', OLD.state, NEW.state, OLD.id;
    END IF;
    IF OLD.state = 'settled' AND NEW.state = 'settling'
        AND (NEW.block_number IS NOT NULL OR NEW.block_hash IS NOT NULL OR NEW.log_index IS NOT NULL)
    THEN
        RAISE EXCEPTION 'tollgate: settled -> settling only clears a reorged block (entry %)', OLD.id;
    END IF;
    RETURN NEW;
END
$$;
