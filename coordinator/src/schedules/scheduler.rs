//! The scheduler: every replica runs one. It sleeps until the next tick of any enabled
//! schedule (read from the database, on its clock), at most a second — schedules created or
//! changed through another replica are seen within that poll — and is nudged at once when
//! this replica changes a schedule. Each due schedule is fired in its own transaction
//! (`db::schedules::fire`): two replicas never double a tick, and a tick one replica could
//! not fire (it crashed mid-way) is fired by the other. Old ticks are pruned now and then.
//!
//! Must never: enqueue a job outside the transaction of its tick.

use crate::db::schedules;
use crate::wake::Waker;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The longest sleep: a schedule changed through another replica waits at most this long.
const LONGEST: Duration = Duration::from_secs(1);
/// The shortest sleep between passes (a due schedule another replica holds is its to fire).
const SHORTEST: Duration = Duration::from_millis(5);
/// Due schedules handled per pass.
const BATCH: i64 = 100;
/// Ticks are kept this long, as history (the scheduler never looks back past fired_through).
const KEEP_TICKS: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often old ticks are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Nudges the scheduler; cheap to clone.
#[derive(Clone, Default)]
pub struct Scheduler {
    nudge: Arc<Notify>,
}

impl Scheduler {
    /// A schedule changed here: look again at when the next tick falls due.
    pub fn changed(&self) {
        self.nudge.notify_one();
    }

    /// Fires due ticks until `stop`; `grace`: how late a tick may still fire (older ones
    /// were missed while every replica was down and follow their schedule's `missed`).
    pub async fn run(
        self,
        pool: PgPool,
        waker: Arc<Waker>,
        grace: Duration,
        stop: CancellationToken,
    ) {
        let mut pass = Pass {
            pool,
            waker,
            grace,
            pruned: None,
        };
        loop {
            let sleep = match pass.run().await {
                Ok(sleep) => sleep,
                Err(e) => {
                    tracing::warn!(error = %e, "firing schedules failed; trying again");
                    LONGEST
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.nudge.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }
}

/// One scheduler's state between passes.
struct Pass {
    pool: PgPool,
    waker: Arc<Waker>,
    grace: Duration,
    pruned: Option<Instant>,
}

impl Pass {
    /// Fires what is due; returns how long to sleep before the next tick.
    async fn run(&mut self) -> crate::error::Result<Duration> {
        let mut failed = false;
        for name in schedules::due(&self.pool, BATCH).await? {
            if let Err(e) = self.fire(&name).await {
                tracing::warn!(schedule = %name, error = %e, "firing a schedule failed; trying again");
                failed = true;
            }
        }
        self.prune().await;
        if failed {
            // A schedule that cannot fire now (its queue is full) stays due: not a spin.
            return Ok(LONGEST);
        }
        Ok(schedules::next_due(&self.pool)
            .await?
            .map_or(LONGEST, |d| d.clamp(SHORTEST, LONGEST)))
    }

    /// Fires one schedule's due ticks, then wakes agents for the jobs that are ready.
    async fn fire(&self, name: &str) -> crate::error::Result<()> {
        // The schedule's queue exists: schedules.queue references it.
        let fired =
            crate::error::retry_conflicts(|| schedules::fire(&self.pool, name, self.grace)).await?;
        if fired.missed {
            tracing::info!(schedule = %name, "ticks missed while no replica was running");
        }
        let mut ready: BTreeMap<&str, i64> = BTreeMap::new();
        for e in &fired.jobs {
            if e.created {
                crate::metrics::enqueued(&e.job.queue);
            }
            if e.ready_now {
                *ready.entry(e.job.queue.as_str()).or_default() += 1;
            }
        }
        for (queue, n) in ready {
            self.waker.request(Some(queue), n, "schedule");
        }
        if !fired.jobs.is_empty() {
            tracing::debug!(schedule = %name, jobs = fired.jobs.len(), "schedule fired");
        }
        Ok(())
    }

    /// Deletes old ticks, at most once per `PRUNE_EVERY`.
    async fn prune(&mut self) {
        if self.pruned.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
            return;
        }
        self.pruned = Some(Instant::now());
        match schedules::prune(&self.pool, KEEP_TICKS, 10_000).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(ticks = n, "old schedule ticks pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning schedule ticks failed"),
        }
    }
}
