//! The record of handler runs kept by the `record-run` handler (one line per run that
//! finished: "lane seq start_ns end_ns pid job agent_pid token attempt") and the invariants
//! the fault and chaos tests check over the whole record: each job ran, lanes never ran two
//! jobs at once, each lane ran in enqueue order, and a job ran again only for a reason the
//! test accepts (its agent died after the handler finished, before its Complete landed).
//!
//! Must never: accept a repeated run without the test's reason, or judge the order of a lane
//! by anything but the runs' own start and end times.

use anyhow::{Context as _, bail};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// One finished handler run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The job's lane, as the payload gave it.
    pub lane: String,
    /// Its place in the lane, as the payload gave it.
    pub seq: u64,
    /// When the handler started, ns since the epoch.
    pub start: u128,
    /// When it finished its work (just before recording), ns since the epoch.
    pub end: u128,
    /// The handler's pid.
    pub pid: u32,
    /// The job id.
    pub job: i64,
    /// The agent's pid (the handler's parent).
    pub agent_pid: u32,
    /// The lease's fencing token.
    pub token: i64,
    /// The attempt number.
    pub attempt: i32,
}

/// Reads every run recorded in `path` (none if the file does not exist yet).
pub fn read(path: &Path) -> anyhow::Result<Vec<Run>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines().map(parse).collect()
}

fn parse(line: &str) -> anyhow::Result<Run> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != 9 {
        bail!("malformed record {line:?}");
    }
    let num = |i: usize| -> anyhow::Result<i128> {
        f[i].parse()
            .with_context(|| format!("field {i} of {line:?}"))
    };
    Ok(Run {
        lane: f[0].to_owned(),
        seq: u64::try_from(num(1)?)?,
        start: u128::try_from(num(2)?)?,
        end: u128::try_from(num(3)?)?,
        pid: u32::try_from(num(4)?)?,
        job: i64::try_from(num(5)?)?,
        agent_pid: u32::try_from(num(6)?)?,
        token: i64::try_from(num(7)?)?,
        attempt: i32::try_from(num(8)?)?,
    })
}

/// A run that was followed by another run of its job, and why that was legitimate.
#[derive(Debug, Clone)]
pub struct Rerun {
    /// The earlier run.
    pub run: Run,
    /// The accepted reason.
    pub why: String,
}

/// What the record shows; every list but `reruns` must be empty.
#[derive(Debug, Default)]
pub struct Report {
    /// Jobs enqueued.
    pub jobs: usize,
    /// Handler runs recorded.
    pub runs: usize,
    /// Runs followed by another run of the same job, for an accepted reason.
    pub reruns: Vec<Rerun>,
    /// Runs followed by another run of the same job without one: a job run twice where
    /// the first run's outcome should have stood (a duplicate completion).
    pub duplicates: Vec<String>,
    /// Two runs of one lane at the same time.
    pub overlaps: Vec<String>,
    /// A lane's job that started before an earlier job of the lane had finished running.
    pub fifo_violations: Vec<String>,
    /// Jobs enqueued that never ran to the end.
    pub missing: Vec<String>,
    /// Runs of jobs that were not enqueued, or with another lane or place than enqueued.
    pub unexpected: Vec<String>,
}

impl Report {
    /// One line of figures.
    pub fn summary(&self) -> String {
        format!(
            "{} jobs, {} handler runs, {} re-runs, {} duplicates, {} lane overlaps, \
             {} FIFO violations, {} missing, {} unexpected",
            self.jobs,
            self.runs,
            self.reruns.len(),
            self.duplicates.len(),
            self.overlaps.len(),
            self.fifo_violations.len(),
            self.missing.len(),
            self.unexpected.len()
        )
    }

    /// Fails, listing the first few of each, unless nothing but accepted re-runs was found.
    pub fn assert_clean(&self) -> anyhow::Result<()> {
        let lists = [
            ("duplicates", &self.duplicates),
            ("lane overlaps", &self.overlaps),
            ("FIFO violations", &self.fifo_violations),
            ("missing", &self.missing),
            ("unexpected", &self.unexpected),
        ];
        let mut wrong = String::new();
        for (what, list) in lists {
            if !list.is_empty() {
                let first: Vec<&str> = list.iter().take(10).map(String::as_str).collect();
                wrong.push_str(&format!(
                    "\n{what} ({}):\n  {}",
                    list.len(),
                    first.join("\n  ")
                ));
            }
        }
        if !wrong.is_empty() {
            bail!("{}{wrong}", self.summary());
        }
        Ok(())
    }
}

