//! `lanes.v1.AgentService`: what agents call to lease, heartbeat, report and sleep.

use super::{Ctx, convert};
use crate::db::{agents, failure, lease};
use crate::error::Error;
use crate::validate;
use lanes_proto::v1 as pb;
use lanes_proto::v1::agent_service_server::AgentService;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// The agent-facing service.
pub struct Agents {
    ctx: Ctx,
}

impl Agents {
    /// Builds the service.
    pub fn new(ctx: Ctx) -> Self {
        Agents { ctx }
    }

    /// Leases one job. When nothing is ready the agent is marked asleep first and the lease
    /// tried once more: an enqueue that committed before the mark is seen by the second try,
    /// one that commits after it finds the agent asleep and wakes it. No lost wake-up.
    async fn lease_or_sleep(
        &self,
        who: &lease::Leaser<'_>,
    ) -> Result<Option<pb::LeasedJob>, Error> {
        if let Some(job) = lease::lease_one(&self.ctx.pool, who).await? {
            return Ok(Some(hand_out(job)));
        }
        agents::set_asleep(&self.ctx.pool, who.agent_id, true).await?;
        let job = lease::lease_one(&self.ctx.pool, who).await?;
        Ok(job.map(hand_out))
    }

    /// Records the agent as awake, since it just got a job. The statement matches no row
    /// when it already is, so it costs a probe, not a write. (No in-memory shortcut: after a
    /// failover another replica may have marked it asleep.)
    async fn mark_awake(&self, agent_id: &str) -> Result<(), Error> {
        agents::set_asleep(&self.ctx.pool, agent_id, false).await?;
        Ok(())
    }

    fn result_json(&self, text: &str) -> Result<serde_json::Value, Error> {
        validate::json("result", text, self.ctx.max_payload_bytes, true)
    }
}

/// A leased job as the agent gets it, noted for the metrics (its wait, its queue).
fn hand_out(job: lease::Leased) -> pb::LeasedJob {
    crate::metrics::leased(&job.job);
    convert::leased(job)
}

fn next_leaser<'a>(
    want: bool,
    agent_id: &'a str,
    queues: &'a [String],
) -> Result<Option<lease::Leaser<'a>>, Error> {
    if !want {
        return Ok(None);
    }
    validate::agent(agent_id, queues)?;
    Ok(Some(lease::Leaser { agent_id, queues }))
}

