//! The n8n example workflows of `gateway/examples/n8n/`, checked without n8n: they parse, are
//! wired (every connection names a node), use the Lanes nodes of `integrations/n8n` with
//! parameters and values those nodes define (so renaming one in the package breaks this test,
//! not a user's import), agree with each other (the enqueue example's callback URLs are the
//! paths the callbacks example listens on), and need no Code node (so no
//! `NODE_FUNCTION_ALLOW_BUILTIN=crypto`).
//!
//! Running them in a real n8n against the real system is `n8n_node.rs` (with `LANES_N8N_TEST=1`);
//! its own workflows (`tests/fixtures/n8n-lanes-node-*.json`) are checked here too.

use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};

const LANES: &str = "n8n-nodes-lanes.lanes";
const TRIGGER: &str = "n8n-nodes-lanes.lanesTrigger";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> anyhow::Result<Value> {
    Ok(serde_json::from_slice(&std::fs::read(path)?)?)
}

fn example(name: &str) -> anyhow::Result<Value> {
    read(&repo().join("gateway/examples/n8n").join(name))
}

fn nodes(wf: &Value) -> Vec<Value> {
    wf["nodes"].as_array().cloned().unwrap_or_default()
}

fn of_type(wf: &Value, t: &str) -> Vec<Value> {
    nodes(wf).into_iter().filter(|n| n["type"] == t).collect()
}

fn named(wf: &Value, name: &str) -> Value {
    nodes(wf)
        .into_iter()
        .find(|n| n["name"] == name)
        .unwrap_or(Value::Null)
}

/// The names of the nodes `from` feeds (main output `output`).
fn next(wf: &Value, from: &str, output: usize) -> Vec<String> {
    wf["connections"][from]["main"][output]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["node"].as_str().map(str::to_owned))
        .collect()
}

/// The TypeScript sources of the package's nodes and credential, concatenated.
fn package_source() -> anyhow::Result<String> {
    let mut text = String::new();
    for dir in ["nodes/Lanes", "nodes/LanesTrigger", "credentials"] {
        for entry in std::fs::read_dir(repo().join("integrations/n8n").join(dir))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "ts") {
                text.push_str(&std::fs::read_to_string(path)?);
            }
        }
    }
    Ok(text)
}

/// Every parameter name (nested in collections too) a Lanes node of the examples sets, and
/// every option value it picks, must be defined by the package.
fn check_parameters(source: &str, params: &Map<String, Value>, at: &str) {
    for (name, value) in params {
        assert!(
            source.contains(&format!("name: '{name}'")),
            "{at}: the package defines no parameter {name:?}"
        );
        match value {
            Value::Object(inner) => check_parameters(source, inner, &format!("{at}.{name}")),
            // A fixed choice (not an expression) must be one of the parameter's options.
            Value::String(s) if is_choice(name) => assert!(
                source.contains(&format!("value: '{s}'")),
                "{at}.{name}: {s:?} is not an option of the package"
            ),
            Value::Array(items) => {
                for s in items.iter().filter_map(Value::as_str) {
                    assert!(
                        source.contains(&format!("value: '{s}'")),
                        "{at}.{name}: {s:?} is not an option of the package"
                    );
                }
            }
            _ => {}
        }
    }
}

fn is_choice(name: &str) -> bool {
    matches!(
        name,
        "resource" | "operation" | "payloadSource" | "priority" | "responseMode" | "onTimeout"
    )
}

