//! The `schedules` and `schedule_ticks` tables: schedules as operators define them, and the
//! scheduler's one write, [`fire`] — a schedule's due ticks inserted together with their
//! jobs in one transaction. The tick's primary key (schedule, fire time) is what makes each
//! tick enqueue one job across replicas; the row lock taken first (SKIP LOCKED) only keeps
//! two replicas from doing the same work twice.
//!
//! Must never: insert a job any other way than through `transitions.enqueue`, in the
//! transaction of its tick.

use crate::db::transitions::enqueue::{self, Enqueued, NewJob};
use crate::error::{Error, Result};
use crate::schedules::cron::Timing;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::time::Duration;

/// What a schedule does with ticks missed while every replica was down; mirrors
/// `CREATE TYPE schedule_missed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, sqlx::Type)]
#[sqlx(type_name = "schedule_missed", rename_all = "snake_case")]
pub enum Missed {
    /// Enqueue nothing for them.
    #[default]
    Skip,
    /// Enqueue one job, for the latest of them.
    RunOnce,
}

/// A schedule as stored.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct ScheduleRow {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub queue: String,
    pub lane: Option<String>,
    /// JSON text, as given.
    pub payload: String,
    pub priority: i32,
    pub missed: Missed,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The database's now() when this was read (for the next fire times).
    pub now: DateTime<Utc>,
}

/// A new schedule, already checked.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct NewSchedule {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub queue: String,
    pub lane: Option<String>,
    pub payload: String,
    pub priority: i32,
    pub missed: Missed,
    pub enabled: bool,
}

/// The fields of an update, already checked; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
#[allow(missing_docs)]
pub struct SchedulePatch {
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub queue: Option<String>,
    /// `Some(None)` removes the lane.
    pub lane: Option<Option<String>>,
    pub payload: Option<String>,
    pub priority: Option<i32>,
    pub missed: Option<Missed>,
    pub enabled: Option<bool>,
}

/// Creates a schedule (its queue exists); `AlreadyExists` when the name is taken. The
/// next pass of the scheduler computes its first tick, counting from now.
pub async fn create(db: &PgPool, s: &NewSchedule) -> Result<ScheduleRow> {
    sqlx::query_as!(
        ScheduleRow,
        r#"INSERT INTO schedules (name, cron, timezone, queue, lane, payload, priority, missed,
                                  enabled)
           VALUES ($1, $2, $3, $4, $5, $6::text::json, $7, $8, $9)
           RETURNING name, cron, timezone, queue, lane, payload::text AS "payload!", priority,
                     missed AS "missed: Missed", enabled, created_at, updated_at,
                     now() AS "now!""#,
        s.name,
        s.cron,
        s.timezone,
        s.queue,
        s.lane,
        s.payload,
        s.priority,
        s.missed as Missed,
        s.enabled,
    )
    .fetch_one(db)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23505") => {
            Error::AlreadyExists(format!("a schedule named {:?} exists already", s.name))
        }
        _ => Error::Db(e),
    })
}

/// Every schedule, by name.
pub async fn list(db: &PgPool) -> Result<Vec<ScheduleRow>> {
    Ok(sqlx::query_as!(
        ScheduleRow,
        r#"SELECT name, cron, timezone, queue, lane, payload::text AS "payload!", priority,
                  missed AS "missed: Missed", enabled, created_at, updated_at, now() AS "now!"
           FROM schedules ORDER BY name"#
    )
    .fetch_all(db)
    .await?)
}

/// One schedule; `NotFound` when there is none of that name.
pub async fn get(db: &PgPool, name: &str) -> Result<ScheduleRow> {
    sqlx::query_as!(
        ScheduleRow,
        r#"SELECT name, cron, timezone, queue, lane, payload::text AS "payload!", priority,
                  missed AS "missed: Missed", enabled, created_at, updated_at, now() AS "now!"
           FROM schedules WHERE name = $1"#,
        name
    )
    .fetch_optional(db)
    .await?
    .ok_or_else(|| not_found(name))
}

