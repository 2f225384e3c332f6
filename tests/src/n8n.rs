//! A real n8n 2.x for the tests of the n8n community node package (`integrations/n8n`): its
//! CLI run with the Node 24 binary that `integrations/n8n/scripts/test.sh` installs, a user
//! folder of its own holding the built package where `npm install n8n-nodes-lanes` would put it,
//! a PostgreSQL database of its own, and readers for what n8n records (run JSON, executions).

use crate::pg::TestDb;
use crate::procs::{self, ChildProc};
use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use sqlx::Row as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest one n8n CLI command may take (a boot loads every node type; the machine is small).
pub const CLI_TIMEOUT: Duration = Duration::from_secs(240);

/// Where the Node 24 binary, the n8n CLI and the built package are: `LANES_N8N_NODE`,
/// `LANES_N8N_CLI`, `LANES_N8N_PACKAGE`, else the defaults of `scripts/test.sh` (under
/// `LANES_N8N_CACHE`, `$XDG_CACHE_HOME/lanes-n8n` or `~/.cache/lanes-n8n`).
pub struct Install {
    /// The `node` (≥ 24) binary.
    pub node: PathBuf,
    /// n8n's `bin/n8n` script.
    pub cli: PathBuf,
    /// The package folder, built (`dist/`).
    pub package: PathBuf,
}

impl Install {
    /// The paths from the environment or the defaults.
    pub fn locate() -> Install {
        let env = |name: &str| std::env::var_os(name).map(PathBuf::from);
        let cache = env("LANES_N8N_CACHE")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("lanes-n8n")))
            .or_else(|| env("HOME").map(|d| d.join(".cache/lanes-n8n")))
            .unwrap_or_else(|| PathBuf::from(".cache/lanes-n8n"));
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        Install {
            node: env("LANES_N8N_NODE")
                .unwrap_or_else(|| cache.join("node24/node_modules/.bin/node")),
            cli: env("LANES_N8N_CLI").unwrap_or_else(|| cache.join("n8n/node_modules/n8n/bin/n8n")),
            package: env("LANES_N8N_PACKAGE").unwrap_or_else(|| repo.join("integrations/n8n")),
        }
    }

    /// The files that are not there.
    pub fn missing(&self) -> Vec<String> {
        let dist = self.package.join("dist/nodes/Lanes/Lanes.node.js");
        [&self.node, &self.cli, &dist]
            .iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect()
    }
}

/// Copies what `npm install n8n-nodes-lanes` would unpack (package.json and dist/) into the
/// user folder's community-node directory, where n8n loads packages from at start.
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

/// One n8n instance: a user folder (deleted on drop), a database, a port.
pub struct N8n {
    install: Install,
    home: tempfile::TempDir,
    env: Vec<(String, String)>,
    port: u16,
}

impl N8n {
    /// Prepares an instance on `db`, to serve on `port`, with the package installed.
    pub fn new(install: Install, db: &TestDb, port: u16) -> anyhow::Result<N8n> {
        let home = tempfile::tempdir()?;
        install_package(&install.package, home.path())?;
        let url = url::Url::parse(&db.url)?;
        let folder = home.path().display().to_string();
        let env = [
            ("N8N_USER_FOLDER", folder.clone()),
            ("HOME", folder),
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
            ("WEBHOOK_URL", format!("http://127.0.0.1:{port}/")),
            ("GENERIC_TIMEZONE", "UTC".into()),
            // Nothing leaves the machine: no telemetry, update checks, templates, banners.
            ("N8N_DIAGNOSTICS_ENABLED", "false".into()),
            ("N8N_VERSION_NOTIFICATIONS_ENABLED", "false".into()),
            ("N8N_TEMPLATES_ENABLED", "false".into()),
            ("N8N_DYNAMIC_BANNERS_ENABLED", "false".into()),
            ("N8N_LICENSE_AUTO_RENEW_ENABLED", "false".into()),
            ("N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS", "false".into()),
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

    /// `http://127.0.0.1:<port>` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The environment of one n8n process: its own task-runner broker port, so concurrent
    /// n8n processes never collide.
    fn env(&self) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        env.push((
            "N8N_RUNNERS_BROKER_PORT".into(),
            procs::free_port().to_string(),
        ));
        env
    }

    /// Writes `value` as `name` in the user folder; returns its path.
    pub fn write(&self, name: &str, value: &Value) -> anyhow::Result<PathBuf> {
        let path = self.home.path().join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(value)?)?;
        Ok(path)
    }

    /// Runs `n8n <args>` to its end; returns (success, stdout, stderr).
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
        let mut cmd = tokio::process::Command::new(&self.install.node);
        cmd.arg(&self.install.cli)
            .args(args)
            .envs(self.env())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(CLI_TIMEOUT, cmd.output())
            .await
            .with_context(|| format!("n8n {args:?} did not finish within {CLI_TIMEOUT:?}"))??;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Runs `n8n <args>` and fails unless it succeeds; returns its stdout.
    pub async fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let (ok, stdout, stderr) = self.cli(args).await?;
        if !ok {
            bail!("n8n {args:?} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
        }
        Ok(stdout)
    }

