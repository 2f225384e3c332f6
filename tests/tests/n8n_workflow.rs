//! The n8n example `gateway/examples/n8n/lanes-events-telegram.json`: the file parses, its
//! nodes are wired Webhook (raw body) → Code → IF → Telegram / 401, and the Code node's
//! JavaScript, run by `node` the way n8n runs it, accepts a callback exactly as a real
//! coordinator signed and delivered it, and refuses a tampered body, a wrong secret, a
//! stale timestamp and a missing signature. Skipped (with a note) without `node` on PATH.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use lanes_proto::v1 as pb;
use lanes_tests::jobs::Setup;
use lanes_tests::receiver::Receiver;
use serde_json::{Value, json};
use sha2::Sha256;
use std::path::PathBuf;
use std::time::Duration;

const KEY: &[u8] = b"n8n-example-test-key-0123456789ab";

fn workflow_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../gateway/examples/n8n/lanes-events-telegram.json")
}

fn secret(key: &[u8]) -> String {
    format!("whsec_{}", STANDARD.encode(key))
}

/// Runs the Code node's `jsCode` as n8n does: an async function body with `$input`, `$env`,
/// `require` and `this.helpers`, the Webhook node's item holding the raw body as binary
/// `data`. One run per case; prints each run's first output item, or the error.
const HARNESS: &str = r#"
const fs = require('fs');
const [wfPath, casesPath] = process.argv.slice(2);
const wf = JSON.parse(fs.readFileSync(wfPath, 'utf8'));
const code = wf.nodes.find((n) => n.type === 'n8n-nodes-base.code').parameters.jsCode;
const AsyncFunction = (async () => {}).constructor;
(async () => {
  const results = [];
  for (const c of JSON.parse(fs.readFileSync(casesPath, 'utf8'))) {
    const items = [{ json: { headers: c.headers, params: {}, query: {}, body: {} },
                     binary: { data: { data: c.body_b64, mimeType: 'application/json' } } }];
    const helpers = { getBinaryDataBuffer: async (i, name) => Buffer.from(items[i].binary[name].data, 'base64') };
    const env = c.env === null
      ? new Proxy({}, { get() { throw new Error('access to env vars denied'); } })
      : c.env;
    try {
      const out = await new AsyncFunction('$input', '$env', 'require', code)
        .call({ helpers }, { all: () => items }, env, require);
      results.push(out[0].json);
    } catch (e) {
      results.push({ error: String(e.message || e) });
    }
  }
  console.log(JSON.stringify(results));
})();
"#;

