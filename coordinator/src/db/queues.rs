//! Per-queue settings (the `queues` table). A queue row is created with the defaults on
//! first use; every replica reads the same row, so settings agree across replicas. Every
//! setting is checked against its range (`lanes_proto::limits::settings`) before it is
//! stored, so no value can reach a transition that would overflow on it.

use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use lanes_proto::limits::{Invalid, settings as limit};
use sqlx::PgPool;

/// What a lane does when one of its jobs ends `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "failure_policy", rename_all = "lowercase")]
pub enum FailurePolicy {
    /// The next job of the lane proceeds.
    Continue,
    /// The lane stops until an operator acts.
    Block,
}

/// A row of `queues`.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Queue name.
    pub name: String,
    /// Attempts before a job ends `failed`.
    pub max_attempts: i32,
    /// First retry delay; doubled per attempt up to `backoff_max_ms`.
    pub backoff_initial_ms: i64,
    /// Cap of the retry delay.
    pub backoff_max_ms: i64,
    /// Lease TTL, extended by heartbeats.
    pub lease_ttl_ms: i64,
    /// Hard limit of one run.
    pub job_timeout_ms: i64,
    /// Completed jobs are purged after this.
    pub retention_completed_s: i64,
    /// Failed jobs are purged after this.
    pub retention_failed_s: i64,
    /// Backpressure limit of pending jobs.
    pub max_pending: Option<i64>,
    /// Cap of running jobs.
    pub max_running: Option<i32>,
    /// Leasing stopped.
    pub paused: bool,
    /// Lane behaviour after a failed job.
    pub failure_policy: FailurePolicy,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Soft limit of one run.
    pub soft_timeout_ms: Option<i64>,
    /// At most this many jobs start per `rate_interval_ms`.
    pub rate_limit: Option<i32>,
    /// See `rate_limit`.
    pub rate_interval_ms: Option<i64>,
    /// How long an idempotency key returns its job (None: forever).
    pub idempotency_window_s: Option<i64>,
}

/// A partial update: `None` keeps the current value; `Some(None)` clears a nullable limit.
#[derive(Debug, Default, Clone)]
pub struct SettingsPatch {
    /// See [`QueueSettings`].
    pub max_attempts: Option<i32>,
    /// See [`QueueSettings`].
    pub backoff_initial_ms: Option<i64>,
    /// See [`QueueSettings`].
    pub backoff_max_ms: Option<i64>,
    /// See [`QueueSettings`].
    pub lease_ttl_ms: Option<i64>,
    /// See [`QueueSettings`].
    pub job_timeout_ms: Option<i64>,
    /// See [`QueueSettings`].
    pub retention_completed_s: Option<i64>,
    /// See [`QueueSettings`].
    pub retention_failed_s: Option<i64>,
    /// See [`QueueSettings`].
    pub max_pending: Option<Option<i64>>,
    /// See [`QueueSettings`].
    pub max_running: Option<Option<i32>>,
    /// See [`QueueSettings`].
    pub paused: Option<bool>,
    /// See [`QueueSettings`].
    pub failure_policy: Option<FailurePolicy>,
    /// See [`QueueSettings`].
    pub soft_timeout_ms: Option<Option<i64>>,
    /// See [`QueueSettings`]: the limit and its interval, set or cleared together.
    pub rate: Option<Option<(i32, i64)>>,
    /// See [`QueueSettings`].
    pub idempotency_window_s: Option<Option<i64>>,
}

