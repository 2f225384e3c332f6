//! Lanes behind a real PgBouncer (issue #16, item 2): two coordinators whose `DATABASE_URL`
//! goes through the pooler and whose `--listen-database-url` (LISTEN, migrations) goes
//! straight to PostgreSQL, a gateway, agents running a recording handler.
//!
//! Transaction pooling needs PgBouncer ≥ 1.21 with `max_prepared_statements`: sqlx prepares
//! every statement in one round trip and runs it in the next, which an older pooler may hand
//! to another server connection ("prepared statement … does not exist / already exists"),
//! and turning sqlx's statement cache off does not change that. With such a PgBouncer (set
//! `LANES_PGBOUNCER` to its binary) the test runs in transaction mode; with an older one
//! (Debian 12 ships 1.18) in session mode, and says so.
//!
//! Asserted: hundreds of jobs over several lanes all run and complete exactly once, each lane
//! in enqueue order, one job of a lane at a time; an idle agent on one replica is woken by an
//! enqueue on the other (NOTIFY sent through the pooler, heard on the direct connection; the
//! safety tick is a minute, so it cannot be what woke it); WaitJob on the other replica
//! answers when the job finishes; lanes and counters agree.

use lanes_proto::v1 as pb;
use lanes_tests::agent::{start_agent, wait_connected};
use lanes_tests::gateway::{ENQUEUE_KEY, Gateway, KEYS};
use lanes_tests::load::{Feeder, wait_completed};
use lanes_tests::{
    ChildProc, Coordinator, assert_lanes_agree, bin_path, free_port, records, spawn, wait_for_tcp,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const QUEUE: &str = "pgb";
const WAKE_QUEUE: &str = "pgb_wake";
const LANES: u64 = 10;
const PER_LANE: u64 = 30;

/// A running pgbouncer in front of one PostgreSQL server.
struct Bouncer {
    proc: ChildProc,
    port: u16,
    transaction: bool,
    _dir: tempfile::TempDir,
}

/// The pgbouncer binary: `LANES_PGBOUNCER`, else Debian's, else one on PATH.
fn find_pgbouncer() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LANES_PGBOUNCER") {
        return Some(PathBuf::from(p));
    }
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("pgbouncer"))
                .collect()
        })
        .unwrap_or_default();
    std::iter::once(PathBuf::from("/usr/sbin/pgbouncer"))
        .chain(on_path)
        .find(|p| p.is_file())
}

