//! Operator routes under /admin/api (admin key only): purge old jobs (seed 001's clear),
//! pause/resume a queue, unblock a lane, list agents, read and change queue settings.
//! Each is one AdminService RPC.

use crate::auth::CanAdmin;
use crate::body::{JsonBody, JsonInput};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::validate;
use crate::views;
use axum::Json;
use axum::extract::{Path, State};
use lanes_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Seed 001's clear: delete finished jobs older than `hours`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearBody {
    /// Finished (completed, failed, cancelled) jobs older than this many hours are deleted;
    /// 0 deletes every finished job. 0-87,600.
    pub hours: i64,
    /// Only this queue (default: all).
    #[serde(default)]
    pub queue: Option<String>,
}
impl JsonInput for ClearBody {}

/// How many jobs were deleted.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cleared {
    /// Always true.
    pub success: bool,
    /// Jobs deleted.
    pub deleted: i64,
}

/// Deletes finished jobs older than `hours` (the failed head of a blocked lane is kept).
#[utoipa::path(post, path = "/admin/api/queue/clear", tag = "admin", request_body = ClearBody,
    security(("api_key" = [])),
    responses((status = 200, body = Cleared), (status = 422, body = ErrorBody)))]
pub async fn clear(
    _: CanAdmin,
    State(st): State<AppState>,
    JsonBody(b): JsonBody<ClearBody>,
) -> Result<Json<Cleared>, ApiError> {
    if !(0..=87_600).contains(&b.hours) {
        return Err(ApiError::invalid(
            "hours",
            format!("hours is {}; allowed 0-87600", b.hours),
        ));
    }
    let queue = checked_queue(b.queue.as_deref().unwrap_or_default(), true)?;
    let req = pb::PurgeJobsRequest {
        queue,
        older_than_hours: b.hours,
    };
    let deleted = st
        .coord
        .admin
        .clone()
        .purge_jobs(req)
        .await?
        .into_inner()
        .deleted;
    Ok(Json(Cleared {
        success: true,
        deleted,
    }))
}

fn checked_queue(q: &str, empty_ok: bool) -> Result<String, ApiError> {
    if !(empty_ok && q.is_empty()) {
        validate::queue_name(q).map_err(|m| ApiError::invalid("queue", m))?;
    }
    Ok(q.to_owned())
}

/// A queue's settings as operators see them.
#[derive(Debug, Serialize, ToSchema)]
pub struct Settings {
    /// Queue name.
    pub queue: String,
    /// Attempts before a job ends failed.
    pub max_attempts: i32,
    /// Retry backoff: first delay, ms (doubled each attempt, ±20 % jitter).
    pub backoff_initial_ms: i64,
    /// Retry backoff cap, ms.
    pub backoff_max_ms: i64,
    /// Lease TTL, ms (extended by heartbeats).
    pub lease_ttl_ms: i64,
    /// Hard limit on one run, ms.
    pub job_timeout_ms: i64,
    /// Completed jobs are purged after this many seconds.
    pub retention_completed_s: i64,
    /// Failed jobs are purged after this many seconds.
    pub retention_failed_s: i64,
    /// Enqueue answers 429 at this many pending jobs (0 = unlimited).
    pub max_pending: i64,
    /// Most running jobs at once (0 = unlimited).
    pub max_running: i32,
    /// Leasing stopped.
    pub paused: bool,
    /// `continue` (the next job of a lane proceeds after a failure) or `block`.
    pub failure_policy: String,
    /// Last change.
    pub updated_at: Option<String>,
}

fn settings(s: pb::QueueSettings) -> Settings {
    let policy = match pb::FailurePolicy::try_from(s.failure_policy) {
        Ok(pb::FailurePolicy::Block) => "block",
        _ => "continue",
    };
    Settings {
        queue: s.queue,
        max_attempts: s.max_attempts,
        backoff_initial_ms: s.backoff_initial_ms,
        backoff_max_ms: s.backoff_max_ms,
        lease_ttl_ms: s.lease_ttl_ms,
        job_timeout_ms: s.job_timeout_ms,
        retention_completed_s: s.retention_completed_s,
        retention_failed_s: s.retention_failed_s,
        max_pending: s.max_pending,
        max_running: s.max_running,
        paused: s.paused,
        failure_policy: policy.into(),
        updated_at: s.updated_at.as_ref().and_then(views::time).map(views::iso),
    }
}

