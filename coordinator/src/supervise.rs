//! Keeps the coordinator's background tasks running. Each task (wake fan-out and listener,
//! promoter, reaper, dispatcher, event fan-out, watchdog, retention, database probe,
//! metrics listener) runs under a supervisor that restarts it, after a short backoff, when
//! it returns before shutdown or panics; logs and counts each restart
//! (`lanes_task_restarts_total{task}`); and holds the replica NOT_SERVING from the failure
//! until the restarted task has run for a while (2 s, [`Timing`]) — so a task that keeps
//! failing keeps the replica out of service.
//!
//! Fault injection, for tests only: `LANES_FAULT_PANIC_TASK` (hidden flag
//! `--fault-panic-task`) names tasks, comma-separated, whose first run panics at once.
//!
//! Must never: restart a task after shutdown began, run two copies of one task at once, or
//! let a task outlive its supervisor (dropping the supervisor aborts it).

use crate::health::Readiness;
use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The supervisor's delays.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Wait before the first restart; doubled after each failure, up to `max_backoff`.
    pub first_backoff: Duration,
    /// Longest wait between restarts of a task that keeps failing.
    pub max_backoff: Duration,
    /// A restarted task counts as up again once it has run this long without failing.
    pub settled: Duration,
    /// A task that ran this long before failing starts over from the first backoff.
    pub reset_after: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            settled: Duration::from_secs(2),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// The background tasks of one replica, each under its supervisor.
pub struct Supervisor {
    readiness: Arc<Readiness>,
    stop: CancellationToken,
    faults: Arc<Mutex<HashSet<String>>>,
    timing: Timing,
    set: JoinSet<()>,
}

impl Supervisor {
    /// Supervisors that stop on `stop` and report to `readiness`; `faults` are the task
    /// names whose first run panics (tests only; see the module docs).
    pub fn new(readiness: Arc<Readiness>, stop: CancellationToken, faults: &[String]) -> Self {
        let faults: HashSet<String> = faults
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        for task in &faults {
            tracing::warn!(task = %task, "fault injection: this task's first run will panic");
        }
        Supervisor {
            readiness,
            stop,
            faults: Arc::new(Mutex::new(faults)),
            timing: Timing::default(),
            set: JoinSet::new(),
        }
    }

    /// The same with other delays (tests).
    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// Runs the task made by `make` under supervision: `make` is called again for each
    /// restart, so it must build a fresh run (clone what it needs).
    pub fn spawn<F, Fut>(&mut self, task: &'static str, make: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        crate::metrics::task_registered(task);
        let one = Supervised {
            task,
            readiness: self.readiness.clone(),
            stop: self.stop.clone(),
            faults: self.faults.clone(),
            timing: self.timing,
        };
        self.set.spawn(one.run(make));
    }

    /// Waits until every task has stopped (after `stop` was cancelled).
    pub async fn join(mut self) {
        while self.set.join_next().await.is_some() {}
    }
}

/// One task's supervisor.
struct Supervised {
    task: &'static str,
    readiness: Arc<Readiness>,
    stop: CancellationToken,
    faults: Arc<Mutex<HashSet<String>>>,
    timing: Timing,
}

impl Supervised {
    async fn run<F, Fut>(self, mut make: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let t = self.timing;
        let mut backoff = t.first_backoff;
        let mut down = false;
        loop {
            let started = Instant::now();
            let ended = self.run_once(make(), &mut down, started).await;
            if self.stop.is_cancelled() {
                return;
            }
            if started.elapsed() >= t.reset_after {
                backoff = t.first_backoff;
            }
            crate::metrics::task_restarted(self.task);
            tracing::error!(
                task = self.task,
                reason = %ended,
                restart_in_ms = backoff.as_millis() as u64,
                "background task stopped; restarting it"
            );
            down = true;
            self.readiness.task_down(self.task).await;
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(t.max_backoff);
        }
    }

