//! The gateway's job routes end to end: real PostgreSQL, coordinator and gateway processes,
//! HTTP from the test, and a simulated agent (AgentService calls) doing the processing.

use anyhow::Context as _;
use lanes_proto::v1 as pb;
use lanes_tests::gateway::{ADMIN_KEY, ENQUEUE_KEY, READ_KEY, SimAgent, Stack};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const Q: &str = "invoice_import";

fn invoice(lane: &str, n: u32) -> Value {
    json!({"queue": Q, "lane": lane, "payload": {"establishment_id": lane, "invoice": n}})
}

/// Two establishments' invoices enqueued interleaved through the gateway are processed one
/// at a time per establishment, in enqueue order, while the two establishments run in
/// parallel.
#[tokio::test]
async fn establishments_run_fifo_and_in_parallel() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    let mut enqueued: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for n in 1..=4 {
        for lane in ["resto-a", "resto-b"] {
            let r = s
                .http
                .post("/api/jobs", Some(ENQUEUE_KEY), &invoice(lane, n))
                .await?;
            assert_eq!(r.status, 202, "{}", r.body);
            assert_eq!(r.body["status"], "pending");
            assert_eq!(r.body["success"], true);
            assert_eq!(r.body["task_id"], r.body["job_id"]);
            // Jobs ahead in the same establishment's lane.
            assert_eq!(r.body["position_in_lane"], json!(n - 1), "{}", r.body);
            assert!(r.body["position_in_queue"].as_i64().is_some(), "{}", r.body);
            let id = r.body["job_id"].as_i64().context("job_id")?;
            enqueued.entry(lane.to_owned()).or_default().push(id);
        }
    }
    let channel = s.coord.channel().await?;
    let (a1, a2, a3) = (
        SimAgent::new(channel.clone(), "agent-1"),
        SimAgent::new(channel.clone(), "agent-2"),
        SimAgent::new(channel, "agent-3"),
    );
    let mut ran: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for round in 0..4 {
        let x = a1.take(Q).await?;
        let y = a2.take(Q).await?;
        assert_ne!(
            x.lane, y.lane,
            "round {round}: one lane ran two jobs at once"
        );
        assert!(
            a3.lease(Q).await?.is_none(),
            "round {round}: a third job was leasable"
        );
        // While running, the gateway shows both as processing.
        for j in [&x, &y] {
            assert_eq!(s.job(j.id).await?["status"], "processing");
        }
        for (agent, j) in [(&a1, &x), (&a2, &y)] {
            ran.entry(j.lane.clone()).or_default().push(j.id);
            agent
                .complete(j, &format!(r#"{{"imported": {}}}"#, j.id))
                .await?;
        }
    }
    assert_eq!(
        ran, enqueued,
        "per-establishment order differs from enqueue order"
    );
    for id in enqueued.values().flatten() {
        let j = s.job(*id).await?;
        assert_eq!(j["status"], "completed", "{j}");
        assert_eq!(j["result"], json!({"imported": id}));
    }
    Ok(())
}

/// Status, progress (from heartbeats) and the result are visible through GET /api/jobs/{id},
/// the seed-001 task alias and the result route, which redirects when the result is a link.
#[tokio::test]
async fn status_progress_and_result() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    let id = s
        .enqueue(
            json!({"queue": "pdf", "lane": 7, "payload": {"code": "rb5Y"},
        "priority": "high", "callback_url": "https://n8n.example/webhook/lanes-job-done"}),
        )
        .await?;
    let j = s.job(id).await?;
    assert_eq!(
        (j["status"].as_str(), j["lane"].as_str()),
        (Some("pending"), Some("7"))
    );
    assert_eq!(
        (j["priority"].as_i64(), j["position_in_lane"].as_i64()),
        (Some(10), Some(0))
    );
    assert_eq!(j["payload"], json!({"code": "rb5Y"}));
    assert_eq!(
        j["callback_url"],
        "https://n8n.example/webhook/lanes-job-done"
    );
    assert!(
        j["created_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{j}"
    );
    assert!(
        j["started_at"].is_null() && j["completed_at"].is_null(),
        "{j}"
    );
    let early = s
        .http
        .get(&format!("/api/jobs/{id}/result"), Some(READ_KEY))
        .await?;
    assert_eq!(
        (early.status, early.code()),
        (409, "not_completed"),
        "{}",
        early.body
    );

    let leased = s.agent.take("pdf").await?;
    assert_eq!(leased.id, id);
    s.agent.progress(&leased, 65, "rendering page 3").await?;
    let j = s.job(id).await?;
    assert_eq!(
        (j["status"].as_str(), j["progress"].as_i64()),
        (Some("processing"), Some(65))
    );
    assert_eq!(j["progress_message"], "rendering page 3");
    assert_eq!(
        (j["attempt"].as_i64(), j["max_attempts"].as_i64()),
        (Some(1), Some(3))
    );
    assert!(j["started_at"].as_str().is_some(), "{j}");
    assert!(j["position_in_lane"].is_null(), "{j}");

    s.agent
        .complete(&leased, r#"{"pages": 12, "size_kb": 340}"#)
        .await?;
    let j = s.job(id).await?;
    assert_eq!(j["status"], "completed");
    assert_eq!(j["result"], json!({"pages": 12, "size_kb": 340}));
    assert!(j["completed_at"].as_str().is_some(), "{j}");
    let r = s
        .http
        .get(&format!("/api/jobs/{id}/result"), Some(READ_KEY))
        .await?;
    assert_eq!(
        (r.status, &r.body),
        (200, &json!({"pages": 12, "size_kb": 340}))
    );

    let t = s
        .http
        .get(&format!("/api/queue/tasks/{id}"), Some(READ_KEY))
        .await?;
    assert_eq!(t.status, 200, "{}", t.body);
    assert_eq!(t.body["success"], true);
    let task = &t.body["task"];
    assert_eq!(
        (task["id"].as_i64(), task["type"].as_str()),
        (Some(id), Some("pdf"))
    );
    assert_eq!(task["status"], "completed");
    for k in ["created_at_iso", "started_at_iso", "completed_at_iso"] {
        assert!(task[k].as_str().is_some(), "{k} missing: {task}");
    }
    assert_eq!(task["result"]["pages"], 12);

    // A result that is a link: the result route answers with a redirect to it.
    let id2 = s
        .enqueue(json!({"queue": "pdf", "payload": {"code": "x"}}))
        .await?;
    let l = s.agent.take("pdf").await?;
    assert_eq!(l.id, id2);
    s.agent
        .complete(
            &l,
            r#"{"google_drive_link": "https://drive.example/file/d/1abc/view"}"#,
        )
        .await?;
    for route in ["result", "download"] {
        let r = s
            .http
            .get(&format!("/api/jobs/{id2}/{route}"), Some(READ_KEY))
            .await?;
        assert_eq!(r.status, 302, "{route}: {}", r.body);
        assert_eq!(
            r.header("location"),
            Some("https://drive.example/file/d/1abc/view")
        );
    }
    Ok(())
}

/// A repeated idempotency key answers 200 with the same job; cancel and retry move jobs
/// between states as documented, and refuse (409) what the state forbids.
#[tokio::test]
async fn idempotency_cancel_and_retry() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    let body = json!({"queue": Q, "lane": "resto-1", "payload": {"invoice": 1},
        "idempotency_key": "ocr-7781"});
    let first = s.http.post("/api/jobs", Some(ENQUEUE_KEY), &body).await?;
    assert_eq!(
        (first.status, first.body["created"].as_bool()),
        (202, Some(true))
    );
    let again = s.http.post("/api/jobs", Some(ENQUEUE_KEY), &body).await?;
    assert_eq!(
        (again.status, again.body["created"].as_bool()),
        (200, Some(false)),
        "{}",
        again.body
    );
    assert_eq!(again.body["job_id"], first.body["job_id"]);
    let id = first.body["job_id"].as_i64().context("id")?;
    let list = s
        .http
        .get(&format!("/api/jobs?queue={Q}"), Some(READ_KEY))
        .await?;
    assert_eq!(
        list.body["jobs"].as_array().map(Vec::len),
        Some(1),
        "{}",
        list.body
    );

    // Cancel a pending job: cancelled at once; a second cancel is a conflict.
    let c = s
        .http
        .post(
            &format!("/api/jobs/{id}/cancel"),
            Some(ENQUEUE_KEY),
            &json!({}),
        )
        .await?;
    assert_eq!(
        (c.status, c.body["status"].as_str()),
        (200, Some("cancelled")),
        "{}",
        c.body
    );
    let c2 = s
        .http
        .post(
            &format!("/api/jobs/{id}/cancel"),
            Some(ENQUEUE_KEY),
            &json!({}),
        )
        .await?;
    assert_eq!((c2.status, c2.code()), (409, "conflict"), "{}", c2.body);

    // Retry the cancelled job: pending again; lease it and fail it for good; retry resets it.
    let r = s
        .http
        .post(
            &format!("/api/jobs/{id}/retry"),
            Some(ADMIN_KEY),
            &json!({}),
        )
        .await?;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("pending")),
        "{}",
        r.body
    );
    let leased = s.agent.take(Q).await?;
    assert_eq!(leased.id, id);
    let r = s
        .http
        .post(
            &format!("/api/jobs/{id}/retry"),
            Some(ENQUEUE_KEY),
            &json!({}),
        )
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (409, "conflict"),
        "retry of a running job: {}",
        r.body
    );
    assert_eq!(
        s.agent.fail(&leased, "template not found", false).await?,
        pb::JobState::Failed
    );
    let j = s.job(id).await?;
    assert_eq!(
        (j["status"].as_str(), j["error"].as_str()),
        (Some("failed"), Some("template not found"))
    );
    let r = s
        .http
        .post(
            &format!("/api/jobs/{id}/retry"),
            Some(ENQUEUE_KEY),
            &json!({}),
        )
        .await?;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("pending")),
        "{}",
        r.body
    );
    assert_eq!(r.body["attempt"], 0);

    // Cancel a running job: flagged; the agent learns it on its next heartbeat.
    let leased = s.agent.take(Q).await?;
    let c = s
        .http
        .post(
            &format!("/api/jobs/{id}/cancel"),
            Some(ENQUEUE_KEY),
            &json!({}),
        )
        .await?;
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(
        (
            c.body["status"].as_str(),
            c.body["cancel_requested"].as_bool()
        ),
        (Some("processing"), Some(true))
    );
    assert!(
        s.agent.progress(&leased, 10, "working").await?,
        "heartbeat must report the cancel"
    );
    Ok(())
}

