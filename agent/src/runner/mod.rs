//! Runs one job's handler — a subprocess per job ([`exec`]), one long-lived subprocess fed
//! JSON lines ([`persistent`]) or an HTTP call ([`http`]) — and turns what it did into an
//! [`Outcome`]. A runner never talks to the coordinator and never decides about time limits:
//! the supervisor cancels `soft` at the soft time limit (the runner then warns the handler)
//! and `stop` at the end (timeout, cancellation, lease loss, shutdown), and the runner must
//! then stop the handler at once and return.

pub mod exec;
pub mod http;
pub mod persistent;

use crate::config::{Handler, Settings};
use chrono::{DateTime, SecondsFormat, Utc};
use lanes_proto::v1::LeasedJob;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The stderr tail (and HTTP error body) kept for the error message, in bytes.
pub const TAIL_BYTES: usize = 4096;

/// Progress reported by a handler, forwarded on the next heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// 0-100.
    pub percent: i32,
    /// Free text, possibly empty.
    pub message: String,
}

/// Where a runner publishes progress (the latest value wins).
pub type ProgressTx = watch::Sender<Option<Progress>>;

/// How a handler run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Success; `result` is JSON text ("" for none).
    Completed {
        /// The result as JSON text.
        result: String,
    },
    /// The handler reported a failure.
    Failed {
        /// What went wrong (stderr tail, HTTP status and body).
        error: String,
        /// False for a permanent failure (exit 65, HTTP 4xx).
        retryable: bool,
        /// A delay the handler asked for (HTTP Retry-After), in ms.
        retry_after_ms: Option<i64>,
    },
    /// Stopped because `stop` was cancelled; holds what the handler said so far (stderr tail).
    Stopped {
        /// The stderr tail, possibly empty.
        detail: String,
    },
}

/// A finished run.
#[derive(Debug)]
pub struct Run {
    /// How it ended.
    pub outcome: Outcome,
    /// When it ran.
    pub timing: Timing,
}

/// When a handler ran, for the agent's per-job overhead figures.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// When the handler was started (`None` if it could not be).
    pub started: Option<Instant>,
    /// When the handler's exit (or the HTTP response) was seen.
    pub ended: Instant,
}

/// What a job's handler is told about it.
#[derive(Debug, Clone)]
pub struct JobMeta<'a> {
    /// The leased job.
    pub job: &'a LeasedJob,
    /// When the agent will stop the handler.
    pub deadline: DateTime<Utc>,
    /// When the handler is asked to wrap up (the soft time limit), if there is one.
    pub soft_deadline: Option<DateTime<Utc>>,
    /// W3C traceparent to continue.
    pub traceparent: String,
    /// W3C tracestate that goes with it; empty for none (then not passed on).
    pub tracestate: String,
}

impl JobMeta<'_> {
    /// Each metadata item as (environment variable, HTTP header, value).
    pub fn items(&self) -> Vec<(&'static str, &'static str, String)> {
        let j = self.job;
        let mut items = vec![
            ("LANES_JOB_ID", "x-lanes-job-id", j.id.to_string()),
            ("LANES_JOB_QUEUE", "x-lanes-queue", j.queue.clone()),
            ("LANES_JOB_LANE", "x-lanes-lane", j.lane.clone()),
            (
                "LANES_JOB_ATTEMPT",
                "x-lanes-attempt",
                j.attempt.to_string(),
            ),
            (
                "LANES_JOB_MAX_ATTEMPTS",
                "x-lanes-max-attempts",
                j.max_attempts.to_string(),
            ),
            (
                "LANES_JOB_FENCING_TOKEN",
                "x-lanes-fencing-token",
                j.lease_token.to_string(),
            ),
            (
                "LANES_JOB_DEADLINE",
                "x-lanes-deadline",
                rfc3339(self.deadline),
            ),
            ("TRACEPARENT", "traceparent", self.traceparent.clone()),
        ];
        if let Some(soft) = self.soft_deadline {
            items.push((
                "LANES_JOB_SOFT_DEADLINE",
                "x-lanes-soft-deadline",
                rfc3339(soft),
            ));
        }
        if !self.tracestate.is_empty() {
            items.push(("TRACESTATE", "tracestate", self.tracestate.clone()));
        }
        items
    }
}

/// A time as handlers get it: RFC 3339, UTC, milliseconds (`2026-01-01T12:10:00.000Z`).
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A handler that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The `--exec` program is not there.
    #[error("{0}")]
    Program(String),
    /// The HTTP client cannot be built.
    #[error("cannot set up the HTTP client: {0}")]
    Http(reqwest::Error),
}

/// The configured handler.
pub enum Runner {
    /// Subprocess per job.
    Exec(exec::ExecRunner),
    /// One long-lived subprocess, one JSON line per job.
    Persistent(Box<persistent::PersistentRunner>),
    /// HTTP POST per job.
    Http(http::HttpRunner),
}

