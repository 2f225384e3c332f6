//! `lanes.v1.AgentService`: what agents call to lease, heartbeat, report and sleep.

use super::{Ctx, convert};
use crate::db::agents;
use crate::db::transitions::complete::{self, Completed};
use crate::db::transitions::complete_and_lease::complete_and_lease;
use crate::db::transitions::fail::{self, AttemptEnd, Failure};
use crate::db::transitions::heartbeat;
use crate::db::transitions::lease::{self, Leased, Leaser};
use crate::error::{Error, retry_conflicts};
use crate::validate;
use lanes_proto::limits;
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
    async fn lease_or_sleep(&self, who: Leaser<'_>) -> Result<Option<pb::LeasedJob>, Error> {
        if let Some(job) = lease::lease(&self.ctx.pool, who).await? {
            return Ok(Some(hand_out(job)));
        }
        agents::set_asleep(&self.ctx.pool, who.agent_id, true).await?;
        Ok(lease::lease(&self.ctx.pool, who).await?.map(hand_out))
    }

    fn result_text(&self, text: &str) -> Result<String, Error> {
        validate::json("result", text, self.ctx.max_payload_bytes, true)
    }
}

/// A leased job as the agent gets it, noted for the metrics (its wait).
fn hand_out(job: Leased) -> pb::LeasedJob {
    crate::metrics::leased(&job);
    convert::leased(job)
}

/// The leaser of a request: its agent, queues and request id, checked.
fn leaser<'a>(
    agent_id: &'a str,
    queues: &'a [String],
    request_id: &'a str,
) -> Result<Leaser<'a>, Error> {
    limits::agent(agent_id, queues)?;
    Ok(Leaser {
        agent_id,
        queues,
        request_id: limits::request_id(request_id)?,
    })
}

/// How an attempt ended, from a FailRequest's flags: cancellation wins even over a release
/// (handed back, the job would be pending, and a pending job is cancelled at once).
fn attempt_end(r: &pb::FailRequest) -> AttemptEnd {
    if r.cancelled {
        AttemptEnd::Cancelled
    } else if r.release {
        AttemptEnd::Released
    } else if r.retryable {
        AttemptEnd::Retryable
    } else {
        AttemptEnd::Permanent
    }
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
        let who = leaser(&r.agent_id, &r.queues, &r.request_id)?;
        let job = self.lease_or_sleep(who).await?;
        if let Some(j) = &job {
            tracing::debug!(job.id = j.id, queue = %j.queue, lane = %j.lane, token = j.lease_token, "leased");
        }
        Ok(Response::new(pb::LeaseResponse { job }))
    }

    #[tracing::instrument(skip_all, fields(job.id = req.get_ref().job_id))]
    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = req.into_inner();
        let percent = r
            .progress_percent
            .map(|p| limits::PROGRESS_PERCENT.check_i32(p.into()))
            .transpose()
            .map_err(Error::from)?;
        let message = r
            .progress_message
            .as_deref()
            .map(|m| limits::tail(m, limits::MAX_PROGRESS_MESSAGE));
        let beat = heartbeat::heartbeat(
            &self.ctx.pool,
            r.job_id,
            r.lease_token,
            percent,
            message.as_deref(),
        )
        .await?;
        Ok(Response::new(pb::HeartbeatResponse {
            cancel_requested: beat.cancel_requested,
            lease_expires_at: Some(convert::ts(beat.expires_at)),
        }))
    }

    #[tracing::instrument(skip_all, fields(job.id = req.get_ref().job_id))]
    async fn complete(
        &self,
        req: Request<pb::CompleteRequest>,
    ) -> Result<Response<pb::CompleteResponse>, Status> {
        let r = req.into_inner();
        let result = self.result_text(&r.result)?;
        let (id, token) = (r.job_id, r.lease_token);
        let (done, next) = if r.lease_next {
            let who = leaser(&r.agent_id, &r.queues, &r.request_id)?;
            // A transaction PostgreSQL aborted as a deadlock victim changed nothing: again.
            retry_conflicts(|| complete_and_lease(&self.ctx.pool, id, token, &result, who)).await?
        } else {
            (
                complete::complete(&self.ctx.pool, id, token, &result).await?,
                None,
            )
        };
        if let Some(Completed { queue, run_ms }) = &done {
            crate::metrics::completed(queue, *run_ms);
        }
        Ok(Response::new(pb::CompleteResponse {
            next: next.map(hand_out),
        }))
    }

    #[tracing::instrument(skip_all, fields(job.id = req.get_ref().job_id))]
    async fn fail(
        &self,
        req: Request<pb::FailRequest>,
    ) -> Result<Response<pb::FailResponse>, Status> {
        let r = req.into_inner();
        let retry_after_ms = r
            .retry_after_ms
            .map(|ms| limits::RETRY_AFTER_MS.check(ms))
            .transpose()
            .map_err(Error::from)?;
        let failure = Failure {
            end: attempt_end(&r),
            error: limits::tail(&r.error, limits::MAX_ERROR),
            retry_after_ms,
        };
        let (id, token) = (r.job_id, r.lease_token);
        let (failed, next) = if r.lease_next {
            let who = leaser(&r.agent_id, &r.queues, &r.request_id)?;
            retry_conflicts(|| fail::fail_and_lease(&self.ctx.pool, id, token, &failure, who))
                .await?
        } else {
            (fail::fail(&self.ctx.pool, id, token, &failure).await?, None)
        };
        if failed.now {
            crate::metrics::attempt_ended(&failed.queue, failed.state, r.release);
        }
        if matches!(
            failed.state,
            crate::db::states::JobState::Scheduled | crate::db::states::JobState::Pending
        ) {
            // A retry waits for its backoff: the promoter wakes when it falls due.
            self.ctx.promoter.scheduled();
        }
        Ok(Response::new(pb::FailResponse {
            state: convert::state(failed.state) as i32,
            next: next.map(hand_out),
        }))
    }

    type WakeStreamStream = WakeStreamOut;

    #[tracing::instrument(skip_all, fields(agent.id = %req.get_ref().agent_id))]
    async fn wake_stream(
        &self,
        req: Request<pb::WakeStreamRequest>,
    ) -> Result<Response<WakeStreamOut>, Status> {
        let r = req.into_inner();
        limits::agent(&r.agent_id, &r.queues).map_err(Error::from)?;
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
        let agent_id = std::mem::take(&mut self.agent_id);
        tracing::info!(agent.id = %agent_id, "agent disconnected");
        // Detached on purpose: Drop cannot await, and a lost unregister is repaired by the
        // staleness sweep of the safety tick.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { waker.unsubscribe(&stream_id, &agent_id).await });
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
