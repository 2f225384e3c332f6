//! The OpenAPI document's frame (title, tags, the `X-API-Key` scheme) and the answers every
//! operation shares. Its paths and schemas are generated from the handlers' `#[utoipa::path]`
//! attributes as the router is assembled (`routes::router`), so the document cannot drift
//! from the routes served; [`complete`] then adds to each operation the errors that follow
//! from its shape (a key → 401/403, a body → 400/413/422, a coordinator call → 502/503/504),
//! so no handler can forget one.
//!
//! Must never: document a status a route cannot answer, or leave out one it can.

use crate::schemas;
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Required, Response, ResponseBuilder};

/// The document's frame.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Lanes gateway",
        description = "JSON API of the Lanes job queue: jobs with the same lane run one at a \
                       time in enqueue order; lanes run in parallel. Auth: X-API-Key with the \
                       role each operation states (admin may do everything). Every error \
                       answers {\"error\": {\"code\", \"message\", \"field\"?}}."
    ),
    modifiers(&ApiKeyScheme),
    tags(
        (name = "jobs", description = "Enqueue, status, result, list, cancel, retry"),
        (name = "queue", description = "Stats and wake-worker (seeds 000 and 001)"),
        (name = "admin", description = "Operator routes (admin key)"),
        (name = "ops", description = "Probes, metrics, this document and the admin page (no key)"),
    )
)]
pub struct ApiDoc;

/// Declares the `api_key` security scheme (header `X-API-Key`).
struct ApiKeyScheme;

impl Modify for ApiKeyScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// An error answer with the JSON error shape; `retry` adds the `Retry-After` header.
pub fn error_response(description: &str, retry: bool) -> Response {
    let mut b = ResponseBuilder::new().description(description).content(
        "application/json",
        Content::new(Some(Ref::from_schema_name("ErrorBody"))),
    );
    if retry {
        let seconds = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
            .minimum(Some(1));
        let mut h = Header::new(seconds);
        h.description = Some("Seconds to wait before trying again".into());
        b = b.header("Retry-After", h);
    }
    b.build()
}

fn add(op: &mut Operation, status: &str, description: &str, retry: bool) {
    op.responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| RefOr::T(error_response(description, retry)));
}

fn has_param(op: &Operation, place: ParameterIn, name: Option<&str>) -> bool {
    op.parameters.iter().flatten().any(|p| match p {
        RefOr::T(p) => p.parameter_in == place && name.is_none_or(|n| p.name == n),
        RefOr::Ref(_) => false,
    })
}

/// Adds the answers an operation's shape implies. An operation with a security requirement
/// is one of the API's: it needs a key and calls the coordinator.
fn complete_operation(op: &mut Operation) {
    let keyed = op.security.as_ref().is_some_and(|s| !s.is_empty());
    if let Some(RefOr::T(body)) = &op.request_body {
        let required = matches!(body.required, Some(Required::True));
        add(
            op,
            "400",
            if required {
                "The body is not JSON, or is empty (malformed_json)"
            } else {
                "The body is not JSON (malformed_json)"
            },
            false,
        );
        add(
            op,
            "413",
            "The body is over its limit (payload_too_large)",
            false,
        );
        add(
            op,
            "422",
            "A field is missing or invalid, named in `field` (invalid_field)",
            false,
        );
    }
    if has_param(op, ParameterIn::Query, None) || has_param(op, ParameterIn::Path, Some("queue")) {
        add(
            op,
            "422",
            "A parameter is invalid, named in `field` (invalid_field)",
            false,
        );
    }
    if keyed {
        add(
            op,
            "401",
            "No X-API-Key, or an unknown key (unauthorized)",
            false,
        );
        add(
            op,
            "403",
            "The key lacks the operation's role (forbidden)",
            false,
        );
        add(
            op,
            "502",
            "The coordinator refused the gateway's token (bad_gateway)",
            false,
        );
        add(
            op,
            "503",
            "The coordinator is unavailable (coordinator_unavailable); Retry-After set",
            true,
        );
        add(
            op,
            "504",
            "The coordinator did not answer in time (coordinator_timeout); Retry-After set",
            true,
        );
    }
}

/// Adds to every operation of `doc` the answers its shape implies (see the module header),
/// and to the enqueue body the rule its derive cannot state.
pub fn complete(doc: &mut utoipa::openapi::OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.insert(
        schemas::JSON_VALUE.to_owned(),
        RefOr::T(schemas::json_value()),
    );
    let enqueue_body = components.schemas.get_mut("EnqueueBody");
    if let Some(RefOr::T(Schema::Object(o))) = enqueue_body {
        o.extensions
            .get_or_insert_with(Default::default)
            .merge(schemas::run_at_or_delay());
    }
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            complete_operation(op);
        }
    }
}
