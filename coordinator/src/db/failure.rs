//! Failed attempts: Fail (retry with backoff, fail for good, release, cancelled) and the
//! reaper's expiry of lapsed leases. Like every transition, each first locks the job's lane
//! and is guarded by `(id, lease_token, state = 'running')`.

use super::jobs::JobState;
use super::lanes;
use super::lease::{Leased, Leaser, lease, stale_or_missing};
use super::queues::FailurePolicy;
use crate::error::{Error, Result, retry_conflicts};
use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use sqlx::{FromRow, PgPool};

const HELD: &str = "SELECT j.attempt, j.max_attempts, j.cancel_requested, j.lease_expires_at,
    q.failure_policy, q.backoff_initial_ms, q.backoff_max_ms
  FROM jobs j JOIN queues q ON q.name = j.queue
  WHERE j.id = $1 AND j.lease_token = $2 AND j.state = 'running'
  FOR UPDATE OF j";

const TO_PENDING: &str = "UPDATE jobs SET state = 'pending', attempt = attempt - $2,
    run_at = $3, last_error = COALESCE($4, last_error), lease_expires_at = NULL
  WHERE id = $1 RETURNING queue, lane_key";

const TO_FINISHED: &str = "UPDATE jobs SET state = $2, last_error = COALESCE($3, last_error),
    finished_at = now(), lease_expires_at = NULL
  WHERE id = $1 RETURNING COALESCE(failure_callback_url, callback_url)";

/// The `job.failed` callback, in the same transaction as the failure (migration 7).
const OUTBOX_FAILED: &str = "SELECT lanes_outbox_failed($1)";

/// The global `job.failed` event, and `lane.blocked` when the failure stops its lane ($2),
/// in the same transaction as the failure (migration 10); only when this coordinator has
/// event endpoints (`lanes.events`, see `db::connect`).
const EVENTS_FAILED: &str = "INSERT INTO events (event_type, queue, lane, job_id, data)
  SELECT t.event_type, j.queue, j.lane_key, j.id,
         jsonb_build_object('error', j.last_error, 'attempts', j.attempt,
                            'agent_id', j.agent_id, 'failed_at', lanes_iso(j.finished_at))
  FROM jobs j, (VALUES ('job.failed', true), ('lane.blocked', $2)) AS t (event_type, wanted)
  WHERE j.id = $1 AND t.wanted AND (t.event_type = 'job.failed' OR j.lane_key IS NOT NULL)
    AND current_setting('lanes.events', true) = 'on'";

const EXPIRED: &str = "SELECT id, lease_token, agent_id, queue, lane_key, traceparent FROM jobs
  WHERE state = 'running' AND lease_expires_at < now()
  ORDER BY lease_expires_at LIMIT $1";

/// How an attempt ended badly.
#[derive(Debug, Clone, Default)]
pub struct Failure {
    /// Error message (already truncated).
    pub error: String,
    /// False: permanent, no retry.
    pub retryable: bool,
    /// Overrides the backoff of this retry.
    pub retry_after_ms: Option<i64>,
    /// Give the job back without counting the attempt.
    pub release: bool,
    /// The handler stopped because the job was cancelled.
    pub cancelled: bool,
    /// Only act if the lease has lapsed (the reaper).
    pub only_if_expired: bool,
}

#[derive(FromRow)]
struct Held {
    attempt: i32,
    max_attempts: i32,
    cancel_requested: bool,
    lease_expires_at: Option<DateTime<Utc>>,
    failure_policy: FailurePolicy,
    backoff_initial_ms: i64,
    backoff_max_ms: i64,
}

/// Records a failed attempt of a job held with `token` and returns the job's new state
/// (and the agent's next job when `next` is given).
pub async fn fail(
    pool: &PgPool,
    id: i64,
    token: i64,
    f: &Failure,
    next: Option<&Leaser<'_>>,
) -> Result<(JobState, Option<Leased>)> {
    retry_conflicts(|| fail_once(pool, id, token, f, next)).await
}

