//! The coordinator's Prometheus metrics (`--metrics-listen`) after a known run: jobs
//! enqueued, completed, failed for good, retried, cancelled, reaped, left pending, delayed,
//! waiting and blocked in four queues, one agent connected, callbacks delivered, retried and
//! disabled. Every value scraped from `/metrics` must equal what the database says.

use lanes_proto::v1 as pb;
use lanes_tests::free_port;
use lanes_tests::jobs::*;
use lanes_tests::metrics::{Scrape, scrape};
use sqlx::{FromRow, PgPool};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tonic::Code;

const SOON: Duration = Duration::from_secs(15);
const QUEUES: [&str; 6] = ["mail", "books", "ledger", "pdf", "sweep", "hooks"];

/// A callback receiver: `/ok` answers 200, `/gone` 410, `/flaky` 500 once and then 200.
struct Hooks {
    base: String,
    hits: Arc<Mutex<HashMap<String, u32>>>,
}

impl Hooks {
    async fn start() -> anyhow::Result<Hooks> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let hits: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let h = hits.clone();
        // Detached: it lives as long as the test's runtime.
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let h = h.clone();
                tokio::spawn(async move {
                    let path = read_request(&mut sock).await.unwrap_or_default();
                    let n = {
                        let mut m = h.lock().unwrap_or_else(|p| p.into_inner());
                        let n = m.entry(path.clone()).or_default();
                        *n += 1;
                        *n
                    };
                    let status = match (path.as_str(), n) {
                        ("/gone", _) => "410 Gone",
                        ("/flaky", 1) => "500 Internal Server Error",
                        _ => "200 OK",
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = sock.write_all(answer.as_bytes()).await;
                });
            }
        });
        Ok(Hooks { base, hits })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// Reads one request (headers and body) and returns its path.
async fn read_request(sock: &mut tokio::net::TcpStream) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf);
    Ok(text.split_whitespace().nth(1).unwrap_or("").to_owned())
}

/// What the `jobs` table says about one queue.
#[derive(Debug, FromRow)]
struct Truth {
    queue: String,
    enqueued: i64,
    completed: i64,
    failed: i64,
    cancelled: i64,
    /// Failed attempts that were scheduled again: attempts made, less the last one of a job
    /// that ran and is not waiting for a retry.
    retried: i64,
    expiries: i64,
    leases: i64,
    run_s: f64,
    /// Σ (started_at - run_at) of jobs leased once and not waiting for a retry (a retry
    /// moves run_at).
    wait_once_s: f64,
    leased_once: i64,
}

const TRUTH: &str = "SELECT queue, count(*) AS enqueued,
    count(*) FILTER (WHERE state = 'completed') AS completed,
    count(*) FILTER (WHERE state = 'failed') AS failed,
    count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
    COALESCE(sum(attempt - CASE WHEN state IN ('scheduled', 'pending') OR started_at IS NULL THEN 0 ELSE 1 END), 0)::int8 AS retried,
    count(*) FILTER (WHERE last_error LIKE 'lease expired%') AS expiries,
    COALESCE(sum(attempt), 0)::int8 AS leases,
    COALESCE(sum(extract(epoch FROM finished_at - started_at)) FILTER (WHERE state = 'completed'), 0)::float8 AS run_s,
    COALESCE(sum(extract(epoch FROM started_at - run_at)) FILTER (WHERE attempt = 1 AND state NOT IN ('scheduled', 'pending')), 0)::float8 AS wait_once_s,
    count(*) FILTER (WHERE attempt = 1 AND state NOT IN ('scheduled', 'pending')) AS leased_once
  FROM jobs GROUP BY queue ORDER BY queue";

/// Where the unfinished jobs of one queue stand, computed from `jobs` alone: a lane's head is
/// its oldest job that is pending, running, or failed under the `block` policy.
#[derive(Debug, FromRow, PartialEq)]
struct Depth {
    queue: String,
    ready: i64,
    delayed: i64,
    waiting: i64,
    blocked: i64,
    running: i64,
    blocked_lanes: i64,
}

