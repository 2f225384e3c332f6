//! Recurring schedules under /admin/api/schedules (admin key only): list, create, read,
//! change (partial: absent fields keep their value) and delete. Each is one
//! ScheduleService RPC; the coordinator checks the cron expression and the time zone and
//! names the field it refuses, which the 422 passes on.

use crate::auth::CanAdmin;
use crate::body::{JsonBody, JsonInput};
use crate::error::{ApiError, ErrorBody};
use crate::params::Segment;
use crate::schemas;
use crate::state::{AppState, Limits};
use crate::validate;
use crate::views;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use lanes_proto::limits::{self, Invalid};
use lanes_proto::v1 as pb;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use utoipa::openapi::schema::{Object, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::{IntoParams, ToSchema};

/// Longest schedule name.
pub const MAX_NAME: usize = 128;
/// The characters of a schedule name.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9_.-]{1,128}$";

/// The `{name}` of the schedule routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the OpenAPI derive only: the handlers take a `Segment`.
pub struct NamePath {
    /// Schedule name.
    #[param(schema_with = name_schema)]
    name: String,
}

fn text() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn name_schema() -> Object {
    text()
        .min_length(Some(1))
        .max_length(Some(MAX_NAME))
        .pattern(Some(NAME_PATTERN))
        .description(Some(format!(
            "Schedule name: 1-{MAX_NAME} letters, digits and `_ . -`."
        )))
        .examples([json!("daily-report")])
        .build()
}

fn cron_schema() -> Object {
    text()
        .min_length(Some(1))
        .max_length(Some(256))
        .description(Some(
            "Cron expression: 5 fields (minute hour day-of-month month day-of-week) or 6 with \
             seconds first; ranges, steps, lists, names (MON, JAN), L, W and # are accepted.",
        ))
        .examples([json!("0 0 8 * * *")])
        .build()
}

fn timezone_schema() -> Object {
    text()
        .max_length(Some(64))
        .description(Some(
            "IANA time zone the cron is read in (daylight saving applies); default UTC.",
        ))
        .examples([json!("Europe/Paris")])
        .build()
}

/// `o`, or null (an optional field: null means the same as absent).
fn or_null(mut o: Object) -> Object {
    if let SchemaType::Type(t) = o.schema_type {
        o.schema_type = SchemaType::Array(vec![t, Type::Null]);
    }
    o
}

fn lane_schema() -> Object {
    let mut o = or_null(schemas::lane_text());
    o.description = Some("Lane of the jobs (null or absent: none).".into());
    o
}

fn cron_or_null() -> Object {
    or_null(cron_schema())
}

fn timezone_or_null() -> Object {
    or_null(timezone_schema())
}

fn queue_or_null() -> Object {
    or_null(schemas::queue())
}

fn priority_or_null() -> Object {
    or_null(priority_schema())
}

fn missed_or_null() -> Object {
    let mut o = or_null(missed_schema());
    if let Some(values) = o.enum_values.as_mut() {
        values.push(serde_json::Value::Null);
    }
    o
}

fn priority_schema() -> Object {
    schemas::range(
        limits::PRIORITY,
        &format!(
            "Priority of the jobs, {}..{} (default 0), higher first.",
            limits::PRIORITY.min,
            limits::PRIORITY.max
        ),
    )
}

fn missed_schema() -> Object {
    text()
        .enum_values(Some(["skip", "run_once"]))
        .description(Some(
            "Ticks missed while every coordinator was down: `skip` them (default), or \
             `run_once`: enqueue one job for them on startup.",
        ))
        .build()
}

fn payload_schema() -> Schema {
    schemas::payload()
}

/// A schedule: a cron in a time zone, and the job each tick enqueues.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    /// Unique name.
    #[schema(schema_with = name_schema)]
    pub name: String,
    /// Cron expression (5 fields, or 6 with seconds first).
    pub cron: String,
    /// IANA time zone the cron is read in.
    pub timezone: String,
    /// Queue of the jobs each tick enqueues.
    pub queue: String,
    /// Lane of those jobs, or null.
    pub lane: Option<String>,
    /// Payload of those jobs, as given.
    #[schema(schema_with = schemas::any_value)]
    pub payload: Box<RawValue>,
    /// Priority of those jobs.
    pub priority: i32,
    /// `skip` or `run_once`: what ticks missed while every coordinator was down do.
    pub missed: String,
    /// False: paused.
    pub enabled: bool,
    /// The next 5 fire times, RFC 3339 with the offset of the schedule's time zone (empty
    /// while disabled).
    pub next_fires: Vec<String>,
    /// When it was created.
    pub created_at: Option<String>,
    /// When it was last changed.
    pub updated_at: Option<String>,
}

