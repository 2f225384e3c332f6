//! Reading jobs: one job, a filtered page, a job's place in its lane. Every change of a job
//! is a transition (`transitions/`); nothing here writes.

use super::states::JobState;
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};

/// A job as clients and operators see it; mirrors the `job_view` record
/// (`transitions.view(jobs)`), field for field.
#[derive(Debug, Clone, sqlx::Type)]
#[sqlx(type_name = "job_view")]
#[allow(missing_docs)]
pub struct JobRow {
    pub id: i64,
    pub queue: String,
    pub lane_key: Option<String>,
    /// JSON text, as enqueued.
    pub payload: String,
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
    /// JSON text.
    pub result: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The job's own limits (None: its queue's).
    pub timeout_ms: Option<i64>,
    pub soft_timeout_ms: Option<i64>,
    pub backoff_initial_ms: Option<i64>,
    pub backoff_max_ms: Option<i64>,
}

/// One job, or `NOT_FOUND`.
pub async fn get(db: &PgPool, id: i64) -> Result<JobRow> {
    sqlx::query_scalar!(
        r#"SELECT transitions.view(j) AS "job!: JobRow" FROM jobs j WHERE j.id = $1"#,
        id
    )
    .fetch_optional(db)
    .await?
    .ok_or_else(|| Error::job_not_found(id))
}

/// Asks that job `id`'s finish be announced (NOTIFY `lanes_done`, see `crate::waiters`);
/// returns its state now, or `NOT_FOUND`. Sets a flag only: the job's state is untouched.
pub async fn watch_finish(db: &PgPool, id: i64) -> Result<JobState> {
    sqlx::query_scalar!(
        r#"UPDATE jobs SET notify_finish = true WHERE id = $1
           RETURNING state AS "state: JobState""#,
        id
    )
    .fetch_optional(db)
    .await?
    .ok_or_else(|| Error::job_not_found(id))
}

/// Unfinished jobs of the lane ahead of `job` while it waits in its lane; -1 otherwise.
/// Reads the lane's waiting jobs before it (index jobs_lane_waiting): for a status read,
/// never for the hot path.
pub async fn position(db: &PgPool, job: &JobRow) -> Result<i64> {
    let Some(lane) = job
        .lane_key
        .as_deref()
        .filter(|_| job.state == JobState::Pending)
    else {
        return Ok(-1);
    };
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM jobs
           WHERE queue = $1 AND lane_key = $2 AND id < $3 AND state IN ('pending', 'running')"#,
        job.queue,
        lane,
        job.id
    )
    .fetch_one(db)
    .await?)
}

/// Filters of [`list`].
#[derive(Debug, Default, Clone)]
#[allow(missing_docs)]
pub struct ListFilter {
    pub queue: Option<String>,
    pub lane: Option<String>,
    /// Any of these states; empty: every state.
    pub states: Vec<JobState>,
    /// Only ids below this (paging); None = from the newest.
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// Jobs matching `f`, newest first. Built at run time: the filters vary.
pub async fn list(db: &PgPool, f: &ListFilter) -> Result<Vec<JobRow>> {
    let mut q: QueryBuilder<Postgres> =
        QueryBuilder::new("SELECT transitions.view(j) FROM jobs j WHERE true");
    if let Some(queue) = &f.queue {
        q.push(" AND j.queue = ").push_bind(queue);
    }
    if let Some(lane) = &f.lane {
        q.push(" AND j.lane_key = ").push_bind(lane);
    }
    if !f.states.is_empty() {
        let names: Vec<&str> = f.states.iter().map(|s| s.as_str()).collect();
        q.push(" AND j.state = ANY(")
            .push_bind(names)
            .push("::job_state[])");
    }
    if let Some(before) = f.before_id {
        q.push(" AND j.id < ").push_bind(before);
    }
    q.push(" ORDER BY j.id DESC LIMIT ").push_bind(f.limit);
    Ok(q.build_query_scalar().fetch_all(db).await?)
}