/// Stops leasing from a queue (running jobs finish; enqueues are still accepted).
#[utoipa::path(post, path = "/admin/api/queues/{queue}/pause", tag = "admin", security(("api_key" = [])),
    params(("queue" = String, Path, description = "Queue name")),
    responses((status = 200, body = Settings), (status = 422, body = ErrorBody)))]
pub async fn pause(
    _: CanAdmin,
    State(st): State<AppState>,
    Path(queue): Path<String>,
) -> Result<Json<Settings>, ApiError> {
    let req = pb::PauseQueueRequest {
        queue: checked_queue(&queue, false)?,
    };
    Ok(Json(settings(
        st.coord.admin.clone().pause_queue(req).await?.into_inner(),
    )))
}

/// Resumes leasing from a queue (and wakes agents for its ready work).
#[utoipa::path(post, path = "/admin/api/queues/{queue}/resume", tag = "admin", security(("api_key" = [])),
    params(("queue" = String, Path, description = "Queue name")),
    responses((status = 200, body = Settings), (status = 422, body = ErrorBody)))]
pub async fn resume(
    _: CanAdmin,
    State(st): State<AppState>,
    Path(queue): Path<String>,
) -> Result<Json<Settings>, ApiError> {
    let req = pb::ResumeQueueRequest {
        queue: checked_queue(&queue, false)?,
    };
    Ok(Json(settings(
        st.coord.admin.clone().resume_queue(req).await?.into_inner(),
    )))
}

/// A queue's settings (defaults when never set).
#[utoipa::path(get, path = "/admin/api/queues/{queue}/settings", tag = "admin", security(("api_key" = [])),
    params(("queue" = String, Path, description = "Queue name")),
    responses((status = 200, body = Settings), (status = 422, body = ErrorBody)))]
pub async fn get_settings(
    _: CanAdmin,
    State(st): State<AppState>,
    Path(queue): Path<String>,
) -> Result<Json<Settings>, ApiError> {
    let req = pb::GetQueueSettingsRequest {
        queue: checked_queue(&queue, false)?,
    };
    Ok(Json(settings(
        st.coord
            .admin
            .clone()
            .get_queue_settings(req)
            .await?
            .into_inner(),
    )))
}

/// Settings to change; absent fields keep their value.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    /// Attempts before a job ends failed.
    pub max_attempts: Option<i32>,
    /// First retry delay, ms.
    pub backoff_initial_ms: Option<i64>,
    /// Retry delay cap, ms.
    pub backoff_max_ms: Option<i64>,
    /// Lease TTL, ms.
    pub lease_ttl_ms: Option<i64>,
    /// Hard limit on one run, ms.
    pub job_timeout_ms: Option<i64>,
    /// Retention of completed jobs, s.
    pub retention_completed_s: Option<i64>,
    /// Retention of failed jobs, s.
    pub retention_failed_s: Option<i64>,
    /// Backpressure limit of pending jobs (0 = unlimited).
    pub max_pending: Option<i64>,
    /// Concurrency cap (0 = unlimited).
    pub max_running: Option<i32>,
    /// `continue` or `block`.
    pub failure_policy: Option<String>,
}
impl JsonInput for SettingsPatch {}

/// Changes a queue's settings.
#[utoipa::path(put, path = "/admin/api/queues/{queue}/settings", tag = "admin", security(("api_key" = [])),
    params(("queue" = String, Path, description = "Queue name")), request_body = SettingsPatch,
    responses((status = 200, body = Settings), (status = 422, body = ErrorBody)))]
pub async fn put_settings(
    _: CanAdmin,
    State(st): State<AppState>,
    Path(queue): Path<String>,
    JsonBody(p): JsonBody<SettingsPatch>,
) -> Result<Json<Settings>, ApiError> {
    let failure_policy = match p.failure_policy.as_deref() {
        None => None,
        Some("continue") => Some(pb::FailurePolicy::Continue as i32),
        Some("block") => Some(pb::FailurePolicy::Block as i32),
        Some(other) => {
            return Err(ApiError::invalid(
                "failure_policy",
                format!("failure_policy {other:?} is unknown; use continue or block"),
            ));
        }
    };
    let req = pb::SetQueueSettingsRequest {
        queue: checked_queue(&queue, false)?,
        max_attempts: p.max_attempts,
        backoff_initial_ms: p.backoff_initial_ms,
        backoff_max_ms: p.backoff_max_ms,
        lease_ttl_ms: p.lease_ttl_ms,
        job_timeout_ms: p.job_timeout_ms,
        retention_completed_s: p.retention_completed_s,
        retention_failed_s: p.retention_failed_s,
        max_pending: p.max_pending,
        max_running: p.max_running,
        failure_policy,
    };
    Ok(Json(settings(
        st.coord
            .admin
            .clone()
            .set_queue_settings(req)
            .await?
            .into_inner(),
    )))
}

