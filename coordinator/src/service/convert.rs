//! Rows to protobuf messages.

use crate::db::jobs::JobRow;
use crate::db::outbox::Delivery;
use crate::db::queues::{FailurePolicy, QueueSettings};
use crate::db::states::{DeliveryState, JobState};
use crate::db::transitions::lease::Leased;
use chrono::{DateTime, Duration, Utc};
use lanes_proto::v1 as pb;
use prost_types::Timestamp;

/// A chrono time as a protobuf timestamp.
pub fn ts(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// A protobuf timestamp as a chrono time, if it is in range.
pub fn from_ts(t: &Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

/// The protobuf enum of a job state. The API has no "scheduled": it is a pending job whose
/// `run_at` is in the future.
pub fn state(s: JobState) -> pb::JobState {
    match s {
        JobState::Scheduled | JobState::Pending => pb::JobState::Pending,
        JobState::Running => pb::JobState::Running,
        JobState::Completed => pb::JobState::Completed,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

/// The database states a protobuf state stands for (none: any state).
pub fn db_states(s: pb::JobState) -> Vec<JobState> {
    match s {
        pb::JobState::Unspecified => vec![],
        pb::JobState::Pending => vec![JobState::Scheduled, JobState::Pending],
        pb::JobState::Running => vec![JobState::Running],
        pb::JobState::Completed => vec![JobState::Completed],
        pb::JobState::Failed => vec![JobState::Failed],
        pb::JobState::Cancelled => vec![JobState::Cancelled],
    }
}

/// A job as clients see it.
pub fn job(j: JobRow) -> pb::Job {
    pb::Job {
        id: j.id,
        queue: j.queue,
        lane: j.lane_key.unwrap_or_default(),
        payload: j.payload,
        priority: j.priority,
        state: state(j.state) as i32,
        attempt: j.attempt,
        max_attempts: j.max_attempts,
        run_at: Some(ts(j.run_at)),
        idempotency_key: j.idempotency_key.unwrap_or_default(),
        progress_percent: j.progress_percent.unwrap_or(0),
        progress_message: j.progress_message.unwrap_or_default(),
        result: j.result.unwrap_or_default(),
        last_error: j.last_error.unwrap_or_default(),
        cancel_requested: j.cancel_requested,
        created_at: Some(ts(j.created_at)),
        started_at: j.started_at.map(ts),
        finished_at: j.finished_at.map(ts),
        agent_id: j.agent_id.unwrap_or_default(),
        callback_url: j.callback_url.unwrap_or_default(),
        failure_callback_url: j.failure_callback_url.unwrap_or_default(),
        traceparent: j.traceparent.unwrap_or_default(),
        timeout_ms: j.timeout_ms,
        soft_timeout_ms: j.soft_timeout_ms,
        backoff_initial_ms: j.backoff_initial_ms,
        backoff_max_ms: j.backoff_max_ms,
    }
}

/// A job handed to an agent.
pub fn leased(l: Leased) -> pb::LeasedJob {
    pb::LeasedJob {
        id: l.id,
        queue: l.queue,
        lane: l.lane_key.unwrap_or_default(),
        payload: l.payload,
        attempt: l.attempt,
        max_attempts: l.max_attempts,
        lease_token: l.lease_token,
        lease_expires_at: Some(ts(l.lease_expires_at)),
        deadline: Some(ts(l.started_at + Duration::milliseconds(l.job_timeout_ms))),
        traceparent: l.traceparent.unwrap_or_default(),
        lease_ttl_ms: l.lease_ttl_ms,
        tracestate: l.tracestate.unwrap_or_default(),
        soft_deadline: l
            .soft_timeout_ms
            .filter(|soft| *soft < l.job_timeout_ms)
            .map(|soft| ts(l.started_at + Duration::milliseconds(soft))),
    }
}

/// Queue settings as operators see them.
pub fn settings(s: QueueSettings) -> pb::QueueSettings {
    let policy = match s.failure_policy {
        FailurePolicy::Continue => pb::FailurePolicy::Continue,
        FailurePolicy::Block => pb::FailurePolicy::Block,
    };
    pb::QueueSettings {
        queue: s.name,
        max_attempts: s.max_attempts,
        backoff_initial_ms: s.backoff_initial_ms,
        backoff_max_ms: s.backoff_max_ms,
        lease_ttl_ms: s.lease_ttl_ms,
        job_timeout_ms: s.job_timeout_ms,
        retention_completed_s: s.retention_completed_s,
        retention_failed_s: s.retention_failed_s,
        max_pending: s.max_pending.unwrap_or(0),
        max_running: s.max_running.unwrap_or(0),
        paused: s.paused,
        failure_policy: policy as i32,
        updated_at: Some(ts(s.updated_at)),
        soft_timeout_ms: s.soft_timeout_ms.unwrap_or(0),
        rate_limit: s.rate_limit.unwrap_or(0),
        rate_interval_ms: s.rate_interval_ms.unwrap_or(0),
        idempotency_window_s: s.idempotency_window_s.unwrap_or(0),
    }
}

/// The protobuf enum of a delivery state.
pub fn delivery_state(s: DeliveryState) -> pb::DeliveryState {
    match s {
        DeliveryState::Pending => pb::DeliveryState::Pending,
        DeliveryState::Delivering => pb::DeliveryState::Delivering,
        DeliveryState::Delivered => pb::DeliveryState::Delivered,
        DeliveryState::Failed => pb::DeliveryState::Failed,
        DeliveryState::Disabled => pb::DeliveryState::Disabled,
    }
}

/// The delivery state of a protobuf enum (`None` for unspecified).
pub fn db_delivery_state(s: pb::DeliveryState) -> Option<DeliveryState> {
    match s {
        pb::DeliveryState::Unspecified => None,
        pb::DeliveryState::Pending => Some(DeliveryState::Pending),
        pb::DeliveryState::Delivering => Some(DeliveryState::Delivering),
        pb::DeliveryState::Delivered => Some(DeliveryState::Delivered),
        pb::DeliveryState::Failed => Some(DeliveryState::Failed),
        pb::DeliveryState::Disabled => Some(DeliveryState::Disabled),
    }
}

/// A delivery as operators see it: its URL without secrets.
pub fn delivery(d: Delivery) -> pb::Delivery {
    pb::Delivery {
        id: d.id,
        state: delivery_state(d.state) as i32,
        url: redact_url(&d.url),
        event_type: d.event_type,
        job_id: d.job_id.unwrap_or(0),
        queue: d.queue.unwrap_or_default(),
        lane: d.lane.unwrap_or_default(),
        endpoint: d.endpoint.unwrap_or_default(),
        attempts: d.attempts,
        last_status: d.last_status.unwrap_or(0),
        last_error: d.last_error.unwrap_or_default(),
        created_at: Some(ts(d.created_at)),
        next_attempt_at: Some(ts(d.next_attempt_at)),
        delivered_at: d.delivered_at.map(ts),
    }
}

/// A URL fit to show: user name and password become `***`, each query value `***`, the
/// fragment goes. Webhook URLs often carry a token in one of those; the scheme, host, port
/// and path stay so an operator can tell endpoints apart.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut u) = url::Url::parse(raw) else {
        return "(unparseable URL)".into();
    };
    if !u.username().is_empty() || u.password().is_some() {
        // Cannot fail for http(s) URLs, the only ones accepted at enqueue.
        let _ = u.set_password(None);
        let _ = u.set_username("***");
    }
    if u.query().is_some() {
        let masked: Vec<(String, &str)> = u
            .query_pairs()
            .map(|(k, _)| (k.into_owned(), "***"))
            .collect();
        u.query_pairs_mut().clear().extend_pairs(masked);
    }
    u.set_fragment(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn urls_lose_their_secrets() {
        let cases = [
            (
                "https://n8n.example/webhook/abc",
                "https://n8n.example/webhook/abc",
            ),
            (
                "https://bob:s3cret@h.example:8443/p?x=1",
                "https://***@h.example:8443/p?x=***",
            ),
            ("http://tok@h.example/p", "http://***@h.example/p"),
            (
                "https://h.example/p?token=abc&b=&c#frag",
                "https://h.example/p?token=***&b=***&c=***",
            ),
            ("not a url", "(unparseable URL)"),
        ];
        for (raw, shown) in cases {
            assert_eq!(redact_url(raw), shown, "{raw}");
        }
    }
}
