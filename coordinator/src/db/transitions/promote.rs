//! Promote (`promote.sql`): scheduled jobs and lanes that fell due become leasable, so the
//! lease indexes hold only rows that can run.

use crate::error::Result;
use sqlx::PgPool;
use std::time::Duration;

/// Promotes up to `limit` due jobs and `limit` due lanes; returns how many became ready in
/// each queue (agents to wake).
pub async fn promote(db: &PgPool, limit: i32) -> Result<Vec<(String, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT o_queue AS "queue!", o_ready AS "ready!" FROM transitions.promote($1)"#,
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.queue, r.ready)).collect())
}

/// How long until the next scheduled job or lane falls due, on the database's clock; `None`
/// when nothing is scheduled.
pub async fn next_due(db: &PgPool) -> Result<Option<Duration>> {
    let ms = sqlx::query_scalar!(r#"SELECT transitions.next_due_ms() AS "ms""#)
        .fetch_one(db)
        .await?;
    Ok(ms.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))))
}
