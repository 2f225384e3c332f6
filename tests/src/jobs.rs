//! Small helpers for the coordinator behaviour tests: one-line enqueue, lease, complete and
//! fail calls, polling with a deadline, wake streams, and [`Setup`]; the coordinator with a slow
//! safety tick is [`Coordinator::start_slow_tick`].

use crate::coordinator::Coordinator;
use crate::pg::{TestDb, fresh_database};
use anyhow::{Context as _, bail};
use lanes_proto::v1 as pb;
use lanes_proto::v1::admin_service_client::AdminServiceClient;
use lanes_proto::v1::agent_service_client::AgentServiceClient;
use lanes_proto::v1::client_service_client::ClientServiceClient;
use std::time::Duration;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

/// A ClientService client.
pub type Client = ClientServiceClient<Channel>;
/// An AgentService client.
pub type Agent = AgentServiceClient<Channel>;
/// An AdminService client.
pub type Admin = AdminServiceClient<Channel>;

/// A fresh database, a coordinator on it, and a client of each service, with shorthands for
/// the calls tests make most.
pub struct Setup {
    /// ClientService.
    pub client: Client,
    /// AgentService.
    pub agent: Agent,
    /// AdminService.
    pub admin: Admin,
    /// A channel to the coordinator, for other services (health, reflection).
    pub channel: Channel,
    /// The database.
    pub db: TestDb,
    /// The coordinator process (killed when dropped).
    coord: Coordinator,
}

impl Setup {
    /// Starts a coordinator (harness defaults plus `extra` arguments) on a fresh database.
    pub async fn start(extra: &[&str]) -> anyhow::Result<Setup> {
        let db = fresh_database().await?;
        let c = Coordinator::start(&db.url, extra).await?;
        let channel = c.channel().await?;
        Ok(Setup::new(channel, db, c))
    }

    /// Starts a coordinator with extra environment variables on a fresh database.
    pub async fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Setup> {
        let db = fresh_database().await?;
        let c = Coordinator::start_with_env(&db.url, extra, env).await?;
        let channel = c.channel().await?;
        Ok(Setup::new(channel, db, c))
    }

    /// Starts a coordinator with a one-minute safety tick ([`Coordinator::start_slow_tick`]).
    pub async fn slow_tick() -> anyhow::Result<Setup> {
        let db = fresh_database().await?;
        let c = Coordinator::start_slow_tick(&db.url).await?;
        let channel = c.channel().await?;
        Ok(Setup::new(channel, db, c))
    }

    fn new(channel: Channel, db: TestDb, coord: Coordinator) -> Setup {
        Setup {
            client: ClientServiceClient::new(channel.clone()),
            agent: AgentServiceClient::new(channel.clone()),
            admin: AdminServiceClient::new(channel.clone()),
            channel,
            db,
            coord,
        }
    }

    /// The coordinator's gRPC URL (for agents).
    pub fn coord_url(&self) -> String {
        self.coord.url()
    }