/// Applies `p` (its queue, if new, exists). A new cron or time zone, or enabling again,
/// restarts the schedule from now: what the old timing or the pause left is not caught up.
/// Any change has the scheduler recompute the next tick.
pub async fn update(db: &PgPool, name: &str, p: &SchedulePatch) -> Result<ScheduleRow> {
    let (lane_given, lane) = match &p.lane {
        Some(l) => (true, l.as_deref()),
        None => (false, None),
    };
    sqlx::query_as!(
        ScheduleRow,
        r#"UPDATE schedules s SET
               cron = coalesce($2, s.cron), timezone = coalesce($3, s.timezone),
               queue = coalesce($4, s.queue),
               lane = CASE WHEN $5 THEN $6 ELSE s.lane END,
               payload = coalesce($7::text::json, s.payload),
               priority = coalesce($8, s.priority), missed = coalesce($9, s.missed),
               enabled = coalesce($10, s.enabled),
               fired_through = CASE
                   WHEN coalesce($2, s.cron) <> s.cron OR coalesce($3, s.timezone) <> s.timezone
                        OR (coalesce($10, s.enabled) AND NOT s.enabled)
                   THEN greatest(s.fired_through, now()) ELSE s.fired_through END,
               next_fire_at = now(), updated_at = now()
           WHERE s.name = $1
           RETURNING name, cron, timezone, queue, lane, payload::text AS "payload!", priority,
                     missed AS "missed: Missed", enabled, created_at, updated_at,
                     now() AS "now!""#,
        name,
        p.cron,
        p.timezone,
        p.queue,
        lane_given,
        lane,
        p.payload,
        p.priority,
        p.missed as Option<Missed>,
        p.enabled,
    )
    .fetch_optional(db)
    .await?
    .ok_or_else(|| not_found(name))
}

/// Deletes a schedule and its ticks (not the jobs they enqueued).
pub async fn delete(db: &PgPool, name: &str) -> Result<()> {
    let done = sqlx::query!("DELETE FROM schedules WHERE name = $1", name)
        .execute(db)
        .await?;
    if done.rows_affected() == 0 {
        return Err(not_found(name));
    }
    Ok(())
}

fn not_found(name: &str) -> Error {
    Error::NotFound(format!("no schedule named {name:?}"))
}

/// Names of enabled schedules whose next tick is due, oldest first (at most `limit`).
pub async fn due(db: &PgPool, limit: i64) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar!(
        "SELECT name FROM schedules WHERE enabled AND next_fire_at <= now()
         ORDER BY next_fire_at LIMIT $1",
        limit
    )
    .fetch_all(db)
    .await?)
}

/// How long until the next tick of any enabled schedule (zero if one is due); `None`
/// when no schedule has a next tick.
pub async fn next_due(db: &PgPool) -> Result<Option<Duration>> {
    let ms = sqlx::query_scalar!(
        r#"SELECT (extract(epoch FROM min(next_fire_at) - now()) * 1000)::bigint AS "ms"
           FROM schedules WHERE enabled"#
    )
    .fetch_one(db)
    .await?;
    Ok(ms.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))))
}

/// Deletes ticks that fired before `keep` ago (the scheduler never looks back past a
/// schedule's fired_through, so old ticks only serve as history); at most `batch` rows.
pub async fn prune(db: &PgPool, keep: Duration, batch: i64) -> Result<u64> {
    let keep_s = keep.as_secs_f64();
    let done = sqlx::query!(
        "DELETE FROM schedule_ticks WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM schedule_ticks
             WHERE fire_at < now() - $1::float8 * interval '1 second' LIMIT $2))",
        keep_s,
        batch
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// What one [`fire`] did.
#[derive(Debug, Default)]
pub struct Fired {
    /// The jobs enqueued, one per tick fired.
    pub jobs: Vec<Enqueued>,
    /// Ticks were missed (skipped, or folded into one by run_once).
    pub missed: bool,
}

