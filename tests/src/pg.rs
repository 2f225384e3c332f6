//! Throwaway PostgreSQL for tests: one server per test process, a brand-new database per call.
//!
//! With `DATABASE_URL` set, databases are created on that server. Otherwise the first call starts
//! a private cluster (initdb into a temp dir, fsync off) that a watchdog stops and deletes as soon
//! as the test process exits, however it exits.

use std::ffi::OsStr;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, PgPool};
use tokio::sync::OnceCell;
use url::Url;

/// The server every fresh database of this process lives on.
static SERVER: OnceCell<Server> = OnceCell::const_new();

/// Disambiguates databases created by this process.
static DB_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Server settings for speed, not durability: these clusters hold nothing worth keeping.
const SERVER_SETTINGS: &[&str] = &[
    "listen_addresses=127.0.0.1",
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=400",
    "shared_buffers=128MB",
];

/// The settings above that trade durability for speed (dropped when LANES_PG_DURABLE=1).
const NOT_DURABLE: &[&str] = &["fsync=", "synchronous_commit=", "full_page_writes="];

/// Attempts at starting the cluster: the port is picked before the server binds it, so another
/// process can take it in between.
const START_ATTEMPTS: u32 = 5;

/// A brand-new, empty database; it is left behind on drop (the local cluster is deleted wholesale).
#[derive(Debug)]
pub struct TestDb {
    /// `postgres://` URL of this database, as superuser, for sqlx and for the coordinator binary.
    pub url: String,
    /// The database name.
    pub name: String,
    admin_url: String,
}

impl TestDb {
    /// Opens a small sqlx pool on this database.
    pub async fn pool(&self) -> anyhow::Result<PgPool> {
        PgPool::connect(&self.url)
            .await
            .with_context(|| format!("connecting to test database {}", self.name))
    }

    /// Drops the database now, disconnecting its users; worth it only on a shared `DATABASE_URL`.
    pub async fn destroy(self) -> anyhow::Result<()> {
        let mut conn = PgConnection::connect(&self.admin_url)
            .await
            .context("connecting to the test server to drop a database")?;
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .with_context(|| format!("dropping test database {}", self.name))?;
        Ok(())
    }
}

/// Returns a new empty database with a unique name, starting the test server on first use.
pub async fn fresh_database() -> anyhow::Result<TestDb> {
    let server = SERVER.get_or_try_init(Server::start).await?;
    create_database(&server.admin_url).await
}

/// Creates a database with a unique name on the server of `admin_url`.
pub(crate) async fn create_database(admin_url: &Url) -> anyhow::Result<TestDb> {
    let name = unique_db_name();
    let mut conn = PgConnection::connect(admin_url.as_str())
        .await
        .with_context(|| format!("connecting to the test server at {admin_url}"))?;
    // The name is generated here from digits and underscores, so interpolating it is safe.
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .with_context(|| format!("creating test database {name}"))?;
    // Closing politely keeps the server log free of "unexpected EOF" noise.
    let _ = conn.close().await;

    let mut url = admin_url.clone();
    url.set_path(&format!("/{name}"));
    Ok(TestDb {
        url: url.into(),
        name,
        admin_url: admin_url.to_string(),
    })
}

/// Directory holding `initdb`, `pg_ctl` and `postgres`: `LANES_PG_BIN_DIR`, else `PATH`, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
pub fn pg_bin_dir() -> anyhow::Result<PathBuf> {
    const TOOLS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];
    let has_tools = |dir: &Path| TOOLS.iter().all(|t| dir.join(t).is_file());

    if let Some(dir) = std::env::var_os("LANES_PG_BIN_DIR") {
        let dir = PathBuf::from(dir);
        if has_tools(&dir) {
            return Ok(dir);
        }
        bail!("LANES_PG_BIN_DIR={} lacks one of {TOOLS:?}", dir.display());
    }

    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let pg_ctl = dir.join("pg_ctl");
            if !pg_ctl.is_file() {
                continue;
            }
            // Follow symlinks such as /usr/local/bin/pg_ctl so the three tools come from one
            // installation, whose share/ directory initdb locates relative to itself.
            let real = std::fs::canonicalize(&pg_ctl).unwrap_or(pg_ctl);
            if let Some(real_dir) = real.parent().filter(|d| has_tools(d)) {
                return Ok(real_dir.to_path_buf());
            }
        }
    }

    let root = Path::new("/usr/lib/postgresql");
    let mut best: Option<(Vec<u64>, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(version) = file_name.to_str().and_then(parse_version) else {
                continue;
            };
            let bin = entry.path().join("bin");
            if has_tools(&bin) && best.as_ref().is_none_or(|(v, _)| version > *v) {
                best = Some((version, bin));
            }
        }
    }
    best.map(|(_, dir)| dir).with_context(|| {
        format!(
            "no PostgreSQL server binaries found (need {TOOLS:?} on PATH, in LANES_PG_BIN_DIR or under \
             {}/<version>/bin); install the PostgreSQL server or set DATABASE_URL",
            root.display()
        )
    })
}

