//! `bench capacity`: how far one PostgreSQL primary carries a deployment. Three coordinator
//! replicas with their default settings, 10, 50 and 200 real `agent` processes (spread over
//! the replicas) calling an HTTP handler that answers after 50 ms or at once, 1,000 lanes.
//!
//! Per agent count, first with the agents idle: what they cost the database (transactions,
//! Lease calls and server CPU over a window longer than the keep-alive), then pickup (one
//! job at a time into idle agents: from the enqueue's transaction to the grant of its lease,
//! on the database's clock).
//! Per handler, a drain of a backlog enqueued while the queue was paused: jobs/s, the
//! replicas' Lease and hand-off latency (from a tenth of the backlog on: the steady state,
//! not every agent leasing at once on resume), the most server connections seen, CPU per job
//! of PostgreSQL, the replicas and the agents. Each drain is checked: every job completed
//! once, one at a time per lane, in lane order.
//!
//! `BENCH_AGENTS` (default `10,50,200`) picks the agent counts.

use crate::{Client, fill, job, pct, postmaster_pid, proc_cpu, server_cpu};
use hdrhistogram::Histogram;
use lanes_proto::v1 as pb;
use lanes_proto::v1::admin_service_client::AdminServiceClient;
use lanes_tests::agent::start_agent_with_env;
use lanes_tests::http_stub::{self, Reply};
use lanes_tests::metrics::scrape;
use lanes_tests::{ChildProc, Coordinator, free_port, fresh_database};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const QUEUE: &str = "capacity";
const REPLICAS: usize = 3;
const LANES: usize = 1000;
/// Longer than the default keep-alive (15 ticks of 2 s), so it is counted in.
const IDLE_WINDOW: Duration = Duration::from_secs(32);
const PICKUPS: usize = 100;
const SLOW_MS: u64 = 50;

