//! Webhook deliveries under /admin/api (admin key only): list them (by default the ones not
//! yet delivered) and replay one or every failed one. Each is one AdminService RPC.

use crate::auth::CanAdmin;
use crate::body::{JsonBody, JsonInput};
use crate::error::{ApiError, ErrorBody};
use crate::params::{self, Segment};
use crate::schemas;
use crate::state::AppState;
use crate::views;
use axum::Json;
use axum::extract::{Query, State, rejection::QueryRejection};
use lanes_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Filters and paging of GET /admin/api/deliveries.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// Comma-separated states: pending, delivering, delivered, failed, disabled (default:
    /// all but delivered).
    #[param(schema_with = schemas::delivery_states)]
    pub state: Option<String>,
    /// Queue name.
    #[param(schema_with = schemas::queue_filter)]
    pub queue: Option<String>,
    /// Event type, e.g. `job.failed`.
    #[param(schema_with = schemas::event_type)]
    pub event_type: Option<String>,
    /// Page size 1-500 (default 50).
    #[param(schema_with = schemas::page_size)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(schema_with = schemas::cursor)]
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
    let mut states = Vec::new();
    for name in q
        .state
        .iter()
        .filter(|s| !s.is_empty())
        .flat_map(|s| s.split(','))
    {
        let s = parse_state(name.trim_matches(' ')).ok_or_else(|| {
            ApiError::invalid("state", format!(
                "state {name:?} is unknown; use pending, delivering, delivered, failed or disabled"
            ))
        })?;
        states.push(s as i32);
    }
    Ok(pb::ListDeliveriesRequest {
        states,
        queue: params::queue(q.queue.as_deref())?,
        event_type: params::event_type(q.event_type.as_deref())?,
        page_size: params::page_size(q.limit.as_deref())?,
        page_token: params::cursor(q.cursor.as_deref())?,
    })
}

/// Webhook deliveries, newest first: by default the ones not delivered yet (pending,
/// delivering, failed, disabled).
#[utoipa::path(get, path = "/admin/api/deliveries", tag = "admin", security(("api_key" = [])),
    params(DeliveryParams),
    responses((status = 200, body = DeliveryList)))]
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
    security(("api_key" = [])), params(DeliveryId),
    responses((status = 200, body = Replayed), (status = 404, body = ErrorBody),
        (status = 409, description = "The delivery is being sent right now", body = ErrorBody)))]
pub async fn replay_one(
    _: CanAdmin,
    State(st): State<AppState>,
    Segment(id): Segment,
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

/// The `{id}` of a delivery.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the OpenAPI derive only: the handler takes a `Segment`.
pub struct DeliveryId {
    /// Delivery id (a positive integer).
    #[param(minimum = 1)]
    id: i64,
}

/// Which failed deliveries to replay; an empty body means all.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayAllBody {
    /// Only this queue (default: all).
    #[serde(default)]
    #[schema(schema_with = schemas::queue_filter_or_null)]
    pub queue: Option<String>,
}
impl JsonInput for ReplayAllBody {
    fn when_empty() -> Option<Self> {
        Some(Self::default())
    }
}

/// Sends every failed and disabled delivery (of `queue`, if given) again.
#[utoipa::path(post, path = "/admin/api/deliveries/replay", tag = "admin",
    request_body(content = Option<ReplayAllBody>, description = "Optional; an empty body replays every queue's"),
    security(("api_key" = [])),
    responses((status = 200, body = Replayed)))]
pub async fn replay_failed(
    _: CanAdmin,
    State(st): State<AppState>,
    JsonBody(b): JsonBody<ReplayAllBody>,
) -> Result<Json<Replayed>, ApiError> {
    let req = pb::ReplayDeliveriesRequest {
        all_failed: true,
        queue: params::queue(b.queue.as_deref())?,
        ..Default::default()
    };
    replay(&st, req).await
}
