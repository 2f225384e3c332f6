//! Retry (`retry.sql`): an operator sends a failed or cancelled job back to pending with its
//! attempts reset; it takes its place in its lane by id.

use super::Outcome;
use crate::db::jobs::JobRow;
use crate::error::{Error, Result};
use sqlx::PgPool;

/// Retries job `id`; returns the job as it is now.
pub async fn retry(db: &PgPool, id: i64) -> Result<JobRow> {
    let r = sqlx::query!(
        r#"SELECT o_outcome AS "outcome!: Outcome", o_job AS "job: JobRow"
           FROM transitions.retry($1)"#,
        id
    )
    .fetch_one(db)
    .await?;
    match (r.outcome, r.job) {
        (Outcome::Done, Some(job)) => Ok(job),
        (Outcome::Refused, Some(job)) => Err(Error::Precondition(format!(
            "job {id} is {}; only failed or cancelled jobs can be retried",
            job.state.as_str()
        ))),
        _ => Err(Error::job_not_found(id)),
    }
}
