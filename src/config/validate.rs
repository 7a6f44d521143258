//! Whole-tree validation of the configuration after it is parsed: every problem is
//! collected (not just the first) and names the key to fix.

use std::net::SocketAddr;

use super::orgs::resolve_secret_hashes;
use super::{Config, ConfigProblem, problem, valid_org_id};

impl Config {
    /// Every problem in the tree, each naming its key; empty when the config is usable.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if self.server.listen.parse::<SocketAddr>().is_err() {
            out.push(problem(
                "server.listen",
                "must be an address such as 127.0.0.1:8080",
            ));
        }
        if let Some(u) = &self.server.public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            out.push(problem(
                "server.public_url",
                "must start with http:// or https://",
            ));
        }
        // The base of every org's issuer (`{issuer}/orgs/{org}`), not an issuer itself.
        if let Some(u) = &self.broker.issuer
            && (!(u.starts_with("http://") || u.starts_with("https://"))
                || u.contains('?')
                || u.contains('#')
                || u.trim_end_matches('/').contains("/orgs/"))
        {
            out.push(problem(
                "broker.issuer",
                "must be an http:// or https:// base URL without query, fragment or /orgs/ \
                 (each org's issuer is <broker.issuer>/orgs/<org>)",
            ));
        }
        if self.server.max_body_bytes < 1024 {
            out.push(problem("server.max_body_bytes", "must be at least 1024"));
        }
        if self.server.request_timeout_secs == 0 {
            out.push(problem("server.request_timeout_secs", "must be at least 1"));
        }
        if let Some(url) = &self.storage.database_url
            && !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:"))
        {
            out.push(problem(
                "storage.database_url",
                "must start with postgres:// or sqlite:",
            ));
        }
        if let Some(url) = &self.storage.redis_url {
            if url.starts_with("rediss") {
                // Refused here rather than at start: the build has no TLS client for Redis.
                out.push(problem(
                    "storage.redis_url",
                    "TLS to Redis (rediss://) is not available in this build; use redis://, \
                     redis+sentinel:// or redis+cluster:// over a private network or a TLS tunnel",
                ));
            } else if !(url.starts_with("redis://")
                || url.starts_with("redis+cluster://")
                || url.starts_with("redis+sentinel://"))
            {
                out.push(problem(
                    "storage.redis_url",
                    "must start with redis://, redis+sentinel:// or redis+cluster://",
                ));
            }
        }
        if self.storage.redis_timeout_ms == 0 {
            out.push(problem("storage.redis_timeout_ms", "must be at least 1"));
        }
        if self.storage.redis_url.is_some() && self.vault.keys.is_empty() {
            out.push(problem(
                "vault.keys",
                "a shared vault key ring is required when storage.redis_url is set \
                 (replicas must open each other's records)",
            ));
        }
        if !self.vault.keys.is_empty() {
            match &self.vault.active_key {
                None => out.push(problem(
                    "vault.active_key",
                    "required when vault.keys is set",
                )),
                Some(a) if !self.vault.keys.contains_key(a) => out.push(problem(
                    "vault.active_key",
                    format!("no key {a} in vault.keys"),
                )),
                _ => {}
            }
            for (id, r) in &self.vault.keys {
                if let Err(p) = r.read(&format!("vault.keys.{id}")) {
                    out.push(p);
                }
            }
        }
        if self.reconciler.events_interval_ms < 100 {
            out.push(problem(
                "reconciler.events_interval_ms",
                "must be at least 100",
            ));
        }
        let rate = self.upstream.rate_per_second;
        if !(rate.is_finite() && rate >= 0.0) {
            out.push(problem(
                "upstream.rate_per_second",
                "must be a number of calls per second, 0 or more (0: no budget)",
            ));
        }
        if self.upstream.revocation_interval_ms < 100 {
            out.push(problem(
                "upstream.revocation_interval_ms",
                "must be at least 100",
            ));
        }
        if self.reconciler.sweep_interval_secs == 0 {
            out.push(problem(
                "reconciler.sweep_interval_secs",
                "must be at least 1",
            ));
        }
        if self.broker.signing_key_max_age_days == 0 {
            // 0 would retire every key as it is made: no start could settle on one.
            out.push(problem(
                "broker.signing_key_max_age_days",
                "must be at least 1",
            ));
        }
        if self.broker.signing_key_poll_interval_ms < 100 {
            out.push(problem(
                "broker.signing_key_poll_interval_ms",
                "must be at least 100",
            ));
        }
        // A key must be on every replica before it signs: at least two reloads of lead.
        if self
            .broker
            .signing_key_publish_lead_secs
            .saturating_mul(1000)
            < self.broker.signing_key_poll_interval_ms.saturating_mul(2)
        {
            out.push(problem(
                "broker.signing_key_publish_lead_secs",
                "must be at least twice broker.signing_key_poll_interval_ms, so that every \
                 replica publishes a new key before it signs",
            ));
        }
        if self.broker.token_ttl_secs < 60 {
            out.push(problem("broker.token_ttl_secs", "must be at least 60"));
        }
        if self.broker.refresh_margin_secs >= self.broker.token_ttl_secs {
            out.push(problem(
                "broker.refresh_margin_secs",
                "must be below broker.token_ttl_secs",
            ));
        }
        if self.storage.max_connections == 0 {
            out.push(problem("storage.max_connections", "must be at least 1"));
        }
        if self
            .storage
            .min_connections
            .is_some_and(|min| min > self.storage.max_connections)
        {
            out.push(problem(
                "storage.min_connections",
                "must not exceed storage.max_connections",
            ));
        }
        if self.scim.max_results == 0 {
            out.push(problem("scim.max_results", "must be at least 1"));
        }
        if self.scim.default_count == 0 || self.scim.default_count > self.scim.max_results {
            out.push(problem(
                "scim.default_count",
                "must be between 1 and scim.max_results",
            ));
        }
        if self.scim.max_filter_scan < self.scim.max_results {
            out.push(problem(
                "scim.max_filter_scan",
                "must be at least scim.max_results",
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            out.push(problem("log.level", "is not a valid filter directive"));
        }
        for (id, org) in &self.orgs {
            let base = format!("orgs.{id}");
            if !valid_org_id(id) {
                out.push(problem(&base, "org id must be 1-63 of a-z 0-9 - _"));
            }
            for (kind, hashes, env, file) in [
                (
                    "scim_token",
                    &org.scim_token_hashes,
                    &org.scim_token_env,
                    &org.scim_token_file,
                ),
                (
                    "admin_key",
                    &org.admin_key_hashes,
                    &org.admin_key_env,
                    &org.admin_key_file,
                ),
            ] {
                if let Err(p) = resolve_secret_hashes(&base, kind, hashes, env, file) {
                    out.extend(p);
                }
            }
            for (cid, c) in &org.connectors {
                let key = format!("{base}.connectors.{cid}");
                if !valid_org_id(cid) {
                    out.push(problem(&key, "connector id must be 1-63 of a-z 0-9 - _"));
                }
                if c.audience.trim().is_empty() {
                    out.push(problem(format!("{key}.audience"), "must not be empty"));
                }
                out.extend(upstream_problems(&key, c));
                let from_idp = c.upstream.as_ref().is_some_and(|u| {
                    u.id_jag_source == crate::domain::upstream::IdJagSource::IdpExchange
                });
                if from_idp && org.sign_in.as_ref().and_then(|s| s.oidc.as_ref()).is_none() {
                    out.push(problem(
                        format!("{key}.upstream.id_jag_source"),
                        "idp_exchange needs the org to sign in with OIDC (sign_in.oidc): the \
                         ID-JAG comes from that IdP",
                    ));
                }
            }
            for (i, g) in org.grants.iter().enumerate() {
                let key = format!("{base}.grants[{i}]");
                if g.group.is_some() == g.group_id.is_some() {
                    out.push(problem(&key, "give exactly one of group or group_id"));
                }
                match org.connectors.get(&g.connector) {
                    None => out.push(problem(
                        format!("{key}.connector"),
                        format!("no connector {} is declared in this org", g.connector),
                    )),
                    Some(c) => {
                        if let Some(s) = g.scopes.iter().find(|s| !c.scopes.contains(s)) {
                            out.push(problem(
                                format!("{key}.scopes"),
                                format!("{s} is not among the connector's scopes"),
                            ));
                        }
                    }
                }
            }
            if let Some(sign_in) = &org.sign_in {
                out.extend(sign_in.validate(&base));
            }
            if org.scim_token_hashes.is_empty()
                && org.scim_token_env.is_none()
                && org.scim_token_file.is_none()
            {
                out.push(problem(
                    format!("{base}.scim_token_hashes"),
                    "an org needs a SCIM token (scim_token_hashes, scim_token_env or scim_token_file)",
                ));
            }
        }
        out
    }
}

/// Problems with a config-declared connector's upstream, named by key.
fn upstream_problems(key: &str, c: &super::ConnectorConfig) -> Vec<ConfigProblem> {
    use crate::domain::connector::Strategy;
    let mut out = Vec::new();
    match (&c.upstream, c.strategy) {
        (None, Strategy::BrokerJwt) => {}
        (None, _) => out.push(problem(
            format!("{key}.upstream"),
            "required for this strategy (the connector's own authorization server)",
        )),
        (Some(_), Strategy::BrokerJwt) => out.push(problem(
            format!("{key}.upstream"),
            "only id_jag, token_exchange and authorization_code connectors have an upstream",
        )),
        (Some(u), strategy) => {
            if u.client_secret.is_some() {
                out.push(problem(
                    format!("{key}.upstream.client_secret"),
                    "secrets are not written in config: use client_secret_env",
                ));
            }
            let declared = u.clone().into_upstream(None);
            for (k, why) in declared.problems(strategy) {
                out.push(problem(format!("{key}.upstream.{k}"), why));
            }
        }
    }
    out
}
