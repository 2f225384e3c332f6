//! A lane row that disagrees with its jobs is reported, never papered over. Here a lane's
//! head is changed behind the coordinator's back (as a bug would): the next Lease fails
//! loudly (INTERNAL, naming the lane) instead of marking the lane running for a job that
//! does not run, `transitions.check()` lists the lane, and `transitions.repair()` puts it
//! right (`transitions.recount()` the counters), after which the lane's next job is leased.

use lanes_tests::jobs::*;
use tonic::Code;

const Q: &str = "invoice_import";

#[tokio::test]
async fn a_lane_that_disagrees_with_its_jobs_is_reported_and_repaired() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let first = t.add(Q, "L").await?;
    let second = t.add(Q, "L").await?;
    let db = sqlx::PgPool::connect(&t.db.url).await?;
    lanes_tests::assert_lanes_agree(&t.db.url).await?;
    sqlx::query("UPDATE jobs SET state = 'cancelled', finished_at = now() WHERE id = $1")
        .bind(first)
        .execute(&db)
        .await?;

    let req = lanes_proto::v1::LeaseRequest {
        agent_id: "a1".into(),
        queues: vec![Q.into()],
        request_id: String::new(),
    };
    let refused = t.agent.clone().lease(req).await;
    let status = refused.expect_err("the lease must not go ahead on a broken lane");
    assert_eq!(status.code(), Code::Internal);
    assert!(
        status.message().contains("not pending"),
        "{}",
        status.message()
    );
    let lane: (String, i64) =
        sqlx::query_as("SELECT state::text, head_job_id FROM lanes WHERE lane_key = 'L'")
            .fetch_one(&db)
            .await?;
    assert_eq!(
        lane,
        ("ready".into(), first),
        "the failed lease changed nothing"
    );
    let reported = lanes_tests::assert_lanes_agree(&t.db.url).await;
    let report = reported.expect_err("check() lists the lane").to_string();
    assert!(report.contains("invoice_import/L"), "{report}");

    // The lane from its jobs, then the counters the corruption also skewed.
    sqlx::query("SELECT transitions.repair($1, 'L'), transitions.recount($1)")
        .bind(Q)
        .execute(&db)
        .await?;
    lanes_tests::assert_lanes_agree(&t.db.url).await?;
    let next = t.take("a1", Q).await?;
    assert_eq!(next.id, second);
    Ok(())
}
