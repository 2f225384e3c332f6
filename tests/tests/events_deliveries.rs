//! The operator view of webhook deliveries, against a real local receiver: a delivery whose
//! endpoint answers 500 on every try ends `failed` and stays listed (ListDeliveries, GET
//! /admin/api/deliveries); a replay sends it again with the same `webhook-id` and a fresh
//! budget of tries; replay-all; URLs shown without secrets; bad input and unknown ids.

use lanes_proto::v1 as pb;
use lanes_tests::gateway::{ADMIN_KEY, READ_KEY, Stack};
use lanes_tests::jobs::{Admin, Setup, code, eventually};
use lanes_tests::receiver::Receiver;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tonic::Code;

/// Tries before a delivery is `failed` (coordinator/src/dispatch.rs).
const TRIES: i32 = 12;
/// Backoff doubling from 1 ms: twelve tries take a few seconds.
const FAST: &[&str] = &["--webhook-backoff-ms", "1"];
const WAIT: Duration = Duration::from_secs(60);

fn list(states: &[pb::DeliveryState]) -> pb::ListDeliveriesRequest {
    pb::ListDeliveriesRequest {
        states: states.iter().map(|s| *s as i32).collect(),
        ..Default::default()
    }
}

async fn deliveries(
    admin: &Admin,
    req: pb::ListDeliveriesRequest,
) -> Result<pb::ListDeliveriesResponse, tonic::Status> {
    Ok(admin.clone().list_deliveries(req).await?.into_inner())
}

async fn replay(admin: &Admin, req: pb::ReplayDeliveriesRequest) -> Result<i64, tonic::Status> {
    Ok(admin
        .clone()
        .replay_deliveries(req)
        .await?
        .into_inner()
        .replayed)
}

fn ids(v: &[i64]) -> pb::ReplayDeliveriesRequest {
    pb::ReplayDeliveriesRequest {
        ids: v.to_vec(),
        ..Default::default()
    }
}

/// Waits until `n` deliveries are in `state`; returns them, newest first.
async fn wait_state(
    admin: &Admin,
    state: pb::DeliveryState,
    n: usize,
) -> anyhow::Result<Vec<pb::Delivery>> {
    eventually(WAIT, &format!("{n} deliveries {state:?}"), async || {
        let page = deliveries(admin, list(&[state])).await?;
        Ok((page.deliveries.len() == n).then_some(page.deliveries))
    })
    .await
}

/// The webhook-ids of the requests `rx` got, in order.
fn webhook_ids(rx: &Receiver) -> Vec<String> {
    rx.requests()
        .iter()
        .map(|g| g.header("webhook-id").to_owned())
        .collect()
}

async fn enqueue_done(s: &Setup, queue: &str, url: &str) -> anyhow::Result<i64> {
    let id = s
        .add_req(pb::EnqueueRequest {
            queue: queue.into(),
            payload: "{}".into(),
            callback_url: url.into(),
            ..Default::default()
        })
        .await?;
    let leased = s.take("agent-a", queue).await?;
    anyhow::ensure!(leased.id == id, "leased {} instead of {id}", leased.id);
    s.complete(&leased).await?;
    Ok(id)
}

