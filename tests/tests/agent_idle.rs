//! An idle agent makes no RPCs: it sleeps on its WakeStream until woken. Every RPC the agent
//! makes goes through one function that logs it at debug level with the target
//! `lanes_agent::rpc`, so counting those lines counts the agent's RPCs exactly — unlike
//! database counters (pg_stat_database), which also move with the coordinator's own safety
//! tick, reaper and agent refreshes and would need a noise threshold.
//!
//! With the coordinator's keep-alive pushed out of the window, 3 s of idleness must show no
//! RPC at all, before and after a job; an enqueue still wakes the agent at once. With a 1 s
//! keep-alive, keep-alives arrive and cost no RPC either; an agent left marked awake (a lost
//! wake) is put back to sleep by its replica and woken for the job waiting.

use lanes_proto::v1 as pb;
use lanes_tests::agent::{
    enqueue, exec_python, fixture, is_finished, log_lines, start_agent, wait_connected, wait_job,
    wait_log,
};
use lanes_tests::{ChildProc, Coordinator, fresh_database};
use std::time::{Duration, Instant};

const QUEUE: &str = "invoice_import";
const RPC: &str = "lanes_agent::rpc";

fn rpcs(agent: &ChildProc) -> anyhow::Result<Vec<String>> {
    log_lines(agent, RPC)
}

#[tokio::test]
async fn an_idle_agent_makes_no_rpcs_and_wakes_on_enqueue() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    // Tick 200 ms (test default) with a keep-alive only every 100,000 ticks: none in the test.
    let coord = Coordinator::start(&db.url, &["--keepalive-ticks", "100000"]).await?;
    let exec = exec_python(&fixture("record_lane.py"))?;
    let agent = start_agent(&coord.url(), "sleeper", QUEUE, &["--exec", &exec]).await?;
    wait_connected(&coord, "sleeper", Duration::from_secs(20)).await?;
    wait_log(&agent, "asleep", Duration::from_secs(10)).await?;

    let before = rpcs(&agent)?;
    assert!(
        before.iter().any(|l| l.contains("WakeStream")),
        "{before:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rpcs(&agent)?;
    assert_eq!(
        before.len(),
        after.len(),
        "RPCs while idle: {:?}",
        &after[before.len()..]
    );
    let listed = coord
        .admin()
        .await?
        .list_agents(pb::ListAgentsRequest {})
        .await?
        .into_inner();
    assert_eq!(listed.agents.len(), 1);
    assert_eq!(listed.agents[0].state, "asleep");

    let dir = tempfile::tempdir()?;
    let mut client = coord.client().await?;
    let payload = serde_json::json!({"file": dir.path().join("runs.log"), "lane": 1, "seq": 0, "sleep_ms": 5});
    let enqueued = Instant::now();
    let id = enqueue(&mut client, QUEUE, "resto-1", payload).await?;
    let job = wait_job(&mut client, id, Duration::from_secs(3), is_finished).await?;
    assert_eq!(job.state, pb::JobState::Completed as i32, "{job:?}");
    eprintln!("woken and done {:?} after the enqueue", enqueued.elapsed());

    // Back to sleep after the job: Complete (with lease_next) and one Lease, then silence.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rpcs(&agent)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rpcs(&agent)?;
    assert_eq!(
        before.len(),
        after.len(),
        "RPCs while idle: {:?}",
        &after[before.len()..]
    );
    Ok(())
}

#[tokio::test]
async fn keep_alives_cost_no_call_and_a_lost_wake_is_recovered_by_the_replica() -> anyhow::Result<()>
{
    let db = fresh_database().await?;
    // A keep-alive every 5 ticks of 200 ms: one per second.
    let coord = Coordinator::start(&db.url, &["--keepalive-ticks", "5"]).await?;
    let exec = exec_python(&fixture("record_lane.py"))?;
    let agent = start_agent(&coord.url(), "ticker", QUEUE, &["--exec", &exec]).await?;
    wait_connected(&coord, "ticker", Duration::from_secs(20)).await?;
    wait_log(&agent, "asleep", Duration::from_secs(10)).await?;

    let before = rpcs(&agent)?;
    let alive_before = log_lines(&agent, "keep-alive")?.len();
    // Until at least two keep-alives arrived (each a second apart, on a busy machine later).
    let deadline = Instant::now() + Duration::from_secs(30);
    while log_lines(&agent, "keep-alive")?.len() < alive_before + 2 {
        assert!(Instant::now() < deadline, "no keep-alive within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = rpcs(&agent)?;
    assert_eq!(
        before.len(),
        after.len(),
        "RPCs for keep-alives: {:?}",
        &after[before.len()..]
    );

    // A wake claimed for the agent whose event never reached it (a NOTIFY lost with a
    // listener) leaves it marked awake while it sleeps: no enqueue's wake claims it now.
    let pool = db.pool().await?;
    sqlx::query("UPDATE agents SET asleep = false, asleep_since = NULL WHERE agent_id = 'ticker'")
        .execute(&pool)
        .await?;
    let dir = tempfile::tempdir()?;
    let mut client = coord.client().await?;
    let payload = serde_json::json!({"file": dir.path().join("runs.log"), "lane": 1, "seq": 0, "sleep_ms": 5});
    let id = enqueue(&mut client, QUEUE, "resto-1", payload).await?;
    // Its replica puts it back to sleep within two keep-alives, and the safety tick wakes it.
    let job = wait_job(&mut client, id, Duration::from_secs(30), is_finished).await?;
    assert_eq!(job.state, pb::JobState::Completed as i32, "{job:?}");
    Ok(())
}
