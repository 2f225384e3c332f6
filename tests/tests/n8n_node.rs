//! The n8n community node package `integrations/n8n` (n8n-nodes-lanes) in a real n8n 2.x,
//! against the real system: a throwaway PostgreSQL, the coordinator (signing webhooks, with a
//! global event endpoint), the gateway and an agent running a tiny Python handler.
//!
//! n8n runs as its own CLI: the built package is installed in n8n's user folder
//! (`.n8n/nodes/node_modules/n8n-nodes-lanes`, where `npm install n8n-nodes-lanes` puts it),
//! credentials and workflows are imported with `n8n import:*`, the example workflows of
//! `gateway/examples/n8n/` and two test workflows run with `n8n execute`, and `n8n start` serves
//! the Lanes Trigger webhooks to which the coordinator delivers signed callbacks and events.
//!
//! Slow (an n8n install and several n8n boots), so it runs only with `LANES_N8N_TEST=1`:
//! `integrations/n8n/scripts/test.sh` installs Node 24 and n8n, builds the package and runs it.
//! Without the variable it prints why and passes.

use anyhow::{Context as _, bail};
use lanes_tests::agent::{python, start_agent, wait_connected};
use lanes_tests::gateway::{Gateway, Http, Reply};
use lanes_tests::receiver::{Got, Receiver};
use lanes_tests::{ChildProc, Coordinator, TestDb, free_port, fresh_database, spawn, webhooks};
use serde_json::{Value, json};
use sqlx::Row as _;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// Set to 1 to run this test.
const GATE: &str = "LANES_N8N_TEST";
/// A key holding the enqueue and read roles, as an n8n credential would.
const KEY: &str = "n8n-key-0123456789";
const ADMIN_KEY: &str = "n8n-admin-0123456789";
/// Credential ids the example workflows refer to.
const LANES_CREDENTIAL: &str = "LanesApiExample1";
const TELEGRAM_CREDENTIAL: &str = "CHANGE-ME";
const TELEGRAM_TOKEN: &str = "123456:n8n-test-token";
/// Workflow ids given at import.
const WF_ENQUEUE: &str = "LanesEnqueueEx01";
const WF_CALLBACKS: &str = "LanesCallbacks01";
const WF_TELEGRAM: &str = "LanesTelegram001";
const WF_OPS: &str = "LanesNodeOps0001";
const WF_ERROR: &str = "LanesNodeError01";
/// Generous: the CI machine is small and shared; n8n boots take seconds each.
const LONG: Duration = Duration::from_secs(240);

/// The handler: payload on stdin; `{"fail": true}` fails for good (exit 65), anything else
/// completes with a result that echoes the payload.
const HANDLER: &str = r#"
import json, os, sys
payload = json.load(sys.stdin)
if isinstance(payload, dict) and payload.get("fail"):
    sys.stderr.write("invoice total mismatch\n")
    sys.exit(65)
print(json.dumps({"imported": True, "queue": os.environ["LANES_JOB_QUEUE"],
                  "lane": os.environ.get("LANES_JOB_LANE", ""), "echo": payload}))
"#;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where the Node 24 binary, the n8n CLI and the built package are.
struct Install {
    node: PathBuf,
    cli: PathBuf,
    package: PathBuf,
}

impl Install {
    fn locate() -> Install {
        let env = |name: &str| std::env::var_os(name).map(PathBuf::from);
        // The defaults of integrations/n8n/scripts/test.sh, which passes these explicitly.
        let cache = env("LANES_N8N_CACHE")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("lanes-n8n")))
            .or_else(|| env("HOME").map(|d| d.join(".cache/lanes-n8n")))
            .unwrap_or_else(|| PathBuf::from(".cache/lanes-n8n"));
        Install {
            node: env("LANES_N8N_NODE")
                .unwrap_or_else(|| cache.join("node24/node_modules/.bin/node")),
            cli: env("LANES_N8N_CLI").unwrap_or_else(|| cache.join("n8n/node_modules/n8n/bin/n8n")),
            package: env("LANES_N8N_PACKAGE").unwrap_or_else(|| repo().join("integrations/n8n")),
        }
    }

    fn missing(&self) -> Vec<String> {
        let dist = self.package.join("dist/nodes/Lanes/Lanes.node.js");
        [&self.node, &self.cli, &dist]
            .iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect()
    }
}

