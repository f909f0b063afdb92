//! A TCP link that delays every request byte by a set time and, like a real network, still
//! delivers what was sent before the client closed (then closes towards the server). Toxiproxy
//! drops what it holds when the client goes away; a write already on the wire does not. Replies
//! are not delayed, so the client's own health checks stay quick.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A running link: connect to [`DelayLine::addr`] to reach the upstream.
pub struct DelayLine {
    pub addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    /// Chunks sent towards the upstream that held an `update` command's statements.
    updates_sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl DelayLine {
    /// Listens on a free loopback port, forwarding to `upstream` (`host:port`) without delay.
    pub async fn start(upstream: &str) -> DelayLine {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let delay_ms = Arc::new(AtomicU64::new(0));
        let updates_sent = Arc::new(AtomicU64::new(0));
        let (upstream, delay, updates) = (upstream.to_string(), delay_ms.clone(), updates_sent.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else { continue };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, delay.clone(), Some(updates.clone())));
                tokio::spawn(pump(server_read, client_write, Arc::new(AtomicU64::new(0)), None));
            }
        });
        DelayLine { addr, delay_ms, updates_sent, task }
    }

    /// How many `update` commands were sent towards the upstream so far (they may not have
    /// arrived yet).
    pub fn updates_sent(&self) -> u64 {
        self.updates_sent.load(Ordering::Relaxed)
    }

    /// From now on every request byte takes `delay` to reach the upstream.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Carries one direction: every chunk read is written out once its delay has passed; the end of
/// the input closes the output after everything read before it.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay_ms: Arc<AtomicU64>,
    updates: Option<Arc<AtomicU64>>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>(4096);
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            match chunk {
                Some(bytes) => {
                    if to.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = to.shutdown().await;
                    return;
                }
            }
        }
    });
    let mut buffer = vec![0_u8; 64 * 1024];
    loop {
        let read = from.read(&mut buffer).await.unwrap_or(0);
        let due = Instant::now() + Duration::from_millis(delay_ms.load(Ordering::Relaxed));
        let chunk = (read > 0).then(|| buffer[..read].to_vec());
        // The statements array of an `update` command, as BSON names it.
        if let (Some(updates), Some(bytes)) = (&updates, &chunk) {
            if bytes.windows(8).any(|w| w == b"\x04updates") {
                updates.fetch_add(1, Ordering::Relaxed);
            }
        }
        let end = chunk.is_none();
        if tx.send((due, chunk)).await.is_err() || end {
            break;
        }
    }
    let _ = writer.await;
}
