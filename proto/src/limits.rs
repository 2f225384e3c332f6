//! The input limits of the Lanes API, defined once and checked by both the coordinator
//! (before anything touches the database) and the gateway (before any RPC, so its 422 names
//! the field). Every refusal names the field and the limit: `job_timeout_ms must be ≥ 1000
//! (got 5)`, never a database constraint's text. The proto comments and the README quote
//! these values.

use std::fmt;

/// Longest queue name, in bytes.
pub const MAX_QUEUE_NAME: usize = 128;
/// Longest lane key or idempotency key, in bytes.
pub const MAX_KEY: usize = 256;
/// Longest agent id, in bytes.
pub const MAX_AGENT_ID: usize = 128;
/// Most queues one agent may serve.
pub const MAX_AGENT_QUEUES: usize = 32;
/// Longest request id an agent may send (Lease, Complete/Fail with `lease_next`).
pub const MAX_REQUEST_ID: usize = 64;
/// Longest error message kept on a job; a longer one keeps its tail.
pub const MAX_ERROR: usize = 8 * 1024;
/// Longest progress message kept on a job; a longer one keeps its tail.
pub const MAX_PROGRESS_MESSAGE: usize = 1024;
/// Longest callback URL, in bytes.
pub const MAX_URL: usize = 2048;
/// Most jobs in one batch enqueue.
pub const MAX_BATCH: usize = 1000;
/// Default largest payload or result, in bytes (`--max-payload-bytes`).
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
/// Most rows in one page of a listing.
pub const MAX_PAGE: i64 = 500;

/// A job's priority: higher runs first.
pub const PRIORITY: Range = Range::new("priority", -1000, 1000);
/// A job's delay, in seconds: at most 366 days.
pub const DELAY_SECONDS: Range = Range::new("delay_seconds", 0, 366 * 24 * 3600);
/// A heartbeat's progress.
pub const PROGRESS_PERCENT: Range = Range::new("progress_percent", 0, 100);
/// How long a WaitJob call (`GET /api/jobs/{id}?wait=`) may wait, in seconds.
pub const WAIT_SECONDS: Range = Range::new("timeout_seconds", 0, 60);
/// A handler's requested wait before its retry, in milliseconds: at most 30 days.
pub const RETRY_AFTER_MS: Range = Range::new("retry_after_ms", 0, 30 * DAY_MS);

const DAY_MS: i64 = 24 * 3600 * 1000;
const YEAR_S: i64 = 365 * 24 * 3600;

/// The per-queue settings (AdminService.SetQueueSettings, `PUT /admin/api/queues/{q}/settings`).
pub mod settings {
    use super::{DAY_MS, Range, YEAR_S};

    /// Attempts before a job ends `failed`.
    pub const MAX_ATTEMPTS: Range = Range::new("max_attempts", 1, 1000);
    /// The first retry's wait; it doubles per attempt up to `backoff_max_ms`.
    pub const BACKOFF_INITIAL_MS: Range = Range::new("backoff_initial_ms", 0, 30 * DAY_MS);
    /// The longest retry wait (at least `backoff_initial_ms`).
    pub const BACKOFF_MAX_MS: Range = Range::new("backoff_max_ms", 0, 30 * DAY_MS);
    /// How long a lease lasts without a heartbeat.
    pub const LEASE_TTL_MS: Range = Range::new("lease_ttl_ms", 1000, DAY_MS);
    /// A run's hard limit.
    pub const JOB_TIMEOUT_MS: Range = Range::new("job_timeout_ms", 1000, 7 * DAY_MS);
    /// How long completed and cancelled jobs are kept.
    pub const RETENTION_COMPLETED_S: Range = Range::new("retention_completed_s", 0, 10 * YEAR_S);
    /// How long failed jobs are kept.
    pub const RETENTION_FAILED_S: Range = Range::new("retention_failed_s", 0, 10 * YEAR_S);
    /// Backpressure: the most pending jobs the queue holds (0: no limit).
    pub const MAX_PENDING: Range = Range::new("max_pending", 0, 1_000_000_000_000);
    /// The most jobs of the queue running at once (0: no limit).
    pub const MAX_RUNNING: Range = Range::new("max_running", 0, 1_000_000);
    /// A run's soft limit: the handler is told then (0: none).
    pub const SOFT_TIMEOUT_MS: Range = Range::new("soft_timeout_ms", 0, 7 * DAY_MS);
    /// The most jobs started per rate interval (0: no rate limit).
    pub const RATE_LIMIT: Range = Range::new("rate_limit", 0, 100_000);
    /// The rate limit's interval (0 with no rate limit).
    pub const RATE_INTERVAL_MS: Range = Range::new("rate_interval_ms", 0, DAY_MS);
    /// How long an idempotency key returns its job (0: forever).
    pub const IDEMPOTENCY_WINDOW_S: Range = Range::new("idempotency_window_s", 0, 10 * YEAR_S);
}

