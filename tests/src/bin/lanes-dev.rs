//! `lanes-dev`: the whole system on this machine in one command — a throwaway PostgreSQL
//! (unless DATABASE_URL is set), the coordinator, the gateway and two agents running the
//! Python example import. Prints the URLs and a curl to try; Ctrl-C stops everything.
//!
//!   scripts/run            (builds, then runs this)

use anyhow::Context;
use lanes_tests::{bin_path, fresh_database, wait_for_tcp};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

const GRPC: &str = "127.0.0.1:50051";
const METRICS: &str = "127.0.0.1:9090";
const HTTP: &str = "127.0.0.1:8080";
const QUEUE: &str = "invoice_import";
const AGENTS: usize = 2;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = workspace_root()?;
    // The throwaway database lives as long as this process; its watchdog deletes it after.
    let (url, _db) = match std::env::var("DATABASE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let db = fresh_database()
                .await
                .context("starting a throwaway PostgreSQL")?;
            (db.url.clone(), Some(db))
        }
    };
    let mut children: Vec<(String, Child)> = Vec::new();
    let coordinator = start(
        "coordinator",
        &["--listen", GRPC, "--metrics-listen", METRICS],
        &[("DATABASE_URL", url.as_str())],
    )?;
    children.push(("coordinator".into(), coordinator));
    wait_for_tcp(GRPC.parse::<SocketAddr>()?, Duration::from_secs(30)).await?;
    let grpc_url = format!("http://{GRPC}");
    let gateway = start(
        "gateway",
        &["--listen", HTTP, "--coordinator", &grpc_url],
        &[],
    )?;
    children.push(("gateway".into(), gateway));
    wait_for_tcp(HTTP.parse::<SocketAddr>()?, Duration::from_secs(30)).await?;
    let handler = format!(
        "python3 {}",
        root.join("agent/examples/import_invoice.py").display()
    );
    for n in 1..=AGENTS {
        let id = format!("worker-{n}");
        let args = [
            "--coordinator",
            grpc_url.as_str(),
            "--queues",
            QUEUE,
            "--agent-id",
            &id,
            "--exec",
            &handler,
        ];
        children.push((id.clone(), start("agent", &args, &[])?));
    }
    print_welcome();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Ctrl-C in a terminal reaches every child (same process group); a SIGTERM sent to this
    // process alone must be passed on. Never both: a second signal cuts an agent's grace.
    let forward = tokio::select! {
        _ = tokio::signal::ctrl_c() => false,
        _ = term.recv() => true,
    };
    eprintln!("\nstopping…");
    stop(children, forward).await;
    Ok(())
}

fn start(bin: &str, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<Child> {
    let mut cmd = Command::new(bin_path(bin)?);
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().with_context(|| format!("starting {bin}"))
}

/// Waits for agents first and the coordinator last (signalling them when `forward`), so the
/// throwaway database outlives them all.
async fn stop(children: Vec<(String, Child)>, forward: bool) {
    for (name, mut child) in children.into_iter().rev() {
        if let Some(pid) = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .filter(|_| forward)
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
            Ok(Ok(status)) => eprintln!("{name} exited ({status})"),
            _ => {
                let _ = child.kill().await;
                eprintln!("{name} killed");
            }
        }
    }
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/lanes-dev → the workspace is two levels above target/.
    exe.ancestors()
        .find(|p| p.join("Cargo.toml").is_file() && p.join("agent").is_dir())
        .map(PathBuf::from)
        .context("cannot find the workspace root from the lanes-dev binary's path")
}

fn print_welcome() {
    eprintln!(
        r#"
Lanes is running:
  gateway (HTTP, n8n)   http://{HTTP}
  admin page            http://{HTTP}/admin/queue
  coordinator (gRPC)    {GRPC}   (grpcurl -plaintext {GRPC} list)
  coordinator metrics   http://{METRICS}/metrics
  agents                {AGENTS} × python3 agent/examples/import_invoice.py on queue {QUEUE}

Try:
  curl -s -X POST http://{HTTP}/api/jobs -H 'content-type: application/json' \
    -d '{{"queue":"{QUEUE}","lane":"resto-42","payload":{{"invoice_id":"F-2026-001","establishment":"resto-42","sleep_ms":500}}}}'
  curl -s http://{HTTP}/api/queue/stats

Ctrl-C stops everything.
"#
    );
}