    /// `n8n import:credentials` of `credentials` (an array; `data` in clear, n8n encrypts it).
    pub async fn import_credentials(&self, credentials: &Value) -> anyhow::Result<()> {
        let file = self.write("credentials.json", credentials)?;
        self.ok(&["import:credentials", &format!("--input={}", file.display())])
            .await?;
        Ok(())
    }

    /// `n8n import:workflow` of `workflows` (id, JSON), each under its id.
    pub async fn import_workflows(&self, workflows: Vec<(&str, Value)>) -> anyhow::Result<()> {
        let dir = self.home.path().join("workflows");
        std::fs::create_dir_all(&dir)?;
        for (id, mut wf) in workflows {
            wf["id"] = json!(id);
            let path = dir.join(format!("{id}.json"));
            std::fs::write(path, serde_json::to_vec_pretty(&wf)?)?;
        }
        let input = format!("--input={}", dir.display());
        self.ok(&["import:workflow", "--separate", &input]).await?;
        Ok(())
    }

    /// `n8n execute --id <id> --rawOutput`: the run's JSON (`{data: {resultData: …}}`).
    pub async fn execute(&self, id: &str) -> anyhow::Result<Value> {
        let stdout = self
            .ok(&["execute", &format!("--id={id}"), "--rawOutput"])
            .await?;
        run_json(&stdout).with_context(|| format!("no run JSON in the output of {id}:\n{stdout}"))
    }

    /// `n8n start` as a background process (killed when dropped).
    pub async fn start(&self) -> anyhow::Result<ChildProc> {
        let args = vec![self.install.cli.display().to_string(), "start".into()];
        procs::spawn("n8n", &self.install.node, &args, &self.env()).await
    }
}

/// The pretty-printed JSON document in `n8n execute`'s output (a successful run with
/// `--rawOutput`, or the failed run it logs): from a line `{` to the next line `}`.
pub fn run_json(output: &str) -> Option<Value> {
    let lines: Vec<&str> = output.lines().collect();
    let start = lines.iter().position(|l| *l == "{")?;
    let end = start + lines[start..].iter().position(|l| *l == "}")?;
    serde_json::from_str(&lines[start..=end].join("\n")).ok()
}

/// The output items (their `json`) of node `name` in a run, over all its runs.
pub fn outputs(run: &Value, name: &str) -> Vec<Value> {
    run["data"]["resultData"]["runData"][name]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["data"]["main"][0].as_array().cloned().unwrap_or_default())
        .map(|item| item["json"].clone())
        .collect()
}

/// Decodes n8n's stored execution data ("flatted": a JSON array whose first element is the
/// root; every string inside an object or array is the index of its value in the array).
pub fn unflatten(text: &str) -> anyhow::Result<Value> {
    let all: Vec<Value> = serde_json::from_str(text)?;
    let root = all.first().context("empty execution data")?;
    Ok(revive(root, &all, 0))
}

fn revive(v: &Value, all: &[Value], depth: usize) -> Value {
    let value = |v: &Value| match v {
        Value::String(s) => match s.parse::<usize>().ok().and_then(|i| all.get(i)) {
            Some(Value::String(text)) => Value::String(text.clone()),
            // Shared or circular references are cut at a depth no run data reaches.
            Some(inner) if depth < 64 => revive(inner, all, depth + 1),
            _ => Value::Null,
        },
        other => revive(other, all, depth + 1),
    };
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), value(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(value).collect()),
        other => other.clone(),
    }
}

/// The finished executions of workflow `id` in n8n's database, oldest first: (status, the run
/// as `{data: …}`, like `n8n execute` prints it).
pub async fn executions(pool: &sqlx::PgPool, id: &str) -> anyhow::Result<Vec<(String, Value)>> {
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

/// n8n's REST API as the instance owner: a session cookie and the browser id it is bound to.
pub struct Rest {
    client: reqwest::Client,
    base: String,
    cookie: String,
}

const BROWSER_ID: &str = "lanes-n8n-test";

impl Rest {
    /// Sets up the instance owner (the first-start form) and keeps the session.
    pub async fn owner(n8n: &N8n) -> anyhow::Result<Rest> {
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

    /// A credential's "Test" button: `{status: "OK" | "Error", message}`.
    pub async fn test_credential(&self, kind: &str, data: Value) -> anyhow::Result<Value> {
        let body = json!({"credentials": {"id": "", "name": "test", "type": kind, "data": data}});
        let r = self
            .client
            .post(format!("{}/credentials/test", self.base))
            .header("browser-id", BROWSER_ID)
            .header("cookie", &self.cookie)
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await?;
        anyhow::ensure!(status.is_success(), "credentials/test: {status} {body}");
        Ok(body["data"].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatted() {
        let text = r#"[{"a":"1","b":[ "2", 3 ],"c":"2"},"x",{"d":"1"}]"#;
        assert_eq!(
            unflatten(text).ok(),
            Some(json!({"a": "x", "b": [{"d": "x"}, 3], "c": {"d": "x"}}))
        );
    }

    #[test]
    fn run_json_is_found_among_log_lines() {
        let out = "Loading...\n{\n  \"data\": {\"a\": 1}\n}\nbye\n";
        assert_eq!(run_json(out), Some(json!({"data": {"a": 1}})));
        assert_eq!(run_json("nothing"), None);
    }
}
