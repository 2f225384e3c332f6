//! `lanes.v1.AdminService`: queue settings, pause/resume, agents, unblock, purge, the
//! webhook deliveries (list, replay); the admin page's lanes, history and bulk actions are
//! in `admin_lanes.rs`.

use super::admin_lanes::{self, BulkAction};
use super::{Ctx, convert};
use crate::db::agents;
use crate::db::outbox::{self, Filter};
use crate::db::queues::{self, FailurePolicy, SettingsPatch};
use crate::db::transitions::{purge, unblock};
use crate::error::Error;
use crate::validate;
use lanes_proto::v1 as pb;
use lanes_proto::v1::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

/// The operator service.
pub struct Admin {
    ctx: Ctx,
}

impl Admin {
    /// Builds the service.
    pub fn new(ctx: Ctx) -> Self {
        Admin { ctx }
    }

    async fn patch(
        &self,
        queue: &str,
        p: SettingsPatch,
    ) -> Result<Response<pb::QueueSettings>, Status> {
        validate::queue_name(queue)?;
        let s = queues::update(&self.ctx.pool, queue, &p).await?;
        Ok(Response::new(convert::settings(s)))
    }
}

fn policy(p: i32) -> Result<Option<FailurePolicy>, Error> {
    match pb::FailurePolicy::try_from(p) {
        Ok(pb::FailurePolicy::Unspecified) => Ok(None),
        Ok(pb::FailurePolicy::Continue) => Ok(Some(FailurePolicy::Continue)),
        Ok(pb::FailurePolicy::Block) => Ok(Some(FailurePolicy::Block)),
        Err(_) => Err(Error::Invalid(format!("unknown failure_policy {p}"))),
    }
}

/// The rate limit of a settings request: both given (0 clears it), or neither.
#[allow(clippy::type_complexity)]
fn rate(limit: Option<i32>, interval_ms: Option<i64>) -> Result<Option<Option<(i32, i64)>>, Error> {
    match (limit, interval_ms) {
        (None, None) => Ok(None),
        (Some(0), _) | (_, Some(0)) => Ok(Some(None)),
        (Some(n), Some(ms)) => Ok(Some(Some((n, ms)))),
        _ => Err(lanes_proto::limits::Invalid::new(
            "rate_limit",
            "rate_limit and rate_interval_ms go together: give both (0 clears the limit)",
        )
        .into()),
    }
}

/// Largest page of ListDeliveries.
const MAX_DELIVERY_PAGE: i32 = 500;

/// The outbox filter of a ListDeliveries request, checked.
fn delivery_filter(r: pb::ListDeliveriesRequest) -> Result<Filter, Error> {
    let mut states = Vec::new();
    for s in r.states {
        let state = pb::DeliveryState::try_from(s)
            .ok()
            .and_then(convert::db_delivery_state)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown delivery state {s}; use PENDING, DELIVERING, DELIVERED, FAILED or DISABLED"
                ))
            })?;
        states.push(state.to_owned());
    }
    if !r.queue.is_empty() {
        validate::queue_name(&r.queue)?;
    }
    if r.event_type.len() > 128 {
        return Err(Error::Invalid(format!(
            "event_type is {} bytes; the limit is 128",
            r.event_type.len()
        )));
    }
    let limit = match r.page_size {
        0 => 50,
        n if (1..=MAX_DELIVERY_PAGE).contains(&n) => n,
        n => {
            return Err(Error::Invalid(format!(
                "page_size is {n}; allowed 1-{MAX_DELIVERY_PAGE} (0 = 50)"
            )));
        }
    };
    if r.page_token < 0 {
        return Err(Error::Invalid(
            "page_token must be a next_page_token from a previous page".into(),
        ));
    }
    Ok(Filter {
        states,
        queue: (!r.queue.is_empty()).then_some(r.queue),
        event_type: (!r.event_type.is_empty()).then_some(r.event_type),
        before_id: (r.page_token > 0).then_some(r.page_token),
        limit: i64::from(limit),
    })
}

