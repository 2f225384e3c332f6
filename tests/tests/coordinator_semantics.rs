//! The coordinator's semantics as users rely on them (DESIGN.md, "Semantics"): idempotent
//! enqueue, lane FIFO and exclusivity, retries and backoff, failure policies, fencing tokens,
//! lease expiry, cancellation, delays, priorities, fairness, pause and limits, stats and
//! listing, and waking idle agents. Real PostgreSQL, a real coordinator process, real gRPC.

use lanes_proto::v1 as pb;
use lanes_tests::jobs::*;
use pb::JobState::{Cancelled, Completed, Failed, Pending, Running, Unspecified as Any};
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::Instant;
use tonic::Code;

const Q: &str = "invoice_import";
const SOON: Duration = Duration::from_secs(10);
const STALE: Code = Code::FailedPrecondition;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test]
async fn idempotent_enqueue_returns_the_existing_job() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let first = send(&t.client, job(Q, "resto-1", r#"{"n":1}"#).key("inv-1")).await?;
    let again = send(&t.client, job(Q, "resto-1", r#"{"n":2}"#).key("inv-1")).await?;
    let (a, b) = (first.job.expect("job"), again.job.expect("job"));
    assert!(first.created && !again.created);
    // The existing job comes back unchanged.
    assert_eq!((b.id, &*b.payload), (a.id, r#"{"n":1}"#));
    assert_eq!(again.position_in_lane, 0);
    // The key is scoped to its queue.
    let elsewhere = send(&t.client, job("pdf", "resto-1", "{}").key("inv-1")).await?;
    assert!(elsewhere.created);
    assert_ne!(elsewhere.job.expect("job").id, a.id);

    // A batch repeating a key inside itself, plus a key used before the batch.
    let r = t
        .batch(vec![
            job(Q, "resto-2", r#"{"n":3}"#).key("inv-2"),
            job(Q, "resto-2", r#"{"n":4}"#).key("inv-2"),
            job(Q, "resto-2", r#"{"n":5}"#),
            job(Q, "resto-1", "{}").key("inv-1"),
        ])
        .await?;
    let id = |i: usize| r[i].job.as_ref().expect("job").id;
    let created: Vec<bool> = r.iter().map(|e| e.created).collect();
    assert_eq!(created, [true, false, true, false]);
    assert_eq!((id(1), id(3)), (id(0), a.id));
    assert_eq!((r[0].position_in_lane, r[2].position_in_lane), (0, 1));
    assert_eq!(t.ids("", "resto-2", Any).await?.len(), 2);
    // Each lane holds exactly its new jobs, in order.
    for want in [a.id, id(0), id(2)] {
        let l = t.take("a1", Q).await?;
        assert_eq!(l.id, want);
        t.complete(&l).await?;
    }
    assert!(t.lease("a1", Q).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn a_lane_runs_its_jobs_in_order_one_at_a_time() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let mut a = Vec::new();
    for n in 0..3 {
        let e = enqueue(&t.client, Q, "A", "{}").await?;
        assert_eq!(e.position_in_lane, n);
        a.push(e.job.expect("job").id);
    }
    let b = t.add(Q, "B").await?;
    let first = t.take("a1", Q).await?;
    assert_eq!(first.id, a[0]);
    // Lane B runs in parallel; A's other jobs wait for its head.
    assert_eq!(t.take("a2", Q).await?.id, b);
    assert!(t.lease("a3", Q).await?.is_none());
    let pos = t
        .client
        .clone()
        .get_job(pb::GetJobRequest { id: a[2] })
        .await?;
    assert_eq!(pos.into_inner().position_in_lane, 2);
    t.complete(&first).await?;
    for &want in &a[1..] {
        let l = t.take("a3", Q).await?;
        assert_eq!(l.id, want);
        assert!(t.lease("a4", Q).await?.is_none());
        t.complete(&l).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_job_waiting_for_its_retry_stays_the_lane_head() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let (j1, j2) = (t.add(Q, "L").await?, t.add(Q, "L").await?);
    let l = t.take("a1", Q).await?;
    let start = Instant::now();
    assert_eq!(t.fail(&l, retry_after(300)).await?, Pending);
    // Job 2 must not overtake job 1 during the backoff: job 1 runs again first.
    let again = lease_not_before(&t.agent, "a2", &[Q], start + ms(290), SOON).await?;
    assert_eq!((again.id, again.attempt), (j1, 2));
    assert!(again.lease_token > l.lease_token);
    t.complete(&again).await?;
    let next = t.take("a2", Q).await?;
    assert_eq!((next.id, next.attempt), (j2, 1));
    Ok(())
}

#[tokio::test]
async fn backoff_delays_the_retry() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    t.set(Q, |s| s.backoff_initial_ms = Some(400)).await?;
    let id = t.add(Q, "").await?;
    let l = t.take("a1", Q).await?;
    let start = Instant::now();
    t.fail(&l, retryable("timeout")).await?;
    // 400 ms with ±20 % jitter: never before 320 ms.
    let again = lease_not_before(&t.agent, "a1", &[Q], start + ms(300), SOON).await?;
    assert_eq!((again.id, again.attempt), (id, 2));
    Ok(())
}

/// Each transition sets every field it owns: a new attempt starts with no progress, and a
/// completed job shows its result with 100 %, no leftover message and no earlier attempt's
/// error.
#[tokio::test]
async fn a_job_carries_no_stale_fields_from_earlier_attempts() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    t.set(Q, |s| s.backoff_initial_ms = Some(0)).await?;
    let id = t.add(Q, "L").await?;
    let first = t.take("a1", Q).await?;
    heartbeat(&t.agent, &first, Some(33)).await?;
    let j = t.job(id).await?;
    assert_eq!(
        (j.progress_percent, &*j.progress_message),
        (33, "33 % done")
    );
    t.fail(&first, retryable("boom")).await?;
    let second = t.take("a1", Q).await?;
    let j = t.job(id).await?;
    assert_eq!(
        (j.attempt, &*j.last_error),
        (2, "boom"),
        "the last error shows while it retries"
    );
    assert_eq!(
        (j.progress_percent, &*j.progress_message),
        (0, ""),
        "a new attempt, no progress yet"
    );
    heartbeat(&t.agent, &second, Some(66)).await?;
    t.complete(&second).await?;
    let j = t.job(id).await?;
    assert_eq!(j.state(), Completed);
    assert_eq!(
        j.last_error, "",
        "completed: no error from an earlier attempt"
    );
    assert_eq!(
        (j.progress_percent, &*j.progress_message),
        (100, ""),
        "no leftover message"
    );
    Ok(())
}

#[tokio::test]
async fn attempts_run_out_and_the_job_fails_with_its_last_error() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    t.set(Q, |s| s.max_attempts = Some(2)).await?;
    t.set(Q, |s| s.backoff_initial_ms = Some(50)).await?;
    let id = t.add(Q, "L").await?;
    let l = t.take("a1", Q).await?;
    assert_eq!(t.fail(&l, retryable("boom 1")).await?, Pending);
    let l = lease_within(&t.agent, "a1", &[Q], SOON).await?;
    assert_eq!((l.id, l.attempt, l.max_attempts), (id, 2, 2));
    assert_eq!(t.fail(&l, retryable("boom 2")).await?, Failed);
    let j = t.job(id).await?;
    assert_eq!(
        (j.state(), j.attempt, &*j.last_error),
        (Failed, 2, "boom 2")
    );
    assert!(j.finished_at.is_some());
    assert!(t.lease("a1", Q).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn permanent_failures_fail_at_once_and_continue_the_lane() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let (j1, j2) = (t.add(Q, "L").await?, t.add(Q, "L").await?);
    let l = t.take("a1", Q).await?;
    assert_eq!(t.fail(&l, permanent("rejected")).await?, Failed);
    let j = t.job(j1).await?;
    assert_eq!(
        (j.state(), j.attempt, &*j.last_error),
        (Failed, 1, "rejected")
    );
    // The default policy, continue: the next invoice proceeds.
    assert_eq!(t.take("a1", Q).await?.id, j2);
    assert_eq!(t.stats(Q).await?.blocked_lanes, 0);
    Ok(())
}

#[tokio::test]
async fn block_policy_stops_the_lane_until_an_operator_acts() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    t.set(Q, |s| s.max_attempts = Some(1)).await?;
    t.set(Q, |s| {
        s.failure_policy = Some(pb::FailurePolicy::Block as i32)
    })
    .await?;
    let mut lanes = Vec::new();
    for lane in ["L1", "L2", "L3"] {
        lanes.push([t.add(Q, lane).await?, t.add(Q, lane).await?]);
    }
    for [head, _] in &lanes {
        let l = t.take("a1", Q).await?;
        assert_eq!(l.id, *head);
        assert_eq!(t.fail(&l, retryable("ledger")).await?, Failed);
    }
    assert_eq!(t.stats(Q).await?.blocked_lanes, 3);
    assert_nothing_leasable(&t.agent, "a1", &[Q], ms(300)).await?;
    let blocked = lanes[1][0];

    // (a) RetryJob: the failed head runs again first, then the rest of the lane.
    let retried = t.retry(lanes[0][0]).await?;
    assert_eq!((retried.state(), retried.attempt), (Pending, 0));
    for want in lanes[0] {
        let l = t.take("a1", Q).await?;
        assert_eq!((l.id, l.attempt), (want, 1));
        t.complete(&l).await?;
    }
    assert_eq!(t.stats(Q).await?.blocked_lanes, 2);

    // (b) UnblockLane: the lane moves on (later enqueues too); its failed head stays failed.
    let j3 = t.add(Q, "L2").await?;
    assert_nothing_leasable(&t.agent, "a1", &[Q], ms(200)).await?;
    assert_eq!(t.unblock(Q, "L2").await?, blocked);
    for want in [lanes[1][1], j3] {
        let l = t.take("a1", Q).await?;
        assert_eq!(l.id, want);
        t.complete(&l).await?;
    }
    assert_eq!(t.state(blocked).await?, Failed);
    assert_eq!(code(t.unblock(Q, "L2").await), STALE);

    // (c) A retried head that fails again blocks its lane again; purge keeps that head.
    let [head, next] = lanes[2];
    t.retry(head).await?;
    let l = t.take("a1", Q).await?;
    assert_eq!(l.id, head);
    t.fail(&l, permanent("again")).await?;
    assert_eq!(t.stats(Q).await?.blocked_lanes, 1);
    assert_nothing_leasable(&t.agent, "a1", &[Q], ms(200)).await?;
    t.purge(Q, 0).await?;
    assert_eq!(t.state(head).await?, Failed);
    t.retry(head).await?;
    for want in [head, next] {
        let l = t.take("a1", Q).await?;
        assert_eq!(l.id, want);
        t.complete(&l).await?;
    }
    assert_eq!(t.stats(Q).await?.blocked_lanes, 0);

    // (d) CancelJob on the failed head: it ends cancelled and the lane moves on.
    let [head, next] = [t.add(Q, "L4").await?, t.add(Q, "L4").await?];
    let l = t.take("a1", Q).await?;
    assert_eq!(l.id, head);
    t.fail(&l, permanent("bad ledger line")).await?;
    assert_eq!(t.stats(Q).await?.blocked_lanes, 1);
    assert_eq!(t.cancel(head).await?.state(), Cancelled);
    assert_eq!(t.stats(Q).await?.blocked_lanes, 0);
    let l = t.take("a1", Q).await?;
    assert_eq!(l.id, next);
    t.complete(&l).await?;
    Ok(())
}

#[tokio::test]
async fn stale_tokens_are_rejected_and_change_nothing() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let id = t.add(Q, "L").await?;
    let l = t.take("a1", Q).await?;
    let wrong = pb::LeasedJob {
        lease_token: l.lease_token + 1000,
        ..l.clone()
    };
    assert_eq!(code(t.complete(&wrong).await), STALE);
    assert_eq!(code(t.fail(&wrong, retryable("x")).await), STALE);
    assert_eq!(code(heartbeat(&t.agent, &wrong, Some(50)).await), STALE);
    let j = t.job(id).await?;
    assert_eq!((j.state(), j.attempt, j.progress_percent), (Running, 1, 0));
    assert_eq!(j.last_error, "");
    let unknown = pb::LeasedJob {
        id: id + 1_000_000,
        ..l.clone()
    };
    assert_eq!(code(t.complete(&unknown).await), Code::NotFound);
    assert_eq!(code(t.fail(&unknown, retryable("x")).await), Code::NotFound);
    assert_eq!(
        code(heartbeat(&t.agent, &unknown, None).await),
        Code::NotFound
    );
    // Completion is exactly-once: the holder completes; its repeat (a lost reply) is
    // answered as the first was and changes nothing; a late Fail is stale.
    t.complete(&l).await?;
    let first = t.job(id).await?;
    t.complete(&l).await?;
    assert_eq!(code(t.fail(&l, retryable("late")).await), STALE);
    let after = t.job(id).await?;
    assert_eq!(t.state(id).await?, Completed);
    assert_eq!(
        (after.finished_at, after.result, after.attempt),
        (first.finished_at, first.result, first.attempt)
    );
    Ok(())
}

#[tokio::test]
async fn an_abandoned_lease_expires_and_the_job_runs_again() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    t.set(Q, |s| s.lease_ttl_ms = Some(1000)).await?;
    t.set(Q, |s| s.backoff_initial_ms = Some(200)).await?;
    let id = t.add(Q, "L").await?;
    let start = Instant::now();
    let old = t.take("dead-agent", Q).await?;
    let new = lease_not_before(&t.agent, "a2", &[Q], start + ms(1000), SOON).await?;
    assert_eq!((new.id, new.attempt), (id, 2));
    assert!(new.lease_token > old.lease_token, "fencing tokens increase");
    assert!(t.job(id).await?.last_error.contains("lease expired"));
    assert_eq!(code(t.complete(&old).await), STALE);
    assert_eq!(code(heartbeat(&t.agent, &old, None).await), STALE);
    t.complete(&new).await?;
    assert_eq!(t.state(id).await?, Completed);
    Ok(())
}

#[tokio::test]
async fn heartbeats_keep_the_lease() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    t.set(Q, |s| s.lease_ttl_ms = Some(1000)).await?;
    let id = t.add(Q, "L").await?;
    let l = t.take("a1", Q).await?;
    let until = Instant::now() + ms(2500);
    let beats = async {
        let mut last = None;
        while Instant::now() < until {
            tokio::time::sleep(ms(300)).await;
            let hb = heartbeat(&t.agent, &l, Some(40)).await?;
            let expires = hb.lease_expires_at.expect("expiry").seconds;
            assert!(!hb.cancel_requested && last.is_none_or(|t| expires >= t));
            last = Some(expires);
        }
        anyhow::Ok(())
    };
    let others = assert_nothing_leasable(&t.agent, "a2", &[Q], ms(2500));
    let (beats, others) = tokio::join!(beats, others);
    beats?;
    others?;
    assert_eq!(t.job(id).await?.progress_percent, 40);
    t.complete(&l).await?;
    assert_eq!(t.job(id).await?.attempt, 1);
    Ok(())
}

#[tokio::test]
async fn cancellation_of_pending_running_and_finished_jobs() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let ids = [
        t.add(Q, "L").await?,
        t.add(Q, "L").await?,
        t.add(Q, "L").await?,
    ];
    assert_eq!(t.cancel(ids[0]).await?.state(), Cancelled);
    // The lane's next job becomes its head.
    let l = t.take("a1", Q).await?;
    assert_eq!(l.id, ids[1]);
    let flagged = t.cancel(ids[1]).await?;
    assert_eq!((flagged.state(), flagged.cancel_requested), (Running, true));
    assert!(heartbeat(&t.agent, &l, None).await?.cancel_requested);
    assert_eq!(t.fail(&l, cancelled()).await?, Cancelled);
    assert_eq!(t.state(ids[1]).await?, Cancelled);
    let l = t.take("a1", Q).await?;
    assert_eq!(l.id, ids[2]);
    t.complete(&l).await?;
    assert_eq!(code(t.cancel(ids[2]).await), STALE);
    assert_eq!(code(t.cancel(ids[0]).await), STALE);
    assert_eq!(code(t.cancel(ids[2] + 1_000_000).await), Code::NotFound);
    // A flagged job its agent hands back (shutting down) is cancelled, not run again.
    let id = t.add(Q, "L").await?;
    let l = t.take("a1", Q).await?;
    t.cancel(id).await?;
    assert_eq!(t.fail(&l, release()).await?, Cancelled);
    assert!(t.lease("a2", Q).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn a_released_job_keeps_its_attempt_and_its_place() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    t.set(Q, |s| s.max_attempts = Some(1)).await?;
    let (j1, j2) = (t.add(Q, "L").await?, t.add(Q, "L").await?);
    let l = t.take("a1", Q).await?;
    assert_eq!(t.fail(&l, release()).await?, Pending);
    // At once, still the lane's head, and the release did not count as an attempt.
    let again = t.take("a2", Q).await?;
    assert_eq!((again.id, again.attempt), (j1, 1));
    t.complete(&again).await?;
    assert_eq!(t.take("a2", Q).await?.id, j2);
    Ok(())
}

#[tokio::test]
async fn delayed_jobs_wait_for_their_time() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let start = Instant::now();
    let at = std::time::SystemTime::now() + ms(1500);
    let j1 = t.add_req(job(Q, "L", "{}").delay(1)).await?;
    let j2 = t.add(Q, "L").await?;
    let u = t.add_req(job("pdf", "", "{}").at(at)).await?;
    // The delayed head holds its lane: job 2 waits behind it.
    let first = lease_not_before(&t.agent, "a1", &[Q], start + ms(1000), SOON).await?;
    assert_eq!(first.id, j1);
    t.complete(&first).await?;
    assert_eq!(t.take("a1", Q).await?.id, j2);
    let later = lease_not_before(&t.agent, "a1", &["pdf"], start + ms(1500), SOON).await?;
    assert_eq!(later.id, u);
    Ok(())
}

#[tokio::test]
async fn higher_priority_runs_first_but_never_reorders_a_lane() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let mut ids = Vec::new();
    for p in [-10, 0, 10] {
        ids.push(t.add_req(job("pdf", "", "{}").priority(p)).await?);
    }
    for want in [ids[2], ids[1], ids[0]] {
        assert_eq!(t.take("a1", "pdf").await?.id, want);
    }
    let low = t.add_req(job(Q, "first", "{}")).await?;
    let low_next = t.add_req(job(Q, "first", "{}").priority(10)).await?;
    let high = t.add_req(job(Q, "urgent", "{}").priority(10)).await?;
    let order = [high, low, low_next];
    for want in order {
        let l = t.take("a2", Q).await?;
        assert_eq!(l.id, want, "lease order must be {order:?}");
        t.complete(&l).await?;
    }
    Ok(())
}

/// A queue holding unkeyed jobs and lanes at once keeps one priority order across both,
/// whichever kind is left (take() goes straight to the lanes of a queue with no unkeyed job).
#[tokio::test]
async fn unkeyed_jobs_and_lanes_of_one_queue_share_one_order() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let u0 = t.add_req(job(Q, "", "{}")).await?;
    let lane_high = t.add_req(job(Q, "l1", "{}").priority(10)).await?;
    let u5 = t.add_req(job(Q, "", "{}").priority(5)).await?;
    let lane_next = t.add_req(job(Q, "l1", "{}")).await?;
    let lane_low = t.add_req(job(Q, "l2", "{}").priority(-5)).await?;
    // lane_next is ready only once lane_high completes, after u0 was enqueued: u0 first.
    let order = [lane_high, u5, u0, lane_next, lane_low];
    for want in order {
        let l = t.take("a1", Q).await?;
        assert_eq!(l.id, want, "lease order must be {order:?}");
        t.complete(&l).await?;
    }
    Ok(())
}

#[tokio::test]
async fn unkeyed_jobs_run_in_parallel() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let mut want = HashSet::new();
    for _ in 0..5 {
        want.insert(t.add(Q, "").await?);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..5 {
        let agent = t.agent.clone();
        tasks.spawn(async move { lease(&agent, &format!("a{n}"), &[Q]).await });
    }
    let mut got = HashSet::new();
    while let Some(r) = tasks.join_next().await {
        got.insert(r??.expect("each agent gets a job").id);
    }
    assert_eq!(got, want);
    assert_eq!(t.stats(Q).await?.counts.expect("counts").running, 5);
    Ok(())
}

/// One lane with 1,000 queued jobs, then 50 lanes with one job each: the lease order of one
/// agent completing each job at once (with `hand_off`, leasing through Complete's
/// `lease_next`), and the ids of the 50 small lanes' jobs.
async fn drain_behind_a_hot_lane(
    t: &Setup,
    queue: &str,
    hand_off: bool,
) -> anyhow::Result<(Vec<pb::LeasedJob>, HashSet<i64>)> {
    t.batch(
        (0..1000)
            .map(|n| job(queue, "hot", &format!("{{\"n\":{n}}}")))
            .collect(),
    )
    .await?;
    let small = t.batch(
        (0..50)
            .map(|n| job(queue, &format!("s{n}"), "{}"))
            .collect(),
    );
    let small = small
        .await?
        .iter()
        .map(|r| r.job.as_ref().expect("job").id)
        .collect();
    let mut order = vec![t.take("a1", queue).await?];
    while order.len() < 80 {
        let last = order.last().expect("one lease");
        let req = pb::CompleteRequest {
            job_id: last.id,
            lease_token: last.lease_token,
            lease_next: hand_off,
            agent_id: "a1".into(),
            queues: vec![queue.into()],
            ..Default::default()
        };
        let next = t.agent.clone().complete(req).await?.into_inner().next;
        let next = if hand_off {
            next
        } else {
            t.lease("a1", queue).await?
        };
        order.push(next.expect("work is ready"));
    }
    Ok((order, small))
}

#[tokio::test]
async fn a_long_lane_does_not_starve_short_ones() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    for (queue, hand_off) in [(Q, false), ("pdf", true)] {
        let (order, small) = drain_behind_a_hot_lane(&t, queue, hand_off).await?;
        let early = order[..60].iter().filter(|l| small.contains(&l.id)).count();
        assert_eq!(
            early, 50,
            "small lanes in the first 60 leases (hand-off {hand_off})"
        );
        let hot: Vec<i64> = order
            .iter()
            .filter(|l| l.lane == "hot")
            .map(|l| l.id)
            .collect();
        assert!(
            hot.windows(2).all(|w| w[0] < w[1]),
            "the hot lane stays FIFO"
        );
        // Alone, the hot lane goes on job after job (with hand-off: without a poll).
        assert!(order[60..].iter().all(|l| l.lane == "hot"));
    }
    Ok(())
}

