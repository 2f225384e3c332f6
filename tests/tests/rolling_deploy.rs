//! Rolling deploys: a coordinator that gets SIGTERM ends its agents' wake streams with
//! UNAVAILABLE, so they move to the other replica at once; it finishes the calls in flight
//! and exits. Work enqueued right after starts without waiting, the outcome of a job that
//! finishes while its coordinator goes away reaches the other replica (never dropped as a
//! lost lease), and a rolling restart of both replicas under load loses, repeats and
//! reorders nothing. Every handler run is recorded ("lane seq start end pid job").

use lanes_proto::v1 as pb;
use lanes_tests::agent::{
    enqueue, exec_python, fixture, is_finished, start_agent, wait_connected, wait_job, wait_pidfile,
};
use lanes_tests::{Coordinator, Signal, assert_lanes_agree, fresh_database};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const QUEUE: &str = "invoice_import";

/// One handler run: (lane, seq, start_ns, end_ns, job).
type Run = (String, usize, u128, u128, i64);

/// Every handler run recorded.
fn runs(record: &std::path::Path) -> anyhow::Result<Vec<Run>> {
    let text = std::fs::read_to_string(record).unwrap_or_default();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            anyhow::ensure!(f.len() == 6, "bad record line {l:?}");
            Ok((
                f[0].to_owned(),
                f[1].parse()?,
                f[2].parse()?,
                f[3].parse()?,
                f[5].parse()?,
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_going_away_sends_its_agents_to_the_other_at_once() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let mut a = Coordinator::start(&db.url, &[]).await?;
    let b = Coordinator::start(&db.url, &[]).await?;
    let dir = tempfile::tempdir()?;
    let record = dir.path().join("runs.log");
    let exec = exec_python(&fixture("record_lane.py"))?;
    // Every agent tries A first.
    let both = format!("{},{}", a.url(), b.url());
    let mut agents = Vec::new();
    for n in 0..4 {
        let id = format!("agent-{n}");
        agents.push(start_agent(&both, &id, QUEUE, &["--exec", &exec]).await?);
        wait_connected(&a, &id, Duration::from_secs(30)).await?;
    }
    // Two agents busy with jobs that end after A got its SIGTERM; two idle.
    let mut client = b.client().await?;
    let mut busy = Vec::new();
    for lane in 0..2 {
        let pidfile = dir.path().join(format!("busy-{lane}"));
        let payload = serde_json::json!({"file": record, "lane": lane, "seq": 0,
            "sleep_ms": 1500, "pidfile": pidfile});
        busy.push(enqueue(&mut client, QUEUE, &format!("resto-{lane}"), payload).await?);
        wait_pidfile(&pidfile, Duration::from_secs(20)).await?;
    }

    let stopping = Instant::now();
    a.proc.signal(Signal::SIGTERM)?;
    let pidfile = dir.path().join("after");
    let payload = serde_json::json!({"file": record, "lane": 9, "seq": 0, "pidfile": pidfile});
    let after = enqueue(&mut client, QUEUE, "resto-9", payload).await?;
    wait_pidfile(&pidfile, Duration::from_secs(30)).await?;
    let started = stopping.elapsed();
    a.proc.wait_exit(Duration::from_secs(30)).await?;
    let exited = stopping.elapsed();
    eprintln!("after SIGTERM: a new job started in {started:?}; the replica exited in {exited:?}");
    // Before graceful drain, idle agents stayed on the stopping replica ~84 s.
    assert!(started < Duration::from_secs(10), "work waited {started:?}");

    for id in busy.iter().chain([&after]) {
        let job = wait_job(&mut client, *id, Duration::from_secs(60), is_finished).await?;
        assert_eq!(job.state, pb::JobState::Completed as i32, "{job:?}");
        assert_eq!(
            job.attempt, 1,
            "job {id}: its outcome was delivered, not dropped"
        );
    }
    let ran: Vec<i64> = runs(&record)?.into_iter().map(|r| r.4).collect();
    assert_eq!(ran.len(), 3, "each job ran once: {ran:?}");
    drop(agents);
    assert_lanes_agree(&db.url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_and_repeats_nothing() -> anyhow::Result<()> {
    const LANES: usize = 8;
    const PER_LANE: usize = 25;
    let db = fresh_database().await?;
    let mut a = Coordinator::start(&db.url, &[]).await?;
    let mut b = Coordinator::start(&db.url, &[]).await?;
    let dir = tempfile::tempdir()?;
    let record = dir.path().join("runs.log");
    let exec = exec_python(&fixture("record_lane.py"))?;
    let mut agents = Vec::new();
    for n in 0..4 {
        let order = if n % 2 == 0 {
            format!("{},{}", a.url(), b.url())
        } else {
            format!("{},{}", b.url(), a.url())
        };
        let id = format!("agent-{n}");
        agents.push(start_agent(&order, &id, QUEUE, &["--exec", &exec]).await?);
    }
    // Jobs keep arriving through whichever replica is up while both restart in turn.
    let urls = [a.url(), b.url()];
    let record_path = record.clone();
    let feeder = tokio::spawn(async move {
        let mut ids = Vec::new();
        for seq in 0..PER_LANE {
            for lane in 0..LANES {
                let payload = serde_json::json!({"file": record_path, "lane": lane,
                    "seq": seq, "sleep_ms": 20});
                ids.push(enqueue_somewhere(&urls, lane, payload).await?);
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        anyhow::Ok(ids)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let took_a = a.restart_gracefully().await?;
    let took_b = b.restart_gracefully().await?;
    eprintln!("graceful stops took {took_a:?} and {took_b:?}");
    let ids = feeder.await??;

    let mut client = b.client().await?;
    for id in &ids {
        let job = wait_job(&mut client, *id, Duration::from_secs(120), is_finished).await?;
        assert_eq!(job.state, pb::JobState::Completed as i32, "{job:?}");
        assert_eq!(job.attempt, 1, "job {id} ran once, no lease lapsed");
    }
    let runs = runs(&record)?;
    assert_eq!(runs.len(), ids.len(), "every job ran exactly once");
    let mut by_lane: BTreeMap<String, Vec<(usize, u128, u128)>> = BTreeMap::new();
    for (lane, seq, start, end, _) in runs {
        by_lane.entry(lane).or_default().push((seq, start, end));
    }
    for (lane, mut rs) in by_lane {
        rs.sort_by_key(|r| r.1);
        let seqs: Vec<usize> = rs.iter().map(|r| r.0).collect();
        assert_eq!(
            seqs,
            (0..PER_LANE).collect::<Vec<_>>(),
            "lane {lane} ran in order"
        );
        for w in rs.windows(2) {
            assert!(w[0].2 <= w[1].1, "lane {lane}: two runs overlap");
        }
    }
    drop(agents);
    assert_lanes_agree(&db.url).await
}

/// Enqueues through the first replica that answers (the other may be restarting).
async fn enqueue_somewhere(
    urls: &[String; 2],
    lane: usize,
    payload: serde_json::Value,
) -> anyhow::Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut turn = lane;
    loop {
        let url = &urls[turn % 2];
        turn += 1;
        // An idempotency key, as n8n sends: a repeat after a lost reply is the same job.
        let req = pb::EnqueueRequest {
            queue: QUEUE.into(),
            lane: format!("resto-{lane}"),
            idempotency_key: format!("{lane}-{}", payload["seq"]),
            payload: payload.to_string(),
            ..Default::default()
        };
        let tried = async {
            let mut c =
                pb::client_service_client::ClientServiceClient::connect(url.clone()).await?;
            let job = c.enqueue(req.clone()).await?.into_inner().job;
            anyhow::Ok(job.map_or(0, |j| j.id))
        };
        match tried.await {
            Ok(id) => return Ok(id),
            Err(e) if Instant::now() < deadline => {
                eprintln!("enqueue via {url} failed ({e}); trying the other replica");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
