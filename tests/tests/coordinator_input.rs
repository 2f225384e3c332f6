//! Bad input is refused with the precise gRPC code and changes nothing; tokens grant their
//! roles and no more; grpc.health.v1 and server reflection (v1 and v1alpha) work, so
//! Kubernetes probes and grpcurl need no proto files.

use anyhow::{Context as _, bail};
use lanes_proto::v1 as pb;
use lanes_proto::v1::admin_service_client::AdminServiceClient;
use lanes_proto::v1::agent_service_client::AgentServiceClient;
use lanes_proto::v1::client_service_client::ClientServiceClient;
use lanes_tests::jobs::*;
use lanes_tests::{Coordinator, fresh_database};
use std::time::SystemTime;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const Q: &str = "invoice_import";
const INVALID: Code = Code::InvalidArgument;

/// The database holds no job and no queue.
async fn assert_nothing_created(t: &Setup, what: &str) -> anyhow::Result<()> {
    let jobs = list_all(&t.client, pb::ListJobsRequest::default()).await?;
    let queues = t
        .admin
        .clone()
        .list_queues(pb::ListQueuesRequest {})
        .await?;
    let queues = queues.into_inner().queues;
    assert!(
        jobs.is_empty() && queues.is_empty(),
        "{what}: {jobs:?} {queues:?}"
    );
    Ok(())
}

