-- Sign-in: which IdP identity (issuer + subject) is which user, and the groups the user's
-- last sign-in asserted (kept apart from SCIM memberships, which sign-in never changes).

CREATE TABLE identity_links (
    org_id     TEXT   NOT NULL,
    issuer     TEXT   NOT NULL,
    subject    TEXT   NOT NULL,
    user_id    TEXT   NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (org_id, issuer, subject)
);
CREATE INDEX identity_links_user_idx ON identity_links (org_id, user_id);

CREATE TABLE asserted_groups (
    org_id     TEXT   NOT NULL,
    user_id    TEXT   NOT NULL,
    groups     TEXT   NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