const DEPTH: &str = "WITH live AS (
    SELECT j.* FROM jobs j JOIN queues q ON q.name = j.queue
    WHERE j.state IN ('scheduled', 'pending', 'running')
       OR (j.state = 'failed' AND j.lane_key IS NOT NULL AND q.failure_policy = 'block')
  ), ranked AS (
    SELECT queue, lane_key, state, run_at,
      lane_key IS NULL OR id = min(id) OVER (PARTITION BY queue, lane_key) AS head,
      lane_key IS NOT NULL AND bool_or(state = 'failed') OVER (PARTITION BY queue, lane_key) AS stopped
    FROM live
  )
  SELECT q.name AS queue,
    count(r.*) FILTER (WHERE r.state IN ('scheduled', 'pending') AND r.head AND r.run_at <= now()) AS ready,
    count(r.*) FILTER (WHERE r.state IN ('scheduled', 'pending') AND r.head AND r.run_at > now()) AS delayed,
    count(r.*) FILTER (WHERE r.state IN ('scheduled', 'pending') AND NOT r.head AND NOT r.stopped) AS waiting,
    count(r.*) FILTER (WHERE r.state IN ('scheduled', 'pending') AND r.stopped) AS blocked,
    count(r.*) FILTER (WHERE r.state = 'running') AS running,
    count(DISTINCT r.lane_key) FILTER (WHERE r.stopped) AS blocked_lanes
  FROM queues q LEFT JOIN ranked r ON r.queue = q.name
  GROUP BY q.name ORDER BY q.name";

/// Runs the known scenario; returns how many Complete calls succeeded.
async fn known_run(t: &Setup, hooks: &Hooks) -> anyhow::Result<usize> {
    let mut completes = 0;
    // mail (unkeyed): 4 due + 1 sent twice with one key, 2 delayed by an hour.
    for _ in 0..4 {
        t.add("mail", "").await?;
    }
    for _ in 0..2 {
        send(&t.client, job("mail", "", "{}").key("once")).await?;
    }
    let delayed = t.add_req(job("mail", "", "{}").delay(3600)).await?;
    t.add_req(job("mail", "", "{}").delay(3600)).await?;
    let a = t.take("w1", "mail").await?;
    t.complete(&a).await?;
    let b = t.take("w1", "mail").await?;
    assert_eq!(
        t.fail(&b, permanent("bad invoice")).await?,
        pb::JobState::Failed
    );
    let c = t.take("w1", "mail").await?;
    assert_eq!(t.fail(&c, retry_after(0)).await?, pb::JobState::Pending);
    let d = t.take("w1", "mail").await?;
    t.complete(&d).await?;
    completes += 2;
    t.cancel(delayed).await?;

    // books (lanes): b1 ×3, b2 ×2, b3 ×1; one head completed, one left running, b3 cancelled.
    for lane in ["b1", "b1", "b1", "b2", "b2", "b3"] {
        t.add("books", lane).await?;
    }
    let b3 = t.ids("books", "b3", pb::JobState::Unspecified).await?;
    t.cancel(b3[0]).await?;
    let first = t.take("w1", "books").await?;
    t.complete(&first).await?;
    completes += 1;
    t.take("w1", "books").await?;

    // ledger (`block` policy): lane L's head fails for good and stops the two behind it.
    for _ in 0..3 {
        t.add("ledger", "L").await?;
    }
    t.set("ledger", |r| {
        r.failure_policy = Some(pb::FailurePolicy::Block as i32)
    })
    .await?;
    let head = t.take("w1", "ledger").await?;
    assert_eq!(
        t.fail(&head, permanent("ledger broke")).await?,
        pb::JobState::Failed
    );

    // pdf: a running job is cancelled; its agent stops and reports it.
    let id = t.add("pdf", "").await?;
    let running = t.take("w1", "pdf").await?;
    t.cancel(id).await?;
    assert_eq!(
        t.fail(&running, cancelled()).await?,
        pb::JobState::Cancelled
    );

    // sweep: a lease that lapses (1 s TTL, no heartbeat) is reaped and retried.
    t.add("sweep", "").await?;
    t.set("sweep", |r| r.lease_ttl_ms = Some(1000)).await?;
    t.take("w1", "sweep").await?;

    // hooks: callbacks answered 200, 410, and 500 then 200.
    for path in ["/ok", "/gone", "/flaky"] {
        let mut req = job("hooks", "", "{}");
        req.callback_url = hooks.url(path);
        t.add_req(req).await?;
        let j = t.take("w1", "hooks").await?;
        t.complete(&j).await?;
        completes += 1;
    }

    // A refused call, for the RPC metrics.
    let bad = t
        .client
        .clone()
        .enqueue(job("no spaces allowed", "", "{}"))
        .await;
    assert_eq!(code(bad), Code::InvalidArgument);
    Ok(completes)
}

