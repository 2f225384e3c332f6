//! Command line and environment: every flag is also an environment variable (12-factor).
//! Parsing only: this module checks the values and turns them into [`Settings`], and never
//! opens a connection or starts a process.

use clap::{ArgGroup, Parser};
use nix::sys::signal::Signal;
use std::path::PathBuf;
use std::time::Duration;

const AFTER_HELP: &str = "\
Logging: RUST_LOG (default info; lanes_agent::rpc=debug logs every RPC, \
lanes_agent::timing=debug the agent's own time per job), LOG_FORMAT=json for JSON lines.
Exit status: 0 after SIGTERM/SIGINT and a clean drain; 1 on bad settings or when the \
coordinator rejects the agent (token, queue names).";

/// Lanes agent: leases one job at a time from the coordinator, runs it with a subprocess
/// (`--exec`, one process per job, or one long-lived process with `--persistent`) or an HTTP
/// call (`--http`), heartbeats while it runs and reports the outcome.
/// When nothing is ready it sleeps on the coordinator's wake stream (no polling).
///
/// The handler contract (stdin, env vars, exit codes, progress lines, HTTP headers and
/// status mapping) is in docs/handlers.md.
#[derive(Debug, Parser)]
#[command(version, about, long_about, after_help = AFTER_HELP)]
#[command(group(ArgGroup::new("handler").required(true).args(["exec", "http"])))]
pub struct Cli {
    /// Coordinator gRPC address(es), comma-separated; tried in turn when one is unreachable.
    #[arg(
        long,
        env = "LANES_COORDINATOR",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50051"
    )]
    pub coordinator: Vec<String>,

    /// Queues this agent serves (1-32 names), comma-separated.
    #[arg(long, env = "LANES_QUEUES", value_delimiter = ',', required = true)]
    pub queues: Vec<String>,

    /// This agent's id (1-128 bytes) in the coordinator's records [default: hostname-pid].
    #[arg(long, env = "LANES_AGENT_ID")]
    pub agent_id: Option<String>,

    /// Bearer token of the `agent` role (sent as `authorization: Bearer <token>`).
    #[arg(long, env = "LANES_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// CA certificate (PEM) to trust for `https://` coordinator addresses.
    #[arg(long, env = "LANES_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// Run each job with this command: payload JSON on stdin, job metadata in LANES_JOB_*
    /// env vars, result on stdout, exit 0 = completed, 65 = permanent failure, other = retry.
    /// Split into words like a shell would (quotes, backslashes) but not run by a shell.
    #[arg(long, env = "LANES_EXEC", value_name = "COMMAND")]
    pub exec: Option<String>,

    /// With --exec: start the command once and keep it, sending it one job per line of JSON
    /// on stdin and reading progress and the outcome as JSON lines on its stdout (the line
    /// protocol in docs/handlers.md). Restarted after a crash, a timeout or a cancellation.
    #[arg(
        long,
        env = "LANES_PERSISTENT",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub persistent: bool,

    /// POST each job's payload to this URL: 2xx = completed (body = result), 4xx = permanent
    /// failure (408 and 429 retry), 5xx, connection error or timeout = retry.
    #[arg(long, env = "LANES_HTTP", value_name = "URL")]
    pub http: Option<String>,

    /// Heartbeat interval in ms [default: a third of the job's lease TTL; at most half of it].
    #[arg(long, env = "LANES_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,

    /// On SIGTERM/SIGINT: stop leasing and let the running job finish for this long, then
    /// stop it and hand the job back (no attempt counted). A second signal skips the wait.
    #[arg(long, env = "LANES_GRACE_PERIOD_SECS", default_value_t = 25)]
    pub grace_period_secs: u64,

    /// Handler time limit in ms, overriding the queue's job_timeout_ms.
    #[arg(long, env = "LANES_TIMEOUT_MS")]
    pub timeout_ms: Option<u64>,

    /// Signal sent to an --exec handler (its process group) at the job's soft time limit
    /// (the queue's or job's soft_timeout_ms): TERM, INT, HUP, USR1, USR2, or none to only
    /// pass the time in LANES_JOB_SOFT_DEADLINE. The hard limit still kills.
    #[arg(
        long,
        env = "LANES_SOFT_SIGNAL",
        default_value = "TERM",
        value_name = "SIGNAL"
    )]
    pub soft_signal: String,

    /// Largest result (handler stdout or HTTP body) accepted, in bytes; a larger one fails
    /// the job permanently.
    #[arg(long, env = "LANES_MAX_RESULT_BYTES", default_value_t = 1024 * 1024)]
    pub max_result_bytes: usize,

    /// Longest wait between reconnection attempts (exponential backoff with jitter), in ms.
    #[arg(long, env = "LANES_BACKOFF_MAX_MS", default_value_t = 5_000)]
    pub backoff_max_ms: u64,

    /// Time limit of one RPC and of connecting to a coordinator, in ms.
    #[arg(long, env = "LANES_RPC_TIMEOUT_MS", default_value_t = 10_000)]
    pub rpc_timeout_ms: u64,

    /// An idle agent whose wake stream stays silent this long (the coordinator sends a
    /// keep-alive about every 30 s, which costs no call) reconnects and leases once.
    #[arg(long, env = "LANES_IDLE_TIMEOUT_SECS", default_value_t = 90)]
    pub idle_timeout_secs: u64,
}

