//! Assembles the gRPC server: the Lanes services behind their auth guards (schedules with
//! admin's), KEDA's external scaler (read-only, no token), server reflection (v1 and v1alpha,
//! for grpcurl old and new), grpc.health.v1 following the replica's readiness (`health.rs`),
//! optional TLS, the optional metrics listener, and the background tasks (wake fan-out and
//! listener, promoter, scheduler, reaper, webhook dispatcher, event fan-out, watchdog,
//! retention, database probe), each under a supervisor that restarts it (`supervise.rs`).
//! Stops cleanly on `stop`.

use crate::config::ServeArgs;
use crate::health::{self, Readiness};
use crate::promoter::Promoter;
use crate::schedules::scheduler::Scheduler;
use crate::service::Ctx;
use crate::service::admin::Admin;
use crate::service::agent::Agents;
use crate::service::auth::Guard;
use crate::service::client::Clients;
use crate::service::scaler::Scaler;
use crate::service::schedules::Schedules;
use crate::supervise::Supervisor;
use crate::wake::{WakeRequest, Waker};
use crate::{db, dispatch, events, metrics, reaper, retention};
use anyhow::Context;
use lanes_proto::externalscaler::external_scaler_server::ExternalScalerServer;
use lanes_proto::v1::admin_service_server::AdminServiceServer;
use lanes_proto::v1::agent_service_server::AgentServiceServer;
use lanes_proto::v1::client_service_server::ClientServiceServer;
use lanes_proto::v1::schedule_service_server::ScheduleServiceServer;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Identity, Server, ServerTlsConfig};

/// Runs the coordinator until `stop` is cancelled.
pub async fn serve(args: ServeArgs, stop: CancellationToken) -> anyhow::Result<()> {
    let endpoints = match &args.events.event_endpoints {
        Some(json) if !json.trim().is_empty() => events::endpoints::parse(json)?,
        _ => Vec::new(),
    };
    let pool = db::connect(&args.database_url, args.db_pool_size, !endpoints.is_empty())
        .await
        .context("connecting to the database (DATABASE_URL)")?;
    // LISTEN and the migrations' advisory locks hold session state: behind a transaction
    // pooler they need a direct connection of their own.
    let direct = match &args.listen_database_url {
        Some(url) => db::connect(url, 2, false)
            .await
            .context("connecting to the database (LANES_LISTEN_DATABASE_URL)")?,
        None => pool.clone(),
    };
    db::migrate(&direct).await.context("applying migrations")?;
    let replica = args.coordinator_id.clone().unwrap_or_else(default_id);
    let stale_ms = (args.tick_ms * 5).max(10_000) as i64;
    let (waker, requests) = Waker::new(pool.clone(), replica.clone(), stale_ms);
    waker.listen_on(direct.clone());
    let promoter = Promoter::default();
    let scheduler = Scheduler::default();
    let callback_policy = Arc::new(
        lanes_proto::urls::Policy::new(&args.callback_allow, &args.callback_deny_hosts)
            .context("callback settings (LANES_CALLBACK_ALLOW)")?,
    );
    let ctx = Ctx::new(
        pool.clone(),
        waker.clone(),
        promoter.clone(),
        args.max_payload_bytes,
    )
    .with_callback_policy(callback_policy.clone());

    // Readiness follows the database and the background tasks (`health.rs`); the health
    // service answers SERVING for everything until told otherwise.
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AgentServiceServer<Agents>>().await;
    health.set_serving::<ClientServiceServer<Clients>>().await;
    health.set_serving::<AdminServiceServer<Admin>>().await;
    health
        .set_serving::<ScheduleServiceServer<Schedules>>()
        .await;
    health.set_serving::<ExternalScalerServer<Scaler>>().await;
    let readiness = Arc::new(Readiness::new(health).await);
    // Installed before the tasks start, so their restart counters are registered at 0.
    let metrics_handle = match args.metrics_listen {
        Some(_) => Some(metrics::install().context("installing the metrics recorder")?),
        None => None,
    };
    let mut tasks = Supervisor::new(readiness.clone(), stop.clone(), &args.fault_panic_task);
    let background = Background {
        args: &args,
        pool: pool.clone(),
        waker: waker.clone(),
        stop: stop.clone(),
        stale_ms,
    };
    background.wake(&mut tasks, requests).await?;
    background.jobs(&mut tasks, &promoter);
    background.schedules(&mut tasks, &scheduler);
    background.webhooks(&mut tasks, endpoints, callback_policy)?;
    background.database_probe(&mut tasks, &readiness);
    if let (Some(addr), Some(handle)) = (args.metrics_listen, metrics_handle) {
        background.metrics(&mut tasks, addr, handle)?;
    }
    let tick = Duration::from_millis(args.tick_ms.max(100));

    let (agent_guard, client_guard, admin_guard) = guards(&args);
    // Schedules are operators' business: the admin role, like AdminService.
    let schedule_guard = admin_guard.clone();
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let max_message = 16 * 1024 * 1024 + 2 * args.max_payload_bytes;
    let agents =
        AgentServiceServer::new(Agents::new(ctx.clone())).max_decoding_message_size(max_message);
    let clients =
        ClientServiceServer::new(Clients::new(ctx.clone())).max_decoding_message_size(max_message);
    let admin =
        AdminServiceServer::new(Admin::new(ctx.clone())).max_decoding_message_size(max_message);
    let schedules = ScheduleServiceServer::new(Schedules::new(ctx.clone(), scheduler))
        .max_decoding_message_size(max_message);
    let scaler = ExternalScalerServer::new(Scaler::new(ctx.clone(), tick, stop.clone()));

    // A span per call, continuing the caller's trace (a no-op while tracing is off).
    let mut builder = Server::builder().layer(lanes_telemetry::grpc::ServerTraceLayer);
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let identity = Identity::from_pem(
            std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?,
            std::fs::read(key).with_context(|| format!("reading {}", key.display()))?,
        );
        builder = builder.tls_config(ServerTlsConfig::new().identity(identity))?;
    }
    let router = builder
        // Outermost, so calls refused by a guard are timed and counted too. Without a
        // recorder its histogram calls are no-ops; the layer is left out then anyway.
        .layer(tower::util::option_layer(
            metrics::enabled().then_some(metrics::rpc::RpcMetricsLayer),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            agents,
            move |r| agent_guard.check(r),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            clients,
            move |r| client_guard.check(r),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            admin,
            move |r| admin_guard.check(r),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            schedules,
            move |r| schedule_guard.check(r),
        ))
        // No guard: KEDA's external trigger cannot send a token, and the scaler is
        // read-only, revealing job counts only.
        .add_service(scaler)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, coordinator.id = %replica, tls = args.tls_cert.is_some(), "coordinator listening");
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    // Graceful drain: readiness goes NOT_SERVING, wake streams end with UNAVAILABLE (their
    // agents move to another replica at once), then the server stops accepting and finishes
    // the calls in flight; the database stays open until they are done.
    let (shutdown, drain_waker) = (stop.clone(), waker.clone());
    let drain_readiness = readiness.clone();
    let draining = async move {
        shutdown.cancelled().await;
        drain_readiness.drain().await;
        drain_waker.close_streams();
    };
    router
        .serve_with_incoming_shutdown(incoming, draining)
        .await
        .context("gRPC server")?;
    tracing::info!("gRPC server stopped; draining background tasks");
    stop.cancel();
    tasks.join().await;
    pool.close().await;
    direct.close().await;
    Ok(())
}

