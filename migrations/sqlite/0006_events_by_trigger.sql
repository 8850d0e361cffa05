-- Every state change writes its event in the same statement: the reservation's INSERT and each
-- transition's UPDATE carry the event's cause and detail (`last_cause`, `last_detail`), and these
-- triggers append the event. A ledger commit is then one statement (fewer round trips on the hot
-- path), and no state changes without an event. Every UPDATE must set `last_cause` (the Rust
-- code always does): one that did not would record the previous cause again, and a row
-- inserted without a cause fails on the event's NOT NULL cause.
-- Same semantics as ../postgres/0006_events_by_trigger.sql.

ALTER TABLE ledger_entries ADD COLUMN last_cause TEXT NULL;
ALTER TABLE ledger_entries ADD COLUMN last_detail TEXT NULL;

CREATE TRIGGER ledger_entries_event_on_insert AFTER INSERT ON ledger_entries
BEGIN
    INSERT INTO ledger_events (entry_id, from_state, to_state, cause, detail, tx_hash, at_unix_s)
    VALUES (NEW.id, NULL, NEW.state, NEW.last_cause, NEW.last_detail, NULL, NEW.created_unix_s);
END;

-- The transaction a transition records (settling, settled; also the one kept when a reorged
-- entry goes back to settling), so replaced hashes stay on record.
CREATE TRIGGER ledger_entries_event_on_update AFTER UPDATE ON ledger_entries
BEGIN
    INSERT INTO ledger_events (entry_id, from_state, to_state, cause, detail, tx_hash, at_unix_s)
    VALUES (NEW.id, OLD.state, NEW.state, NEW.last_cause, NEW.last_detail,
        CASE WHEN NEW.state IN ('settling', 'settled') THEN NEW.tx_hash END, NEW.updated_unix_s);
END;
