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
pub mod scim;
pub mod service;
pub mod store;
pub mod telemetry;

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
}

/// Opens storage, provisions orgs and credentials, and builds the router.
pub async fn prepare(
    config: &Config,
    secrets: BootstrapSecrets,
    bound: Option<std::net::SocketAddr>,
) -> anyhow::Result<Prepared> {
    let store = open_store(config).await?;
    let (credentials, generated) = bootstrap(config, &store, secrets).await?;
    let directory: Arc<dyn domain::ports::Directory> = Arc::new(store.clone());
    let provisioning = Provisioning::new(
        directory.clone(),
        Arc::new(SystemClock),
        ScimLimits {
            max_results: config.scim.max_results,
            default_count: config.scim.default_count,
            max_filter_scan: config.scim.max_filter_scan,
        },
    );
    let state = AppState {
        provisioning,
        directory,
        credentials: Arc::new(credentials),
        public_url: config.public_url(bound),
    };
    let limits = HttpLimits {
        max_body_bytes: config.server.max_body_bytes,
        request_timeout: Duration::from_secs(config.server.request_timeout_secs),
    };
    Ok(Prepared {
        router: http::app(state, limits),
        generated,
        store,
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
    let server = axum::serve(listener, prepared.router).with_graceful_shutdown(async move {
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
    prepared.store.close().await;
    Ok(())
}
