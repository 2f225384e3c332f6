//! The `jobs` table: enqueue, read, list, cancel, retry, purge, stats. Lease-related
//! transitions (lease, heartbeat, complete, fail) live in `lease.rs`.
//!
//! Every statement that changes a keyed job's state first locks its lane row
//! (`lanes::lock_of_job`), so lane rows and job rows are always locked in the order
//! lane → job, and a lane's head is recomputed from a snapshot taken after the lock.

use super::lanes::{self, LaneId, NewInLane};
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgPool, Postgres, QueryBuilder};
use std::collections::BTreeMap;

/// The life of a job; mirrors `CREATE TYPE job_state` and `lanes.v1.JobState`.
///
/// ```text
/// pending ─lease─▶ running ─complete─▶ completed
///    ▲               ├─fail, attempts left / lease expired─▶ pending (still its lane's head)
///    │               ├─fail, exhausted or permanent─▶ failed ─retry (operator)─▶ pending
///    └───────────────┴─cancel─▶ cancelled (pending: at once; running: when the agent stops)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "job_state", rename_all = "lowercase")]
pub enum JobState {
    /// Waiting: ready, scheduled, or backing off.
    Pending,
    /// Leased by an agent.
    Running,
    /// Finished successfully.
    Completed,
    /// Attempts exhausted or permanent failure.
    Failed,
    /// Cancelled by a client.
    Cancelled,
}

impl JobState {
    /// True for completed, failed and cancelled.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }
}

