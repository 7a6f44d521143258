-- Each org is its own issuer: signing keys belong to an org (keys without one are from the
-- single-issuer versions and sign nothing any more). Resource-server credentials let an MCP
-- server introspect its connector's tokens. `credential_changes` counts every change to a
-- stored credential, in the same transaction, so replicas notice one by reading one row.

ALTER TABLE signing_keys ADD COLUMN org_id TEXT;
CREATE INDEX signing_keys_org_idx ON signing_keys (org_id, created_ms);

CREATE TABLE resource_credentials (
    id           TEXT PRIMARY KEY,
    org_id       TEXT   NOT NULL REFERENCES orgs (id),
    connector_id TEXT   NOT NULL,
    name         TEXT   NOT NULL,
    secret_hash  TEXT   NOT NULL,
    created_ms   BIGINT NOT NULL,
    CONSTRAINT resource_credentials_secret_hash_uq UNIQUE (secret_hash)
);
CREATE INDEX resource_credentials_connector_idx ON resource_credentials (org_id, connector_id);

CREATE TABLE credential_changes (
    id      BIGINT PRIMARY KEY CHECK (id = 1),
    counter BIGINT NOT NULL
);
INSERT INTO credential_changes (id, counter) VALUES (1, 0);
