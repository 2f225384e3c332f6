//! The persistent handler (`--exec … --persistent`): ONE long-lived process per agent, so an
//! interpreter starts and imports once, not once per job. The agent writes each job as one
//! JSON line on the process's stdin; the process answers on stdout with zero or more
//! `{"type":"progress",…}` lines and then exactly one `{"type":"result",…}` or
//! `{"type":"error",…}` line (the protocol: docs/handlers.md). Any other stdout line is
//! logged and skipped; stderr lines are logged as they come.
//!
//! The process runs in its own process group, like a per-job handler: at the soft time limit
//! the group gets `--soft-signal`; when `stop` is cancelled (time limit, cancellation, lease
//! loss, shutdown) the group is killed and a fresh process started for the next job; a
//! process that exits mid-job fails that job (retryable) and is replaced the same way.
//!
//! Must never: leave a killed or crashed process's group running, let the process outlive
//! the agent (`PR_SET_PDEATHSIG`), or take a stale line as the answer to another job (a
//! line naming another job's `id` is skipped).

mod protocol;

use super::exec::{DRAIN_LIMIT, describe_exit, drain, failed, handler_command, kill_group};
use super::{
    JobMeta, Limits, Outcome, ProgressTx, Run, TAIL_BYTES, Timing, error_message, send_soft_signal,
    soft_note, tail,
};
use nix::sys::signal::Signal;
use protocol::{Line, Lines, Reply, job_line, parse_reply};
use std::process::ExitStatus;
use tokio::io::{AsyncRead, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Room on a stdout line for the envelope around a result of `--max-result-bytes`.
const ENVELOPE: usize = 64 * 1024;

/// Longest stderr line logged; a longer one is logged as a note that it was too long.
const MAX_LOG_LINE: usize = 64 * 1024;

/// How long the process has to exit after end-of-file on its stdin when the agent stops.
/// Short: the Helm chart leaves the agent 5 s past its grace period, and the last report
/// may take 3 of them.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs every job through one long-lived process of `argv`.
pub struct PersistentRunner {
    argv: Vec<String>,
    max_result: usize,
    soft_signal: Option<Signal>,
    /// The process, when one runs. One job at a time: the lock is never contended.
    proc: Mutex<Option<Proc>>,
}

/// The running process and its pipes.
struct Proc {
    child: Child,
    /// Its process group (its pid); `None` once reaped and its group killed.
    group: Option<i32>,
    /// `None` once closed, which the process reads as end-of-file.
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Logs stderr; returns its tail at end-of-file.
    stderr: Option<JoinHandle<String>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        kill_group(self.group);
    }
}

/// How a job's exchange with the process ended.
enum Exchange {
    /// The process answered and lives on.
    Answered(Outcome),
    /// The process is gone or unusable (already reaped when `exited` is set): the job
    /// fails (retryable) with this headline and the process's last stderr words.
    Lost {
        headline: String,
        exited: Option<ExitStatus>,
    },
    /// `stop` was cancelled.
    Stopped,
}

