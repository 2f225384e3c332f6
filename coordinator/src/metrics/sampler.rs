//! The gauges read from the database: queue depth by state, running jobs, blocked lanes and
//! connected agents. Sampled when Prometheus scrapes (at most once per `MIN_INTERVAL`, so
//! concurrent scrapes share one sample), which costs nothing while nobody scrapes and is
//! never older than the scrape. The queries read the live work only (`db::gauges`).

use super::{AGENTS, JOBS_RUNNING, LANES_BLOCKED, QUEUE_DEPTH};
use crate::db::{agents, gauges};
use sqlx::PgPool;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Scrapes closer together than this reuse the last sample.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// A slow database leaves the previous values in place rather than stalling the scrape.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Samples the database gauges.
pub struct Sampler {
    pool: PgPool,
    stale_ms: i64,
    last: Mutex<Option<Instant>>,
}

impl Sampler {
    /// A sampler on `pool`; agents not seen for `stale_ms` do not count as connected.
    pub fn new(pool: PgPool, stale_ms: i64) -> Self {
        Sampler {
            pool,
            stale_ms,
            last: Mutex::new(None),
        }
    }

    /// Refreshes the gauges unless they were sampled less than `MIN_INTERVAL` ago.
    pub async fn refresh(&self) {
        let mut last = self.last.lock().await;
        if last.is_some_and(|t| t.elapsed() < MIN_INTERVAL) {
            return;
        }
        match tokio::time::timeout(TIMEOUT, self.sample()).await {
            Ok(Ok(())) => *last = Some(Instant::now()),
            Ok(Err(e)) => tracing::warn!(error = %e, "sampling the metrics gauges failed"),
            Err(_) => tracing::warn!("sampling the metrics gauges timed out"),
        }
    }

    async fn sample(&self) -> crate::error::Result<()> {
        for d in gauges::depth(&self.pool).await? {
            let states = [
                ("ready", d.ready),
                ("delayed", d.delayed),
                ("waiting", d.waiting),
                ("blocked", d.blocked),
                ("running", d.running),
            ];
            for (state, n) in states {
                ::metrics::gauge!(QUEUE_DEPTH, "queue" => d.queue.clone(), "state" => state)
                    .set(n as f64);
            }
            ::metrics::gauge!(JOBS_RUNNING, "queue" => d.queue.clone()).set(d.running as f64);
            ::metrics::gauge!(LANES_BLOCKED, "queue" => d.queue).set(d.blocked_lanes as f64);
        }
        let (connected, asleep) = agents::counts(&self.pool, self.stale_ms, None).await?;
        ::metrics::gauge!(AGENTS, "state" => "awake").set((connected - asleep) as f64);
        ::metrics::gauge!(AGENTS, "state" => "asleep").set(asleep as f64);
        Ok(())
    }
}
