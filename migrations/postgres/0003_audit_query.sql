-- Audit queries by user (resource) and time stay indexed as the log grows.
CREATE INDEX audit_log_resource_idx ON audit_log (org_id, resource_id, seq);
CREATE INDEX audit_log_time_idx ON audit_log (org_id, at_ms);
