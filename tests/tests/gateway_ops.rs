//! The gateway's queue and operator routes end to end: wake-worker (seed 000), stats (seed
//! 001) after a known run, admin routes, /openapi.json and /metrics.

use anyhow::Context as _;
use lanes_tests::gateway::{ADMIN_KEY, ENQUEUE_KEY, READ_KEY, SimAgent, Stack, next_wake};
use serde_json::{Value, json};
use std::time::Duration;
use tonic::Streaming;

const Q: &str = "invoice_import";
/// Long enough for a wake that was sent to arrive; used to check that none was.
const QUIET: Duration = Duration::from_millis(400);

async fn wake(s: &Stack, body: Value) -> anyhow::Result<Value> {
    let r = s
        .http
        .post("/api/wake-worker", Some(ENQUEUE_KEY), &body)
        .await?;
    anyhow::ensure!(
        r.status == 200,
        "wake-worker answered {}: {}",
        r.status,
        r.body
    );
    assert_eq!(r.body["status"], "success");
    Ok(r.body)
}

/// How many of `streams` get a wake within `wait`, reading each once.
async fn woken(
    streams: &mut [Streaming<lanes_proto::v1::WakeEvent>],
    wait: Duration,
) -> anyhow::Result<usize> {
    // One shared deadline; a wake already delivered is read even once it has passed.
    let deadline = tokio::time::Instant::now() + wait;
    let mut n = 0;
    for s in streams.iter_mut() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if next_wake(s, left).await?.is_some() {
            n += 1;
        }
    }
    Ok(n)
}

/// Puts every agent to sleep and waits until no wake is in flight: the coordinator's own
/// wakes (after an enqueue or cancel) are sent asynchronously and may land after a doze.
async fn settle_asleep(
    agents: &[SimAgent],
    streams: &mut [Streaming<lanes_proto::v1::WakeEvent>],
) -> anyhow::Result<()> {
    for _ in 0..20 {
        for a in agents {
            a.doze().await?;
        }
        if woken(streams, QUIET).await? == 0 {
            return Ok(());
        }
    }
    anyhow::bail!("agents kept being woken without a wake-worker call")
}

