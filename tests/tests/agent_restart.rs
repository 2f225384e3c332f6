//! The coordinator is killed (-9) while an agent runs a job, stays down for 1.5 s, and is
//! started again on the same port. The agent keeps the handler running, retries its
//! heartbeats, reconnects with backoff, reports the outcome once the coordinator is back
//! (the lease still holds: TTL 30 s), opens a new wake stream and keeps serving: later jobs
//! are woken and run. No job is lost or run twice.

use lanes_proto::v1 as pb;
use lanes_tests::agent::{
    enqueue, exec_python, fixture, is_finished, log_lines, start_agent, wait_connected, wait_job,
    wait_pid_gone, wait_pidfile,
};
use lanes_tests::{Coordinator, fresh_database};
use std::collections::HashMap;
use std::time::Duration;

const QUEUE: &str = "invoice_import";

#[tokio::test]
async fn the_agent_rides_out_a_coordinator_restart() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let mut coord = Coordinator::start(&db.url, &[]).await?;
    let dir = tempfile::tempdir()?;
    let record = dir.path().join("runs.log");
    let exec = exec_python(&fixture("record_lane.py"))?;
    let args = [
        "--exec",
        exec.as_str(),
        "--heartbeat-ms",
        "200",
        "--backoff-max-ms",
        "500",
    ];
    let agent = start_agent(&coord.url(), "survivor", QUEUE, &args).await?;
    wait_connected(&coord, "survivor", Duration::from_secs(20)).await?;

    let mut client = coord.client().await?;
    let pidfile = dir.path().join("pid");
    let payload = serde_json::json!({"file": record, "lane": 0, "seq": 0, "sleep_ms": 2500, "pidfile": pidfile});
    let first = enqueue(&mut client, QUEUE, "resto-0", payload).await?;
    wait_pidfile(&pidfile, Duration::from_secs(10)).await?;

    coord.proc.kill9().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    coord.restart().await?;
    let mut client = coord.client().await?;
    let job = wait_job(&mut client, first, Duration::from_secs(20), is_finished).await?;
    assert_eq!(job.state, pb::JobState::Completed as i32, "{job:?}");
    assert_eq!(job.attempt, 1, "the job was re-delivered");

    let mut ids = vec![first];
    for seq in 1..=10 {
        for lane in 0..2 {
            let p = serde_json::json!({"file": record, "lane": lane, "seq": seq, "sleep_ms": 5});
            ids.push(enqueue(&mut client, QUEUE, &format!("resto-{lane}"), p).await?);
        }
    }
    for id in &ids {
        let job = wait_job(&mut client, *id, Duration::from_secs(20), is_finished).await?;
        assert_eq!(job.state, pb::JobState::Completed as i32, "{job:?}");
    }
    let runs = std::fs::read_to_string(&record)?;
    let mut per_job: HashMap<&str, usize> = HashMap::new();
    for line in runs.lines() {
        *per_job
            .entry(line.split_whitespace().nth(5).unwrap_or("?"))
            .or_default() += 1;
    }
    assert_eq!(per_job.len(), ids.len(), "a job is missing: {runs}");
    assert!(per_job.values().all(|&n| n == 1), "a job ran twice: {runs}");
    let failed_beats = log_lines(&agent, "heartbeat failed; retrying")?.len();
    assert!(
        failed_beats > 0,
        "no heartbeat failed while the coordinator was down"
    );
    let streams = log_lines(&agent, "rpc=\"WakeStream\"")?.len();
    assert!(
        streams >= 2,
        "the agent never re-opened its wake stream ({streams})"
    );
    lanes_tests::assert_lanes_agree(&db.url).await
}

/// With the coordinator down longer than the lease TTL (1 s), the agent cannot renew the
/// lease, so it kills the handler before the lease lapses — another agent could be given the
/// job — and the job runs again once the coordinator is back.
#[tokio::test]
async fn a_lease_that_cannot_be_renewed_stops_the_handler_in_time() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let mut coord = Coordinator::start(&db.url, &[]).await?;
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
    let args = ["--exec", exec.as_str(), "--backoff-max-ms", "300"];
    let agent = start_agent(&coord.url(), "cut-off", QUEUE, &args).await?;
    wait_connected(&coord, "cut-off", Duration::from_secs(20)).await?;

    let mut client = coord.client().await?;
    let pidfile = dir.path().join("pid-{attempt}");
    let payload = serde_json::json!({
        "file": record, "lane": 0, "seq": 0, "sleep_ms": 5,
        "sleep_ms_by_attempt": {"1": 10000}, "pidfile": pidfile,
    });
    let id = enqueue(&mut client, QUEUE, "resto-0", payload).await?;
    let handler = wait_pidfile(&dir.path().join("pid-1"), Duration::from_secs(10)).await?;

    coord.proc.kill9().await;
    let down = std::time::Instant::now();
    wait_pid_gone(handler, Duration::from_secs(2)).await?;
    let stopped_after = down.elapsed();
    assert!(
        stopped_after < Duration::from_millis(1000),
        "the handler outlived the lease: stopped {stopped_after:?} after the outage began"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    coord.restart().await?;

    let mut client = coord.client().await?;
    let job = wait_job(&mut client, id, Duration::from_secs(20), is_finished).await?;
    assert_eq!(job.state, pb::JobState::Completed as i32, "{job:?}");
    assert_eq!(job.attempt, 2, "{job:?}");
    let runs = std::fs::read_to_string(&record)?;
    assert_eq!(runs.lines().count(), 1, "{runs}");
    let stops = log_lines(&agent, "lease could not be renewed in time")?.len();
    assert_eq!(stops, 1, "the agent did not say why it stopped the handler");
    lanes_tests::assert_lanes_agree(&db.url).await
}
