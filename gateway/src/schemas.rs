//! The OpenAPI schemas of inputs whose rules are the shared limits (`lanes_proto::limits`):
//! queue names, lane and idempotency keys, priorities, delays, payloads, queue settings and
//! list parameters. Written in code from the same constants the checks use, so the document
//! states what the gateway enforces — a schema-valid request is accepted and a
//! schema-invalid one refused — and cannot drift from it.
//!
//! Must never: restate a limit as a literal, or describe a rule the handlers do not apply.

use lanes_proto::limits::{self, Range};
use serde_json::json;
use utoipa::openapi::Ref;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, Object, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat,
    SchemaType, Type,
};

/// The characters of a queue name (its length is checked apart).
pub const QUEUE_PATTERN: &str = "^[A-Za-z0-9_.:-]+$";
/// A key holds no NUL (PostgreSQL text cannot).
pub const NO_NUL_PATTERN: &str = "^[^\\u0000]*$";

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn described(b: ObjectBuilder, text: &str) -> ObjectBuilder {
    b.description(Some(text))
}

/// A queue name: 1-128 bytes of letters, digits and `_ . : -`.
pub fn queue() -> Object {
    described(
        string()
            .min_length(Some(1))
            .max_length(Some(limits::MAX_QUEUE_NAME))
            .pattern(Some(QUEUE_PATTERN))
            .examples([json!("invoice_import")]),
        &format!(
            "Queue name: 1-{} letters, digits and `_ . : -`.",
            limits::MAX_QUEUE_NAME
        ),
    )
    .build()
}

/// An optional queue filter: a queue name, or empty for every queue.
pub fn queue_filter() -> Object {
    described(
        string()
            .max_length(Some(limits::MAX_QUEUE_NAME))
            .pattern(Some("^[A-Za-z0-9_.:-]*$")),
        "Only this queue (empty or absent: every queue).",
    )
    .build()
}

fn key_text(what: &str) -> Object {
    described(
        string()
            .min_length(Some(1))
            .max_length(Some(limits::MAX_KEY))
            .pattern(Some(NO_NUL_PATTERN)),
        &format!(
            "{what} as text: 1-{} bytes (UTF-8), no NUL character",
            limits::MAX_KEY
        ),
    )
    .build()
}

fn int64() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
}

fn key(what: &str, example: &str, description: &str) -> Schema {
    Schema::OneOf(
        OneOfBuilder::new()
            .item(key_text(what))
            .item(described(int64(), &format!("{what} as a number (its decimal text)")).build())
            .item(ObjectBuilder::new().schema_type(Type::Null).build())
            .description(Some(description))
            .examples([json!(example)])
            .build(),
    )
}

/// A lane key: a string or an integer, or null for a job without ordering.
pub fn lane() -> Schema {
    key(
        "lane",
        "resto-42",
        &format!(
            "Lane key (e.g. the establishment id): a string of 1-{} bytes without NUL, or an \
             integer. Jobs of one lane run one at a time in enqueue order. Omit (or null) for \
             a job without ordering; an empty string is refused.",
            limits::MAX_KEY
        ),
    )
}

/// An idempotency key: a string or an integer, or null.
pub fn idempotency_key() -> Schema {
    key(
        "idempotency_key",
        "F-001",
        &format!(
            "Deduplicates enqueues within the queue: a repeat returns the existing job (200). \
             A string of 1-{} bytes without NUL, or an integer.",
            limits::MAX_KEY
        ),
    )
}

/// A lane key given alone (unblock): a string of 1-256 bytes without NUL.
pub fn lane_text() -> Object {
    key_text("lane")
}

/// An integer within `r`.
pub fn range(r: Range, description: &str) -> Object {
    described(
        int64().minimum(Some(r.min)).maximum(Some(r.max)),
        description,
    )
    .build()
}

fn nullable(mut o: Object) -> Object {
    let t = match o.schema_type {
        SchemaType::Type(t) => vec![t, Type::Null],
        SchemaType::Array(mut ts) => {
            ts.push(Type::Null);
            ts
        }
        SchemaType::AnyValue => return o,
    };
    o.schema_type = SchemaType::Array(t);
    o
}

