-- Soft delete of providers and endpoints (docs/admin-api.md, "Deleting"). Same semantics as
-- ../sqlite/0009_soft_delete.sql; keep the two in step.
--
-- A deleted provider or endpoint keeps its row, its price versions, its credentials and every
-- ledger entry and audit record that names it; it is only no longer served (agents get 404)
-- and no longer listed. `deleted_unix_s` is when; NULL while it is live. Putting a deleted
-- endpoint again through the admin API brings the same row back (its price history goes on).
-- Rows are never removed: the triggers below refuse DELETE and TRUNCATE.

ALTER TABLE providers ADD COLUMN deleted_unix_s BIGINT NULL;
ALTER TABLE endpoints ADD COLUMN deleted_unix_s BIGINT NULL;

CREATE FUNCTION tollgate_soft_delete_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'tollgate: % rows are deleted softly (deleted_unix_s), never removed (% rejected)',
        TG_TABLE_NAME, TG_OP;
END
$$;

CREATE TRIGGER providers_no_delete BEFORE DELETE ON providers
    FOR EACH ROW EXECUTE FUNCTION tollgate_soft_delete_only();
CREATE TRIGGER providers_no_truncate BEFORE TRUNCATE ON providers
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_soft_delete_only();
CREATE TRIGGER endpoints_no_delete BEFORE DELETE ON endpoints
    FOR EACH ROW EXECUTE FUNCTION tollgate_soft_delete_only();
CREATE TRIGGER endpoints_no_truncate BEFORE TRUNCATE ON endpoints
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_soft_delete_only();