type WakeStreamOut = Pin<Box<dyn Stream<Item = Result<pb::WakeEvent, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for Agents {
    #[tracing::instrument(skip_all, fields(agent.id = %req.get_ref().agent_id))]
    async fn lease(
        &self,
        req: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseResponse>, Status> {
        let r = req.into_inner();
        validate::agent(&r.agent_id, &r.queues)?;
        let who = lease::Leaser {
            agent_id: &r.agent_id,
            queues: &r.queues,
        };
        let job = self.lease_or_sleep(&who).await?;
        if let Some(j) = &job {
            tracing::debug!(job.id = j.id, queue = %j.queue, lane = %j.lane, token = j.lease_token, "leased");
            self.mark_awake(&r.agent_id).await?;
        }
        Ok(Response::new(pb::LeaseResponse { job }))
    }

    #[tracing::instrument(skip_all, fields(job.id = req.get_ref().job_id))]
    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = req.into_inner();
        if let Some(p) = r.progress_percent.filter(|p| !(0..=100).contains(p)) {
            return Err(Error::Invalid(format!("progress_percent is {p}; allowed 0-100")).into());
        }
        let message = r
            .progress_message
            .as_deref()
            .map(|m| validate::tail(m, validate::MAX_PROGRESS_MESSAGE));
        let (cancel_requested, expires) = lease::heartbeat(
            &self.ctx.pool,
            r.job_id,
            r.lease_token,
            r.progress_percent,
            message.as_deref(),
        )
        .await?;
        Ok(Response::new(pb::HeartbeatResponse {
            cancel_requested,
            lease_expires_at: Some(convert::ts(expires)),
        }))
    }

    #[tracing::instrument(skip_all, fields(job.id = req.get_ref().job_id))]
    async fn complete(
        &self,
        req: Request<pb::CompleteRequest>,
    ) -> Result<Response<pb::CompleteResponse>, Status> {
        let r = req.into_inner();
        let result = self.result_json(&r.result)?;
        let next = next_leaser(r.lease_next, &r.agent_id, &r.queues)?;
        let (id, token) = (r.job_id, r.lease_token);
        let leased = match &self.ctx.completer {
            Some(batcher) => batcher.complete(id, token, result, next.as_ref()).await?,
            None => lease::complete(&self.ctx.pool, id, token, result, next.as_ref()).await?,
        };
        crate::metrics::completed(&self.ctx.pool, id).await;
        Ok(Response::new(pb::CompleteResponse {
            next: leased.map(hand_out),
        }))
    }

    #[tracing::instrument(skip_all, fields(job.id = req.get_ref().job_id))]
    async fn fail(
        &self,
        req: Request<pb::FailRequest>,
    ) -> Result<Response<pb::FailResponse>, Status> {
        let r = req.into_inner();
        if r.retry_after_ms.is_some_and(|ms| ms < 0) {
            return Err(Error::Invalid("retry_after_ms must not be negative".into()).into());
        }
        let next = next_leaser(r.lease_next, &r.agent_id, &r.queues)?;
        let failure = failure::Failure {
            error: validate::tail(&r.error, validate::MAX_ERROR),
            retryable: r.retryable,
            retry_after_ms: r.retry_after_ms,
            release: r.release,
            cancelled: r.cancelled,
            only_if_expired: false,
        };
        let (state, leased) = failure::fail(
            &self.ctx.pool,
            r.job_id,
            r.lease_token,
            &failure,
            next.as_ref(),
        )
        .await?;
        crate::metrics::attempt_ended(&self.ctx.pool, r.job_id, state, r.release).await;
        Ok(Response::new(pb::FailResponse {
            state: convert::state(state) as i32,
            next: leased.map(hand_out),
        }))
    }

    type WakeStreamStream = WakeStreamOut;

    #[tracing::instrument(skip_all, fields(agent.id = %req.get_ref().agent_id))]
    async fn wake_stream(
        &self,
        req: Request<pb::WakeStreamRequest>,
    ) -> Result<Response<WakeStreamOut>, Status> {
        let r = req.into_inner();
        validate::agent(&r.agent_id, &r.queues)?;
        let (tx, rx) = mpsc::channel(4);
        let stream_id = self.ctx.waker.subscribe(&r.agent_id, &r.queues, tx).await?;
        tracing::info!(agent.id = %r.agent_id, queues = ?r.queues, "agent connected");
        let guard = Unsubscribe {
            ctx: self.ctx.clone(),
            stream_id,
            agent_id: r.agent_id,
        };
        let stream = ReceiverStream::new(rx);
        // The guard lives as long as the stream: tonic drops the stream when the agent goes.
        let stream = async_stream_with_guard(stream, guard);
        Ok(Response::new(Box::pin(stream)))
    }
}

struct Unsubscribe {
    ctx: Ctx,
    stream_id: String,
    agent_id: String,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let waker = self.ctx.waker.clone();
        let stream_id = std::mem::take(&mut self.stream_id);
        tracing::info!(agent.id = %self.agent_id, "agent disconnected");
        // Detached on purpose: Drop cannot await, and a lost unregister is repaired by the
        // staleness sweep of the safety tick.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { waker.unsubscribe(&stream_id).await });
        }
    }
}

fn async_stream_with_guard<S>(inner: S, guard: Unsubscribe) -> impl Stream<Item = S::Item> + Send
where
    S: Stream + Send + Unpin,
{
    tokio_stream::StreamExt::map(inner, move |item| {
        let _keep = &guard;
        item
    })
}
