//! Path and query parameters with the gateway's error shapes: a path segment that does not
//! decode is passed on as text that no id or queue name matches (so it answers the route's
//! own 404 or 422, in JSON, never axum's plain-text 400), and the checks every listing
//! shares — page size, cursor, queue, lane and event-type filters — each refusing with a
//! 422 naming the parameter.
//!
//! Must never: let a parameter reach the coordinator that it could not store or compare
//! (a NUL, an over-long key), or answer a bad one with anything but the JSON error shape.

use crate::error::ApiError;
use crate::validate;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use lanes_proto::limits;

/// Page size when none is given.
pub const DEFAULT_PAGE: i32 = 50;
/// Longest event type filter, in bytes.
pub const MAX_EVENT_TYPE: usize = 128;

/// One path segment, percent-decoded; a segment that is not UTF-8 becomes U+FFFD, which no
/// id or queue name matches.
pub struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Ok(Segment(
            match Path::<String>::from_request_parts(parts, state).await {
                Ok(Path(s)) => s,
                Err(_) => "\u{fffd}".to_owned(),
            },
        ))
    }
}

fn given(raw: Option<&str>) -> Option<&str> {
    raw.filter(|s| !s.is_empty())
}

/// `limit`: 1-500, 50 when absent or empty.
pub fn page_size(raw: Option<&str>) -> Result<i32, ApiError> {
    let Some(s) = given(raw) else {
        return Ok(DEFAULT_PAGE);
    };
    s.parse::<i64>()
        .ok()
        .filter(|n| (1..=limits::MAX_PAGE).contains(n))
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| {
            ApiError::invalid(
                "limit",
                format!("limit {s:?} must be an integer 1-{}", limits::MAX_PAGE),
            )
        })
}

/// `cursor`: a `next_cursor` of a previous page (a positive integer); 0 (the first page)
/// when absent or empty.
pub fn cursor(raw: Option<&str>) -> Result<i64, ApiError> {
    let Some(s) = given(raw) else {
        return Ok(0);
    };
    s.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::invalid(
            "cursor",
            "cursor must be the next_cursor of a previous page (a positive integer)",
        )
    })
}

/// `wait`: seconds to wait for the job to finish, 0-60; 0 (answer at once) when absent or
/// empty.
pub fn wait(raw: Option<&str>) -> Result<i32, ApiError> {
    let Some(s) = given(raw) else {
        return Ok(0);
    };
    let r = limits::WAIT_SECONDS;
    s.parse::<i64>()
        .ok()
        .and_then(|n| r.check_i32(n).ok())
        .ok_or_else(|| {
            ApiError::invalid(
                "wait",
                format!(
                    "wait {s:?} must be a whole number of seconds {}-{}",
                    r.min, r.max
                ),
            )
        })
}

/// `queue`: a queue name, or every queue when absent or empty.
pub fn queue(raw: Option<&str>) -> Result<String, ApiError> {
    let q = raw.unwrap_or_default();
    validate::queue_filter("queue", q)?;
    Ok(q.to_owned())
}

/// `lane`: a lane key (at most 256 bytes, no NUL), or every lane when absent or empty.
pub fn lane(raw: Option<&str>) -> Result<String, ApiError> {
    let lane = raw.unwrap_or_default();
    limits::key("lane", lane).map_err(|e| ApiError::invalid(e.field, e.message))?;
    Ok(lane.to_owned())
}

/// `event_type`: letters, digits and `_ . : -`, at most 128 bytes; every type when empty.
pub fn event_type(raw: Option<&str>) -> Result<String, ApiError> {
    let t = raw.unwrap_or_default();
    let ok = t.len() <= MAX_EVENT_TYPE
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
    if !ok {
        return Err(ApiError::invalid(
            "event_type",
            format!(
                "event_type must be at most {MAX_EVENT_TYPE} letters, digits and _ . : - \
                 (e.g. job.failed)"
            ),
        ));
    }
    Ok(t.to_owned())
}
