//! Two coordinator replicas on one database: a wake crosses replicas through Postgres
//! LISTEN/NOTIFY, and the lane guarantees (FIFO, one job at a time per lane, each job
//! completed exactly once) hold with enqueuers and leasers split across both replicas.

use lanes_proto::v1 as pb;
use lanes_tests::jobs::*;
use lanes_tests::{Coordinator, fresh_database};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const Q: &str = "invoice_import";

#[tokio::test]
async fn an_enqueue_on_one_replica_wakes_an_idle_agent_on_the_other() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    // Slow safety ticks: only the cross-replica NOTIFY can deliver this wake in time.
    let a = Coordinator::start_slow_tick(&db.url).await?;
    let b = Coordinator::start_slow_tick(&db.url).await?;
    let (client_a, admin_a, agent_b) = (a.client().await?, a.admin().await?, b.agent().await?);
    let mut wakes = Wakes::open(&agent_b, "idle", &[Q]).await?;
    assert!(lease(&agent_b, "idle", &[Q]).await?.is_none(), "now asleep");
    // Replica A sees the agent that B holds, asleep.
    let agents = admin_a
        .clone()
        .list_agents(pb::ListAgentsRequest {})
        .await?;
    let agents = agents.into_inner().agents;
    let pid_b = b.proc.id().expect("B runs");
    assert_eq!(agents.len(), 1);
    assert_eq!(
        (&*agents[0].agent_id, &*agents[0].state),
        ("idle", "asleep")
    );
    assert!(agents[0].coordinator_id.ends_with(&format!("-{pid_b}")));

    let start = Instant::now();
    enqueue(&client_a, Q, "L", "{}").await?;
    let e = wakes.next(Duration::from_secs(2)).await?;
    let e = e.expect("B's agent is woken by A's enqueue");
    assert_eq!((&*e.queue, &*e.reason), (Q, "enqueue"));
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(lease(&agent_b, "idle", &[Q]).await?.is_some());
    Ok(())
}

const LANES: usize = 20;
const PER_LANE: usize = 25;
const LEASERS: usize = 8;

/// One lease as its leaser saw it, in client-side time since the test began: `start` when the
/// job was in hand (Lease or Complete answered), `end` just before Complete was sent. This
/// interval lies inside the real hold, so two of them overlap only if two holds did.
#[derive(Debug, Clone, Copy)]
struct Hold {
    job: i64,
    token: i64,
    start: Duration,
    end: Duration,
}

struct Shared {
    origin: Instant,
    holds: Mutex<BTreeMap<usize, Vec<Hold>>>,
    completed: AtomicUsize,
}

