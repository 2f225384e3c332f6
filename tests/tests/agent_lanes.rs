//! The lane guarantees with real agents and a real subprocess handler: 4 agents, 20 lanes,
//! 400 jobs. Every handler run appends "lane seq start end pid job" to one file; the test
//! then checks the whole record: each job ran exactly once, no two runs of a lane overlap,
//! each lane ran in enqueue order, and different lanes did run at the same time.
//! Two of the agents are given a dead coordinator address first, so they also prove the
//! address list is tried in turn.

use lanes_proto::v1 as pb;
use lanes_tests::agent::{exec_python, fixture, start_agent, wait_connected};
use lanes_tests::{Coordinator, free_port, fresh_database};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

const QUEUE: &str = "invoice_import";
const AGENTS: usize = 4;
const LANES: usize = 20;
const PER_LANE: usize = 20;

#[derive(Debug, Clone)]
struct RunRecord {
    lane: usize,
    seq: usize,
    start: u128,
    end: u128,
    job: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_agents_keep_twenty_lanes_exclusive_fifo_and_parallel() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let coord = Coordinator::start(&db.url, &[]).await?;
    let dir = tempfile::tempdir()?;
    let record = dir.path().join("runs.log");
    let exec = exec_python(&fixture("record_lane.py"))?;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut agents = Vec::new();
    for n in 0..AGENTS {
        let addrs = if n.is_multiple_of(2) {
            coord.url()
        } else {
            format!("{dead},{}", coord.url())
        };
        let id = format!("lanes-agent-{n}");
        agents.push(start_agent(&addrs, &id, QUEUE, &["--exec", &exec]).await?);
        wait_connected(&coord, &id, Duration::from_secs(20)).await?;
    }

    let began = Instant::now();
    let mut client = coord.client().await?;
    let jobs: Vec<pb::EnqueueRequest> = (0..PER_LANE)
        .flat_map(|seq| (0..LANES).map(move |lane| (lane, seq)))
        .map(|(lane, seq)| pb::EnqueueRequest {
            queue: QUEUE.into(),
            lane: format!("resto-{lane}"),
            payload: serde_json::json!({
                "file": record, "lane": lane, "seq": seq, "sleep_ms": 5,
            })
            .to_string(),
            ..Default::default()
        })
        .collect();
    for chunk in jobs.chunks(200) {
        client
            .enqueue_batch(pb::EnqueueBatchRequest {
                jobs: chunk.to_vec(),
            })
            .await?;
    }

    let total = LANES * PER_LANE;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let stats = client
            .get_stats(pb::GetStatsRequest {
                queue: QUEUE.into(),
            })
            .await?
            .into_inner();
        let done = stats.totals.map_or(0, |t| t.completed);
        if done as usize == total {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {total} jobs completed in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("{total} jobs through 4 agents in {:?}", began.elapsed());

    let runs = read_runs(&record)?;
    check_exactly_once(&runs, total);
    check_lanes_exclusive_and_fifo(&runs);
    let overlaps = overlapping_lane_pairs(&runs);
    assert!(
        overlaps > 0,
        "no two lanes ever ran at the same time: lanes are not served in parallel"
    );
    for a in &agents {
        let log = std::fs::read_to_string(a.log_path())?;
        assert!(log.contains("awake"), "{} never logged awake", a.name());
    }
    lanes_tests::assert_lanes_agree(&db.url).await
}

fn read_runs(path: &std::path::Path) -> anyhow::Result<Vec<RunRecord>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            anyhow::ensure!(f.len() == 6, "malformed record {line:?}");
            Ok(RunRecord {
                lane: f[0].parse()?,
                seq: f[1].parse()?,
                start: f[2].parse()?,
                end: f[3].parse()?,
                job: f[5].parse()?,
            })
        })
        .collect()
}

fn check_exactly_once(runs: &[RunRecord], total: usize) {
    assert_eq!(
        runs.len(),
        total,
        "every job runs exactly once (no failures were injected)"
    );
    let keys: HashSet<(usize, usize)> = runs.iter().map(|r| (r.lane, r.seq)).collect();
    assert_eq!(keys.len(), total, "a (lane, seq) ran twice");
    let jobs: HashSet<i64> = runs.iter().map(|r| r.job).collect();
    assert_eq!(jobs.len(), total, "a job id ran twice");
}

fn check_lanes_exclusive_and_fifo(runs: &[RunRecord]) {
    let mut by_lane: BTreeMap<usize, Vec<&RunRecord>> = BTreeMap::new();
    for r in runs {
        by_lane.entry(r.lane).or_default().push(r);
    }
    assert_eq!(by_lane.len(), LANES);
    for (lane, mut rs) in by_lane {
        rs.sort_by_key(|r| r.start);
        for pair in rs.windows(2) {
            assert!(
                pair[0].end <= pair[1].start,
                "lane {lane}: seq {} and seq {} overlapped",
                pair[0].seq,
                pair[1].seq
            );
            assert!(
                pair[0].seq < pair[1].seq,
                "lane {lane}: seq {} started after seq {} (not FIFO)",
                pair[1].seq,
                pair[0].seq
            );
        }
    }
}

/// Pairs of runs of different lanes whose run times overlap.
fn overlapping_lane_pairs(runs: &[RunRecord]) -> usize {
    let mut sorted: Vec<&RunRecord> = runs.iter().collect();
    sorted.sort_by_key(|r| r.start);
    let mut count = 0;
    for (i, a) in sorted.iter().enumerate() {
        for b in &sorted[i + 1..] {
            if b.start >= a.end {
                break;
            }
            if b.lane != a.lane {
                count += 1;
            }
        }
    }
    count
}