/// How jobs are run.
#[derive(Debug, Clone)]
pub enum Handler {
    /// A subprocess per job: program and arguments.
    Exec(Vec<String>),
    /// One long-lived subprocess taking jobs as JSON lines: program and arguments.
    Persistent(Vec<String>),
    /// An HTTP endpoint receiving a POST per job.
    Http(reqwest::Url),
}

/// Validated settings of the agent.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Coordinator URLs, in the order they are tried.
    pub coordinators: Vec<String>,
    /// Queues served.
    pub queues: Vec<String>,
    /// This agent's id.
    pub agent_id: String,
    /// Bearer token, if any.
    pub token: Option<String>,
    /// CA certificate (PEM bytes) for TLS connections.
    pub tls_ca: Option<Vec<u8>>,
    /// The handler.
    pub handler: Handler,
    /// Fixed heartbeat interval, if set.
    pub heartbeat: Option<Duration>,
    /// Grace period on shutdown.
    pub grace: Duration,
    /// Handler time limit overriding the queue's.
    pub timeout: Option<Duration>,
    /// Signal sent to a subprocess handler at the soft time limit (`None`: none).
    pub soft_signal: Option<Signal>,
    /// Result size cap in bytes.
    pub max_result_bytes: usize,
    /// Reconnection backoff cap.
    pub backoff_max: Duration,
    /// Time limit of one RPC.
    pub rpc_timeout: Duration,
    /// Silence on the wake stream after which an idle agent reconnects.
    pub idle_timeout: Duration,
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is malformed or out of range.
    #[error("{0}")]
    Invalid(String),
    /// A file named by a setting cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Cli {
    /// Checks the values and derives the settings.
    pub fn settings(self) -> Result<Settings, ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let coordinators = clean(self.coordinator);
        if coordinators.is_empty() {
            return invalid("--coordinator needs at least one address".into());
        }
        let queues = clean(self.queues);
        if queues.is_empty() || queues.len() > 32 {
            return invalid(format!(
                "--queues needs 1-32 queue names (got {})",
                queues.len()
            ));
        }
        if let Some(bad) = queues.iter().find(|q| !valid_queue_name(q)) {
            return invalid(format!(
                "queue name {bad:?} is invalid: 1-128 bytes of [A-Za-z0-9_.:-]"
            ));
        }
        let agent_id = self.agent_id.unwrap_or_else(default_agent_id);
        if agent_id.is_empty() || agent_id.len() > 128 {
            return invalid(format!(
                "--agent-id must be 1-128 bytes (got {})",
                agent_id.len()
            ));
        }
        let handler = match (self.exec, self.http) {
            (Some(cmd), None) if self.persistent => Handler::Persistent(split_command(&cmd)?),
            (Some(cmd), None) => Handler::Exec(split_command(&cmd)?),
            (None, Some(_)) if self.persistent => {
                return invalid("--persistent goes with --exec, not --http".into());
            }
            (None, Some(url)) => Handler::Http(parse_http_url(&url)?),
            _ => return invalid("give exactly one of --exec and --http".into()),
        };
        let tls_ca = match self.tls_ca {
            Some(path) => Some(std::fs::read(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        Ok(Settings {
            coordinators,
            queues,
            agent_id,
            token: self.token.filter(|t| !t.is_empty()),
            tls_ca,
            handler,
            heartbeat: positive_ms("--heartbeat-ms", self.heartbeat_ms)?,
            grace: Duration::from_secs(self.grace_period_secs),
            timeout: positive_ms("--timeout-ms", self.timeout_ms)?,
            soft_signal: parse_soft_signal(&self.soft_signal)?,
            max_result_bytes: self.max_result_bytes,
            backoff_max: Duration::from_millis(self.backoff_max_ms.max(100)),
            rpc_timeout: Duration::from_millis(self.rpc_timeout_ms.max(100)),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs.max(1)),
        })
    }
}