/// A job's priority: a name or an integer within [`limits::PRIORITY`].
pub fn priority() -> Schema {
    Schema::OneOf(
        OneOfBuilder::new()
            .item(
                string()
                    .enum_values(Some(["high", "normal", "low"]))
                    .description(Some("high = 10, normal = 0, low = -10"))
                    .build(),
            )
            .item(range(limits::PRIORITY, "higher runs first"))
            .item(ObjectBuilder::new().schema_type(Type::Null).build())
            .description(Some(format!(
                "`high`, `normal` (default), `low`, or an integer {}..{}.",
                limits::PRIORITY.min,
                limits::PRIORITY.max
            )))
            .build(),
    )
}

/// A job's delay in seconds, within [`limits::DELAY_SECONDS`].
pub fn delay_seconds() -> Object {
    nullable(range(
        limits::DELAY_SECONDS,
        &format!(
            "Run no earlier than this many seconds from now ({}-{}). With run_at, only 0.",
            limits::DELAY_SECONDS.min,
            limits::DELAY_SECONDS.max
        ),
    ))
}

/// A job's own attempts.
pub fn job_max_attempts() -> Object {
    nullable(range(
        limits::job::MAX_ATTEMPTS,
        "this job's attempts (default: its queue's)",
    ))
}

/// A job's own hard limit.
pub fn job_timeout_ms() -> Object {
    nullable(range(
        limits::job::TIMEOUT_MS,
        "this job's hard limit of a run, ms (default: its queue's)",
    ))
}

/// A job's own soft limit.
pub fn job_soft_timeout_ms() -> Object {
    nullable(range(
        limits::job::SOFT_TIMEOUT_MS,
        "this job's soft limit of a run, ms, below its hard limit (default: its queue's)",
    ))
}

/// A job's own first retry wait.
pub fn job_backoff_initial_ms() -> Object {
    nullable(range(
        limits::job::BACKOFF_INITIAL_MS,
        "this job's first retry wait, ms (default: its queue's)",
    ))
}

/// A job's own longest retry wait.
pub fn job_backoff_max_ms() -> Object {
    nullable(range(
        limits::job::BACKOFF_MAX_MS,
        "this job's longest retry wait, ms, at least backoff_initial_ms (default: its queue's)",
    ))
}

/// A job's earliest start, RFC 3339.
pub fn run_at() -> Object {
    nullable(
        described(
            string().format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
            "Run no earlier than this time (RFC 3339, e.g. 2030-01-15T10:30:00Z). With \
             delay_seconds, only if that is 0.",
        )
        .build(),
    )
}

/// The component name of [`json_value`].
pub const JSON_VALUE: &str = "JsonValue";

/// The JSON values a job may carry: any, but without NUL (`\u0000`) in a string or a key
/// (PostgreSQL text cannot hold it; `lanes_proto::limits::json` refuses it).
fn json_variants(with_null: bool, description: &str) -> Schema {
    let no_nul = || string().pattern(Some(NO_NUL_PATTERN));
    let mut b = OneOfBuilder::new()
        .item(no_nul().build())
        .item(
            ObjectBuilder::new().schema_type(SchemaType::Array(vec![Type::Number, Type::Boolean])),
        )
        .item(ArrayBuilder::new().items(Ref::from_schema_name(JSON_VALUE)))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property_names(Some(no_nul().build()))
                .additional_properties(Some(Ref::from_schema_name(JSON_VALUE))),
        );
    if with_null {
        b = b.item(ObjectBuilder::new().schema_type(Type::Null));
    }
    Schema::OneOf(b.description(Some(description)).build())
}

/// Any JSON value without NUL in its strings and keys (registered as [`JSON_VALUE`]).
pub fn json_value() -> Schema {
    json_variants(
        true,
        "Any JSON value without NUL (\\u0000) in a string or a key",
    )
}

/// A job's payload: a JSON value as [`json_value`], but not null.
pub fn payload() -> Schema {
    json_variants(
        false,
        "The job's input: any JSON value except null, without NUL (\\u0000) in a string or \
         a key, at most --max-payload-bytes; stored and answered as sent.",
    )
}

/// Any JSON value, null included (a job's result).
pub fn any_value() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .description(Some("Any JSON value"))
        .build()
}

/// `run_at` and a non-zero `delay_seconds` together are refused: the enqueue body's schema
/// says so with `not`, which neither utoipa's derive nor its builders offer, hence the
/// extension map (its keys are written as they are).
pub fn run_at_or_delay() -> Extensions {
    Extensions::from_iter([(
        "not",
        json!({
            "required": ["run_at", "delay_seconds"],
            "properties": {
                "run_at": {"type": "string"},
                "delay_seconds": {"type": "integer", "minimum": 1}
            }
        }),
    )])
}

