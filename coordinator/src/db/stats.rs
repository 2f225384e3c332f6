//! Counts for GetStats, Wake and the safety tick, read from the counters the transitions keep
//! (`queue_counts`) and the live lane rows, never from an aggregate over the jobs on record:
//! they cost the same at 10^4 and 10^7 jobs.

use crate::error::Result;
use sqlx::PgPool;

/// Counts of one queue.
#[derive(Debug, Default, Clone)]
#[allow(missing_docs)]
pub struct QueueCounts {
    pub queue: String,
    pub paused: bool,
    /// Waiting for a run_at: unkeyed scheduled jobs and heads of scheduled lanes.
    pub scheduled: i64,
    /// Due, not running (ready ones included).
    pub pending: i64,
    /// Could be leased now.
    pub ready: i64,
    pub running: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub blocked_lanes: i64,
    /// Lanes with unfinished work (or blocked).
    pub active_lanes: i64,
    /// Average run of the queue's latest completed jobs (at most the last 1,000 within the
    /// hour); 0 when none.
    pub avg_run_ms: f64,
    /// How long the job first in the ready order has waited, in milliseconds.
    pub oldest_ready_ms: i64,
    /// The rate limit (0: none), its interval, and the jobs started in the last interval.
    pub rate_limit: i32,
    pub rate_interval_ms: i64,
    pub rate_started: i32,
}

/// Per-queue counts, for every queue or one.
pub async fn by_queue(db: &PgPool, queue: Option<&str>) -> Result<Vec<QueueCounts>> {
    // Without JIT: the planner prices the per-queue subqueries by a guess of the queue count
    // (490 for a table never analysed), which crosses jit_above_cost; compiling the query
    // then took 20-25 ms of a 30 ms GetStats, for a query that runs in 5. SET LOCAL keeps
    // it to this transaction, through a transaction pooler too.
    let mut tx = db.begin().await?;
    sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
    let rows = sqlx::query!(
        r#"SELECT q.name, q.paused,
               c.scheduled AS "scheduled!", c.pending AS "pending!", c.ready AS "ready!",
               c.running AS "running!", c.completed AS "completed!", c.failed AS "failed!",
               c.cancelled AS "cancelled!",
               (SELECT count(*) FROM lanes l WHERE l.queue = q.name AND l.state = 'blocked')
                   AS "blocked_lanes!",
               (SELECT count(*) FROM lanes l WHERE l.queue = q.name) AS "active_lanes!",
               transitions.recent_run_ms(q.name) AS "avg_run_ms!",
               (SELECT coalesce(extract(epoch FROM now() - min(h.since)) * 1000, 0)
                FROM ((SELECT l.ready_at AS since FROM lanes l
                       WHERE l.queue = q.name AND l.state = 'ready'
                       ORDER BY l.priority DESC, l.ready_at LIMIT 1)
                      UNION ALL
                      (SELECT j.run_at FROM jobs j
                       WHERE j.queue = q.name AND j.state = 'pending' AND j.lane_key IS NULL
                       ORDER BY j.priority DESC, j.run_at, j.id LIMIT 1)) h)::int8
                   AS "oldest_ready_ms!",
               coalesce(q.rate_limit, 0) AS "rate_limit!",
               coalesce(q.rate_interval_ms, 0) AS "rate_interval_ms!",
               (SELECT count(*) FROM queue_rates r, unnest(r.starts) s
                WHERE r.queue = q.name
                  AND s > now() - q.rate_interval_ms * interval '1 millisecond')::int4
                   AS "rate_started!"
           FROM queues q
           CROSS JOIN LATERAL (
               SELECT sum(scheduled)::int8 AS scheduled, sum(pending)::int8 AS pending,
                      sum(ready)::int8 AS ready, sum(running)::int8 AS running,
                      sum(completed)::int8 AS completed, sum(failed)::int8 AS failed,
                      sum(cancelled)::int8 AS cancelled
               FROM queue_counts WHERE queue = q.name) c
           WHERE $1::text IS NULL OR q.name = $1
           ORDER BY q.name"#,
        queue
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|r| QueueCounts {
            queue: r.name,
            paused: r.paused,
            scheduled: r.scheduled,
            pending: r.pending,
            ready: r.ready,
            running: r.running,
            completed: r.completed,
            failed: r.failed,
            cancelled: r.cancelled,
            blocked_lanes: r.blocked_lanes,
            active_lanes: r.active_lanes,
            avg_run_ms: r.avg_run_ms,
            oldest_ready_ms: r.oldest_ready_ms,
            rate_limit: r.rate_limit,
            rate_interval_ms: r.rate_interval_ms,
            rate_started: r.rate_started,
        })
        .collect())
}

/// Jobs that could be leased now in `queue` (every queue when `None`), paused queues left out.
pub async fn ready(db: &PgPool, queue: Option<&str>) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"SELECT coalesce(sum(c.ready), 0)::int8 AS "ready!" FROM queue_counts c
           JOIN queues q ON q.name = c.queue
           WHERE NOT q.paused AND ($1::text IS NULL OR c.queue = $1)"#,
        queue
    )
    .fetch_one(db)
    .await?)
}
