//! Everything that touches PostgreSQL. One file per table or concern; each state change of a
//! job is one guarded statement (or a short transaction that first locks the lane row), so
//! the database, not this process, decides who wins a race.

pub mod agents;
pub mod failure;
pub mod gauges;
pub mod jobs;
pub mod lanes;
pub mod lease;
pub mod outbox;
pub mod queues;
pub mod stats;

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

/// Applies pending migrations. Safe to run concurrently from several replicas: sqlx holds
/// an advisory lock while migrating, and applied migrations are skipped.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
