-- Connectors, grants, the broker's signing keys and offboarding receipts.

CREATE TABLE connectors (
    org_id         TEXT   NOT NULL REFERENCES orgs (id),
    id             TEXT   NOT NULL,
    display_name   TEXT   NOT NULL,
    strategy       TEXT   NOT NULL,
    audience       TEXT   NOT NULL,
    scopes         TEXT   NOT NULL,
    tools          TEXT   NOT NULL,
    default_actions TEXT  NOT NULL,
    enabled        BIGINT NOT NULL,
    token_ttl_secs BIGINT NOT NULL,
    source         TEXT   NOT NULL,
    updated_ms     BIGINT NOT NULL,
    PRIMARY KEY (org_id, id)
);

CREATE TABLE grants (
    org_id       TEXT   NOT NULL REFERENCES orgs (id),
    id           TEXT   NOT NULL,
    group_kind   TEXT   NOT NULL CHECK (group_kind IN ('name', 'id')),
    group_ref    TEXT   NOT NULL,
    connector_id TEXT   NOT NULL,
    scopes       TEXT   NOT NULL,
    actions      TEXT   NOT NULL,
    source       TEXT   NOT NULL,
    created_ms   BIGINT NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE INDEX grants_connector_idx ON grants (org_id, connector_id);

-- ES256 keys the broker signs with; the private part is sealed under the vault key ring.
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    sealed_der  TEXT   NOT NULL,
    public_jwk  TEXT   NOT NULL,
    created_ms  BIGINT NOT NULL,
    retired_ms  BIGINT
);

-- What was revoked when a user was offboarded, per connector.
CREATE TABLE offboarding_receipts (
    seq        BIGSERIAL PRIMARY KEY,
    org_id     TEXT   NOT NULL,
    user_id    TEXT   NOT NULL,
    reason     TEXT   NOT NULL,
    epoch      BIGINT NOT NULL,
    connectors TEXT   NOT NULL,
    at_ms      BIGINT NOT NULL
);
CREATE INDEX offboarding_receipts_user_idx ON offboarding_receipts (org_id, user_id, seq);
