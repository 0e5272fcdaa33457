//! `aggregator` — see the crate documentation for what it does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aggregator::api::{self, ApiState};
use aggregator::config::{Config, Retention};
use aggregator::metrics::Metrics;
use aggregator::shard::ShardMap;
use aggregator::store::Shard;
use aggregator::tokens::{self, Grant};
use aggregator::{connect_shards, consume};
use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use tracing::{info, warn};

#[derive(Parser)]
#[command(
    version,
    about = "Sluice aggregator: Kafka → exactly-once rollups in sharded PostgreSQL, and the query API"
)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short, default_value = "aggregator.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume from Kafka, flush rollups to the shards, and serve the API.
    Run,
    /// Create or upgrade the schema on every shard (and, with `citus = true`,
    /// distribute the tables).
    Migrate,
    /// Drop the time partitions that fell out of retention, and list them.
    /// The running aggregator also does this every hour.
    DropExpired,
    /// Load and check the configuration, then exit.
    CheckConfig,
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print the name of the shard that owns each zone.
    ShardOf { zones: Vec<String> },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (it is stored only as a hash).
    Create {
        /// A zone the token may read; repeat for several.
        #[arg(long = "zone")]
        zones: Vec<String>,
        /// The token may read the cross-zone security view.
        #[arg(long)]
        security: bool,
        /// The token may read everything.
        #[arg(long)]
        admin: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = Config::load(&cli.config)?;
    match cli.command {
        Command::CheckConfig => println!("config OK"),
        Command::ShardOf { zones } => {
            let map = ShardMap::new(config.shards.iter().map(|s| s.name.clone()));
            for zone in zones {
                println!("{zone} {}", map.name(map.shard_of(&zone)));
            }
        }
        Command::Migrate => {
            for shard in connect_shards(&config)?.iter() {
                let applied = shard.migrate().await?;
                println!("{}: applied migrations {applied:?}", shard.name);
                if config.citus {
                    shard.distribute().await?;
                    println!("{}: tables distributed (Citus)", shard.name);
                }
            }
        }
        Command::DropExpired => {
            for shard in connect_shards(&config)?.iter() {
                let dropped = shard
                    .drop_expired(&config.retention, SystemTime::now())
                    .await?;
                println!(
                    "{}: dropped {} partitions {dropped:?}",
                    shard.name,
                    dropped.len()
                );
            }
        }
        Command::Token(TokenCommand::Create {
            zones,
            security,
            admin,
        }) => {
            if zones.is_empty() && !security && !admin {
                bail!("say what the token may read: --zone Z (repeatable), --security or --admin");
            }
            let shards = connect_shards(&config)?;
            let token = tokens::create(
                &shards[0],
                &Grant {
                    zones,
                    security,
                    admin,
                },
            )
            .await?;
            println!("{token}");
        }
        Command::Run => run(config).await?,
    }
    Ok(())
}

async fn run(config: Config) -> anyhow::Result<()> {
    let shards = connect_shards(&config)?;
    let metrics = Arc::new(Metrics::new());
    let consumer = consume::start(&config, shards.clone(), metrics.clone())?;
    tokio::spawn(enforce_retention(shards.clone(), config.retention.clone()));
    let state = Arc::new(ApiState {
        shards,
        map: ShardMap::new(config.shards.iter().map(|s| s.name.clone())),
        metrics,
    });
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("binding the API to {}", config.api.listen))?;
    info!("API listening on http://{}", config.api.listen);
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    info!("shutting down: flushing what is pending");
    consumer.stop().await
}

/// Drops expired partitions now and every hour.
async fn enforce_retention(shards: Arc<Vec<Shard>>, retention: Retention) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        for shard in shards.iter() {
            match shard.drop_expired(&retention, SystemTime::now()).await {
                Ok(dropped) if !dropped.is_empty() => {
                    info!(shard = shard.name, ?dropped, "dropped expired partitions")
                }
                Ok(_) => {}
                Err(e) => warn!("dropping expired partitions failed, will retry: {e}"),
            }
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
