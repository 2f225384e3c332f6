//! One job or many: status, result (or a redirect to it), list with filters, cancel, retry,
//! and seed 001's `/api/queue/tasks/{id}` alias. Each handler is one RPC (plus the cached
//! stats for estimates).

use crate::auth::{CanEnqueue, CanRead};
use crate::error::{ApiError, ErrorBody};
use crate::params::{self, Segment};
use crate::schemas;
use crate::state::AppState;
use crate::views::{self, JobSummary, JobView};
use axum::Json;
use axum::extract::{Query, State, rejection::QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lanes_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

/// The `{id}` of the job routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the OpenAPI derive only: the handler takes a `Segment`.
pub struct JobId {
    /// Job id (a positive integer).
    #[param(minimum = 1)]
    id: i64,
}

/// A job id from the path; anything but a positive integer cannot name a job.
pub fn job_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        ApiError::not_found(format!(
            "job {raw:?} does not exist (ids are positive integers)"
        ))
    })
}

async fn fetch(st: &AppState, id: i64) -> Result<pb::GetJobResponse, ApiError> {
    Ok(st
        .coord
        .client
        .clone()
        .get_job(pb::GetJobRequest { id })
        .await?
        .into_inner())
}

/// The job of an answer; the coordinator always sends one with a success.
fn job_of(job: Option<pb::Job>) -> Result<pb::Job, ApiError> {
    job.ok_or_else(|| ApiError::internal("the coordinator returned no job"))
}

/// The query of `GET /api/jobs/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitParams {
    /// Wait up to this many seconds (0-60) for the job to finish (completed, failed or
    /// cancelled) before answering; the answer comes as soon as it finishes. 0 or absent:
    /// answer at once.
    #[param(value_type = Option<i32>, minimum = 0, maximum = 60)]
    pub wait: Option<String>,
}

/// A job's status, progress, timestamps, result and error; with `wait`, once it is
/// finished (or the wait is over).
#[utoipa::path(get, path = "/api/jobs/{id}", tag = "jobs", security(("api_key" = [])),
    params(JobId, WaitParams),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody)))]
pub async fn get_job(
    _: CanRead,
    State(st): State<AppState>,
    Segment(id): Segment,
    q: Result<Query<WaitParams>, QueryRejection>,
) -> Result<Json<JobView>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let (id, wait) = (job_id(&id)?, params::wait(q.wait.as_deref())?);
    let r = if wait > 0 {
        let mut req = tonic::Request::new(pb::WaitJobRequest {
            id,
            timeout_seconds: wait,
        });
        req.set_timeout(std::time::Duration::from_secs(wait as u64) + st.coord.rpc_timeout);
        st.coord.waiting.clone().wait_job(req).await?.into_inner()
    } else {
        fetch(&st, id).await?
    };
    let pos = r.position_in_lane;
    let job = job_of(r.job)?;
    let stats = st.stats.get(&st.coord).await;
    Ok(Json(views::full(&job, pos, stats.as_deref())))
}

