//! Enqueue (`enqueue.sql`): the jobs of one request, all or nothing, in one round trip.
//! Keyed jobs join their lanes; a repeated idempotency key returns the existing job.

use crate::db::jobs::JobRow;
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};

/// A job to enqueue, already checked against the limits.
#[derive(Debug, Clone, Default)]
#[allow(missing_docs)]
pub struct NewJob {
    pub queue: String,
    pub lane: Option<String>,
    /// JSON text, kept as it is.
    pub payload: String,
    pub priority: i32,
    /// Run no earlier than this time…
    pub run_at: Option<DateTime<Utc>>,
    /// …or than this many seconds from now, on the database's clock.
    pub delay_s: Option<i64>,
    pub idempotency_key: Option<String>,
    pub callback_url: Option<String>,
    pub failure_callback_url: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// The job's own settings (None: its queue's), already checked.
    pub max_attempts: Option<i32>,
    pub timeout_ms: Option<i64>,
    pub soft_timeout_ms: Option<i64>,
    pub backoff_initial_ms: Option<i64>,
    pub backoff_max_ms: Option<i64>,
    /// A repeat of a waiting job's idempotency key replaces its payload.
    pub replace: bool,
}

impl NewJob {
    /// The job with its own settings checked against their ranges and each other (a soft
    /// limit below the hard one, a backoff cap at least its first wait, when both are given).
    pub fn checked(self) -> Result<Self> {
        use lanes_proto::limits::{Invalid, job as limit};
        if self.replace && self.idempotency_key.is_none() {
            return Err(Invalid::new(
                "replace",
                "replace needs an idempotency_key: it names the waiting job to replace",
            )
            .into());
        }
        if let Some(n) = self.max_attempts {
            limit::MAX_ATTEMPTS.check(n.into())?;
        }
        for (range, v) in [
            (limit::TIMEOUT_MS, self.timeout_ms),
            (limit::SOFT_TIMEOUT_MS, self.soft_timeout_ms),
            (limit::BACKOFF_INITIAL_MS, self.backoff_initial_ms),
            (limit::BACKOFF_MAX_MS, self.backoff_max_ms),
        ] {
            if let Some(v) = v {
                range.check(v)?;
            }
        }
        if let (Some(soft), Some(hard)) = (self.soft_timeout_ms, self.timeout_ms)
            && soft >= hard
        {
            return Err(Invalid::new(
                "soft_timeout_ms",
                format!("soft_timeout_ms must be below timeout_ms ({hard}) (got {soft})"),
            )
            .into());
        }
        if let (Some(first), Some(cap)) = (self.backoff_initial_ms, self.backoff_max_ms)
            && cap < first
        {
            return Err(Invalid::new(
                "backoff_max_ms",
                format!("backoff_max_ms must be ≥ backoff_initial_ms ({first}) (got {cap})"),
            )
            .into());
        }
        Ok(self)
    }
}

/// The outcome of enqueueing one job.
#[derive(Debug, Clone)]
pub struct Enqueued {
    /// The new job, or the existing one for a repeated idempotency key.
    pub job: JobRow,
    /// False when an existing job was returned.
    pub created: bool,
    /// True when an existing waiting job's payload was replaced.
    pub replaced: bool,
    /// Unfinished jobs of the lane ahead of this one; -1 for unkeyed jobs.
    pub position_in_lane: i64,
    /// Waiting or running jobs of the queue before this one; -1 for an existing job.
    pub position_in_queue: i64,
    /// This enqueue made a job leasable right now (wake an agent).
    pub ready_now: bool,
}

/// Enqueues `jobs` (their queues exist) in one transaction; the results come in input order.
/// A queue pushed past its `max_pending` refuses the whole request (`RESOURCE_EXHAUSTED`).
/// `db` is the pool, or a transaction that enqueues together with other rows (a schedule's
/// tick).
pub async fn enqueue<'e>(db: impl sqlx::PgExecutor<'e>, jobs: &[NewJob]) -> Result<Vec<Enqueued>> {
    let col = |f: fn(&NewJob) -> Option<&str>| jobs.iter().map(f).collect::<Vec<_>>();
    let rows = sqlx::query!(
        r#"SELECT o_created AS "created!", o_replaced AS "replaced!",
                  o_position_in_lane AS "position_in_lane!",
                  o_position_in_queue AS "position_in_queue!", o_ready AS "ready_now!",
                  o_job AS "job!: JobRow"
           FROM transitions.enqueue($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                                    $14, $15, $16, $17)"#,
        &jobs.iter().map(|j| j.queue.as_str()).collect::<Vec<_>>() as &[&str],
        &col(|j| j.lane.as_deref()) as &[Option<&str>],
        &jobs.iter().map(|j| j.payload.as_str()).collect::<Vec<_>>() as &[&str],
        &jobs.iter().map(|j| j.priority).collect::<Vec<_>>(),
        &jobs.iter().map(|j| j.run_at).collect::<Vec<_>>() as &[Option<DateTime<Utc>>],
        &jobs.iter().map(|j| j.delay_s).collect::<Vec<_>>() as &[Option<i64>],
        &col(|j| j.idempotency_key.as_deref()) as &[Option<&str>],
        &col(|j| j.callback_url.as_deref()) as &[Option<&str>],
        &col(|j| j.failure_callback_url.as_deref()) as &[Option<&str>],
        &col(|j| j.traceparent.as_deref()) as &[Option<&str>],
        &col(|j| j.tracestate.as_deref()) as &[Option<&str>],
        &jobs.iter().map(|j| j.max_attempts).collect::<Vec<_>>() as &[Option<i32>],
        &jobs.iter().map(|j| j.timeout_ms).collect::<Vec<_>>() as &[Option<i64>],
        &jobs.iter().map(|j| j.soft_timeout_ms).collect::<Vec<_>>() as &[Option<i64>],
        &jobs
            .iter()
            .map(|j| j.backoff_initial_ms)
            .collect::<Vec<_>>() as &[Option<i64>],
        &jobs.iter().map(|j| j.backoff_max_ms).collect::<Vec<_>>() as &[Option<i64>],
        &jobs.iter().map(|j| j.replace).collect::<Vec<_>>(),
    )
    .fetch_all(db)
    .await
    .map_err(full_queue)?;
    Ok(rows
        .into_iter()
        .map(|r| Enqueued {
            job: r.job,
            created: r.created,
            replaced: r.replaced,
            position_in_lane: r.position_in_lane,
            position_in_queue: r.position_in_queue,
            ready_now: r.ready_now,
        })
        .collect())
}

/// A queue over its max_pending (SQLSTATE LN429) is the client's to wait for.
fn full_queue(e: sqlx::Error) -> Error {
    match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("LN429") => {
            Error::Exhausted(d.message().to_owned())
        }
        _ => Error::Db(e),
    }
}