/// Parses "15" or "9.6" into comparable numbers.
fn parse_version(s: &str) -> Option<Vec<u64>> {
    s.split('.').map(|p| p.parse().ok()).collect()
}

/// Unique across concurrent test processes sharing one `DATABASE_URL`, and valid unquoted.
fn unique_db_name() -> String {
    static PROCESS_TAG: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let tag = *PROCESS_TAG.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64 % 1_000_000_000)
    });
    let n = DB_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("lanes_test_{}_{tag}_{n}", std::process::id())
}

/// Where fresh databases get created.
struct Server {
    /// Superuser URL of the server's maintenance database.
    admin_url: Url,
    /// Present when this process started the cluster; holding it keeps the watchdog waiting.
    _cluster: Option<LocalCluster>,
}

impl Server {
    async fn start() -> anyhow::Result<Server> {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            let admin_url = Url::parse(&url).context("DATABASE_URL is not a valid URL")?;
            return Ok(Server {
                admin_url,
                _cluster: None,
            });
        }
        let started = std::time::Instant::now();
        let cluster = LocalCluster::start(&[]).await?;
        let admin_url = Url::parse(&format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            cluster.port
        ))
        .context("building the local cluster URL")?;
        tracing::info!(
            dir = %cluster.base.display(),
            port = cluster.port,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "started test PostgreSQL cluster"
        );
        Ok(Server {
            admin_url,
            _cluster: Some(cluster),
        })
    }
}

/// An unprivileged account to run the cluster as, since initdb and postgres refuse to run as root.
#[derive(Clone)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

impl RunAs {
    /// `None` when we are not root and can run PostgreSQL as ourselves.
    fn detect() -> anyhow::Result<Option<RunAs>> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        // The distribution's `postgres` account is made for this; `nobody` works anywhere else.
        for name in ["postgres", "nobody"] {
            if let Ok(Some(user)) = nix::unistd::User::from_name(name) {
                return Ok(Some(RunAs {
                    name: user.name,
                    uid: user.uid.as_raw(),
                    gid: user.gid.as_raw(),
                    home: user.dir,
                }));
            }
        }
        bail!(
            "running as root, and neither a `postgres` nor a `nobody` account exists to run \
             PostgreSQL as; create one or set DATABASE_URL"
        )
    }
}

/// A private cluster in a temp dir, stopped and removed by its watchdog when this process exits
/// (or when this is dropped).
pub(crate) struct LocalCluster {
    pub(crate) base: PathBuf,
    pub(crate) port: u16,
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    run_as: Option<RunAs>,
    /// The server options it was started with (`pg_ctl -o`), to start it again alike.
    options: String,
    /// The watchdog's stdin: the kernel closes it when this process dies, which wakes the watchdog.
    _watchdog: ChildStdin,
}

