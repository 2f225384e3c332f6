//! Complete (`complete.sql`): a running job ends `completed`, its callback is written and
//! its lane advances, in one statement.

use super::Outcome;
use crate::error::Result;
use sqlx::PgPool;

/// A job completed by this call: its queue and run time, for the metrics.
#[derive(Debug, Clone)]
pub struct Completed {
    /// The job's queue.
    pub queue: String,
    /// From lease to completion, in milliseconds.
    pub run_ms: f64,
}

/// Completes job `id` held with `token`. `None` for a repeat of a completion already made
/// by the same holder (its reply was lost): nothing changed.
pub async fn complete(db: &PgPool, id: i64, token: i64, result: &str) -> Result<Option<Completed>> {
    let r = sqlx::query!(
        r#"SELECT o_outcome AS "outcome!: Outcome", o_queue AS queue, o_run_ms AS run_ms
           FROM transitions.complete($1, $2, $3)"#,
        id,
        token,
        result,
    )
    .fetch_one(db)
    .await?;
    let now = r.outcome.of_report(id, token, "")?;
    Ok(completed(now, r.queue, r.run_ms))
}

/// The completion made now, if it was (not a repeat).
pub(super) fn completed(
    now: bool,
    queue: Option<String>,
    run_ms: Option<f64>,
) -> Option<Completed> {
    match (now, queue) {
        (true, Some(queue)) => Some(Completed {
            queue,
            run_ms: run_ms.unwrap_or(0.0),
        }),
        _ => None,
    }
}
