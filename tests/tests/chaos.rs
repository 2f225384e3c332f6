//! Chaos (issue #12, item 5): two coordinators, a gateway and agents running a recording
//! handler (`record-run`) work through jobs enqueued through the gateway while agents are
//! killed with SIGKILL (each replaced by a new agent under a new id) and coordinators are
//! killed with SIGKILL and restarted, at moments and in an order drawn from a seeded RNG.
//! Two shapes: many lanes (100 lanes × 30 jobs, 5 ms each) and hot lanes with more agents
//! than lanes (2 lanes × 50 jobs of 100 ms, 4 agents).
//!
//! From the record of every handler run: no two jobs of a lane ran at once, each lane ran in
//! enqueue order, no job is missing, and a job ran again only where the agent that ran it was
//! killed after its handler finished (before its Complete landed: at-least-once) — any other
//! repeat is a duplicate completion. Every job ends completed, and the lanes and counters
//! agree with the jobs. The figures are printed.
//!
//! The seed is printed; `LANES_CHAOS_SEED=<n>` replays the same plan (which kills, in which
//! order, after which pauses; the machine's timing still varies).

use lanes_proto::v1 as pb;
use lanes_tests::agent::start_agent_with_env;
use lanes_tests::gateway::{ENQUEUE_KEY, Gateway, KEYS};
use lanes_tests::jobs::set_settings;
use lanes_tests::load::{Feeder, completed, wait_completed};
use lanes_tests::records::{self, Run};
use lanes_tests::{ChildProc, Coordinator, assert_lanes_agree, bin_path, fresh_database};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The two shapes share two cores: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One shape of load and the kills it goes through.
struct Shape {
    name: &'static str,
    lanes: u64,
    per_lane: u64,
    agents: usize,
    sleep_ms: u64,
    agent_kills: usize,
    coordinator_kills: usize,
    /// Jobs per enqueue batch (whole rounds of one job per lane).
    batch: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_many_lanes() -> anyhow::Result<()> {
    run(Shape {
        name: "many lanes",
        lanes: 100,
        per_lane: 30,
        agents: 4,
        sleep_ms: 5,
        agent_kills: 5,
        coordinator_kills: 2,
        batch: 200,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_hot_lanes() -> anyhow::Result<()> {
    run(Shape {
        name: "hot lanes",
        lanes: 2,
        per_lane: 50,
        agents: 4,
        sleep_ms: 100,
        agent_kills: 5,
        coordinator_kills: 2,
        batch: 10,
    })
    .await
}

/// A kill the chaos made.
#[derive(Debug, Clone, Copy)]
enum Blow {
    Agent,
    Coordinator,
}

/// An agent process and the names the report needs.
struct AgentProc {
    proc: ChildProc,
    id: String,
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn seed() -> anyhow::Result<u64> {
    match std::env::var("LANES_CHAOS_SEED") {
        Ok(s) => Ok(s.trim().parse()?),
        Err(_) => Ok(rand::random()),
    }
}

async fn run(shape: Shape) -> anyhow::Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let seed = seed()?;
    eprintln!(
        "chaos ({}): seed {seed} (LANES_CHAOS_SEED={seed} replays it)",
        shape.name
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let began = Instant::now();
    let queue = "chaos";
    let db = fresh_database().await?;
    // Info logs, not a debug line per RPC: thousands of jobs on two shared cores.
    let quiet = [("RUST_LOG", "info")];
    let mut coords = [
        Coordinator::start_with_env(&db.url, &[], &quiet).await?,
        Coordinator::start_with_env(&db.url, &[], &quiet).await?,
    ];
    set_settings(
        &coords[0].admin().await?,
        queue,
        pb::SetQueueSettingsRequest {
            // A killed agent's lease lapses within 3 s; attempts are not what is tested.
            lease_ttl_ms: Some(3000),
            max_attempts: Some(100),
            backoff_initial_ms: Some(0),
            backoff_max_ms: Some(0),
            ..Default::default()
        },
    )
    .await?;
    let gateway = Gateway::start(&coords[0].url(), &["--api-keys", KEYS]).await?;
    let dir = tempfile::tempdir()?;
    let record = dir.path().join("runs.log");
    let handler = bin_path("record-run")?.display().to_string();
    let urls = [coords[0].url(), coords[1].url()];
    let mut generation = 0;
    let mut agents = Vec::new();
    for _ in 0..shape.agents {
        agents.push(new_agent(&urls, &mut generation, queue, &handler).await?);
    }

    // Enqueued through the gateway in batches of whole rounds, paced over the first seconds
    // so that enqueues too meet the kills.
    let gw = format!("http://{}", gateway.addr);
    let feeder = Arc::new(Feeder::new(
        &gw,
        ENQUEUE_KEY,
        queue,
        &record,
        shape.sleep_ms,
    ));
    let jobs: Vec<(String, u64)> = (0..shape.per_lane)
        .flat_map(|seq| (0..shape.lanes).map(move |lane| (format!("resto-{lane}"), seq)))
        .collect();
    let total = jobs.len();
    let feeding = tokio::spawn(feed(feeder.clone(), jobs, shape.batch));

    // The chaos: a shuffled plan of kills, each after a random pause.
    let mut plan: Vec<Blow> = std::iter::repeat_n(Blow::Agent, shape.agent_kills)
        .chain(std::iter::repeat_n(
            Blow::Coordinator,
            shape.coordinator_kills,
        ))
        .collect();
    plan.shuffle(&mut rng);
    let mut killed_agents: HashMap<u32, (String, u128)> = HashMap::new();
    let mut log = Vec::new();
    for blow in plan {
        let pause = Duration::from_millis(rng.random_range(300..1500));
        tokio::time::sleep(pause).await;
        let done = completed(&db.url, queue).await.unwrap_or(0);
        if done as usize >= total {
            break;
        }
        match blow {
            Blow::Agent => {
                let i = rng.random_range(0..agents.len());
                let mut victim = agents.swap_remove(i);
                let pid = victim.proc.id().unwrap_or(0);
                victim.proc.kill9().await;
                // Taken after the kill: every run this agent recorded ended before it.
                killed_agents.insert(pid, (victim.id.clone(), now_ns()));
                log.push(format!(
                    "{:?}: killed {} at {done} done",
                    began.elapsed(),
                    victim.id
                ));
                agents.push(new_agent(&urls, &mut generation, queue, &handler).await?);
            }
            Blow::Coordinator => {
                let i = rng.random_range(0..coords.len());
                coords[i].restart().await?;
                log.push(format!(
                    "{:?}: killed and restarted coordinator {i} at {done} done",
                    began.elapsed()
                ));
            }
        }
    }
    let enqueued = feeding.await??;
    wait_completed(&db.url, queue, total as i64, Duration::from_secs(120)).await?;
    let took = began.elapsed();

    let runs = records::read(&record)?;
    let report = records::check(&runs, &enqueued, |r| killed_after(r, &killed_agents));
    eprintln!("chaos ({}): {}", shape.name, log.join("; "));
    eprintln!(
        "chaos ({}): {}; {} agents and {} coordinators killed; gateway answers {:?}; {took:?}",
        shape.name,
        report.summary(),
        killed_agents.len(),
        log.iter().filter(|l| l.contains("coordinator")).count(),
        feeder.answers()
    );
    for r in &report.reruns {
        eprintln!(
            "  re-run of job {} (lane {} seq {}): {}",
            r.run.job, r.run.lane, r.run.seq, r.why
        );
    }
    report.assert_clean()?;
    assert!(
        !killed_agents.is_empty() && log.iter().any(|l| l.contains("coordinator")),
        "the work ended before an agent and a coordinator were killed: {log:?}"
    );
    check_all_completed(&db.url, &enqueued).await?;
    drop(agents);
    assert_lanes_agree(&db.url).await
}

/// Starts the next agent, `agent-<generation>`, with both coordinators (in either order).
async fn new_agent(
    urls: &[String; 2],
    generation: &mut usize,
    queue: &str,
    handler: &str,
) -> anyhow::Result<AgentProc> {
    let id = format!("agent-{generation}");
    let order = if generation.is_multiple_of(2) {
        format!("{},{}", urls[0], urls[1])
    } else {
        format!("{},{}", urls[1], urls[0])
    };
    *generation += 1;
    let env = [("RUST_LOG", "info")];
    let proc = start_agent_with_env(&order, &id, queue, &["--exec", handler], &env).await?;
    Ok(AgentProc { proc, id })
}

/// Enqueues `jobs` in order, `batch` at a time, a batch every 300 ms; returns job id →
/// (lane, seq).
async fn feed(
    feeder: Arc<Feeder>,
    jobs: Vec<(String, u64)>,
    batch: usize,
) -> anyhow::Result<BTreeMap<i64, (String, u64)>> {
    let mut enqueued = BTreeMap::new();
    for chunk in jobs.chunks(batch) {
        let ids = feeder.batch(chunk).await?;
        enqueued.extend(ids.into_iter().zip(chunk.iter().cloned()));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(enqueued)
}

/// A run may be followed by another run of its job when its agent was killed after the
/// handler finished: the Complete never landed, the lease lapsed, the job ran again.
fn killed_after(run: &Run, killed: &HashMap<u32, (String, u128)>) -> Option<String> {
    let (agent, at) = killed.get(&run.agent_pid)?;
    (run.end <= *at).then(|| {
        format!(
            "{agent} was killed {} ms after the handler finished, before its Complete landed",
            (at - run.end) / 1_000_000
        )
    })
}

/// Every job enqueued ended completed.
async fn check_all_completed(
    database_url: &str,
    enqueued: &BTreeMap<i64, (String, u64)>,
) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(database_url).await?;
    let states: Vec<(i64, String)> = sqlx::query_as("SELECT id, state::text FROM jobs")
        .fetch_all(&pool)
        .await?;
    pool.close().await;
    let states: BTreeMap<i64, String> = states.into_iter().collect();
    for id in enqueued.keys() {
        assert_eq!(
            states.get(id).map(String::as_str),
            Some("completed"),
            "job {id}"
        );
    }
    assert_eq!(states.len(), enqueued.len(), "jobs nobody enqueued");
    Ok(())
}
