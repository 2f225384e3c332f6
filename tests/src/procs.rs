//! Running the project's real binaries (`coordinator`, `agent`, `gateway`) as child processes:
//! locating them, capturing their output to log files, signalling and awaiting them.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, bail};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Numbers log files so two children with the same name do not share one.
static LOG_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Ports this process handed out already.
static GIVEN_PORTS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Returns a TCP port on 127.0.0.1 that was free a moment ago and that this process never
/// handed out before. The kernel may give a just-released port to the next bind: two tests
/// of one binary would then start their servers on one port, and the second's health wait
/// would reach the first's server (a coordinator with other settings).
///
/// # Panics
/// If no port can be bound at all, which leaves no test able to run.
pub fn free_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("binding 127.0.0.1:0 to find a free port");
        // A poisoned lock (a test panicked holding it) still holds a valid set.
        let mut given = GIVEN_PORTS.lock().unwrap_or_else(|e| e.into_inner());
        if given.insert(port) {
            return port;
        }
    }
}

/// Path of the workspace binary `name`, built into the same target dir and profile as this test.
///
/// `LANES_BIN_DIR` overrides the directory, for test binaries run away from their target dir.
pub fn bin_path(name: &str) -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("LANES_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().context("locating the running test binary")?;
            let mut dir = exe
                .parent()
                .with_context(|| format!("{} has no parent directory", exe.display()))?;
            // Integration-test binaries live in target/<profile>/deps/, binaries one level up.
            if dir.file_name().is_some_and(|n| n == "deps") {
                dir = dir.parent().unwrap_or(dir);
            }
            dir.to_path_buf()
        }
    };
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        bail!(
            "binary `{name}` not found at {}; run `cargo build --workspace --bins` (same profile \
             as the tests) first",
            path.display()
        );
    }
    Ok(path)
}

/// A child process whose stdout and stderr go to a log file; it is SIGKILLed if dropped running.
#[derive(Debug)]
pub struct ChildProc {
    name: String,
    child: tokio::process::Child,
    log_path: PathBuf,
}

/// Starts `path` with `args` and extra `envs`, logging its output to a file named after `name`.
pub async fn spawn(
    name: &str,
    path: &Path,
    args: &[String],
    envs: &[(String, String)],
) -> anyhow::Result<ChildProc> {
    let log_path = log_dir()?.join(format!(
        "{name}-{}.log",
        LOG_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut log = File::create(&log_path)
        .with_context(|| format!("creating log file {}", log_path.display()))?;
    // The command line heads the log, so a log read on its own says what produced it.
    writeln!(log, "# {} {}", path.display(), args.join(" "))
        .and_then(|()| log.flush())
        .with_context(|| format!("writing {}", log_path.display()))?;
    let stderr = log
        .try_clone()
        .with_context(|| format!("duplicating the handle of {}", log_path.display()))?;

    let child = tokio::process::Command::new(path)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {name} ({})", path.display()))?;
    Ok(ChildProc {
        name: name.to_owned(),
        child,
        log_path,
    })
}

impl ChildProc {
    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The OS process id, or `None` once the exit has been collected.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// File receiving the child's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of the log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        match std::fs::read_to_string(&self.log_path) {
            Ok(text) => {
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("(cannot read {}: {e})", self.log_path.display()),
        }
    }

    /// SIGKILLs the child and waits for it to be gone; a child that already exited is left alone.
    pub async fn kill9(&mut self) {
        // The only error is "already exited", which is the state we want anyway.
        let _ = self.child.kill().await;
    }

    /// Sends `sig` to the child without waiting for it to react.
    pub fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        let pid = self
            .child
            .id()
            .with_context(|| format!("{} has already exited", self.name))?;
        let pid = i32::try_from(pid).with_context(|| format!("pid {pid} out of range"))?;
        nix::sys::signal::kill(Pid::from_raw(pid), sig)
            .with_context(|| format!("sending {sig} to {} (pid {pid})", self.name))
    }

    /// Waits up to `timeout` for the child to exit on its own, returning how it exited.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.with_context(|| format!("waiting for {} to exit", self.name)),
            Err(_) => bail!(
                "{} still running after {timeout:?}; log {}:\n{}",
                self.name,
                self.log_path.display(),
                self.log_tail(20)
            ),
        }
    }

    /// The exit status if the child has exited, without waiting.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .with_context(|| format!("polling {} for exit", self.name))
    }

    /// Waits until this child listens on TCP `port`, checking every 20 ms. Fails at once,
    /// with its log, if it exits first (bad arguments, no database, the port taken): a
    /// server of another process that happens to hold the port never passes for it.
    pub async fn wait_listening(&mut self, port: u16, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                bail!(
                    "{} exited while starting ({status}); log {}:\n{}",
                    self.name,
                    self.log_path.display(),
                    self.log_tail(40)
                );
            }
            if self.id().is_some_and(|pid| listens_on(pid, port)) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{} did not listen on port {port} within {timeout:?}; log {}:\n{}",
                    self.name,
                    self.log_path.display(),
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// True when process `pid` holds a socket listening on TCP `port`, read from `/proc`: the
/// listening sockets' inodes in `/proc/net/tcp{,6}` against the process's descriptors.
fn listens_on(pid: u32, port: u16) -> bool {
    let mut inodes = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            // State 0A is LISTEN; field 9 the socket's inode.
            if local_port == Some(port)
                && f.get(3) == Some(&"0A")
                && let Some(inode) = f.get(9)
            {
                inodes.insert(format!("socket:[{inode}]"));
            }
        }
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.contains(target.to_string_lossy().as_ref()))
    })
}

/// Waits until something accepts TCP connections at `addr`, trying every 20 ms.
pub async fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let attempt = tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(addr)).await;
        let err = match attempt {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "connect timed out".to_owned(),
        };
        if tokio::time::Instant::now() + Duration::from_millis(20) >= deadline {
            bail!("nothing accepted connections at {addr} within {timeout:?} (last error: {err})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// This process's directory of child logs: `LANES_TEST_LOG_DIR`, else a temp dir that is kept
/// after exit so a failed test's logs can still be read.
fn log_dir() -> anyhow::Result<&'static Path> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    if let Some(dir) = DIR.get() {
        return Ok(dir);
    }
    let dir = match std::env::var_os("LANES_TEST_LOG_DIR") {
        Some(root) => {
            let dir = PathBuf::from(root).join(format!("pid-{}", std::process::id()));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating log dir {}", dir.display()))?;
            dir
        }
        None => tempfile::Builder::new()
            .prefix("lanes-test-logs-")
            .tempdir()
            .context("creating the child log dir")?
            .keep(),
    };
    // A racing thread may have won; its directory is used and ours stays empty.
    Ok(DIR.get_or_init(|| dir))
}