fn clean(values: Vec<String>) -> Vec<String> {
    values
        .into_iter()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

fn valid_queue_name(q: &str) -> bool {
    (1..=128).contains(&q.len())
        && q.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

fn positive_ms(flag: &str, ms: Option<u64>) -> Result<Option<Duration>, ConfigError> {
    match ms {
        Some(0) => Err(ConfigError::Invalid(format!("{flag} must be above 0"))),
        other => Ok(other.map(Duration::from_millis)),
    }
}

/// The soft-limit signal by name (`TERM`, `sigterm`, `SIGUSR1`…), or `None` for `none`.
fn parse_soft_signal(name: &str) -> Result<Option<Signal>, ConfigError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    Ok(Some(match bare {
        "NONE" => return Ok(None),
        "TERM" => Signal::SIGTERM,
        "INT" => Signal::SIGINT,
        "HUP" => Signal::SIGHUP,
        "USR1" => Signal::SIGUSR1,
        "USR2" => Signal::SIGUSR2,
        _ => {
            return Err(ConfigError::Invalid(format!(
                "--soft-signal must be TERM, INT, HUP, USR1, USR2 or none (got {name:?})"
            )));
        }
    }))
}

fn parse_http_url(url: &str) -> Result<reqwest::Url, ConfigError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ConfigError::Invalid(format!("--http {url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConfigError::Invalid(format!(
            "--http must be an http:// or https:// URL (got {url:?})"
        )));
    }
    Ok(parsed)
}

/// `hostname-pid`, so two agents on one host differ and a restarted agent is a new one.
fn default_agent_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|| "agent".into());
    format!("{host}-{}", std::process::id())
}

