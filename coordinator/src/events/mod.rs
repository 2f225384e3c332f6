//! Global events for operators (the n8n → Telegram feed): agent awake/asleep, jobs failed
//! for good, blocked lanes and watchdog alerts.
//!
//! Producers write `events` rows in the transaction of the state change (a trigger on
//! `agents`, the final-failure transaction, the watchdog's own transaction). The fan-out
//! turns them into signed `outbox` deliveries for each configured endpoint, which the
//! dispatcher (`crate::dispatch`) delivers like job callbacks.

pub mod config;
pub mod endpoints;
pub mod fanout;
pub mod messages;
pub mod watchdog;

use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the fan-out looks for new events.
const FANOUT_EVERY: Duration = Duration::from_millis(500);

/// ISO 8601 UTC with microseconds, as in callback payloads.
pub fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Takes the transaction-scoped advisory lock `key` if no other replica holds it: the task
/// then runs on this replica alone until the transaction ends.
async fn sole(tx: &mut sqlx::PgConnection, key: i64) -> crate::error::Result<bool> {
    let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock($1)")
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
    Ok(locked)
}

/// Runs the fan-out until `stop`.
pub async fn run_fanout(fanout: fanout::Fanout, stop: CancellationToken) {
    loop {
        let busy = match fanout.pass().await {
            Ok(n) => n > 0,
            Err(e) => {
                tracing::warn!(error = %e, "event fan-out pass failed");
                false
            }
        };
        if busy && !stop.is_cancelled() {
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(FANOUT_EVERY) => {}
        }
    }
}

/// Runs the watchdog every `every` until `stop`.
pub async fn run_watchdog(dog: watchdog::Watchdog, every: Duration, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(e) = dog.check().await {
            tracing::warn!(error = %e, "watchdog pass failed");
        }
    }
}
