//! The JSON body extractor: reads at most the body's limit (413 past it), tells malformed
//! JSON (400) from a missing or ill-typed field (422 naming the field, e.g. `jobs[2].queue`).
//! Content-Type is not required: n8n and curl users forget it, and the body says enough.

use crate::error::ApiError;
use crate::state::{AppState, Limits};
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

/// A request body type: its size limit and what an empty body means.
pub trait JsonInput: DeserializeOwned {
    /// Largest accepted body, in bytes.
    fn limit(limits: &Limits) -> usize {
        limits.small_body
    }

    /// The value of an empty body, or `None` when a body is required.
    fn when_empty() -> Option<Self> {
        None
    }
}

/// A JSON body of type `T`, parsed with the gateway's error shapes.
pub struct JsonBody<T>(pub T);

impl<T: JsonInput> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = T::limit(&state.limits);
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| ApiError::too_large(format!("the request body is over {limit} bytes")))?;
        parse(&bytes).map(JsonBody)
    }
}

/// Parses `bytes` as `T`, mapping serde's errors to 400 (syntax) or 422 (a field). Where a
/// body is optional, JSON `null` means the same as no body.
pub fn parse<T: JsonInput>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return T::when_empty()
            .ok_or_else(|| ApiError::malformed("the request body is empty; send a JSON object"));
    }
    let trimmed = bytes.trim_ascii();
    if trimmed == b"null"
        && let Some(empty) = T::when_empty()
    {
        return Ok(empty);
    }
    // serde would take a struct from an array of its fields in order: `[1, 2]` is no body
    // this API documents.
    if !trimmed.starts_with(b"{") {
        return Err(ApiError::malformed(
            "the body must be a JSON object, e.g. {\"queue\": \"invoice_import\", ...}",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(field_error)?;
    de.end()
        .map_err(|e| ApiError::malformed(format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

fn field_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if !inner.is_data() {
        return ApiError::malformed(format!("the body is not valid JSON: {inner}"));
    }
    // serde names a missing field only in its message; the path is its parent's.
    let message = inner.to_string();
    let named = message
        .split_once("missing field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(name, _)| name.to_owned());
    let mut field = match (named, path.as_str()) {
        (Some(n), ".") => n,
        (Some(n), parent) => format!("{parent}.{n}"),
        (None, p) => p.to_owned(),
    };
    // A key that is the empty string (`{"": 1}`) is named as JSON writes it.
    if field.is_empty() || field.ends_with('.') {
        field.push_str("\"\"");
    }
    let text = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_owned();
    ApiError::invalid(field.clone(), format!("{field}: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        jobs: Vec<Inner>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        queue: String,
    }
    impl JsonInput for Outer {}

    fn err(body: &str) -> ApiError {
        parse::<Outer>(body.as_bytes()).expect_err("must fail")
    }

    #[test]
    fn classifies_errors() {
        assert_eq!(err("{").status.as_u16(), 400);
        assert_eq!(err("").status.as_u16(), 400);
        assert_eq!(err(r#"{"jobs":[]} x"#).status.as_u16(), 400);
        assert_eq!(err(r#"[[{"queue":"a"}]]"#).status.as_u16(), 400);
        assert_eq!(err("null").status.as_u16(), 400);
        assert_eq!(err("7").status.as_u16(), 400);
        let e = err(r#"{"jobs":[{"queue":"a"},{}]}"#);
        assert_eq!(
            (e.status.as_u16(), e.field.as_deref()),
            (422, Some("jobs[1].queue"))
        );
        let e = err(r#"{"jobs":[{"queue":7}]}"#);
        assert_eq!(e.field.as_deref(), Some("jobs[0].queue"));
        let e = err(r#"{"jobs":[],"paylod":1}"#);
        assert_eq!(e.field.as_deref(), Some("paylod"));
        let e = err(r#"{"jobs":[],"":1}"#);
        assert_eq!(e.field.as_deref(), Some("\"\""));
        let e = err(r#"{"jobs":[{"queue":"a","":1}]}"#);
        assert_eq!(e.field.as_deref(), Some("jobs[0].\"\""));
    }
}
