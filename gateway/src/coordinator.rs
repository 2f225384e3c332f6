//! The gateway's only link to state: gRPC clients of the coordinator (with the gateway's
//! bearer token on every call) and a short-lived cache of `GetStats`, the one aggregate
//! query, which enqueue and job status use for their estimates.
//!
//! Must never: call GetStats once per enqueue, or fail a request because the estimates
//! behind it are unavailable.

use crate::config::Cli;
use anyhow::Context as _;
use lanes_proto::v1 as pb;
use lanes_proto::v1::admin_service_client::AdminServiceClient;
use lanes_proto::v1::client_service_client::ClientServiceClient;
use lanes_proto::v1::schedule_service_client::ScheduleServiceClient;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::health_client::HealthClient;

/// Largest message accepted from the coordinator: job lists carry payloads and results.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;
/// How long a stats refresh for an estimate may take before the stale value is used.
const STATS_WAIT: Duration = Duration::from_secs(1);

/// Adds `authorization: Bearer <token>` to every call, and the current span's trace context
/// (the HTTP request's) when tracing is on.
#[derive(Clone)]
pub struct Token(Option<MetadataValue<Ascii>>);

impl Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert("authorization", t.clone());
        }
        lanes_telemetry::inject_metadata(req.metadata_mut());
        Ok(req)
    }
}

/// A channel that carries the gateway's token.
pub type Chan = InterceptedService<Channel, Token>;

/// Clients of the coordinator's services. Cheap to clone (one shared HTTP/2 channel).
#[derive(Clone)]
pub struct Coordinator {
    /// ClientService: enqueue, jobs, stats, wake.
    pub client: ClientServiceClient<Chan>,
    /// AdminService: settings, pause, agents, unblock, purge.
    pub admin: AdminServiceClient<Chan>,
    /// ScheduleService: recurring schedules.
    pub schedules: ScheduleServiceClient<Chan>,
    /// ClientService without the per-call timeout, for WaitJob: its calls set their own
    /// deadline (the wait asked for, plus the RPC timeout).
    pub waiting: ClientServiceClient<Chan>,
    /// The per-call timeout (--rpc-timeout-ms).
    pub rpc_timeout: Duration,
    health: HealthClient<Channel>,
}

impl Coordinator {
    /// Builds the clients; connects lazily, so the gateway starts (and answers 503) while
    /// the coordinator is down.
    pub fn connect(cli: &Cli) -> anyhow::Result<Coordinator> {
        let rpc_timeout = Duration::from_millis(cli.rpc_timeout_ms.max(100));
        let mut ep = Endpoint::from_shared(cli.coordinator.clone())
            .with_context(|| format!("invalid --coordinator URL {:?}", cli.coordinator))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        if cli.coordinator.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &cli.coordinator_ca {
                let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            ep = ep
                .tls_config(tls)
                .context("TLS settings for the coordinator")?;
        }
        let waiting_channel = ep.clone().connect_lazy();
        let channel = ep.timeout(rpc_timeout).connect_lazy();
        let token = match cli.coordinator_token.as_deref().map(str::trim) {
            Some(t) if !t.is_empty() => Some(
                format!("Bearer {t}")
                    .parse()
                    .context("LANES_COORDINATOR_TOKEN must be printable ASCII")?,
            ),
            _ => None,
        };
        let intercepted = InterceptedService::new(channel.clone(), Token(token.clone()));
        let waiting =
            ClientServiceClient::new(InterceptedService::new(waiting_channel, Token(token)))
                .max_decoding_message_size(MAX_MESSAGE);
        Ok(Coordinator {
            waiting,
            rpc_timeout,
            client: ClientServiceClient::new(intercepted.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            schedules: ScheduleServiceClient::new(intercepted.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            admin: AdminServiceClient::new(intercepted).max_decoding_message_size(MAX_MESSAGE),
            health: HealthClient::new(channel),
        })
    }

    /// Ok while the coordinator answers its grpc.health.v1 check SERVING, both for the
    /// server as a whole (`""`) and for ClientService, within 2 s; else why not. It reports
    /// NOT_SERVING during its graceful drain and while its database is out of reach.
    pub async fn ready(&self) -> Result<(), String> {
        let (all, client) = tokio::join!(self.serving(""), self.serving("lanes.v1.ClientService"));
        all.and(client)
    }

    async fn serving(&self, service: &str) -> Result<(), String> {
        let req = tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        };
        let mut health = self.health.clone();
        let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
        match tokio::time::timeout(Duration::from_secs(2), health.check(req)).await {
            Ok(Ok(r)) if r.get_ref().status == serving => Ok(()),
            Ok(Ok(r)) => Err(format!(
                "the coordinator reports {} (draining, or its database is out of reach)",
                tonic_health::pb::health_check_response::ServingStatus::try_from(
                    r.get_ref().status
                )
                .map_or("an unknown status", |s| s.as_str_name())
            )),
            Ok(Err(s)) => Err(format!("the coordinator is unreachable: {}", s.message())),
            Err(_) => Err("the coordinator did not answer its health check within 2 s".into()),
        }
    }
}

/// The last `GetStats` answer, refreshed on demand when older than `max_age`.
pub struct StatsCache {
    max_age: Duration,
    value: Mutex<Option<(Instant, Arc<pb::GetStatsResponse>)>>,
    /// Held by the one request refreshing; others use the stale value meanwhile.
    refreshing: tokio::sync::Mutex<()>,
}

impl StatsCache {
    /// An empty cache whose entries live `max_age`.
    pub fn new(max_age: Duration) -> Self {
        StatsCache {
            max_age,
            value: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// Stores a fresh answer (e.g. from GET /api/queue/stats, which always asks).
    pub fn store(&self, s: pb::GetStatsResponse) {
        if let Ok(mut v) = self.value.lock() {
            *v = Some((Instant::now(), Arc::new(s)));
        }
    }

    fn current(&self, fresh_only: bool) -> Option<Arc<pb::GetStatsResponse>> {
        let v = self.value.lock().ok()?;
        let (at, s) = v.as_ref()?;
        (!fresh_only || at.elapsed() < self.max_age).then(|| s.clone())
    }

    /// Stats at most `max_age` old when the coordinator answers in time, else the last
    /// known ones, else `None`. At most one refresh runs at a time.
    pub async fn get(&self, coord: &Coordinator) -> Option<Arc<pb::GetStatsResponse>> {
        if let Some(s) = self.current(true) {
            return Some(s);
        }
        let _guard = match self.refreshing.try_lock() {
            Ok(g) => g,
            // Someone is refreshing: use what we have, or wait for theirs if we have nothing.
            Err(_) => match self.current(false) {
                Some(s) => return Some(s),
                None => self.refreshing.lock().await,
            },
        };
        if let Some(s) = self.current(true) {
            return Some(s);
        }
        let mut client = coord.client.clone();
        let call = client.get_stats(pb::GetStatsRequest::default());
        match tokio::time::timeout(STATS_WAIT, call).await {
            Ok(Ok(r)) => {
                self.store(r.into_inner());
                self.current(false)
            }
            _ => self.current(false),
        }
    }
}
