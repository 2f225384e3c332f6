//! The lane guarantees under real parallel load: 16 concurrent leasers over gRPC, 200 lanes,
//! 5,000 jobs, random retryable failures and abandoned leases. The test records every lease
//! and outcome, then checks the invariants over the whole record.

use lanes_proto::v1 as pb;
use lanes_proto::v1::agent_service_client::AgentServiceClient;
use lanes_tests::{Coordinator, fresh_database};
use rand::Rng;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::Code;
use tonic::transport::Channel;

const QUEUE: &str = "invoice_import";
const LANES: usize = 200;
const PER_LANE: usize = 25;
const LEASERS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Completed,
    /// Retryable failure; `true` when the coordinator answered `failed` (attempts exhausted).
    Failed(bool),
    Abandoned,
}

/// One lease, as the leaser saw it. Times are client-side nanoseconds since the test began:
/// `start` after Lease returned, `end` before Complete/Fail was sent, so [start, end] lies
/// inside the real hold of the lease and two of them may only overlap if two holds did.
#[derive(Debug, Clone)]
struct Record {
    lane: usize,
    seq: usize,
    job: i64,
    token: i64,
    attempt: i32,
    start: u128,
    end: u128,
    outcome: Outcome,
}

struct Shared {
    origin: Instant,
    records: Mutex<Vec<Record>>,
    finished: AtomicUsize,
    abandoned: Mutex<Vec<(i64, i64)>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lane_guarantees_hold_under_parallel_load_and_abandoned_leases() -> anyhow::Result<()> {
    run_load(&[]).await
}

async fn run_load(coordinator_args: &[&str]) -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let coord = Coordinator::start(&db.url, coordinator_args).await?;
    let mut admin = coord.admin().await?;
    admin
        .set_queue_settings(pb::SetQueueSettingsRequest {
            queue: QUEUE.into(),
            max_attempts: Some(6),
            lease_ttl_ms: Some(1000),
            backoff_initial_ms: Some(10),
            backoff_max_ms: Some(100),
            ..Default::default()
        })
        .await?;
    let order = enqueue_interleaved(&coord).await?;

