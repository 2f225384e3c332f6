//! Fan-out: turns `events` rows into one `outbox` row per configured endpoint that wants
//! them, in the transaction that deletes the events (so each is sent once, or not at all
//! if no endpoint wants it), with flood control and agent debouncing.
//!
//! One replica fans out at a time (a transaction-scoped advisory lock): agent events are
//! compared with what was last announced, and flood counts must see every row written.

use super::config::{EventArgs, Language};
use super::endpoints::Endpoint;
use super::messages;
use crate::db::gauges;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{FromRow, PgConnection, PgPool};
use std::collections::HashMap;
use std::sync::Arc;

/// Advisory lock of the fan-out ("LANESEVT").
const LOCK: i64 = 0x4c41_4e45_5345_5654;
/// Events handled per pass.
const BATCH: i64 = 500;
/// Held events kept as examples in a summary: the first four and the latest.
const SAMPLES: i32 = 5;

/// An `events` row.
#[derive(Debug, Clone, FromRow)]
#[allow(missing_docs)]
pub struct Event {
    pub id: i64,
    pub event_type: String,
    pub queue: Option<String>,
    pub lane: Option<String>,
    pub job_id: Option<i64>,
    pub agent_id: Option<String>,
    pub data: Value,
    pub created_at: DateTime<Utc>,
}

const OTHERS: &str = "SELECT id, event_type, queue, lane, job_id, agent_id, data, created_at
  FROM events WHERE agent_id IS NULL ORDER BY id LIMIT $1";
const LATEST_PER_AGENT: &str = "SELECT DISTINCT ON (agent_id)
    id, event_type, queue, lane, job_id, agent_id, data, created_at
  FROM events WHERE agent_id IS NOT NULL ORDER BY agent_id, id DESC LIMIT $1";

/// What the fan-out needs.
#[derive(Clone)]
pub struct Fanout {
    pool: PgPool,
    endpoints: Arc<Vec<Endpoint>>,
    language: Language,
    flood_limit: i64,
    window_ms: i64,
    debounce_ms: i64,
}

/// Rows sent per (endpoint, type, queue) within the flood window, counted once per pass.
type Counts = HashMap<(String, String, String), i64>;

impl Fanout {
    /// Builds the fan-out for `endpoints`.
    pub fn new(pool: PgPool, endpoints: Arc<Vec<Endpoint>>, args: &EventArgs) -> Self {
        Fanout {
            pool,
            endpoints,
            language: args.events_language,
            flood_limit: args.events_flood_limit.max(1),
            window_ms: args.events_flood_window_ms.max(1),
            debounce_ms: args.events_debounce_ms.max(0),
        }
    }

