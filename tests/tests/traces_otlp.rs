//! One trace follows one job across the three binaries, exported over OTLP to a collector the
//! test runs itself (the published `opentelemetry.proto.collector.trace.v1.TraceService`:
//! over gRPC for the coordinator and the agent, over HTTP/protobuf for the gateway):
//! caller → gateway request → coordinator Enqueue → agent run (the handler sees its
//! TRACEPARENT) → Complete → webhook delivery, and the delivery's retry. Also checks that
//! `LOG_FORMAT=json` lines carry `job.id`, `queue`, `lane` and `trace_id`, and that text lines
//! carry the trace id too.

use anyhow::{Context as _, bail, ensure};
use lanes_proto::v1 as pb;
use lanes_tests::agent::{
    exec_python, fixture, is_finished, start_agent_with_env, wait_connected, wait_job,
};
use lanes_tests::gateway::{ENQUEUE_KEY, Gateway, KEYS, eventually};
use lanes_tests::http_stub::{self, Request};
use lanes_tests::{ChildProc, Coordinator, fresh_database};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

const QUEUE: &str = "traced";
const LANE: &str = "establishment-7";
/// The caller's own trace: the gateway continues it.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct Seen {
    service: String,
    name: String,
    trace: String,
    id: String,
    parent: String,
    attrs: HashMap<String, String>,
    error: bool,
}

/// Records every span exported to it, over gRPC or HTTP/protobuf.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Seen>>>,
}

impl Collector {
    fn record(&self, req: ExportTraceServiceRequest) {
        let mut out = Vec::new();
        for rs in req.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| attr(&r.attributes, "service.name"))
                .unwrap_or_default();
            for s in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                out.push(Seen {
                    service: service.clone(),
                    name: s.name,
                    trace: hex(&s.trace_id),
                    id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    attrs: s
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                        .collect(),
                    // STATUS_CODE_ERROR
                    error: s.status.is_some_and(|st| st.code == 2),
                });
            }
        }
        if let Ok(mut spans) = self.spans.lock() {
            spans.extend(out);
        }
    }

    fn spans(&self) -> Vec<Seen> {
        self.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Serves the gRPC collector; returns its URL.
    async fn serve_grpc(&self) -> anyhow::Result<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(self.clone()))
            .serve_with_incoming(incoming);
        // Lives as long as the test's runtime.
        tokio::spawn(server);
        Ok(url)
    }

    /// Serves the HTTP/protobuf collector (`POST /v1/traces`); returns its base URL.
    async fn serve_http(&self) -> anyhow::Result<String> {
        let me = self.clone();
        http_stub::serve(move |req| {
            if req.path != "/v1/traces" {
                return 404.into();
            }
            match ExportTraceServiceRequest::decode(req.body.as_slice()) {
                Ok(r) => {
                    me.record(r);
                    200.into()
                }
                Err(_) => 400.into(),
            }
        })
        .await
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.record(req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| text(kv.value.as_ref()))
}

/// One HTTP/1.1 request.
/// The callback endpoint: records requests, answers the scripted statuses, then 200.
async fn callbacks(script: &[u16]) -> anyhow::Result<(String, Arc<Mutex<Vec<Request>>>)> {
    let got: Arc<Mutex<Vec<Request>>> = Arc::default();
    let script: Arc<Mutex<VecDeque<u16>>> = Arc::new(Mutex::new(script.iter().copied().collect()));
    let log = got.clone();
    let url = http_stub::serve(move |req| {
        if let Ok(mut g) = log.lock() {
            g.push(req);
        }
        script
            .lock()
            .ok()
            .and_then(|mut s| s.pop_front())
            .unwrap_or(200)
            .into()
    })
    .await?;
    Ok((url, got))
}

/// True when following `parent` links from `span` through `all` reaches span id `target`.
fn descends_from(all: &HashMap<String, Seen>, span: &Seen, target: &str) -> bool {
    let mut parent = span.parent.clone();
    for _ in 0..32 {
        if parent == target {
            return true;
        }
        match all.get(&parent) {
            Some(p) => parent = p.parent.clone(),
            None => return false,
        }
    }
    false
}

