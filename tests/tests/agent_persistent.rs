//! Persistent handlers (`--persistent`) through a real coordinator and agent: one Python
//! process takes every job as a JSON line. Twenty jobs on two lanes run FIFO per lane through
//! that one process; progress lines reach the job; an error line fails the job with its
//! message; a line that is not JSON is skipped; the soft limit's SIGTERM becomes an error
//! answer and the process lives on; a process that exits mid-job fails that job, and so does
//! one stuck past the hard limit — each time the next job runs in a fresh process.
//!
//! The figure (ignored by default; `scripts/bench-handlers` runs it with release binaries):
//! per-job cost of a Python no-op handler, persistent versus spawned per job.

use lanes_proto::v1 as pb;
use lanes_tests::agent::{
    exec_python, is_finished, log_lines, pid_alive, start_agent, wait_connected, wait_job,
};
use lanes_tests::jobs::Client;
use lanes_tests::load::wait_completed;
use lanes_tests::{Coordinator, fresh_database};
use std::time::Duration;

const QUEUE: &str = "invoice_import";

/// The handler under test: its behaviour per job comes from the payload.
const HANDLER: &str = r#"
import json, os, signal, sys, time

PROTOCOL, sys.stdout = sys.stdout, sys.stderr

class SoftLimit(Exception):
    pass

running = False
def on_term(signum, frame):
    if running:
        raise SoftLimit()
signal.signal(signal.SIGTERM, on_term)

def send(message):
    PROTOCOL.write(json.dumps(message) + "\n")
    PROTOCOL.flush()

print(f"handler up, pid {os.getpid()}", file=sys.stderr, flush=True)
for line in sys.stdin:
    job = json.loads(line)
    p, jid = job["payload"], job["id"]
    running = True
    try:
        if p.get("record"):
            with open(p["record"], "a") as f:
                f.write(f"{job['lane']} {p['seq']} {os.getpid()}\n")
        if p.get("noise"):
            PROTOCOL.write("this line is not JSON\n")
            PROTOCOL.flush()
        if p.get("crash"):
            print("about to crash", file=sys.stderr, flush=True)
            os._exit(7)
        if p.get("error"):
            send({"type": "error", "id": jid, "error": p["error"], "retryable": False})
            continue
        if p.get("wait_for"):
            send({"type": "progress", "id": jid, "percent": 40, "message": "step 2/5"})
            while not os.path.exists(p["wait_for"]):
                time.sleep(0.02)
        if p.get("sleep_s"):
            time.sleep(p["sleep_s"])
        send({"type": "result", "id": jid, "result": {"pid": os.getpid(), "seq": p.get("seq")}})
    except SoftLimit:
        send({"type": "error", "id": jid, "error": "soft limit: rolled back"})
    finally:
        running = False

# End of input: the agent is stopping. A real handler closes its connections here.
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "closed"), "a") as f:
    f.write(f"{os.getpid()}\n")
"#;

