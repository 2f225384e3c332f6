//! The admin page's routes over HTTP: blocked and busiest lanes, a lane's jobs in run order,
//! the per-minute history, and the bulk retry or cancel of a queue's failed jobs — with the
//! counts right, and bad input refused with a 422 naming the field while nothing changes.

use lanes_tests::gateway::{ADMIN_KEY, READ_KEY, Stack};
use serde_json::{Value, json};

const Q: &str = "orders";
const Q2: &str = "exports";

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .map(|a| a.iter().filter_map(|j| j["job_id"].as_i64()).collect())
        .unwrap_or_default()
}

async fn get(s: &Stack, path: &str) -> anyhow::Result<Value> {
    let r = s.http.get(path, Some(ADMIN_KEY)).await?;
    anyhow::ensure!(r.status == 200, "GET {path}: {} {}", r.status, r.body);
    Ok(r.body)
}

async fn failed_count(s: &Stack, queue: &str) -> anyhow::Result<i64> {
    let stats = get(s, &format!("/api/queue/stats?queue={queue}")).await?;
    Ok(stats["stats"]["tasks_by_status"]["failed"]
        .as_i64()
        .unwrap_or(-1))
}

#[tokio::test]
async fn lanes_history_and_bulk_actions() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    let put = s
        .http
        .put(
            &format!("/admin/api/queues/{Q}/settings"),
            Some(ADMIN_KEY),
            &json!({"failure_policy": "block", "max_attempts": 1}),
        )
        .await?;
    assert_eq!(put.status, 200, "{}", put.body);

    // Lane A: its head fails for good and blocks it, two jobs behind it.
    let a: Vec<i64> = {
        let mut v = Vec::new();
        for n in 0..3 {
            v.push(
                s.enqueue(json!({"queue": Q, "lane": "A", "payload": {"n": n}}))
                    .await?,
            );
        }
        v
    };
    let j = s.agent.take(Q).await?;
    assert_eq!(j.id, a[0]);
    s.agent.fail(&j, "bad", false).await?;
    // An unkeyed job completes, another fails.
    let done = s.enqueue(json!({"queue": Q, "payload": {}})).await?;
    let j = s.agent.take(Q).await?;
    assert_eq!(j.id, done);
    s.agent.complete(&j, "{}").await?;
    let u = s.enqueue(json!({"queue": Q, "payload": {}})).await?;
    let j = s.agent.take(Q).await?;
    assert_eq!(j.id, u);
    s.agent.fail(&j, "bad", false).await?;
    // Lane B: three more jobs, its first running.
    let mut b = Vec::new();
    for n in 0..4 {
        b.push(
            s.enqueue(json!({"queue": Q, "lane": "B", "payload": {"n": n}}))
                .await?,
        );
    }
    let j = s.agent.take(Q).await?;
    assert_eq!(j.id, b[0]);

    // Blocked lanes: A, its failed head, two waiting.
    let blocked = get(&s, &format!("/admin/api/lanes?queue={Q}&filter=blocked")).await?;
    let lanes = blocked["lanes"].as_array().cloned().unwrap_or_default();
    assert_eq!(lanes.len(), 1, "{blocked}");
    assert_eq!(
        (
            &lanes[0]["lane"],
            &lanes[0]["state"],
            &lanes[0]["head_job_id"],
            &lanes[0]["queued"]
        ),
        (&json!("A"), &json!("blocked"), &json!(a[0]), &json!(2)),
        "{blocked}"
    );
    // Busiest: B (4 unfinished, b0 running, b1 the oldest waiting) before A.
    let busy = get(&s, "/admin/api/lanes?filter=busiest&limit=1").await?;
    let top = &busy["lanes"][0];
    assert_eq!(busy["lanes"].as_array().map(Vec::len), Some(1), "{busy}");
    assert_eq!(
        (
            &top["lane"],
            &top["queued"],
            &top["running_job_id"],
            &top["state"]
        ),
        (&json!("B"), &json!(4), &json!(b[0]), &json!("running")),
        "{busy}"
    );
    let b1 = s.job(b[1]).await?;
    assert_eq!(top["oldest_pending_at"], b1["created_at"], "{busy}");

    // A lane's jobs: running first, then FIFO; the finished after.
    let lane_b = get(&s, &format!("/admin/api/lanes/jobs?queue={Q}&lane=B")).await?;
    assert_eq!(ids(&lane_b["unfinished"]), b, "{lane_b}");
    assert_eq!(ids(&lane_b["finished"]), Vec::<i64>::new());
    let lane_a = get(&s, &format!("/admin/api/lanes/jobs?queue={Q}&lane=A")).await?;
    assert_eq!(ids(&lane_a["unfinished"]), a[1..].to_vec(), "{lane_a}");
    assert_eq!(ids(&lane_a["finished"]), vec![a[0]], "{lane_a}");

    // History: 60 minutes by default, one completed and two failed in them.
    let h = get(&s, &format!("/admin/api/history?queue={Q}")).await?;
    let minutes = h["minutes"].as_array().cloned().unwrap_or_default();
    assert_eq!(minutes.len(), 60, "{h}");
    let sum = |k: &str| minutes.iter().filter_map(|m| m[k].as_i64()).sum::<i64>();
    assert_eq!((sum("completed"), sum("failed")), (1, 2), "{h}");
    assert!(
        minutes
            .iter()
            .all(|m| m["wait_p95_ms"].as_i64() >= m["wait_p50_ms"].as_i64())
    );
    let h5 = get(&s, "/admin/api/history?minutes=5").await?;
    assert_eq!(h5["minutes"].as_array().map(Vec::len), Some(5), "{h5}");
    let other = get(&s, &format!("/admin/api/history?queue={Q2}")).await?;
    let zero = other["minutes"]
        .as_array()
        .is_some_and(|m| m.iter().all(|m| m["completed"] == 0 && m["failed"] == 0));
    assert!(zero, "{other}");

    // Bad input: 422 naming the field, nothing changed.
    let before = failed_count(&s, Q).await?;
    for (method, path, field) in [
        ("GET", "/admin/api/lanes?filter=stuck".to_owned(), "filter"),
        ("GET", "/admin/api/lanes?limit=501".to_owned(), "limit"),
        ("GET", "/admin/api/lanes?limit=x".to_owned(), "limit"),
        (
            "GET",
            "/admin/api/lanes?queue=no%20spaces".to_owned(),
            "queue",
        ),
        (
            "GET",
            format!("/admin/api/lanes/jobs?queue={Q}&lane="),
            "lane",
        ),
        (
            "GET",
            "/admin/api/lanes/jobs?queue=&lane=A".to_owned(),
            "queue",
        ),
        (
            "GET",
            format!("/admin/api/lanes/jobs?queue={Q}&lane=A&finished_limit=201"),
            "finished_limit",
        ),
        (
            "GET",
            "/admin/api/history?minutes=1441".to_owned(),
            "minutes",
        ),
        ("GET", "/admin/api/history?minutes=-1".to_owned(), "minutes"),
        (
            "POST",
            "/admin/api/queues/no%20spaces/failed/retry".to_owned(),
            "queue",
        ),
        (
            "POST",
            "/admin/api/queues/no%20spaces/failed/cancel".to_owned(),
            "queue",
        ),
    ] {
        let r = if method == "GET" {
            s.http.get(&path, Some(ADMIN_KEY)).await?
        } else {
            s.http.post(&path, Some(ADMIN_KEY), &json!({})).await?
        };
        assert_eq!(
            (r.status, r.body["error"]["field"].as_str()),
            (422, Some(field)),
            "{method} {path}: {}",
            r.body
        );
    }
    let missing = s
        .http
        .get(&format!("/admin/api/lanes/jobs?queue={Q}"), Some(ADMIN_KEY))
        .await?;
    assert_eq!(missing.status, 422, "{}", missing.body);
    // Admin only.
    let read = s
        .http
        .post(
            &format!("/admin/api/queues/{Q}/failed/retry"),
            Some(READ_KEY),
            &json!({}),
        )
        .await?;
    assert_eq!(read.status, 403, "{}", read.body);
    assert_eq!(failed_count(&s, Q).await?, before);
    assert_eq!(before, 2);

    // Bulk retry: both failed jobs pending again (the blocked lane restarts with its head).
    let r = s
        .http
        .post(
            &format!("/admin/api/queues/{Q}/failed/retry"),
            Some(ADMIN_KEY),
            &json!({}),
        )
        .await?;
    assert_eq!(
        (r.status, &r.body["count"], &r.body["more"]),
        (200, &json!(2), &json!(false)),
        "{}",
        r.body
    );
    for id in [a[0], u] {
        assert_eq!(s.job(id).await?["status"], "pending", "job {id}");
    }
    assert_eq!(failed_count(&s, Q).await?, 0);
    let blocked = get(&s, &format!("/admin/api/lanes?queue={Q}&filter=blocked")).await?;
    assert_eq!(blocked["lanes"], json!([]));
    let again = s
        .http
        .post(
            &format!("/admin/api/queues/{Q}/failed/retry"),
            Some(ADMIN_KEY),
            &json!({}),
        )
        .await?;
    assert_eq!(again.body["count"], 0, "{}", again.body);

    // Bulk cancel (discard) in another queue: its two failed jobs end cancelled.
    let mut failed = Vec::new();
    for _ in 0..2 {
        let id = s.enqueue(json!({"queue": Q2, "payload": {}})).await?;
        let j = s.agent.take(Q2).await?;
        assert_eq!(j.id, id);
        s.agent.fail(&j, "bad", false).await?;
        failed.push(id);
    }
    let c = s
        .http
        .post(
            &format!("/admin/api/queues/{Q2}/failed/cancel"),
            Some(ADMIN_KEY),
            &json!({}),
        )
        .await?;
    assert_eq!((c.status, &c.body["count"]), (200, &json!(2)), "{}", c.body);
    for id in failed {
        assert_eq!(s.job(id).await?["status"], "cancelled", "job {id}");
    }
    assert_eq!(failed_count(&s, Q2).await?, 0);
    // The retried jobs of the first queue were not touched by the second queue's cancel.
    assert_eq!(s.job(u).await?["status"], "pending");
    Ok(())
}
