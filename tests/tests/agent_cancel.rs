//! Cancelling a running job: the agent learns it on its next heartbeat, kills the handler's
//! process group at once and reports `Fail{cancelled}`; the job ends `cancelled` and the
//! agent goes on with the lane's next job.

use lanes_proto::v1 as pb;
use lanes_tests::agent::{
    enqueue, exec_python, fixture, is_finished, start_agent, wait_connected, wait_job,
    wait_pid_gone, wait_pidfile,
};
use lanes_tests::{Coordinator, fresh_database};
use std::time::{Duration, Instant};

const QUEUE: &str = "invoice_import";

#[tokio::test]
async fn a_cancelled_running_job_stops_its_handler_and_ends_cancelled() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let coord = Coordinator::start(&db.url, &[]).await?;
    let dir = tempfile::tempdir()?;
    let record = dir.path().join("runs.log");
    let exec = exec_python(&fixture("record_lane.py"))?;
    let args = ["--exec", exec.as_str(), "--heartbeat-ms", "100"];
    let _agent = start_agent(&coord.url(), "canceller", QUEUE, &args).await?;
    wait_connected(&coord, "canceller", Duration::from_secs(20)).await?;

    let mut client = coord.client().await?;
    let pidfile = dir.path().join("pid");
    let slow = serde_json::json!({"file": record, "lane": 1, "seq": 0, "sleep_ms": 10000, "pidfile": pidfile});
    let id = enqueue(&mut client, QUEUE, "resto-1", slow).await?;
    let next = serde_json::json!({"file": record, "lane": 1, "seq": 1, "sleep_ms": 5});
    let after = enqueue(&mut client, QUEUE, "resto-1", next).await?;
    let handler = wait_pidfile(&pidfile, Duration::from_secs(10)).await?;

    let asked = Instant::now();
    let flagged = client
        .cancel_job(pb::CancelJobRequest { id })
        .await?
        .into_inner()
        .job
        .expect("job");
    assert!(flagged.cancel_requested, "{flagged:?}");
    wait_pid_gone(handler, Duration::from_secs(2)).await?;
    let job = wait_job(&mut client, id, Duration::from_secs(5), is_finished).await?;
    eprintln!("cancelled {:?} after the request", asked.elapsed());
    assert_eq!(job.state, pb::JobState::Cancelled as i32, "{job:?}");

    let next = wait_job(&mut client, after, Duration::from_secs(10), is_finished).await?;
    assert_eq!(next.state, pb::JobState::Completed as i32, "{next:?}");
    let runs = std::fs::read_to_string(&record)?;
    assert_eq!(
        runs.lines().count(),
        1,
        "only the next job finished: {runs}"
    );
    Ok(())
}
