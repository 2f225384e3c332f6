//! The subprocess handler: one process per job, started directly (no shell) in its own
//! process group, payload JSON on stdin, job metadata in `LANES_JOB_*` env vars and
//! `TRACEPARENT`, result on stdout, outcome from the exit status, progress from
//! `LANES_PROGRESS <percent> <message>` lines on stderr (the contract: docs/handlers.md). At
//! the soft time limit the group gets `--soft-signal` (SIGTERM by default), once.
//!
//! Must never: leave the handler's process group running after `run` returns, or let the
//! handler outlive the agent (`PR_SET_PDEATHSIG`, see [`die_with_agent`]).

use super::{
    Limits, Outcome, Progress, ProgressTx, Run, TAIL_BYTES, Timing, error_message, result_json,
    send_soft_signal, soft_note, tail,
};
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::Command;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Exit code of a permanent failure (sysexits `EX_DATAERR`): the job fails without retry.
pub const EXIT_PERMANENT: i32 = 65;

/// Prefix of a progress line on stderr: `LANES_PROGRESS <percent> [message]`.
pub const PROGRESS_PREFIX: &str = "LANES_PROGRESS";

/// Longest stderr line inspected for the progress protocol.
const MAX_LINE: usize = 4096;

/// After the handler exits, how long its output pipes may stay open (held by a process that
/// left its group) before the agent stops reading them.
pub(crate) const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Runs `argv` once per job.
#[derive(Debug, Clone)]
pub struct ExecRunner {
    argv: Vec<String>,
    max_result: usize,
    soft_signal: Option<Signal>,
}

impl ExecRunner {
    /// A runner for the program and arguments `argv` (not empty: see `config::split_command`)
    /// sending `soft_signal` at the soft time limit.
    pub fn new(argv: Vec<String>, max_result: usize, soft_signal: Option<Signal>) -> Self {
        ExecRunner {
            argv,
            max_result,
            soft_signal,
        }
    }

    /// Runs the handler for one job; see the module docs.
    pub async fn run(
        &self,
        meta: &super::JobMeta<'_>,
        progress: ProgressTx,
        limits: &Limits,
    ) -> Run {
        let mut cmd = self.command(meta);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let error = format!("cannot start handler {:?}: {e}", self.argv.join(" "));
                return Run {
                    outcome: Outcome::Failed {
                        error,
                        retryable: true,
                        retry_after_ms: None,
                    },
                    timing: Timing {
                        started: None,
                        ended: Instant::now(),
                    },
                };
            }
        };
        let started = Instant::now();
        let group = child.id().and_then(|id| i32::try_from(id).ok());
        let payload = meta.job.payload.clone().into_bytes();
        let stdin = child.stdin.take().map(|mut w| {
            tokio::spawn(async move {
                // A handler that does not read its stdin closes the pipe: not an error.
                let _ = w.write_all(&payload).await;
            })
        });
        let max = self.max_result;
        let stdout = child
            .stdout
            .take()
            .map(|r| tokio::spawn(read_capped(r, max)));
        let stderr = child
            .stderr
            .take()
            .map(|r| tokio::spawn(read_stderr(r, progress)));

        let mut soft_seen = false;
        let mut soft_sent = None;
        let exited = loop {
            tokio::select! {
                status = child.wait() => break Some(status),
                _ = limits.stop.cancelled() => break None,
                _ = limits.soft.cancelled(), if !soft_seen => {
                    soft_seen = true;
                    soft_sent = send_soft_signal(group, self.soft_signal);
                }
            }
        };
        // Stopping kills the whole group at once; after a normal exit it removes whatever the
        // handler left behind. (The group id is the handler's pid, reaped a moment ago: for it
        // to name another group, the pid space would have to wrap within microseconds.)
        kill_group(group);
        let stopped = exited.is_none();
        let status = match exited {
            Some(status) => status,
            None => child.wait().await,
        };
        let ended = Instant::now();
        if let Some(w) = stdin {
            w.abort();
        }
        let (out, overflow) = drain(stdout).await.unwrap_or_default();
        let err_tail = drain(stderr).await.unwrap_or_default();
        let outcome = match status {
            _ if stopped => Outcome::Stopped { detail: err_tail },
            Err(e) => failed(format!("waiting for the handler failed: {e}"), true),
            Ok(s) => self.outcome(s, &out, overflow, &err_tail, soft_sent),
        };
        Run {
            outcome,
            timing: Timing {
                started: Some(started),
                ended,
            },
        }
    }

    fn command(&self, meta: &super::JobMeta<'_>) -> Command {
        let mut cmd = handler_command(&self.argv);
        // Not inherited from the agent's own environment when this job has none.
        cmd.env_remove("LANES_JOB_SOFT_DEADLINE")
            .envs(meta.items().into_iter().map(|(var, _, value)| (var, value)));
        cmd
    }

    fn outcome(
        &self,
        status: ExitStatus,
        out: &[u8],
        overflow: bool,
        err_tail: &str,
        soft_sent: Option<Signal>,
    ) -> Outcome {
        let after = soft_note(soft_sent);
        match status.code() {
            Some(0) if overflow => failed(
                format!(
                    "the handler's result (stdout) is larger than {} bytes",
                    self.max_result
                ),
                false,
            ),
            Some(0) => Outcome::Completed {
                result: result_json(out),
            },
            Some(EXIT_PERMANENT) => failed(
                error_message(
                    &format!("handler exited with code 65 (permanent failure){after}"),
                    err_tail,
                ),
                false,
            ),
            _ => failed(
                error_message(
                    &format!("handler {}", describe_exit(status, soft_sent)),
                    err_tail,
                ),
                true,
            ),
        }
    }
}