/// Fires the due ticks of schedule `name`, unless it is not due, disabled, or being fired by
/// another replica right now: locks its row, plans from its fired_through and the
/// database's now() (`grace`: how late a tick may still fire), inserts the ticks — those
/// another replica inserted already are left out — and enqueues one job per tick inserted,
/// all in one transaction; then records how far it got and when the next tick is due.
pub async fn fire(db: &PgPool, name: &str, grace: Duration) -> Result<Fired> {
    let mut tx = db.begin().await?;
    let Some(s) = sqlx::query!(
        r#"SELECT cron, timezone, queue, lane, payload::text AS "payload!", priority,
                  missed AS "missed: Missed", fired_through, now() AS "now!"
           FROM schedules WHERE name = $1 AND enabled AND next_fire_at <= now()
           FOR UPDATE SKIP LOCKED"#,
        name
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(Fired::default());
    };
    let timing = match Timing::new(&s.cron, &s.timezone) {
        Ok(t) => t,
        Err(e) => {
            // Checked when stored; only a time zone dropped from a newer tz database gets
            // here. The schedule stops rather than being retried every pass.
            tracing::error!(schedule = %name, error = %e.message, "schedule cannot be read; it stops");
            set_progress(&mut tx, name, s.fired_through, None).await?;
            tx.commit().await?;
            return Ok(Fired::default());
        }
    };
    let plan = timing.plan(s.fired_through, s.now, grace, s.missed == Missed::RunOnce);
    let fired_at: Vec<DateTime<Utc>> = sqlx::query_scalar!(
        "INSERT INTO schedule_ticks (schedule, fire_at)
         SELECT $1, t FROM unnest($2::timestamptz[]) AS t
         ON CONFLICT (schedule, fire_at) DO NOTHING
         RETURNING fire_at",
        name,
        &plan.fire,
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut fired_at = fired_at;
    fired_at.sort();
    let jobs: Vec<NewJob> = fired_at
        .iter()
        .map(|t| NewJob {
            queue: s.queue.clone(),
            lane: s.lane.clone(),
            payload: s.payload.clone(),
            priority: s.priority,
            // Names the tick in the job (and guards the queue against a double too).
            idempotency_key: Some(tick_key(name, *t)),
            ..NewJob::default()
        })
        .collect();
    let enqueued = if jobs.is_empty() {
        Vec::new()
    } else {
        enqueue::enqueue(&mut *tx, &jobs).await?
    };
    let ids: Vec<i64> = enqueued.iter().map(|e| e.job.id).collect();
    sqlx::query!(
        "UPDATE schedule_ticks t SET job_id = j.id
         FROM unnest($2::timestamptz[], $3::bigint[]) AS j(fire_at, id)
         WHERE t.schedule = $1 AND t.fire_at = j.fire_at",
        name,
        &fired_at,
        &ids,
    )
    .execute(&mut *tx)
    .await?;
    set_progress(&mut tx, name, plan.through, plan.next).await?;
    tx.commit().await?;
    Ok(Fired {
        jobs: enqueued,
        missed: plan.missed,
    })
}

/// The idempotency key of the job of a tick: `schedule:<name>:<fire time, UTC>`.
pub fn tick_key(name: &str, at: DateTime<Utc>) -> String {
    format!(
        "schedule:{name}:{}",
        at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    )
}

async fn set_progress(
    tx: &mut sqlx::PgConnection,
    name: &str,
    through: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
) -> Result<()> {
    sqlx::query!(
        "UPDATE schedules SET fired_through = greatest(fired_through, $2), next_fire_at = $3
         WHERE name = $1",
        name,
        through,
        next,
    )
    .execute(tx)
    .await?;
    Ok(())
}
