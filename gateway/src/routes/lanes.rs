//! The admin page's reads and bulk actions under /admin/api (admin key only): lanes (blocked,
//! busiest), one lane's jobs in run order, a queue's per-minute history, and the retry or
//! cancel of every failed job of a queue. Each is one AdminService RPC.

use crate::auth::CanAdmin;
use crate::error::ApiError;
use crate::params::{self, Segment};
use crate::schemas;
use crate::state::AppState;
use crate::views::{self, JobSummary};
use axum::Json;
use axum::extract::{Query, State, rejection::QueryRejection};
use lanes_proto::limits::{self, Range, admin as ranges};
use lanes_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{Object, ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, ToSchema};

fn field_error(e: limits::Invalid) -> ApiError {
    ApiError::invalid(e.field, e.message)
}

/// An integer query parameter within `r`; 0 (the RPC's default) when absent or empty.
fn int_param(raw: Option<&str>, r: Range) -> Result<i32, ApiError> {
    let Some(s) = raw.filter(|s| !s.is_empty()) else {
        return Ok(0);
    };
    s.parse::<i64>()
        .ok()
        .and_then(|n| r.check_i32(n).ok())
        .ok_or_else(|| {
            ApiError::invalid(
                r.field,
                format!("{} {s:?} must be an integer {}-{}", r.field, r.min, r.max),
            )
        })
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::invalid("query", e.body_text()))
}

fn lanes_limit() -> Schema {
    schemas::int_or_empty(
        ranges::LANES_LIMIT,
        "Lanes to return, 1-500 (0, empty or absent: 20).",
    )
}

fn lane_finished() -> Schema {
    schemas::int_or_empty(
        ranges::LANE_FINISHED,
        "Finished jobs to list after the unfinished ones, 1-200 (0, empty or absent: 20).",
    )
}

fn history_minutes() -> Schema {
    schemas::int_or_empty(
        ranges::HISTORY_MINUTES,
        "Minutes back from now, 1-1440 (0, empty or absent: 60).",
    )
}

fn lane_list_filter() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["", "blocked", "busiest"]))
        .description(Some(
            "blocked: lanes stopped by a failed head (`block` policy), blocked longest first; \
             busiest: lanes with the most unfinished jobs first (empty or absent: busiest).",
        ))
        .build()
}

/// Parameters of GET /admin/api/lanes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LaneParams {
    /// Queue name (empty or absent: every queue).
    #[param(schema_with = schemas::queue_filter)]
    pub queue: Option<String>,
    /// `blocked` or `busiest`.
    #[param(schema_with = lane_list_filter)]
    pub filter: Option<String>,
    /// Lanes to return.
    #[param(schema_with = lanes_limit)]
    pub limit: Option<String>,
}

/// An active lane (unfinished work, or blocked by a failed job).
#[derive(Debug, Serialize, ToSchema)]
pub struct Lane {
    /// Queue name.
    pub queue: String,
    /// Lane key.
    pub lane: String,
    /// scheduled (its head waits for its run_at), ready, running or blocked.
    pub state: String,
    /// Unfinished jobs (scheduled, pending, running); a blocked lane's failed head is not one.
    pub queued: i32,
    /// The head: the job running or next to run, or the failed job blocking the lane.
    pub head_job_id: i64,
    /// The job running now, if any.
    pub running_job_id: Option<i64>,
    /// When the oldest waiting job of the lane was enqueued; null when none waits.
    pub oldest_pending_at: Option<String>,
    /// The lane row's time: when its head became ready or falls due, or since when it is
    /// blocked.
    pub since: Option<String>,
}

/// Lanes, in the order the filter asks.
#[derive(Debug, Serialize, ToSchema)]
pub struct LaneList {
    /// The lanes.
    pub lanes: Vec<Lane>,
}

fn lane_state(s: i32) -> &'static str {
    match pb::LaneState::try_from(s) {
        Ok(pb::LaneState::Scheduled) => "scheduled",
        Ok(pb::LaneState::Ready) => "ready",
        Ok(pb::LaneState::Running) => "running",
        Ok(pb::LaneState::Blocked) => "blocked",
        _ => "unknown",
    }
}

fn time(t: &Option<prost_types::Timestamp>) -> Option<String> {
    t.as_ref().and_then(views::time).map(views::iso)
}

