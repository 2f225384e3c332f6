//! Checks an enqueue request before any RPC, so the error names the field at fault and a
//! rejected request enqueues nothing. The limits are the shared ones (`lanes_proto::limits`),
//! which the coordinator checks again; the payload is kept as the text the caller sent
//! (`RawValue`), so no number is rounded or refused on its way to the database.

use crate::error::ApiError;
use crate::numbers;
use crate::schemas;
use chrono::DateTime;
use lanes_proto::limits::{self, Invalid};
use lanes_proto::v1 as pb;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::fmt;
use utoipa::ToSchema;

/// A priority: a name or an integer.
#[derive(Debug, Clone)]
pub enum PriorityInput {
    /// `high` (10), `normal` (0) or `low` (-10).
    Name(String),
    /// -1000..1000; higher runs first.
    Level(i64),
}

/// A key given as a string or a number (n8n often holds ids as numbers).
#[derive(Debug, Clone)]
pub enum KeyInput {
    /// A string key.
    Text(String),
    /// A numeric key, used as its decimal text.
    Number(i64),
}

/// Text or an integer (`42` or `42.0`), for the two enums above.
struct TextOrInt<T>(fn(String) -> T, fn(i64) -> T, &'static str);

impl<T> Visitor<'_> for TextOrInt<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.2)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok(self.0(v.to_owned()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        Ok(self.1(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        let n = i64::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))?;
        Ok(self.1(n))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        let n = numbers::integral(v).ok_or_else(|| E::custom(format!("{v} is not an integer")))?;
        Ok(self.1(n))
    }
}

impl<'de> Deserialize<'de> for PriorityInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextOrInt(
            PriorityInput::Name,
            PriorityInput::Level,
            "high, normal, low or an integer",
        ))
    }
}

impl<'de> Deserialize<'de> for KeyInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextOrInt(
            KeyInput::Text,
            KeyInput::Number,
            "a string or an integer",
        ))
    }
}

impl KeyInput {
    fn text(&self) -> String {
        match self {
            KeyInput::Text(s) => s.clone(),
            KeyInput::Number(n) => n.to_string(),
        }
    }
}

// `run_at` with a non-zero `delay_seconds` is refused; `openapi::complete` adds that rule
// (`schemas::run_at_or_delay`) to this schema, which the derive cannot state.
/// One job to enqueue. Unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueBody {
    /// Queue name: 1-128 bytes of letters, digits and `_ . : -`.
    #[schema(schema_with = schemas::queue)]
    pub queue: String,
    /// Lane key (e.g. the establishment id).
    #[serde(default)]
    #[schema(schema_with = schemas::lane)]
    pub lane: Option<KeyInput>,
    /// The job's input, any JSON value except null, kept as sent.
    #[schema(schema_with = schemas::payload)]
    pub payload: Box<RawValue>,
    /// `high`, `normal` (default), `low`, or an integer -1000..1000.
    #[serde(default)]
    #[schema(schema_with = schemas::priority)]
    pub priority: Option<PriorityInput>,
    /// Run no earlier than this time (RFC 3339).
    #[serde(default)]
    #[schema(schema_with = schemas::run_at)]
    pub run_at: Option<String>,
    /// Run no earlier than this many seconds from now.
    #[serde(default, deserialize_with = "numbers::optional")]
    #[schema(schema_with = schemas::delay_seconds)]
    pub delay_seconds: Option<i64>,
    /// Deduplicates enqueues within the queue.
    #[serde(default)]
    #[schema(schema_with = schemas::idempotency_key)]
    pub idempotency_key: Option<KeyInput>,
    /// Called (POST, JSON) when the job completes. `callback` (seed 004's name) is accepted
    /// as an alias.
    #[serde(default, alias = "callback")]
    #[schema(schema_with = schemas::callback_url)]
    pub callback_url: Option<String>,
    /// Called when the job fails for good. The same rules as callback_url.
    #[serde(default)]
    #[schema(schema_with = schemas::failure_callback_url)]
    pub failure_callback_url: Option<String>,
    /// This job's attempts before it ends `failed` (default: its queue's).
    #[serde(default, deserialize_with = "numbers::optional")]
    #[schema(schema_with = schemas::job_max_attempts)]
    pub max_attempts: Option<i64>,
    /// This job's hard limit of a run, in milliseconds (default: its queue's).
    #[serde(default, deserialize_with = "numbers::optional")]
    #[schema(schema_with = schemas::job_timeout_ms)]
    pub timeout_ms: Option<i64>,
    /// This job's soft limit of a run, in milliseconds: its handler is told then (SIGTERM,
    /// or a deadline header) so it can stop cleanly (default: its queue's).
    #[serde(default, deserialize_with = "numbers::optional")]
    #[schema(schema_with = schemas::job_soft_timeout_ms)]
    pub soft_timeout_ms: Option<i64>,
    /// This job's first retry wait, in milliseconds (default: its queue's).
    #[serde(default, deserialize_with = "numbers::optional")]
    #[schema(schema_with = schemas::job_backoff_initial_ms)]
    pub backoff_initial_ms: Option<i64>,
    /// This job's longest retry wait, in milliseconds (default: its queue's).
    #[serde(default, deserialize_with = "numbers::optional")]
    #[schema(schema_with = schemas::job_backoff_max_ms)]
    pub backoff_max_ms: Option<i64>,
    /// With idempotency_key: when the key's job is still waiting, replace its payload with
    /// this one (answer 200, `replaced: true`) instead of returning it unchanged.
    #[serde(default)]
    pub replace: bool,
}

