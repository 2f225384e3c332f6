//! Recurring schedules: the admin API through the gateway (create, list, read, change,
//! delete; bad input refused naming its field, nothing stored), one job per tick across two
//! coordinator replicas while one is killed and restarted, and the `missed` policies after
//! every replica was down.

use chrono::{DateTime, Utc};
use lanes_proto::v1 as pb;
use lanes_proto::v1::schedule_service_client::ScheduleServiceClient;
use lanes_tests::gateway::{ADMIN_KEY, ENQUEUE_KEY, Stack};
use lanes_tests::{Coordinator, fresh_database};
use serde_json::json;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

const API: &str = "/admin/api/schedules";

#[tokio::test]
async fn schedules_are_managed_through_the_admin_api() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    let key = Some(ADMIN_KEY);
    let daily = json!({
        "name": "daily-report", "cron": "0 0 8 * * *", "timezone": "Europe/Paris",
        "queue": "reports", "lane": "fr", "payload": {"kind": "daily"}, "priority": 5,
        "missed": "run_once"
    });
    let r = s.http.post(API, key, &daily).await?;
    assert_eq!(r.status, 201, "{:?}\n{}", r.body, s.logs());
    let b = &r.body;
    assert_eq!(
        (
            &b["name"],
            &b["cron"],
            &b["timezone"],
            &b["queue"],
            &b["lane"]
        ),
        (
            &json!("daily-report"),
            &json!("0 0 8 * * *"),
            &json!("Europe/Paris"),
            &json!("reports"),
            &json!("fr")
        )
    );
    assert_eq!(b["payload"], json!({"kind": "daily"}));
    assert_eq!(
        (&b["priority"], &b["missed"], &b["enabled"]),
        (&json!(5), &json!("run_once"), &json!(true))
    );
    assert!(b["created_at"].is_string() && b["updated_at"].is_string());
    let fires: Vec<&str> = b["next_fires"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(fires.len(), 5, "{b}");
    for f in &fires {
        // 08:00 Paris time, winter (+01:00) or summer (+02:00), daily.
        assert!(
            f.contains("T08:00:00+01:00") || f.contains("T08:00:00+02:00"),
            "{f}"
        );
    }

    let again = s.http.post(API, key, &daily).await?;
    assert_eq!((again.status, again.code()), (409, "conflict"));

    // Bad input names its field and stores nothing.
    let bad = |field: &str, value: serde_json::Value| {
        let mut b = json!({"name": "bad", "cron": "* * * * *", "queue": "q"});
        b[field] = value;
        b
    };
    for (field, value, said) in [
        ("cron", json!("61 * * * *"), "does not parse"),
        ("cron", json!("* * * *"), "does not parse"),
        ("timezone", json!("Europe/Pariss"), "IANA"),
        ("queue", json!("a b"), "queue"),
        ("lane", json!(""), "lane"),
        ("priority", json!(5000), "priority"),
        ("missed", json!("sometimes"), "missed"),
        ("name", json!("a/b"), "name"),
    ] {
        let r = s.http.post(API, key, &bad(field, value.clone())).await?;
        assert_eq!(r.status, 422, "{field}={value}: {:?}", r.body);
        assert_eq!(r.code(), "invalid_field");
        assert_eq!(r.body["error"]["field"], json!(field), "{:?}", r.body);
        let message = r.body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(said), "{field}: {message}");
    }
    assert_eq!(s.http.post(API, None, &daily).await?.status, 401);
    assert_eq!(
        s.http.post(API, Some(ENQUEUE_KEY), &daily).await?.status,
        403
    );

    let list = s.http.get(API, key).await?;
    assert_eq!(list.status, 200);
    let names: Vec<&str> = list.body["schedules"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["daily-report"], "refused creations stored nothing");

    let path = format!("{API}/daily-report");
    let got = s.http.get(&path, key).await?;
    assert_eq!(
        (got.status, &got.body["cron"]),
        (200, &json!("0 0 8 * * *"))
    );
    assert_eq!(s.http.get(&format!("{API}/nope"), key).await?.status, 404);

    // A partial update: the fields given change, the others stay.
    let put = s
        .http
        .put(
            &path,
            key,
            &json!({"enabled": false, "lane": null, "priority": -3}),
        )
        .await?;
    assert_eq!(put.status, 200, "{:?}", put.body);
    assert_eq!(
        (
            &put.body["enabled"],
            &put.body["lane"],
            &put.body["priority"]
        ),
        (&json!(false), &json!(null), &json!(-3))
    );
    assert_eq!(put.body["cron"], json!("0 0 8 * * *"));
    assert_eq!(put.body["payload"], json!({"kind": "daily"}));
    assert_eq!(
        put.body["next_fires"],
        json!([]),
        "a paused schedule fires nothing"
    );
    let r = s
        .http
        .put(&path, key, &json!({"cron": "0 0 25 * * *"}))
        .await?;
    assert_eq!((r.status, &r.body["error"]["field"]), (422, &json!("cron")));
    let r = s
        .http
        .put(&path, key, &json!({"timezone": "Mars/Olympus"}))
        .await?;
    assert_eq!(
        (r.status, &r.body["error"]["field"]),
        (422, &json!("timezone"))
    );
    let unchanged = s.http.get(&path, key).await?;
    assert_eq!(
        (&unchanged.body["cron"], &unchanged.body["timezone"]),
        (&json!("0 0 8 * * *"), &json!("Europe/Paris"))
    );
    let r = s
        .http
        .put(&format!("{API}/nope"), key, &json!({"enabled": true}))
        .await?;
    assert_eq!(r.status, 404);

    let del = s.http.delete(&path, key).await?;
    assert_eq!(del.status, 200, "{:?}", del.body);
    assert_eq!(s.http.get(&path, key).await?.status, 404);
    assert_eq!(s.http.delete(&path, key).await?.status, 404);

    let doc = s.http.get("/openapi.json", None).await?;
    assert!(doc.body["paths"][API]["post"].is_object());
    assert!(doc.body["paths"][format!("{API}/{{name}}")]["put"].is_object());
    Ok(())
}

