//! `lanes-dev`: the whole system on this machine in one command — a throwaway PostgreSQL
//! (unless DATABASE_URL is set), the coordinator, the gateway and two agents running the
//! Python example import. Prints the URLs and a curl to try; Ctrl-C (SIGINT) or SIGTERM
//! stops everything within a few seconds.
//!
//!   scripts/run            (builds, then runs this)
//!
//! Addresses (defaults in brackets): `LANES_DEV_GRPC` (127.0.0.1:50051), `LANES_DEV_HTTP`
//! (127.0.0.1:8080), `LANES_DEV_METRICS` (127.0.0.1:9090).
//!
//! Owns its children's lives: each runs in a process group of its own, so a signal reaches
//! it once, from here, whether it was Ctrl-C in the terminal or `kill` of this process; and
//! each is SIGTERMed by the kernel if this process dies without stopping them (even by
//! SIGKILL). Must never leave a child running after it exits.

use anyhow::Context;
use lanes_tests::{bin_path, fresh_database, wait_for_tcp};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;

const QUEUE: &str = "invoice_import";
const AGENTS: usize = 2;
/// How long an agent may finish its running job once asked to stop: short, so stopping
/// takes seconds; a demo job that does not finish is handed back, not lost.
const AGENT_GRACE_SECS: &str = "2";
/// How long a child may take to exit after its signal before it is killed.
const EXIT_LIMIT: Duration = Duration::from_secs(5);

/// The addresses the processes listen on.
struct Addrs {
    grpc: SocketAddr,
    http: SocketAddr,
    metrics: SocketAddr,
}

impl Addrs {
    fn from_env() -> anyhow::Result<Addrs> {
        let get = |key: &str, default: &str| -> anyhow::Result<SocketAddr> {
            let text = std::env::var(key).unwrap_or_else(|_| default.to_owned());
            text.parse()
                .with_context(|| format!("{key}={text:?} is not an address such as {default}"))
        };
        Ok(Addrs {
            grpc: get("LANES_DEV_GRPC", "127.0.0.1:50051")?,
            http: get("LANES_DEV_HTTP", "127.0.0.1:8080")?,
            metrics: get("LANES_DEV_METRICS", "127.0.0.1:9090")?,
        })
    }
}

// One thread: the kernel's parent-death signal of each child is tied to the thread that
// forked it, which must live as long as the process (see `die_with_parent`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // Listening from the start: a signal during start-up stops what was started so far.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut children: Vec<(String, Child)> = Vec::new();
    let started = tokio::select! {
        r = start_all(&mut children) => r.map(Some),
        _ = term.recv() => Ok(None),
        _ = int.recv() => Ok(None),
    };
    let stopped_by = match started {
        Ok(Some(())) => {
            tokio::select! {
                _ = term.recv() => Signal::SIGTERM,
                _ = int.recv() => Signal::SIGINT,
            }
        }
        Ok(None) => Signal::SIGTERM,
        Err(e) => {
            stop(children, Signal::SIGTERM, &mut term, &mut int).await;
            return Err(e);
        }
    };
    eprintln!("\nstopping…");
    stop(children, stopped_by, &mut term, &mut int).await;
    Ok(())
}

/// Starts the database (unless DATABASE_URL is set) and every process, in order, pushing
/// each child as soon as it runs so a failure or a signal can stop it.
async fn start_all(children: &mut Vec<(String, Child)>) -> anyhow::Result<()> {
    let root = workspace_root()?;
    let addrs = Addrs::from_env()?;
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) => url,
        Err(_) => {
            let db = fresh_database()
                .await
                .context("starting a throwaway PostgreSQL")?;
            // The throwaway cluster lives as long as this process; its watchdog deletes it
            // after.
            db.url
        }
    };
    let (grpc, metrics) = (addrs.grpc.to_string(), addrs.metrics.to_string());
    let coordinator = start(
        "coordinator",
        &["--listen", &grpc, "--metrics-listen", &metrics],
        // Callbacks to a local n8n (localhost:5678) are loopback, refused by default.
        &[
            ("DATABASE_URL", url.as_str()),
            ("LANES_CALLBACK_ALLOW", "127.0.0.1,::1"),
        ],
    )?;
    children.push(("coordinator".into(), coordinator));
    wait_for_tcp(addrs.grpc, Duration::from_secs(30)).await?;
    let grpc_url = format!("http://{grpc}");
    let http = addrs.http.to_string();
    let gateway = start(
        "gateway",
        &["--listen", &http, "--coordinator", &grpc_url],
        &[],
    )?;
    children.push(("gateway".into(), gateway));
    wait_for_tcp(addrs.http, Duration::from_secs(30)).await?;
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
            "--grace-period-secs",
            AGENT_GRACE_SECS,
        ];
        children.push((id.clone(), start("agent", &args, &[])?));
    }
    print_welcome(&addrs);
    Ok(())
}

