//! The `agents` table: agents with an open WakeStream on some replica, and whether they are
//! asleep. Waking claims asleep agents here (SKIP LOCKED), so across all replicas one ready
//! job wakes at most one agent, and busy agents are never disturbed.

use crate::error::Result;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// A row of `agents`, as operators see it.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct AgentRow {
    pub agent_id: String,
    pub coordinator_id: String,
    pub queues: Vec<String>,
    pub asleep: bool,
    pub connected_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// The job it is running, if any.
    pub job_id: Option<i64>,
}

/// An agent claimed for waking, and the replica (stream id) that holds its stream.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Agent id.
    pub agent_id: String,
    /// `coordinator_id` of its stream.
    pub coordinator_id: String,
}

/// Records an agent's open stream on replica stream `coordinator_id`.
pub async fn register(
    db: &PgPool,
    agent: &str,
    coordinator_id: &str,
    queues: &[String],
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO agents (agent_id, coordinator_id, queues, asleep)
         VALUES ($1, $2, $3, false)
         ON CONFLICT (agent_id) DO UPDATE SET coordinator_id = EXCLUDED.coordinator_id,
             queues = EXCLUDED.queues, asleep = false, asleep_since = NULL,
             connected_at = now(), last_seen_at = now()",
        agent,
        coordinator_id,
        queues
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets an agent whose stream closed (unless it already reconnected elsewhere).
pub async fn unregister(db: &PgPool, agent: &str, coordinator_id: &str) -> Result<()> {
    sqlx::query!(
        "DELETE FROM agents WHERE agent_id = $1 AND coordinator_id = $2",
        agent,
        coordinator_id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Marks an agent asleep (its Lease found nothing) or awake. Returns true if it changed.
pub async fn set_asleep(db: &PgPool, agent: &str, asleep: bool) -> Result<bool> {
    let n = sqlx::query!(
        "UPDATE agents SET asleep = $2,
             asleep_since = CASE WHEN $2 THEN COALESCE(asleep_since, now()) END
         WHERE agent_id = $1 AND asleep <> $2",
        agent,
        asleep
    )
    .execute(db)
    .await?
    .rows_affected();
    Ok(n > 0)
}

/// Refreshes the agents of this replica's streams and forgets agents not seen for `stale_ms`.
pub async fn touch(db: &PgPool, stream_ids: &[String], stale_ms: i64) -> Result<()> {
    sqlx::query!(
        "UPDATE agents SET last_seen_at = now() WHERE coordinator_id = ANY($1)",
        stream_ids
    )
    .execute(db)
    .await?;
    // Agents whose replica stopped refreshing them are gone (the replica died).
    sqlx::query!(
        "DELETE FROM agents WHERE last_seen_at < now() - $1 * interval '1 millisecond'",
        stale_ms as f64
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Puts back to sleep this replica's agents (streams `stream_ids`) that were marked awake
/// with no running job at the previous keep-alive (`seen`) and still are, so wake claims see
/// them again; returns the agents in that state now (the next call's `seen`) and how many
/// were put to sleep. A claim whose event never reached its agent (a NOTIFY lost while a
/// listener reconnected) leaves the agent marked awake while it sleeps: one statement per
/// replica and keep-alive recovers it, where every idle agent leasing now and then would be
/// per-agent polling. Two sightings a keep-alive apart spare an agent just woken and about
/// to lease; one caught twice between jobs is at worst claimed twice (one wake wasted, the
/// safety tick wakes another for the job).
pub async fn rest(
    db: &PgPool,
    stream_ids: &[String],
    seen: &[String],
) -> Result<(Vec<String>, u64)> {
    let rows = sqlx::query!(
        r#"WITH idle AS (
               SELECT a.agent_id FROM agents a
               WHERE a.coordinator_id = ANY($1) AND NOT a.asleep
                 AND NOT EXISTS (SELECT 1 FROM jobs j
                                 WHERE j.state = 'running' AND j.agent_id = a.agent_id)),
           rested AS (
               UPDATE agents a SET asleep = true, asleep_since = now()
               FROM idle
               WHERE a.agent_id = idle.agent_id AND a.agent_id = ANY($2) AND NOT a.asleep
               RETURNING a.agent_id)
           SELECT idle.agent_id AS "agent_id!",
                  EXISTS (SELECT 1 FROM rested r WHERE r.agent_id = idle.agent_id) AS "rested!"
           FROM idle"#,
        stream_ids,
        seen
    )
    .fetch_all(db)
    .await?;
    let rested = rows.iter().filter(|r| r.rested).count() as u64;
    let still = rows
        .into_iter()
        .filter(|r| !r.rested)
        .map(|r| r.agent_id)
        .collect();
    Ok((still, rested))
}

/// Claims up to `n` asleep agents serving `queue` (any queue when `None`) and marks them awake.
pub async fn claim(
    db: &PgPool,
    queue: Option<&str>,
    n: i64,
    stale_ms: i64,
) -> Result<Vec<Claimed>> {
    // Longest-asleep first; SKIP LOCKED so concurrent wakes claim different agents. A paused
    // queue has no ready work, so a wake for it (an enqueue while paused) claims nobody.
    // The claim is on the pickup path and need not survive a crash (agents register again
    // and the safety tick re-wakes), so its commit does not wait for the WAL flush: the
    // transaction-local setting holds until this statement's own commit.
    Ok(sqlx::query_as!(
        Claimed,
        "UPDATE agents a SET asleep = false, asleep_since = NULL
         FROM (SELECT agent_id FROM agents
               WHERE asleep AND ($1::text IS NULL OR $1 = ANY(queues))
                 AND last_seen_at > now() - $3 * interval '1 millisecond'
                 AND NOT EXISTS (SELECT 1 FROM queues q WHERE q.name = $1 AND q.paused)
               ORDER BY asleep_since LIMIT $2 FOR UPDATE SKIP LOCKED) c
         WHERE a.agent_id = c.agent_id
           AND set_config('synchronous_commit', 'off', true) = 'off'
         RETURNING a.agent_id, a.coordinator_id",
        queue,
        n,
        stale_ms as f64
    )
    .fetch_all(db)
    .await?)
}

/// Connected agents on every replica.
pub async fn list(db: &PgPool, stale_ms: i64) -> Result<Vec<AgentRow>> {
    Ok(sqlx::query_as!(
        AgentRow,
        r#"SELECT a.agent_id, a.coordinator_id, a.queues, a.asleep, a.connected_at,
               a.last_seen_at,
               (SELECT j.id FROM jobs j WHERE j.state = 'running' AND j.agent_id = a.agent_id
                LIMIT 1) AS job_id
           FROM agents a WHERE a.last_seen_at > now() - $1 * interval '1 millisecond'
           ORDER BY a.agent_id"#,
        stale_ms as f64
    )
    .fetch_all(db)
    .await?)
}

/// (connected, asleep) agents, optionally only those serving `queue`.
pub async fn counts(db: &PgPool, stale_ms: i64, queue: Option<&str>) -> Result<(i64, i64)> {
    let r = sqlx::query!(
        r#"SELECT count(*) AS "connected!", count(*) FILTER (WHERE asleep) AS "asleep!"
           FROM agents
           WHERE last_seen_at > now() - $1 * interval '1 millisecond'
             AND ($2::text IS NULL OR $2 = ANY(queues))"#,
        stale_ms as f64,
        queue
    )
    .fetch_one(db)
    .await?;
    Ok((r.connected, r.asleep))
}
