//! The admin page in a real headless Chromium, driven over WebDriver (chromedriver started
//! by the test on a free port): key prompt, live job list, a failed job retried from the
//! page, job detail, agents, cleanup, and a failed webhook delivery replayed from the page.
//!
//! Needs Debian's `chromium` and `chromium-driver` (CI installs them); without them the test
//! fails with an install hint rather than skipping.

mod browser;

use browser::{PAGE_WAIT, browser, by, click, displayed, enter_key, text, wait_text};
use fantoccini::{Client, Locator};
use lanes_tests::gateway::{ADMIN_KEY, READ_KEY, Stack, eventually};
use lanes_tests::receiver::Receiver;
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;

const Q: &str = "invoice_import";

/// Load the page, get past the key prompt, watch a job fail and retry it from the page.
#[tokio::test]
async fn admin_page_retries_a_failed_job() -> anyhow::Result<()> {
    // Failed callback deliveries retry every few milliseconds, so one ends failed quickly.
    let s = Stack::start_full(&["--webhook-backoff-ms", "1"], &[]).await?;
    let b = browser().await?;
    let result = match scenario(&s, &b.client).await {
        Ok(()) => deliveries(&s, &b.client).await,
        Err(e) => Err(e),
    };
    let shot = match (&result, b.client.screenshot().await) {
        (Err(_), Ok(png)) => {
            let path =
                std::env::temp_dir().join(format!("lanes-admin-page-{}.png", std::process::id()));
            std::fs::write(&path, png)
                .map(|()| format!("screenshot: {}", path.display()))
                .unwrap_or_default()
        }
        _ => String::new(),
    };
    let _ = b.client.close().await;
    result.map_err(|e| anyhow::anyhow!("{e:#}\n{shot}\n{}", s.logs()))
}

