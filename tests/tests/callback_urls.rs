//! Job callbacks reach public addresses only, unless the operator allows more (issue #12):
//! a real coordinator, a real listener on 127.0.0.1 and, for the HTTP answers, a real
//! gateway. Every spelling of a loopback, unspecified or metadata address is refused at
//! enqueue; a name that resolves to loopback is never called and its delivery ends `failed`
//! at once; unparseable URLs are refused at enqueue and, when already stored, end `failed`;
//! with the address allowed the callback arrives, and a redirect is never followed.
//!
//! No request here leaves the machine: internal addresses other than loopback appear only in
//! URLs that must be refused before any connection, and the redirect to the metadata address
//! is tried only once a redirect to a second local listener has been shown not to be
//! followed.

use anyhow::Context as _;
use lanes_proto::v1 as pb;
use lanes_tests::gateway::{ENQUEUE_KEY, Gateway, Http, KEYS, READ_KEY};
use lanes_tests::jobs::{complete, lease_within};
use lanes_tests::webhooks::Receiver;
use lanes_tests::{Coordinator, fresh_database};
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;

/// The default policy: the harness's loopback allowance taken away.
const NO_ALLOW: &[(&str, &str)] = &[("LANES_CALLBACK_ALLOW", "")];

/// One `outbox` row: id, url, state, attempts, last_status, last_error.
type Row = (i64, String, String, i32, Option<i32>, Option<String>);

async fn outbox(db_url: &str) -> anyhow::Result<Vec<Row>> {
    let pool = sqlx::PgPool::connect(db_url).await?;
    let rows = sqlx::query_as(
        "SELECT id, url, state::text, attempts, last_status, last_error FROM outbox ORDER BY id",
    )
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    Ok(rows)
}

