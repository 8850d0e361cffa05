-- x402 payment-identifier (issue 19, part 3): a client's idempotency key per payer and route,
-- bound to the payment it first came with, the ledger entry that payment reserved and the
-- outcome the agent was told. Same semantics as ../postgres/0011_payment_ids.sql.
-- * The key is (payer, route, id): the same id of another payer or route is another record.
-- * fingerprint: SHA-256 (hex) of the payment and the request it paid (the gateway computes it);
--   a record's fingerprint, entry and outcome are written once (NULL -> value, never changed;
--   the trigger below holds it), and the row is deleted only once expired or, unused, released.
-- * outcome: opaque JSON owned by the gateway (versioned); the ledger never parses it.
CREATE TABLE payment_ids (
    payer TEXT NOT NULL CONSTRAINT payment_ids_payer_hex
        CHECK (length(payer) = 42 AND substr(payer, 1, 2) = '0x' AND substr(payer, 3) NOT GLOB '*[^0-9a-f]*'),
    route TEXT NOT NULL CONSTRAINT payment_ids_route_length CHECK (length(route) BETWEEN 1 AND 256),
    id TEXT NOT NULL CONSTRAINT payment_ids_id_format
        CHECK (length(id) BETWEEN 16 AND 128 AND id NOT GLOB '*[^A-Za-z0-9_-]*'),
    fingerprint TEXT NOT NULL CONSTRAINT payment_ids_fingerprint_hex
        CHECK (length(fingerprint) = 64 AND fingerprint NOT GLOB '*[^0-9a-f]*'),
    entry_id TEXT NULL REFERENCES ledger_entries (id),
    outcome TEXT NULL,
    created_unix_s INTEGER NOT NULL CONSTRAINT payment_ids_created_nonnegative CHECK (created_unix_s >= 0),
    expires_unix_s INTEGER NOT NULL CONSTRAINT payment_ids_expiry_after_creation
        CHECK (expires_unix_s >= created_unix_s),
    CONSTRAINT payment_ids_outcome_has_entry CHECK (outcome IS NULL OR entry_id IS NOT NULL),
    PRIMARY KEY (payer, route, id)
) STRICT;

CREATE INDEX payment_ids_expiry ON payment_ids (expires_unix_s);

-- A record in use is never rewritten: its entry and outcome go from NULL to a value once. A
-- record is replaced whole (its id reused) only when it expired or was claimed and never used
-- (no entry), which the claim's upsert checks; this trigger holds the rest.
CREATE TRIGGER payment_ids_write_once BEFORE UPDATE ON payment_ids
WHEN OLD.entry_id IS NOT NULL AND OLD.expires_unix_s > NEW.created_unix_s
    AND (NEW.entry_id IS NOT OLD.entry_id OR NEW.fingerprint <> OLD.fingerprint
        OR (OLD.outcome IS NOT NULL AND NEW.outcome IS NOT OLD.outcome))
BEGIN
    SELECT RAISE(ABORT, 'payment_ids: an id in use is written once');
END;
