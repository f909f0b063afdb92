//! Helpers for tests that talk to the real servers `scripts/services.sh` starts on loopback.
//! Nothing here imitates MongoDB or Kafka: it only finds them, names things uniquely, and
//! reads back what the services did.
//!
//! | file | owns |
//! |---|---|
//! | `lib.rs` | the servers' addresses (`.cache/services.env`), unique names, waiting for readiness, HTTP probes, reading topics back, metrics |

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Addresses of the running servers.
#[derive(Debug, Clone)]
pub struct Services {
    /// The source and target mongods, directly: for the tests' own reads and writes.
    pub mongo_source_uri: String,
    pub mongo_target_uri: String,
    /// What the services under test connect to: in the DocumentDB profile
    /// ([`documentdb_profile`]) the same mongods behind docdb-guard (`guard-source`,
    /// `guard-target`), which refuses what Amazon DocumentDB 5.0 does not support; otherwise the
    /// direct addresses.
    pub service_source_uri: String,
    pub service_target_uri: String,
    pub kafka_bootstrap: String,
    /// The broker's `PROXIED` listener, which advertises `kafka_via_proxy`: a client that
    /// bootstraps at `kafka_via_proxy` through a proxy forwarding to this listener stays behind
    /// the proxy for every connection.
    pub kafka_proxied_listener: String,
    pub kafka_via_proxy: String,
    /// `scripts/services.sh`, for tests that stop and start a server.
    pub services_script: PathBuf,
    /// The broker's SASL_SSL listener (SCRAM-SHA-512 over TLS) and what a client needs for it.
    pub kafka_sasl_ssl: SaslSsl,
    /// The AWS credentials the same listener accepts MSK IAM tokens from.
    pub kafka_iam: MskIam,
}

/// What the test broker's MSK IAM validator accepts (test keys, not real AWS ones).
#[derive(Debug, Clone)]
pub struct MskIam {
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
}

/// The SASL_SSL listener of the test broker.
#[derive(Debug, Clone)]
pub struct SaslSsl {
    pub bootstrap: String,
    pub ca_file: String,
    pub user: String,
    pub password: String,
}

/// The workspace root (two levels above a crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The three-broker cluster `scripts/services.sh up kafka-cluster` starts (Amazon MSK's
/// defaults: replication factor 3, `min.insync.replicas` 2).
#[derive(Debug, Clone)]
pub struct Cluster {
    pub bootstrap: String,
    /// The same brokers through Toxiproxy proxies (`sink-1` … `sink-3`): a client bootstrapping
    /// here can be cut off from the whole cluster.
    pub via_proxy: String,
    /// The API of the Toxiproxy that carries every link between two brokers
    /// (`peer-<b>-from-<p>`, `controller-<b>-from-<p>`) and the `sink-<b>` proxies.
    pub toxiproxy: std::net::SocketAddr,
}

/// A setting from the environment, else from `.cache/services.env`.
fn setting(name: &str) -> Option<String> {
    if let Ok(value) = std::env::var(name) {
        return Some(value);
    }
    let from_file = std::fs::read_to_string(workspace_root().join(".cache/services.env")).unwrap_or_default();
    from_file
        .lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|line| line.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"').to_string())
}

/// Reads the servers' addresses from the environment or `.cache/services.env`. Panics with the
/// fix when neither has them: tests need real servers.
pub fn services() -> Services {
    let lookup = |name: &str| -> String {
        setting(name).unwrap_or_else(|| panic!("{name} is not set: start the servers with `make services` first"))
    };
    let guarded = |name: &str, direct: &str| -> String {
        if !documentdb_profile() {
            return direct.to_string();
        }
        setting(name).unwrap_or_else(|| {
            panic!("{name} is not set: start the guards with `scripts/services.sh up guard-source guard-target`")
        })
    };
    let (source, target) = (lookup("MONGO_SOURCE_URI"), lookup("MONGO_TARGET_URI"));
    Services {
        service_source_uri: guarded("MONGO_SOURCE_GUARDED_URI", &source),
        service_target_uri: guarded("MONGO_TARGET_GUARDED_URI", &target),
        mongo_source_uri: source,
        mongo_target_uri: target,
        kafka_bootstrap: lookup("KAFKA_BOOTSTRAP"),
        kafka_proxied_listener: lookup("KAFKA_PROXIED_LISTENER"),
        kafka_via_proxy: lookup("KAFKA_VIA_PROXY"),
        services_script: workspace_root().join("scripts/services.sh"),
        kafka_sasl_ssl: SaslSsl {
            bootstrap: lookup("KAFKA_SASL_SSL_BOOTSTRAP"),
            ca_file: lookup("KAFKA_CA_FILE"),
            user: lookup("KAFKA_SCRAM_USER"),
            password: lookup("KAFKA_SCRAM_PASSWORD"),
        },
        kafka_iam: MskIam {
            region: lookup("KAFKA_IAM_REGION"),
            access_key_id: lookup("KAFKA_IAM_ACCESS_KEY_ID"),
            secret_access_key: lookup("KAFKA_IAM_SECRET_ACCESS_KEY"),
            session_token: lookup("KAFKA_IAM_SESSION_TOKEN"),
        },
    }
}