impl Runner {
    /// Builds the runner the settings ask for.
    pub fn new(settings: &Settings) -> Result<Self, SetupError> {
        Ok(match &settings.handler {
            Handler::Exec(argv) => {
                exec::check_program(&argv[0]).map_err(SetupError::Program)?;
                Runner::Exec(exec::ExecRunner::new(
                    argv.clone(),
                    settings.max_result_bytes,
                    settings.soft_signal,
                ))
            }
            Handler::Persistent(argv) => {
                exec::check_program(&argv[0]).map_err(SetupError::Program)?;
                Runner::Persistent(Box::new(persistent::PersistentRunner::new(
                    argv.clone(),
                    settings.max_result_bytes,
                    settings.soft_signal,
                )))
            }
            Handler::Http(url) => Runner::Http(
                http::HttpRunner::new(url.clone(), settings.max_result_bytes)
                    .map_err(SetupError::Http)?,
            ),
        })
    }

    /// Runs the handler for one job until it ends or `stop` is cancelled; `soft` is
    /// cancelled at the soft time limit (an HTTP handler only has its header for that).
    pub async fn run(&self, meta: &JobMeta<'_>, progress: ProgressTx, limits: &Limits) -> Run {
        match self {
            Runner::Exec(r) => r.run(meta, progress, limits).await,
            Runner::Persistent(r) => r.run(meta, progress, limits).await,
            Runner::Http(r) => r.run(meta, &limits.stop).await,
        }
    }

    /// Lets a persistent process end cleanly once the agent has no more jobs for it.
    pub async fn close(&self) {
        if let Runner::Persistent(r) = self {
            r.close().await;
        }
    }
}

/// The supervisor's say over a running handler.
#[derive(Debug, Default)]
pub struct Limits {
    /// Cancelled at the soft time limit: warn the handler (once).
    pub soft: CancellationToken,
    /// Cancelled when the handler must stop at once.
    pub stop: CancellationToken,
}

/// Sends the soft-limit signal to the process group `group`, logging it; returns the signal
/// if it was sent.
pub fn send_soft_signal(group: Option<i32>, signal: Option<Signal>) -> Option<Signal> {
    let Some(sig) = signal else {
        tracing::info!("soft time limit reached (--soft-signal none: no signal sent)");
        return None;
    };
    let pgid = group?;
    match killpg(Pid::from_raw(pgid), sig) {
        Ok(()) => {
            tracing::info!(signal = %sig, pgid, "soft time limit reached: signal sent to the handler");
            Some(sig)
        }
        Err(e) => {
            // ESRCH: it is exiting on its own just now.
            tracing::info!(signal = %sig, error = %e, "soft time limit reached: the handler could not be signalled");
            None
        }
    }
}

/// " after SIGTERM at its soft time limit" when that signal was sent, for error headlines.
pub fn soft_note(sent: Option<Signal>) -> String {
    sent.map_or_else(String::new, |s| {
        format!(" after {s} at its soft time limit")
    })
}

/// The result to send for a handler's output: "" (null) when blank, the text itself when it
/// is JSON, else the text (without its trailing newline) as a JSON string.
pub fn result_json(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return String::new();
    }
    if serde_json::from_str::<serde_json::Value>(trimmed).is_ok() {
        return trimmed.to_owned();
    }
    let plain = text.trim_end_matches(['\n', '\r']);
    serde_json::Value::String(plain.to_owned()).to_string()
}

/// The last `max` bytes of `s`, cut at a character boundary.
pub fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Builds an error message: a headline, then the handler's own words when it said any.
pub fn error_message(headline: &str, detail: &str) -> String {
    let detail = detail.trim();
    if detail.is_empty() {
        headline.to_owned()
    } else {
        format!("{headline}: {detail}")
    }
}

/// A traceparent for the handler: the job's own (from the enqueue), or a fresh trace when the
/// job has none or a malformed one, so handler logs can always be correlated.
pub fn traceparent_for(job: &LeasedJob) -> String {
    let t = job.traceparent.trim();
    let valid = t.len() == 55
        && t.split('-').map(str::len).eq([2, 32, 16, 2])
        && t.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit());
    if valid {
        return t.to_owned();
    }
    let mut rng = rand::rng();
    let trace: u128 = rand::Rng::random_range(&mut rng, 1..=u128::MAX);
    let span: u64 = rand::Rng::random_range(&mut rng, 1..=u64::MAX);
    format!("00-{trace:032x}-{span:016x}-01")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_becomes_json() {
        assert_eq!(result_json(b""), "");
        assert_eq!(result_json(b" \n"), "");
        assert_eq!(result_json(b"{\"ok\": true}\n"), "{\"ok\": true}");
        assert_eq!(result_json(b"42"), "42");
        assert_eq!(result_json(b"hello\nworld\n"), "\"hello\\nworld\"");
        assert_eq!(result_json(b"{broken"), "\"{broken\"");
    }

    #[test]
    fn tails_cut_at_char_boundaries() {
        assert_eq!(tail("abc", 5), "abc");
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("aé", 1), "");
        assert_eq!(tail("aéb", 2), "b");
    }

    #[test]
    fn traceparent_is_passed_on_or_made() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let job = LeasedJob {
            traceparent: good.into(),
            ..Default::default()
        };
        assert_eq!(traceparent_for(&job), good);
        let made = traceparent_for(&LeasedJob::default());
        assert_eq!(made.len(), 55);
        assert_ne!(made, traceparent_for(&LeasedJob::default()));
    }
}
