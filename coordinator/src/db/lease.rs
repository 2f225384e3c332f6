//! Leases and their fencing tokens: Lease, Heartbeat, Complete, Fail and the reaper's
//! expiry. Every outcome is guarded by `(id, lease_token, state = 'running')`, so a stale
//! holder changes nothing and gets `FAILED_PRECONDITION`.

use super::jobs::{JobRow, JobState};
use super::lanes;
use super::queues::FailurePolicy;
use crate::error::{Error, Result, retry_conflicts};
use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use sqlx::{FromRow, PgConnection, PgPool};
use std::sync::Mutex;
use std::time::Instant;

/// A job just leased, with the queue settings the agent needs to run it.
#[derive(Debug, Clone, FromRow)]
pub struct Leased {
    /// The job, now running with its new token.
    #[sqlx(flatten)]
    pub job: JobRow,
    /// The lease TTL: heartbeat well within it.
    pub lease_ttl_ms: i64,
    /// Hard limit of the run.
    pub job_timeout_ms: i64,
}

/// Who asks for a lease.
#[derive(Debug, Clone)]
pub struct Leaser<'a> {
    /// Agent id.
    pub agent_id: &'a str,
    /// Queues it serves.
    pub queues: &'a [String],
}

impl Leaser<'_> {
    /// The agent list of a single lease.
    fn one(&self) -> Vec<String> {
        vec![self.agent_id.to_owned()]
    }
}

// The lease probe is the function `lanes_lease` (migrations/…_lease_functions.sql): a few
// index probes per queue, however many jobs or lanes wait. $2 names the agents, one per job
// wanted; queues with `max_running` are only leased through `lease_room`'s lock ($4).
const LEASE: &str = "SELECT (r.o_job).*, r.o_ttl AS lease_ttl_ms, r.o_timeout AS job_timeout_ms
  FROM lanes_lease($1, $2, $3, $4) r";

// Complete, relink and lease the next job in one statement (function `lanes_complete_next`).
const COMPLETE_NEXT: &str =
    "SELECT (r.o_job).*, r.o_ttl AS lease_ttl_ms, r.o_timeout AS job_timeout_ms
  FROM lanes_complete_next($1, $2, $3, $4, $5) r";

const CAPPED: &str = "SELECT name FROM queues WHERE max_running IS NOT NULL";
// NO KEY UPDATE: serializes capped leases of the queue without blocking enqueues, whose
// foreign key takes KEY SHARE on the same row.
const LOCK_CAPPED: &str = "SELECT max_running FROM queues WHERE name = $1 FOR NO KEY UPDATE";
const COUNT_RUNNING: &str = "SELECT count(*) FROM jobs WHERE queue = $1 AND state = 'running'";

const HEARTBEAT: &str = "UPDATE jobs j SET
    lease_expires_at = now() + q.lease_ttl_ms * interval '1 millisecond',
    progress_percent = COALESCE($3, j.progress_percent),
    progress_message = COALESCE($4, j.progress_message)
  FROM queues q
  WHERE j.id = $1 AND j.lease_token = $2 AND j.state = 'running' AND q.name = j.queue
  RETURNING j.cancel_requested, j.lease_expires_at";

// Function `lanes_complete` (migrations/…_lane_functions.sql): locks the lane, completes the
// job if the token still holds it, advances the lane — one round trip.
const COMPLETE: &str = "SELECT lanes_complete($1, $2, $3)";

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
  WHERE id = $1 RETURNING queue, lane_key";

const EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1)";

const EXPIRED: &str = "SELECT id, lease_token, agent_id, queue FROM jobs
  WHERE state = 'running' AND lease_expires_at < now()
  ORDER BY lease_expires_at LIMIT $1";

/// Queues that have `max_running`, as last read, and when. Re-read at most every
/// `CAPPED_TTL`, so the common case (no cap) costs no extra statement per lease; a cap set
/// on another replica applies here within that time.
static CAPPED_CACHE: Mutex<Option<(Instant, Vec<String>)>> = Mutex::new(None);
const CAPPED_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Drops the cached list of capped queues (after a settings change on this replica).
pub fn forget_capped() {
    if let Ok(mut c) = CAPPED_CACHE.lock() {
        *c = None;
    }
}