#[tokio::test]
async fn one_process_serves_every_job_and_is_replaced_when_it_fails() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let coord = Coordinator::start(&db.url, &[]).await?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("handler.py");
    std::fs::write(&script, HANDLER)?;
    let exec = exec_python(&script)?;
    let args = ["--exec", &exec, "--persistent", "--heartbeat-ms", "200"];
    let agent = start_agent(&coord.url(), "keeper", QUEUE, &args).await?;
    wait_connected(&coord, "keeper", Duration::from_secs(20)).await?;
    let client = coord.client().await?;
    let job = |payload: serde_json::Value| pb::EnqueueRequest {
        queue: QUEUE.into(),
        payload: payload.to_string(),
        max_attempts: Some(1),
        ..Default::default()
    };

    // 20 jobs on 2 lanes, FIFO per lane, all through one process.
    let record = dir.path().join("runs.log");
    let mut ids = Vec::new();
    for seq in 0..10 {
        for lane in ["resto-1", "resto-2"] {
            let payload = serde_json::json!({"record": record, "seq": seq, "noise": seq == 3});
            let mut req = job(payload);
            req.lane = lane.into();
            ids.push(add(&client, req).await?);
        }
    }
    let mut pids = Vec::new();
    for &id in &ids {
        let done = finished(&client, id).await?;
        assert_eq!(done.state, pb::JobState::Completed as i32, "{done:?}");
        let result: serde_json::Value = serde_json::from_str(&done.result)?;
        pids.push(result["pid"].as_i64().unwrap_or_default());
    }
    let first = pids[0];
    assert!(pids.iter().all(|&p| p == first), "one process: {pids:?}");
    let runs = std::fs::read_to_string(&record)?;
    for lane in ["resto-1", "resto-2"] {
        let seqs: Vec<u32> = runs
            .lines()
            .filter_map(|l| l.strip_prefix(lane))
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .collect();
        assert_eq!(seqs, (0..10).collect::<Vec<_>>(), "{lane}: {runs}");
    }
    assert_eq!(log_lines(&agent, "persistent handler started")?.len(), 1);
    assert!(!log_lines(&agent, "this line is not JSON")?.is_empty());
    assert!(!log_lines(&agent, &format!("handler up, pid {first}"))?.is_empty());

    // Progress lines reach the job while it runs.
    let go = dir.path().join("go");
    let id = add(&client, job(serde_json::json!({"wait_for": go}))).await?;
    wait_job(&mut client.clone(), id, Duration::from_secs(20), |j| {
        j.progress_percent == 40 && j.progress_message == "step 2/5"
    })
    .await?;
    std::fs::write(&go, "")?;
    assert_eq!(
        finished(&client, id).await?.state,
        pb::JobState::Completed as i32
    );

    // An error line fails the job with its message (not retried: retryable false).
    let id = add(&client, job(serde_json::json!({"error": "bad VAT number"}))).await?;
    let failed = finished(&client, id).await?;
    assert_eq!(failed.state, pb::JobState::Failed as i32, "{failed:?}");
    assert_eq!(failed.last_error, "bad VAT number");

    // The soft limit's SIGTERM: the handler answers with an error and lives on.
    let mut soft = job(serde_json::json!({"sleep_s": 60}));
    soft.timeout_ms = Some(30_000);
    soft.soft_timeout_ms = Some(1_000);
    let failed = finished(&client, add(&client, soft).await?).await?;
    assert_eq!(failed.last_error, "soft limit: rolled back", "{failed:?}");
    assert_eq!(pid_of(&client, job(serde_json::json!({}))).await?, first);

    // Exiting mid-job fails that job; the next runs in a new process.
    let id = add(&client, job(serde_json::json!({"crash": true}))).await?;
    let failed = finished(&client, id).await?;
    assert_eq!(failed.state, pb::JobState::Failed as i32, "{failed:?}");
    for words in [
        "persistent handler exited with code 7 while running the job",
        "about to crash",
    ] {
        assert!(failed.last_error.contains(words), "{}", failed.last_error);
    }
    let second = pid_of(&client, job(serde_json::json!({}))).await?;
    assert_ne!(second, first);
    assert!(!pid_alive(first as i32));

    // Stuck past the hard limit: killed, the job fails, the next runs in a new process.
    let mut stuck = job(serde_json::json!({"sleep_s": 600}));
    stuck.timeout_ms = Some(1_000);
    let failed = finished(&client, add(&client, stuck).await?).await?;
    assert!(
        failed.last_error.contains("timed out after 1000 ms"),
        "{failed:?}"
    );
    let third = pid_of(&client, job(serde_json::json!({}))).await?;
    assert!(
        third != second && third != first,
        "{first} {second} {third}"
    );
    assert!(!pid_alive(second as i32));

    // The agent stops: the process reads end-of-file, cleans up and exits on its own.
    let mut agent = agent;
    agent.signal(nix::sys::signal::Signal::SIGTERM)?;
    let status = agent.wait_exit(Duration::from_secs(60)).await?;
    assert!(status.success(), "{status:?}: {}", agent.log_tail(20));
    let closed = std::fs::read_to_string(dir.path().join("closed")).unwrap_or_default();
    assert_eq!(closed, format!("{third}\n"), "{}", agent.log_tail(20));
    assert_eq!(
        log_lines(&agent, "persistent handler exited at the end of its input")?.len(),
        1
    );
    Ok(())
}

