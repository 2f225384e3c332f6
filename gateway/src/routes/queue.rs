//! Seed 001's stats and seed 000's wake-worker. Stats always ask the coordinator (one
//! GetStats) and refresh the estimate cache on the way; wake-worker is one Wake RPC, which
//! wakes only asleep agents, never more than there is ready work.

use crate::auth::{CanEnqueue, CanRead};
use crate::body::{JsonBody, JsonInput};
use crate::error::ApiError;
use crate::params;
use crate::schemas;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Query, State, rejection::QueryRejection};
use lanes_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Seed 001's stats envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsEnvelope {
    /// Always true.
    pub success: bool,
    /// The numbers.
    pub stats: Stats,
}

/// Queue statistics, seed 001's shape plus per-queue detail.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// Jobs on record (every state; purged jobs are no longer counted).
    pub total_enqueued: i64,
    /// Jobs that finished processing: completed + failed.
    pub total_processed: i64,
    /// Jobs failed for good (the dead-letter set).
    pub total_failed: i64,
    /// Jobs not finished: pending + processing.
    pub current_queue_size: i64,
    /// Jobs by status.
    pub tasks_by_status: ByStatus,
    /// Jobs on record, the sum of tasks_by_status (equals total_enqueued).
    pub total_tasks: i64,
    /// Agents connected (holding a WakeStream), asleep or not.
    pub workers: i32,
    /// True when at least one agent is connected.
    pub running: bool,
    /// Per-queue detail.
    pub queues: Vec<QueueDetail>,
}

/// Counts by user-facing status.
#[derive(Debug, Serialize, ToSchema)]
pub struct ByStatus {
    /// Waiting, scheduled or backing off before a retry.
    pub pending: i64,
    /// Running on an agent.
    pub processing: i64,
    /// Completed.
    pub completed: i64,
    /// Failed for good.
    pub failed: i64,
    /// Cancelled.
    pub cancelled: i64,
}

/// One queue's numbers.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueDetail {
    /// Queue name.
    pub queue: String,
    /// Leasing stopped by an operator.
    pub paused: bool,
    /// Pending jobs (ready, scheduled or backing off).
    pub pending: i64,
    /// Pending jobs whose time has come.
    pub ready: i64,
    /// Running jobs.
    pub processing: i64,
    /// Completed jobs.
    pub completed: i64,
    /// Failed jobs.
    pub failed: i64,
    /// Cancelled jobs.
    pub cancelled: i64,
    /// Lanes stopped by the `block` failure policy.
    pub blocked_lanes: i64,
    /// Lanes with unfinished work.
    pub active_lanes: i64,
    /// Mean run time of jobs completed in the last hour, ms.
    pub avg_run_ms: f64,
    /// How long the job first in line has waited, ms.
    pub oldest_ready_ms: i64,
    /// Rate limit: at most this many starts per `rate_interval_ms` (0 = none).
    pub rate_limit: i32,
    /// The rate limit's interval, ms.
    pub rate_interval_ms: i64,
    /// Jobs started in the last `rate_interval_ms` (0 without a rate limit).
    pub rate_started: i32,
}

/// Optional restriction of the stats to one queue.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// Only this queue.
    #[param(schema_with = schemas::queue_filter)]
    pub queue: Option<String>,
}

fn by_status(c: &pb::StateCounts) -> ByStatus {
    ByStatus {
        pending: c.pending,
        processing: c.running,
        completed: c.completed,
        failed: c.failed,
        cancelled: c.cancelled,
    }
}

fn detail(q: &pb::QueueStats) -> QueueDetail {
    let c = q.counts.unwrap_or_default();
    QueueDetail {
        queue: q.queue.clone(),
        paused: q.paused,
        pending: c.pending,
        ready: c.ready,
        processing: c.running,
        completed: c.completed,
        failed: c.failed,
        cancelled: c.cancelled,
        blocked_lanes: q.blocked_lanes,
        active_lanes: q.active_lanes,
        avg_run_ms: q.avg_run_ms,
        oldest_ready_ms: q.oldest_ready_ms,
        rate_limit: q.rate_limit,
        rate_interval_ms: q.rate_interval_ms,
        rate_started: q.rate_started,
    }
}

/// Seed 001's numbers from one GetStats answer.
pub fn stats_of(r: &pb::GetStatsResponse) -> Stats {
    let t = r.totals.unwrap_or_default();
    let all = t.pending + t.running + t.completed + t.failed + t.cancelled;
    Stats {
        total_enqueued: all,
        total_processed: t.completed + t.failed,
        total_failed: t.failed,
        current_queue_size: t.pending + t.running,
        tasks_by_status: by_status(&t),
        total_tasks: all,
        workers: r.agents_connected,
        running: r.agents_connected > 0,
        queues: r.queues.iter().map(detail).collect(),
    }
}

/// Queue statistics (seed 001's shape).
#[utoipa::path(get, path = "/api/queue/stats", tag = "queue", security(("api_key" = [])),
    params(StatsParams),
    responses((status = 200, body = StatsEnvelope)))]
pub async fn stats(
    _: CanRead,
    State(st): State<AppState>,
    q: Result<Query<StatsParams>, QueryRejection>,
) -> Result<Json<StatsEnvelope>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let queue = params::queue(q.queue.as_deref())?;
    let req = pb::GetStatsRequest {
        queue: queue.clone(),
    };
    let r = st.coord.client.clone().get_stats(req).await?.into_inner();
    let out = stats_of(&r);
    if queue.is_empty() {
        st.stats.store(r);
    }
    Ok(Json(StatsEnvelope {
        success: true,
        stats: out,
    }))
}

