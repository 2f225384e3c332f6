//! Nothing is lost when the coordinator dies: leasers keep working through two `kill -9`
//! restarts of the coordinator; every job completes exactly once, in lane order.

use lanes_proto::v1 as pb;
use lanes_proto::v1::agent_service_client::AgentServiceClient;
use lanes_tests::{Coordinator, fresh_database};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

const QUEUE: &str = "crashy";
const LANES: usize = 40;
const PER_LANE: usize = 20;

/// (lane, seq, token) of every successful completion, in the order the leasers saw them.
type Log = Arc<Mutex<Vec<(usize, usize, i64)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_survive_coordinator_kill9_restarts() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let mut coord = Coordinator::start(&db.url, &[]).await?;
    let mut client = coord.client().await?;
    let mut seq_of = HashMap::new();
    for seq in 0..PER_LANE {
        let jobs = (0..LANES)
            .map(|lane| pb::EnqueueRequest {
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
        for (lane, r) in res.results.iter().enumerate() {
            seq_of.insert(r.job.as_ref().expect("job").id, (lane, seq));
        }
    }
    let seq_of = Arc::new(seq_of);
    let log: Log = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut leasers = tokio::task::JoinSet::new();
    for n in 0..4 {
        let channel = Channel::from_shared(coord.url())?.connect_lazy();
        let agent = AgentServiceClient::new(channel);
        leasers.spawn(work(agent, n, seq_of.clone(), log.clone(), stop.clone()));
    }
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        coord.restart().await?;
    }
    let total = LANES * PER_LANE;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while log.lock().expect("log").len() < total && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    while let Some(r) = leasers.join_next().await {
        r??;
    }

    let log = log.lock().expect("log").clone();
    assert_eq!(log.len(), total, "completions acknowledged");
    let mut by_lane: BTreeMap<usize, Vec<(i64, usize)>> = BTreeMap::new();
    for (lane, seq, token) in log {
        by_lane.entry(lane).or_default().push((token, seq));
    }
    for (lane, mut done) in by_lane {
        done.sort();
        let seqs: Vec<usize> = done.iter().map(|d| d.1).collect();
        assert_eq!(
            seqs,
            (0..PER_LANE).collect::<Vec<_>>(),
            "lane {lane}: completion order"
        );
    }
    let pool = sqlx::PgPool::connect(&db.url).await?;
    let completed: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'completed'")
        .fetch_one(&pool)
        .await?;
    assert_eq!(completed, total as i64);
    lanes_tests::assert_lanes_agree(&db.url).await
}

/// Leases and completes until told to stop, retrying through the coordinator's downtime.
/// A completion that fails in flight is retried with the same token: it must succeed if
/// the lease still holds (TTL 30 s ≫ restart time), or be refused as stale, never twice.
async fn work(
    mut agent: AgentServiceClient<Channel>,
    n: usize,
    seq_of: Arc<HashMap<i64, (usize, usize)>>,
    log: Log,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let id = format!("leaser-{n}");
    let queues = vec![QUEUE.to_string()];
    while !stop.load(Ordering::SeqCst) {
        let job = match agent
            .lease(pb::LeaseRequest {
                agent_id: id.clone(),
                queues: queues.clone(),
                request_id: String::new(),
            })
            .await
        {
            Ok(r) => r.into_inner().job,
            // A call cut by the kill: refused, reset, or cancelled with its connection
            // (hyper's "connection closed"), as the agent's own retry list has it.
            Err(e)
                if matches!(
                    e.code(),
                    Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
                ) =>
            {
                None
            }
            Err(e) => return Err(e.into()),
        };
        let Some(job) = job else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        loop {
            let req = pb::CompleteRequest {
                job_id: job.id,
                lease_token: job.lease_token,
                result: "{}".into(),
                ..Default::default()
            };
            match agent.complete(req).await {
                Ok(_) => {
                    let (lane, seq) = seq_of[&job.id];
                    log.lock().expect("log").push((lane, seq, job.lease_token));
                    break;
                }
                Err(e) if e.code() == Code::FailedPrecondition => {
                    // Possible only if the first try committed before the connection broke;
                    // then that try counts, and the job is completed (checked at the end).
                    let (lane, seq) = seq_of[&job.id];
                    log.lock().expect("log").push((lane, seq, job.lease_token));
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    Ok(())
}
