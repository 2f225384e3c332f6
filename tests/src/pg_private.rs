//! A PostgreSQL cluster of one test's own, for tests that stop, restart or otherwise disturb
//! the server: the shared cluster of [`crate::pg`] serves every other test of the process.
//! Stopped and deleted (by the same watchdog as the shared one) when dropped or when the
//! process exits, however it exits.
//!
//! Unlike the shared cluster it commits synchronously: with `synchronous_commit=off` an
//! `immediate` stop (a crash, as far as the server knows) loses the last commits it already
//! acknowledged, which would be the test cluster's loss, not the system's under test.
//! (`fsync=off` stays: it only matters when the machine itself crashes.)
//!
//! Must never: touch the shared cluster, or outlive the test process.

use crate::pg::{LocalCluster, TestDb, create_database};
use anyhow::Context as _;
use sqlx::Connection as _;
use url::Url;

/// How the server stops (`pg_ctl stop -m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Sessions are terminated (SQLSTATE 57P01), a checkpoint is written, the server exits.
    Fast,
    /// Every server process quits at once, as in a crash; the next start runs recovery.
    Immediate,
}

impl StopMode {
    fn as_arg(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// A cluster of its own; see the module docs.
pub struct PrivateCluster {
    cluster: LocalCluster,
    admin_url: Url,
}

impl PrivateCluster {
    /// Creates and starts a cluster (initdb: a second or two).
    pub async fn new() -> anyhow::Result<PrivateCluster> {
        let cluster = LocalCluster::start(&["synchronous_commit=on"]).await?;
        let admin_url = Url::parse(&format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            cluster.port
        ))
        .context("building the private cluster URL")?;
        tracing::info!(dir = %cluster.base.display(), port = cluster.port, "started a private PostgreSQL cluster");
        Ok(PrivateCluster { cluster, admin_url })
    }

    /// Creates and starts a cluster ready to stream to a standby
    /// ([`PrivateCluster::standby`]): full page writes on, as a base backup taken while it
    /// works needs them.
    pub async fn replicated() -> anyhow::Result<PrivateCluster> {
        let cluster =
            LocalCluster::start(&["synchronous_commit=on", "full_page_writes=on"]).await?;
        let admin_url = Url::parse(&format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            cluster.port
        ))
        .context("building the private cluster URL")?;
        Ok(PrivateCluster { cluster, admin_url })
    }

    /// A new empty database on this cluster.
    pub async fn fresh_database(&self) -> anyhow::Result<TestDb> {
        create_database(&self.admin_url).await
    }

    /// The server's port (the same across restarts).
    pub fn port(&self) -> u16 {
        self.cluster.port
    }

    /// Stops the server (waits until it is down).
    pub async fn stop(&self, mode: StopMode) -> anyhow::Result<()> {
        self.cluster.stop(mode.as_arg()).await
    }

    /// Starts the stopped server again on the same port and data (waits until it accepts
    /// connections; after an `immediate` stop, that includes crash recovery).
    pub async fn start(&self) -> anyhow::Result<()> {
        self.cluster.start_again().await
    }

    /// Stops the server with `mode` and starts it again.
    pub async fn restart(&self, mode: StopMode) -> anyhow::Result<()> {
        self.stop(mode).await?;
        self.start().await
    }

    /// A streaming standby of this cluster (`pg_basebackup -R`), running on a port of its
    /// own. Replication is asynchronous until [`PrivateCluster::require_sync_standby`].
    pub async fn standby(&self) -> anyhow::Result<PrivateCluster> {
        let cluster = self.cluster.standby().await?;
        let admin_url = Url::parse(&format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            cluster.port
        ))
        .context("building the standby URL")?;
        tracing::info!(dir = %cluster.base.display(), port = cluster.port, "started a standby");
        Ok(PrivateCluster { cluster, admin_url })
    }

    /// Makes commits on this primary wait for the standby (`synchronous_standby_names`):
    /// an acknowledged commit then survives the loss of the primary. Waits until the
    /// standby streams as `sync`.
    pub async fn require_sync_standby(&self) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(self.admin_url.as_str()).await?;
        sqlx::query("ALTER SYSTEM SET synchronous_standby_names = 'standby'")
            .execute(&mut conn)
            .await?;
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&mut conn)
            .await?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let sync: Option<String> = sqlx::query_scalar(
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby'",
            )
            .fetch_optional(&mut conn)
            .await?;
            if sync.as_deref() == Some("sync") {
                break;
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the standby never streamed synchronously ({sync:?})"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let _ = conn.close().await;
        Ok(())
    }

    /// Promotes this standby to a primary; returns once it accepts writes.
    pub async fn promote(&self) -> anyhow::Result<()> {
        self.cluster.promote().await
    }

    /// The URL of database `name` on this cluster.
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.cluster.port)
    }

    /// Terminates every other client session (`pg_terminate_backend`): each of their
    /// connections breaks with SQLSTATE 57P01 while the server stays up. Returns how many.
    pub async fn terminate_backends(&self) -> anyhow::Result<i64> {
        let mut conn = sqlx::PgConnection::connect(self.admin_url.as_str())
            .await
            .context("connecting to terminate the backends")?;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
        )
        .fetch_one(&mut conn)
        .await
        .context("terminating the backends")?;
        let _ = conn.close().await;
        Ok(n)
    }
}