    /// One pass; returns how many events it consumed.
    pub async fn pass(&self) -> crate::error::Result<usize> {
        let mut tx = self.pool.begin().await?;
        if !super::sole(&mut tx, LOCK).await? {
            return Ok(0);
        }
        if self.endpoints.is_empty() {
            // Nobody listens: events are not kept (the watchdog still logs its alerts).
            let n = sqlx::query(
                "DELETE FROM events WHERE id IN (SELECT id FROM events
                   WHERE created_at < now() - $1 * interval '1 millisecond' LIMIT $2)",
            )
            .bind(self.debounce_ms)
            .bind(BATCH)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            return Ok(n as usize);
        }
        let mut counts = Counts::new();
        let mut consumed = self.others(&mut tx, &mut counts).await?;
        consumed += self.agents(&mut tx, &mut counts).await?;
        self.summaries(&mut tx).await?;
        tx.commit().await?;
        Ok(consumed)
    }

    /// Events about jobs, lanes and the watchdog, in order.
    async fn others(
        &self,
        tx: &mut PgConnection,
        counts: &mut Counts,
    ) -> crate::error::Result<usize> {
        let events: Vec<Event> = sqlx::query_as(OTHERS)
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await?;
        for ev in &events {
            self.route(tx, ev, counts).await?;
        }
        let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
        sqlx::query("DELETE FROM events WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        Ok(ids.len())
    }

    /// Agent events: only an agent's latest state counts, once it has held for the debounce,
    /// and only if it differs from what was last announced for that agent.
    async fn agents(
        &self,
        tx: &mut PgConnection,
        counts: &mut Counts,
    ) -> crate::error::Result<usize> {
        let latest: Vec<Event> = sqlx::query_as(LATEST_PER_AGENT)
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await?;
        let (now,): (DateTime<Utc>,) = sqlx::query_as("SELECT now()").fetch_one(&mut *tx).await?;
        let settled = now - chrono::Duration::milliseconds(self.debounce_ms);
        let mut consumed = 0;
        for mut ev in latest.into_iter().filter(|e| e.created_at <= settled) {
            let Some(agent) = ev.agent_id.clone() else {
                continue;
            };
            let asleep = ev.event_type == "agent.asleep";
            let said: Option<(bool,)> =
                sqlx::query_as("SELECT asleep FROM agent_announcements WHERE agent_id = $1")
                    .bind(&agent)
                    .fetch_optional(&mut *tx)
                    .await?;
            if said.map(|(s,)| s) != Some(asleep) {
                sqlx::query(
                    "INSERT INTO agent_announcements (agent_id, asleep) VALUES ($1, $2)
                     ON CONFLICT (agent_id) DO UPDATE SET asleep = $2, announced_at = now()",
                )
                .bind(&agent)
                .bind(asleep)
                .execute(&mut *tx)
                .await?;
                // Events written before the trigger counted the work carry no count.
                if !asleep && ev.data.get("pending").is_none() {
                    let pending = pending_jobs(&self.pool, &queues_of(&ev)).await?;
                    if let Value::Object(m) = &mut ev.data {
                        m.insert("pending".into(), json!(pending));
                    }
                }
                self.route(tx, &ev, counts).await?;
            }
            consumed += sqlx::query("DELETE FROM events WHERE agent_id = $1 AND id <= $2")
                .bind(&agent)
                .bind(ev.id)
                .execute(&mut *tx)
                .await?
                .rows_affected() as usize;
        }
        // Forget agents gone for a week (pods come and go under new names).
        sqlx::query(
            "DELETE FROM agent_announcements an WHERE announced_at < now() - interval '7 days'
               AND NOT EXISTS (SELECT 1 FROM agents a WHERE a.agent_id = an.agent_id)",
        )
        .execute(&mut *tx)
        .await?;
        Ok(consumed)
    }

    /// Writes `ev` for each endpoint that wants it, or holds it for a summary when the
    /// endpoint already got `flood_limit` such events in the window.
    async fn route(
        &self,
        tx: &mut PgConnection,
        ev: &Event,
        counts: &mut Counts,
    ) -> crate::error::Result<()> {
        let queues = queues_of(ev);
        for ep in self
            .endpoints
            .iter()
            .filter(|e| e.wants(&ev.event_type, &queues))
        {
            let key = (
                ep.name.clone(),
                ev.event_type.clone(),
                ev.queue.clone().unwrap_or_default(),
            );
            let sent = match counts.get(&key) {
                Some(n) => *n,
                None => self.recent(tx, &key).await?,
            };
            if sent >= self.flood_limit {
                self.hold(tx, &key, ev).await?;
                counts.insert(key, sent);
                continue;
            }
            counts.insert(key, sent + 1);
            let lang = ep.language.unwrap_or(self.language);
            insert(tx, ep, ev, envelope(ev, &format!("evt_{}", ev.id), lang)).await?;
        }
        Ok(())
    }

    async fn recent(
        &self,
        tx: &mut PgConnection,
        key: &(String, String, String),
    ) -> crate::error::Result<i64> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM outbox
             WHERE endpoint = $1 AND event_type = $2 AND COALESCE(queue, '') = $3
               AND created_at > now() - $4 * interval '1 millisecond'",
        )
        .bind(&key.0)
        .bind(&key.1)
        .bind(&key.2)
        .bind(self.window_ms)
        .fetch_one(&mut *tx)
        .await?;
        Ok(n)
    }

    async fn hold(
        &self,
        tx: &mut PgConnection,
        key: &(String, String, String),
        ev: &Event,
    ) -> crate::error::Result<()> {
        let sample = json!({
            "job_id": ev.job_id, "lane": ev.lane, "agent_id": ev.agent_id.clone()
                .or_else(|| ev.data.get("agent_id").and_then(Value::as_str).map(str::to_owned)),
            "error": ev.data.get("error"),
        });
        sqlx::query(
            "INSERT INTO event_digests (endpoint, event_type, queue, count, first_at, last_at, samples)
             VALUES ($1, $2, $3, 1, $4, $4, jsonb_build_array($5::jsonb))
             ON CONFLICT (endpoint, event_type, queue) DO UPDATE SET
               count = event_digests.count + 1, last_at = EXCLUDED.last_at,
               samples = CASE WHEN jsonb_array_length(event_digests.samples) < $6
                              THEN event_digests.samples ELSE event_digests.samples - ($6 - 1) END
                         || EXCLUDED.samples",
        )
        .bind(&key.0)
        .bind(&key.1)
        .bind(&key.2)
        .bind(ev.created_at)
        .bind(sample)
        .bind(SAMPLES)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Sends one summary per digest whose window has ended.
    async fn summaries(&self, tx: &mut PgConnection) -> crate::error::Result<()> {
        let due: Vec<(String, String, String, i32, DateTime<Utc>, Value)> = sqlx::query_as(
            "DELETE FROM event_digests WHERE first_at <= now() - $1 * interval '1 millisecond'
             RETURNING endpoint, event_type, queue, count, first_at, samples",
        )
        .bind(self.window_ms)
        .fetch_all(&mut *tx)
        .await?;
        for (name, event_type, queue, count, first_at, samples) in due {
            let Some(ep) = self.endpoints.iter().find(|e| e.name == name) else {
                tracing::warn!(endpoint = %name, count, %event_type,
                    "a flood summary's endpoint is no longer configured; summary dropped");
                continue;
            };
            let ev = Event {
                id: 0,
                event_type: "events.summary".into(),
                queue: (!queue.is_empty()).then_some(queue),
                lane: None,
                job_id: None,
                agent_id: None,
                data: json!({
                    "event_type": event_type, "count": count, "samples": samples,
                    "window_s": self.window_ms / 1000, "first_at": super::iso(first_at),
                }),
                created_at: first_at,
            };
            let id = format!(
                "sum_{}_{}",
                first_at.timestamp_micros(),
                ev.queue.as_deref().unwrap_or("")
            );
            let lang = ep.language.unwrap_or(self.language);
            insert(tx, ep, &ev, envelope(&ev, &id, lang)).await?;
        }
        Ok(())
    }
}