impl SettingsPatch {
    /// `current` with this patch applied, every value checked against its range.
    fn apply(&self, mut s: QueueSettings) -> Result<QueueSettings, Invalid> {
        let i64_of = |r: lanes_proto::limits::Range, v: Option<i64>, cur: i64| match v {
            Some(v) => r.check(v),
            None => Ok(cur),
        };
        if let Some(v) = self.max_attempts {
            s.max_attempts = limit::MAX_ATTEMPTS.check_i32(v.into())?;
        }
        s.backoff_initial_ms = i64_of(
            limit::BACKOFF_INITIAL_MS,
            self.backoff_initial_ms,
            s.backoff_initial_ms,
        )?;
        s.backoff_max_ms = i64_of(limit::BACKOFF_MAX_MS, self.backoff_max_ms, s.backoff_max_ms)?;
        s.lease_ttl_ms = i64_of(limit::LEASE_TTL_MS, self.lease_ttl_ms, s.lease_ttl_ms)?;
        s.job_timeout_ms = i64_of(limit::JOB_TIMEOUT_MS, self.job_timeout_ms, s.job_timeout_ms)?;
        s.retention_completed_s = i64_of(
            limit::RETENTION_COMPLETED_S,
            self.retention_completed_s,
            s.retention_completed_s,
        )?;
        s.retention_failed_s = i64_of(
            limit::RETENTION_FAILED_S,
            self.retention_failed_s,
            s.retention_failed_s,
        )?;
        if let Some(v) = self.max_pending {
            s.max_pending = v.map(|n| limit::MAX_PENDING.check(n)).transpose()?;
        }
        if let Some(v) = self.max_running {
            s.max_running = v
                .map(|n| limit::MAX_RUNNING.check_i32(n.into()))
                .transpose()?;
        }
        if let Some(v) = self.soft_timeout_ms {
            s.soft_timeout_ms = v.map(|n| limit::SOFT_TIMEOUT_MS.check(n)).transpose()?;
            // 0 clears it (None here); a soft limit shorter than a second is a typo, and a
            // job's own soft limit cannot be below one second either.
            if let Some(n) = s.soft_timeout_ms.filter(|n| *n < 1000) {
                return Err(Invalid::new(
                    "soft_timeout_ms",
                    format!("soft_timeout_ms must be 0 (none) or ≥ 1000 (got {n})"),
                ));
            }
        }
        if let Some(v) = self.rate {
            (s.rate_limit, s.rate_interval_ms) = match v {
                Some((n, ms)) => (
                    Some(limit::RATE_LIMIT.check_i32(n.into())?),
                    Some(limit::RATE_INTERVAL_MS.check(ms)?),
                ),
                None => (None, None),
            };
        }
        if let Some(v) = self.idempotency_window_s {
            s.idempotency_window_s = v
                .map(|n| limit::IDEMPOTENCY_WINDOW_S.check(n))
                .transpose()?;
        }
        s.paused = self.paused.unwrap_or(s.paused);
        s.failure_policy = self.failure_policy.unwrap_or(s.failure_policy);
        if s.backoff_max_ms < s.backoff_initial_ms {
            return Err(Invalid::new(
                "backoff_max_ms",
                format!(
                    "backoff_max_ms must be ≥ backoff_initial_ms ({}) (got {})",
                    s.backoff_initial_ms, s.backoff_max_ms
                ),
            ));
        }
        if let Some(soft) = s.soft_timeout_ms.filter(|soft| *soft >= s.job_timeout_ms) {
            // Name the field this patch changed: that is the one to correct.
            let field = if self.soft_timeout_ms.is_some() {
                "soft_timeout_ms"
            } else {
                "job_timeout_ms"
            };
            return Err(Invalid::new(
                field,
                format!(
                    "soft_timeout_ms ({soft}) must be below job_timeout_ms ({}): the soft \
                     limit warns the handler before the hard limit kills it",
                    s.job_timeout_ms
                ),
            ));
        }
        Ok(s)
    }
}

