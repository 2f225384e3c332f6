//! Check (`check.sql`): lists every lane row or counter that disagrees with the jobs. Empty
//! when the transitions kept everything in step; the test suite asserts that after its load
//! and chaos runs, and an operator may run it (it reads every unfinished job).

use crate::error::Result;
use sqlx::PgPool;

/// One disagreement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    /// `lane` or `counts`.
    pub what: String,
    /// The queue.
    pub queue: String,
    /// The lane, for a lane row.
    pub lane: Option<String>,
    /// What disagrees.
    pub detail: String,
}

/// Every disagreement between lane rows, counters and jobs.
pub async fn check(db: &PgPool) -> Result<Vec<Disagreement>> {
    Ok(sqlx::query_as!(
        Disagreement,
        r#"SELECT o_what AS "what!", o_queue AS "queue!", o_lane AS lane, o_detail AS "detail!"
           FROM transitions.check()"#
    )
    .fetch_all(db)
    .await?)
}
