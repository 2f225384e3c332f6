//! The `gateway` binary as a process in front of a real coordinator, a small HTTP client for
//! it, and a simulated agent (AgentService calls made by the test itself) for the tests that
//! need jobs leased, heartbeated, completed or failed.

use crate::coordinator::Coordinator;
use crate::pg::{TestDb, fresh_database};
use crate::procs::{self, ChildProc};
use anyhow::{Context as _, bail};
use lanes_proto::v1 as pb;
use lanes_proto::v1::agent_service_client::AgentServiceClient;
use serde_json::Value;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;
use tonic::Streaming;
use tonic::transport::Channel;

/// Key of the `enqueue` role in [`KEYS`].
pub const ENQUEUE_KEY: &str = "enq-0123456789";
/// Key of the `read` role.
pub const READ_KEY: &str = "read-0123456789";
/// Key of the `admin` role.
pub const ADMIN_KEY: &str = "admin-0123456789";
/// The gateway's `--api-keys` in tests.
pub const KEYS: &str = "enqueue:enq-0123456789,read:read-0123456789,admin:admin-0123456789";

/// A running `gateway` binary.
pub struct Gateway {
    /// The process (killed when dropped).
    pub proc: ChildProc,
    /// Its HTTP address.
    pub addr: SocketAddr,
}

impl Gateway {
    /// Starts a gateway for `coordinator` (a URL) with `extra` arguments on a free port and
    /// waits until it accepts connections.
    pub async fn start(coordinator: &str, extra: &[&str]) -> anyhow::Result<Gateway> {
        Self::start_with_env(coordinator, extra, &[]).await
    }

    /// Like `start`, with extra environment variables (`OTEL_*`, `LOG_FORMAT`, …).
    pub async fn start_with_env(
        coordinator: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Gateway> {
        let addr: SocketAddr = format!("127.0.0.1:{}", procs::free_port()).parse()?;
        let mut args: Vec<String> = ["--listen", &addr.to_string(), "--coordinator", coordinator]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut envs = vec![("RUST_LOG".to_string(), "info,gateway=debug".to_string())];
        envs.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut proc = procs::spawn("gateway", &procs::bin_path("gateway")?, &args, &envs).await?;
        proc.wait_listening(addr.port(), Duration::from_secs(20))
            .await
            .context("gateway did not start")?;
        Ok(Gateway { proc, addr })
    }

    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Database, coordinator, gateway (with [`KEYS`]), an HTTP client and a simulated agent.
pub struct Stack {
    /// The HTTP client, pointed at the gateway.
    pub http: Http,
    /// A simulated agent on the coordinator.
    pub agent: SimAgent,
    /// The gateway.
    pub gateway: Gateway,
    /// The coordinator.
    pub coord: Coordinator,
    /// The database.
    pub db: TestDb,
}

impl Stack {
    /// Starts everything with default settings and the test keys.
    pub async fn start() -> anyhow::Result<Stack> {
        Self::start_with(&[]).await
    }

    /// Starts everything; `gateway_extra` are added to the gateway's arguments.
    pub async fn start_with(gateway_extra: &[&str]) -> anyhow::Result<Stack> {
        Self::start_full(&[], gateway_extra).await
    }

    /// Starts everything with extra coordinator and gateway arguments.
    pub async fn start_full(
        coordinator_extra: &[&str],
        gateway_extra: &[&str],
    ) -> anyhow::Result<Stack> {
        let db = fresh_database().await?;
        let coord = Coordinator::start(&db.url, coordinator_extra).await?;
        Self::around(db, coord, gateway_extra).await
    }

    /// Like `start_with`, with a coordinator whose safety tick does not fire during the test.
    pub async fn start_slow_tick(gateway_extra: &[&str]) -> anyhow::Result<Stack> {
        let db = fresh_database().await?;
        let coord = Coordinator::start_slow_tick(&db.url).await?;
        Self::around(db, coord, gateway_extra).await
    }

    async fn around(
        db: TestDb,
        coord: Coordinator,
        gateway_extra: &[&str],
    ) -> anyhow::Result<Stack> {
        let mut args = vec!["--api-keys", KEYS];
        args.extend_from_slice(gateway_extra);
        let gateway = Gateway::start(&coord.url(), &args).await?;
        let agent = SimAgent::new(coord.channel().await?, "sim-agent");
        let http = Http::new(&gateway.url(""))?;
        Ok(Stack {
            http,
            agent,
            gateway,
            coord,
            db,
        })
    }

    /// The gateway's and coordinator's log tails, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- gateway\n{}\n--- coordinator\n{}",
            self.gateway.proc.log_tail(30),
            self.coord.proc.log_tail(30)
        )
    }