    let shared = Arc::new(Shared {
        origin: Instant::now(),
        records: Mutex::new(Vec::new()),
        finished: AtomicUsize::new(0),
        abandoned: Mutex::new(Vec::new()),
    });
    let mut leasers = tokio::task::JoinSet::new();
    for n in 0..LEASERS {
        let agent = coord.agent().await?;
        leasers.spawn(lease_until_done(agent, n, shared.clone(), order.clone()));
    }
    let run = async {
        while let Some(r) = leasers.join_next().await {
            r??;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(180), run).await??;

    let records = shared.records.lock().expect("records").clone();
    check_exclusive_fifo(&records, &order);
    check_tokens_and_attempts(&records);
    check_stale_tokens_rejected(&coord, &shared).await?;
    check_database_settled(&db.url, order.len()).await?;
    let abandoned = records
        .iter()
        .filter(|r| r.outcome == Outcome::Abandoned)
        .count();
    let retried = records
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
        .count();
    assert!(
        abandoned > 10 && retried > 100,
        "the load exercised too little: {abandoned} abandoned, {retried} retried"
    );
    Ok(())
}

/// Enqueues lane by lane round-robin (seq 0 of every lane, then seq 1, …) in batches, and
/// returns each job's (lane, seq) by id.
async fn enqueue_interleaved(
    coord: &Coordinator,
) -> anyhow::Result<Arc<HashMap<i64, (usize, usize)>>> {
    let mut client = coord.client().await?;
    let all: Vec<(usize, usize)> = (0..PER_LANE)
        .flat_map(|s| (0..LANES).map(move |l| (l, s)))
        .collect();
    let mut order = HashMap::new();
    for chunk in all.chunks(500) {
        let jobs = chunk
            .iter()
            .map(|&(lane, seq)| pb::EnqueueRequest {
                queue: QUEUE.into(),
                lane: format!("resto-{lane}"),
                payload: format!(r#"{{"lane":{lane},"seq":{seq}}}"#),
                ..Default::default()
            })
            .collect();
        let res = client
            .enqueue_batch(pb::EnqueueBatchRequest { jobs })
            .await?
            .into_inner();
        for (r, &(lane, seq)) in res.results.iter().zip(chunk) {
            let job = r.job.as_ref().expect("job");
            assert_eq!(
                r.position_in_lane, seq as i64,
                "position of seq {seq} in lane {lane}"
            );
            order.insert(job.id, (lane, seq));
        }
    }
    Ok(Arc::new(order))
}

async fn lease_until_done(
    mut agent: AgentServiceClient<Channel>,
    n: usize,
    shared: Arc<Shared>,
    order: Arc<HashMap<i64, (usize, usize)>>,
) -> anyhow::Result<()> {
    let id = format!("leaser-{n}");
    let queues = vec![QUEUE.to_string()];
    // Half the leasers ask for their next job in the Complete/Fail round trip.
    let lease_next = n.is_multiple_of(2);
    let mut held: Option<pb::LeasedJob> = None;
    let now = |s: &Shared| s.origin.elapsed().as_nanos();
    while shared.finished.load(Ordering::SeqCst) < order.len() {
        let job = match held.take() {
            Some(j) => j,
            None => match agent
                .lease(pb::LeaseRequest {
                    agent_id: id.clone(),
                    queues: queues.clone(),
                    request_id: String::new(),
                })
                .await?
                .into_inner()
                .job
            {
                Some(j) => j,
                None => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let start = now(&shared);
        let (lane, seq) = order[&job.id];
        let roll: f64 = rand::rng().random();
        let mut rec = Record {
            lane,
            seq,
            job: job.id,
            token: job.lease_token,
            attempt: job.attempt,
            start,
            end: 0,
            outcome: Outcome::Completed,
        };
        if roll < 0.02 {
            rec.end = start;
            rec.outcome = Outcome::Abandoned;
            shared
                .abandoned
                .lock()
                .expect("abandoned")
                .push((job.id, job.lease_token));
            shared.records.lock().expect("records").push(rec);
            continue;
        }
        rec.end = now(&shared);
        if roll < 0.15 {
            let res = agent
                .fail(pb::FailRequest {
                    job_id: job.id,
                    lease_token: job.lease_token,
                    error: "transient".into(),
                    retryable: true,
                    lease_next,
                    agent_id: id.clone(),
                    queues: queues.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let gave_up = res.state == pb::JobState::Failed as i32;
            rec.outcome = Outcome::Failed(gave_up);
            if gave_up {
                shared.finished.fetch_add(1, Ordering::SeqCst);
            }
            held = res.next;
        } else {
            let res = agent
                .complete(pb::CompleteRequest {
                    job_id: job.id,
                    lease_token: job.lease_token,
                    result: format!(r#"{{"by":"{id}"}}"#),
                    lease_next,
                    agent_id: id.clone(),
                    queues: queues.clone(),
                    request_id: String::new(),
                })
                .await?
                .into_inner();
            shared.finished.fetch_add(1, Ordering::SeqCst);
            held = res.next;
        }
        shared.records.lock().expect("records").push(rec);
    }
    if let Some(j) = held {
        anyhow::bail!(
            "leaser {n} still holds job {} after all jobs finished",
            j.id
        );
    }
    Ok(())
}

/// Per lane, in lease (token) order: holds never overlap, and the lane only moves to its next
/// job after the previous one finished for good — strict FIFO, retries included.
fn check_exclusive_fifo(records: &[Record], order: &HashMap<i64, (usize, usize)>) {
    let mut by_lane: BTreeMap<usize, Vec<&Record>> = BTreeMap::new();
    for r in records {
        by_lane.entry(r.lane).or_default().push(r);
    }
    assert_eq!(by_lane.len(), LANES);
    for (lane, mut recs) in by_lane {
        recs.sort_by_key(|r| r.token);
        let mut expected_seq = 0;
        for pair in recs.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(
                b.start >= a.end,
                "lane {lane}: job {} leased at {} before job {} was let go at {}",
                b.job,
                b.start,
                a.job,
                a.end
            );
            let finished = matches!(a.outcome, Outcome::Completed | Outcome::Failed(true));
            let want = if finished { a.seq + 1 } else { a.seq };
            assert_eq!(
                b.seq, want,
                "lane {lane}: after seq {} ({:?}) came seq {}",
                a.seq, a.outcome, b.seq
            );
            expected_seq = b.seq;
        }
        assert_eq!(
            expected_seq,
            PER_LANE - 1,
            "lane {lane} did not reach its last job"
        );
        let first = recs[0];
        assert_eq!(
            (first.seq, order[&first.job].1),
            (0, 0),
            "lane {lane} started with seq {}",
            first.seq
        );
    }
}

/// Tokens are unique (strictly increasing across leases) and each job's attempts count 1, 2, …
fn check_tokens_and_attempts(records: &[Record]) {
    let tokens: HashSet<i64> = records.iter().map(|r| r.token).collect();
    assert_eq!(
        tokens.len(),
        records.len(),
        "a fencing token was handed out twice"
    );
    let mut by_job: HashMap<i64, Vec<&Record>> = HashMap::new();
    for r in records {
        by_job.entry(r.job).or_default().push(r);
    }
    for (job, mut recs) in by_job {
        recs.sort_by_key(|r| r.token);
        let attempts: Vec<i32> = recs.iter().map(|r| r.attempt).collect();
        let want: Vec<i32> = (1..=recs.len() as i32).collect();
        assert_eq!(attempts, want, "job {job}: attempts in lease order");
        let completions = recs
            .iter()
            .filter(|r| r.outcome == Outcome::Completed)
            .count();
        assert!(completions <= 1, "job {job} completed {completions} times");
    }
}

/// Every abandoned lease was re-delivered, so its token is stale: completing with it must be
/// refused and must not change the job.
async fn check_stale_tokens_rejected(coord: &Coordinator, shared: &Shared) -> anyhow::Result<()> {
    let mut agent = coord.agent().await?;
    let mut client = coord.client().await?;
    let abandoned = shared.abandoned.lock().expect("abandoned").clone();
    for (job, token) in abandoned {
        let before = client
            .get_job(pb::GetJobRequest { id: job })
            .await?
            .into_inner()
            .job
            .expect("job");
        let err = agent
            .complete(pb::CompleteRequest {
                job_id: job,
                lease_token: token,
                result: r#""stale""#.into(),
                ..Default::default()
            })
            .await
            .expect_err("a stale token must be rejected");
        assert_eq!(err.code(), Code::FailedPrecondition, "job {job}: {err}");
        let after = client
            .get_job(pb::GetJobRequest { id: job })
            .await?
            .into_inner()
            .job
            .expect("job");
        assert_eq!(before, after, "job {job} changed after a stale completion");
    }
    Ok(())
}

async fn check_database_settled(url: &str, jobs: usize) -> anyhow::Result<()> {
    lanes_tests::assert_lanes_agree(url).await?;
    let pool = sqlx::PgPool::connect(url).await?;
    let unfinished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state IN ('pending', 'running')")
            .fetch_one(&pool)
            .await?;
    let lanes: i64 = sqlx::query_scalar("SELECT count(*) FROM lanes")
        .fetch_one(&pool)
        .await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&pool)
        .await?;
    assert_eq!(
        (unfinished, lanes, total),
        (0, 0, jobs as i64),
        "(unfinished jobs, lane rows, jobs)"
    );
    Ok(())
}
