//! The Lanes coordinator: owns the Postgres schema, every state change of a job, lane
//! leases, fencing tokens, wake fan-out and the reaper. Stateless itself: all state is in
//! Postgres, so several replicas may serve one database.

pub mod callback_policy;
pub mod config;
pub mod db;
pub mod dispatch;
pub mod error;
pub mod events;
pub mod health;
pub mod metrics;
pub mod promoter;
pub mod reaper;
pub mod retention;
pub mod schedules;
pub mod server;
pub mod service;
pub mod supervise;
pub mod validate;
pub mod waiters;
pub mod wake;

/// A token cancelled by the first SIGTERM or SIGINT.
pub fn shutdown_token() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    // Detached: it lives as long as the process and only cancels the token.
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        t.cancel();
    });
    token
}