/// The one span of `service` named `name` in the caller's trace.
fn one<'a>(spans: &'a [Seen], service: &str, name: &str) -> anyhow::Result<&'a Seen> {
    let found: Vec<&Seen> = spans
        .iter()
        .filter(|s| s.service == service && s.name == name && s.trace == CALLER_TRACE)
        .collect();
    match found.as_slice() {
        [s] => Ok(s),
        other => bail!(
            "expected one {service} span {name:?} in the trace, found {}: {spans:#?}",
            other.len()
        ),
    }
}

/// The JSON lines of a child's log (after the harness's `# command` line); fails on a line
/// that is not JSON.
fn json_lines(proc: &ChildProc) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(proc.log_path())?;
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("# "))
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .with_context(|| format!("{} logged a line that is not JSON: {l}", proc.name()))
        })
        .collect()
}

/// True for a log line about job `id` of the test's queue and lane in the caller's trace.
fn about_job(line: &Value, id: i64) -> bool {
    line["job.id"] == json!(id)
        && line["queue"] == json!(QUEUE)
        && line["lane"] == json!(LANE)
        && line["trace_id"] == json!(CALLER_TRACE)
}

#[tokio::test]
async fn one_trace_follows_a_job_from_the_gateway_to_its_webhook() -> anyhow::Result<()> {
    let collector = Collector::default();
    let grpc = collector.serve_grpc().await?;
    let http = collector.serve_http().await?;
    // The first delivery fails, so its retry shows up in the trace too.
    let (receiver, deliveries) = callbacks(&[500]).await?;
    let fast = ("OTEL_BSP_SCHEDULE_DELAY", "100");
    let grpc_env = [("OTEL_EXPORTER_OTLP_ENDPOINT", grpc.as_str()), fast];
    let json_logs = ("LOG_FORMAT", "json");

    let db = fresh_database().await?;
    let coord_env = [grpc_env[0], fast, json_logs];
    let coord =
        Coordinator::start_with_env(&db.url, &["--webhook-backoff-ms", "200"], &coord_env).await?;
    let gateway_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", http.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        fast,
    ];
    let gateway =
        Gateway::start_with_env(&coord.url(), &["--api-keys", KEYS], &gateway_env).await?;
    let handler = exec_python(&fixture("echo_trace.py"))?;
    let agent_env = [grpc_env[0], fast, json_logs];
    let agent = start_agent_with_env(
        &coord.url(),
        "tracer",
        QUEUE,
        &["--exec", &handler],
        &agent_env,
    )
    .await?;
    wait_connected(&coord, "tracer", Duration::from_secs(20)).await?;

    let answer = reqwest::Client::new()
        .post(gateway.url("/api/jobs"))
        .header("X-API-Key", ENQUEUE_KEY)
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .json(&json!({
            "queue": QUEUE,
            "lane": LANE,
            "payload": {"invoice": 1},
            "callback_url": format!("{receiver}/done"),
        }))
        .send()
        .await?;
    ensure!(
        answer.status() == 202,
        "enqueue answered {}",
        answer.status()
    );
    let id = answer.json::<Value>().await?["job_id"]
        .as_i64()
        .context("no job_id")?;

    let mut client = coord.client().await?;
    let job = wait_job(&mut client, id, Duration::from_secs(30), is_finished).await?;
    ensure!(
        job.state == pb::JobState::Completed as i32,
        "job ended {job:?}\n{}",
        agent.log_tail(30)
    );
    let handler_saw: Value = serde_json::from_str(&job.result)?;
    let delivered = eventually(Duration::from_secs(20), "the webhook's retry", || async {
        let got = deliveries.lock().map(|g| g.clone()).unwrap_or_default();
        Ok((got.len() >= 2).then_some(got))
    })
    .await?;

    // Wait for the last spans of each service: the deliveries end the job's trace.
    let spans = eventually(Duration::from_secs(20), "every span of the job", || async {
        let spans = collector.spans();
        let webhook_tries = spans
            .iter()
            .filter(|s| s.name == "webhook delivery" && s.trace == CALLER_TRACE)
            .count();
        let run_seen = spans.iter().any(|s| s.name == "job.run");
        let gateway_seen = spans.iter().any(|s| s.service == "lanes-gateway");
        Ok((webhook_tries >= 2 && run_seen && gateway_seen).then_some(spans))
    })
    .await
    .with_context(|| format!("spans so far: {:#?}", collector.spans()))?;
    let by_id: HashMap<String, Seen> = spans.iter().map(|s| (s.id.clone(), s.clone())).collect();

    // The gateway continues the caller's trace; the coordinator's Enqueue is its child.
    let request = one(&spans, "lanes-gateway", "POST /api/jobs")?;
    ensure!(
        request.parent == CALLER_SPAN,
        "gateway span's parent: {request:?}"
    );
    let enqueue = one(
        &spans,
        "lanes-coordinator",
        "lanes.v1.ClientService/Enqueue",
    )?;
    ensure!(
        enqueue.parent == request.id,
        "Enqueue's parent is not the gateway request: {enqueue:?}"
    );
    // The agent's run descends from the Enqueue, through the trace context stored with the job.
    let run = one(&spans, "lanes-agent", "job.run")?;
    ensure!(
        descends_from(&by_id, run, &enqueue.id),
        "the run span does not descend from Enqueue: {run:?}\n{spans:#?}"
    );
    ensure!(run.attrs.get("job.id") == Some(&id.to_string()), "{run:?}");
    // The handler was handed the run span's context.
    let expected = format!("00-{CALLER_TRACE}-{}-01", run.id);
    ensure!(
        handler_saw["traceparent"] == json!(expected),
        "handler saw {handler_saw}, expected traceparent {expected}"
    );
    // The agent's Complete is a child of its run.
    let complete = one(
        &spans,
        "lanes-coordinator",
        "lanes.v1.AgentService/Complete",
    )?;
    ensure!(complete.parent == run.id, "Complete's parent: {complete:?}");

    // Each delivery try is a span of the trace, below Enqueue; the failed one is an error;
    // each request carried its own span's traceparent.
    let tries: Vec<&Seen> = spans
        .iter()
        .filter(|s| s.service == "lanes-coordinator" && s.name == "webhook delivery")
        .collect();
    ensure!(tries.len() == 2, "delivery spans: {tries:#?}");
    for t in &tries {
        ensure!(
            t.trace == CALLER_TRACE,
            "a delivery outside the trace: {t:?}"
        );
        ensure!(
            descends_from(&by_id, t, &enqueue.id),
            "delivery not below Enqueue: {t:?}"
        );
    }
    ensure!(
        tries
            .iter()
            .any(|t| t.error && t.attrs.get("http.response.status_code") == Some(&"500".into())),
        "no failed try recorded as an error: {tries:#?}"
    );
    for d in &delivered {
        let tp = d.headers.get("traceparent").cloned().unwrap_or_default();
        let span_id = tp.split('-').nth(2).unwrap_or_default();
        ensure!(
            tp.starts_with(&format!("00-{CALLER_TRACE}-")) && tries.iter().any(|t| t.id == span_id),
            "callback traceparent {tp:?} is not one of the delivery spans"
        );
    }

    // All three services are in the one trace.
    let mut services: Vec<&str> = spans
        .iter()
        .filter(|s| s.trace == CALLER_TRACE)
        .map(|s| s.service.as_str())
        .collect();
    services.sort_unstable();
    services.dedup();
    ensure!(
        services == ["lanes-agent", "lanes-coordinator", "lanes-gateway"],
        "services in the trace: {services:?}"
    );

    // Logs: JSON lines from the agent and the coordinator name the job, its queue, its lane
    // and the trace; the gateway's text lines carry the trace id in their span prefix.
    let agent_lines = json_lines(&agent)?;
    ensure!(
        agent_lines.iter().any(|l| about_job(l, id)),
        "no agent JSON line about the job:\n{}",
        agent.log_tail(20)
    );
    let coord_lines = json_lines(&coord.proc)?;
    ensure!(
        coord_lines.iter().any(|l| about_job(l, id)),
        "no coordinator JSON line about the job:\n{}",
        coord.proc.log_tail(20)
    );
    let gateway_log = std::fs::read_to_string(gateway.proc.log_path())?;
    ensure!(
        gateway_log.contains(&format!("trace_id={CALLER_TRACE}")),
        "no gateway line with the trace id:\n{}",
        gateway.proc.log_tail(20)
    );
    Ok(())
}