/// Creates the queue with default settings if it does not exist yet.
pub async fn ensure(db: &PgPool, name: &str) -> Result<()> {
    sqlx::query!(
        "INSERT INTO queues (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
        name
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The queue's settings, creating the queue with defaults if needed.
pub async fn get(pool: &PgPool, name: &str) -> Result<QueueSettings> {
    ensure(pool, name).await?;
    Ok(sqlx::query_as!(
        QueueSettings,
        r#"SELECT name, max_attempts, backoff_initial_ms, backoff_max_ms, lease_ttl_ms,
                  job_timeout_ms, retention_completed_s, retention_failed_s, max_pending,
                  max_running, paused, failure_policy AS "failure_policy: FailurePolicy",
                  updated_at, soft_timeout_ms, rate_limit, rate_interval_ms,
                  idempotency_window_s
           FROM queues WHERE name = $1"#,
        name
    )
    .fetch_one(pool)
    .await?)
}

/// Every known queue.
pub async fn list(pool: &PgPool) -> Result<Vec<QueueSettings>> {
    Ok(sqlx::query_as!(
        QueueSettings,
        r#"SELECT name, max_attempts, backoff_initial_ms, backoff_max_ms, lease_ttl_ms,
                  job_timeout_ms, retention_completed_s, retention_failed_s, max_pending,
                  max_running, paused, failure_policy AS "failure_policy: FailurePolicy",
                  updated_at, soft_timeout_ms, rate_limit, rate_interval_ms,
                  idempotency_window_s
           FROM queues ORDER BY name"#
    )
    .fetch_all(pool)
    .await?)
}

/// Applies a patch, creating the queue first if needed. Every value is checked (with the
/// merged result) before anything is stored; the row is locked while it is read and
/// written, so concurrent patches of different fields both land.
pub async fn update(pool: &PgPool, name: &str, p: &SettingsPatch) -> Result<QueueSettings> {
    ensure(pool, name).await?;
    let mut tx = pool.begin().await?;
    let current = sqlx::query_as!(
        QueueSettings,
        r#"SELECT name, max_attempts, backoff_initial_ms, backoff_max_ms, lease_ttl_ms,
                  job_timeout_ms, retention_completed_s, retention_failed_s, max_pending,
                  max_running, paused, failure_policy AS "failure_policy: FailurePolicy",
                  updated_at, soft_timeout_ms, rate_limit, rate_interval_ms,
                  idempotency_window_s
           FROM queues WHERE name = $1 FOR UPDATE"#,
        name
    )
    .fetch_one(&mut *tx)
    .await?;
    let s = p.apply(current).map_err(Error::from)?;
    let updated = sqlx::query_as!(
        QueueSettings,
        r#"UPDATE queues SET max_attempts = $2, backoff_initial_ms = $3, backoff_max_ms = $4,
               lease_ttl_ms = $5, job_timeout_ms = $6, retention_completed_s = $7,
               retention_failed_s = $8, max_pending = $9, max_running = $10, paused = $11,
               failure_policy = $12, soft_timeout_ms = $13, rate_limit = $14,
               rate_interval_ms = $15, idempotency_window_s = $16, updated_at = now()
           WHERE name = $1
           RETURNING name, max_attempts, backoff_initial_ms, backoff_max_ms, lease_ttl_ms,
                  job_timeout_ms, retention_completed_s, retention_failed_s, max_pending,
                  max_running, paused, failure_policy AS "failure_policy: FailurePolicy",
                  updated_at, soft_timeout_ms, rate_limit, rate_interval_ms,
                  idempotency_window_s"#,
        name,
        s.max_attempts,
        s.backoff_initial_ms,
        s.backoff_max_ms,
        s.lease_ttl_ms,
        s.job_timeout_ms,
        s.retention_completed_s,
        s.retention_failed_s,
        s.max_pending,
        s.max_running,
        s.paused,
        s.failure_policy as FailurePolicy,
        s.soft_timeout_ms,
        s.rate_limit,
        s.rate_interval_ms,
        s.idempotency_window_s,
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> QueueSettings {
        QueueSettings {
            name: "q".into(),
            max_attempts: 3,
            backoff_initial_ms: 5000,
            backoff_max_ms: 3_600_000,
            lease_ttl_ms: 30_000,
            job_timeout_ms: 600_000,
            retention_completed_s: 86_400,
            retention_failed_s: 604_800,
            max_pending: None,
            max_running: None,
            paused: false,
            failure_policy: FailurePolicy::Continue,
            updated_at: Utc::now(),
            soft_timeout_ms: None,
            rate_limit: None,
            rate_interval_ms: None,
            idempotency_window_s: None,
        }
    }

    #[test]
    fn every_setting_is_checked_before_it_is_stored() {
        let bad = [
            SettingsPatch {
                job_timeout_ms: Some(i64::MAX),
                ..Default::default()
            },
            SettingsPatch {
                backoff_initial_ms: Some(10_000_000_000_000_000),
                backoff_max_ms: Some(10_000_000_000_000_000),
                ..Default::default()
            },
            SettingsPatch {
                retention_completed_s: Some(1_000_000_000_000),
                ..Default::default()
            },
            SettingsPatch {
                lease_ttl_ms: Some(10),
                ..Default::default()
            },
            SettingsPatch {
                backoff_max_ms: Some(1000),
                ..Default::default()
            },
        ];
        for p in bad {
            let e = p.apply(defaults()).unwrap_err();
            assert!(e.message.contains(&e.field), "{e:?}");
        }
        let ok = SettingsPatch {
            job_timeout_ms: Some(1000),
            max_running: Some(Some(4)),
            ..Default::default()
        }
        .apply(defaults())
        .unwrap();
        assert_eq!((ok.job_timeout_ms, ok.max_running), (1000, Some(4)));
    }
}
