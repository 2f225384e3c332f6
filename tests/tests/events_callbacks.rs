//! Per-job callbacks through the transactional outbox, against a real local HTTP receiver:
//! the documented payloads, a Standard Webhooks signature the test verifies with its own
//! HMAC code, retries that keep the same `webhook-id`, 410 disabling a delivery, and no
//! callback lost when the coordinator is killed right after the completions, with
//! deliveries in flight (their rows are taken again once the 30 s delivery lease lapses).

use anyhow::Context as _;
use lanes_proto::v1 as pb;
use lanes_tests::Coordinator;
use lanes_tests::jobs::{self, Setup, permanent};
use lanes_tests::webhooks::{Receiver, secret, verify};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

/// Removes the fields that depend on the clock after checking their form.
fn without_times(mut v: Value, time_field: &str) -> anyhow::Result<Value> {
    let obj = v.as_object_mut().context("payload is not an object")?;
    let t = obj
        .remove(time_field)
        .with_context(|| format!("no {time_field}"))?;
    let t = t.as_str().context("time is not a string")?;
    anyhow::ensure!(
        t.len() == 27 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
        "{time_field} {t:?} is not ISO 8601 UTC"
    );
    if let Some(p) = obj.remove("processing_time_seconds") {
        let secs = p
            .as_f64()
            .context("processing_time_seconds is not a number")?;
        anyhow::ensure!((0.0..60.0).contains(&secs), "processing time {secs}");
    }
    Ok(v)
}

async fn outbox_states(url: &str) -> anyhow::Result<Vec<(i64, String, String, i32)>> {
    let pool = sqlx::PgPool::connect(url).await?;
    let rows =
        sqlx::query_as("SELECT id, event_type, state::text, attempts FROM outbox ORDER BY id")
            .fetch_all(&pool)
            .await?;
    pool.close().await;
    Ok(rows)
}

