//! Opening the coordinator's pools: one server, or a list of servers of which the read-write
//! one is used (failover: a promoted standby takes over), and the direct connection that
//! LISTEN and migrations need behind a transaction pooler (PgBouncer).
//!
//! sqlx 0.9 takes one host per URL and ignores `target_session_attrs`, so the list is ours:
//! `DATABASE_URL` may hold comma-separated URLs, or libpq's multi-host form
//! `postgres://u:p@h1:5432,h2:5432/db?target_session_attrs=read-write`. Each new connection
//! must answer `pg_is_in_recovery() = false`; a watcher checks the current server every
//! second and, when it is gone or read-only, points the pool at whichever listed server is
//! now the primary. Connections already open to a lost server fail and are replaced.
//!
//! Must never: hand out a connection to a server in recovery when a list is given (writes
//! would fail with "read-only transaction"), or poll when a single server is given.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _, PgPool};
use std::str::FromStr;
use std::time::Duration;

/// How often the watcher checks that the pool's server is still the read-write one.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// A pooled connection idle longer than this is pinged before it is handed out; one in
/// steady use is not (sqlx's default pings on every acquire: one more round trip per query).
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(5);

/// Longest wait for one server to answer while looking for the primary.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The servers a URL names, each as its own single-host URL.
pub fn split_urls(url: &str) -> Vec<String> {
    let pieces: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if pieces.iter().skip(1).all(|p| p.contains("://")) {
        return pieces.iter().map(|p| strip_session_attrs(p)).collect();
    }
    // libpq's multi-host form: scheme://userinfo@h1:p1,h2:p2/rest.
    let Some((scheme, rest)) = url.split_once("://") else {
        return vec![url.to_owned()];
    };
    let (userinfo, hosts_and_path) = match rest.rsplit_once('@') {
        Some((u, h)) if !u.contains('/') => (format!("{u}@"), h),
        _ => (String::new(), rest),
    };
    let (hosts, path) = match hosts_and_path.find(['/', '?']) {
        Some(i) => hosts_and_path.split_at(i),
        None => (hosts_and_path, ""),
    };
    hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| strip_session_attrs(&format!("{scheme}://{userinfo}{h}{path}")))
        .collect()
}

/// Drops `target_session_attrs` (read-write targeting is what the list means here; sqlx
/// would warn about the unknown parameter).
fn strip_session_attrs(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.starts_with("target_session_attrs="))
        .collect();
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// Opens a pool of `max_connections` to `url` (one server or a list, see the module docs),
/// with `settings` (name, value) passed as server settings at connect.
pub async fn pool(
    url: &str,
    max_connections: u32,
    settings: &[(&str, &str)],
) -> sqlx::Result<PgPool> {
    let mut candidates = Vec::new();
    for one in split_urls(url) {
        let mut options = PgConnectOptions::from_str(&one)?.application_name("lanes-coordinator");
        if !settings.is_empty() {
            options = options.options(settings.iter().copied());
        }
        candidates.push(options);
    }
    let pool_options = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        // A connection that broke while in use fails its next query, which the caller
        // reports or retries; one that sat idle (a server restart, a dropped socket) is
        // checked first.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(
                async move { Ok(meta.idle_for < PING_IF_IDLE_FOR || conn.ping().await.is_ok()) },
            )
        });
    if candidates.len() < 2 {
        let options = candidates
            .pop()
            .ok_or_else(|| sqlx::Error::Configuration("DATABASE_URL names no server".into()))?;
        return pool_options.connect_with(options).await;
    }
    let primary = find_primary(&candidates).await?;
    let pool = pool_options
        .after_connect(|conn, _| {
            Box::pin(async move {
                let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                    .fetch_one(&mut *conn)
                    .await?;
                if standby {
                    return Err(sqlx::Error::Configuration(
                        "connected to a server in recovery (a standby), not the primary".into(),
                    ));
                }
                Ok(())
            })
        })
        .connect_with(primary)
        .await?;
    tokio::spawn(watch(pool.clone(), candidates));
    Ok(pool)
}

/// The first of `candidates` that accepts connections and is not in recovery.
async fn find_primary(candidates: &[PgConnectOptions]) -> sqlx::Result<PgConnectOptions> {
    for options in candidates {
        if is_primary(options).await {
            return Ok(options.clone());
        }
    }
    Err(sqlx::Error::Configuration(
        format!(
            "none of the {} servers of DATABASE_URL is a reachable read-write primary",
            candidates.len()
        )
        .into(),
    ))
}

/// Whether the server of `options` answers, and as a primary.
async fn is_primary(options: &PgConnectOptions) -> bool {
    let probe = async {
        let mut conn = options.connect().await?;
        let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&mut conn)
            .await?;
        let _ = conn.close().await;
        Ok::<bool, sqlx::Error>(!standby)
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, probe).await,
        Ok(Ok(true))
    )
}

/// Keeps `pool` pointed at the primary among `candidates` until the pool is closed.
async fn watch(pool: PgPool, candidates: Vec<PgConnectOptions>) {
    while !pool.is_closed() {
        tokio::time::sleep(WATCH_EVERY).await;
        let check = sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()").fetch_one(&pool);
        if let Ok(Ok(false)) = tokio::time::timeout(PROBE_TIMEOUT, check).await {
            continue;
        }
        let current = pool.connect_options();
        for options in &candidates {
            if is_primary(options).await {
                if (options.get_host(), options.get_port())
                    != (current.get_host(), current.get_port())
                {
                    tracing::warn!(
                        host = options.get_host(),
                        port = options.get_port(),
                        "the database primary moved; new connections go to this server"
                    );
                    pool.set_connect_options(options.clone());
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_urls;

    #[test]
    fn one_url_stays_whole() {
        assert_eq!(
            split_urls("postgres://u:p@db:5432/lanes?sslmode=disable"),
            ["postgres://u:p@db:5432/lanes?sslmode=disable"]
        );
    }

    #[test]
    fn multi_host_urls_become_one_url_per_host() {
        assert_eq!(
            split_urls("postgres://u:p@a:1,b:2/lanes?target_session_attrs=read-write"),
            ["postgres://u:p@a:1/lanes", "postgres://u:p@b:2/lanes"]
        );
        assert_eq!(
            split_urls("postgres://u@a:1/x?sslmode=require,postgres://u@b:2/x"),
            ["postgres://u@a:1/x?sslmode=require", "postgres://u@b:2/x"]
        );
    }
}
