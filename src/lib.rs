//! auth-broker: an enterprise-managed identity bridge. The org's IdP governs, through SSO and
//! SCIM, which people may reach which AI connectors; the broker keeps the directory, decides
//! entitlements and vends per-user upstream tokens to gateways.
//!
//! `run(config, listener, shutdown)` is the whole server; `main.rs` only parses the command
//! line and calls it, and tests call it in-process on port 0.

pub mod config;
pub mod crypto;
pub mod domain;
pub mod http;
pub mod identity;
pub mod keys;
pub mod scim;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::domain::clock::SystemClock;
use crate::http::{AppState, HttpLimits};
use crate::service::bootstrap::{BootstrapSecrets, GeneratedCredentials, bootstrap};
use crate::service::provisioning::{Provisioning, ScimLimits};
use crate::store::{SqlOptions, SqlStore};

/// Connects to the configured database and applies migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<SqlStore> {
    if config.storage.database_url.is_none() {
        std::fs::create_dir_all(&config.storage.data_dir).map_err(|e| {
            anyhow::anyhow!(
                "storage.data_dir: cannot create {}: {e}",
                config.storage.data_dir.display()
            )
        })?;
    }
    let opts = SqlOptions {
        max_connections: config.storage.max_connections,
        min_connections: config.idle_connections(),
        acquire_timeout: Duration::from_millis(config.storage.acquire_timeout_ms),
    };
    let store = SqlStore::connect(&config.database_url(), &opts)
        .await
        .map_err(|e| anyhow::anyhow!("storage.database_url: cannot connect: {e}"))?;
    store
        .migrate()
        .await
        .map_err(|e| anyhow::anyhow!("migrations failed: {e}"))?;
    Ok(store)
}

/// A server ready to serve: its router and what start-up generated.
pub struct Prepared {
    /// The application.
    pub router: axum::Router,
    /// Credentials generated on this (first) start, to show once.
    pub generated: Option<GeneratedCredentials>,
    /// The store, closed on shutdown.
    pub store: SqlStore,
    /// The audit writer, flushed on shutdown before the store closes.
    pub audit: service::audit_sink::AuditSink,
    /// The reconciler's task, stopped on shutdown.
    pub reconciler: tokio::task::JoinHandle<()>,
    /// The upstream revocation worker's task, stopped on shutdown (its rows stay due).
    pub revocations: tokio::task::JoinHandle<()>,
    /// The upstream token refresher's task, stopped on shutdown.
    pub refresher: tokio::task::JoinHandle<()>,
    /// The signing keys' reload, stopped on shutdown.
    pub signing_keys: tokio::task::JoinHandle<()>,
}

