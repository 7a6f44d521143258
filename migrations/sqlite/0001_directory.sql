-- auth-broker system of record (SQLite). Timestamps are Unix milliseconds (INTEGER) and
-- flags are 0/1 INTEGERs so that the same SQL runs on PostgreSQL and SQLite.

CREATE TABLE orgs (
    id           TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    created_ms   INTEGER NOT NULL
);

CREATE TABLE credentials (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES orgs (id),
    kind        TEXT NOT NULL CHECK (kind IN ('scim', 'admin', 'gateway')),
    name        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    CONSTRAINT credentials_secret_hash_uq UNIQUE (secret_hash)
);

CREATE TABLE scim_users (
    org_id          TEXT   NOT NULL REFERENCES orgs (id),
    id              TEXT   NOT NULL,
    user_name       TEXT   NOT NULL,
    user_name_lower TEXT   NOT NULL,
    external_id     TEXT,
    active          INTEGER NOT NULL,
    display_name    TEXT,
    email_lower     TEXT,
    attributes      TEXT   NOT NULL,
    version         INTEGER NOT NULL,
    created_ms      INTEGER NOT NULL,
    modified_ms     INTEGER NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE UNIQUE INDEX scim_users_user_name_uq ON scim_users (org_id, user_name_lower);
CREATE INDEX scim_users_external_id_idx ON scim_users (org_id, external_id);
CREATE INDEX scim_users_email_idx ON scim_users (org_id, email_lower);
CREATE INDEX scim_users_created_idx ON scim_users (org_id, created_ms, id);
CREATE INDEX scim_users_modified_idx ON scim_users (org_id, modified_ms, id);

CREATE TABLE scim_groups (
    org_id             TEXT   NOT NULL REFERENCES orgs (id),
    id                 TEXT   NOT NULL,
    display_name       TEXT   NOT NULL,
    display_name_lower TEXT   NOT NULL,
    external_id        TEXT,
    attributes         TEXT   NOT NULL,
    version            INTEGER NOT NULL,
    created_ms         INTEGER NOT NULL,
    modified_ms        INTEGER NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE INDEX scim_groups_display_name_idx ON scim_groups (org_id, display_name_lower);
CREATE INDEX scim_groups_external_id_idx ON scim_groups (org_id, external_id);
CREATE INDEX scim_groups_created_idx ON scim_groups (org_id, created_ms, id);
CREATE INDEX scim_groups_modified_idx ON scim_groups (org_id, modified_ms, id);

CREATE TABLE scim_members (
    org_id   TEXT NOT NULL,
    group_id TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    PRIMARY KEY (org_id, group_id, user_id),
    FOREIGN KEY (org_id, group_id) REFERENCES scim_groups (org_id, id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, user_id) REFERENCES scim_users (org_id, id) ON DELETE CASCADE
);
CREATE INDEX scim_members_user_idx ON scim_members (org_id, user_id);

-- The outbox of directory events: written in the same transaction as the change.
CREATE TABLE directory_events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id   TEXT   NOT NULL,
    at_ms    INTEGER NOT NULL,
    kind     TEXT   NOT NULL,
    user_id  TEXT,
    group_id TEXT,
    body     TEXT   NOT NULL
);
CREATE INDEX directory_events_org_idx ON directory_events (org_id, seq);

-- Append-only: a trigger refuses UPDATE and DELETE.
CREATE TABLE audit_log (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id        TEXT   NOT NULL,
    at_ms         INTEGER NOT NULL,
    actor         TEXT   NOT NULL,
    action        TEXT   NOT NULL,
    resource_type TEXT   NOT NULL,
    resource_id   TEXT   NOT NULL,
    summary       TEXT   NOT NULL
);
CREATE INDEX audit_log_org_idx ON audit_log (org_id, seq);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