fn view(s: pb::Schedule) -> ScheduleView {
    let missed = match pb::MissedPolicy::try_from(s.missed) {
        Ok(pb::MissedPolicy::RunOnce) => "run_once",
        _ => "skip",
    };
    ScheduleView {
        lane: (!s.lane.is_empty()).then_some(s.lane),
        payload: views::raw_json(&s.payload),
        missed: missed.into(),
        created_at: s.created_at.as_ref().and_then(views::time).map(views::iso),
        updated_at: s.updated_at.as_ref().and_then(views::time).map(views::iso),
        name: s.name,
        cron: s.cron,
        timezone: s.timezone,
        queue: s.queue,
        priority: s.priority,
        enabled: s.enabled,
        next_fires: s.next_fires,
    }
}

/// Every schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    /// The schedules, by name.
    pub schedules: Vec<ScheduleView>,
}

/// A new schedule. Unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// Unique name.
    #[schema(schema_with = name_schema)]
    pub name: String,
    /// Cron expression.
    #[schema(schema_with = cron_schema)]
    pub cron: String,
    /// IANA time zone (default UTC).
    #[serde(default)]
    #[schema(schema_with = timezone_or_null)]
    pub timezone: Option<String>,
    /// Queue of the jobs each tick enqueues (created if new).
    #[schema(schema_with = schemas::queue)]
    pub queue: String,
    /// Lane of those jobs.
    #[serde(default)]
    #[schema(schema_with = lane_schema)]
    pub lane: Option<String>,
    /// Payload of those jobs (default `{}`).
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = payload_schema)]
    pub payload: Option<Option<Box<RawValue>>>,
    /// Priority of those jobs (default 0).
    #[serde(default, deserialize_with = "crate::numbers::optional")]
    #[schema(schema_with = priority_or_null)]
    pub priority: Option<i64>,
    /// `skip` (default) or `run_once`.
    #[serde(default)]
    #[schema(schema_with = missed_or_null)]
    pub missed: Option<String>,
    /// Default true.
    #[serde(default)]
    pub enabled: Option<bool>,
}

impl JsonInput for CreateBody {
    fn limit(limits: &Limits) -> usize {
        limits.enqueue_body
    }
}

/// Changes to a schedule: absent fields keep their value (`lane: null` removes the lane).
/// A new cron or time zone, or enabling again, starts the schedule afresh from now.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    /// New cron expression.
    #[serde(default)]
    #[schema(schema_with = cron_or_null)]
    pub cron: Option<String>,
    /// New IANA time zone.
    #[serde(default)]
    #[schema(schema_with = timezone_or_null)]
    pub timezone: Option<String>,
    /// New queue.
    #[serde(default)]
    #[schema(schema_with = queue_or_null)]
    pub queue: Option<String>,
    /// New lane; null removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = lane_schema)]
    pub lane: Option<Option<String>>,
    /// New payload.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = payload_schema)]
    pub payload: Option<Option<Box<RawValue>>>,
    /// New priority.
    #[serde(default, deserialize_with = "crate::numbers::optional")]
    #[schema(schema_with = priority_or_null)]
    pub priority: Option<i64>,
    /// `skip` or `run_once`.
    #[serde(default)]
    #[schema(schema_with = missed_or_null)]
    pub missed: Option<String>,
    /// Pause (false) or resume (true).
    #[serde(default)]
    pub enabled: Option<bool>,
}

impl JsonInput for UpdateBody {
    fn limit(limits: &Limits) -> usize {
        limits.enqueue_body
    }
}

/// A field that is present (even as null) is `Some`; absent ones take the default, `None`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn field_error(e: Invalid) -> ApiError {
    ApiError::invalid(e.field, e.message)
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if name.is_empty() || name.len() > MAX_NAME || !name.chars().all(ok) {
        return Err(ApiError::invalid(
            "name",
            format!(
                "name {:?} is not allowed; use 1-{MAX_NAME} letters, digits and _ . -",
                limits::tail(name, 140)
            ),
        ));
    }
    Ok(())
}

/// A `{name}` path segment: one that no schedule can have is simply not found.
fn path_name(name: String) -> Result<String, ApiError> {
    match check_name(&name) {
        Ok(()) => Ok(name),
        Err(_) => Err(ApiError::not_found(format!(
            "no schedule named {:?}",
            limits::tail(&name, 140)
        ))),
    }
}

