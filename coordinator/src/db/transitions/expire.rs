//! Expire (`expire.sql`): the reaper's transition. Jobs whose lease lapsed (their agent died
//! or lost the network) end the attempt as Fail decides for an expiry.

use crate::db::states::JobState;
use crate::error::Result;
use sqlx::PgPool;

/// A job whose lapsed lease was ended.
#[derive(Debug, Clone)]
pub struct Expired {
    /// The job.
    pub id: i64,
    /// Its queue.
    pub queue: String,
    /// Its lane, if keyed.
    pub lane: Option<String>,
    /// The agent that held the lease.
    pub agent_id: Option<String>,
    /// The job's trace context, for the log line.
    pub traceparent: Option<String>,
    /// Its state now: pending or scheduled (retried), failed, or cancelled.
    pub state: JobState,
}

/// Ends up to `limit` lapsed leases, oldest lapse first. Several replicas may run this at
/// once: each job is ended by one of them.
pub async fn expire(db: &PgPool, limit: i32) -> Result<Vec<Expired>> {
    Ok(sqlx::query_as!(
        Expired,
        r#"SELECT o_id AS "id!", o_queue AS "queue!", o_lane AS lane, o_agent AS agent_id,
                  o_traceparent AS traceparent, o_state AS "state!: JobState"
           FROM transitions.expire($1)"#,
        limit,
    )
    .fetch_all(db)
    .await?)
}
