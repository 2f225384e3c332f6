//! A queue's recent history, minute by minute, for the admin page's charts: jobs completed
//! and failed, and how long they waited before their start.

use crate::error::Result;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// One minute of history (by the minute its jobs finished).
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct Minute {
    /// The start of the minute.
    pub minute: DateTime<Utc>,
    pub completed: i64,
    pub failed: i64,
    /// Wait before the last attempt's start, from when the job could first run (the later of
    /// created_at and run_at), of the jobs that finished in this minute; 0 when none.
    pub wait_p50_ms: i64,
    pub wait_p95_ms: i64,
}

/// The last `minutes` minutes of `queue` (every queue when `None`), oldest first, every
/// minute present; the last one is the current minute. Reads only the jobs finished in the
/// window, through the partial index jobs_finished (finished_at), whatever the history held.
pub async fn minutes(db: &PgPool, queue: Option<&str>, minutes: i32) -> Result<Vec<Minute>> {
    let rows = sqlx::query!(
        r#"WITH m AS (
               SELECT generate_series(date_trunc('minute', now()) - ($2::int4 - 1) * interval '1 minute',
                                      date_trunc('minute', now()), interval '1 minute') AS minute
           ), f AS (
               SELECT date_trunc('minute', j.finished_at) AS minute, j.state,
                      greatest(extract(epoch FROM j.started_at - greatest(j.created_at, j.run_at)), 0)
                          * 1000 AS wait_ms
               FROM jobs j
               WHERE j.state IN ('completed', 'failed')
                 AND j.finished_at >= date_trunc('minute', now()) - ($2::int4 - 1) * interval '1 minute'
                 AND ($1::text IS NULL OR j.queue = $1)
           )
           SELECT m.minute AS "minute!",
                  count(f.state) FILTER (WHERE f.state = 'completed') AS "completed!",
                  count(f.state) FILTER (WHERE f.state = 'failed') AS "failed!",
                  coalesce(round(percentile_cont(0.5) WITHIN GROUP (ORDER BY f.wait_ms)), 0)::int8
                      AS "wait_p50_ms!",
                  coalesce(round(percentile_cont(0.95) WITHIN GROUP (ORDER BY f.wait_ms)), 0)::int8
                      AS "wait_p95_ms!"
           FROM m LEFT JOIN f ON f.minute = m.minute
           GROUP BY m.minute
           ORDER BY m.minute"#,
        queue,
        minutes
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Minute {
            minute: r.minute,
            completed: r.completed,
            failed: r.failed,
            wait_p50_ms: r.wait_p50_ms,
            wait_p95_ms: r.wait_p95_ms,
        })
        .collect())
}
