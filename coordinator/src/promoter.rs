//! The promoter: scheduled work that falls due (a job's delay, a retry's backoff) becomes
//! leasable (transitions/promote.sql), and agents are woken for it. It sleeps until the next
//! due time, at most a second (work scheduled through another replica), and is nudged when
//! this replica schedules something sooner.
//!
//! Must never: lease or run anything; it only moves due rows into the ready indexes.

use crate::db::transitions::promote;
use crate::wake::Waker;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Rows promoted per statement, so none holds many row locks for long.
const BATCH: i32 = 1000;
/// The longest sleep: work scheduled through another replica waits at most this long.
const LONGEST: Duration = Duration::from_secs(1);
/// The shortest sleep between passes.
const SHORTEST: Duration = Duration::from_millis(5);

/// Nudges the promoter; cheap to clone.
#[derive(Clone, Default)]
pub struct Promoter {
    nudge: Arc<Notify>,
}

impl Promoter {
    /// Something was scheduled here: look again at when the next thing falls due.
    pub fn scheduled(&self) {
        self.nudge.notify_one();
    }

    /// Promotes due work until `stop`, waking agents for what became ready.
    pub async fn run(self, pool: PgPool, waker: Arc<Waker>, stop: CancellationToken) {
        loop {
            let sleep = match self.pass(&pool, &waker).await {
                Ok(sleep) => sleep,
                Err(e) => {
                    tracing::warn!(error = %e, "promoting due work failed; trying again");
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

    /// Promotes what is due; returns how long to sleep before the next thing falls due.
    async fn pass(&self, pool: &PgPool, waker: &Waker) -> crate::error::Result<Duration> {
        loop {
            let ready = promote::promote(pool, BATCH).await?;
            let n: i64 = ready.iter().map(|(_, n)| n).sum();
            for (queue, n) in &ready {
                waker.request(Some(queue), *n, "tick");
            }
            if n < i64::from(BATCH) {
                break;
            }
        }
        // At least SHORTEST: a due row another replica holds (SKIP LOCKED) is promoted by
        // that replica; this one must not spin meanwhile.
        Ok(promote::next_due(pool)
            .await?
            .map_or(LONGEST, |d| d.clamp(SHORTEST, LONGEST)))
    }
}
