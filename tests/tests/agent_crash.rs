//! `kill -9` of an agent in the middle of a job. The handler must die with the agent
//! (PR_SET_PDEATHSIG), so it can never finish the job behind the coordinator's back; the
//! job stays `running` until its lease lapses (TTL 1 s), the reaper returns it to its lane,
//! and another agent — woken, not polling — runs it to completion exactly once.

use lanes_proto::v1 as pb;
use lanes_tests::agent::{
    enqueue, exec_python, fixture, is_finished, start_agent, wait_connected, wait_job,
    wait_pid_gone, wait_pidfile,
};
use lanes_tests::{Coordinator, fresh_database};
use std::time::{Duration, Instant};

const QUEUE: &str = "invoice_import";

#[tokio::test]
async fn a_killed_agents_job_is_redelivered_once_and_its_handler_dies_with_it() -> anyhow::Result<()>
{
    let db = fresh_database().await?;
    let coord = Coordinator::start(&db.url, &[]).await?;
    coord
        .admin()
        .await?
        .set_queue_settings(pb::SetQueueSettingsRequest {
            queue: QUEUE.into(),
            lease_ttl_ms: Some(1000),
            backoff_initial_ms: Some(100),
            ..Default::default()
        })
        .await?;
    let dir = tempfile::tempdir()?;
    let record = dir.path().join("runs.log");
    let exec = exec_python(&fixture("record_lane.py"))?;
    let mut first = start_agent(&coord.url(), "doomed", QUEUE, &["--exec", &exec]).await?;
    wait_connected(&coord, "doomed", Duration::from_secs(20)).await?;

    let mut client = coord.client().await?;
    let pidfile = dir.path().join("pid-{attempt}");
    let payload = serde_json::json!({
        "file": record, "lane": 1, "seq": 0, "sleep_ms": 100,
        "sleep_ms_by_attempt": {"1": 5000}, "pidfile": pidfile,
    });
    let id = enqueue(&mut client, QUEUE, "resto-1", payload).await?;
    let orphan = wait_pidfile(&dir.path().join("pid-1"), Duration::from_secs(10)).await?;

    first.kill9().await;
    let killed = Instant::now();
    wait_pid_gone(orphan, Duration::from_secs(2)).await?;
    eprintln!(
        "handler {orphan} gone {:?} after its agent",
        killed.elapsed()
    );

    let running = wait_job(&mut client, id, Duration::from_secs(1), |_| true).await?;
    assert!(
        running.state == pb::JobState::Running as i32
            || running.state == pb::JobState::Pending as i32,
        "the job waits for its lease to lapse: {running:?}"
    );
    let _second = start_agent(&coord.url(), "heir", QUEUE, &["--exec", &exec]).await?;
    let job = wait_job(&mut client, id, Duration::from_secs(20), is_finished).await?;
    assert_eq!(job.state, pb::JobState::Completed as i32, "{job:?}");
    assert_eq!(job.attempt, 2, "the lapsed lease counted one attempt");
    assert_eq!(job.agent_id, "heir");
    // Completed: the lapsed attempt's error is not left next to the result.
    assert_eq!(job.last_error, "", "a completed job keeps no old error");
    assert!(
        killed.elapsed() >= Duration::from_millis(900),
        "redelivered before the TTL"
    );

    let runs = std::fs::read_to_string(&record)?;
    let lines: Vec<&str> = runs.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one run finished: {runs}");
    let pid: i32 = lines[0].split_whitespace().nth(4).unwrap_or("0").parse()?;
    assert_ne!(pid, orphan, "the orphaned handler finished the job");
    lanes_tests::assert_lanes_agree(&db.url).await
}
