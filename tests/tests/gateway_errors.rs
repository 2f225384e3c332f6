//! Every error the gateway documents: its HTTP status, its JSON body `{error: {code,
//! message}}`, and that it changes nothing (stats and job lists before = after); and a
//! coordinator that goes away (503 with Retry-After, then recovery).

use anyhow::Context as _;
use lanes_tests::gateway::{ADMIN_KEY, ENQUEUE_KEY, READ_KEY, Stack, eventually};
use serde_json::{Value, json};
use std::time::Duration;

const Q: &str = "invoice_import";

/// One request that must be refused.
struct Case {
    what: &'static str,
    method: &'static str,
    path: String,
    body: Option<String>,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
}

fn post(
    what: &'static str,
    path: &str,
    body: Value,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
) -> Case {
    Case {
        what,
        method: "POST",
        path: path.into(),
        body: Some(body.to_string()),
        status,
        code,
        field,
    }
}

fn job(extra: Value) -> Value {
    let mut v = json!({"queue": Q, "lane": "resto-1", "payload": {"invoice": 1}});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    v
}

fn enqueue_cases() -> Vec<Case> {
    let bad = |what, extra: Value, field| {
        post(
            what,
            "/api/jobs",
            job(extra),
            422,
            "invalid_field",
            Some(field),
        )
    };
    vec![
        Case {
            what: "malformed JSON",
            method: "POST",
            path: "/api/jobs".into(),
            body: Some("{\"queue\": ".into()),
            status: 400,
            code: "malformed_json",
            field: None,
        },
        Case {
            what: "empty body",
            method: "POST",
            path: "/api/jobs".into(),
            body: Some(String::new()),
            status: 400,
            code: "malformed_json",
            field: None,
        },
        post(
            "missing queue",
            "/api/jobs",
            json!({"payload": {}}),
            422,
            "invalid_field",
            Some("queue"),
        ),
        bad("missing payload", json!({"payload": null}), "payload"),
        bad("bad queue name", json!({"queue": "invoices/2025"}), "queue"),
        bad("lane too long", json!({"lane": "x".repeat(257)}), "lane"),
        bad("empty lane", json!({"lane": ""}), "lane"),
        bad(
            "unknown priority",
            json!({"priority": "urgent"}),
            "priority",
        ),
        bad(
            "priority out of range",
            json!({"priority": 5000}),
            "priority",
        ),
        bad(
            "priority of the wrong type",
            json!({"priority": true}),
            "priority",
        ),
        bad(
            "callback not http",
            json!({"callback_url": "ftp://n8n.example/x"}),
            "callback_url",
        ),
        bad(
            "failure callback not http",
            json!({"failure_callback_url": "javascript:alert(1)"}),
            "failure_callback_url",
        ),
        bad(
            "run_at not RFC 3339",
            json!({"run_at": "tomorrow"}),
            "run_at",
        ),
        bad(
            "run_at and delay",
            json!({"run_at": "2030-01-01T00:00:00Z", "delay_seconds": 5}),
            "run_at",
        ),
        bad(
            "negative delay",
            json!({"delay_seconds": -5}),
            "delay_seconds",
        ),
        bad("unknown field", json!({"paylod": {}}), "paylod"),
        bad(
            "run_at with a delay",
            json!({"run_at": "2030-01-01T00:00:00Z", "delay_seconds": 1}),
            "run_at",
        ),
        bad("lane with a NUL", json!({"lane": "resto\u{0}1"}), "lane"),
        bad(
            "lane of 257 bytes",
            json!({"lane": "é".repeat(128) + "x"}),
            "lane",
        ),
        bad(
            "fractional delay",
            json!({"delay_seconds": 1.5}),
            "delay_seconds",
        ),
        bad(
            "delay past an i64",
            json!({"delay_seconds": 9_223_372_036_854_775_808u64}),
            "delay_seconds",
        ),
        bad(
            "payload with a NUL",
            json!({"payload": {"a": "x\u{0}"}}),
            "payload",
        ),
        Case {
            what: "a body that is an array",
            method: "POST",
            path: "/api/jobs".into(),
            body: Some("[\"invoice_import\", null, {}]".into()),
            status: 400,
            code: "malformed_json",
            field: None,
        },
        post(
            "wake with an unknown field",
            "/api/wake-worker",
            json!({"workers": 2}),
            422,
            "invalid_field",
            Some("workers"),
        ),
        post(
            "settings out of range",
            "/admin/api/queues/invoice_import/settings",
            json!({"max_attempts": 1001}),
            422,
            "invalid_field",
            Some("max_attempts"),
        ),
        post(
            "payload over the limit",
            "/api/jobs",
            job(json!({"payload": {"blob": "x".repeat(1024 * 1024)}})),
            413,
            "payload_too_large",
            None,
        ),
        post(
            "batch with one bad job",
            "/api/jobs/batch",
            json!({"jobs": [job(json!({})), job(json!({"lane": ""}))]}),
            422,
            "invalid_field",
            Some("jobs[1].lane"),
        ),
        post(
            "empty batch",
            "/api/jobs/batch",
            json!({"jobs": []}),
            422,
            "invalid_field",
            Some("jobs"),
        ),
        post(
            "wake with a negative count",
            "/api/wake-worker",
            json!({"workers_to_start": -1}),
            422,
            "invalid_field",
            Some("workers_to_start"),
        ),
    ]
}