/// A row of `jobs`.
#[derive(Debug, Clone, FromRow)]
#[allow(missing_docs)]
pub struct JobRow {
    pub id: i64,
    pub queue: String,
    pub lane_key: Option<String>,
    pub payload: serde_json::Value,
    pub priority: i32,
    pub state: JobState,
    pub run_at: DateTime<Utc>,
    pub attempt: i32,
    pub max_attempts: i32,
    pub idempotency_key: Option<String>,
    pub callback_url: Option<String>,
    pub failure_callback_url: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub lease_token: Option<i64>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub agent_id: Option<String>,
    pub cancel_requested: bool,
    pub progress_percent: Option<i32>,
    pub progress_message: Option<String>,
    pub result: Option<serde_json::Value>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A validated job to enqueue.
#[derive(Debug, Clone, Default)]
#[allow(missing_docs)]
pub struct NewJob {
    pub queue: String,
    pub lane: Option<String>,
    /// JSON text, already validated.
    pub payload: String,
    pub priority: i32,
    pub run_at: Option<DateTime<Utc>>,
    pub idempotency_key: Option<String>,
    pub callback_url: Option<String>,
    pub failure_callback_url: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// The outcome of enqueueing one job.
#[derive(Debug, Clone)]
pub struct Enqueued {
    /// The new job, or the existing one for a repeated idempotency key.
    pub job: JobRow,
    /// False when an existing job was returned.
    pub created: bool,
    /// Unfinished jobs of the lane ahead of this one; -1 for unkeyed jobs.
    pub position_in_lane: i64,
    /// True when this enqueue made a job ready to lease now (wake an agent).
    pub ready_now: bool,
}

// All jobs of a batch in one statement. Rows come back in insertion order (the SELECT's
// ORDER BY); rows skipped by an idempotency conflict are missing, which `enqueue` accounts for.
const INSERT_BATCH: &str = "
INSERT INTO jobs (queue, lane_key, payload, priority, run_at, max_attempts, idempotency_key,
                  callback_url, failure_callback_url, traceparent, tracestate)
SELECT i.queue, i.lane_key, i.payload::jsonb, i.priority, COALESCE(i.run_at, now()),
       q.max_attempts, i.idem, i.cb, i.fcb, i.tp, i.ts
FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::timestamptz[], $6::text[],
            $7::text[], $8::text[], $9::text[], $10::text[])
     WITH ORDINALITY AS i(queue, lane_key, payload, priority, run_at, idem, cb, fcb, tp, ts, ord)
JOIN queues q ON q.name = i.queue
ORDER BY i.ord
ON CONFLICT (queue, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING *";

const BY_IDEMPOTENCY: &str = "SELECT * FROM jobs WHERE queue = $1 AND idempotency_key = $2";
const GET: &str = "SELECT * FROM jobs WHERE id = $1";
const MAX_PENDING: &str =
    "SELECT name, max_pending FROM queues WHERE name = ANY($1) AND max_pending IS NOT NULL";
// Bounded by the queue's own limit, not by the backlog.
const COUNT_PENDING_UPTO: &str =
    "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE queue = $1 AND state = 'pending' LIMIT $2) t";
const POSITION: &str = "SELECT count(*) FROM jobs
    WHERE queue = $1 AND lane_key = $2 AND id < $3 AND state IN ('pending', 'running')";
const CANCEL_PENDING: &str = "UPDATE jobs SET state = 'cancelled', finished_at = now()
    WHERE id = $1 AND state = 'pending' RETURNING *";
const CANCEL_FAILED: &str =
    "UPDATE jobs SET state = 'cancelled' WHERE id = $1 AND state = 'failed' RETURNING *";
const FLAG_CANCEL: &str =
    "UPDATE jobs SET cancel_requested = true WHERE id = $1 AND state = 'running' RETURNING *";
const RETRY: &str = "UPDATE jobs SET state = 'pending', attempt = 0, run_at = now(),
      finished_at = NULL, cancel_requested = false, lease_expires_at = NULL, result = NULL
    WHERE id = $1 AND state IN ('failed', 'cancelled') RETURNING *";

/// Enqueues `jobs` (already validated) in the caller's transaction. All or nothing:
/// `RESOURCE_EXHAUSTED` if a queue would exceed its `max_pending` (the caller must then
/// roll back: the rows are already inserted).
pub async fn enqueue(conn: &mut PgConnection, jobs: &[NewJob]) -> Result<Vec<Enqueued>> {
    let inserted: Vec<JobRow> = insert_rows(conn, jobs).await?;
    // After the insert, so only jobs really added count: a repeated idempotency key adds
    // nothing and gets its job back even when the queue is full (n8n retries requests).
    check_max_pending(conn, &inserted).await?;
    let mut out = Vec::with_capacity(jobs.len());
    let mut rows = inserted.into_iter().peekable();
    for job in jobs {
        // A returned row matches this input unless the input's idempotency key conflicted.
        let matches = rows
            .peek()
            .is_some_and(|r| r.idempotency_key == job.idempotency_key && r.queue == job.queue);
        if matches {
            if let Some(row) = rows.next() {
                out.push(fresh(row));
            }
            continue;
        }
        let key = job.idempotency_key.as_deref().unwrap_or_default();
        let existing: JobRow = sqlx::query_as(BY_IDEMPOTENCY)
            .bind(&job.queue)
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        let position_in_lane = position(conn, &existing).await?;
        out.push(Enqueued {
            job: existing,
            created: false,
            position_in_lane,
            ready_now: false,
        });
    }
    link_lanes(conn, &mut out).await?;
    Ok(out)
}

fn fresh(job: JobRow) -> Enqueued {
    let ready_now = job.lane_key.is_none() && job.run_at <= Utc::now();
    Enqueued {
        job,
        created: true,
        position_in_lane: -1,
        ready_now,
    }
}

async fn insert_rows(conn: &mut PgConnection, jobs: &[NewJob]) -> Result<Vec<JobRow>> {
    let col = |f: fn(&NewJob) -> Option<String>| jobs.iter().map(f).collect::<Vec<_>>();
    Ok(sqlx::query_as(INSERT_BATCH)
        .bind(col(|j| Some(j.queue.clone())))
        .bind(col(|j| j.lane.clone()))
        .bind(col(|j| Some(j.payload.clone())))
        .bind(jobs.iter().map(|j| j.priority).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.run_at).collect::<Vec<_>>())
        .bind(col(|j| j.idempotency_key.clone()))
        .bind(col(|j| j.callback_url.clone()))
        .bind(col(|j| j.failure_callback_url.clone()))
        .bind(col(|j| j.traceparent.clone()))
        .bind(col(|j| j.tracestate.clone()))
        .fetch_all(&mut *conn)
        .await?)
}

/// Adds the new keyed jobs to their lanes (one upsert per lane, in key order so concurrent
/// batches lock lanes in the same order) and fills in positions and readiness.
async fn link_lanes(conn: &mut PgConnection, out: &mut [Enqueued]) -> Result<()> {
    let mut by_lane: BTreeMap<LaneId, Vec<usize>> = BTreeMap::new();
    for (i, e) in out.iter().enumerate() {
        if let (true, Some(lane)) = (e.created, &e.job.lane_key) {
            by_lane
                .entry(LaneId::new(&e.job.queue, lane))
                .or_default()
                .push(i);
        }
    }
    if by_lane.is_empty() {
        return Ok(());
    }
    let new: Vec<NewInLane> = by_lane
        .iter()
        .map(|(lane, idx)| {
            let first = &out[idx[0]].job;
            NewInLane {
                lane: lane.clone(),
                first: first.id,
                priority: first.priority,
                run_at: first.run_at,
                count: idx.len() as i32,
            }
        })
        .collect();
    let now = Utc::now();
    for (lane, linked) in lanes::add_jobs(conn, &new).await? {
        let Some(idx) = by_lane.get(&lane) else {
            continue;
        };
        for (n, &i) in idx.iter().enumerate() {
            let e = &mut out[i];
            e.position_in_lane = i64::from(linked.queued) - (idx.len() - n) as i64;
            e.ready_now = n == 0 && linked.head_job_id == e.job.id && e.job.run_at <= now;
        }
    }
    Ok(())
}

/// Fails if a queue that just received `added` holds more than its `max_pending`.
async fn check_max_pending(conn: &mut PgConnection, added: &[JobRow]) -> Result<()> {
    let mut wanted: BTreeMap<&str, i64> = BTreeMap::new();
    for j in added {
        *wanted.entry(j.queue.as_str()).or_default() += 1;
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = wanted.keys().copied().collect();
    let limits: Vec<(String, i64)> = sqlx::query_as(MAX_PENDING)
        .bind(&names)
        .fetch_all(&mut *conn)
        .await?;
    for (queue, max) in limits {
        // Counting one past the limit is enough to see it exceeded.
        let now: i64 = sqlx::query_scalar(COUNT_PENDING_UPTO)
            .bind(&queue)
            .bind(max.saturating_add(1))
            .fetch_one(&mut *conn)
            .await?;
        if now > max {
            let adding = wanted.get(queue.as_str()).copied().unwrap_or(0);
            return Err(Error::Exhausted(format!(
                "queue {queue} is full: {adding} more pending jobs would exceed its max_pending \
                 of {max}; retry later"
            )));
        }
    }
    Ok(())
}

/// Unfinished jobs of the lane ahead of `job` while it is pending; -1 otherwise.
pub async fn position(conn: &mut PgConnection, job: &JobRow) -> Result<i64> {
    match (&job.lane_key, job.state) {
        (Some(lane), JobState::Pending) => Ok(sqlx::query_scalar(POSITION)
            .bind(&job.queue)
            .bind(lane)
            .bind(job.id)
            .fetch_one(conn)
            .await?),
        _ => Ok(-1),
    }
}

/// One job, or `NOT_FOUND`.
pub async fn get(db: &PgPool, id: i64) -> Result<JobRow> {
    sqlx::query_as(GET)
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| Error::job_not_found(id))
}

/// Filters for [`list`].
#[derive(Debug, Default, Clone)]
#[allow(missing_docs)]
pub struct ListFilter {
    pub queue: Option<String>,
    pub lane: Option<String>,
    pub state: Option<JobState>,
    /// Only ids below this (paging); None = from the newest.
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// Jobs matching `f`, newest first.
pub async fn list(db: &PgPool, f: &ListFilter) -> Result<Vec<JobRow>> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new("SELECT * FROM jobs WHERE true");
    if let Some(queue) = &f.queue {
        q.push(" AND queue = ").push_bind(queue);
    }
    if let Some(lane) = &f.lane {
        q.push(" AND lane_key = ").push_bind(lane);
    }
    if let Some(state) = f.state {
        q.push(" AND state = ").push_bind(state);
    }
    if let Some(before) = f.before_id {
        q.push(" AND id < ").push_bind(before);
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(f.limit);
    Ok(q.build_query_as().fetch_all(db).await?)
}

/// Cancels a pending job at once, flags a running one for its agent, or moves a failed one
/// to cancelled (unblocking a lane it blocked). Returns the job.
pub async fn cancel(db: &PgPool, id: i64) -> Result<JobRow> {
    let mut tx = db.begin().await?;
    let lane = lanes::lock_of_job(&mut tx, id).await?;
    if let Some(job) = sqlx::query_as::<_, JobRow>(CANCEL_PENDING)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
    {
        if let Some(lane) = lane {
            lanes::relink(&mut tx, &lane, -1, None).await?;
        }
        tx.commit().await?;
        return Ok(job);
    }
    if let Some(job) = sqlx::query_as::<_, JobRow>(FLAG_CANCEL)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
    {
        tx.commit().await?;
        return Ok(job);
    }
    // A failed job is already out of its lane's count; cancelling it frees a lane it blocks.
    if let Some(job) = sqlx::query_as::<_, JobRow>(CANCEL_FAILED)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
    {
        if let Some(lane) = lane {
            lanes::relink(&mut tx, &lane, 0, None).await?;
        }
        tx.commit().await?;
        return Ok(job);
    }
    let job: Option<JobRow> = sqlx::query_as(GET)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    match job {
        None => Err(Error::job_not_found(id)),
        Some(j) => Err(Error::Precondition(format!(
            "job {id} is {:?}; only pending, running or failed jobs can be cancelled",
            j.state
        ))),
    }
}

/// Puts a failed or cancelled job back to pending with its attempts reset. In its lane it
/// takes its place by id: before later pending jobs, after a running one.
pub async fn retry(db: &PgPool, id: i64) -> Result<JobRow> {
    let mut tx = db.begin().await?;
    let lane = lanes::lock_of_job(&mut tx, id).await?;
    let job: Option<JobRow> = sqlx::query_as(RETRY)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(job) = job else {
        let current: Option<JobRow> = sqlx::query_as(GET)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        return match current {
            None => Err(Error::job_not_found(id)),
            Some(j) => Err(Error::Precondition(format!(
                "job {id} is {:?}; only failed or cancelled jobs can be retried",
                j.state
            ))),
        };
    };
    if let Some(lane_key) = &job.lane_key {
        let lane = lane.unwrap_or_else(|| lanes::LaneId::new(&job.queue, lane_key));
        lanes::relink(&mut tx, &lane, 1, None).await?;
    }
    tx.commit().await?;
    Ok(job)
}

// Finished jobs past their age, per state: `$2` seconds when given (PurgeJobs), else their
// queue's retention (completed and cancelled: retention_completed_s; failed:
// retention_failed_s). The first `finished_at` bound repeats the smallest threshold so the
// jobs_finished index bounds the scan; the second is exact per row. The failed head of a
// blocked lane is kept (the lane still needs it). SKIP LOCKED: replicas running retention at
// the same time, or an operator's retry, never wait on each other.
const PURGE: &str = "WITH doomed AS (
    SELECT j.id FROM jobs j JOIN queues q ON q.name = j.queue
    WHERE j.state IN ('completed', 'failed', 'cancelled')
      AND j.finished_at < now() - make_interval(secs => COALESCE($2::float8,
            (SELECT min(LEAST(retention_completed_s, retention_failed_s)) FROM queues)::float8))
      AND j.finished_at < now() - make_interval(secs => COALESCE($2::float8, (CASE
            WHEN j.state = 'failed' THEN q.retention_failed_s
            ELSE q.retention_completed_s END)::float8))
      AND ($3::text IS NULL OR j.queue = $3)
      AND NOT EXISTS (SELECT 1 FROM lanes l WHERE l.queue = j.queue AND l.lane_key = j.lane_key
                      AND l.head_job_id = j.id AND l.state = 'blocked')
    LIMIT $1 FOR UPDATE OF j SKIP LOCKED),
  gone AS (DELETE FROM jobs WHERE id IN (SELECT id FROM doomed) RETURNING state)
  SELECT state, count(*) FROM gone GROUP BY state";

/// Rows per purge statement, so none holds many row locks for long.
pub const PURGE_BATCH: i64 = 1000;

/// Deletes up to [`PURGE_BATCH`] finished jobs older than `older_than_s` seconds, or than
/// their queue's retention when `None`; returns how many of each state went.
pub async fn purge_batch(
    db: &PgPool,
    queue: Option<&str>,
    older_than_s: Option<i64>,
) -> Result<Vec<(JobState, i64)>> {
    Ok(sqlx::query_as(PURGE)
        .bind(PURGE_BATCH)
        .bind(older_than_s.map(|s| s as f64))
        .bind(queue)
        .fetch_all(db)
        .await?)
}

/// Deletes finished jobs older than `hours`, batch by batch (see [`purge_batch`]).
pub async fn purge(db: &PgPool, queue: Option<&str>, hours: i32) -> Result<i64> {
    let mut total = 0;
    loop {
        let n: i64 = purge_batch(db, queue, Some(i64::from(hours) * 3600))
            .await?
            .iter()
            .map(|(_, n)| n)
            .sum();
        total += n;
        if n < PURGE_BATCH {
            return Ok(total);
        }
    }
}
