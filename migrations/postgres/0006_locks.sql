-- Admin locks: a locked user gets no token until an admin lifts the lock, whatever the
-- directory says. Part of the system of record: the vault's projection is derived from it.
CREATE TABLE user_locks (
    org_id    TEXT   NOT NULL,
    user_id   TEXT   NOT NULL,
    reason    TEXT   NOT NULL,
    actor     TEXT   NOT NULL,
    at_ms     BIGINT NOT NULL,
    PRIMARY KEY (org_id, user_id)
);

-- How far the reconciler has followed each org's directory events.
CREATE TABLE reconcile_cursors (
    org_id TEXT   NOT NULL PRIMARY KEY,
    seq    BIGINT NOT NULL
);
