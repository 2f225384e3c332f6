//! SIGTERM in the middle of a job. Within the grace period the job finishes and is
//! completed, the agent leases nothing more and exits 0. With a short grace period the
//! handler is stopped and the job handed back (`Fail{release}`): pending again without an
//! attempt counted, so the next lease is attempt 1 again; the agent exits 0.

use lanes_proto::v1 as pb;
use lanes_tests::agent::{
    enqueue, exec_python, fixture, start_agent, wait_connected, wait_job, wait_pid_gone,
    wait_pidfile,
};
use lanes_tests::{Coordinator, Signal, fresh_database};
use std::time::{Duration, Instant};

const QUEUE: &str = "invoice_import";

#[tokio::test]
async fn sigterm_lets_the_running_job_finish_then_exits_0() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let coord = Coordinator::start(&db.url, &[]).await?;
    let dir = tempfile::tempdir()?;
    let record = dir.path().join("runs.log");
    let exec = exec_python(&fixture("record_lane.py"))?;
    let args = ["--exec", exec.as_str(), "--grace-period-secs", "10"];
    let mut agent = start_agent(&coord.url(), "graceful", QUEUE, &args).await?;
    wait_connected(&coord, "graceful", Duration::from_secs(20)).await?;

    let mut client = coord.client().await?;
    let pidfile = dir.path().join("pid");
    let slow = serde_json::json!({"file": record, "lane": 1, "seq": 0, "sleep_ms": 1500, "pidfile": pidfile});
    let first = enqueue(&mut client, QUEUE, "resto-1", slow).await?;
    let next = serde_json::json!({"file": record, "lane": 1, "seq": 1, "sleep_ms": 5});
    let second = enqueue(&mut client, QUEUE, "resto-1", next).await?;
    wait_pidfile(&pidfile, Duration::from_secs(10)).await?;

    agent.signal(Signal::SIGTERM)?;
    let status = agent.wait_exit(Duration::from_secs(8)).await?;
    assert!(status.success(), "agent exit status {status:?}");
    let done = wait_job(&mut client, first, Duration::from_secs(1), |_| true).await?;
    assert_eq!(done.state, pb::JobState::Completed as i32, "{done:?}");
    let waiting = wait_job(&mut client, second, Duration::from_secs(1), |_| true).await?;
    assert_eq!(
        waiting.state,
        pb::JobState::Pending as i32,
        "leased after SIGTERM: {waiting:?}"
    );
    assert_eq!(waiting.attempt, 0);
    Ok(())
}

#[tokio::test]
async fn after_the_grace_period_the_job_is_handed_back_without_an_attempt() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let coord = Coordinator::start(&db.url, &[]).await?;
    let dir = tempfile::tempdir()?;
    let record = dir.path().join("runs.log");
    let exec = exec_python(&fixture("record_lane.py"))?;
    let args = ["--exec", exec.as_str(), "--grace-period-secs", "1"];
    let mut agent = start_agent(&coord.url(), "hasty", QUEUE, &args).await?;
    wait_connected(&coord, "hasty", Duration::from_secs(20)).await?;

    let mut client = coord.client().await?;
    let pidfile = dir.path().join("pid");
    let slow = serde_json::json!({"file": record, "lane": 1, "seq": 0, "sleep_ms": 10000, "pidfile": pidfile});
    let id = enqueue(&mut client, QUEUE, "resto-1", slow).await?;
    let handler = wait_pidfile(&pidfile, Duration::from_secs(10)).await?;

    let signalled = Instant::now();
    agent.signal(Signal::SIGTERM)?;
    let status = agent.wait_exit(Duration::from_secs(8)).await?;
    let took = signalled.elapsed();
    assert!(status.success(), "agent exit status {status:?}");
    assert!(
        took >= Duration::from_millis(900),
        "did not wait the grace period: {took:?}"
    );
    wait_pid_gone(handler, Duration::from_secs(1)).await?;

    let job = wait_job(&mut client, id, Duration::from_secs(1), |_| true).await?;
    assert_eq!(job.state, pb::JobState::Pending as i32, "{job:?}");
    assert_eq!(job.attempt, 0, "the released attempt was counted");
    assert_eq!(job.last_error, "");
    let again = coord
        .agent()
        .await?
        .lease(pb::LeaseRequest {
            agent_id: "next".into(),
            queues: vec![QUEUE.into()],
            request_id: String::new(),
        })
        .await?
        .into_inner()
        .job
        .expect("the released job is ready at once");
    assert_eq!((again.id, again.attempt), (id, 1));
    assert!(!record.exists(), "the stopped handler finished anyway");
    Ok(())
}
