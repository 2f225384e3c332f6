//! Cheap aggregate counts for the metrics gauges and the KEDA scaler. They read the `lanes`
//! table and the partial indexes of unfinished jobs (`jobs_unkeyed_ready`, `jobs_running`),
//! never the finished jobs, so their cost follows the live work, not the history.

use crate::error::Result;
use sqlx::{FromRow, PgPool};

/// Where the unfinished jobs of one queue stand. The pending ones are split four ways:
/// `ready + delayed + waiting + blocked` is every pending job of the queue.
#[derive(Debug, Clone, Default, FromRow, PartialEq, Eq)]
pub struct Depth {
    /// Queue name.
    pub queue: String,
    /// Could run now: a lane's head or an unkeyed job that is due.
    pub ready: i64,
    /// A lane's head or an unkeyed job not yet due (delay, retry backoff).
    pub delayed: i64,
    /// Queued behind their lane's head (pending or running).
    pub waiting: i64,
    /// Pending in a lane stopped by its failed head (`block` policy).
    pub blocked: i64,
    /// Leased by an agent.
    pub running: i64,
    /// Lanes stopped by a failed head.
    pub blocked_lanes: i64,
}

// `lanes.queued` counts a lane's unfinished jobs, head included (a blocked lane's failed
// head is no longer counted), so a lane's waiting jobs come without reading them.
const DEPTH: &str = "WITH l AS (
    SELECT queue,
      count(*) FILTER (WHERE state = 'ready' AND ready_at <= now()) AS ready,
      count(*) FILTER (WHERE state = 'ready' AND ready_at > now()) AS delayed,
      sum(greatest(queued - 1, 0)) FILTER (WHERE state <> 'blocked') AS waiting,
      sum(queued) FILTER (WHERE state = 'blocked') AS blocked,
      count(*) FILTER (WHERE state = 'blocked') AS blocked_lanes
    FROM lanes GROUP BY queue
  ), u AS (
    SELECT queue, count(*) FILTER (WHERE run_at <= now()) AS ready,
      count(*) FILTER (WHERE run_at > now()) AS delayed
    FROM jobs WHERE state = 'pending' AND lane_key IS NULL GROUP BY queue
  ), r AS (
    SELECT queue, count(*) AS running FROM jobs WHERE state = 'running' GROUP BY queue
  )
  SELECT q.name AS queue,
    (COALESCE(l.ready, 0) + COALESCE(u.ready, 0))::int8 AS ready,
    (COALESCE(l.delayed, 0) + COALESCE(u.delayed, 0))::int8 AS delayed,
    COALESCE(l.waiting, 0)::int8 AS waiting,
    COALESCE(l.blocked, 0)::int8 AS blocked,
    COALESCE(r.running, 0)::int8 AS running,
    COALESCE(l.blocked_lanes, 0)::int8 AS blocked_lanes
  FROM queues q
  LEFT JOIN l ON l.queue = q.name
  LEFT JOIN u ON u.queue = q.name
  LEFT JOIN r ON r.queue = q.name
  ORDER BY q.name";

// Jobs that need an agent, for autoscaling: running ones, plus ready ones of queues that are
// not paused, each part capped at $2 (an index probe bounded by the cap) and, in a queue with
// `max_running`, at the room it leaves. $1 empty: every queue.
const NEEDING_AGENT: &str = "SELECT COALESCE(sum(r.n + CASE
      WHEN q.paused THEN 0
      WHEN q.max_running IS NULL THEN rd.n
      ELSE least(rd.n, greatest(q.max_running - r.n, 0)) END), 0)::int8
  FROM queues q
  CROSS JOIN LATERAL (SELECT count(*) AS n FROM jobs j
    WHERE j.state = 'running' AND j.queue = q.name) r
  CROSS JOIN LATERAL (SELECT
    (SELECT count(*) FROM (SELECT 1 FROM lanes l WHERE l.queue = q.name AND l.state = 'ready'
       AND l.ready_at <= now() LIMIT $2) a)
    + (SELECT count(*) FROM (SELECT 1 FROM jobs j WHERE j.queue = q.name AND j.state = 'pending'
       AND j.lane_key IS NULL AND j.run_at <= now() LIMIT $2) b) AS n) rd
  WHERE cardinality($1::text[]) = 0 OR q.name = ANY($1)";

impl Depth {
    /// Every pending job of the queue, wherever it waits.
    pub fn pending(&self) -> i64 {
        self.ready + self.delayed + self.waiting + self.blocked
    }
}

/// Where the unfinished jobs of every queue stand.
pub async fn depth(db: &PgPool) -> Result<Vec<Depth>> {
    Ok(sqlx::query_as(DEPTH).fetch_all(db).await?)
}

/// Jobs running or ready to run in `queues` (empty: all), each queue's ready part capped
/// at `cap`.
pub async fn needing_agent(db: &PgPool, queues: &[String], cap: i64) -> Result<i64> {
    Ok(sqlx::query_scalar(NEEDING_AGENT)
        .bind(queues)
        .bind(cap)
        .fetch_one(db)
        .await?)
}

// The metrics' fallback when a job finished here was leased through another replica.
const RUN_OF: &str = "SELECT queue,
    extract(epoch FROM finished_at - started_at)::float8 AS run_s
  FROM jobs WHERE id = $1";

/// Job `id`'s queue and, once finished, its last run time in seconds.
pub async fn run_of(db: &PgPool, id: i64) -> Result<Option<(String, Option<f64>)>> {
    Ok(sqlx::query_as(RUN_OF).bind(id).fetch_optional(db).await?)
}