fn start(bin: &str, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<Child> {
    let mut cmd = Command::new(bin_path(bin)?);
    cmd.args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        // Out of the terminal's process group: Ctrl-C reaches this process alone, which
        // passes it on once. (Twice would cut an agent's grace period short.)
        .process_group(0);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    die_with_parent(&mut cmd);
    cmd.spawn().with_context(|| format!("starting {bin}"))
}

/// Makes the kernel SIGTERM the child when this process dies, however it dies: its own
/// process group no longer gets the terminal's signals, so nothing else would stop it.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // operations are allowed. It makes two raw system calls, prctl(2) and getppid(2), and on
    // failure builds an io::Error from an errno value, which neither allocates nor takes a
    // lock; it touches no shared state of the parent.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
            // This process may have died between fork and prctl: then no signal would come.
            if nix::unistd::getppid() != parent {
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
}

/// Stops the agents and the gateway first, then the coordinator (so agents can still hand
/// back their jobs), each with `sig`; a child still running after [`EXIT_LIMIT`] is killed.
/// Another signal meanwhile is passed on at once (agents then stop waiting for their job).
async fn stop(
    children: Vec<(String, Child)>,
    sig: Signal,
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) {
    let (coordinator, others): (Vec<_>, Vec<_>) = children
        .into_iter()
        .partition(|(name, _)| name == "coordinator");
    for group in [others, coordinator] {
        let mut running: HashMap<String, Option<u32>> = HashMap::new();
        let mut waits = JoinSet::new();
        for (name, mut child) in group {
            send(child.id(), sig);
            running.insert(name.clone(), child.id());
            waits.spawn(async move {
                match tokio::time::timeout(EXIT_LIMIT, child.wait()).await {
                    Ok(Ok(status)) => eprintln!("{name} exited ({status})"),
                    _ => {
                        // Already gone is fine: the kill's only error.
                        let _ = child.kill().await;
                        eprintln!("{name} killed: still running {EXIT_LIMIT:?} after {sig}");
                    }
                }
                name
            });
        }
        loop {
            let again = tokio::select! {
                done = waits.join_next() => match done {
                    Some(Ok(name)) => {
                        running.remove(&name);
                        continue;
                    }
                    Some(Err(_)) => continue,
                    None => break,
                },
                _ = term.recv() => Signal::SIGTERM,
                _ = int.recv() => Signal::SIGINT,
            };
            eprintln!("{again} again: not waiting for running jobs");
            for pid in running.values() {
                send(*pid, again);
            }
        }
    }
}

/// Sends `sig` to a child still running (`pid` is `None` once its exit was collected, so a
/// reused pid is never signalled).
fn send(pid: Option<u32>, sig: Signal) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // The child may have exited meanwhile: nothing left to stop.
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
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

fn print_welcome(a: &Addrs) {
    let (grpc, http, metrics) = (a.grpc, a.http, a.metrics);
    eprintln!(
        r#"
Lanes is running:
  gateway (HTTP, n8n)   http://{http}
  admin page            http://{http}/admin/queue
  coordinator (gRPC)    {grpc}   (grpcurl -plaintext {grpc} list)
  coordinator metrics   http://{metrics}/metrics
  agents                {AGENTS} × python3 agent/examples/import_invoice.py on queue {QUEUE}
  callbacks             may reach loopback (a local n8n on localhost:5678)

Try:
  curl -s -X POST http://{http}/api/jobs -H 'content-type: application/json' \
    -d '{{"queue":"{QUEUE}","lane":"resto-42","payload":{{"invoice_id":"F-001","establishment":"resto-42","lines":12}}}}'
  curl -s 'http://{http}/api/jobs/1?wait=30'     (answers once job 1 is finished)
  curl -s http://{http}/api/queue/stats

grpcurl: https://github.com/fullstorydev/grpcurl/releases, or
  go install github.com/fullstorydev/grpcurl/cmd/grpcurl@latest

Ctrl-C stops everything.
"#
    );
}
