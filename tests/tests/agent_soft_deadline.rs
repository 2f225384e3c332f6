//! Soft time limits through a real coordinator and agent. A subprocess handler gets both
//! deadlines in its environment from the start; at the soft limit (1 s; hard limit 30 s) its
//! process group gets SIGTERM, so a shell handler blocked in `sleep` runs its trap at once:
//! it rolls back and exits 3 — an ordinary failure, well before the hard limit — or finishes
//! and exits 0, and the job completes. An HTTP handler gets both deadlines as headers.

use lanes_proto::v1 as pb;
use lanes_tests::agent::{enqueue, is_finished, log_lines, start_agent, wait_connected, wait_job};
use lanes_tests::jobs::set_settings;
use lanes_tests::{Coordinator, fresh_database};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const QUEUE: &str = "invoice_import";

/// Records both deadlines (as given and in epoch ms) and its start, then sleeps; on SIGTERM
/// it records the time, says "rolled back" and exits with the code its payload names.
const HANDLER: &str = r#"
dir=$1
code=$(cat)
out="$dir/job-$LANES_JOB_ID"
echo "soft_env $LANES_JOB_SOFT_DEADLINE" >> "$out"
echo "hard_env $LANES_JOB_DEADLINE" >> "$out"
echo "soft $(date -d "$LANES_JOB_SOFT_DEADLINE" +%s%3N)" >> "$out"
echo "hard $(date -d "$LANES_JOB_DEADLINE" +%s%3N)" >> "$out"
trap 'echo "trap $(date +%s%3N)" >> "$out"; echo "rolled back" >&2; [ "$code" = 0 ] && echo "{\"partial\":true}"; exit "$code"' TERM
echo "started $(date +%s%3N)" >> "$out"
sleep 60
echo "slept $(date +%s%3N)" >> "$out"
"#;

