//! What a handler's end means: a timeout kills it (no orphan) and retries; exit 65 fails the
//! job at once; exit 1 retries until attempts run out, then fails with the stderr tail as
//! last_error. Also: the example import handler's progress lines reach the job through
//! heartbeats, and its stdout becomes the result.

use lanes_proto::v1 as pb;
use lanes_tests::agent::{
    enqueue, example, exec_python, fixture, is_finished, start_agent, wait_connected, wait_job,
    wait_pid_gone, wait_pidfile,
};
use lanes_tests::{ChildProc, Coordinator, fresh_database};
use std::time::Duration;

const QUEUE: &str = "invoice_import";

/// A coordinator with `settings` on QUEUE and one agent running `script`.
async fn setup(
    settings: pb::SetQueueSettingsRequest,
    script: &std::path::Path,
    extra: &[&str],
) -> anyhow::Result<(Coordinator, ChildProc, lanes_tests::TestDb)> {
    let db = fresh_database().await?;
    let coord = Coordinator::start(&db.url, &[]).await?;
    coord.admin().await?.set_queue_settings(settings).await?;
    let exec = exec_python(script)?;
    let mut args = vec!["--exec", exec.as_str()];
    args.extend(extra);
    let agent = start_agent(&coord.url(), "worker", QUEUE, &args).await?;
    wait_connected(&coord, "worker", Duration::from_secs(20)).await?;
    Ok((coord, agent, db))
}

fn settings(max_attempts: i32) -> pb::SetQueueSettingsRequest {
    pb::SetQueueSettingsRequest {
        queue: QUEUE.into(),
        max_attempts: Some(max_attempts),
        backoff_initial_ms: Some(100),
        backoff_max_ms: Some(200),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_handler_past_its_timeout_is_killed_and_retried() -> anyhow::Result<()> {
    let mut s = settings(2);
    s.job_timeout_ms = Some(1000);
    let (coord, _agent, _db) = setup(s, &fixture("record_lane.py"), &[]).await?;
    let dir = tempfile::tempdir()?;
    let record = dir.path().join("runs.log");
    let pidfile = dir.path().join("pid-{attempt}");
    let mut client = coord.client().await?;
    let payload = serde_json::json!({"file": record, "lane": 1, "seq": 0, "sleep_ms": 10000, "pidfile": pidfile});
    let id = enqueue(&mut client, QUEUE, "resto-1", payload).await?;

    let first = wait_pidfile(&dir.path().join("pid-1"), Duration::from_secs(10)).await?;
    wait_pid_gone(first, Duration::from_secs(3)).await?;
    let second = wait_pidfile(&dir.path().join("pid-2"), Duration::from_secs(5)).await?;
    let job = wait_job(&mut client, id, Duration::from_secs(10), is_finished).await?;
    wait_pid_gone(second, Duration::from_secs(1)).await?;
    assert_eq!(job.state, pb::JobState::Failed as i32, "{job:?}");
    assert_eq!(job.attempt, 2);
    assert!(
        job.last_error.contains("timed out after 1000 ms"),
        "{}",
        job.last_error
    );
    assert!(!record.exists(), "a killed handler finished its work");
    Ok(())
}

#[tokio::test]
async fn exit_65_fails_at_once_and_exit_1_retries_until_attempts_run_out() -> anyhow::Result<()> {
    let (coord, _agent, _db) = setup(settings(3), &example("failing_import.py"), &[]).await?;
    let mut client = coord.client().await?;
    let permanent = serde_json::json!({"fail": "permanent", "message": "unknown establishment 42", "invoice_id": "INV-1"});
    let p = enqueue(&mut client, QUEUE, "resto-1", permanent).await?;
    let transient = serde_json::json!({"fail": "transient", "message": "accounting API down", "invoice_id": "INV-2"});
    let t = enqueue(&mut client, QUEUE, "resto-2", transient).await?;

    let job = wait_job(&mut client, p, Duration::from_secs(15), is_finished).await?;
    assert_eq!(job.state, pb::JobState::Failed as i32, "{job:?}");
    assert_eq!(job.attempt, 1, "a permanent failure is not retried");
    assert!(job.last_error.contains("code 65"), "{}", job.last_error);
    assert!(
        job.last_error.contains("unknown establishment 42"),
        "{}",
        job.last_error
    );

    let job = wait_job(&mut client, t, Duration::from_secs(15), is_finished).await?;
    assert_eq!(job.state, pb::JobState::Failed as i32, "{job:?}");
    assert_eq!(job.attempt, 3, "retried until max_attempts");
    assert!(
        job.last_error.contains("exited with code 1"),
        "{}",
        job.last_error
    );
    assert!(
        job.last_error
            .contains("importing invoice INV-2...\nerror: accounting API down"),
        "stderr tail missing: {}",
        job.last_error
    );
    Ok(())
}

#[tokio::test]
async fn progress_lines_reach_the_job_and_stdout_is_the_result() -> anyhow::Result<()> {
    let (coord, _agent, _db) = setup(
        settings(3),
        &example("import_invoice.py"),
        &["--heartbeat-ms", "100"],
    )
    .await?;
    let mut client = coord.client().await?;
    let payload = serde_json::json!({"invoice_id": "INV-7", "establishment": "resto-7", "lines": 12, "sleep_ms": 1500, "steps": 3});
    let id = enqueue(&mut client, QUEUE, "resto-7", payload).await?;

    let mut seen = Vec::new();
    let job = loop {
        let job = wait_job(&mut client, id, Duration::from_secs(15), |_| true).await?;
        if is_finished(&job) {
            break job;
        }
        if job.progress_percent > 0 {
            seen.push((job.progress_percent, job.progress_message.clone()));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(
        seen.iter()
            .any(|(p, m)| *p == 33 && m == "invoice INV-7: step 1/3"),
        "progress not forwarded: {seen:?}"
    );
    assert_eq!(job.state, pb::JobState::Completed as i32, "{job:?}");
    let result: serde_json::Value = serde_json::from_str(&job.result)?;
    assert_eq!(result["invoice_id"], "INV-7");
    assert_eq!(result["lines_imported"], 12);
    assert_eq!(result["job_id"], id);
    assert_eq!(result["attempt"], 1);
    assert!(result["fencing_token"].as_i64().is_some_and(|t| t > 0));
    Ok(())
}