impl PersistentRunner {
    /// A runner for `argv`; starts the process at once, so the first job finds it warm.
    pub fn new(argv: Vec<String>, max_result: usize, soft_signal: Option<Signal>) -> Self {
        let mut runner = PersistentRunner {
            argv,
            max_result,
            soft_signal,
            proc: Mutex::new(None),
        };
        match runner.spawn() {
            Ok(p) => *runner.proc.get_mut() = Some(p),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the persistent handler; trying again at the first job")
            }
        }
        runner
    }

    /// Runs one job through the process (started first if none runs); see the module docs.
    pub async fn run(&self, meta: &JobMeta<'_>, progress: ProgressTx, limits: &Limits) -> Run {
        let mut slot = self.proc.lock().await;
        if let Some(p) = slot.as_mut()
            && let Ok(Some(status)) = p.child.try_wait()
        {
            // Died while idle: replaced before the job is sent, so the job does not pay.
            p.group = None;
            let tail = p.stderr_tail().await;
            tracing::warn!(status = %describe_exit(status, None), stderr = %tail.trim(), "persistent handler exited between jobs; restarting it");
            *slot = None;
        }
        let p = match slot.as_mut() {
            Some(p) => p,
            None => match self.spawn() {
                Ok(p) => slot.insert(p),
                Err(e) => {
                    let error = format!("cannot start handler {:?}: {e}", self.argv.join(" "));
                    return Run {
                        outcome: failed(error, true),
                        timing: Timing {
                            started: None,
                            ended: Instant::now(),
                        },
                    };
                }
            },
        };
        let started = Instant::now();
        let exchange = self.exchange(p, meta, &progress, limits).await;
        let ended = Instant::now();
        let outcome = match exchange {
            Exchange::Answered(outcome) => outcome,
            Exchange::Lost { headline, exited } => {
                p.end(exited).await;
                let detail = p.stderr_tail().await;
                *slot = None;
                failed(error_message(&headline, &detail), true)
            }
            Exchange::Stopped => {
                p.end(None).await;
                let detail = p.stderr_tail().await;
                *slot = None;
                Outcome::Stopped { detail }
            }
        };
        if slot.is_none() {
            // Started now rather than at the next job, so its start-up overlaps the report.
            match self.spawn() {
                Ok(p) => *slot = Some(p),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot restart the persistent handler; trying again at the next job")
                }
            }
        }
        Run {
            outcome,
            timing: Timing {
                started: Some(started),
                ended,
            },
        }
    }

    fn spawn(&self) -> std::io::Result<Proc> {
        let mut child = handler_command(&self.argv)
            .env("LANES_PERSISTENT", "1")
            .spawn()?;
        let pid = child.id().and_then(|id| i32::try_from(id).ok());
        let missing = || std::io::Error::other("a pipe to the handler is missing");
        let stdin = child.stdin.take().ok_or_else(missing)?;
        let stdout = child.stdout.take().ok_or_else(missing)?;
        let stderr = child
            .stderr
            .take()
            .map(|r| tokio::spawn(log_stderr(r, pid.unwrap_or_default())));
        tracing::info!(pid, argv = ?self.argv, "persistent handler started");
        Ok(Proc {
            child,
            group: pid,
            stdin: Some(stdin),
            stdout: Lines::new(BufReader::new(stdout), self.max_result + ENVELOPE),
            stderr,
        })
    }

    /// Ends the process when the agent stops: closes its stdin, the end-of-file that tells
    /// it to close its connections and exit, and waits up to [`EXIT_WAIT`] for it before
    /// killing its group. Whatever it left running in its group is killed either way.
    pub async fn close(&self) {
        let Some(mut p) = self.proc.lock().await.take() else {
            return;
        };
        drop(p.stdin.take());
        match tokio::time::timeout(EXIT_WAIT, p.child.wait()).await {
            Ok(Ok(status)) => {
                tracing::info!(status = %describe_exit(status, None), "persistent handler exited at the end of its input");
                p.end(Some(status)).await;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "persistent handler could not be waited for; killing it");
                p.end(None).await;
            }
            Err(_) => {
                tracing::warn!(waited = ?EXIT_WAIT, "persistent handler still running after the end of its input; killing it");
                p.end(None).await;
            }
        }
    }

    /// Sends the job and reads the process's lines until its answer, its end, or `stop`.
    async fn exchange(
        &self,
        p: &mut Proc,
        meta: &JobMeta<'_>,
        progress: &ProgressTx,
        limits: &Limits,
    ) -> Exchange {
        let line = job_line(meta);
        let id = meta.job.id;
        let Proc {
            child,
            group,
            stdin,
            stdout,
            ..
        } = p;
        let write = async {
            let stdin = stdin
                .as_mut()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
            stdin.write_all(&line).await?;
            stdin.flush().await
        };
        tokio::pin!(write);
        let mut written = false;
        let mut soft_seen = false;
        let mut soft_sent = None;
        // "persistent handler exited with code 1 while running the job; restarting it".
        let lost = |what: String, exited: Option<ExitStatus>| {
            let headline =
                format!("persistent handler {what} while running the job; restarting it");
            Exchange::Lost { headline, exited }
        };
        loop {
            tokio::select! {
                biased;
                _ = limits.stop.cancelled() => return Exchange::Stopped,
                _ = limits.soft.cancelled(), if !soft_seen => {
                    soft_seen = true;
                    soft_sent = send_soft_signal(*group, self.soft_signal);
                }
                w = &mut write, if !written => match w {
                    Ok(()) => written = true,
                    Err(e) => {
                        return lost(format!("stopped reading its stdin ({e}){}", soft_note(soft_sent)), None);
                    }
                },
                read = stdout.next_line() => match read {
                    Ok(Some(Line::Text(text))) => match parse_reply(&text, id, self.max_result) {
                        Reply::Progress(p) => {
                            progress.send_replace(Some(p));
                        }
                        Reply::Done(outcome) => return Exchange::Answered(outcome),
                        Reply::Other(why) => {
                            tracing::info!(target: "lanes_agent::handler", line = %String::from_utf8_lossy(&text), "{why}; skipped");
                        }
                    },
                    Ok(Some(Line::TooLong)) => {
                        let error = format!("a line of the persistent handler's stdout is longer than {} bytes (the result limit plus {ENVELOPE})", self.max_result + ENVELOPE);
                        return Exchange::Answered(failed(error, false));
                    }
                    Ok(None) | Err(_) => {
                        // Its stdout closed: it is exiting. Its status says how.
                        let exited = tokio::time::timeout(DRAIN_LIMIT, child.wait()).await;
                        return match exited {
                            Ok(Ok(status)) => lost(describe_exit(status, soft_sent), Some(status)),
                            _ => lost(format!("closed its stdout{}", soft_note(soft_sent)), None),
                        };
                    }
                },
                // Exited while something it started still holds stdout open.
                status = child.wait() => {
                    return match status {
                        Ok(s) => lost(describe_exit(s, soft_sent), Some(s)),
                        Err(e) => lost(format!("could not be waited for ({e})"), None),
                    };
                }
            }
        }
    }
}

impl Proc {
    /// Kills the group (what is left of it once the process exited) and reaps the process.
    async fn end(&mut self, exited: Option<ExitStatus>) {
        kill_group(self.group);
        if exited.is_none() {
            let _ = self.child.wait().await;
        }
        self.group = None;
    }

    /// The last stderr bytes, once the pipe closed (given up after a moment).
    async fn stderr_tail(&mut self) -> String {
        drain(self.stderr.take()).await.unwrap_or_default()
    }
}

/// Logs each stderr line of the process; returns the last bytes at end-of-file.
async fn log_stderr(r: impl AsyncRead + Unpin, pid: i32) -> String {
    let mut lines = Lines::new(BufReader::new(r), MAX_LOG_LINE);
    let mut kept = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        let text = match line {
            Line::Text(t) => String::from_utf8_lossy(&t).into_owned(),
            Line::TooLong => format!("(a stderr line longer than {MAX_LOG_LINE} bytes)"),
        };
        tracing::info!(target: "lanes_agent::handler", pid, "{text}");
        kept.push_str(&text);
        kept.push('\n');
        if kept.len() > 2 * TAIL_BYTES {
            kept = tail(&kept, TAIL_BYTES).to_owned();
        }
    }
    tail(&kept, TAIL_BYTES).to_owned()
}
