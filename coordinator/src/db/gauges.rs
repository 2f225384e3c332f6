//! Cheap counts for the metrics gauges, the watchdog and the KEDA scaler: the transitions'
//! counters plus the blocked lanes (a partial index), never the finished jobs, so their cost
//! follows the live work, not the history.

use crate::error::Result;
use sqlx::PgPool;

/// Where the unfinished jobs of one queue stand. The pending ones are split four ways:
/// `ready + delayed + waiting + blocked` is every pending job of the queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Depth {
    /// Queue name.
    pub queue: String,
    /// Could run now: a lane's head or an unkeyed job that is due.
    pub ready: i64,
    /// A lane's head or an unkeyed job not yet due (delay, retry backoff).
    pub delayed: i64,
    /// Queued behind their lane's head (which is pending or running).
    pub waiting: i64,
    /// Pending in a lane stopped by its failed head (`block` policy).
    pub blocked: i64,
    /// Leased by an agent.
    pub running: i64,
    /// Lanes stopped by a failed head.
    pub blocked_lanes: i64,
}

impl Depth {
    /// Every pending job of the queue, wherever it waits.
    pub fn pending(&self) -> i64 {
        self.ready + self.delayed + self.waiting + self.blocked
    }
}

/// Where the unfinished jobs of every queue stand.
pub async fn depth(db: &PgPool) -> Result<Vec<Depth>> {
    let rows = sqlx::query!(
        r#"SELECT q.name AS "queue!", c.scheduled AS "scheduled!", c.pending AS "pending!",
                  c.ready AS "ready!", c.running AS "running!",
                  b.blocked AS "blocked!", b.lanes AS "blocked_lanes!"
           FROM queues q
           CROSS JOIN LATERAL (
               SELECT sum(scheduled)::int8 AS scheduled, sum(pending)::int8 AS pending,
                      sum(ready)::int8 AS ready, sum(running)::int8 AS running
               FROM queue_counts WHERE queue = q.name) c
           CROSS JOIN LATERAL (
               SELECT coalesce(sum(queued), 0)::int8 AS blocked, count(*) AS lanes
               FROM lanes WHERE queue = q.name AND state = 'blocked') b
           ORDER BY q.name"#
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Depth {
            queue: r.queue,
            ready: r.ready,
            delayed: r.scheduled,
            waiting: (r.pending - r.ready - r.blocked).max(0),
            blocked: r.blocked,
            running: r.running,
            blocked_lanes: r.blocked_lanes,
        })
        .collect())
}

/// Jobs running or ready to run in `queues` (empty: all): what needs an agent. A paused
/// queue's ready jobs wait on purpose; a queue with `max_running` counts only the room left.
pub async fn needing_agent(db: &PgPool, queues: &[String]) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"SELECT coalesce(sum(c.running + CASE
                  WHEN q.paused THEN 0
                  WHEN q.max_running IS NULL THEN c.ready
                  ELSE least(c.ready, greatest(q.max_running - c.running, 0)) END), 0)::int8
                  AS "n!"
           FROM queues q
           CROSS JOIN LATERAL (
               SELECT sum(running)::int8 AS running, sum(ready)::int8 AS ready
               FROM queue_counts WHERE queue = q.name) c
           WHERE cardinality($1::text[]) = 0 OR q.name = ANY($1)"#,
        queues
    )
    .fetch_one(db)
    .await?)
}