/// Wake-worker wakes nothing on an empty queue; with ready work it wakes asleep agents, at
/// most workers_to_start, at most --max-wake, never more than the ready jobs, and leaves
/// busy agents alone.
#[tokio::test]
async fn wake_worker_respects_every_limit() -> anyhow::Result<()> {
    let s = Stack::start_slow_tick(&["--max-wake", "2"]).await?;
    let empty = s
        .http
        .post_raw("/api/wake-worker", Some(ENQUEUE_KEY), "")
        .await?;
    assert_eq!(empty.status, 200, "an empty body is fine: {}", empty.body);
    assert_eq!(empty.body["message"], "no jobs to process");
    assert_eq!(
        (
            empty.body["pending_jobs"].as_i64(),
            empty.body["workers_woken"].as_i64()
        ),
        (Some(0), Some(0))
    );

    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            s.enqueue(json!({"queue": Q, "lane": format!("resto-{n}"), "payload": {}}))
                .await?,
        );
    }
    // Three idle agents, connected after the enqueues (so those woke nobody), asleep.
    let channel = s.coord.channel().await?;
    let agents: Vec<SimAgent> = (1..=3)
        .map(|i| SimAgent::new(channel.clone(), &format!("w{i}")))
        .collect();
    let mut streams = Vec::new();
    for a in &agents {
        streams.push(a.connect(Q).await?);
    }
    settle_asleep(&agents, &mut streams).await?;
    let r = wake(&s, json!({"workers_to_start": 0})).await?;
    assert_eq!(
        (r["workers_woken"].as_i64(), r["pending_jobs"].as_i64()),
        (Some(0), Some(5)),
        "{r}"
    );
    assert_eq!(
        woken(&mut streams, QUIET).await?,
        0,
        "workers_to_start 0 woke someone"
    );

    let r = wake(
        &s,
        json!({"requested_by": "n8n", "pending_jobs": 12, "workers_to_start": 1}),
    )
    .await?;
    assert_eq!(
        (r["workers_woken"].as_i64(), r["agents_connected"].as_i64()),
        (Some(1), Some(3)),
        "{r}"
    );
    assert_eq!(r["message"], "1 worker woken for 5 ready jobs");
    assert_eq!(woken(&mut streams, Duration::from_secs(2)).await?, 1);

    let r = wake(&s, json!({"requested_by": "n8n", "workers_to_start": 10})).await?;
    assert_eq!(
        r["workers_woken"], 2,
        "--max-wake 2 caps workers_to_start 10: {r}"
    );
    assert_eq!(woken(&mut streams, Duration::from_secs(2)).await?, 2);

    let r = wake(&s, json!({})).await?;
    assert_eq!(
        (r["workers_woken"].as_i64(), r["agents_busy"].as_i64()),
        (Some(0), Some(3)),
        "{r}"
    );
    assert_eq!(r["message"], "3 workers already busy; none woken");
    assert_eq!(
        woken(&mut streams, QUIET).await?,
        0,
        "a busy agent was disturbed"
    );

    // One ready job, three asleep agents, room for two: one is woken.
    for id in &ids[1..] {
        let c = s
            .http
            .post(
                &format!("/api/jobs/{id}/cancel"),
                Some(ENQUEUE_KEY),
                &json!({}),
            )
            .await?;
        assert_eq!(c.status, 200, "{}", c.body);
    }
    settle_asleep(&agents, &mut streams).await?;
    let r = wake(&s, json!({"workers_to_start": 3})).await?;
    assert_eq!(
        (r["workers_woken"].as_i64(), r["pending_jobs"].as_i64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert_eq!(woken(&mut streams, Duration::from_secs(2)).await?, 1);
    Ok(())
}

/// After a known run the seed-001 stats are exact.
#[tokio::test]
async fn stats_are_exact_after_a_known_run() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    let st = s.stats().await?;
    assert_eq!(
        (st["workers"].as_i64(), st["running"].as_bool()),
        (Some(0), Some(false)),
        "{st}"
    );
    assert_eq!(st["total_tasks"], 0);

    for lane in ["a", "b", "c", "d"] {
        s.enqueue(json!({"queue": Q, "lane": lane, "payload": {}}))
            .await?;
    }
    let p1 = s.enqueue(json!({"queue": "pdf", "payload": {}})).await?;
    s.enqueue(json!({"queue": "pdf", "payload": {}})).await?;
    let _stream = s.agent.connect(Q).await?;
    let mut leased = Vec::new();
    for _ in 0..4 {
        leased.push(s.agent.take(Q).await?);
    }
    s.agent.complete(&leased[0], "{}").await?;
    s.agent.complete(&leased[1], "{}").await?;
    s.agent.fail(&leased[2], "boom", false).await?;
    let c = s
        .http
        .post(
            &format!("/api/jobs/{p1}/cancel"),
            Some(ENQUEUE_KEY),
            &json!({}),
        )
        .await?;
    assert_eq!(c.status, 200);

    let r = s.http.get("/api/queue/stats", Some(READ_KEY)).await?;
    assert_eq!((r.status, r.body["success"].as_bool()), (200, Some(true)));
    let st = &r.body["stats"];
    let expect =
        json!({"pending": 1, "processing": 1, "completed": 2, "failed": 1, "cancelled": 1});
    assert_eq!(st["tasks_by_status"], expect, "{st}");
    let numbers = |k: &str| st[k].as_i64();
    assert_eq!(numbers("total_enqueued"), Some(6));
    assert_eq!(numbers("total_tasks"), Some(6));
    assert_eq!(numbers("total_processed"), Some(3));
    assert_eq!(numbers("total_failed"), Some(1));
    assert_eq!(numbers("current_queue_size"), Some(2));
    assert_eq!(
        (numbers("workers"), st["running"].as_bool()),
        (Some(1), Some(true))
    );
    let queue = |name: &str| -> anyhow::Result<Value> {
        st["queues"]
            .as_array()
            .and_then(|qs| qs.iter().find(|q| q["queue"] == name).cloned())
            .with_context(|| format!("queue {name} missing: {st}"))
    };
    let q = queue(Q)?;
    assert_eq!(
        (
            q["processing"].as_i64(),
            q["completed"].as_i64(),
            q["failed"].as_i64()
        ),
        (Some(1), Some(2), Some(1))
    );
    let pdf = queue("pdf")?;
    assert_eq!(
        (
            pdf["pending"].as_i64(),
            pdf["ready"].as_i64(),
            pdf["cancelled"].as_i64()
        ),
        (Some(1), Some(1), Some(1))
    );

    let agents = s.http.get("/admin/api/agents", Some(ADMIN_KEY)).await?;
    assert_eq!(agents.body["connected"], 1, "{}", agents.body);
    assert_eq!(agents.body["agents"][0]["agent_id"], "sim-agent");
    assert_eq!(
        agents.body["agents"][0]["job_id"].as_i64(),
        Some(leased[3].id)
    );
    Ok(())
}