/// Lanes with unfinished work or a failed head: the blocked ones (each can be unblocked with
/// POST /admin/api/lanes/unblock) or the busiest.
#[utoipa::path(get, path = "/admin/api/lanes", tag = "admin", security(("api_key" = [])),
    params(LaneParams),
    responses((status = 200, body = LaneList)))]
pub async fn list(
    _: CanAdmin,
    State(st): State<AppState>,
    q: Result<Query<LaneParams>, QueryRejection>,
) -> Result<Json<LaneList>, ApiError> {
    let q = query(q)?;
    let filter = match q.filter.as_deref().unwrap_or_default() {
        "" | "busiest" => pb::LaneFilter::Busiest,
        "blocked" => pb::LaneFilter::Blocked,
        other => {
            return Err(ApiError::invalid(
                "filter",
                format!("filter {other:?} is unknown; use blocked or busiest"),
            ));
        }
    };
    let req = pb::ListLanesRequest {
        queue: params::queue(q.queue.as_deref())?,
        filter: filter as i32,
        limit: int_param(q.limit.as_deref(), ranges::LANES_LIMIT)?,
    };
    let r = st.coord.admin.clone().list_lanes(req).await?.into_inner();
    Ok(Json(LaneList {
        lanes: r
            .lanes
            .into_iter()
            .map(|l| Lane {
                state: lane_state(l.state).into(),
                running_job_id: (l.running_job_id > 0).then_some(l.running_job_id),
                oldest_pending_at: time(&l.oldest_pending_at),
                since: time(&l.since),
                queue: l.queue,
                lane: l.lane,
                queued: l.queued,
                head_job_id: l.head_job_id,
            })
            .collect(),
    }))
}

/// Parameters of GET /admin/api/lanes/jobs. `queue` and `lane` are required: the OpenAPI
/// parameters are written by hand below, as the derive does not mark a parameter with its own
/// schema required.
#[derive(Debug, Deserialize)]
pub struct LaneJobsParams {
    /// Queue name.
    pub queue: String,
    /// Lane key.
    pub lane: String,
    /// Finished jobs to add.
    pub finished_limit: Option<String>,
}

impl IntoParams for LaneJobsParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let param = |name: &str, required: bool, schema: Schema| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Query)
                .required(if required {
                    Required::True
                } else {
                    Required::False
                })
                .schema(Some(schema))
                .build()
        };
        vec![
            param("queue", true, Schema::Object(schemas::queue())),
            param("lane", true, Schema::Object(schemas::lane_text())),
            param("finished_limit", false, lane_finished()),
        ]
    }
}

/// One lane's jobs in run order.
#[derive(Debug, Serialize, ToSchema)]
pub struct LaneJobs {
    /// Unfinished jobs in the order they run: the running one, then the waiting ones (FIFO).
    pub unfinished: Vec<JobSummary>,
    /// The most recently finished jobs, newest first.
    pub finished: Vec<JobSummary>,
    /// True when more than the 500 unfinished jobs listed wait.
    pub more_unfinished: bool,
}

/// One lane's jobs: the running and waiting ones in the order they run, then the most
/// recently finished.
#[utoipa::path(get, path = "/admin/api/lanes/jobs", tag = "admin", security(("api_key" = [])),
    params(LaneJobsParams),
    responses((status = 200, body = LaneJobs)))]
pub async fn lane_jobs(
    _: CanAdmin,
    State(st): State<AppState>,
    q: Result<Query<LaneJobsParams>, QueryRejection>,
) -> Result<Json<LaneJobs>, ApiError> {
    let q = query(q)?;
    let (queue, lane) = (q.queue, q.lane);
    limits::queue_name("queue", &queue).map_err(field_error)?;
    if lane.is_empty() {
        return Err(ApiError::invalid(
            "lane",
            "lane is empty; give the lane's key",
        ));
    }
    limits::key("lane", &lane).map_err(field_error)?;
    let req = pb::LaneJobsRequest {
        queue,
        lane,
        finished_limit: int_param(q.finished_limit.as_deref(), ranges::LANE_FINISHED)?,
    };
    let r = st.coord.admin.clone().lane_jobs(req).await?.into_inner();
    Ok(Json(LaneJobs {
        unfinished: r.unfinished.iter().map(views::summary).collect(),
        finished: r.finished.iter().map(views::summary).collect(),
        more_unfinished: r.more_unfinished,
    }))
}

