//! Bulk operator actions on a queue's failed jobs: each job goes through the very transition
//! a single retry or cancel uses (`transitions.retry`, `transitions.cancel`), one after the
//! other in id order, inside one statement, so the state rules live in one place.

use crate::error::Result;
use sqlx::PgPool;

/// Most jobs one bulk call changes; the caller is told when more remain.
pub const MAX_BULK: i64 = 10_000;

/// What a bulk call did: jobs changed, and whether failed jobs remain beyond [`MAX_BULK`].
#[derive(Debug, Clone, Copy)]
#[allow(missing_docs)]
pub struct Bulk {
    pub count: i64,
    pub more: bool,
}

/// Retries every failed job of `queue` (at most [`MAX_BULK`]). A job that left `failed`
/// between the selection and its transition is refused by the transition and not counted.
pub async fn retry_failed(db: &PgPool, queue: &str) -> Result<Bulk> {
    let r = sqlx::query!(
        r#"WITH f AS (SELECT id FROM jobs WHERE queue = $1 AND state = 'failed'
                      ORDER BY id LIMIT $2::int8 + 1),
                picked AS (SELECT id FROM f ORDER BY id LIMIT $2::int8)
           SELECT (SELECT count(*) FROM f) > $2::int8 AS "more!",
                  count(*) FILTER (WHERE t.o_outcome = 'done') AS "count!"
           FROM picked CROSS JOIN LATERAL transitions.retry(picked.id) t"#,
        queue,
        MAX_BULK
    )
    .fetch_one(db)
    .await?;
    Ok(Bulk {
        count: r.count,
        more: r.more,
    })
}

/// Cancels (discards) every failed job of `queue` (at most [`MAX_BULK`]); lanes they
/// blocked move on, as with a single cancel.
pub async fn cancel_failed(db: &PgPool, queue: &str) -> Result<Bulk> {
    let r = sqlx::query!(
        r#"WITH f AS (SELECT id FROM jobs WHERE queue = $1 AND state = 'failed'
                      ORDER BY id LIMIT $2::int8 + 1),
                picked AS (SELECT id FROM f ORDER BY id LIMIT $2::int8)
           SELECT (SELECT count(*) FROM f) > $2::int8 AS "more!",
                  count(*) FILTER (WHERE t.o_outcome = 'done') AS "count!"
           FROM picked CROSS JOIN LATERAL transitions.cancel(picked.id) t"#,
        queue,
        MAX_BULK
    )
    .fetch_one(db)
    .await?;
    Ok(Bulk {
        count: r.count,
        more: r.more,
    })
}
