//! A background task that fails is logged, counted, restarted and keeps doing its job, and
//! the replica reports NOT_SERVING while it is down. The fault: `LANES_FAULT_PANIC_TASK=reaper`
//! (a test-only switch) makes the reaper's first run panic. Then: the panic and the restart are
//! in the log, `lanes_task_restarts_total{task="reaper"}` is 1 (every other task 0), the
//! replica went NOT_SERVING and back to SERVING, and a lapsed lease is still reaped.

use lanes_proto::v1 as pb;
use lanes_tests::agent::{log_lines, wait_log};
use lanes_tests::health::wait_coordinator;
use lanes_tests::jobs::{self, eventually};
use lanes_tests::metrics::scrape;
use lanes_tests::{Coordinator, free_port, fresh_database};
use std::time::Duration;
use tonic_health::pb::health_check_response::ServingStatus;

const Q: &str = "supervised";

/// Every supervised task of a coordinator with metrics and the watchdog on.
const TASKS: [&str; 10] = [
    "wake",
    "wake-listener",
    "promoter",
    "reaper",
    "dispatcher",
    "event-fanout",
    "watchdog",
    "retention",
    "database-probe",
    "metrics",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_reaper_is_restarted_counted_and_still_reaps() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let coord = Coordinator::start_with_env(
        &db.url,
        &["--metrics-listen", &metrics_addr],
        &[("LANES_FAULT_PANIC_TASK", "reaper")],
    )
    .await?;
    let wait = Duration::from_secs(30);

    // Logged: the panic with its message, and the restart.
    wait_log(&coord.proc, "background task stopped; restarting it", wait).await?;
    let failed = log_lines(&coord.proc, "background task stopped")?;
    assert_eq!(failed.len(), 1, "one failure: {failed:?}");
    assert!(
        failed[0].contains("reaper") && failed[0].contains("panicked: fault injection"),
        "{failed:?}"
    );
    // Down between the failure and the restart having settled, then up again: the status
    // changes are logged where they are published (the health service reports the same).
    wait_log(&coord.proc, "replica SERVING again", wait).await?;
    let text = std::fs::read_to_string(coord.proc.log_path())?;
    let down = text.find("replica NOT_SERVING");
    let up = text.find("replica SERVING again");
    assert!(
        matches!((down, up), (Some(d), Some(u)) if d < u),
        "NOT_SERVING, then SERVING again:\n{}",
        coord.proc.log_tail(40)
    );
    assert!(
        text.contains("background task down: reaper"),
        "the reason is logged"
    );
    wait_coordinator(&coord.url(), ServingStatus::Serving, wait).await?;

    // Counted, with a zero for every task that did not fail.
    let m = scrape(&format!("http://{metrics_addr}/metrics")).await?;
    for task in TASKS {
        let want = if task == "reaper" { 1.0 } else { 0.0 };
        let got = m.get("lanes_task_restarts_total", &[("task", task)]);
        assert_eq!(got, Some(want), "restarts of {task}");
    }

    // The restarted reaper still does its job: a lease nobody renews lapses and is reaped.
    let admin = coord.admin().await?;
    let ttl = pb::SetQueueSettingsRequest {
        lease_ttl_ms: Some(1000),
        max_attempts: Some(1),
        ..Default::default()
    };
    jobs::set_settings(&admin, Q, ttl).await?;
    let client = coord.client().await?;
    let agent = coord.agent().await?;
    let id = jobs::enqueue_id(&client, Q, "resto-1").await?;
    let leased = jobs::lease(&agent, "silent-agent", &[Q]).await?;
    assert_eq!(leased.map(|j| j.id), Some(id));
    let state = eventually(wait, "the lapsed lease reaped", async || {
        let s = jobs::state_of(&client, id).await?;
        Ok((s != pb::JobState::Running).then_some(s))
    })
    .await?;
    assert_eq!(state, pb::JobState::Failed, "its only attempt ended");
    wait_log(&coord.proc, "lease expired; the attempt ended", wait).await?;
    let m = scrape(&format!("http://{metrics_addr}/metrics")).await?;
    assert_eq!(m.value("lanes_lease_expiries_total", &[("queue", Q)]), 1.0);
    assert_eq!(
        m.value("lanes_task_restarts_total", &[("task", "reaper")]),
        1.0,
        "it failed once, and only once"
    );
    Ok(())
}