#[tokio::test]
async fn a_paused_queue_accepts_jobs_but_leases_none() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let mut ids = HashSet::from([t.add(Q, "L").await?, t.add(Q, "L").await?]);
    let running = t.take("a1", Q).await?;
    ids.remove(&running.id);
    let mut admin = t.admin.clone();
    let pause = admin.pause_queue(pb::PauseQueueRequest { queue: Q.into() });
    assert!(pause.await?.into_inner().paused);
    ids.insert(t.add(Q, "").await?);
    t.complete(&running).await?;
    assert!(t.stats(Q).await?.paused);
    assert_nothing_leasable(&t.agent, "a1", &[Q], ms(400)).await?;
    let resume = admin.resume_queue(pb::ResumeQueueRequest { queue: Q.into() });
    assert!(!resume.await?.into_inner().paused);
    let got = HashSet::from([t.take("b1", Q).await?.id, t.take("b2", Q).await?.id]);
    assert_eq!(got, ids);
    Ok(())
}

#[tokio::test]
async fn max_pending_rejects_whole_enqueues() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    t.set(Q, |s| s.max_pending = Some(3)).await?;
    let first = t.add_req(job(Q, "", "{}").key("inv-1")).await?;
    for _ in 0..2 {
        t.add(Q, "").await?;
    }
    let fourth = t.client.clone().enqueue(job(Q, "", "{}")).await;
    assert_eq!(code(fourth), Code::ResourceExhausted);
    assert_eq!(t.ids(Q, "", Any).await?.len(), 3);
    // A retried enqueue adds nothing: it still gets its job back.
    let retried = send(&t.client, job(Q, "", "{}").key("inv-1")).await?;
    assert_eq!(
        (retried.created, retried.job.expect("job").id),
        (false, first)
    );
    let l = t.take("a1", Q).await?;
    t.complete(&l).await?;
    // Two pending now: a batch adding two more is rejected whole, other queues included.
    let jobs = vec![job("pdf", "", "{}"), job(Q, "x", "{}"), job(Q, "", "{}")];
    assert_eq!(code(t.batch(jobs).await), Code::ResourceExhausted);
    assert_eq!(t.ids(Q, "", Any).await?.len(), 3);
    assert_eq!(t.ids("pdf", "", Any).await?.len(), 0);
    t.add(Q, "").await?;
    t.set(Q, |s| s.max_pending = Some(0)).await?;
    t.add(Q, "").await?;
    Ok(())
}

