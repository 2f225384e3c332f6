//! `agent`: parse the configuration, set up logging and tracing, run until SIGTERM or SIGINT,
//! flush the traces — nothing else.

use clap::Parser as _;
use lanes_agent::{config, connection, lease_loop, runner, shutdown};

// Single-threaded on purpose: a handler's PR_SET_PDEATHSIG is tied to the thread that
// started it (see `runner::exec`), and one job at a time needs no more.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let settings = config::Cli::parse().settings()?;
    let telemetry = lanes_telemetry::init(lanes_telemetry::Settings::from_env("lanes-agent"))?;
    let outcome = run(settings).await;
    telemetry.shutdown().await;
    outcome
}

async fn run(settings: config::Settings) -> anyhow::Result<()> {
    let shutdown = shutdown::Shutdown::listen(settings.grace)?;
    let conn = connection::Connection::new(&settings)?;
    let runner = runner::Runner::new(&settings)?;
    lease_loop::Agent::new(settings, conn, runner, shutdown)
        .run()
        .await?;
    Ok(())
}
