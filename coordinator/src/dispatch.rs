//! The outbox dispatcher: delivers the `outbox` rows (job callbacks and global events) as
//! signed webhooks.
//!
//! Rows are leased as jobs are (`FOR UPDATE SKIP LOCKED`, a 30 s delivery lease), so several
//! replicas deliver each row once between them; a row whose replica died mid-delivery is
//! taken again when its lease lapses. Each row is POSTed with Standard Webhooks headers:
//! `webhook-id` (`msg_<row id>`, the same on every retry, so a receiver can drop repeats),
//! `webhook-timestamp` and, when a secret is configured, `webhook-signature`. 2xx: delivered;
//! 410: the endpoint is gone (`disabled`); anything else, or no answer within 10 s: retried
//! with exponential backoff and jitter, then `failed` after the last try (kept, visible).
//!
//! Job callbacks go through the guarded client of [`crate::callback_policy`]: a URL that does
//! not parse, or reaches only addresses the policy refuses, is `failed` at once (retrying
//! cannot change the answer). Global event endpoints are the operator's own configuration
//! and use a plain client, so they may be in-cluster.

use crate::callback_policy;
use crate::events::endpoints::Endpoint;
use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use lanes_proto::urls::Policy;
use rand::Rng;
use sha2::Sha256;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// Rows leased per pass.
const BATCH: i64 = 32;
/// Tries before a delivery is marked `failed`.
const MAX_TRIES: i32 = 12;
/// Longest retry delay.
const MAX_BACKOFF_MS: u64 = 3_600_000;
/// Per-request timeout.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How often the dispatcher looks for due rows when the last pass found none.
const POLL: Duration = Duration::from_millis(500);

/// Due rows, and rows whose delivering replica stopped (lapsed lease), locked with SKIP
/// LOCKED so two replicas never lease the same row. `attempts` counts tries and fences the
/// lease: only the holder of the latest try records its outcome. The job's trace context
/// comes along (a primary-key probe per row), so each try is a span of the job's trace.
const LEASE: &str = "WITH cand AS (
    SELECT id, job_id FROM outbox
    WHERE (state = 'pending' AND next_attempt_at <= now())
       OR (state = 'delivering' AND lease_expires_at < now())
    ORDER BY next_attempt_at LIMIT $1 FOR UPDATE OF outbox SKIP LOCKED)
  UPDATE outbox o SET state = 'delivering', attempts = o.attempts + 1,
    lease_expires_at = now() + interval '30 seconds'
  FROM cand LEFT JOIN jobs j ON j.id = cand.job_id
  WHERE o.id = cand.id
  RETURNING o.id, o.url, o.payload, o.attempts, o.attempts - o.attempts_base AS tries,
    o.endpoint, o.job_id, o.queue, o.lane, j.traceparent, j.tracestate";

const DELIVERED: &str = "UPDATE outbox SET state = 'delivered', delivered_at = now(),
    last_status = $3, last_error = NULL, lease_expires_at = NULL
  WHERE id = $1 AND attempts = $2 AND state = 'delivering'";

const DISABLED: &str = "UPDATE outbox SET state = 'disabled', last_status = $3,
    last_error = 'endpoint answered 410 Gone', lease_expires_at = NULL
  WHERE id = $1 AND attempts = $2 AND state = 'delivering'";

const RETRY: &str =
    "UPDATE outbox SET state = $4::text::delivery_state, last_status = $3, last_error = $5,
    next_attempt_at = now() + $6 * interval '1 millisecond', lease_expires_at = NULL
  WHERE id = $1 AND attempts = $2 AND state = 'delivering'";

