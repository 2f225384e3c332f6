//! The OpenAPI document's frame (title, tags, the `X-API-Key` scheme). Its paths and
//! schemas are generated from the handlers' `#[utoipa::path]` attributes as the router is
//! assembled (`routes::router`), so the document cannot drift from the routes served.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};

/// The document's frame.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Lanes gateway",
        description = "JSON API of the Lanes job queue: jobs with the same lane run one at a \
                       time in enqueue order; lanes run in parallel. Auth: X-API-Key with the \
                       role each operation states (admin may do everything)."
    ),
    modifiers(&ApiKeyScheme),
    tags(
        (name = "jobs", description = "Enqueue, status, result, list, cancel, retry"),
        (name = "queue", description = "Stats and wake-worker (seeds 000 and 001)"),
        (name = "admin", description = "Operator routes (admin key)"),
        (name = "ops", description = "Probes and metrics (no key)"),
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
