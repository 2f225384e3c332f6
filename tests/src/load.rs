//! Load for the fault and chaos tests: jobs for the `record-run` handler, enqueued through the
//! gateway as n8n sends them (an idempotency key per job, so a request repeated after a lost
//! answer creates nothing twice), retried while the gateway answers 5xx or cannot be reached,
//! with every answer counted; and progress read from the database.

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How long one job may keep being retried before the feeder gives up.
const GIVE_UP: Duration = Duration::from_secs(90);

/// Enqueues jobs through a gateway.
pub struct Feeder {
    http: reqwest::Client,
    gateway: String,
    key: String,
    queue: String,
    record: PathBuf,
    sleep_ms: u64,
    callback_url: Option<String>,
    answers: Mutex<BTreeMap<String, usize>>,
}

impl Feeder {
    /// Jobs of `queue` through the gateway at `gateway` (`http://host:port`, enqueue `key`),
    /// each recording its run in `record` after `sleep_ms`.
    pub fn new(gateway: &str, key: &str, queue: &str, record: &Path, sleep_ms: u64) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap_or_default();
        Feeder {
            http,
            gateway: gateway.to_owned(),
            key: key.to_owned(),
            queue: queue.to_owned(),
            record: record.to_owned(),
            sleep_ms,
            callback_url: None,
            answers: Mutex::new(BTreeMap::new()),
        }
    }

    /// Every job also gets `url` as its callback (so its completion writes an outbox row).
    pub fn with_callback(mut self, url: &str) -> Self {
        self.callback_url = Some(url.to_owned());
        self
    }

    /// The JSON of job `seq` of lane `lane`, as the gateway takes it.
    fn job(&self, lane: &str, seq: u64) -> Value {
        let mut job = json!({
            "queue": self.queue,
            "lane": lane,
            "idempotency_key": format!("{lane}/{seq}"),
            "payload": {"file": self.record, "lane": lane, "seq": seq, "sleep_ms": self.sleep_ms},
        });
        if let Some(url) = &self.callback_url {
            job["callback_url"] = json!(url);
        }
        job
    }

    /// Enqueues job `seq` of `lane`; returns its id.
    pub async fn one(&self, lane: &str, seq: u64) -> anyhow::Result<i64> {
        let answer = self.post("/api/jobs", &self.job(lane, seq)).await?;
        answer["job_id"].as_i64().context("no job_id")
    }

    /// Enqueues `jobs` ((lane, seq), in order) in one batch; returns their ids in order.
    pub async fn batch(&self, jobs: &[(String, u64)]) -> anyhow::Result<Vec<i64>> {
        let body = json!({"jobs": jobs.iter().map(|(l, s)| self.job(l, *s)).collect::<Vec<_>>()});
        let answer = self.post("/api/jobs/batch", &body).await?;
        let ids: Option<Vec<i64>> = answer["jobs"]
            .as_array()
            .map(|a| a.iter().filter_map(|j| j["job_id"].as_i64()).collect());
        match ids {
            Some(ids) if ids.len() == jobs.len() => Ok(ids),
            _ => bail!("unexpected batch answer {answer}"),
        }
    }

    /// Answers seen so far, by status code (`transport` for no answer at all).
    pub fn answers(&self) -> BTreeMap<String, usize> {
        self.answers.lock().map(|a| a.clone()).unwrap_or_default()
    }

    fn count(&self, what: String) {
        if let Ok(mut a) = self.answers.lock() {
            *a.entry(what).or_default() += 1;
        }
    }

    /// POSTs `body` until the gateway accepts it (200 or 202); 5xx and broken connections
    /// are retried (what n8n does), anything else is an error.
    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let deadline = Instant::now() + GIVE_UP;
        loop {
            let sent = self
                .http
                .post(format!("{}{path}", self.gateway))
                .header("X-API-Key", &self.key)
                .json(body)
                .send()
                .await;
            match sent {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    self.count(status.to_string());
                    let text = resp.text().await.unwrap_or_default();
                    match status {
                        200 | 202 => return Ok(serde_json::from_str(&text)?),
                        500..=599 => {}
                        _ => bail!("{path} answered {status}: {text}"),
                    }
                }
                Err(_) => self.count("transport".into()),
            }
            if Instant::now() > deadline {
                bail!(
                    "{path} still refused after {GIVE_UP:?}: {:?}",
                    self.answers()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Jobs of `queue` completed so far, or `None` while the database cannot be reached.
pub async fn completed(database_url: &str, queue: &str) -> Option<i64> {
    use sqlx::Connection as _;
    let count = async {
        let mut conn = sqlx::PgConnection::connect(database_url).await.ok()?;
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE queue = $1 AND state = 'completed'",
        )
        .bind(queue)
        .fetch_one(&mut conn)
        .await
        .ok();
        let _ = conn.close().await;
        n
    };
    tokio::time::timeout(Duration::from_secs(5), count)
        .await
        .ok()
        .flatten()
}

/// Waits until at least `n` jobs of `queue` are completed.
pub async fn wait_completed(
    database_url: &str,
    queue: &str,
    n: i64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let done = completed(database_url, queue).await;
        if done.is_some_and(|d| d >= n) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{done:?} of {n} jobs of {queue} completed within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
