//! Checks an enqueue request before any RPC, so the error names the field at fault and a
//! rejected request enqueues nothing. The limits are the coordinator's (which checks again).

use crate::error::ApiError;
use chrono::DateTime;
use lanes_proto::v1 as pb;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

/// Longest queue name, bytes.
pub const MAX_QUEUE_NAME: usize = 128;
/// Longest lane or idempotency key, bytes.
pub const MAX_KEY: usize = 256;
/// Largest priority magnitude.
pub const MAX_PRIORITY: i64 = 1000;
/// Longest delay: 366 days.
pub const MAX_DELAY_S: i64 = 366 * 24 * 3600;
/// Most jobs in one batch.
pub const MAX_BATCH: usize = 1000;

/// A priority: a name or an integer.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PriorityInput {
    /// `high` (10), `normal` (0) or `low` (-10).
    Name(String),
    /// -1000..1000; higher runs first.
    Level(i64),
}

/// A key given as a string or a number (n8n often holds ids as numbers).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum KeyInput {
    /// A string key.
    Text(String),
    /// A numeric key, used as its decimal text.
    Number(i64),
}

impl KeyInput {
    fn text(&self) -> String {
        match self {
            KeyInput::Text(s) => s.clone(),
            KeyInput::Number(n) => n.to_string(),
        }
    }
}

/// One job to enqueue.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueBody {
    /// Queue name: 1-128 bytes of letters, digits and `_ . : -`.
    #[schema(example = "invoice_import")]
    pub queue: String,
    /// Lane key (e.g. the establishment id), 1-256 bytes: jobs of one lane run one at a
    /// time in enqueue order. Omit (or null) for a job without ordering.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "resto-42")]
    pub lane: Option<KeyInput>,
    /// The job's input, any JSON value except null (at most --max-payload-bytes).
    #[schema(value_type = Object)]
    pub payload: Value,
    /// `high`, `normal` (default), `low`, or an integer -1000..1000.
    #[serde(default)]
    pub priority: Option<PriorityInput>,
    /// Run no earlier than this time (RFC 3339). Exclusive with delay_seconds.
    #[serde(default)]
    #[schema(example = "2030-01-15T10:30:00Z")]
    pub run_at: Option<String>,
    /// Run no earlier than this many seconds from now (0 to 31,622,400).
    #[serde(default)]
    pub delay_seconds: Option<i64>,
    /// Deduplicates enqueues within the queue: a repeat returns the existing job (200).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub idempotency_key: Option<KeyInput>,
    /// Called (POST, JSON) when the job completes. An http:// or https:// URL that reaches
    /// a public address, unless the coordinator's --callback-allow lists it (loopback,
    /// private, link-local and cloud metadata addresses are refused).
    #[serde(default)]
    pub callback_url: Option<String>,
    /// Called when the job fails for good. The same rules as callback_url.
    #[serde(default)]
    pub failure_callback_url: Option<String>,
}

/// Checks `b` and builds the request; `at` prefixes field names (`jobs[3].` in a batch).
pub fn enqueue_request(
    b: &EnqueueBody,
    at: &str,
    max_payload: usize,
    traceparent: &str,
) -> Result<pb::EnqueueRequest, ApiError> {
    let field = |name: &str| format!("{at}{name}");
    queue_name(&b.queue).map_err(|m| ApiError::invalid(field("queue"), m))?;
    let lane =
        optional_key("lane", b.lane.as_ref()).map_err(|m| ApiError::invalid(field("lane"), m))?;
    let idem = optional_key("idempotency_key", b.idempotency_key.as_ref())
        .map_err(|m| ApiError::invalid(field("idempotency_key"), m))?;
    let payload = payload_text(&b.payload, max_payload, &field("payload"))?;
    let priority =
        priority(b.priority.as_ref()).map_err(|m| ApiError::invalid(field("priority"), m))?;
    let (run_at, delay_seconds) = schedule(b).map_err(|(f, m)| ApiError::invalid(field(f), m))?;
    let callback_url = url("callback_url", b.callback_url.as_deref())
        .map_err(|m| ApiError::invalid(field("callback_url"), m))?;
    let failure_callback_url = url("failure_callback_url", b.failure_callback_url.as_deref())
        .map_err(|m| ApiError::invalid(field("failure_callback_url"), m))?;
    Ok(pb::EnqueueRequest {
        queue: b.queue.clone(),
        lane,
        payload,
        priority,
        run_at,
        delay_seconds,
        idempotency_key: idem,
        callback_url,
        failure_callback_url,
        traceparent: traceparent.to_owned(),
    })
}

/// Checks a queue name.
pub fn queue_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("queue is empty; give a queue name such as invoice_import".into());
    }
    if name.len() > MAX_QUEUE_NAME {
        return Err(format!(
            "queue is {} bytes; the limit is {MAX_QUEUE_NAME}",
            name.len()
        ));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        Some(c) => Err(format!(
            "queue {name:?} contains {c:?}; allowed are letters, digits and _ . : -"
        )),
        None => Ok(()),
    }
}

fn optional_key(what: &str, key: Option<&KeyInput>) -> Result<String, String> {
    let Some(key) = key.map(KeyInput::text) else {
        return Ok(String::new());
    };
    if key.is_empty() {
        // An n8n expression that evaluated to "" must not silently drop the lane's ordering.
        return Err(format!(
            "{what} is empty; omit it (or send null) to leave it unset"
        ));
    }
    if key.len() > MAX_KEY {
        return Err(format!(
            "{what} is {} bytes; the limit is {MAX_KEY}",
            key.len()
        ));
    }
    if key.contains('\0') {
        return Err(format!("{what} contains a NUL character"));
    }
    Ok(key)
}

