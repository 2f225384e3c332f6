//! This replica's readiness, as `grpc.health.v1` reports it for the overall service `""` and
//! the three Lanes services: SERVING only while the database answers, every background task
//! runs, and the graceful drain has not begun. It owns the database probe (a `SELECT 1`
//! every second on a connection of its own) and the one place that publishes the status.
//! The health entry [`LIVENESS`] is always SERVING: a liveness probe must not restart a
//! replica that only waits for its database.
//!
//! Must never: report SERVING once the drain began, or mistake a busy pool for a database
//! that is down (the probe does not queue behind the RPCs for a pooled connection).

use crate::service::admin::Admin;
use crate::service::agent::Agents;
use crate::service::client::Clients;
use lanes_proto::v1::admin_service_server::AdminServiceServer;
use lanes_proto::v1::agent_service_server::AgentServiceServer;
use lanes_proto::v1::client_service_server::ClientServiceServer;
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, PgPool};
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The health entry of liveness probes: SERVING while the process answers at all, whatever
/// the database and the tasks do (readiness, not liveness, takes a replica out of service).
pub const LIVENESS: &str = "liveness";

/// How often the database is probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A probe (connect if needed, then `SELECT 1`) that takes longer counts as a failure: an
/// unreachable host must not hang the probe while the replica still says SERVING.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The services whose status follows readiness. KEDA's scaler is left SERVING: it only
/// reads, and KEDA treats a failing scaler as its own problem.
fn services() -> [&'static str; 4] {
    [
        "",
        <AgentServiceServer<Agents> as NamedService>::NAME,
        <ClientServiceServer<Clients> as NamedService>::NAME,
        <AdminServiceServer<Admin> as NamedService>::NAME,
    ]
}

#[derive(Debug, Default)]
struct State {
    database_down: bool,
    tasks_down: BTreeSet<&'static str>,
    draining: bool,
}

