//! `record-run`: the recording handler of the fault and chaos tests, a compiled twin of
//! `tests/fixtures/record_lane.py` that starts in a millisecond instead of Python's tens (the
//! chaos test runs thousands of jobs on two shared cores).
//!
//! Payload (stdin): `{"file": "/tmp/runs.log", "lane": "3", "seq": 7, "sleep_ms": 5}`. It
//! sleeps `sleep_ms`, then appends one line to `file` — "lane seq start_ns end_ns pid job
//! agent_pid token attempt" (the agent is its parent; token and attempt come from the
//! `LANES_JOB_*` variables) — in one `write` to a file opened with O_APPEND, so lines of
//! concurrent runs never interleave; then prints `{"lane": …, "seq": …}` as its result. A run
//! killed before the end (its agent died: the agent's handlers die with it) records nothing.

use anyhow::Context as _;
use std::io::{Read as _, Write as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

fn main() -> anyhow::Result<()> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let payload: serde_json::Value = serde_json::from_str(&input).context("payload")?;
    let field = |name: &str| -> anyhow::Result<String> {
        match &payload[name] {
            serde_json::Value::String(s) => Ok(s.clone()),
            serde_json::Value::Null => anyhow::bail!("payload has no {name}"),
            other => Ok(other.to_string()),
        }
    };
    let (file, lane, seq) = (field("file")?, field("lane")?, field("seq")?);
    let start = now_ns();
    let sleep_ms = payload["sleep_ms"].as_u64().unwrap_or(5);
    std::thread::sleep(Duration::from_millis(sleep_ms));
    let end = now_ns();
    let line = format!(
        "{lane} {seq} {start} {end} {} {} {} {} {}\n",
        std::process::id(),
        env("LANES_JOB_ID")?,
        std::os::unix::process::parent_id(),
        env("LANES_JOB_FENCING_TOKEN")?,
        env("LANES_JOB_ATTEMPT")?,
    );
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&file)
        .with_context(|| format!("opening {file}"))?;
    out.write_all(line.as_bytes())?;
    println!("{}", serde_json::json!({"lane": lane, "seq": seq}));
    Ok(())
}
