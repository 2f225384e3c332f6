//! Leases and their fencing tokens: Lease, Heartbeat and Complete (failed attempts and the
//! reaper live in `failure.rs`). Every outcome is guarded by `(id, lease_token, state =
//! 'running')`, so a stale holder changes nothing and gets `FAILED_PRECONDITION`.

use super::jobs::JobRow;
use crate::error::{Error, Result, retry_conflicts};
use chrono::{DateTime, Utc};
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
    pub(super) fn one(&self) -> Vec<String> {
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

const EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1)";

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

/// The error for a guarded statement that matched nothing: a stale token, or no such job.
pub(super) async fn stale_or_missing(
    conn: impl sqlx::PgExecutor<'_>,
    id: i64,
    token: i64,
) -> Error {
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
