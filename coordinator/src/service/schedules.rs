//! `lanes.v1.ScheduleService`: create, list, read, change and delete recurring schedules.
//! Every field is checked before anything is stored, with the limits of an enqueue for the
//! job template; answers carry the next fire times in the schedule's time zone.

use super::{Ctx, convert};
use crate::db::schedules::{self, Missed, NewSchedule, SchedulePatch, ScheduleRow};
use crate::error::Error;
use crate::schedules::cron::{NEXT_FIRES, Timing, parse_cron, parse_timezone};
use crate::schedules::scheduler::Scheduler;
use crate::validate;
use lanes_proto::limits::{self, Invalid};
use lanes_proto::v1 as pb;
use lanes_proto::v1::schedule_service_server::ScheduleService;
use tonic::{Request, Response, Status};

/// The schedule service.
pub struct Schedules {
    ctx: Ctx,
    scheduler: Scheduler,
}

impl Schedules {
    /// Builds the service; `scheduler` is nudged when a schedule changes.
    pub fn new(ctx: Ctx, scheduler: Scheduler) -> Self {
        Schedules { ctx, scheduler }
    }

    fn payload(&self, text: &str) -> Result<String, Error> {
        validate::json("payload", text, self.ctx.max_payload_bytes, true)
    }
}

/// Checks a schedule name: 1-128 characters of `[A-Za-z0-9_.-]`.
pub fn name(name: &str) -> Result<(), Invalid> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if name.is_empty() || name.len() > 128 || !name.chars().all(ok) {
        return Err(Invalid::new(
            "name",
            format!(
                "name {:?} is not allowed; use 1-128 characters of A-Z a-z 0-9 _ . -",
                limits::tail(name, 140)
            ),
        ));
    }
    Ok(())
}

/// The missed policy of a request; UNSPECIFIED is `unspecified` (create: SKIP), or refused
/// when there is none (an update naming the field must say which).
fn missed(p: i32, unspecified: Option<Missed>) -> Result<Missed, Invalid> {
    let refused = || {
        Invalid::new(
            "missed",
            format!("missed {p} is unknown; use SKIP or RUN_ONCE"),
        )
    };
    match pb::MissedPolicy::try_from(p) {
        Ok(pb::MissedPolicy::Unspecified) => unspecified.ok_or_else(refused),
        Ok(pb::MissedPolicy::Skip) => Ok(Missed::Skip),
        Ok(pb::MissedPolicy::RunOnce) => Ok(Missed::RunOnce),
        Err(_) => Err(refused()),
    }
}

/// A stored schedule as the API shows it.
fn schedule(s: ScheduleRow) -> pb::Schedule {
    let next_fires = match (s.enabled, Timing::new(&s.cron, &s.timezone)) {
        (true, Ok(t)) => t.next_fires(s.now, NEXT_FIRES),
        _ => Vec::new(),
    };
    pb::Schedule {
        missed: match s.missed {
            Missed::Skip => pb::MissedPolicy::Skip,
            Missed::RunOnce => pb::MissedPolicy::RunOnce,
        } as i32,
        next_fires,
        created_at: Some(convert::ts(s.created_at)),
        updated_at: Some(convert::ts(s.updated_at)),
        name: s.name,
        cron: s.cron,
        timezone: s.timezone,
        queue: s.queue,
        lane: s.lane.unwrap_or_default(),
        payload: s.payload,
        priority: s.priority,
        enabled: s.enabled,
    }
}

/// The stored time zone: the name as given, "UTC" for empty.
fn zone_name(tz: &str) -> Result<String, Invalid> {
    Ok(parse_timezone(tz)?.name().to_owned())
}

#[tonic::async_trait]
impl ScheduleService for Schedules {
    async fn create_schedule(
        &self,
        req: Request<pb::CreateScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let r = req.into_inner();
        name(&r.name).map_err(Error::from)?;
        parse_cron(&r.cron).map_err(Error::from)?;
        let new = NewSchedule {
            timezone: zone_name(&r.timezone).map_err(Error::from)?,
            lane: validate::optional_key("lane", &r.lane)?,
            payload: self.payload(&r.payload)?,
            priority: limits::PRIORITY
                .check_i32(r.priority.into())
                .map_err(Error::from)?,
            missed: missed(r.missed, Some(Missed::Skip)).map_err(Error::from)?,
            enabled: r.enabled.unwrap_or(true),
            queue: {
                validate::queue_name(&r.queue)?;
                r.queue
            },
            name: r.name,
            cron: r.cron,
        };
        self.ctx.known_queue(&new.queue).await?;
        let s = schedules::create(&self.ctx.pool, &new).await?;
        self.scheduler.changed();
        Ok(Response::new(schedule(s)))
    }

    async fn list_schedules(
        &self,
        _: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let all = schedules::list(&self.ctx.pool).await?;
        Ok(Response::new(pb::ListSchedulesResponse {
            schedules: all.into_iter().map(schedule).collect(),
        }))
    }

    async fn get_schedule(
        &self,
        req: Request<pb::GetScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let r = req.into_inner();
        name(&r.name).map_err(Error::from)?;
        Ok(Response::new(schedule(
            schedules::get(&self.ctx.pool, &r.name).await?,
        )))
    }

    async fn update_schedule(
        &self,
        req: Request<pb::UpdateScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let r = req.into_inner();
        name(&r.name).map_err(Error::from)?;
        if let Some(c) = &r.cron {
            parse_cron(c).map_err(Error::from)?;
        }
        if let Some(q) = &r.queue {
            validate::queue_name(q)?;
        }
        let patch = SchedulePatch {
            timezone: r
                .timezone
                .as_deref()
                .map(zone_name)
                .transpose()
                .map_err(Error::from)?,
            lane: r
                .lane
                .as_deref()
                .map(|l| validate::optional_key("lane", l))
                .transpose()?,
            payload: r.payload.as_deref().map(|p| self.payload(p)).transpose()?,
            priority: r
                .priority
                .map(|p| limits::PRIORITY.check_i32(p.into()))
                .transpose()
                .map_err(Error::from)?,
            missed: r
                .missed
                .map(|m| missed(m, None))
                .transpose()
                .map_err(Error::from)?,
            enabled: r.enabled,
            cron: r.cron,
            queue: r.queue,
        };
        if let Some(q) = &patch.queue {
            self.ctx.known_queue(q).await?;
        }
        let s = schedules::update(&self.ctx.pool, &r.name, &patch).await?;
        self.scheduler.changed();
        Ok(Response::new(schedule(s)))
    }

    async fn delete_schedule(
        &self,
        req: Request<pb::DeleteScheduleRequest>,
    ) -> Result<Response<pb::DeleteScheduleResponse>, Status> {
        let r = req.into_inner();
        name(&r.name).map_err(Error::from)?;
        schedules::delete(&self.ctx.pool, &r.name).await?;
        self.scheduler.changed();
        Ok(Response::new(pb::DeleteScheduleResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name("nightly-report.v2_fr").is_ok());
        assert!(name("").is_err());
        assert!(name("a b").is_err());
        assert!(name("a/b").is_err());
        assert!(name(&"a".repeat(129)).is_err());
        assert_eq!(name("é").expect_err("not ASCII").field, "name");
    }

    #[test]
    fn missed_policies() {
        assert_eq!(
            missed(0, Some(Missed::Skip)).expect("default"),
            Missed::Skip
        );
        assert_eq!(missed(2, None).expect("run once"), Missed::RunOnce);
        assert_eq!(missed(0, None).expect_err("unspecified").field, "missed");
        assert!(missed(9, None).is_err());
    }
}
