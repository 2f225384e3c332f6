//! Wake, not poll. Idle agents hold a WakeStream; this module keeps this replica's streams,
//! claims asleep agents in the database when work becomes ready (so across every replica
//! one ready job wakes at most one agent), and tells the replica holding each claimed
//! stream through Postgres LISTEN/NOTIFY. Idle agents cause no database queries; a slow
//! safety tick covers delayed jobs and lost notifications.
//!
//! Must never: wake an agent that is not asleep, or block an RPC on a wake.

use crate::db::{agents, stats};
use lanes_proto::v1::WakeEvent;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

const CHANNEL: &str = "lanes_wake";
/// What a stream ends with when its replica shuts down.
const SHUTTING_DOWN: &str = "this coordinator is shutting down; connect to another replica";
/// Most stream ids in one NOTIFY payload (Postgres caps payloads near 8,000 bytes).
const IDS_PER_NOTIFY: usize = 40;

/// A wake request: queue (`None`: any), how many agents, why.
pub type WakeRequest = (Option<String>, i64, &'static str);

/// A stream's messages.
pub type WakeSender = mpsc::Sender<Result<WakeEvent, Status>>;

struct Stream {
    queues: Vec<String>,
    tx: WakeSender,
}

/// This replica's wake streams and the wake fan-out.
pub struct Waker {
    pool: PgPool,
    /// Where the LISTEN connection comes from: a direct pool behind a transaction pooler.
    listen_pool: Mutex<Option<PgPool>>,
    replica: String,
    serial: AtomicU64,
    streams: Mutex<HashMap<String, Stream>>,
    /// Set once this replica began shutting down: no new stream is accepted.
    closing: AtomicBool,
    requests: mpsc::UnboundedSender<WakeRequest>,
    /// Calls waiting for jobs to finish, woken from the same listener connection.
    pub waiters: crate::waiters::Waiters,
    /// Agents not refreshed for this long count as gone.
    pub stale_ms: i64,
    /// This replica's agents found marked awake with nothing running at the last keep-alive.
    idle_awake: Mutex<Vec<String>>,
}

impl Waker {
    /// Creates the waker of replica `replica`; `run` must be spawned with the receiver.
    pub fn new(
        pool: PgPool,
        replica: String,
        stale_ms: i64,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<WakeRequest>) {
        let (requests, rx) = mpsc::unbounded_channel();
        let waker = Waker {
            pool,
            listen_pool: Mutex::new(None),
            replica,
            serial: AtomicU64::new(0),
            streams: Mutex::new(HashMap::new()),
            idle_awake: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
            requests,
            waiters: crate::waiters::Waiters::default(),
            stale_ms,
        };
        (Arc::new(waker), rx)
    }

    /// Registers an agent's stream; returns its id (unique per connection).
    pub async fn subscribe(
        &self,
        agent_id: &str,
        queues: &[String],
        tx: WakeSender,
    ) -> crate::error::Result<String> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(crate::error::Error::Unavailable(SHUTTING_DOWN.into()));
        }
        let n = self.serial.fetch_add(1, Ordering::Relaxed);
        let stream_id = format!("{}/{n}", self.replica);
        agents::register(&self.pool, agent_id, &stream_id, queues).await?;
        let stream = Stream {
            queues: queues.to_vec(),
            tx,
        };
        self.lock().insert(stream_id.clone(), stream);
        Ok(stream_id)
    }

    /// Ends every stream of this replica with UNAVAILABLE, which sends its agent to another
    /// replica at once, and refuses new ones: the first step of a graceful shutdown (a
    /// rolling deploy must not leave idle agents attached to a replica that is going away).
    pub fn close_streams(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let streams: Vec<Stream> = self.lock().drain().map(|(_, s)| s).collect();
        for s in &streams {
            // A full buffer holds wakes the agent has not read yet; the stream still ends
            // when its sender goes, right after.
            let _ = s.tx.try_send(Err(Status::unavailable(SHUTTING_DOWN)));
        }
        tracing::info!(
            streams = streams.len(),
            "wake streams closed: agents move to another replica"
        );
    }

    /// Forgets the closed stream `stream_id` of `agent_id` (here and in the database, unless
    /// the agent registered again elsewhere meanwhile).
    pub async fn unsubscribe(&self, stream_id: &str, agent_id: &str) {
        self.lock().remove(stream_id);
        if let Err(e) = agents::unregister(&self.pool, agent_id, stream_id).await {
            tracing::warn!(error = %e, agent.id = %agent_id, "could not unregister agent");
        }
    }

    /// Asks for up to `n` asleep agents serving `queue` (any queue: `None`) to be woken.
    /// Never blocks: the wake task does the work and coalesces bursts.
    pub fn request(&self, queue: Option<&str>, n: i64, reason: &'static str) {
        if n > 0 {
            // The receiver only goes away at shutdown, when wakes no longer matter.
            let _ = self.requests.send((queue.map(str::to_owned), n, reason));
        }
    }

    /// Wakes now, waiting for the claim; returns how many agents were woken.
    pub async fn wake_now(
        &self,
        queue: Option<&str>,
        n: i64,
        reason: &str,
    ) -> crate::error::Result<usize> {
        let claimed = agents::claim(&self.pool, queue, n, self.stale_ms).await?;
        let count = claimed.len();
        self.deliver(claimed, queue.unwrap_or_default(), reason)
            .await;
        Ok(count)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Stream>> {
        // A panic while holding this lock leaves a plain map behind: still consistent.
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends the event to local streams and NOTIFYs the other replicas about theirs.
    async fn deliver(&self, claimed: Vec<agents::Claimed>, queue: &str, reason: &str) {
        let mut remote = Vec::new();
        for c in claimed {
            if !self.send_local(&c.coordinator_id, queue, reason) {
                remote.push(c.coordinator_id);
            }
        }
        for chunk in remote.chunks(IDS_PER_NOTIFY) {
            let payload = json!({ "streams": chunk, "queue": queue, "reason": reason }).to_string();
            let sent = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(payload)
                .execute(&self.pool)
                .await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, "wake notify failed; the safety tick will cover it");
            }
        }
    }

    fn send_local(&self, stream_id: &str, queue: &str, reason: &str) -> bool {
        let streams = self.lock();
        let Some(s) = streams.get(stream_id) else {
            return false;
        };
        let event = WakeEvent {
            queue: queue.to_owned(),
            reason: reason.to_owned(),
        };
        // A full buffer means the agent already has wakes it has not read: one more is moot.
        let _ = s.tx.try_send(Ok(event));
        true
    }

    /// Queues served by this replica's streams.
    fn local_queues(&self) -> Vec<String> {
        let mut qs: Vec<String> = self
            .lock()
            .values()
            .flat_map(|s| s.queues.clone())
            .collect();
        qs.sort();
        qs.dedup();
        qs
    }

    fn local_ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn keepalive(&self) {
        for s in self.lock().values() {
            let _ = s.tx.try_send(Ok(WakeEvent {
                queue: String::new(),
                reason: "tick".into(),
            }));
        }
    }

    /// Runs the wake task (the requests queued by `request`) and the safety tick until
    /// `stop`. The receiver is shared so a restarted task (`crate::supervise`) takes it over;
    /// the listener runs as a task of its own ([`Waker::listen`]).
    pub async fn run(
        self: Arc<Self>,
        requests: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<WakeRequest>>>,
        tick: Duration,
        keepalive_every: u32,
        stop: CancellationToken,
    ) {
        // Held for the task's life: only one run at a time serves the requests, and a run
        // that panicked released it as it unwound.
        let mut requests = requests.lock().await;
        let mut ticker = tokio::time::interval(tick);
        let mut ticks: u32 = 0;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(first) = requests.recv() => self.serve_requests(first, &mut requests).await,
                _ = ticker.tick() => {
                    ticks = ticks.wrapping_add(1);
                    self.safety_tick(keepalive_every > 0 && ticks.is_multiple_of(keepalive_every)).await;
                }
            }
        }
    }

    /// Coalesces every request already queued into one claim per queue.
    async fn serve_requests(
        &self,
        first: WakeRequest,
        rx: &mut mpsc::UnboundedReceiver<WakeRequest>,
    ) {
        let mut wanted: BTreeMap<Option<String>, (i64, &'static str)> = BTreeMap::new();
        let mut add = |(q, n, why): (Option<String>, i64, &'static str)| {
            wanted.entry(q).or_insert((0, why)).0 += n;
        };
        add(first);
        while let Ok(r) = rx.try_recv() {
            add(r);
        }
        for (queue, (n, why)) in wanted {
            if let Err(e) = self.wake_now(queue.as_deref(), n, why).await {
                tracing::warn!(error = %e, "wake failed; the safety tick will cover it");
            }
        }
    }

    /// Refreshes this replica's agents and wakes asleep ones for work that became ready
    /// without an enqueue (delayed jobs, retry backoffs) or whose wake was lost. With the
    /// keep-alive, agents found marked awake with nothing running at two keep-alives in a row
    /// are first put back to sleep.
    async fn safety_tick(&self, keepalive: bool) {
        let ids = self.local_ids();
        if ids.is_empty() {
            return;
        }
        if let Err(e) = agents::touch(&self.pool, &ids, self.stale_ms).await {
            tracing::warn!(error = %e, "could not refresh agents");
        }
        if keepalive {
            let seen =
                std::mem::take(&mut *self.idle_awake.lock().unwrap_or_else(|p| p.into_inner()));
            match agents::rest(&self.pool, &ids, &seen).await {
                Ok((still, rested)) => {
                    if rested > 0 {
                        tracing::debug!(
                            agents = rested,
                            "agents marked awake without a job put back to sleep"
                        );
                    }
                    *self.idle_awake.lock().unwrap_or_else(|p| p.into_inner()) = still;
                }
                Err(e) => tracing::warn!(error = %e, "could not put idle agents back to sleep"),
            }
        }
        for queue in self.local_queues() {
            match stats::ready(&self.pool, Some(&queue)).await {
                Ok(n) if n > 0 => self.request(Some(&queue), n, "tick"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "safety tick failed"),
            }
        }
        if keepalive {
            self.keepalive();
        }
    }

    /// Opens LISTEN connections from `pool` rather than the main pool (which may go through
    /// a transaction pooler, where LISTEN is lost when the transaction ends).
    pub fn listen_on(&self, pool: PgPool) {
        *self.listen_pool.lock().unwrap_or_else(|p| p.into_inner()) = Some(pool);
    }

    /// A connection listening for wakes claimed by other replicas. The server opens it
    /// before accepting agents, so no wake meant for them can slip by unheard.
    pub async fn listener(&self) -> Result<PgListener, sqlx::Error> {
        let pool = self
            .listen_pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| self.pool.clone());
        let mut listener = PgListener::connect_with(&pool).await?;
        listener
            .listen_all([CHANNEL, crate::waiters::CHANNEL])
            .await?;
        // Finishes notified while no connection listened were missed: every wait looks again.
        self.waiters.wake_all();
        Ok(listener)
    }

    /// Delivers wakes that other replicas claimed for this replica's streams until `stop`,
    /// on `first` (opened before the server accepted agents) or else a new connection.
    pub async fn listen(self: Arc<Self>, mut first: Option<PgListener>, stop: CancellationToken) {
        loop {
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.listen_once(first.take(), &stop) => r,
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "wake listener lost its connection; reconnecting");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    async fn listen_once(
        &self,
        given: Option<PgListener>,
        stop: &CancellationToken,
    ) -> Result<(), sqlx::Error> {
        let mut listener = match given {
            Some(l) => l,
            None => self.listener().await?,
        };
        while !stop.is_cancelled() {
            let n = listener.recv().await?;
            if n.channel() == crate::waiters::CHANNEL {
                if let Ok(id) = n.payload().parse() {
                    self.waiters.finished(id);
                }
                continue;
            }
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(n.payload()) else {
                continue;
            };
            let queue = msg["queue"].as_str().unwrap_or_default();
            let reason = msg["reason"].as_str().unwrap_or("enqueue");
            for id in msg["streams"].as_array().into_iter().flatten() {
                if let Some(id) = id.as_str() {
                    self.send_local(id, queue, reason);
                }
            }
        }
        Ok(())
    }
}