fn invalid(at: &str) -> impl Fn(Invalid) -> ApiError + '_ {
    move |e| ApiError::invalid(format!("{at}{}", e.field), e.message)
}

/// Checks `b` and builds the request; `at` prefixes field names (`jobs[3].` in a batch).
pub fn enqueue_request(
    b: &EnqueueBody,
    at: &str,
    max_payload: usize,
    traceparent: &str,
) -> Result<pb::EnqueueRequest, ApiError> {
    let bad = invalid(at);
    limits::queue_name("queue", &b.queue).map_err(&bad)?;
    let lane = optional_key("lane", b.lane.as_ref()).map_err(&bad)?;
    let idem = optional_key("idempotency_key", b.idempotency_key.as_ref()).map_err(&bad)?;
    let payload = payload_text(&b.payload, max_payload, at)?;
    let priority = priority(b.priority.as_ref()).map_err(&bad)?;
    let (run_at, delay_seconds) = schedule(b).map_err(&bad)?;
    let callback_url = url("callback_url", b.callback_url.as_deref()).map_err(&bad)?;
    let failure_callback_url =
        url("failure_callback_url", b.failure_callback_url.as_deref()).map_err(&bad)?;
    let own = |r: limits::Range, v: Option<i64>| v.map(|v| r.check(v)).transpose();
    let max_attempts = b
        .max_attempts
        .map(|v| limits::job::MAX_ATTEMPTS.check_i32(v))
        .transpose()
        .map_err(&bad)?;
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
        max_attempts,
        timeout_ms: own(limits::job::TIMEOUT_MS, b.timeout_ms).map_err(&bad)?,
        soft_timeout_ms: own(limits::job::SOFT_TIMEOUT_MS, b.soft_timeout_ms).map_err(&bad)?,
        backoff_initial_ms: own(limits::job::BACKOFF_INITIAL_MS, b.backoff_initial_ms)
            .map_err(&bad)?,
        backoff_max_ms: own(limits::job::BACKOFF_MAX_MS, b.backoff_max_ms).map_err(&bad)?,
        replace: b.replace,
    })
}

/// Checks an optional queue name given as a filter: empty means every queue.
pub fn queue_filter(field: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Ok(());
    }
    limits::queue_name(field, name).map_err(invalid(""))
}

/// A lane or idempotency key: absent (or null) is none; an empty string is refused, so an
/// n8n expression that evaluated to "" cannot silently drop the lane's ordering.
pub fn optional_key(what: &str, key: Option<&KeyInput>) -> Result<String, Invalid> {
    let Some(key) = key.map(KeyInput::text) else {
        return Ok(String::new());
    };
    if key.is_empty() {
        return Err(Invalid::new(
            what,
            format!("{what} is empty; omit it (or send null) to leave it unset"),
        ));
    }
    limits::key(what, &key)?;
    Ok(key)
}

