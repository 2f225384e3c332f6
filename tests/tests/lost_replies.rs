//! A lost reply must not strand a job. A real agent talks to a real coordinator through a
//! proxy that loses one reply after the coordinator acted on the call: the Lease that leased
//! the job, or the Complete that handed the agent its next job. The agent sends the same
//! request again (same request id); the coordinator answers as it did the first time, so
//! each job runs once, as attempt 1, long before its lease could lapse. With max_attempts 1,
//! a stranded job would instead end failed without ever running.

use lanes_proto::v1 as pb;
use lanes_tests::agent::{enqueue, exec_python, fixture, start_agent, wait_job};
use lanes_tests::proxy::DropReply;
use lanes_tests::{Coordinator, assert_lanes_agree, fresh_database};
use std::time::Duration;

const QUEUE: &str = "invoice_import";
/// Generous for a loaded machine, and far below what a stranded job would need (its lease
/// must lapse, then be reaped: the queue's TTL is 5 minutes here).
const DEADLINE: Duration = Duration::from_secs(60);

struct Run {
    coord: Coordinator,
    _db: lanes_tests::TestDb,
    record: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup() -> anyhow::Result<Run> {
    let db = fresh_database().await?;
    let coord = Coordinator::start(&db.url, &[]).await?;
    coord
        .admin()
        .await?
        .set_queue_settings(pb::SetQueueSettingsRequest {
            queue: QUEUE.into(),
            max_attempts: Some(1),
            lease_ttl_ms: Some(300_000),
            ..Default::default()
        })
        .await?;
    let dir = tempfile::tempdir()?;
    let record = dir.path().join("runs.log");
    Ok(Run {
        coord,
        _db: db,
        record,
        _dir: dir,
    })
}

/// The jobs the handler ran, in the order it ran them (job ids, one line per run).
fn runs(record: &std::path::Path) -> anyhow::Result<Vec<i64>> {
    let text = std::fs::read_to_string(record).unwrap_or_default();
    Ok(text
        .lines()
        .map(|l| l.split_whitespace().nth(5).unwrap_or("0").parse())
        .collect::<Result<_, _>>()?)
}

async fn enqueue_record(run: &Run, lane: &str, seq: usize) -> anyhow::Result<i64> {
    let payload = serde_json::json!({"file": run.record, "lane": lane, "seq": seq});
    enqueue(&mut run.coord.client().await?, QUEUE, lane, payload).await
}

async fn finished(run: &Run, id: i64) -> anyhow::Result<pb::Job> {
    let mut client = run.coord.client().await?;
    wait_job(&mut client, id, DEADLINE, lanes_tests::agent::is_finished).await
}

#[tokio::test]
async fn a_lost_lease_reply_gets_the_same_lease_back() -> anyhow::Result<()> {
    let run = setup().await?;
    let id = enqueue_record(&run, "resto-1", 0).await?;
    // The agent's first unary call is its Lease: that reply is lost.
    let proxy = DropReply::start(&run.coord.addr.to_string(), 1).await?;
    let exec = exec_python(&fixture("record_lane.py"))?;
    let _agent = start_agent(&proxy.url, "a1", QUEUE, &["--exec", &exec]).await?;
    let job = finished(&run, id).await?;
    assert!(proxy.dropped(), "the proxy lost the Lease reply");
    assert_eq!(job.state, pb::JobState::Completed as i32, "{job:?}");
    assert_eq!(job.attempt, 1, "ran as its first attempt");
    assert_eq!(runs(&run.record)?, vec![id], "the handler ran once");
    assert_lanes_agree(&run.coord.database_url).await
}

#[tokio::test]
async fn a_lost_hand_off_reply_gets_the_same_next_job() -> anyhow::Result<()> {
    let run = setup().await?;
    let first = enqueue_record(&run, "resto-1", 0).await?;
    let second = enqueue_record(&run, "resto-1", 1).await?;
    // Lease (1st reply) brings the first job; Complete with lease_next (2nd reply) completes
    // it and leases the second: that reply is lost.
    let proxy = DropReply::start(&run.coord.addr.to_string(), 2).await?;
    let exec = exec_python(&fixture("record_lane.py"))?;
    let _agent = start_agent(&proxy.url, "a1", QUEUE, &["--exec", &exec]).await?;
    let last = finished(&run, second).await?;
    let one = finished(&run, first).await?;
    assert!(proxy.dropped(), "the proxy lost the Complete reply");
    for job in [&one, &last] {
        assert_eq!(job.state, pb::JobState::Completed as i32, "{job:?}");
        assert_eq!(job.attempt, 1, "job {} ran as its first attempt", job.id);
    }
    assert_eq!(
        runs(&run.record)?,
        vec![first, second],
        "each ran once, in order"
    );
    assert_lanes_agree(&run.coord.database_url).await
}
