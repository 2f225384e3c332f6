//! Reading lanes for operators: the blocked ones, the busiest ones, and one lane's jobs in
//! run order. Reads the `lanes` rows (one per active lane) and the lane's own index entries,
//! never the whole job table.

use super::jobs::JobRow;
use super::states::LaneState;
use crate::error::Result;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// One active lane as the admin page shows it.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct LaneRow {
    pub queue: String,
    pub lane_key: String,
    pub state: LaneState,
    /// Unfinished jobs (a blocked lane's failed head is not one).
    pub queued: i32,
    pub head_job_id: i64,
    /// The head, when it runs now.
    pub running_job_id: Option<i64>,
    /// Enqueue time of the oldest waiting (pending) job.
    pub oldest_pending_at: Option<DateTime<Utc>>,
    /// The lane row's `ready_at`.
    pub since: DateTime<Utc>,
}

/// Blocked lanes of `queue` (every queue when `None`), blocked longest first (index
/// lanes_blocked).
pub async fn blocked(db: &PgPool, queue: Option<&str>, limit: i64) -> Result<Vec<LaneRow>> {
    let rows = sqlx::query!(
        r#"SELECT l.queue, l.lane_key, l.state AS "state: LaneState", l.queued, l.head_job_id,
                  l.ready_at,
                  (SELECT j.created_at FROM jobs j
                   WHERE j.queue = l.queue AND j.lane_key = l.lane_key AND j.state = 'pending'
                   ORDER BY j.id LIMIT 1) AS oldest_pending_at
           FROM lanes l
           WHERE l.state = 'blocked' AND ($1::text IS NULL OR l.queue = $1)
           ORDER BY l.ready_at, l.queue, l.lane_key
           LIMIT $2"#,
        queue,
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| LaneRow {
            queue: r.queue,
            lane_key: r.lane_key,
            running_job_id: None,
            state: r.state,
            queued: r.queued,
            head_job_id: r.head_job_id,
            oldest_pending_at: r.oldest_pending_at,
            since: r.ready_at,
        })
        .collect())
}

/// Lanes of `queue` (every queue when `None`) with the most unfinished jobs first. Sorts the
/// active lanes' rows: their number is bounded by the work in flight, not by history.
pub async fn busiest(db: &PgPool, queue: Option<&str>, limit: i64) -> Result<Vec<LaneRow>> {
    let rows = sqlx::query!(
        r#"SELECT l.queue, l.lane_key, l.state AS "state: LaneState", l.queued, l.head_job_id,
                  l.ready_at,
                  (SELECT j.created_at FROM jobs j
                   WHERE j.queue = l.queue AND j.lane_key = l.lane_key AND j.state = 'pending'
                   ORDER BY j.id LIMIT 1) AS oldest_pending_at
           FROM lanes l
           WHERE $1::text IS NULL OR l.queue = $1
           ORDER BY l.queued DESC, l.ready_at, l.queue, l.lane_key
           LIMIT $2"#,
        queue,
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| LaneRow {
            running_job_id: (r.state == LaneState::Running).then_some(r.head_job_id),
            queue: r.queue,
            lane_key: r.lane_key,
            state: r.state,
            queued: r.queued,
            head_job_id: r.head_job_id,
            oldest_pending_at: r.oldest_pending_at,
            since: r.ready_at,
        })
        .collect())
}

/// Most unfinished jobs [`lane_jobs`] lists.
pub const MAX_UNFINISHED: i64 = 500;

/// A lane's jobs in run order: the unfinished ones (running first, then waiting by id, at
/// most [`MAX_UNFINISHED`] + 1 so the caller can tell there are more), and the `finished`
/// most recently finished ones, newest first. Both read index jobs_queue_lane.
pub async fn lane_jobs(
    db: &PgPool,
    queue: &str,
    lane: &str,
    finished: i64,
) -> Result<(Vec<JobRow>, Vec<JobRow>)> {
    let unfinished = sqlx::query_scalar!(
        r#"SELECT transitions.view(j) AS "job!: JobRow" FROM jobs j
           WHERE j.queue = $1 AND j.lane_key = $2 AND j.state IN ('pending', 'running')
           ORDER BY j.state = 'running' DESC, j.id
           LIMIT $3"#,
        queue,
        lane,
        MAX_UNFINISHED + 1
    )
    .fetch_all(db)
    .await?;
    let done = sqlx::query_scalar!(
        r#"SELECT transitions.view(j) AS "job!: JobRow" FROM jobs j
           WHERE j.queue = $1 AND j.lane_key = $2
             AND j.state IN ('completed', 'failed', 'cancelled')
           ORDER BY j.finished_at DESC, j.id DESC
           LIMIT $3"#,
        queue,
        lane,
        finished
    )
    .fetch_all(db)
    .await?;
    Ok((unfinished, done))
}
