//! The `gateway` binary: parse config, start logging and metrics, serve HTTP until SIGTERM
//! or SIGINT, then drain in-flight requests.

mod admin_page;
mod auth;
mod body;
mod config;
mod coordinator;
mod error;
mod metrics;
mod openapi;
mod routes;
mod state;
mod validate;
mod views;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = config::Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter);
    if cli.log_format.eq_ignore_ascii_case("json") {
        fmt.json().init()
    } else {
        fmt.init()
    }
    error::set_retry_after(cli.retry_after_s);
    let state = state::AppState::new(&cli, metrics::install()?)?;
    if state.keys.is_open() {
        tracing::warn!(
            "NO API KEYS CONFIGURED (LANES_API_KEYS): every route, admin included, is open to anyone who can reach this port; use only for local development"
        );
    }
    let app = routes::router(state)?;
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, coordinator = %cli.coordinator, "gateway listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await?;
    tracing::info!("gateway stopped");
    Ok(())
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let sigterm = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm => {}
    }
}