    /// The last lines of the coordinator's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.coord.proc.log_tail(lines)
    }

    /// Enqueues `{}` in `queue`, lane `lane` (empty: unkeyed); returns the job id.
    pub async fn add(&self, queue: &str, lane: &str) -> anyhow::Result<i64> {
        enqueue_id(&self.client, queue, lane).await
    }

    /// Enqueues a prepared request; returns the job id.
    pub async fn add_req(&self, req: pb::EnqueueRequest) -> anyhow::Result<i64> {
        Ok(send(&self.client, req).await?.job.context("no job")?.id)
    }

    /// One Lease of `queue` as `agent_id`.
    pub async fn lease(
        &self,
        agent_id: &str,
        queue: &str,
    ) -> anyhow::Result<Option<pb::LeasedJob>> {
        lease(&self.agent, agent_id, &[queue]).await
    }

    /// One Lease of `queue` as `agent_id` that must return a job.
    pub async fn take(&self, agent_id: &str, queue: &str) -> anyhow::Result<pb::LeasedJob> {
        self.lease(agent_id, queue)
            .await?
            .with_context(|| format!("{agent_id} found nothing to lease in {queue}"))
    }

    /// Completes a leased job.
    pub async fn complete(&self, j: &pb::LeasedJob) -> Result<(), Status> {
        complete(&self.agent, j).await
    }

    /// Reports a failed attempt; returns the job's new state.
    pub async fn fail(
        &self,
        j: &pb::LeasedJob,
        f: pb::FailRequest,
    ) -> Result<pb::JobState, Status> {
        Ok(fail(&self.agent, j, f).await?.state())
    }

    /// The job with `id`.
    pub async fn job(&self, id: i64) -> anyhow::Result<pb::Job> {
        get_job(&self.client, id).await
    }

    /// The state of job `id`.
    pub async fn state(&self, id: i64) -> anyhow::Result<pb::JobState> {
        state_of(&self.client, id).await
    }

    /// Changes the settings `edit` sets, leaving the others.
    pub async fn set(
        &self,
        queue: &str,
        edit: impl FnOnce(&mut pb::SetQueueSettingsRequest),
    ) -> anyhow::Result<pb::QueueSettings> {
        let mut req = pb::SetQueueSettingsRequest::default();
        edit(&mut req);
        set_settings(&self.admin, queue, req).await
    }

    /// Stats of one queue.
    pub async fn stats(&self, queue: &str) -> anyhow::Result<pb::QueueStats> {
        queue_stats(&self.client, queue).await
    }

    /// Enqueues a batch.
    pub async fn batch(
        &self,
        jobs: Vec<pb::EnqueueRequest>,
    ) -> Result<Vec<pb::EnqueueResponse>, Status> {
        let req = pb::EnqueueBatchRequest { jobs };
        let r = self.client.clone().enqueue_batch(req).await?;
        Ok(r.into_inner().results)
    }

    /// Cancels job `id`; returns it.
    pub async fn cancel(&self, id: i64) -> Result<pb::Job, Status> {
        let r = self
            .client
            .clone()
            .cancel_job(pb::CancelJobRequest { id })
            .await?;
        r.into_inner()
            .job
            .ok_or_else(|| Status::internal("the answer holds no job"))
    }

    /// Retries job `id`; returns it.
    pub async fn retry(&self, id: i64) -> Result<pb::Job, Status> {
        let r = self
            .client
            .clone()
            .retry_job(pb::RetryJobRequest { id })
            .await?;
        r.into_inner()
            .job
            .ok_or_else(|| Status::internal("the answer holds no job"))
    }

    /// Unblocks a lane; returns the id of the failed job that blocked it.
    pub async fn unblock(&self, queue: &str, lane: &str) -> Result<i64, Status> {
        let req = pb::UnblockLaneRequest {
            queue: queue.into(),
            lane: lane.into(),
        };
        let r = self.admin.clone().unblock_lane(req).await?;
        Ok(r.into_inner().failed_job_id)
    }

    /// Purges finished jobs (`queue` empty: all queues); returns how many were deleted.
    pub async fn purge(&self, queue: &str, older_than_hours: i64) -> anyhow::Result<i64> {
        let req = pb::PurgeJobsRequest {
            queue: queue.into(),
            older_than_hours,
        };
        Ok(self
            .admin
            .clone()
            .purge_jobs(req)
            .await?
            .into_inner()
            .deleted)
    }

    /// Ids of every job matching the filters (`Unspecified`: any state), newest first.
    pub async fn ids(
        &self,
        queue: &str,
        lane: &str,
        state: pb::JobState,
    ) -> anyhow::Result<Vec<i64>> {
        let jobs = list_all(&self.client, filter(queue, lane, state)).await?;
        Ok(jobs.iter().map(|j| j.id).collect())
    }
}

/// A ListJobs filter (`Unspecified`: any state).
pub fn filter(queue: &str, lane: &str, state: pb::JobState) -> pb::ListJobsRequest {
    pb::ListJobsRequest {
        queue: queue.into(),
        lane: lane.into(),
        state: state as i32,
        ..Default::default()
    }
}

/// Builder-style options of an enqueue request.
pub trait EnqueueExt {
    /// Sets the idempotency key.
    fn key(self, key: &str) -> Self;
    /// Sets `delay_seconds`.
    fn delay(self, seconds: i64) -> Self;
    /// Sets `run_at`.
    fn at(self, time: std::time::SystemTime) -> Self;
    /// Sets the priority.
    fn priority(self, priority: i32) -> Self;
}

impl EnqueueExt for pb::EnqueueRequest {
    fn key(self, key: &str) -> Self {
        let idempotency_key = key.into();
        pb::EnqueueRequest {
            idempotency_key,
            ..self
        }
    }
    fn delay(self, delay_seconds: i64) -> Self {
        pb::EnqueueRequest {
            delay_seconds,
            ..self
        }
    }
    fn at(self, time: std::time::SystemTime) -> Self {
        let run_at = Some(time.into());
        pb::EnqueueRequest { run_at, ..self }
    }
    fn priority(self, priority: i32) -> Self {
        pb::EnqueueRequest { priority, ..self }
    }
}

