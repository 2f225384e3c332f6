//! The gRPC services, one file each, and what they share. Handlers validate, call one
//! `db` function, and map the result; they hold no state of their own beyond [`Ctx`].

pub mod admin;
mod admin_lanes;
pub mod agent;
pub mod auth;
pub mod client;
mod convert;
pub mod scaler;
pub mod schedules;

use crate::db::queues;
use crate::promoter::Promoter;
use crate::wake::Waker;
use sqlx::PgPool;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// What every service needs.
#[derive(Clone)]
pub struct Ctx {
    /// The database.
    pub pool: PgPool,
    /// This replica's wake streams.
    pub waker: Arc<Waker>,
    /// Largest payload or result, in bytes.
    pub max_payload_bytes: usize,
    /// Told when this replica schedules work for later, so it is promoted on time.
    pub promoter: Promoter,
    /// What callback URLs may point to (`--callback-allow`, `--callback-deny-hosts`).
    pub callback_policy: Arc<lanes_proto::urls::Policy>,
    /// Queues known to exist. Queues are never deleted, so a hit never goes stale.
    known: Arc<Mutex<HashSet<String>>>,
    /// The per-minute history's minutes already over, read once.
    pub history: Arc<crate::db::history::History>,
}

impl Ctx {
    /// Builds the shared context.
    pub fn new(
        pool: PgPool,
        waker: Arc<Waker>,
        promoter: Promoter,
        max_payload_bytes: usize,
    ) -> Self {
        Ctx {
            promoter,
            pool,
            waker,
            max_payload_bytes,
            callback_policy: Arc::default(),
            known: Arc::default(),
            history: Arc::default(),
        }
    }

    /// Sets what callback URLs may point to.
    pub fn with_callback_policy(mut self, policy: Arc<lanes_proto::urls::Policy>) -> Self {
        self.callback_policy = policy;
        self
    }

    /// Creates the queue with default settings on first use (once per process). Runs in its
    /// own autocommit statement: caching a queue created by a transaction that has not yet
    /// committed would let a concurrent enqueue skip the insert and not see the queue.
    pub async fn known_queue(&self, queue: &str) -> crate::error::Result<()> {
        let seen =
            |k: &Mutex<HashSet<String>>| k.lock().map(|s| s.contains(queue)).unwrap_or(false);
        if seen(&self.known) {
            return Ok(());
        }
        queues::ensure(&self.pool, queue).await?;
        if let Ok(mut s) = self.known.lock() {
            s.insert(queue.to_owned());
        }
        Ok(())
    }
}
