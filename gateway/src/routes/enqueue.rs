//! POST /api/jobs and /api/jobs/batch: validate, one Enqueue(Batch) RPC, answer 202 for a
//! new job and 200 for an idempotent repeat. `position_in_queue` comes from the coordinator
//! (its counters at enqueue); `estimated_start` also uses the stats cache (at most
//! --stats-cache-ms old), never a per-enqueue GetStats.

use crate::auth::CanEnqueue;
use crate::body::{JsonBody, JsonInput};
use crate::error::{ApiError, ErrorBody};
use crate::state::{AppState, Limits};
use crate::validate::{self, EnqueueBody};
use crate::views::{self, StartEstimate};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use lanes_proto::limits::MAX_BATCH;
use lanes_proto::v1 as pb;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::ArrayBuilder;
use utoipa::openapi::{Array, Ref};

impl JsonInput for EnqueueBody {
    fn limit(limits: &Limits) -> usize {
        limits.enqueue_body
    }
}

/// Several jobs enqueued in one transaction: all or nothing.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// 1-1,000 jobs, each as for POST /api/jobs.
    #[schema(schema_with = batch_jobs)]
    pub jobs: Vec<EnqueueBody>,
}

fn batch_jobs() -> Array {
    ArrayBuilder::new()
        .items(Ref::from_schema_name("EnqueueBody"))
        .min_items(Some(1))
        .max_items(Some(MAX_BATCH))
        .description(Some("1-1,000 jobs, each as for POST /api/jobs"))
        .build()
}

impl JsonInput for BatchBody {
    fn limit(limits: &Limits) -> usize {
        limits.batch_body
    }
}

/// An enqueued job (seed 001/004 shape).
#[derive(Debug, Serialize, ToSchema)]
pub struct Enqueued {
    /// Always true.
    pub success: bool,
    /// The job's id.
    pub job_id: i64,
    /// The same id under seed 001's name.
    pub task_id: i64,
    /// `pending` for a new job; the existing job's status for an idempotent repeat.
    pub status: String,
    /// False when an existing job was returned for the idempotency key.
    pub created: bool,
    /// True when that existing job's payload was replaced (`replace`).
    pub replaced: bool,
    /// Queue name.
    pub queue: String,
    /// Lane key, null for unkeyed jobs.
    pub lane: Option<String>,
    /// Jobs of its lane ahead of it (0 = next); null for unkeyed or started jobs.
    pub position_in_lane: Option<i64>,
    /// Jobs of the queue waiting or running before it when it was enqueued (a batch's jobs
    /// count the ones before them), at least position_in_lane; null for a job not waiting.
    pub position_in_queue: Option<i64>,
    /// Estimate (ISO 8601) from the queue's mean run time and connected agents; null
    /// when unknown (queue paused, no agent connected, or no run history with jobs ahead).
    pub estimated_start: Option<String>,
}

/// The answer to a batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchEnqueued {
    /// Always true.
    pub success: bool,
    /// One per job, in request order.
    pub jobs: Vec<Enqueued>,
}

/// Enqueues one job.
#[utoipa::path(post, path = "/api/jobs", tag = "jobs", request_body = EnqueueBody,
    security(("api_key" = [])),
    responses(
        (status = 202, description = "Enqueued", body = Enqueued),
        (status = 200, description = "Idempotent repeat: the existing job", body = Enqueued),
        (status = 429, description = "Queue full (queue_full); Retry-After set", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    ))]
pub async fn enqueue(
    _: CanEnqueue,
    State(st): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<EnqueueBody>,
) -> Result<(StatusCode, Json<Enqueued>), ApiError> {
    let req = validate::enqueue_request(&body, "", st.limits.max_payload, &traceparent(&headers))?;
    let stats = st.stats.get(&st.coord).await;
    let r = st.coord.client.clone().enqueue(req).await?.into_inner();
    let out = enqueued(&r, stats.as_deref())?;
    count_enqueued(std::slice::from_ref(&out));
    Ok((code(r.created), Json(out)))
}

/// Enqueues up to 1,000 jobs in one transaction: all or nothing.
#[utoipa::path(post, path = "/api/jobs/batch", tag = "jobs", request_body = BatchBody,
    security(("api_key" = [])),
    responses(
        (status = 202, description = "Enqueued (at least one new job)", body = BatchEnqueued),
        (status = 200, description = "Every job was an idempotent repeat", body = BatchEnqueued),
        (status = 422, description = "A field of one job is invalid, e.g. `jobs[2].lane`: nothing was enqueued", body = ErrorBody),
        (status = 429, description = "Queue full (queue_full): nothing was enqueued; Retry-After set", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    ))]