/// Enqueues jobs `seqs` of its lanes one call at a time, alternating between the replicas'
/// clients; returns each lane's jobs in enqueue order.
async fn enqueue_lanes(
    clients: [Client; 2],
    lanes: Vec<usize>,
    seqs: std::ops::Range<usize>,
) -> anyhow::Result<BTreeMap<usize, Vec<i64>>> {
    let mut order: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
    let mut n = 0;
    for seq in seqs {
        for &lane in &lanes {
            n += 1;
            let payload = format!(r#"{{"lane":{lane},"seq":{seq}}}"#);
            let id = enqueue(&clients[n % 2], Q, &format!("lane-{lane}"), &payload).await?;
            order.entry(lane).or_default().push(id.job.expect("job").id);
        }
    }
    Ok(order)
}

/// Leases and completes at once until every job is done; with `hand_off`, takes its next job
/// from Complete's `lease_next`.
async fn lease_until_done(
    agent: Agent,
    agent_id: String,
    hand_off: bool,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    let total = LANES * PER_LANE;
    let mut in_hand: Option<(pb::LeasedJob, Duration)> = None;
    while shared.completed.load(Ordering::SeqCst) < total {
        let (job, start) = match in_hand.take() {
            Some(held) => held,
            None => match lease(&agent, &agent_id, &[Q]).await? {
                Some(job) => (job, shared.origin.elapsed()),
                None => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
        };
        let end = shared.origin.elapsed();
        let req = pb::CompleteRequest {
            job_id: job.id,
            lease_token: job.lease_token,
            lease_next: hand_off,
            agent_id: agent_id.clone(),
            queues: vec![Q.into()],
            ..Default::default()
        };
        let next = agent.clone().complete(req).await?.into_inner().next;
        in_hand = next.map(|n| (n, shared.origin.elapsed()));
        let lane: usize = job.lane.trim_start_matches("lane-").parse()?;
        let hold = Hold {
            job: job.id,
            token: job.lease_token,
            start,
            end,
        };
        let mut holds = shared.holds.lock().expect("not poisoned");
        holds.entry(lane).or_default().push(hold);
        shared.completed.fetch_add(1, Ordering::SeqCst);
    }
    // A job handed over after the last count would be left running: none may exist.
    anyhow::ensure!(in_hand.is_none(), "leased a job after all were done");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lanes_stay_fifo_and_exclusive_across_two_replicas() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let replicas = [
        Coordinator::start(&db.url, &[]).await?,
        Coordinator::start(&db.url, &[]).await?,
    ];
    let clients = [replicas[0].client().await?, replicas[1].client().await?];
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        holds: Mutex::new(BTreeMap::new()),
        completed: AtomicUsize::new(0),
    });
    // Two enqueuers (even and odd lanes): 15 jobs per lane first, so lanes have a backlog and
    // their order shows, then the other 10 while the leasers work.
    let enqueuers = |seqs: std::ops::Range<usize>| {
        let mut set = tokio::task::JoinSet::new();
        for parity in 0..2 {
            let lanes = (0..LANES).filter(|l| l % 2 == parity).collect();
            set.spawn(enqueue_lanes(clients.clone(), lanes, seqs.clone()));
        }
        set
    };
    let mut enqueued: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
    let mut backlog = enqueuers(0..15);
    while let Some(r) = backlog.join_next().await {
        enqueued.extend(r??);
    }
    let mut enqueuers = enqueuers(15..PER_LANE);
    let mut leasers = tokio::task::JoinSet::new();
    for n in 0..LEASERS {
        let agent = replicas[n % 2].agent().await?;
        let hand_off = n % 4 >= 2;
        leasers.spawn(lease_until_done(
            agent,
            format!("leaser-{n}"),
            hand_off,
            shared.clone(),
        ));
    }
    let run = async {
        while let Some(r) = enqueuers.join_next().await {
            for (lane, ids) in r?? {
                enqueued.entry(lane).or_default().extend(ids);
            }
        }
        while let Some(r) = leasers.join_next().await {
            r??;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(120), run).await??;

    let holds = shared.holds.lock().expect("not poisoned").clone();
    let all: Vec<i64> = holds.values().flatten().map(|h| h.job).collect();
    let distinct: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), LANES * PER_LANE, "completions");
    assert_eq!(distinct.len(), all.len(), "a job was completed twice");
    for (lane, mut lane_holds) in holds {
        lane_holds.sort_by_key(|h| h.start);
        for w in lane_holds.windows(2) {
            let (a, b) = (w[0], w[1]);
            assert!(a.end < b.start, "lane {lane}: {a:?} overlaps {b:?}");
            assert!(
                a.token < b.token,
                "lane {lane}: fencing tokens must increase"
            );
        }
        let leased: Vec<i64> = lane_holds.iter().map(|h| h.job).collect();
        assert_eq!(leased, enqueued[&lane], "lane {lane} lease order");
    }
    let stats = clients[1]
        .clone()
        .get_stats(pb::GetStatsRequest::default())
        .await?;
    let stats = stats.into_inner();
    let totals = stats.totals.expect("totals");
    assert_eq!(
        (totals.completed, totals.pending, totals.running),
        ((LANES * PER_LANE) as i64, 0, 0)
    );
    assert_eq!(stats.queues[0].active_lanes, 0, "every lane row is gone");
    lanes_tests::assert_lanes_agree(&db.url).await
}
