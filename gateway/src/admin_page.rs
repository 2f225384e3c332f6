//! GET /admin/queue: the live admin page. It is static HTML and JavaScript holding no data:
//! it asks for the admin key (kept in sessionStorage) and calls the JSON API with it, so
//! the page itself needs no auth and shows nothing without a valid key.

use axum::http::header;
use axum::response::IntoResponse;

/// The page (plain HTML + vanilla JS, no build step).
const PAGE: &str = include_str!("admin_page.html");

/// Serves the page.
#[utoipa::path(get, path = "/admin/queue", tag = "ops",
    responses((status = 200, description = "The admin page (HTML; it asks for an admin key)",
        content_type = "text/html")))]
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; frame-ancestors 'none'",
            ),
        ],
        PAGE,
    )
}
