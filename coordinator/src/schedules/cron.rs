//! Cron expressions read in a time zone (croner, chrono-tz): parsing with the reasons
//! users see, the next fire times, and the plan of one scheduler pass — which ticks to fire
//! now, given what was dealt with already, the database's clock and the misfire grace.
//! Daylight saving follows croner: a time skipped by the spring change fires at the first
//! time after it, a time repeated by the autumn change fires once.
//!
//! Must never: read a clock. Every time here is given by the caller (the database's now()).

use chrono::{DateTime, Offset as _, TimeZone as _, Timelike as _, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::{Cron, JobType};
use lanes_proto::limits::Invalid;
use std::time::Duration;

/// How many next fire times answers show.
pub const NEXT_FIRES: usize = 5;

/// The most ticks one pass fires for one schedule (the rest go to the next pass).
pub const MAX_TICKS_PER_PASS: usize = 1000;

/// A parsed cron expression in its time zone.
#[derive(Debug, Clone)]
pub struct Timing {
    cron: Cron,
    tz: Tz,
}

/// Parses `cron`: 5 fields, or 6 with seconds first (no year field). The refusal names the
/// field `cron` and quotes the parser's reason.
pub fn parse_cron(cron: &str) -> Result<Cron, Invalid> {
    if cron.len() > 256 {
        return Err(Invalid::new(
            "cron",
            format!("cron is {} bytes; the limit is 256", cron.len()),
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(cron)
        .map_err(|e| Invalid::new("cron", format!("cron {cron:?} does not parse: {e}")))
}

/// Parses an IANA time zone name (`timezone`); empty means UTC.
pub fn parse_timezone(name: &str) -> Result<Tz, Invalid> {
    if name.is_empty() {
        return Ok(Tz::UTC);
    }
    name.parse::<Tz>().map_err(|_| {
        Invalid::new(
            "timezone",
            format!(
                "timezone {:?} is not a known IANA time zone; use a name like Europe/Paris or UTC",
                lanes_proto::limits::tail(name, 64)
            ),
        )
    })
}

impl Timing {
    /// The cron `cron` read in time zone `timezone`, both checked.
    pub fn new(cron: &str, timezone: &str) -> Result<Timing, Invalid> {
        Ok(Timing {
            cron: parse_cron(cron)?,
            tz: parse_timezone(timezone)?,
        })
    }

    /// The fire times strictly after `after`, in order (ends where croner finds none).
    /// Stepped one search at a time: croner's own iterator skips every other second of a
    /// per-second pattern (3.0.1).
    pub fn after(&self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        std::iter::successors(self.next_after(after), |t| self.next_after(*t))
    }

    /// The first fire time strictly after `t`.
    fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        // Whole seconds (cut in UTC: a local time in the repeated hour has no single
        // instant to rebuild): croner keeps the fraction of the time it starts from.
        let found = self.search(t.with_nanosecond(0)?.with_timezone(&self.tz), local)?;
        // croner searches local times, so an interval pattern would skip the hour the
        // autumn change repeats: search again from the change, on the repeated local times.
        if self.cron.determine_job_type() == JobType::IntervalWildcard
            && found.offset().fix().local_minus_utc() < local.offset().fix().local_minus_utc()
        {
            let back = self.change_between(t, found.with_timezone(&Utc));
            let before = back.with_timezone(&self.tz).naive_local() - chrono::Duration::seconds(1);
            if let Some(from) = self.tz.from_local_datetime(&before).earliest()
                && let Some(again) = self.search(from, local).filter(|a| *a < found)
            {
                return Some(again.with_timezone(&Utc));
            }
        }
        Some(found.with_timezone(&Utc))
    }

    /// The first fire time after `from` (croner's search) that is after `t` too.
    fn search(&self, mut from: DateTime<Tz>, t: DateTime<Tz>) -> Option<DateTime<Tz>> {
        loop {
            let found = self.cron.find_next_occurrence(&from, false).ok()?;
            if found > t {
                return Some(found);
            }
            // Within the repeated hour croner answers the earlier of a local time's two
            // instants; past `t` already, the later one is meant for an interval pattern
            // (which fires in both hours) and none for a fixed time (which fires once, in
            // the first): search on after it.
            let later = self.tz.from_local_datetime(&found.naive_local()).latest()?;
            if later > t && self.cron.determine_job_type() == JobType::IntervalWildcard {
                return Some(later);
            }
            from = later;
        }
    }

    /// The first whole second in (a, b] with b's UTC offset (a's differs).
    fn change_between(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> DateTime<Utc> {
        let offset = |t: DateTime<Utc>| t.with_timezone(&self.tz).offset().fix();
        let target = offset(b);
        let (mut lo, mut hi) = (a.timestamp(), b.timestamp());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            match DateTime::from_timestamp(mid, 0) {
                Some(m) if offset(m) == target => hi = mid,
                Some(_) => lo = mid,
                None => break,
            }
        }
        DateTime::from_timestamp(hi, 0).unwrap_or(b)
    }

    /// The next `n` fire times after `now`, as RFC 3339 text with the offset of the zone.
    pub fn next_fires(&self, now: DateTime<Utc>, n: usize) -> Vec<String> {
        self.after(now)
            .take(n)
            .map(|t| t.with_timezone(&self.tz).to_rfc3339())
            .collect()
    }

    /// The latest fire time at or before `t`, if croner finds one.
    fn at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Whole seconds: fire times are, and croner keeps the fraction it starts from.
        let start = t.with_nanosecond(0)?.with_timezone(&self.tz);
        self.cron
            .find_previous_occurrence(&start, true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
            .filter(|found| *found <= t)
    }

    /// What one pass does for a schedule whose ticks up to `through` are dealt with, at
    /// database time `now`: ticks within `grace` of now (late by the scheduler's own delay)
    /// all fire; older ones were missed while every replica was down, and fire once (the
    /// latest of them) when `run_once`, else not at all.
    pub fn plan(
        &self,
        through: DateTime<Utc>,
        now: DateTime<Utc>,
        grace: Duration,
        run_once: bool,
    ) -> Plan {
        let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let cutoff = now.checked_sub_signed(grace).unwrap_or(through);
        let mut fire = Vec::new();
        let mut missed = false;
        if cutoff > through
            && let Some(last) = self.at_or_before(cutoff).filter(|t| *t > through)
        {
            missed = true;
            if run_once {
                fire.push(last);
            }
        }
        let mut capped = false;
        for t in self.after(through.max(cutoff)) {
            if t > now {
                break;
            }
            if fire.len() == MAX_TICKS_PER_PASS {
                capped = true;
                break;
            }
            fire.push(t);
        }
        let through = match fire.last() {
            Some(last) if capped => *last,
            _ => now,
        };
        Plan {
            next: self.after(through).next(),
            fire,
            missed,
            through,
        }
    }
}

/// One pass's work for one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Ticks to fire now, oldest first.
    pub fire: Vec<DateTime<Utc>>,
    /// Some ticks were missed (skipped, or folded into one under run_once).
    pub missed: bool,
    /// Ticks up to here are dealt with after this pass.
    pub through: DateTime<Utc>,
    /// The next tick after `through` (None: the cron has no more).
    pub next: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    #[test]
    fn eight_in_paris_follows_daylight_saving() {
        // 2027's spring change in Paris is on Sunday 28 March (02:00 → 03:00).
        let t = Timing::new("0 0 8 * * *", "Europe/Paris").expect("valid");
        let fires = t.next_fires(at("2027-03-26T12:00:00Z"), NEXT_FIRES);
        assert_eq!(
            fires,
            [
                "2027-03-27T08:00:00+01:00",
                "2027-03-28T08:00:00+02:00",
                "2027-03-29T08:00:00+02:00",
                "2027-03-30T08:00:00+02:00",
                "2027-03-31T08:00:00+02:00",
            ]
        );
        // And back on Sunday 31 October 2027: 08:00 is 07:00 UTC again.
        let autumn = t.next_fires(at("2027-10-30T12:00:00Z"), 2);
        assert_eq!(
            autumn,
            ["2027-10-31T08:00:00+01:00", "2027-11-01T08:00:00+01:00"]
        );
        let utc: Vec<_> = t.after(at("2027-03-27T00:00:00Z")).take(2).collect();
        assert_eq!(
            utc,
            [at("2027-03-27T07:00:00Z"), at("2027-03-28T06:00:00Z")]
        );
    }

    #[test]
    fn a_time_skipped_or_repeated_by_the_change_fires_once() {
        let t = Timing::new("30 2 * * *", "Europe/Paris").expect("valid");
        // 02:30 does not exist on 28 March 2027: it fires at 03:00 (the first time after).
        let spring: Vec<_> = t.after(at("2027-03-27T12:00:00Z")).take(2).collect();
        assert_eq!(
            spring,
            [at("2027-03-28T01:00:00Z"), at("2027-03-29T00:30:00Z")]
        );
        // 02:30 happens twice on 31 October 2027: it fires once.
        let autumn: Vec<_> = t.after(at("2027-10-30T12:00:00Z")).take(2).collect();
        assert_eq!(
            autumn,
            [at("2027-10-31T00:30:00Z"), at("2027-11-01T01:30:00Z")]
        );
    }

    #[test]
    fn bad_cron_and_timezone_are_refused_with_their_field() {
        let e = Timing::new("61 * * * *", "UTC").expect_err("minute 61");
        assert_eq!(e.field, "cron");
        assert!(e.message.contains("does not parse"), "{}", e.message);
        let e = Timing::new("* * * * * * *", "UTC").expect_err("7 fields");
        assert_eq!(e.field, "cron");
        let e = Timing::new("* * * * *", "Europe/Pariss").expect_err("unknown zone");
        assert_eq!(e.field, "timezone");
        assert!(
            Timing::new("*/5 * * * * *", "").is_ok(),
            "empty zone is UTC"
        );
    }

    #[test]
    fn a_pass_fires_late_ticks_within_the_grace() {
        let t = Timing::new("* * * * * *", "UTC").expect("valid");
        let through = at("2027-01-01T00:00:00Z");
        let p = t.plan(
            through,
            at("2027-01-01T00:00:03.5Z"),
            Duration::from_secs(60),
            false,
        );
        assert_eq!(
            p.fire,
            [
                at("2027-01-01T00:00:01Z"),
                at("2027-01-01T00:00:02Z"),
                at("2027-01-01T00:00:03Z")
            ]
        );
        assert!(!p.missed);
        assert_eq!(p.through, at("2027-01-01T00:00:03.5Z"));
        assert_eq!(p.next, Some(at("2027-01-01T00:00:04Z")));
    }

    #[test]
    fn missed_ticks_are_skipped_or_folded_into_one() {
        let t = Timing::new("* * * * * *", "UTC").expect("valid");
        let through = at("2027-01-01T00:00:00Z");
        let now = at("2027-01-01T00:01:00.5Z");
        let grace = Duration::from_secs(2);
        let skip = t.plan(through, now, grace, false);
        assert!(skip.missed);
        // Only the ticks within the grace: 00:00:59 and 00:01:00.
        assert_eq!(
            skip.fire,
            [at("2027-01-01T00:00:59Z"), at("2027-01-01T00:01:00Z")]
        );
        let once = t.plan(through, now, grace, true);
        assert_eq!(
            once.fire,
            [
                at("2027-01-01T00:00:58Z"),
                at("2027-01-01T00:00:59Z"),
                at("2027-01-01T00:01:00Z")
            ]
        );
    }

    #[test]
    fn every_second_from_a_fractional_time() {
        let t = Timing::new("* * * * * *", "Europe/Paris").expect("valid");
        let got: Vec<_> = t.after(at("2027-01-01T00:00:00.25Z")).take(3).collect();
        assert_eq!(
            got,
            [
                at("2027-01-01T00:00:01Z"),
                at("2027-01-01T00:00:02Z"),
                at("2027-01-01T00:00:03Z")
            ]
        );
        // Through the autumn change (02:00-03:00 local happens twice): no second lost or
        // doubled, in UTC.
        let start = at("2027-10-31T00:59:58Z");
        let got: Vec<_> = t.after(start).take(5).collect();
        let want: Vec<_> = (1..=5)
            .map(|s| start + chrono::Duration::seconds(s))
            .collect();
        assert_eq!(got, want);
        let every_15 = Timing::new("*/15 * * * *", "Europe/Paris").expect("valid");
        let got: Vec<_> = every_15.after(at("2027-10-31T00:40:00Z")).take(3).collect();
        assert_eq!(
            got,
            [
                at("2027-10-31T00:45:00Z"),
                at("2027-10-31T01:00:00Z"),
                at("2027-10-31T01:15:00Z")
            ]
        );
    }

    #[test]
    fn a_pass_with_nothing_due_fires_nothing() {
        let t = Timing::new("0 0 8 * * *", "Europe/Paris").expect("valid");
        let now = at("2027-01-01T10:00:00Z");
        let p = t.plan(now, now, Duration::from_secs(60), true);
        assert!(p.fire.is_empty() && !p.missed);
        assert_eq!(p.next, Some(at("2027-01-02T07:00:00Z")));
    }
}