/// "exited with code 3", "was killed by SIGKILL", followed by " after SIGTERM at its soft
/// time limit" when that signal was sent — or "was killed by SIGTERM, sent at its soft time
/// limit" when that is what ended it.
pub(crate) fn describe_exit(status: ExitStatus, soft_sent: Option<Signal>) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}{}", soft_note(soft_sent));
    }
    let Some(raw) = status.signal() else {
        return format!("was killed by an unknown signal{}", soft_note(soft_sent));
    };
    match Signal::try_from(raw) {
        Ok(sig) if Some(sig) == soft_sent => {
            format!("was killed by {sig}, sent at its soft time limit")
        }
        Ok(sig) => format!("was killed by {sig}{}", soft_note(soft_sent)),
        Err(_) => format!("was killed by signal {raw}{}", soft_note(soft_sent)),
    }
}

/// Checks at start-up that `program` can be run: a path to an executable file, or a name
/// found in `PATH`. A typo should stop the agent, not fail every job.
pub fn check_program(program: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |p: &std::path::Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if program.contains('/') {
        executable(std::path::Path::new(program))
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| executable(&d.join(program))))
    };
    if found {
        Ok(())
    } else {
        Err(format!(
            "--exec: {program:?} is not an executable file (nor found in PATH)"
        ))
    }
}

pub(crate) fn failed(error: String, retryable: bool) -> Outcome {
    Outcome::Failed {
        error,
        retryable,
        retry_after_ms: None,
    }
}

/// SIGKILLs the process group `group` (the handler and anything it started).
pub(crate) fn kill_group(group: Option<i32>) {
    let Some(pgid) = group else { return };
    match killpg(Pid::from_raw(pgid), Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, error = %e, "could not kill the handler's process group"),
    }
}

/// The handler process of `argv` (not empty: see `config::split_command`), as both runners
/// start it: piped stdio, its own process group (killed as a whole), killed with the agent,
/// and without the agent's credentials.
pub(crate) fn handler_command(argv: &[String]) -> Command {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        // The agent's credentials are not the handler's business.
        .env_remove("LANES_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    die_with_agent(&mut cmd);
    cmd
}

/// Makes the kernel SIGKILL the handler as soon as the agent dies, however it dies (even by
/// `kill -9`), so a job can never run on after its agent — and its lease — are gone.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits; the agent runs a
/// single-threaded Tokio runtime, so that thread is the main thread and lives as long as the
/// process. It covers the handler process itself; processes the handler starts are killed
/// with its group on timeout, cancellation and lease loss, but only get this protection if
/// they ask for it themselves.
#[allow(unsafe_code)]
fn die_with_agent(cmd: &mut Command) {
    let agent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe operations are allowed. It makes two raw system calls, prctl(2) and
    // getppid(2), and on failure builds an io::Error from an errno value, which neither
    // allocates nor takes a lock; it touches no shared state of the parent.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The agent may have died between fork and prctl: then no signal would come.
            if nix::unistd::getppid() != agent {
                return Err(Errno::ESRCH.into());
            }
            Ok(())
        });
    }
}

/// Awaits a reader task, giving up (and aborting it) if the pipe stays open too long.
pub(crate) async fn drain<T: Default>(task: Option<JoinHandle<T>>) -> Option<T> {
    let mut task = task?;
    match tokio::time::timeout(DRAIN_LIMIT, &mut task).await {
        Ok(r) => r.ok(),
        Err(_) => {
            task.abort();
            tracing::warn!("a process outside the handler's group kept its output open");
            None
        }
    }
}

/// Reads everything, keeping at most `cap` bytes; true when there was more.
async fn read_capped(mut r: impl AsyncRead + Unpin, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut overflow = false;
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) if kept.len() + n <= cap => kept.extend_from_slice(&chunk[..n]),
            // Keep reading so the handler is never blocked on a full pipe.
            Ok(_) => overflow = true,
        }
    }
    (kept, overflow)
}