/// An enqueue request for `queue`, lane `lane` (empty: unkeyed) and JSON `payload`.
pub fn job(queue: &str, lane: &str, payload: &str) -> pb::EnqueueRequest {
    pb::EnqueueRequest {
        queue: queue.into(),
        lane: lane.into(),
        payload: payload.into(),
        ..Default::default()
    }
}

/// Enqueues one job and returns the response.
pub async fn enqueue(
    client: &Client,
    queue: &str,
    lane: &str,
    payload: &str,
) -> anyhow::Result<pb::EnqueueResponse> {
    send(client, job(queue, lane, payload)).await
}

/// Enqueues a prepared request.
pub async fn send(client: &Client, req: pb::EnqueueRequest) -> anyhow::Result<pb::EnqueueResponse> {
    Ok(client.clone().enqueue(req).await?.into_inner())
}

/// Enqueues one job and returns its id.
pub async fn enqueue_id(client: &Client, queue: &str, lane: &str) -> anyhow::Result<i64> {
    let e = enqueue(client, queue, lane, "{}").await?;
    Ok(e.job.context("enqueue returned no job")?.id)
}

/// One Lease call as agent `agent_id` over `queues`.
pub async fn lease(
    agent: &Agent,
    agent_id: &str,
    queues: &[&str],
) -> anyhow::Result<Option<pb::LeasedJob>> {
    let req = pb::LeaseRequest {
        agent_id: agent_id.into(),
        queues: queues.iter().map(|q| q.to_string()).collect(),
        request_id: String::new(),
    };
    Ok(agent.clone().lease(req).await?.into_inner().job)
}

/// Leases until a job comes, for at most `timeout`.
pub async fn lease_within(
    agent: &Agent,
    agent_id: &str,
    queues: &[&str],
    timeout: Duration,
) -> anyhow::Result<pb::LeasedJob> {
    eventually(timeout, "a job to lease", async || {
        lease(agent, agent_id, queues).await
    })
    .await
}