/// Text fields the coordinator reads (cron, timezone): bounded, and storable (no NUL).
fn check_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() > max {
        return Err(ApiError::invalid(
            field,
            format!("{field} is {} bytes; the limit is {max}", value.len()),
        ));
    }
    if value.contains('\0') {
        return Err(ApiError::invalid(field, format!("{field} contains NUL")));
    }
    Ok(())
}

fn missed(m: &str) -> Result<pb::MissedPolicy, ApiError> {
    match m {
        "skip" => Ok(pb::MissedPolicy::Skip),
        "run_once" => Ok(pb::MissedPolicy::RunOnce),
        other => Err(ApiError::invalid(
            "missed",
            format!(
                "missed {:?} is unknown; use skip or run_once",
                limits::tail(other, 64)
            ),
        )),
    }
}

fn lane(l: &str) -> Result<String, ApiError> {
    if l.is_empty() {
        return Err(ApiError::invalid(
            "lane",
            "lane is empty; omit it (or send null) for no lane",
        ));
    }
    limits::key("lane", l).map_err(field_error)?;
    Ok(l.to_owned())
}

fn priority(p: i64) -> Result<i32, ApiError> {
    limits::PRIORITY.check_i32(p).map_err(field_error)
}

/// The payload's text; a JSON null (given as such: `None`) is refused, as for a job.
fn payload(p: Option<&RawValue>, max: usize) -> Result<String, ApiError> {
    match p {
        Some(p) => validate::payload_text(p, max, ""),
        None => Err(ApiError::invalid(
            "payload",
            "payload is null; send a JSON value such as {}",
        )),
    }
}

/// Checks a create body and builds the request.
fn create_request(
    b: CreateBody,
    max_payload: usize,
) -> Result<pb::CreateScheduleRequest, ApiError> {
    check_name(&b.name)?;
    check_text("cron", &b.cron, 256)?;
    let timezone = b.timezone.unwrap_or_default();
    check_text("timezone", &timezone, 64)?;
    limits::queue_name("queue", &b.queue).map_err(field_error)?;
    Ok(pb::CreateScheduleRequest {
        lane: b.lane.as_deref().map(lane).transpose()?.unwrap_or_default(),
        payload: match &b.payload {
            Some(p) => payload(p.as_deref(), max_payload)?,
            None => "{}".into(),
        },
        priority: b.priority.map(priority).transpose()?.unwrap_or(0),
        missed: b
            .missed
            .as_deref()
            .map(missed)
            .transpose()?
            .unwrap_or(pb::MissedPolicy::Skip) as i32,
        enabled: b.enabled,
        name: b.name,
        cron: b.cron,
        timezone,
        queue: b.queue,
    })
}

/// Checks an update body and builds the request.
fn update_request(
    name: String,
    b: UpdateBody,
    max_payload: usize,
) -> Result<pb::UpdateScheduleRequest, ApiError> {
    check_name(&name)?;
    if let Some(c) = &b.cron {
        check_text("cron", c, 256)?;
    }
    if let Some(t) = &b.timezone {
        check_text("timezone", t, 64)?;
    }
    if let Some(q) = &b.queue {
        limits::queue_name("queue", q).map_err(field_error)?;
    }
    Ok(pb::UpdateScheduleRequest {
        name,
        // null removes the lane: the RPC's empty lane.
        lane: match &b.lane {
            None => None,
            Some(None) => Some(String::new()),
            Some(Some(l)) => Some(lane(l)?),
        },
        payload: b
            .payload
            .as_ref()
            .map(|p| payload(p.as_deref(), max_payload))
            .transpose()?,
        priority: b.priority.map(priority).transpose()?,
        missed: b
            .missed
            .as_deref()
            .map(missed)
            .transpose()?
            .map(|m| m as i32),
        enabled: b.enabled,
        cron: b.cron,
        timezone: b.timezone,
        queue: b.queue,
    })
}

/// Every schedule, by name.
#[utoipa::path(get, path = "/admin/api/schedules", tag = "admin", security(("api_key" = [])),
    responses((status = 200, body = ScheduleList)))]
pub async fn list(_: CanAdmin, State(st): State<AppState>) -> Result<Json<ScheduleList>, ApiError> {
    let r = st
        .coord
        .schedules
        .clone()
        .list_schedules(pb::ListSchedulesRequest {})
        .await?
        .into_inner();
    Ok(Json(ScheduleList {
        schedules: r.schedules.into_iter().map(view).collect(),
    }))
}