#[tokio::test]
async fn failed_deliveries_are_listed_and_replayed() -> anyhow::Result<()> {
    let rx = Receiver::start().await?;
    rx.answer_all(500);
    let s = Setup::start(FAST).await?;
    let a = &s.admin;
    let job1 = enqueue_done(&s, "invoices", &rx.url("/hook")).await?;
    let job2 = enqueue_done(&s, "invoices", &rx.url("/hook")).await?;
    // Credentials in the user info and the query must never be shown.
    let secret_url = rx
        .url("/other?token=s3cret-token&x=1")
        .replace("http://", "http://bob:pa55word@");
    let job3 = enqueue_done(&s, "other", &secret_url).await?;

    let failed = wait_state(a, pb::DeliveryState::Failed, 3).await?;
    assert_eq!(
        failed.iter().map(|d| d.job_id).collect::<Vec<_>>(),
        [job3, job2, job1],
        "newest first"
    );
    for d in &failed {
        assert_eq!((d.last_status, d.attempts), (500, TRIES), "{d:?}");
        assert!(d.last_error.contains("500"), "{d:?}");
        assert_eq!(d.event_type, "job.completed");
        assert!(d.delivered_at.is_none() && d.created_at.is_some(), "{d:?}");
    }
    let shown = &failed[0].url;
    assert!(
        !shown.contains("pa55word") && !shown.contains("bob") && !shown.contains("s3cret"),
        "secrets shown: {shown}"
    );
    assert!(shown.ends_with("/other?token=***&x=***"), "{shown}");
    assert_eq!(rx.requests().len(), 3 * TRIES as usize);

    // The default list is everything not delivered; filters and paging.
    assert_eq!(deliveries(a, list(&[])).await?.deliveries.len(), 3);
    let by_queue = pb::ListDeliveriesRequest {
        queue: "invoices".into(),
        ..Default::default()
    };
    assert_eq!(deliveries(a, by_queue).await?.deliveries.len(), 2);
    let by_type = |t: &str| pb::ListDeliveriesRequest {
        event_type: t.into(),
        ..Default::default()
    };
    assert_eq!(
        deliveries(a, by_type("job.completed"))
            .await?
            .deliveries
            .len(),
        3
    );
    assert_eq!(
        deliveries(a, by_type("agent.awake"))
            .await?
            .deliveries
            .len(),
        0
    );
    let first = deliveries(
        a,
        pb::ListDeliveriesRequest {
            page_size: 2,
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(first.deliveries.len(), 2);
    let rest = deliveries(
        a,
        pb::ListDeliveriesRequest {
            page_size: 2,
            page_token: first.next_page_token,
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(
        (rest.deliveries.len(), rest.next_page_token),
        (1, 0),
        "{rest:?}"
    );
    assert_eq!(rest.deliveries[0].job_id, job1);

    // Replay one while the endpoint still fails: a fresh budget of twelve tries, and
    // `attempts` keeps counting up (it fences the delivery lease).
    let other = failed[0].id;
    assert_eq!(replay(a, ids(&[other])).await?, 1);
    eventually(WAIT, "the replayed delivery to fail again", async || {
        let d = deliveries(a, list(&[pb::DeliveryState::Failed])).await?;
        Ok(d.deliveries
            .iter()
            .any(|d| d.id == other && d.attempts == 2 * TRIES)
            .then_some(()))
    })
    .await?;
    assert_eq!(rx.requests().len(), 4 * TRIES as usize);

    // The endpoint recovers: replay by id arrives with the same webhook-id as before.
    rx.answer_all(200);
    let newest_invoice = failed[1].id;
    assert_eq!(replay(a, ids(&[newest_invoice])).await?, 1);
    let done = wait_state(a, pb::DeliveryState::Delivered, 1).await?;
    assert_eq!(done[0].id, newest_invoice);
    assert_eq!((done[0].last_status, done[0].attempts), (200, TRIES + 1));
    assert!(done[0].delivered_at.is_some() && done[0].last_error.is_empty());
    let sent = webhook_ids(&rx);
    let msg = format!("msg_{newest_invoice}");
    assert_eq!(
        sent.iter().filter(|i| **i == msg).count(),
        TRIES as usize + 1
    );
    assert_eq!(sent.last(), Some(&msg));
    assert_eq!(deliveries(a, list(&[])).await?.deliveries.len(), 2);

    // Replay-all: only failed and disabled ones, restricted to a queue when asked.
    let all_failed = |queue: &str| pb::ReplayDeliveriesRequest {
        all_failed: true,
        queue: queue.into(),
        ..Default::default()
    };
    assert_eq!(replay(a, all_failed("other")).await?, 1);
    wait_state(a, pb::DeliveryState::Delivered, 2).await?;
    assert_eq!(replay(a, all_failed("")).await?, 1);
    wait_state(a, pb::DeliveryState::Delivered, 3).await?;
    assert_eq!(
        replay(a, all_failed("")).await?,
        0,
        "nothing failed is left"
    );
    assert!(deliveries(a, list(&[])).await?.deliveries.is_empty());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after: Vec<String> = webhook_ids(&rx).split_off(4 * TRIES as usize + 1);
    let unique: HashSet<&String> = after.iter().collect();
    assert_eq!((after.len(), unique.len()), (2, 2), "{after:?}");

    // A delivered delivery is sent again only when named by id.
    assert_eq!(replay(a, ids(&[newest_invoice])).await?, 1);
    rx.wait_for(4 * TRIES as usize + 4, WAIT).await?;
    assert_eq!(webhook_ids(&rx).last(), Some(&msg));
    Ok(())
}

#[tokio::test]
async fn replay_refuses_bad_input_and_deliveries_in_flight() -> anyhow::Result<()> {
    let rx = Receiver::start().await?;
    rx.stall.store(true, Ordering::SeqCst);
    let s = Setup::start(FAST).await?;
    let a = &s.admin;
    enqueue_done(&s, "q", &rx.url("/slow")).await?;
    eventually(WAIT, "a delivery in flight", async || {
        Ok((rx.stalled.load(Ordering::SeqCst) > 0).then_some(()))
    })
    .await?;
    let busy = wait_state(a, pb::DeliveryState::Delivering, 1).await?[0].id;

    let invalid = [
        pb::ReplayDeliveriesRequest::default(),
        ids(&[0]),
        ids(&[-3]),
        ids(&[busy; 1001]),
        pb::ReplayDeliveriesRequest {
            ids: vec![busy],
            all_failed: true,
            ..Default::default()
        },
        pb::ReplayDeliveriesRequest {
            ids: vec![busy],
            queue: "q".into(),
            ..Default::default()
        },
        pb::ReplayDeliveriesRequest {
            all_failed: true,
            queue: "no spaces".into(),
            ..Default::default()
        },
    ];
    for req in invalid {
        assert_eq!(
            code(replay(a, req.clone()).await),
            Code::InvalidArgument,
            "{req:?}"
        );
    }
    assert_eq!(code(replay(a, ids(&[busy + 1000])).await), Code::NotFound);
    // All or nothing: the in-flight one is refused, and so is the request naming it.
    assert_eq!(
        code(replay(a, ids(&[busy])).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(replay(a, ids(&[busy, busy + 1000])).await),
        Code::NotFound
    );
    let still = deliveries(a, list(&[pb::DeliveryState::Delivering])).await?;
    assert_eq!(still.deliveries.len(), 1, "a refused replay changed a row");

    let bad_lists = [
        pb::ListDeliveriesRequest {
            page_size: 501,
            ..Default::default()
        },
        pb::ListDeliveriesRequest {
            page_size: -1,
            ..Default::default()
        },
        pb::ListDeliveriesRequest {
            page_token: -5,
            ..Default::default()
        },
        pb::ListDeliveriesRequest {
            states: vec![0],
            ..Default::default()
        },
        pb::ListDeliveriesRequest {
            states: vec![42],
            ..Default::default()
        },
        pb::ListDeliveriesRequest {
            queue: "a b".into(),
            ..Default::default()
        },
        pb::ListDeliveriesRequest {
            event_type: "x".repeat(129),
            ..Default::default()
        },
    ];
    for req in bad_lists {
        assert_eq!(
            code(deliveries(a, req.clone()).await),
            Code::InvalidArgument,
            "{req:?}"
        );
    }
    Ok(())
}

/// Fields of a delivery that do not depend on ids and clocks.
fn stable(d: &Value) -> Value {
    json!({
        "event_type": d["event_type"], "queue": d["queue"], "lane": d["lane"],
        "state": d["state"], "attempts": d["attempts"], "last_status": d["last_status"],
        "delivered_at": d["delivered_at"],
    })
}

#[tokio::test]
async fn gateway_lists_and_replays_deliveries() -> anyhow::Result<()> {
    let rx = Receiver::start().await?;
    rx.answer_all(500);
    let s = Stack::start_full(FAST, &[]).await?;
    let h = &s.http;
    let mut jobs = Vec::new();
    for lane in ["resto-1", "resto-2"] {
        let id = s
            .enqueue(json!({"queue": "invoices", "lane": lane, "payload": {},
                            "callback_url": rx.url("/hook")}))
            .await?;
        let leased = s.agent.take("invoices").await?;
        s.agent.complete(&leased, "{}").await?;
        jobs.push(id);
    }
    let list = eventually(WAIT, "two failed deliveries", async || {
        let r = h
            .get("/admin/api/deliveries?state=failed", Some(ADMIN_KEY))
            .await?;
        anyhow::ensure!(r.status == 200, "{:?}", r.body);
        let n = r.body["deliveries"].as_array().map_or(0, Vec::len);
        Ok((n == 2).then_some(r.body))
    })
    .await?;
    let rows = list["deliveries"].as_array().cloned().unwrap_or_default();
    assert_eq!(list["next_cursor"], Value::Null);
    assert_eq!(rows[0]["job_id"], jobs[1], "newest first");
    assert_eq!(
        stable(&rows[0]),
        json!({"event_type": "job.completed", "queue": "invoices", "lane": "resto-2",
               "state": "failed", "attempts": TRIES, "last_status": 500, "delivered_at": null})
    );
    for field in ["created_at", "next_attempt_at", "last_error", "url"] {
        assert!(rows[0][field].is_string(), "{field}: {}", rows[0]);
    }
    let (newest, oldest) = (rows[0]["id"].clone(), rows[1]["id"].clone());

    // Admin key only, the JSON error shape, 422 for bad filters, 404 for unknown ids.
    let r = h.get("/admin/api/deliveries", None).await?;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    let r = h.get("/admin/api/deliveries", Some(READ_KEY)).await?;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = h
        .post(
            &format!("/admin/api/deliveries/{newest}/replay"),
            Some(READ_KEY),
            &json!({}),
        )
        .await?;
    assert_eq!(r.status, 403);
    let r = h
        .post("/admin/api/deliveries/replay", None, &json!({}))
        .await?;
    assert_eq!(r.status, 401);
    for (query, field) in [
        ("state=failed,bogus", "state"),
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("cursor=-1", "cursor"),
        ("queue=a%20b", "queue"),
    ] {
        let r = h
            .get(&format!("/admin/api/deliveries?{query}"), Some(ADMIN_KEY))
            .await?;
        assert_eq!((r.status, r.code()), (422, "invalid_field"), "{query}");
        assert_eq!(r.body["error"]["field"], field, "{query}");
    }
    for id in ["999999", "abc", "0"] {
        let r = h
            .post(
                &format!("/admin/api/deliveries/{id}/replay"),
                Some(ADMIN_KEY),
                &json!({}),
            )
            .await?;
        assert_eq!(
            (r.status, r.code()),
            (404, "not_found"),
            "{id}: {:?}",
            r.body
        );
    }
    let r = h
        .post(
            "/admin/api/deliveries/replay",
            Some(ADMIN_KEY),
            &json!({"nope": 1}),
        )
        .await?;
    assert_eq!(r.status, 422, "{:?}", r.body);

    // Paging.
    let r = h
        .get("/admin/api/deliveries?limit=1", Some(ADMIN_KEY))
        .await?;
    let cursor = r.body["next_cursor"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(cursor, newest.to_string());
    let r = h
        .get(
            &format!("/admin/api/deliveries?limit=1&cursor={cursor}"),
            Some(ADMIN_KEY),
        )
        .await?;
    assert_eq!(r.body["deliveries"][0]["id"], oldest);

    // Replay one, then all: both delivered with their own webhook-id.
    rx.answer_all(200);
    let r = h
        .post(
            &format!("/admin/api/deliveries/{oldest}/replay"),
            Some(ADMIN_KEY),
            &json!({}),
        )
        .await?;
    assert_eq!(
        (r.status, &r.body),
        (200, &json!({"success": true, "replayed": 1}))
    );
    let r = h
        .post(
            "/admin/api/deliveries/replay",
            Some(ADMIN_KEY),
            &json!({"queue": "invoices"}),
        )
        .await?;
    assert_eq!(r.body, json!({"success": true, "replayed": 1}));
    eventually(WAIT, "both delivered", async || {
        let r = h
            .get("/admin/api/deliveries?state=delivered", Some(ADMIN_KEY))
            .await?;
        let n = r.body["deliveries"].as_array().map_or(0, Vec::len);
        Ok((n == 2).then_some(()))
    })
    .await?;
    let last_two: Vec<String> = webhook_ids(&rx).split_off(2 * TRIES as usize);
    let mut want = vec![format!("msg_{oldest}"), format!("msg_{newest}")];
    let mut got = last_two.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let r = h.get("/admin/api/deliveries", Some(ADMIN_KEY)).await?;
    assert_eq!(r.body, json!({"deliveries": [], "next_cursor": null}));

    let spec = h.get("/openapi.json", None).await?;
    for path in [
        "/admin/api/deliveries",
        "/admin/api/deliveries/{id}/replay",
        "/admin/api/deliveries/replay",
    ] {
        assert!(
            spec.body["paths"][path].is_object(),
            "{path} not in OpenAPI"
        );
    }
    Ok(())
}
