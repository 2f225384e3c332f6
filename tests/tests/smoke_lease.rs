//! The shortest path through the coordinator: enqueue, lease, heartbeat, complete.

use lanes_proto::v1 as pb;
use lanes_tests::{Coordinator, fresh_database};

#[tokio::test]
async fn enqueue_lease_complete() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let coord = Coordinator::start(&db.url, &[]).await?;
    let mut client = coord.client().await?;
    let mut agent = coord.agent().await?;
    let enq = client
        .enqueue(pb::EnqueueRequest {
            queue: "invoice_import".into(),
            lane: "resto-1".into(),
            payload: r#"{"invoice": 1}"#.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(enq.created);
    assert_eq!(enq.position_in_lane, 0);
    let queues = vec!["invoice_import".to_string()];
    let leased = agent
        .lease(pb::LeaseRequest {
            agent_id: "a1".into(),
            queues: queues.clone(),
            request_id: String::new(),
        })
        .await?
        .into_inner()
        .job
        .expect("a job is ready");
    assert_eq!(leased.lane, "resto-1");
    assert_eq!(leased.attempt, 1);
    let hb = agent
        .heartbeat(pb::HeartbeatRequest {
            job_id: leased.id,
            lease_token: leased.lease_token,
            progress_percent: Some(50),
            progress_message: Some("half".into()),
        })
        .await?
        .into_inner();
    assert!(!hb.cancel_requested);
    agent
        .complete(pb::CompleteRequest {
            job_id: leased.id,
            lease_token: leased.lease_token,
            result: r#"{"ok": true}"#.into(),
            ..Default::default()
        })
        .await?;
    let job = client
        .get_job(pb::GetJobRequest { id: leased.id })
        .await?
        .into_inner()
        .job
        .expect("job");
    assert_eq!(job.state, pb::JobState::Completed as i32);
    // The result comes back byte for byte as the agent sent it.
    assert_eq!(job.result, r#"{"ok": true}"#);
    let none = agent
        .lease(pb::LeaseRequest {
            agent_id: "a1".into(),
            queues,
            request_id: String::new(),
        })
        .await?
        .into_inner();
    assert!(none.job.is_none());
    Ok(())
}
