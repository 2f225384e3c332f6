//! `bench`: throughput and latency figures of a real coordinator (release build) on a
//! throwaway PostgreSQL. Prints figures; asserts nothing. Run it as BENCHMARKS.md says:
//!
//!   cargo build --release --bins && LANES_PG_DURABLE=1 target/release/bench [scenario…]
//!
//! Scenarios: enqueue, throughput, backlog, delayed, pickup, hotlane, webhooks, stats, cost,
//! capacity (default: all but stats, which loads 10 million rows, cost, which wants
//! LANES_PG_STAT_STATEMENTS=1, and capacity, which starts up to 200 agent processes).

mod capacity;

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

/// The scenarios run when none is named.
const DEFAULT: [&str; 7] = [
    "enqueue",
    "throughput",
    "backlog",
    "delayed",
    "pickup",
    "hotlane",
    "webhooks",
];
/// Scenarios run only when named.
const ON_REQUEST: [&str; 3] = ["stats", "cost", "capacity"];

const USAGE: &str = "usage: bench [scenario...]

Figures of a real coordinator (build it with `cargo build --release --bins` first) on a
throwaway PostgreSQL. Prints figures, asserts nothing.

scenarios (default: the first seven):
  enqueue     batch Enqueue rate: 100,000 jobs, batches of 1,000, 4 callers
  throughput  enqueue, lease and complete with 8 in-process leasers, 1,000 and 10 lanes
  backlog     drain rate behind 1.1 million pending jobs, against an empty queue
  delayed     lease latency behind 400,000 jobs that cannot run yet
  pickup      enqueue to lease latency with an idle leaser
  hotlane     one lane of 10,000 jobs, competing leasers
  webhooks    event deliveries per second
  stats       GetStats over 10 million finished jobs (slow)
  cost        PostgreSQL CPU per hand-off (LANES_PG_STAT_STATEMENTS=1: per statement)
  capacity    replicas and up to 200 agent processes (BENCH_AGENTS, default 10,50,200)