fn get(
    what: &'static str,
    path: String,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
) -> Case {
    Case {
        what,
        method: "GET",
        path,
        body: None,
        status,
        code,
        field,
    }
}

/// The stats without the one number that moves by itself (how long the oldest job waited).
fn counts(mut stats: Value) -> Value {
    for q in stats["queues"].as_array_mut().into_iter().flatten() {
        q.as_object_mut().map(|o| o.remove("oldest_ready_ms"));
    }
    stats
}

/// Every bad request gets its documented status and body, and none changes anything.
#[tokio::test]
async fn errors_have_their_status_and_change_nothing() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    // Fixtures: a completed job, a pending one, and a queue that holds at most one job.
    let done = s.enqueue(job(json!({}))).await?;
    let leased = s.agent.take(Q).await?;
    s.agent.complete(&leased, "{}").await?;
    let pending = s.enqueue(job(json!({}))).await?;
    let put = s
        .http
        .put(
            "/admin/api/queues/small/settings",
            Some(ADMIN_KEY),
            &json!({"max_pending": 1}),
        )
        .await?;
    assert_eq!(put.status, 200, "{}", put.body);
    s.enqueue(json!({"queue": "small", "payload": {}})).await?;

    let stats_before = counts(s.stats().await?);
    let jobs_before = s
        .http
        .get("/api/jobs?limit=500", Some(READ_KEY))
        .await?
        .body;

    let mut cases = enqueue_cases();
    cases.extend([
        post(
            "queue full",
            "/api/jobs",
            json!({"queue": "small", "payload": {}}),
            429,
            "queue_full",
            None,
        ),
        get(
            "unknown job",
            "/api/jobs/999999".into(),
            404,
            "not_found",
            None,
        ),
        get(
            "job id not a number",
            "/api/jobs/abc".into(),
            404,
            "not_found",
            None,
        ),
        get(
            "result of a pending job",
            format!("/api/jobs/{pending}/result"),
            409,
            "not_completed",
            None,
        ),
        get(
            "unknown status filter",
            "/api/jobs?status=done".into(),
            422,
            "invalid_field",
            Some("status"),
        ),
        get(
            "limit out of range",
            "/api/jobs?limit=0".into(),
            422,
            "invalid_field",
            Some("limit"),
        ),
        get(
            "lane filter with a NUL",
            "/api/jobs?lane=%00".into(),
            422,
            "invalid_field",
            Some("lane"),
        ),
        get(
            "cursor that is no cursor",
            "/api/jobs?cursor=abc".into(),
            422,
            "invalid_field",
            Some("cursor"),
        ),
        get(
            "negative cursor",
            "/admin/api/deliveries?cursor=-5".into(),
            422,
            "invalid_field",
            Some("cursor"),
        ),
        get(
            "event type with a NUL",
            "/admin/api/deliveries?event_type=job%00".into(),
            422,
            "invalid_field",
            Some("event_type"),
        ),
        get(
            "job id that is not UTF-8",
            "/api/jobs/%FF".into(),
            404,
            "not_found",
            None,
        ),
        get(
            "queue name that is not UTF-8",
            "/admin/api/queues/%FF/settings".into(),
            422,
            "invalid_field",
            Some("queue"),
        ),
        get(
            "unknown task",
            "/api/queue/tasks/999999".into(),
            404,
            "not_found",
            None,
        ),
        get(
            "unknown route",
            "/api/nothing".into(),
            404,
            "not_found",
            None,
        ),
        post(
            "cancel a completed job",
            &format!("/api/jobs/{done}/cancel"),
            json!({}),
            409,
            "conflict",
            None,
        ),
        post(
            "retry a pending job",
            &format!("/api/jobs/{pending}/retry"),
            json!({}),
            409,
            "conflict",
            None,
        ),
        post(
            "cancel an unknown job",
            "/api/jobs/999999/cancel",
            json!({}),
            404,
            "not_found",
            None,
        ),
        post(
            "clear with bad hours",
            "/admin/api/queue/clear",
            json!({"hours": -1}),
            422,
            "invalid_field",
            Some("hours"),
        ),
        post(
            "unblock a lane that is not blocked",
            "/admin/api/lanes/unblock",
            json!({"queue": Q, "lane": "resto-1"}),
            409,
            "conflict",
            None,
        ),
    ]);
    for c in &cases {
        let r = match (c.method, &c.body) {
            ("GET", _) => s.http.get(&c.path, Some(ADMIN_KEY)).await?,
            (_, Some(b)) if c.path.ends_with("/settings") => {
                s.http.put_raw(&c.path, Some(ADMIN_KEY), b).await?
            }
            (_, Some(b)) => s.http.post_raw(&c.path, Some(ADMIN_KEY), b).await?,
            _ => unreachable!("every POST case has a body"),
        };
        let ctx = format!(
            "{}: {} {} answered {} {}",
            c.what, c.method, c.path, r.status, r.body
        );
        assert_eq!(r.status, c.status, "{ctx}");
        assert_eq!(r.code(), c.code, "{ctx}");
        assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{ctx}"
        );
        assert_eq!(r.body["error"]["field"].as_str(), c.field, "{ctx}");
        if c.status == 429 || c.status == 503 {
            assert!(r.header("retry-after").is_some(), "{ctx}: no Retry-After");
        }
    }
    assert_eq!(
        counts(s.stats().await?),
        stats_before,
        "a rejected request changed the stats"
    );
    let jobs_after = s
        .http
        .get("/api/jobs?limit=500", Some(READ_KEY))
        .await?
        .body;
    assert_eq!(
        jobs_after, jobs_before,
        "a rejected request changed the jobs"
    );
    Ok(())
}