async fn wait_outbox(
    url: &str,
    id: i64,
    state: &str,
    within: Duration,
) -> anyhow::Result<(i64, String, String, i32)> {
    let deadline = Instant::now() + within;
    loop {
        let rows = outbox_states(url).await?;
        if let Some(r) = rows.iter().find(|r| r.0 == id && r.2 == state) {
            return Ok(r.clone());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "outbox row {id} not {state} within {within:?}: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn success_and_failure_callbacks_arrive_signed_with_the_documented_payloads()
-> anyhow::Result<()> {
    let rx = Receiver::start().await?;
    let secret = secret();
    let s = Setup::start(&["--webhook-secret", &secret]).await?;

    let ok_id = s
        .add_req(pb::EnqueueRequest {
            queue: "invoices".into(),
            lane: "resto-1".into(),
            payload: r#"{"invoice": 1}"#.into(),
            callback_url: rx.url("/ok"),
            ..Default::default()
        })
        .await?;
    let leased = s.take("agent-a", "invoices").await?;
    assert_eq!(leased.id, ok_id);
    s.agent
        .clone()
        .complete(pb::CompleteRequest {
            job_id: leased.id,
            lease_token: leased.lease_token,
            result: r#"{"google_drive_link": "https://drive.example/f/1", "pages": 3}"#.into(),
            ..Default::default()
        })
        .await?;

    let fail_id = s
        .add_req(pb::EnqueueRequest {
            queue: "invoices".into(),
            payload: r#"{"invoice": 2}"#.into(),
            callback_url: rx.url("/ok"),
            failure_callback_url: rx.url("/fail"),
            ..Default::default()
        })
        .await?;
    let leased = s.take("agent-b", "invoices").await?;
    assert_eq!(leased.id, fail_id);
    assert_eq!(
        s.fail(&leased, permanent("PDF parse error")).await?,
        pb::JobState::Failed
    );

    // A job without a callback writes no outbox row.
    let quiet = s.add("invoices", "").await?;
    let leased = s.take("agent-c", "invoices").await?;
    assert_eq!(leased.id, quiet);
    s.complete(&leased).await?;

    let got = rx.wait_for(2, Duration::from_secs(20)).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.requests().len(), 2, "{:?}", rx.requests());
    for g in &got {
        verify(g)?;
        assert_eq!(g.header("content-type"), "application/json");
        assert!(g.header("webhook-id").starts_with("msg_"), "{g:?}");
    }

    let ok = rx.to("/ok");
    assert_eq!(ok.len(), 1);
    assert_eq!(
        without_times(ok[0].json(), "completed_at")?,
        json!({
            "task_id": ok_id,
            "job_id": ok_id,
            "status": "completed",
            "result": {"google_drive_link": "https://drive.example/f/1", "pages": 3},
            "result_url": "https://drive.example/f/1",
            "metadata": {"attempt": 1, "agent_id": "agent-a"},
            "queue": "invoices",
            "lane": "resto-1",
            "sequence": ok_id,
        })
    );
    let fail = rx.to("/fail");
    assert_eq!(fail.len(), 1);
    assert_eq!(
        without_times(fail[0].json(), "failed_at")?,
        json!({
            "task_id": fail_id,
            "job_id": fail_id,
            "status": "failed",
            "error": "PDF parse error",
            "retry_count": 1,
            "metadata": {"attempt": 1, "agent_id": "agent-b"},
            "queue": "invoices",
            "lane": null,
            "sequence": fail_id,
        })
    );

    let rows = outbox_states(&s.db.url).await?;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter().all(|r| r.2 == "delivered" && r.3 == 1),
        "{rows:?}"
    );
    assert_eq!(rows[0].1, "job.completed");
    assert_eq!(rows[1].1, "job.failed");
    assert_eq!(ok[0].header("webhook-id"), format!("msg_{}", rows[0].0));

    // A deny-listed host is refused at enqueue.
    let s2 = Setup::start(&["--callback-deny-hosts", "metadata.internal,10.1.2.3"]).await?;
    for url in ["http://metadata.internal/x", "https://10.1.2.3:8443/hook"] {
        let err = s2
            .client
            .clone()
            .enqueue(pb::EnqueueRequest {
                queue: "invoices".into(),
                payload: "{}".into(),
                failure_callback_url: url.into(),
                ..Default::default()
            })
            .await
            .expect_err("a denied host is refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    }
    Ok(())
}

#[tokio::test]
async fn retries_keep_the_webhook_id_and_410_disables() -> anyhow::Result<()> {
    let rx = Receiver::start().await?;
    rx.answer("/flaky", &[500, 500, 500, 200]);
    rx.answer("/gone", &[410]);
    let s = Setup::start(&["--webhook-backoff-ms", "100"]).await?;

    for path in ["/flaky", "/gone"] {
        s.add_req(pb::EnqueueRequest {
            queue: "q".into(),
            payload: "{}".into(),
            callback_url: rx.url(path),
            ..Default::default()
        })
        .await?;
        let leased = s.take("a", "q").await?;
        s.complete(&leased).await?;
    }
    let rows = outbox_states(&s.db.url).await?;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (flaky, gone) = (rows[0].0, rows[1].0);

    let row = wait_outbox(&s.db.url, flaky, "delivered", Duration::from_secs(30)).await?;
    assert_eq!(row.3, 4, "{row:?}");
    let row = wait_outbox(&s.db.url, gone, "disabled", Duration::from_secs(30)).await?;
    assert_eq!(row.3, 1, "{row:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let tries = rx.to("/flaky");
    assert_eq!(tries.len(), 4, "{tries:?}");
    let ids: HashSet<&str> = tries.iter().map(|g| g.header("webhook-id")).collect();
    assert_eq!(ids.len(), 1, "retries changed the webhook-id: {ids:?}");
    assert_eq!(tries[0].body, tries[3].body);
    // No secret configured: unsigned.
    assert!(
        tries
            .iter()
            .all(|g| g.header("webhook-signature").is_empty())
    );
    assert_eq!(rx.to("/gone").len(), 1, "a 410 endpoint was called again");
    Ok(())
}

#[tokio::test]
async fn callbacks_survive_a_coordinator_kill9() -> anyhow::Result<()> {
    const N: usize = 50;
    let rx = Receiver::start().await?;
    // Deliveries in flight when the coordinator dies: the first ones hang unanswered.
    rx.stall.store(true, Ordering::SeqCst);
    let db = lanes_tests::fresh_database().await?;
    let secret = secret();
    let mut coord = Coordinator::start(&db.url, &["--webhook-secret", &secret]).await?;
    let client = coord.client().await?;
    let agent = coord.agent().await?;
    for i in 0..N {
        jobs::send(
            &client,
            pb::EnqueueRequest {
                queue: "q".into(),
                lane: format!("lane-{}", i % 5),
                payload: "{}".into(),
                callback_url: rx.url("/done"),
                ..Default::default()
            },
        )
        .await?;
    }
    for _ in 0..N {
        let j = jobs::lease_within(&agent, "a", &["q"], Duration::from_secs(10)).await?;
        jobs::complete(&agent, &j).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx.stalled.load(Ordering::SeqCst) == 0 {
        anyhow::ensure!(Instant::now() < deadline, "no delivery started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    coord.restart().await?;
    rx.stall.store(false, Ordering::SeqCst);

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = rx.requests();
        let ids: HashSet<String> = got
            .iter()
            .map(|g| g.header("webhook-id").to_string())
            .collect();
        if ids.len() == N {
            for g in &got {
                verify(g)?;
            }
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} of {N} callbacks arrived after the restart",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pool = sqlx::PgPool::connect(&db.url).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (delivered,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM outbox WHERE state = 'delivered'")
                .fetch_one(&pool)
                .await?;
        if delivered == N as i64 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{delivered} of {N} rows delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test]
async fn two_replicas_deliver_each_callback_once() -> anyhow::Result<()> {
    const N: usize = 60;
    let rx = Receiver::start().await?;
    let db = lanes_tests::fresh_database().await?;
    let one = Coordinator::start(&db.url, &[]).await?;
    let two = Coordinator::start(&db.url, &[]).await?;
    let client = one.client().await?;
    let agent = two.agent().await?;
    for _ in 0..N {
        jobs::send(
            &client,
            pb::EnqueueRequest {
                queue: "q".into(),
                payload: "{}".into(),
                callback_url: rx.url("/done"),
                ..Default::default()
            },
        )
        .await?;
        let j = jobs::lease_within(&agent, "a", &["q"], Duration::from_secs(10)).await?;
        jobs::complete(&agent, &j).await?;
    }
    rx.wait_for(N, Duration::from_secs(20)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = rx.requests();
    let ids: HashSet<&str> = got.iter().map(|g| g.header("webhook-id")).collect();
    assert_eq!((got.len(), ids.len()), (N, N), "a callback was sent twice");
    Ok(())
}
