-- Ledger::pending_spend sums one payer's unfinished entries on every deferred-mode request.
-- Through the UNIQUE index prefix it would read the payer's whole history; this partial index
-- holds only the unfinished entries, so its cost follows what is pending. The WHERE clause
-- must match the query's state list for the planner to use it.
CREATE INDEX ledger_entries_pending_by_payer ON ledger_entries (chain_id, asset, payer)
    WHERE state IN ('reserved', 'forwarded', 'settling');
