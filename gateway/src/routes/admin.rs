//! Operator routes under /admin/api (admin key only): purge old jobs (seed 001's clear),
//! pause/resume a queue, unblock a lane, list agents, read and change queue settings.
//! Each is one AdminService RPC.

use crate::auth::CanAdmin;
use crate::body::{JsonBody, JsonInput};
use crate::error::{ApiError, ErrorBody};
use crate::params::{self, Segment};
use crate::schemas;
use crate::state::AppState;
use crate::views;
use axum::Json;
use axum::extract::State;
use lanes_proto::limits::{self, Range, settings as ranges};
use lanes_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Seed 001's clear: how old a finished job must be to go, in hours (0: every one; 10 years
/// at most, as the coordinator allows).
pub const CLEAR_HOURS: Range = Range::new("hours", 0, 87_600);

/// The `{queue}` of the queue routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the OpenAPI derive only: the handler takes a `Segment`.
pub struct QueuePath {
    /// Queue name.
    #[param(schema_with = schemas::queue)]
    queue: String,
}

fn clear_hours() -> utoipa::openapi::schema::Object {
    schemas::range(
        CLEAR_HOURS,
        &format!(
            "Finished (completed, failed, cancelled) jobs older than this many hours are \
             deleted; 0 deletes every finished job. {}-{}.",
            CLEAR_HOURS.min, CLEAR_HOURS.max
        ),
    )
}

/// Seed 001's clear: delete finished jobs older than `hours`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearBody {
    /// Finished (completed, failed, cancelled) jobs older than this many hours are deleted;
    /// 0 deletes every finished job. 0-87,600.
    #[serde(deserialize_with = "crate::numbers::int")]
    #[schema(schema_with = clear_hours)]
    pub hours: i64,
    /// Only this queue (default: all).
    #[serde(default)]
    #[schema(schema_with = schemas::queue_filter_or_null)]
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
    responses((status = 200, body = Cleared)))]
pub async fn clear(
    _: CanAdmin,
    State(st): State<AppState>,
    JsonBody(b): JsonBody<ClearBody>,
) -> Result<Json<Cleared>, ApiError> {
    let older_than_hours = CLEAR_HOURS.check(b.hours).map_err(field_error)?;
    let req = pb::PurgeJobsRequest {
        queue: params::queue(b.queue.as_deref())?,
        older_than_hours,
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

fn field_error(e: limits::Invalid) -> ApiError {
    ApiError::invalid(e.field, e.message)
}

fn checked_queue(q: &str) -> Result<String, ApiError> {
    limits::queue_name("queue", q).map_err(field_error)?;
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
    /// Soft limit of one run, ms (0 = none): the handler is told (SIGTERM or a deadline
    /// header) so it can stop cleanly before `job_timeout_ms` kills it.
    pub soft_timeout_ms: i64,
    /// At most this many jobs start per `rate_interval_ms`, across every replica (0 = no limit).
    pub rate_limit: i32,
    /// The rate limit's interval, ms.
    pub rate_interval_ms: i64,
    /// An idempotency key returns its job for this long after enqueue (0 = forever).
    pub idempotency_window_s: i64,
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
        soft_timeout_ms: s.soft_timeout_ms,
        rate_limit: s.rate_limit,
        rate_interval_ms: s.rate_interval_ms,
        idempotency_window_s: s.idempotency_window_s,
        updated_at: s.updated_at.as_ref().and_then(views::time).map(views::iso),
    }
}

/// Stops leasing from a queue (running jobs finish; enqueues are still accepted).
#[utoipa::path(post, path = "/admin/api/queues/{queue}/pause", tag = "admin", security(("api_key" = [])),
    params(QueuePath),
    responses((status = 200, body = Settings)))]
pub async fn pause(
    _: CanAdmin,
    State(st): State<AppState>,
    Segment(queue): Segment,
) -> Result<Json<Settings>, ApiError> {
    let req = pb::PauseQueueRequest {
        queue: checked_queue(&queue)?,
    };
    Ok(Json(settings(
        st.coord.admin.clone().pause_queue(req).await?.into_inner(),
    )))
}

/// Resumes leasing from a queue (and wakes agents for its ready work).
#[utoipa::path(post, path = "/admin/api/queues/{queue}/resume", tag = "admin", security(("api_key" = [])),
    params(QueuePath),
    responses((status = 200, body = Settings)))]