/// The result of a completed job: its JSON, or a 302 to it when it is a link (an http(s)
/// URL string, or an object with `url`, `result_url` or `google_drive_link`).
#[utoipa::path(get, path = "/api/jobs/{id}/result", tag = "jobs", security(("api_key" = [])),
    params(JobId),
    responses(
        (status = 200, description = "The result JSON (any JSON value)", body = serde_json::Value),
        (status = 302, description = "Redirect to the result's link"),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Not completed yet", body = ErrorBody)))]
pub async fn job_result(
    _: CanRead,
    State(st): State<AppState>,
    Segment(id): Segment,
) -> Result<Response, ApiError> {
    let job = job_of(fetch(&st, job_id(&id)?).await?.job)?;
    if job.state != pb::JobState::Completed as i32 {
        return Err(ApiError::not_completed(format!(
            "job {} is {}; its result is available once it is completed",
            job.id,
            views::status_name(job.state)
        )));
    }
    let result = views::json_of(&job.result);
    if let Some(loc) = link(&result).and_then(|u| HeaderValue::from_str(u).ok()) {
        return Ok((StatusCode::FOUND, [(header::LOCATION, loc)]).into_response());
    }
    Ok(Json(views::raw_json(&job.result)).into_response())
}

/// Seed 004's download: the same as `/api/jobs/{id}/result`.
#[utoipa::path(get, path = "/api/jobs/{id}/download", tag = "jobs", security(("api_key" = [])),
    params(JobId),
    responses(
        (status = 200, description = "The result JSON (any JSON value)", body = serde_json::Value),
        (status = 302, description = "Redirect to the result's link"),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Not completed yet", body = ErrorBody)))]
pub async fn job_download(
    who: CanRead,
    st: State<AppState>,
    id: Segment,
) -> Result<Response, ApiError> {
    job_result(who, st, id).await
}

/// The link a result points to, if it is one.
fn link(result: &Value) -> Option<&str> {
    let is_url = |s: &str| {
        let l = s.to_ascii_lowercase();
        (l.starts_with("https://") || l.starts_with("http://")) && !s.contains(char::is_whitespace)
    };
    let candidate = match result {
        Value::String(s) => Some(s.as_str()),
        Value::Object(o) => ["url", "result_url", "google_drive_link"]
            .iter()
            .find_map(|k| o.get(*k).and_then(Value::as_str)),
        _ => None,
    };
    candidate.filter(|s| is_url(s))
}

/// Filters and paging of GET /api/jobs.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// pending, processing (or running), completed, failed or cancelled; empty: any.
    #[param(schema_with = schemas::status_filter)]
    pub status: Option<String>,
    /// Queue name; empty: every queue.
    #[param(schema_with = schemas::queue_filter)]
    pub queue: Option<String>,
    /// Lane key; empty: every lane.
    #[param(schema_with = schemas::lane_filter)]
    pub lane: Option<String>,
    /// Page size 1-500 (default 50).
    #[param(schema_with = schemas::page_size)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(schema_with = schemas::cursor)]
    pub cursor: Option<String>,
}

/// A page of jobs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    /// The jobs (without payload and result: GET /api/jobs/{id} has them).
    pub jobs: Vec<JobSummary>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Jobs filtered by status, queue and lane, newest first, paged.
#[utoipa::path(get, path = "/api/jobs", tag = "jobs", security(("api_key" = [])), params(ListParams),
    responses((status = 200, body = JobList)))]
pub async fn list_jobs(
    _: CanRead,
    State(st): State<AppState>,
    q: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<JobList>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let req = list_request(q)?;
    let r = st.coord.client.clone().list_jobs(req).await?.into_inner();
    Ok(Json(JobList {
        jobs: r.jobs.iter().map(views::summary).collect(),
        next_cursor: (r.next_page_token > 0).then(|| r.next_page_token.to_string()),
    }))
}

fn list_request(q: ListParams) -> Result<pb::ListJobsRequest, ApiError> {
    let state = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => pb::JobState::Unspecified,
        Some(s) => views::parse_status(s).ok_or_else(|| {
            ApiError::invalid("status", format!(
                "status {s:?} is unknown; use pending, processing, completed, failed or cancelled"
            ))
        })?,
    };
    Ok(pb::ListJobsRequest {
        queue: params::queue(q.queue.as_deref())?,
        lane: params::lane(q.lane.as_deref())?,
        state: state as i32,
        page_size: params::page_size(q.limit.as_deref())?,
        page_token: params::cursor(q.cursor.as_deref())?,
    })
}

/// Cancels a pending job at once; a processing one is flagged and stops at its next
/// heartbeat (`cancel_requested` true, status still `processing`).
#[utoipa::path(post, path = "/api/jobs/{id}/cancel", tag = "jobs", security(("api_key" = [])),
    params(JobId),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody),
        (status = 409, description = "The job has already finished", body = ErrorBody)))]