/// Checks the ids of a replay: 1-1,000 positive ids (duplicates are harmless).
fn replay_ids(ids: &[i64]) -> Result<(), Error> {
    if ids.len() > outbox::MAX_REPLAY_IDS {
        return Err(Error::Invalid(format!(
            "{} ids; at most {} per replay",
            ids.len(),
            outbox::MAX_REPLAY_IDS
        )));
    }
    if let Some(bad) = ids.iter().find(|id| **id <= 0) {
        return Err(Error::Invalid(format!(
            "delivery id {bad} is not a positive integer"
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl AdminService for Admin {
    #[tracing::instrument(skip_all, fields(queue = %req.get_ref().queue))]
    async fn get_queue_settings(
        &self,
        req: Request<pb::GetQueueSettingsRequest>,
    ) -> Result<Response<pb::QueueSettings>, Status> {
        let q = &req.get_ref().queue;
        validate::queue_name(q)?;
        Ok(Response::new(convert::settings(
            queues::get(&self.ctx.pool, q).await?,
        )))
    }

    #[tracing::instrument(skip_all, fields(queue = %req.get_ref().queue))]
    async fn set_queue_settings(
        &self,
        req: Request<pb::SetQueueSettingsRequest>,
    ) -> Result<Response<pb::QueueSettings>, Status> {
        let r = req.into_inner();
        // 0 clears the optional limits, as documented on QueueSettings.
        let patch = SettingsPatch {
            max_attempts: r.max_attempts,
            backoff_initial_ms: r.backoff_initial_ms,
            backoff_max_ms: r.backoff_max_ms,
            lease_ttl_ms: r.lease_ttl_ms,
            job_timeout_ms: r.job_timeout_ms,
            retention_completed_s: r.retention_completed_s,
            retention_failed_s: r.retention_failed_s,
            max_pending: r.max_pending.map(|n| (n > 0).then_some(n)),
            max_running: r.max_running.map(|n| (n > 0).then_some(n)),
            paused: None,
            failure_policy: r.failure_policy.map(policy).transpose()?.flatten(),
            soft_timeout_ms: r.soft_timeout_ms.map(|n| (n > 0).then_some(n)),
            rate: rate(r.rate_limit, r.rate_interval_ms)?,
            idempotency_window_s: r.idempotency_window_s.map(|n| (n > 0).then_some(n)),
        };
        // Negative limits are refused here; every other range is checked with the merged
        // settings (queues::update).
        if let Some(n) = r.max_pending {
            lanes_proto::limits::settings::MAX_PENDING
                .check(n)
                .map_err(Error::from)?;
        }
        if let Some(n) = r.max_running {
            lanes_proto::limits::settings::MAX_RUNNING
                .check(n.into())
                .map_err(Error::from)?;
        }
        self.patch(&r.queue, patch).await
    }

    #[tracing::instrument(skip_all, fields(queue = %req.get_ref().queue))]
    async fn pause_queue(
        &self,
        req: Request<pb::PauseQueueRequest>,
    ) -> Result<Response<pb::QueueSettings>, Status> {
        self.patch(
            &req.get_ref().queue,
            SettingsPatch {
                paused: Some(true),
                ..Default::default()
            },
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(queue = %req.get_ref().queue))]
    async fn resume_queue(
        &self,
        req: Request<pb::ResumeQueueRequest>,
    ) -> Result<Response<pb::QueueSettings>, Status> {
        let queue = req.get_ref().queue.clone();
        let out = self
            .patch(
                &queue,
                SettingsPatch {
                    paused: Some(false),
                    ..Default::default()
                },
            )
            .await?;
        let ready = crate::db::stats::ready(&self.ctx.pool, Some(&queue)).await?;
        self.ctx.waker.request(Some(&queue), ready, "wake");
        Ok(out)
    }

    #[tracing::instrument(skip_all)]
    async fn list_queues(
        &self,
        _: Request<pb::ListQueuesRequest>,
    ) -> Result<Response<pb::ListQueuesResponse>, Status> {
        let qs = queues::list(&self.ctx.pool).await?;
        Ok(Response::new(pb::ListQueuesResponse {
            queues: qs.into_iter().map(convert::settings).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_agents(
        &self,
        _: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let rows = agents::list(&self.ctx.pool, self.ctx.waker.stale_ms).await?;
        let agents = rows
            .into_iter()
            .map(|a| pb::AgentInfo {
                state: if a.asleep { "asleep" } else { "awake" }.into(),
                // The stream id is `<replica>/<n>`: the replica's name, as in agent events
                // (transitions.agent_event).
                coordinator_id: a
                    .coordinator_id
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .into(),
                agent_id: a.agent_id,
                queues: a.queues,
                job_id: a.job_id.unwrap_or(0),
                connected_at: Some(convert::ts(a.connected_at)),
                last_seen_at: Some(convert::ts(a.last_seen_at)),
            })
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    #[tracing::instrument(skip_all, fields(queue = %req.get_ref().queue, lane = %req.get_ref().lane))]
    async fn unblock_lane(
        &self,
        req: Request<pb::UnblockLaneRequest>,
    ) -> Result<Response<pb::UnblockLaneResponse>, Status> {
        let r = req.into_inner();
        validate::queue_name(&r.queue)?;
        let lane = validate::optional_key("lane", &r.lane)?
            .ok_or_else(|| Error::Invalid("lane is empty".into()))?;
        let failed = unblock::unblock(&self.ctx.pool, &r.queue, &lane).await?;
        let failed_job_id = failed.ok_or_else(|| {
            Error::Precondition(format!("lane {lane} of queue {} is not blocked", r.queue))
        })?;
        self.ctx.waker.request(Some(&r.queue), 1, "wake");
        Ok(Response::new(pb::UnblockLaneResponse { failed_job_id }))
    }

    #[tracing::instrument(skip_all, fields(hours = req.get_ref().older_than_hours))]
    async fn purge_jobs(
        &self,
        req: Request<pb::PurgeJobsRequest>,
    ) -> Result<Response<pb::PurgeJobsResponse>, Status> {
        let r = req.into_inner();
        let hours = i32::try_from(r.older_than_hours)
            .ok()
            .filter(|h| (0..=24 * 3650).contains(h))
            .ok_or_else(|| Error::Invalid("older_than_hours must be 0-87600".into()))?;
        let queue = (!r.queue.is_empty()).then_some(r.queue.as_str());
        let deleted = purge::purge(&self.ctx.pool, queue, hours).await?;
        tracing::info!(deleted, "purged finished jobs");
        Ok(Response::new(pb::PurgeJobsResponse { deleted }))
    }
    #[tracing::instrument(skip_all, fields(queue = %req.get_ref().queue))]
    async fn list_deliveries(
        &self,
        req: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let f = delivery_filter(req.into_inner())?;
        let rows = outbox::list(&self.ctx.pool, &f).await?;
        let next_page_token = match rows.last() {
            Some(last) if rows.len() as i64 == f.limit => last.id,
            _ => 0,
        };
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: rows.into_iter().map(convert::delivery).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(ids = req.get_ref().ids.len(), all_failed = req.get_ref().all_failed))]
    async fn replay_deliveries(
        &self,
        req: Request<pb::ReplayDeliveriesRequest>,
    ) -> Result<Response<pb::ReplayDeliveriesResponse>, Status> {
        let r = req.into_inner();
        let replayed = match (r.ids.is_empty(), r.all_failed) {
            (false, false) => {
                if !r.queue.is_empty() {
                    return Err(Error::Invalid(
                        "queue filters all_failed only; ids name their deliveries".into(),
                    )
                    .into());
                }
                replay_ids(&r.ids)?;
                outbox::replay_ids(&self.ctx.pool, &r.ids).await?
            }
            (true, true) => {
                if !r.queue.is_empty() {
                    validate::queue_name(&r.queue)?;
                }
                let queue = (!r.queue.is_empty()).then_some(r.queue.as_str());
                outbox::replay_failed(&self.ctx.pool, queue).await?
            }
            (false, true) => {
                return Err(Error::Invalid("give ids or all_failed, not both".into()).into());
            }
            (true, false) => {
                return Err(Error::Invalid(
                    "nothing to replay: give ids, or all_failed = true".into(),
                )
                .into());
            }
        };
        tracing::info!(replayed, "deliveries replayed");
        Ok(Response::new(pb::ReplayDeliveriesResponse { replayed }))
    }

    #[tracing::instrument(skip_all, fields(queue = %req.get_ref().queue))]
    async fn list_lanes(
        &self,
        req: Request<pb::ListLanesRequest>,
    ) -> Result<Response<pb::ListLanesResponse>, Status> {
        admin_lanes::list_lanes(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(queue = %req.get_ref().queue, lane = %req.get_ref().lane))]
    async fn lane_jobs(
        &self,
        req: Request<pb::LaneJobsRequest>,
    ) -> Result<Response<pb::LaneJobsResponse>, Status> {
        admin_lanes::lane_jobs(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(queue = %req.get_ref().queue))]
    async fn queue_history(
        &self,
        req: Request<pb::QueueHistoryRequest>,
    ) -> Result<Response<pb::QueueHistoryResponse>, Status> {
        admin_lanes::queue_history(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(queue = %req.get_ref().queue))]
    async fn bulk_retry_failed(
        &self,
        req: Request<pb::BulkFailedRequest>,
    ) -> Result<Response<pb::BulkFailedResponse>, Status> {
        admin_lanes::bulk_failed(&self.ctx, req.into_inner(), BulkAction::Retry)
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(queue = %req.get_ref().queue))]
    async fn bulk_cancel_failed(
        &self,
        req: Request<pb::BulkFailedRequest>,
    ) -> Result<Response<pb::BulkFailedResponse>, Status> {
        admin_lanes::bulk_failed(&self.ctx, req.into_inner(), BulkAction::Cancel)
            .await
            .map(Response::new)
    }
}
