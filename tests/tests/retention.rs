//! Retention: the coordinator's periodic cleanup deletes exactly the finished jobs older
//! than their queue's retention (completed and cancelled: `retention_completed_s`; failed:
//! `retention_failed_s`) and the delivered outbox rows older than `--outbox-retention-s`,
//! and nothing else: not the young ones, not unfinished jobs, not the failed head of a
//! blocked lane, not failed, disabled or pending deliveries. Two replicas run it at once.

use lanes_proto::v1 as pb;
use lanes_tests::Coordinator;
use lanes_tests::jobs::{Setup, eventually, permanent};
use sqlx::PgPool;
use std::collections::BTreeSet;
use std::time::Duration;

/// Seconds either side of a threshold: far more than a test takes, so "just older" and
/// "just younger" do not depend on timing.
const MARGIN: i64 = 120;
const DAY: i64 = 86_400;

/// Finished jobs of one queue, one just older and one just younger than each threshold.
struct Made {
    gone: Vec<i64>,
    kept: Vec<i64>,
}

async fn age_job(db: &PgPool, id: i64, secs: i64) -> anyhow::Result<()> {
    let n = sqlx::query(
        "UPDATE jobs SET finished_at = now() - make_interval(secs => $2::float8) WHERE id = $1",
    )
    .bind(id)
    .bind(secs as f64)
    .execute(db)
    .await?
    .rows_affected();
    anyhow::ensure!(n == 1, "job {id} not aged");
    Ok(())
}

/// One job of `queue` taken to `end` (completed, failed or cancelled).
async fn finished(s: &Setup, queue: &str, end: &str) -> anyhow::Result<i64> {
    let id = s.add(queue, "").await?;
    if end == "cancelled" {
        s.cancel(id).await?;
        return Ok(id);
    }
    let leased = s.take("agent-r", queue).await?;
    anyhow::ensure!(leased.id == id, "leased {} instead of {id}", leased.id);
    if end == "failed" {
        s.fail(&leased, permanent("broken")).await?;
    } else {
        s.complete(&leased).await?;
    }
    Ok(id)
}

async fn make_queue(
    s: &Setup,
    db: &PgPool,
    queue: &str,
    completed_s: i64,
    failed_s: i64,
) -> anyhow::Result<Made> {
    let mut made = Made {
        gone: Vec::new(),
        kept: Vec::new(),
    };
    for (end, threshold) in [
        ("completed", completed_s),
        ("cancelled", completed_s),
        ("failed", failed_s),
    ] {
        let old = finished(s, queue, end).await?;
        age_job(db, old, threshold + MARGIN).await?;
        made.gone.push(old);
        let young = finished(s, queue, end).await?;
        age_job(db, young, threshold - MARGIN).await?;
        made.kept.push(young);
    }
    Ok(made)
}

async fn job_ids(db: &PgPool) -> anyhow::Result<BTreeSet<i64>> {
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM jobs")
        .fetch_all(db)
        .await?;
    Ok(ids.into_iter().collect())
}

async fn outbox_ids(db: &PgPool) -> anyhow::Result<BTreeSet<i64>> {
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM outbox")
        .fetch_all(db)
        .await?;
    Ok(ids.into_iter().collect())
}

/// An outbox row in `state`, `age_s` old (delivered_at too when delivered), never due.
async fn outbox_row(db: &PgPool, state: &str, age_s: i64) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO outbox (event_type, url, payload, state, attempts, created_at,
                             next_attempt_at, delivered_at)
         VALUES ('job.completed', 'http://127.0.0.1:9/never', '{}', $1::text::delivery_state, 1,
                 now() - make_interval(secs => $2::float8), now() + interval '1 day',
                 CASE WHEN $1::text = 'delivered' THEN now() - make_interval(secs => $2::float8) END)
         RETURNING id",
    )
    .bind(state)
    .bind(age_s as f64)
    .fetch_one(db)
    .await?)
}

#[tokio::test]
async fn retention_deletes_exactly_what_is_past_its_threshold() -> anyhow::Result<()> {
    // The replica that makes the data runs no retention; two others start afterwards.
    let s = Setup::start(&["--retention-interval-s", "0"]).await?;
    let db = s.db.pool().await?;

    s.set("short", |r| {
        r.retention_completed_s = Some(3600);
        r.retention_failed_s = Some(7200);
    })
    .await?;
    let short = make_queue(&s, &db, "short", 3600, 7200).await?;
    let default = make_queue(&s, &db, "default", DAY, 7 * DAY).await?;

    // A blocked lane keeps its failed head however old; its waiting job is not finished.
    s.set("strict", |r| {
        r.failure_policy = Some(pb::FailurePolicy::Block as i32);
        r.retention_failed_s = Some(60);
    })
    .await?;
    let head = s.add("strict", "resto-9").await?;
    let behind = s.add("strict", "resto-9").await?;
    let leased = s.take("agent-r", "strict").await?;
    anyhow::ensure!(leased.id == head, "leased {} instead of {head}", leased.id);
    s.fail(&leased, permanent("bad invoice")).await?;
    age_job(&db, head, 7 * DAY).await?;
    // Unfinished jobs stay whatever their age.
    let pending = s.add("short", "").await?;
    sqlx::query("UPDATE jobs SET created_at = now() - interval '30 days' WHERE id = $1")
        .bind(pending)
        .execute(&db)
        .await?;

    let old_delivered = outbox_row(&db, "delivered", DAY + MARGIN).await?;
    let young_delivered = outbox_row(&db, "delivered", DAY - MARGIN).await?;
    let mut outbox_kept = vec![young_delivered];
    for state in ["failed", "disabled", "pending"] {
        outbox_kept.push(outbox_row(&db, state, 30 * DAY).await?);
    }

    let jobs_before = job_ids(&db).await?;
    let gone: BTreeSet<i64> = short.gone.iter().chain(&default.gone).copied().collect();
    let mut jobs_kept: BTreeSet<i64> = jobs_before.difference(&gone).copied().collect();
    assert_eq!(
        jobs_kept.len(),
        6 + 3,
        "young ones, the lane's two, the pending one"
    );
    for id in short
        .kept
        .iter()
        .chain(&default.kept)
        .chain([&head, &behind, &pending])
    {
        assert!(jobs_kept.remove(id), "job {id}");
    }
    assert!(jobs_kept.is_empty());

    let one = Coordinator::start(&s.db.url, &["--retention-interval-s", "1"]).await?;
    let two = Coordinator::start(&s.db.url, &["--retention-interval-s", "1"]).await?;
    eventually(Duration::from_secs(20), "old rows deleted", async || {
        let jobs = job_ids(&db).await?;
        let outbox = outbox_ids(&db).await?;
        Ok((jobs.is_disjoint(&gone) && !outbox.contains(&old_delivered)).then_some(()))
    })
    .await?;
    // Let both replicas run more passes over what is left: it must all stay.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let want_jobs: BTreeSet<i64> = jobs_before.difference(&gone).copied().collect();
    assert_eq!(job_ids(&db).await?, want_jobs);
    let want_outbox: BTreeSet<i64> = outbox_kept.into_iter().collect();
    assert_eq!(outbox_ids(&db).await?, want_outbox);
    let logs = format!("{}{}", one.proc.log_tail(200), two.proc.log_tail(200));
    assert!(
        logs.contains("retention deleted old rows"),
        "no retention log line:\n{logs}"
    );
    assert!(!logs.contains("retention pass failed"), "{logs}");
    Ok(())
}
