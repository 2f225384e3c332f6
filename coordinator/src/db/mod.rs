//! Everything that touches PostgreSQL. Every change of a job's or a lane's state is a
//! transition (`transitions/`): one guarded function call, so the database, not this
//! process, decides who wins a race. The other files read, or own tables outside the job
//! state machine (queues' settings, agents, the outbox).

pub mod agents;
pub mod connect;
pub mod gauges;
pub mod history;
pub mod jobs;
pub mod lanes;
pub mod outbox;
pub mod queues;
pub mod schedules;
pub mod states;
pub mod stats;
pub mod transitions;

use sqlx::PgPool;

/// The schema migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Opens a pool to `url` (one server, or a list to fail over between: `connect.rs`).
/// Connections fail fast so an unreachable database surfaces as `UNAVAILABLE` rather than a
/// hung RPC.
///
/// `events`: this coordinator has global event endpoints, so its sessions write event rows
/// (the `lanes.events` setting read by migration 10's trigger and by failures); without
/// endpoints nothing is written that no one would send. The setting travels as a startup
/// option, which a transaction pooler drops or refuses: then the pool is refused with a
/// message saying how to set it on the server side instead.
pub async fn connect(url: &str, max_connections: u32, events: bool) -> sqlx::Result<PgPool> {
    let settings: &[(&str, &str)] = if events {
        &[("lanes.events", "on")]
    } else {
        &[]
    };
    let pool = connect::pool(url, max_connections, settings).await?;
    if events {
        let on: Option<String> = sqlx::query_scalar("SELECT current_setting('lanes.events', true)")
            .fetch_one(&pool)
            .await?;
        if on.as_deref() != Some("on") {
            pool.close().await;
            return Err(sqlx::Error::Configuration(
                "event endpoints are configured but the `lanes.events` setting did not reach \
                 the database session (a pooler such as PgBouncer dropped the startup option): \
                 set it on the role instead, ALTER ROLE <user> SET lanes.events = on"
                    .into(),
            ));
        }
    }
    Ok(pool)
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
