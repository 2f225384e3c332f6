//! `bench`: throughput and latency figures of a real coordinator (release build) on a
//! throwaway PostgreSQL. Prints figures; asserts nothing. Run it as BENCHMARKS.md says:
//!
//!   cargo build --release --bins && LANES_PG_DURABLE=1 target/release/bench [scenario…]
//!
//! Scenarios: enqueue, throughput, backlog, pickup, hotlane, webhooks (default: all).

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use lanes_proto::v1 as pb;
use lanes_proto::v1::agent_service_client::AgentServiceClient;
use lanes_proto::v1::client_service_client::ClientServiceClient;
use lanes_tests::{Coordinator, fresh_database};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

type Agent = AgentServiceClient<Channel>;
type Client = ClientServiceClient<Channel>;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all = [
        "enqueue",
        "throughput",
        "backlog",
        "pickup",
        "hotlane",
        "webhooks",
    ];
    let wanted: Vec<&str> = if args.is_empty() {
        all.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    let durable = std::env::var("LANES_PG_DURABLE").is_ok_and(|v| v == "1");
    println!(
        "# Lanes bench — durable Postgres: {}",
        if durable {
            "yes (fsync on)"
        } else {
            "NO: set LANES_PG_DURABLE=1"
        }
    );
    for s in wanted {
        match s {
            "enqueue" => enqueue().await?,
            "throughput" => {
                throughput(1000).await?;
                throughput(10).await?;
            }
            "backlog" => backlog().await?,
            "pickup" => pickup().await?,
            "hotlane" => hotlane().await?,
            "webhooks" => webhooks(5_000).await?,
            other => anyhow::bail!("unknown scenario {other}; known: {all:?}"),
        }
    }
    Ok(())
}

async fn start() -> anyhow::Result<(lanes_tests::TestDb, Coordinator)> {
    let db = fresh_database().await?;
    let coord = Coordinator::start_quiet(&db.url, &["--db-pool-size", "24"]).await?;
    Ok((db, coord))
}

fn job(queue: &str, lane: String) -> pb::EnqueueRequest {
    pb::EnqueueRequest {
        queue: queue.into(),
        lane,
        payload: "{}".into(),
        ..Default::default()
    }
}

