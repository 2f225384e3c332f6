//! The agent's one connection to a coordinator: tries the configured addresses in turn,
//! backs off exponentially with jitter between rounds, adds the bearer token to every call,
//! and is the single place every RPC goes through (each one is logged at debug level with the
//! target `lanes_agent::rpc`, which the idle test counts). It never retries a call itself:
//! callers decide, from [`Failure`], whether to retry, give up or stop the handler.

use crate::config::Settings;
use lanes_proto::v1::agent_service_client::AgentServiceClient;
use rand::Rng;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

/// A client of AgentService with the auth interceptor.
pub type Client = AgentServiceClient<InterceptedService<Channel, BearerToken>>;

/// Largest message accepted from the coordinator: a payload is at most a few MiB.
const MAX_MESSAGE: usize = 32 * 1024 * 1024;

/// Adds `authorization: Bearer <token>` to every request when a token is configured, and the
/// current span's trace context (the running job's) when tracing is on.
#[derive(Clone, Debug)]
pub struct BearerToken(Option<AsciiMetadataValue>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            req.metadata_mut().insert("authorization", value.clone());
        }
        lanes_telemetry::inject_metadata(req.metadata_mut());
        Ok(req)
    }
}

/// Why a call failed, as far as the caller's next step is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The lease is gone (FAILED_PRECONDITION) or the job is unknown (NOT_FOUND): stop the
    /// handler, drop the outcome.
    Stale,
    /// The request itself is wrong or not allowed (bad token, bad argument): retrying cannot help.
    Rejected,
    /// The coordinator is unreachable, overloaded or failed: retry after a backoff.
    Transient,
}

/// Classifies a failed call.
pub fn classify(status: &Status) -> Failure {
    match status.code() {
        Code::FailedPrecondition | Code::NotFound => Failure::Stale,
        Code::Unauthenticated
        | Code::PermissionDenied
        | Code::InvalidArgument
        | Code::Unimplemented
        | Code::OutOfRange => Failure::Rejected,
        _ => Failure::Transient,
    }
}

/// Exponential backoff with jitter: each delay is drawn from [d/2, d] where d doubles from
/// `initial` up to `max`, so agents that lost the same coordinator do not return in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32 << self.attempt.min(20);
        self.attempt = self.attempt.saturating_add(1);
        let full = self.initial.saturating_mul(factor).min(self.max);
        full.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    /// Back to the initial delay after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

struct State {
    client: Option<(u64, Client)>,
    /// Index of the address to try next (or in use).
    next: usize,
    generation: u64,
    backoff: Backoff,
}

/// The connection to the coordinator, shared by the lease loop and the heartbeats.
pub struct Connection {
    endpoints: Vec<(String, Endpoint)>,
    token: BearerToken,
    rpc_timeout: Duration,
    state: Mutex<State>,
}

/// A coordinator address or token that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A coordinator address is not a URL tonic accepts.
    #[error("coordinator address {url:?} is invalid: {source}")]
    Address {
        /// The address.
        url: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The token has characters a header cannot carry.
    #[error("the token must be printable ASCII")]
    Token,
}