#[tokio::test]
async fn bad_enqueues_are_invalid_and_create_nothing() -> anyhow::Result<()> {
    let t = Setup::start(&["--max-payload-bytes", "1024"]).await?;
    let ok = || job(Q, "L", "{}");
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(2048));
    let ftp = |url: &str| pb::EnqueueRequest {
        callback_url: url.into(),
        ..ok()
    };
    let ftp_failure = pb::EnqueueRequest {
        failure_callback_url: "ftp://x".into(),
        ..ok()
    };
    let cases = [
        ("payload not JSON", job(Q, "L", "{not json")),
        ("empty payload", job(Q, "L", "")),
        ("payload of 2 KiB", job(Q, "L", &big)),
        ("payload with \\u0000", job(Q, "L", r#"{"a":"\u0000"}"#)),
        ("empty queue name", job("", "L", "{}")),
        ("queue name with a space", job("invoice import", "L", "{}")),
        ("129-byte queue name", job(&"q".repeat(129), "L", "{}")),
        ("257-byte lane key", job(Q, &"l".repeat(257), "{}")),
        ("257-byte idempotency key", ok().key(&"k".repeat(257))),
        (
            "run_at and delay_seconds",
            ok().delay(5).at(SystemTime::now()),
        ),
        ("negative delay", ok().delay(-1)),
        ("priority 1001", ok().priority(1001)),
        ("callback_url ftp://x", ftp("ftp://x")),
        ("callback_url without host", ftp("http://")),
        ("failure_callback_url ftp://x", ftp_failure),
    ];
    for (what, bad) in cases {
        assert_eq!(
            code(send(&t.client, bad.clone()).await.map_err(status)),
            INVALID,
            "{what}"
        );
        // In a batch of good jobs, the bad one rejects them all.
        let batch = t.batch(vec![ok(), bad, job(Q, "", "{}")]).await;
        assert_eq!(code(batch), INVALID, "{what} in a batch");
        assert_nothing_created(&t, what).await?;
    }
    assert_eq!(code(t.batch(vec![]).await), INVALID, "empty batch");
    let many = |n| (0..n).map(|_| job(Q, "", "{}")).collect::<Vec<_>>();
    assert_eq!(code(t.batch(many(1001)).await), INVALID, "1,001 jobs");
    assert_nothing_created(&t, "batches").await?;

    // The limits themselves are allowed.
    let exact = format!(r#"{{"p":"{}"}}"#, "x".repeat(1024 - 8));
    assert_eq!(exact.len(), 1024);
    let edge = job(&"q".repeat(128), &"l".repeat(256), &exact).key(&"k".repeat(256));
    assert!(send(&t.client, edge).await?.created);
    assert_eq!(t.batch(many(1000)).await?.len(), 1000);
    // A result over the limit is refused too, and the job stays running.
    let l = t.take("a1", Q).await?;
    let done = pb::CompleteRequest {
        job_id: l.id,
        lease_token: l.lease_token,
        result: big,
        ..Default::default()
    };
    assert_eq!(code(t.agent.clone().complete(done).await), INVALID);
    assert_eq!(t.state(l.id).await?, pb::JobState::Running);
    Ok(())
}

/// The Status inside an anyhow error from a helper.
fn status(e: anyhow::Error) -> Status {
    e.downcast::<Status>().expect("a gRPC status")
}

#[tokio::test]
async fn bad_agent_and_admin_calls_are_invalid_and_change_nothing() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let get = t
        .client
        .clone()
        .get_job(pb::GetJobRequest { id: 424_242 })
        .await;
    assert_eq!(code(get), Code::NotFound);
    let id = t.add(Q, "L").await?;
    let lease_as = async |agent_id: &str, queues: &[&str]| {
        let r = lease(&t.agent, agent_id, queues).await;
        code(r.map_err(status))
    };
    assert_eq!(lease_as("", &[Q]).await, INVALID, "empty agent_id");
    assert_eq!(
        lease_as(&"a".repeat(129), &[Q]).await,
        INVALID,
        "long agent_id"
    );
    assert_eq!(lease_as("a1", &[]).await, INVALID, "no queues");
    assert_eq!(
        lease_as("a1", &[Q, "bad queue"]).await,
        INVALID,
        "bad queue"
    );
    assert_eq!(t.state(id).await?, pb::JobState::Pending, "nothing leased");
    let wake_stream = pb::WakeStreamRequest {
        agent_id: String::new(),
        queues: vec![Q.into()],
    };
    assert_eq!(
        code(t.agent.clone().wake_stream(wake_stream).await),
        INVALID
    );

    let l = t.take("a1", Q).await?;
    for p in [101, -1] {
        assert_eq!(
            code(heartbeat(&t.agent, &l, Some(p)).await),
            INVALID,
            "{p} %"
        );
    }
    let f = pb::FailRequest {
        retry_after_ms: Some(-1),
        ..retryable("x")
    };
    assert_eq!(
        code(t.fail(&l, f).await),
        INVALID,
        "negative retry_after_ms"
    );
    let done = |result: &str, lease_next: bool| pb::CompleteRequest {
        job_id: l.id,
        lease_token: l.lease_token,
        result: result.into(),
        lease_next,
        ..Default::default()
    };
    let complete_with = async |req| code(t.agent.clone().complete(req).await);
    assert_eq!(complete_with(done("not json", false)).await, INVALID);
    assert_eq!(
        complete_with(done("{}", true)).await,
        INVALID,
        "lease_next, no agent"
    );
    let j = t.job(id).await?;
    assert_eq!(
        (j.state(), j.attempt, j.progress_percent),
        (pb::JobState::Running, 1, 0)
    );
    assert_eq!(j.last_error, "");

    // Admin and client calls out of range.
    let mut admin = t.admin.clone();
    let before = t.set(Q, |_| {}).await?;
    for (what, edit) in [
        (
            "lease_ttl_ms 999",
            pb::SetQueueSettingsRequest {
                lease_ttl_ms: Some(999),
                ..Default::default()
            },
        ),
        (
            "max_attempts 0",
            pb::SetQueueSettingsRequest {
                max_attempts: Some(0),
                ..Default::default()
            },
        ),
        (
            "max_pending -1",
            pb::SetQueueSettingsRequest {
                max_pending: Some(-1),
                ..Default::default()
            },
        ),
    ] {
        let r = set_settings(&t.admin, Q, edit).await.map_err(status);
        assert_eq!(code(r), INVALID, "{what}");
    }
    let after = admin.get_queue_settings(pb::GetQueueSettingsRequest { queue: Q.into() });
    assert_eq!(after.await?.into_inner(), before, "settings unchanged");
    assert_eq!(code(t.unblock(Q, "").await), INVALID, "empty lane");
    let purge = t.purge("", -1).await.map_err(status);
    assert_eq!(code(purge), INVALID, "negative hours");
    let page = pb::ListJobsRequest {
        page_size: 501,
        ..Default::default()
    };
    assert_eq!(code(t.client.clone().list_jobs(page).await), INVALID);
    let wake = pb::WakeRequest {
        max_agents: -1,
        ..Default::default()
    };
    assert_eq!(code(t.client.clone().wake(wake).await), INVALID);
    t.complete(&l).await?;
    Ok(())
}

/// Sends `authorization: <header>` with every call (nothing when `None`).
#[derive(Clone)]
struct Auth(Option<&'static str>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = self.0 {
            let value = h.parse().map_err(|_| Status::internal("bad header"))?;
            req.metadata_mut().insert("authorization", value);
        }
        Ok(req)
    }
}

/// The code of a call's outcome, `Ok` included.
fn outcome<T>(r: Result<T, Status>) -> Code {
    r.map_or_else(|s| s.code(), |_| Code::Ok)
}

/// (ClientService, AgentService, AdminService) outcomes of one harmless call each.
async fn calls(ch: &Channel, auth: Auth) -> (Code, Code, Code) {
    let mut client = ClientServiceClient::with_interceptor(ch.clone(), auth.clone());
    let mut agent = AgentServiceClient::with_interceptor(ch.clone(), auth.clone());
    let mut admin = AdminServiceClient::with_interceptor(ch.clone(), auth);
    let lease = pb::LeaseRequest {
        agent_id: "a1".into(),
        queues: vec![Q.into()],
        request_id: String::new(),
    };
    (
        outcome(client.get_stats(pb::GetStatsRequest::default()).await),
        outcome(agent.lease(lease).await),
        outcome(admin.list_queues(pb::ListQueuesRequest {}).await),
    )
}