/// Waits until the row for `url` satisfies `done`.
async fn wait_row(db_url: &str, url: &str, done: impl Fn(&Row) -> bool) -> anyhow::Result<Row> {
    let within = Duration::from_secs(60);
    let deadline = Instant::now() + within;
    loop {
        let rows = outbox(db_url).await?;
        if let Some(r) = rows.iter().find(|r| r.1 == url && done(r)) {
            return Ok(r.clone());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "outbox row of {url} not as expected within {within:?}: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The receiver's port.
fn port(rx: &Receiver) -> anyhow::Result<u16> {
    let url = url::Url::parse(&rx.url("/"))?;
    url.port().context("receiver URL without a port")
}

/// Enqueues a job calling back `url`, runs it to completion: its callback is then due.
async fn complete_with_callback(c: &Coordinator, queue: &str, url: &str) -> anyhow::Result<()> {
    let req = pb::EnqueueRequest {
        queue: queue.into(),
        payload: "{}".into(),
        callback_url: url.into(),
        ..Default::default()
    };
    c.client().await?.enqueue(req).await?;
    let agent = c.agent().await?;
    let j = lease_within(&agent, "a", &[queue], Duration::from_secs(30)).await?;
    complete(&agent, &j).await?;
    Ok(())
}

#[tokio::test]
async fn internal_addresses_are_refused_at_enqueue_in_every_spelling() -> anyhow::Result<()> {
    let rx = Receiver::start().await?;
    let p = port(&rx)?;
    let db = fresh_database().await?;
    let c = Coordinator::start_with_env(&db.url, &[], NO_ALLOW).await?;
    let mut client = c.client().await?;

    let refused = [
        (format!("http://127.0.0.1:{p}/"), "127.0.0.1", "loopback"),
        (format!("http://2130706433:{p}/"), "127.0.0.1", "loopback"),
        (format!("http://127.1:{p}/"), "127.0.0.1", "loopback"),
        (format!("http://0x7f000001:{p}/"), "127.0.0.1", "loopback"),
        (format!("http://0177.0.0.1:{p}/"), "127.0.0.1", "loopback"),
        (
            format!("http://[::ffff:127.0.0.1]:{p}/"),
            "::ffff:127.0.0.1",
            "loopback",
        ),
        // A backslash ends the authority of an http URL (WHATWG, as reqwest reads it): the
        // host is 127.0.0.1, not example.com.
        (
            format!("http://127.0.0.1:{p}\\@example.com/"),
            "127.0.0.1",
            "loopback",
        ),
        (format!("http://[::1]:{p}/"), "::1", "loopback"),
        (format!("http://0.0.0.0:{p}/"), "0.0.0.0", "unspecified"),
        (format!("http://[::]:{p}/"), "::", "unspecified"),
        (
            "http://169.254.169.254/latest/meta-data/".into(),
            "169.254.169.254",
            "metadata",
        ),
        ("http://2852039166/".into(), "169.254.169.254", "metadata"),
        ("http://0xa9fea9fe/".into(), "169.254.169.254", "metadata"),
        (
            "http://0251.0376.0251.0376/".into(),
            "169.254.169.254",
            "metadata",
        ),
        (
            "http://169.254.43518/".into(),
            "169.254.169.254",
            "metadata",
        ),
        (
            "http://[::ffff:169.254.169.254]/".into(),
            "::ffff:169.254.169.254",
            "metadata",
        ),
        (
            "http://169.254.169.254\\@n8n.example/".into(),
            "169.254.169.254",
            "metadata",
        ),
        ("http://10.0.0.1/".into(), "10.0.0.1", "private"),
    ];
    for (url, addr, class) in &refused {
        for field in ["callback_url", "failure_callback_url"] {
            let mut req = pb::EnqueueRequest {
                queue: "q".into(),
                payload: "{}".into(),
                ..Default::default()
            };
            match field {
                "callback_url" => req.callback_url = url.clone(),
                _ => req.failure_callback_url = url.clone(),
            }
            let err = client
                .enqueue(req)
                .await
                .err()
                .with_context(|| format!("{field} {url} was accepted"))?;
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{url}: {err:?}");
            let msg = err.message();
            assert!(
                msg.starts_with(&format!("{field} points to {addr}, "))
                    && msg.contains(class)
                    && msg.contains("--callback-allow"),
                "{url}: {msg}"
            );
            let named = err.metadata().get(lanes_proto::FIELD_METADATA);
            assert_eq!(named.and_then(|v| v.to_str().ok()), Some(field), "{url}");
        }
    }
    for url in ["http://:80/", "http://[::1/", "http://exa mple/"] {
        let req = pb::EnqueueRequest {
            queue: "q".into(),
            payload: "{}".into(),
            callback_url: url.into(),
            ..Default::default()
        };
        let err = client.enqueue(req).await.err().context(url)?;
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{url}: {err:?}");
        assert!(err.message().starts_with("callback_url "), "{url}: {err:?}");
    }
    // In a batch the field names its job, and nothing of the batch is enqueued.
    let ok = pb::EnqueueRequest {
        queue: "q".into(),
        payload: "{}".into(),
        callback_url: "https://n8n.example/webhook/done".into(),
        ..Default::default()
    };
    let bad = pb::EnqueueRequest {
        failure_callback_url: format!("http://127.1:{p}/"),
        ..ok.clone()
    };
    let err = client
        .enqueue_batch(pb::EnqueueBatchRequest {
            jobs: vec![ok, bad],
        })
        .await
        .err()
        .context("a batch with a loopback callback was accepted")?;
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        err.metadata()
            .get(lanes_proto::FIELD_METADATA)
            .and_then(|v| v.to_str().ok()),
        Some("jobs[1].failure_callback_url")
    );
    let listed = client
        .list_jobs(pb::ListJobsRequest::default())
        .await?
        .into_inner();
    assert!(listed.jobs.is_empty(), "{:?}", listed.jobs);
    assert!(rx.requests().is_empty(), "{:?}", rx.requests());
    Ok(())
}

#[tokio::test]
async fn names_of_internal_addresses_and_stored_bad_urls_fail_without_a_call() -> anyhow::Result<()>
{
    let rx = Receiver::start().await?;
    let p = port(&rx)?;
    let db = fresh_database().await?;
    // Short retry delays: a delivery wrongly retried would show within the test.
    let c = Coordinator::start_with_env(&db.url, &["--webhook-backoff-ms", "50"], NO_ALLOW).await?;

    // A name is accepted at enqueue; it resolves to loopback only, so it is never called.
    let named = format!("http://localhost:{p}/named");
    complete_with_callback(&c, "q", &named).await?;
    let row = wait_row(&db.url, &named, |r| r.2 == "failed").await?;
    assert_eq!(row.3, 1, "refused once, not retried: {row:?}");
    assert_eq!(row.4, None, "no HTTP answer: {row:?}");
    let error = row.5.clone().unwrap_or_default();
    assert!(
        error.starts_with("callback URL refused: localhost resolves to ")
            && error.contains("a loopback address")
            && error.contains("--callback-allow"),
        "{error}"
    );

    // URLs stored before this policy (or by another version): refused by the dispatcher,
    // failed at once, never retried forever.
    let stored = [
        "http://:80/".to_owned(),
        "http://[::1/".to_owned(),
        format!("http://127.1:{p}/stored"),
        format!("http://[::ffff:127.0.0.1]:{p}/stored"),
    ];
    let pool = sqlx::PgPool::connect(&db.url).await?;
    for url in &stored {
        sqlx::query(
            "INSERT INTO outbox (event_type, url, payload) VALUES ('job.completed', $1, '{}')",
        )
        .bind(url)
        .execute(&pool)
        .await?;
    }
    pool.close().await;
    for url in &stored {
        let row = wait_row(&db.url, url, |r| r.2 == "failed").await?;
        assert_eq!(row.3, 1, "{row:?}");
        let error = row.5.clone().unwrap_or_default();
        assert!(
            error.starts_with("callback URL ")
                && (error.contains("is not a valid URL") || error.contains("a loopback address")),
            "{url}: {error}"
        );
    }
    // Every delivery above is final (failed), so nothing can reach the listener later.
    assert!(rx.requests().is_empty(), "{:?}", rx.requests());
    Ok(())
}

#[tokio::test]
async fn allowed_addresses_are_called_and_redirects_are_not_followed() -> anyhow::Result<()> {
    let rx = Receiver::start().await?;
    let elsewhere = Receiver::start().await?;
    let p = port(&rx)?;
    rx.redirect("/to-local", &elsewhere.url("/followed"));
    rx.redirect("/to-metadata", "http://169.254.169.254/latest/meta-data/");
    let db = fresh_database().await?;
    // The harness allows 127.0.0.1 and ::1; a long backoff keeps the 302s from retrying.
    let c = Coordinator::start(&db.url, &["--webhook-backoff-ms", "600000"]).await?;

    // Allowed, however spelt, and by name when the name resolves to allowed addresses.
    for url in [
        format!("http://127.0.0.1:{p}/ok"),
        format!("http://2130706433:{p}/ok"),
        format!("http://localhost:{p}/ok"),
    ] {
        complete_with_callback(&c, "q", &url).await?;
        let row = wait_row(&db.url, &url, |r| r.2 != "pending" && r.2 != "delivering").await?;
        assert_eq!((row.2.as_str(), row.4), ("delivered", Some(200)), "{row:?}");
    }
    assert_eq!(rx.to("/ok").len(), 3);

    // A 302 is an answer like any other non-2xx: recorded, retried later, never followed.
    let to_local = rx.url("/to-local");
    complete_with_callback(&c, "q", &to_local).await?;
    let row = wait_row(&db.url, &to_local, |r| r.4.is_some()).await?;
    assert_eq!(row.4, Some(302), "{row:?}");
    assert_eq!(row.5.as_deref(), Some("endpoint answered 302 Found"));
    // The try that got the 302 is over (its status is recorded): following it would have
    // happened within that try.
    assert!(elsewhere.requests().is_empty(), "the redirect was followed");

    let to_metadata = rx.url("/to-metadata");
    complete_with_callback(&c, "q", &to_metadata).await?;
    let row = wait_row(&db.url, &to_metadata, |r| r.4.is_some()).await?;
    assert_eq!(
        (row.2.as_str(), row.3, row.4),
        ("pending", 1, Some(302)),
        "{row:?}"
    );
    assert_eq!(rx.to("/to-metadata").len(), 1);
    Ok(())
}

#[tokio::test]
async fn the_gateway_names_the_refused_field() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let c = Coordinator::start_with_env(&db.url, &[], NO_ALLOW).await?;
    let gw = Gateway::start(&c.url(), &["--api-keys", KEYS]).await?;
    let http = Http::new(&gw.url(""))?;
    let job = |field: &str, url: &str| json!({"queue": "q", "payload": {}, field: url});

    for (field, url, says) in [
        ("callback_url", "http://:80/", "is not a valid URL"),
        ("callback_url", "http://[::1/", "is not a valid URL"),
        (
            "failure_callback_url",
            "ftp://n8n.example/",
            "http:// or https://",
        ),
        // Refused by the coordinator's address policy; the gateway keeps the field.
        ("callback_url", "http://127.1:9/", "a loopback address"),
        (
            "failure_callback_url",
            "http://0xa9fea9fe/",
            "the cloud metadata address",
        ),
    ] {
        let r = http
            .post("/api/jobs", Some(ENQUEUE_KEY), &job(field, url))
            .await?;
        assert_eq!(r.status, 422, "{url}: {}", r.body);
        assert_eq!(r.code(), "invalid_field", "{url}: {}", r.body);
        assert_eq!(r.body["error"]["field"], field, "{url}: {}", r.body);
        let msg = r.body["error"]["message"].as_str().unwrap_or("");
        assert!(msg.starts_with(field) && msg.contains(says), "{url}: {msg}");
    }
    let batch = json!({"jobs": [
        {"queue": "q", "payload": {}},
        {"queue": "q", "payload": {}, "failure_callback_url": "http://[::ffff:169.254.169.254]/"},
    ]});
    let r = http
        .post("/api/jobs/batch", Some(ENQUEUE_KEY), &batch)
        .await?;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(
        r.body["error"]["field"], "jobs[1].failure_callback_url",
        "{}",
        r.body
    );
    let listed = http.get("/api/jobs", Some(READ_KEY)).await?;
    assert_eq!(listed.body["jobs"], json!([]), "{}", listed.body);
    Ok(())
}