/// Pause/resume, queue settings, unblocking a blocked lane and clearing old jobs.
#[tokio::test]
async fn admin_routes() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    let path = format!("/admin/api/queues/{Q}");
    let p = s
        .http
        .post(&format!("{path}/pause"), Some(ADMIN_KEY), &json!({}))
        .await?;
    assert_eq!(
        (p.status, p.body["paused"].as_bool()),
        (200, Some(true)),
        "{}",
        p.body
    );
    let first = s
        .enqueue(json!({"queue": Q, "lane": "l1", "payload": {"n": 1}}))
        .await?;
    let second = s
        .enqueue(json!({"queue": Q, "lane": "l1", "payload": {"n": 2}}))
        .await?;
    assert!(
        s.agent.lease(Q).await?.is_none(),
        "a paused queue handed out a job"
    );
    let r = s
        .http
        .post(&format!("{path}/resume"), Some(ADMIN_KEY), &json!({}))
        .await?;
    assert_eq!(r.body["paused"], false);

    let put = s
        .http
        .put(
            &format!("{path}/settings"),
            Some(ADMIN_KEY),
            &json!({"failure_policy": "block", "max_attempts": 1}),
        )
        .await?;
    assert_eq!(put.status, 200, "{}", put.body);
    let got = s
        .http
        .get(&format!("{path}/settings"), Some(ADMIN_KEY))
        .await?;
    assert_eq!(
        (
            got.body["failure_policy"].as_str(),
            got.body["max_attempts"].as_i64()
        ),
        (Some("block"), Some(1))
    );
    let bad = s
        .http
        .put(
            &format!("{path}/settings"),
            Some(ADMIN_KEY),
            &json!({"failure_policy": "stop"}),
        )
        .await?;
    assert_eq!(
        (bad.status, bad.body["error"]["field"].as_str()),
        (422, Some("failure_policy"))
    );

    // The lane's head fails for good: with `block` the lane stops until unblocked.
    let j = s.agent.take(Q).await?;
    assert_eq!(j.id, first);
    s.agent.fail(&j, "bad invoice", false).await?;
    assert!(
        s.agent.lease(Q).await?.is_none(),
        "a blocked lane handed out its next job"
    );
    let stats = s.stats().await?;
    assert_eq!(stats["queues"][0]["blocked_lanes"], 1, "{stats}");
    let u = s
        .http
        .post(
            "/admin/api/lanes/unblock",
            Some(ADMIN_KEY),
            &json!({"queue": Q, "lane": "l1"}),
        )
        .await?;
    assert_eq!(
        (u.status, u.body["failed_job_id"].as_i64()),
        (200, Some(first)),
        "{}",
        u.body
    );
    let next = s.agent.take(Q).await?;
    assert_eq!(next.id, second);
    s.agent.complete(&next, "{}").await?;

    let c = s
        .http
        .post(
            "/admin/api/queue/clear",
            Some(ADMIN_KEY),
            &json!({"hours": 0}),
        )
        .await?;
    assert_eq!(
        (c.status, c.body["deleted"].as_i64()),
        (200, Some(2)),
        "{}",
        c.body
    );
    for id in [first, second] {
        assert_eq!(
            s.http
                .get(&format!("/api/jobs/{id}"), Some(READ_KEY))
                .await?
                .status,
            404
        );
    }
    Ok(())
}

