//! Property tests of what hostile callers control: request bodies (any JSON, or any bytes),
//! lane and idempotency keys, queue settings and list parameters. Each property holds for
//! every input: no panic, an answer that is a request or a 4xx naming the field, and
//! acceptance exactly when the input is within the shared limits (`lanes_proto::limits`).
//! Bounded (a few hundred cases each) so the unit tests stay fast.

use crate::body;
use crate::error::ApiError;
use crate::params;
use crate::routes::admin::{SettingsPatch, settings_request};
use crate::routes::enqueue::BatchBody;
use crate::routes::queue::WakeBody;
use crate::validate::{self, EnqueueBody};
use lanes_proto::limits::{self, Range, settings as ranges};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const FIELDS: &[&str] = &[
    "queue",
    "lane",
    "payload",
    "priority",
    "run_at",
    "delay_seconds",
    "idempotency_key",
    "callback_url",
    "failure_callback_url",
];

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("high"),
            Just("low"),
            Just("2030-01-15T10:30:00Z"),
            Just("https://n8n.example/x"),
            Just("\u{0}")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ]
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An object key: mostly the enqueue body's own field names, sometimes anything.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(FIELDS).prop_map(str::to_owned),
        1 => "\\PC{0,8}",
    ]
}

/// An object that looks like an enqueue body: its fields with any values.
fn body_like() -> impl Strategy<Value = Value> {
    prop::collection::vec((key(), json_value()), 0..10)
        .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()))
}

/// A refusal is a 4xx in the JSON error shape; a 422 names its field.
fn well_formed_refusal(e: &ApiError) -> Result<(), TestCaseError> {
    prop_assert!(e.status.is_client_error(), "{} {}", e.status, e.message);
    prop_assert!(!e.message.is_empty());
    if e.status.as_u16() == 422 {
        prop_assert!(
            e.field
                .as_deref()
                .is_some_and(|f| !f.is_empty() && f != "."),
            "{e:?}"
        );
    }
    Ok(())
}

fn enqueue(bytes: &[u8]) -> Result<(), ApiError> {
    let b: EnqueueBody = body::parse(bytes)?;
    validate::enqueue_request(&b, "", limits::DEFAULT_MAX_PAYLOAD, "").map(|_| ())
}

fn with_key(field: &str, key: Value) -> Result<String, ApiError> {
    let text = json!({"queue": "q", "payload": {}, field: key}).to_string();
    let b: EnqueueBody = body::parse(text.as_bytes())?;
    let r = validate::enqueue_request(&b, "", limits::DEFAULT_MAX_PAYLOAD, "")?;
    Ok(if field == "lane" {
        r.lane
    } else {
        r.idempotency_key
    })
}

fn key_ok(k: &str) -> bool {
    !k.is_empty() && k.len() <= limits::MAX_KEY && !k.contains('\0')
}