/// Leases repeatedly for `window`, failing if any lease returns a job: for jobs that must
/// stay unleasable the whole time (paused queue, blocked lane, lease held by heartbeats).
pub async fn assert_nothing_leasable(
    agent: &Agent,
    agent_id: &str,
    queues: &[&str],
    window: Duration,
) -> anyhow::Result<()> {
    let until = Instant::now() + window;
    while Instant::now() < until {
        if let Some(j) = lease(agent, agent_id, queues).await? {
            bail!(
                "job {} (lane {:?}) was leased but must not be",
                j.id,
                j.lane
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(())
}

/// Leases until a job comes (within `timeout`), failing if one comes in an answer received
/// before `not_before`: the job must not be leasable before then, and must be soon after.
pub async fn lease_not_before(
    agent: &Agent,
    agent_id: &str,
    queues: &[&str],
    not_before: Instant,
    timeout: Duration,
) -> anyhow::Result<pb::LeasedJob> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = lease(agent, agent_id, queues).await?;
        let answered = Instant::now();
        if let Some(j) = got {
            if answered < not_before {
                bail!(
                    "job {} (lane {:?}, attempt {}) was leased {:?} too early",
                    j.id,
                    j.lane,
                    j.attempt,
                    not_before - answered
                );
            }
            return Ok(j);
        }
        if answered >= deadline {
            bail!("no job became leasable within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Completes a leased job with an empty result.
pub async fn complete(agent: &Agent, j: &pb::LeasedJob) -> Result<(), Status> {
    let req = pb::CompleteRequest {
        job_id: j.id,
        lease_token: j.lease_token,
        ..Default::default()
    };
    agent.clone().complete(req).await.map(|_| ())
}

/// Reports a failed attempt of a leased job; `f` sets the outcome fields.
pub async fn fail(
    agent: &Agent,
    j: &pb::LeasedJob,
    f: pb::FailRequest,
) -> Result<pb::FailResponse, Status> {
    let req = pb::FailRequest {
        job_id: j.id,
        lease_token: j.lease_token,
        ..f
    };
    agent.clone().fail(req).await.map(|r| r.into_inner())
}

/// Heartbeats a leased job, optionally reporting progress.
pub async fn heartbeat(
    agent: &Agent,
    j: &pb::LeasedJob,
    progress: Option<i32>,
) -> Result<pb::HeartbeatResponse, Status> {
    let req = pb::HeartbeatRequest {
        job_id: j.id,
        lease_token: j.lease_token,
        progress_percent: progress,
        progress_message: progress.map(|p| format!("{p} % done")),
    };
    agent.clone().heartbeat(req).await.map(|r| r.into_inner())
}

/// A retryable failure with `error`.
pub fn retryable(error: &str) -> pb::FailRequest {
    pb::FailRequest {
        error: error.into(),
        retryable: true,
        ..Default::default()
    }
}

/// A permanent failure with `error`.
pub fn permanent(error: &str) -> pb::FailRequest {
    pb::FailRequest {
        error: error.into(),
        ..Default::default()
    }
}

/// A retryable failure whose retry waits `ms` milliseconds (a Retry-After).
pub fn retry_after(ms: i64) -> pb::FailRequest {
    pb::FailRequest {
        retry_after_ms: Some(ms),
        ..retryable("retry later")
    }
}

/// The lease given back without counting the attempt (agent shutting down).
pub fn release() -> pb::FailRequest {
    pb::FailRequest {
        release: true,
        ..permanent("agent stopping")
    }
}

/// The handler stopped because cancellation was requested.
pub fn cancelled() -> pb::FailRequest {
    pb::FailRequest {
        cancelled: true,
        ..permanent("cancelled")
    }
}

/// The job with `id`.
pub async fn get_job(client: &Client, id: i64) -> anyhow::Result<pb::Job> {
    let r = client.clone().get_job(pb::GetJobRequest { id }).await?;
    r.into_inner().job.context("GetJob returned no job")
}

/// The state of job `id`.
pub async fn state_of(client: &Client, id: i64) -> anyhow::Result<pb::JobState> {
    Ok(get_job(client, id).await?.state())
}

/// Every job matching the filter, following `next_page_token` to the end.
pub async fn list_all(
    client: &Client,
    filter: pb::ListJobsRequest,
) -> anyhow::Result<Vec<pb::Job>> {
    let mut out = Vec::new();
    let mut token = 0;
    loop {
        let req = pb::ListJobsRequest {
            page_token: token,
            page_size: 500,
            ..filter.clone()
        };
        let page = client.clone().list_jobs(req).await?.into_inner();
        out.extend(page.jobs);
        if page.next_page_token == 0 {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}

/// Applies queue settings; `queue` is filled in.
pub async fn set_settings(
    admin: &Admin,
    queue: &str,
    s: pb::SetQueueSettingsRequest,
) -> anyhow::Result<pb::QueueSettings> {
    let req = pb::SetQueueSettingsRequest {
        queue: queue.into(),
        ..s
    };
    Ok(admin.clone().set_queue_settings(req).await?.into_inner())
}

/// Stats of one queue.
pub async fn queue_stats(client: &Client, queue: &str) -> anyhow::Result<pb::QueueStats> {
    let req = pb::GetStatsRequest {
        queue: queue.into(),
    };
    let r = client.clone().get_stats(req).await?.into_inner();
    r.queues
        .into_iter()
        .find(|q| q.queue == queue)
        .with_context(|| format!("no stats for queue {queue}"))
}

/// Calls `f` every 25 ms until it yields `Some`, failing after `timeout`.
pub async fn eventually<T>(
    timeout: Duration,
    what: &str,
    mut f: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The gRPC code of a call that must fail.
pub fn code<T: std::fmt::Debug>(r: Result<T, Status>) -> Code {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(s) => s.code(),
    }
}

/// The wake stream of one agent.
pub struct Wakes {
    stream: Streaming<pb::WakeEvent>,
}

impl Wakes {
    /// Opens a WakeStream; on return the coordinator has registered the agent.
    pub async fn open(agent: &Agent, agent_id: &str, queues: &[&str]) -> anyhow::Result<Wakes> {
        let req = pb::WakeStreamRequest {
            agent_id: agent_id.into(),
            queues: queues.iter().map(|q| q.to_string()).collect(),
        };
        let stream = agent.clone().wake_stream(req).await?.into_inner();
        Ok(Wakes { stream })
    }

    /// The next event other than a keep-alive (empty queue, reason "tick") within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<Option<pb::WakeEvent>> {
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.message()).await {
                Err(_) => return Ok(None),
                Ok(msg) => {
                    let e = msg?.context("the wake stream ended")?;
                    if !(e.queue.is_empty() && e.reason == "tick") {
                        return Ok(Some(e));
                    }
                }
            }
        }
    }
}
