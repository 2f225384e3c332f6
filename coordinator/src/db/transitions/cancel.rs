//! Cancel (`cancel.sql`): a client cancels a job: at once if it waits, at its agent's next
//! heartbeat if it runs; a failed one ends cancelled too (freeing a lane it blocked).

use super::Outcome;
use crate::db::jobs::JobRow;
use crate::error::{Error, Result};
use sqlx::PgPool;

/// Cancels job `id` (or flags it, while it runs); returns the job as it is now.
pub async fn cancel(db: &PgPool, id: i64) -> Result<JobRow> {
    let r = sqlx::query!(
        r#"SELECT o_outcome AS "outcome!: Outcome", o_job AS "job: JobRow"
           FROM transitions.cancel($1)"#,
        id
    )
    .fetch_one(db)
    .await?;
    match (r.outcome, r.job) {
        (Outcome::Done, Some(job)) => Ok(job),
        (Outcome::Refused, Some(job)) => Err(Error::Precondition(format!(
            "job {id} is {}; only pending, running or failed jobs can be cancelled",
            job.state.as_str()
        ))),
        _ => Err(Error::job_not_found(id)),
    }
}
