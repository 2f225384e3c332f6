//! Heartbeats of the running job: extend the lease every interval, forward the handler's
//! progress, and say when the handler must stop — cancellation requested, lease lost, or the
//! lease about to lapse because the coordinator cannot be reached.
//!
//! Lease times are measured on the agent's own monotonic clock from the moment the request
//! that granted or extended the lease was *sent*, so they err on the early side whatever the
//! clocks of the agent and the database say. Must never: let the handler run past the lease.

use crate::connection::{Connection, Failure, classify};
use crate::runner::Progress;
use lanes_proto::v1::{HeartbeatRequest, LeasedJob};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

/// Progress is sent early, but not more often than this.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Why the handler must stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A client cancelled the job.
    CancelRequested,
    /// The coordinator says this lease is no longer ours.
    LeaseLost(String),
    /// The lease could not be renewed before it lapses.
    Unrenewable,
}

/// The lease of the running job, on the agent's clock.
#[derive(Debug, Clone, Copy)]
pub struct Lease {
    /// The lease TTL.
    pub ttl: Duration,
    /// When it lapses unless extended.
    pub expires: Instant,
    /// Heartbeat interval.
    pub interval: Duration,
}

impl Lease {
    /// The lease of `job`, granted by a request sent at `requested`; heartbeats every
    /// `fixed` if given, else every third of the TTL (never above half of it).
    pub fn new(job: &LeasedJob, requested: Instant, fixed: Option<Duration>) -> Self {
        let ttl = Duration::from_millis(u64::try_from(job.lease_ttl_ms).unwrap_or(0).max(100));
        let interval = fixed.unwrap_or(ttl / 3).min(ttl / 2);
        Lease {
            ttl,
            expires: requested + ttl,
            interval,
        }
    }

    /// When the handler is stopped if no heartbeat got through: shortly before expiry.
    fn kill_at(&self) -> Instant {
        self.expires - (self.ttl / 10).min(Duration::from_secs(1))
    }
}

/// Heartbeats `job` until the handler must stop; the caller drops this future when the
/// handler ends first.
pub async fn keep_alive(
    conn: &Connection,
    job: &LeasedJob,
    mut lease: Lease,
    mut progress: watch::Receiver<Option<Progress>>,
) -> Stop {
    let mut progress_open = true;
    let mut last_sent = Instant::now();
    let mut due = lease.expires - lease.ttl + lease.interval;
    loop {
        tokio::select! {
            _ = sleep_until(due) => {}
            _ = sleep_until(lease.kill_at()) => return Stop::Unrenewable,
            changed = progress.changed(), if progress_open => {
                match changed {
                    Ok(()) => due = due.min((last_sent + PROGRESS_EVERY).max(Instant::now())),
                    Err(_) => progress_open = false,
                }
                continue;
            }
        }
        let sent = Instant::now();
        let p = progress.borrow_and_update().clone();
        let req = HeartbeatRequest {
            job_id: job.id,
            lease_token: job.lease_token,
            progress_percent: p.as_ref().map(|p| p.percent),
            progress_message: p.map(|p| p.message),
        };
        let answer = tokio::select! {
            a = conn.call("Heartbeat", |mut c| async move { c.heartbeat(req).await }) => a,
            _ = sleep_until(lease.kill_at()) => return Stop::Unrenewable,
        };
        last_sent = sent;
        match answer {
            Ok(a) if a.cancel_requested => return Stop::CancelRequested,
            Ok(_) => {
                lease.expires = sent + lease.ttl;
                due = sent + lease.interval;
            }
            Err(s) if classify(&s) == Failure::Stale => {
                return Stop::LeaseLost(s.message().to_owned());
            }
            Err(s) => {
                let left = lease.kill_at().saturating_duration_since(Instant::now());
                tracing::warn!(code = ?s.code(), error = %s.message(), ?left, "heartbeat failed; retrying");
                // Retry soon: a few tries fit in what is left of the lease.
                due = Instant::now()
                    + (lease.interval / 4).clamp(Duration::from_millis(50), Duration::from_secs(2));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_defaults_to_a_third_of_the_ttl_and_never_exceeds_half() {
        let job = LeasedJob {
            lease_ttl_ms: 30_000,
            ..Default::default()
        };
        let now = Instant::now();
        assert_eq!(
            Lease::new(&job, now, None).interval,
            Duration::from_secs(10)
        );
        let fixed = Some(Duration::from_secs(2));
        assert_eq!(
            Lease::new(&job, now, fixed).interval,
            Duration::from_secs(2)
        );
        let too_slow = Some(Duration::from_secs(60));
        assert_eq!(
            Lease::new(&job, now, too_slow).interval,
            Duration::from_secs(15)
        );
        let l = Lease::new(&job, now, None);
        assert_eq!(l.expires - now, Duration::from_secs(30));
        assert_eq!(l.expires - l.kill_at(), Duration::from_secs(1));
    }
}