async fn capped_among(conn: &mut PgConnection, queues: &[String]) -> Result<Vec<String>> {
    let cached = CAPPED_CACHE.lock().ok().and_then(|c| {
        c.as_ref()
            .filter(|(at, _)| at.elapsed() < CAPPED_TTL)
            .map(|(_, q)| q.clone())
    });
    let all = match cached {
        Some(q) => q,
        None => {
            let q: Vec<String> = sqlx::query_scalar(CAPPED).fetch_all(&mut *conn).await?;
            if let Ok(mut c) = CAPPED_CACHE.lock() {
                *c = Some((Instant::now(), q.clone()));
            }
            q
        }
    };
    Ok(all.into_iter().filter(|q| queues.contains(q)).collect())
}

/// Leases up to one ready job per agent in `agents` (all serving `queues`) in the caller's
/// transaction. The returned jobs name their agent in `agent_id`.
pub async fn lease(
    conn: &mut PgConnection,
    queues: &[String],
    agents: &[String],
) -> Result<Vec<Leased>> {
    let capped = capped_among(conn, queues).await?;
    let mut out = lease_uncapped(&mut *conn, queues, agents).await?;
    for queue in capped {
        if out.len() >= agents.len() {
            break;
        }
        let room = lease_room(conn, &queue)
            .await?
            .min((agents.len() - out.len()) as i64);
        if room > 0 {
            let rest = &agents[out.len()..out.len() + room as usize];
            let more: Vec<Leased> = sqlx::query_as(LEASE)
                .bind(std::slice::from_ref(&queue))
                .bind(rest)
                .bind(room)
                .bind(true)
                .fetch_all(&mut *conn)
                .await?;
            out.extend(more);
        }
    }
    Ok(out)
}

async fn lease_uncapped(
    db: impl sqlx::PgExecutor<'_>,
    queues: &[String],
    agents: &[String],
) -> Result<Vec<Leased>> {
    Ok(sqlx::query_as(LEASE)
        .bind(queues)
        .bind(agents)
        .bind(agents.len() as i64)
        .bind(false)
        .fetch_all(db)
        .await?)
}

/// How many more jobs a `max_running` queue may start, holding its lock until commit.
async fn lease_room(conn: &mut PgConnection, queue: &str) -> Result<i64> {
    let max: Option<i32> = sqlx::query_scalar(LOCK_CAPPED)
        .bind(queue)
        .fetch_one(&mut *conn)
        .await?;
    let running: i64 = sqlx::query_scalar(COUNT_RUNNING)
        .bind(queue)
        .fetch_one(&mut *conn)
        .await?;
    Ok(max.map_or(i64::MAX, |m| i64::from(m) - running))
}

/// Leases one job. Without a capped queue among `who.queues` this is one autocommit
/// statement; otherwise a transaction that holds the capped queue's lock while counting.
pub async fn lease_one(pool: &PgPool, who: &Leaser<'_>) -> Result<Option<Leased>> {
    let mut conn = pool.acquire().await?;
    if capped_among(&mut conn, who.queues).await?.is_empty() {
        return Ok(lease_uncapped(&mut *conn, who.queues, &who.one())
            .await?
            .pop());
    }
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let job = lease(&mut tx, who.queues, &who.one()).await?.pop();
    tx.commit().await?;
    Ok(job)
}

/// Extends the lease and records progress; returns (cancel requested, new expiry).
pub async fn heartbeat(
    pool: &PgPool,
    id: i64,
    token: i64,
    percent: Option<i32>,
    message: Option<&str>,
) -> Result<(bool, DateTime<Utc>)> {
    let row: Option<(bool, DateTime<Utc>)> = sqlx::query_as(HEARTBEAT)
        .bind(id)
        .bind(token)
        .bind(percent)
        .bind(message)
        .fetch_optional(pool)
        .await?;
    match row {
        Some(r) => Ok(r),
        None => Err(stale_or_missing(pool, id, token).await),
    }
}

async fn stale_or_missing(conn: impl sqlx::PgExecutor<'_>, id: i64, token: i64) -> Error {
    match sqlx::query_scalar::<_, bool>(EXISTS)
        .bind(id)
        .fetch_one(conn)
        .await
    {
        Ok(true) => Error::stale_token(id, token),
        Ok(false) => Error::job_not_found(id),
        Err(e) => Error::Db(e),
    }
}