    /// Enqueues through the gateway with the enqueue key; returns the job id (fails unless
    /// the answer is 202).
    pub async fn enqueue(&self, body: Value) -> anyhow::Result<i64> {
        let r = self
            .http
            .post("/api/jobs", Some(ENQUEUE_KEY), &body)
            .await?;
        if r.status != 202 {
            bail!("enqueue answered {}: {}", r.status, r.body);
        }
        r.body["job_id"].as_i64().context("no job_id")
    }

    /// GET /api/jobs/{id} with the read key.
    pub async fn job(&self, id: i64) -> anyhow::Result<Value> {
        let r = self
            .http
            .get(&format!("/api/jobs/{id}"), Some(READ_KEY))
            .await?;
        if r.status != 200 {
            bail!("GET job {id} answered {}: {}", r.status, r.body);
        }
        Ok(r.body)
    }

    /// GET /api/queue/stats's `stats` with the read key.
    pub async fn stats(&self) -> anyhow::Result<Value> {
        let r = self.http.get("/api/queue/stats", Some(READ_KEY)).await?;
        if r.status != 200 {
            bail!("stats answered {}: {}", r.status, r.body);
        }
        Ok(r.body["stats"].clone())
    }
}

/// An HTTP answer: status, headers and the body as JSON (`Value::String` when not JSON).
#[derive(Debug)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body.
    pub body: Value,
}