async fn scenario(s: &Stack, c: &Client) -> anyhow::Result<()> {
    // A finished job for the cleanup, then the invoice that will fail.
    let old = s
        .enqueue(json!({"queue": Q, "lane": "resto-0", "payload": {"invoice": 0}}))
        .await?;
    let j = s.agent.take(Q).await?;
    s.agent.complete(&j, r#"{"ok": true}"#).await?;
    let id = s
        .enqueue(json!({"queue": Q, "lane": "resto-1", "payload": {"invoice": 77}}))
        .await?;

    c.goto(&s.gateway.url("/admin/queue")).await?;
    assert!(
        displayed(c, "key-form").await?,
        "the key prompt comes first"
    );
    assert!(!displayed(c, "app").await?, "no data without a key");
    enter_key(c, "not-a-key").await?;
    wait_text(c, "key-error", "Unknown key.").await?;
    enter_key(c, READ_KEY).await?;
    wait_text(c, "key-error", "This key is not an admin key.").await?;
    assert!(
        !displayed(c, "app").await?,
        "a read key must not open the page"
    );

    enter_key(c, ADMIN_KEY).await?;
    wait_text(c, &format!("job-status-{id}"), "pending").await?;
    assert!(displayed(c, "app").await?);
    wait_text(c, "stat-pending", "1").await?;
    wait_text(c, "stat-completed", "1").await?;

    // The simulated agent runs the job (awake while it does: its replica puts agents with
    // nothing running back to sleep at the keep-alive), then fails it for good; the page's
    // refresh shows both.
    let _stream = s.agent.connect(Q).await?;
    let leased = s.agent.take(Q).await?;
    assert_eq!(leased.id, id);
    wait_text(c, &format!("job-status-{id}"), "processing").await?;
    wait_text(c, "stat-agents-awake", "1").await?;
    let agent_row = c.find(Locator::Css(&by("agent-row-sim-agent"))).await?;
    assert_eq!(
        agent_row.attr("data-state").await?.as_deref(),
        Some("awake")
    );
    s.agent
        .fail(&leased, "invoice total mismatch", false)
        .await?;
    wait_text(c, &format!("job-status-{id}"), "failed").await?;
    wait_text(c, "stat-failed", "1").await?;

    // Job detail: payload, error, attempts.
    click(c, &format!("job-open-{id}")).await?;
    wait_text(c, "detail-error", "invoice total mismatch").await?;
    wait_text(c, "detail-attempts", "1/3").await?;
    let payload = text(c, "detail-payload").await?.unwrap_or_default();
    assert!(
        payload.contains("\"invoice\": 77"),
        "payload shown: {payload}"
    );

    // Retry from the list: the job is pending again, on the page and in the API.
    click(c, &format!("job-retry-{id}")).await?;
    wait_text(c, &format!("job-status-{id}"), "pending").await?;
    assert_eq!(s.job(id).await?["status"], "pending");

    // Filters: only failed jobs → none.
    c.find(Locator::Css(&by("filter-status")))
        .await?
        .select_by_value("failed")
        .await?;
    let deadline = Instant::now() + PAGE_WAIT;
    while !displayed(c, "jobs-empty").await? {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the failed filter still lists jobs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.find(Locator::Css(&by("filter-status")))
        .await?
        .select_by_value("")
        .await?;

    // Cleanup of finished jobs: the completed one goes.
    let hours = c.find(Locator::Css(&by("clear-hours"))).await?;
    hours.clear().await?;
    hours.send_keys("0").await?;
    click(c, "clear-submit").await?;
    wait_text(c, "clear-result", "1 job deleted").await?;
    let gone = s
        .http
        .get(&format!("/api/jobs/{old}"), Some(READ_KEY))
        .await?;
    assert_eq!(gone.status, 404);
    Ok(())
}

/// A job callback whose endpoint answers 500 every time ends failed: the Deliveries table
/// shows it, and its Replay button sends it again once the endpoint is back.
async fn deliveries(s: &Stack, c: &Client) -> anyhow::Result<()> {
    let rx = Receiver::start().await?;
    rx.answer_all(500);
    let job = s
        .enqueue(json!({"queue": "callbacks", "payload": {"invoice": 78},
                        "callback_url": rx.url("/n8n")}))
        .await?;
    let leased = s.agent.take("callbacks").await?;
    assert_eq!(leased.id, job);
    s.agent.complete(&leased, "{}").await?;
    let id = eventually(Duration::from_secs(60), "a failed delivery", || async {
        let r = s
            .http
            .get("/admin/api/deliveries?state=failed", Some(ADMIN_KEY))
            .await?;
        Ok(r.body["deliveries"][0]["id"].as_i64())
    })
    .await?;
    wait_text(c, &format!("delivery-state-{id}"), "failed").await?;
    assert!(!displayed(c, "deliveries-empty").await?);

    rx.answer_all(200);
    click(c, &format!("delivery-replay-{id}")).await?;
    wait_text(c, "deliveries-result", &format!("delivery {id} replayed")).await?;
    eventually(Duration::from_secs(20), "the replay delivered", || async {
        let r = s
            .http
            .get("/admin/api/deliveries?state=delivered", Some(ADMIN_KEY))
            .await?;
        Ok((r.body["deliveries"][0]["id"].as_i64() == Some(id)).then_some(()))
    })
    .await?;
    let last = rx
        .requests()
        .pop()
        .map(|g| g.header("webhook-id").to_owned());
    assert_eq!(last, Some(format!("msg_{id}")));
    let deadline = Instant::now() + PAGE_WAIT;
    while !displayed(c, "deliveries-empty").await? {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the delivered webhook is still listed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

const ORDERS: &str = "orders";
const REPORTS: &str = "reports";

/// The operations panels on real jobs: a blocked lane unblocked from the page, a busy lane's
/// jobs in run order, the last hour's charts, a bulk retry of failed jobs, pause and resume,
/// a settings edit (and a refused one), a delayed job's start time, the schedules panel.
#[tokio::test]
async fn admin_page_operates_queues_and_lanes() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    let b = browser().await?;
    let result = operations(&s, &b.client).await;
    let shot = match &result {
        Err(_) => browser::screenshot(&b.client, "lanes-admin-ops")
            .await
            .map(|p| format!("screenshot: {}", p.display()))
            .unwrap_or_else(|e| format!("no screenshot: {e:#}")),
        Ok(()) => String::new(),
    };
    let _ = b.client.close().await;
    result.map_err(|e| anyhow::anyhow!("{e:#}\n{shot}\n{}", s.logs()))
}

/// Jobs for the panels: lane A of `orders` blocked by its failed head with one job behind
/// it; lane B running its first of three jobs; an unkeyed job completed and one failed; a
/// delayed job in `reports`. Returns (a1, a2, u1, [b1, b2, b3], delayed).
async fn fixtures(s: &Stack) -> anyhow::Result<(i64, i64, i64, [i64; 3], i64)> {
    let put = s
        .http
        .put(
            &format!("/admin/api/queues/{ORDERS}/settings"),
            Some(ADMIN_KEY),
            &json!({"failure_policy": "block", "max_attempts": 1}),
        )
        .await?;
    anyhow::ensure!(put.status == 200, "settings: {}", put.body);
    let a1 = s
        .enqueue(json!({"queue": ORDERS, "lane": "A", "payload": {"n": 1}}))
        .await?;
    let a2 = s
        .enqueue(json!({"queue": ORDERS, "lane": "A", "payload": {"n": 2}}))
        .await?;
    let j = s.agent.take(ORDERS).await?;
    assert_eq!(j.id, a1);
    s.agent.fail(&j, "bad order", false).await?;

    let c1 = s
        .enqueue(json!({"queue": ORDERS, "payload": {"n": 3}}))
        .await?;
    let j = s.agent.take(ORDERS).await?;
    assert_eq!(j.id, c1);
    s.agent.complete(&j, "{}").await?;
    let u1 = s
        .enqueue(json!({"queue": ORDERS, "payload": {"n": 4}}))
        .await?;
    let j = s.agent.take(ORDERS).await?;
    assert_eq!(j.id, u1);
    s.agent.fail(&j, "bad total", false).await?;

    let mut b = [0; 3];
    for (i, id) in b.iter_mut().enumerate() {
        *id = s
            .enqueue(json!({"queue": ORDERS, "lane": "B", "payload": {"b": i}}))
            .await?;
    }
    let j = s.agent.take(ORDERS).await?;
    assert_eq!(j.id, b[0], "lane B's first job runs");
    let delayed = s
        .enqueue(json!({"queue": REPORTS, "payload": {}, "delay_seconds": 3600}))
        .await?;
    Ok((a1, a2, u1, b, delayed))
}

async fn settings(s: &Stack, queue: &str) -> anyhow::Result<serde_json::Value> {
    let r = s
        .http
        .get(
            &format!("/admin/api/queues/{queue}/settings"),
            Some(ADMIN_KEY),
        )
        .await?;
    anyhow::ensure!(r.status == 200, "settings of {queue}: {}", r.body);
    Ok(r.body)
}

/// The `data-job-id`s of the lane panel's rows, once the panel lists `want` of them.
async fn lane_rows(c: &Client, want: usize) -> anyhow::Result<Vec<i64>> {
    let mut ids = Vec::new();
    browser::wait_until("the lane's jobs listed", async || {
        let got =
            browser::attrs(c, r#"[data-testid="lane-jobs"] tr.lane-job"#, "data-job-id").await?;
        ids = got.iter().filter_map(|v| v.parse().ok()).collect();
        Ok(ids.len() == want)
    })
    .await?;
    Ok(ids)
}

/// Sum of the `data-value`s of the chart bars matching `css`.
async fn bars(c: &Client, css: &str) -> anyhow::Result<i64> {
    Ok(browser::attrs(c, css, "data-value")
        .await?
        .iter()
        .filter_map(|v| v.parse::<i64>().ok())
        .sum())
}

async fn operations(s: &Stack, c: &Client) -> anyhow::Result<()> {
    let (a1, a2, u1, b, delayed) = fixtures(s).await?;
    c.goto(&s.gateway.url("/admin/queue")).await?;
    enter_key(c, ADMIN_KEY).await?;

    // The blocked lane, and the busy lane's jobs in run order (running first, then FIFO).
    wait_text(c, "lane-unblock-orders:A", "Unblock").await?;
    wait_text(c, "lane-queued-orders:B", "3").await?;
    click(c, "lane-row-orders:B").await?;
    assert_eq!(lane_rows(c, 3).await?, b.to_vec());
    click(c, "blocked-lane-orders:A").await?;
    assert_eq!(
        lane_rows(c, 2).await?,
        vec![a2, a1],
        "waiting job first, then the failed head"
    );

    // Charts of the last hour: the completed job and the two failed ones are drawn.
    browser::wait_until("the charts show the finished jobs", async || {
        Ok(
            bars(c, r#"[data-testid="chart-throughput"] rect.bar-completed"#).await? == 1
                && bars(c, r#"[data-testid="chart-throughput"] rect.bar-failed"#).await? == 2,
        )
    })
    .await?;
    c.find(Locator::Css(r#"[data-testid="chart-wait"]"#))
        .await?;
    // The screenshot: charts, the blocked lane and the lane's jobs in view.
    c.execute(
        "document.getElementById('ops-queue').scrollIntoView()",
        vec![],
    )
    .await?;
    let shot = browser::screenshot(c, "lanes-admin-ops").await?;
    eprintln!("admin page screenshot: {}", shot.display());

    // The delayed job shows its start time: the run_at the API reports.
    let run_at = s.job(delayed).await?["run_at"].as_str().map(str::to_owned);
    let mark = c
        .find(Locator::Css(&by(&format!("job-delayed-{delayed}"))))
        .await?;
    assert_eq!(mark.attr("data-run-at").await?, run_at);
    assert!(mark.text().await?.starts_with("starts "));

    // Unblock from the page: the lane moves on, the failed head stays failed.
    click(c, "lane-unblock-orders:A").await?;
    wait_text(
        c,
        "lanes-result",
        &format!("lane A unblocked (job {a1} stays failed)"),
    )
    .await?;
    let blocked = s
        .http
        .get("/admin/api/lanes?filter=blocked", Some(ADMIN_KEY))
        .await?;
    assert_eq!(blocked.body["lanes"], json!([]), "{}", blocked.body);
    assert_eq!(s.job(a1).await?["status"], "failed");
    wait_text(c, "blocked-empty", "No lane is blocked.").await?;

    // Bulk retry with its confirm dialog: both failed jobs are pending again.
    wait_text(c, "queue-failed-orders", "2").await?;
    click(c, "queue-retry-failed-orders").await?;
    wait_text(c, "confirm-text", "Retry 2 failed jobs of orders?").await?;
    click(c, "confirm-ok").await?;
    wait_text(c, "queues-result", "2 jobs retried in orders").await?;
    for id in [a1, u1] {
        assert_eq!(s.job(id).await?["status"], "pending", "job {id}");
    }
    wait_text(c, "queue-failed-orders", "0").await?;

    // Pause and resume from the page.
    wait_text(c, "queue-state-reports", "active").await?;
    click(c, "queue-toggle-reports").await?;
    wait_text(c, "queue-state-reports", "paused").await?;
    assert_eq!(settings(s, REPORTS).await?["paused"], true);
    click(c, "queue-toggle-reports").await?;
    wait_text(c, "queue-state-reports", "active").await?;
    assert_eq!(settings(s, REPORTS).await?["paused"], false);

    // A settings edit persists; the rate limit shows in the queue list.
    click(c, "queue-settings-orders").await?;
    wait_text(c, "settings-queue", ORDERS).await?;
    for (field, value) in [
        ("max_attempts", "5"),
        ("rate_limit", "7"),
        ("rate_interval_ms", "60000"),
    ] {
        let input = c
            .find(Locator::Css(&by(&format!("setting-{field}"))))
            .await?;
        input.clear().await?;
        input.send_keys(value).await?;
    }
    click(c, "settings-save").await?;
    wait_text(
        c,
        "settings-result",
        "saved: max_attempts, rate_limit, rate_interval_ms",
    )
    .await?;
    let got = settings(s, ORDERS).await?;
    assert_eq!(
        (
            &got["max_attempts"],
            &got["rate_limit"],
            &got["rate_interval_ms"]
        ),
        (&json!(5), &json!(7), &json!(60000)),
        "{got}"
    );
    browser::wait_until("the rate limit shown", async || {
        Ok(text(c, "queue-rate-orders")
            .await?
            .is_some_and(|t| t.ends_with("/7 started per 1 min")))
    })
    .await?;
    // A refused edit says why and changes nothing.
    let ttl = c.find(Locator::Css(&by("setting-lease_ttl_ms"))).await?;
    ttl.clear().await?;
    ttl.send_keys("5").await?;
    click(c, "settings-save").await?;
    browser::wait_until("the refusal shown", async || {
        Ok(text(c, "settings-result")
            .await?
            .is_some_and(|t| t.contains("lease_ttl_ms")))
    })
    .await?;
    assert_eq!(
        settings(s, ORDERS).await?["lease_ttl_ms"],
        got["lease_ttl_ms"]
    );

    // Schedules: listed when the gateway serves them, else said to be unavailable.
    let sched = s.http.get("/admin/api/schedules", Some(ADMIN_KEY)).await?;
    let panel = if sched.status == 404 {
        "schedules-unavailable"
    } else {
        "schedule-list"
    };
    browser::wait_until("the schedules panel", async || displayed(c, panel).await).await?;

    Ok(())
}
