//! Webhook deliveries under /admin/api (admin key only): list them (by default the ones not
//! yet delivered) and replay one or every failed one. Each is one AdminService RPC.

use crate::auth::CanAdmin;
use crate::body::{JsonBody, JsonInput};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::validate;
use crate::views;
use axum::Json;
use axum::extract::{Path, Query, State, rejection::QueryRejection};
use lanes_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Largest page of GET /admin/api/deliveries.
const MAX_LIMIT: i32 = 500;

/// Filters and paging of GET /admin/api/deliveries.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// Comma-separated states: pending, delivering, delivered, failed, disabled (default:
    /// all but delivered).
    pub state: Option<String>,
    /// Queue name.
    pub queue: Option<String>,
    /// Event type, e.g. `job.failed`.
    pub event_type: Option<String>,
    /// Page size 1-500 (default 50).
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A webhook delivery (an outbox row), without its payload.
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    /// Delivery id; the `webhook-id` header it is sent with is `msg_<id>`.
    pub id: i64,
    /// `job.completed`, `job.failed`, `agent.awake`…
    pub event_type: String,
    /// The job it is about, if any.
    pub job_id: Option<i64>,
    /// Queue, if any.
    pub queue: Option<String>,
    /// Lane, if any.
    pub lane: Option<String>,
    /// The endpoint with secrets masked (user info and query values shown as `***`).
    pub url: String,
    /// The global event endpoint's name (`LANES_EVENT_ENDPOINTS`); absent for a job callback.
    pub endpoint: Option<String>,
    /// pending, delivering, delivered, failed or disabled (410 Gone).
    pub state: String,
    /// Tries ever started (replays included).
    pub attempts: i32,
    /// HTTP status of the last answer, if any.
    pub last_status: Option<i32>,
    /// Why the last try failed.
    pub last_error: Option<String>,
    /// When the event was written.
    pub created_at: Option<String>,
    /// When the next try is (or was) due.
    pub next_attempt_at: Option<String>,
    /// When the endpoint accepted it.
    pub delivered_at: Option<String>,
}

/// A page of deliveries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    /// The deliveries.
    pub deliveries: Vec<Delivery>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

fn state_name(s: i32) -> &'static str {
    match pb::DeliveryState::try_from(s) {
        Ok(pb::DeliveryState::Pending) => "pending",
        Ok(pb::DeliveryState::Delivering) => "delivering",
        Ok(pb::DeliveryState::Delivered) => "delivered",
        Ok(pb::DeliveryState::Failed) => "failed",
        Ok(pb::DeliveryState::Disabled) => "disabled",
        _ => "unknown",
    }
}

fn parse_state(name: &str) -> Option<pb::DeliveryState> {
    match name {
        "pending" => Some(pb::DeliveryState::Pending),
        "delivering" => Some(pb::DeliveryState::Delivering),
        "delivered" => Some(pb::DeliveryState::Delivered),
        "failed" => Some(pb::DeliveryState::Failed),
        "disabled" => Some(pb::DeliveryState::Disabled),
        _ => None,
    }
}

fn delivery(d: pb::Delivery) -> Delivery {
    let text = |s: String| (!s.is_empty()).then_some(s);
    let time =
        |t: &Option<prost_types::Timestamp>| t.as_ref().and_then(views::time).map(views::iso);
    Delivery {
        id: d.id,
        state: state_name(d.state).into(),
        job_id: (d.job_id > 0).then_some(d.job_id),
        last_status: (d.last_status > 0).then_some(d.last_status),
        created_at: time(&d.created_at),
        next_attempt_at: time(&d.next_attempt_at),
        delivered_at: time(&d.delivered_at),
        event_type: d.event_type,
        queue: text(d.queue),
        lane: text(d.lane),
        url: d.url,
        endpoint: text(d.endpoint),
        attempts: d.attempts,
        last_error: text(d.last_error),
    }
}