/// Waits for the asynchronous parts: the reaper and the callback deliveries.
async fn settled(db: &PgPool) -> anyhow::Result<()> {
    eventually(SOON, "the reaper and the deliveries", async || {
        let (reaped, open): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM jobs WHERE queue = 'sweep' AND state IN ('scheduled', 'pending')),
                    (SELECT count(*) FROM outbox WHERE state IN ('pending', 'delivering'))",
        )
        .fetch_one(db)
        .await?;
        Ok((reaped == 1 && open == 0).then_some(()))
    })
    .await
}

#[tokio::test]
async fn metrics_match_the_database_after_a_known_run() -> anyhow::Result<()> {
    let listen = format!("127.0.0.1:{}", free_port());
    let t = Setup::start(&["--metrics-listen", &listen, "--webhook-backoff-ms", "100"]).await?;
    let url = format!("http://{listen}/metrics");
    let hooks = Hooks::start().await?;
    let _stream = Wakes::open(&t.agent, "w1", &QUEUES).await?;
    let completes = known_run(&t, &hooks).await?;
    let db = t.db.pool().await?;
    settled(&db).await?;
    let m = scrape(&url).await?;

    let truth: Vec<Truth> = sqlx::query_as(TRUTH).fetch_all(&db).await?;
    assert_eq!(truth.len(), QUEUES.len(), "{truth:?}");
    for q in &truth {
        let at = [("queue", q.queue.as_str())];
        let counter = |name: &str| m.value(name, &at);
        let ctx = format!("queue {}: {q:?}", q.queue);
        assert_eq!(
            counter("lanes_jobs_enqueued_total"),
            q.enqueued as f64,
            "{ctx}"
        );
        assert_eq!(
            counter("lanes_jobs_completed_total"),
            q.completed as f64,
            "{ctx}"
        );
        assert_eq!(counter("lanes_jobs_failed_total"), q.failed as f64, "{ctx}");
        assert_eq!(
            counter("lanes_jobs_cancelled_total"),
            q.cancelled as f64,
            "{ctx}"
        );
        assert_eq!(
            counter("lanes_jobs_retried_total"),
            q.retried as f64,
            "{ctx}"
        );
        assert_eq!(
            counter("lanes_lease_expiries_total"),
            q.expiries as f64,
            "{ctx}"
        );
        assert_eq!(
            counter("lanes_job_wait_seconds_count"),
            q.leases as f64,
            "{ctx}"
        );
        assert_eq!(
            counter("lanes_job_duration_seconds_count"),
            q.completed as f64,
            "{ctx}"
        );
        // Histograms, not summaries: the buckets are configured.
        let inf = [("queue", q.queue.as_str()), ("le", "+Inf")];
        let all = m.value("lanes_job_wait_seconds_bucket", &inf);
        assert_eq!(all, q.leases as f64, "{ctx}");
        let run = counter("lanes_job_duration_seconds_sum");
        assert!(
            (run - q.run_s).abs() <= 0.05 * q.completed as f64 + 0.01,
            "{ctx}: run time {run} s, database {} s",
            q.run_s
        );
        if q.leases == q.leased_once {
            // Every lease was a first one, so the database still holds each wait exactly.
            let wait = counter("lanes_job_wait_seconds_sum");
            assert!(
                (wait - q.wait_once_s).abs() < 0.001 * q.leases as f64 + 1e-6,
                "{ctx}"
            );
        }
    }
    // The run did what it meant to: spot checks against the scenario itself.
    let of = |queue: &str| truth.iter().find(|t| t.queue == queue);
    let mail = of("mail").map(|t| (t.enqueued, t.completed, t.failed, t.cancelled, t.retried));
    assert_eq!(mail, Some((7, 2, 1, 1, 1)));
    assert_eq!(of("sweep").map(|t| (t.expiries, t.retried)), Some((1, 1)));
    assert_eq!(of("pdf").map(|t| t.cancelled), Some(1));

    let depth: Vec<Depth> = sqlx::query_as(DEPTH).fetch_all(&db).await?;
    let served: Vec<Depth> = depth.iter().map(|d| served_depth(&m, &d.queue)).collect();
    assert_eq!(served, depth);
    let books = depth.iter().find(|d| d.queue == "books");
    assert_eq!(
        books.map(|d| (d.ready, d.waiting, d.running)),
        Some((1, 2, 1))
    );
    let ledger = depth.iter().find(|d| d.queue == "ledger");
    assert_eq!(ledger.map(|d| (d.blocked, d.blocked_lanes)), Some((2, 1)));
    let mail = depth.iter().find(|d| d.queue == "mail");
    assert_eq!(mail.map(|d| (d.ready, d.delayed)), Some((2, 1)));

    let (awake, asleep): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE NOT asleep), count(*) FILTER (WHERE asleep) FROM agents",
    )
    .fetch_one(&db)
    .await?;
    assert_eq!(awake + asleep, 1);
    assert_eq!(
        m.get("lanes_agents_connected", &[("state", "awake")]),
        Some(awake as f64)
    );
    assert_eq!(
        m.get("lanes_agents_connected", &[("state", "asleep")]),
        Some(asleep as f64)
    );

    let (delivered, disabled, failed, tries): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'delivered'), count(*) FILTER (WHERE state = 'disabled'),
                count(*) FILTER (WHERE state = 'failed'), COALESCE(sum(attempts), 0)::int8 FROM outbox",
    )
    .fetch_one(&db)
    .await?;
    assert_eq!((delivered, disabled, tries), (2, 1, 4));
    let outcome = |o: &str| m.value("lanes_webhook_deliveries_total", &[("outcome", o)]);
    assert_eq!(outcome("delivered"), delivered as f64);
    assert_eq!(outcome("disabled"), disabled as f64);
    assert_eq!(outcome("failed"), failed as f64);
    assert_eq!(
        outcome("retry"),
        (tries - delivered - disabled - failed) as f64
    );

    let rpc = |method: &str, code: &str| {
        let labels = [("method", method), ("code", code)];
        m.value("lanes_rpc_duration_seconds_count", &labels)
    };
    assert_eq!(
        rpc("lanes.v1.AgentService/Complete", "OK"),
        completes as f64
    );
    assert_eq!(
        rpc("lanes.v1.ClientService/Enqueue", "INVALID_ARGUMENT"),
        1.0
    );
    // Every job was one Enqueue, plus the repeat of the idempotency key.
    let enqueues: i64 = truth.iter().map(|q| q.enqueued).sum::<i64>() + 1;
    assert_eq!(rpc("lanes.v1.ClientService/Enqueue", "OK"), enqueues as f64);
    let hits = hooks
        .hits
        .lock()
        .map(|h| h.values().sum::<u32>())
        .unwrap_or(0);
    assert_eq!(hits as i64, tries);
    Ok(())
}

/// The gauges of one queue as served.
fn served_depth(m: &Scrape, queue: &str) -> Depth {
    let state = |s: &str| m.value("lanes_queue_depth", &[("queue", queue), ("state", s)]) as i64;
    let running = m.get("lanes_jobs_running", &[("queue", queue)]);
    assert_eq!(running, Some(state("running") as f64), "queue {queue}");
    Depth {
        queue: queue.to_owned(),
        ready: state("ready"),
        delayed: state("delayed"),
        waiting: state("waiting"),
        blocked: state("blocked"),
        running: state("running"),
        blocked_lanes: m.value("lanes_lanes_blocked", &[("queue", queue)]) as i64,
    }
}
