//! Readiness probes as an orchestrator makes them: the coordinator's `grpc.health.v1` Check
//! (the overall service `""` and the three Lanes services) and the gateway's `GET /readyz`.

use anyhow::bail;
use std::time::Duration;
use tokio::time::Instant;
use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// The services whose status follows the coordinator's readiness.
pub const READINESS_SERVICES: [&str; 4] = [
    "",
    "lanes.v1.AgentService",
    "lanes.v1.ClientService",
    "lanes.v1.AdminService",
];

/// What a probe of the coordinator at `url` (`http://…`) sees for `service`: its status, or
/// `None` when the coordinator does not answer within 2 s.
pub async fn coordinator_status(url: &str, service: &str) -> Option<ServingStatus> {
    let probe = async {
        let channel = Endpoint::from_shared(url.to_owned())
            .ok()?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .ok()?;
        let req = HealthCheckRequest {
            service: service.into(),
        };
        let answer = HealthClient::new(channel).check(req).await.ok()?;
        Some(answer.into_inner().status())
    };
    tokio::time::timeout(Duration::from_secs(2), probe)
        .await
        .ok()
        .flatten()
}

/// Waits until every readiness service of the coordinator at `url` reports `want`.
pub async fn wait_coordinator(
    url: &str,
    want: ServingStatus,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut seen = Vec::new();
        for service in READINESS_SERVICES {
            seen.push(coordinator_status(url, service).await);
        }
        if seen.iter().all(|s| *s == Some(want)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("coordinator {url}: health {seen:?}, not all {want:?} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The status code of the gateway's `GET /readyz` (`base` is `http://host:port`), or `None`
/// when the gateway does not answer within 5 s.
pub async fn gateway_readyz(base: &str) -> Option<u16> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let resp = http.get(format!("{base}/readyz")).send().await.ok()?;
    Some(resp.status().as_u16())
}

/// Waits until the gateway's `/readyz` answers `want` (200 or 503).
pub async fn wait_gateway_readyz(base: &str, want: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = gateway_readyz(base).await;
        if got == Some(want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("gateway {base}/readyz answered {got:?}, not {want} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
