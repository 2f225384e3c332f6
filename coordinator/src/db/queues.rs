//! Per-queue settings (the `queues` table). A queue row is created with the defaults on
//! first use; every replica reads the same row, so settings agree across replicas.

use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgExecutor, PgPool};

/// What a lane does when one of its jobs ends `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "failure_policy", rename_all = "lowercase")]
pub enum FailurePolicy {
    /// The next job of the lane proceeds.
    Continue,
    /// The lane stops until an operator acts.
    Block,
}

/// A row of `queues`.
#[derive(Debug, Clone, FromRow)]
pub struct QueueSettings {
    /// Queue name.
    pub name: String,
    /// Attempts before a job ends `failed`.
    pub max_attempts: i32,
    /// First retry delay; doubled per attempt up to `backoff_max_ms`.
    pub backoff_initial_ms: i64,
    /// Cap of the retry delay.
    pub backoff_max_ms: i64,
    /// Lease TTL, extended by heartbeats.
    pub lease_ttl_ms: i64,
    /// Hard limit of one run.
    pub job_timeout_ms: i64,
    /// Completed jobs are purged after this.
    pub retention_completed_s: i64,
    /// Failed jobs are purged after this.
    pub retention_failed_s: i64,
    /// Backpressure limit of pending jobs.
    pub max_pending: Option<i64>,
    /// Cap of running jobs.
    pub max_running: Option<i32>,
    /// Leasing stopped.
    pub paused: bool,
    /// Lane behaviour after a failed job.
    pub failure_policy: FailurePolicy,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A partial update: `None` keeps the current value; `Some(None)` clears a nullable limit.
#[derive(Debug, Default, Clone)]
pub struct SettingsPatch {
    /// See [`QueueSettings`].
    pub max_attempts: Option<i32>,
    /// See [`QueueSettings`].
    pub backoff_initial_ms: Option<i64>,
    /// See [`QueueSettings`].
    pub backoff_max_ms: Option<i64>,
    /// See [`QueueSettings`].
    pub lease_ttl_ms: Option<i64>,
    /// See [`QueueSettings`].
    pub job_timeout_ms: Option<i64>,
    /// See [`QueueSettings`].
    pub retention_completed_s: Option<i64>,
    /// See [`QueueSettings`].
    pub retention_failed_s: Option<i64>,
    /// See [`QueueSettings`].
    pub max_pending: Option<Option<i64>>,
    /// See [`QueueSettings`].
    pub max_running: Option<Option<i32>>,
    /// See [`QueueSettings`].
    pub paused: Option<bool>,
    /// See [`QueueSettings`].
    pub failure_policy: Option<FailurePolicy>,
}

const ENSURE: &str = "INSERT INTO queues (name) VALUES ($1) ON CONFLICT (name) DO NOTHING";
const GET: &str = "SELECT * FROM queues WHERE name = $1";
const LIST: &str = "SELECT * FROM queues ORDER BY name";
// CASE keeps the current value when the patch leaves a field out. The CHECK constraints of
// the table reject out-of-range values, which `update` maps to INVALID_ARGUMENT.
const UPDATE: &str = "UPDATE queues SET
    max_attempts = COALESCE($2, max_attempts),
    backoff_initial_ms = COALESCE($3, backoff_initial_ms),
    backoff_max_ms = COALESCE($4, backoff_max_ms),
    lease_ttl_ms = COALESCE($5, lease_ttl_ms),
    job_timeout_ms = COALESCE($6, job_timeout_ms),
    retention_completed_s = COALESCE($7, retention_completed_s),
    retention_failed_s = COALESCE($8, retention_failed_s),
    max_pending = CASE WHEN $9 THEN $10 ELSE max_pending END,
    max_running = CASE WHEN $11 THEN $12 ELSE max_running END,
    paused = COALESCE($13, paused),
    failure_policy = COALESCE($14, failure_policy),
    updated_at = now()
  WHERE name = $1
  RETURNING *";

/// Creates the queue with default settings if it does not exist yet.
pub async fn ensure(db: impl PgExecutor<'_>, name: &str) -> Result<()> {
    sqlx::query(ENSURE).bind(name).execute(db).await?;
    Ok(())
}

/// The queue's settings, creating the queue with defaults if needed.
pub async fn get(pool: &PgPool, name: &str) -> Result<QueueSettings> {
    ensure(pool, name).await?;
    Ok(sqlx::query_as(GET).bind(name).fetch_one(pool).await?)
}

/// Every known queue.
pub async fn list(pool: &PgPool) -> Result<Vec<QueueSettings>> {
    Ok(sqlx::query_as(LIST).fetch_all(pool).await?)
}

/// Applies a patch, creating the queue first if needed.
pub async fn update(pool: &PgPool, name: &str, p: &SettingsPatch) -> Result<QueueSettings> {
    ensure(pool, name).await?;
    sqlx::query_as(UPDATE)
        .bind(name)
        .bind(p.max_attempts)
        .bind(p.backoff_initial_ms)
        .bind(p.backoff_max_ms)
        .bind(p.lease_ttl_ms)
        .bind(p.job_timeout_ms)
        .bind(p.retention_completed_s)
        .bind(p.retention_failed_s)
        .bind(p.max_pending.is_some())
        .bind(p.max_pending.flatten())
        .bind(p.max_running.is_some())
        .bind(p.max_running.flatten())
        .bind(p.paused)
        .bind(p.failure_policy)
        .fetch_one(pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.code().as_deref() == Some("23514") => {
                Error::Invalid(format!(
                    "setting out of range ({}); see the AdminService docs",
                    d.message()
                ))
            }
            _ => Error::Db(e),
        })
}
