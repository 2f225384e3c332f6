//! The `gateway` binary: parse config, start logging, tracing and metrics, serve HTTP until
//! SIGTERM or SIGINT, then drain in-flight requests and flush the traces.

mod admin_page;
mod auth;
mod body;
mod config;
mod coordinator;
mod error;
mod metrics;
mod numbers;
mod openapi;
mod params;
#[cfg(test)]
mod proptests;
mod routes;
mod schemas;
mod state;
mod trace;
mod validate;
mod views;

use axum::serve::ListenerExt as _;
use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = config::Cli::parse();
    let telemetry = lanes_telemetry::init(lanes_telemetry::Settings {
        service: "lanes-gateway",
        json: cli.log_format.eq_ignore_ascii_case("json"),
    })?;
    let outcome = run(cli).await;
    telemetry.shutdown().await;
    outcome
}

async fn run(cli: config::Cli) -> anyhow::Result<()> {
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
    // Small JSON answers: Nagle's algorithm would hold them back waiting for an ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
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