/// Opens storage, provisions orgs and credentials, and builds the router.
pub async fn prepare(
    config: &Config,
    secrets: BootstrapSecrets,
    bound: Option<std::net::SocketAddr>,
) -> anyhow::Result<Prepared> {
    let store = open_store(config).await?;
    let (declared, generated) = bootstrap(config, &store, secrets).await?;
    let credentials = service::credentials::CredentialSync::load(declared, Arc::new(store.clone()))
        .await
        .map_err(|e| anyhow::anyhow!("cannot load stored credentials: {e}"))?;
    credentials.spawn_poller();
    let config_changed = sync_config_policy(config, &store).await?;
    let clock: Arc<dyn domain::clock::Clock> = Arc::new(SystemClock);
    let directory: Arc<dyn domain::ports::Directory> = Arc::new(store.clone());
    let policy: Arc<dyn domain::ports::PolicyStore> = Arc::new(store.clone());
    let timeout = Duration::from_millis(config.storage.redis_timeout_ms);
    let (vault, eph, bus): (
        Arc<dyn domain::vault::Vault>,
        Arc<dyn domain::vault::Ephemeral>,
        Arc<dyn domain::vault::EventBus>,
    ) = match &config.storage.redis_url {
        Some(url) => {
            let vault = Arc::new(
                store::vault_redis::RedisVault::connect_with(
                    url,
                    timeout,
                    config.storage.redis_wait_replicas,
                )
                .await
                .map_err(|e| anyhow::anyhow!("storage.redis_url: {e}"))?,
            );
            let bus = store::vault_redis::RedisBus::connect(url, timeout)
                .await
                .map_err(|e| anyhow::anyhow!("storage.redis_url: {e}"))?;
            (vault.clone(), vault, Arc::new(bus))
        }
        None => {
            let vault = Arc::new(store::vault_memory::MemoryVault::new());
            (
                vault.clone(),
                vault,
                Arc::new(store::vault_memory::MemoryBus::new()),
            )
        }
    };
    let ring = Arc::new(keys::key_ring(config)?);
    let orgs: Vec<domain::OrgId> = domain::ports::Tenants::list_orgs(&store)
        .await?
        .into_iter()
        .map(|o| o.id)
        .collect();
    let signing_policy = keys::SigningPolicy::from_config(config);
    let org_keys =
        keys::load_org_keys(&store, &ring, &orgs, signing_policy, clock.now_ms()).await?;
    if config.storage.redis_url.is_some()
        && config.broker.issuer.is_none()
        && config.server.public_url.is_none()
    {
        // Replicas share the vault: a token minted by one is served by all, and each checks
        // `iss` against its own issuers at introspection.
        tracing::warn!(
            issuer = %config.public_url(bound),
            "the vault is shared but neither server.public_url nor broker.issuer is set: \
             each replica names itself in every org's issuer, and tokens vended through one \
             replica introspect as inactive on another; set server.public_url to the address \
             gateways use"
        );
    }
    // `broker.issuer` is the base of every org's issuer (`{base}/orgs/{org}`).
    let signer = Arc::new(service::tokens::Signer::new(
        &config
            .broker
            .issuer
            .clone()
            .unwrap_or_else(|| config.public_url(bound)),
        org_keys,
    ));
    let signing_keys = keys::SigningKeySync::new(
        Arc::new(store.clone()),
        ring.clone(),
        &signer,
        orgs,
        signing_policy,
        clock.clone(),
    )
    .spawn(Duration::from_millis(
        config.broker.signing_key_poll_interval_ms,
    ));
    let upstreams = service::upstream::Upstreams::new(service::upstream::UpstreamParts {
        client: upstream::UpstreamClient::with_shared_budget(
            upstream::ClientOptions {
                budget: upstream::BudgetOptions {
                    per_second: config.upstream.rate_per_second,
                    burst: config.upstream.rate_burst.max(1),
                    ..Default::default()
                },
                ..Default::default()
            },
            eph.clone(),
        ),
        ring: ring.clone(),
        signer: signer.clone(),
        consents: Arc::new(store.clone()),
        eph: eph.clone(),
        bus: bus.clone(),
        clock: clock.clone(),
        public_url: config.public_url(bound),
        idps: idp_clients(config)?,
    });
    let access = service::access::Access::new(
        directory.clone(),
        policy.clone(),
        vault,
        bus,
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        clock.clone(),
    )
    .with_asserted_groups(
        Arc::new(store.clone()),
        config
            .orgs
            .iter()
            .filter_map(|(id, o)| o.sign_in.as_ref().map(|s| (id.clone(), s.groups_source)))
            .collect(),
    )
    .with_outbox(Arc::new(store.clone()))
    .with_upstreams(upstreams.clone());
    resync_config_changes(&access, &config_changed).await;
    let reconciler = service::access::Reconciler::new(access.clone(), Arc::new(store.clone()))
        .spawn(
            Duration::from_millis(config.reconciler.events_interval_ms),
            Duration::from_secs(config.reconciler.sweep_interval_secs),
        );
    let vend = service::vend::Vend::new(
        access.clone(),
        directory.clone(),
        ring.clone(),
        signer,
        clock.clone(),
        config.broker.token_ttl_secs,
        config.broker.refresh_margin_secs,
        eph.clone(),
    )
    .with_upstreams(upstreams.clone());
    let revocations = service::upstream::RevocationWorker::new(
        upstreams.clone(),
        policy.clone(),
        Arc::new(store.clone()),
    )
    .spawn(Duration::from_millis(
        config.upstream.revocation_interval_ms.max(100),
    ));
    let refresher = match config.upstream.refresher_interval_ms {
        0 => tokio::spawn(async {}),
        ms => service::vend::Refresher::new(vend.clone(), Arc::new(store.clone()))
            .spawn(Duration::from_millis(ms)),
    };
    let introspection =
        service::introspection::Introspection::new(service::introspection::IntrospectionParts {
            signer: vend.signer().clone(),
            vault: access.vault().clone(),
            eph: eph.clone(),
            ring: ring.clone(),
            vend: vend.clone(),
            bus: access.bus().clone(),
            clock: clock.clone(),
        });
    let admin = service::admin::Admin::new(
        access.clone(),
        vend.clone(),
        policy,
        directory.clone(),
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        credentials.clone(),
        clock.clone(),
    );
    let (audit, _writer) = service::audit_sink::AuditSink::start(Arc::new(store.clone()));
    let audit_flush = audit.clone();
    let provisioning = Provisioning::new(
        directory.clone(),
        clock.clone(),
        ScimLimits {
            max_results: config.scim.max_results,
            default_count: config.scim.default_count,
            max_filter_scan: config.scim.max_filter_scan,
        },
    )
    .with_access(access.clone());
    let sign_in = identity::SignIn::new(
        config,
        identity::SignInParts {
            eph,
            ring,
            identities: Arc::new(store.clone()),
            dir: directory.clone(),
            provisioning: provisioning.clone(),
            access: access.clone(),
            audit: audit.clone(),
            clock: clock.clone(),
            public_url: config.public_url(bound),
            idp_grants: Some(Arc::new(upstreams.clone())),
        },
    )?;
    let state = AppState::new(http::AppInner {
        sign_in,
        provisioning,
        directory,
        credentials: credentials.index(),
        public_url: config.public_url(bound),
        vend,
        access,
        introspection,
        admin,
        audit,
        metrics: Arc::default(),
        clock,
        upstreams,
    });
    let limits = HttpLimits {
        max_body_bytes: config.server.max_body_bytes,
        request_timeout: Duration::from_secs(config.server.request_timeout_secs),
    };
    Ok(Prepared {
        router: http::app(state, limits),
        generated,
        store,
        audit: audit_flush,
        reconciler,
        revocations,
        refresher,
        signing_keys,
    })
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains in-flight requests
/// (bounded by `grace`) and closes the store.
pub async fn serve(
    prepared: Prepared,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // No Nagle delay on responses: gateways and IdPs wait on each answer.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server =
        axum::serve(listener, prepared.router.clone()).with_graceful_shutdown(async move {
            shutdown.await;
            let _ = tx.send(());
        });
    let drained = async {
        let _ = rx.await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        res = server.into_future() => res?,
        _ = drained => tracing::warn!("shutdown grace period elapsed with requests in flight"),
    }
    finish(prepared, grace).await;
    Ok(())
}

/// After serving: writes the audit records still folded, then closes the store.
async fn finish(prepared: Prepared, grace: Duration) {
    prepared.reconciler.abort();
    prepared.revocations.abort();
    prepared.refresher.abort();
    prepared.signing_keys.abort();
    // Records still being folded are written before the store closes.
    if tokio::time::timeout(grace.max(Duration::from_secs(1)), prepared.audit.flush())
        .await
        .is_err()
    {
        tracing::warn!("audit records not all written at shutdown");
    }
    prepared.store.close().await;
}

/// Grants whose users' access a config change may have changed, per org.
type ConfigChanges = Vec<(domain::OrgId, Vec<domain::connector::Grant>)>;

/// Brings in line, before serving, the users whose access a config change may have changed:
/// the users of every grant, before and after the change, of a connector whose definition or
/// grants changed.
/// A failure (the vault is down) is logged; the reconciler's first sweep at start repairs it,
/// and vends meanwhile are bounded by each connector's current definition.
async fn resync_config_changes(access: &service::access::Access, changes: &ConfigChanges) {
    for (org, grants) in changes {
        let users = match access.users_of_grants(org, grants).await {
            Ok(users) => users,
            Err(e) => {
                tracing::warn!(org = %org, error = %e, "config change: affected users not found; the reconciler will repair");
                continue;
            }
        };
        for u in users {
            if let Err(e) = access.sync_user(org, &u, "config.change", "config").await {
                tracing::warn!(org = %org, user = %u, error = %e, "config change: access not brought in line; the reconciler will repair");
            }
        }
    }
}

/// Replaces each org's config-declared connectors and grants (GitOps) with what config says,
/// and returns, per org, the grants (before and after) of connectors that changed.
async fn sync_config_policy(config: &Config, store: &SqlStore) -> anyhow::Result<ConfigChanges> {
    use domain::connector::{ActionSet, Connector, Grant, GroupSelector};
    use domain::ports::PolicyStore;
    let now = domain::clock::Clock::now_ms(&SystemClock);
    let mut changes = Vec::new();
    for (org_id, org) in &config.orgs {
        let org_ref = domain::OrgId::new(org_id);
        let unreadable = |e: domain::StoreError| {
            anyhow::anyhow!("orgs.{org_id}: cannot read connectors and grants: {e}")
        };
        let before = (
            store.connectors(&org_ref).await.map_err(unreadable)?,
            store.grants(&org_ref).await.map_err(unreadable)?,
        );
        let connectors: Vec<Connector> = org
            .connectors
            .iter()
            .map(|(id, c)| Connector {
                org: org_ref.clone(),
                id: id.clone(),
                display_name: c.display_name.clone().unwrap_or_else(|| id.clone()),
                strategy: c.strategy,
                audience: c.audience.clone(),
                scopes: c.scopes.clone(),
                tools: c.tools.clone(),
                default_actions: c.default_actions.unwrap_or(ActionSet::ALLOW_ALL),
                enabled: c.enabled,
                token_ttl_secs: c.token_ttl_secs.unwrap_or(0),
                upstream: c.upstream.clone().map(|u| u.into_upstream(None)),
            })
            .collect();
        let grants: Vec<Grant> = org
            .grants
            .iter()
            .enumerate()
            .map(|(i, g)| Grant {
                id: g
                    .id
                    .clone()
                    .unwrap_or_else(|| format!("config-{org_id}-{i}")),
                org: org_ref.clone(),
                group: match (&g.group, &g.group_id) {
                    (_, Some(id)) => GroupSelector::Id(domain::GroupId::new(id)),
                    (Some(n), None) => GroupSelector::Name(n.clone()),
                    (None, None) => GroupSelector::Name(String::new()),
                },
                connector: g.connector.clone(),
                scopes: g.scopes.clone(),
                actions: g.actions,
            })
            .collect();
        store
            .sync_config(&org_ref, &connectors, &grants, now)
            .await
            .map_err(|e| {
                anyhow::anyhow!("orgs.{org_id}: cannot store connectors and grants: {e}")
            })?;
        let after = (
            store.connectors(&org_ref).await.map_err(unreadable)?,
            store.grants(&org_ref).await.map_err(unreadable)?,
        );
        let changed = |id: &str| {
            let def = |list: &[Connector]| list.iter().find(|c| c.id == id).cloned();
            let of = |list: &[Grant]| -> Vec<Grant> {
                list.iter().filter(|g| g.connector == id).cloned().collect()
            };
            def(&before.0) != def(&after.0) || of(&before.1) != of(&after.1)
        };
        // Users who may lose access (grants as they were) or gain it (grants as they are).
        let affected: Vec<Grant> = before
            .1
            .iter()
            .chain(&after.1)
            .filter(|g| changed(&g.connector))
            .cloned()
            .collect();
        if !affected.is_empty() {
            changes.push((org_ref, affected));
        }
    }
    Ok(changes)
}

/// `auth-broker keys rotate`: re-seals vault records, signing keys, upstream client secrets,
/// grants and pending upstream revocations under the active key. With the in-process vault
/// (embedded default) the vault's records live only in the serving process, so they are
/// re-sealed as they are re-minted; everything in the database is re-sealed here.
pub async fn rotate_keys(config: &Config) -> anyhow::Result<service::rotation::RotationReport> {
    let store = open_store(config).await?;
    let ring = keys::key_ring(config)?;
    let vault: Arc<dyn domain::vault::Vault> = match &config.storage.redis_url {
        Some(url) => Arc::new(
            store::vault_redis::RedisVault::connect_with(
                url,
                Duration::from_millis(config.storage.redis_timeout_ms.max(1000)),
                config.storage.redis_wait_replicas,
            )
            .await
            .map_err(|e| anyhow::anyhow!("storage.redis_url: {e}"))?,
        ),
        None => Arc::new(store::vault_memory::MemoryVault::new()),
    };
    let stores = service::rotation::Sealed {
        tenants: &store,
        dir: &store,
        signing: &store,
        policy: &store,
        consents: &store,
    };
    let now = domain::clock::Clock::now_ms(&SystemClock);
    let report = service::rotation::rotate(stores, vault, &ring, now).await?;
    store.close().await;
    Ok(report)
}

/// `auth-broker keys rotate-signing`: a new signing key for `org` (or every org), published at
/// once and signing after `broker.signing_key_publish_lead_secs`; running replicas pick it up
/// at their next reload. An unknown org is an error.
pub async fn rotate_signing_keys(
    config: &Config,
    org: Option<&str>,
) -> anyhow::Result<Vec<keys::RotationOutcome>> {
    let store = open_store(config).await?;
    let ring = keys::key_ring(config)?;
    let known: Vec<domain::OrgId> = domain::ports::Tenants::list_orgs(&store)
        .await?
        .into_iter()
        .map(|o| o.id)
        .collect();
    let orgs = match org {
        None => known,
        Some(id) => {
            let id = domain::OrgId::new(id);
            anyhow::ensure!(known.contains(&id), "no org {id} in the database");
            vec![id]
        }
    };
    let now = domain::clock::Clock::now_ms(&SystemClock);
    let policy = keys::SigningPolicy::from_config(config);
    let out = keys::rotate_signing(&store, &ring, &orgs, policy, now).await;
    store.close().await;
    out
}

/// Each org's IdP as a token endpoint client: the OIDC sign-in's client, for connectors whose
/// ID-JAGs come from the IdP (`id_jag_source = "idp_exchange"`) and to revoke the refresh
/// tokens sign-in kept.
fn idp_clients(
    config: &Config,
) -> anyhow::Result<std::collections::HashMap<String, service::upstream::IdpClient>> {
    let mut out = std::collections::HashMap::new();
    for (id, org) in &config.orgs {
        let Some(o) = org.sign_in.as_ref().and_then(|s| s.oidc.as_ref()) else {
            continue;
        };
        let secret = config::read_secret(&o.client_secret_env, &o.client_secret_file)
            .map_err(|e| anyhow::anyhow!("orgs.{id}.sign_in.oidc client secret: {e}"))?;
        out.insert(
            id.clone(),
            service::upstream::IdpClient::new(
                &o.issuer,
                &o.client_id,
                secrecy::SecretString::from(secret),
            ),
        );
    }
    Ok(out)
}
