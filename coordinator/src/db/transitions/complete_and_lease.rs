//! Complete and lease (`complete_and_lease.sql`): the hand-off. Completes a job and leases
//! the same agent its next one in one round trip and one commit, the lane's next job first
//! when nothing else ready ranks as high, so a hot lane never waits for a poll.

use super::Outcome;
use super::complete::{Completed, completed};
use super::lease::{Leased, Leaser};
use crate::error::Result;
use sqlx::PgPool;

/// Completes job `id` held with `token`, then leases `next` its next job. A repeat of the
/// same request (its reply was lost) answers as the first did: no new completion, the same
/// lease.
pub async fn complete_and_lease(
    db: &PgPool,
    id: i64,
    token: i64,
    result: &str,
    next: Leaser<'_>,
) -> Result<(Option<Completed>, Option<Leased>)> {
    let r = sqlx::query!(
        r#"SELECT o_outcome AS "outcome!: Outcome", o_queue AS queue, o_run_ms AS run_ms,
                  o_next AS "next: Leased"
           FROM transitions.complete_and_lease($1, $2, $3, $4, $5, $6)"#,
        id,
        token,
        result,
        next.agent_id,
        next.queues,
        next.request_id,
    )
    .fetch_one(db)
    .await?;
    let now = r.outcome.of_report(id, token, "")?;
    Ok((completed(now, r.queue, r.run_ms), r.next))
}

#[cfg(test)]
mod tests {
    use super::super::Outcome;

    #[test]
    fn a_repeat_is_no_completion_and_no_error() {
        assert_eq!(Outcome::Repeated.of_report(1, 2, "").ok(), Some(false));
        assert!(Outcome::Stale.of_report(1, 2, "").is_err());
    }
}
