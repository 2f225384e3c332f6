//! Lease (`lease.sql`): the agent's next job, marked running with a new fencing token; a
//! repeated request gets back the lease it took.

use crate::error::Result;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// A job just leased, with the queue settings its agent runs it under; mirrors the
/// `leased_job` record.
#[derive(Debug, Clone, sqlx::Type)]
#[sqlx(type_name = "leased_job")]
#[allow(missing_docs)]
pub struct Leased {
    pub id: i64,
    pub queue: String,
    pub lane_key: Option<String>,
    /// JSON text, as enqueued.
    pub payload: String,
    /// This attempt's number (1-based).
    pub attempt: i32,
    pub max_attempts: i32,
    pub lease_token: i64,
    pub lease_expires_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    /// When the job was due: its wait is `started_at - run_at`.
    pub run_at: DateTime<Utc>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// The lease's length without a heartbeat.
    pub lease_ttl_ms: i64,
    /// The run's hard limit (the job's own, else its queue's).
    pub job_timeout_ms: i64,
    /// The run's soft limit, if any.
    pub soft_timeout_ms: Option<i64>,
}

/// Who asks for a lease: an agent, the queues it serves, and its id for this request.
#[derive(Debug, Clone, Copy)]
pub struct Leaser<'a> {
    /// Agent id.
    pub agent_id: &'a str,
    /// Queues it serves.
    pub queues: &'a [String],
    /// The agent's id for this request; a repeat gets the same lease back.
    pub request_id: Option<&'a str>,
}

/// Leases `who` the best ready job of its queues, or `None` when nothing is ready. One
/// statement; a job leased also marks the agent awake.
pub async fn lease(db: &PgPool, who: Leaser<'_>) -> Result<Option<Leased>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT transitions.lease($1, $2, $3) AS "job: Leased""#,
        who.agent_id,
        who.queues,
        who.request_id,
    )
    .fetch_one(db)
    .await?)
}
