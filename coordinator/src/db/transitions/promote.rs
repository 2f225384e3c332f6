//! Promote (`promote.sql`): scheduled jobs and lanes that fell due become leasable, so the
//! lease indexes hold only rows that can run.

use crate::error::Result;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

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

/// When the next scheduled job or lane falls due; `None` when nothing is scheduled.
pub async fn next_due(db: &PgPool) -> Result<Option<DateTime<Utc>>> {
    Ok(
        sqlx::query_scalar!(r#"SELECT transitions.next_due() AS "due""#)
            .fetch_one(db)
            .await?,
    )
}