#[test]
fn the_examples_are_wired_and_use_only_what_the_package_defines() -> anyhow::Result<()> {
    let source = package_source()?;
    // The examples, and the workflows n8n_node.rs runs.
    let fixtures = repo().join("tests/fixtures");
    for (file, wf) in [
        (
            "lanes-enqueue-invoice.json",
            example("lanes-enqueue-invoice.json")?,
        ),
        (
            "lanes-job-callbacks.json",
            example("lanes-job-callbacks.json")?,
        ),
        (
            "lanes-events-telegram.json",
            example("lanes-events-telegram.json")?,
        ),
        (
            "n8n-lanes-node-ops.json",
            read(&fixtures.join("n8n-lanes-node-ops.json"))?,
        ),
        (
            "n8n-lanes-node-error.json",
            read(&fixtures.join("n8n-lanes-node-error.json"))?,
        ),
    ] {
        let names: Vec<String> = nodes(&wf)
            .iter()
            .filter_map(|n| n["name"].as_str().map(str::to_owned))
            .collect();
        let conns = wf["connections"].as_object().cloned().unwrap_or_default();
        for (from, c) in &conns {
            assert!(names.contains(from), "{file}: {from}");
            for output in c["main"].as_array().into_iter().flatten() {
                for target in output.as_array().into_iter().flatten() {
                    let to = target["node"].as_str().unwrap_or_default();
                    assert!(names.iter().any(|n| n == to), "{file}: {from} → {to}");
                }
            }
        }
        for node in nodes(&wf) {
            let t = node["type"].as_str().unwrap_or_default();
            assert_ne!(
                t, "n8n-nodes-base.code",
                "{file}: no Code node is needed any more"
            );
            assert_ne!(
                t, "n8n-nodes-base.httpRequest",
                "{file}: use the Lanes node"
            );
            if t == LANES || t == TRIGGER {
                assert!(
                    node["credentials"]["lanesApi"]["id"].is_string(),
                    "{file}: {} has no Lanes API credential",
                    node["name"]
                );
                assert_eq!(node["typeVersion"], 1, "{file}");
                let params = node["parameters"].as_object().cloned().unwrap_or_default();
                check_parameters(&source, &params, &format!("{file}: {}", node["name"]));
            }
            if t == TRIGGER {
                assert!(
                    node["webhookId"].is_string(),
                    "{file}: trigger without webhookId"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn the_enqueue_example_calls_back_the_callbacks_example() -> anyhow::Result<()> {
    let enqueue = example("lanes-enqueue-invoice.json")?;
    let callbacks = example("lanes-job-callbacks.json")?;
    let enq = named(&enqueue, "Enqueue invoice");
    let p = &enq["parameters"];
    assert_eq!(
        (&p["resource"], &p["operation"], &p["queue"]),
        (&json!("job"), &json!("enqueue"), &json!("invoice_import"))
    );
    // One lane per establishment; one idempotency key per invoice.
    assert_eq!(p["lane"], "={{ $json.establishment_id }}");
    assert_eq!(p["idempotencyKey"], "=invoice-{{ $json.invoice_id }}");
    assert_eq!(next(&enqueue, "Enqueue invoice", 0), ["Wake a worker"]);
    assert_eq!(
        named(&enqueue, "Wake a worker")["parameters"]["operation"],
        "wakeWorkers"
    );
    // Then it waits for the job Enqueue answered.
    assert_eq!(next(&enqueue, "Wake a worker", 0), ["Wait for the import"]);
    let wait = &named(&enqueue, "Wait for the import")["parameters"];
    assert_eq!(
        (&wait["resource"], &wait["operation"]),
        (&json!("job"), &json!("wait"))
    );
    assert_eq!(
        wait["jobId"],
        "={{ $('Enqueue invoice').item.json.job_id }}"
    );

    // Each callback URL of the enqueue node is the path of a trigger of the callbacks example
    // that selects that event.
    let triggers = of_type(&callbacks, TRIGGER);
    assert_eq!(triggers.len(), 2);
    for (option, event) in [
        ("callbackUrl", "job.completed"),
        ("failureCallbackUrl", "job.failed"),
    ] {
        let url = p["options"][option].as_str().unwrap_or_default();
        let path = url.rsplit('/').next().unwrap_or_default();
        assert!(url.starts_with("={{ $json.n8n_webhook_base }}/"), "{url}");
        let trigger = triggers
            .iter()
            .find(|t| t["parameters"]["path"] == path)
            .unwrap_or_else(|| panic!("no trigger listens on {path}"));
        assert_eq!(trigger["parameters"]["events"], json!([event]), "{path}");
        // The next step reads the event's fields at the top level of the trigger's output.
        let after = next(&callbacks, trigger["name"].as_str().unwrap_or_default(), 0);
        assert_eq!(after.len(), 1);
        let set = named(&callbacks, &after[0]);
        let text = set["parameters"].to_string();
        assert!(
            text.contains("$json.job_id") && !text.contains("$json.body"),
            "{text}"
        );
    }
    Ok(())
}

#[test]
fn the_telegram_example_sends_each_selected_event_and_answers_after_telegram() -> anyhow::Result<()>
{
    let wf = example("lanes-events-telegram.json")?;
    let triggers = of_type(&wf, TRIGGER);
    assert_eq!(triggers.len(), 1);
    let p = &triggers[0]["parameters"];
    assert_eq!(p["path"], "lanes-events");
    // Answered when the Telegram node is done: a Telegram outage makes Lanes retry later.
    assert_eq!(p["responseMode"], "lastNode");
    let events: Vec<&str> = p["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for e in ["job.failed", "agent.*", "watchdog.*", "lane.blocked"] {
        assert!(events.contains(&e), "{e} not selected: {events:?}");
    }
    let to = next(&wf, triggers[0]["name"].as_str().unwrap_or_default(), 0);
    let tg = named(&wf, &to[0]);
    assert_eq!(tg["type"], "n8n-nodes-base.telegram");
    // Every event carries a ready-to-send `message` (the trigger adds one to job callbacks).
    assert_eq!(tg["parameters"]["text"], "={{ $json.message }}");
    Ok(())
}