environment:
  LANES_PG_DURABLE=1          fsync on, as production runs (off by default: faster setup)
  LANES_PG_STAT_STATEMENTS=1  load pg_stat_statements (track = all) and print its table
  LANES_BIN_DIR               where the coordinator and agent binaries are
  DATABASE_URL                use this server instead of a throwaway cluster";

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    // Every name is checked before the first scenario spends minutes running.
    if let Some(bad) = args
        .iter()
        .find(|a| !DEFAULT.contains(&a.as_str()) && !ON_REQUEST.contains(&a.as_str()))
    {
        eprintln!("bench: unknown scenario {bad:?}\n\n{USAGE}");
        std::process::exit(2);
    }
    let wanted: Vec<&str> = if args.is_empty() {
        DEFAULT.to_vec()
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
            "delayed" => delayed().await?,
            "stats" => stats().await?,
            "cost" => {
                cost(1000).await?;
                cost(1).await?;
            }
            "pickup" => pickup().await?,
            "hotlane" => hotlane().await?,
            "webhooks" => webhooks(5_000).await?,
            "capacity" => capacity::run().await?,
            other => anyhow::bail!("unknown scenario {other}"),
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

/// Leases and completes until `done` reaches `total`, handing over with `lease_next`; finding
/// nothing, it sleeps on its WakeStream as a real agent does (polling Lease would load the
/// database with empty probes no deployment makes). Returns the latency histogram (µs) of
/// the Lease calls.
async fn drain(
    mut agent: Agent,
    id: String,
    queue: String,
    done: Arc<AtomicUsize>,
    finished: Arc<std::sync::Mutex<Option<Instant>>>,
    total: usize,
    lease_next: bool,
) -> anyhow::Result<Histogram<u64>> {
    let mut hist = Histogram::<u64>::new(3)?;
    let queues = vec![queue];
    let mut wake = agent
        .wake_stream(pb::WakeStreamRequest {
            agent_id: id.clone(),
            queues: queues.clone(),
        })
        .await?
        .into_inner();
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
                        // The short timeout only ends the run once every job is done (the
                        // last hand-off wakes nobody).
                        let _ =
                            tokio::time::timeout(Duration::from_millis(200), wake.message()).await;
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
        if done.fetch_add(1, Ordering::Relaxed) + 1 == total {
            *finished.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
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
    let finished = Arc::new(std::sync::Mutex::new(None));
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let agent = coord.agent().await?;
        set.spawn(drain(
            agent,
            format!("bench-{i}"),
            queue.to_string(),
            done.clone(),
            finished.clone(),
            total,
            lease_next,
        ));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    while let Some(r) = set.join_next().await {
        hist.add(r??)?;
    }
    // Up to the last completion, not to the last leaser's exit (asleep until its timeout).
    let end = finished
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or_else(Instant::now);
    Ok((end - t, hist))
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

/// Lease latency behind work that cannot run yet: 300,000 delayed priority-10 unkeyed jobs
/// and 100,000 priority-10 lanes whose head waits (a delay, as a retry backoff would), none of
/// which a lease may take. They wait outside the ready indexes, so the lease must not notice.
async fn delayed() -> anyhow::Result<()> {
    let (_db, coord) = start().await?;
    let client = coord.client().await?;
    let n = 10_000;
    fill(&client, "bench", "measured-", 1000, n, 1).await?;
    let (_, empty) = run_leasers(&coord, "bench", 8, n, false).await?;
    println!("delayed: empty queue: Lease {}", pct(&empty));
    let t = Instant::now();
    let later = |lane: Option<String>| pb::EnqueueRequest {
        queue: "bench".into(),
        lane: lane.unwrap_or_default(),
        payload: "{}".into(),
        priority: 10,
        delay_seconds: 3600,
        ..Default::default()
    };
    let mut c = client.clone();
    for batch in 0..400 {
        let jobs = (0..1000)
            .map(|i| later((batch >= 300).then(|| format!("waiting-{batch}-{i}"))))
            .collect();
        c.enqueue_batch(pb::EnqueueBatchRequest { jobs }).await?;
    }
    println!(
        "delayed: loaded 300,000 delayed jobs and 100,000 waiting lanes (priority 10) in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    fill(&client, "bench", "measured-", 1000, n, 1).await?;
    let (_, behind) = run_leasers(&coord, "bench", 8, n, false).await?;
    println!(
        "delayed: behind them: Lease {} (p99 {:.2}× the empty queue's)",
        pct(&behind),
        behind.value_at_quantile(0.99) as f64 / empty.value_at_quantile(0.99).max(1) as f64
    );
    Ok(())
}

/// GetStats latency with 10^4 and then 10^7 finished jobs on record: the counts come from
/// counters kept by the transitions, so the two must cost the same. The finished jobs are
/// written straight into the table (then counted once), not run: this measures the read.
async fn stats() -> anyhow::Result<()> {
    let (db, coord) = start().await?;
    let mut client = coord.client().await?;
    client.enqueue(job("bench", String::new())).await?;
    let pool = sqlx::PgPool::connect(&db.url).await?;
    let mut on_record = 0i64;
    for target in [10_000i64, 10_000_000] {
        let t = Instant::now();
        while on_record < target {
            let step = (target - on_record).min(1_000_000);
            sqlx::query(
                "INSERT INTO jobs (queue, lane_key, payload, state, run_at, attempt, max_attempts,
                     started_at, finished_at, created_at, result)
                 SELECT 'bench', 'lane-' || (g % 1000), '{}', 'completed',
                     now() - interval '1 hour', 1, 3, now() - interval '1 hour',
                     now() - interval '59 minutes', now() - interval '1 hour', 'null'
                 FROM generate_series(1, $1) g",
            )
            .bind(step)
            .execute(&pool)
            .await?;
            on_record += step;
        }
        sqlx::query("SELECT transitions.recount('bench')")
            .execute(&pool)
            .await?;
        sqlx::raw_sql("VACUUM ANALYZE jobs").execute(&pool).await?;
        let loaded = t.elapsed();
        let mut hist = Histogram::<u64>::new(3)?;
        for _ in 0..200 {
            let t = Instant::now();
            let s = client
                .get_stats(pb::GetStatsRequest::default())
                .await?
                .into_inner();
            hist.record(t.elapsed().as_micros() as u64)?;
            let done = s.totals.map_or(0, |c| c.completed);
            anyhow::ensure!(
                done == on_record,
                "stats say {done} completed, {on_record} on record"
            );
        }
        println!(
            "stats: GetStats with {on_record} jobs on record (loaded in {:.0} s): {}",
            loaded.as_secs_f64(),
            pct(&hist)
        );
    }
    Ok(())
}

/// PostgreSQL's cost of a hand-off (Complete with `lease_next`: complete a job and lease the
/// next): 8 leasers drain 20,000 jobs over `lanes` lanes; the CPU time of the server's
/// processes (postmaster and every child: backends, WAL writer, checkpointer, autovacuum)
/// over the drain, per job, and with pg_stat_statements (LANES_PG_STAT_STATEMENTS=1 on the
/// harness's cluster) the statements behind it: calls, plans, planning and execution time.
async fn cost(lanes: usize) -> anyhow::Result<()> {
    let (db, coord) = start().await?;
    let client = coord.client().await?;
    let pool = sqlx::PgPool::connect(&db.url).await?;
    let n = 20_000;
    fill(&client, "bench", "lane-", lanes, n, 1).await?;
    let statements = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&pool)
        .await
        .is_ok()
        && sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(&pool)
            .await
            .is_ok();
    let postmaster = postmaster_pid(&pool).await?;
    let cpu0 = server_cpu(postmaster)?;
    let (took, _) = run_leasers(&coord, "bench", 8, n, true).await?;
    let cpu = server_cpu(postmaster)? - cpu0;
    println!(
        "cost: {n} jobs over {lanes} lane(s), 8 leasers with lease_next: {:.0} jobs/s; \
         PostgreSQL CPU {:.3} ms per job ({:.1} s in all)",
        n as f64 / took.as_secs_f64(),
        cpu * 1000.0 / n as f64,
        cpu
    );
    if !statements {
        println!("cost: (no per-statement table: set LANES_PG_STAT_STATEMENTS=1)");
        return Ok(());
    }
    let rows: Vec<(String, i64, i64, f64, f64)> = sqlx::query_as(
        "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 90), calls, plans,
                total_plan_time, total_exec_time
         FROM pg_stat_statements WHERE calls >= $1 / 2 ORDER BY total_exec_time DESC LIMIT 12",
    )
    .bind(n as i64)
    .fetch_all(&pool)
    .await?;
    println!("cost: | statement | calls | plans | plan ms/call | exec ms/call |");
    println!("cost: |---|---|---|---|---|");
    for (q, calls, plans, plan, exec) in rows {
        let per = |t: f64| t / calls.max(1) as f64;
        println!(
            "cost: | `{}` | {calls} | {plans} | {:.3} | {:.3} |",
            q.replace('|', "\\|"),
            per(plan),
            per(exec)
        );
    }
    Ok(())
}

/// The pid of the server's postmaster (its data directory's `postmaster.pid`).
async fn postmaster_pid(pool: &sqlx::PgPool) -> anyhow::Result<u32> {
    let dir: String = sqlx::query_scalar("SELECT current_setting('data_directory')")
        .fetch_one(pool)
        .await?;
    let text = std::fs::read_to_string(format!("{dir}/postmaster.pid"))?;
    Ok(text.lines().next().unwrap_or("").trim().parse()?)
}

/// CPU seconds used so far by the postmaster `pid` and its live children.
fn server_cpu(pid: u32) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc")? {
        let Ok(name) = entry?.file_name().into_string() else {
            continue;
        };
        let Ok(p) = name.parse::<u32>() else {
            continue;
        };
        if let Some((ppid, cpu)) = proc_cpu(p)
            && (p == pid || ppid == pid)
        {
            total += cpu;
        }
    }
    Ok(total)
}

