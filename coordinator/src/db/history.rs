//! A queue's recent history, minute by minute, for the admin page's charts: jobs completed
//! and failed, and how long they waited before their start.
//!
//! The page asks every 3 s for the last hour, and reading an hour of finished jobs costs
//! what the hour held: 1.5-2 s of PostgreSQL at a million. So a minute is read once it is
//! over (two minutes back, so a transaction still committing can land in it) and kept here;
//! each call reads only the minutes since. A kept minute says what it held when it was read:
//! a job purged or retried later still counts there.

use crate::error::Result;
use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// The longest window asked for (a day), and so the most minutes kept per queue.
const MAX_MINUTES: i64 = 1440;

/// One minute of history (by the minute its jobs finished).
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct Minute {
    /// The start of the minute.
    pub minute: DateTime<Utc>,
    pub completed: i64,
    pub failed: i64,
    /// Wait before the last attempt's start, from when the job could first run (the later of
    /// created_at and run_at), of the jobs that finished in this minute; 0 when none.
    pub wait_p50_ms: i64,
    pub wait_p95_ms: i64,
}

/// Minutes already over and read, per queue (`None`: every queue), by their start.
#[derive(Debug, Default)]
pub struct History {
    kept: Mutex<HashMap<Option<String>, Kept>>,
}

impl History {
    /// The last `minutes` minutes of `queue` (every queue when `None`), oldest first, every
    /// minute present; the last one is the current minute. Reads the jobs finished since
    /// the newest kept minute (all the window's when the kept ones do not reach back to its
    /// start), through the partial index jobs_finished (finished_at).
    pub async fn minutes(
        &self,
        db: &PgPool,
        queue: Option<&str>,
        minutes: i32,
    ) -> Result<Vec<Minute>> {
        let key = queue.map(str::to_owned);
        let kept_run = self.lock().get(&key).and_then(newest_run);
        let rows = read(db, queue, minutes, kept_run).await?;
        let (Some(first), Some(now)) = (rows.first(), rows.last()) else {
            return Ok(rows);
        };
        let (start, now) = (first.minute, now.minute);
        let mut all = self.lock();
        let kept = all.entry(key).or_default();
        // The same test the query made: kept minutes stand in for the ones it did not read.
        let out: Vec<Minute> = match kept_run {
            Some((oldest, newest)) if oldest <= start => rows
                .into_iter()
                .map(|m| match kept.get(&m.minute) {
                    Some(k) if m.minute <= newest => k.clone(),
                    _ => m,
                })
                .collect(),
            _ => rows,
        };
        for m in out.iter().filter(|m| m.minute < now - Duration::minutes(1)) {
            kept.insert(m.minute, m.clone());
        }
        kept.retain(|m, _| *m > now - Duration::minutes(MAX_MINUTES));
        Ok(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Option<String>, Kept>> {
        // A panic while holding it leaves plain maps behind: still consistent.
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The kept minutes of one queue, by their start.
type Kept = BTreeMap<DateTime<Utc>, Minute>;

/// The oldest and newest minute of the unbroken run of kept minutes that ends with the
/// newest one (a window asked for after a pause leaves older runs behind a gap).
fn newest_run(kept: &Kept) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let mut minutes = kept.keys().rev();
    let newest = *minutes.next()?;
    let mut oldest = newest;
    for &m in minutes {
        if m != oldest - Duration::minutes(1) {
            break;
        }
        oldest = m;
    }
    Some((oldest, newest))
}

/// Every minute of the window. When `kept` (the oldest and newest kept minute of an unbroken
/// run) reaches back to the window's start, only the jobs finished after its newest minute
/// are read, and the minutes up to it come back empty, to be filled from those kept.
async fn read(
    db: &PgPool,
    queue: Option<&str>,
    minutes: i32,
    kept: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> Result<Vec<Minute>> {
    let rows = sqlx::query!(
        r#"WITH w AS (
               SELECT date_trunc('minute', now()) AS now_minute,
                      date_trunc('minute', now()) - ($2::int4 - 1) * interval '1 minute' AS start
           ), m AS (
               SELECT generate_series(w.start, w.now_minute, interval '1 minute') AS minute FROM w
           ), f AS (
               SELECT date_trunc('minute', j.finished_at) AS minute, j.state,
                      greatest(extract(epoch FROM j.started_at - greatest(j.created_at, j.run_at)), 0)
                          * 1000 AS wait_ms
               FROM w, jobs j
               WHERE j.state IN ('completed', 'failed')
                 AND j.finished_at >= CASE WHEN $3::timestamptz <= w.start
                                           THEN $4::timestamptz + interval '1 minute'
                                           ELSE w.start END
                 AND ($1::text IS NULL OR j.queue = $1)
           )
           SELECT m.minute AS "minute!",
                  count(f.state) FILTER (WHERE f.state = 'completed') AS "completed!",
                  count(f.state) FILTER (WHERE f.state = 'failed') AS "failed!",
                  coalesce(round(percentile_cont(0.5) WITHIN GROUP (ORDER BY f.wait_ms)), 0)::int8
                      AS "wait_p50_ms!",
                  coalesce(round(percentile_cont(0.95) WITHIN GROUP (ORDER BY f.wait_ms)), 0)::int8
                      AS "wait_p95_ms!"
           FROM m LEFT JOIN f ON f.minute = m.minute
           GROUP BY m.minute
           ORDER BY m.minute"#,
        queue,
        minutes,
        kept.map(|k| k.0),
        kept.map(|k| k.1),
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Minute {
            minute: r.minute,
            completed: r.completed,
            failed: r.failed,
            wait_p50_ms: r.wait_p50_ms,
            wait_p95_ms: r.wait_p95_ms,
        })
        .collect())
}
