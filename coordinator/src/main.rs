//! `coordinator`: parse the configuration, set up logging, serve (or migrate) — nothing else.

use clap::Parser;
use lanes_coordinator::config::{Cli, Command};
use lanes_coordinator::{db, init_tracing, server, shutdown_token};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => server::serve(cli.serve, shutdown_token()).await,
        Command::Migrate => {
            let pool = db::connect(&cli.serve.database_url, 2).await?;
            db::migrate(&pool).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
    }
}
