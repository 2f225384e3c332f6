//! Jobs as HTTP clients see them: the seeds' status names (`processing` for running), ISO
//! 8601 timestamps, JSON values instead of JSON text, and the estimates derived from the
//! cached queue stats.

use chrono::{DateTime, SecondsFormat, Utc};
use lanes_proto::v1 as pb;
use prost_types::Timestamp;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::ToSchema;

/// The user-facing name of a job state (seed 001's names).
pub fn status_name(state: i32) -> &'static str {
    match pb::JobState::try_from(state) {
        Ok(pb::JobState::Pending) => "pending",
        Ok(pb::JobState::Running) => "processing",
        Ok(pb::JobState::Completed) => "completed",
        Ok(pb::JobState::Failed) => "failed",
        Ok(pb::JobState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

/// The state of a user-facing status name (`running` is accepted for `processing`).
pub fn parse_status(name: &str) -> Option<pb::JobState> {
    match name {
        "pending" => Some(pb::JobState::Pending),
        "processing" | "running" => Some(pb::JobState::Running),
        "completed" => Some(pb::JobState::Completed),
        "failed" => Some(pb::JobState::Failed),
        "cancelled" => Some(pb::JobState::Cancelled),
        _ => None,
    }
}

/// A protobuf timestamp as a chrono time.
pub fn time(t: &Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

/// RFC 3339 / ISO 8601 in UTC with milliseconds, e.g. `2025-11-13T10:00:01.250Z`.
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn iso_of(t: &Option<Timestamp>) -> Option<String> {
    t.as_ref().and_then(time).map(iso)
}

/// Stored JSON text as a value, to look into (a result's link): empty is `null`; text that
/// does not parse (not JSON, or a number past `f64`) is a string. Answers use [`raw_json`],
/// which keeps every number exact.
pub fn json_of(text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// Stored JSON text answered as it is (every number exact): empty is `null`; text that is
/// not JSON is answered as a JSON string.
pub fn raw_json(text: &str) -> Box<RawValue> {
    let text = if text.trim().is_empty() { "null" } else { text };
    RawValue::from_string(text.to_owned()).unwrap_or_else(|_| {
        let quoted = Value::String(text.to_owned()).to_string();
        RawValue::from_string(quoted).unwrap_or_default()
    })
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// A job in a list: everything but its payload and result.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobSummary {
    /// The job's id (seed 001 calls it `task_id`).
    pub job_id: i64,
    /// pending, processing, completed, failed or cancelled.
    pub status: String,
    /// Queue name.
    pub queue: String,
    /// Lane key (e.g. the establishment id); null for unkeyed jobs.
    pub lane: Option<String>,
    /// Higher runs first: high = 10, normal = 0, low = -10.
    pub priority: i32,
    /// Attempts started so far (1 on the first run).
    pub attempt: i32,
    /// Attempts allowed before the job ends `failed`.
    pub max_attempts: i32,
    /// Last progress reported by the handler, 0-100.
    pub progress: i32,
    /// Last progress message, if any.
    pub progress_message: Option<String>,
    /// Last error message, if any.
    pub error: Option<String>,
    /// True when cancellation was requested while it ran.
    pub cancel_requested: bool,
    /// When it was enqueued.
    pub created_at: Option<String>,
    /// When its current or last attempt started.
    pub started_at: Option<String>,
    /// When it finished (completed, failed or cancelled).
    pub completed_at: Option<String>,
    /// The earliest time it may (next) run.
    pub run_at: Option<String>,
    /// The agent that holds or last held it.
    pub agent_id: Option<String>,
}

/// One job in full.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub summary: JobSummary,
    /// The payload as enqueued.
    #[schema(schema_with = crate::schemas::any_value)]
    pub payload: Box<RawValue>,
    /// The handler's result (null until completed).
    #[schema(schema_with = crate::schemas::any_value)]
    pub result: Box<RawValue>,
    /// Jobs of its lane ahead of it while pending (0 = next); null otherwise.
    pub position_in_lane: Option<i64>,
    /// Estimate from the cached queue stats (average run time, jobs ahead); omitted when
    /// unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_completion: Option<String>,
    /// The idempotency key given at enqueue.
    pub idempotency_key: Option<String>,
    /// Success callback URL.
    pub callback_url: Option<String>,
    /// Failure callback URL.
    pub failure_callback_url: Option<String>,
    /// Limits given at enqueue for this job only (null: its queue's), ms.
    pub timeout_ms: Option<i64>,
    /// Soft limit of a run given at enqueue (null: its queue's), ms.
    pub soft_timeout_ms: Option<i64>,
    /// Retry backoff's first wait given at enqueue (null: its queue's), ms.
    pub backoff_initial_ms: Option<i64>,
    /// Retry backoff's cap given at enqueue (null: its queue's), ms.
    pub backoff_max_ms: Option<i64>,
}

/// The list form of a job.
pub fn summary(j: &pb::Job) -> JobSummary {
    JobSummary {
        job_id: j.id,
        status: status_name(j.state).to_owned(),
        queue: j.queue.clone(),
        lane: non_empty(&j.lane),
        priority: j.priority,
        attempt: j.attempt,
        max_attempts: j.max_attempts,
        progress: j.progress_percent,
        progress_message: non_empty(&j.progress_message),
        error: non_empty(&j.last_error),
        cancel_requested: j.cancel_requested,
        created_at: iso_of(&j.created_at),
        started_at: iso_of(&j.started_at),
        completed_at: iso_of(&j.finished_at),
        run_at: iso_of(&j.run_at),
        agent_id: non_empty(&j.agent_id),
    }
}

/// The full form of a job; `position_in_lane` is -1 when not applicable.
pub fn full(j: &pb::Job, position_in_lane: i64, stats: Option<&pb::GetStatsResponse>) -> JobView {
    JobView {
        summary: summary(j),
        payload: raw_json(&j.payload),
        result: raw_json(&j.result),
        position_in_lane: (position_in_lane >= 0).then_some(position_in_lane),
        estimated_completion: stats
            .and_then(|s| estimated_completion(s, j, position_in_lane))
            .map(iso),
        idempotency_key: non_empty(&j.idempotency_key),
        callback_url: non_empty(&j.callback_url),
        failure_callback_url: non_empty(&j.failure_callback_url),
        timeout_ms: j.timeout_ms,
        soft_timeout_ms: j.soft_timeout_ms,
        backoff_initial_ms: j.backoff_initial_ms,
        backoff_max_ms: j.backoff_max_ms,
    }
}

/// Estimates for a job not yet started.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartEstimate {
    /// Jobs of the queue ahead of it.
    pub position_in_queue: Option<i64>,
    /// When it should start.
    pub estimated_start: Option<DateTime<Utc>>,
}

/// Estimates: jobs ahead = the job's place in its queue when the coordinator gave it (at
/// enqueue), else the queue's ready jobs at the stats snapshot, and at least the jobs ahead
/// in its lane; start = now + max(lane ahead, queue ahead per connected agent) × the
/// queue's mean run time, and never before `run_at`. No estimate of the start when the
/// queue is paused, no agent is connected, or there is no run history while jobs are ahead.
pub fn start_estimate(
    stats: &pb::GetStatsResponse,
    queue: &str,
    position_in_lane: i64,
    position_in_queue: Option<i64>,
    run_at: DateTime<Utc>,
) -> StartEstimate {
    let q = stats.queues.iter().find(|q| q.queue == queue);
    let ready = q.and_then(|q| q.counts.as_ref()).map_or(0, |c| c.ready);
    let lane_ahead = position_in_lane.max(0);
    let ahead = position_in_queue.unwrap_or(ready).max(lane_ahead);
    let avg_ms = q.map_or(0.0, |q| q.avg_run_ms);
    let now = Utc::now();
    let agents = i64::from(stats.agents_connected);
    let estimated_start = if agents == 0 || q.is_some_and(|q| q.paused) {
        None
    } else if ahead == 0 {
        Some(run_at.max(now))
    } else if avg_ms <= 0.0 {
        None
    } else {
        let rounds = lane_ahead.max((ahead + agents - 1) / agents);
        let wait = chrono::Duration::milliseconds((rounds as f64 * avg_ms) as i64);
        Some(run_at.max(now + wait))
    };
    StartEstimate {
        position_in_queue: Some(ahead),
        estimated_start,
    }
}

fn estimated_completion(
    stats: &pb::GetStatsResponse,
    j: &pb::Job,
    position_in_lane: i64,
) -> Option<DateTime<Utc>> {
    let avg_ms = stats.queues.iter().find(|q| q.queue == j.queue)?.avg_run_ms;
    let run = chrono::Duration::milliseconds(avg_ms as i64);
    match pb::JobState::try_from(j.state).ok()? {
        pb::JobState::Completed | pb::JobState::Failed | pb::JobState::Cancelled => {
            j.finished_at.as_ref().and_then(time)
        }
        _ if avg_ms <= 0.0 => None,
        pb::JobState::Running => {
            let started = j.started_at.as_ref().and_then(time)?;
            Some((started + run).max(Utc::now()))
        }
        _ => {
            let run_at = j.run_at.as_ref().and_then(time).unwrap_or_else(Utc::now);
            let start = start_estimate(stats, &j.queue, position_in_lane, None, run_at);
            start.estimated_start.map(|s| s + run)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(ready: i64, avg_run_ms: f64, agents: i32) -> pb::GetStatsResponse {
        pb::GetStatsResponse {
            queues: vec![pb::QueueStats {
                queue: "q".into(),
                counts: Some(pb::StateCounts {
                    ready,
                    ..Default::default()
                }),
                avg_run_ms,
                ..Default::default()
            }],
            agents_connected: agents,
            ..Default::default()
        }
    }

    #[test]
    fn estimates() {
        let now = Utc::now();
        let e = start_estimate(&stats(0, 0.0, 1), "q", 0, None, now);
        assert_eq!(e.position_in_queue, Some(0));
        assert!(e.estimated_start.is_some());
        assert!(
            start_estimate(&stats(4, 1000.0, 0), "q", 0, None, now)
                .estimated_start
                .is_none()
        );
        let e = start_estimate(&stats(4, 1000.0, 2), "q", 3, None, now);
        assert_eq!(e.position_in_queue, Some(4));
        let start = e.estimated_start.expect("estimate");
        // max(lane 3, 4 ready / 2 agents) = 3 runs of 1 s ahead.
        assert!((start - now).num_milliseconds() >= 3000);
    }

    #[test]
    fn names_and_json() {
        assert_eq!(status_name(pb::JobState::Running as i32), "processing");
        assert_eq!(parse_status("running"), Some(pb::JobState::Running));
        assert_eq!(json_of(""), Value::Null);
        assert_eq!(json_of("{\"a\":1}")["a"], 1);
        assert_eq!(raw_json("").get(), "null");
        assert_eq!(raw_json("[1e400]").get(), "[1e400]");
        assert_eq!(raw_json("not json").get(), "\"not json\"");
    }
}
