//! Prometheus metrics of the coordinator (`--metrics-listen`): the metric names, the
//! process-wide recorder, and the one-line calls the services make when a job changes state.
//!
//! Counters and histograms count what this replica did: sum them over replicas. Gauges are
//! sampled from the database when scraped (`sampler.rs`): they are database-wide and the same
//! on every replica, so aggregate them with `max`, not `sum`.
//!
//! Must never: fail or noticeably slow an RPC. With metrics off every call here returns at
//! once; the recorder is global, so other modules may call `metrics::counter!` directly.

pub mod http;
pub mod rpc;
pub mod sampler;

use crate::db::states::JobState;
use crate::db::transitions::lease::Leased;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::{AtomicBool, Ordering};

/// Jobs enqueued (idempotent repeats not counted), by `queue`.
pub const ENQUEUED: &str = "lanes_jobs_enqueued_total";
/// Jobs completed, by `queue`.
pub const COMPLETED: &str = "lanes_jobs_completed_total";
/// Jobs failed for good (attempts exhausted or permanent), by `queue`.
pub const FAILED: &str = "lanes_jobs_failed_total";
/// Failed attempts scheduled to run again (agent-reported or lapsed lease), by `queue`.
pub const RETRIED: &str = "lanes_jobs_retried_total";
/// Jobs that ended cancelled, by `queue`.
pub const CANCELLED: &str = "lanes_jobs_cancelled_total";
/// Run time of completed jobs (lease to Complete), seconds, by `queue`.
pub const DURATION: &str = "lanes_job_duration_seconds";
/// Time a job waited from being due (enqueue, delay or backoff end) to its lease, by `queue`.
pub const WAIT: &str = "lanes_job_wait_seconds";
/// Unfinished jobs by `queue` and `state`: ready, delayed, waiting, blocked, running.
pub const QUEUE_DEPTH: &str = "lanes_queue_depth";
/// Running (leased) jobs, by `queue`.
pub const JOBS_RUNNING: &str = "lanes_jobs_running";
/// Lanes stopped by a failed head, by `queue`.
pub const LANES_BLOCKED: &str = "lanes_lanes_blocked";
/// Leases the reaper found lapsed, by `queue`.
pub const LEASE_EXPIRIES: &str = "lanes_lease_expiries_total";
/// Agents with an open WakeStream on any replica, by `state` (awake, asleep).
pub const AGENTS: &str = "lanes_agents_connected";
/// Webhook delivery attempts by `outcome`: delivered, retry, failed, disabled.
pub const WEBHOOKS: &str = "lanes_webhook_deliveries_total";
/// gRPC handling time (to the response headers; for streams, to the stream's start), by
/// `method` (`package.Service/Method`) and `code`.
pub const RPC_DURATION: &str = "lanes_rpc_duration_seconds";
/// Restarts of a background task that stopped or panicked (`crate::supervise`), by `task`.
pub const TASK_RESTARTS: &str = "lanes_task_restarts_total";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Installs the process-wide Prometheus recorder and turns the recording calls on. Every
/// histogram needs its buckets here: without them the exporter renders a summary instead.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let fast = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let jobs = [
        0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
        3600.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(RPC_DURATION.into()), &fast)?
        .set_buckets_for_metric(Matcher::Full(DURATION.into()), &jobs)?
        .set_buckets_for_metric(Matcher::Full(WAIT.into()), &jobs)?
        .install_recorder()?;
    describe();
    ENABLED.store(true, Ordering::Relaxed);
    Ok(handle)
}

/// The `# HELP` lines.
fn describe() {
    use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(ENQUEUED, "Jobs enqueued (idempotent repeats not counted).");
    describe_counter!(COMPLETED, "Jobs completed.");
    describe_counter!(
        FAILED,
        "Jobs failed for good (attempts exhausted or permanent)."
    );
    describe_counter!(RETRIED, "Failed attempts scheduled to run again.");
    describe_counter!(CANCELLED, "Jobs that ended cancelled.");
    describe_histogram!(DURATION, Unit::Seconds, "Run time of completed jobs.");
    describe_histogram!(WAIT, Unit::Seconds, "Time from due to leased.");
    describe_gauge!(QUEUE_DEPTH, "Unfinished jobs by state (database-wide).");
    describe_gauge!(JOBS_RUNNING, "Jobs leased right now (database-wide).");
    describe_gauge!(
        LANES_BLOCKED,
        "Lanes stopped by a failed head (database-wide)."
    );
    describe_counter!(LEASE_EXPIRIES, "Leases the reaper found lapsed.");
    describe_gauge!(AGENTS, "Agents with an open WakeStream (database-wide).");
    describe_counter!(WEBHOOKS, "Webhook delivery attempts by outcome.");
    describe_histogram!(RPC_DURATION, Unit::Seconds, "gRPC handling time.");
    describe_counter!(
        TASK_RESTARTS,
        "Restarts of a background task that stopped or panicked."
    );
}

/// True once `install` ran.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn count(name: &'static str, queue: &str) {
    ::metrics::counter!(name, "queue" => queue.to_owned()).increment(1);
}

/// A job was created by an enqueue.
pub fn enqueued(queue: &str) {
    if enabled() {
        count(ENQUEUED, queue);
    }
}

/// A job was leased to an agent: records how long it waited since it was due.
pub fn leased(job: &Leased) {
    if !enabled() {
        return;
    }
    let waited = (job.started_at - job.run_at)
        .num_microseconds()
        .unwrap_or(0)
        .max(0);
    ::metrics::histogram!(WAIT, "queue" => job.queue.clone()).record(waited as f64 / 1e6);
}

/// A job of `queue` was completed by its agent after running `run_ms`.
pub fn completed(queue: &str, run_ms: f64) {
    if enabled() {
        count(COMPLETED, queue);
        ::metrics::histogram!(DURATION, "queue" => queue.to_owned()).record(run_ms / 1000.0);
    }
}

/// An attempt of a job of `queue` ended badly (Fail) and the job is now `state`; a
/// `released` job went back without counting the attempt.
pub fn attempt_ended(queue: &str, state: JobState, released: bool) {
    if enabled() && !released {
        outcome(queue, state);
    }
}

/// The reaper ended the lapsed lease of a job of `queue`; it is now `state`.
pub fn lease_expired(queue: &str, state: JobState) {
    if enabled() {
        count(LEASE_EXPIRIES, queue);
        outcome(queue, state);
    }
}

/// A job of `queue` was cancelled without running (pending, or failed before).
pub fn cancelled(queue: &str) {
    if enabled() {
        count(CANCELLED, queue);
    }
}

fn outcome(queue: &str, state: JobState) {
    match state {
        JobState::Scheduled | JobState::Pending => count(RETRIED, queue),
        JobState::Failed => count(FAILED, queue),
        JobState::Cancelled => count(CANCELLED, queue),
        JobState::Completed => count(COMPLETED, queue),
        JobState::Running => {}
    }
}

/// One webhook delivery attempt ended with `outcome` (delivered, retry, failed, disabled).
pub fn webhook(outcome: &'static str) {
    ::metrics::counter!(WEBHOOKS, "outcome" => outcome).increment(1);
}

/// Background task `task` is supervised: its restart counter shows 0 until it fails.
pub fn task_registered(task: &'static str) {
    if enabled() {
        ::metrics::counter!(TASK_RESTARTS, "task" => task).increment(0);
    }
}

/// Background task `task` stopped or panicked and is being restarted.
pub fn task_restarted(task: &'static str) {
    ::metrics::counter!(TASK_RESTARTS, "task" => task).increment(1);
}
