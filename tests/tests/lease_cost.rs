//! The lease probe reads only rows it can take. Delayed jobs and lanes backing off wait in a
//! `scheduled` state, outside the ready indexes, so a backlog of them (here 30,000 delayed
//! high-priority jobs and 10,000 high-priority lanes waiting for their retry) costs a Lease
//! nothing: it touches as many buffer pages as on an empty queue. (Before, `run_at <= now()`
//! was filtered after the priority column: 300,000 delayed rows made the probe read 1,481
//! buffers.) The pages are counted by PostgreSQL itself for the lease's own transaction.

use lanes_tests::{Coordinator, fresh_database};
use sqlx::{Connection, PgConnection};

const Q: &str = "invoice_import";
const DELAYED: usize = 30_000;
const BACKING_OFF: usize = 10_000;

/// Buffer pages the one Lease statement read (hits and reads) in tables and indexes.
async fn lease_pages(db: &mut PgConnection, agent: &str) -> anyhow::Result<(i64, Option<i64>)> {
    let mut tx = db.begin().await?;
    let before: i64 = sqlx::query_scalar(PAGES).fetch_one(&mut *tx).await?;
    let id: Option<i64> = sqlx::query_scalar("SELECT (transitions.lease($1, ARRAY[$2], NULL)).id")
        .bind(agent)
        .bind(Q)
        .fetch_one(&mut *tx)
        .await?;
    let after: i64 = sqlx::query_scalar(PAGES).fetch_one(&mut *tx).await?;
    tx.rollback().await?;
    Ok((after - before, id))
}

// Per-transaction counters of the tables and indexes a lease may read.
const PAGES: &str = "SELECT coalesce(sum(pg_stat_get_xact_blocks_fetched(c.oid)), 0)::int8
    FROM pg_class c WHERE c.relname IN ('jobs', 'lanes', 'queues', 'queue_counts', 'agents')
       OR c.relname LIKE 'jobs\\_%' OR c.relname LIKE 'lanes\\_%'";

/// Enqueues `n` jobs, 1,000 per call, `delay` seconds ahead, priority 10, each unkeyed or in
/// a lane of its own.
async fn backlog(db: &mut PgConnection, n: usize, keyed: bool, delay_s: i64) -> anyhow::Result<()> {
    for start in (0..n).step_by(1000) {
        let count = 1000.min(n - start);
        let lanes: Vec<Option<String>> = (start..start + count)
            .map(|i| keyed.then(|| format!("backoff-{i}")))
            .collect();
        sqlx::query(
            "SELECT count(*) FROM transitions.enqueue(array_fill($1::text, ARRAY[$2]), $3,
                 array_fill('{}'::text, ARRAY[$2]), array_fill(10, ARRAY[$2]),
                 array_fill(NULL::timestamptz, ARRAY[$2]), array_fill($4::int8, ARRAY[$2]),
                 array_fill(NULL::text, ARRAY[$2]), array_fill(NULL::text, ARRAY[$2]),
                 array_fill(NULL::text, ARRAY[$2]), array_fill(NULL::text, ARRAY[$2]),
                 array_fill(NULL::text, ARRAY[$2]), array_fill(NULL::int, ARRAY[$2]),
                 array_fill(NULL::int8, ARRAY[$2]), array_fill(NULL::int8, ARRAY[$2]),
                 array_fill(NULL::int8, ARRAY[$2]), array_fill(NULL::int8, ARRAY[$2]),
                 array_fill(false, ARRAY[$2]))",
        )
        .bind(Q)
        .bind(count as i32)
        .bind(&lanes)
        .bind(delay_s)
        .execute(&mut *db)
        .await?;
    }
    sqlx::raw_sql("ANALYZE jobs; ANALYZE lanes")
        .execute(&mut *db)
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_delayed_backlog_costs_a_lease_nothing() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    // The coordinator installs the schema; its own tasks are not needed for this.
    let _coord = Coordinator::start(&db.url, &[]).await?;
    let mut conn = PgConnection::connect(&db.url).await?;
    sqlx::query("INSERT INTO queues (name) VALUES ($1)")
        .bind(Q)
        .execute(&mut conn)
        .await?;
    let one_ready = |lane: &'static str| {
        sqlx::query(
            "SELECT count(*) FROM transitions.enqueue(ARRAY[$1], ARRAY[$2], ARRAY['{}'],
               ARRAY[0], ARRAY[NULL::timestamptz], ARRAY[NULL::int8], ARRAY[NULL::text],
               ARRAY[NULL::text], ARRAY[NULL::text], ARRAY[NULL::text], ARRAY[NULL::text],
               ARRAY[NULL::int], ARRAY[NULL::int8], ARRAY[NULL::int8], ARRAY[NULL::int8],
               ARRAY[NULL::int8], ARRAY[false])",
        )
        .bind(Q)
        .bind(if lane.is_empty() { None } else { Some(lane) })
    };

    one_ready("").execute(&mut conn).await?;
    one_ready("ready-lane").execute(&mut conn).await?;
    let (empty_unkeyed, id) = lease_pages(&mut conn, "a").await?;
    assert!(id.is_some(), "the ready job is leased");

    backlog(&mut conn, DELAYED, false, 3600).await?;
    backlog(&mut conn, BACKING_OFF, true, 3600).await?;
    let (behind, id) = lease_pages(&mut conn, "a").await?;
    assert!(
        id.is_some(),
        "the ready job is leased past the delayed ones"
    );
    eprintln!(
        "pages read by a Lease: {empty_unkeyed} on an almost empty queue, {behind} behind {DELAYED} delayed jobs and {BACKING_OFF} lanes backing off"
    );
    assert!(
        behind <= empty_unkeyed + 4,
        "the backlog made the lease read {behind} pages (vs {empty_unkeyed})"
    );
    Ok(())
}
