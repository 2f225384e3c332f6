//! Which set of transition functions a starting coordinator leaves installed. An older
//! release that restarts in the middle of a rolling deploy must keep a newer release's set
//! (the new replicas call functions only that set has), and serves on it; a set from an
//! older release is replaced.

use lanes_tests::Coordinator;
use lanes_tests::jobs::*;

async fn installed(db: &sqlx::PgPool) -> anyhow::Result<(String, i64, bool)> {
    let (hash, serial): (String, i64) =
        sqlx::query_as("SELECT hash, serial FROM transitions_code WHERE id = 1")
            .fetch_one(db)
            .await?;
    let marker: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                        WHERE n.nspname = 'transitions' AND p.proname = 'from_another_release')",
    )
    .fetch_one(db)
    .await?;
    Ok((hash, serial, marker))
}

/// Marks the installed set as another release's: its serial, its hash, one function of its own.
async fn pretend(db: &sqlx::PgPool, serial: i64) -> anyhow::Result<()> {
    sqlx::query("UPDATE transitions_code SET serial = $1, hash = 'another release'")
        .bind(serial)
        .execute(db)
        .await?;
    sqlx::query(
        "CREATE OR REPLACE FUNCTION transitions.from_another_release() RETURNS int
         LANGUAGE sql AS 'SELECT 1'",
    )
    .execute(db)
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_newer_set_stays_and_an_older_one_is_replaced() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let db = sqlx::PgPool::connect(&t.db.url).await?;
    let (ours, serial, _) = installed(&db).await?;
    assert!(serial >= 1, "the release's serial is recorded: {serial}");

    // A newer release installed its set; this (older) release starts again meanwhile.
    pretend(&db, serial + 1).await?;
    let mut older = Coordinator::start(&t.db.url, &[]).await?;
    assert_eq!(
        installed(&db).await?,
        ("another release".to_owned(), serial + 1, true)
    );
    // It serves on the newer set, whose signatures include its own.
    let client = older.client().await?;
    let agent = older.agent().await?;
    let id = enqueue_id(&client, "invoice_import", "resto-1").await?;
    let leased = lease(&agent, "a1", &["invoice_import"])
        .await?
        .ok_or_else(|| anyhow::anyhow!("nothing leased on the newer set"))?;
    assert_eq!(leased.id, id);
    complete(&agent, &leased).await?;

    // An older release's set is replaced at the next start.
    pretend(&db, serial - 1).await?;
    older.restart().await?;
    assert_eq!(installed(&db).await?, (ours, serial, false));
    Ok(())
}