/// The lane to move past its failed head.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnblockBody {
    /// Queue name.
    pub queue: String,
    /// Lane key.
    pub lane: String,
}
impl JsonInput for UnblockBody {}

/// The failed job that blocked the lane.
#[derive(Debug, Serialize, ToSchema)]
pub struct Unblocked {
    /// Always true.
    pub success: bool,
    /// The failed job (it stays failed).
    pub failed_job_id: i64,
}

/// Moves a lane stopped by the `block` policy past its failed head.
#[utoipa::path(post, path = "/admin/api/lanes/unblock", tag = "admin", request_body = UnblockBody,
    security(("api_key" = [])),
    responses((status = 200, body = Unblocked), (status = 409, description = "The lane is not blocked", body = ErrorBody)))]
pub async fn unblock(
    _: CanAdmin,
    State(st): State<AppState>,
    JsonBody(b): JsonBody<UnblockBody>,
) -> Result<Json<Unblocked>, ApiError> {
    let queue = checked_queue(&b.queue, false)?;
    if b.lane.is_empty() || b.lane.len() > validate::MAX_KEY {
        return Err(ApiError::invalid(
            "lane",
            format!("lane must be 1-{} bytes", validate::MAX_KEY),
        ));
    }
    let req = pb::UnblockLaneRequest {
        queue,
        lane: b.lane,
    };
    let failed_job_id = st
        .coord
        .admin
        .clone()
        .unblock_lane(req)
        .await?
        .into_inner()
        .failed_job_id;
    Ok(Json(Unblocked {
        success: true,
        failed_job_id,
    }))
}

/// A connected agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct Agent {
    /// Agent id.
    pub agent_id: String,
    /// Queues it serves.
    pub queues: Vec<String>,
    /// `awake` (working or about to lease) or `asleep` (idle, waiting for a wake).
    pub state: String,
    /// The job it runs, if any.
    pub job_id: Option<i64>,
    /// When its stream opened.
    pub connected_at: Option<String>,
    /// Last refresh by its coordinator.
    pub last_seen_at: Option<String>,
    /// Coordinator replica holding its stream.
    pub coordinator_id: String,
}

/// Connected agents and their counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct Agents {
    /// Agents connected.
    pub connected: usize,
    /// Of which awake.
    pub awake: usize,
    /// Of which asleep.
    pub asleep: usize,
    /// The agents.
    pub agents: Vec<Agent>,
}

/// Agents with an open WakeStream on any coordinator replica.
#[utoipa::path(get, path = "/admin/api/agents", tag = "admin", security(("api_key" = [])),
    responses((status = 200, body = Agents)))]
pub async fn agents(_: CanAdmin, State(st): State<AppState>) -> Result<Json<Agents>, ApiError> {
    let r = st
        .coord
        .admin
        .clone()
        .list_agents(pb::ListAgentsRequest {})
        .await?
        .into_inner();
    let agents: Vec<Agent> = r
        .agents
        .into_iter()
        .map(|a| Agent {
            job_id: (a.job_id > 0).then_some(a.job_id),
            connected_at: a
                .connected_at
                .as_ref()
                .and_then(views::time)
                .map(views::iso),
            last_seen_at: a
                .last_seen_at
                .as_ref()
                .and_then(views::time)
                .map(views::iso),
            agent_id: a.agent_id,
            queues: a.queues,
            state: a.state,
            coordinator_id: a.coordinator_id,
        })
        .collect();
    let asleep = agents.iter().filter(|a| a.state == "asleep").count();
    Ok(Json(Agents {
        connected: agents.len(),
        awake: agents.len() - asleep,
        asleep,
        agents,
    }))
}