#[tokio::test]
async fn the_soft_limit_signals_the_handler_before_the_hard_limit() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let coord = Coordinator::start(&db.url, &[]).await?;
    let admin = coord.admin().await?;
    set_settings(
        &admin,
        QUEUE,
        pb::SetQueueSettingsRequest {
            soft_timeout_ms: Some(1000),
            job_timeout_ms: Some(30_000),
            max_attempts: Some(1),
            ..Default::default()
        },
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("handler.sh");
    std::fs::write(&script, HANDLER)?;
    let exec = format!("sh '{}' '{}'", script.display(), dir.path().display());
    let agent = start_agent(&coord.url(), "soft", QUEUE, &["--exec", &exec]).await?;
    wait_connected(&coord, "soft", Duration::from_secs(20)).await?;

    let mut client = coord.client().await?;
    let rolled_back = enqueue(&mut client, QUEUE, "resto-1", serde_json::json!(3)).await?;
    let finished = enqueue(&mut client, QUEUE, "resto-1", serde_json::json!(0)).await?;

    let job = wait_job(
        &mut client,
        rolled_back,
        Duration::from_secs(25),
        is_finished,
    )
    .await?;
    assert_eq!(
        (job.state, job.attempt),
        (pb::JobState::Failed as i32, 1),
        "{job:?}"
    );
    for words in [
        "handler exited with code 3 after SIGTERM at its soft time limit",
        "rolled back",
    ] {
        assert!(job.last_error.contains(words), "{}", job.last_error);
    }
    let events = read_events(&dir.path().join(format!("job-{rolled_back}")))?;
    check_deadlines(&events)?;
    let finished_at = job.finished_at.as_ref().map_or(0, |t| t.seconds * 1000);
    assert!(
        finished_at <= events["hard"],
        "the job ended after its hard deadline"
    );

    let job = wait_job(&mut client, finished, Duration::from_secs(25), is_finished).await?;
    assert_eq!(job.state, pb::JobState::Completed as i32, "{job:?}");
    assert_eq!(job.result, r#"{"partial":true}"#);
    check_deadlines(&read_events(&dir.path().join(format!("job-{finished}")))?)?;

    let said = log_lines(&agent, "soft time limit reached")?;
    assert_eq!(said.len(), 2, "one line per job: {said:?}");
    assert!(said.iter().all(|l| l.contains("SIGTERM")), "{said:?}");
    Ok(())
}

/// The handler saw both deadlines in the documented format, 29 s apart; it started before
/// the soft deadline, the signal came at or after it, and it never finished its sleep.
fn check_deadlines(events: &HashMap<String, i64>) -> anyhow::Result<()> {
    let (soft, hard) = (events["soft"], events["hard"]);
    assert_eq!(hard - soft, 29_000, "{events:?}");
    assert!(events["started"] <= soft, "{events:?}");
    assert!(events["trap"] >= soft, "signalled early: {events:?}");
    assert!(events["trap"] < hard, "{events:?}");
    assert!(!events.contains_key("slept"), "{events:?}");
    Ok(())
}

/// The handler's `name value` lines; the deadlines as given are checked for format here.
fn read_events(path: &Path) -> anyhow::Result<HashMap<String, i64>> {
    let text = std::fs::read_to_string(path)?;
    let mut events = HashMap::new();
    for line in text.lines() {
        let (name, value) = line.split_once(' ').unwrap_or((line, ""));
        if name.ends_with("_env") {
            // 2026-01-01T12:10:00.000Z: RFC 3339, UTC, milliseconds.
            let b = value.as_bytes();
            assert!(
                b.len() == 24 && b[10] == b'T' && b[19] == b'.' && b[23] == b'Z',
                "{name} is {value:?}"
            );
        } else {
            events.insert(name.to_owned(), value.parse()?);
        }
    }
    Ok(events)
}

#[tokio::test]
async fn an_http_handler_gets_both_deadlines_as_headers() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let coord = Coordinator::start(&db.url, &[]).await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/import", listener.local_addr()?);
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    // Detached: the server lives as long as the test.
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = seen_tx.clone();
            tokio::spawn(async move {
                if let Ok(headers) = answer(stream).await {
                    let _ = tx.send(headers);
                }
            });
        }
    });
    let _agent = start_agent(&coord.url(), "poster", QUEUE, &["--http", &url]).await?;
    wait_connected(&coord, "poster", Duration::from_secs(20)).await?;

    let mut client = coord.client().await?;
    let with_soft = client
        .enqueue(pb::EnqueueRequest {
            queue: QUEUE.into(),
            payload: "{}".into(),
            timeout_ms: Some(10_000),
            soft_timeout_ms: Some(2_000),
            ..Default::default()
        })
        .await?
        .into_inner()
        .job
        .map(|j| j.id);
    let without = enqueue(&mut client, QUEUE, "", serde_json::json!({})).await?;
    for id in [with_soft, Some(without)] {
        let id = id.ok_or_else(|| anyhow::anyhow!("no job"))?;
        let job = wait_job(&mut client, id, Duration::from_secs(15), is_finished).await?;
        assert_eq!(job.state, pb::JobState::Completed as i32, "{job:?}");
    }
    let mut by_job = HashMap::new();
    while by_job.len() < 2 {
        let h: HashMap<String, String> = tokio::time::timeout(Duration::from_secs(5), seen.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("server gone"))?;
        by_job.insert(h["x-lanes-job-id"].parse::<i64>()?, h);
    }
    let h = &by_job[&with_soft.unwrap_or_default()];
    let hard = epoch_ms(&h["x-lanes-deadline"])?;
    let soft = epoch_ms(&h["x-lanes-soft-deadline"])?;
    assert_eq!(hard - soft, 8_000, "{h:?}");
    let h = &by_job[&without];
    assert!(h.contains_key("x-lanes-deadline"), "{h:?}");
    assert!(!h.contains_key("x-lanes-soft-deadline"), "{h:?}");
    Ok(())
}

/// `2026-01-01T12:10:00.000Z` in ms since the epoch (days from the civil date, as in
/// Howard Hinnant's algorithm).
fn epoch_ms(s: &str) -> anyhow::Result<i64> {
    anyhow::ensure!(
        s.len() == 24 && s.ends_with('Z'),
        "not RFC 3339 UTC ms: {s:?}"
    );
    let n = |r: std::ops::Range<usize>| -> anyhow::Result<i64> { Ok(s[r].parse()?) };
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + n(11..13)? * 3600 + n(14..16)? * 60 + n(17..19)?;
    Ok(secs * 1000 + n(20..23)?)
}

/// Reads one request's head (lower-cased header names), answers 200, closes.
async fn answer(mut stream: TcpStream) -> anyhow::Result<HashMap<String, String>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0 && buf.len() < 64 * 1024, "bad request head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let headers = String::from_utf8_lossy(&buf[..end])
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = "{\"ok\":true}";
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(headers)
}

#[test]
fn epoch_ms_reads_rfc3339() -> anyhow::Result<()> {
    assert_eq!(epoch_ms("1970-01-01T00:00:01.500Z")?, 1500);
    assert_eq!(epoch_ms("2026-03-01T00:00:00.000Z")?, 1_772_323_200_000);
    Ok(())
}