/// Parameters of GET /admin/api/history.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Queue name (empty or absent: every queue).
    #[param(schema_with = schemas::queue_filter)]
    pub queue: Option<String>,
    /// Minutes back from now.
    #[param(schema_with = history_minutes)]
    pub minutes: Option<String>,
}

/// One minute of history, by the minute jobs finished.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryMinute {
    /// Start of the minute.
    pub minute: Option<String>,
    /// Jobs completed in this minute.
    pub completed: i64,
    /// Jobs that ended failed in this minute.
    pub failed: i64,
    /// Median wait of the jobs finished in this minute: from when each could first run (the
    /// later of its enqueue and its run_at) to the start of its last attempt, ms (0: none).
    pub wait_p50_ms: i64,
    /// 95th percentile of the same wait, ms.
    pub wait_p95_ms: i64,
}

/// Per-minute history, oldest first; every minute is present and the last is the current
/// one.
#[derive(Debug, Serialize, ToSchema)]
pub struct History {
    /// The minutes.
    pub minutes: Vec<HistoryMinute>,
}

/// Jobs completed and failed per minute, and their wait before starting (p50, p95), over
/// the last hour (or `minutes`).
#[utoipa::path(get, path = "/admin/api/history", tag = "admin", security(("api_key" = [])),
    params(HistoryParams),
    responses((status = 200, body = History)))]
pub async fn history(
    _: CanAdmin,
    State(st): State<AppState>,
    q: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Json<History>, ApiError> {
    let q = query(q)?;
    let req = pb::QueueHistoryRequest {
        queue: params::queue(q.queue.as_deref())?,
        minutes: int_param(q.minutes.as_deref(), ranges::HISTORY_MINUTES)?,
    };
    let r = st
        .coord
        .admin
        .clone()
        .queue_history(req)
        .await?
        .into_inner();
    Ok(Json(History {
        minutes: r
            .minutes
            .into_iter()
            .map(|m| HistoryMinute {
                minute: time(&m.minute),
                completed: m.completed,
                failed: m.failed,
                wait_p50_ms: m.wait_p50_ms,
                wait_p95_ms: m.wait_p95_ms,
            })
            .collect(),
    }))
}

/// How many failed jobs a bulk action changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkResult {
    /// Always true.
    pub success: bool,
    /// Jobs retried or cancelled (at most 10,000 per call).
    pub count: i64,
    /// True when failed jobs remain beyond this call's 10,000: call again.
    pub more: bool,
}

impl From<pb::BulkFailedResponse> for BulkResult {
    fn from(r: pb::BulkFailedResponse) -> Self {
        BulkResult {
            success: true,
            count: r.count,
            more: r.more,
        }
    }
}

fn bulk_request(queue: &str) -> Result<pb::BulkFailedRequest, ApiError> {
    limits::queue_name("queue", queue).map_err(field_error)?;
    Ok(pb::BulkFailedRequest {
        queue: queue.to_owned(),
    })
}

/// Retries every failed job of the queue: each goes back to pending with its attempts reset,
/// exactly as POST /api/jobs/{id}/retry does.
#[utoipa::path(post, path = "/admin/api/queues/{queue}/failed/retry", tag = "admin",
    security(("api_key" = [])), params(super::admin::QueuePath),
    responses((status = 200, body = BulkResult)))]
pub async fn retry_failed(
    _: CanAdmin,
    State(st): State<AppState>,
    Segment(queue): Segment,
) -> Result<Json<BulkResult>, ApiError> {
    let req = bulk_request(&queue)?;
    let r = st
        .coord
        .admin
        .clone()
        .bulk_retry_failed(req)
        .await?
        .into_inner();
    Ok(Json(BulkResult::from(r)))
}

/// Discards every failed job of the queue: each ends cancelled, exactly as POST
/// /api/jobs/{id}/cancel does (a lane it blocked moves on).
#[utoipa::path(post, path = "/admin/api/queues/{queue}/failed/cancel", tag = "admin",
    security(("api_key" = [])), params(super::admin::QueuePath),
    responses((status = 200, body = BulkResult)))]
pub async fn cancel_failed(
    _: CanAdmin,
    State(st): State<AppState>,
    Segment(queue): Segment,
) -> Result<Json<BulkResult>, ApiError> {
    let req = bulk_request(&queue)?;
    let r = st
        .coord
        .admin
        .clone()
        .bulk_cancel_failed(req)
        .await?
        .into_inner();
    Ok(Json(BulkResult::from(r)))
}
