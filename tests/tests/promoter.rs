//! The promoter sleeps until the next scheduled job or lane falls due, and only then: with
//! nothing scheduled it must not poll (a NULL "next due" once read as "due now" made it
//! spin, a few hundred statements a second on an idle coordinator).

use lanes_tests::jobs::*;

const Q: &str = "invoice_import";

#[tokio::test]
async fn the_promoter_sleeps_until_something_falls_due() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let db = sqlx::PgPool::connect(&t.db.url).await?;
    let next_due = async || -> anyhow::Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT transitions.next_due_ms()")
            .fetch_one(&db)
            .await?)
    };
    assert_eq!(
        next_due().await?,
        None,
        "nothing scheduled: nothing to wake up for"
    );
    t.add(Q, "").await?;
    assert_eq!(next_due().await?, None, "a due job is not scheduled");
    t.add_req(job(Q, "", "{}").delay(30)).await?;
    t.add_req(job(Q, "L", "{}").delay(20)).await?;
    let ms = next_due().await?.expect("the delayed jobs are scheduled");
    assert!((10_000..=20_000).contains(&ms), "due in {ms} ms");
    Ok(())
}
