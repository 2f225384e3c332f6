//! Issue 14's features through the gateway, as an n8n flow uses them: waiting for a job's
//! result in one call, a job's own limits, seed 004's `callback` spelling, idempotency keys
//! that replace a waiting job's payload, queue settings for the soft limit, the rate limit
//! and the idempotency window, wake-worker naming the queue no agent serves, and no start
//! estimate on a paused queue. Real PostgreSQL, coordinator and gateway processes.

use anyhow::Context as _;
use lanes_tests::gateway::{ADMIN_KEY, ENQUEUE_KEY, READ_KEY, SimAgent, Stack, eventually};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

const Q: &str = "invoice_import";
const SOON: Duration = Duration::from_secs(20);

fn id_of(body: &Value) -> anyhow::Result<i64> {
    body["job_id"].as_i64().context("job_id")
}

/// `GET /api/jobs/{id}?wait=N` answers as soon as the job finishes, with its result; with
/// nothing happening it answers at the end of the wait with the job as it is; a wait out of
/// range is refused naming `wait`.
#[tokio::test]
async fn an_n8n_flow_can_enqueue_then_wait_for_the_result() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    let id = s
        .enqueue(json!({"queue": Q, "lane": "resto-1", "payload": {"invoice": 7}}))
        .await?;
    let path = format!("/api/jobs/{id}?wait=");

    let started = Instant::now();
    let r = s.http.get(&format!("{path}1"), Some(READ_KEY)).await?;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("pending"))
    );
    assert!(started.elapsed() >= Duration::from_millis(900), "{r:?}");

    // A wait of a minute, answered when the agent completes the job, not at the minute.
    let http = s.http.clone();
    let long = format!("{path}60");
    let waiting = tokio::spawn(async move {
        let at = Instant::now();
        let r = http.get(&long, Some(READ_KEY)).await;
        (r, at.elapsed())
    });
    let agent = SimAgent::new(s.coord.channel().await?, "a1");
    let job = agent.take(Q).await?;
    agent.complete(&job, r#"{"lines": 3}"#).await?;
    let (r, took) = waiting.await?;
    let r = r?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "completed");
    assert_eq!(r.body["result"], json!({"lines": 3}));
    assert!(took < Duration::from_secs(50), "answered after {took:?}");

    for bad in ["61", "-1", "soon", "1.5"] {
        let r = s.http.get(&format!("{path}{bad}"), Some(READ_KEY)).await?;
        assert_eq!(
            (r.status, r.body["error"]["field"].as_str()),
            (422, Some("wait")),
            "{bad}: {}",
            r.body
        );
    }
    Ok(())
}

/// A job's own limits are kept and shown; seed 004's `callback` is `callback_url`; limits
/// out of range or contradicting each other are refused naming the field.
#[tokio::test]
async fn a_job_carries_its_own_limits_and_seed_spellings() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    let id = s
        .enqueue(json!({
            "queue": Q, "lane": "resto-1", "payload": {},
            "callback": "https://n8n.example/webhook/done",
            "max_attempts": 1, "timeout_ms": 20000, "soft_timeout_ms": 5000,
            "backoff_initial_ms": 0, "backoff_max_ms": 0,
        }))
        .await?;
    let j = s.job(id).await?;
    assert_eq!(j["callback_url"], "https://n8n.example/webhook/done", "{j}");
    assert_eq!(
        (
            &j["max_attempts"],
            &j["timeout_ms"],
            &j["soft_timeout_ms"],
            &j["backoff_initial_ms"]
        ),
        (&json!(1), &json!(20000), &json!(5000), &json!(0)),
        "{j}"
    );
    let plain = s
        .enqueue(json!({"queue": Q, "lane": "resto-2", "payload": {}}))
        .await?;
    let p = s.job(plain).await?;
    assert_eq!(
        (&p["timeout_ms"], &p["soft_timeout_ms"]),
        (&Value::Null, &Value::Null)
    );

    let refused = [
        (json!({"timeout_ms": 999}), "timeout_ms"),
        (json!({"max_attempts": 0}), "max_attempts"),
        (
            json!({"soft_timeout_ms": 9000, "timeout_ms": 5000}),
            "soft_timeout_ms",
        ),
        (
            json!({"backoff_initial_ms": 5000, "backoff_max_ms": 10}),
            "backoff_max_ms",
        ),
    ];
    for (extra, field) in refused {
        let mut body = json!({"queue": Q, "lane": "resto-3", "payload": {}});
        for (k, v) in extra.as_object().context("object")? {
            body[k] = v.clone();
        }
        let r = s.http.post("/api/jobs", Some(ENQUEUE_KEY), &body).await?;
        assert_eq!(r.status, 422, "{extra}: {}", r.body);
        assert_eq!(r.body["error"]["field"], field, "{extra}: {}", r.body);
    }
    let listed = s.http.get("/api/jobs?lane=resto-3", Some(READ_KEY)).await?;
    assert_eq!(listed.body["jobs"], json!([]), "a refused job was stored");
    Ok(())
}