/// Runs the scenario for every agent count and prints one table row per case.
pub async fn run() -> anyhow::Result<()> {
    let counts: Vec<usize> = std::env::var("BENCH_AGENTS")
        .unwrap_or_else(|_| "10,50,200".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    // The agents' handler: `/slow` answers after 50 ms, anything else at once.
    let base = http_stub::serve(|req| Reply {
        status: 200,
        delay: Duration::from_millis(if req.path == "/slow" { SLOW_MS } else { 0 }),
        json: "{}".into(),
    })
    .await?;

    let mut idle_rows = Vec::new();
    let mut rows = Vec::new();
    for &n in &counts {
        for (name, path) in [("50 ms", "/slow"), ("no-op", "/noop")] {
            let case = Case::start(n, &format!("{base}{path}")).await?;
            if path == "/slow" {
                idle_rows.push(case.idle().await?);
            }
            rows.push(case.measure(name).await?);
        }
    }
    println!(
        "capacity: idle agents, {} s window (default tick 2 s, keep-alive every 15 ticks):",
        IDLE_WINDOW.as_secs()
    );
    println!(
        "capacity: | agents | Lease calls | statements (pg_stat_statements) | transactions | \
         per agent per minute | PostgreSQL CPU |"
    );
    println!("capacity: |---:|---:|---:|---:|---:|---:|");
    for r in idle_rows {
        println!("capacity: {r}");
    }
    println!(
        "capacity: 3 replicas, 1,000 lanes, HTTP handler; CPU in ms per job (PostgreSQL / \
         replicas / agents):"
    );
    println!(
        "capacity: | agents | handler | jobs/s | Lease p99 | hand-off p99 | pickup p50 / p99 | \
         PG connections (max) | CPU ms/job PG / coord / agents | PG cores | agent RSS | violations |"
    );
    println!("capacity: |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("capacity: {r}");
    }
    Ok(())
}

/// One deployment: a fresh database, the replicas and the agents (all killed on drop).
struct Case {
    db: lanes_tests::TestDb,
    pool: sqlx::PgPool,
    coords: Vec<Coordinator>,
    metrics: Vec<String>,
    agents: Vec<ChildProc>,
    client: Client,
    admin: AdminServiceClient<Channel>,
}

impl Case {
    /// Starts the replicas and `n` agents calling `url`; returns once all are asleep.
    async fn start(n: usize, url: &str) -> anyhow::Result<Case> {
        let db = fresh_database().await?;
        let mut coords = Vec::new();
        let mut metrics = Vec::new();
        for _ in 0..REPLICAS {
            let addr = format!("127.0.0.1:{}", free_port());
            coords.push(Coordinator::start_defaults(&db.url, &["--metrics-listen", &addr]).await?);
            metrics.push(format!("http://{addr}/metrics"));
        }
        let client = coords[0].client().await?;
        let admin = coords[0].admin().await?;
        // Creates the queue (the agents run this job as they come up).
        client.clone().enqueue(job(QUEUE, "warm-up".into())).await?;
        let mut agents = Vec::with_capacity(n);
        for i in 0..n {
            let coord = coords[i % REPLICAS].url();
            let id = format!("cap-{i}");
            let args = ["--http", url, "--grace-period-secs", "1"];
            agents.push(
                start_agent_with_env(&coord, &id, QUEUE, &args, &[("RUST_LOG", "warn")]).await?,
            );
        }
        let case = Case {
            pool: db.pool().await?,
            db,
            coords,
            metrics,
            agents,
            client,
            admin,
        };
        case.wait_asleep(n).await?;
        Ok(case)
    }

    /// Waits until every agent is connected and asleep on its wake stream.
    async fn wait_asleep(&self, n: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let agents = self
                .admin
                .clone()
                .list_agents(pb::ListAgentsRequest {})
                .await?
                .into_inner()
                .agents;
            let asleep = agents.iter().filter(|a| a.state == "asleep").count();
            if asleep == n {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{asleep} of {n} agents asleep after 2 minutes"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What the idle agents cost the database over [`IDLE_WINDOW`].
    async fn idle(&self) -> anyhow::Result<String> {
        let n = self.agents.len();
        let postmaster = postmaster_pid(&self.pool).await?;
        let (leases0, xacts0, cpu0) = (
            self.rpc_count("Lease").await?,
            self.xacts().await?,
            server_cpu(postmaster)?,
        );
        // With LANES_PG_STAT_STATEMENTS=1, which statements ran in the window, and how often.
        let statements = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&self.pool)
            .await
            .is_ok()
            && sqlx::query("SELECT pg_stat_statements_reset()")
                .execute(&self.pool)
                .await
                .is_ok();
        tokio::time::sleep(IDLE_WINDOW).await;
        // The counting queries themselves are two transactions.
        let xacts = self.xacts().await? - xacts0 - 1;
        let mut calls = String::from("–");
        if statements {
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 80), calls
                 FROM pg_stat_statements
                 WHERE toplevel AND dbid = (SELECT oid FROM pg_database
                                            WHERE datname = current_database())
                   AND query NOT LIKE '%pg_stat_%'
                 ORDER BY calls DESC",
            )
            .fetch_all(&self.pool)
            .await?;
            calls = rows.iter().map(|(_, c)| c).sum::<i64>().to_string();
            for (q, c) in rows.iter().take(14) {
                println!("capacity: idle, {n} agents: {c:>5} × {q}");
            }
        }
        let leases = self.rpc_count("Lease").await? - leases0;
        let cpu = server_cpu(postmaster)? - cpu0;
        let minutes = IDLE_WINDOW.as_secs_f64() / 60.0;
        Ok(format!(
            "| {n} | {leases:.0} | {calls} | {xacts} | {:.2} Lease calls | {:.1} ms/s |",
            leases / n as f64 / minutes,
            cpu * 1000.0 / IDLE_WINDOW.as_secs_f64()
        ))
    }

    /// Pickup, then the drain; returns the table row and tears the deployment down.
    async fn measure(self, handler: &str) -> anyhow::Result<String> {
        let n = self.agents.len();
        let pickup = self.pickup().await?;
        // A backlog about 20 s long at the expected rate, within what PostgreSQL can drain.
        let total = if handler == "no-op" {
            15_000
        } else {
            (n * 20 * 20).clamp(4_000, 15_000)
        };
        // The backlog goes in while the queue is paused, so the drain starts all at once.
        self.admin
            .clone()
            .pause_queue(pb::PauseQueueRequest {
                queue: QUEUE.into(),
            })
            .await?;
        // One caller: each batch is acknowledged before the next is sent, so a lane's ids are
        // its arrival order (concurrent batches have none between them).
        fill(&self.client, QUEUE, "lane-", LANES, total, 1).await?;
        let postmaster = postmaster_pid(&self.pool).await?;
        let pids: Vec<u32> = self.coords.iter().filter_map(|c| c.proc.id()).collect();
        let agent_pids: Vec<u32> = self.agents.iter().filter_map(|a| a.id()).collect();
        let (pg0, coord0, agents0) = (server_cpu(postmaster)?, cpu_of(&pids), cpu_of(&agent_pids));
        self.admin
            .clone()
            .resume_queue(pb::ResumeQueueRequest {
                queue: QUEUE.into(),
            })
            .await?;
        let mut connections = 0;
        let deadline = Instant::now() + Duration::from_secs(600);
        let before = 1 + PICKUPS as i64;
        // Latency is read in the steady state: from a tenth of the backlog on, past the
        // stampede of every agent leasing at once on resume.
        let mut steady = None;
        loop {
            let done = self.completed().await? - before;
            if done >= total as i64 {
                break;
            }
            if steady.is_none() && done >= total as i64 / 10 {
                steady = Some((
                    self.buckets("Lease").await?,
                    self.buckets("Complete").await?,
                ));
            }
            anyhow::ensure!(Instant::now() < deadline, "the drain took over 10 minutes");
            connections = connections.max(self.connections().await?);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let (lease0, complete0) = steady.unwrap_or_default();
        let (pg, coord, agents) = (
            server_cpu(postmaster)? - pg0,
            cpu_of(&pids) - coord0,
            cpu_of(&agent_pids) - agents0,
        );
        let took = self.drain_seconds().await?;
        let lease = quantile(&diff(&self.buckets("Lease").await?, &lease0), 0.99);
        let complete = quantile(&diff(&self.buckets("Complete").await?, &complete0), 0.99);
        let violations = self.violations().await?;
        let per = |s: f64| s * 1000.0 / total as f64;
        let rss = agent_pids.iter().filter_map(|p| rss_kib(*p)).sum::<u64>() as f64
            / agent_pids.len().max(1) as f64
            / 1024.0;
        let row = format!(
            "| {n} | {handler} | {:.0} | {} | {} | {} | {connections} | {:.2} / {:.2} / {:.2} | \
             {:.2} | {rss:.1} MiB | {violations} |",
            total as f64 / took,
            ms(lease),
            ms(complete),
            pct(&pickup).replace("p50 ", "").replace(", p99", " /"),
            per(pg),
            per(coord),
            per(agents),
            pg / took,
        );
        drop(self.agents);
        drop(self.coords);
        self.pool.close().await;
        self.db.destroy().await?;
        Ok(row)
    }

    /// One job at a time into idle agents, each on a lane of its own, spread over the
    /// replicas: the enqueue's transaction to the lease's grant (`created_at` to `started_at`), in µs.
    async fn pickup(&self) -> anyhow::Result<Histogram<u64>> {
        let mut hist = Histogram::<u64>::new(3)?;
        for i in 0..PICKUPS {
            let mut client = self.coords[i % REPLICAS].client().await?;
            let job = client
                .enqueue(job(QUEUE, format!("pickup-{i}")))
                .await?
                .into_inner()
                .job
                .ok_or_else(|| anyhow::anyhow!("enqueue answered no job"))?;
            let done = client
                .wait_job(pb::WaitJobRequest {
                    id: job.id,
                    timeout_seconds: 30,
                })
                .await?
                .into_inner()
                .job
                .ok_or_else(|| anyhow::anyhow!("WaitJob answered no job"))?;
            let (Some(created), Some(started)) = (done.created_at, done.started_at) else {
                anyhow::bail!("job {} did not start within 30 s: {done:?}", job.id);
            };
            let us = (started.seconds - created.seconds) * 1_000_000
                + i64::from(started.nanos - created.nanos) / 1000;
            hist.record(us.max(0) as u64)?;
            // Back to sleep before the next one, as an idle deployment would be.
            self.wait_asleep(self.agents.len()).await?;
        }
        Ok(hist)
    }

    async fn completed(&self) -> anyhow::Result<i64> {
        Ok(
            sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE queue = $1 AND state = 'completed'",
            )
            .bind(QUEUE)
            .fetch_one(&self.pool)
            .await?,
        )
    }

    /// From the first start to the last finish of the backlog's jobs.
    async fn drain_seconds(&self) -> anyhow::Result<f64> {
        Ok(sqlx::query_scalar(
            "SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8
             FROM jobs WHERE queue = $1 AND lane_key LIKE 'lane-%'",
        )
        .bind(QUEUE)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Jobs not completed exactly once, or started before the job ahead in their lane
    /// started or finished: the four counts, in that order.
    async fn violations(&self) -> anyhow::Result<String> {
        let (a, b, c, d): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state <> 'completed'),
                    count(*) FILTER (WHERE attempt <> 1),
                    count(*) FILTER (WHERE started_at < prev_start),
                    count(*) FILTER (WHERE started_at < prev_end)
             FROM (SELECT state, attempt, started_at,
                          lag(started_at) OVER w AS prev_start, lag(finished_at) OVER w AS prev_end
                   FROM jobs WHERE queue = $1
                   WINDOW w AS (PARTITION BY lane_key ORDER BY id)) j",
        )
        .bind(QUEUE)
        .fetch_one(&self.pool)
        .await?;
        Ok(if a + b + c + d == 0 {
            "0".into()
        } else {
            format!("not completed {a}, attempt ≠ 1 {b}, out of order {c}, overlapping {d}")
        })
    }

    /// Server connections to this database right now.
    async fn connections(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    async fn xacts(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database
             WHERE datname = current_database()",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Calls of the agent RPC `method` answered by all replicas.
    async fn rpc_count(&self, method: &str) -> anyhow::Result<f64> {
        Ok(self
            .buckets(method)
            .await?
            .last_key_value()
            .map_or(0.0, |(_, v)| *v))
    }

    /// The replicas' latency histogram of the agent RPC `method` (successful calls), summed:
    /// cumulative counts by upper bound in µs (`le="+Inf"` last).
    async fn buckets(&self, method: &str) -> anyhow::Result<BTreeMap<u64, f64>> {
        let want = format!("lanes.v1.AgentService/{method}");
        let mut sum = BTreeMap::new();
        for url in &self.metrics {
            for s in scrape(url).await?.samples {
                if s.name != "lanes_rpc_duration_seconds_bucket"
                    || s.labels.get("method") != Some(&want)
                    || s.labels.get("code").map(String::as_str) != Some("OK")
                {
                    continue;
                }
                let le = match s.labels.get("le").map(String::as_str) {
                    Some("+Inf") => u64::MAX,
                    Some(v) => (v.parse::<f64>()? * 1e6).round() as u64,
                    None => continue,
                };
                *sum.entry(le).or_insert(0.0) += s.value;
            }
        }
        Ok(sum)
    }
}

fn diff(after: &BTreeMap<u64, f64>, before: &BTreeMap<u64, f64>) -> BTreeMap<u64, f64> {
    after
        .iter()
        .map(|(le, v)| (*le, v - before.get(le).copied().unwrap_or(0.0)))
        .collect()
}

/// The `q` quantile of cumulative buckets, interpolated inside its bucket as Prometheus'
/// `histogram_quantile` does; `None` without samples.
fn quantile(buckets: &BTreeMap<u64, f64>, q: f64) -> Option<f64> {
    let total = buckets.last_key_value().map(|(_, v)| *v)?;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0u64, 0.0);
    for (&le, &count) in buckets {
        if count >= rank {
            if le == u64::MAX {
                return Some(lower as f64);
            }
            let width = (le - lower) as f64;
            let inside = count - below;
            return Some(lower as f64 + width * (rank - below) / inside.max(1.0));
        }
        (lower, below) = (le, count);
    }
    Some(lower as f64)
}

fn ms(us: Option<f64>) -> String {
    us.map_or_else(|| "–".into(), |us| format!("{:.1} ms", us / 1000.0))
}

/// CPU seconds used so far by the processes `pids` (their children not included).
fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|p| proc_cpu(*p))
        .map(|(_, cpu)| cpu)
        .sum()
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
