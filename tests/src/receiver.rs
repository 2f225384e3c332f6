//! A real local HTTP receiver for webhook tests: records every request (path, headers,
//! exact body bytes) and answers with scripted statuses, or stalls to leave deliveries in
//! flight.

use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Got {
    /// Request path (with its query).
    pub path: String,
    /// Headers, names lower-cased.
    pub headers: HashMap<String, String>,
    /// The body as received.
    pub body: Vec<u8>,
}

impl Got {
    /// A header's value ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    /// The body as JSON (`null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A minimal HTTP/1.1 receiver: records every request and answers each path with its
/// scripted statuses in turn, then the default status (200 unless changed).
#[derive(Clone, Default)]
pub struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    script: Arc<Mutex<HashMap<String, VecDeque<u16>>>>,
    /// Paths answered `302 Found` with this `Location`.
    redirects: Arc<Mutex<HashMap<String, String>>>,
    /// The answer once a path's script is used up; 0 means 200.
    default_status: Arc<AtomicU16>,
    /// While set, requests are read, counted in `stalled` and never answered.
    pub stall: Arc<AtomicBool>,
    /// Requests left unanswered while `stall` was set.
    pub stalled: Arc<AtomicUsize>,
    /// The body of every answer and its content type; `None`: `ok` as text/plain.
    reply_body: Arc<Mutex<Option<(String, String)>>>,
    base: String,
}

impl Receiver {
    /// Listens on a free local port.
    pub async fn start() -> anyhow::Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let r = Receiver {
            base,
            ..Receiver::default()
        };
        let me = r.clone();
        // Detached: the accept loop ends with the test's runtime.
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let me = me.clone();
                tokio::spawn(async move {
                    let _ = me.serve(sock).await;
                });
            }
        });
        Ok(r)
    }

    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Answers every request without a scripted status with `status` from now on.
    pub fn answer_all(&self, status: u16) {
        self.default_status.store(status, Ordering::SeqCst);
    }

    /// Answers every request with `body` as JSON from now on (e.g. a fake API's reply).
    pub fn answer_json(&self, body: &Value) {
        if let Ok(mut b) = self.reply_body.lock() {
            *b = Some((body.to_string(), "application/json".into()));
        }
    }

    /// Answers the next requests to `path` with `statuses`, in turn.
    pub fn answer(&self, path: &str, statuses: &[u16]) {
        if let Ok(mut s) = self.script.lock() {
            s.insert(path.into(), statuses.iter().copied().collect());
        }
    }

    /// Answers every request to `path` with `302 Found` and `Location: location`.
    pub fn redirect(&self, path: &str, location: &str) {
        if let Ok(mut r) = self.redirects.lock() {
            r.insert(path.into(), location.into());
        }
    }

    /// Every request recorded so far (stalled ones are not).
    pub fn requests(&self) -> Vec<Got> {
        self.got.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// The requests to `path`.
    pub fn to(&self, path: &str) -> Vec<Got> {
        self.requests()
            .into_iter()
            .filter(|g| g.path == path)
            .collect()
    }

    /// Waits until `n` requests were recorded.
    pub async fn wait_for(&self, n: usize, within: Duration) -> anyhow::Result<Vec<Got>> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.requests();
            if got.len() >= n {
                return Ok(got);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the receiver got {} of {n} requests within {within:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn serve(&self, mut sock: TcpStream) -> anyhow::Result<()> {
        let Some(crate::http_stub::Request {
            path,
            headers,
            body,
        }) = crate::http_stub::read_request(&mut sock, &mut Vec::new()).await?
        else {
            anyhow::bail!("connection closed in the headers");
        };
        if self.stall.load(Ordering::SeqCst) {
            self.stalled.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(120)).await;
            return Ok(());
        }
        let status = self
            .script
            .lock()
            .ok()
            .and_then(|mut s| s.get_mut(&path).and_then(VecDeque::pop_front))
            .unwrap_or(match self.default_status.load(Ordering::SeqCst) {
                0 => 200,
                s => s,
            });
        let location = self
            .redirects
            .lock()
            .ok()
            .and_then(|r| r.get(&path).cloned());
        if let Ok(mut g) = self.got.lock() {
            g.push(Got {
                path,
                headers,
                body,
            });
        }
        let (status, extra) = match location {
            Some(l) => (302, format!("location: {l}\r\n")),
            None => (status, String::new()),
        };
        let (text, content_type) = self
            .reply_body
            .lock()
            .ok()
            .and_then(|b| b.clone())
            .unwrap_or_else(|| ("ok".into(), "text/plain".into()));
        let reply = format!(
            "HTTP/1.1 {status} X\r\n{extra}content-length: {}\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n{text}",
            text.len()
        );
        sock.write_all(reply.as_bytes()).await?;
        sock.shutdown().await?;
        Ok(())
    }
}
