//! GET /admin/queue: the live admin page. It is static HTML and JavaScript holding no data:
//! it asks for the admin key (kept in sessionStorage) and calls the JSON API with it, so
//! the page itself needs no auth and shows nothing without a valid key.

use axum::http::header;
use axum::response::IntoResponse;
use std::sync::LazyLock;

/// The page (plain HTML + vanilla JS, no build step).
const HTML: &str = include_str!("admin_page.html");
/// Its second script: queues, charts, lanes and schedules panels.
const OPS_JS: &str = include_str!("admin_page_ops.js");

/// The page with its second script inlined where the marker stands (the CSP allows inline
/// scripts only, so the page stays one response).
static PAGE: LazyLock<String> = LazyLock::new(|| {
    HTML.replace(
        "<!--ADMIN-PAGE-OPS-->",
        &format!("<script>\n{OPS_JS}</script>"),
    )
});

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
        PAGE.as_str(),
    )
}