/// Copies what `npm install n8n-nodes-lanes` would unpack (package.json and dist/) into the
/// user folder's community-node directory, where n8n loads packages from.
fn install_package(package: &Path, user_folder: &Path) -> anyhow::Result<()> {
    let dest = user_folder.join(".n8n/nodes/node_modules/n8n-nodes-lanes");
    std::fs::create_dir_all(&dest)?;
    std::fs::copy(package.join("package.json"), dest.join("package.json"))?;
    copy_dir(&package.join("dist"), &dest.join("dist"))
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// One n8n instance: a user folder, a database of its own, a port.
struct N8n {
    install: Install,
    home: tempfile::TempDir,
    env: Vec<(String, String)>,
    port: u16,
}

impl N8n {
    fn new(install: Install, db: &TestDb, port: u16) -> anyhow::Result<N8n> {
        let home = tempfile::tempdir()?;
        install_package(&install.package, home.path())?;
        let url = url::Url::parse(&db.url)?;
        let base = format!("http://127.0.0.1:{port}");
        let env = [
            ("N8N_USER_FOLDER", home.path().display().to_string()),
            ("HOME", home.path().display().to_string()),
            ("DB_TYPE", "postgresdb".into()),
            (
                "DB_POSTGRESDB_HOST",
                url.host_str().unwrap_or("127.0.0.1").into(),
            ),
            ("DB_POSTGRESDB_PORT", url.port().unwrap_or(5432).to_string()),
            ("DB_POSTGRESDB_DATABASE", db.name.clone()),
            ("DB_POSTGRESDB_USER", url.username().into()),
            (
                "DB_POSTGRESDB_PASSWORD",
                url.password().unwrap_or("").into(),
            ),
            ("N8N_ENCRYPTION_KEY", "lanes-n8n-test-encryption-key".into()),
            ("N8N_PORT", port.to_string()),
            ("N8N_LISTEN_ADDRESS", "127.0.0.1".into()),
            ("N8N_HOST", "127.0.0.1".into()),
            ("WEBHOOK_URL", format!("{base}/")),
            ("GENERIC_TIMEZONE", "UTC".into()),
            ("N8N_DIAGNOSTICS_ENABLED", "false".into()),
            ("N8N_VERSION_NOTIFICATIONS_ENABLED", "false".into()),
            ("N8N_TEMPLATES_ENABLED", "false".into()),
            ("N8N_DYNAMIC_BANNERS_ENABLED", "false".into()),
            ("N8N_LICENSE_AUTO_RENEW_ENABLED", "false".into()),
            ("N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS", "false".into()),
            ("N8N_LOG_LEVEL", "info".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Ok(N8n {
            install,
            home,
            env,
            port,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The environment of one n8n process: its own task-runner broker port, so concurrent
    /// n8n processes never collide.
    fn env(&self) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        env.push(("N8N_RUNNERS_BROKER_PORT".into(), free_port().to_string()));
        env
    }

    fn write(&self, name: &str, value: &Value) -> anyhow::Result<PathBuf> {
        let path = self.home.path().join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(value)?)?;
        Ok(path)
    }

    /// Runs `n8n <args>` to its end; returns (success, stdout, stderr).
    async fn cli(&self, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
        let mut cmd = tokio::process::Command::new(&self.install.node);
        cmd.arg(&self.install.cli)
            .args(args)
            .envs(self.env())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(LONG, cmd.output())
            .await
            .with_context(|| format!("n8n {args:?} did not finish within {LONG:?}"))??;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Runs `n8n <args>` and fails unless it succeeds.
    async fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let (ok, stdout, stderr) = self.cli(args).await?;
        if !ok {
            bail!("n8n {args:?} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
        }
        Ok(stdout)
    }

    /// `n8n execute --id <id> --rawOutput`: the run's JSON (`{data: {resultData: …}}`).
    async fn execute(&self, id: &str) -> anyhow::Result<Value> {
        let stdout = self
            .ok(&["execute", &format!("--id={id}"), "--rawOutput"])
            .await?;
        run_json(&stdout).with_context(|| format!("no run JSON in the output of {id}:\n{stdout}"))
    }

    /// `n8n start` as a background process (killed when dropped).
    async fn start(&self) -> anyhow::Result<ChildProc> {
        let args = vec![self.install.cli.display().to_string(), "start".into()];
        spawn("n8n", &self.install.node, &args, &self.env()).await
    }
}

/// The pretty-printed JSON document in `n8n execute`'s output: from a line `{` to a line `}`.
fn run_json(stdout: &str) -> Option<Value> {
    let lines: Vec<&str> = stdout.lines().collect();
    let start = lines.iter().position(|l| *l == "{")?;
    let end = start + lines[start..].iter().position(|l| *l == "}")?;
    serde_json::from_str(&lines[start..=end].join("\n")).ok()
}

/// The output items (`json`) of node `name` in a run.
fn outputs(run: &Value, name: &str) -> Vec<Value> {
    run["data"]["resultData"]["runData"][name]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["data"]["main"][0].as_array().cloned().unwrap_or_default())
        .map(|item| item["json"].clone())
        .collect()
}

fn one(run: &Value, name: &str) -> Value {
    let items = outputs(run, name);
    assert_eq!(items.len(), 1, "{name}: {items:?}");
    items[0].clone()
}

/// Decodes n8n's stored execution data ("flatted": a JSON array whose first element is the
/// root; every string inside an object or array is an index into the array).
fn unflatten(text: &str) -> anyhow::Result<Value> {
    let all: Vec<Value> = serde_json::from_str(text)?;
    fn revive(v: &Value, all: &[Value], depth: usize) -> Value {
        let deref = |s: &String| match s.parse::<usize>().ok().and_then(|i| all.get(i)) {
            Some(Value::String(text)) => Value::String(text.clone()),
            Some(inner) if depth < 64 => revive(inner, all, depth + 1),
            _ => Value::Null,
        };
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Value::String(s) => deref(s),
                            other => revive(other, all, depth + 1),
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(
                a.iter()
                    .map(|v| match v {
                        Value::String(s) => deref(s),
                        other => revive(other, all, depth + 1),
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    let root = all.first().context("empty execution data")?;
    Ok(revive(root, &all, 0))
}

/// Finished executions of workflow `id` in n8n's database: (status, run data).
async fn executions(pool: &sqlx::PgPool, id: &str) -> anyhow::Result<Vec<(String, Value)>> {
    let rows = sqlx::query(
        r#"SELECT e.status, d.data FROM execution_entity e
           JOIN execution_data d ON d."executionId" = e.id
           WHERE e."workflowId" = $1 AND e."stoppedAt" IS NOT NULL ORDER BY e.id"#,
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let status: String = r.try_get("status")?;
            let data: String = r.try_get("data")?;
            Ok((status, json!({ "data": unflatten(&data)? })))
        })
        .collect()
}

async fn until<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + LONG;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {LONG:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn example(name: &str) -> anyhow::Result<Value> {
    let path = repo().join("gateway/examples/n8n").join(name);
    Ok(serde_json::from_slice(&std::fs::read(&path)?)?)
}

fn node_named<'a>(wf: &'a mut Value, name: &str) -> anyhow::Result<&'a mut Value> {
    wf["nodes"]
        .as_array_mut()
        .and_then(|nodes| nodes.iter_mut().find(|n| n["name"] == name))
        .with_context(|| format!("no node {name:?}"))
}

/// A Lanes node of a test workflow.
fn lanes(name: &str, y: i64, parameters: Value) -> Value {
    json!({
        "name": name, "type": "n8n-nodes-lanes.lanes", "typeVersion": 1,
        "position": [400, y], "parameters": parameters,
        "credentials": {"lanesApi": {"id": LANES_CREDENTIAL, "name": "Lanes API"}},
    })
}

fn workflow(id: &str, name: &str, mut nodes: Vec<Value>, chains: &[&[&str]]) -> Value {
    nodes.insert(
        0,
        json!({"name": "Start", "type": "n8n-nodes-base.manualTrigger", "typeVersion": 1,
               "position": [0, 0], "parameters": {}}),
    );
    for (i, n) in nodes.iter_mut().enumerate() {
        n["id"] = json!(format!("00000000-0000-4000-8000-{i:012}"));
    }
    let mut connections = serde_json::Map::new();
    for chain in chains {
        for pair in chain.windows(2) {
            let entry = connections
                .entry(pair[0].to_string())
                .or_insert_with(|| json!({"main": [[]]}));
            if let Some(list) = entry["main"][0].as_array_mut() {
                list.push(json!({"node": pair[1], "type": "main", "index": 0}));
            }
        }
    }
    json!({"id": id, "name": name, "nodes": nodes, "connections": connections,
           "settings": {"executionOrder": "v1"}, "active": false})
}

/// Every operation of the Lanes node, in one workflow run by `n8n execute`.
fn ops_workflow(n8n: &N8n) -> Value {
    let done = n8n.url("/webhook/lanes-job-done");
    let failed = n8n.url("/webhook/lanes-job-failed");
    let invoices = json!({"invoices": [
        {"lane": "resto-1", "invoice": "F-1"}, {"lane": "resto-1", "invoice": "F-2"},
        {"lane": "resto-2", "invoice": "F-3"}]});
    let mut stats = lanes(
        "Stats",
        0,
        json!({"resource": "queue", "operation": "getStats",
        "statsOptions": {"queue": "n8n_batch"}}),
    );
    stats["executeOnce"] = json!(true);
    let mut wake = lanes(
        "Wake",
        0,
        json!({"resource": "queue", "operation": "wakeWorkers",
        "wakeOptions": {"workersToStart": 0, "queue": "n8n_batch"}}),
    );
    wake["executeOnce"] = json!(true);
    let mut bad = lanes(
        "Bad queue, continue",
        900,
        json!({"resource": "job", "operation": "enqueue",
        "queue": "bad queue!", "payloadSource": "item"}),
    );
    bad["onError"] = json!("continueRegularOutput");
    let mut no_lane = lanes(
        "Lane expression empty, continue",
        1000,
        json!({"resource": "job", "operation": "enqueue", "queue": "n8n_ops",
               "lane": "={{ $json.establishment_id }}", "payloadSource": "item"}),
    );
    no_lane["onError"] = json!("continueRegularOutput");
    let id = "={{ $json.job_id }}";
    let nodes = vec![
        json!({"name": "Invoices", "type": "n8n-nodes-base.set", "typeVersion": 3.4,
               "position": [200, 0], "parameters": {"mode": "raw",
               "jsonOutput": invoices.to_string(), "options": {}}}),
        json!({"name": "Split", "type": "n8n-nodes-base.splitOut", "typeVersion": 1,
               "position": [300, 0], "parameters": {"fieldToSplitOut": "invoices", "options": {}}}),
        lanes(
            "Enqueue batch",
            0,
            json!({"resource": "job", "operation": "enqueueBatch",
            "queue": "n8n_batch", "lane": "={{ $json.lane }}", "payloadSource": "item"}),
        ),
        lanes(
            "Wait for each",
            0,
            json!({"resource": "job", "operation": "wait", "jobId": id,
            "timeout": 180, "waitOptions": {"pollInterval": 0.5}}),
        ),
        stats,
        wake,
        lanes(
            "Enqueue one",
            200,
            json!({"resource": "job", "operation": "enqueue",
            "queue": "n8n_ops", "lane": "resto-7", "payloadSource": "json",
            "payload": "{\"invoice\": \"F-7\", \"amount\": 12.5}",
            "idempotencyKey": "ops-F-7", "options": {"priority": "high"}}),
        ),
        lanes(
            "Get it",
            200,
            json!({"resource": "job", "operation": "get", "jobId": id}),
        ),
        lanes(
            "Wait for it",
            200,
            json!({"resource": "job", "operation": "wait", "jobId": id,
            "timeout": 180, "waitOptions": {"pollInterval": 0.5}}),
        ),
        lanes(
            "Enqueue one again",
            200,
            json!({"resource": "job", "operation": "enqueue",
            "queue": "n8n_ops", "lane": "resto-7", "payloadSource": "json",
            "payload": "{\"invoice\": \"F-7\", \"amount\": 12.5}", "idempotencyKey": "ops-F-7"}),
        ),
        lanes(
            "Enqueue delayed",
            400,
            json!({"resource": "job", "operation": "enqueue",
            "queue": "n8n_ops", "lane": "resto-8", "payloadSource": "item",
            "options": {"delaySeconds": 3600, "priorityLevel": -5}}),
        ),
        lanes(
            "Cancel it",
            400,
            json!({"resource": "job", "operation": "cancel", "jobId": id}),
        ),
        lanes(
            "Retry it",
            400,
            json!({"resource": "job", "operation": "retry", "jobId": id}),
        ),
        lanes(
            "Cancel again",
            400,
            json!({"resource": "job", "operation": "cancel", "jobId": id}),
        ),
        lanes(
            "Fail, callback only",
            600,
            json!({"resource": "job", "operation": "enqueue",
            "queue": "n8n_fail", "payloadSource": "json", "payload": "{\"fail\": true, \"n\": 1}",
            "options": {"callbackUrl": done}}),
        ),
        lanes(
            "Fail, failure callback",
            700,
            json!({"resource": "job", "operation": "enqueue",
            "queue": "n8n_fail", "payloadSource": "json", "payload": "{\"fail\": true, \"n\": 2}",
            "options": {"callbackUrl": done, "failureCallbackUrl": failed}}),
        ),
        bad,
        no_lane,
    ];
    workflow(
        WF_OPS,
        "Lanes node: every operation",
        nodes,
        &[
            &[
                "Start",
                "Invoices",
                "Split",
                "Enqueue batch",
                "Wait for each",
                "Stats",
                "Wake",
            ],
            &[
                "Start",
                "Enqueue one",
                "Get it",
                "Wait for it",
                "Enqueue one again",
            ],
            &[
                "Start",
                "Enqueue delayed",
                "Cancel it",
                "Retry it",
                "Cancel again",
            ],
            &["Start", "Fail, callback only"],
            &["Start", "Fail, failure callback"],
            &["Start", "Bad queue, continue"],
            &["Start", "Lane expression empty, continue"],
        ],
    )
}

fn error_workflow() -> Value {
    let bad = lanes(
        "Bad queue",
        0,
        json!({"resource": "job", "operation": "enqueue",
        "queue": "bad queue!", "payloadSource": "item"}),
    );
    workflow(
        WF_ERROR,
        "Lanes node: a gateway error",
        vec![bad],
        &[&["Start", "Bad queue"]],
    )
}

/// The examples as a user adapts them: the sample invoice's webhook base is this n8n.
fn examples(n8n: &N8n) -> anyhow::Result<Vec<(&'static str, Value)>> {
    let mut enqueue = example("lanes-enqueue-invoice.json")?;
    let sample = node_named(&mut enqueue, "Invoice (sample data)")?;
    let assignments = sample["parameters"]["assignments"]["assignments"]
        .as_array_mut()
        .context("sample assignments")?;
    for a in assignments
        .iter_mut()
        .filter(|a| a["name"] == "n8n_webhook_base")
    {
        a["value"] = json!(n8n.url("/webhook"));
    }
    Ok(vec![
        (WF_ENQUEUE, enqueue),
        (WF_CALLBACKS, example("lanes-job-callbacks.json")?),
        (WF_TELEGRAM, example("lanes-events-telegram.json")?),
    ])
}

fn credentials(gateway: &Gateway, telegram: &Receiver) -> Value {
    json!([
        {"id": LANES_CREDENTIAL, "name": "Lanes API", "type": "lanesApi",
         "data": {"url": gateway.url("/"), "apiKey": KEY, "webhookSecret": webhooks::secret()}},
        {"id": TELEGRAM_CREDENTIAL, "name": "Telegram account", "type": "telegramApi",
         "data": {"accessToken": TELEGRAM_TOKEN, "baseUrl": telegram.url("")}},
    ])
}

/// The coordinator's deliveries (admin API), newest first.
async fn deliveries(http: &Http) -> anyhow::Result<Vec<Value>> {
    let r = http
        .get(
            "/admin/api/deliveries?state=pending,delivering,delivered,failed,disabled&limit=500",
            Some(ADMIN_KEY),
        )
        .await?;
    anyhow::ensure!(r.status == 200, "deliveries: {} {}", r.status, r.body);
    Ok(r.body["deliveries"].as_array().cloned().unwrap_or_default())
}

/// Waits until the delivery of `event` for `job` to `url` is delivered; returns it.
async fn delivered(http: &Http, event: &str, job: i64, url: &str) -> anyhow::Result<Value> {
    until(
        &format!("{event} of job {job} delivered to {url}"),
        || async {
            let all = deliveries(http).await?;
            let found = all
                .into_iter()
                .find(|d| d["event_type"] == event && d["job_id"] == job && d["url"] == url);
            Ok(found.filter(|d| d["state"] == "delivered"))
        },
    )
    .await
}

async fn post_raw(
    url: &str,
    headers: &HashMap<String, String>,
    body: Vec<u8>,
) -> anyhow::Result<Reply> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut req = client.post(url).body(body);
    for (k, v) in headers {
        if k.starts_with("webhook-") || k == "content-type" {
            req = req.header(k.as_str(), v.as_str());
        }
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// n8n's REST API as the instance owner (set up on first call): a session cookie and the
/// browser id it is bound to.
struct Rest {
    client: reqwest::Client,
    base: String,
    cookie: String,
}

const BROWSER_ID: &str = "lanes-n8n-test";

impl Rest {
    async fn owner(n8n: &N8n) -> anyhow::Result<Rest> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let base = n8n.url("/rest");
        let r = client
            .post(format!("{base}/owner/setup"))
            .header("browser-id", BROWSER_ID)
            .json(&json!({"email": "owner@lanes.test", "firstName": "Lanes",
                          "lastName": "Test", "password": "Lanes-test-1234"}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "owner setup: {}", r.status());
        let cookie = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("n8n-auth="))
            .and_then(|v| v.split(';').next())
            .context("no n8n-auth cookie")?
            .to_owned();
        Ok(Rest {
            client,
            base,
            cookie,
        })
    }

    /// The credential "Test" button: `{status: "OK" | "Error", message}`.
    async fn test_credential(&self, kind: &str, data: Value) -> anyhow::Result<Value> {
        let r = self
            .client
            .post(format!("{}/credentials/test", self.base))
            .header("browser-id", BROWSER_ID)
            .header("cookie", &self.cookie)
            .json(&json!({"credentials": {"id": "", "name": "test", "type": kind, "data": data}}))
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await?;
        anyhow::ensure!(status.is_success(), "credentials/test: {status} {body}");
        Ok(body["data"].clone())
    }
}

#[tokio::test]
async fn n8n_nodes_work_against_the_real_system() -> anyhow::Result<()> {
    if std::env::var(GATE).as_deref() != Ok("1") {
        eprintln!(
            "note: the n8n node test is skipped: set {GATE}=1 (integrations/n8n/scripts/test.sh \
             installs n8n and runs it)"
        );
        return Ok(());
    }
    let install = Install::locate();
    let missing = install.missing();
    if !missing.is_empty() {
        bail!(
            "{GATE}=1 but the n8n install is incomplete (run integrations/n8n/scripts/test.sh): {missing:?}"
        );
    }
    let started = Instant::now();

    // Lanes: coordinator (signing, a global event endpoint at the Telegram example's trigger
    // and one at `capture`), gateway, an agent.
    let telegram = Receiver::start().await?;
    telegram.answer_json(&json!({"ok": true, "result": {"message_id": 1, "date": 0,
        "chat": {"id": 1, "type": "private"}, "text": "sent"}}));
    let capture = Receiver::start().await?;
    let n8n_port = free_port();
    let events_url = format!("http://127.0.0.1:{n8n_port}/webhook/lanes-events");
    let endpoints = json!([
        {"url": events_url, "types": ["job.failed"]},
        {"url": capture.url("/events"), "types": ["job.failed"]},
    ]);
    let db = fresh_database().await?;
    let coord = Coordinator::start_with_env(
        &db.url,
        &["--webhook-secret", &webhooks::secret()],
        &[("LANES_EVENT_ENDPOINTS", &endpoints.to_string())],
    )
    .await?;
    let keys = format!("enqueue:{KEY},read:{KEY},admin:{ADMIN_KEY}");
    let gateway = Gateway::start(&coord.url(), &["--api-keys", &keys]).await?;
    let http = Http::new(&gateway.url(""))?;
    let scripts = tempfile::tempdir()?;
    let handler = scripts.path().join("handler.py");
    std::fs::write(&handler, HANDLER)?;
    let exec = format!("'{}' '{}'", python()?, handler.display());
    let _agent = start_agent(
        &coord.url(),
        "n8n-agent",
        "invoice_import,n8n_batch,n8n_ops,n8n_fail",
        &["--exec", &exec],
    )
    .await?;
    wait_connected(&coord, "n8n-agent", LONG).await?;

    // n8n: its own database, the package, credentials, workflows; the two webhook examples
    // published, then `n8n start`.
    let n8n_db = fresh_database().await?;
    let n8n_pool = n8n_db.pool().await?;
    let n8n = N8n::new(install, &n8n_db, n8n_port)?;
    let creds = n8n.write("credentials.json", &credentials(&gateway, &telegram))?;
    n8n.ok(&[
        "import:credentials",
        &format!("--input={}", creds.display()),
    ])
    .await?;
    let dir = n8n.home.path().join("workflows");
    std::fs::create_dir_all(&dir)?;
    let mut all = examples(&n8n)?;
    all.push((WF_OPS, ops_workflow(&n8n)));
    all.push((WF_ERROR, error_workflow()));
    for (id, mut wf) in all {
        wf["id"] = json!(id);
        std::fs::write(
            dir.join(format!("{id}.json")),
            serde_json::to_vec_pretty(&wf)?,
        )?;
    }
    n8n.ok(&[
        "import:workflow",
        "--separate",
        &format!("--input={}", dir.display()),
    ])
    .await?;
    for id in [WF_CALLBACKS, WF_TELEGRAM] {
        n8n.ok(&["publish:workflow", &format!("--id={id}")]).await?;
    }
    let server = n8n.start().await?;
    // The trigger is live once an unsigned request is refused by it (401), not by n8n (404).
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    until("n8n serving the Lanes Trigger webhooks", || async {
        let r = probe.post(&events_url).body("{}").send().await;
        Ok(r.ok().filter(|r| r.status() == 401).map(|_| ()))
    })
    .await
    .with_context(|| server.log_tail(60))?;
    eprintln!("n8n serving after {:?}", started.elapsed());

    // 0. The credential's Test button calls an authenticated gateway route with the key.
    let rest = Rest::owner(&n8n).await?;
    let data = |key: &str| json!({"url": gateway.url("/"), "apiKey": key, "webhookSecret": ""});
    let good = rest.test_credential("lanesApi", data(KEY)).await?;
    assert_eq!(good["status"], "OK", "{good}");
    let bad = rest.test_credential("lanesApi", data("not-a-key")).await?;
    assert_eq!(bad["status"], "Error", "{bad}");

    // 1. The enqueue example: one invoice in its establishment's lane, then a wake-up.
    let run = n8n.execute(WF_ENQUEUE).await?;
    let enq = one(&run, "Enqueue invoice");
    assert_eq!(
        (&enq["created"], &enq["queue"], &enq["lane"]),
        (&json!(true), &json!("invoice_import"), &json!("resto-42")),
        "{enq}"
    );
    let invoice_job = enq["job_id"].as_i64().context("job_id")?;
    let job = http
        .get(&format!("/api/jobs/{invoice_job}"), Some(KEY))
        .await?
        .body;
    assert_eq!(
        job["payload"],
        json!({"establishment_id": "resto-42", "invoice_id": "INV-2025-0001",
               "ocr_file": "https://files.example.com/ocr/INV-2025-0001.json"})
    );
    assert_eq!(job["idempotency_key"], "invoice-INV-2025-0001");
    assert_eq!(job["callback_url"], n8n.url("/webhook/lanes-job-done"));
    assert_eq!(
        job["failure_callback_url"],
        n8n.url("/webhook/lanes-job-failed")
    );
    assert_eq!(one(&run, "Wake a worker")["status"], "success");

    // 2. Every operation of the Lanes node.
    let run = n8n.execute(WF_OPS).await?;
    let batch = outputs(&run, "Enqueue batch");
    assert_eq!(batch.len(), 3, "{batch:?}");
    let waited = outputs(&run, "Wait for each");
    let invoices: Vec<&Value> = waited
        .iter()
        .map(|j| &j["result"]["echo"]["invoice"])
        .collect();
    assert_eq!(
        invoices,
        [&json!("F-1"), &json!("F-2"), &json!("F-3")],
        "{waited:?}"
    );
    for (enqueued, done) in batch.iter().zip(&waited) {
        assert_eq!(done["job_id"], enqueued["job_id"]);
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["queue"], "n8n_batch");
        assert_eq!(done["result"]["lane"], done["lane"]);
    }
    assert_eq!(
        [&batch[0]["lane"], &batch[1]["lane"], &batch[2]["lane"]],
        [&json!("resto-1"), &json!("resto-1"), &json!("resto-2")]
    );
    let stats = one(&run, "Stats");
    let q = stats["queues"]
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["queue"] == "n8n_batch"))
        .with_context(|| format!("no n8n_batch in {stats}"))?;
    assert_eq!(q["completed"], 3, "{stats}");
    assert_eq!(stats["running"], true);
    let wake = one(&run, "Wake");
    assert_eq!(
        (&wake["status"], &wake["workers_woken"]),
        (&json!("success"), &json!(0)),
        "{wake}"
    );

    let first = one(&run, "Enqueue one");
    let ops_job = first["job_id"].as_i64().context("job_id")?;
    assert_eq!(first["created"], true);
    let got = one(&run, "Get it");
    assert_eq!(got["job_id"], ops_job);
    assert_eq!(got["payload"], json!({"invoice": "F-7", "amount": 12.5}));
    assert_eq!(
        (&got["priority"], &got["lane"]),
        (&json!(10), &json!("resto-7"))
    );
    let finished = one(&run, "Wait for it");
    assert_eq!(finished["status"], "completed", "{finished}");
    assert_eq!(
        finished["result"]["echo"],
        json!({"invoice": "F-7", "amount": 12.5})
    );
    let again = one(&run, "Enqueue one again");
    assert_eq!(
        (&again["job_id"], &again["created"]),
        (&json!(ops_job), &json!(false))
    );

    let delayed = one(&run, "Enqueue delayed");
    assert_eq!(delayed["status"], "pending");
    assert_eq!(one(&run, "Cancel it")["status"], "cancelled");
    let retried = one(&run, "Retry it");
    assert_eq!(
        (&retried["status"], &retried["priority"]),
        (&json!("pending"), &json!(-5))
    );
    // A retried job is due at once: the agent may have leased it, then the cancel is a request.
    let again = one(&run, "Cancel again");
    assert!(
        again["status"] == "cancelled"
            || (again["status"] == "processing" && again["cancel_requested"] == true),
        "{again}"
    );

    let bad = one(&run, "Bad queue, continue");
    assert_eq!(
        (&bad["field"], &bad["code"], &bad["http_code"]),
        (&json!("queue"), &json!("invalid_field"), &json!(422)),
        "{bad}"
    );
    // A lane expression that gives nothing is an error, not a job without ordering.
    let no_lane = one(&run, "Lane expression empty, continue");
    assert_eq!(
        no_lane["error"], "Lane is empty for this item: its expression gave no value",
        "{no_lane}"
    );
    let fail_cb = one(&run, "Fail, callback only")["job_id"]
        .as_i64()
        .context("job_id")?;
    let fail_fcb = one(&run, "Fail, failure callback")["job_id"]
        .as_i64()
        .context("job_id")?;

    // 3. A gateway error stops the workflow with the gateway's message and field.
    let (ok, stdout, stderr) = n8n
        .cli(&["execute", &format!("--id={WF_ERROR}"), "--rawOutput"])
        .await?;
    let text = format!("{stdout}\n{stderr}");
    assert!(!ok, "the workflow must fail:\n{text}");
    // n8n prints the failed run's JSON: the node's error as the user sees it in the editor.
    let failed = run_json(&text).with_context(|| format!("no run JSON:\n{text}"))?;
    let error = &failed["data"]["resultData"]["error"];
    let message = "queue \"bad queue!\" contains ' '; allowed are letters, digits and _ . : -";
    assert_eq!(
        error["message"],
        format!("{message} (field: queue)"),
        "{error}"
    );
    assert_eq!(error["name"], "NodeApiError");
    assert_eq!(error["httpCode"], "422");
    assert_eq!(
        error["context"]["gateway"],
        json!({"status": 422, "code": "invalid_field", "message": message, "field": "queue"})
    );
    assert_eq!(error["node"]["name"], "Bad queue");

    // 4. A tampered delivery: a real one from the coordinator (captured at the second
    // endpoint) with one byte changed is refused with 401 and starts no execution (counted at
    // the end: one Telegram message per real event, no more).
    let real: Got = capture.wait_for(1, LONG).await?.remove(0);
    webhooks::verify(&real)?;
    let mut tampered = real.body.clone();
    let at = tampered.iter().position(|b| *b == b'1').unwrap_or(0);
    tampered[at] = if tampered[at] == b'1' { b'2' } else { b'1' };
    let r = post_raw(&events_url, &real.headers, tampered).await?;
    assert_eq!(r.status, 401, "{:?}", r.body);
    assert_eq!(r.body["error"], "bad signature");
    let mut unsigned = real.headers.clone();
    unsigned.remove("webhook-signature");
    let r = post_raw(&events_url, &unsigned, real.body.clone()).await?;
    assert_eq!(r.status, 401, "{:?}", r.body);

    // 5. The callbacks example (Lanes Trigger ×2): the invoice's job.completed and the
    // job.failed sent to the failure URL each start an execution; the job.failed sent to the
    // job-done trigger (which selects job.completed only) is acknowledged and starts none.
    let done_url = n8n.url("/webhook/lanes-job-done");
    let failed_url = n8n.url("/webhook/lanes-job-failed");
    for (event, job, url) in [
        ("job.completed", invoice_job, &done_url),
        ("job.failed", fail_cb, &done_url),
        ("job.failed", fail_fcb, &failed_url),
    ] {
        let d = delivered(&http, event, job, url).await?;
        assert_eq!(d["last_status"], 200, "{d}");
    }
    let runs = until("2 executions of the callbacks workflow", || async {
        let runs = executions(&n8n_pool, WF_CALLBACKS).await?;
        Ok((runs.len() >= 2).then_some(runs))
    })
    .await?;
    assert_eq!(
        runs.len(),
        2,
        "the filtered job.failed must not start an execution"
    );
    let imported: Vec<Value> = runs
        .iter()
        .flat_map(|(_, r)| outputs(r, "Invoice imported"))
        .collect();
    assert_eq!(imported.len(), 1, "{imported:?}");
    assert_eq!(imported[0]["job_id"], invoice_job);
    assert_eq!(imported[0]["status"], "completed");
    assert_eq!(imported[0]["result"]["echo"]["invoice_id"], "INV-2025-0001");
    let alerts: Vec<Value> = runs
        .iter()
        .flat_map(|(_, r)| outputs(r, "Import failed: alert text"))
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = alerts[0]["message"].as_str().unwrap_or_default();
    assert!(
        alert.starts_with(&format!("⚠️ Invoice import job {fail_fcb} failed: "))
            && alert.contains("invoice total mismatch")
            && alert.ends_with("(attempts used: 1)"),
        "{alert}"
    );
    for (status, _) in &runs {
        assert_eq!(status, "success");
    }
    let trigger_out: Vec<Value> = runs
        .iter()
        .flat_map(|(_, r)| {
            outputs(r, "Job done (Lanes Trigger, /webhook/lanes-job-done)")
                .into_iter()
                .chain(outputs(
                    r,
                    "Job failed (Lanes Trigger, /webhook/lanes-job-failed)",
                ))
        })
        .collect();
    assert_eq!(trigger_out.len(), 2, "{trigger_out:?}");
    for ev in &trigger_out {
        assert!(
            ev["webhook_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("msg_")),
            "{ev}"
        );
        assert!(ev["message"].is_string(), "{ev}");
    }

    // 6. The Telegram example: the coordinator's global job.failed events go through the
    // Lanes Trigger to the Telegram node (a fake Bot API), answered once Telegram accepted.
    let sent = telegram.wait_for(2, LONG).await?;
    let mut texts: Vec<String> = sent
        .iter()
        .map(|g| g.json()["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    texts.sort();
    for job in [fail_cb, fail_fcb] {
        assert!(
            texts
                .iter()
                .any(|t| t.contains(&format!("job {job} failed"))
                    && t.contains("invoice total mismatch")),
            "job {job}: {texts:?}"
        );
    }
    assert!(
        sent.iter()
            .all(|g| g.path == format!("/bot{TELEGRAM_TOKEN}/sendMessage"))
    );
    for job in [fail_cb, fail_fcb] {
        delivered(&http, "job.failed", job, &events_url).await?;
    }
    let telegram_runs = until("2 executions of the Telegram workflow", || async {
        let runs = executions(&n8n_pool, WF_TELEGRAM).await?;
        Ok((runs.len() >= 2).then_some(runs))
    })
    .await?;
    assert_eq!(
        telegram_runs.len(),
        2,
        "one execution per event, none for refused requests"
    );
    assert!(telegram_runs.iter().all(|(status, _)| status == "success"));
    assert_eq!(telegram.requests().len(), 2);
    for (_, r) in &telegram_runs {
        let ev = one(r, "Lanes event (Lanes Trigger, /webhook/lanes-events)");
        assert_eq!(ev["event_type"], "job.failed", "{ev}");
        assert_eq!(ev["type"], "job.failed", "{ev}");
    }

    eprintln!("n8n node test done in {:?}", started.elapsed());
    drop(server);
    Ok(())
}