impl Reply {
    /// The `error.code` of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A JSON client of one base URL that does not follow redirects.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    /// A client of `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str) -> anyhow::Result<Http> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Http {
            client,
            base: base.to_owned(),
        })
    }

    /// GET `path` with an optional API key.
    pub async fn get(&self, path: &str, key: Option<&str>) -> anyhow::Result<Reply> {
        self.send(reqwest::Method::GET, path, key, None).await
    }

    /// POST `body` as JSON.
    pub async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> anyhow::Result<Reply> {
        self.send(reqwest::Method::POST, path, key, Some(body.to_string()))
            .await
    }

    /// PUT `body` as JSON.
    pub async fn put(&self, path: &str, key: Option<&str>, body: &Value) -> anyhow::Result<Reply> {
        self.send(reqwest::Method::PUT, path, key, Some(body.to_string()))
            .await
    }

    /// DELETE `path`.
    pub async fn delete(&self, path: &str, key: Option<&str>) -> anyhow::Result<Reply> {
        self.send(reqwest::Method::DELETE, path, key, None).await
    }

    /// PUT raw text as the body.
    pub async fn put_raw(
        &self,
        path: &str,
        key: Option<&str>,
        body: &str,
    ) -> anyhow::Result<Reply> {
        self.send(reqwest::Method::PUT, path, key, Some(body.to_owned()))
            .await
    }

    /// GET `path` and return the body as text, whatever its status (for bodies a JSON
    /// reader would round or refuse).
    pub async fn get_text(&self, path: &str, key: Option<&str>) -> anyhow::Result<String> {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        let resp = req.send().await.with_context(|| format!("GET {path}"))?;
        Ok(resp.text().await?)
    }

    /// POST raw text as the body (for malformed JSON and empty bodies).
    pub async fn post_raw(
        &self,
        path: &str,
        key: Option<&str>,
        body: &str,
    ) -> anyhow::Result<Reply> {
        self.send(reqwest::Method::POST, path, key, Some(body.to_owned()))
            .await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<String>,
    ) -> anyhow::Result<Reply> {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        reply(resp).await
    }

    /// POST `body` as it is, with `headers` and no key (e.g. a webhook delivery replayed).
    pub async fn post_bytes(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> anyhow::Result<Reply> {
        let mut req = self.client.post(format!("{}{path}", self.base)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        reply(req.send().await.with_context(|| format!("POST {path}"))?).await
    }
}

async fn reply(resp: reqwest::Response) -> anyhow::Result<Reply> {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// An agent simulated by the test: AgentService calls over gRPC.
#[derive(Clone)]
pub struct SimAgent {
    client: AgentServiceClient<Channel>,
    /// Its agent id.
    pub id: String,
}

impl SimAgent {
    /// An agent called `id` on `channel`.
    pub fn new(channel: Channel, id: &str) -> SimAgent {
        SimAgent {
            client: AgentServiceClient::new(channel),
            id: id.to_owned(),
        }
    }

    /// One Lease of `queue`.
    pub async fn lease(&self, queue: &str) -> anyhow::Result<Option<pb::LeasedJob>> {
        let req = pb::LeaseRequest {
            agent_id: self.id.clone(),
            queues: vec![queue.to_owned()],
            request_id: String::new(),
        };
        Ok(self.client.clone().lease(req).await?.into_inner().job)
    }

    /// Leases until a job of `queue` comes, for at most 10 s.
    pub async fn take(&self, queue: &str) -> anyhow::Result<pb::LeasedJob> {
        eventually(Duration::from_secs(10), "a job to lease", || {
            self.lease(queue)
        })
        .await
    }

    /// Completes `job` with `result` (JSON text).
    pub async fn complete(&self, job: &pb::LeasedJob, result: &str) -> anyhow::Result<()> {
        let req = pb::CompleteRequest {
            job_id: job.id,
            lease_token: job.lease_token,
            result: result.to_owned(),
            ..Default::default()
        };
        self.client.clone().complete(req).await?;
        Ok(())
    }

    /// Fails `job`; returns its new state.
    pub async fn fail(
        &self,
        job: &pb::LeasedJob,
        error: &str,
        retryable: bool,
    ) -> anyhow::Result<pb::JobState> {
        let req = pb::FailRequest {
            job_id: job.id,
            lease_token: job.lease_token,
            error: error.to_owned(),
            retryable,
            ..Default::default()
        };
        Ok(self.client.clone().fail(req).await?.into_inner().state())
    }

    /// Heartbeats `job` with progress.
    pub async fn progress(
        &self,
        job: &pb::LeasedJob,
        percent: i32,
        message: &str,
    ) -> anyhow::Result<bool> {
        let req = pb::HeartbeatRequest {
            job_id: job.id,
            lease_token: job.lease_token,
            progress_percent: Some(percent),
            progress_message: Some(message.to_owned()),
        };
        Ok(self
            .client
            .clone()
            .heartbeat(req)
            .await?
            .into_inner()
            .cancel_requested)
    }

    /// Opens a WakeStream for `queue`: the agent is connected (awake until it dozes).
    pub async fn connect(&self, queue: &str) -> anyhow::Result<Streaming<pb::WakeEvent>> {
        let req = pb::WakeStreamRequest {
            agent_id: self.id.clone(),
            queues: vec![queue.to_owned()],
        };
        Ok(self.client.clone().wake_stream(req).await?.into_inner())
    }

    /// Makes the agent asleep without taking work: a Lease of a queue that has no jobs
    /// marks it asleep (its WakeStream's queues may hold ready jobs meanwhile).
    pub async fn doze(&self) -> anyhow::Result<()> {
        if let Some(j) = self.lease(IDLE_QUEUE).await? {
            bail!("agent {} leased job {} from the idle queue", self.id, j.id);
        }
        Ok(())
    }
}

/// A queue no test enqueues into.
pub const IDLE_QUEUE: &str = "lanes-test-idle";

/// Waits for the next wake event whose reason is not the keep-alive, for at most `timeout`;
/// `None` when none came.
pub async fn next_wake(
    stream: &mut Streaming<pb::WakeEvent>,
    timeout: Duration,
) -> anyhow::Result<Option<pb::WakeEvent>> {
    let deadline = Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => return Ok(None),
            Ok(msg) => match msg? {
                None => bail!("wake stream closed"),
                Some(ev) if ev.reason == "wake" || ev.reason == "enqueue" => return Ok(Some(ev)),
                Some(_) => continue,
            },
        }
    }
}

/// Polls `f` every 25 ms until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
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