/// What the background tasks share; each method starts some of them under supervision.
/// Every closure builds a fresh run from clones, as a restart calls it again.
struct Background<'a> {
    args: &'a ServeArgs,
    pool: PgPool,
    waker: Arc<Waker>,
    stop: CancellationToken,
    stale_ms: i64,
}

impl Background<'_> {
    /// The wake fan-out with its safety tick, and the NOTIFY listener.
    async fn wake(
        &self,
        tasks: &mut Supervisor,
        requests: UnboundedReceiver<WakeRequest>,
    ) -> anyhow::Result<()> {
        let tick = Duration::from_millis(self.args.tick_ms.max(100));
        let keepalive = self.args.keepalive_ticks;
        let requests = Arc::new(tokio::sync::Mutex::new(requests));
        let (waker, stop) = (self.waker.clone(), self.stop.clone());
        tasks.spawn("wake", move || {
            waker
                .clone()
                .run(requests.clone(), tick, keepalive, stop.clone())
        });
        // Opened before the server accepts agents, so no wake meant for them slips by
        // unheard; a restarted listener opens a new connection.
        let first = self
            .waker
            .listener()
            .await
            .context("listening for wakes (LISTEN)")?;
        let first = Arc::new(std::sync::Mutex::new(Some(first)));
        let (waker, stop) = (self.waker.clone(), self.stop.clone());
        tasks.spawn("wake-listener", move || {
            let listener = first.lock().unwrap_or_else(|p| p.into_inner()).take();
            waker.clone().listen(listener, stop.clone())
        });
        Ok(())
    }

    /// The scheduler, which fires the ticks of recurring schedules.
    fn schedules(&self, tasks: &mut Supervisor, scheduler: &Scheduler) {
        let grace = Duration::from_millis(self.args.schedule_misfire_ms);
        let (pool, waker, stop) = (self.pool.clone(), self.waker.clone(), self.stop.clone());
        let scheduler = scheduler.clone();
        tasks.spawn("scheduler", move || {
            scheduler
                .clone()
                .run(pool.clone(), waker.clone(), grace, stop.clone())
        });
    }

    /// The promoter, the reaper and retention.
    fn jobs(&self, tasks: &mut Supervisor, promoter: &Promoter) {
        let (pool, waker, stop) = (self.pool.clone(), self.waker.clone(), self.stop.clone());
        let promoter = promoter.clone();
        tasks.spawn("promoter", move || {
            promoter
                .clone()
                .run(pool.clone(), waker.clone(), stop.clone())
        });
        let every = Duration::from_millis(self.args.reaper_ms.max(100));
        let (pool, waker, stop) = (self.pool.clone(), self.waker.clone(), self.stop.clone());
        tasks.spawn("reaper", move || {
            reaper::run(pool.clone(), waker.clone(), every, stop.clone())
        });
        if self.args.retention_interval_s > 0 {
            let every = Duration::from_secs(self.args.retention_interval_s);
            let outbox_s = i64::try_from(self.args.outbox_retention_s).unwrap_or(i64::MAX);
            let (pool, stop) = (self.pool.clone(), self.stop.clone());
            tasks.spawn("retention", move || {
                retention::run(pool.clone(), every, outbox_s, stop.clone())
            });
        }
    }

    /// The webhook dispatcher, the event fan-out and the watchdog.
    fn webhooks(
        &self,
        tasks: &mut Supervisor,
        endpoints: Vec<events::endpoints::Endpoint>,
        policy: Arc<lanes_proto::urls::Policy>,
    ) -> anyhow::Result<()> {
        let args = self.args;
        let dispatcher = dispatch::Dispatcher::new(
            self.pool.clone(),
            args.webhook_secret.as_deref(),
            args.webhook_backoff_ms,
            policy,
        )
        .context("webhook settings (LANES_WEBHOOK_SECRET)")?
        .with_endpoints(&endpoints)?;
        let stop = self.stop.clone();
        tasks.spawn("dispatcher", move || dispatcher.clone().run(stop.clone()));
        let endpoints = Arc::new(endpoints);
        let fanout = events::fanout::Fanout::new(self.pool.clone(), endpoints, &args.events);
        let stop = self.stop.clone();
        tasks.spawn("event-fanout", move || {
            events::run_fanout(fanout.clone(), stop.clone())
        });
        if args.events.watchdog_interval_ms > 0 {
            let dog =
                events::watchdog::Watchdog::new(self.pool.clone(), &args.events, self.stale_ms);
            let every = Duration::from_millis(args.events.watchdog_interval_ms.max(100));
            let stop = self.stop.clone();
            tasks.spawn("watchdog", move || {
                events::run_watchdog(dog.clone(), every, stop.clone())
            });
        }
        Ok(())
    }

    /// The database probe behind readiness.
    fn database_probe(&self, tasks: &mut Supervisor, readiness: &Arc<Readiness>) {
        let (pool, readiness, stop) = (self.pool.clone(), readiness.clone(), self.stop.clone());
        tasks.spawn("database-probe", move || {
            health::watch_database(pool.clone(), readiness.clone(), stop.clone())
        });
    }

    /// The metrics listener on `addr`.
    fn metrics(
        &self,
        tasks: &mut Supervisor,
        addr: std::net::SocketAddr,
        handle: PrometheusHandle,
    ) -> anyhow::Result<()> {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("binding the metrics listener {addr}"))?;
        listener.set_nonblocking(true)?;
        tracing::info!(addr = %listener.local_addr()?, "metrics listening on /metrics");
        let (pool, stop, stale_ms) = (self.pool.clone(), self.stop.clone(), self.stale_ms);
        tasks.spawn("metrics", move || {
            // Each run serves the same socket: a restart does not bind the port again.
            let listener = listener
                .try_clone()
                .and_then(tokio::net::TcpListener::from_std);
            let sampler = metrics::sampler::Sampler::new(pool.clone(), stale_ms);
            let (handle, stop) = (handle.clone(), stop.clone());
            async move {
                match listener {
                    Ok(l) => metrics::http::serve(l, handle, sampler, stop).await,
                    Err(e) => tracing::error!(error = %e, "cannot serve the metrics listener"),
                }
            }
        });
        Ok(())
    }
}

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(lanes_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

fn guards(args: &ServeArgs) -> (Guard, Guard, Guard) {
    let clean = |v: &[String]| {
        v.iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
    };
    let (agent, client, admin) = (
        clean(&args.agent_tokens),
        clean(&args.client_tokens),
        clean(&args.admin_tokens),
    );
    let known: Vec<String> = agent.iter().chain(&client).chain(&admin).cloned().collect();
    if known.is_empty() {
        tracing::warn!(
            "no tokens configured (LANES_AGENT_TOKENS / LANES_CLIENT_TOKENS / LANES_ADMIN_TOKENS): \
             every service accepts unauthenticated calls; for local use only"
        );
        let open = Guard::open;
        return (open(), open(), open());
    }
    // Once any token is configured every service requires one: a role left without tokens
    // is closed, never silently open. Admin tokens also serve the client service.
    let client_or_admin: Vec<String> = client.iter().chain(&admin).cloned().collect();
    (
        Guard::new(agent, known.clone()),
        Guard::new(client_or_admin, known.clone()),
        Guard::new(admin, known),
    )
}

fn default_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "coordinator".into());
    format!("{host}-{}", std::process::id())
}