impl LocalCluster {
    /// Creates and starts a cluster; `extra` server settings (`name=value`) override
    /// [`SERVER_SETTINGS`].
    pub(crate) async fn start(extra: &[&str]) -> anyhow::Result<LocalCluster> {
        let bin = pg_bin_dir()?;
        let run_as = RunAs::detect()?;

        // `keep` hands cleanup to the watchdog, which outlives this process.
        let base = tempfile::Builder::new()
            .prefix("lanes-pg-")
            .tempdir()
            .context("creating the cluster temp dir")?
            .keep();
        if let Some(user) = &run_as {
            std::os::unix::fs::chown(&base, Some(user.uid), Some(user.gid)).with_context(|| {
                format!("handing {} over to user {}", base.display(), user.name)
            })?;
        }
        let data = base.join("data");
        let log = base.join("log");

        // Armed before anything else so even a half-started cluster gets cleaned up.
        let watchdog = spawn_watchdog(&bin, &base, &data, run_as.as_ref())?;

        let initdb = pg_command(&bin.join("initdb"), &base, run_as.as_ref())
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ])
            .output()
            .await
            .context("running initdb")?;
        if !initdb.status.success() {
            bail!(
                "initdb failed ({}):\n{}{}",
                initdb.status,
                String::from_utf8_lossy(&initdb.stdout),
                String::from_utf8_lossy(&initdb.stderr)
            );
        }

        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = crate::procs::free_port();
            let mut options = format!("-p {port}");
            // Unix socket paths are limited to ~107 bytes; past that, TCP alone will do.
            if base.as_os_str().len() < 80 {
                options.push_str(&format!(" -k {}", shell_quote(&base)));
            } else {
                options.push_str(" -c unix_socket_directories=''");
            }
            // Benchmarks set LANES_PG_DURABLE=1: commits then cost a real fsync, as in production.
            let durable = std::env::var("LANES_PG_DURABLE").is_ok_and(|v| v == "1");
            // LANES_PG_STAT_STATEMENTS=1: per-statement figures, planning and the statements
            // run inside the transition functions included (the bench's `cost` scenario).
            if std::env::var("LANES_PG_STAT_STATEMENTS").is_ok_and(|v| v == "1") {
                options.push_str(
                    " -c shared_preload_libraries=pg_stat_statements \
                     -c pg_stat_statements.track=all -c pg_stat_statements.track_planning=on",
                );
            }
            for setting in SERVER_SETTINGS {
                if durable && NOT_DURABLE.iter().any(|n| setting.starts_with(n)) {
                    continue;
                }
                options.push_str(" -c ");
                options.push_str(setting);
            }
            for setting in extra {
                options.push_str(" -c ");
                options.push_str(setting);
            }
            let status = pg_ctl(&bin, &base, run_as.as_ref(), &data, &["-o", &options, "-l"])
                .arg(&log)
                .args(["-w", "-t", "60", "start"])
                .status()
                .await
                .context("running pg_ctl start")?;
            if status.success() {
                return Ok(LocalCluster {
                    base,
                    port,
                    bin,
                    data,
                    log,
                    run_as,
                    options,
                    _watchdog: watchdog,
                });
            }
            let out_path = base.join("pg_ctl.out");
            let server_log = std::fs::read_to_string(&log).unwrap_or_default();
            last_failure = format!(
                "pg_ctl start on port {port} failed ({status}):\n{}\nserver log:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                tail(&server_log, 30)
            );
            if !server_log.contains("could not bind") && !server_log.contains("already in use") {
                break;
            }
            // Another process grabbed the port; the next attempt picks a new one. The log is
            // truncated so the next failure is judged on its own messages.
            let _ = std::fs::write(&log, "");
        }
        bail!("{last_failure}")
    }
}

impl LocalCluster {
    /// Stops the server: `mode` is `fast` (sessions terminated, clean shutdown) or
    /// `immediate` (every process quits at once; the next start runs crash recovery).
    pub(crate) async fn stop(&self, mode: &str) -> anyhow::Result<()> {
        self.run_pg_ctl(&["stop", "-m", mode, "-w", "-t", "60"])
            .await
            .with_context(|| format!("pg_ctl stop -m {mode}"))
    }

    /// Starts the stopped server again: same data, port and settings.
    pub(crate) async fn start_again(&self) -> anyhow::Result<()> {
        let log = self.log.to_string_lossy().into_owned();
        let args = ["-o", &self.options, "-l", &log, "-w", "-t", "60", "start"];
        self.run_pg_ctl(&args).await.context("pg_ctl start")
    }

    async fn run_pg_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let run_as = self.run_as.as_ref();
        let status = pg_ctl(&self.bin, &self.base, run_as, &self.data, args)
            .status()
            .await?;
        if !status.success() {
            let out = std::fs::read_to_string(self.base.join("pg_ctl.out")).unwrap_or_default();
            let server_log = std::fs::read_to_string(&self.log).unwrap_or_default();
            bail!(
                "pg_ctl {args:?} failed ({status}):\n{out}\nserver log:\n{}",
                tail(&server_log, 30)
            );
        }
        Ok(())
    }
}

impl LocalCluster {
    /// A streaming standby of this (running) cluster: `pg_basebackup -R` into a new temp dir,
    /// started on a port of its own with the same settings. It connects back to this server
    /// as application `standby` (for `synchronous_standby_names`).
    pub(crate) async fn standby(&self) -> anyhow::Result<LocalCluster> {
        let base = tempfile::Builder::new()
            .prefix("lanes-pg-standby-")
            .tempdir()
            .context("creating the standby temp dir")?
            .keep();
        if let Some(user) = &self.run_as {
            std::os::unix::fs::chown(&base, Some(user.uid), Some(user.gid))
                .with_context(|| format!("handing {} over to {}", base.display(), user.name))?;
        }
        let data = base.join("data");
        let log = base.join("log");
        let watchdog = spawn_watchdog(&self.bin, &base, &data, self.run_as.as_ref())?;
        let conninfo = format!(
            "host=127.0.0.1 port={} user=postgres application_name=standby",
            self.port
        );
        let backup = pg_command(&self.bin.join("pg_basebackup"), &base, self.run_as.as_ref())
            .arg("-D")
            .arg(&data)
            .args([
                "-d",
                &conninfo,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ])
            .output()
            .await
            .context("running pg_basebackup")?;
        if !backup.status.success() {
            bail!(
                "pg_basebackup failed ({}):\n{}",
                backup.status,
                String::from_utf8_lossy(&backup.stderr)
            );
        }
        let port = crate::procs::free_port();
        // The primary's options with the port swapped, so both have the same settings.
        let options = self
            .options
            .replacen(&format!("-p {}", self.port), &format!("-p {port}"), 1)
            .replace(&shell_quote(&self.base), &shell_quote(&base));
        let standby = LocalCluster {
            base,
            port,
            bin: self.bin.clone(),
            data,
            log,
            run_as: self.run_as.clone(),
            options,
            _watchdog: watchdog,
        };
        standby
            .start_again()
            .await
            .context("starting the standby")?;
        Ok(standby)
    }

