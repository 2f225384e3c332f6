//! Command line and environment: every flag is also an environment variable (12-factor).

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Lanes coordinator: owns the Postgres queue, lane leases and fencing tokens, and serves
/// the agent, client and admin gRPC APIs (with reflection and grpc.health.v1).
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    /// Server settings (for `serve`, the default).
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server (applies migrations first). The default.
    Serve,
    /// Apply the database migrations and exit (for a one-shot Kubernetes Job). Re-running
    /// is harmless.
    Migrate,
}

/// Settings of the server.
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// PostgreSQL URL, e.g. postgres://lanes:secret@db:5432/lanes. Several servers (a
    /// primary and its standbys) fail over to whichever is read-write: comma-separated URLs,
    /// or postgres://u:p@h1:5432,h2:5432/lanes?target_session_attrs=read-write. Behind
    /// PgBouncer (transaction mode), the pooler's URL; then set --listen-database-url.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// A direct PostgreSQL URL (not through a transaction pooler) for the session-bound
    /// work: LISTEN for wakes and finished jobs, and migrations (advisory locks). Same forms
    /// as DATABASE_URL. Default: DATABASE_URL.
    #[arg(long, env = "LANES_LISTEN_DATABASE_URL", hide_env_values = true)]
    pub listen_database_url: Option<String>,

    /// Address of the gRPC server.
    #[arg(long, env = "LANES_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,

    /// Address of the Prometheus metrics listener (`GET /metrics`, plain HTTP, no auth),
    /// e.g. 0.0.0.0:9090. Unset: no metrics.
    #[arg(long, env = "LANES_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Tokens of the `agent` role (comma-separated). None configured: the role is open.
    #[arg(
        long,
        env = "LANES_AGENT_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub agent_tokens: Vec<String>,

    /// Tokens of the `client` role: ClientService (enqueue, status, stats, wake).
    #[arg(
        long,
        env = "LANES_CLIENT_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub client_tokens: Vec<String>,

    /// Tokens of the `admin` role: AdminService and ClientService.
    #[arg(
        long,
        env = "LANES_ADMIN_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub admin_tokens: Vec<String>,

    /// TLS certificate (PEM). With --tls-key, serves gRPC over TLS.
    #[arg(long, env = "LANES_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM).
    #[arg(long, env = "LANES_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Largest accepted payload or result, in bytes.
    #[arg(long, env = "LANES_MAX_PAYLOAD_BYTES", default_value_t = 1024 * 1024)]
    pub max_payload_bytes: usize,

    /// Database connections of this replica.
    #[arg(long, env = "LANES_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,

    /// Safety tick (ms): wakes asleep agents for delayed jobs and lost notifications, and
    /// refreshes this replica's agents.
    #[arg(long, env = "LANES_TICK_MS", default_value_t = 2000)]
    pub tick_ms: u64,

    /// Every this many ticks: a keep-alive on each wake stream (agents make no call for it),
    /// and this replica's agents marked awake with no job at two keep-alives in a row are put
    /// back to sleep.
    #[arg(long, env = "LANES_KEEPALIVE_TICKS", default_value_t = 15)]
    pub keepalive_ticks: u32,

    /// How often the reaper looks for lapsed leases (ms).
    #[arg(long, env = "LANES_REAPER_MS", default_value_t = 1000)]
    pub reaper_ms: u64,

    /// This replica's name in agent listings (default: hostname-pid).
    #[arg(long, env = "LANES_COORDINATOR_ID")]
    pub coordinator_id: Option<String>,

    /// Signing secret of job callbacks (`whsec_<base64>`, Standard Webhooks). Unset:
    /// callbacks are sent unsigned. Hidden so it never shows in --help output.
    #[arg(
        long,
        env = "LANES_WEBHOOK_SECRET",
        hide = true,
        hide_env_values = true
    )]
    pub webhook_secret: Option<String>,

    /// First retry delay of a failed callback delivery (ms); doubles each try up to 1 h.
    #[arg(
        long,
        env = "LANES_WEBHOOK_BACKOFF_MS",
        default_value_t = 5000,
        hide = true
    )]
    pub webhook_backoff_ms: u64,

    /// Internal addresses job callbacks may reach after all (comma-separated host names,
    /// IP addresses or CIDR blocks), e.g. an in-cluster n8n:
    /// n8n.default.svc.cluster.local,10.0.0.0/8. Without it callbacks reach public addresses
    /// only: loopback, private, link-local, metadata and other internal addresses are refused
    /// at enqueue (IP addresses) or when connecting (names). A listed name is trusted with
    /// whatever it resolves to. Global event endpoints are not subject to it.
    #[arg(long, env = "LANES_CALLBACK_ALLOW", value_delimiter = ',')]
    pub callback_allow: Vec<String>,

    /// Hosts callback URLs may not point to (comma-separated; a name covers its
    /// subdomains), refused at enqueue even when public or allowed by --callback-allow.
    #[arg(long, env = "LANES_CALLBACK_DENY_HOSTS", value_delimiter = ',')]
    pub callback_deny_hosts: Vec<String>,

    /// Seconds between retention passes, which delete finished jobs past their queue's
    /// retention and delivered webhooks past --outbox-retention-s. 0 turns retention off.
    #[arg(long, env = "LANES_RETENTION_INTERVAL_S", default_value_t = 60)]
    pub retention_interval_s: u64,

    /// Delivered webhooks (outbox rows) are deleted this many seconds after delivery.
    /// Failed and disabled ones are kept until replayed.
    #[arg(long, env = "LANES_OUTBOX_RETENTION_S", default_value_t = 86_400)]
    pub outbox_retention_s: u64,

    /// A schedule's tick not fired within this many milliseconds of its time (every replica
    /// was down) counts as missed, and follows the schedule's `missed` policy (skip, or run
    /// once); later ticks within it still fire, late.
    #[arg(long, env = "LANES_SCHEDULE_MISFIRE_MS", default_value_t = 60_000)]
    pub schedule_misfire_ms: u64,

    /// For tests only: background tasks (comma-separated names: wake, wake-listener,
    /// promoter, scheduler, reaper, dispatcher, event-fanout, watchdog, retention, database-probe,
    /// metrics) whose first run panics, to exercise their supervision. Read once at start.
    #[arg(
        long,
        env = "LANES_FAULT_PANIC_TASK",
        value_delimiter = ',',
        hide = true
    )]
    pub fault_panic_task: Vec<String>,

    /// Global events and the watchdog.
    #[command(flatten)]
    pub events: crate::events::config::EventArgs,
}
