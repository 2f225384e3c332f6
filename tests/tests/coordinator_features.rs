//! What the seeds' users still missed (issue 14), on the coordinator: a job's own limits and
//! backoff, the soft deadline handed to the agent, waiting for a result without polling, a
//! per-queue rate limit across the replicas, idempotency keys that expire after a window and
//! a `replace` mode, and a job's place in its queue at enqueue. Real PostgreSQL, a real
//! coordinator, real gRPC.

use lanes_proto::v1 as pb;
use lanes_tests::jobs::*;
use std::time::Duration;
use tokio::time::Instant;
use tonic::Code;

const Q: &str = "invoice_import";
const SOON: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_job_can_carry_its_own_limits() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    t.set(Q, |s| s.soft_timeout_ms = Some(60_000)).await?;
    let own = pb::EnqueueRequest {
        max_attempts: Some(1),
        timeout_ms: Some(20_000),
        soft_timeout_ms: Some(5_000),
        backoff_initial_ms: Some(0),
        backoff_max_ms: Some(0),
        ..job(Q, "L", "{}")
    };
    let id = send(&t.client, own).await?.job.expect("job").id;
    let j = t.job(id).await?;
    assert_eq!(
        (j.max_attempts, j.timeout_ms, j.soft_timeout_ms),
        (1, Some(20_000), Some(5_000))
    );
    let l = t.take("a1", Q).await?;
    let at = |t: &Option<prost_types::Timestamp>| t.as_ref().map_or(0, |t| t.seconds);
    assert_eq!(
        at(&l.deadline) - at(&l.soft_deadline),
        15,
        "hard 20 s, soft 5 s"
    );
    // One attempt allowed: a retryable failure fails the job for good.
    let f = t.fail(&l, retryable("boom")).await?;
    assert_eq!(f, pb::JobState::Failed);

    // Without its own limits a job takes its queue's: the queue's soft limit (60 s) here.
    let plain = t.add(Q, "M").await?;
    let l = t.take("a1", Q).await?;
    assert_eq!(l.id, plain);
    assert_eq!(at(&l.deadline) - at(&l.soft_deadline), 600 - 60);

    // Limits that contradict each other are refused, naming the field.
    let bad = pb::EnqueueRequest {
        timeout_ms: Some(5_000),
        soft_timeout_ms: Some(5_000),
        ..job(Q, "L", "{}")
    };
    let e = t
        .client
        .clone()
        .enqueue(bad)
        .await
        .expect_err("soft ≥ hard");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("soft_timeout_ms"), "{}", e.message());
    Ok(())
}

#[tokio::test]
async fn waiting_for_a_result_answers_when_the_job_finishes() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let id = t.add(Q, "L").await?;
    let wait = |secs: i32| {
        let mut c = t.client.clone();
        async move {
            let req = pb::WaitJobRequest {
                id,
                timeout_seconds: secs,
            };
            anyhow::Ok(c.wait_job(req).await?.into_inner().job.expect("job"))
        }
    };
    // Nothing happens: the wait ends at its timeout with the job as it is.
    let started = Instant::now();
    let j = wait(1).await?;
    assert_eq!(j.state, pb::JobState::Pending as i32);
    assert!(started.elapsed() >= Duration::from_millis(900));

    // The job completes while a wait of a minute runs: it answers at once.
    let waiting = tokio::spawn(wait(60));
    let l = t.take("a1", Q).await?;
    tokio::time::sleep(Duration::from_millis(200)).await; // the wait is under way
    let done = Instant::now();
    t.complete(&l).await?;
    let j = tokio::time::timeout(SOON, waiting).await???;
    assert_eq!(j.state, pb::JobState::Completed as i32);
    assert!(
        done.elapsed() < Duration::from_secs(10),
        "woken by the finish, not the timeout"
    );
    // A finished job answers at once.
    assert_eq!(wait(60).await?.state, pb::JobState::Completed as i32);
    let e = t
        .client
        .clone()
        .wait_job(pb::WaitJobRequest {
            id,
            timeout_seconds: 61,
        })
        .await
        .expect_err("at most 60 s");
    assert_eq!(e.code(), Code::InvalidArgument);
    Ok(())
}

