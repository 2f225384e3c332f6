//! Periodic cleanup (the seeds' Celery-beat / BullMQ `removeOnComplete` role): finished jobs
//! past their queue's retention (completed and cancelled: `retention_completed_s`, 24 h by
//! default; failed: `retention_failed_s`, 7 d) and delivered outbox rows past the outbox
//! retention (24 h).
//!
//! Must never: delete the failed head of a blocked lane, a failed or disabled delivery (they
//! stay visible and replayable), or hold many locks for long — each statement deletes at
//! most 1,000 rows and skips rows another statement holds, so several replicas may run it at
//! once harmlessly.

use crate::db::outbox;
use crate::db::states::JobState;
use crate::db::transitions::purge;
use crate::error::Result;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What one pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// Completed jobs.
    pub jobs_completed: u64,
    /// Failed jobs.
    pub jobs_failed: u64,
    /// Cancelled jobs.
    pub jobs_cancelled: u64,
    /// Delivered outbox rows.
    pub outbox_delivered: u64,
}

impl Deleted {
    /// The counts with their metric label.
    fn by_kind(&self) -> [(&'static str, u64); 4] {
        [
            ("jobs_completed", self.jobs_completed),
            ("jobs_failed", self.jobs_failed),
            ("jobs_cancelled", self.jobs_cancelled),
            ("outbox_delivered", self.outbox_delivered),
        ]
    }
}

/// Runs a pass every `every` until `stop`; logs and counts what each pass deleted.
pub async fn run(pool: PgPool, every: Duration, outbox_retention_s: i64, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match pass(&pool, outbox_retention_s, &stop).await {
            Ok(d) => report(&d),
            Err(e) => tracing::warn!(error = %e, "retention pass failed; will try again"),
        }
    }
}

fn report(d: &Deleted) {
    for (kind, n) in d.by_kind() {
        if n > 0 {
            metrics::counter!("lanes_retention_deleted_total", "kind" => kind).increment(n);
        }
    }
    if d.by_kind().iter().any(|(_, n)| *n > 0) {
        tracing::info!(
            jobs.completed = d.jobs_completed,
            jobs.failed = d.jobs_failed,
            jobs.cancelled = d.jobs_cancelled,
            outbox.delivered = d.outbox_delivered,
            "retention deleted old rows"
        );
    }
}

/// One pass: batch after batch until nothing old is left (or `stop`), yielding between
/// batches so the pool's connections and the runtime stay free for RPCs.
pub async fn pass(
    pool: &PgPool,
    outbox_retention_s: i64,
    stop: &CancellationToken,
) -> Result<Deleted> {
    let mut d = Deleted::default();
    loop {
        let batch = purge::purge_batch(pool, None, None).await?;
        let mut n = 0;
        for (state, count) in batch {
            let count = count.max(0) as u64;
            n += count;
            match state {
                JobState::Completed => d.jobs_completed += count,
                JobState::Failed => d.jobs_failed += count,
                JobState::Cancelled => d.jobs_cancelled += count,
                JobState::Scheduled | JobState::Pending | JobState::Running => {}
            }
        }
        if n < purge::BATCH as u64 || stop.is_cancelled() {
            break;
        }
        tokio::task::yield_now().await;
    }
    loop {
        let n = outbox::delete_delivered_batch(pool, outbox_retention_s).await?;
        d.outbox_delivered += n;
        if n < outbox::BATCH as u64 || stop.is_cancelled() {
            break;
        }
        tokio::task::yield_now().await;
    }
    Ok(d)
}
