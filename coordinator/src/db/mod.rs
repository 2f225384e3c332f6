//! Everything that touches PostgreSQL. Every change of a job's or a lane's state is a
//! transition (`transitions/`): one guarded function call, so the database, not this
//! process, decides who wins a race. The other files read, or own tables outside the job
//! state machine (queues' settings, agents, the outbox).

pub mod agents;
pub mod gauges;
pub mod jobs;
pub mod outbox;
pub mod queues;
pub mod schedules;
pub mod states;
pub mod stats;
pub mod transitions;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

/// The schema migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Opens a pool to `url`. Connections fail fast so an unreachable database surfaces as
/// `UNAVAILABLE` rather than a hung RPC.
///
/// `events`: this coordinator has global event endpoints, so its sessions write event rows
/// (the `lanes.events` setting read by migration 10's trigger and by failures); without
/// endpoints nothing is written that no one would send.
pub async fn connect(url: &str, max_connections: u32, events: bool) -> sqlx::Result<PgPool> {
    let mut options = PgConnectOptions::from_str(url)?.application_name("lanes-coordinator");
    if events {
        options = options.options([("lanes.events", "on")]);
    }
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
}

/// Applies pending migrations, then installs the transition functions of this release.
/// Safe to run concurrently from several replicas: both steps hold an advisory lock, and
/// what is already in place is skipped.
pub async fn migrate(pool: &PgPool) -> crate::error::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .map_err(|e| crate::error::Error::Setup(format!("applying migrations: {e}")))?;
    transitions::install(pool).await
}
