//! The admin page's per-minute history (QueueHistory) stays right while a replica keeps the
//! minutes that are over and reads only the newer ones: asked first for 5 minutes, then for
//! 60 (wider than what it kept), then again after another job finished, the replica that
//! keeps minutes answers exactly as a fresh replica on the same database does.

use lanes_proto::v1 as pb;
use lanes_proto::v1::admin_service_client::AdminServiceClient;
use lanes_tests::Coordinator;
use lanes_tests::jobs::*;
use tonic::transport::Channel;

const Q: &str = "orders";

async fn history(
    admin: &AdminServiceClient<Channel>,
    minutes: i32,
) -> anyhow::Result<Vec<pb::HistoryMinute>> {
    let req = pb::QueueHistoryRequest {
        queue: Q.into(),
        minutes,
    };
    Ok(admin.clone().queue_history(req).await?.into_inner().minutes)
}

fn sums(h: &[pb::HistoryMinute]) -> (i64, i64) {
    (
        h.iter().map(|m| m.completed).sum(),
        h.iter().map(|m| m.failed).sum(),
    )
}

/// Both replicas' answers, asked until both fall in the same minute (the window moves on at
/// each minute's turn).
async fn both(
    keeping: &AdminServiceClient<Channel>,
    fresh: &AdminServiceClient<Channel>,
) -> anyhow::Result<(Vec<pb::HistoryMinute>, Vec<pb::HistoryMinute>)> {
    for _ in 0..5 {
        let a = history(keeping, 60).await?;
        let b = history(fresh, 60).await?;
        if a.last().map(|m| m.minute) == b.last().map(|m| m.minute) {
            return Ok((a, b));
        }
    }
    anyhow::bail!("the two answers never fell in the same minute")
}

#[tokio::test]
async fn kept_minutes_answer_as_a_fresh_read_does() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let db = sqlx::PgPool::connect(&t.db.url).await?;
    // Finished 10, 5 and 5 minutes ago (completed) and 7 minutes ago (failed).
    for (ago_min, fail) in [(10, false), (5, false), (5, false), (7, true)] {
        let id = t.add(Q, &format!("L{ago_min}")).await?;
        let leased = t.take("a1", Q).await?;
        assert_eq!(leased.id, id);
        if fail {
            t.fail(&leased, Default::default()).await?;
        } else {
            t.complete(&leased).await?;
        }
        sqlx::query(
            "UPDATE jobs SET created_at = now() - $2 * interval '1 minute' - interval '2 s',
                             run_at = now() - $2 * interval '1 minute' - interval '2 s',
                             started_at = now() - $2 * interval '1 minute' - interval '1 s',
                             finished_at = now() - $2 * interval '1 minute' WHERE id = $1",
        )
        .bind(id)
        .bind(f64::from(ago_min))
        .execute(&db)
        .await?;
    }

    // Five minutes hold none of them; the replica now keeps a few empty minutes.
    let h5 = history(&t.admin, 5).await?;
    assert_eq!(h5.len(), 5);
    assert_eq!(sums(&h5), (0, 0));

    // Sixty reach further back than what it kept: all four are there.
    let other = Coordinator::start(&t.db.url, &[]).await?;
    let fresh = other.admin().await?;
    let (kept, read) = both(&t.admin, &fresh).await?;
    assert_eq!(kept.len(), 60);
    assert_eq!(sums(&kept), (3, 1));
    assert_eq!(kept, read);
    assert!(kept.iter().any(|m| m.wait_p50_ms == 1_000), "{kept:?}");

    // One more now: the kept minutes and the newly read one add up.
    let id = t.add(Q, "now").await?;
    let leased = t.take("a1", Q).await?;
    assert_eq!(leased.id, id);
    t.complete(&leased).await?;
    let (kept, read) = both(&t.admin, &fresh).await?;
    assert_eq!(sums(&kept), (4, 1));
    assert_eq!(kept, read);
    Ok(())
}
