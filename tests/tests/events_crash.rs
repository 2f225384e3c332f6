//! No event lost across coordinator crashes: 200 jobs with success and failure callbacks
//! (and the global `job.failed` feed) run while the coordinator is killed with SIGKILL at
//! random moments and restarted; every callback and every job.failed event arrives.

use lanes_proto::v1 as pb;
use lanes_proto::v1::agent_service_client::AgentServiceClient;
use lanes_tests::Coordinator;
use lanes_tests::jobs::{self, permanent};
use lanes_tests::webhooks::{Receiver, secret, verify};
use rand::Rng;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Endpoint;

const N: i64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_lost_across_random_coordinator_kills() -> anyhow::Result<()> {
    let rx = Receiver::start().await?;
    let db = lanes_tests::fresh_database().await?;
    let eps = json!([{"url": rx.url("/events"), "types": ["job.failed"]}]).to_string();
    let mut coord = Coordinator::start_quiet(
        &db.url,
        &[
            "--webhook-secret",
            &secret(),
            "--event-endpoints",
            &eps,
            "--events-flood-limit",
            "1000",
            "--watchdog-interval-ms",
            "0",
        ],
    )
    .await?;
    // A lazy channel reconnects by itself after each restart (same port).
    let channel = Endpoint::from_shared(coord.url())?
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy();
    let client = coord.client().await?;
    jobs::set_settings(
        &coord.admin().await?,
        "crash",
        pb::SetQueueSettingsRequest {
            // A Lease whose answer a kill cut off leaves a job held by nobody: its lease
            // lapses in 3 s and it runs again (its failures are permanent, so only the
            // jobs meant to fail end failed).
            max_attempts: Some(3),
            lease_ttl_ms: Some(3000),
            backoff_initial_ms: Some(200),
            ..Default::default()
        },
    )
    .await?;
    // Every fourth job fails for good; the others complete.
    for i in 0..N {
        jobs::send(
            &client,
            pb::EnqueueRequest {
                queue: "crash".into(),
                lane: format!("resto-{}", i % 20),
                payload: json!({"fail": i % 4 == 0}).to_string(),
                callback_url: rx.url("/done"),
                failure_callback_url: rx.url("/failed"),
                ..Default::default()
            },
        )
        .await?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..3 {
        let agent = AgentServiceClient::new(channel.clone());
        let stop = stop.clone();
        workers.push(tokio::spawn(work(agent, format!("w{w}"), stop)));
    }
    // Kill the coordinator at random moments while jobs finish and callbacks go out.
    let pool = db.pool().await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut kills = 0;
    loop {
        let (finished,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM jobs WHERE state IN ('completed', 'failed')")
                .fetch_one(&pool)
                .await?;
        if finished == N && kills >= 3 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "{finished} of {N} jobs finished");
        let pause = rand::rng().random_range(200..900);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if kills < 6 {
            coord.restart().await?;
            kills += 1;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await??;
    }

    // Deliveries cut by a kill are taken again once their 30 s delivery lease lapses.
    let want_failed: HashSet<i64> =
        sqlx::query_as::<_, (i64,)>("SELECT id FROM jobs WHERE state = 'failed'")
            .fetch_all(&pool)
            .await?
            .into_iter()
            .map(|(id,)| id)
            .collect();
    assert_eq!(want_failed.len() as i64, N / 4);
    let deadline = Instant::now() + Duration::from_secs(75);
    loop {
        let got = rx.requests();
        let ids = |path: &str, field: &str| -> HashSet<i64> {
            got.iter()
                .filter(|g| g.path == path)
                .filter_map(|g| g.json()[field].as_i64())
                .collect()
        };
        let (done, failed, feed) = (
            ids("/done", "task_id"),
            ids("/failed", "task_id"),
            ids("/events", "job_id"),
        );
        if done.len() as i64 == N - N / 4 && failed == want_failed && feed == want_failed {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "after {kills} kills: {} of {} success callbacks, {} of {} failure callbacks, \
             {} of {} job.failed events arrived",
            done.len(),
            N - N / 4,
            failed.len(),
            want_failed.len(),
            feed.len(),
            want_failed.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Repeats are allowed (a kill mid-delivery), but a repeat keeps its webhook-id and body,
    // so the receiver can drop it; and every request is signed.
    let mut bodies: HashMap<String, Vec<u8>> = HashMap::new();
    for g in rx.requests() {
        verify(&g)?;
        let prev = bodies.insert(g.header("webhook-id").to_owned(), g.body.clone());
        if let Some(prev) = prev {
            assert_eq!(prev, g.body, "a repeat with another body");
        }
    }
    assert_eq!(bodies.len() as i64, N + N / 4, "one webhook-id per event");
    lanes_tests::assert_lanes_agree(&db.url).await
}

/// Leases and finishes jobs until `stop`, riding out the coordinator's restarts.
async fn work(
    agent: AgentServiceClient<tonic::transport::Channel>,
    id: String,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    while !stop.load(Ordering::SeqCst) {
        let leased = match jobs::lease(&agent, &id, &["crash"]).await {
            Ok(Some(j)) => j,
            Ok(None) | Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let fail = leased.payload.contains("true");
        // Retry the report until it lands: a kill may cut the call before or after the
        // commit; after a commit, the retry is refused as stale and the job is done.
        loop {
            let r = if fail {
                jobs::fail(&agent, &leased, permanent("import refused"))
                    .await
                    .map(|_| ())
            } else {
                jobs::complete(&agent, &leased).await
            };
            match r {
                Ok(()) => break,
                Err(s) if s.code() == Code::FailedPrecondition => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    Ok(())
}
