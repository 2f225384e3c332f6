//! The check run after every load and chaos test: each lane row agrees with its jobs (head,
//! state, count of unfinished jobs) and each queue's counters with a full count — what
//! `transitions.check()` lists, which must be nothing.

use anyhow::{Context as _, bail};

/// Fails, listing every disagreement, unless lanes and counters agree with the jobs.
pub async fn assert_lanes_agree(database_url: &str) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(database_url)
        .await
        .context("connecting to check the lanes")?;
    let wrong: Vec<(String, String, Option<String>, String)> =
        sqlx::query_as("SELECT o_what, o_queue, o_lane, o_detail FROM transitions.check()")
            .fetch_all(&pool)
            .await?;
    pool.close().await;
    if !wrong.is_empty() {
        let lines: Vec<String> = wrong
            .iter()
            .map(|(what, q, lane, d)| format!("{what} {q}/{}: {d}", lane.as_deref().unwrap_or("-")))
            .collect();
        bail!(
            "{} disagreements between lanes, counters and jobs:\n{}",
            lines.len(),
            lines.join("\n")
        );
    }
    Ok(())
}
