//! Unblock (`unblock.sql`): an operator moves a lane stopped by its failed head (`block`
//! policy) on to its next job; the failed job stays failed.

use super::Outcome;
use crate::error::{Error, Result};
use sqlx::PgPool;

/// Unblocks lane `lane` of `queue`; returns the failed job that blocked it, or `None` when
/// the lane was not blocked (nothing changed).
pub async fn unblock(db: &PgPool, queue: &str, lane: &str) -> Result<Option<i64>> {
    let r = sqlx::query!(
        r#"SELECT o_outcome AS "outcome!: Outcome", o_failed_job AS failed_job
           FROM transitions.unblock($1, $2)"#,
        queue,
        lane
    )
    .fetch_one(db)
    .await?;
    match r.outcome {
        Outcome::Done => Ok(r.failed_job),
        Outcome::Refused | Outcome::Missing => Ok(None),
        other => Err(Error::Precondition(format!(
            "unblocking lane {lane} of {queue}: {other:?}"
        ))),
    }
}