#[tokio::test]
async fn max_running_caps_concurrent_jobs() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    t.set(Q, |s| s.max_running = Some(1)).await?;
    for _ in 0..3 {
        t.add(Q, "").await?;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..4 {
        let agent = t.agent.clone();
        tasks.spawn(async move { lease(&agent, &format!("a{n}"), &[Q]).await });
    }
    let mut got = Vec::new();
    while let Some(r) = tasks.join_next().await {
        got.extend(r??);
    }
    assert_eq!(got.len(), 1, "one job runs at a time");
    assert!(t.lease("b", Q).await?.is_none());
    t.complete(&got[0]).await?;
    assert!(t.lease("b", Q).await?.is_some());
    Ok(())
}

#[tokio::test]
async fn stats_are_exact_and_purge_keeps_unfinished_jobs() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(t.add(Q, "").await?);
    }
    t.add("pdf", "").await?;
    for n in 0..3 {
        let l = t.take("a1", Q).await?;
        if n == 2 {
            t.fail(&l, permanent("bad")).await?;
        } else {
            t.complete(&l).await?;
        }
    }
    t.cancel(ids[7]).await?;
    let running = t.take("a1", Q).await?;
    let counts = |pending, running, completed, failed, cancelled| {
        let ready = pending;
        Some(pb::StateCounts {
            pending,
            running,
            completed,
            failed,
            cancelled,
            ready,
        })
    };
    let s = t.stats(Q).await?;
    assert_eq!(s.counts, counts(3, 1, 2, 1, 1));
    assert_eq!((s.active_lanes, s.blocked_lanes, s.paused), (0, 0, false));
    let all = t
        .client
        .clone()
        .get_stats(pb::GetStatsRequest::default())
        .await?;
    assert_eq!(all.into_inner().totals, counts(4, 1, 2, 1, 1));
    assert_eq!(t.purge("", 1).await?, 0, "all are younger than an hour");
    assert_eq!(t.purge("", 0).await?, 4);
    assert_eq!(t.stats(Q).await?.counts, counts(3, 1, 0, 0, 0));
    t.complete(&running).await?;
    Ok(())
}