#[tokio::test]
async fn tokens_grant_their_role_and_nothing_else() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let tokens = [
        "--agent-tokens",
        "agent-secret",
        "--client-tokens",
        "client-secret",
        "--admin-tokens",
        "admin-secret",
    ];
    let c = Coordinator::start(&db.url, &tokens).await?;
    let ch = c.channel().await?;
    use Code::{Ok as OK, PermissionDenied as DENIED, Unauthenticated as UNAUTH};
    let cases = [
        (None, (UNAUTH, UNAUTH, UNAUTH)),
        (Some("Bearer unknown"), (UNAUTH, UNAUTH, UNAUTH)),
        (Some("Basic client-secret"), (UNAUTH, UNAUTH, UNAUTH)),
        (Some("Bearer client-secret"), (OK, DENIED, DENIED)),
        (Some("Bearer agent-secret"), (DENIED, OK, DENIED)),
        (Some("Bearer admin-secret"), (OK, DENIED, OK)),
    ];
    for (header, want) in cases {
        assert_eq!(calls(&ch, Auth(header)).await, want, "{header:?}");
    }
    // A refused enqueue creates nothing.
    for header in [None, Some("Bearer agent-secret")] {
        let mut client = ClientServiceClient::with_interceptor(ch.clone(), Auth(header));
        assert_ne!(outcome(client.enqueue(job(Q, "L", "{}")).await), Code::Ok);
    }
    let admin = Auth(Some("Bearer admin-secret"));
    let mut client = ClientServiceClient::with_interceptor(ch.clone(), admin);
    let jobs = client.list_jobs(pb::ListJobsRequest::default()).await?;
    assert!(jobs.into_inner().jobs.is_empty());
    // Probes and grpcurl carry no token.
    let probe = HealthCheckRequest {
        service: String::new(),
    };
    HealthClient::new(ch.clone()).check(probe).await?;
    assert!(reflected_services_v1(&ch).await?.len() >= 4);
    Ok(())
}

#[tokio::test]
async fn health_reports_serving_for_every_service() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let ch = t.channel.clone();
    let mut health = HealthClient::new(ch);
    let services = ["", "lanes.v1.AgentService", "lanes.v1.ClientService"];
    let more = ["lanes.v1.AdminService", "externalscaler.ExternalScaler"];
    for service in services.into_iter().chain(more) {
        let req = HealthCheckRequest {
            service: service.into(),
        };
        let status = health.check(req).await?.into_inner().status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
    let unknown = HealthCheckRequest {
        service: "no.such.Service".into(),
    };
    assert_eq!(code(health.check(unknown).await), Code::NotFound);
    Ok(())
}

const SERVICES: [&str; 5] = [
    "lanes.v1.AgentService",
    "lanes.v1.ClientService",
    "lanes.v1.AdminService",
    "externalscaler.ExternalScaler",
    "grpc.health.v1.Health",
];

async fn reflected_services_v1(ch: &Channel) -> anyhow::Result<Vec<String>> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::*;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut client = ServerReflectionClient::new(ch.clone());
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([req]))
        .await?;
    let answer = answers.get_mut().message().await?.context("no answer")?;
    match answer.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            Ok(l.service.into_iter().map(|s| s.name).collect())
        }
        other => bail!("unexpected answer {other:?}"),
    }
}

async fn reflected_services_v1alpha(ch: &Channel) -> anyhow::Result<Vec<String>> {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::*;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut client = ServerReflectionClient::new(ch.clone());
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([req]))
        .await?;
    let answer = answers.get_mut().message().await?.context("no answer")?;
    match answer.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            Ok(l.service.into_iter().map(|s| s.name).collect())
        }
        other => bail!("unexpected answer {other:?}"),
    }
}

/// The encoded file descriptors reflection v1 serves for `symbol`.
async fn file_containing_v1(ch: &Channel, symbol: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::*;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
    };
    let mut client = ServerReflectionClient::new(ch.clone());
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([req]))
        .await?;
    let answer = answers.get_mut().message().await?.context("no answer")?;
    match answer.message_response {
        Some(MessageResponse::FileDescriptorResponse(f)) => Ok(f.file_descriptor_proto),
        other => bail!("unexpected answer {other:?}"),
    }
}

#[tokio::test]
async fn reflection_lists_every_service_over_v1_and_v1alpha() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let ch = t.channel.clone();
    let v1 = reflected_services_v1(&ch).await?;
    let v1alpha = reflected_services_v1alpha(&ch).await?;
    for name in SERVICES {
        assert!(v1.iter().any(|s| s == name), "v1 lacks {name}: {v1:?}");
        assert!(
            v1alpha.iter().any(|s| s == name),
            "v1alpha lacks {name}: {v1alpha:?}"
        );
    }
    // `grpcurl describe` works too: the file defining a service comes back.
    use prost::Message as _;
    let files = file_containing_v1(&ch, "lanes.v1.AgentService").await?;
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            prost_types::FileDescriptorProto::decode(f.as_slice()).map(|d| d.name().to_owned())
        })
        .collect::<Result<_, _>>()?;
    assert!(
        names.iter().any(|n| n == "lanes/v1/agent.proto"),
        "{names:?}"
    );
    Ok(())
}