    /// Promotes this standby to a primary (waits until it accepts writes).
    pub(crate) async fn promote(&self) -> anyhow::Result<()> {
        self.run_pg_ctl(&["promote", "-w", "-t", "60"])
            .await
            .context("pg_ctl promote")
    }
}

/// `pg_ctl -D data <args>`, its own output to `base/pg_ctl.out`: a pipe inherited by the
/// postmaster would keep anyone reading it waiting forever.
fn pg_ctl(
    bin: &Path,
    base: &Path,
    run_as: Option<&RunAs>,
    data: &Path,
    args: &[&str],
) -> tokio::process::Command {
    let mut cmd = pg_command(&bin.join("pg_ctl"), base, run_as);
    cmd.arg("-D").arg(data).args(args);
    let out_path = base.join("pg_ctl.out");
    match std::fs::File::create(&out_path).and_then(|out| Ok((out.try_clone()?, out))) {
        Ok((out, err)) => {
            cmd.stdout(out).stderr(err);
        }
        Err(_) => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    cmd
}

/// A command for a PostgreSQL tool, as the unprivileged user when we are root.
fn pg_command(program: &Path, cwd: &Path, run_as: Option<&RunAs>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    // The tools resolve paths relative to the cwd, which must be readable by `run_as`.
    cmd.current_dir(cwd).stdin(Stdio::null()).kill_on_drop(true);
    strip_pg_env(|k| {
        cmd.env_remove(k);
    });
    if let Some(user) = run_as {
        cmd.uid(user.uid)
            .gid(user.gid)
            .env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
    }
    cmd
}

/// Removes inherited libpq variables (PGDATA, PGPORT, ...), which would redirect the tools.
fn strip_pg_env(mut remove: impl FnMut(&OsStr)) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            remove(&key);
        }
    }
}

/// Starts a shell that, once its stdin hits EOF (this process has died: the kernel closes our end
/// of the pipe), stops the cluster and deletes `base`.
///
/// An EOF is used rather than polling `kill -0 <pid>`: it cannot be fooled by PID reuse, and it
/// needs no permission to signal us, which an unprivileged watchdog of a root process lacks.
fn spawn_watchdog(
    bin: &Path,
    base: &Path,
    data: &Path,
    run_as: Option<&RunAs>,
) -> anyhow::Result<ChildStdin> {
    // Paths travel as positional parameters so they need no quoting.
    const SCRIPT: &str = r#"trap '' HUP INT
read -r _ignored
"$1" -D "$2" stop -m immediate -w -t 30 >/dev/null 2>&1
rm -rf "$3""#;
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(SCRIPT)
        .arg("lanes-pg-watchdog")
        .arg(bin.join("pg_ctl"))
        .arg(data)
        .arg(base)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: Ctrl-C or a test runner's kill of our group must not take the
        // watchdog down with us, since cleaning up after that is its whole job.
        .process_group(0);
    strip_pg_env(|k| {
        cmd.env_remove(k);
    });
    if let Some(user) = run_as {
        cmd.uid(user.uid).gid(user.gid).env("HOME", &user.home);
    }
    let mut child = cmd.spawn().context("spawning the cluster watchdog")?;
    let mut stdin = child
        .stdin
        .take()
        .context("the watchdog has no stdin pipe")?;
    // Nothing to say; a flush proves the pipe is alive before we depend on it.
    stdin.flush().context("talking to the cluster watchdog")?;
    // `child` is deliberately never waited on: the watchdog must outlive us, and init adopts it.
    Ok(stdin)
}

/// Single-quotes `path` for the shell that pg_ctl passes `-o` through.
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', r"'\''"))
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(parse_version("15") > parse_version("9.6"));
        assert_eq!(parse_version("main"), None);
    }

    #[test]
    fn db_names_are_unique_and_plain() {
        let a = unique_db_name();
        let b = unique_db_name();
        assert_ne!(a, b);
        assert!(a.len() < 63, "{a} exceeds PostgreSQL's identifier limit");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
    }
}
