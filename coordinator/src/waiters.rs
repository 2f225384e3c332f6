//! Clients waiting for a job to finish (ClientService.WaitJob). A wait flags its job
//! (`jobs.notify_finish`), so the transition that finishes it sends `NOTIFY lanes_done` with
//! the job's id, which every replica hears on its wake listener connection: a waiting call is
//! woken by the finish itself, never by polling the table.
//!
//! Must never: lose a wake-up. A finish that lands between the flag and the wait leaves a
//! permit behind (each watch has its own `Notify`); a listener that reconnects wakes every
//! watch, which then reads its job again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// The channel the transitions notify on when a flagged job finishes.
pub const CHANNEL: &str = "lanes_done";

/// The watches of each job: (serial, its wake-up).
type ByJob = HashMap<i64, Vec<(u64, Arc<Notify>)>>;

/// Calls waiting for jobs of this replica's clients.
#[derive(Default)]
pub struct Waiters {
    serial: AtomicU64,
    by_job: Mutex<ByJob>,
}

/// One call's interest in one job; unregistered when dropped.
pub struct Watch<'a> {
    waiters: &'a Waiters,
    job: i64,
    serial: u64,
    notify: Arc<Notify>,
}

impl Waiters {
    /// Starts watching job `id`: finishes from now on wake [`Watch::changed`].
    pub fn watch(&self, id: i64) -> Watch<'_> {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        self.lock()
            .entry(id)
            .or_default()
            .push((serial, notify.clone()));
        Watch {
            waiters: self,
            job: id,
            serial,
            notify,
        }
    }

    /// Job `id` finished (a `lanes_done` notification).
    pub fn finished(&self, id: i64) {
        if let Some(ws) = self.lock().get(&id) {
            for (_, n) in ws {
                n.notify_one();
            }
        }
    }

    /// Every watch reads its job again (notifications may have been missed).
    pub fn wake_all(&self) {
        for ws in self.lock().values() {
            for (_, n) in ws {
                n.notify_one();
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, ByJob> {
        // A plain map: still consistent after a panic elsewhere.
        self.by_job.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Watch<'_> {
    /// Resolves once the job may have changed since the last call (or since the watch began).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut map = self.waiters.lock();
        if let Some(ws) = map.get_mut(&self.job) {
            ws.retain(|(s, _)| *s != self.serial);
            if ws.is_empty() {
                map.remove(&self.job);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_finish_before_the_wait_is_not_lost() {
        let w = Waiters::default();
        let watch = w.watch(7);
        w.finished(8);
        w.finished(7);
        tokio::time::timeout(Duration::from_secs(5), watch.changed())
            .await
            .expect("the permit left by the finish wakes the wait");
        drop(watch);
        assert!(w.lock().is_empty(), "a dropped watch unregisters");
    }
}