/// Splits a command line into words the way a POSIX shell does for quoting — single quotes,
/// double quotes (with `\"`, `\\`, `\$` and `` \` `` escapes) and backslashes — without
/// expanding anything: the program is started directly, so it is the process the agent
/// watches and kills.
pub fn split_command(line: &str) -> Result<Vec<String>, ConfigError> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err(unclosed(line, "'")),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => w.push(e),
                            Some(other) => w.extend(['\\', other]),
                            None => return Err(unclosed(line, "\"")),
                        },
                        Some(c) => w.push(c),
                        None => return Err(unclosed(line, "\"")),
                    }
                }
            }
            '\\' => {
                let w = word.get_or_insert_with(String::new);
                match chars.next() {
                    Some(e) => w.push(e),
                    None => {
                        return Err(ConfigError::Invalid(format!(
                            "--exec {line:?} ends with a lone backslash"
                        )));
                    }
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    if words.is_empty() {
        return Err(ConfigError::Invalid("--exec needs a command".into()));
    }
    Ok(words)
}

fn unclosed(line: &str, quote: &str) -> ConfigError {
    ConfigError::Invalid(format!("--exec {line:?} has an unclosed {quote} quote"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<String> {
        split_command(s).expect("valid command")
    }

    #[test]
    fn splits_like_a_shell_without_expanding() {
        assert_eq!(split("python3 import.py"), ["python3", "import.py"]);
        assert_eq!(split("  a   b  "), ["a", "b"]);
        assert_eq!(
            split(r#"sh -c 'echo "$X" | cat'"#),
            ["sh", "-c", r#"echo "$X" | cat"#]
        );
        assert_eq!(
            split(r#"say "a \"b\" \n" c\ d"#),
            ["say", r#"a "b" \n"#, "c d"]
        );
        assert_eq!(split(r#"x '' """#), ["x", "", ""]);
        assert_eq!(split("a'b'\"c\"d"), ["abcd"]);
    }

    #[test]
    fn rejects_broken_commands() {
        for bad in ["", "   ", "a 'b", "a \"b", "a \\"] {
            assert!(split_command(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn every_flag_has_an_env_var_and_one_handler_is_required() {
        let base = ["agent", "--queues", "q"];
        assert!(Cli::try_parse_from(base).is_err(), "no handler accepted");
        let both =
            Cli::try_parse_from([&base[..], &["--exec", "x", "--http", "http://h/"]].concat());
        assert!(both.is_err(), "two handlers accepted");
        let cli = Cli::try_parse_from(
            [
                &base[..],
                &["--exec", "cat", "--coordinator", "http://a:1, http://b:2"],
            ]
            .concat(),
        )
        .expect("valid");
        let s = cli.settings().expect("valid settings");
        assert_eq!(s.coordinators, ["http://a:1", "http://b:2"]);
        assert!(matches!(s.handler, Handler::Exec(ref argv) if argv == &["cat"]));
        assert_eq!(s.grace, Duration::from_secs(25));
        assert_eq!(s.soft_signal, Some(Signal::SIGTERM));
        use clap::CommandFactory;
        for arg in Cli::command().get_arguments() {
            let id = arg.get_id().as_str();
            if !matches!(id, "help" | "version") {
                assert!(arg.get_env().is_some(), "--{id} has no env var");
            }
        }
    }

    #[test]
    fn bad_values_are_explained() {
        let parse = |extra: &[&str]| {
            Cli::try_parse_from([&["agent", "--queues", "q"][..], extra].concat())
                .expect("parses")
                .settings()
        };
        assert!(parse(&["--http", "ftp://x/"]).is_err());
        assert!(parse(&["--exec", "cat", "--queues", "bad queue!"]).is_err());
        assert!(parse(&["--exec", "cat", "--heartbeat-ms", "0"]).is_err());
        assert!(parse(&["--exec", "cat", "--agent-id", ""]).is_err());
        assert!(matches!(
            parse(&["--http", "http://127.0.0.1:8000/import"]).map(|s| s.handler),
            Ok(Handler::Http(_))
        ));
        assert!(parse(&["--exec", "cat", "--soft-signal", "KILL"]).is_err());
    }

    #[test]
    fn soft_signals_and_persistent_handlers() {
        let parse = |extra: &[&str]| {
            Cli::try_parse_from([&["agent", "--queues", "q"][..], extra].concat())
                .map_err(|e| e.to_string())
                .and_then(|c| c.settings().map_err(|e| e.to_string()))
        };
        let signal = |name| parse(&["--exec", "cat", "--soft-signal", name]).map(|s| s.soft_signal);
        assert_eq!(signal("usr1"), Ok(Some(Signal::SIGUSR1)));
        assert_eq!(signal("SIGINT"), Ok(Some(Signal::SIGINT)));
        assert_eq!(signal("none"), Ok(None));
        let persistent = parse(&["--exec", "python3 h.py", "--persistent"]).map(|s| s.handler);
        assert!(
            matches!(persistent, Ok(Handler::Persistent(ref argv)) if argv == &["python3", "h.py"]),
            "{persistent:?}"
        );
        assert!(parse(&["--http", "http://h/", "--persistent"]).is_err());
    }
}
