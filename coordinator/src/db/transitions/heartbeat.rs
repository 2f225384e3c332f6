//! Heartbeat (`heartbeat.sql`): extends a running job's lease and records its progress.

use super::Outcome;
use crate::error::Result;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// What a heartbeat answers.
#[derive(Debug, Clone, Copy)]
pub struct Beat {
    /// A client asked to cancel the job: the agent stops it and reports `cancelled`.
    pub cancel_requested: bool,
    /// The lease now lapses at this time.
    pub expires_at: DateTime<Utc>,
}

/// Extends the lease of job `id` held with `token`; `None` leaves progress as it is.
pub async fn heartbeat(
    db: &PgPool,
    id: i64,
    token: i64,
    percent: Option<i32>,
    message: Option<&str>,
) -> Result<Beat> {
    let r = sqlx::query!(
        r#"SELECT o_outcome AS "outcome!: Outcome", o_cancel_requested AS cancel_requested,
                  o_expires_at AS expires_at
           FROM transitions.heartbeat($1, $2, $3, $4)"#,
        id,
        token,
        percent,
        message,
    )
    .fetch_one(db)
    .await?;
    r.outcome.of_report(id, token, "")?;
    match (r.cancel_requested, r.expires_at) {
        (Some(cancel_requested), Some(expires_at)) => Ok(Beat {
            cancel_requested,
            expires_at,
        }),
        _ => Err(crate::error::Error::stale_token(id, token)),
    }
}
