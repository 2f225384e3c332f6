//! Global events to a real local HTTP receiver (the n8n → Telegram feed): a real agent's
//! awake/asleep sequence as jobs arrive at an idle system and drain, job.failed and
//! lane.blocked with ready-to-send messages, a flood of failures summed up in a bounded
//! number of messages, and each watchdog alert firing once and clearing once.

use anyhow::Context as _;
use lanes_proto::v1 as pb;
use lanes_tests::agent::start_agent;
use lanes_tests::jobs::{Setup, job, permanent};
use lanes_tests::webhooks::{Got, Receiver, secret, verify};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// `--event-endpoints` for one endpoint on `rx` at `/events`, signed with the test key.
fn endpoint(rx: &Receiver, extra: Value) -> String {
    let mut e = json!({"url": rx.url("/events"), "secret": secret(), "name": "test"});
    if let (Some(e), Value::Object(x)) = (e.as_object_mut(), extra) {
        e.extend(x);
    }
    json!([e]).to_string()
}

/// The events received so far, in arrival order, each checked for its signature.
fn events(rx: &Receiver) -> anyhow::Result<Vec<Value>> {
    rx.to("/events")
        .iter()
        .map(|g: &Got| {
            verify(g)?;
            Ok(g.json())
        })
        .collect()
}

fn of_type<'a>(evs: &'a [Value], t: &str) -> Vec<&'a Value> {
    evs.iter().filter(|e| e["type"] == t).collect()
}