impl State {
    /// Why the replica is not ready, or `None` when it is.
    fn not_ready(&self) -> Option<String> {
        if self.draining {
            return Some("shutting down".into());
        }
        let mut why = Vec::new();
        if self.database_down {
            why.push("database unreachable".to_owned());
        }
        if !self.tasks_down.is_empty() {
            let tasks: Vec<&str> = self.tasks_down.iter().copied().collect();
            why.push(format!("background task down: {}", tasks.join(", ")));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// The replica's readiness: what is down, and the health reporter it is published to.
pub struct Readiness {
    reporter: HealthReporter,
    state: Mutex<State>,
    /// Serialises publishing, so the last status published is the one of the latest state
    /// (two changes racing could otherwise publish in the wrong order).
    publishing: tokio::sync::Mutex<Option<bool>>,
}

impl Readiness {
    /// Readiness published to `reporter`; ready until told otherwise. Also sets
    /// [`LIVENESS`] SERVING, for good.
    pub async fn new(reporter: HealthReporter) -> Self {
        reporter
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;
        Readiness {
            reporter,
            state: Mutex::new(State::default()),
            publishing: tokio::sync::Mutex::new(None),
        }
    }

    /// True while nothing keeps the replica from serving.
    pub fn is_serving(&self) -> bool {
        self.lock().not_ready().is_none()
    }

    /// The database answered (`true`) or did not.
    pub async fn set_database(&self, up: bool) {
        self.lock().database_down = !up;
        self.publish().await;
    }

    /// Background task `task` stopped and is being restarted.
    pub async fn task_down(&self, task: &'static str) {
        self.lock().tasks_down.insert(task);
        self.publish().await;
    }

    /// Background task `task` runs again (and has for a while).
    pub async fn task_up(&self, task: &'static str) {
        self.lock().tasks_down.remove(task);
        self.publish().await;
    }

    /// The graceful drain began: NOT_SERVING from now on, whatever else happens.
    pub async fn drain(&self) {
        self.lock().draining = true;
        self.publish().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A few plain fields: still consistent after a panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn publish(&self) {
        let mut published = self.publishing.lock().await;
        let (serving, why) = {
            let state = self.lock();
            let why = state.not_ready();
            (why.is_none(), why)
        };
        if *published == Some(serving) {
            return;
        }
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for service in services() {
            self.reporter.set_service_status(service, status).await;
        }
        match (&why, *published) {
            (Some(why), _) => tracing::warn!(reason = %why, "replica NOT_SERVING"),
            (None, Some(false)) => tracing::info!("replica SERVING again"),
            (None, _) => {}
        }
        *published = Some(serving);
    }
}

/// Probes the database every [`PROBE_EVERY`] until `stop`, on a connection of its own, and
/// tells `readiness` when it stops or starts answering.
pub async fn watch_database(
    pool: PgPool,
    readiness: std::sync::Arc<Readiness>,
    stop: CancellationToken,
) {
    let mut probe = Probe::new(pool);
    let mut ticker = tokio::time::interval(PROBE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_up = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let up = match probe.check().await {
            Ok(()) => true,
            Err(e) => {
                if was_up {
                    tracing::warn!(error = %e, "the database does not answer");
                }
                false
            }
        };
        if up && !was_up {
            tracing::info!("the database answers again");
        }
        was_up = up;
        readiness.set_database(up).await;
    }
}

/// A connection of its own for the probe: a pool saturated by RPCs must not look like an
/// unreachable database (it would take a busy replica out of service).
struct Probe {
    pool: PgPool,
    conn: Option<PgConnection>,
}

impl Probe {
    fn new(pool: PgPool) -> Self {
        Probe { pool, conn: None }
    }

    /// `SELECT 1`; a connection that broke is replaced once at once, so a session killed on
    /// a healthy server (pg_terminate_backend) does not count as an outage.
    async fn check(&mut self) -> Result<(), String> {
        if self.conn.is_some() && self.try_once().await.is_ok() {
            return Ok(());
        }
        self.conn = None;
        self.try_once().await
    }

    async fn try_once(&mut self) -> Result<(), String> {
        let options = self.pool.connect_options();
        let conn = &mut self.conn;
        let attempt = async {
            if conn.is_none() {
                *conn = Some(PgConnection::connect_with(&options).await?);
            }
            match conn.as_mut() {
                Some(c) => sqlx::query("SELECT 1").execute(c).await.map(|_| ()),
                None => Ok(()),
            }
        };
        let outcome = match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
        };
        // A connection in an unknown state is not reused.
        self.conn = None;
        Err(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_server::Health;
    use tonic_health::server::HealthService;

    /// The status every readiness-following service reports (they must agree).
    async fn published(health: &HealthService) -> ServingStatus {
        let mut seen = Vec::new();
        for service in services() {
            let req = tonic::Request::new(HealthCheckRequest {
                service: service.into(),
            });
            let status = health.check(req).await.map(|r| r.into_inner().status);
            seen.push(status.unwrap_or(-1));
        }
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
        match seen[0] {
            1 => ServingStatus::Serving,
            2 => ServingStatus::NotServing,
            other => panic!("unexpected status {other}"),
        }
    }

    #[tokio::test]
    async fn not_serving_while_anything_is_down_and_for_good_once_draining() {
        let reporter = HealthReporter::new();
        let health = HealthService::from_health_reporter(reporter.clone());
        let r = Readiness::new(reporter).await;
        r.set_database(true).await;
        assert_eq!(published(&health).await, ServingStatus::Serving);
        r.set_database(false).await;
        r.task_down("reaper").await;
        assert_eq!(published(&health).await, ServingStatus::NotServing);
        r.set_database(true).await;
        assert!(!r.is_serving(), "the reaper is still down");
        assert_eq!(published(&health).await, ServingStatus::NotServing);
        r.task_up("reaper").await;
        assert!(r.is_serving());
        assert_eq!(published(&health).await, ServingStatus::Serving);
        r.drain().await;
        r.set_database(true).await;
        r.task_up("reaper").await;
        assert!(!r.is_serving(), "draining is for good");
        assert_eq!(published(&health).await, ServingStatus::NotServing);
        let live = HealthCheckRequest {
            service: LIVENESS.into(),
        };
        let live = health.check(tonic::Request::new(live)).await;
        assert_eq!(
            live.map(|r| r.into_inner().status).ok(),
            Some(1),
            "alive all along"
        );
    }
}