/// A queue setting within `r` (absent: unchanged).
pub fn setting(r: Range) -> Object {
    nullable(range(r, &format!("{}: {}-{}", r.field, r.min, r.max)))
}

/// The `failure_policy` setting.
pub fn failure_policy() -> Object {
    nullable(
        string()
            .enum_values(Some(["continue", "block"]))
            .description(Some(
                "`continue` (the next job of a lane proceeds after a failure) or `block` (the \
                 lane stops until an operator acts)",
            ))
            .build(),
    )
}

fn callback(description: &str) -> Schema {
    Schema::OneOf(
        OneOfBuilder::new()
            .item(
                string()
                    .format(Some(SchemaFormat::Custom("uri".into())))
                    .max_length(Some(limits::MAX_URL))
                    .pattern(Some("^[Hh][Tt][Tt][Pp][Ss]?://"))
                    .build(),
            )
            .item(string().max_length(Some(0)).build())
            .item(ObjectBuilder::new().schema_type(Type::Null).build())
            .description(Some(description))
            .build(),
    )
}

/// The success callback URL.
pub fn callback_url() -> Schema {
    callback(
        "Called (POST, JSON) when the job completes: an http:// or https:// URL of at most \
         2048 bytes that reaches a public address, unless the coordinator's --callback-allow \
         lists it (loopback, private, link-local and cloud metadata addresses are refused). \
         Empty or null: none. Also accepted under the name `callback`.",
    )
}

/// The failure callback URL.
pub fn failure_callback_url() -> Schema {
    callback("Called when the job fails for good. The same rules as callback_url.")
}

/// The `status` filter of the job list (`running` is accepted for `processing`).
pub fn status_filter() -> Object {
    string()
        .enum_values(Some([
            "",
            "pending",
            "processing",
            "running",
            "completed",
            "failed",
            "cancelled",
        ]))
        .description(Some("Only jobs of this status (empty or absent: any)."))
        .build()
}

/// The `lane` filter of the job list: a lane key, or empty for every lane.
pub fn lane_filter() -> Object {
    described(
        string()
            .max_length(Some(limits::MAX_KEY))
            .pattern(Some(NO_NUL_PATTERN)),
        &format!(
            "Only this lane: at most {} bytes (UTF-8), no NUL (empty or absent: every lane).",
            limits::MAX_KEY
        ),
    )
    .build()
}

/// An integer query parameter, or empty (the same as absent).
pub fn int_or_empty(r: Range, description: &str) -> Schema {
    Schema::OneOf(
        OneOfBuilder::new()
            .item(range(r, description))
            .item(string().max_length(Some(0)).build())
            .description(Some(description))
            .build(),
    )
}

/// `limit` of a listing.
pub fn page_size() -> Schema {
    int_or_empty(
        Range::new("limit", 1, limits::MAX_PAGE),
        &format!(
            "Page size 1-{} (default {}; empty: the default).",
            limits::MAX_PAGE,
            crate::params::DEFAULT_PAGE
        ),
    )
}

/// `cursor` of a listing.
pub fn cursor() -> Schema {
    int_or_empty(
        Range::new("cursor", 1, i64::MAX),
        "`next_cursor` of the previous page (empty or absent: the first page).",
    )
}

/// The `state` filter of the delivery list: comma-separated states.
pub fn delivery_states() -> Object {
    let one = "(pending|delivering|delivered|failed|disabled)";
    described(
        string().pattern(Some(format!("^( *{one} *(, *{one} *)*)?$"))),
        "Comma-separated states: pending, delivering, delivered, failed, disabled (empty or \
         absent: every state but delivered).",
    )
    .build()
}

/// The `event_type` filter of the delivery list.
pub fn event_type() -> Object {
    described(
        string()
            .max_length(Some(crate::params::MAX_EVENT_TYPE))
            .pattern(Some("^[A-Za-z0-9_.:-]*$")),
        "Only this event type, e.g. job.failed (empty or absent: every type).",
    )
    .build()
}

/// An optional queue in a body: a queue name, empty or null for every queue.
pub fn queue_filter_or_null() -> Object {
    nullable(queue_filter())
}