/// GET /api/jobs filters by status, queue and lane and pages with next_cursor; a batch is
/// enqueued all or nothing.
#[tokio::test]
async fn list_filters_paging_and_batch() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    let jobs: Vec<Value> = (1..=5)
        .map(|n| json!({"queue": Q, "lane": if n % 2 == 0 { "even" } else { "odd" }, "payload": {"n": n}}))
        .chain([json!({"queue": "notifications", "payload": {"to": "all"}})])
        .collect();
    let b = s
        .http
        .post("/api/jobs/batch", Some(ENQUEUE_KEY), &json!({"jobs": jobs}))
        .await?;
    assert_eq!(b.status, 202, "{}", b.body);
    let ids: Vec<i64> = b.body["jobs"]
        .as_array()
        .context("jobs")?
        .iter()
        .filter_map(|j| j["job_id"].as_i64())
        .collect();
    assert_eq!(ids.len(), 6);
    assert_eq!(
        b.body["jobs"][4]["position_in_lane"], 2,
        "odd lane: jobs 1 and 3 ahead of 5"
    );
    assert!(
        b.body["jobs"][5]["position_in_lane"].is_null(),
        "unkeyed job has no lane position"
    );

    // An invalid job anywhere in a batch rejects the whole batch.
    let bad =
        json!({"jobs": [{"queue": Q, "payload": {}}, {"queue": "bad queue!", "payload": {}}]});
    let r = s
        .http
        .post("/api/jobs/batch", Some(ENQUEUE_KEY), &bad)
        .await?;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (422, Some("jobs[1].queue")),
        "{}",
        r.body
    );

    let mut seen = Vec::new();
    let mut path = format!("/api/jobs?queue={Q}&limit=2");
    loop {
        let page = s.http.get(&path, Some(READ_KEY)).await?;
        assert_eq!(page.status, 200, "{}", page.body);
        let got: Vec<i64> = page.body["jobs"]
            .as_array()
            .context("jobs")?
            .iter()
            .filter_map(|j| j["job_id"].as_i64())
            .collect();
        assert!(got.len() <= 2);
        seen.extend(got);
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/api/jobs?queue={Q}&limit=2&cursor={c}"),
            None => break,
        }
    }
    let mut expected: Vec<i64> = ids[..5].to_vec();
    expected.reverse();
    assert_eq!(seen, expected, "newest first, every job once");

    let odd = s
        .http
        .get(&format!("/api/jobs?queue={Q}&lane=odd"), Some(READ_KEY))
        .await?;
    assert_eq!(odd.body["jobs"].as_array().map(Vec::len), Some(3));
    let leased = s.agent.take(Q).await?;
    let running = s
        .http
        .get("/api/jobs?status=processing", Some(READ_KEY))
        .await?;
    let running: Vec<i64> = running.body["jobs"]
        .as_array()
        .context("jobs")?
        .iter()
        .filter_map(|j| j["job_id"].as_i64())
        .collect();
    assert_eq!(running, vec![leased.id]);
    let pending = s
        .http
        .get("/api/jobs?status=pending", Some(READ_KEY))
        .await?;
    assert_eq!(pending.body["jobs"].as_array().map(Vec::len), Some(5));
    Ok(())
}
