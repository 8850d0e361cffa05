-- Soft delete of providers and endpoints (docs/admin-api.md, "Deleting"). Same semantics as
-- ../postgres/0009_soft_delete.sql; keep the two in step.
--
-- A deleted provider or endpoint keeps its row, its price versions, its credentials and every
-- ledger entry and audit record that names it; it is only no longer served (agents get 404)
-- and no longer listed. `deleted_unix_s` is when; NULL while it is live. Putting a deleted
-- endpoint again through the admin API brings the same row back (its price history goes on).
-- Rows are never removed: the triggers below refuse DELETE.

ALTER TABLE providers ADD COLUMN deleted_unix_s INTEGER NULL;
ALTER TABLE endpoints ADD COLUMN deleted_unix_s INTEGER NULL;

CREATE TRIGGER providers_no_delete BEFORE DELETE ON providers
BEGIN
    SELECT RAISE(ABORT, 'tollgate: providers are deleted softly (deleted_unix_s), never removed');
END;
CREATE TRIGGER endpoints_no_delete BEFORE DELETE ON endpoints
BEGIN
    SELECT RAISE(ABORT, 'tollgate: endpoints are deleted softly (deleted_unix_s), never removed');
END;