/// Polls `events` until `done` holds, within `within`.
async fn until(
    rx: &Receiver,
    within: Duration,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> anyhow::Result<Vec<Value>> {
    let deadline = Instant::now() + within;
    loop {
        let evs = events(rx)?;
        if done(&evs) {
            return Ok(evs);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what}: not seen within {within:?}; got {evs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_wakes_for_work_and_sleeps_when_drained() -> anyhow::Result<()> {
    let rx = Receiver::start().await?;
    let eps = endpoint(&rx, json!({"types": ["agent.*"]}));
    let s = Setup::start(&[
        "--event-endpoints",
        &eps,
        "--events-debounce-ms",
        "300",
        "--watchdog-interval-ms",
        "0",
    ])
    .await?;
    let _agent = start_agent(
        &s.coord_url(),
        "worker-2",
        "invoices",
        &["--exec", "sleep 0.4"],
    )
    .await?;
    // Idle at start: the agent found nothing and fell asleep.
    let evs = until(&rx, Duration::from_secs(10), "first agent.asleep", |e| {
        !of_type(e, "agent.asleep").is_empty()
    })
    .await?;
    let first = &of_type(&evs, "agent.asleep")[0];
    assert_eq!(first["message"], "😴 Worker worker-2 asleep — queue empty");
    assert_eq!(first["agent_id"], "worker-2");
    assert_eq!(first["data"]["queues"], json!(["invoices"]));

    let ids = [s.add("invoices", "resto-1").await?];
    let mut ids = ids.to_vec();
    for _ in 0..4 {
        ids.push(s.add("invoices", "resto-1").await?);
    }
    let evs = until(&rx, Duration::from_secs(30), "awake then asleep", |e| {
        of_type(e, "agent.asleep").len() >= 2
    })
    .await?;
    for id in &ids {
        assert_eq!(s.state(*id).await?, pb::JobState::Completed);
    }
    // Give a stray flip time to show up, then check the whole sequence.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let evs2 = events(&rx)?;
    assert_eq!(
        evs2.len(),
        evs.len(),
        "no more events once drained: {evs2:#?}"
    );
    let kinds: Vec<&str> = evs.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["agent.asleep", "agent.awake", "agent.asleep"]);
    let awake = &evs[1];
    // One replica name for the agent, in its events and in ListAgents.
    let listed = s
        .admin
        .clone()
        .list_agents(pb::ListAgentsRequest {})
        .await?;
    let listed = listed.into_inner().agents;
    let agent = listed
        .iter()
        .find(|a| a.agent_id == "worker-2")
        .context("worker-2 listed")?;
    assert!(!agent.coordinator_id.is_empty(), "{agent:?}");
    for e in &evs {
        assert_eq!(e["data"]["coordinator_id"], agent.coordinator_id, "{e}");
    }
    let pending = awake["data"]["pending"].as_i64().context("pending")?;
    assert!((1..=5).contains(&pending), "{awake}");
    assert_eq!(
        awake["message"],
        format!(
            "🟢 Worker worker-2 awake — {pending} job{} pending",
            if pending == 1 { "" } else { "s" }
        )
    );
    let seq: Vec<i64> = evs.iter().filter_map(|e| e["sequence"].as_i64()).collect();
    assert!(
        seq.windows(2).all(|w| w[0] < w[1]),
        "sequence grows: {seq:?}"
    );
    Ok(())
}

/// Checks the flood limit on the outbox rows of job.failed and lane.blocked messages
/// (`created_at` is when the fan-out let each one out): no `window_us` holds more than `limit`
/// of one type. Returns how many windows the job.failed messages spanned.
async fn sent_per_window(db_url: &str, window_us: i64, limit: usize) -> anyhow::Result<usize> {
    let pool = sqlx::PgPool::connect(db_url).await?;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT event_type, (extract(epoch FROM created_at) * 1000000)::bigint FROM outbox
         WHERE endpoint = 'test' AND event_type IN ('job.failed', 'lane.blocked')
         ORDER BY created_at",
    )
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    for t in ["job.failed", "lane.blocked"] {
        let at: Vec<i64> = rows.iter().filter(|r| r.0 == t).map(|r| r.1).collect();
        for (i, end) in at.iter().enumerate() {
            let within = at[..=i].iter().filter(|a| **a > end - window_us).count();
            assert!(
                within <= limit,
                "{within} {t} messages within {window_us} µs up to {end}: {at:?}"
            );
        }
    }
    let failed: Vec<i64> = rows
        .iter()
        .filter(|r| r.0 == "job.failed")
        .map(|r| r.1)
        .collect();
    let span = failed.last().zip(failed.first()).map_or(0, |(l, f)| l - f);
    Ok(usize::try_from(span / window_us + 1).unwrap_or(usize::MAX))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_announced_and_floods_summed_up() -> anyhow::Result<()> {
    let rx = Receiver::start().await?;
    let eps = endpoint(
        &rx,
        json!({"types": ["job.*", "lane.*", "events.*"], "queues": ["invoices"], "language": "fr"}),
    );
    let s = Setup::start(&[
        "--event-endpoints",
        &eps,
        "--events-flood-limit",
        "3",
        "--events-flood-window-ms",
        "2000",
        "--watchdog-interval-ms",
        "0",
    ])
    .await?;
    s.set("invoices", |r| {
        r.max_attempts = Some(1);
        r.failure_policy = Some(pb::FailurePolicy::Block as i32);
    })
    .await?;
    s.set("other", |r| r.max_attempts = Some(1)).await?;

    // One failure: job.failed and lane.blocked, in French, naming lane and error.
    let id = s.add("invoices", "resto-42").await?;
    let j = s.take("worker-1", "invoices").await?;
    s.fail(&j, permanent("PDF illisible")).await?;
    let evs = until(
        &rx,
        Duration::from_secs(10),
        "job.failed + lane.blocked",
        |e| e.len() >= 2,
    )
    .await?;
    let failed = of_type(&evs, "job.failed");
    let blocked = of_type(&evs, "lane.blocked");
    assert_eq!((failed.len(), blocked.len()), (1, 1), "{evs:#?}");
    assert_eq!(
        failed[0]["message"],
        format!(
            "⚠️ Worker worker-1 — job {id} échoué (invoices / resto-42, tentative 1) : PDF illisible"
        )
    );
    assert_eq!(failed[0]["job_id"], id);
    assert_eq!(failed[0]["lane"], "resto-42");
    assert_eq!(failed[0]["language"], "fr");
    assert_eq!(failed[0]["data"]["error"], "PDF illisible");
    assert!(
        blocked[0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("⛔ File resto-42 de invoices bloquée")),
        "{}",
        blocked[0]
    );

    // A queue the endpoint does not follow sends nothing.
    s.add("other", "x").await?;
    let j = s.take("worker-1", "other").await?;
    s.fail(&j, permanent("ignored")).await?;

    // A flood: 60 more failures (60 lanes, so none is blocked behind another) in a moment.
    let n = 60;
    s.batch(
        (0..n)
            .map(|i| job("invoices", &format!("lane-{i}"), "{}"))
            .collect(),
    )
    .await?;
    for _ in 0..n {
        let j = s.take("worker-1", "invoices").await?;
        s.fail(&j, permanent("timeout")).await?;
    }
    // Every failure is accounted for: sent one by one, or counted in a summary.
    let total = |e: &[Value]| -> i64 {
        let single = of_type(e, "job.failed").len() as i64;
        let summed: i64 = of_type(e, "events.summary")
            .iter()
            .filter(|s| s["data"]["event_type"] == "job.failed")
            .filter_map(|s| s["data"]["count"].as_i64())
            .sum();
        single + summed
    };
    let evs = until(
        &rx,
        Duration::from_secs(20),
        "all failures accounted",
        |e| total(e) > n,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let evs_after = events(&rx)?;
    assert_eq!(total(&evs_after), n + 1, "{evs:#?}");
    // The queue blocks its lanes on failure, so lane.blocked floods alongside job.failed:
    // each type is limited and summed up on its own.
    let summaries: Vec<&Value> = of_type(&evs_after, "events.summary")
        .into_iter()
        .filter(|s| s["data"]["event_type"] == "job.failed")
        .collect();
    // The rule itself, whatever the pace of the flood on a loaded machine: within any 2 s
    // (the window), at most 3 (the limit) single messages of a type went out.
    let windows = sent_per_window(&s.db.url, 2_000_000, 3).await?;
    // At most one summary per window of the flood, plus the one that closes it.
    assert!(
        (1..=windows + 1).contains(&summaries.len()),
        "{} summaries over a flood of {windows} windows",
        summaries.len()
    );
    let sum = summaries[0];
    assert_eq!(sum["queue"], "invoices");
    let msg = sum["message"].as_str().unwrap_or("");
    assert!(
        msg.starts_with("⚠️ ") && msg.contains("jobs échoués de plus sur invoices"),
        "{msg}"
    );
    assert!(msg.contains("dernière erreur : timeout"), "{msg}");
    assert!(
        evs_after.iter().all(|e| e["queue"] == "invoices"),
        "the queue filter holds"
    );
    // Operators see each event delivery with the endpoint it went to.
    let listed = s
        .admin
        .clone()
        .list_deliveries(pb::ListDeliveriesRequest {
            states: vec![pb::DeliveryState::Delivered as i32],
            event_type: "lane.blocked".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .deliveries;
    assert!(!listed.is_empty());
    assert!(listed.iter().all(|d| d.endpoint == "test"), "{listed:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_alerts_fire_once_and_clear_once() -> anyhow::Result<()> {
    let rx = Receiver::start().await?;
    let eps = endpoint(&rx, json!({"types": ["watchdog.*"]}));
    let s = Setup::start(&[
        "--event-endpoints",
        &eps,
        "--watchdog-interval-ms",
        "300",
        "--watchdog-max-pending",
        "3",
        "--watchdog-max-wait-s",
        "1",
        "--watchdog-no-agent-s",
        "1",
        "--watchdog-min-finished",
        "4",
        "--watchdog-max-failure-rate",
        "0.1",
        "--watchdog-max-avg-run-s",
        "1",
        "--watchdog-window-s",
        "6",
    ])
    .await?;
    s.set("wd", |r| {
        r.max_attempts = Some(2);
        r.lease_ttl_ms = Some(6000);
        r.backoff_initial_ms = Some(500);
    })
    .await?;
    // Five jobs, no agent: too deep, waiting too long, nobody to run them. One batch (one
    // transaction), so the watchdog, which looks every 300 ms, sees none of them or all
    // five, however slowly the machine enqueues.
    s.batch((0..5).map(|i| job("wd", &format!("l{i}"), "{}")).collect())
        .await?;
    let fired = |e: &[Value], kind: &str| {
        of_type(e, "watchdog.alert")
            .iter()
            .filter(|a| a["data"]["kind"] == kind)
            .count()
    };
    let cleared = |e: &[Value], kind: &str| {
        of_type(e, "watchdog.cleared")
            .iter()
            .filter(|a| a["data"]["kind"] == kind)
            .count()
    };
    let evs = until(&rx, Duration::from_secs(15), "three alerts", |e| {
        ["queue_depth", "oldest_wait", "no_agent"]
            .iter()
            .all(|k| fired(e, k) == 1)
    })
    .await?;
    let depth = of_type(&evs, "watchdog.alert")
        .into_iter()
        .find(|a| a["data"]["kind"] == "queue_depth")
        .context("depth alert")?;
    assert_eq!(depth["message"], "🚨 wd: 5 jobs pending (threshold 3)");

    // Drain: two jobs run 2.5 s (average run time over 1 s), one lease goes silent past two
    // thirds of its TTL, one job in five fails (20 % > 10 %).
    let slow = [s.take("a1", "wd").await?, s.take("a1", "wd").await?];
    let silent = s.take("a2", "wd").await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for j in &slow {
        s.complete(j).await?;
    }
    let j = s.take("a1", "wd").await?;
    s.fail(&j, permanent("bad invoice")).await?;
    let j = s.take("a1", "wd").await?;
    s.complete(&j).await?;
    let evs = until(&rx, Duration::from_secs(10), "heartbeat alert", |e| {
        fired(e, "heartbeat_missing") == 1
    })
    .await?;
    let hb = of_type(&evs, "watchdog.alert")
        .into_iter()
        .find(|a| a["data"]["kind"] == "heartbeat_missing")
        .context("heartbeat alert")?;
    assert_eq!(hb["data"]["agent_id"], "a2");
    assert_eq!(hb["job_id"], silent.id);
    // The silent lease lapses and the reaper hands the job back (a retry in 0.5 s): finish it.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the silent job did not come back"
        );
        if let Some(j) = s.lease("a1", "wd").await? {
            s.complete(&j).await?;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let evs = until(
        &rx,
        Duration::from_secs(15),
        "failure-rate and slow alerts",
        |e| fired(e, "failure_rate") == 1 && fired(e, "slow_jobs") == 1,
    )
    .await?;
    let rate = of_type(&evs, "watchdog.alert")
        .into_iter()
        .find(|a| a["data"]["kind"] == "failure_rate")
        .context("rate alert")?;
    assert!(
        rate["message"].as_str().is_some_and(
            |m| m.starts_with("🚨 wd: ") && m.contains("% of jobs failed over the last 6 s")
        ),
        "{rate}"
    );
    // Everything clears once the work is done and the window has passed; nothing repeats.
    let kinds = [
        "queue_depth",
        "oldest_wait",
        "no_agent",
        "heartbeat_missing",
        "failure_rate",
        "slow_jobs",
    ];
    let evs = until(&rx, Duration::from_secs(20), "all cleared", |e| {
        kinds.iter().all(|k| cleared(e, k) == 1)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let evs = events(&rx).map(|after| if after.len() > evs.len() { after } else { evs })?;
    let mut per_kind: HashMap<(String, String), usize> = HashMap::new();
    for e in &evs {
        let key = (
            e["type"].as_str().unwrap_or("").to_owned(),
            e["data"]["kind"].as_str().unwrap_or("").to_owned(),
        );
        *per_kind.entry(key).or_default() += 1;
    }
    for k in kinds {
        assert_eq!(
            per_kind[&("watchdog.alert".into(), k.into())],
            1,
            "{k} fired once"
        );
        assert_eq!(
            per_kind[&("watchdog.cleared".into(), k.into())],
            1,
            "{k} cleared once"
        );
    }
    assert_eq!(evs.len(), 12, "{evs:#?}");
    let cleared_depth = of_type(&evs, "watchdog.cleared")
        .into_iter()
        .find(|a| a["data"]["kind"] == "queue_depth")
        .context("depth cleared")?;
    assert!(
        cleared_depth["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("✅ Resolved after ")),
        "{cleared_depth}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_endpoints_no_event_is_written() -> anyhow::Result<()> {
    // The watchdog off: its alerts are written (and logged) whether or not anyone listens.
    let s = Setup::start(&[
        "--watchdog-interval-ms",
        "0",
        "--events-debounce-ms",
        "60000",
    ])
    .await?;
    s.set("q", |r| r.max_attempts = Some(1)).await?;
    // A job that fails for good, in a lane (job.failed and, were it blocking, lane.blocked).
    s.add("q", "l").await?;
    let j = s.take("idle", "q").await?;
    s.fail(&j, permanent("boom")).await?;
    let pool = s.db.pool().await?;
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    assert_eq!(events, 0, "no endpoint configured, yet events were written");
    Ok(())
}
