//! API keys and roles at the gateway (401 without a known key, 403 without the role, open
//! with a loud warning when no key is configured), and the gateway's own token towards a
//! coordinator that requires tokens.

use lanes_tests::gateway::{ADMIN_KEY, ENQUEUE_KEY, Gateway, Http, READ_KEY, Stack};
use serde_json::{Value, json};

const Q: &str = "invoice_import";

fn job(extra: Value) -> Value {
    let mut v = json!({"queue": Q, "lane": "resto-1", "payload": {"invoice": 1}});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    v
}

/// No key → 401; a key without the role → 403; admin may do everything; probes are open.
#[tokio::test]
async fn api_keys_and_roles() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    let id = s.enqueue(job(json!({}))).await?;
    let job_path = format!("/api/jobs/{id}");
    let body = job(json!({}));
    let checks: Vec<(&str, Option<&str>, &str, u16)> = vec![
        ("GET", None, job_path.as_str(), 401),
        ("GET", Some("wrong-key"), job_path.as_str(), 401),
        ("GET", Some(ENQUEUE_KEY), job_path.as_str(), 403),
        ("GET", Some(READ_KEY), job_path.as_str(), 200),
        ("GET", Some(ADMIN_KEY), job_path.as_str(), 200),
        ("POST", None, "/api/jobs", 401),
        ("POST", Some(READ_KEY), "/api/jobs", 403),
        ("POST", Some(ADMIN_KEY), "/api/jobs", 202),
        ("POST", Some(READ_KEY), "/api/wake-worker", 403),
        ("POST", Some(ENQUEUE_KEY), "/api/wake-worker", 200),
        ("GET", Some(READ_KEY), "/admin/api/agents", 403),
        ("GET", Some(ENQUEUE_KEY), "/admin/api/agents", 403),
        ("GET", Some(ADMIN_KEY), "/admin/api/agents", 200),
        ("GET", Some(READ_KEY), "/api/queue/stats", 200),
        ("GET", None, "/healthz", 200),
        ("GET", None, "/readyz", 200),
        ("GET", None, "/openapi.json", 200),
        ("GET", None, "/admin/queue", 200),
    ];
    for (method, key, path, want) in checks {
        let r = match method {
            "GET" => s.http.get(path, key).await?,
            _ if path == "/api/jobs" => s.http.post(path, key, &body).await?,
            _ => s.http.post(path, key, &json!({})).await?,
        };
        assert_eq!(r.status, want, "{method} {path} with {key:?}: {}", r.body);
        let code = match want {
            401 => "unauthorized",
            403 => "forbidden",
            _ => continue,
        };
        assert_eq!(r.code(), code, "{method} {path} with {key:?}: {}", r.body);
    }
    // The key is compared exactly: a prefix or a longer key is unknown.
    let prefix = &ADMIN_KEY[..ADMIN_KEY.len() - 1];
    assert_eq!(s.http.get(&job_path, Some(prefix)).await?.status, 401);
    assert_eq!(
        s.http
            .get(&job_path, Some(&format!("{ADMIN_KEY}x")))
            .await?
            .status,
        401
    );

    // Without keys the gateway is open, and says so loudly in its log.
    let open = Gateway::start(&s.coord.url(), &[]).await?;
    let http = Http::new(&open.url(""))?;
    assert_eq!(http.get(&job_path, None).await?.status, 200);
    assert!(
        open.proc.log_tail(50).contains("NO API KEYS CONFIGURED"),
        "{}",
        open.proc.log_tail(50)
    );
    Ok(())
}

/// Against a coordinator that requires tokens, the gateway's admin token serves every
/// route; a client-role token serves the job routes, and admin routes answer 502 naming
/// the misconfiguration; no token at all is refused the same way.
#[tokio::test]
async fn coordinator_token() -> anyhow::Result<()> {
    let coord_args = [
        "--client-tokens",
        "client-tok",
        "--admin-tokens",
        "admin-tok",
    ];
    let s = Stack::start_full(&coord_args, &["--coordinator-token", "admin-tok"]).await?;
    let id = s.enqueue(job(json!({}))).await?;
    assert_eq!(s.job(id).await?["status"], "pending");
    let agents = s.http.get("/admin/api/agents", Some(ADMIN_KEY)).await?;
    assert_eq!(agents.status, 200, "{}", agents.body);

    let client_only =
        Gateway::start(&s.coord.url(), &["--coordinator-token", "client-tok"]).await?;
    let http = Http::new(&client_only.url(""))?;
    let r = http.post("/api/jobs", None, &job(json!({}))).await?;
    assert_eq!(r.status, 202, "{}", r.body);
    let r = http.get("/admin/api/agents", None).await?;
    assert_eq!((r.status, r.code()), (502, "bad_gateway"), "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("LANES_COORDINATOR_TOKEN"))
    );

    let tokenless = Gateway::start(&s.coord.url(), &[]).await?;
    let http = Http::new(&tokenless.url(""))?;
    let r = http.get(&format!("/api/jobs/{id}"), None).await?;
    assert_eq!((r.status, r.code()), (502, "bad_gateway"), "{}", r.body);
    Ok(())
}
