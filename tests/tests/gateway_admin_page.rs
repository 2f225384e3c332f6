//! The admin page in a real headless Chromium, driven over WebDriver (chromedriver started
//! by the test on a free port): key prompt, live job list, a failed job retried from the
//! page, job detail, agents, cleanup, and a failed webhook delivery replayed from the page.
//!
//! Needs Debian's `chromium` and `chromium-driver` (CI installs them); without them the test
//! fails with an install hint rather than skipping.

use anyhow::{Context as _, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use lanes_tests::gateway::{ADMIN_KEY, READ_KEY, Stack, eventually};
use lanes_tests::procs::{self, ChildProc};
use lanes_tests::receiver::Receiver;
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

const Q: &str = "invoice_import";
/// Long enough for the page's 3-second refresh to pick up a change made outside it.
const PAGE_WAIT: Duration = Duration::from_secs(12);

/// A headless Chromium session and the chromedriver serving it.
struct Browser {
    client: Client,
    _driver: ChildProc,
    _profile: tempfile::TempDir,
}

fn tool(env: &str, default: &str) -> anyhow::Result<String> {
    let path = std::env::var(env).unwrap_or_else(|_| default.to_owned());
    if !Path::new(&path).is_file() {
        bail!(
            "{path} not found: the admin page test needs Chromium and chromedriver. Install them \
             with `apt-get update && apt-get install -y chromium chromium-driver` (or point {env} \
             at them)"
        );
    }
    Ok(path)
}

async fn browser() -> anyhow::Result<Browser> {
    let chromium = tool("LANES_CHROMIUM", "/usr/bin/chromium")?;
    let driver_bin = tool("LANES_CHROMEDRIVER", "/usr/bin/chromedriver")?;
    let port = procs::free_port();
    let args = vec![format!("--port={port}")];
    let driver = procs::spawn("chromedriver", Path::new(&driver_bin), &args, &[]).await?;
    let addr = format!("127.0.0.1:{port}").parse()?;
    if let Err(e) = procs::wait_for_tcp(addr, Duration::from_secs(20)).await {
        bail!("chromedriver did not start: {e}\n{}", driver.log_tail(20));
    }
    let profile = tempfile::tempdir()?;
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update",
                     "--no-first-run", "--disable-sync", "--window-size=1400,1000",
                     format!("--user-data-dir={}", profile.path().display())],
        }
    });
    let caps = caps.as_object().cloned().context("capabilities")?;
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .with_context(|| format!("starting a Chromium session\n{}", driver.log_tail(20)))?;
    Ok(Browser {
        client,
        _driver: driver,
        _profile: profile,
    })
}

fn by(testid: &str) -> String {
    format!(r#"[data-testid="{testid}"]"#)
}

/// The text of the element with `testid`, or `None` while it does not exist.
async fn text(c: &Client, testid: &str) -> anyhow::Result<Option<String>> {
    match c.find(Locator::Css(&by(testid))).await {
        Ok(e) => match e.text().await {
            Ok(t) => Ok(Some(t)),
            // The page's refresh replaced the element between the find and the read.
            Err(e) if e.is_stale_element_reference() => Ok(None),
            Err(e) => Err(e.into()),
        },
        Err(e) if e.is_no_such_element() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Waits until the element with `testid` shows `want` (trimmed), for at most `PAGE_WAIT`.
async fn wait_text(c: &Client, testid: &str, want: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        let got = text(c, testid).await?;
        if got.as_deref().map(str::trim) == Some(want) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let banner = text(c, "error-banner").await?.unwrap_or_default();
            bail!(
                "{testid} shows {got:?}, not {want:?}, after {PAGE_WAIT:?} (page error: {banner:?})"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Tries `op` on the element with `testid` again when the page's 3-second refresh replaced
/// the element between finding and using it (a stale element reference).
async fn on_element<T>(
    c: &Client,
    testid: &str,
    op: impl AsyncFn(fantoccini::elements::Element) -> Result<T, fantoccini::error::CmdError>,
) -> anyhow::Result<T> {
    let mut tries = 0;
    loop {
        let e = c
            .find(Locator::Css(&by(testid)))
            .await
            .with_context(|| format!("finding {testid}"))?;
        match op(e).await {
            Err(e) if e.is_stale_element_reference() && tries < 5 => tries += 1,
            other => return other.with_context(|| format!("using {testid}")),
        }
    }
}

async fn displayed(c: &Client, testid: &str) -> anyhow::Result<bool> {
    on_element(c, testid, async |e| e.is_displayed().await).await
}

async fn click(c: &Client, testid: &str) -> anyhow::Result<()> {
    on_element(c, testid, async |e| e.click().await).await
}

async fn enter_key(c: &Client, key: &str) -> anyhow::Result<()> {
    let input = c.find(Locator::Css(&by("key-input"))).await?;
    input.clear().await?;
    input.send_keys(key).await?;
    click(c, "key-submit").await
}

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

    // The simulated agent fails the job for good; the page's refresh shows it.
    let _stream = s.agent.connect(Q).await?;
    let leased = s.agent.take(Q).await?;
    assert_eq!(leased.id, id);
    s.agent
        .fail(&leased, "invoice total mismatch", false)
        .await?;
    wait_text(c, &format!("job-status-{id}"), "failed").await?;
    wait_text(c, "stat-failed", "1").await?;
    wait_text(c, "stat-agents-awake", "1").await?;
    let agent_row = c.find(Locator::Css(&by("agent-row-sim-agent"))).await?;
    assert_eq!(
        agent_row.attr("data-state").await?.as_deref(),
        Some("awake")
    );

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