/// (major, minor) from `pgbouncer --version` ("PgBouncer 1.18.0").
fn version(bin: &Path) -> anyhow::Result<(u64, u64)> {
    let out = std::process::Command::new(bin).arg("--version").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| {
            let mut parts = v.split('.').map(|n| n.parse::<u64>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .ok_or_else(|| anyhow::anyhow!("unexpected pgbouncer --version: {text}"))?;
    Ok(v)
}

impl Bouncer {
    /// Starts `bin` in front of the server at 127.0.0.1:`pg_port` (trust auth, as the test
    /// cluster), transaction pooling when it can (see the module docs).
    async fn start(bin: &Path, pg_port: u16) -> anyhow::Result<Bouncer> {
        let (major, minor) = version(bin)?;
        let transaction = (major, minor) >= (1, 21);
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let userlist = dir.path().join("userlist.txt");
        std::fs::write(&userlist, "\"postgres\" \"\"\n")?;
        let mode = if transaction {
            "pool_mode = transaction\nmax_prepared_statements = 200\n"
        } else {
            "pool_mode = session\n"
        };
        let ini = format!(
            "[databases]\n* = host=127.0.0.1 port={pg_port}\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {}\n{mode}default_pool_size = 40\n\
             max_client_conn = 500\nignore_startup_parameters = extra_float_digits\n\
             logfile =\npidfile =\n",
            userlist.display()
        );
        let ini_path = dir.path().join("pgbouncer.ini");
        std::fs::write(&ini_path, ini)?;
        // pgbouncer refuses to run as root: it drops to `nobody`, who must read the files.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let mut args = Vec::new();
        if nix::unistd::geteuid().is_root() {
            args.extend(["-u".to_string(), "nobody".to_string()]);
        }
        args.push(ini_path.display().to_string());
        let proc = spawn("pgbouncer", bin, &args, &[]).await?;
        wait_for_tcp(
            format!("127.0.0.1:{port}").parse()?,
            Duration::from_secs(30),
        )
        .await?;
        eprintln!(
            "pgbouncer {major}.{minor} in {} mode",
            if transaction {
                "transaction"
            } else {
                "session"
            }
        );
        Ok(Bouncer {
            proc,
            port,
            transaction,
            _dir: dir,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_work_through_pgbouncer_with_listen_on_a_direct_connection() -> anyhow::Result<()> {
    let Some(bin) = find_pgbouncer() else {
        eprintln!(
            "SKIPPED: pgbouncer not installed (Debian: apt-get install pgbouncer; scripts/test \
             installs it) and LANES_PGBOUNCER not set"
        );
        return Ok(());
    };
    let wait = Duration::from_secs(90);
    let db = lanes_tests::fresh_database().await?;
    let direct = url::Url::parse(&db.url)?;
    let pg_port = direct.port().unwrap_or(5432);
    let mut bouncer = Bouncer::start(&bin, pg_port).await?;
    let pooled = format!("postgres://postgres@127.0.0.1:{}/{}", bouncer.port, db.name);
    // A minute's safety tick: agents wake by NOTIFY only.
    let args = [
        "--tick-ms",
        "60000",
        "--reaper-ms",
        "100",
        "--listen-database-url",
        &db.url,
    ];
    let a = Coordinator::start_with_args(&pooled, &args).await?;
    let b = Coordinator::start_with_args(&pooled, &args).await?;
    let gateway = Gateway::start(&a.url(), &["--api-keys", KEYS]).await?;
    let gw = format!("http://{}", gateway.addr);
    let dir = tempfile::tempdir()?;
    let record = dir.path().join("runs.log");
    let handler = bin_path("record-run")?.display().to_string();
    let mut agents = Vec::new();
    for n in 0..3u32 {
        let order = if n.is_multiple_of(2) {
            format!("{},{}", a.url(), b.url())
        } else {
            format!("{},{}", b.url(), a.url())
        };
        agents
            .push(start_agent(&order, &format!("agent-{n}"), QUEUE, &["--exec", &handler]).await?);
    }

    // Hundreds of jobs over several lanes, in batches through the gateway.
    let feeder = Feeder::new(&gw, ENQUEUE_KEY, QUEUE, &record, 0);
    let mut expected = BTreeMap::new();
    for seq in 0..PER_LANE {
        let batch: Vec<(String, u64)> = (0..LANES).map(|l| (format!("lane-{l}"), seq)).collect();
        let ids = feeder.batch(&batch).await?;
        expected.extend(ids.into_iter().zip(batch));
    }
    wait_completed(&db.url, QUEUE, expected.len() as i64, wait).await?;
    let report = records::check(&records::read(&record)?, &expected, |_| None);
    eprintln!("through pgbouncer: {}", report.summary());
    report.assert_clean()?;

    // An idle agent on replica b, woken by an enqueue on replica a; WaitJob on a answers
    // when b's agent finishes the job.
    let wake_record = dir.path().join("wake.log");
    let waker_agent = start_agent(&b.url(), "sleeper", WAKE_QUEUE, &["--exec", &handler]).await?;
    wait_connected(&b, "sleeper", wait).await?;
    let wake_feeder = Feeder::new(&gw, ENQUEUE_KEY, WAKE_QUEUE, &wake_record, 0);
    let enqueued = Instant::now();
    let id = wake_feeder.one("solo", 0).await?;
    let mut client = a.client().await?;
    let job = client
        .wait_job(pb::WaitJobRequest {
            id,
            timeout_seconds: 45,
        })
        .await?
        .into_inner()
        .job
        .ok_or_else(|| anyhow::anyhow!("WaitJob returned no job"))?;
    let took = enqueued.elapsed();
    assert_eq!(job.state, pb::JobState::Completed as i32, "{job:?}");
    assert!(
        took < Duration::from_secs(40),
        "the idle agent was not woken by NOTIFY (took {took:?}; the safety tick is 60 s)"
    );
    eprintln!("idle agent woken across replicas, job done and WaitJob answered in {took:?}");

    assert_lanes_agree(&db.url).await?;
    for p in agents.iter_mut().chain([&mut bouncer.proc]) {
        assert!(
            p.try_wait()?.is_none(),
            "{} exited:\n{}",
            p.name(),
            p.log_tail(20)
        );
    }
    drop(waker_agent);
    eprintln!(
        "pgbouncer ({} pooling) log tail:\n{}",
        if bouncer.transaction {
            "transaction"
        } else {
            "session"
        },
        bouncer.proc.log_tail(5)
    );
    Ok(())
}
