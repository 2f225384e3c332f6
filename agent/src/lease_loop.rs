//! The agent's main loop: Lease → run → Complete/Fail, one job at a time. Reports carry
//! `lease_next`, so a hot lane's next job comes back in the same round trip. When nothing is
//! ready the agent is "asleep": it waits on its WakeStream and makes no RPC until woken (an
//! enqueue, a client's Wake, or the safety tick naming a queue with ready work), then leases
//! again. The coordinator's keep-alive (naming no queue) only proves the stream alive.
//!
//! Must never: lease after shutdown began, hold two jobs, or lose a wake-up — the stream is
//! always open (the agent registered) before a Lease that comes back empty, so an enqueue
//! that lands after that Lease finds the agent asleep and wakes it.

use crate::config::Settings;
use crate::connection::{Connection, Failure, classify};
use crate::runner::{Outcome, Runner, Timing, error_message};
use crate::shutdown::Shutdown;
use crate::supervise::{Ending, Supervisor};
use lanes_proto::v1::{
    CompleteRequest, FailRequest, LeaseRequest, LeasedJob, WakeEvent, WakeStreamRequest,
};
use std::time::Duration;
use tokio::time::Instant;
use tonic::Streaming;
use tracing::Instrument as _;

/// After the grace period, how long the agent still tries to report before it exits.
const LAST_REPORT: Duration = Duration::from_secs(3);

/// A condition the agent cannot work under: the coordinator refuses its requests.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request was rejected for reasons a retry cannot fix (token, queue names, agent id).
    #[error("the coordinator rejected {rpc}: {code:?}: {message}")]
    Rejected {
        /// The RPC.
        rpc: &'static str,
        /// The gRPC code.
        code: tonic::Code,
        /// The coordinator's message.
        message: String,
    },
}