/// The three-broker cluster's addresses. Panics with the fix when it was never started.
pub fn cluster() -> Cluster {
    let lookup = |name: &str| -> String {
        setting(name).unwrap_or_else(|| {
            panic!("{name} is not set: start the cluster with `scripts/services.sh up kafka-cluster`")
        })
    };
    Cluster {
        bootstrap: lookup("KAFKA_CLUSTER_BOOTSTRAP"),
        via_proxy: lookup("KAFKA_CLUSTER_VIA_PROXY"),
        toxiproxy: lookup("KAFKA_CLUSTER_TOXIPROXY").parse().expect("KAFKA_CLUSTER_TOXIPROXY is host:port"),
    }
}

/// Whether the tests run in the Amazon DocumentDB profile (`E2E_COMPAT=documentdb`): the
/// services use `compat = "documentdb"` and reach MongoDB through docdb-guard. Panics on any
/// other value than `documentdb` or `mongodb`.
pub fn documentdb_profile() -> bool {
    match std::env::var("E2E_COMPAT").as_deref() {
        Ok("documentdb") => true,
        Ok("mongodb") | Err(_) => false,
        Ok(other) => panic!("E2E_COMPAT={other}: expected documentdb or mongodb"),
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
    http_request(addr, "GET", path, None).await
}

/// A plain HTTP/1.1 request with an optional JSON body: status code and body.
pub async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let body = json.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(format!("{head}{body}").as_bytes()).await?;
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

/// Waits until the service at `addr` answers `/health/readyz` with 200 (a minute at most).
pub async fn wait_ready(addr: std::net::SocketAddr) {
    eventually("service ready", Duration::from_secs(60), || async {
        matches!(http_get(addr, "/health/readyz").await, Ok((200, _))).then_some(())
    })
    .await;
}

/// A record read back from Kafka.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// The record's headers, by name (a dead letter's `error`, `stage`, …).
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Consumed {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Reads committed records of `topics` from the beginning until at least `at_least` arrived
/// and nothing more came for a second (so duplicates would show), or `timeout` passes.
/// Returns them ordered by topic, partition and offset.
pub async fn consume_all(bootstrap: &str, topics: &[&str], at_least: usize, timeout: Duration) -> Vec<Consumed> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers;
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
    let bootstrap = bootstrap.to_string();
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .expect("consumer");
        let deadline = Instant::now() + timeout;
        let mut assignment = TopicPartitionList::new();
        for topic in &topics {
            // The topic may not exist yet: wait for it. (Asking for all topics: librdkafka keeps
            // answering "unknown" for a while after a request naming a missing topic.)
            let partitions = loop {
                let metadata = consumer.fetch_metadata(None, Duration::from_secs(5)).expect("metadata");
                let found: Vec<i32> = metadata
                    .topics()
                    .iter()
                    .filter(|t| t.name() == topic && t.error().is_none())
                    .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                    .collect();
                if !found.is_empty() || Instant::now() > deadline {
                    break found;
                }
                std::thread::sleep(Duration::from_millis(200));
            };
            for p in partitions {
                assignment.add_partition_offset(topic, p, Offset::Beginning).expect("assign");
            }
        }
        consumer.assign(&assignment).expect("assign");
        let mut records = Vec::new();
        let mut last_arrival = Instant::now();
        // Records other than watermarks: what `at_least` counts.
        let mut arrived = 0;
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    // Watermarks keep coming while a source runs: only other records count as
                    // arrivals for "nothing more came".
                    let watermark = m.key().is_some_and(|k| k.starts_with(br#"{"id":null,"watermark""#));
                    if !watermark {
                        last_arrival = Instant::now();
                        arrived += 1;
                    }
                    records.push(Consumed {
                        topic: m.topic().to_string(),
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                        headers: m
                            .headers()
                            .map(|headers| {
                                headers
                                    .iter()
                                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec).unwrap_or_default()))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    });
                }
                Some(Err(e)) => panic!("consume: {e}"),
                None => {}
            }
            if arrived >= at_least && last_arrival.elapsed() > Duration::from_secs(1) {
                break;
            }
        }
        records.sort_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
        records
    })
    .await
    .expect("consumer task")
}

/// A client for one of the test servers.
pub async fn mongo(uri: &str) -> mongodb::Client {
    mongodb::Client::with_uri_str(uri).await.expect("mongodb client")
}

/// The sum of the values of every `/metrics` line starting with `prefix` (name, or name and
/// the start of its labels); 0 when none does.
pub fn metric(body: &str, prefix: &str) -> f64 {
    body.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}
