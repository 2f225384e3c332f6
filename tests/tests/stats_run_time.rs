//! GetStats' `avg_run_ms`: the mean run time of the queue's own jobs completed within the
//! hour, whatever the other queues hold. Jobs run through real leases and completions; their
//! start and finish times are then set in the table, so the run times are exact. One job
//! finished two hours ago stays out of the mean, failed jobs stay out, and a queue with
//! nothing completed says 0.

use lanes_tests::jobs::*;

#[tokio::test]
async fn avg_run_ms_is_each_queues_own_recent_mean() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let db = sqlx::PgPool::connect(&t.db.url).await?;
    // (queue, run ms, finished this many seconds ago)
    let runs = [
        ("reports", 1_000, 60),
        ("reports", 3_000, 120),
        ("reports", 100_000, 7_200),
        ("invoices", 10, 30),
    ];
    for (queue, run_ms, ago_s) in runs {
        let id = t.add(queue, "L").await?;
        let leased = t.take("a1", queue).await?;
        assert_eq!(leased.id, id);
        t.complete(&leased).await?;
        sqlx::query(
            "UPDATE jobs SET finished_at = now() - $2 * interval '1 second',
                             started_at = now() - $2 * interval '1 second'
                                          - $3 * interval '1 millisecond'
             WHERE id = $1",
        )
        .bind(id)
        .bind(ago_s as f64)
        .bind(run_ms as f64)
        .execute(&db)
        .await?;
    }
    // A failed job, however long it ran, is no completed run.
    let id = t.add("invoices", "L").await?;
    let leased = t.take("a1", "invoices").await?;
    t.fail(&leased, Default::default()).await?;
    assert_eq!(t.state(id).await?, lanes_proto::v1::JobState::Failed);
    sqlx::query("UPDATE jobs SET started_at = finished_at - interval '50 seconds' WHERE id = $1")
        .bind(id)
        .execute(&db)
        .await?;
    t.add("quiet", "L").await?;

    let mean = |s: &lanes_proto::v1::QueueStats| s.avg_run_ms.round() as i64;
    assert_eq!(mean(&t.stats("reports").await?), 2_000);
    assert_eq!(mean(&t.stats("invoices").await?), 10);
    assert_eq!(mean(&t.stats("quiet").await?), 0);
    Ok(())
}