/// Creates a schedule; each tick of its cron (in its time zone) enqueues one job.
#[utoipa::path(post, path = "/admin/api/schedules", tag = "admin", request_body = CreateBody,
    security(("api_key" = [])),
    responses((status = 201, body = ScheduleView),
        (status = 409, description = "A schedule of that name exists", body = ErrorBody)))]
pub async fn create(
    _: CanAdmin,
    State(st): State<AppState>,
    JsonBody(b): JsonBody<CreateBody>,
) -> Result<(StatusCode, Json<ScheduleView>), ApiError> {
    let req = create_request(b, st.limits.max_payload)?;
    let s = st.coord.schedules.clone().create_schedule(req).await?;
    Ok((StatusCode::CREATED, Json(view(s.into_inner()))))
}

/// One schedule.
#[utoipa::path(get, path = "/admin/api/schedules/{name}", tag = "admin", security(("api_key" = [])),
    params(NamePath),
    responses((status = 200, body = ScheduleView),
        (status = 404, description = "No schedule of that name", body = ErrorBody)))]
pub async fn get(
    _: CanAdmin,
    State(st): State<AppState>,
    Segment(name): Segment,
) -> Result<Json<ScheduleView>, ApiError> {
    let name = path_name(name)?;
    let s = st
        .coord
        .schedules
        .clone()
        .get_schedule(pb::GetScheduleRequest { name })
        .await?;
    Ok(Json(view(s.into_inner())))
}

/// Changes a schedule: the fields given, the others keep their value.
#[utoipa::path(put, path = "/admin/api/schedules/{name}", tag = "admin", security(("api_key" = [])),
    params(NamePath), request_body = UpdateBody,
    responses((status = 200, body = ScheduleView),
        (status = 404, description = "No schedule of that name", body = ErrorBody)))]
pub async fn update(
    _: CanAdmin,
    State(st): State<AppState>,
    Segment(name): Segment,
    JsonBody(b): JsonBody<UpdateBody>,
) -> Result<Json<ScheduleView>, ApiError> {
    let req = update_request(path_name(name)?, b, st.limits.max_payload)?;
    let s = st.coord.schedules.clone().update_schedule(req).await?;
    Ok(Json(view(s.into_inner())))
}

/// What was deleted.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    /// Always true.
    pub success: bool,
    /// The schedule deleted.
    pub name: String,
}

/// Deletes a schedule and its tick history (the jobs it enqueued stay).
#[utoipa::path(delete, path = "/admin/api/schedules/{name}", tag = "admin", security(("api_key" = [])),
    params(NamePath),
    responses((status = 200, body = Deleted),
        (status = 404, description = "No schedule of that name", body = ErrorBody)))]
pub async fn delete(
    _: CanAdmin,
    State(st): State<AppState>,
    Segment(name): Segment,
) -> Result<Json<Deleted>, ApiError> {
    let name = path_name(name)?;
    st.coord
        .schedules
        .clone()
        .delete_schedule(pb::DeleteScheduleRequest { name: name.clone() })
        .await?;
    Ok(Json(Deleted {
        success: true,
        name,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(body: serde_json::Value) -> Result<pb::UpdateScheduleRequest, ApiError> {
        let b: UpdateBody =
            serde_json::from_value(body).map_err(|e| ApiError::malformed(e.to_string()))?;
        update_request("s".into(), b, 1024)
    }

    #[test]
    fn lane_null_removes_absent_keeps() {
        assert_eq!(update(json!({})).expect("ok").lane, None);
        assert_eq!(
            update(json!({"lane": null})).expect("ok").lane.as_deref(),
            Some("")
        );
        assert_eq!(
            update(json!({"lane": "L"})).expect("ok").lane.as_deref(),
            Some("L")
        );
        let e = update(json!({"lane": ""})).expect_err("empty lane");
        assert_eq!(e.field.as_deref(), Some("lane"));
    }

    #[test]
    fn refusals_name_their_field() {
        let field = |b| update(b).expect_err("refused").field;
        assert_eq!(
            field(json!({"missed": "sometimes"})).as_deref(),
            Some("missed")
        );
        assert_eq!(
            field(json!({"priority": 5000})).as_deref(),
            Some("priority")
        );
        assert_eq!(field(json!({"queue": "a b"})).as_deref(), Some("queue"));
        assert_eq!(field(json!({"cron": "\u{0}"})).as_deref(), Some("cron"));
        assert_eq!(field(json!({"payload": null})).as_deref(), Some("payload"));
        assert!(check_name("daily.report-v2_x").is_ok());
        assert!(check_name("a/b").is_err());
    }
}
