//! The gRPC services, one file each, and what they share. Handlers validate, call one
//! `db` function, and map the result; they hold no state of their own beyond [`Ctx`].

pub mod admin;
pub mod agent;
pub mod auth;
pub mod client;
mod convert;
pub mod scaler;

use crate::batch::Completer;
use crate::db::queues;
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
    /// Batches concurrent Complete calls into one transaction, when enabled
    /// (`--complete-batch`); `None` runs each Complete on its own.
    pub completer: Option<Completer>,
    /// What callback URLs may point to (`--callback-allow`, `--callback-deny-hosts`).
    pub callback_policy: Arc<lanes_proto::urls::Policy>,
    /// Queues known to exist. Queues are never deleted, so a hit never goes stale.
    known: Arc<Mutex<HashSet<String>>>,
}

impl Ctx {
    /// Builds the shared context; `complete_batch` > 1 turns the Complete batcher on with
    /// batches of at most that many calls.
    pub fn new(
        pool: PgPool,
        waker: Arc<Waker>,
        max_payload_bytes: usize,
        complete_batch: usize,
    ) -> Self {
        Ctx {
            completer: (complete_batch > 1).then(|| Completer::start(pool.clone(), complete_batch)),
            pool,
            waker,
            max_payload_bytes,
            callback_policy: Arc::default(),
            known: Arc::default(),
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