/// A signature made with this test's own HMAC code.
fn sign(key: &[u8], id: &str, ts: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn case(env: Value, headers: Value, body: &[u8]) -> Value {
    json!({"env": env, "headers": headers, "body_b64": STANDARD.encode(body)})
}

async fn run_code_node(cases: &[Value]) -> anyhow::Result<Vec<Value>> {
    let dir = tempfile::tempdir()?;
    let harness = dir.path().join("harness.js");
    let input = dir.path().join("cases.json");
    std::fs::write(&harness, HARNESS)?;
    std::fs::write(&input, serde_json::to_vec(cases)?)?;
    let out = tokio::process::Command::new("node")
        .arg(&harness)
        .arg(workflow_path())
        .arg(&input)
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn node_available() -> bool {
    std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_workflow_is_wired_for_signature_checks() -> anyhow::Result<()> {
    let wf: Value = serde_json::from_slice(&std::fs::read(workflow_path())?)?;
    let nodes = wf["nodes"].as_array().cloned().unwrap_or_default();
    let of_type = |t: &str| {
        nodes
            .iter()
            .filter(|n| n["type"] == t)
            .cloned()
            .collect::<Vec<_>>()
    };
    let hook = &of_type("n8n-nodes-base.webhook")[0];
    assert_eq!(hook["parameters"]["httpMethod"], "POST");
    assert_eq!(hook["parameters"]["options"]["rawBody"], true);
    assert_eq!(hook["parameters"]["responseMode"], "responseNode");
    assert_eq!(of_type("n8n-nodes-base.code").len(), 1);
    let tg = &of_type("n8n-nodes-base.telegram")[0];
    assert_eq!(tg["parameters"]["text"], "={{ $json.body.message }}");
    let codes: Vec<Value> = of_type("n8n-nodes-base.respondToWebhook")
        .iter()
        .map(|n| n["parameters"]["options"]["responseCode"].clone())
        .collect();
    assert!(codes.contains(&json!(401)) && codes.contains(&json!(200)));
    // Every connection names an existing node; the IF's false branch answers 401.
    let names: Vec<&str> = nodes.iter().filter_map(|n| n["name"].as_str()).collect();
    let conns = wf["connections"].as_object().cloned().unwrap_or_default();
    for (from, c) in &conns {
        assert!(names.contains(&from.as_str()), "{from}");
        let outputs = c["main"].as_array().cloned().unwrap_or_default();
        for target in outputs.iter().filter_map(Value::as_array).flatten() {
            let to = target["node"].as_str().unwrap_or_default();
            assert!(names.contains(&to), "{from} → {to}");
        }
    }
    let iff = &of_type("n8n-nodes-base.if")[0];
    let no = &conns[iff["name"].as_str().unwrap_or_default()]["main"][1][0]["node"];
    let no_node = nodes.iter().find(|n| &n["name"] == no).cloned();
    assert_eq!(
        no_node.map(|n| n["parameters"]["options"]["responseCode"].clone()),
        Some(json!(401))
    );
    Ok(())
}

#[tokio::test]
async fn the_code_node_verifies_what_the_coordinator_signs() -> anyhow::Result<()> {
    if !node_available() {
        eprintln!("note: `node` is not on PATH; the n8n Code node check is skipped");
        return Ok(());
    }
    // A real delivery, signed by the coordinator's dispatcher.
    let rx = Receiver::start().await?;
    let s = Setup::start(&["--webhook-secret", &secret(KEY)]).await?;
    let job = s
        .add_req(pb::EnqueueRequest {
            queue: "invoices".into(),
            lane: "resto-42".into(),
            payload: "{}".into(),
            callback_url: rx.url("/lanes-events"),
            ..Default::default()
        })
        .await?;
    let leased = s.take("agent-2", "invoices").await?;
    s.complete(&leased).await?;
    let got = rx.wait_for(1, Duration::from_secs(20)).await?.remove(0);
    let headers = json!(got.headers);
    let env = json!({"LANES_WEBHOOK_SECRET": secret(KEY)});

    let mut tampered = got.body.clone();
    tampered.extend_from_slice(b" ");
    // A global event's envelope, signed with this test's own HMAC code.
    let event = r#"{"id":"evt_123","type":"agent.awake","occurred_at":"2026-11-23T14:00:00.000000Z","message":"🟢 Worker agent-2 awake — 5 jobs pending","language":"en","queue":"invoices","lane":null,"data":{}}"#.as_bytes();
    let ts = now();
    let signed = |ts: i64, sig: String| {
        json!({"webhook-id": "msg_evt", "webhook-timestamp": ts.to_string(),
               "webhook-signature": sig})
    };
    let good = sign(KEY, "msg_evt", ts, event);
    let stale = now() - 301;
    let cases = [
        case(env.clone(), headers.clone(), &got.body),
        case(env.clone(), headers.clone(), &tampered),
        case(
            json!({"LANES_WEBHOOK_SECRET": secret(b"another-key")}),
            headers.clone(),
            &got.body,
        ),
        case(
            env.clone(),
            signed(ts, format!("v1,bm9wZQ== {good}")),
            event,
        ),
        case(
            env.clone(),
            signed(stale, sign(KEY, "msg_evt", stale, event)),
            event,
        ),
        case(env.clone(), json!({"webhook-id": "msg_evt"}), event),
        // Environment access blocked and no secret pasted: a clear error, never "valid".
        case(Value::Null, headers.clone(), &got.body),
    ];
    let r = run_code_node(&cases).await?;

    assert_eq!(r[0]["valid"], true, "{}", r[0]);
    assert_eq!(r[0]["webhook_id"], got.header("webhook-id"));
    assert_eq!(r[0]["body"]["task_id"], job);
    assert_eq!(
        r[0]["body"]["message"],
        format!("✅ Job {job} completed (invoices / resto-42)")
    );
    for (i, why) in [(1, "bad signature"), (2, "bad signature")] {
        assert_eq!(
            (&r[i]["valid"], &r[i]["reason"]),
            (&json!(false), &json!(why)),
            "{i}"
        );
    }
    assert_eq!(r[3]["valid"], true, "{}", r[3]);
    assert_eq!(
        r[3]["body"]["message"],
        "🟢 Worker agent-2 awake — 5 jobs pending"
    );
    assert_eq!(r[4]["valid"], false);
    assert!(
        r[4]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("5 minutes"),
        "{}",
        r[4]
    );
    assert_eq!(r[5]["valid"], false);
    assert!(
        r[5]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("missing"),
        "{}",
        r[5]
    );
    assert!(
        r[6]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("secret"),
        "{}",
        r[6]
    );
    Ok(())
}