/// When the coordinator is down, calls answer 503 with Retry-After (readyz too, healthz
/// stays 200); when it is back, the gateway recovers without a restart.
#[tokio::test]
async fn coordinator_down_means_503_then_recovery() -> anyhow::Result<()> {
    let mut s = Stack::start().await?;
    let id = s.enqueue(job(json!({}))).await?;
    s.coord.proc.kill9().await;

    let r = s
        .http
        .post("/api/jobs", Some(ENQUEUE_KEY), &job(json!({})))
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (503, "coordinator_unavailable"),
        "{}",
        r.body
    );
    let retry_after: u64 = r.header("retry-after").context("Retry-After")?.parse()?;
    assert!(retry_after >= 1);
    for path in [
        format!("/api/jobs/{id}"),
        "/api/queue/stats".into(),
        "/api/jobs".into(),
    ] {
        let r = s.http.get(&path, Some(READ_KEY)).await?;
        assert_eq!(
            (r.status, r.code()),
            (503, "coordinator_unavailable"),
            "{path}: {}",
            r.body
        );
        assert!(r.header("retry-after").is_some(), "{path}");
    }
    let w = s
        .http
        .post("/api/wake-worker", Some(ENQUEUE_KEY), &json!({}))
        .await?;
    assert_eq!(w.status, 503, "{}", w.body);
    assert_eq!(s.http.get("/readyz", None).await?.status, 503);
    assert_eq!(s.http.get("/healthz", None).await?.status, 200);

    // Back on the same port and database: the gateway reconnects by itself.
    s.coord.restart().await?;
    eventually(Duration::from_secs(15), "readyz to answer 200", || async {
        Ok((s.http.get("/readyz", None).await?.status == 200).then_some(()))
    })
    .await?;
    assert_eq!(s.job(id).await?["status"], "pending");
    let r = s
        .http
        .post("/api/jobs", Some(ENQUEUE_KEY), &job(json!({})))
        .await?;
    assert_eq!(r.status, 202, "{}\n{}", r.body, s.logs());
    Ok(())
}

/// A payload goes in and comes out as the text sent: a number near `f64::MAX`, one past it
/// and one past `i64` are neither refused nor rounded (they once answered 500 on reading).
#[tokio::test]
async fn payload_numbers_come_back_exact() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    let payload = r#"{"max":1.7976931348623157e308,"past":1e400,"big":123456789012345678901234567890,"tiny":5e-324}"#;
    let body = format!(r#"{{"queue":"{Q}","payload":{payload}}}"#);
    let r = s
        .http
        .post_raw("/api/jobs", Some(ENQUEUE_KEY), &body)
        .await?;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.body["job_id"].as_i64().context("job_id")?;
    // The answer holds 1e400, which the test's own JSON reader refuses: compare the text.
    let text = s
        .http
        .get_text(&format!("/api/jobs/{id}"), Some(READ_KEY))
        .await?;
    assert!(
        text.contains(&format!(r#""payload":{payload}"#)),
        "{text}\n{}",
        s.logs()
    );
    let listed = s.http.get_text("/api/jobs", Some(READ_KEY)).await?;
    assert!(listed.contains(&format!(r#""job_id":{id}"#)), "{listed}");
    Ok(())
}