fn list_request(q: DeliveryParams) -> Result<pb::ListDeliveriesRequest, ApiError> {
    let given = |s: Option<String>| s.filter(|s| !s.is_empty());
    let mut states = Vec::new();
    for name in given(q.state).iter().flat_map(|s| s.split(',')) {
        let s = parse_state(name.trim()).ok_or_else(|| {
            ApiError::invalid("state", format!(
                "state {name:?} is unknown; use pending, delivering, delivered, failed or disabled"
            ))
        })?;
        states.push(s as i32);
    }
    let queue = given(q.queue).unwrap_or_default();
    if !queue.is_empty() {
        validate::queue_name(&queue).map_err(|m| ApiError::invalid("queue", m))?;
    }
    let event_type = given(q.event_type).unwrap_or_default();
    if event_type.len() > 128 {
        return Err(ApiError::invalid(
            "event_type",
            "event_type is over 128 bytes",
        ));
    }
    let page_size = match given(q.limit) {
        None => 50,
        Some(s) => s
            .parse::<i32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "limit",
                    format!("limit {s:?} must be an integer 1-{MAX_LIMIT}"),
                )
            })?,
    };
    let page_token = match given(q.cursor) {
        None => 0,
        Some(s) => s.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            ApiError::invalid(
                "cursor",
                "cursor must be a next_cursor value from a previous page",
            )
        })?,
    };
    Ok(pb::ListDeliveriesRequest {
        states,
        queue,
        event_type,
        page_size,
        page_token,
    })
}

/// Webhook deliveries, newest first: by default the ones not delivered yet (pending,
/// delivering, failed, disabled).
#[utoipa::path(get, path = "/admin/api/deliveries", tag = "admin", security(("api_key" = [])),
    params(DeliveryParams),
    responses((status = 200, body = DeliveryList), (status = 422, body = ErrorBody)))]
pub async fn list(
    _: CanAdmin,
    State(st): State<AppState>,
    q: Result<Query<DeliveryParams>, QueryRejection>,
) -> Result<Json<DeliveryList>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let req = list_request(q)?;
    let r = st
        .coord
        .admin
        .clone()
        .list_deliveries(req)
        .await?
        .into_inner();
    Ok(Json(DeliveryList {
        deliveries: r.deliveries.into_iter().map(delivery).collect(),
        next_cursor: (r.next_page_token > 0).then(|| r.next_page_token.to_string()),
    }))
}

/// How many deliveries were set back to pending.
#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    /// Always true.
    pub success: bool,
    /// Deliveries replayed.
    pub replayed: i64,
}

async fn replay(
    st: &AppState,
    req: pb::ReplayDeliveriesRequest,
) -> Result<Json<Replayed>, ApiError> {
    let replayed = st
        .coord
        .admin
        .clone()
        .replay_deliveries(req)
        .await?
        .into_inner()
        .replayed;
    Ok(Json(Replayed {
        success: true,
        replayed,
    }))
}

/// Sends one delivery again, now, with a fresh budget of tries and the same `webhook-id`.
/// Any state but one in flight (409); a delivered one is sent again.
#[utoipa::path(post, path = "/admin/api/deliveries/{id}/replay", tag = "admin",
    security(("api_key" = [])), params(("id" = i64, Path, description = "Delivery id")),
    responses((status = 200, body = Replayed), (status = 404, body = ErrorBody),
        (status = 409, description = "The delivery is being sent right now", body = ErrorBody)))]
pub async fn replay_one(
    _: CanAdmin,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Replayed>, ApiError> {
    let id = id.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        ApiError::not_found(format!(
            "delivery {id:?} does not exist (ids are positive integers)"
        ))
    })?;
    let req = pb::ReplayDeliveriesRequest {
        ids: vec![id],
        ..Default::default()
    };
    replay(&st, req).await
}

/// Which failed deliveries to replay; an empty body means all.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayAllBody {
    /// Only this queue (default: all).
    #[serde(default)]
    pub queue: Option<String>,
}
impl JsonInput for ReplayAllBody {
    fn when_empty() -> Option<Self> {
        Some(Self::default())
    }
}

/// Sends every failed and disabled delivery (of `queue`, if given) again.
#[utoipa::path(post, path = "/admin/api/deliveries/replay", tag = "admin",
    request_body = ReplayAllBody, security(("api_key" = [])),
    responses((status = 200, body = Replayed), (status = 422, body = ErrorBody)))]
pub async fn replay_failed(
    _: CanAdmin,
    State(st): State<AppState>,
    JsonBody(b): JsonBody<ReplayAllBody>,
) -> Result<Json<Replayed>, ApiError> {
    let queue = b.queue.unwrap_or_default();
    if !queue.is_empty() {
        validate::queue_name(&queue).map_err(|m| ApiError::invalid("queue", m))?;
    }
    let req = pb::ReplayDeliveriesRequest {
        all_failed: true,
        queue,
        ..Default::default()
    };
    replay(&st, req).await
}