/// Seed 000's wake-worker request; every field is optional and an empty body is fine.
/// Unknown fields are refused, as on every other route.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WakeBody {
    /// Who asks, for the logs (e.g. "n8n").
    #[serde(default)]
    pub requested_by: Option<String>,
    /// The caller's idea of pending jobs (logged only; the coordinator counts for itself).
    #[serde(default, deserialize_with = "crate::numbers::optional")]
    pub pending_jobs: Option<i64>,
    /// Wake at most this many workers (also capped by --max-wake and the ready jobs).
    #[serde(default, deserialize_with = "crate::numbers::optional")]
    #[schema(minimum = 0)]
    pub workers_to_start: Option<i64>,
    /// Only agents serving this queue (default: any).
    #[serde(default)]
    #[schema(schema_with = schemas::queue_filter_or_null)]
    pub queue: Option<String>,
}

impl JsonInput for WakeBody {
    fn when_empty() -> Option<Self> {
        Some(WakeBody::default())
    }
}

/// The answer to wake-worker (seed 000's shape).
#[derive(Debug, Serialize, ToSchema)]
pub struct WakeReply {
    /// `success`, or `no_worker` when no agent serves the queue (errors use the error shape).
    #[schema(example = "success")]
    pub status: String,
    /// What happened, e.g. "2 workers woken", "no jobs to process" or "no worker serves
    /// queue invoice_import: start an agent".
    pub message: String,
    /// Jobs ready to run now.
    pub pending_jobs: i64,
    /// Agents woken by this call.
    pub workers_woken: i32,
    /// Agents connected.
    pub agents_connected: i32,
    /// Agents already working (left undisturbed).
    pub agents_busy: i32,
}

/// Wakes asleep workers when there is ready work: at most `workers_to_start`, at most
/// --max-wake, never more than the ready jobs; busy workers are left alone.
#[utoipa::path(post, path = "/api/wake-worker", tag = "queue", security(("api_key" = [])),
    request_body(content = Option<WakeBody>, description = "Optional; an empty body is fine"),
    responses((status = 200, body = WakeReply)))]
pub async fn wake_worker(
    _: CanEnqueue,
    State(st): State<AppState>,
    JsonBody(b): JsonBody<WakeBody>,
) -> Result<Json<WakeReply>, ApiError> {
    let queue = params::queue(b.queue.as_deref())?;
    let cap = match b.workers_to_start {
        Some(n) if n < 0 => {
            return Err(ApiError::invalid(
                "workers_to_start",
                "workers_to_start must be 0 or more",
            ));
        }
        Some(n) => n.min(i64::from(st.limits.max_wake)) as i32,
        None => st.limits.max_wake as i32,
    };
    let requested_by = b.requested_by.clone().unwrap_or_default();
    tracing::info!(requested_by = %requested_by, claimed_pending = ?b.pending_jobs, cap, "wake-worker");
    let r = if cap == 0 {
        // Wake's max_agents 0 means "as many as ready": count without waking instead.
        counts_only(&st, &queue).await?
    } else {
        let req = pb::WakeRequest {
            queue: queue.clone(),
            max_agents: cap,
            requested_by,
        };
        st.coord.client.clone().wake(req).await?.into_inner()
    };
    metrics::counter!(crate::metrics::WOKEN).increment(r.agents_woken as u64);
    // Work waits and no agent serves the queue at all: nothing can be woken (seed 000's n8n
    // flow then starts a worker itself). An empty queue is "no jobs to process" first, as
    // seed 000 checks the queue before the workers.
    let no_worker = r.agents_connected == 0 && r.ready_jobs > 0;
    let message = if no_worker {
        let which = if queue.is_empty() {
            "any queue".to_owned()
        } else {
            format!("queue {queue}")
        };
        format!("no worker serves {which}: start an agent")
    } else {
        message(&r, cap)
    };
    Ok(Json(WakeReply {
        status: if no_worker { "no_worker" } else { "success" }.into(),
        message,
        pending_jobs: r.ready_jobs,
        workers_woken: r.agents_woken,
        agents_connected: r.agents_connected,
        agents_busy: r.agents_busy,
    }))
}

async fn counts_only(st: &AppState, queue: &str) -> Result<pb::WakeResponse, ApiError> {
    let req = pb::GetStatsRequest {
        queue: queue.to_owned(),
    };
    let s = st.coord.client.clone().get_stats(req).await?.into_inner();
    Ok(pb::WakeResponse {
        ready_jobs: s.totals.map_or(0, |t| t.ready),
        agents_woken: 0,
        agents_connected: s.agents_connected,
        agents_busy: (s.agents_connected - s.agents_asleep).max(0),
    })
}

fn message(r: &pb::WakeResponse, cap: i32) -> String {
    let plural = |n: i64, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    if r.ready_jobs == 0 {
        "no jobs to process".into()
    } else if r.agents_woken > 0 {
        format!(
            "{} woken for {} ready job{}",
            plural(r.agents_woken.into(), "worker"),
            r.ready_jobs,
            if r.ready_jobs == 1 { "" } else { "s" }
        )
    } else if cap == 0 {
        "workers_to_start is 0: no worker woken".into()
    } else if r.agents_connected == 0 {
        "no worker connected: start an agent".into()
    } else {
        format!(
            "{} already busy; none woken",
            plural(r.agents_busy.into(), "worker")
        )
    }
}
