//! A TCP proxy in front of a coordinator that loses one gRPC reply: it forwards both ways,
//! reads the HTTP/2 frames coming back from the server, and when the `n`-th unary reply (the
//! first DATA frame of a stream other than the connection's first, which is the agent's
//! WakeStream) is about to pass, it closes both sockets instead. The call's effect happened
//! on the server; the client sees a broken connection. Later connections pass untouched.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The proxy; it runs until dropped.
pub struct DropReply {
    /// `http://127.0.0.1:<port>`: give this to the agent as its coordinator.
    pub url: String,
    dropped: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl DropReply {
    /// Proxies to `upstream` (`host:port`) and loses the `n`-th unary reply (1-based) of the
    /// first connection.
    pub async fn start(upstream: &str, n: usize) -> anyhow::Result<DropReply> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let dropped = Arc::new(AtomicBool::new(false));
        let upstream = upstream.to_owned();
        let flag = dropped.clone();
        let task = tokio::spawn(async move {
            let mut first = true;
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let lose = first.then_some(n);
                first = false;
                // Detached: each connection's copy ends when either side closes.
                tokio::spawn(pipe(client, server, lose, flag.clone()));
            }
        });
        Ok(DropReply { url, dropped, task })
    }

    /// True once the reply was lost.
    pub fn dropped(&self) -> bool {
        self.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for DropReply {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(client: TcpStream, server: TcpStream, lose: Option<usize>, dropped: Arc<AtomicBool>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = sw.shutdown().await;
    });
    let Some(n) = lose else {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
        let _ = up.await;
        return;
    };
    // Server to client, frame by frame: 9-byte header (length 24 bits, type, flags,
    // stream id 31 bits), then the payload. The server speaks frames from its first byte.
    let replies = AtomicUsize::new(0);
    let mut streams_seen: Vec<u32> = Vec::new();
    let mut first_stream: Option<u32> = None;
    loop {
        let mut head = [0u8; 9];
        if sr.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let kind = head[3];
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut body = vec![0u8; len];
        if sr.read_exact(&mut body).await.is_err() {
            break;
        }
        const HEADERS: u8 = 1;
        const DATA: u8 = 0;
        if kind == HEADERS && stream != 0 && first_stream.is_none() {
            first_stream = Some(stream);
        }
        if kind == DATA
            && stream != 0
            && Some(stream) != first_stream
            && !streams_seen.contains(&stream)
        {
            streams_seen.push(stream);
            if replies.fetch_add(1, Ordering::SeqCst) + 1 == n {
                dropped.store(true, Ordering::SeqCst);
                break;
            }
        }
        if cw.write_all(&head).await.is_err() || cw.write_all(&body).await.is_err() {
            break;
        }
    }
    // Both ways closed at once: the client sees its connection reset mid-call.
    up.abort();
}