/// Completes a job held with `token`; with `next`, also leases that agent its next job in
/// the same transaction (the lane just advanced competes fairly with lanes already waiting,
/// so a hot lane alone is handed over without a gap, but never starves others).
pub async fn complete(
    pool: &PgPool,
    id: i64,
    token: i64,
    result: serde_json::Value,
    next: Option<&Leaser<'_>>,
) -> Result<Option<Leased>> {
    retry_conflicts(|| complete_once(pool, id, token, result.clone(), next)).await
}

async fn complete_once(
    pool: &PgPool,
    id: i64,
    token: i64,
    result: serde_json::Value,
    next: Option<&Leaser<'_>>,
) -> Result<Option<Leased>> {
    // Without a next lease the completion is one autocommit statement; with one it is one
    // statement too (`lanes_complete_next`), unless a served queue has `max_running`: then
    // both run in a transaction that takes the capped queue's lock.
    let mut conn = pool.acquire().await?;
    let Some(who) = next else {
        complete_in(&mut conn, id, token, result).await?;
        return Ok(None);
    };
    if capped_among(&mut conn, who.queues).await?.is_empty() {
        let leased = sqlx::query_as(COMPLETE_NEXT)
            .bind(id)
            .bind(token)
            .bind(result)
            .bind(who.queues)
            .bind(who.agent_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.code().as_deref() == Some("LN409") => {
                    Error::stale_token(id, token)
                }
                sqlx::Error::Database(d) if d.code().as_deref() == Some("LN404") => {
                    Error::job_not_found(id)
                }
                _ => Error::Db(e),
            })?;
        return Ok(leased);
    }
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    complete_in(&mut tx, id, token, result).await?;
    let leased = lease(&mut tx, who.queues, &who.one()).await?.pop();
    tx.commit().await?;
    Ok(leased)
}

// See `lanes_complete_many`: the statuses come back in lane order; `complete_many` puts
// them back in the order of the ids given.
const COMPLETE_MANY: &str = "SELECT o_id, o_status FROM lanes_complete_many($1, $2, $3)";

/// Completes several jobs in the caller's transaction; returns each one's status ("ok",
/// "stale", "missing") in the order given.
pub async fn complete_many(
    conn: &mut PgConnection,
    ids: &[i64],
    tokens: &[i64],
    results: &[serde_json::Value],
) -> Result<Vec<String>> {
    let rows: Vec<(i64, String)> = sqlx::query_as(COMPLETE_MANY)
        .bind(ids)
        .bind(tokens)
        .bind(results)
        .fetch_all(conn)
        .await?;
    let mut by_id: std::collections::HashMap<i64, Vec<String>> = std::collections::HashMap::new();
    for (id, status) in rows {
        by_id.entry(id).or_default().push(status);
    }
    // A job id given twice comes back twice; hand its statuses out in order.
    Ok(ids
        .iter()
        .map(|id| {
            by_id
                .get_mut(id)
                .and_then(|v| (!v.is_empty()).then(|| v.remove(0)))
                .unwrap_or_else(|| "missing".into())
        })
        .collect())
}

async fn complete_in(
    conn: &mut PgConnection,
    id: i64,
    token: i64,
    result: serde_json::Value,
) -> Result<()> {
    let status: String = sqlx::query_scalar(COMPLETE)
        .bind(id)
        .bind(token)
        .bind(result)
        .fetch_one(conn)
        .await?;
    match status.as_str() {
        "ok" => Ok(()),
        "stale" => Err(Error::stale_token(id, token)),
        _ => Err(Error::job_not_found(id)),
    }
}

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
            sqlx::query(TO_FINISHED)
                .bind(id)
                .bind(state)
                .bind(error)
                .execute(&mut *tx)
                .await?;
            let block = (state == JobState::Failed && held.failure_policy == FailurePolicy::Block)
                .then_some(id);
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

/// Returns lapsed leases to their lanes (counting the attempt), at most `limit` per call;
/// returns the queue of each job reaped.
/// Several replicas may reap at once: the token and expiry guards let one of them win.
pub async fn reap(pool: &PgPool, limit: i64) -> Result<Vec<String>> {
    let expired: Vec<(i64, i64, Option<String>, String)> =
        sqlx::query_as(EXPIRED).bind(limit).fetch_all(pool).await?;
    let mut reaped = Vec::new();
    for (id, token, agent, queue) in expired {
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
                reaped.push(queue);
                tracing::warn!(
                    job.id = id,
                    ?state,
                    "lease expired; job returned to its lane"
                );
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
