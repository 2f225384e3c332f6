//! `lanes.v1.ClientService`: enqueue, inspect, cancel, retry, stats and wake.

use super::{Ctx, convert};
use crate::db::states::JobState;
use crate::db::transitions::enqueue::{self, NewJob};
use crate::db::transitions::{cancel, retry};
use crate::db::{agents, jobs, queues, stats};
use crate::error::{Error, retry_conflicts};
use crate::{callback_policy, validate};
use lanes_proto::limits;
use lanes_proto::v1 as pb;
use lanes_proto::v1::client_service_server::ClientService;
use std::collections::BTreeMap;
use tonic::{Request, Response, Status};

/// The client-facing service.
pub struct Clients {
    ctx: Ctx,
}

impl Clients {
    /// Builds the service.
    pub fn new(ctx: Ctx) -> Self {
        Clients { ctx }
    }

    /// Checks one request and builds the job; `at` prefixes the field names of refusals
    /// (`jobs[3].` in a batch).
    fn new_job(
        &self,
        r: pb::EnqueueRequest,
        trace: Option<&Trace>,
        at: &str,
    ) -> Result<NewJob, Error> {
        let policy = &self.ctx.callback_policy;
        validate::queue_name(&r.queue)?;
        let payload = validate::json("payload", &r.payload, self.ctx.max_payload_bytes, false)?;
        limits::PRIORITY.check(r.priority.into())?;
        limits::DELAY_SECONDS.check(r.delay_seconds)?;
        let (run_at, delay_s) = match (&r.run_at, r.delay_seconds) {
            (Some(_), d) if d != 0 => {
                return Err(Error::Invalid(
                    "give run_at or delay_seconds, not both".into(),
                ));
            }
            (Some(t), _) => (
                Some(
                    convert::from_ts(t)
                        .ok_or_else(|| Error::Invalid("run_at is out of range".into()))?,
                ),
                None,
            ),
            (None, 0) => (None, None),
            (None, d) => (None, Some(d)),
        };
        NewJob {
            lane: validate::optional_key("lane", &r.lane)?,
            idempotency_key: validate::optional_key("idempotency_key", &r.idempotency_key)?,
            callback_url: callback_policy::check_at_enqueue(
                policy,
                &format!("{at}callback_url"),
                &r.callback_url,
            )?,
            failure_callback_url: callback_policy::check_at_enqueue(
                policy,
                &format!("{at}failure_callback_url"),
                &r.failure_callback_url,
            )?,
            traceparent: match trace {
                Some((tp, _)) => Some(tp.clone()),
                None => (!r.traceparent.is_empty()).then(|| validate::tail(&r.traceparent, 128)),
            },
            tracestate: trace.and_then(|(_, ts)| (!ts.is_empty()).then(|| ts.clone())),
            max_attempts: r.max_attempts,
            timeout_ms: r.timeout_ms,
            soft_timeout_ms: r.soft_timeout_ms,
            backoff_initial_ms: r.backoff_initial_ms,
            backoff_max_ms: r.backoff_max_ms,
            replace: r.replace,
            queue: r.queue,
            payload,
            priority: r.priority,
            run_at,
            delay_s,
        }
        .checked()
    }

    /// Enqueues in one transaction, then asks for agents to be woken for the new ready work.
    /// `batch`: refusals name their field as `jobs[i].field`, as in the batch request.
    async fn enqueue_all(
        &self,
        reqs: Vec<pb::EnqueueRequest>,
        trace: Option<Trace>,
        batch: bool,
    ) -> Result<Vec<pb::EnqueueResponse>, Error> {
        let new: Vec<NewJob> = reqs
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let at = if batch {
                    format!("jobs[{i}].")
                } else {
                    String::new()
                };
                self.new_job(r, trace.as_ref(), &at)
            })
            .collect::<Result<_, _>>()?;
        let queues: std::collections::BTreeSet<&str> =
            new.iter().map(|j| j.queue.as_str()).collect();
        for q in queues {
            self.ctx.known_queue(q).await?;
        }
        let done = retry_conflicts(|| enqueue::enqueue(&self.ctx.pool, &new)).await?;
        if new
            .iter()
            .any(|j| j.run_at.is_some() || j.delay_s.is_some())
        {
            self.ctx.promoter.scheduled();
        }
        for e in done.iter().filter(|e| e.created) {
            crate::metrics::enqueued(&e.job.queue);
        }
        let mut ready: BTreeMap<&str, i64> = BTreeMap::new();
        for e in done.iter().filter(|e| e.ready_now) {
            *ready.entry(e.job.queue.as_str()).or_default() += 1;
        }
        for (queue, n) in ready {
            self.ctx.waker.request(Some(queue), n, "enqueue");
        }
        Ok(done
            .into_iter()
            .map(|e| pb::EnqueueResponse {
                created: e.created,
                replaced: e.replaced,
                position_in_lane: e.position_in_lane,
                position_in_queue: e.position_in_queue,
                job: Some(convert::job(e.job)),
            })
            .collect())
    }
}