/// The parent pid and CPU seconds (user + system) of process `pid`, from `/proc/<pid>/stat`;
/// `None` once it is gone.
fn proc_cpu(pid: u32) -> Option<(u32, f64)> {
    let tick = 100.0; // USER_HZ on Linux
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) closed by ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let (utime, stime): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    Some((ppid, (utime + stime) / tick))
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
    // Its phases: the Enqueue's answer, then the wake event, then the Lease's answer.
    let mut phases = [
        Histogram::<u64>::new(3)?,
        Histogram::<u64>::new(3)?,
        Histogram::<u64>::new(3)?,
    ];
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
        let answered = t.elapsed();
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(5), stream.next()).await?;
            match ev {
                // Any wake naming the queue (an enqueue's, or the safety tick's when it
                // claimed the agent first); a keep-alive names none.
                Some(Ok(e)) if !e.queue.is_empty() => break,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => anyhow::bail!("wake stream closed"),
            }
        }
        let woken = t.elapsed();
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
        let took = t.elapsed();
        hist.record(took.as_micros() as u64)?;
        for (h, d) in phases
            .iter_mut()
            .zip([answered, woken - answered, took - woken])
        {
            h.record(d.as_micros() as u64)?;
        }
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
    for (name, h) in [
        "Enqueue answered",
        "then the wake event",
        "then Lease answered",
    ]
    .iter()
    .zip(&phases)
    {
        println!("pickup:   {name}: {}", pct(h));
    }
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