    /// Runs `run` to its end (in a task of its own, so a panic is caught), marking the task
    /// up once it has run for `settled`; says how it ended.
    async fn run_once<Fut>(&self, run: Fut, down: &mut bool, started: Instant) -> String
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let inject = self.take_fault();
        let task = self.task;
        // A set of one: dropping it (the supervisor aborted) aborts the task with it.
        let mut one = JoinSet::new();
        one.spawn(async move {
            if inject {
                panic!("fault injection (LANES_FAULT_PANIC_TASK): task {task} panics");
            }
            run.await;
        });
        let settled = tokio::time::sleep_until(started + self.timing.settled);
        tokio::pin!(settled);
        loop {
            tokio::select! {
                ended = one.join_next() => return describe(ended),
                _ = &mut settled, if *down => {
                    *down = false;
                    tracing::info!(task = self.task, "background task running again");
                    self.readiness.task_up(self.task).await;
                }
            }
        }
    }

    fn take_fault(&self) -> bool {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        faults.remove(self.task)
    }
}

/// How a run ended, for the log.
fn describe(ended: Option<Result<(), JoinError>>) -> String {
    match ended {
        Some(Ok(())) => "returned before shutdown".into(),
        Some(Err(e)) if e.is_panic() => {
            let payload = e.into_panic();
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            format!("panicked: {msg}")
        }
        Some(Err(e)) => format!("was cancelled: {e}"),
        None => "was never started".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn readiness() -> Arc<Readiness> {
        Arc::new(Readiness::new(tonic_health::server::HealthReporter::new()).await)
    }

    /// Delays of milliseconds, so the tests take a fraction of a second.
    const FAST: Timing = Timing {
        first_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(40),
        settled: Duration::from_millis(100),
        reset_after: Duration::from_secs(60),
    };

    fn supervisor(
        ready: &Arc<Readiness>,
        stop: &CancellationToken,
        faults: &[String],
    ) -> Supervisor {
        Supervisor::new(ready.clone(), stop.clone(), faults).with_timing(FAST)
    }

    /// Waits until `cond` holds (up to 20 s: a loaded machine may be slow).
    async fn until(mut cond: impl FnMut() -> bool) {
        for _ in 0..4000 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("condition never held");
    }

    #[tokio::test]
    async fn a_panicking_task_is_restarted_and_the_replica_is_down_meanwhile() {
        let ready = readiness().await;
        let stop = CancellationToken::new();
        // Down for a whole second: long enough to be seen however slow the machine is.
        let slow_to_settle = Timing {
            settled: Duration::from_secs(1),
            ..FAST
        };
        let mut sup = supervisor(&ready, &stop, &["reaper".into()]).with_timing(slow_to_settle);
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let task_stop = stop.clone();
        sup.spawn("reaper", move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let stop = task_stop.clone();
            async move { stop.cancelled().await }
        });
        // The injected panic: down until the second run has lasted `settled`.
        until(|| !ready.is_serving()).await;
        until(|| runs.load(Ordering::SeqCst) == 2).await;
        until(|| ready.is_serving()).await;
        stop.cancel();
        sup.join().await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "one restart, then none");
    }

    #[tokio::test]
    async fn a_task_that_keeps_failing_keeps_the_replica_down() {
        let ready = readiness().await;
        let stop = CancellationToken::new();
        let mut sup = supervisor(&ready, &stop, &[]);
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        // Returns (fails) after 50 ms each time, before it settles (100 ms).
        sup.spawn("dispatcher", move || {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50))
        });
        until(|| runs.load(Ordering::SeqCst) >= 6).await;
        assert!(!ready.is_serving(), "a task failing over and over is down");
        stop.cancel();
        sup.join().await;
    }

    #[tokio::test]
    async fn shutdown_ends_tasks_without_restarts() {
        let ready = readiness().await;
        let stop = CancellationToken::new();
        let mut sup = supervisor(&ready, &stop, &[]);
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let task_stop = stop.clone();
        sup.spawn("promoter", move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let stop = task_stop.clone();
            async move { stop.cancelled().await }
        });
        until(|| runs.load(Ordering::SeqCst) == 1).await;
        stop.cancel();
        sup.join().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(ready.is_serving(), "a clean stop is no failure");
    }
}