/// The payload's text, as sent: not null, within `limit` bytes (413 past it), storable.
pub fn payload_text(payload: &RawValue, limit: usize, at: &str) -> Result<String, ApiError> {
    let field = format!("{at}payload");
    let text = payload.get();
    if text == "null" {
        return Err(ApiError::invalid(
            &field,
            format!("{field} is null; send a JSON value such as {{}}"),
        ));
    }
    if text.len() > limit {
        return Err(ApiError::too_large(format!(
            "{field} is {} bytes; the limit is {limit}",
            text.len()
        )));
    }
    limits::json(&field, text, limit, false).map_err(invalid(""))?;
    Ok(text.to_owned())
}

fn priority(p: Option<&PriorityInput>) -> Result<i32, Invalid> {
    let r = limits::PRIORITY;
    match p {
        None => Ok(0),
        Some(PriorityInput::Name(n)) => match n.as_str() {
            "high" => Ok(10),
            "normal" => Ok(0),
            "low" => Ok(-10),
            other => Err(Invalid::new(
                r.field,
                format!(
                    "priority {other:?} is unknown; use high, normal, low or an integer {}..{}",
                    r.min, r.max
                ),
            )),
        },
        Some(PriorityInput::Level(n)) => r.check_i32(*n),
    }
}

type Schedule = (Option<prost_types::Timestamp>, i64);

/// `run_at` or `delay_seconds`, as the coordinator takes them: both only when the delay is 0.
fn schedule(b: &EnqueueBody) -> Result<Schedule, Invalid> {
    let delay = match b.delay_seconds {
        Some(d) => limits::DELAY_SECONDS.check(d)?,
        None => 0,
    };
    let Some(text) = &b.run_at else {
        return Ok((None, delay));
    };
    if delay != 0 {
        return Err(Invalid::new(
            "run_at",
            "give run_at or delay_seconds, not both (delay_seconds may be 0 with run_at)",
        ));
    }
    let t = DateTime::parse_from_rfc3339(text).map_err(|e| {
        Invalid::new(
            "run_at",
            format!("run_at {text:?} is not an RFC 3339 time (e.g. 2030-01-15T10:30:00Z): {e}"),
        )
    })?;
    let ts = prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    };
    Ok((Some(ts), 0))
}

/// A callback URL parsed as the coordinator parses it (`lanes_proto::urls::parse`): what
/// does not parse is a 422 naming the field here. Which addresses it may reach is the
/// coordinator's policy (`--callback-allow`), so it is left to the coordinator, whose
/// refusal names the field too. Empty (or blank) is none.
fn url(what: &str, url: Option<&str>) -> Result<String, Invalid> {
    let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(String::new());
    };
    lanes_proto::urls::parse(what, url).map_err(|e| Invalid::new(what, e.to_string()))?;
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
        serde_json::from_str(&v.to_string()).expect("body")
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
        let b = body(
            serde_json::json!({"lane": 42, "priority": "high", "delay_seconds": 0,
            "run_at": "2030-01-15T10:30:00Z", "callback_url": "https://n8n.example/webhook/x"}),
        );
        let r = enqueue_request(&b, "", 100, "").expect("valid");
        assert_eq!((r.lane.as_str(), r.priority), ("42", 10));
        assert!(r.run_at.is_some());
        // The payload goes on as sent: no number is rounded or refused on the way.
        let exact: EnqueueBody =
            serde_json::from_str(r#"{"queue":"q","payload":[1e400, 1.7976931348623157e308, 0.1]}"#)
                .expect("body");
        let r = enqueue_request(&exact, "", 100, "").expect("valid");
        assert_eq!(r.payload, "[1e400, 1.7976931348623157e308, 0.1]");
        let big = body(serde_json::json!({"payload": {"x": "y".repeat(200)}}));
        let e = enqueue_request(&big, "", 100, "").expect_err("too big");
        assert_eq!(e.status.as_u16(), 413);
    }
}