/// Settings of the dispatcher.
#[derive(Clone)]
pub struct Dispatcher {
    pool: PgPool,
    /// Job callbacks: guarded by `policy` (resolver, no redirects, no proxy).
    callbacks: reqwest::Client,
    /// Global event endpoints: trusted configuration, no address guard.
    endpoints: reqwest::Client,
    /// What job callbacks may reach.
    policy: Arc<Policy>,
    /// The decoded signing key (`whsec_` prefix and base64 removed).
    key: Option<Vec<u8>>,
    /// Keys of global event endpoints that have their own secret, by endpoint name.
    endpoint_keys: Arc<HashMap<String, Vec<u8>>>,
    backoff_ms: u64,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Dispatcher")
            .field("signed", &self.key.is_some())
            .field("backoff_ms", &self.backoff_ms)
            .finish()
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    url: String,
    payload: serde_json::Value,
    attempts: i32,
    /// Tries since the last replay, this one included.
    tries: i32,
    /// The global event endpoint it goes to; `None` for a job callback.
    endpoint: Option<String>,
    job_id: Option<i64>,
    queue: Option<String>,
    lane: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Row {
    /// The span of one try, in the job's trace (a child of its Enqueue span).
    fn span(&self) -> tracing::Span {
        let span = tracing::info_span!(
            "webhook",
            otel.name = "webhook delivery",
            otel.kind = "client",
            outbox.id = self.id,
            job.id = self.job_id,
            queue = self.queue.as_deref(),
            lane = self.lane.as_deref(),
            attempt = self.attempts,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        if let Some(tp) = &self.traceparent {
            lanes_telemetry::adopt_traceparent(&span, tp, self.tracestate.as_deref().unwrap_or(""));
        }
        span
    }

    /// The `traceparent` and `tracestate` to send: this try's span when tracing is on, else
    /// the job's own, so a receiver can still correlate the callback with the job.
    fn trace_headers(&self) -> Option<(String, String)> {
        lanes_telemetry::current_traceparent().or_else(|| {
            let tp = self.traceparent.clone()?;
            Some((tp, self.tracestate.clone().unwrap_or_default()))
        })
    }
}

/// Decodes a `whsec_<base64>` secret into its key.
pub fn decode_secret(secret: &str) -> anyhow::Result<Vec<u8>> {
    let Some(b64) = secret.trim().strip_prefix("whsec_") else {
        bail!("the webhook secret must look like whsec_<base64>");
    };
    let key = STANDARD
        .decode(b64)
        .context("the webhook secret after whsec_ is not valid base64")?;
    if key.is_empty() {
        bail!("the webhook secret is empty");
    }
    Ok(key)
}

/// `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Delay before try `attempts + 1`: initial × 2^(attempts-1), capped at 1 h, ±20 % jitter.
fn backoff_ms(initial: u64, attempts: i32) -> i64 {
    let exp = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(30);
    let base = initial.saturating_mul(1u64 << exp).min(MAX_BACKOFF_MS);
    let jitter = rand::rng().random_range(0.8..=1.2);
    (base as f64 * jitter) as i64
}

/// The `User-Agent` of every delivery.
const USER_AGENT: &str = concat!("lanes-coordinator/", env!("CARGO_PKG_VERSION"));

impl Dispatcher {
    /// Builds the dispatcher; `secret` is the `whsec_` form; job callbacks may reach what
    /// `policy` allows.
    pub fn new(
        pool: PgPool,
        secret: Option<&str>,
        backoff_ms: u64,
        policy: Arc<Policy>,
    ) -> anyhow::Result<Self> {
        let key = secret
            .filter(|s| !s.trim().is_empty())
            .map(decode_secret)
            .transpose()?;
        let callbacks = callback_policy::guarded_client(policy.clone(), TIMEOUT, USER_AGENT)
            .context("building the callback HTTP client")?;
        let endpoints = reqwest::Client::builder()
            .timeout(TIMEOUT)
            // A redirect is an answer like any other non-2xx (retried), as for callbacks.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .build()
            .context("building the event endpoint HTTP client")?;
        Ok(Dispatcher {
            pool,
            callbacks,
            endpoints,
            policy,
            key,
            endpoint_keys: Arc::default(),
            backoff_ms: backoff_ms.max(1),
        })
    }

    /// Signs the deliveries of each global event endpoint that has a secret with its own
    /// key (the others with the callbacks' key).
    pub fn with_endpoints(mut self, endpoints: &[Endpoint]) -> anyhow::Result<Self> {
        let mut keys = HashMap::new();
        for e in endpoints {
            if let Some(secret) = e.secret.as_deref().filter(|s| !s.trim().is_empty()) {
                keys.insert(e.name.clone(), decode_secret(secret)?);
            }
        }
        self.endpoint_keys = Arc::new(keys);
        Ok(self)
    }

    /// Delivers due rows until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            // Shutdown does not wait for slow endpoints: rows dropped mid-delivery keep their
            // lease and are delivered again (same webhook-id) once it lapses.
            let pass = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.pass() => r,
            };
            let found = match pass {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook dispatch pass failed");
                    0
                }
            };
            if found as i64 >= BATCH {
                if stop.is_cancelled() {
                    return;
                }
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Leases up to a batch of rows and delivers them concurrently; returns how many.
    async fn pass(&self) -> anyhow::Result<usize> {
        let rows: Vec<Row> = sqlx::query_as(LEASE)
            .bind(BATCH)
            .fetch_all(&self.pool)
            .await?;
        let n = rows.len();
        let mut set = JoinSet::new();
        for row in rows {
            let me = self.clone();
            let span = row.span();
            set.spawn(
                async move {
                    if let Err(e) = me.deliver(&row).await {
                        tracing::warn!(error = %e, "recording a delivery failed");
                    }
                }
                .instrument(span),
            );
        }
        while set.join_next().await.is_some() {}
        Ok(n)
    }

    async fn deliver(&self, row: &Row) -> anyhow::Result<()> {
        let body = serde_json::to_vec(&row.payload)?;
        let msg_id = format!("msg_{}", row.id);
        let ts = chrono::Utc::now().timestamp();
        let http = if row.endpoint.is_some() {
            &self.endpoints
        } else {
            if let Some(why) = callback_policy::refusal(&self.policy, &row.url) {
                return self.give_up(row, &why.to_string()).await;
            }
            &self.callbacks
        };
        let mut req = http
            .post(&row.url)
            .header("content-type", "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", ts.to_string());
        let own = row
            .endpoint
            .as_ref()
            .and_then(|e| self.endpoint_keys.get(e));
        if let Some(key) = own.or(self.key.as_ref()) {
            req = req.header("webhook-signature", sign(key, &msg_id, ts, &body));
        }
        if let Some((tp, state)) = row.trace_headers() {
            req = req.header("traceparent", tp);
            if !state.is_empty() {
                req = req.header("tracestate", state);
            }
        }
        let outcome = req.body(body).send().await;
        record_outcome(&outcome);
        let (status, error) = match outcome {
            Ok(resp) if resp.status().is_success() => {
                sqlx::query(DELIVERED)
                    .bind(row.id)
                    .bind(row.attempts)
                    .bind(i32::from(resp.status().as_u16()))
                    .execute(&self.pool)
                    .await?;
                crate::metrics::webhook("delivered");
                tracing::debug!("webhook delivered");
                return Ok(());
            }
            Ok(resp) if resp.status() == reqwest::StatusCode::GONE => {
                sqlx::query(DISABLED)
                    .bind(row.id)
                    .bind(row.attempts)
                    .bind(410i32)
                    .execute(&self.pool)
                    .await?;
                crate::metrics::webhook("disabled");
                tracing::warn!("webhook endpoint answered 410 Gone; delivery disabled");
                return Ok(());
            }
            Ok(resp) => (
                Some(i32::from(resp.status().as_u16())),
                format!("endpoint answered {}", resp.status()),
            ),
            Err(e) => match permanent(&e) {
                Some(why) => return self.give_up(row, &why).await,
                // Without the URL: it may carry credentials in its query.
                None => (None, e.without_url().to_string()),
            },
        };
        let last = row.tries >= MAX_TRIES;
        let state = if last { "failed" } else { "pending" };
        sqlx::query(RETRY)
            .bind(row.id)
            .bind(row.attempts)
            .bind(status)
            .bind(state)
            .bind(&error)
            .bind(backoff_ms(self.backoff_ms, row.tries))
            .execute(&self.pool)
            .await?;
        crate::metrics::webhook(if last { "failed" } else { "retry" });
        if last {
            tracing::warn!(tries = row.tries, %error, "webhook undeliverable; kept as failed");
        } else {
            tracing::info!(tries = row.tries, %error, "webhook delivery failed; will retry");
        }
        Ok(())
    }

    /// Marks a delivery `failed` at once: trying again cannot succeed (the URL is refused
    /// or unusable). A replay tries again, e.g. after the operator changed the policy.
    async fn give_up(&self, row: &Row, error: &str) -> anyhow::Result<()> {
        sqlx::query(RETRY)
            .bind(row.id)
            .bind(row.attempts)
            .bind(None::<i32>)
            .bind("failed")
            .bind(error)
            .bind(0i64)
            .execute(&self.pool)
            .await?;
        crate::metrics::webhook("failed");
        tracing::warn!(%error, "webhook refused; kept as failed, not retried");
        Ok(())
    }
}

/// Why a failed request can never succeed, if that is the case: the callback policy
/// refused every address of its host, or the URL itself is unusable.
fn permanent(e: &reqwest::Error) -> Option<String> {
    if let Some(r) = callback_policy::refused_in(e) {
        return Some(format!("callback URL refused: {r}"));
    }
    e.is_builder()
        .then(|| "the URL cannot be requested: it is not a valid http(s) URL".to_owned())
}

/// The answer's status on the try's span; an error unless 2xx.
fn record_outcome(outcome: &Result<reqwest::Response, reqwest::Error>) {
    let span = tracing::Span::current();
    match outcome {
        Ok(resp) => {
            span.record("http.response.status_code", resp.status().as_u16());
            if !resp.status().is_success() {
                span.record("otel.status_code", "ERROR");
            }
        }
        Err(_) => {
            span.record("otel.status_code", "ERROR");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_and_signature() {
        // Standard Webhooks' reference example.
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_or_default();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(decode_secret("MfKQ9r8G").is_err());
        assert!(decode_secret("whsec_***").is_err());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        for (attempts, base) in [(1, 5_000), (2, 10_000), (4, 40_000), (11, 3_600_000)] {
            let d = backoff_ms(5_000, attempts);
            assert!(
                (base * 8 / 10..=base * 12 / 10).contains(&d),
                "{attempts}: {d}"
            );
        }
    }
}