#[tokio::test]
async fn list_jobs_filters_and_pages_without_gaps() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let (mut a, mut all) = (Vec::new(), Vec::new());
    for n in 0..10 {
        let lane = ["A", "B", ""][n % 3];
        all.insert(0, t.add(Q, lane).await?);
        if lane == "A" {
            a.insert(0, all[0]);
        }
        if n < 4 {
            t.add("pdf", "A").await?;
        }
    }
    let running = t.take("a1", Q).await?.id;
    // Newest first.
    assert_eq!(t.ids(Q, "", Any).await?, all);
    assert_eq!(t.ids(Q, "A", Any).await?, a);
    assert_eq!(t.ids("", "A", Any).await?.len(), a.len() + 4);
    assert_eq!(t.ids(Q, "", Running).await?, [running]);
    assert_eq!(t.ids(Q, "", Pending).await?.len(), 9);
    for page_size in [3, 5, 10] {
        let (mut seen, mut page_token) = (Vec::new(), 0);
        loop {
            let page = pb::ListJobsRequest {
                page_size,
                page_token,
                ..filter(Q, "", Any)
            };
            let page = t.client.clone().list_jobs(page).await?.into_inner();
            assert!(page.jobs.len() <= page_size as usize);
            seen.extend(page.jobs.iter().map(|j| j.id));
            page_token = page.next_page_token;
            if page_token == 0 {
                break;
            }
        }
        assert_eq!(seen, all, "page size {page_size}");
    }
    Ok(())
}