pub async fn resume(
    _: CanAdmin,
    State(st): State<AppState>,
    Segment(queue): Segment,
) -> Result<Json<Settings>, ApiError> {
    let req = pb::ResumeQueueRequest {
        queue: checked_queue(&queue)?,
    };
    Ok(Json(settings(
        st.coord.admin.clone().resume_queue(req).await?.into_inner(),
    )))
}

/// A queue's settings (defaults when never set).
#[utoipa::path(get, path = "/admin/api/queues/{queue}/settings", tag = "admin", security(("api_key" = [])),
    params(QueuePath),
    responses((status = 200, body = Settings)))]
pub async fn get_settings(
    _: CanAdmin,
    State(st): State<AppState>,
    Segment(queue): Segment,
) -> Result<Json<Settings>, ApiError> {
    let req = pb::GetQueueSettingsRequest {
        queue: checked_queue(&queue)?,
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

/// Settings to change; absent (or null) fields keep their value. `backoff_max_ms` must stay
/// at least `backoff_initial_ms` (as given here, or as stored).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    /// Attempts before a job ends failed.
    #[serde(default, deserialize_with = "crate::numbers::optional")]
    #[schema(schema_with = max_attempts)]
    pub max_attempts: Option<i64>,
    /// First retry delay, ms.
    #[serde(default, deserialize_with = "crate::numbers::optional")]
    #[schema(schema_with = backoff_initial_ms)]
    pub backoff_initial_ms: Option<i64>,
    /// Retry delay cap, ms.
    #[serde(default, deserialize_with = "crate::numbers::optional")]
    #[schema(schema_with = backoff_max_ms)]
    pub backoff_max_ms: Option<i64>,
    /// Lease TTL, ms.
    #[serde(default, deserialize_with = "crate::numbers::optional")]
    #[schema(schema_with = lease_ttl_ms)]
    pub lease_ttl_ms: Option<i64>,
    /// Hard limit on one run, ms.
    #[serde(default, deserialize_with = "crate::numbers::optional")]
    #[schema(schema_with = job_timeout_ms)]
    pub job_timeout_ms: Option<i64>,
    /// Retention of completed jobs, s.
    #[serde(default, deserialize_with = "crate::numbers::optional")]
    #[schema(schema_with = retention_completed_s)]
    pub retention_completed_s: Option<i64>,
    /// Retention of failed jobs, s.
    #[serde(default, deserialize_with = "crate::numbers::optional")]
    #[schema(schema_with = retention_failed_s)]
    pub retention_failed_s: Option<i64>,
    /// Backpressure limit of pending jobs (0 = unlimited).
    #[serde(default, deserialize_with = "crate::numbers::optional")]
    #[schema(schema_with = max_pending)]
    pub max_pending: Option<i64>,
    /// Concurrency cap (0 = unlimited).
    #[serde(default, deserialize_with = "crate::numbers::optional")]
    #[schema(schema_with = max_running)]
    pub max_running: Option<i64>,
    /// `continue` or `block`.
    #[serde(default)]
    #[schema(schema_with = schemas::failure_policy)]
    pub failure_policy: Option<String>,
    /// Soft limit of one run, ms (0 clears it).
    #[serde(default, deserialize_with = "crate::numbers::optional")]
    #[schema(schema_with = soft_timeout_ms)]
    pub soft_timeout_ms: Option<i64>,
    /// Jobs started per interval (0 clears the limit); give it with `rate_interval_ms`.
    #[serde(default, deserialize_with = "crate::numbers::optional")]
    #[schema(schema_with = rate_limit)]
    pub rate_limit: Option<i64>,
    /// The rate limit's interval, ms.
    #[serde(default, deserialize_with = "crate::numbers::optional")]
    #[schema(schema_with = rate_interval_ms)]
    pub rate_interval_ms: Option<i64>,
    /// How long an idempotency key holds, s (0 = forever).
    #[serde(default, deserialize_with = "crate::numbers::optional")]
    #[schema(schema_with = idempotency_window_s)]
    pub idempotency_window_s: Option<i64>,
}

macro_rules! setting_schemas {
    ($($name:ident => $range:expr),* $(,)?) => {
        $(fn $name() -> utoipa::openapi::schema::Object {
            schemas::setting($range)
        })*
    };
}

setting_schemas! {
    max_attempts => ranges::MAX_ATTEMPTS,
    backoff_initial_ms => ranges::BACKOFF_INITIAL_MS,
    backoff_max_ms => ranges::BACKOFF_MAX_MS,
    lease_ttl_ms => ranges::LEASE_TTL_MS,
    job_timeout_ms => ranges::JOB_TIMEOUT_MS,
    retention_completed_s => ranges::RETENTION_COMPLETED_S,
    retention_failed_s => ranges::RETENTION_FAILED_S,
    max_pending => ranges::MAX_PENDING,
    max_running => ranges::MAX_RUNNING,
    soft_timeout_ms => ranges::SOFT_TIMEOUT_MS,
    rate_limit => ranges::RATE_LIMIT,
    rate_interval_ms => ranges::RATE_INTERVAL_MS,
    idempotency_window_s => ranges::IDEMPOTENCY_WINDOW_S,
}

/// Checks a patch against the shared ranges and builds the request (the coordinator checks
/// `backoff_max_ms` against the stored `backoff_initial_ms`).
pub fn settings_request(
    queue: &str,
    p: &SettingsPatch,
) -> Result<pb::SetQueueSettingsRequest, ApiError> {
    let check = |v: Option<i64>, r: Range| v.map(|v| r.check(v)).transpose().map_err(field_error);
    let check32 =
        |v: Option<i64>, r: Range| v.map(|v| r.check_i32(v)).transpose().map_err(field_error);
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
    Ok(pb::SetQueueSettingsRequest {
        queue: checked_queue(queue)?,
        max_attempts: check32(p.max_attempts, ranges::MAX_ATTEMPTS)?,
        backoff_initial_ms: check(p.backoff_initial_ms, ranges::BACKOFF_INITIAL_MS)?,
        backoff_max_ms: check(p.backoff_max_ms, ranges::BACKOFF_MAX_MS)?,
        lease_ttl_ms: check(p.lease_ttl_ms, ranges::LEASE_TTL_MS)?,
        job_timeout_ms: check(p.job_timeout_ms, ranges::JOB_TIMEOUT_MS)?,
        retention_completed_s: check(p.retention_completed_s, ranges::RETENTION_COMPLETED_S)?,
        retention_failed_s: check(p.retention_failed_s, ranges::RETENTION_FAILED_S)?,
        max_pending: check(p.max_pending, ranges::MAX_PENDING)?,
        max_running: check32(p.max_running, ranges::MAX_RUNNING)?,
        failure_policy,
        soft_timeout_ms: check(p.soft_timeout_ms, ranges::SOFT_TIMEOUT_MS)?,
        rate_limit: check32(p.rate_limit, ranges::RATE_LIMIT)?,
        rate_interval_ms: check(p.rate_interval_ms, ranges::RATE_INTERVAL_MS)?,
        idempotency_window_s: check(p.idempotency_window_s, ranges::IDEMPOTENCY_WINDOW_S)?,
    })
}
impl JsonInput for SettingsPatch {}

/// Changes a queue's settings.
#[utoipa::path(put, path = "/admin/api/queues/{queue}/settings", tag = "admin", security(("api_key" = [])),
    params(QueuePath), request_body = SettingsPatch,
    responses((status = 200, body = Settings)))]
pub async fn put_settings(
    _: CanAdmin,
    State(st): State<AppState>,
    Segment(queue): Segment,
    JsonBody(p): JsonBody<SettingsPatch>,
) -> Result<Json<Settings>, ApiError> {
    let req = settings_request(&queue, &p)?;
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
    #[schema(schema_with = schemas::queue)]
    pub queue: String,
    /// Lane key.
    #[schema(schema_with = schemas::lane_text)]
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
    responses((status = 200, body = Unblocked),
        (status = 409, description = "The lane is not blocked", body = ErrorBody)))]
pub async fn unblock(
    _: CanAdmin,
    State(st): State<AppState>,
    JsonBody(b): JsonBody<UnblockBody>,
) -> Result<Json<Unblocked>, ApiError> {
    let queue = checked_queue(&b.queue)?;
    if b.lane.is_empty() {
        return Err(ApiError::invalid(
            "lane",
            "lane is empty; give the blocked lane's key",
        ));
    }
    limits::key("lane", &b.lane).map_err(field_error)?;
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
