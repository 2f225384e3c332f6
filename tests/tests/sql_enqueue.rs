//! `transitions.enqueue` called straight from SQL (a migration script, a trigger, an operator
//! in psql): a job for a queue that does not exist raises LN404 and the whole call enqueues
//! nothing, where it used to drop that job without a word. The coordinator always creates a
//! queue before its first enqueue, so its clients never meet this.

use lanes_tests::jobs::*;

const ENQUEUE: &str = "SELECT o_created FROM transitions.enqueue($1, $2, $3, $4, $5, $6, $7, \
    $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)";

async fn enqueue(db: &sqlx::PgPool, queues: &[&str]) -> Result<Vec<bool>, sqlx::Error> {
    let n = queues.len();
    let none_text = vec![None::<String>; n];
    let none_i64 = vec![None::<i64>; n];
    sqlx::query_scalar(ENQUEUE)
        .bind(queues)
        .bind(vec![Some("resto-1"); n])
        .bind(vec![r#"{"invoice":"F-1"}"#; n])
        .bind(vec![0i32; n])
        .bind(vec![None::<chrono::DateTime<chrono::Utc>>; n])
        .bind(&none_i64)
        .bind(&none_text)
        .bind(&none_text)
        .bind(&none_text)
        .bind(&none_text)
        .bind(&none_text)
        .bind(vec![None::<i32>; n])
        .bind(&none_i64)
        .bind(&none_i64)
        .bind(&none_i64)
        .bind(&none_i64)
        .bind(vec![false; n])
        .fetch_all(db)
        .await
}

#[tokio::test]
async fn an_enqueue_into_a_missing_queue_raises_and_enqueues_nothing() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let db = sqlx::PgPool::connect(&t.db.url).await?;
    sqlx::query("INSERT INTO queues (name) VALUES ('invoice_import')")
        .execute(&db)
        .await?;
    assert_eq!(enqueue(&db, &["invoice_import"]).await?, vec![true]);

    let refused = enqueue(&db, &["invoice_import", "invoice_imprt"]).await;
    let err = refused.expect_err("a job for a missing queue must not vanish");
    let db_err = err
        .as_database_error()
        .ok_or_else(|| anyhow::anyhow!("not a database error: {err}"))?;
    assert_eq!(db_err.code().as_deref(), Some("LN404"), "{db_err}");
    assert!(db_err.message().contains("invoice_imprt"), "{db_err}");

    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&db)
        .await?;
    assert_eq!(jobs, 1, "the call is all or nothing");
    lanes_tests::assert_lanes_agree(&t.db.url).await?;
    Ok(())
}