/// A W3C `traceparent` and `tracestate` ("" for none).
type Trace = (String, String);

/// The trace context to store with enqueued jobs: this Enqueue span's when tracing is on (the
/// agent's run span becomes its child), else the caller's from the metadata; `None` leaves
/// each job the `traceparent` field of its request.
fn trace_context(metadata: &tonic::metadata::MetadataMap) -> Option<Trace> {
    if let Some(t) = lanes_telemetry::current_traceparent() {
        return Some(t);
    }
    let text = |key: &str| metadata.get(key).and_then(|v| v.to_str().ok());
    let tp = text("traceparent").filter(|t| lanes_telemetry::valid_traceparent(t))?;
    let ts = text("tracestate").filter(|t| lanes_telemetry::valid_tracestate(t));
    Some((tp.to_owned(), ts.unwrap_or_default().to_owned()))
}

#[tonic::async_trait]
impl ClientService for Clients {
    #[tracing::instrument(skip_all, fields(queue = %req.get_ref().queue, lane = %req.get_ref().lane, job.id = tracing::field::Empty))]
    async fn enqueue(
        &self,
        req: Request<pb::EnqueueRequest>,
    ) -> Result<Response<pb::EnqueueResponse>, Status> {
        let trace = trace_context(req.metadata());
        let mut out = self
            .enqueue_all(vec![req.into_inner()], trace, false)
            .await?;
        let one = out
            .pop()
            .ok_or_else(|| Status::internal("enqueue returned nothing"))?;
        if let Some(j) = &one.job {
            tracing::Span::current().record("job.id", j.id);
        }
        Ok(Response::new(one))
    }

    #[tracing::instrument(skip_all, fields(jobs = req.get_ref().jobs.len()))]
    async fn enqueue_batch(
        &self,
        req: Request<pb::EnqueueBatchRequest>,
    ) -> Result<Response<pb::EnqueueBatchResponse>, Status> {
        // Every job of the batch continues the request's trace.
        let trace = trace_context(req.metadata());
        let jobs = req.into_inner().jobs;
        if jobs.is_empty() || jobs.len() > validate::MAX_BATCH {
            return Err(Error::Invalid(format!(
                "a batch holds 1-{} jobs (got {})",
                validate::MAX_BATCH,
                jobs.len()
            ))
            .into());
        }
        let results = self.enqueue_all(jobs, trace, true).await?;
        Ok(Response::new(pb::EnqueueBatchResponse { results }))
    }

    #[tracing::instrument(skip_all, fields(job.id = req.get_ref().id))]
    async fn get_job(
        &self,
        req: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let job = jobs::get(&self.ctx.pool, req.get_ref().id).await?;
        let position_in_lane = jobs::position(&self.ctx.pool, &job).await?;
        Ok(Response::new(pb::GetJobResponse {
            job: Some(convert::job(job)),
            position_in_lane,
        }))
    }