proptest! {
    #![proptest_config(config())]

    /// Any JSON object shaped like an enqueue body: a request or a well-formed refusal.
    #[test]
    fn enqueue_bodies_never_fail_badly(v in body_like()) {
        if let Err(e) = enqueue(v.to_string().as_bytes()) {
            well_formed_refusal(&e)?;
        }
    }

    /// Any JSON value at all, and any bytes: never a panic, never a 5xx.
    #[test]
    fn any_json_or_bytes(v in json_value(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        for b in [v.to_string().into_bytes(), bytes] {
            if let Err(e) = enqueue(&b) {
                well_formed_refusal(&e)?;
            }
            if let Err(e) = body::parse::<BatchBody>(&b) {
                well_formed_refusal(&e)?;
            }
            if let Err(e) = body::parse::<WakeBody>(&b) {
                well_formed_refusal(&e)?;
            }
        }
    }

    /// A text key is accepted, unchanged, exactly when it is 1-256 bytes without NUL.
    #[test]
    fn text_keys_within_limits(k in "\\PC{0,80}|[a\\u{0}é😀]{0,300}", lane in any::<bool>()) {
        let field = if lane { "lane" } else { "idempotency_key" };
        match with_key(field, Value::String(k.clone())) {
            Ok(sent) => {
                prop_assert!(key_ok(&k), "{field} {k:?} accepted");
                prop_assert_eq!(sent, k);
            }
            Err(e) => {
                prop_assert!(!key_ok(&k), "{field} {k:?} refused: {}", e.message);
                prop_assert_eq!(e.field.as_deref(), Some(field));
            }
        }
    }

    /// A numeric key is its decimal text, written as an integer or an integral float.
    #[test]
    fn numeric_keys(n in any::<i64>(), float in any::<bool>()) {
        let v = if float && (n as f64) as i64 == n && n.unsigned_abs() < 1 << 53 {
            json!(n as f64)
        } else {
            json!(n)
        };
        prop_assert_eq!(with_key("lane", v).map_err(|e| TestCaseError::fail(e.message))?, n.to_string());
    }

    /// A settings patch is accepted exactly when every value is within its range; a
    /// refusal names a setting that is out of range.
    #[test]
    fn settings_within_ranges(values in prop::collection::vec(
        (0..SETTINGS.len(), prop_oneof![any::<i64>(), -10i64..2_000_000, Just(0i64)]), 0..6)
    ) {
        let mut body = Map::new();
        for (i, v) in &values {
            body.insert(SETTINGS[*i].field.to_owned(), json!(v));
        }
        let text = Value::Object(body.clone()).to_string();
        let patch: SettingsPatch = body::parse(text.as_bytes()).map_err(|e| TestCaseError::fail(e.message))?;
        let outside: Vec<&str> = SETTINGS
            .iter()
            .filter(|r| body.get(r.field).and_then(Value::as_i64).is_some_and(|v| r.check(v).is_err()))
            .map(|r| r.field)
            .collect();
        match settings_request("q", &patch) {
            Ok(_) => prop_assert!(outside.is_empty(), "{text} accepted"),
            Err(e) => {
                prop_assert_eq!(e.status.as_u16(), 422);
                prop_assert!(outside.contains(&e.field.as_deref().unwrap_or_default()), "{text}: {e:?}");
            }
        }
    }

    /// Cursors and page sizes: any text is a page or a 422 naming the parameter.
    #[test]
    fn cursors_and_limits(s in "\\PC{0,24}|-?[0-9]{1,22}") {
        match params::cursor(Some(&s)) {
            Ok(c) => prop_assert!(
                (s.is_empty() && c == 0) || s.parse::<i64>().is_ok_and(|n| n > 0 && n == c),
                "cursor {s:?} read as {c}"
            ),
            Err(e) => {
                prop_assert_eq!((e.status.as_u16(), e.field.as_deref()), (422, Some("cursor")));
                prop_assert!(!s.parse::<i64>().is_ok_and(|n| n > 0));
            }
        }
        match params::page_size(Some(&s)) {
            Ok(n) => prop_assert!(
                (s.is_empty() && n == params::DEFAULT_PAGE)
                    || s.parse::<i64>().is_ok_and(|v| v == i64::from(n) && (1..=limits::MAX_PAGE).contains(&v))
            ),
            Err(e) => prop_assert_eq!((e.status.as_u16(), e.field.as_deref()), (422, Some("limit"))),
        }
        for (f, r) in [("lane", params::lane(Some(&s))), ("queue", params::queue(Some(&s))),
                       ("event_type", params::event_type(Some(&s)))] {
            if let Err(e) = r {
                prop_assert_eq!((e.status.as_u16(), e.field.as_deref()), (422, Some(f)));
            }
        }
    }
}

const SETTINGS: [Range; 9] = [
    ranges::MAX_ATTEMPTS,
    ranges::BACKOFF_INITIAL_MS,
    ranges::BACKOFF_MAX_MS,
    ranges::LEASE_TTL_MS,
    ranges::JOB_TIMEOUT_MS,
    ranges::RETENTION_COMPLETED_S,
    ranges::RETENTION_FAILED_S,
    ranges::MAX_PENDING,
    ranges::MAX_RUNNING,
];

/// The limits the properties above rely on, checked once by example.
#[test]
fn examples_at_the_limits() {
    assert!(with_key("lane", json!("k".repeat(256))).is_ok());
    assert!(with_key("lane", json!("k".repeat(257))).is_err());
    assert!(with_key("lane", json!("é".repeat(129))).is_err());
    assert!(with_key("lane", json!("a\u{0}b")).is_err());
    assert!(params::lane(Some("\u{0}")).is_err());
    assert_eq!(params::cursor(Some("")).ok(), Some(0));
    assert!(params::cursor(Some("0")).is_err());
}
