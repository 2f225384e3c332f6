//! `coordinator`: parse the configuration, set up logging and tracing, serve (or migrate),
//! flush the traces — nothing else.

use clap::Parser;
use lanes_coordinator::config::{Cli, Command};
use lanes_coordinator::{db, server, shutdown_token};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry =
        lanes_telemetry::init(lanes_telemetry::Settings::from_env("lanes-coordinator"))?;
    let outcome = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => server::serve(cli.serve, shutdown_token()).await,
        // Advisory locks need a session: the direct URL when a pooler fronts DATABASE_URL.
        Command::Migrate => {
            let serve = &cli.serve;
            migrate(
                serve
                    .listen_database_url
                    .as_ref()
                    .unwrap_or(&serve.database_url),
            )
            .await
        }
    };
    telemetry.shutdown().await;
    outcome
}

async fn migrate(database_url: &str) -> anyhow::Result<()> {
    let pool = db::connect(database_url, 2, false).await?;
    db::migrate(&pool).await?;
    tracing::info!("migrations applied");
    Ok(())
}
