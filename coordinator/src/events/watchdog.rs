//! The watchdog: evaluates the alert conditions every interval and writes a
//! `watchdog.alert` event when one starts and a `watchdog.cleared` event when it ends —
//! never again while it holds. The conditions that are on live in `watchdog_alerts`, so a
//! restart or another replica neither repeats nor forgets an alert.

use super::config::EventArgs;
use crate::db::gauges;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;

/// Advisory lock of the watchdog ("LANESWDG").
const LOCK: i64 = 0x4c41_4e45_5357_4447;

/// A condition that is on.
#[derive(Debug, Clone, PartialEq)]
struct Condition {
    key: String,
    kind: &'static str,
    queue: Option<String>,
    details: Value,
}

/// The thresholds, from `EventArgs`.
#[derive(Debug, Clone)]
pub struct Watchdog {
    pool: PgPool,
    max_pending: i64,
    max_failure_rate: f64,
    min_finished: i64,
    max_avg_run_s: i64,
    window_s: i64,
    max_wait_s: i64,
    no_agent_s: i64,
    /// An agent not seen for this long is gone (as in agent listings).
    stale_ms: i64,
}

/// What one evaluation changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Keys of the alerts that fired.
    pub fired: Vec<String>,
    /// Keys of the alerts that cleared.
    pub cleared: Vec<String>,
}

impl Watchdog {
    /// Builds the watchdog.
    pub fn new(pool: PgPool, args: &EventArgs, stale_ms: i64) -> Self {
        Watchdog {
            pool,
            max_pending: args.watchdog_max_pending,
            max_failure_rate: args.watchdog_max_failure_rate,
            min_finished: args.watchdog_min_finished.max(1),
            max_avg_run_s: args.watchdog_max_avg_run_s,
            window_s: args.watchdog_window_s.max(1),
            max_wait_s: args.watchdog_max_wait_s,
            no_agent_s: args.watchdog_no_agent_s,
            stale_ms,
        }
    }

