//! Jobs this replica leased, with their queue and lease time: gives a Complete or Fail its
//! queue and run time without a database read. A job finished through another replica
//! (failover) leaves its entry behind; such entries are dropped after `FORGET_AFTER`, and a
//! miss costs the caller one read, so forgetting is always safe.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Entries older than this are dropped (checked at most once per `FORGET_AFTER`).
const FORGET_AFTER: Duration = Duration::from_secs(3600);

struct Table {
    jobs: HashMap<i64, (String, Instant)>,
    swept: Instant,
}

static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(|| {
    Mutex::new(Table {
        jobs: HashMap::new(),
        swept: Instant::now(),
    })
});

fn table() -> MutexGuard<'static, Table> {
    // A panic while holding the lock leaves a plain map behind: still usable.
    TABLE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Remembers that job `id` of `queue` was leased now.
pub fn insert(id: i64, queue: &str) {
    let mut t = table();
    let now = Instant::now();
    if now.duration_since(t.swept) > FORGET_AFTER {
        t.jobs
            .retain(|_, (_, at)| now.duration_since(*at) < FORGET_AFTER);
        t.swept = now;
    }
    t.jobs.insert(id, (queue.to_owned(), now));
}

/// Forgets job `id`; returns its queue and how long ago it was leased, if known.
pub fn take(id: i64) -> Option<(String, Duration)> {
    table()
        .jobs
        .remove(&id)
        .map(|(queue, at)| (queue, at.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_taken_once() {
        insert(-7, "q");
        let (queue, took) = take(-7).unwrap_or_default();
        assert_eq!(queue, "q");
        assert!(took < Duration::from_secs(5));
        assert!(take(-7).is_none());
    }
}