async fn add(client: &Client, req: pb::EnqueueRequest) -> anyhow::Result<i64> {
    let job = client.clone().enqueue(req).await?.into_inner().job;
    Ok(job
        .ok_or_else(|| anyhow::anyhow!("Enqueue returned no job"))?
        .id)
}

async fn finished(client: &Client, id: i64) -> anyhow::Result<pb::Job> {
    wait_job(
        &mut client.clone(),
        id,
        Duration::from_secs(30),
        is_finished,
    )
    .await
}

/// Runs one job that completes and returns the pid that ran it.
async fn pid_of(client: &Client, req: pb::EnqueueRequest) -> anyhow::Result<i64> {
    let done = finished(client, add(client, req).await?).await?;
    anyhow::ensure!(
        done.state == pb::JobState::Completed as i32,
        "not completed: {done:?}"
    );
    let result: serde_json::Value = serde_json::from_str(&done.result)?;
    result["pid"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no pid in {}", done.result))
}

const NOOP_SPAWNED: &str = "import sys, json\njson.dump({'ok': True}, sys.stdout)\n";
const NOOP_PERSISTENT: &str = r#"
import sys, json
out = sys.stdout
for line in sys.stdin:
    job = json.loads(line)
    out.write(json.dumps({"type": "result", "id": job["id"], "result": {"ok": True}}) + "\n")
    out.flush()
"#;
const BENCH_JOBS: usize = 500;

#[tokio::test]
#[ignore = "benchmark: scripts/bench-handlers runs it with release binaries"]
async fn python_noop_handler_persistent_vs_spawned() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for (name, script, persistent) in [
        ("spawned per job", NOOP_SPAWNED, false),
        ("persistent", NOOP_PERSISTENT, true),
    ] {
        let db = fresh_database().await?;
        let coord = Coordinator::start(&db.url, &[]).await?;
        let path = dir.path().join(format!("noop-{persistent}.py"));
        std::fs::write(&path, script)?;
        let exec = exec_python(&path)?;
        let mut args = vec!["--exec", exec.as_str()];
        if persistent {
            args.push("--persistent");
        }
        let _agent = start_agent(&coord.url(), "bench", QUEUE, &args).await?;
        wait_connected(&coord, "bench", Duration::from_secs(20)).await?;
        let client = coord.client().await?;
        let elapsed = run_noops(&client, &db.url).await?;
        let per_job = elapsed.as_secs_f64() * 1000.0 / BENCH_JOBS as f64;
        println!(
            "python no-op, {name}: {BENCH_JOBS} jobs on {BENCH_JOBS} lanes, 1 agent: {:.2} s = {:.0} jobs/s, {per_job:.2} ms/job",
            elapsed.as_secs_f64(),
            BENCH_JOBS as f64 / elapsed.as_secs_f64(),
        );
    }
    Ok(())
}

/// Enqueues the jobs (each on its own lane), waits until all completed, and returns the time
/// from the first start to the last finish, as the coordinator recorded them.
async fn run_noops(client: &Client, database_url: &str) -> anyhow::Result<Duration> {
    let jobs: Vec<pb::EnqueueRequest> = (0..BENCH_JOBS)
        .map(|n| pb::EnqueueRequest {
            queue: QUEUE.into(),
            lane: format!("lane-{n}"),
            payload: serde_json::json!({ "n": n }).to_string(),
            ..Default::default()
        })
        .collect();
    for chunk in jobs.chunks(500) {
        client
            .clone()
            .enqueue_batch(pb::EnqueueBatchRequest {
                jobs: chunk.to_vec(),
            })
            .await?;
    }
    let n = i64::try_from(BENCH_JOBS)?;
    wait_completed(database_url, QUEUE, n, Duration::from_secs(600)).await?;
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(database_url).await?;
    let secs: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8 FROM jobs WHERE queue = $1",
    )
    .bind(QUEUE)
    .fetch_one(&mut conn)
    .await?;
    Ok(Duration::from_secs_f64(secs))
}
