//! The Complete batcher: Complete calls that arrive while earlier ones are in flight are
//! gathered and run as one transaction — one `lanes_complete_many` call for all of them, one
//! lease statement per set of queues for the agents that asked for their next job, and one
//! commit. That is how many agents get past the cost of a commit each.
//!
//! Must never: change what a single Complete means. Each job is still guarded by its token;
//! if the batch fails as a whole, every call in it is retried on its own.

use crate::db::lease::{self, Leased, Leaser};
use crate::error::{Error, Result};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Batches in flight at once (each holds one database connection).
const SLOTS: usize = 4;

struct Op {
    id: i64,
    token: i64,
    result: serde_json::Value,
    /// The agent and its queues, when it wants its next job.
    next: Option<(String, Vec<String>)>,
    reply: oneshot::Sender<Result<Option<Leased>>>,
}

/// Handle to the batcher; cheap to clone.
#[derive(Clone)]
pub struct Completer {
    tx: mpsc::UnboundedSender<Op>,
}

// Off by default: on the 2-core benchmark machine batching measured slower than running
// each Complete alone (BENCHMARKS.md); kept behind `--complete-batch` for larger machines.

impl Completer {
    /// Starts the batcher: batches of at most `max_batch` calls, `SLOTS` batches at once.
    pub fn start(pool: PgPool, max_batch: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        // Detached on purpose: it ends when every Completer handle (the services) is dropped.
        tokio::spawn(dispatch(
            pool,
            rx,
            Arc::new(Semaphore::new(SLOTS)),
            max_batch,
        ));
        Completer { tx }
    }

    /// Completes a job held with `token`, and leases `next`'s next job if asked.
    pub async fn complete(
        &self,
        id: i64,
        token: i64,
        result: serde_json::Value,
        next: Option<&Leaser<'_>>,
    ) -> Result<Option<Leased>> {
        let (reply, rx) = oneshot::channel();
        let next = next.map(|w| (w.agent_id.to_owned(), w.queues.to_vec()));
        let op = Op {
            id,
            token,
            result,
            next,
            reply,
        };
        self.tx
            .send(op)
            .map_err(|_| Error::Precondition("the coordinator is shutting down".into()))?;
        rx.await
            .map_err(|_| Error::Precondition("the completion was dropped at shutdown".into()))?
    }
}

async fn dispatch(
    pool: PgPool,
    mut rx: mpsc::UnboundedReceiver<Op>,
    slots: Arc<Semaphore>,
    max_batch: usize,
) {
    loop {
        // Wait for a free slot first: while every slot is busy, calls pile up in the channel
        // and the next batch takes them all.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else { return };
        let mut ops = vec![first];
        while ops.len() < max_batch {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        // Detached: it replies to every op itself and releases its slot when done.
        tokio::spawn(async move {
            run(&pool, ops).await;
            drop(permit);
        });
    }
}

async fn run(pool: &PgPool, ops: Vec<Op>) {
    if ops.len() > 1 {
        match run_together(pool, &ops).await {
            Ok(outcomes) => {
                for (op, outcome) in ops.into_iter().zip(outcomes) {
                    // The caller may have gone (client cancelled): nothing to tell then.
                    let _ = op.reply.send(outcome);
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, batch = ops.len(), "batched completion failed; retrying one by one");
            }
        }
    }
    for op in ops {
        run_alone(pool, op).await;
    }
}

/// One Complete in its own transaction, exactly as without the batcher.
async fn run_alone(pool: &PgPool, op: Op) {
    let who = op
        .next
        .as_ref()
        .map(|(agent_id, queues)| Leaser { agent_id, queues });
    let r = lease::complete(pool, op.id, op.token, op.result, who.as_ref()).await;
    let _ = op.reply.send(r);
}

/// One transaction for the whole batch; the outcome of each op, in order.
async fn run_together(pool: &PgPool, ops: &[Op]) -> Result<Vec<Result<Option<Leased>>>> {
    let mut tx = pool.begin().await?;
    let ids: Vec<i64> = ops.iter().map(|o| o.id).collect();
    let tokens: Vec<i64> = ops.iter().map(|o| o.token).collect();
    let results: Vec<serde_json::Value> = ops.iter().map(|o| o.result.clone()).collect();
    let statuses = lease::complete_many(&mut tx, &ids, &tokens, &results).await?;
    let mut outcomes: Vec<Result<Option<Leased>>> = ops
        .iter()
        .zip(&statuses)
        .map(|(op, status)| match status.as_str() {
            "ok" => Ok(None),
            "stale" => Err(Error::stale_token(op.id, op.token)),
            _ => Err(Error::job_not_found(op.id)),
        })
        .collect();
    // Agents that completed and want more, grouped by the queues they serve.
    let mut wanting: BTreeMap<&[String], Vec<usize>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let (Some((_, queues)), Ok(_)) = (&op.next, &outcomes[i]) {
            wanting.entry(queues.as_slice()).or_default().push(i);
        }
    }
    for (queues, idx) in wanting {
        let agents: Vec<String> = idx
            .iter()
            .filter_map(|&i| ops[i].next.as_ref().map(|n| n.0.clone()))
            .collect();
        let leased = lease::lease(&mut tx, queues, &agents).await?;
        // Each leased job names its agent; an agent appears once per batch (one lease at a
        // time), but a misbehaving client could repeat an id: then each copy takes one job.
        let mut unserved: Vec<usize> = idx.clone();
        for job in leased {
            let owner = unserved.iter().position(|&i| {
                ops[i].next.as_ref().map(|n| n.0.as_str()) == job.job.agent_id.as_deref()
            });
            if let Some(p) = owner {
                outcomes[unserved.remove(p)] = Ok(Some(job));
            }
        }
    }
    tx.commit().await?;
    Ok(outcomes)
}