/// Enqueues three jobs due in a second (so the enqueue wakes nobody) and waits until they
/// are ready (the promoter then wakes an asleep agent, reason "tick").
async fn three_jobs_ready_in_a_second(t: &Setup, queue: &str) -> anyhow::Result<()> {
    for _ in 0..3 {
        t.add_req(job(queue, "", "{}").delay(1)).await?;
    }
    let ready = async || {
        let c = t.stats(queue).await?.counts.expect("counts");
        anyhow::Ok((c.ready == 3).then_some(()))
    };
    eventually(SOON, "three ready jobs", ready).await
}

#[tokio::test]
async fn wake_wakes_asleep_agents_only_and_no_more_than_asked() -> anyhow::Result<()> {
    let t = Setup::slow_tick().await?;
    let wake = async |queue: &str, max_agents: i32| {
        let (queue, requested_by) = (queue.into(), "n8n".into());
        let req = pb::WakeRequest {
            queue,
            max_agents,
            requested_by,
        };
        let r = t.client.clone().wake(req).await?.into_inner();
        anyhow::Ok((
            r.ready_jobs,
            r.agents_woken,
            r.agents_connected,
            r.agents_busy,
        ))
    };
    let mut x = Wakes::open(&t.agent, "x", &[Q]).await?;
    assert!(t.lease("x", Q).await?.is_none(), "x is now asleep");
    // (ready jobs, woken, connected, busy)
    assert_eq!(wake(Q, 0).await?, (0, 0, 1, 0));
    assert!(x.next(ms(300)).await?.is_none());
    three_jobs_ready_in_a_second(&t, Q).await?;
    // Jobs falling due wake an asleep agent by themselves (the promoter)…
    let e = x
        .next(SOON)
        .await?
        .expect("x is woken as the jobs fall due");
    assert_eq!((&*e.queue, &*e.reason), (Q, "tick"));
    // …so x goes back to sleep (a Lease of a queue with nothing ready) to be woken by Wake.
    assert!(t.lease("x", "elsewhere").await?.is_none());
    assert_eq!(wake(Q, 0).await?, (3, 1, 1, 0));
    let e = x.next(ms(2000)).await?.expect("x is woken");
    assert_eq!((&*e.queue, &*e.reason), (Q, "wake"));
    // An awake agent is not disturbed.
    assert_eq!(wake(Q, 0).await?, (3, 0, 1, 1));
    assert!(x.next(ms(300)).await?.is_none());

    let mut y = Wakes::open(&t.agent, "y", &["pdf"]).await?;
    let mut z = Wakes::open(&t.agent, "z", &["pdf"]).await?;
    for id in ["y", "z"] {
        assert!(t.lease(id, "pdf").await?.is_none());
    }
    three_jobs_ready_in_a_second(&t, "pdf").await?;
    for (id, w) in [("y", &mut y), ("z", &mut z)] {
        let e = w.next(SOON).await?.expect("woken as the jobs fall due");
        assert_eq!(e.reason, "tick", "{id}");
        assert!(t.lease(id, "elsewhere").await?.is_none());
    }
    assert_eq!(wake("pdf", 1).await?, (3, 1, 2, 0));
    let (ey, ez) = tokio::join!(y.next(ms(1500)), z.next(ms(1500)));
    let (ey, ez) = (ey?, ez?);
    assert!(ey.is_some() != ez.is_some(), "one woken: {ey:?} {ez:?}");
    assert_eq!(wake("pdf", 0).await?.1, 1, "then the other one");
    let other = if ey.is_some() { &mut z } else { &mut y };
    assert_eq!(other.next(ms(2000)).await?.expect("woken").reason, "wake");
    // An agent whose stream closes no longer counts as connected.
    drop((x, y));
    let connected = async || {
        let s = t
            .client
            .clone()
            .get_stats(pb::GetStatsRequest::default())
            .await?;
        anyhow::Ok((s.into_inner().agents_connected == 1).then_some(()))
    };
    eventually(SOON, "x and y to disconnect", connected).await
}

