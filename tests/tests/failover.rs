//! Failover (issue #16, item 3): a primary with a synchronous streaming standby
//! (`pg_basebackup -R`); two coordinators on the multi-host URL
//! `postgres://…@127.0.0.1:P1,127.0.0.1:P2/db?target_session_attrs=read-write`, a gateway and
//! four agents running a recording handler, jobs enqueued over many lanes through the
//! gateway. Mid-load the primary is stopped `-m immediate` (a crash) and the standby
//! promoted; nothing is restarted by the test.
//!
//! The coordinators move to the new primary by themselves, the gateway and agents ride the
//! outage out, and nothing acknowledged is lost: every job whose enqueue the gateway
//! acknowledged exists on the new primary and ran and completed exactly once (a re-run only
//! where the handler finished but its Complete was lost with the primary: counted), no two
//! jobs of a lane ran at once, each lane ran in enqueue order, lanes and counters agree.
//! That holds because the standby is synchronous: with asynchronous replication a commit
//! acknowledged just before the crash may be missing from the standby.

use lanes_tests::gateway::{ENQUEUE_KEY, Gateway, KEYS};
use lanes_tests::health::{wait_coordinator, wait_gateway_readyz};
use lanes_tests::load::{Feeder, completed, wait_completed};
use lanes_tests::records::{self, Run};
use lanes_tests::{
    ChildProc, Coordinator, PrivateCluster, StopMode, agent::start_agent, assert_lanes_agree,
    bin_path,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tonic_health::pb::health_check_response::ServingStatus;

const QUEUE: &str = "failover";
const LANES: u64 = 16;
/// Jobs the feeder enqueues per lane at least; it goes on until the failover is over.
const MIN_PER_LANE: u64 = 5;
/// Jobs that must complete before the failover, and after it: work ran, then resumed.
const PROGRESS: i64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinators_follow_a_promoted_standby_and_lose_nothing_acknowledged() -> anyhow::Result<()>
{
    let began = Instant::now();
    let wait = Duration::from_secs(60);
    let primary = PrivateCluster::replicated().await?;
    let db = primary.fresh_database().await?;
    let standby = primary.standby().await?;
    primary.require_sync_standby().await?;
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{}?target_session_attrs=read-write",
        primary.port(),
        standby.port(),
        db.name
    );
    let after = standby.database_url(&db.name);
    let mut a = Coordinator::start(&url, &[]).await?;
    let mut b = Coordinator::start(&url, &[]).await?;
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

    let feeder = Arc::new(Feeder::new(&gw, ENQUEUE_KEY, QUEUE, &record, 50));
    let over = Arc::new(AtomicBool::new(false));
    let feeding = tokio::spawn(feed(feeder.clone(), over.clone()));
    wait_completed(&db.url, QUEUE, PROGRESS, wait).await?;
    let started = pids(&[&a.proc, &b.proc, &gateway.proc]);

    // The failover: the primary crashes, the standby is promoted.
    let done_before = completed(&db.url, QUEUE).await.unwrap_or(0);
    let outage = Instant::now();
    primary.stop(StopMode::Immediate).await?;
    standby.promote().await?;
    for c in [&a, &b] {
        wait_coordinator(&c.url(), ServingStatus::Serving, wait).await?;
    }
    wait_gateway_readyz(&gw, 200, wait).await?;
    wait_completed(&after, QUEUE, done_before + PROGRESS, wait).await?;
    eprintln!(
        "failover: work resumed on the promoted standby {:?} after the crash",
        outage.elapsed()
    );

    over.store(true, Ordering::SeqCst);
    let expected = feeding.await??;
    wait_completed(&after, QUEUE, expected.len() as i64, wait).await?;

    // No binary restarted or exited.
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
    for c in [&a, &b] {
        let moved = lanes_tests::agent::log_lines(&c.proc, "the database primary moved")?;
        assert!(
            !moved.is_empty(),
            "{} never moved:\n{}",
            c.url(),
            c.proc.log_tail(30)
        );
    }

    // Every acknowledged enqueue is a job on the new primary, run and completed once.
    let runs = records::read(&record)?;
    let agent_logs: Vec<String> = agents
        .iter()
        .map(|p| std::fs::read_to_string(p.log_path()).unwrap_or_default())
        .collect();
    let report = records::check(&runs, &expected, |r| complete_lost(r, &agent_logs));
    eprintln!(
        "failover: {}; gateway answers {:?}; took {:?}",
        report.summary(),
        feeder.answers(),
        began.elapsed()
    );
    for r in &report.reruns {
        eprintln!("  re-run of job {}: {}", r.run.job, r.why);
    }
    report.assert_clean()?;
    assert!(
        !feeder.answers().contains_key("500"),
        "{:?}",
        feeder.answers()
    );
    assert_lanes_agree(&after).await
}

/// Feeds every lane at once, each lane's jobs one after the other (so their order is the
/// lane's), until `over` and at least `MIN_PER_LANE` each; returns job id → (lane, seq) of
/// every acknowledged enqueue.
async fn feed(
    feeder: Arc<Feeder>,
    over: Arc<AtomicBool>,
) -> anyhow::Result<BTreeMap<i64, (String, u64)>> {
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..LANES {
        let (feeder, over) = (feeder.clone(), over.clone());
        lanes.spawn(async move {
            let lane = format!("lane-{lane}");
            let mut jobs = Vec::new();
            let mut seq = 0;
            while seq < MIN_PER_LANE || !over.load(Ordering::SeqCst) {
                jobs.push((feeder.one(&lane, seq).await?, (lane.clone(), seq)));
                seq += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
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
/// finished, but the agent's report was refused (or lost with the primary) meanwhile.
fn complete_lost(run: &Run, agent_logs: &[String]) -> Option<String> {
    let job = format!("job.id={} ", run.job);
    agent_logs.iter().flat_map(|l| l.lines()).find_map(|line| {
        let lost = line.contains("outcome not recorded") || line.contains("rejected as stale");
        (lost && line.contains(&job)).then(|| format!("Complete lost: {}", line.trim()))
    })
}
