//! Two cdc-source processes of one capture with `election.enabled`, a write load, and the
//! measures of a takeover (`tests/standby.rs` on the single broker, `tests/cluster.rs` on the
//! three-broker cluster).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use test_support::{eventually, http_get, metric, services};

use crate::pipeline::Pipeline;
use crate::process::Proc;

/// The topic the writer's inserts go to.
pub fn docs_topic(p: &Pipeline) -> String {
    format!("{}.{}.docs", p.name, p.name)
}

/// The takeover the issue asks for, from the death to the successor's first durable batch.
pub const TAKEOVER_LIMIT: Duration = Duration::from_secs(30);

/// A cdc-source process with `election.enabled`.
pub struct Instance {
    pub proc: Proc,
    pub http: SocketAddr,
}

impl Instance {
    pub fn start(p: &Pipeline, name: &str, bootstrap: &str) -> Instance {
        let http = crate::free_addr();
        let mut env = crate::source_process_env(&p.name, 4);
        env.extend(
            [
                ("HTTP__LISTEN_ADDR", http.to_string()),
                ("MONGO__URI", services().service_source_uri),
                ("KAFKA__BOOTSTRAP_SERVERS", bootstrap.to_string()),
                ("ELECTION__ENABLED", "true".into()),
                ("DELIVERY__MAX_BACKOFF_MS", "2000".into()),
                ("DELIVERY__BATCH_MAX_WAIT_MS", "20".into()),
                ("CAPTURE__COMPAT", format!("{:?}", p.source_config.capture.compat).to_lowercase()),
            ]
            .map(|(k, v)| (format!("CDC_SOURCE__{k}"), v)),
        );
        let mut proc = Proc::new(name, crate::binary("cdc-source"), vec![], env, &p.dir());
        proc.start();
        Instance { proc, http }
    }

    pub async fn metrics(&self) -> String {
        http_get(self.http, "/metrics").await.map(|(_, body)| body).unwrap_or_default()
    }

    /// The readiness status and body.
    pub async fn readiness(&self) -> Option<(u16, String)> {
        http_get(self.http, "/health/readyz").await.ok()
    }

    /// Waits until it is ready in `role` (and says so in its metric too).
    pub async fn wait_role(&self, role: &str, within: Duration) {
        let active = if role == "active" { 1.0 } else { 0.0 };
        eventually(&format!("{} ready as {role}", self.http), within, || async {
            let (status, body) = self.readiness().await?;
            let metrics = self.metrics().await;
            (status == 200
                && body.contains(&format!("role: {role}"))
                && metric(&metrics, "cdc_source_active") == active)
                .then_some(())
        })
        .await;
    }
}

/// Inserts `{_id: i}` one by one until stopped; returns how many. `next` is the next `_id`.
pub fn writer(p: &Pipeline, stop: Arc<AtomicBool>, next: Arc<AtomicI32>) -> tokio::task::JoinHandle<i32> {
    let coll = p.source_db().collection::<Document>("docs");
    tokio::spawn(async move {
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) || i < 500 {
            coll.insert_one(doc! {"_id": i, "v": i}).await.expect("insert");
            i += 1;
            next.store(i, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        i
    })
}

/// How long after `since` a `read_committed` reader of `topic` (from its end now) first sees an
/// insert with `_id` ≥ `from`: when the takeover reaches consumers (an open transaction of the
/// dead instance would hold every later record back until it ends).
pub fn first_visible(
    bootstrap: String,
    topic: String,
    from: i32,
    since: Instant,
) -> tokio::task::JoinHandle<Option<Duration>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", test_support::unique("tail"))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut partitions = TopicPartitionList::new();
        for partition in 0..4 {
            partitions.add_partition_offset(&topic, partition, Offset::End).expect("partition");
        }
        consumer.assign(&partitions).expect("assign");
        while since.elapsed() < TAKEOVER_LIMIT * 3 {
            let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else { continue };
            if let Ok(envelope::Event::Change(change)) = envelope::decode(message.key(), message.payload()) {
                if matches!(change.id(), Some(bson::Bson::Int32(id)) if *id >= from) {
                    return Some(since.elapsed());
                }
            }
        }
        None
    })
}

/// Waits until `successor` is elected and has made its first batch durable; returns both times
/// since `died`.
pub async fn takeover(successor: &Instance, died: Instant) -> (Duration, Duration) {
    let mut elected = None;
    loop {
        let body = successor.metrics().await;
        if elected.is_none() && metric(&body, "cdc_source_active") == 1.0 {
            elected = Some(died.elapsed());
        }
        if elected.is_some() && metric(&body, "cdc_source_events_total") > 0.0 {
            return (elected.unwrap_or_default(), died.elapsed());
        }
        assert!(died.elapsed() < TAKEOVER_LIMIT * 2, "no takeover within {:?}", TAKEOVER_LIMIT * 2);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every insert on the committed topic `<name>.<name>.docs`, with how many times it is there.
pub async fn inserts(bootstrap: &str, p: &Pipeline, at_least: usize) -> BTreeMap<String, usize> {
    let topic = docs_topic(p);
    let records = test_support::consume_all(bootstrap, &[&topic], at_least, Duration::from_secs(90)).await;
    let mut counts = BTreeMap::new();
    for record in &records {
        if let Ok(envelope::Event::Change(change)) = envelope::decode(record.key.as_deref(), record.value.as_deref()) {
            if change.op == envelope::Op::Create {
                *counts.entry(format!("{:?}", change.id())).or_default() += 1;
            }
        }
    }
    counts
}
