//! A real coordinator process on a free port, and gRPC clients to it.

use crate::procs::{self, ChildProc};
use anyhow::Context;
use lanes_proto::v1::admin_service_client::AdminServiceClient;
use lanes_proto::v1::agent_service_client::AgentServiceClient;
use lanes_proto::v1::client_service_client::ClientServiceClient;
use std::net::SocketAddr;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// A running `coordinator` binary.
pub struct Coordinator {
    /// The process (killed when dropped).
    pub proc: ChildProc,
    /// Its gRPC address.
    pub addr: SocketAddr,
    /// The database it serves.
    pub database_url: String,
    /// Extra arguments it was started with (reused by `restart`).
    args: Vec<String>,
    log: String,
    /// Extra environment variables it was started with (reused by `restart`).
    env: Vec<(String, String)>,
}

/// Fast settings for tests: short ticks so reaping and safety wakes happen within a second.
pub const TEST_ARGS: &[&str] = &["--tick-ms", "200", "--reaper-ms", "100"];

/// `LANES_CALLBACK_ALLOW` of every test coordinator: the webhook receivers of the tests listen
/// on loopback, which the callback policy refuses by default. A test of the default policy
/// passes `("LANES_CALLBACK_ALLOW", "")` to `start_with_env` (later variables win).
pub const TEST_CALLBACK_ALLOW: &str = "127.0.0.1,::1";

impl Coordinator {
    /// Starts a coordinator on `database_url` with `TEST_ARGS` plus `extra` arguments, and
    /// waits until it accepts connections.
    pub async fn start(database_url: &str, extra: &[&str]) -> anyhow::Result<Coordinator> {
        Self::start_logging(database_url, extra, "info,lanes_coordinator=debug", &[]).await
    }

    /// Like `start`, with extra environment variables (`OTEL_*`, `LOG_FORMAT`, …).
    pub async fn start_with_env(
        database_url: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Coordinator> {
        Self::start_logging(database_url, extra, "info,lanes_coordinator=debug", env).await
    }

    /// Like `start` but logging warnings only (benchmarks: per-RPC debug lines cost time).
    pub async fn start_quiet(database_url: &str, extra: &[&str]) -> anyhow::Result<Coordinator> {
        Self::start_logging(database_url, extra, "warn", &[]).await
    }

    /// Starts one with the binary's own defaults (no [`TEST_ARGS`]) plus `extra`, logging
    /// warnings only: capacity benchmarks measure what a deployment runs.
    pub async fn start_defaults(database_url: &str, extra: &[&str]) -> anyhow::Result<Coordinator> {
        let args = extra.iter().map(|s| s.to_string()).collect();
        Self::start_on(database_url, procs::free_port(), args, "warn").await
    }

    /// Starts one whose safety tick (one minute) never fires during a test, so agents are
    /// woken only by the path under test: an enqueue, a Wake call, another replica's NOTIFY.
    pub async fn start_slow_tick(database_url: &str) -> anyhow::Result<Coordinator> {
        let args = ["--tick-ms", "60000", "--reaper-ms", "100"]
            .map(String::from)
            .to_vec();
        Self::start_on(
            database_url,
            procs::free_port(),
            args,
            "info,lanes_coordinator=debug",
        )
        .await
    }

    /// Starts one with exactly `args` (no [`TEST_ARGS`]): e.g. a slow tick alongside other
    /// flags, which `start` would pass twice.
    pub async fn start_with_args(database_url: &str, args: &[&str]) -> anyhow::Result<Coordinator> {
        let args = args.iter().map(|s| s.to_string()).collect();
        Self::start_on(
            database_url,
            procs::free_port(),
            args,
            "info,lanes_coordinator=debug",
        )
        .await
    }

    async fn start_logging(
        database_url: &str,
        extra: &[&str],
        log: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Coordinator> {
        let args: Vec<String> = TEST_ARGS
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::start_env(database_url, procs::free_port(), args, log, env).await
    }

    async fn start_on(
        database_url: &str,
        port: u16,
        args: Vec<String>,
        log: &str,
    ) -> anyhow::Result<Coordinator> {
        Self::start_env(database_url, port, args, log, Vec::new()).await
    }

    async fn start_env(
        database_url: &str,
        port: u16,
        args: Vec<String>,
        log: &str,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<Coordinator> {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut all = vec!["--listen".to_string(), addr.to_string()];
        all.extend(args.iter().cloned());
        let mut envs = vec![
            ("DATABASE_URL".to_string(), database_url.to_string()),
            ("RUST_LOG".to_string(), log.to_string()),
            (
                "LANES_CALLBACK_ALLOW".to_string(),
                TEST_CALLBACK_ALLOW.to_string(),
            ),
        ];
        envs.extend(env.iter().cloned());
        let path = procs::bin_path("coordinator")?;
        let proc = procs::spawn("coordinator", &path, &all, &envs).await?;
        let database_url = database_url.to_string();
        let mut c = Coordinator {
            proc,
            addr,
            database_url,
            args,
            log: log.to_string(),
            env,
        };
        c.wait_ready().await?;
        Ok(c)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        self.proc
            .wait_listening(self.addr.port(), Duration::from_secs(30))
            .await
            .context("coordinator did not start")
    }

    /// Kills the process with SIGKILL and starts a new one on the same port and database.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.proc.kill9().await;
        let fresh = Self::start_env(
            &self.database_url,
            self.addr.port(),
            self.args.clone(),
            &self.log,
            self.env.clone(),
        )
        .await?;
        *self = fresh;
        Ok(())
    }

    /// Stops the process with SIGTERM (a rolling deploy's step), waits for it to exit, and
    /// starts a new one on the same port and database. Returns how long the old one took
    /// to exit.
    pub async fn restart_gracefully(&mut self) -> anyhow::Result<Duration> {
        let stopping = std::time::Instant::now();
        self.proc.signal(nix::sys::signal::Signal::SIGTERM)?;
        self.proc.wait_exit(Duration::from_secs(60)).await?;
        let took = stopping.elapsed();
        let fresh = Self::start_env(
            &self.database_url,
            self.addr.port(),
            self.args.clone(),
            &self.log,
            self.env.clone(),
        )
        .await?;
        *self = fresh;
        Ok(took)
    }

    /// The `http://` URL of the server.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A channel to the server.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        Endpoint::from_shared(self.url())?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .context("connecting to the coordinator")
    }

    /// An AgentService client.
    pub async fn agent(&self) -> anyhow::Result<AgentServiceClient<Channel>> {
        Ok(AgentServiceClient::new(self.channel().await?))
    }

    /// A ClientService client.
    pub async fn client(&self) -> anyhow::Result<ClientServiceClient<Channel>> {
        Ok(ClientServiceClient::new(self.channel().await?))
    }

    /// An AdminService client.
    pub async fn admin(&self) -> anyhow::Result<AdminServiceClient<Channel>> {
        Ok(AdminServiceClient::new(self.channel().await?))
    }
}
