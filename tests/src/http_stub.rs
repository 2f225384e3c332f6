//! A minimal HTTP/1.1 server for tests and benchmarks: keep-alive connections,
//! `content-length` bodies, each request answered by a closure (status, optional delay,
//! optional JSON body). Agents' HTTP handlers, callback endpoints and OTLP collectors are
//! served by it. (`crate::receiver` stays for webhooks: it closes connections and stalls;
//! it reads requests with this module's `read_request`.)

use anyhow::ensure;
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// One request the server read.
#[derive(Debug, Clone)]
pub struct Request {
    /// The request target, e.g. `/v1/traces`.
    pub path: String,
    /// Header names lower-cased.
    pub headers: HashMap<String, String>,
    /// The exact body bytes.
    pub body: Vec<u8>,
}

/// How to answer one request.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// The status code (0 is read as 200).
    pub status: u16,
    /// Waited before answering (a handler's work).
    pub delay: Duration,
    /// A JSON body; empty: none.
    pub json: String,
}

impl From<u16> for Reply {
    fn from(status: u16) -> Self {
        Reply {
            status,
            ..Reply::default()
        }
    }
}

/// Listens on a free local port and answers each request with `answer`; returns the base
/// URL (`http://127.0.0.1:port`). The server lives as long as the caller's runtime.
pub async fn serve<F>(answer: F) -> anyhow::Result<String>
where
    F: Fn(Request) -> Reply + Clone + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let _ = connection(sock, answer).await;
            });
        }
    });
    Ok(url)
}

async fn connection<F: Fn(Request) -> Reply>(mut sock: TcpStream, answer: F) -> anyhow::Result<()> {
    sock.set_nodelay(true)?;
    let mut buf = Vec::new();
    while let Some(request) = read_request(&mut sock, &mut buf).await? {
        let reply = answer(request);
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        let status = if reply.status == 0 { 200 } else { reply.status };
        let content_type = if reply.json.is_empty() {
            ""
        } else {
            "content-type: application/json\r\n"
        };
        let text = format!(
            "HTTP/1.1 {status} X\r\n{content_type}content-length: {}\r\n\r\n{}",
            reply.json.len(),
            reply.json
        );
        sock.write_all(text.as_bytes()).await?;
    }
    Ok(())
}

/// Reads the next request of a connection (`buf` holds what was read past the previous one
/// and keeps what is read past this one). `None`: the peer closed before a request's head.
pub(crate) async fn read_request(
    sock: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> anyhow::Result<Option<Request>> {
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("")
        .to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await?;
        ensure!(n > 0, "connection closed in the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + len].to_vec();
    buf.drain(..head_end + len);
    Ok(Some(Request {
        path,
        headers,
        body,
    }))
}
