//! Starting cdc-source in-process against the real servers, and reading back what it wrote.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bson::Document;
use cdc_source::{Config, Running, Scope, SnapshotMode};
use envelope::{ChangeEvent, Event};
use test_support::{consume_all, http_get, services, unique, Consumed};
use tokio_util::sync::CancellationToken;

pub struct Harness {
    pub config: Config,
    pub db: String,
    pub source: mongodb::Client,
}

impl Harness {
    /// A fresh database and topic prefix; database scope, snapshot mode `never`.
    pub async fn new(test: &str) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        let servers = services();
        let db = unique(test);
        let mut config = Config::default();
        config.http.listen_addr = "127.0.0.1:0".parse().expect("addr");
        config.mongo.uri = service_kit::config::SecretUri::new(servers.mongo_source_uri.clone());
        config.kafka.bootstrap_servers = servers.kafka_bootstrap.clone();
        config.capture.name = db.clone();
        config.capture.scope = Scope::Database;
        config.capture.database = db.clone();
        config.capture.max_await_ms = 200;
        config.snapshot.mode = SnapshotMode::Never;
        config.topics.prefix = db.clone();
        config.delivery.batch_max_wait_ms = 20;
        config.delivery.idle_checkpoint_interval_ms = 300;
        // Watermarks have tests of their own (tests/e2e/tests/watermarks.rs).
        config.delivery.watermark_interval_ms = 0;
        let source = test_support::mongo(&servers.mongo_source_uri).await;
        Self { config, db, source }
    }

    pub fn collection(&self, name: &str) -> mongodb::Collection<Document> {
        self.source.database(&self.db).collection(name)
    }

    pub fn topic(&self, coll: &str) -> String {
        format!("{}.{}.{coll}", self.config.topics.prefix, self.db)
    }

    /// Starts the service and waits until it is ready (streaming or snapshotting).
    pub async fn start(&self) -> Service {
        let service = self.launch().await;
        wait_ready(service.addr).await;
        service
    }

    /// Starts the service without waiting for it to become ready.
    pub async fn launch(&self) -> Service {
        let stop = CancellationToken::new();
        let running = cdc_source::start(self.config.clone(), stop.clone()).await.expect("starts");
        let addr = running.http_addr;
        Service { running: Some(running), stop, addr }
    }

    /// The records of `coll`'s topic once at least `at_least` of them are not schema control
    /// events: a collection's creation markers (one per partition, also for a creation by a first
    /// insert or by a snapshot) come first and do not count.
    pub async fn records(&self, coll: &str, at_least: usize) -> Vec<Consumed> {
        self.records_with_changes(&self.topic(coll), at_least).await
    }

    /// Every record of `coll`'s topic once at least `total` arrived, creation markers included:
    /// for tests that count the markers too.
    pub async fn all_records(&self, coll: &str, total: usize) -> Vec<Consumed> {
        consume_all(&self.config.kafka.bootstrap_servers, &[&self.topic(coll)], total, Duration::from_secs(60)).await
    }

    /// The records of `topic` once at least `changes` of them are not schema control events: a
    /// collection's create markers come first and would otherwise count towards `at_least`.
    pub async fn records_with_changes(&self, topic: &str, changes: usize) -> Vec<Consumed> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let records =
                consume_all(&self.config.kafka.bootstrap_servers, &[topic], changes, Duration::from_secs(60)).await;
            if records.iter().filter(|r| !is_schema(r)).count() >= changes || std::time::Instant::now() > deadline {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

pub use test_support::wait_ready;

pub struct Service {
    running: Option<Running>,
    pub stop: CancellationToken,
    pub addr: SocketAddr,
}

impl Service {
    /// Graceful stop: returns what `run` returned.
    pub async fn stop(mut self) -> Result<(), cdc_source::Error> {
        self.stop.cancel();
        let running = self.running.take().expect("running");
        tokio::time::timeout(Duration::from_secs(30), running.wait()).await.expect("stops within 30 s")
    }

    /// Whether the service is still running (it has not ended by itself).
    pub fn runs(&self) -> bool {
        self.running.as_ref().is_some_and(|r| !r.is_finished())
    }

    /// Waits for the service to end by itself (a fatal error) and returns how it ended.
    pub async fn ended(mut self, within: Duration) -> Result<(), cdc_source::Error> {
        let running = self.running.take().expect("running");
        tokio::time::timeout(within, running.wait()).await.expect("the service ended in time")
    }

    pub async fn metrics(&self) -> String {
        http_get(self.addr, "/metrics").await.expect("metrics").1
    }

    /// The value of the metric lines starting with `prefix` (name plus labels), summed.
    pub async fn metric(&self, prefix: &str) -> f64 {
        test_support::metric(&self.metrics().await, prefix)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Whether a record is a schema control event (`create`, `createIndexes`, `dropIndexes`,
/// `modify`): the stream reports a collection's creation (also by its first insert) before its
/// documents.
pub fn is_schema(record: &Consumed) -> bool {
    matches!(envelope::decode(record.key.as_deref(), record.value.as_deref()),
        Ok(Event::Control(c)) if !c.ddl.ends_documents())
}

/// The records that are not schema control events.
pub fn without_schema(records: Vec<Consumed>) -> Vec<Consumed> {
    records.into_iter().filter(|r| !is_schema(r)).collect()
}

/// Decodes records; panics on anything that does not decode.
pub fn decode(records: &[Consumed]) -> Vec<Event> {
    records
        .iter()
        .map(|r| envelope::decode(r.key.as_deref(), r.value.as_deref()).expect("every record decodes"))
        .collect()
}

/// The change events among `events`.
pub fn changes(events: &[Event]) -> Vec<&ChangeEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Change(c) => Some(c.as_ref()),
            _ => None,
        })
        .collect()
}