/// Checks `runs` against the jobs enqueued (`expected`: job id → (lane, seq)); `explain`
/// says why a run was legitimately followed by another run of its job, if it was.
pub fn check(
    runs: &[Run],
    expected: &BTreeMap<i64, (String, u64)>,
    explain: impl Fn(&Run) -> Option<String>,
) -> Report {
    let mut report = Report {
        jobs: expected.len(),
        runs: runs.len(),
        ..Report::default()
    };
    let mut by_job: HashMap<i64, Vec<&Run>> = HashMap::new();
    for r in runs {
        match expected.get(&r.job) {
            Some((lane, seq)) if *lane == r.lane && *seq == r.seq => {}
            other => report
                .unexpected
                .push(format!("{r:?} (enqueued as {other:?})")),
        }
        by_job.entry(r.job).or_default().push(r);
    }
    for (job, (lane, seq)) in expected {
        if !by_job.contains_key(job) {
            report.missing.push(format!("job {job} ({lane}/{seq})"));
        }
    }
    for (_, mut rs) in by_job {
        rs.sort_by_key(|r| (r.token, r.start));
        for pair in rs.windows(2) {
            let (earlier, later) = (pair[0], pair[1]);
            if earlier.token == later.token {
                report
                    .duplicates
                    .push(format!("one lease ran twice: {earlier:?} and {later:?}"));
                continue;
            }
            match explain(earlier) {
                Some(why) => report.reruns.push(Rerun {
                    run: earlier.clone(),
                    why,
                }),
                None => report.duplicates.push(format!(
                    "ran again with no reason: {earlier:?}, then {later:?}"
                )),
            }
        }
    }
    check_lanes(runs, &mut report);
    report
}

/// Overlaps and FIFO order, lane by lane: sorted by start, each run must begin after every
/// earlier run of its lane ended, and its place in the lane may not go back.
fn check_lanes(runs: &[Run], report: &mut Report) {
    let mut by_lane: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    for r in runs {
        by_lane.entry(&r.lane).or_default().push(r);
    }
    for (lane, mut rs) in by_lane {
        rs.sort_by_key(|r| r.start);
        let mut latest: Option<&Run> = None;
        for r in rs {
            if let Some(prev) = latest {
                if r.start < prev.end {
                    report.overlaps.push(format!(
                        "lane {lane}: job {} (seq {}) started {} µs before job {} (seq {}) ended",
                        r.job,
                        r.seq,
                        (prev.end - r.start) / 1000,
                        prev.job,
                        prev.seq
                    ));
                }
                if r.seq < prev.seq {
                    report.fifo_violations.push(format!(
                        "lane {lane}: seq {} (job {}) ran after seq {} (job {})",
                        r.seq, r.job, prev.seq, prev.job
                    ));
                }
            }
            if latest.is_none_or(|p| r.end >= p.end) {
                latest = Some(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lane: &str, seq: u64, start: u128, end: u128, job: i64, token: i64) -> Run {
        Run {
            lane: lane.into(),
            seq,
            start,
            end,
            pid: 1,
            job,
            agent_pid: 7,
            token,
            attempt: 1,
        }
    }

    #[test]
    fn a_clean_record_passes_and_each_fault_is_caught() {
        let expected: BTreeMap<i64, (String, u64)> = [
            (1, ("a".into(), 0)),
            (2, ("a".into(), 1)),
            (3, ("b".into(), 0)),
        ]
        .into();
        let clean = vec![
            run("a", 0, 0, 10, 1, 1),
            run("a", 1, 10, 20, 2, 2),
            run("b", 0, 5, 9, 3, 3),
        ];
        let r = check(&clean, &expected, |_| None);
        assert!(r.assert_clean().is_ok(), "{r:?}");

        let overlap = vec![
            run("a", 0, 0, 10, 1, 1),
            run("a", 1, 9, 20, 2, 2),
            run("b", 0, 5, 9, 3, 3),
        ];
        assert_eq!(check(&overlap, &expected, |_| None).overlaps.len(), 1);

        let reversed = vec![
            run("a", 1, 0, 10, 2, 1),
            run("a", 0, 10, 20, 1, 2),
            run("b", 0, 5, 9, 3, 3),
        ];
        assert_eq!(
            check(&reversed, &expected, |_| None).fifo_violations.len(),
            1
        );

        let missing = vec![run("a", 0, 0, 10, 1, 1), run("a", 1, 10, 20, 2, 2)];
        assert_eq!(check(&missing, &expected, |_| None).missing.len(), 1);

        let mut twice = clean.clone();
        twice.push(run("b", 0, 30, 40, 3, 9));
        assert_eq!(check(&twice, &expected, |_| None).duplicates.len(), 1);
        let accepted = check(&twice, &expected, |r| {
            (r.token == 3).then(|| "agent died".into())
        });
        assert!(accepted.assert_clean().is_ok());
        assert_eq!(accepted.reruns.len(), 1);
    }
}
