//! The admin page's AdminService RPCs: lanes (blocked, busiest, one lane's jobs), a queue's
//! per-minute history, and the bulk retry or cancel of a queue's failed jobs. `admin.rs`
//! delegates to these so each RPC's checks and mapping sit in one place.

use super::{Ctx, convert};
use crate::db::lanes;
use crate::db::states::LaneState;
use crate::db::transitions::bulk;
use crate::error::Error;
use crate::validate;
use lanes_proto::limits::admin as ranges;
use lanes_proto::v1 as pb;
use tonic::Status;

/// `0` → `default`, else the value checked against `range`.
fn or_default(v: i32, range: lanes_proto::limits::Range, default: i64) -> Result<i64, Error> {
    let v = range.check(v.into())?;
    Ok(if v == 0 { default } else { v })
}

/// An optional queue filter: empty = every queue, else a checked name.
fn queue_filter(q: &str) -> Result<Option<&str>, Error> {
    if q.is_empty() {
        return Ok(None);
    }
    validate::queue_name(q)?;
    Ok(Some(q))
}

fn lane_state(s: LaneState) -> pb::LaneState {
    match s {
        LaneState::Scheduled => pb::LaneState::Scheduled,
        LaneState::Ready => pb::LaneState::Ready,
        LaneState::Running => pb::LaneState::Running,
        LaneState::Blocked => pb::LaneState::Blocked,
    }
}

fn lane_info(l: lanes::LaneRow) -> pb::LaneInfo {
    pb::LaneInfo {
        queue: l.queue,
        lane: l.lane_key,
        state: lane_state(l.state) as i32,
        queued: l.queued,
        head_job_id: l.head_job_id,
        running_job_id: l.running_job_id.unwrap_or(0),
        oldest_pending_at: l.oldest_pending_at.map(convert::ts),
        since: Some(convert::ts(l.since)),
    }
}

/// ListLanes.
pub async fn list_lanes(
    ctx: &Ctx,
    r: pb::ListLanesRequest,
) -> Result<pb::ListLanesResponse, Status> {
    let queue = queue_filter(&r.queue)?;
    let limit = or_default(r.limit, ranges::LANES_LIMIT, 20)?;
    let rows = match pb::LaneFilter::try_from(r.filter) {
        Ok(pb::LaneFilter::Blocked) => lanes::blocked(&ctx.pool, queue, limit).await?,
        Ok(pb::LaneFilter::Busiest) => lanes::busiest(&ctx.pool, queue, limit).await?,
        _ => {
            return Err(Error::from(lanes_proto::limits::Invalid::new(
                "filter",
                format!("filter {} is unknown; use BLOCKED or BUSIEST", r.filter),
            ))
            .into());
        }
    };
    Ok(pb::ListLanesResponse {
        lanes: rows.into_iter().map(lane_info).collect(),
    })
}

/// LaneJobs.
pub async fn lane_jobs(ctx: &Ctx, r: pb::LaneJobsRequest) -> Result<pb::LaneJobsResponse, Status> {
    validate::queue_name(&r.queue)?;
    let lane = validate::optional_key("lane", &r.lane)?.ok_or_else(|| {
        Error::from(lanes_proto::limits::Invalid::new(
            "lane",
            "lane is empty; give the lane's key",
        ))
    })?;
    let finished = or_default(r.finished_limit, ranges::LANE_FINISHED, 20)?;
    let (mut unfinished, done) = lanes::lane_jobs(&ctx.pool, &r.queue, &lane, finished).await?;
    let more_unfinished = unfinished.len() as i64 > lanes::MAX_UNFINISHED;
    unfinished.truncate(lanes::MAX_UNFINISHED as usize);
    Ok(pb::LaneJobsResponse {
        unfinished: unfinished.into_iter().map(convert::job).collect(),
        finished: done.into_iter().map(convert::job).collect(),
        more_unfinished,
    })
}

/// QueueHistory.
pub async fn queue_history(
    ctx: &Ctx,
    r: pb::QueueHistoryRequest,
) -> Result<pb::QueueHistoryResponse, Status> {
    let queue = queue_filter(&r.queue)?;
    let minutes = or_default(r.minutes, ranges::HISTORY_MINUTES, 60)?;
    // In range 1-1440 by the check above.
    let minutes = i32::try_from(minutes).unwrap_or(60);
    let rows = ctx.history.minutes(&ctx.pool, queue, minutes).await?;
    Ok(pb::QueueHistoryResponse {
        minutes: rows
            .into_iter()
            .map(|m| pb::HistoryMinute {
                minute: Some(convert::ts(m.minute)),
                completed: m.completed,
                failed: m.failed,
                wait_p50_ms: m.wait_p50_ms,
                wait_p95_ms: m.wait_p95_ms,
            })
            .collect(),
    })
}

/// What a bulk call does to each failed job.
#[derive(Debug, Clone, Copy)]
pub enum BulkAction {
    /// Back to pending (transitions.retry).
    Retry,
    /// Discarded: cancelled (transitions.cancel).
    Cancel,
}

/// BulkRetryFailed and BulkCancelFailed.
pub async fn bulk_failed(
    ctx: &Ctx,
    r: pb::BulkFailedRequest,
    action: BulkAction,
) -> Result<pb::BulkFailedResponse, Status> {
    validate::queue_name(&r.queue)?;
    let b = match action {
        BulkAction::Retry => bulk::retry_failed(&ctx.pool, &r.queue).await?,
        BulkAction::Cancel => bulk::cancel_failed(&ctx.pool, &r.queue).await?,
    };
    tracing::info!(queue = %r.queue, ?action, count = b.count, more = b.more, "bulk action on failed jobs");
    if b.count > 0 {
        if matches!(action, BulkAction::Cancel) {
            // The same counter a single cancel bumps, once per job.
            for _ in 0..b.count {
                crate::metrics::cancelled(&r.queue);
            }
        }
        // Retried jobs are ready, and cancelled failed heads free their blocked lanes.
        let ready = crate::db::stats::ready(&ctx.pool, Some(&r.queue)).await?;
        ctx.waker.request(Some(&r.queue), ready, "wake");
    }
    Ok(pb::BulkFailedResponse {
        count: b.count,
        more: b.more,
    })
}
