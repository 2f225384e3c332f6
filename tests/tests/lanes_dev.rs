//! `lanes-dev` (what `scripts/run` execs) stops the whole system within seconds when SIGINT
//! or SIGTERM is sent to it alone (`kill -INT <pid>`, not the terminal's Ctrl-C to the whole
//! group): it passes the signal on to its children and leaves none running (issue #12).
//! And the README's enqueue examples, sent to it as written, import their invoice with the
//! example handler it runs (issue #14: the quick start must give the result it promises).

use anyhow::Context as _;
use lanes_tests::gateway::Http;
use lanes_tests::{ChildProc, Signal, bin_path, free_port, fresh_database, spawn, wait_for_tcp};
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

/// Children of process `parent` (from /proc): pid and command name.
fn children_of(parent: u32) -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // "pid (comm) state ppid …": the name may hold spaces, so split after ')'.
            let (head, rest) = stat.rsplit_once(')')?;
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            let name = head.split_once('(')?.1.to_owned();
            (ppid == parent).then_some((pid, name))
        })
        .collect()
}

/// Whether process `pid` still exists (a zombie counts: nobody has collected it).
fn exists(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// `lanes-dev` on free ports and a fresh database, and its HTTP address.
async fn start_dev() -> anyhow::Result<(ChildProc, String, lanes_tests::TestDb)> {
    let db = fresh_database().await?;
    let http = format!("127.0.0.1:{}", free_port());
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", db.url.clone()),
        ("LANES_DEV_GRPC", format!("127.0.0.1:{}", free_port())),
        ("LANES_DEV_HTTP", http.clone()),
        ("LANES_DEV_METRICS", format!("127.0.0.1:{}", free_port())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let dev = spawn("lanes-dev", &bin_path("lanes-dev")?, &[], &env).await?;
    wait_for_tcp(http.parse()?, Duration::from_secs(60)).await?;
    Ok((dev, http, db))
}

async fn stops_on(sig: Signal) -> anyhow::Result<()> {
    let (mut dev, _http, _db) = start_dev().await?;
    let pid = dev
        .id()
        .ok_or_else(|| anyhow::anyhow!("lanes-dev exited at once"))?;
    // Up once both agents run: coordinator, gateway and two agents.
    let deadline = Instant::now() + Duration::from_secs(60);
    let kids = loop {
        let kids = children_of(pid);
        if kids.iter().filter(|(_, n)| n == "agent").count() == 2 {
            break kids;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "lanes-dev did not start its agents: {kids:?}\n{}",
            dev.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(kids.len(), 4, "{kids:?}");

    let asked = Instant::now();
    dev.signal(sig)?;
    let status = dev.wait_exit(Duration::from_secs(60)).await?;
    let took = asked.elapsed();
    assert!(status.success(), "{status}\n{}", dev.log_tail(30));
    // Idle children stop in about a second; the bound leaves room for a loaded machine and
    // is far below the 30 s per child that ignoring the signal used to cost.
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}\n{}",
        dev.log_tail(30)
    );
    let left: Vec<_> = kids.iter().filter(|(p, _)| exists(*p)).collect();
    assert!(left.is_empty(), "still running: {left:?}");
    let log = std::fs::read_to_string(dev.log_path())?;
    assert!(
        !log.contains("killed: still running"),
        "a child had to be killed:\n{log}"
    );
    Ok(())
}

#[tokio::test]
async fn sigint_to_lanes_dev_alone_stops_everything() -> anyhow::Result<()> {
    stops_on(Signal::SIGINT).await
}

#[tokio::test]
async fn sigterm_to_lanes_dev_alone_stops_everything() -> anyhow::Result<()> {
    stops_on(Signal::SIGTERM).await
}

/// The JSON bodies of the README's `curl … -d '…'` examples that enqueue an invoice for the
/// example handler (a `payload` with an `invoice_id`).
fn readme_invoice_enqueues() -> anyhow::Result<Vec<Value>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let bodies: Vec<Value> = text
        .split("-d '")
        .skip(1)
        .filter_map(|rest| rest.split_once('\'').map(|(body, _)| body))
        .filter_map(|body| serde_json::from_str::<Value>(body).ok())
        .filter(|b| b["payload"]["invoice_id"].is_string())
        .collect();
    Ok(bodies)
}

/// What a newcomer does first: `scripts/run`, then the README's curl. Each README example
/// enqueues an invoice that the example handler imports as asked (its invoice id and line
/// count in the result, not `"?"` and 0), and names no callback URL that would only fail.
#[tokio::test]
async fn readme_quick_start_imports_the_invoice() -> anyhow::Result<()> {
    let bodies = readme_invoice_enqueues()?;
    assert!(
        bodies.len() >= 2,
        "the README's quick start and API examples enqueue an invoice: {bodies:?}"
    );
    let (dev, http, _db) = start_dev().await?;
    let api = Http::new(&format!("http://{http}"))?;
    for body in bodies {
        assert!(
            body.get("callback_url").is_none() && body.get("callback").is_none(),
            "a quick-start example sends callbacks nowhere reachable: {body}"
        );
        let r = api.post("/api/jobs", None, &body).await?;
        assert!(matches!(r.status, 200 | 202), "{r:?}\n{}", dev.log_tail(30));
        let id = r.body["job_id"].as_i64().context("job_id")?;
        // ?wait answers once the job is finished; the HTTP client gives up after 30 s.
        let deadline = Instant::now() + Duration::from_secs(120);
        let job = loop {
            let r = api.get(&format!("/api/jobs/{id}?wait=20"), None).await?;
            assert_eq!(r.status, 200, "{r:?}");
            if r.body["status"] != "pending" && r.body["status"] != "processing" {
                break r.body;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "job {id} not finished: {}\n{}",
                r.body,
                dev.log_tail(30)
            );
        };
        assert_eq!(job["status"], "completed", "{job}");
        let (sent, got) = (&body["payload"], &job["result"]);
        assert_eq!(got["invoice_id"], sent["invoice_id"], "{job}");
        assert_eq!(got["establishment"], sent["establishment"], "{job}");
        let lines = sent["lines"]
            .as_i64()
            .context("the example sends `lines`")?;
        assert!(lines > 0, "{sent}");
        assert_eq!(got["lines_imported"], lines, "{job}");
    }
    Ok(())
}
