-- Every state change writes its event in the same statement (see ../sqlite/0006_events_by_trigger.sql):
-- the INSERT and each UPDATE carry the cause and detail, this trigger appends the event.

ALTER TABLE ledger_entries ADD COLUMN last_cause TEXT NULL;
ALTER TABLE ledger_entries ADD COLUMN last_detail TEXT NULL;

CREATE FUNCTION tollgate_ledger_entries_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO ledger_events (entry_id, from_state, to_state, cause, detail, tx_hash, at_unix_s)
        VALUES (NEW.id, NULL, NEW.state, NEW.last_cause, NEW.last_detail, NULL, NEW.created_unix_s);
    ELSE
        INSERT INTO ledger_events (entry_id, from_state, to_state, cause, detail, tx_hash, at_unix_s)
        VALUES (NEW.id, OLD.state, NEW.state, NEW.last_cause, NEW.last_detail,
            CASE WHEN NEW.state IN ('settling', 'settled') THEN NEW.tx_hash END, NEW.updated_unix_s);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER ledger_entries_event AFTER INSERT OR UPDATE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION tollgate_ledger_entries_event();