/// Enqueues `n` jobs round-robin over `lanes` lanes (one lane of its own when `lanes` is 1).
async fn fill(
    client: &Client,
    queue: &str,
    prefix: &str,
    lanes: usize,
    n: usize,
    parallel: usize,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let per = n / parallel;
    let mut set = tokio::task::JoinSet::new();
    for p in 0..parallel {
        let mut c = client.clone();
        let (queue, prefix) = (queue.to_string(), prefix.to_string());
        set.spawn(async move {
            for start in (p * per..(p + 1) * per).step_by(1000) {
                let end = (start + 1000).min((p + 1) * per);
                let jobs = (start..end)
                    .map(|i| job(&queue, format!("{prefix}{}", i % lanes)))
                    .collect();
                c.enqueue_batch(pb::EnqueueBatchRequest { jobs }).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(t.elapsed())
}

async fn enqueue() -> anyhow::Result<()> {
    let (_db, coord) = start().await?;
    let client = coord.client().await?;
    let n = 100_000;
    let took = fill(&client, "bench", "lane-", 1000, n, 4).await?;
    println!(
        "enqueue: {n} jobs over 1,000 lanes in batches of 1,000, 4 concurrent callers: {:.0} jobs/s",
        n as f64 / took.as_secs_f64()
    );
    Ok(())
}

/// Leases and completes until `done` reaches `total`, handing over with `lease_next`.
/// Returns the latency histogram (µs) of the Lease calls.
async fn drain(
    mut agent: Agent,
    id: String,
    queue: String,
    done: Arc<AtomicUsize>,
    total: usize,
    lease_next: bool,
) -> anyhow::Result<Histogram<u64>> {
    let mut hist = Histogram::<u64>::new(3)?;
    let queues = vec![queue];
    let mut held: Option<pb::LeasedJob> = None;
    while done.load(Ordering::Relaxed) < total {
        let job = match held.take() {
            Some(j) => j,
            None => {
                let t = Instant::now();
                let r = agent
                    .lease(pb::LeaseRequest {
                        agent_id: id.clone(),
                        queues: queues.clone(),
                        request_id: String::new(),
                    })
                    .await?
                    .into_inner();
                hist.record(t.elapsed().as_micros() as u64)?;
                match r.job {
                    Some(j) => j,
                    None => {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                }
            }
        };
        let r = agent
            .complete(pb::CompleteRequest {
                job_id: job.id,
                lease_token: job.lease_token,
                result: String::new(),
                lease_next,
                agent_id: id.clone(),
                queues: queues.clone(),
                request_id: String::new(),
            })
            .await?
            .into_inner();
        done.fetch_add(1, Ordering::Relaxed);
        held = r.next;
    }
    if let Some(j) = held {
        // Hand a job leased past the end back so the run ends clean.
        agent
            .fail(pb::FailRequest {
                job_id: j.id,
                lease_token: j.lease_token,
                release: true,
                ..Default::default()
            })
            .await?;
    }
    Ok(hist)
}

async fn run_leasers(
    coord: &Coordinator,
    queue: &str,
    n: usize,
    total: usize,
    lease_next: bool,
) -> anyhow::Result<(Duration, Histogram<u64>)> {
    let done = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let agent = coord.agent().await?;
        set.spawn(drain(
            agent,
            format!("bench-{i}"),
            queue.to_string(),
            done.clone(),
            total,
            lease_next,
        ));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    while let Some(r) = set.join_next().await {
        hist.add(r??)?;
    }
    Ok((t.elapsed(), hist))
}

async fn throughput(lanes: usize) -> anyhow::Result<()> {
    let (_db, coord) = start().await?;
    let client = coord.client().await?;
    let n = 20_000;
    let producer = {
        let client = client.clone();
        tokio::spawn(async move { fill(&client, "bench", "lane-", lanes, n, 1).await })
    };
    let (took, _) = run_leasers(&coord, "bench", 8, n, true).await?;
    producer.await??;
    println!(
        "throughput: {n} no-op jobs, {lanes} lanes, enqueue → lease → complete, 8 leasers: {:.0} jobs/s",
        n as f64 / took.as_secs_f64()
    );
    Ok(())
}

fn pct(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:.2} ms, p99 {:.2} ms",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0
    )
}

async fn backlog() -> anyhow::Result<()> {
    let (_db, coord) = start().await?;
    let client = coord.client().await?;
    let n = 10_000;
    fill(&client, "bench", "measured-", 1000, n, 1).await?;
    let (took, hist) = run_leasers(&coord, "bench", 8, n, false).await?;
    let empty_rate = n as f64 / took.as_secs_f64();
    println!(
        "backlog: no backlog: Lease {}, drain {empty_rate:.0} jobs/s (8 leasers, lease + complete)",
        pct(&hist)
    );

    let t = Instant::now();
    fill(&client, "bench", "backlog-", 10_000, 1_000_000, 4).await?;
    fill(&client, "bench", "big-lane", 1, 100_000, 1).await?;
    println!(
        "backlog: loaded 1,000,000 jobs over 10,000 lanes + one lane of 100,000 in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    fill(&client, "bench", "measured-", 1000, n, 1).await?;
    let (took, hist) = run_leasers(&coord, "bench", 8, n, false).await?;
    let rate = n as f64 / took.as_secs_f64();
    println!(
        "backlog: behind 1.1 M pending: Lease {}, drain {rate:.0} jobs/s ({:.0} % of no backlog)",
        pct(&hist),
        100.0 * rate / empty_rate
    );
    Ok(())
}

async fn pickup() -> anyhow::Result<()> {
    let (_db, coord) = start().await?;
    let mut client = coord.client().await?;
    let mut agent = coord.agent().await?;
    let queues = vec!["bench".to_string()];
    let id = "pickup-agent".to_string();
    let mut stream = agent
        .wake_stream(pb::WakeStreamRequest {
            agent_id: id.clone(),
            queues: queues.clone(),
        })
        .await?
        .into_inner();
    let mut hist = Histogram::<u64>::new(3)?;
    let stop = Arc::new(AtomicBool::new(false));
    for i in 0..300 {
        // Sleep as an idle agent does: an empty Lease marks it asleep.
        let none = agent
            .lease(pb::LeaseRequest {
                agent_id: id.clone(),
                queues: queues.clone(),
                request_id: String::new(),
            })
            .await?
            .into_inner();
        anyhow::ensure!(none.job.is_none(), "queue should be empty");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let t = Instant::now();
        client.enqueue(job("bench", format!("lane-{i}"))).await?;
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(5), stream.next()).await?;
            match ev {
                Some(Ok(e)) if e.reason != "tick" => break,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => anyhow::bail!("wake stream closed"),
            }
        }
        let leased = agent
            .lease(pb::LeaseRequest {
                agent_id: id.clone(),
                queues: queues.clone(),
                request_id: String::new(),
            })
            .await?
            .into_inner();
        let j = leased
            .job
            .ok_or_else(|| anyhow::anyhow!("woken but nothing to lease"))?;
        hist.record(t.elapsed().as_micros() as u64)?;
        agent
            .complete(pb::CompleteRequest {
                job_id: j.id,
                lease_token: j.lease_token,
                ..Default::default()
            })
            .await?;
    }
    stop.store(true, Ordering::Relaxed);
    println!(
        "pickup: Enqueue → WakeStream event → Lease returns the job, 300 samples: {}",
        pct(&hist)
    );
    Ok(())
}

async fn hotlane() -> anyhow::Result<()> {
    let (_db, coord) = start().await?;
    let client = coord.client().await?;
    let n = 10_000;
    fill(&client, "bench", "hot", 1, n, 1).await?;
    let (took, _) = run_leasers(&coord, "bench", 1, n, true).await?;
    println!(
        "hotlane: {n} jobs of one lane, 1 agent, Complete with lease_next: {:.0} jobs/s",
        n as f64 / took.as_secs_f64()
    );
    let (_db2, coord2) = start().await?;
    let client2 = coord2.client().await?;
    fill(&client2, "bench", "hot", 1, n, 1).await?;
    let (took, _) = run_leasers(&coord2, "bench", 8, n, true).await?;
    println!(
        "hotlane: {n} jobs of one lane, 8 agents competing: {:.0} jobs/s",
        n as f64 / took.as_secs_f64()
    );
    Ok(())
}

/// Dispatcher throughput: `n` signed deliveries to a local receiver. The rows are written
/// straight into the outbox (as completions with a callback URL write them), then the time
/// until the last one is `delivered` is measured.
async fn webhooks(n: i64) -> anyhow::Result<()> {
    let rx = lanes_tests::webhooks::Receiver::start().await?;
    let db = fresh_database().await?;
    let secret = lanes_tests::webhooks::secret();
    let _coord = Coordinator::start_quiet(&db.url, &["--webhook-secret", &secret]).await?;
    let pool = db.pool().await?;
    let t = Instant::now();
    sqlx::query(
        "INSERT INTO outbox (event_type, job_id, queue, lane, url, payload)
         SELECT 'job.completed', g, 'bench', 'l', $1,
                jsonb_build_object('task_id', g, 'status', 'completed', 'result', 'ok')
         FROM generate_series(1, $2) g",
    )
    .bind(rx.url("/hook"))
    .bind(n)
    .execute(&pool)
    .await?;
    loop {
        let (done,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM outbox WHERE state = 'delivered'")
                .fetch_one(&pool)
                .await?;
        if done >= n {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(600),
            "{done} of {n} delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "webhooks: {n} signed deliveries to a local receiver in {secs:.2} s = {:.0} events/s \
         (receiver got {})",
        n as f64 / secs,
        rx.requests().len()
    );
    Ok(())
}
