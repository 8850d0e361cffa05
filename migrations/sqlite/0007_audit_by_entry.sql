-- The recovery sweep looks for ended ledger entries without an audit record (their record was
-- still queued when a process died): Ledger::entries_without_audit. Same as ../postgres/0007.
CREATE INDEX audit_log_entry ON audit_log (entry_id);
CREATE INDEX ledger_entries_updated ON ledger_entries (updated_unix_s);
