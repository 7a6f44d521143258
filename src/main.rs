//! The `auth-broker` command line: parses arguments and config once, then calls the library.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use clap::{Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};

use auth_broker::config::{self, CliOverrides, Config, ConfigError, ConfigSource};
use auth_broker::domain::ports::CredentialKind;
use auth_broker::service::bootstrap::BootstrapSecrets;

/// mimalloc: the vend path allocates per request, and glibc malloc took over a tenth of the
/// broker's CPU under gateway load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Enterprise-managed auth broker: IdP-governed, per-user upstream tokens for AI connectors.
#[derive(Parser)]
#[command(name = "auth-broker", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (the embedded default when no config file exists).
    Serve {
        /// Config file (else AUTH_BROKER_CONFIG, else config/auth-broker.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on (overrides server.listen).
        #[arg(long)]
        listen: Option<String>,
        /// Data directory for the embedded default (overrides storage.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Apply database migrations and exit.
    Migrate {
        /// Config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration; print each problem with its key; exit 1 on error.
    CheckConfig {
        /// Config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Vault and signing key management.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Read a secret on stdin and print the hash to put in config.
    HashSecret,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print a fresh base64 32-byte vault key.
    Generate,
    /// Re-seal every vault record, signing key, upstream client secret, grant and pending
    /// upstream revocation under the active key (safe while serving).
    Rotate {
        /// Config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Add a new signing key for an org (or every org): published now, signing after
    /// broker.signing_key_publish_lead_secs; running replicas pick it up without a restart.
    RotateSigning {
        /// Only this org.
        #[arg(long)]
        org: Option<String>,
        /// Config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
        } => {
            let overrides = CliOverrides { listen, data_dir };
            with_config(config, &overrides, |cfg, source| {
                run_async(serve(cfg, source))
            })
        }
        Command::Migrate { config } => with_config(config, &CliOverrides::default(), |cfg, _| {
            run_async(migrate(cfg))
        }),
        Command::CheckConfig { config } => {
            with_config(config, &CliOverrides::default(), |cfg, source| {
                let where_ = match source {
                    ConfigSource::File(p) => p.display().to_string(),
                    ConfigSource::Embedded => "embedded default (no config file)".into(),
                };
                match cfg.resolved_orgs() {
                    Ok(orgs) => {
                        println!("configuration OK ({where_}); {} org(s)", orgs.len());
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Command::Keys {
            command: KeysCommand::Generate,
        } => {
            let key: [u8; 32] = rand::random();
            println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
            ExitCode::SUCCESS
        }
        Command::Keys {
            command: KeysCommand::Rotate { config },
        } => with_config(config, &CliOverrides::default(), |cfg, _| {
            run_async(async move {
                let r = auth_broker::rotate_keys(&cfg).await?;
                println!(
                    "re-sealed {} record(s), {} already current, {} skipped (changed meanwhile), \
                         {} unreadable; {} signing key(s) re-sealed",
                    r.resealed, r.current, r.skipped, r.unreadable, r.signing_keys
                );
                for (what, c) in [
                    ("upstream client secrets", r.client_secrets),
                    ("upstream grants", r.grants),
                    ("pending upstream revocations", r.revocations),
                ] {
                    println!(
                        "{what}: {} re-sealed, {} already current, {} skipped (changed \
                         meanwhile), {} unreadable",
                        c.resealed, c.current, c.skipped, c.unreadable
                    );
                }
                let unreadable = r.unreadable_total();
                if unreadable > 0 {
                    anyhow::bail!(
                        "{unreadable} record(s) could not be opened with any key in the ring"
                    );
                }
                Ok(())
            })
        }),
        Command::Keys {
            command: KeysCommand::RotateSigning { org, config },
        } => with_config(config, &CliOverrides::default(), |cfg, _| {
            run_async(async move {
                use auth_broker::keys::RotationOutcome;
                let now = auth_broker::domain::clock::Clock::now_ms(
                    &auth_broker::domain::clock::SystemClock,
                );
                let when = |at: i64| {
                    format!(
                        "{} (in {} s)",
                        auth_broker::domain::clock::rfc3339(at),
                        (at - now).max(0) / 1000
                    )
                };
                for o in auth_broker::rotate_signing_keys(&cfg, org.as_deref()).await? {
                    match o {
                        RotationOutcome::Scheduled {
                            org,
                            kid,
                            activates_ms,
                        } => println!(
                            "org {org}: new signing key {kid} stored; every replica publishes \
                             it at its next reload, and it signs from {}",
                            when(activates_ms)
                        ),
                        RotationOutcome::UnderWay {
                            org,
                            kid,
                            activates_ms,
                        } => println!(
                            "org {org}: a rotation is under way: key {kid} signs from {}; \
                             nothing added",
                            when(activates_ms)
                        ),
                    }
                }
                Ok(())
            })
        }),
        Command::HashSecret => hash_secret(),
    }
}

fn with_config(
    path: Option<PathBuf>,
    overrides: &CliOverrides,
    f: impl FnOnce(Config, ConfigSource) -> ExitCode,
) -> ExitCode {
    match config::load(path.as_deref(), overrides) {
        Ok((cfg, source)) => f(cfg, source),
        Err(e @ (ConfigError::Parse(_) | ConfigError::Invalid(_))) => {
            eprintln!("auth-broker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("auth-broker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "fatal");
            eprintln!("auth-broker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cfg: Config, source: ConfigSource) -> anyhow::Result<()> {
    auth_broker::telemetry::init(&cfg.log);
    let shutdown = shutdown_signal();
    let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
        .await
        .map_err(|e| anyhow::anyhow!("server.listen: cannot bind {}: {e}", cfg.server.listen))?;
    let bound = listener.local_addr()?;
    let prepared = auth_broker::prepare(&cfg, BootstrapSecrets::from_env(), Some(bound)).await?;
    let public = cfg.public_url(Some(bound));
    if let Some(generated) = &prepared.generated {
        print_first_start(&public, generated);
    }
    println!("auth-broker: serving on {public}. To try:");
    println!("  ready:          {public}/readyz");
    println!("  API document:   {public}/admin/v1/openapi.json");
    println!("  admin API:      {public}/admin/v1/orgs/<org>/connectors  (admin key)");
    println!("  gateway API:    {public}/internal/v1/token  (gateway key)");
    println!("  metrics:        {public}/metrics");
    tracing::info!(
        listen = %bound,
        storage = if cfg.storage.database_url.is_some() { "configured" } else { "embedded sqlite" },
        source = ?source,
        "auth-broker serving"
    );
    let grace = Duration::from_secs(cfg.server.shutdown_grace_secs);
    auth_broker::serve(prepared, listener, shutdown, grace).await?;
    tracing::info!("auth-broker stopped");
    Ok(())
}

fn print_first_start(
    public: &str,
    generated: &auth_broker::service::bootstrap::GeneratedCredentials,
) {
    println!(
        "auth-broker: first start. These credentials are shown once and stored only as hashes:"
    );
    println!("  org:            {}", generated.org);
    println!("  SCIM base URL:  {public}/scim/v2/{}", generated.org);
    for (kind, value) in &generated.values {
        let label = match kind {
            CredentialKind::Scim => "SCIM token:    ",
            CredentialKind::Gateway => "gateway key:   ",
            CredentialKind::Admin => "admin key:     ",
        };
        println!("  {label} {}", value.expose_secret());
    }
}

async fn migrate(cfg: Config) -> anyhow::Result<()> {
    auth_broker::telemetry::init(&cfg.log);
    let store = auth_broker::open_store(&cfg).await?;
    println!("migrations applied ({:?})", store.dialect());
    store.close().await;
    Ok(())
}

fn hash_secret() -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("auth-broker: cannot read stdin: {e}");
        return ExitCode::FAILURE;
    }
    let secret = SecretString::from(input.trim_end_matches(['\r', '\n']).to_string());
    if secret.expose_secret().len() < 16 {
        eprintln!("auth-broker: refusing to hash a secret shorter than 16 characters");
        return ExitCode::FAILURE;
    }
    println!("{}", auth_broker::crypto::secret::hash_secret(&secret));
    ExitCode::SUCCESS
}

/// SIGTERM or Ctrl-C. The handlers are installed when this is called, not when the returned
/// future is first polled: a signal that arrives while the broker is still starting (opening
/// storage, printing the first start's credentials) then stops it gracefully too, instead of
/// ending the process with the signal's default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(term) => {},
            _ = wait(interrupt) => {},
        }
        tracing::info!("shutdown requested; draining");
    }
}