pub async fn enqueue_batch(
    _: CanEnqueue,
    State(st): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<BatchBody>,
) -> Result<(StatusCode, Json<BatchEnqueued>), ApiError> {
    let n = body.jobs.len();
    if n == 0 || n > MAX_BATCH {
        return Err(ApiError::invalid(
            "jobs",
            format!("a batch holds 1-{MAX_BATCH} jobs (got {n})"),
        ));
    }
    let tp = traceparent(&headers);
    let jobs = body
        .jobs
        .iter()
        .enumerate()
        .map(|(i, b)| {
            validate::enqueue_request(b, &format!("jobs[{i}]."), st.limits.max_payload, &tp)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let stats = st.stats.get(&st.coord).await;
    let req = pb::EnqueueBatchRequest { jobs };
    let results = st
        .coord
        .client
        .clone()
        .enqueue_batch(req)
        .await?
        .into_inner()
        .results;
    let any_new = results.iter().any(|r| r.created);
    let jobs = results
        .iter()
        .map(|r| enqueued(r, stats.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    count_enqueued(&jobs);
    Ok((
        code(any_new),
        Json(BatchEnqueued {
            success: true,
            jobs,
        }),
    ))
}

fn code(created: bool) -> StatusCode {
    if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    }
}

fn count_enqueued(jobs: &[Enqueued]) {
    for j in jobs.iter().filter(|j| j.created) {
        metrics::counter!(crate::metrics::ENQUEUED, "queue" => j.queue.clone()).increment(1);
    }
}

fn enqueued(
    r: &pb::EnqueueResponse,
    stats: Option<&pb::GetStatsResponse>,
) -> Result<Enqueued, ApiError> {
    let job = r
        .job
        .as_ref()
        .ok_or_else(|| ApiError::internal("the coordinator returned no job"))?;
    let pending = job.state == pb::JobState::Pending as i32;
    let est = match (stats, pending) {
        (Some(s), true) => {
            let run_at = job
                .run_at
                .as_ref()
                .and_then(views::time)
                .unwrap_or_else(chrono::Utc::now);
            let in_queue = (r.position_in_queue >= 0).then_some(r.position_in_queue);
            views::start_estimate(s, &job.queue, r.position_in_lane, in_queue, run_at)
        }
        _ => StartEstimate {
            position_in_queue: (pending && r.position_in_queue >= 0).then_some(r.position_in_queue),
            estimated_start: None,
        },
    };
    Ok(Enqueued {
        success: true,
        job_id: job.id,
        task_id: job.id,
        status: views::status_name(job.state).to_owned(),
        created: r.created,
        replaced: r.replaced,
        queue: job.queue.clone(),
        lane: (!job.lane.is_empty()).then(|| job.lane.clone()),
        position_in_lane: (r.position_in_lane >= 0).then_some(r.position_in_lane),
        position_in_queue: est.position_in_queue,
        estimated_start: est.estimated_start.map(views::iso),
    })
}

/// The `traceparent` field of the Enqueue call: this request's span when tracing is on (the
/// coordinator then uses the metadata anyway), else the caller's W3C `traceparent` when
/// well-formed, else a new trace (sampled), so one trace follows the job to its handler.
fn traceparent(headers: &HeaderMap) -> String {
    if let Some((tp, _)) = lanes_telemetry::current_traceparent() {
        return tp;
    }
    let given = headers.get("traceparent").and_then(|v| v.to_str().ok());
    if let Some(tp) = given.filter(|t| valid_traceparent(t)) {
        return tp.to_owned();
    }
    let mut rng = rand::rng();
    let trace: u128 = rng.random::<u128>().max(1);
    let span: u64 = rng.random::<u64>().max(1);
    format!("00-{trace:032x}-{span:016x}-01")
}

fn valid_traceparent(t: &str) -> bool {
    let parts: Vec<&str> = t.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents() {
        let mut h = HeaderMap::new();
        let made = traceparent(&h);
        assert!(valid_traceparent(&made), "{made}");
        let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.insert("traceparent", given.parse().expect("ascii"));
        assert_eq!(traceparent(&h), given);
        h.insert("traceparent", "garbage".parse().expect("ascii"));
        assert_ne!(traceparent(&h), "garbage");
    }
}
