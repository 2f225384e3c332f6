//! The reaper: every `every`, the jobs whose lease lapsed (agent died, network cut) end their
//! attempt (transitions/expire.sql): back to their lane's head after the backoff, or failed
//! when no attempt is left. Runs on every replica; the fencing-token guard lets one win.

use crate::db::transitions::expire;
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
        match expire::expire(&pool, 100).await {
            Ok(expired) => {
                for r in expired {
                    // The fields of every line about a job (trace_id: from the job's context).
                    let trace_id = r.traceparent.as_deref().and_then(|t| t.split('-').nth(1));
                    tracing::warn!(
                        job.id = r.id,
                        queue = %r.queue,
                        lane = r.lane.as_deref().unwrap_or(""),
                        agent.id = r.agent_id.as_deref().unwrap_or(""),
                        trace_id,
                        state = r.state.as_str(),
                        "lease expired; the attempt ended"
                    );
                    crate::metrics::lease_expired(&r.queue, r.state);
                    waker.request(Some(&r.queue), 1, "tick");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reaper pass failed"),
        }
    }
}
