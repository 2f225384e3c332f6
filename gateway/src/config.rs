//! Command line and environment: every flag is also an environment variable (12-factor).
//! Parsing the API keys happens here, so a typo in a role stops the gateway at start-up
//! instead of locking users out at run time.

use crate::auth::{Keys, Role};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Lanes gateway: the HTTP/JSON API that n8n calls (enqueue, job status and results,
/// wake-worker, stats, admin page), translated into coordinator gRPC calls. Keeps no state
/// of its own except a short stats cache.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Cli {
    /// Coordinator gRPC URL (http:// or https://).
    #[arg(
        long,
        env = "LANES_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub coordinator: String,

    /// Bearer token for the coordinator. Admin routes need a token of the coordinator's
    /// `admin` role (which also grants the client calls); empty when the coordinator is open.
    #[arg(long, env = "LANES_COORDINATOR_TOKEN", hide_env_values = true)]
    pub coordinator_token: Option<String>,

    /// CA certificate (PEM) to verify an https:// coordinator.
    #[arg(long, env = "LANES_COORDINATOR_CA")]
    pub coordinator_ca: Option<PathBuf>,

    /// Address the HTTP server listens on.
    #[arg(long, env = "LANES_GATEWAY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// API keys as comma-separated `role:key` pairs, roles `enqueue`, `read`, `admin`
    /// (e.g. "enqueue:k1,read:k1,admin:k2"; a key listed twice holds both roles). None
    /// configured: every route is open (local development only; a warning is logged).
    #[arg(
        long,
        env = "LANES_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// Largest accepted job payload (JSON, bytes); matches the coordinator's limit.
    #[arg(long, env = "LANES_MAX_PAYLOAD_BYTES", default_value_t = 1024 * 1024)]
    pub max_payload_bytes: usize,

    /// Largest accepted body of POST /api/jobs/batch, in bytes.
    #[arg(long, env = "LANES_MAX_BATCH_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_batch_bytes: usize,

    /// Most workers (agents) one wake-worker call may wake.
    #[arg(long, env = "LANES_MAX_WAKE", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_wake: u32,

    /// Age (ms) after which the cached queue stats behind `position_in_queue` and
    /// `estimated_start` are refreshed (one GetStats call at most this often).
    #[arg(long, env = "LANES_STATS_CACHE_MS", default_value_t = 3000)]
    pub stats_cache_ms: u64,

    /// Deadline of one coordinator call, in milliseconds.
    #[arg(long, env = "LANES_RPC_TIMEOUT_MS", default_value_t = 10_000)]
    pub rpc_timeout_ms: u64,

    /// `Retry-After` seconds sent with 503 (coordinator unavailable) and 429 (queue full).
    #[arg(long, env = "LANES_RETRY_AFTER_S", default_value_t = 5)]
    pub retry_after_s: u32,

    /// Log format: `text` for a terminal, `json` for production (JSON lines). The log
    /// filter is `RUST_LOG` (default `info`), as for the coordinator and the agent.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", ignore_case = true,
          value_parser = ["text", "json"])]
    pub log_format: String,
}

impl Cli {
    /// The configured API keys, or an error naming the bad entry.
    pub fn keys(&self) -> anyhow::Result<Keys> {
        let mut keys = Keys::default();
        for entry in self
            .api_keys
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
        {
            let (role, key) = entry.split_once(':').ok_or_else(|| {
                anyhow::anyhow!(
                    "API key entry without a role: write `role:key` (roles enqueue, read, admin)"
                )
            })?;
            let role = Role::parse(role.trim()).ok_or_else(|| {
                anyhow::anyhow!("unknown API key role {role:?}; allowed: enqueue, read, admin")
            })?;
            let key = key.trim();
            if key.is_empty() {
                anyhow::bail!("empty API key for role {role:?}");
            }
            keys.add(role, key);
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(keys: &str) -> Cli {
        Cli::parse_from(["gateway", "--api-keys", keys])
    }

    #[test]
    fn keys_parse_roles() {
        let keys = cli("enqueue:a, read:a,admin:b").keys().expect("valid");
        assert_eq!(keys.roles_of("a"), Some(vec![Role::Enqueue, Role::Read]));
        assert_eq!(keys.roles_of("b"), Some(vec![Role::Admin]));
        assert_eq!(keys.roles_of("c"), None);
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(cli("writer:a").keys().is_err());
        assert!(cli("nokey").keys().is_err());
        assert!(cli("read:").keys().is_err());
    }
}