/// Reads stderr: progress lines go to `progress`, the rest feeds the tail that is returned.
async fn read_stderr(mut r: impl AsyncRead + Unpin, progress: ProgressTx) -> String {
    let mut parser = StderrParser::default();
    let mut chunk = vec![0u8; 8 * 1024];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => parser.push(&chunk[..n], |p| {
                progress.send_replace(Some(p));
            }),
        }
    }
    parser.finish()
}

/// Splits stderr into lines, picks out progress lines, keeps the tail of everything else.
#[derive(Debug, Default)]
struct StderrParser {
    line: Vec<u8>,
    /// The current line is already too long to be a progress line.
    overlong: bool,
    tail: Vec<u8>,
}

impl StderrParser {
    fn push(&mut self, mut bytes: &[u8], mut on_progress: impl FnMut(Progress)) {
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n') {
            self.extend(&bytes[..pos]);
            self.end_line(&mut on_progress);
            bytes = &bytes[pos + 1..];
        }
        self.extend(bytes);
    }

    fn extend(&mut self, part: &[u8]) {
        if self.overlong || self.line.len() + part.len() > MAX_LINE {
            let line = std::mem::take(&mut self.line);
            self.keep(&line);
            self.keep(part);
            self.overlong = true;
        } else {
            self.line.extend_from_slice(part);
        }
    }

    fn end_line(&mut self, on_progress: &mut impl FnMut(Progress)) {
        let line = std::mem::take(&mut self.line);
        match (!self.overlong).then(|| parse_progress(&line)).flatten() {
            Some(p) => on_progress(p),
            None => {
                self.keep(&line);
                self.keep(b"\n");
            }
        }
        self.overlong = false;
    }

    fn keep(&mut self, bytes: &[u8]) {
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > 2 * TAIL_BYTES {
            self.tail.drain(..self.tail.len() - TAIL_BYTES);
        }
    }

    fn finish(mut self) -> String {
        let line = std::mem::take(&mut self.line);
        self.keep(&line);
        let text = String::from_utf8_lossy(&self.tail);
        tail(&text, TAIL_BYTES).to_owned()
    }
}

/// Parses `LANES_PROGRESS <percent> [message]`; percent may be fractional or end in `%`, and
/// is clamped to 0-100.
fn parse_progress(line: &[u8]) -> Option<Progress> {
    let text = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let rest = text.strip_prefix(PROGRESS_PREFIX)?;
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let rest = rest.trim_start();
    let (number, message) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
    let percent: f64 = number.trim_end_matches('%').parse().ok()?;
    if !percent.is_finite() {
        return None;
    }
    Some(Progress {
        percent: percent.clamp(0.0, 100.0).round() as i32,
        message: message.trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&[u8]]) -> (Vec<Progress>, String) {
        let mut p = StderrParser::default();
        let mut seen = Vec::new();
        for c in chunks {
            p.push(c, |x| seen.push(x));
        }
        (seen, p.finish())
    }

    #[test]
    fn progress_lines_are_picked_out_of_stderr() {
        let (seen, tail) = parse(&[
            b"starting\nLANES_PRO",
            b"GRESS 50 half way there\nLANES_PROGRESS 7.6%\r\n",
            b"LANES_PROGRESS x bad\nLANES_PROGRESSIVE 3\nLANES_PROGRESS 250 over\nend",
        ]);
        let want = |percent, message: &str| Progress {
            percent,
            message: message.into(),
        };
        assert_eq!(
            seen,
            [want(50, "half way there"), want(8, ""), want(100, "over")]
        );
        assert_eq!(
            tail,
            "starting\nLANES_PROGRESS x bad\nLANES_PROGRESSIVE 3\nend"
        );
    }

    #[test]
    fn the_tail_keeps_the_last_bytes_and_long_lines_are_not_progress() {
        let long = format!("LANES_PROGRESS 10 {}\n", "x".repeat(MAX_LINE));
        let (seen, tail) = parse(&[long.as_bytes(), b"last words\n"]);
        assert!(seen.is_empty());
        assert_eq!(tail.len(), TAIL_BYTES);
        assert!(tail.ends_with("xxx\nlast words\n"));
        let big = "y".repeat(10 * TAIL_BYTES);
        let (_, tail) = parse(&[big.as_bytes()]);
        assert_eq!(tail.len(), TAIL_BYTES);
    }

    #[tokio::test]
    async fn stdout_is_capped_but_fully_read() {
        let data = [b'a'; 100];
        let (kept, overflow) = read_capped(&data[..], 100).await;
        assert_eq!((kept.len(), overflow), (100, false));
        let (kept, overflow) = read_capped(&data[..], 99).await;
        assert!(overflow && kept.len() <= 99);
    }
}