    #[tracing::instrument(skip_all, fields(job.id = req.get_ref().id))]
    async fn wait_job(
        &self,
        req: Request<pb::WaitJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let r = req.into_inner();
        let secs = limits::WAIT_SECONDS
            .check(r.timeout_seconds.into())
            .map_err(Error::from)?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs as u64);
        let watch = self.ctx.waker.waiters.watch(r.id);
        // Flag first, then read: a finish after the flag notifies, one before it is read.
        let mut state = jobs::watch_finish(&self.ctx.pool, r.id).await?;
        while !state.is_finished() {
            tokio::select! {
                _ = watch.changed() => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
            state = jobs::get(&self.ctx.pool, r.id).await?.state;
        }
        drop(watch);
        self.get_job(Request::new(pb::GetJobRequest { id: r.id }))
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let r = req.into_inner();
        let limit = match r.page_size {
            0 => 50,
            n @ 1..=500 => i64::from(n),
            n => return Err(Error::Invalid(format!("page_size is {n}; allowed 1-500")).into()),
        };
        let state = pb::JobState::try_from(r.state)
            .map_err(|_| Error::Invalid(format!("unknown state {}", r.state)))?;
        let filter = jobs::ListFilter {
            queue: (!r.queue.is_empty()).then_some(r.queue),
            lane: (!r.lane.is_empty()).then_some(r.lane),
            states: convert::db_states(state),
            before_id: (r.page_token > 0).then_some(r.page_token),
            limit,
        };
        let rows = jobs::list(&self.ctx.pool, &filter).await?;
        let next_page_token = if rows.len() as i64 == limit {
            rows.last().map_or(0, |j| j.id)
        } else {
            0
        };
        Ok(Response::new(pb::ListJobsResponse {
            jobs: rows.into_iter().map(convert::job).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(job.id = req.get_ref().id))]
    async fn cancel_job(
        &self,
        req: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let job = cancel::cancel(&self.ctx.pool, req.get_ref().id).await?;
        if job.state == JobState::Cancelled {
            crate::metrics::cancelled(&job.queue);
        }
        // The lane may have a new ready head now.
        if job.lane_key.is_some() {
            self.ctx.waker.request(Some(&job.queue), 1, "enqueue");
        }
        Ok(Response::new(pb::CancelJobResponse {
            job: Some(convert::job(job)),
        }))
    }

    #[tracing::instrument(skip_all, fields(job.id = req.get_ref().id))]
    async fn retry_job(
        &self,
        req: Request<pb::RetryJobRequest>,
    ) -> Result<Response<pb::RetryJobResponse>, Status> {
        let job = retry::retry(&self.ctx.pool, req.get_ref().id).await?;
        self.ctx.waker.request(Some(&job.queue), 1, "enqueue");
        Ok(Response::new(pb::RetryJobResponse {
            job: Some(convert::job(job)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_stats(
        &self,
        req: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        let r = req.into_inner();
        let queue = (!r.queue.is_empty()).then_some(r.queue.as_str());
        let per_queue = stats::by_queue(&self.ctx.pool, queue).await?;
        let (connected, asleep) =
            agents::counts(&self.ctx.pool, self.ctx.waker.stale_ms, queue).await?;
        let mut totals = pb::StateCounts::default();
        let queues = per_queue
            .into_iter()
            .map(|c| {
                let counts = pb::StateCounts {
                    pending: c.scheduled + c.pending,
                    running: c.running,
                    completed: c.completed,
                    failed: c.failed,
                    cancelled: c.cancelled,
                    ready: c.ready,
                };
                totals.pending += c.scheduled + c.pending;
                totals.running += c.running;
                totals.completed += c.completed;
                totals.failed += c.failed;
                totals.cancelled += c.cancelled;
                totals.ready += c.ready;
                pb::QueueStats {
                    queue: c.queue,
                    counts: Some(counts),
                    paused: c.paused,
                    blocked_lanes: c.blocked_lanes,
                    active_lanes: c.active_lanes,
                    avg_run_ms: c.avg_run_ms,
                    oldest_ready_ms: c.oldest_ready_ms,
                    rate_limit: c.rate_limit,
                    rate_interval_ms: c.rate_interval_ms,
                    rate_started: c.rate_started,
                }
            })
            .collect();
        Ok(Response::new(pb::GetStatsResponse {
            totals: Some(totals),
            queues,
            agents_connected: connected as i32,
            agents_asleep: asleep as i32,
        }))
    }

    #[tracing::instrument(skip_all, fields(requested_by = %req.get_ref().requested_by))]
    async fn wake(
        &self,
        req: Request<pb::WakeRequest>,
    ) -> Result<Response<pb::WakeResponse>, Status> {
        let r = req.into_inner();
        if r.max_agents < 0 {
            return Err(Error::Invalid("max_agents must not be negative".into()).into());
        }
        let queue = (!r.queue.is_empty()).then_some(r.queue.as_str());
        if let Some(q) = queue {
            validate::queue_name(q)?;
        }
        // Per queue, so only agents serving a queue with ready work are woken for it.
        let queues = match queue {
            Some(q) => vec![q.to_owned()],
            None => queues::list(&self.ctx.pool)
                .await?
                .into_iter()
                .map(|q| q.name)
                .collect(),
        };
        let mut budget = if r.max_agents == 0 {
            i64::MAX
        } else {
            i64::from(r.max_agents)
        };
        let (mut ready, mut woken) = (0, 0);
        for q in &queues {
            let n = stats::ready(&self.ctx.pool, Some(q)).await?;
            ready += n;
            if n > 0 && budget > 0 {
                let w = self
                    .ctx
                    .waker
                    .wake_now(Some(q), n.min(budget), "wake")
                    .await?;
                budget -= w as i64;
                woken += w;
            }
        }
        let (connected, asleep) =
            agents::counts(&self.ctx.pool, self.ctx.waker.stale_ms, queue).await?;
        tracing::info!(ready, woken, connected, "wake requested");
        Ok(Response::new(pb::WakeResponse {
            ready_jobs: ready,
            agents_woken: woken as i32,
            agents_connected: connected as i32,
            // Counted after the wake, which marked the woken agents awake: they were idle,
            // not busy.
            agents_busy: (connected - asleep - woken as i64).max(0) as i32,
        }))
    }
}
