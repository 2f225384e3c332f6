//! Assembles the gRPC server: the three Lanes services behind their auth guards, KEDA's
//! external scaler (read-only, no token), server reflection (v1 and v1alpha, for grpcurl old
//! and new), grpc.health.v1, optional TLS, the optional metrics listener, and the background
//! tasks (wake fan-out, safety tick, reaper, webhook dispatcher, event fan-out, watchdog,
//! retention). Stops cleanly on `stop`.

use crate::config::ServeArgs;
use crate::promoter::Promoter;
use crate::service::Ctx;
use crate::service::admin::Admin;
use crate::service::agent::Agents;
use crate::service::auth::Guard;
use crate::service::client::Clients;
use crate::service::scaler::Scaler;
use crate::wake::Waker;
use crate::{db, dispatch, events, metrics, reaper, retention};
use anyhow::Context;
use lanes_proto::externalscaler::external_scaler_server::ExternalScalerServer;
use lanes_proto::v1::admin_service_server::AdminServiceServer;
use lanes_proto::v1::agent_service_server::AgentServiceServer;
use lanes_proto::v1::client_service_server::ClientServiceServer;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
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
    db::migrate(&pool).await.context("applying migrations")?;
    let replica = args.coordinator_id.clone().unwrap_or_else(default_id);
    let stale_ms = (args.tick_ms * 5).max(10_000) as i64;
    let (waker, requests) = Waker::new(pool.clone(), replica.clone(), stale_ms);
    let promoter = Promoter::default();
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

    let mut tasks = JoinSet::new();
    let tick = Duration::from_millis(args.tick_ms.max(100));
    let listener = waker
        .listener()
        .await
        .context("listening for wakes (LISTEN)")?;
    let wake_task = waker
        .clone()
        .run(requests, tick, args.keepalive_ticks, listener, stop.clone());
    tasks.spawn(wake_task);
    tasks.spawn(promoter.run(pool.clone(), waker.clone(), stop.clone()));
    let reap_every = Duration::from_millis(args.reaper_ms.max(100));
    tasks.spawn(reaper::run(
        pool.clone(),
        waker.clone(),
        reap_every,
        stop.clone(),
    ));
    let dispatcher = dispatch::Dispatcher::new(
        pool.clone(),
        args.webhook_secret.as_deref(),
        args.webhook_backoff_ms,
        callback_policy,
    )
    .context("webhook settings (LANES_WEBHOOK_SECRET)")?;
    let dispatcher = dispatcher.with_endpoints(&endpoints)?;
    tasks.spawn(dispatcher.run(stop.clone()));
    let fanout = events::fanout::Fanout::new(pool.clone(), Arc::new(endpoints), &args.events);
    tasks.spawn(events::run_fanout(fanout, stop.clone()));
    if args.events.watchdog_interval_ms > 0 {
        let dog = events::watchdog::Watchdog::new(pool.clone(), &args.events, stale_ms);
        let every = Duration::from_millis(args.events.watchdog_interval_ms.max(100));
        tasks.spawn(events::run_watchdog(dog, every, stop.clone()));
    }
    if args.retention_interval_s > 0 {
        tasks.spawn(retention::run(
            pool.clone(),
            Duration::from_secs(args.retention_interval_s),
            i64::try_from(args.outbox_retention_s).unwrap_or(i64::MAX),
            stop.clone(),
        ));
    }
    if let Some(addr) = args.metrics_listen {
        let handle = metrics::install().context("installing the metrics recorder")?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics listener {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "metrics listening on /metrics");
        let sampler = metrics::sampler::Sampler::new(pool.clone(), stale_ms);
        tasks.spawn(metrics::http::serve(
            listener,
            handle,
            sampler,
            stop.clone(),
        ));
    }

    let (agent_guard, client_guard, admin_guard) = guards(&args);
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AgentServiceServer<Agents>>().await;
    health.set_serving::<ClientServiceServer<Clients>>().await;
    health.set_serving::<AdminServiceServer<Admin>>().await;
    health.set_serving::<ExternalScalerServer<Scaler>>().await;

    let max_message = 16 * 1024 * 1024 + 2 * args.max_payload_bytes;
    let agents =
        AgentServiceServer::new(Agents::new(ctx.clone())).max_decoding_message_size(max_message);
    let clients =
        ClientServiceServer::new(Clients::new(ctx.clone())).max_decoding_message_size(max_message);
    let admin =
        AdminServiceServer::new(Admin::new(ctx.clone())).max_decoding_message_size(max_message);
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
    let drain_health = health.clone();
    let draining = async move {
        shutdown.cancelled().await;
        drain_health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        drain_health
            .set_not_serving::<AgentServiceServer<Agents>>()
            .await;
        drain_health
            .set_not_serving::<ClientServiceServer<Clients>>()
            .await;
        drain_health
            .set_not_serving::<AdminServiceServer<Admin>>()
            .await;
        drain_waker.close_streams();
    };
    router
        .serve_with_incoming_shutdown(incoming, draining)
        .await
        .context("gRPC server")?;
    tracing::info!("gRPC server stopped; draining background tasks");
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    pool.close().await;
    Ok(())
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