/// The ticks of schedule `name` (fire time → when fired, its job) and its jobs by key.
async fn ticks(
    db: &PgPool,
    name: &str,
) -> anyhow::Result<BTreeMap<DateTime<Utc>, (DateTime<Utc>, Option<i64>)>> {
    let rows: Vec<(DateTime<Utc>, DateTime<Utc>, Option<i64>)> = sqlx::query_as(
        "SELECT fire_at, created_at, job_id FROM schedule_ticks WHERE schedule = $1",
    )
    .bind(name)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(f, c, j)| (f, (c, j))).collect())
}

/// Jobs of `queue`, counted by idempotency key (each names its tick).
async fn jobs_by_key(db: &PgPool, queue: &str) -> anyhow::Result<BTreeMap<String, i64>> {
    let rows: Vec<(Option<String>, i64)> =
        sqlx::query_as("SELECT idempotency_key, count(*) FROM jobs WHERE queue = $1 GROUP BY 1")
            .bind(queue)
            .fetch_all(db)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(k, n)| (k.unwrap_or_default(), n))
        .collect())
}

async fn db_now(db: &PgPool) -> anyhow::Result<DateTime<Utc>> {
    Ok(sqlx::query_scalar("SELECT now()").fetch_one(db).await?)
}

/// Waits (up to 60 s) until the schedule has a tick at or after `at`.
async fn until_tick(db: &PgPool, name: &str, at: DateTime<Utc>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT max(fire_at) FROM schedule_ticks WHERE schedule = $1")
                .bind(name)
                .fetch_one(db)
                .await?;
        if last.is_some_and(|l| l >= at) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no tick of {name} at {at} in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create(
    coord: &Coordinator,
    name: &str,
    queue: &str,
    missed: pb::MissedPolicy,
) -> anyhow::Result<DateTime<Utc>> {
    let mut c = ScheduleServiceClient::new(coord.channel().await?);
    let s = c
        .create_schedule(pb::CreateScheduleRequest {
            name: name.into(),
            cron: "* * * * * *".into(),
            timezone: "Europe/Paris".into(),
            queue: queue.into(),
            payload: r#"{"every":"second"}"#.into(),
            missed: missed as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    let created = s.created_at.expect("created_at");
    Ok(DateTime::from_timestamp(created.seconds, created.nanos as u32).expect("a time"))
}

/// Every whole second in (after, through].
fn seconds(after: DateTime<Utc>, through: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let first = after.timestamp() + 1;
    (first..=through.timestamp())
        .filter_map(|s| DateTime::from_timestamp(s, 0))
        .collect()
}

fn key_of(name: &str, t: DateTime<Utc>) -> String {
    format!(
        "schedule:{name}:{}",
        t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    )
}

#[tokio::test]
async fn two_replicas_fire_each_second_once_while_one_is_killed_and_restarted() -> anyhow::Result<()>
{
    let db = fresh_database().await?;
    let pool = db.pool().await?;
    let a = Coordinator::start(&db.url, &[]).await?;
    let b = Coordinator::start(&db.url, &[]).await?;
    let created = create(&a, "every-second", "ticks", pb::MissedPolicy::Skip).await?;
    let phase = chrono::Duration::seconds(18);

    // Both replicas up, then B alone (A killed mid-flight), then both again.
    until_tick(&pool, "every-second", created + phase).await?;
    let mut a = a;
    a.proc.kill9().await;
    let killed = db_now(&pool).await?;
    until_tick(&pool, "every-second", killed + phase).await?;
    let a2 = Coordinator::start(&db.url, &[]).await?;
    let restarted = db_now(&pool).await?;
    until_tick(&pool, "every-second", restarted + phase).await?;
    let end = db_now(&pool).await?;
    // Every tick up to `end` is fired by now (lateness well under the 60 s grace).
    until_tick(&pool, "every-second", end).await?;
    drop((a2, b));

    let ticks = ticks(&pool, "every-second").await?;
    let jobs = jobs_by_key(&pool, "ticks").await?;
    let want = seconds(created, end);
    let mut lateness = Duration::ZERO;
    for t in &want {
        let (fired, job) = ticks
            .get(t)
            .unwrap_or_else(|| panic!("the tick of {t} was lost"));
        assert!(job.is_some(), "the tick of {t} has its job");
        assert_eq!(
            jobs.get(&key_of("every-second", *t)),
            Some(&1),
            "one job for the tick of {t}"
        );
        lateness = lateness.max((*fired - *t).to_std().unwrap_or_default());
    }
    let window_jobs: i64 = want
        .iter()
        .filter_map(|t| jobs.get(&key_of("every-second", *t)))
        .sum();
    let all_jobs: i64 = jobs.values().sum();
    assert_eq!(window_jobs, want.len() as i64);
    assert_eq!(
        all_jobs as usize,
        ticks.len(),
        "one job per tick, none without a tick"
    );
    assert!(
        ticks.keys().all(|t| *t > created),
        "nothing before creation"
    );
    eprintln!(
        "{} seconds, {} ticks, {} jobs; worst lateness {lateness:?}",
        want.len(),
        ticks.len(),
        all_jobs
    );
    Ok(())
}

#[tokio::test]
async fn ticks_missed_while_every_replica_was_down_are_skipped_or_run_once() -> anyhow::Result<()> {
    const GRACE: &str = "2000";
    let grace = chrono::Duration::seconds(2);
    let db = fresh_database().await?;
    let pool = db.pool().await?;
    let args = ["--schedule-misfire-ms", GRACE];
    let mut first = Coordinator::start(&db.url, &args).await?;
    let created = create(&first, "skip", "skipped", pb::MissedPolicy::Skip).await?;
    create(&first, "once", "once", pb::MissedPolicy::RunOnce).await?;
    for name in ["skip", "once"] {
        until_tick(&pool, name, created + chrono::Duration::seconds(2)).await?;
    }
    first.proc.kill9().await;
    let mut last = BTreeMap::new();
    for name in ["skip", "once"] {
        let t = ticks(&pool, name).await?;
        last.insert(name, *t.keys().last().expect("ticks before the stop"));
    }
    // Down for well over the grace.
    let down_until = *last.values().max().expect("two") + chrono::Duration::seconds(8);
    while db_now(&pool).await? < down_until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let second = Coordinator::start(&db.url, &args).await?;
    let up = db_now(&pool).await?;
    for name in ["skip", "once"] {
        until_tick(&pool, name, up + chrono::Duration::seconds(3)).await?;
    }
    drop(second);

    for (name, queue, catch_up) in [("skip", "skipped", 0), ("once", "once", 1)] {
        let ticks = ticks(&pool, name).await?;
        let last = last[name];
        // The restarted replica's first pass: one transaction, one now().
        let pass = ticks
            .range(last + chrono::Duration::milliseconds(1)..)
            .map(|(_, (fired, _))| *fired)
            .min()
            .expect("ticks after the restart");
        let missed = ticks
            .range(last + chrono::Duration::milliseconds(1)..=pass - grace)
            .count();
        assert_eq!(missed, catch_up, "{name}: catch-up jobs for the downtime");
        assert!(
            pass - last > chrono::Duration::seconds(5),
            "{name}: the downtime is longer than the grace"
        );
        let jobs = jobs_by_key(&pool, queue).await?;
        assert_eq!(
            jobs.values().sum::<i64>() as usize,
            ticks.len(),
            "{name}: one job per tick"
        );
        assert!(
            ticks.values().all(|(_, job)| job.is_some()),
            "{name}: every tick has its job"
        );
    }
    Ok(())
}