/// /openapi.json is generated, parses, and lists every route, each with the errors it can
/// answer; /metrics has a HELP line per metric, its label-free counter at 0 from the start,
/// counts requests by route and status and has the latency histogram.
#[tokio::test]
async fn openapi_and_metrics() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    let fresh = s.http.get("/metrics", None).await?;
    let fresh = fresh.body.as_str().context("metrics text")?;
    assert!(
        fresh
            .lines()
            .any(|l| l == "lanes_gateway_workers_woken_total 0"),
        "{fresh}"
    );
    let doc = s.http.get("/openapi.json", None).await?;
    assert_eq!(doc.status, 200);
    assert!(
        doc.body["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with('3')),
        "{}",
        doc.body["openapi"]
    );
    let paths = doc.body["paths"].as_object().context("paths")?;
    let want = [
        ("/api/jobs", "post"),
        ("/api/jobs", "get"),
        ("/api/jobs/batch", "post"),
        ("/api/jobs/{id}", "get"),
        ("/api/jobs/{id}/result", "get"),
        ("/api/jobs/{id}/cancel", "post"),
        ("/api/jobs/{id}/retry", "post"),
        ("/api/queue/tasks/{id}", "get"),
        ("/api/queue/stats", "get"),
        ("/api/wake-worker", "post"),
        ("/admin/api/queue/clear", "post"),
        ("/admin/api/queues/{queue}/pause", "post"),
        ("/admin/api/queues/{queue}/resume", "post"),
        ("/admin/api/queues/{queue}/settings", "get"),
        ("/admin/api/queues/{queue}/settings", "put"),
        ("/admin/api/lanes/unblock", "post"),
        ("/admin/api/agents", "get"),
        ("/admin/api/deliveries", "get"),
        ("/admin/api/deliveries/{id}/replay", "post"),
        ("/admin/api/deliveries/replay", "post"),
        ("/admin/api/lanes", "get"),
        ("/admin/api/lanes/jobs", "get"),
        ("/admin/api/history", "get"),
        ("/admin/api/queues/{queue}/failed/retry", "post"),
        ("/admin/api/queues/{queue}/failed/cancel", "post"),
        ("/admin/api/schedules", "get"),
        ("/admin/api/schedules", "post"),
        ("/admin/api/schedules/{name}", "get"),
        ("/admin/api/schedules/{name}", "put"),
        ("/admin/api/schedules/{name}", "delete"),
        ("/api/jobs/{id}/download", "get"),
        ("/admin/queue", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ];
    for (path, method) in want {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from /openapi.json"
        );
    }
    let listed: usize = paths
        .values()
        .filter_map(|p| p.as_object())
        .map(|p| p.len())
        .sum();
    assert_eq!(
        listed,
        want.len(),
        "/openapi.json lists an operation this test does not know"
    );
    // Every keyed operation documents 401 and 403; every one with a body 400 and 422.
    for (path, item) in paths {
        for (method, op) in item.as_object().into_iter().flatten() {
            let codes = op["responses"].as_object().context("responses")?;
            let keyed = op["security"].as_array().is_some_and(|s| !s.is_empty());
            for code in ["401", "403", "503"].iter().filter(|_| keyed) {
                assert!(codes.contains_key(*code), "{method} {path} lacks {code}");
            }
            for code in ["400", "413", "422"]
                .iter()
                .filter(|_| op.get("requestBody").is_some())
            {
                assert!(codes.contains_key(*code), "{method} {path} lacks {code}");
            }
        }
    }
    assert!(doc.body["components"]["securitySchemes"]["api_key"].is_object());
    assert!(doc.body["components"]["schemas"]["EnqueueBody"].is_object());
    // Issue 14's inputs are documented: the wait of GET /api/jobs/{id}, the job's own limits
    // and `replace` at enqueue, the new queue settings.
    let params = doc.body["paths"]["/api/jobs/{id}"]["get"]["parameters"]
        .as_array()
        .context("parameters")?;
    let wait = params
        .iter()
        .find(|p| p["name"] == "wait")
        .context("GET /api/jobs/{id} documents ?wait=")?;
    assert_eq!(wait["in"], "query", "{wait}");
    let schemas = &doc.body["components"]["schemas"];
    for field in [
        "max_attempts",
        "timeout_ms",
        "soft_timeout_ms",
        "backoff_initial_ms",
        "backoff_max_ms",
        "replace",
    ] {
        assert!(
            schemas["EnqueueBody"]["properties"][field].is_object(),
            "EnqueueBody lacks {field}"
        );
    }
    for field in [
        "soft_timeout_ms",
        "rate_limit",
        "rate_interval_ms",
        "idempotency_window_s",
    ] {
        assert!(
            schemas["SettingsPatch"]["properties"][field].is_object(),
            "SettingsPatch lacks {field}"
        );
    }

    for n in 0..3 {
        s.enqueue(json!({"queue": Q, "payload": {"n": n}})).await?;
    }
    s.http.get("/api/jobs/1", None).await?;
    let m = s.http.get("/metrics", None).await?;
    let text = m.body.as_str().context("metrics text")?;
    for name in [
        "lanes_gateway_http_requests_total",
        "lanes_gateway_http_request_duration_seconds",
        "lanes_gateway_jobs_enqueued_total",
        "lanes_gateway_workers_woken_total",
    ] {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}:\n{text}"
        );
    }
    let value = |needles: &[&str]| -> Option<f64> {
        text.lines()
            .find(|l| {
                l.starts_with("lanes_gateway_http_requests_total{")
                    && needles.iter().all(|n| l.contains(n))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    assert_eq!(
        value(&["route=\"/api/jobs\"", "method=\"POST\"", "status=\"202\""]),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(&["route=\"/api/jobs/{id}\"", "status=\"401\""]),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("lanes_gateway_http_request_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(
        text.contains("lanes_gateway_jobs_enqueued_total{queue=\"invoice_import\"} 3"),
        "{text}"
    );
    Ok(())
}