/// The queues an event is about: its queue, or the queues its agent serves.
fn queues_of(ev: &Event) -> Vec<String> {
    match &ev.queue {
        Some(q) => vec![q.clone()],
        None => ev
            .data
            .get("queues")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|q| q.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Pending jobs of `queues` (an awake message says "N jobs pending"), from the per-lane
/// counters rather than the backlog itself.
async fn pending_jobs(pool: &PgPool, queues: &[String]) -> crate::error::Result<i64> {
    Ok(gauges::depth(pool)
        .await?
        .iter()
        .filter(|d| queues.contains(&d.queue))
        .map(gauges::Depth::pending)
        .sum())
}

/// The JSON body of a global event.
fn envelope(ev: &Event, id: &str, lang: Language) -> Value {
    json!({
        "id": id,
        "type": ev.event_type,
        "occurred_at": super::iso(ev.created_at),
        "message": messages::message(ev, lang),
        "language": lang.code(),
        "queue": ev.queue,
        "lane": ev.lane,
        "job_id": ev.job_id,
        "agent_id": ev.agent_id,
        "sequence": ev.id,
        "data": ev.data,
    })
}

async fn insert(
    tx: &mut PgConnection,
    ep: &Endpoint,
    ev: &Event,
    payload: Value,
) -> crate::error::Result<()> {
    sqlx::query(
        "INSERT INTO outbox (event_type, job_id, queue, lane, url, payload, endpoint)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&ev.event_type)
    .bind(ev.job_id)
    .bind(&ev.queue)
    .bind(&ev.lane)
    .bind(&ep.url)
    .bind(payload)
    .bind(&ep.name)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
