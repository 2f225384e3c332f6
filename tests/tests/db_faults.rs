//! Database faults under load (issue #12, item 2): PostgreSQL stopped `-m fast` and started
//! again, stopped `-m immediate` (a crash: the next start runs recovery) and started again,
//! then every session terminated (`pg_terminate_backend`) — while two coordinators, a
//! gateway and four agents running a recording handler work through jobs enqueued over many
//! lanes through the gateway. No binary is restarted by the test. During each outage both
//! coordinators report NOT_SERVING on grpc.health.v1 (their `liveness` entry stays SERVING)
//! and the gateway's `/readyz` answers 503; after it, SERVING and 200 again, and work
//! resumes.
//!
//! From the record of every handler run and the database: every job ran and completed
//! exactly once (a job may run again only where its handler finished but its Complete was
//! lost, i.e. its lease lapsed: counted), no two jobs of a lane ran at once, each lane ran in
//! enqueue order, each completion wrote exactly one `job.completed` outbox row and was
//! counted once by the replicas' metrics, lanes and counters agree with the jobs, and no
//! error of the restarting database surfaced as INTERNAL (the gateway answered only 503/504
//! while it was down).

use lanes_tests::gateway::{ENQUEUE_KEY, Gateway, KEYS};
use lanes_tests::health::{coordinator_status, wait_coordinator, wait_gateway_readyz};
use lanes_tests::load::{Feeder, completed, wait_completed};
use lanes_tests::metrics::scrape;
use lanes_tests::receiver::Receiver;
use lanes_tests::records::{self, Run};
use lanes_tests::{
    ChildProc, Coordinator, PrivateCluster, StopMode, agent::start_agent, assert_lanes_agree,
    bin_path, free_port,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tonic_health::pb::health_check_response::ServingStatus;

const QUEUE: &str = "db_faults";
const LANES: u64 = 20;
/// Jobs the feeder enqueues per lane at least; it goes on until the faults are over.
const MIN_PER_LANE: u64 = 6;
/// Jobs that must complete after each fault before the next: work resumed.
const PROGRESS: i64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_binary_rides_out_database_restarts_and_killed_sessions() -> anyhow::Result<()> {
    let began = Instant::now();
    let wait = Duration::from_secs(60);
    let cluster = PrivateCluster::new().await?;
    let db = cluster.fresh_database().await?;
    let receiver = Receiver::start().await?;
    let metrics: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut a = Coordinator::start(&db.url, &["--metrics-listen", &metrics[0]]).await?;
    let mut b = Coordinator::start(&db.url, &["--metrics-listen", &metrics[1]]).await?;
    let mut gateway = Gateway::start(&a.url(), &["--api-keys", KEYS]).await?;
    let gw = format!("http://{}", gateway.addr);
    let dir = tempfile::tempdir()?;
    let record = dir.path().join("runs.log");
    let handler = bin_path("record-run")?.display().to_string();
    let mut agents = Vec::new();
    for n in 0..4u32 {
        let order = if n.is_multiple_of(2) {
            format!("{},{}", a.url(), b.url())
        } else {
            format!("{},{}", b.url(), a.url())
        };
        agents
            .push(start_agent(&order, &format!("agent-{n}"), QUEUE, &["--exec", &handler]).await?);
    }
    let pids = |procs: &[&ChildProc]| procs.iter().map(|p| p.id()).collect::<Vec<_>>();

    // The load: jobs on every lane, until the faults are over.
    let feeder = Arc::new(
        Feeder::new(&gw, ENQUEUE_KEY, QUEUE, &record, 50).with_callback(&receiver.url("/done")),
    );
    let faults_over = Arc::new(AtomicBool::new(false));
    let feeding = tokio::spawn(feed(feeder.clone(), faults_over.clone()));
    wait_completed(&db.url, QUEUE, 2 * PROGRESS, wait).await?;
    let started = pids(&[&a.proc, &b.proc, &gateway.proc]);
    eprintln!("load running after {:?}", began.elapsed());

    for mode in [StopMode::Fast, StopMode::Immediate] {
        let done_before = completed(&db.url, QUEUE).await.unwrap_or(0);
        let refused_before = refused(&feeder);
        let outage = Instant::now();
        cluster.stop(mode).await?;
        for c in [&a, &b] {
            wait_coordinator(&c.url(), ServingStatus::NotServing, wait).await?;
        }
        wait_gateway_readyz(&gw, 503, wait).await?;
        let noticed = outage.elapsed();
        // Liveness is not readiness: a probe asking it must not restart a waiting replica.
        for c in [&a, &b] {
            let live = coordinator_status(&c.url(), "liveness").await;
            assert_eq!(
                live,
                Some(ServingStatus::Serving),
                "liveness during the outage"
            );
        }
        // The database stays down until an enqueue has met the outage (and will be retried).
        let deadline = Instant::now() + wait;
        while refused(&feeder) == refused_before {
            anyhow::ensure!(Instant::now() < deadline, "no enqueue met the outage");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cluster.start().await?;
        let back = Instant::now();
        for c in [&a, &b] {
            wait_coordinator(&c.url(), ServingStatus::Serving, wait).await?;
        }
        wait_gateway_readyz(&gw, 200, wait).await?;
        let ready = back.elapsed();
        wait_completed(&db.url, QUEUE, done_before + PROGRESS, wait).await?;
        eprintln!(
            "stop -m {mode:?}: NOT_SERVING within {noticed:?}; SERVING {ready:?} after the \
             start; work resumed {:?} after it",
            back.elapsed()
        );
    }
    let done_before = completed(&db.url, QUEUE).await.unwrap_or(0);
    let killed = cluster.terminate_backends().await?;
    assert!(killed > 0, "the coordinators had sessions to terminate");
    wait_completed(&db.url, QUEUE, done_before + PROGRESS, wait).await?;
    eprintln!("{killed} sessions terminated; work went on");

    faults_over.store(true, Ordering::SeqCst);
    let expected = feeding.await??;
    wait_completed(&db.url, QUEUE, expected.len() as i64, wait).await?;

    // No binary restarted: every process is the one started before the faults, still running.
    assert_eq!(pids(&[&a.proc, &b.proc, &gateway.proc]), started);
    let binaries = [&mut a.proc, &mut b.proc, &mut gateway.proc];
    for p in agents.iter_mut().chain(binaries) {
        assert!(
            p.try_wait()?.is_none(),
            "{} exited:\n{}",
            p.name(),
            p.log_tail(20)
        );
    }

    let runs = records::read(&record)?;
    let agent_logs: Vec<String> = agents
        .iter()
        .map(|p| std::fs::read_to_string(p.log_path()).unwrap_or_default())
        .collect();
    let report = records::check(&runs, &expected, |r| complete_lost(r, &agent_logs));
    eprintln!(
        "database faults: {}; gateway answers {:?}; took {:?}",
        report.summary(),
        feeder.answers(),
        began.elapsed()
    );
    for r in &report.reruns {
        eprintln!("  re-run of job {}: {}", r.run.job, r.why);
    }
    report.assert_clean()?;
    check_completions_counted_once(&db.url, &expected, &metrics).await?;
    // A restarting database answers 57P01/57P03 or breaks connections: UNAVAILABLE (503),
    // never INTERNAL (500).
    assert!(
        !feeder.answers().contains_key("500"),
        "{:?}",
        feeder.answers()
    );
    for c in [&a, &b] {
        let internal = lanes_tests::agent::log_lines(&c.proc, "internal error")?;
        assert!(internal.is_empty(), "INTERNAL errors: {internal:#?}");
    }
    assert_lanes_agree(&db.url).await
}

/// Enqueues the gateway refused so far (5xx or no answer).
fn refused(feeder: &Feeder) -> usize {
    feeder
        .answers()
        .iter()
        .filter(|(status, _)| status.starts_with('5') || *status == "transport")
        .map(|(_, n)| n)
        .sum()
}

/// Feeds every lane at once, each lane's jobs one after the other (so their order is the
/// lane's), until `over` and at least `MIN_PER_LANE` each; returns job id → (lane, seq).
async fn feed(
    feeder: Arc<Feeder>,
    over: Arc<AtomicBool>,
) -> anyhow::Result<BTreeMap<i64, (String, u64)>> {
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..LANES {
        let (feeder, over) = (feeder.clone(), over.clone());
        lanes.spawn(async move {
            let lane = format!("resto-{lane}");
            let mut jobs = Vec::new();
            let mut seq = 0;
            while seq < MIN_PER_LANE || !over.load(Ordering::SeqCst) {
                jobs.push((feeder.one(&lane, seq).await?, (lane.clone(), seq)));
                seq += 1;
                // Paced so the backlog stays small while the faults go on.
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            anyhow::Ok(jobs)
        });
    }
    let mut all = BTreeMap::new();
    while let Some(jobs) = lanes.join_next().await {
        all.extend(jobs??);
    }
    Ok(all)
}

/// Why `run` may legitimately have been followed by another run of its job: its handler
/// finished, but the agent's report was refused because the lease had lapsed meanwhile.
fn complete_lost(run: &Run, agent_logs: &[String]) -> Option<String> {
    let job = format!("job.id={} ", run.job);
    agent_logs.iter().flat_map(|l| l.lines()).find_map(|line| {
        let lost = line.contains("outcome not recorded") || line.contains("rejected as stale");
        (lost && line.contains(&job)).then(|| format!("Complete lost: {}", line.trim()))
    })
}

/// Each job completed once: one `job.completed` outbox row per job, and the replicas'
/// `lanes_jobs_completed_total` add up to the number of jobs.
async fn check_completions_counted_once(
    database_url: &str,
    expected: &BTreeMap<i64, (String, u64)>,
    metrics: &[String],
) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(database_url).await?;
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT job_id, count(*) FROM outbox WHERE event_type = 'job.completed' GROUP BY job_id",
    )
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    let per_job: BTreeMap<i64, i64> = rows.into_iter().collect();
    for id in expected.keys() {
        assert_eq!(per_job.get(id), Some(&1), "job.completed rows of job {id}");
    }
    assert_eq!(
        per_job.len(),
        expected.len(),
        "completion rows of unknown jobs"
    );
    let mut counted = 0.0;
    for addr in metrics {
        let m = scrape(&format!("http://{addr}/metrics")).await?;
        counted += m.value("lanes_jobs_completed_total", &[("queue", QUEUE)]);
    }
    assert_eq!(counted, expected.len() as f64, "completions counted");
    Ok(())
}
