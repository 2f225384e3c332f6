//! HTTP handler mode against a tiny HTTP/1.1 server written here: each job's payload says
//! what the server answers per attempt. 2xx completes with the body as result and the job
//! metadata arrives as headers; 4xx fails at once; 503 with `Retry-After: 1` is retried after
//! about a second (not the queue's 100 ms backoff); 500 retries until attempts run out; a
//! server that never answers is cut off at the job timeout and retried.

use lanes_proto::v1 as pb;
use lanes_tests::agent::{enqueue, is_finished, start_agent, wait_connected, wait_job};
use lanes_tests::{Coordinator, fresh_database};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const QUEUE: &str = "webhooks";

/// One request the server received.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    headers: HashMap<String, String>,
    body: String,
}

type Log = Arc<Mutex<Vec<Seen>>>;

#[tokio::test]
async fn http_statuses_map_to_job_outcomes() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let coord = Coordinator::start(&db.url, &[]).await?;
    coord
        .admin()
        .await?
        .set_queue_settings(pb::SetQueueSettingsRequest {
            queue: QUEUE.into(),
            max_attempts: Some(2),
            backoff_initial_ms: Some(100),
            backoff_max_ms: Some(5000),
            job_timeout_ms: Some(1000),
            ..Default::default()
        })
        .await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/import", listener.local_addr()?);
    let seen: Log = Arc::default();
    // Detached: the server lives as long as the test; its tasks die with the runtime.
    tokio::spawn(serve(listener, seen.clone()));
    let _agent = start_agent(&coord.url(), "poster", QUEUE, &["--http", &url]).await?;
    wait_connected(&coord, "poster", Duration::from_secs(20)).await?;

    let mut client = coord.client().await?;
    let job = |respond: serde_json::Value| {
        let payload = serde_json::json!({ "respond": respond, "invoice": "INV-9" });
        let mut c = client.clone();
        async move { enqueue(&mut c, QUEUE, "", payload).await }
    };
    let ok = job(serde_json::json!([200])).await?;
    let bad = job(serde_json::json!([422])).await?;
    let flaky = job(serde_json::json!([503, 200])).await?;
    let broken = job(serde_json::json!([500, 500])).await?;
    let hang = job(serde_json::json!("hang")).await?;

    let done = wait_job(&mut client, ok, Duration::from_secs(15), is_finished).await?;
    assert_eq!(done.state, pb::JobState::Completed as i32, "{done:?}");
    let result: serde_json::Value = serde_json::from_str(&done.result)?;
    assert_eq!(
        result,
        serde_json::json!({"imported": true, "job": ok.to_string()})
    );
    let req = requests_of(&seen, ok).remove(0);
    assert_eq!(req.headers["x-lanes-queue"], QUEUE);
    assert_eq!(req.headers["x-lanes-attempt"], "1");
    assert_eq!(req.headers["x-lanes-max-attempts"], "2");
    assert!(req.headers["x-lanes-fencing-token"].parse::<i64>()? > 0);
    assert!(req.headers.contains_key("x-lanes-deadline"));
    assert_eq!(req.headers["traceparent"].len(), 55);
    assert_eq!(req.headers["content-type"], "application/json");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&req.body)?["invoice"],
        "INV-9"
    );

    let done = wait_job(&mut client, bad, Duration::from_secs(15), is_finished).await?;
    assert_eq!(
        (done.state, done.attempt),
        (pb::JobState::Failed as i32, 1),
        "{done:?}"
    );
    assert!(done.last_error.contains("HTTP 422"), "{}", done.last_error);
    assert!(
        done.last_error.contains("bad VAT number"),
        "{}",
        done.last_error
    );

    let done = wait_job(&mut client, flaky, Duration::from_secs(15), is_finished).await?;
    assert_eq!(
        (done.state, done.attempt),
        (pb::JobState::Completed as i32, 2),
        "{done:?}"
    );
    let tries = requests_of(&seen, flaky);
    let gap = tries[1].at - tries[0].at;
    assert!(
        gap >= Duration::from_millis(900),
        "Retry-After ignored: retried after {gap:?}"
    );

    let done = wait_job(&mut client, broken, Duration::from_secs(15), is_finished).await?;
    assert_eq!(
        (done.state, done.attempt),
        (pb::JobState::Failed as i32, 2),
        "{done:?}"
    );
    assert!(done.last_error.contains("HTTP 500"), "{}", done.last_error);

    let done = wait_job(&mut client, hang, Duration::from_secs(15), is_finished).await?;
    assert_eq!(
        (done.state, done.attempt),
        (pb::JobState::Failed as i32, 2),
        "{done:?}"
    );
    assert!(
        done.last_error.contains("timed out after 1000 ms"),
        "{}",
        done.last_error
    );
    Ok(())
}

fn requests_of(seen: &Log, job: i64) -> Vec<Seen> {
    let all = seen.lock().expect("log").clone();
    all.into_iter()
        .filter(|s| s.headers.get("x-lanes-job-id") == Some(&job.to_string()))
        .collect()
}

async fn serve(listener: TcpListener, seen: Log) {
    while let Ok((stream, _)) = listener.accept().await {
        // Detached: each connection ends with its response (or with the test).
        tokio::spawn(answer(stream, seen.clone()));
    }
}

/// Reads one request, records it, answers as the payload says for this attempt, closes.
async fn answer(mut stream: TcpStream, seen: Log) -> anyhow::Result<()> {
    let (headers, body) = read_request(&mut stream).await?;
    let payload: serde_json::Value = serde_json::from_str(&body)?;
    let attempt: usize = headers
        .get("x-lanes-attempt")
        .map_or(Ok(1), |a| a.parse())?;
    let job = headers.get("x-lanes-job-id").cloned().unwrap_or_default();
    seen.lock().expect("log").push(Seen {
        at: Instant::now(),
        headers,
        body,
    });
    let status = match &payload["respond"] {
        serde_json::Value::Array(codes) => codes
            .get(attempt - 1)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(200),
        _ => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return Ok(());
        }
    };
    let (reason, extra, body) = match status {
        200 => (
            "OK",
            "",
            serde_json::json!({"imported": true, "job": job}).to_string(),
        ),
        422 => (
            "Unprocessable Entity",
            "",
            "invoice rejected: bad VAT number".to_owned(),
        ),
        503 => (
            "Service Unavailable",
            "Retry-After: 1\r\n",
            "maintenance".to_owned(),
        ),
        _ => ("Internal Server Error", "", "database exploded".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

/// Minimal HTTP/1.1 request reading: headers (lower-cased names) and a Content-Length body.
async fn read_request(stream: &mut TcpStream) -> anyhow::Result<(HashMap<String, String>, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0 && buf.len() < 64 * 1024, "bad request head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers.get("content-length").map_or(Ok(0), |l| l.parse())?;
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "body cut short");
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((headers, String::from_utf8(body)?))
}
