//! Fail (`fail.sql`): an attempt ended badly. Whether the job retries, fails for good, goes
//! back without counting the attempt or ends cancelled is decided in that one function, on
//! the database's clock, from how the attempt ended ([`AttemptEnd`]).

use super::Outcome;
use super::lease::{Leased, Leaser};
use crate::db::states::JobState;
use crate::error::Result;
use sqlx::PgPool;

/// How an attempt ended badly; mirrors `CREATE TYPE attempt_end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "attempt_end", rename_all = "lowercase")]
pub enum AttemptEnd {
    /// Retry after the backoff while attempts remain, else fail.
    Retryable,
    /// Fail now.
    Permanent,
    /// Hand back without counting the attempt (the agent is shutting down).
    Released,
    /// The handler stopped because cancellation was requested.
    Cancelled,
    /// The lease lapsed (the reaper): like `Retryable`, only while still lapsed.
    Expired,
}

/// A failed attempt as reported.
#[derive(Debug, Clone)]
pub struct Failure {
    /// How it ended.
    pub end: AttemptEnd,
    /// The error (already cut to size); empty keeps the job's last error.
    pub error: String,
    /// The handler's own wait before the retry, instead of the backoff.
    pub retry_after_ms: Option<i64>,
}

/// What a Fail did.
#[derive(Debug, Clone)]
pub struct Failed {
    /// The job's state now: scheduled or pending (retries), failed, or cancelled.
    pub state: JobState,
    /// The job's queue.
    pub queue: String,
    /// False for a repeat of a report already applied (its reply was lost).
    pub now: bool,
}

/// Records the failed attempt of job `id` held with `token`.
pub async fn fail(db: &PgPool, id: i64, token: i64, f: &Failure) -> Result<Failed> {
    let r = sqlx::query!(
        r#"SELECT o_outcome AS "outcome!: Outcome", o_state AS "state: JobState",
                  o_queue AS queue
           FROM transitions.fail($1, $2, $3, $4, $5)"#,
        id,
        token,
        f.end as AttemptEnd,
        f.error,
        f.retry_after_ms,
    )
    .fetch_one(db)
    .await?;
    let now = r.outcome.of_report(id, token, "")?;
    failed(id, token, now, r.state, r.queue)
}

/// Records the failed attempt, then leases `next` its next job, in one round trip. A repeat
/// of the same request gets back the lease it took.
pub async fn fail_and_lease(
    db: &PgPool,
    id: i64,
    token: i64,
    f: &Failure,
    next: Leaser<'_>,
) -> Result<(Failed, Option<Leased>)> {
    let r = sqlx::query!(
        r#"SELECT o_outcome AS "outcome!: Outcome", o_state AS "state: JobState",
                  o_queue AS queue, o_next AS "next: Leased"
           FROM transitions.fail_and_lease($1, $2, $3, $4, $5, $6, $7, $8)"#,
        id,
        token,
        f.end as AttemptEnd,
        f.error,
        f.retry_after_ms,
        next.agent_id,
        next.queues,
        next.request_id,
    )
    .fetch_one(db)
    .await?;
    let now = r.outcome.of_report(id, token, "")?;
    Ok((failed(id, token, now, r.state, r.queue)?, r.next))
}

fn failed(
    id: i64,
    token: i64,
    now: bool,
    state: Option<JobState>,
    queue: Option<String>,
) -> Result<Failed> {
    match (state, queue) {
        (Some(state), Some(queue)) => Ok(Failed { state, queue, now }),
        // A repeat whose job was purged since: as stale as it gets.
        _ => Err(crate::error::Error::stale_token(id, token)),
    }
}
