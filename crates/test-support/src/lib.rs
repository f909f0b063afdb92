//! Helpers for tests that talk to the real servers `scripts/services.sh` starts on loopback.
//! Nothing here imitates MongoDB or Kafka: it only finds them, names things uniquely, and
//! reads back what the services did.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Addresses of the running servers.
#[derive(Debug, Clone)]
pub struct Services {
    pub mongo_source_uri: String,
    pub mongo_target_uri: String,
    pub kafka_bootstrap: String,
    /// `scripts/services.sh`, for tests that stop and start a server.
    pub services_script: PathBuf,
}

/// The workspace root (two levels above a crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Reads the servers' addresses from the environment or `.cache/services.env`. Panics with the
/// fix when neither has them: tests need real servers.
pub fn services() -> Services {
    let from_file = std::fs::read_to_string(workspace_root().join(".cache/services.env")).unwrap_or_default();
    let lookup = |name: &str| -> String {
        if let Ok(value) = std::env::var(name) {
            return value;
        }
        from_file
            .lines()
            .filter_map(|line| line.strip_prefix("export "))
            .filter_map(|line| line.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("{name} is not set: start the servers with `make services` first"))
    };
    Services {
        mongo_source_uri: lookup("MONGO_SOURCE_URI"),
        mongo_target_uri: lookup("MONGO_TARGET_URI"),
        kafka_bootstrap: lookup("KAFKA_BOOTSTRAP"),
        services_script: workspace_root().join("scripts/services.sh"),
    }
}

/// A name no other test (or earlier run) uses: for databases, topics and consumer groups.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{prefix}_{}_{}_{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A plain HTTP/1.1 GET: status code and body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:.80}")))?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