fn payload_text(payload: &Value, limit: usize, field: &str) -> Result<String, ApiError> {
    if payload.is_null() {
        return Err(ApiError::invalid(
            field,
            format!("{field} is missing or null; send a JSON value such as {{}}"),
        ));
    }
    let text = payload.to_string();
    if text.len() > limit {
        return Err(ApiError::too_large(format!(
            "{field} is {} bytes; the limit is {limit}",
            text.len()
        )));
    }
    // Postgres jsonb cannot store \u0000 inside strings.
    if text.contains("\\u0000") {
        return Err(ApiError::invalid(
            field,
            format!("{field} contains \\u0000, which cannot be stored"),
        ));
    }
    Ok(text)
}

fn priority(p: Option<&PriorityInput>) -> Result<i32, String> {
    match p {
        None => Ok(0),
        Some(PriorityInput::Name(n)) => match n.as_str() {
            "high" => Ok(10),
            "normal" => Ok(0),
            "low" => Ok(-10),
            other => Err(format!(
                "priority {other:?} is unknown; use high, normal, low or an integer -{MAX_PRIORITY}..{MAX_PRIORITY}"
            )),
        },
        Some(PriorityInput::Level(n)) if n.abs() <= MAX_PRIORITY => Ok(*n as i32),
        Some(PriorityInput::Level(n)) => Err(format!(
            "priority is {n}; allowed -{MAX_PRIORITY}..{MAX_PRIORITY} (high = 10, normal = 0, low = -10)"
        )),
    }
}

type Schedule = (Option<prost_types::Timestamp>, i64);

fn schedule(b: &EnqueueBody) -> Result<Schedule, (&'static str, String)> {
    if b.run_at.is_some() && b.delay_seconds.is_some() {
        return Err(("run_at", "give run_at or delay_seconds, not both".into()));
    }
    if let Some(d) = b.delay_seconds {
        if !(0..=MAX_DELAY_S).contains(&d) {
            return Err((
                "delay_seconds",
                format!("delay_seconds is {d}; allowed 0-{MAX_DELAY_S}"),
            ));
        }
        return Ok((None, d));
    }
    let Some(text) = &b.run_at else {
        return Ok((None, 0));
    };
    let t = DateTime::parse_from_rfc3339(text).map_err(|e| {
        (
            "run_at",
            format!("run_at {text:?} is not an RFC 3339 time (e.g. 2030-01-15T10:30:00Z): {e}"),
        )
    })?;
    let ts = prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    };
    Ok((Some(ts), 0))
}

/// A callback URL parsed as the coordinator parses it (`lanes_proto::urls::parse`): what
/// does not parse is a 422 naming the field here. Which addresses it may reach is the
/// coordinator's policy (`--callback-allow`), so it is left to the coordinator, whose
/// refusal names the field too.
fn url(what: &str, url: Option<&str>) -> Result<String, String> {
    let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(String::new());
    };
    lanes_proto::urls::parse(what, url).map_err(|e| e.to_string())?;
    Ok(url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(extra: serde_json::Value) -> EnqueueBody {
        let mut v = serde_json::json!({"queue": "q", "payload": {}});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        serde_json::from_value(v).expect("body")
    }

    fn field_of(extra: serde_json::Value) -> Option<String> {
        enqueue_request(&body(extra), "", 100, "")
            .err()
            .and_then(|e| e.field)
    }

    #[test]
    fn names_the_field() {
        assert_eq!(
            field_of(serde_json::json!({"queue": "a b"})).as_deref(),
            Some("queue")
        );
        assert_eq!(
            field_of(serde_json::json!({"lane": ""})).as_deref(),
            Some("lane")
        );
        assert_eq!(
            field_of(serde_json::json!({"priority": "urgent"})).as_deref(),
            Some("priority")
        );
        assert_eq!(
            field_of(serde_json::json!({"priority": 5000})).as_deref(),
            Some("priority")
        );
        assert_eq!(
            field_of(serde_json::json!({"run_at": "tomorrow"})).as_deref(),
            Some("run_at")
        );
        assert_eq!(
            field_of(serde_json::json!({"delay_seconds": -1})).as_deref(),
            Some("delay_seconds")
        );
        assert_eq!(
            field_of(serde_json::json!({"callback_url": "ftp://x"})).as_deref(),
            Some("callback_url")
        );
        assert_eq!(
            field_of(serde_json::json!({"payload": null})).as_deref(),
            Some("payload")
        );
        for bad in ["http://:80/", "http://[::1/", "http://exa mple/"] {
            assert_eq!(
                field_of(serde_json::json!({"failure_callback_url": bad})).as_deref(),
                Some("failure_callback_url"),
                "{bad}"
            );
        }
    }

    #[test]
    fn accepts_good_input() {
        let b = body(serde_json::json!({"lane": 42, "priority": "high",
            "run_at": "2030-01-15T10:30:00Z", "callback_url": "https://n8n.example/webhook/x"}));
        let r = enqueue_request(&b, "", 100, "").expect("valid");
        assert_eq!((r.lane.as_str(), r.priority), ("42", 10));
        assert!(r.run_at.is_some());
        let big = body(serde_json::json!({"payload": {"x": "y".repeat(200)}}));
        let e = enqueue_request(&big, "", 100, "").expect_err("too big");
        assert_eq!(e.status.as_u16(), 413);
    }
}