#[tokio::test]
async fn a_rate_limit_spaces_the_starts_across_replicas() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let other = lanes_tests::Coordinator::start(&t.db.url, &[]).await?;
    let other_agent = other.agent().await?;
    t.set(Q, |s| {
        s.rate_limit = Some(3);
        s.rate_interval_ms = Some(2_000);
    })
    .await?;
    for _ in 0..7 {
        t.add(Q, "").await?;
    }
    // Both replicas lease as fast as they can: starts are recorded in the database.
    let mut starts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while starts.len() < 7 && Instant::now() < deadline {
        for (agent, id) in [(&t.agent, "a1"), (&other_agent, "b1")] {
            if let Some(j) = lease(agent, id, &[Q]).await? {
                starts.push(Instant::now());
                complete(agent, &j).await?;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(starts.len(), 7, "every job ran");
    // In any 2 s, at most 3 starts (seen from here, a little later than the database).
    for (i, s) in starts.iter().enumerate() {
        let within = starts[i..]
            .iter()
            .filter(|x| x.duration_since(*s) < Duration::from_millis(1_800))
            .count();
        assert!(within <= 3, "{within} starts within 2 s from start {i}");
    }
    assert!(starts[6].duration_since(starts[0]) >= Duration::from_millis(3_500));
    let q = t.stats(Q).await?;
    assert_eq!((q.rate_limit, q.rate_interval_ms), (3, 2_000));
    lanes_tests::assert_lanes_agree(&t.db.url).await
}

#[tokio::test]
async fn idempotency_keys_expire_after_the_window_and_can_replace() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    t.set(Q, |s| s.idempotency_window_s = Some(1)).await?;
    let first = send(&t.client, job(Q, "", r#"{"v":1}"#).key("k")).await?;
    // Within the window: the same job, or with `replace`, the same job with the new payload.
    let again = send(&t.client, job(Q, "", r#"{"v":2}"#).key("k")).await?;
    assert!(!again.created && !again.replaced);
    let swapped = pb::EnqueueRequest {
        replace: true,
        ..job(Q, "", r#"{"v":3}"#).key("k")
    };
    let swapped = send(&t.client, swapped).await?;
    let (a, b) = (first.job.expect("job"), swapped.job.expect("job"));
    assert!(!swapped.created && swapped.replaced);
    assert_eq!((b.id, &*b.payload), (a.id, r#"{"v":3}"#));
    // A running job is not replaced.
    let l = t.take("a1", Q).await?;
    let late = pb::EnqueueRequest {
        replace: true,
        ..job(Q, "", r#"{"v":4}"#).key("k")
    };
    let late = send(&t.client, late).await?;
    assert!(!late.replaced);
    assert_eq!(t.job(a.id).await?.payload, r#"{"v":3}"#);
    t.complete(&l).await?;
    // After the window the key makes a new job.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let later = send(&t.client, job(Q, "", r#"{"v":5}"#).key("k")).await?;
    assert!(later.created);
    assert_ne!(later.job.expect("job").id, a.id);
    lanes_tests::assert_lanes_agree(&t.db.url).await
}

#[tokio::test]
async fn a_burst_gets_its_places_in_the_queue() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    t.add(Q, "").await?;
    let r = t
        .batch((0..6).map(|i| job(Q, &format!("l{i}"), "{}")).collect())
        .await?;
    let places: Vec<i64> = r.iter().map(|e| e.position_in_queue).collect();
    assert_eq!(places, [1, 2, 3, 4, 5, 6]);
    let one = enqueue(&t.client, Q, "", "{}").await?;
    assert_eq!(one.position_in_queue, 7);
    Ok(())
}
