//! Purge (`purge.sql`): finished jobs past their age are deleted (retention, an operator's
//! clear), in bounded batches.

use crate::db::states::JobState;
use crate::error::Result;
use sqlx::PgPool;

/// Rows per purge statement, so none holds many row locks for long.
pub const BATCH: i32 = 1000;

/// Deletes up to [`BATCH`] finished jobs older than `older_than_s` seconds (or than their
/// queue's retention when `None`), of `queue` only when given; returns how many of each
/// state went.
pub async fn purge_batch(
    db: &PgPool,
    queue: Option<&str>,
    older_than_s: Option<i64>,
) -> Result<Vec<(JobState, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT o_state AS "state!: JobState", o_count AS "count!"
           FROM transitions.purge($1, $2, $3)"#,
        BATCH,
        older_than_s.map(|s| s as f64),
        queue,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.state, r.count)).collect())
}

/// Deletes finished jobs older than `hours`, batch after batch; returns how many.
pub async fn purge(db: &PgPool, queue: Option<&str>, hours: i32) -> Result<i64> {
    let mut total = 0;
    loop {
        let n: i64 = purge_batch(db, queue, Some(i64::from(hours) * 3600))
            .await?
            .iter()
            .map(|(_, n)| n)
            .sum();
        total += n;
        if n < i64::from(BATCH) {
            return Ok(total);
        }
    }
}
