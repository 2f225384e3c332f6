//! The gateway's readiness follows the coordinator's: `/readyz` answers 503 (the JSON error
//! shape, Retry-After) while the coordinator is frozen (SIGSTOP), killed, or reporting
//! NOT_SERVING on `grpc.health.v1` (its graceful drain, its database out of reach), and 200
//! again once it recovers — with no gateway restart. The API's own answers meanwhile are
//! 504 and 503 with Retry-After, in the same JSON shape.

use anyhow::Context as _;
use lanes_tests::Signal;
use lanes_tests::gateway::{ENQUEUE_KEY, Gateway, Http, Reply, Stack, eventually};
use serde_json::json;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic_health::ServingStatus;

/// Generous: a loaded CI machine may take seconds to notice.
const DEADLINE: Duration = Duration::from_secs(30);

async fn readyz_is(http: &Http, status: u16) -> anyhow::Result<Reply> {
    eventually(DEADLINE, &format!("/readyz to answer {status}"), || async {
        let r = http.get("/readyz", None).await?;
        Ok((r.status == status).then_some(r))
    })
    .await
}

/// A 503 of readyz: the JSON error shape with Retry-After.
fn assert_unready(r: &Reply) -> anyhow::Result<()> {
    assert_eq!(r.code(), "coordinator_unavailable", "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        r.body
    );
    let secs: u64 = r.header("retry-after").context("Retry-After")?.parse()?;
    assert!(secs >= 1);
    Ok(())
}

fn job() -> serde_json::Value {
    json!({"queue": "invoice_import", "lane": "resto-1", "payload": {"n": 1}})
}

/// Frozen, then thawed; killed, then restarted: readyz and the API follow.
#[tokio::test]
async fn readyz_follows_a_stopped_and_a_killed_coordinator() -> anyhow::Result<()> {
    let mut s = Stack::start_with(&["--rpc-timeout-ms", "1500"]).await?;
    let r = readyz_is(&s.http, 200).await?;
    assert_eq!(r.body, json!({"status": "ready"}));

    // Frozen: the health check times out; a call runs into its deadline (504).
    s.coord.proc.signal(Signal::SIGSTOP)?;
    let r = readyz_is(&s.http, 503).await?;
    assert_unready(&r)?;
    let e = s.http.post("/api/jobs", Some(ENQUEUE_KEY), &job()).await?;
    assert_eq!(
        (e.status, e.code()),
        (504, "coordinator_timeout"),
        "{}",
        e.body
    );
    assert!(e.header("retry-after").is_some(), "{:?}", e.headers);
    assert_eq!(s.http.get("/healthz", None).await?.status, 200);
    s.coord.proc.signal(Signal::SIGCONT)?;
    readyz_is(&s.http, 200).await?;
    s.enqueue(job()).await?;

    // Killed: unreachable (503), then restarted on the same port.
    s.coord.proc.kill9().await;
    let r = readyz_is(&s.http, 503).await?;
    assert_unready(&r)?;
    let e = s.http.post("/api/jobs", Some(ENQUEUE_KEY), &job()).await?;
    assert_eq!(
        (e.status, e.code()),
        (503, "coordinator_unavailable"),
        "{}",
        e.body
    );
    assert!(e.header("retry-after").is_some(), "{:?}", e.headers);
    s.coord.restart().await?;
    readyz_is(&s.http, 200).await?;
    let id = s.enqueue(job()).await?;
    assert_eq!(s.job(id).await?["status"], "pending", "{}", s.logs());
    Ok(())
}

/// A health server standing in for a coordinator whose status the test sets: NOT_SERVING
/// for the whole server (`""`) or for ClientService alone makes the gateway unready.
#[tokio::test]
async fn readyz_is_503_while_the_coordinator_reports_not_serving() -> anyhow::Result<()> {
    let (reporter, service) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let server = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    // Lives as long as the test's runtime.
    tokio::spawn(server);
    let client = "lanes.v1.ClientService";
    reporter
        .set_service_status(client, ServingStatus::Serving)
        .await;
    let gw = Gateway::start(&url, &[]).await?;
    let http = Http::new(&gw.url(""))?;
    readyz_is(&http, 200).await?;

    for service in ["", client] {
        reporter
            .set_service_status(service, ServingStatus::NotServing)
            .await;
        let r = readyz_is(&http, 503).await?;
        assert_unready(&r)?;
        assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("NOT_SERVING")),
            "{service:?}: {}",
            r.body
        );
        reporter
            .set_service_status(service, ServingStatus::Serving)
            .await;
        readyz_is(&http, 200).await?;
    }
    Ok(())
}
