-- x402 payment-identifier (issue 19, part 3): a client's idempotency key per payer and route,
-- bound to the payment it first came with, the ledger entry that payment reserved and the
-- outcome the agent was told. Same semantics as ../sqlite/0011_payment_ids.sql.
-- * The key is (payer, route, id): the same id of another payer or route is another record.
-- * fingerprint: SHA-256 (hex) of the payment and the request it paid (the gateway computes it);
--   a record's fingerprint, entry and outcome are written once (NULL -> value, never changed;
--   the trigger below holds it), and the row is deleted only once expired or, unused, released.
-- * outcome: opaque JSON owned by the gateway (versioned); the ledger never parses it.
CREATE TABLE payment_ids (
    payer TEXT NOT NULL CONSTRAINT payment_ids_payer_hex CHECK (payer ~ '^0x[0-9a-f]{40}$'),
    route TEXT NOT NULL CONSTRAINT payment_ids_route_length CHECK (length(route) BETWEEN 1 AND 256),
    id TEXT NOT NULL CONSTRAINT payment_ids_id_format CHECK (id ~ '^[A-Za-z0-9_-]{16,128}$'),
    fingerprint TEXT NOT NULL CONSTRAINT payment_ids_fingerprint_hex CHECK (fingerprint ~ '^[0-9a-f]{64}$'),
    entry_id TEXT NULL REFERENCES ledger_entries (id),
    outcome TEXT NULL,
    created_unix_s BIGINT NOT NULL CONSTRAINT payment_ids_created_nonnegative CHECK (created_unix_s >= 0),
    expires_unix_s BIGINT NOT NULL CONSTRAINT payment_ids_expiry_after_creation
        CHECK (expires_unix_s >= created_unix_s),
    CONSTRAINT payment_ids_outcome_has_entry CHECK (outcome IS NULL OR entry_id IS NOT NULL),
    PRIMARY KEY (payer, route, id)
);

CREATE INDEX payment_ids_expiry ON payment_ids (expires_unix_s);

-- A record in use is never rewritten: its entry and outcome go from NULL to a value once. A
-- record is replaced whole (its id reused) only when it expired or was claimed and never used
-- (no entry), which the claim's upsert checks; this trigger holds the rest.
CREATE FUNCTION payment_ids_write_once() RETURNS trigger AS $$
BEGIN
    IF OLD.entry_id IS NOT NULL AND OLD.expires_unix_s > NEW.created_unix_s
        AND (NEW.entry_id IS DISTINCT FROM OLD.entry_id OR NEW.fingerprint <> OLD.fingerprint
            OR (OLD.outcome IS NOT NULL AND NEW.outcome IS DISTINCT FROM OLD.outcome)) THEN
        RAISE EXCEPTION 'payment_ids: an id in use is written once';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER payment_ids_write_once BEFORE UPDATE ON payment_ids
    FOR EACH ROW EXECUTE FUNCTION payment_ids_write_once();
