//! The `outbox` table as operators see it: list deliveries, replay them, and delete old
//! delivered ones (retention). Leasing and recording deliveries is the dispatcher's
//! (`crate::dispatch`).
//!
//! Must never: lower `attempts` (it fences the delivery lease; a replay moves
//! `attempts_base` up to it instead), touch a row a replica is delivering right now, or
//! delete a row that is not delivered (failed and disabled rows stay visible and replayable).

use super::states::DeliveryState;
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder};

/// Most ids one replay may name.
pub const MAX_REPLAY_IDS: usize = 1000;

/// One outbox row, without its payload.
#[derive(Debug, Clone, FromRow)]
#[allow(missing_docs)]
pub struct Delivery {
    pub id: i64,
    pub event_type: String,
    pub job_id: Option<i64>,
    pub queue: Option<String>,
    pub lane: Option<String>,
    /// As stored: may carry credentials; redact before showing it.
    pub url: String,
    pub state: DeliveryState,
    /// Tries ever started (never lowered by a replay).
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The global event endpoint's name; `None` for a job callback.
    pub endpoint: Option<String>,
}

/// Filters and paging of [`list`].
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// States to show; empty = every state but `delivered`.
    pub states: Vec<DeliveryState>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only rows with a smaller id (the previous page's last id).
    pub before_id: Option<i64>,
    /// Page size.
    pub limit: i64,
}

const COLUMNS: &str = "SELECT id, event_type, job_id, queue, lane, url, state, attempts,
    last_status, last_error, created_at, next_attempt_at, delivered_at, endpoint
  FROM outbox WHERE ";

/// Deliveries matching `f`, newest first.
pub async fn list(db: &PgPool, f: &Filter) -> Result<Vec<Delivery>> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(COLUMNS);
    if f.states.is_empty() {
        // Spelled out (not a bound array) so the planner uses the outbox_undelivered index.
        q.push("state <> 'delivered'");
    } else {
        q.push("state = ANY(").push_bind(f.states.clone()).push(")");
    }
    if let Some(queue) = &f.queue {
        q.push(" AND queue = ").push_bind(queue);
    }
    if let Some(t) = &f.event_type {
        q.push(" AND event_type = ").push_bind(t);
    }
    if let Some(before) = f.before_id {
        q.push(" AND id < ").push_bind(before);
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(f.limit);
    Ok(q.build_query_as().fetch_all(db).await?)
}

// Locks the named rows so a replica cannot lease them while they are checked and replayed.
const LOCK_IDS: &str = "SELECT id, state, lease_expires_at < now() AS lapsed
    FROM outbox WHERE id = ANY($1) ORDER BY id FOR UPDATE";

// Due now, with a fresh budget of tries. `attempts` keeps growing: it fences leases.
const REPLAY_IDS: &str = "UPDATE outbox SET state = 'pending', next_attempt_at = now(),
    attempts_base = attempts, lease_expires_at = NULL, delivered_at = NULL
  WHERE id = ANY($1)";

/// Replays the deliveries `ids`: back to `pending`, due now, with a fresh retry budget. Any
/// state may be replayed when named by id (a delivered one is sent again, with the same
/// `webhook-id`) except `delivering` with a live lease. All or nothing: an unknown id is
/// `NotFound`, one in flight `Precondition`, and then nothing changes. Returns how many.
pub async fn replay_ids(db: &PgPool, ids: &[i64]) -> Result<i64> {
    let mut tx = db.begin().await?;
    let rows: Vec<(i64, DeliveryState, Option<bool>)> = sqlx::query_as(LOCK_IDS)
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
    if let Some(missing) = ids.iter().find(|id| !rows.iter().any(|r| r.0 == **id)) {
        return Err(Error::NotFound(format!(
            "delivery {missing} does not exist (or was deleted by retention)"
        )));
    }
    // A lapsed lease means the replica delivering it died: nobody is in flight.
    if let Some(busy) = rows
        .iter()
        .find(|r| r.1 == DeliveryState::Delivering && r.2 != Some(true))
    {
        return Err(Error::Precondition(format!(
            "delivery {} is being delivered right now; replay it once that try ends",
            busy.0
        )));
    }
    let n = sqlx::query(REPLAY_IDS)
        .bind(ids)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n as i64)
}

// One batch of "replay every failed or disabled delivery", in id order from a cursor so the
// loop ends even if a replayed row fails again meanwhile. SKIP LOCKED: never waits on a row
// another statement holds.
const REPLAY_FAILED: &str = "WITH cand AS (
    SELECT id FROM outbox
    WHERE state IN ('failed', 'disabled') AND ($1::text IS NULL OR queue = $1) AND id > $2
    ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
  UPDATE outbox o SET state = 'pending', next_attempt_at = now(),
    attempts_base = o.attempts, lease_expires_at = NULL
  FROM cand WHERE o.id = cand.id
  RETURNING o.id";

/// Rows per statement of the bulk operations, so none holds many row locks for long.
pub const BATCH: i64 = 1000;

/// Replays every `failed` or `disabled` delivery (of `queue`, if given), in batches.
/// Returns how many.
pub async fn replay_failed(db: &PgPool, queue: Option<&str>) -> Result<i64> {
    let (mut total, mut after) = (0i64, 0i64);
    loop {
        let ids: Vec<i64> = sqlx::query_scalar(REPLAY_FAILED)
            .bind(queue)
            .bind(after)
            .bind(BATCH)
            .fetch_all(db)
            .await?;
        total += ids.len() as i64;
        match ids.iter().max() {
            Some(&last) if ids.len() as i64 >= BATCH => after = last,
            _ => return Ok(total),
        }
    }
}

// Oldest delivered rows past the retention; SKIP LOCKED so replicas running retention at
// the same time, or an operator replaying one of them, never wait on each other.
const DELETE_DELIVERED: &str = "DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox
    WHERE state = 'delivered' AND delivered_at < now() - make_interval(secs => $1::float8)
    ORDER BY delivered_at LIMIT $2 FOR UPDATE SKIP LOCKED)";

/// Deletes up to [`BATCH`] delivered rows older than `older_than_s`; returns how many.
pub async fn delete_delivered_batch(db: &PgPool, older_than_s: i64) -> Result<u64> {
    Ok(sqlx::query(DELETE_DELIVERED)
        .bind(older_than_s as f64)
        .bind(BATCH)
        .execute(db)
        .await?
        .rows_affected())
}
