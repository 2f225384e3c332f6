//! Queue settings out of range can no longer break a replica (issue #12, item 8). Once, a
//! `job_timeout_ms` of i64::MAX, backoffs of 1e16 ms or a retention of 1e12 s were stored,
//! and then every Lease, Fail or retention pass of the queue failed on an interval overflow.
//! Each is now refused by AdminService.SetQueueSettings with INVALID_ARGUMENT naming the
//! setting, changes nothing, and Lease, Fail, a retry and a retention pass work afterwards.

use lanes_proto::v1 as pb;
use lanes_tests::jobs::{self, Setup, code, eventually, retryable};
use std::time::Duration;
use tonic::{Code, Status};

const Q: &str = "invoice_import";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_settings_are_refused_and_the_queue_keeps_working() -> anyhow::Result<()> {
    // A retention pass every second, so the last step need not wait long.
    let t = Setup::start(&["--retention-interval-s", "1"]).await?;
    let sane = pb::SetQueueSettingsRequest {
        backoff_initial_ms: Some(100),
        backoff_max_ms: Some(200),
        retention_completed_s: Some(0),
        ..Default::default()
    };
    let before = jobs::set_settings(&t.admin, Q, sane).await?;

    let absurd: [(&str, pb::SetQueueSettingsRequest); 5] = [
        (
            "job_timeout_ms",
            pb::SetQueueSettingsRequest {
                job_timeout_ms: Some(i64::MAX),
                ..Default::default()
            },
        ),
        (
            "backoff_initial_ms",
            pb::SetQueueSettingsRequest {
                backoff_initial_ms: Some(10_000_000_000_000_000),
                ..Default::default()
            },
        ),
        (
            "backoff_max_ms",
            pb::SetQueueSettingsRequest {
                backoff_max_ms: Some(10_000_000_000_000_000),
                ..Default::default()
            },
        ),
        (
            "retention_completed_s",
            pb::SetQueueSettingsRequest {
                retention_completed_s: Some(1_000_000_000_000),
                ..Default::default()
            },
        ),
        (
            "retention_failed_s",
            pb::SetQueueSettingsRequest {
                retention_failed_s: Some(1_000_000_000_000),
                ..Default::default()
            },
        ),
    ];
    for (setting, edit) in absurd {
        let req = pb::SetQueueSettingsRequest {
            queue: Q.into(),
            ..edit
        };
        let refused: Status = match t.admin.clone().set_queue_settings(req).await {
            Ok(r) => panic!("{setting}: accepted: {:?}", r.into_inner()),
            Err(s) => s,
        };
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{setting}: {refused:?}"
        );
        assert!(
            refused.message().contains(setting),
            "{setting}: the message names it: {}",
            refused.message()
        );
        let field = refused.metadata().get(lanes_proto::FIELD_METADATA);
        assert_eq!(
            field.and_then(|v| v.to_str().ok()),
            Some(setting),
            "{setting}: the field is named for the gateway's 422"
        );
        let now = t
            .admin
            .clone()
            .get_queue_settings(pb::GetQueueSettingsRequest { queue: Q.into() })
            .await?
            .into_inner();
        assert_eq!(now, before, "{setting}: nothing changed");
    }

    // The queue still works: Lease (its deadline from job_timeout_ms), Fail (its backoff),
    // the retry's Lease, Complete, and a retention pass (retention_completed_s) that
    // deletes the finished job.
    let id = jobs::enqueue_id(&t.client, Q, "resto-1").await?;
    let first = t.take("agent-1", Q).await?;
    assert_eq!(first.id, id);
    assert!(first.deadline.is_some(), "a deadline from job_timeout_ms");
    let failed = t.fail(&first, retryable("try again")).await?;
    assert_eq!(failed, pb::JobState::Pending, "backing off for 100 ms");
    let wait = Duration::from_secs(30);
    let again = jobs::lease_within(&t.agent, "agent-1", &[Q], wait).await?;
    assert_eq!((again.id, again.attempt), (id, 2));
    t.complete(&again).await?;
    let gone = eventually(wait, "retention to delete the completed job", async || {
        let r = t.client.clone().get_job(pb::GetJobRequest { id }).await;
        Ok(match r {
            Err(s) if s.code() == Code::NotFound => Some(()),
            _ => None,
        })
    })
    .await;
    assert!(gone.is_ok(), "{gone:?}\n{}", t.log_tail(30));
    let log = t.log_tail(10_000);
    assert!(!log.contains("retention pass failed"), "{log}");
    assert_eq!(
        code(t.client.clone().get_job(pb::GetJobRequest { id }).await),
        Code::NotFound
    );
    Ok(())
}
