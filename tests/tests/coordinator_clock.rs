//! Every transition decides on the database's clock, never on the coordinator's. The
//! coordinator runs here with its wall clock an hour ahead (libfaketime, Debian's
//! `faketime` package): a delay and a retry's backoff still end when the database says so,
//! and a lease still lapses (and only lapses) by the database's clock. Decided on the
//! coordinator's clock, the delayed job and the retry would wait an hour.

use lanes_tests::jobs::*;
use std::time::Duration;
use tokio::time::Instant;

const Q: &str = "invoice_import";
/// Generous for a loaded machine; an hour off would never make it.
const SOON: Duration = Duration::from_secs(15);
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

async fn skewed() -> anyhow::Result<Setup> {
    anyhow::ensure!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: install Debian's `faketime` package (scripts/test lists it)"
    );
    let env = [
        ("LD_PRELOAD", LIBFAKETIME),
        ("FAKETIME", "+1h"),
        // Timers and timeouts (monotonic) stay real; only the wall clock is an hour ahead.
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    Setup::start_with_env(&[], &env).await
}

#[tokio::test]
async fn delays_backoffs_and_expiries_follow_the_database_clock() -> anyhow::Result<()> {
    let t = skewed().await?;
    t.set(Q, |s| s.backoff_initial_ms = Some(300)).await?;
    t.set(Q, |s| s.lease_ttl_ms = Some(1000)).await?;

    // A delay of one second, on the database's clock.
    let start = Instant::now();
    let delayed = t.add_req(job(Q, "", "{}").delay(1)).await?;
    let got = lease_not_before(
        &t.agent,
        "a1",
        &[Q],
        start + Duration::from_millis(900),
        SOON,
    )
    .await?;
    assert_eq!(got.id, delayed);
    t.complete(&got).await?;

    // A retry after a 300 ms backoff (±20 %), for a keyed and an unkeyed job.
    for lane in ["L", ""] {
        let id = t.add(Q, lane).await?;
        let first = t.take("a1", Q).await?;
        assert_eq!(first.id, id);
        let failed_at = Instant::now();
        t.fail(&first, retryable("try again")).await?;
        let again = lease_not_before(
            &t.agent,
            "a1",
            &[Q],
            failed_at + Duration::from_millis(200),
            SOON,
        )
        .await?;
        assert_eq!((again.id, again.attempt), (id, 2), "lane {lane:?}");
        t.complete(&again).await?;
    }

    // A lease kept alive by heartbeats is never expired; an abandoned one is, after its TTL.
    let kept = t.add(Q, "K").await?;
    let held = t.take("a1", Q).await?;
    assert_eq!(held.id, kept);
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        heartbeat(&t.agent, &held, None).await?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(t.job(kept).await?.attempt, 1, "never expired while beating");
    let abandoned_at = Instant::now();
    let redelivered = lease_not_before(
        &t.agent,
        "a2",
        &[Q],
        abandoned_at + Duration::from_millis(700),
        SOON,
    )
    .await?;
    assert_eq!((redelivered.id, redelivered.attempt), (kept, 2));
    lanes_tests::assert_lanes_agree(&t.db.url).await
}