#[tokio::test]
async fn an_enqueue_wakes_one_idle_agent_and_never_a_busy_one() -> anyhow::Result<()> {
    let t = Setup::slow_tick().await?;
    let mut busy = Wakes::open(&t.agent, "busy", &[Q]).await?;
    let mut idle1 = Wakes::open(&t.agent, "idle-1", &[Q]).await?;
    let mut idle2 = Wakes::open(&t.agent, "idle-2", &[Q]).await?;
    t.add(Q, "L").await?;
    t.take("busy", Q).await?;
    for id in ["idle-1", "idle-2"] {
        assert!(t.lease(id, Q).await?.is_none(), "{id} is now asleep");
    }
    let start = Instant::now();
    t.add(Q, "").await?;
    let e = idle1
        .next(ms(2000))
        .await?
        .expect("the longest idle is woken");
    assert_eq!((&*e.queue, &*e.reason), (Q, "enqueue"));
    assert!(start.elapsed() < ms(2000));
    // One ready job wakes one agent. A job behind its lane's running head wakes nobody, nor
    // does one in a paused queue, until the queue resumes.
    t.add(Q, "L").await?;
    let mut admin = t.admin.clone();
    admin
        .pause_queue(pb::PauseQueueRequest { queue: Q.into() })
        .await?;
    t.add(Q, "").await?;
    let (b, i) = tokio::join!(busy.next(ms(700)), idle2.next(ms(700)));
    assert_eq!((b?, i?), (None, None));
    admin
        .resume_queue(pb::ResumeQueueRequest { queue: Q.into() })
        .await?;
    let e = idle2
        .next(ms(2000))
        .await?
        .expect("resuming wakes an idle agent");
    assert_eq!((&*e.queue, &*e.reason), (Q, "wake"));
    Ok(())
}
