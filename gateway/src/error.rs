//! The gateway's one error type, its JSON shape `{"error": {"code", "message", "field"?}}`,
//! and the single mapping from a coordinator `tonic::Status` to an HTTP status, so every
//! route reports the same case the same way.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::sync::atomic::{AtomicU32, Ordering};
use tonic::Code;
use utoipa::ToSchema;

/// `Retry-After` seconds for 429 and 503 (set once from the config at start-up).
static RETRY_AFTER_S: AtomicU32 = AtomicU32::new(5);

/// Sets the `Retry-After` seconds sent with 429 and 503.
pub fn set_retry_after(seconds: u32) {
    RETRY_AFTER_S.store(seconds.max(1), Ordering::Relaxed);
}

/// An error answered to an HTTP client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Short snake_case code, stable for clients to branch on.
    pub code: &'static str,
    /// What was wrong and what is allowed.
    pub message: String,
    /// The request field at fault, for 422.
    pub field: Option<String>,
    /// Adds `Retry-After` (429, 503).
    pub retry: bool,
}

/// The JSON body of every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code, message and (for 422) the field.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Short snake_case code: `malformed_json`, `invalid_field`, `payload_too_large`,
    /// `unauthorized`, `forbidden`, `not_found`, `conflict`, `not_completed`, `queue_full`,
    /// `coordinator_unavailable`, `coordinator_timeout`, `bad_gateway`, `internal`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The request field at fault (422 only), e.g. `lane` or `jobs[2].queue`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry: false,
        }
    }

    /// 400: the body is not JSON.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_json", message)
    }

    /// 422: `field` is missing or invalid.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message);
        e.field = Some(field.into());
        e
    }

    /// 413: the payload or body is over its limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 401: no known key.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the key lacks the role.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the job has no result yet.
    pub fn not_completed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "not_completed", message)
    }

    /// 503: the coordinator cannot serve (unreachable, or reporting NOT_SERVING).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "coordinator_unavailable",
            message,
        )
        .retry_later()
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    fn retry_later(mut self) -> Self {
        self.retry = true;
        self
    }
}

/// The one mapping of a coordinator status to an HTTP error.
impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        let msg = s.message().to_owned();
        // A call cut by the connection (the coordinator killed or restarting under it)
        // arrives as UNKNOWN "transport error": for the caller that is the coordinator being
        // unavailable, to retry, like a refused connection.
        let code = match s.code() {
            Code::Unknown | Code::Internal if lost_connection(&s) => Code::Unavailable,
            c => c,
        };
        let e = match code {
            Code::InvalidArgument | Code::OutOfRange => {
                let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", msg);
                // The coordinator names the field of checks only it can make (the callback
                // address policy); the gateway's own field names are the same.
                e.field = s
                    .metadata()
                    .get(lanes_proto::FIELD_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                e
            }
            Code::NotFound => Self::not_found(msg),
            Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => {
                Self::new(StatusCode::CONFLICT, "conflict", msg)
            }
            Code::ResourceExhausted => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", msg).retry_later()
            }
            Code::Unavailable => {
                Self::unavailable(format!("the coordinator is unavailable: {msg}"))
            }
            Code::DeadlineExceeded | Code::Cancelled => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "coordinator_timeout",
                format!("the coordinator did not answer in time: {msg}"),
            )
            .retry_later(),
            Code::Unauthenticated | Code::PermissionDenied => Self::new(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                format!(
                    "the coordinator refused the gateway's token (LANES_COORDINATOR_TOKEN): {msg}"
                ),
            ),
            _ => Self::internal(format!("coordinator error: {msg}")),
        };
        if e.status.is_server_error() {
            tracing::warn!(code = ?s.code(), message = %s.message(), "coordinator call failed");
        }
        e
    }
}

/// Whether the status came from the gRPC transport itself (tonic's transport error in its
/// source chain), not from an answer of the coordinator.
fn lost_connection(s: &tonic::Status) -> bool {
    let mut cause = std::error::Error::source(s);
    while let Some(e) = cause {
        if e.is::<tonic::transport::Error>() {
            return true;
        }
        cause = e.source();
    }
    false
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                field: self.field,
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.retry {
            let secs = RETRY_AFTER_S.load(Ordering::Relaxed);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        let map = |c: Code| ApiError::from(tonic::Status::new(c, "x"));
        assert_eq!(map(Code::NotFound).status, StatusCode::NOT_FOUND);
        assert_eq!(map(Code::FailedPrecondition).status, StatusCode::CONFLICT);
        let full = map(Code::ResourceExhausted);
        assert_eq!(
            (full.status, full.retry),
            (StatusCode::TOO_MANY_REQUESTS, true)
        );
        let down = map(Code::Unavailable);
        assert_eq!(
            (down.status, down.retry),
            (StatusCode::SERVICE_UNAVAILABLE, true)
        );
        assert_eq!(
            map(Code::InvalidArgument).status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let mut named = tonic::Status::invalid_argument("callback_url points to 127.0.0.1");
        named.metadata_mut().insert(
            lanes_proto::FIELD_METADATA,
            tonic::metadata::MetadataValue::from_static("jobs[1].callback_url"),
        );
        let e = ApiError::from(named);
        assert_eq!(e.field.as_deref(), Some("jobs[1].callback_url"));
    }

    /// A call cut by its connection (the coordinator killed under it: here a server that
    /// reads the HTTP/2 preface and hangs up) is a 503 to retry, never a 500. tonic reports
    /// it as UNKNOWN "transport error", or as UNAVAILABLE when the cut came during connect.
    #[tokio::test]
    async fn a_connection_cut_under_a_call_is_503() {
        use tokio::io::AsyncReadExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut preface = [0u8; 24];
                let _ = sock.read_exact(&mut preface).await;
            }
        });
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_lazy();
        let status = tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect_err("the server hangs up");
        let seen = format!("{:?} {}", status.code(), status.message());
        let e = ApiError::from(status);
        assert_eq!(
            (e.status, e.code, e.retry),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "coordinator_unavailable",
                true
            ),
            "tonic said {seen}"
        );
    }

    /// UNAVAILABLE (the coordinator's answer while its database restarts, or no connection)
    /// is a 503 in the JSON error shape with Retry-After, never a 500.
    #[tokio::test]
    async fn unavailable_is_503_with_retry_after() {
        let status = tonic::Status::unavailable("the database is restarting");
        let resp = ApiError::from(status).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(resp.headers().get(header::RETRY_AFTER).is_some());
        let body = axum::body::to_bytes(resp.into_body(), 4096)
            .await
            .expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(v["error"]["code"], "coordinator_unavailable");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("the database is restarting"))
        );
    }
}
