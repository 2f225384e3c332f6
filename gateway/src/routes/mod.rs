//! The router: every route registered together with its OpenAPI operation (utoipa-axum), so
//! /openapi.json lists them all; a JSON 404 and 405, the metrics and trace middleware.
//! Handlers are thin: parse → one RPC → map; one file per area.

pub mod admin;
pub mod deliveries;
pub mod enqueue;
pub mod health;
pub mod jobs;
pub mod lanes;
pub mod queue;
pub mod schedules;

use crate::error::ApiError;
use crate::openapi::{self, ApiDoc};
use crate::state::AppState;
use crate::{admin_page, metrics, trace};
use axum::Router;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The gateway's whole HTTP surface.
pub fn router(state: AppState) -> anyhow::Result<Router> {
    let (api, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(enqueue::enqueue, jobs::list_jobs))
        .routes(routes!(enqueue::enqueue_batch))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::job_result))
        .routes(routes!(jobs::job_download))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(jobs::retry_job))
        .routes(routes!(jobs::get_task))
        .routes(routes!(queue::stats))
        .routes(routes!(queue::wake_worker))
        .routes(routes!(admin::clear))
        .routes(routes!(admin::pause))
        .routes(routes!(admin::resume))
        .routes(routes!(admin::get_settings, admin::put_settings))
        .routes(routes!(admin::unblock))
        .routes(routes!(admin::agents))
        .routes(routes!(lanes::list))
        .routes(routes!(lanes::lane_jobs))
        .routes(routes!(lanes::history))
        .routes(routes!(lanes::retry_failed))
        .routes(routes!(lanes::cancel_failed))
        .routes(routes!(deliveries::list))
        .routes(routes!(deliveries::replay_one))
        .routes(routes!(deliveries::replay_failed))
        .routes(routes!(schedules::list, schedules::create))
        .routes(routes!(
            schedules::get,
            schedules::update,
            schedules::delete
        ))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(health::openapi))
        .routes(routes!(admin_page::page))
        .split_for_parts();
    let mut doc = doc;
    openapi::complete(&mut doc);
    // Set once, here: a second router over the same state would serve the first document.
    let _ = state.openapi.set(doc.to_pretty_json()?);
    Ok(api
        .fallback(not_found)
        .layer(axum::middleware::from_fn(metrics::track))
        // Outermost, so the metrics middleware's log lines carry the request's trace id.
        .layer(axum::middleware::from_fn(trace::request))
        .with_state(state))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {}; see /openapi.json", uri.path()))
}
