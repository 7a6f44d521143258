-- Upstream connectors: each connector's own authorization server (JSON, see the `upstream`
-- object in the admin API) and its client secret, sealed under the vault key ring
-- (base64; NULL when none).
ALTER TABLE connectors ADD COLUMN upstream TEXT;
ALTER TABLE connectors ADD COLUMN upstream_secret TEXT;

-- Per-user upstream grants that cannot be re-minted: the refresh token of a consent
-- (authorization_code) or of a token exchange, sealed (base64). `version` is the
-- compare-and-set token of every write (and the fencing token of refreshes); `status` is
-- `active` or `needs_reconsent` (the AS refused the grant for good). `due_ms` is when the
-- background refresher should renew the access token minted from it (indexed, so finding
-- what is due scans nothing else).
CREATE TABLE upstream_grants (
    org_id       TEXT   NOT NULL,
    user_id      TEXT   NOT NULL,
    connector_id TEXT   NOT NULL,
    sealed       TEXT   NOT NULL,
    version      BIGINT NOT NULL,
    status       TEXT   NOT NULL,
    scopes       TEXT   NOT NULL,
    updated_ms   BIGINT NOT NULL,
    due_ms       BIGINT,
    PRIMARY KEY (org_id, user_id, connector_id)
);
CREATE INDEX upstream_grants_due ON upstream_grants (due_ms);

-- The durable outbox of upstream revocations: one row per token to revoke at an upstream,
-- written in the same transaction that removes the grant, worked with retries and backoff
-- by every replica (a row is claimed by moving `next_at_ms`), and kept as the receipt.
-- `status`: pending, revoked, unsupported, failed.
CREATE TABLE upstream_revocations (
    id           TEXT   NOT NULL PRIMARY KEY,
    org_id       TEXT   NOT NULL,
    user_id      TEXT   NOT NULL,
    connector_id TEXT   NOT NULL,
    token_kind   TEXT   NOT NULL,
    sealed       TEXT   NOT NULL,
    epoch        BIGINT NOT NULL,
    status       TEXT   NOT NULL,
    attempts     BIGINT NOT NULL,
    last_error   TEXT,
    next_at_ms   BIGINT NOT NULL,
    created_ms   BIGINT NOT NULL,
    updated_ms   BIGINT NOT NULL
);
CREATE INDEX upstream_revocations_due ON upstream_revocations (status, next_at_ms);
CREATE INDEX upstream_revocations_user ON upstream_revocations (org_id, user_id);
