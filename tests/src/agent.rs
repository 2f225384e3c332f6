//! Real `agent` processes for end-to-end tests, the Python handlers they run, and small
//! helpers to watch jobs and processes from outside.

use crate::coordinator::Coordinator;
use crate::procs::{self, ChildProc};
use anyhow::{Context as _, bail};
use lanes_proto::v1 as pb;
use lanes_proto::v1::client_service_client::ClientServiceClient;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use tonic::transport::Channel;

/// Log filter of test agents: every RPC (`lanes_agent::rpc`) and job timing is logged.
pub const AGENT_LOG: &str = "info,lanes_agent=debug";

/// Starts `agent` as `id` serving `queues` (comma-separated) of `coordinator` (one URL or a
/// comma-separated list), with `extra` arguments (the handler at least).
pub async fn start_agent(
    coordinator: &str,
    id: &str,
    queues: &str,
    extra: &[&str],
) -> anyhow::Result<ChildProc> {
    start_agent_with_env(coordinator, id, queues, extra, &[]).await
}

/// Like [`start_agent`], with extra environment variables (`OTEL_*`, `LOG_FORMAT`, …).
pub async fn start_agent_with_env(
    coordinator: &str,
    id: &str,
    queues: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<ChildProc> {
    let mut args: Vec<String> = [
        "--coordinator",
        coordinator,
        "--queues",
        queues,
        "--agent-id",
        id,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut envs = vec![("RUST_LOG".to_string(), AGENT_LOG.to_string())];
    envs.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let path = procs::bin_path("agent")?;
    procs::spawn(&format!("agent-{id}"), &path, &args, &envs).await
}

/// The Python interpreter's own path (not a pyenv shim): the handler's pid is then Python's.
pub fn python() -> anyhow::Result<&'static str> {
    static PYTHON: OnceLock<String> = OnceLock::new();
    if let Some(p) = PYTHON.get() {
        return Ok(p);
    }
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .context("running python3 (needed by the handler tests)")?;
    let path = String::from_utf8(out.stdout)?.trim().to_owned();
    if !out.status.success() || path.is_empty() {
        bail!("python3 did not tell its path");
    }
    Ok(PYTHON.get_or_init(|| path))
}

/// `--exec` value running a Python script with the real interpreter.
pub fn exec_python(script: &Path) -> anyhow::Result<String> {
    Ok(format!("'{}' '{}'", python()?, script.display()))
}

/// A file of `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A file of `agent/examples`.
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../agent/examples")
        .join(name)
}

/// Waits until agent `id` has an open WakeStream (listed by AdminService.ListAgents).
pub async fn wait_connected(
    coord: &Coordinator,
    id: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut admin = coord.admin().await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let agents = admin
            .list_agents(pb::ListAgentsRequest {})
            .await?
            .into_inner()
            .agents;
        if agents.iter().any(|a| a.agent_id == id) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("agent {id} did not connect within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls job `id` until `done` holds for it, returning the job.
pub async fn wait_job(
    client: &mut ClientServiceClient<Channel>,
    id: i64,
    timeout: Duration,
    done: impl Fn(&pb::Job) -> bool,
) -> anyhow::Result<pb::Job> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let job = client
            .get_job(pb::GetJobRequest { id })
            .await?
            .into_inner()
            .job
            .context("GetJob returned no job")?;
        if done(&job) {
            return Ok(job);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("job {id} did not get there within {timeout:?}; now: {job:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// True for a finished job state.
pub fn is_finished(job: &pb::Job) -> bool {
    [
        pb::JobState::Completed,
        pb::JobState::Failed,
        pb::JobState::Cancelled,
    ]
    .iter()
    .any(|s| *s as i32 == job.state)
}

/// Enqueues one job; returns its id.
pub async fn enqueue(
    client: &mut ClientServiceClient<Channel>,
    queue: &str,
    lane: &str,
    payload: serde_json::Value,
) -> anyhow::Result<i64> {
    let resp = client
        .enqueue(pb::EnqueueRequest {
            queue: queue.into(),
            lane: lane.into(),
            payload: payload.to_string(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(resp.job.context("Enqueue returned no job")?.id)
}

/// True while process `pid` exists and is not a zombie (a killed orphan may linger as one
/// when nothing reaps it, but it runs no more).
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses, which may itself hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Waits until process `pid` is gone.
pub async fn wait_pid_gone(pid: i32, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    while pid_alive(pid) {
        if tokio::time::Instant::now() > deadline {
            bail!("process {pid} still runs after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Waits until `path` holds a pid (written by a handler at start) and returns it.
pub async fn wait_pidfile(path: &Path, timeout: Duration) -> anyhow::Result<i32> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return Ok(pid);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no pid in {} within {timeout:?}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Lines of a child's log containing `needle`.
pub fn log_lines(proc: &ChildProc, needle: &str) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(proc.log_path())
        .with_context(|| format!("reading {}", proc.log_path().display()))?;
    Ok(text
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect())
}

/// Waits until a child's log has a line containing `needle`.
pub async fn wait_log(proc: &ChildProc, needle: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    while log_lines(proc, needle)?.is_empty() {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{} never logged {needle:?} within {timeout:?}:\n{}",
                proc.name(),
                proc.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
