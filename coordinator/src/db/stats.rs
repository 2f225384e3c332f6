//! Aggregate counts for stats, Wake and the safety tick. These are the only queries that
//! may read many rows; none of them runs on the Lease/Complete/Enqueue path.

use crate::error::Result;
use sqlx::PgPool;

/// Counts of one queue.
#[derive(Debug, Default, Clone)]
#[allow(missing_docs)]
pub struct QueueCounts {
    pub queue: String,
    pub pending: i64,
    pub running: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub ready: i64,
    pub blocked_lanes: i64,
    pub active_lanes: i64,
    pub avg_run_ms: f64,
    pub oldest_ready_ms: i64,
    pub paused: bool,
}

const BY_STATE: &str = "SELECT queue, state::text, count(*),
    count(*) FILTER (WHERE state = 'pending' AND run_at <= now())
  FROM jobs WHERE ($1::text IS NULL OR queue = $1) GROUP BY queue, state";
const LANES: &str = "SELECT queue, count(*) FILTER (WHERE state = 'blocked'), count(*)
  FROM lanes WHERE ($1::text IS NULL OR queue = $1) GROUP BY queue";
const RUN_TIME: &str = "SELECT queue,
    (avg(extract(epoch FROM finished_at - started_at)) * 1000)::float8
  FROM jobs WHERE state = 'completed' AND finished_at > now() - interval '1 hour'
    AND ($1::text IS NULL OR queue = $1) GROUP BY queue";
const OLDEST: &str = "SELECT queue, (extract(epoch FROM now() - min(t)) * 1000)::int8 FROM (
    SELECT queue, ready_at AS t FROM lanes WHERE state = 'ready' AND ready_at <= now()
    UNION ALL
    SELECT queue, run_at FROM jobs WHERE state = 'pending' AND lane_key IS NULL AND run_at <= now()
  ) x WHERE ($1::text IS NULL OR queue = $1) GROUP BY queue";
const QUEUES: &str =
    "SELECT name, paused FROM queues WHERE ($1::text IS NULL OR name = $1) ORDER BY name";
// Jobs an agent could lease now: ready lane heads plus ready unkeyed jobs of unpaused
// queues, counted up to $2 (an index probe bounded by the count asked for).
const READY: &str = "SELECT
  (SELECT count(*) FROM (SELECT 1 FROM lanes l JOIN queues q ON q.name = l.queue AND NOT q.paused
     WHERE l.state = 'ready' AND l.ready_at <= now() AND ($1::text IS NULL OR l.queue = $1)
     LIMIT $2) a)
  + (SELECT count(*) FROM (SELECT 1 FROM jobs j JOIN queues q ON q.name = j.queue AND NOT q.paused
     WHERE j.state = 'pending' AND j.lane_key IS NULL AND j.run_at <= now()
       AND ($1::text IS NULL OR j.queue = $1) LIMIT $2) b)";

/// Per-queue counts, for every queue or one.
pub async fn by_queue(db: &PgPool, queue: Option<&str>) -> Result<Vec<QueueCounts>> {
    let queues: Vec<(String, bool)> = sqlx::query_as(QUEUES).bind(queue).fetch_all(db).await?;
    let mut out: Vec<QueueCounts> = queues
        .into_iter()
        .map(|(queue, paused)| QueueCounts {
            queue,
            paused,
            ..QueueCounts::default()
        })
        .collect();
    let find = |out: &mut Vec<QueueCounts>, q: &str| out.iter().position(|c| c.queue == q);
    let states: Vec<(String, String, i64, i64)> =
        sqlx::query_as(BY_STATE).bind(queue).fetch_all(db).await?;
    for (q, state, n, ready) in states {
        let Some(i) = find(&mut out, &q) else {
            continue;
        };
        let c = &mut out[i];
        match state.as_str() {
            "pending" => (c.pending, c.ready) = (n, ready),
            "running" => c.running = n,
            "completed" => c.completed = n,
            "failed" => c.failed = n,
            _ => c.cancelled = n,
        }
    }
    let lanes: Vec<(String, i64, i64)> = sqlx::query_as(LANES).bind(queue).fetch_all(db).await?;
    for (q, blocked, active) in lanes {
        if let Some(i) = find(&mut out, &q) {
            (out[i].blocked_lanes, out[i].active_lanes) = (blocked, active);
        }
    }
    let runs: Vec<(String, Option<f64>)> =
        sqlx::query_as(RUN_TIME).bind(queue).fetch_all(db).await?;
    for (q, avg) in runs {
        if let Some(i) = find(&mut out, &q) {
            out[i].avg_run_ms = avg.unwrap_or(0.0);
        }
    }
    let oldest: Vec<(String, Option<i64>)> =
        sqlx::query_as(OLDEST).bind(queue).fetch_all(db).await?;
    for (q, ms) in oldest {
        if let Some(i) = find(&mut out, &q) {
            out[i].oldest_ready_ms = ms.unwrap_or(0);
        }
    }
    Ok(out)
}

/// Jobs that could be leased now, counted up to `upto`.
pub async fn ready(db: &PgPool, queue: Option<&str>, upto: i64) -> Result<i64> {
    Ok(sqlx::query_scalar::<_, Option<i64>>(READY)
        .bind(queue)
        .bind(upto)
        .fetch_one(db)
        .await?
        .unwrap_or(0))
}
