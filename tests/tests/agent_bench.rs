//! Agent figures for BENCHMARKS.md (ignored by default; run on a quiet machine with a release
//! build of the binaries):
//!
//! ```text
//! cargo build --release --bins
//! cargo test --release -p lanes-tests --test agent_bench -- --ignored --nocapture
//! ```
//!
//! 1. An idle agent: resident memory (VmRSS) and CPU time (utime + stime) over 10 s, with
//!    the coordinator's keep-alive at its production interval (every 30 s).
//! 2. The agent's own overhead per job with a trivial handler (`cat`: the payload is the
//!    result): from the job arriving to the handler starting, and from the handler's exit to
//!    the report being sent, read from the agent's `lanes_agent::timing` debug lines; plus
//!    the throughput of one hot lane (1,000 jobs handed over with `lease_next`) and of
//!    1,000 unkeyed jobs.

use lanes_proto::v1 as pb;
use lanes_proto::v1::client_service_client::ClientServiceClient;
use lanes_tests::agent::{log_lines, start_agent, wait_connected, wait_log};
use lanes_tests::{ChildProc, Coordinator, fresh_database};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const QUEUE: &str = "bench";
const JOBS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
async fn agent_idle_cost_and_per_job_overhead() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    // 150 ticks of 200 ms: the production keep-alive period of 30 s.
    let coord = Coordinator::start(&db.url, &["--keepalive-ticks", "150"]).await?;
    let agent = start_agent(&coord.url(), "bench", QUEUE, &["--exec", "cat"]).await?;
    wait_connected(&coord, "bench", Duration::from_secs(20)).await?;
    wait_log(&agent, "asleep", Duration::from_secs(10)).await?;
    let pid = agent.id().ok_or_else(|| anyhow::anyhow!("agent exited"))?;

    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = vm_rss_kib(pid)?;
    let cpu0 = cpu_ticks(pid)?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu = cpu_ticks(pid)? - cpu0;
    println!("idle agent: VmRSS {rss} KiB; CPU {} ms in 10 s", cpu * 10);

    let mut client = coord.client().await?;
    let hot = run_batch(&mut client, &agent, "hot-lane").await?;
    println!(
        "1 hot lane: {JOBS} jobs in {hot:?} = {:.0} jobs/s",
        JOBS as f64 / hot.as_secs_f64()
    );
    let unkeyed = run_batch(&mut client, &agent, "").await?;
    println!(
        "unkeyed: {JOBS} jobs in {unkeyed:?} = {:.0} jobs/s",
        JOBS as f64 / unkeyed.as_secs_f64()
    );
    println!(
        "busy agent: VmRSS {} KiB after {} jobs",
        vm_rss_kib(pid)?,
        2 * JOBS
    );
    print_timings(&agent)?;
    Ok(())
}

/// Enqueues JOBS jobs in `lane` and waits until all are completed; returns the wall time.
async fn run_batch(
    client: &mut ClientServiceClient<Channel>,
    agent: &ChildProc,
    lane: &str,
) -> anyhow::Result<Duration> {
    let before = log_lines(agent, "job timing")?.len();
    let jobs: Vec<pb::EnqueueRequest> = (0..JOBS)
        .map(|n| pb::EnqueueRequest {
            queue: QUEUE.into(),
            lane: lane.into(),
            payload: serde_json::json!({ "n": n }).to_string(),
            ..Default::default()
        })
        .collect();
    let began = Instant::now();
    for chunk in jobs.chunks(500) {
        client
            .enqueue_batch(pb::EnqueueBatchRequest {
                jobs: chunk.to_vec(),
            })
            .await?;
    }
    while log_lines(agent, "job timing")?.len() < before + JOBS {
        anyhow::ensure!(began.elapsed() < Duration::from_secs(300), "batch too slow");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(began.elapsed())
}

fn print_timings(agent: &ChildProc) -> anyhow::Result<()> {
    let lines = log_lines(agent, "job timing")?;
    for field in ["lease_to_start_us", "exit_to_report_us", "handler_us"] {
        let mut v: Vec<u64> = lines.iter().filter_map(|l| field_value(l, field)).collect();
        v.sort_unstable();
        if v.is_empty() {
            continue;
        }
        let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        println!(
            "{field}: n={} p50={} p99={} max={}",
            v.len(),
            p(0.5),
            p(0.99),
            p(1.0)
        );
    }
    Ok(())
}

fn field_value(line: &str, field: &str) -> Option<u64> {
    let rest = line.split(&format!("{field}=")).nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

fn vm_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("bad VmRSS line"))?
        .parse()?)
}

/// utime + stime of `pid`, in clock ticks (1/100 s on Linux).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, rest) = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow::anyhow!("bad stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3 of the line, utime 14, stime 15 → indices 11, 12.
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}
