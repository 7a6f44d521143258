-- Signing keys are published before they sign: a key stored by a rotation carries the time
-- it starts signing (`activates_ms`, a publication lead after it is stored), and every
-- replica, reloading the keys periodically, publishes it in the org's JWKS meanwhile. The
-- keys it replaces are retired at that same time (`retired_ms` may lie in the future: it is
-- when the key stops signing) and stay published while tokens they signed can be alive.
-- Keys stored before this migration signed from their creation.
ALTER TABLE signing_keys ADD COLUMN activates_ms INTEGER;
UPDATE signing_keys SET activates_ms = created_ms WHERE activates_ms IS NULL;