impl Connection {
    /// Prepares the endpoints; nothing is connected until the first call.
    pub fn new(settings: &Settings) -> Result<Self, SetupError> {
        let endpoints = settings
            .coordinators
            .iter()
            .map(|url| Ok((url.clone(), endpoint(url, settings)?)))
            .collect::<Result<Vec<_>, SetupError>>()?;
        let token = match &settings.token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse::<AsciiMetadataValue>()
                    .map_err(|_| SetupError::Token)?,
            ),
            None => None,
        };
        Ok(Connection {
            endpoints,
            token: BearerToken(token),
            rpc_timeout: settings.rpc_timeout,
            state: Mutex::new(State {
                client: None,
                next: 0,
                generation: 0,
                backoff: Backoff::new(Duration::from_millis(100), settings.backoff_max),
            }),
        })
    }

    /// Makes one RPC: `what` names it in the logs; `f` gets a client. Connects first when
    /// needed (waiting as long as it takes: callers select on their own deadlines). A call
    /// that fails for transport reasons drops the connection, so the next call reconnects,
    /// starting with the next address.
    pub async fn call<T, F, Fut>(&self, what: &'static str, f: F) -> Result<T, Status>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let (generation, client) = self.client().await;
        tracing::debug!(target: "lanes_agent::rpc", rpc = what, "calling the coordinator");
        let result = match tokio::time::timeout(self.rpc_timeout, f(client)).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "{what} got no answer within {:?}",
                self.rpc_timeout
            ))),
        };
        if let Err(status) = &result
            && matches!(
                status.code(),
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
            )
        {
            self.reset(generation, status);
        }
        result
    }

    /// Waits until a coordinator is connected (at once when one is). A caller timing a lease
    /// from its request takes the time after this, not before a reconnect that may last.
    pub async fn ready(&self) {
        self.client().await;
    }

    /// Sleeps for the connection's next backoff delay (after a transient failure).
    pub async fn backoff(&self) {
        let delay = self.lock().backoff.next_delay();
        tokio::time::sleep(delay).await;
    }

    async fn client(&self) -> (u64, Client) {
        loop {
            let (index, round_done) = {
                let st = self.lock();
                if let Some(c) = &st.client {
                    return c.clone();
                }
                (
                    st.next,
                    st.next % self.endpoints.len() == self.endpoints.len() - 1,
                )
            };
            let (url, endpoint) = &self.endpoints[index % self.endpoints.len()];
            match tokio::time::timeout(self.rpc_timeout, endpoint.connect()).await {
                Ok(Ok(channel)) => return self.connected(url, channel),
                Ok(Err(e)) => {
                    tracing::warn!(coordinator = %url, error = %crate::error_chain(&e), "cannot reach coordinator")
                }
                Err(_) => tracing::warn!(coordinator = %url, "connecting to coordinator timed out"),
            }
            let delay = {
                let mut st = self.lock();
                st.next = (index + 1) % self.endpoints.len();
                round_done.then(|| st.backoff.next_delay())
            };
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
        }
    }

    fn connected(&self, url: &str, channel: Channel) -> (u64, Client) {
        tracing::info!(coordinator = %url, "connected to coordinator");
        let client = AgentServiceClient::with_interceptor(channel, self.token.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let mut st = self.lock();
        st.generation += 1;
        st.backoff.reset();
        let entry = (st.generation, client);
        st.client = Some(entry.clone());
        entry
    }

    /// Leaves the coordinator in use for the next address, without waiting: it ended our
    /// wake stream because it is going away (a rolling deploy).
    pub fn leave(&self) {
        let mut st = self.lock();
        if st.client.take().is_some() {
            st.next = (st.next + 1) % self.endpoints.len();
            st.backoff.reset();
        }
    }

    fn reset(&self, generation: u64, status: &Status) {
        let mut st = self.lock();
        // Only the first failure of a connection moves on: others saw the same broken one.
        if st.client.as_ref().is_some_and(|(g, _)| *g == generation) {
            tracing::warn!(code = ?status.code(), error = %status.message(), "coordinator connection lost; reconnecting");
            st.client = None;
            st.next = (st.next + 1) % self.endpoints.len();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few plain fields: still consistent after a panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn endpoint(url: &str, settings: &Settings) -> Result<Endpoint, SetupError> {
    let err = |source| SetupError::Address {
        url: url.to_owned(),
        source,
    };
    let mut ep = Endpoint::from_shared(url.to_owned())
        .map_err(err)?
        .connect_timeout(settings.rpc_timeout)
        .tcp_nodelay(true)
        // Transport pings (not RPCs) notice a coordinator that vanished without a reset.
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(ca) = &settings.tls_ca {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        ep = ep.tls_config(tls).map_err(err)?;
    }
    Ok(ep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        for (i, d) in delays.iter().enumerate() {
            let full = (100u128 << i).min(1000);
            assert!((full / 2..=full).contains(d), "delay {i} = {d} ms");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn failures_are_classified_for_the_caller() {
        assert_eq!(
            classify(&Status::failed_precondition("stale")),
            Failure::Stale
        );
        assert_eq!(classify(&Status::not_found("gone")), Failure::Stale);
        assert_eq!(
            classify(&Status::unauthenticated("token")),
            Failure::Rejected
        );
        assert_eq!(classify(&Status::unavailable("down")), Failure::Transient);
        assert_eq!(classify(&Status::internal("db")), Failure::Transient);
    }
}