fn rejected(rpc: &'static str, s: &tonic::Status) -> Error {
    Error::Rejected {
        rpc,
        code: s.code(),
        message: s.message().to_owned(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mood {
    Unknown,
    Awake,
    Asleep,
}

/// A job in hand, with when the request that leased it was sent.
type Leased = (LeasedJob, Instant);

/// The agent.
pub struct Agent {
    settings: Settings,
    conn: Connection,
    runner: Runner,
    shutdown: Shutdown,
    wake: Option<Streaming<WakeEvent>>,
    mood: Mood,
}

enum Report {
    Complete(CompleteRequest),
    Fail(FailRequest),
}

impl Agent {
    /// An agent with its connection (not yet made) and handler.
    pub fn new(settings: Settings, conn: Connection, runner: Runner, shutdown: Shutdown) -> Self {
        Agent {
            settings,
            conn,
            runner,
            shutdown,
            wake: None,
            mood: Mood::Unknown,
        }
    }

    /// Works until shutdown: returns once draining began and the last job is reported.
    pub async fn run(mut self) -> Result<(), Error> {
        tracing::info!(agent.id = %self.settings.agent_id, queues = ?self.settings.queues, "agent starting");
        let mut next: Option<Leased> = None;
        loop {
            let (job, requested) = match next.take() {
                Some(j) => j,
                None => match self.next_job().await? {
                    Some(j) => j,
                    None => break,
                },
            };
            let span = tracing::info_span!("job", otel.name = "job.run", otel.kind = "consumer", job.id = job.id, queue = %job.queue, lane = %job.lane, attempt = job.attempt, trace_id = tracing::field::Empty);
            // The run continues the job's trace: Heartbeat, Complete and Fail carry it on.
            lanes_telemetry::adopt_traceparent(&span, &job.traceparent, &job.tracestate);
            next = self.work(job, requested).instrument(span).await;
        }
        self.runner.close().await;
        tracing::info!("no more jobs: agent stopped");
        Ok(())
    }

    /// Runs one job and reports it; returns the next job if the report brought one.
    async fn work(&self, job: LeasedJob, requested: Instant) -> Option<Leased> {
        let received = Instant::now();
        if self.shutdown.draining.is_cancelled() {
            // Leased in the same round trip as the signal: straight back.
            return self
                .report(&job, Ending::Released(String::new()), None, received)
                .await;
        }
        tracing::debug!(token = job.lease_token, "job leased");
        let sup = Supervisor {
            settings: &self.settings,
            conn: &self.conn,
            runner: &self.runner,
            shutdown: &self.shutdown,
        };
        let (ending, timing) = sup.run(&job, requested).await;
        self.report(&job, ending, Some(timing), received).await
    }

    /// Leases a job, sleeping on the wake stream while none is ready; `None` once draining.
    async fn next_job(&mut self) -> Result<Option<Leased>, Error> {
        let draining = self.shutdown.draining.clone();
        // A Lease that failed in transport is sent again with the same id: if the first one
        // leased a job (its reply lost), the coordinator hands that same lease back.
        let mut request_id = new_request_id();
        loop {
            if draining.is_cancelled() {
                return Ok(None);
            }
            if self.wake.is_none() {
                let opened = tokio::select! {
                    r = self.open_wake() => r,
                    _ = draining.cancelled() => return Ok(None),
                };
                if let Err(s) = opened {
                    self.transient_or_fatal("WakeStream", &s).await?;
                    continue;
                }
            }
            self.drain_stale_wakes();
            let req = LeaseRequest {
                agent_id: self.settings.agent_id.clone(),
                queues: self.settings.queues.clone(),
                request_id: request_id.clone(),
            };
            tokio::select! {
                _ = self.conn.ready() => {}
                _ = draining.cancelled() => return Ok(None),
            }
            let requested = Instant::now();
            // Not abandoned when draining begins: a job it leases is handed straight back
            // (`work`), rather than left running for nobody until its lease lapses.
            let leased = self
                .conn
                .call("Lease", |mut c| async move { c.lease(req).await })
                .await;
            match leased {
                Ok(r) => {
                    request_id = new_request_id();
                    match r.job {
                        Some(job) => {
                            self.set_mood(Mood::Awake);
                            return Ok(Some((job, requested)));
                        }
                        None => {
                            self.set_mood(Mood::Asleep);
                            self.sleep().await;
                        }
                    }
                }
                Err(s) => {
                    // The stream most likely broke with the connection: open a new one.
                    self.wake = None;
                    self.transient_or_fatal("Lease", &s).await?;
                }
            }
        }
    }

    /// Logs a failed call and backs off, or returns the error if retrying cannot help.
    async fn transient_or_fatal(&self, rpc: &'static str, s: &tonic::Status) -> Result<(), Error> {
        if classify(s) == Failure::Rejected {
            return Err(rejected(rpc, s));
        }
        tracing::warn!(rpc, code = ?s.code(), error = %s.message(), "coordinator call failed; retrying");
        tokio::select! {
            _ = self.conn.backoff() => {}
            _ = self.shutdown.draining.cancelled() => {}
        }
        Ok(())
    }

    /// Opens the wake stream, which registers this agent with the coordinator.
    async fn open_wake(&mut self) -> Result<(), tonic::Status> {
        let req = WakeStreamRequest {
            agent_id: self.settings.agent_id.clone(),
            queues: self.settings.queues.clone(),
        };
        let stream = self
            .conn
            .call(
                "WakeStream",
                |mut c| async move { c.wake_stream(req).await },
            )
            .await?;
        tracing::debug!("wake stream open");
        self.wake = Some(stream);
        Ok(())
    }

    /// Discards wake-ups that arrived while the agent was busy: the Lease about to be made
    /// sees whatever they announced.
    fn drain_stale_wakes(&mut self) {
        let Some(stream) = self.wake.as_mut() else {
            return;
        };
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let broken = loop {
            let mut next = std::pin::pin!(stream.message());
            match next.as_mut().poll(&mut cx) {
                std::task::Poll::Ready(Ok(Some(_))) => continue,
                std::task::Poll::Ready(_) => break true,
                std::task::Poll::Pending => break false,
            }
        };
        if broken {
            self.wake = None;
        }
    }

    /// Waits on the wake stream for a reason to lease again (or for draining). A keep-alive
    /// (a `tick` naming no queue) only proves the stream alive: an idle agent makes no call
    /// for it, so idle agents cost the database nothing however many there are. Agents the
    /// coordinator believes awake while they sleep are put back to sleep by their replica,
    /// not by polling.
    async fn sleep(&mut self) {
        let idle = self.settings.idle_timeout;
        loop {
            let Some(stream) = self.wake.as_mut() else {
                return;
            };
            let keep = tokio::select! {
                event = stream.message() => match event {
                    Ok(Some(e)) if e.reason == "tick" && e.queue.is_empty() => {
                        tracing::debug!("keep-alive");
                        continue;
                    }
                    Ok(Some(e)) => {
                        tracing::debug!(reason = %e.reason, queue = %e.queue, "woken");
                        true
                    }
                    Ok(None) => {
                        tracing::info!("wake stream closed by the coordinator; reconnecting");
                        self.conn.leave();
                        false
                    }
                    Err(s) if s.code() == tonic::Code::Unavailable => {
                        // Its coordinator is shutting down: straight to the next one.
                        tracing::info!(error = %s.message(), "coordinator going away; moving to the next one");
                        self.conn.leave();
                        false
                    }
                    Err(s) => {
                        tracing::warn!(code = ?s.code(), error = %s.message(), "wake stream broken; reconnecting");
                        false
                    }
                },
                _ = tokio::time::sleep(idle) => {
                    tracing::warn!(silent = ?idle, "wake stream silent; reconnecting");
                    false
                }
                _ = self.shutdown.draining.cancelled() => true,
            };
            if !keep {
                self.wake = None;
            }
            return;
        }
    }

    fn set_mood(&mut self, mood: Mood) {
        if self.mood == mood {
            return;
        }
        match mood {
            Mood::Awake => tracing::info!("awake: leased a job"),
            Mood::Asleep => tracing::info!("asleep: no job ready; waiting on the wake stream"),
            Mood::Unknown => {}
        }
        self.mood = mood;
    }

    /// Reports how the job ended, retrying while the coordinator is unreachable; returns
    /// the next job when the coordinator handed one over in the same round trip.
    async fn report(
        &self,
        job: &LeasedJob,
        ending: Ending,
        run: Option<Timing>,
        received: Instant,
    ) -> Option<Leased> {
        let mut report = self.request(job, ending)?;
        let give_up = async {
            self.shutdown.hard.cancelled().await;
            tokio::time::sleep(LAST_REPORT).await;
        };
        tokio::pin!(give_up);
        let mut tries = 0u32;
        // Every try of a report is the same request (same id, same lease_next): a repeat of
        // one that was applied gets the first answer again, the next lease included.
        let lease_next = !self.shutdown.draining.is_cancelled();
        loop {
            tries += 1;
            // The lease it may bring is timed from the request, not from a reconnect before.
            tokio::select! {
                _ = self.conn.ready() => {}
                _ = &mut give_up => {
                    tracing::error!("coordinator unreachable at shutdown: outcome not reported");
                    return None;
                }
            }
            let sent = Instant::now();
            if tries == 1 {
                log_timing(run, received, sent);
            }
            let answer = tokio::select! {
                a = self.send(&mut report, lease_next) => a,
                _ = &mut give_up => {
                    tracing::error!("coordinator unreachable at shutdown: outcome not reported");
                    return None;
                }
            };
            let status = match answer {
                Ok(next) => return next.map(|j| (j, sent)),
                Err(s) => s,
            };
            match (classify(&status), &report) {
                (Failure::Stale, _) if tries > 1 => {
                    // The earlier try may have been recorded with its answer lost.
                    tracing::warn!(error = %status.message(), "outcome rejected as stale on a retry: recorded by the earlier try, or the lease lapsed");
                    return None;
                }
                (Failure::Stale, _) => {
                    tracing::warn!(error = %status.message(), "outcome not recorded: the lease is no longer ours");
                    return None;
                }
                (Failure::Rejected, Report::Complete(_))
                    if status.code() == tonic::Code::InvalidArgument =>
                {
                    let why = format!("the coordinator rejected the result: {}", status.message());
                    tracing::warn!(error = %why, "job failed");
                    report = Report::Fail(self.fail_request(job, why, false));
                }
                (Failure::Rejected, _) => {
                    tracing::error!(code = ?status.code(), error = %status.message(), "outcome rejected");
                    return None;
                }
                (Failure::Transient, _) => {
                    tracing::warn!(code = ?status.code(), error = %status.message(), "reporting failed; retrying");
                    tokio::select! {
                        _ = self.conn.backoff() => {}
                        _ = &mut give_up => {}
                    }
                }
            }
        }
    }

    fn fail_request(&self, job: &LeasedJob, error: String, retryable: bool) -> FailRequest {
        FailRequest {
            job_id: job.id,
            lease_token: job.lease_token,
            error,
            retryable,
            agent_id: self.settings.agent_id.clone(),
            queues: self.settings.queues.clone(),
            request_id: new_request_id(),
            ..Default::default()
        }
    }

    async fn send(
        &self,
        report: &mut Report,
        lease_next: bool,
    ) -> Result<Option<LeasedJob>, tonic::Status> {
        match report {
            Report::Complete(r) => {
                r.lease_next = lease_next;
                let req = r.clone();
                let a = self
                    .conn
                    .call("Complete", |mut c| async move { c.complete(req).await })
                    .await?;
                Ok(a.next)
            }
            Report::Fail(r) => {
                r.lease_next = lease_next && !r.release;
                let req = r.clone();
                let a = self
                    .conn
                    .call("Fail", |mut c| async move { c.fail(req).await })
                    .await?;
                tracing::debug!(state = a.state, "failure recorded");
                Ok(a.next)
            }
        }
    }

    /// The report for an ending (`None`: nothing to report), logging the ending.
    fn request(&self, job: &LeasedJob, ending: Ending) -> Option<Report> {
        let fail = |error: String, retryable: bool| self.fail_request(job, error, retryable);
        let report = match ending {
            Ending::Finished(Outcome::Completed { result }) => {
                tracing::debug!("job completed");
                return Some(Report::Complete(CompleteRequest {
                    job_id: job.id,
                    lease_token: job.lease_token,
                    result,
                    lease_next: false,
                    agent_id: self.settings.agent_id.clone(),
                    queues: self.settings.queues.clone(),
                    request_id: new_request_id(),
                }));
            }
            Ending::Finished(Outcome::Failed {
                error,
                retryable,
                retry_after_ms,
            }) => {
                tracing::info!(retryable, error = %first_line(&error), "job failed");
                let mut r = fail(error, retryable);
                r.retry_after_ms = retry_after_ms;
                r
            }
            Ending::Finished(Outcome::Stopped { detail }) => {
                fail(error_message("handler stopped", &detail), true)
            }
            Ending::Cancelled(detail) => {
                tracing::info!("job cancelled: handler stopped");
                let mut r = fail(error_message("cancelled while running", &detail), false);
                r.cancelled = true;
                r
            }
            Ending::LeaseLost(why) => {
                tracing::warn!(error = %why, "lease lost: handler stopped, outcome dropped");
                return None;
            }
            Ending::Unrenewable(detail) => {
                tracing::warn!("lease could not be renewed in time: handler stopped");
                let why =
                    "handler stopped: its lease could not be renewed (coordinator unreachable)";
                fail(error_message(why, &detail), true)
            }
            Ending::TimedOut(limit, detail) => {
                tracing::warn!(
                    limit_ms = limit.as_millis() as u64,
                    "job timed out: handler stopped"
                );
                let why = format!("handler timed out after {} ms", limit.as_millis());
                fail(error_message(&why, &detail), true)
            }
            Ending::Released(_) => {
                tracing::info!("shutting down: job handed back");
                // No error text: the job's last real error stays what it was.
                let mut r = fail(String::new(), true);
                r.release = true;
                r
            }
        };
        Some(Report::Fail(report))
    }
}

/// A fresh id for a request that leases (Lease, or a report with `lease_next`).
fn new_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// The agent's own share of a job's time: from the job arriving to the handler starting,
/// and from the handler's exit to the report being sent.
fn log_timing(run: Option<Timing>, received: Instant, sent: Instant) {
    let Some(run) = run else { return };
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let start_us = run
        .started
        .map(|s| us(s.saturating_duration_since(received)));
    tracing::debug!(
        target: "lanes_agent::timing",
        lease_to_start_us = start_us,
        handler_us = run.started.map(|s| us(run.ended.saturating_duration_since(s))),
        exit_to_report_us = us(sent.saturating_duration_since(run.ended)),
        "job timing"
    );
}