/// `replace` with an idempotency key swaps a waiting job's payload (200, `replaced`); once
/// the job runs, a repeat returns it unchanged.
#[tokio::test]
async fn replace_updates_a_waiting_job_only() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    let body = |n: u32, replace: bool| {
        json!({"queue": Q, "lane": "resto-1", "payload": {"version": n},
               "idempotency_key": "daily-report-2026-12-02", "replace": replace})
    };
    let first = s
        .http
        .post("/api/jobs", Some(ENQUEUE_KEY), &body(1, false))
        .await?;
    assert_eq!(first.status, 202, "{}", first.body);
    let id = id_of(&first.body)?;
    let same = s
        .http
        .post("/api/jobs", Some(ENQUEUE_KEY), &body(2, false))
        .await?;
    assert_eq!(
        (same.status, id_of(&same.body)?, &same.body["replaced"]),
        (200, id, &json!(false))
    );
    assert_eq!(s.job(id).await?["payload"], json!({"version": 1}));

    let swapped = s
        .http
        .post("/api/jobs", Some(ENQUEUE_KEY), &body(3, true))
        .await?;
    assert_eq!(
        (
            swapped.status,
            id_of(&swapped.body)?,
            &swapped.body["replaced"]
        ),
        (200, id, &json!(true)),
        "{}",
        swapped.body
    );
    assert_eq!(s.job(id).await?["payload"], json!({"version": 3}));

    let agent = SimAgent::new(s.coord.channel().await?, "a1");
    let job = agent.take(Q).await?;
    let leased: Value = serde_json::from_str(&job.payload)?;
    assert_eq!(leased, json!({"version": 3}));
    let late = s
        .http
        .post("/api/jobs", Some(ENQUEUE_KEY), &body(4, true))
        .await?;
    assert_eq!((late.status, &late.body["replaced"]), (200, &json!(false)));
    assert_eq!(s.job(id).await?["payload"], json!({"version": 3}));
    Ok(())
}

/// The new queue settings round-trip through the admin API; a rate limit needs its
/// interval; a soft limit at or above the hard one is refused.
#[tokio::test]
async fn queue_settings_carry_soft_limit_rate_and_window() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    let path = format!("/admin/api/queues/{Q}/settings");
    let set = json!({"soft_timeout_ms": 60000, "rate_limit": 60, "rate_interval_ms": 60000,
                     "idempotency_window_s": 86400});
    let r = s.http.put(&path, Some(ADMIN_KEY), &set).await?;
    assert_eq!(r.status, 200, "{}", r.body);
    let got = s.http.get(&path, Some(ADMIN_KEY)).await?.body;
    for k in [
        "soft_timeout_ms",
        "rate_limit",
        "rate_interval_ms",
        "idempotency_window_s",
    ] {
        assert_eq!(got[k], set[k], "{k}: {got}");
    }
    let stats = s.stats().await?;
    let q = stats["queues"]
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["queue"] == Q))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(q["rate_limit"], 60, "{stats}");

    for (bad, field) in [
        (json!({"rate_limit": 5}), "rate_limit"),
        (json!({"soft_timeout_ms": 600000}), "soft_timeout_ms"),
        (
            json!({"rate_interval_ms": -1, "rate_limit": 1}),
            "rate_interval_ms",
        ),
    ] {
        let r = s.http.put(&path, Some(ADMIN_KEY), &bad).await?;
        assert_eq!(
            (r.status, r.body["error"]["field"].as_str()),
            (422, Some(field)),
            "{bad}: {}",
            r.body
        );
    }
    let after = s.http.get(&path, Some(ADMIN_KEY)).await?.body;
    assert_eq!(after, got, "a refused change changed the settings");

    // 0 clears the rate limit.
    let r = s
        .http
        .put(
            &path,
            Some(ADMIN_KEY),
            &json!({"rate_limit": 0, "rate_interval_ms": 0}),
        )
        .await?;
    assert_eq!(
        (r.status, &r.body["rate_limit"]),
        (200, &json!(0)),
        "{}",
        r.body
    );
    Ok(())
}

/// Wake-worker with work waiting and no agent for the queue says so, naming the queue; an
/// empty queue is still "no jobs to process". A paused queue gives no start estimate.
#[tokio::test]
async fn wake_worker_names_a_queue_nobody_serves_and_paused_has_no_estimate() -> anyhow::Result<()>
{
    let s = Stack::start().await?;
    let empty = s
        .http
        .post("/api/wake-worker", Some(ENQUEUE_KEY), &json!({"queue": Q}))
        .await?;
    assert_eq!(
        (
            empty.body["status"].as_str(),
            empty.body["message"].as_str()
        ),
        (Some("success"), Some("no jobs to process"))
    );
    s.enqueue(json!({"queue": Q, "lane": "resto-1", "payload": {}}))
        .await?;
    let r = s
        .http
        .post("/api/wake-worker", Some(ENQUEUE_KEY), &json!({"queue": Q}))
        .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "no_worker", "{}", r.body);
    let message = r.body["message"].as_str().unwrap_or_default();
    assert!(message.contains(Q), "{message}");

    // An agent serves the queue: an enqueue gets an estimate; paused, none.
    let agent = SimAgent::new(s.coord.channel().await?, "a1");
    let _stream = agent.connect(Q).await?;
    let r = s
        .http
        .post("/api/wake-worker", Some(ENQUEUE_KEY), &json!({"queue": Q}))
        .await?;
    assert_eq!(r.body["status"], "success", "{}", r.body);
    let p = s
        .http
        .post(
            &format!("/admin/api/queues/{Q}/pause"),
            Some(ADMIN_KEY),
            &json!({}),
        )
        .await?;
    assert_eq!(p.status, 200, "{}", p.body);
    let n = std::sync::atomic::AtomicU32::new(0);
    eventually(
        SOON,
        "an enqueue on the paused queue without an estimate",
        || async {
            let lane = format!(
                "paused-{}",
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            let r = s
                .http
                .post(
                    "/api/jobs",
                    Some(ENQUEUE_KEY),
                    &json!({"queue": Q, "lane": lane, "payload": {}}),
                )
                .await?;
            anyhow::ensure!(r.status == 202, "{}", r.body);
            Ok(r.body["estimated_start"].is_null().then_some(()))
        },
    )
    .await?;
    Ok(())
}