/// A job's own settings at enqueue, instead of its queue's.
pub mod job {
    use super::{DAY_MS, Range};

    /// Attempts before the job ends `failed`.
    pub const MAX_ATTEMPTS: Range = Range::new("max_attempts", 1, 1000);
    /// A run's hard limit.
    pub const TIMEOUT_MS: Range = Range::new("timeout_ms", 1000, 7 * DAY_MS);
    /// A run's soft limit (below the hard one).
    pub const SOFT_TIMEOUT_MS: Range = Range::new("soft_timeout_ms", 1000, 7 * DAY_MS);
    /// The first retry's wait.
    pub const BACKOFF_INITIAL_MS: Range = Range::new("backoff_initial_ms", 0, 30 * DAY_MS);
    /// The longest retry wait (at least backoff_initial_ms).
    pub const BACKOFF_MAX_MS: Range = Range::new("backoff_max_ms", 0, 30 * DAY_MS);
}

/// The admin page's reads (AdminService.ListLanes, LaneJobs, QueueHistory); 0 means the
/// default each RPC documents.
pub mod admin {
    use super::Range;

    /// Lanes ListLanes returns (0: 20).
    pub const LANES_LIMIT: Range = Range::new("limit", 0, 500);
    /// Finished jobs LaneJobs adds after the unfinished ones (0: 20).
    pub const LANE_FINISHED: Range = Range::new("finished_limit", 0, 200);
    /// Minutes of QueueHistory (0: 60; a day at most).
    pub const HISTORY_MINUTES: Range = Range::new("minutes", 0, 1440);
}

/// A refused input: the field at fault and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The field, as the API names it (`lane`, `job_timeout_ms`, `jobs[3].queue`…).
    pub field: String,
    /// What was wrong and what is allowed.
    pub message: String,
}

impl Invalid {
    /// A refusal of `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Invalid {}

/// An inclusive range of integers a field may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The field's name in the API.
    pub field: &'static str,
    /// Smallest allowed value.
    pub min: i64,
    /// Largest allowed value.
    pub max: i64,
}

impl Range {
    /// A range for `field`.
    pub const fn new(field: &'static str, min: i64, max: i64) -> Self {
        Range { field, min, max }
    }

    /// `value`, if it is within the range; else a refusal naming the bound it crosses.
    pub fn check(&self, value: i64) -> Result<i64, Invalid> {
        if value < self.min {
            Err(Invalid::new(
                self.field,
                format!("{} must be ≥ {} (got {value})", self.field, self.min),
            ))
        } else if value > self.max {
            Err(Invalid::new(
                self.field,
                format!("{} must be ≤ {} (got {value})", self.field, self.max),
            ))
        } else {
            Ok(value)
        }
    }

    /// As [`Range::check`], for an `i32` field (every `i32` range fits in `i32`).
    pub fn check_i32(&self, value: i64) -> Result<i32, Invalid> {
        self.check(value)
            .map(|v| i32::try_from(v).unwrap_or(if v < 0 { i32::MIN } else { i32::MAX }))
    }
}

/// Checks a queue name: 1-128 bytes of `[A-Za-z0-9_.:-]`.
pub fn queue_name(field: &str, name: &str) -> Result<(), Invalid> {
    if name.is_empty() {
        return Err(Invalid::new(field, format!("{field} is empty")));
    }
    if name.len() > MAX_QUEUE_NAME {
        return Err(Invalid::new(
            field,
            format!(
                "{field} is {} bytes; the limit is {MAX_QUEUE_NAME}",
                name.len()
            ),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        return Err(Invalid::new(
            field,
            format!("{field} {name:?} contains {c:?}; allowed are letters, digits and _ . : -"),
        ));
    }
    Ok(())
}

/// Checks an optional key (lane, idempotency key): empty means none, else 1-256 bytes
/// without NUL (which PostgreSQL text cannot hold).
pub fn key<'a>(field: &str, key: &'a str) -> Result<Option<&'a str>, Invalid> {
    if key.is_empty() {
        return Ok(None);
    }
    if key.len() > MAX_KEY {
        return Err(Invalid::new(
            field,
            format!("{field} is {} bytes; the limit is {MAX_KEY}", key.len()),
        ));
    }
    if key.contains('\0') {
        return Err(Invalid::new(
            field,
            format!("{field} contains a NUL character"),
        ));
    }
    Ok(Some(key))
}