pub async fn cancel_job(
    _: CanEnqueue,
    State(st): State<AppState>,
    Segment(id): Segment,
) -> Result<Json<JobView>, ApiError> {
    let req = pb::CancelJobRequest { id: job_id(&id)? };
    let job = job_of(
        st.coord
            .client
            .clone()
            .cancel_job(req)
            .await?
            .into_inner()
            .job,
    )?;
    Ok(Json(views::full(&job, -1, None)))
}

/// Puts a failed or cancelled job back to pending with its attempts reset.
#[utoipa::path(post, path = "/api/jobs/{id}/retry", tag = "jobs", security(("api_key" = [])),
    params(JobId),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody),
        (status = 409, description = "The job is not failed or cancelled", body = ErrorBody)))]
pub async fn retry_job(
    _: CanEnqueue,
    State(st): State<AppState>,
    Segment(id): Segment,
) -> Result<Json<JobView>, ApiError> {
    let req = pb::RetryJobRequest { id: job_id(&id)? };
    let job = job_of(
        st.coord
            .client
            .clone()
            .retry_job(req)
            .await?
            .into_inner()
            .job,
    )?;
    Ok(Json(views::full(&job, -1, None)))
}

/// Seed 001's task view.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskEnvelope {
    /// Always true.
    pub success: bool,
    /// The task.
    pub task: Task,
}

/// A job under seed 001's names.
#[derive(Debug, Serialize, ToSchema)]
pub struct Task {
    /// The job id.
    pub id: i64,
    /// The queue.
    #[serde(rename = "type")]
    pub kind: String,
    /// pending, processing, completed, failed or cancelled.
    pub status: String,
    /// Progress 0-100.
    pub progress: i32,
    /// ISO 8601 times.
    pub created_at_iso: Option<String>,
    /// When it started.
    pub started_at_iso: Option<String>,
    /// When it finished.
    pub completed_at_iso: Option<String>,
    /// The result (null until completed).
    #[schema(schema_with = schemas::any_value)]
    pub result: Box<RawValue>,
    /// The last error.
    pub error: Option<String>,
}

/// Seed 001's status call: the job as a `task`.
#[utoipa::path(get, path = "/api/queue/tasks/{id}", tag = "queue", security(("api_key" = [])),
    params(JobId),
    responses((status = 200, body = TaskEnvelope), (status = 404, body = ErrorBody)))]
pub async fn get_task(
    _: CanRead,
    State(st): State<AppState>,
    Segment(id): Segment,
) -> Result<Json<TaskEnvelope>, ApiError> {
    let job = job_of(fetch(&st, job_id(&id)?).await?.job)?;
    let s = views::summary(&job);
    Ok(Json(TaskEnvelope {
        success: true,
        task: Task {
            id: s.job_id,
            kind: s.queue,
            status: s.status,
            progress: s.progress,
            created_at_iso: s.created_at,
            started_at_iso: s.started_at,
            completed_at_iso: s.completed_at,
            result: views::raw_json(&job.result),
            error: s.error,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn links() {
        assert_eq!(
            link(&json!("https://x.example/a.pdf")),
            Some("https://x.example/a.pdf")
        );
        assert_eq!(
            link(&json!({"google_drive_link": "https://drive.example/f"})),
            Some("https://drive.example/f")
        );
        assert_eq!(link(&json!({"url": "ftp://x"})), None);
        assert_eq!(link(&json!({"ok": true})), None);
        assert_eq!(link(&json!("plain text")), None);
    }

    #[test]
    fn ids() {
        assert_eq!(job_id("12").ok(), Some(12));
        assert_eq!(job_id("0").map_err(|e| e.status.as_u16()).err(), Some(404));
        assert!(job_id("abc").is_err());
    }
}
