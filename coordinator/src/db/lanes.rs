//! The `lanes` table: one row per lane with unfinished work (or blocked by a failed job),
//! holding its head (the only job of the lane that may run) and when it is ready.
//!
//! Must never: recompute a lane without holding its row lock (taken by `lock_of_job` or by
//! the upsert in `add_jobs`) — that lock is what keeps an enqueue and a completion of the
//! same lane from each missing the other's job.

use crate::error::Result;
use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection};

/// A lane: its queue and key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, FromRow)]
pub struct LaneId {
    /// Queue name.
    pub queue: String,
    /// Lane key.
    pub lane_key: String,
}

impl LaneId {
    /// Builds a lane id.
    pub fn new(queue: &str, lane_key: &str) -> Self {
        LaneId {
            queue: queue.to_owned(),
            lane_key: lane_key.to_owned(),
        }
    }
}

/// The state of a lane row after it was (re)linked.
#[derive(Debug, Clone, FromRow)]
pub struct Linked {
    /// The lane's head job.
    pub head_job_id: i64,
    /// Unfinished jobs of the lane, including the head.
    pub queued: i32,
}

/// The lane's head after a relink, when it is ready to run.
#[derive(Debug, Clone, FromRow)]
pub struct ReadyHead {
    /// The head job.
    pub head_job_id: i64,
    /// When it may run.
    pub ready_at: DateTime<Utc>,
}

// The lane row is locked (FOR UPDATE) before the caller's next statement takes its snapshot:
// every enqueue that linked a job to this lane has then committed and is visible.
const LOCK_OF_JOB: &str = "SELECT l.queue, l.lane_key FROM lanes l
    JOIN jobs j ON j.queue = l.queue AND j.lane_key = l.lane_key
    WHERE j.id = $1 FOR UPDATE OF l";

// A new lane starts ready with the first new job as head; an existing lane only counts the
// jobs (they wait their turn). DO UPDATE, not DO NOTHING: it takes the row lock, so a
// completion that holds the lane finishes first and then sees these jobs. All lanes of a
// batch in one statement, in key order, so concurrent batches lock lanes in the same order.
const ADD_JOBS: &str =
    "INSERT INTO lanes (queue, lane_key, head_job_id, state, priority, ready_at, queued)
    SELECT queue, lane_key, head, 'ready', priority, ready_at, n
    FROM unnest($1::text[], $2::text[], $3::bigint[], $4::int[], $5::timestamptz[], $6::int[])
         AS u(queue, lane_key, head, priority, ready_at, n)
    ORDER BY queue, lane_key
    ON CONFLICT (queue, lane_key) DO UPDATE SET queued = lanes.queued + EXCLUDED.queued
    RETURNING queue, lane_key, head_job_id, queued";

// Recomputes a locked lane from its jobs (function `lanes_relink`, migrations/…_lane_functions.sql):
// a running job is the head; else a blocked lane whose failed head is still failed stays
// blocked; else the first pending job (by id: FIFO) is the head; else the row goes away.
const RELINK: &str = "SELECT o_state, o_head, o_ready_at FROM lanes_relink($1, $2, $3, $4)";

const UNBLOCK: &str = "UPDATE lanes SET state = 'ready', ready_at = now()
    WHERE queue = $1 AND lane_key = $2 AND state = 'blocked' RETURNING head_job_id";

/// Locks the lane row of job `id` and returns the lane; `None` for an unkeyed or unknown job.
pub async fn lock_of_job(conn: &mut PgConnection, id: i64) -> Result<Option<LaneId>> {
    Ok(sqlx::query_as(LOCK_OF_JOB)
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// New jobs of one lane within a batch: the first one's id, priority and run_at, and how many.
#[derive(Debug, Clone)]
pub struct NewInLane {
    /// The lane.
    pub lane: LaneId,
    /// The batch's first job of this lane (the head if the lane is new).
    pub first: i64,
    /// Its priority and run time (the lane's, if it becomes the head).
    pub priority: i32,
    /// See `priority`.
    pub run_at: DateTime<Utc>,
    /// Jobs of this lane in the batch.
    pub count: i32,
}

/// Links new jobs to their lanes, one entry per lane (distinct lanes only); returns each
/// lane's head and unfinished count afterwards.
pub async fn add_jobs(conn: &mut PgConnection, new: &[NewInLane]) -> Result<Vec<(LaneId, Linked)>> {
    let rows: Vec<(String, String, i64, i32)> = sqlx::query_as(ADD_JOBS)
        .bind(
            new.iter()
                .map(|n| n.lane.queue.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            new.iter()
                .map(|n| n.lane.lane_key.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(new.iter().map(|n| n.first).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.priority).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.run_at).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.count).collect::<Vec<_>>())
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(queue, lane_key, head_job_id, queued)| {
            (
                LaneId { queue, lane_key },
                Linked {
                    head_job_id,
                    queued,
                },
            )
        })
        .collect())
}

/// Recomputes the locked lane after its jobs changed. `delta` adjusts the unfinished count
/// (-1 when a job finished, +1 when one came back); `block` names a job that just failed
/// under the `block` policy, which then blocks the lane. Returns the head when it is ready.
pub async fn relink(
    conn: &mut PgConnection,
    lane: &LaneId,
    delta: i32,
    block: Option<i64>,
) -> Result<Option<ReadyHead>> {
    let row: (Option<String>, Option<i64>, Option<DateTime<Utc>>) = sqlx::query_as(RELINK)
        .bind(&lane.queue)
        .bind(&lane.lane_key)
        .bind(delta)
        .bind(block)
        .fetch_one(conn)
        .await?;
    Ok(match row {
        (Some(state), Some(head_job_id), Some(ready_at)) if state == "ready" => Some(ReadyHead {
            head_job_id,
            ready_at,
        }),
        _ => None,
    })
}

/// Moves a blocked lane past its failed head. Returns the failed job's id, or `None` if the
/// lane is not blocked.
pub async fn unblock(conn: &mut PgConnection, lane: &LaneId) -> Result<Option<i64>> {
    let failed: Option<i64> = sqlx::query_scalar(UNBLOCK)
        .bind(&lane.queue)
        .bind(&lane.lane_key)
        .fetch_optional(&mut *conn)
        .await?;
    if failed.is_some() {
        relink(conn, lane, 0, None).await?;
    }
    Ok(failed)
}
