//! The reaper: returns jobs whose lease lapsed (agent died, network cut) to their lane,
//! counting the attempt. Runs on every replica; the fencing-token guard lets one win.

use crate::db::failure;
use crate::wake::Waker;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Reaps lapsed leases every `every` until `stop`.
pub async fn run(pool: PgPool, waker: Arc<Waker>, every: Duration, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match failure::reap(&pool, 100).await {
            Ok(reaped) if reaped.is_empty() => {}
            Ok(reaped) => {
                tracing::info!(
                    reaped = reaped.len(),
                    "returned lapsed leases to their lanes"
                );
                for r in reaped {
                    crate::metrics::lease_expired(&r.queue, r.id, r.state);
                    waker.request(Some(&r.queue), 1, "tick");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reaper pass failed"),
        }
    }
}
