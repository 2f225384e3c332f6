//! SIGTERM and SIGINT: the first stops leasing (`draining`) and, after the grace period,
//! asks the running job to be stopped and handed back (`hard`); a second signal skips the
//! rest of the grace period. Never exits the process itself: the lease loop drains and
//! returns, and `main` exits 0.

use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// The agent's two shutdown stages.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Stop leasing; let the running job finish.
    pub draining: CancellationToken,
    /// The grace period is over: stop the running job and release it.
    pub hard: CancellationToken,
}

impl Shutdown {
    /// Listens for SIGTERM and SIGINT with the given grace period.
    pub fn listen(grace: Duration) -> std::io::Result<Self> {
        let shutdown = Shutdown::default();
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let s = shutdown.clone();
        // Detached: it lives as long as the process and only cancels the two tokens.
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(
                grace_secs = grace.as_secs_f64(),
                "{name}: no more leases; the running job may finish within the grace period"
            );
            s.draining.cancel();
            tokio::select! {
                _ = tokio::time::sleep(grace) => tracing::info!("grace period over"),
                _ = term.recv() => tracing::info!("second SIGTERM: not waiting any longer"),
                _ = int.recv() => tracing::info!("second SIGINT: not waiting any longer"),
            }
            s.hard.cancel();
        });
        Ok(shutdown)
    }
}
