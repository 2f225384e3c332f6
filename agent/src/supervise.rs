//! Supervises one leased job: runs the handler while heartbeating, warns it at its soft time
//! limit, and stops it at once when its time is up, the job is cancelled, the lease is lost or
//! cannot be renewed, or the shutdown grace period is over. Decides the [`Ending`]; reporting
//! it is the lease loop's.
//!
//! Must never: return while the handler still runs (the runner kills and reaps it before it
//! returns), or let two copies of one job run (a lost lease stops the handler first).

use crate::config::Settings;
use crate::connection::Connection;
use crate::heartbeat::{self, Lease, Stop};
use crate::runner::{JobMeta, Limits, Outcome, Runner, Timing, traceparent_for};
use crate::shutdown::Shutdown;
use chrono::Utc;
use lanes_proto::v1::LeasedJob;
use prost_types::Timestamp;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Handler time limit when the job carries no usable deadline (the queue default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// How a job's run ended, as the lease loop reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// The handler ended on its own.
    Finished(Outcome),
    /// Stopped because a client cancelled the job (stderr tail).
    Cancelled(String),
    /// Stopped because the coordinator no longer knows our lease: nothing to report.
    LeaseLost(String),
    /// Stopped because the lease could not be renewed in time (stderr tail).
    Unrenewable(String),
    /// Stopped at the handler time limit (limit, stderr tail).
    TimedOut(Duration, String),
    /// Stopped at the end of the shutdown grace period: hand the job back (stderr tail).
    Released(String),
}

/// What a supervisor needs, shared by every job of the agent.
pub struct Supervisor<'a> {
    /// The settings.
    pub settings: &'a Settings,
    /// The coordinator.
    pub conn: &'a Connection,
    /// The handler.
    pub runner: &'a Runner,
    /// Shutdown signals.
    pub shutdown: &'a Shutdown,
}

impl Supervisor<'_> {
    /// Runs `job`, leased by a request sent at `requested`, to its ending.
    pub async fn run(&self, job: &LeasedJob, requested: Instant) -> (Ending, Timing) {
        let lease = Lease::new(job, requested, self.settings.heartbeat);
        let limit = self.settings.timeout.unwrap_or_else(|| job_timeout(job));
        // A soft limit at or past the hard one (an agent --timeout-ms below it) never fires.
        let soft_limit = since_start(job, &job.soft_deadline).filter(|&s| s < limit);
        // The run span's context when tracing is on, so the handler's own spans are its
        // children; else the job's as stored.
        let (traceparent, tracestate) = lanes_telemetry::current_traceparent()
            .unwrap_or_else(|| (traceparent_for(job), job.tracestate.clone()));
        let now = Utc::now();
        let meta = JobMeta {
            job,
            deadline: now + limit,
            soft_deadline: soft_limit.map(|s| now + s),
            traceparent,
            tracestate,
        };
        let limits = Limits::default();
        let (progress_tx, progress_rx) = watch::channel(None);
        let run = self.runner.run(&meta, progress_tx, &limits);
        tokio::pin!(run);
        let beats = heartbeat::keep_alive(self.conn, job, lease, progress_rx);
        tokio::pin!(beats);
        let timeout = tokio::time::sleep(limit);
        tokio::pin!(timeout);
        let soft = tokio::time::sleep(soft_limit.unwrap_or(limit));
        tokio::pin!(soft);
        let mut soft_pending = soft_limit.is_some();
        let why = loop {
            tokio::select! {
                biased;
                done = &mut run => return (Ending::Finished(done.outcome), done.timing),
                stop = &mut beats => break Why::Heartbeat(stop),
                _ = &mut timeout => break Why::Timeout,
                _ = self.shutdown.hard.cancelled() => break Why::Release,
                _ = &mut soft, if soft_pending => {
                    soft_pending = false;
                    limits.soft.cancel();
                }
            }
        };
        limits.stop.cancel();
        let done = run.await;
        let detail = match &done.outcome {
            Outcome::Stopped { detail } => detail.clone(),
            // It ended on its own just as it was being stopped: the stop still decides.
            Outcome::Completed { .. } | Outcome::Failed { .. } => String::new(),
        };
        let ending = match why {
            Why::Heartbeat(Stop::CancelRequested) => Ending::Cancelled(detail),
            Why::Heartbeat(Stop::LeaseLost(m)) => Ending::LeaseLost(m),
            Why::Heartbeat(Stop::Unrenewable) => Ending::Unrenewable(detail),
            Why::Timeout => Ending::TimedOut(limit, detail),
            Why::Release => Ending::Released(detail),
        };
        (ending, done.timing)
    }
}

enum Why {
    Heartbeat(Stop),
    Timeout,
    Release,
}

/// The job's time limit (the job's own or its queue's), read off the lease.
fn job_timeout(job: &LeasedJob) -> Duration {
    since_start(job, &job.deadline).unwrap_or(DEFAULT_TIMEOUT)
}

/// How long after the start of the run the time `at` is, read off the lease: `at` is
/// start + limit and `lease_expires_at` is start + TTL, so their difference plus the TTL is
/// the limit — a duration, independent of how the agent's clock compares with the
/// database's. `None` when absent or not after the start.
fn since_start(job: &LeasedJob, at: &Option<Timestamp>) -> Option<Duration> {
    let ms = |t: &Option<Timestamp>| {
        t.as_ref()
            .map(|t| i128::from(t.seconds) * 1000 + i128::from(t.nanos) / 1_000_000)
    };
    let total = ms(at)? - ms(&job.lease_expires_at)? + i128::from(job.lease_ttl_ms);
    u64::try_from(total)
        .ok()
        .filter(|&t| t > 0)
        .map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_limit_is_read_off_the_lease() {
        let at = |seconds, nanos| Some(Timestamp { seconds, nanos });
        let job = LeasedJob {
            lease_ttl_ms: 30_000,
            lease_expires_at: at(1_000_030, 500_000_000),
            deadline: at(1_000_600, 500_000_000),
            ..Default::default()
        };
        assert_eq!(job_timeout(&job), Duration::from_secs(600));
        assert_eq!(job_timeout(&LeasedJob::default()), DEFAULT_TIMEOUT);
        let soft = LeasedJob {
            soft_deadline: at(1_000_025, 500_000_000),
            ..job.clone()
        };
        assert_eq!(
            since_start(&soft, &soft.soft_deadline),
            Some(Duration::from_secs(25))
        );
        assert_eq!(since_start(&job, &job.soft_deadline), None);
    }
}