async fn fail_once(
    pool: &PgPool,
    id: i64,
    token: i64,
    f: &Failure,
    next: Option<&Leaser<'_>>,
) -> Result<(JobState, Option<Leased>)> {
    let mut tx = pool.begin().await?;
    let lane = lanes::lock_of_job(&mut tx, id).await?;
    let held: Option<Held> = sqlx::query_as(HELD)
        .bind(id)
        .bind(token)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(held) = held else {
        return Err(stale_or_missing(&mut *tx, id, token).await);
    };
    if f.only_if_expired && held.lease_expires_at.is_some_and(|t| t >= Utc::now()) {
        return Err(Error::Precondition(format!("job {id}'s lease was renewed")));
    }
    let error = (!f.error.is_empty()).then_some(f.error.as_str());
    let state = decide(&held, f);
    match state {
        JobState::Pending => {
            let (uncount, run_at) = if f.release {
                (1, Utc::now())
            } else {
                (0, Utc::now() + retry_delay(&held, f.retry_after_ms))
            };
            sqlx::query(TO_PENDING)
                .bind(id)
                .bind(uncount)
                .bind(run_at)
                .bind(error)
                .execute(&mut *tx)
                .await?;
            if let Some(lane) = &lane {
                lanes::relink(&mut tx, lane, 0, None).await?;
            }
        }
        _ => {
            let (url,): (Option<String>,) = sqlx::query_as(TO_FINISHED)
                .bind(id)
                .bind(state)
                .bind(error)
                .fetch_one(&mut *tx)
                .await?;
            if state == JobState::Failed && url.is_some() {
                sqlx::query(OUTBOX_FAILED)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            let block = (state == JobState::Failed && held.failure_policy == FailurePolicy::Block)
                .then_some(id);
            if state == JobState::Failed {
                sqlx::query(EVENTS_FAILED)
                    .bind(id)
                    .bind(block.is_some())
                    .execute(&mut *tx)
                    .await?;
            }
            if let Some(lane) = &lane {
                lanes::relink(&mut tx, lane, -1, block).await?;
            }
        }
    }
    let leased = match next {
        Some(who) => lease(&mut tx, who.queues, &who.one()).await?.pop(),
        None => None,
    };
    tx.commit().await?;
    Ok((state, leased))
}

fn decide(held: &Held, f: &Failure) -> JobState {
    // Cancellation wins even over a release: handed back, the job would be pending, and a
    // pending job is cancelled at once; running it again would run a cancelled job.
    if f.cancelled || held.cancel_requested {
        JobState::Cancelled
    } else if f.release || (f.retryable && held.attempt < held.max_attempts) {
        JobState::Pending
    } else {
        JobState::Failed
    }
}

/// Exponential backoff with ±20 % jitter: initial × 2^(attempt-1), capped.
fn retry_delay(held: &Held, retry_after_ms: Option<i64>) -> Duration {
    if let Some(ms) = retry_after_ms {
        return Duration::milliseconds(ms.clamp(0, held.backoff_max_ms.max(0)));
    }
    let exp = u32::try_from(held.attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(30);
    let base = held
        .backoff_initial_ms
        .saturating_mul(1i64 << exp)
        .min(held.backoff_max_ms);
    let jitter = rand::rng().random_range(0.8..=1.2);
    Duration::milliseconds((base as f64 * jitter) as i64)
}

/// A job whose lapsed lease the reaper ended.
#[derive(Debug, Clone)]
pub struct Reaped {
    /// The job.
    pub id: i64,
    /// Its queue.
    pub queue: String,
    /// Its state now: pending (retried), failed (attempts exhausted) or cancelled.
    pub state: JobState,
}

/// Returns lapsed leases to their lanes (counting the attempt), at most `limit` per call;
/// returns each job reaped.
/// Several replicas may reap at once: the token and expiry guards let one of them win.
pub async fn reap(pool: &PgPool, limit: i64) -> Result<Vec<Reaped>> {
    type Row = (
        i64,
        i64,
        Option<String>,
        String,
        Option<String>,
        Option<String>,
    );
    let expired: Vec<Row> = sqlx::query_as(EXPIRED).bind(limit).fetch_all(pool).await?;
    let mut reaped = Vec::new();
    for (id, token, agent, queue, lane, traceparent) in expired {
        let f = Failure {
            error: format!(
                "lease expired: agent {} stopped heartbeating",
                agent.as_deref().unwrap_or("?")
            ),
            retryable: true,
            only_if_expired: true,
            ..Failure::default()
        };
        match fail(pool, id, token, &f, None).await {
            Ok((state, _)) => {
                // The fields of every line about a job (trace_id: from the job's context).
                let trace_id = traceparent.as_deref().and_then(|t| t.split('-').nth(1));
                tracing::warn!(
                    job.id = id,
                    queue = %queue,
                    lane = lane.as_deref().unwrap_or(""),
                    agent.id = agent.as_deref().unwrap_or(""),
                    trace_id,
                    ?state,
                    "lease expired; job returned to its lane"
                );
                reaped.push(Reaped { id, queue, state });
            }
            Err(Error::Precondition(_) | Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(reaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(attempt: i32) -> Held {
        Held {
            attempt,
            max_attempts: 3,
            cancel_requested: false,
            lease_expires_at: None,
            failure_policy: FailurePolicy::Continue,
            backoff_initial_ms: 5_000,
            backoff_max_ms: 60_000,
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        for (attempt, base) in [
            (1, 5_000),
            (2, 10_000),
            (3, 20_000),
            (6, 60_000),
            (40, 60_000),
        ] {
            let d = retry_delay(&held(attempt), None).num_milliseconds();
            assert!(
                (base * 8 / 10..=base * 12 / 10).contains(&d),
                "attempt {attempt}: {d}"
            );
        }
        assert_eq!(retry_delay(&held(1), Some(1234)).num_milliseconds(), 1234);
    }

    #[test]
    fn outcome_of_a_failure() {
        let retry = Failure {
            retryable: true,
            ..Failure::default()
        };
        assert_eq!(decide(&held(1), &retry), JobState::Pending);
        assert_eq!(decide(&held(3), &retry), JobState::Failed);
        assert_eq!(decide(&held(1), &Failure::default()), JobState::Failed);
        let release = Failure {
            release: true,
            ..Failure::default()
        };
        assert_eq!(decide(&held(3), &release), JobState::Pending);
        let mut cancelled = held(1);
        cancelled.cancel_requested = true;
        assert_eq!(decide(&cancelled, &retry), JobState::Cancelled);
        assert_eq!(decide(&cancelled, &release), JobState::Cancelled);
    }
}