    /// Evaluates every condition once (on one replica at a time) and records the changes.
    pub async fn check(&self) -> crate::error::Result<Changes> {
        let mut tx = self.pool.begin().await?;
        if !super::sole(&mut tx, LOCK).await? {
            return Ok(Changes::default());
        }
        let on: HashMap<String, Condition> = self
            .conditions(&mut tx)
            .await?
            .into_iter()
            .map(|c| (c.key.clone(), c))
            .collect();
        let was: Vec<(String, Option<String>, Value, i64)> = sqlx::query_as(
            "SELECT key, queue, details,
                    extract(epoch FROM now() - fired_at)::bigint FROM watchdog_alerts",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut changes = Changes::default();
        for (key, queue, mut details, age_s) in was {
            if on.contains_key(&key) {
                continue;
            }
            sqlx::query("DELETE FROM watchdog_alerts WHERE key = $1")
                .bind(&key)
                .execute(&mut *tx)
                .await?;
            if let Value::Object(m) = &mut details {
                m.insert("duration_s".into(), json!(age_s));
            }
            event(&mut tx, "watchdog.cleared", queue.as_deref(), &details).await?;
            tracing::info!(alert = %key, "watchdog alert cleared");
            changes.cleared.push(key);
        }
        for c in on.into_values() {
            let new = sqlx::query(
                "INSERT INTO watchdog_alerts (key, kind, queue, details) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(&c.key)
            .bind(c.kind)
            .bind(&c.queue)
            .bind(&c.details)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            if new {
                event(&mut tx, "watchdog.alert", c.queue.as_deref(), &c.details).await?;
                tracing::warn!(alert = %c.key, details = %c.details, "watchdog alert");
                changes.fired.push(c.key);
            }
        }
        tx.commit().await?;
        Ok(changes)
    }

    async fn conditions(&self, tx: &mut PgConnection) -> crate::error::Result<Vec<Condition>> {
        let mut out = Vec::new();
        let cond = |kind: &'static str, queue: &str, details: Value| Condition {
            key: format!("{kind}:{queue}"),
            kind,
            queue: Some(queue.to_owned()),
            details,
        };
        // Pending depth from the per-lane counters (the metrics' gauge), not a backlog scan.
        for d in gauges::depth(&self.pool).await? {
            let n = d.pending();
            if n > self.max_pending {
                let d_json =
                    json!({"kind": "queue_depth", "value": n, "threshold": self.max_pending});
                out.push(cond("queue_depth", &d.queue, d_json));
            }
        }

        let finished: Vec<(String, i64, i64, f64)> = sqlx::query_as(
            "SELECT queue, count(*) FILTER (WHERE state = 'failed'), count(*),
                    COALESCE(avg(extract(epoch FROM finished_at - started_at))
                             FILTER (WHERE state = 'completed'), 0)::float8
             FROM jobs
             WHERE state IN ('completed', 'failed')
               AND finished_at > now() - $1 * interval '1 second'
             GROUP BY queue",
        )
        .bind(self.window_s)
        .fetch_all(&mut *tx)
        .await?;
        for (q, failed, total, avg_run) in finished {
            let rate = failed as f64 / total.max(1) as f64;
            if total >= self.min_finished && rate > self.max_failure_rate {
                let d = json!({"kind": "failure_rate", "value": rate, "failed": failed,
                    "finished": total, "threshold": self.max_failure_rate, "window_s": self.window_s});
                out.push(cond("failure_rate", &q, d));
            }
            if avg_run > self.max_avg_run_s as f64 {
                let d = json!({"kind": "slow_jobs", "value": avg_run.round() as i64,
                    "threshold": self.max_avg_run_s, "window_s": self.window_s});
                out.push(cond("slow_jobs", &q, d));
            }
        }

        // Work that could start now: ready lane heads and due unkeyed jobs, in queues that
        // are not paused (a paused queue waits on purpose).
        let ready: Vec<(String, i64, i64, bool)> = sqlx::query_as(
            "WITH ready AS (
                SELECT queue, ready_at AS since FROM lanes
                WHERE state = 'ready' AND ready_at <= now()
                UNION ALL
                SELECT queue, run_at FROM jobs
                WHERE state = 'pending' AND lane_key IS NULL AND run_at <= now())
             SELECT r.queue, count(*), extract(epoch FROM now() - min(r.since))::bigint,
                    EXISTS (SELECT 1 FROM agents a WHERE r.queue = ANY(a.queues)
                            AND a.last_seen_at > now() - $1 * interval '1 millisecond')
             FROM ready r JOIN queues q ON q.name = r.queue
             WHERE NOT q.paused
             GROUP BY r.queue",
        )
        .bind(self.stale_ms)
        .fetch_all(&mut *tx)
        .await?;
        for (q, n, waited_s, has_agent) in ready {
            if waited_s > self.max_wait_s {
                let d =
                    json!({"kind": "oldest_wait", "value": waited_s, "threshold": self.max_wait_s});
                out.push(cond("oldest_wait", &q, d));
            }
            if !has_agent && waited_s >= self.no_agent_s {
                let d = json!({"kind": "no_agent", "value": n, "threshold": self.no_agent_s});
                out.push(cond("no_agent", &q, d));
            }
        }

        // A lease is extended by every heartbeat, so `lease_expires_at - ttl` is the last
        // one; agents beat every third of the TTL, so two thirds of silence is a stall.
        let silent: Vec<(i64, String, Option<String>, i64)> = sqlx::query_as(
            "SELECT j.id, j.queue, j.agent_id,
                    extract(epoch FROM now() - (j.lease_expires_at
                        - q.lease_ttl_ms * interval '1 millisecond'))::bigint
             FROM jobs j JOIN queues q ON q.name = j.queue
             WHERE j.state = 'running'
               AND j.lease_expires_at < now() + (q.lease_ttl_ms / 3) * interval '1 millisecond'",
        )
        .fetch_all(&mut *tx)
        .await?;
        for (job, q, agent, silent_s) in silent {
            out.push(Condition {
                key: format!("heartbeat_missing:{job}"),
                kind: "heartbeat_missing",
                queue: Some(q),
                details: json!({"kind": "heartbeat_missing", "value": silent_s,
                    "job_id": job, "agent_id": agent}),
            });
        }
        Ok(out)
    }
}

async fn event(
    tx: &mut PgConnection,
    event_type: &str,
    queue: Option<&str>,
    details: &Value,
) -> crate::error::Result<()> {
    sqlx::query("INSERT INTO events (event_type, queue, job_id, data) VALUES ($1, $2, $3, $4)")
        .bind(event_type)
        .bind(queue)
        .bind(details.get("job_id").and_then(Value::as_i64))
        .bind(details)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