/// Checks JSON text within `limit` bytes: valid JSON, and no `\u0000` (PostgreSQL text
/// cannot hold it). Empty text is JSON `null` where `empty_ok`. The text is kept as it is.
pub fn json(field: &str, text: &str, limit: usize, empty_ok: bool) -> Result<(), Invalid> {
    if text.len() > limit {
        return Err(Invalid::new(
            field,
            format!("{field} is {} bytes; the limit is {limit}", text.len()),
        ));
    }
    if text.trim().is_empty() {
        return if empty_ok {
            Ok(())
        } else {
            Err(Invalid::new(
                field,
                format!("{field} is empty; send JSON text"),
            ))
        };
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| Invalid::new(field, format!("{field} is not valid JSON: {e}")))?;
    if text.contains("\\u0000") {
        return Err(Invalid::new(
            field,
            format!("{field} contains \\u0000, which is not storable"),
        ));
    }
    Ok(())
}

/// Checks an agent id (1-128 bytes) and its queues (1-32 valid names).
pub fn agent(agent_id: &str, queues: &[String]) -> Result<(), Invalid> {
    if agent_id.is_empty() || agent_id.len() > MAX_AGENT_ID || agent_id.contains('\0') {
        return Err(Invalid::new(
            "agent_id",
            format!(
                "agent_id must be 1-{MAX_AGENT_ID} bytes without NUL (got {} bytes)",
                agent_id.len()
            ),
        ));
    }
    if queues.is_empty() || queues.len() > MAX_AGENT_QUEUES {
        return Err(Invalid::new(
            "queues",
            format!(
                "an agent serves 1-{MAX_AGENT_QUEUES} queues (got {})",
                queues.len()
            ),
        ));
    }
    queues.iter().try_for_each(|q| queue_name("queues", q))
}

/// Checks an agent's request id: empty (none) or 1-64 printable ASCII bytes.
pub fn request_id(id: &str) -> Result<Option<&str>, Invalid> {
    if id.is_empty() {
        return Ok(None);
    }
    if id.len() > MAX_REQUEST_ID || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Invalid::new(
            "request_id",
            format!("request_id must be 1-{MAX_REQUEST_ID} printable ASCII bytes"),
        ));
    }
    Ok(Some(id))
}

/// Keeps the last `max` bytes of a message (the end of a stderr is what explains it).
pub fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.replace('\0', "");
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", text[start..].replace('\0', ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_name_the_field_and_the_bound() {
        let r = settings::JOB_TIMEOUT_MS;
        assert_eq!(r.check(1000), Ok(1000));
        let low = r.check(5).unwrap_err();
        assert_eq!(low.field, "job_timeout_ms");
        assert_eq!(low.message, "job_timeout_ms must be ≥ 1000 (got 5)");
        let high = r.check(i64::MAX).unwrap_err();
        assert!(
            high.message
                .starts_with("job_timeout_ms must be ≤ 604800000")
        );
        assert_eq!(PRIORITY.check_i32(-1000), Ok(-1000));
        assert!(PRIORITY.check_i32(1001).is_err());
    }

    #[test]
    fn queue_names_and_keys() {
        assert!(queue_name("queue", "invoice_import").is_ok());
        assert!(queue_name("queue", "").is_err());
        assert_eq!(queue_name("queue", "a b").unwrap_err().field, "queue");
        assert!(queue_name("queue", &"q".repeat(129)).is_err());
        assert_eq!(key("lane", ""), Ok(None));
        assert_eq!(key("lane", "resto-42"), Ok(Some("resto-42")));
        assert!(key("lane", &"k".repeat(257)).is_err());
        assert!(key("lane", "a\0b").is_err());
    }

    #[test]
    fn json_is_checked_not_rewritten() {
        assert!(json("payload", "{\"a\":1}", 100, false).is_ok());
        assert!(json("payload", "[1e400, 1.7976931348623157e308]", 100, false).is_ok());
        assert!(json("payload", "not json", 100, false).is_err());
        assert!(json("payload", "", 100, false).is_err());
        assert!(json("result", "", 100, true).is_ok());
        assert!(json("payload", "[1,2,3]", 3, false).is_err());
        assert!(json("payload", "\"a\\u0000b\"", 100, false).is_err());
    }

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        assert_eq!(tail("abcdef", 3), "…def");
        assert_eq!(tail("ééé", 3), "…é");
        assert_eq!(tail("ok", 10), "ok");
        assert_eq!(tail("a\0b", 10), "ab");
    }
}
