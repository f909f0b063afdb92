//! Makes batches durable in Kafka together with the checkpoint that covers them.
//!
//! Exactly-once: one Kafka transaction per batch holds its records, a watermark when one is due,
//! and the checkpoint record; either all become visible to `read_committed` consumers or none.
//! At-least-once: every record of the batch is acknowledged (idempotent producer, `acks=all`)
//! before the checkpoint is written, so the checkpoint never passes an unacknowledged event.
//! A watermark goes to every partition of every topic the checkpoint lists, after the batch's
//! records.

use std::collections::HashMap;
use std::path::PathBuf;

use envelope::{encode_control, encode_watermark, ControlEvent, Watermark};
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use rdkafka::Message as _;

use service_kit::kafka_auth::AuthContext;

use crate::config::{CheckpointStore, Config, Guarantee};
use crate::delivery::checkpoint::Checkpoint;
use crate::delivery::record::{Item, Record, Target, HEARTBEAT, REPLY};
use crate::delivery::store::{Store, CHECKPOINT_TOPIC_CONFIG};
use crate::delivery::topics::Topics;
use crate::error::{Common, Error, Failure};

const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// The request topic keeps a week of requests and replies.
const REQUEST_TOPIC_CONFIG: [(&str, &str); 2] = [("cleanup.policy", "delete"), ("retention.ms", "604800000")];

pub struct Producer {
    producer: FutureProducer<AuthContext>,
    guarantee: Guarantee,
    topics: Topics,
    /// Where the checkpoint goes with each batch, and is read back from.
    store: Store,
    max_message_bytes: usize,
}

/// Where one record of a batch goes: its topic, a partition when it goes to each (watermarks,
/// markers), and which record of which item it is.
struct Destination {
    topic: String,
    partition: Option<i32>,
    item: usize,
    record: usize,
}

impl Producer {
    /// Creates the producer (initialising transactions, which fences any older instance with the
    /// same `capture.name` and aborts its open transaction) and the checkpoint topic.
    pub async fn connect(config: &Config) -> Result<Self, Error> {
        let delivery = &config.delivery;
        let producer: FutureProducer<AuthContext> = client_config(config)
            .create_with_context(config.kafka.context())
            .map_err(|e| Error::kafka("create producer", e))?;
        if delivery.guarantee == Guarantee::ExactlyOnce {
            let init = producer.clone();
            tokio::task::spawn_blocking(move || init.init_transactions(TRANSACTION_TIMEOUT))
                .await
                .map_err(|e| Error::fatal(format!("init transactions task: {e}")))?
                .map_err(|e| Error::kafka("init transactions", e))?;
        }
        let admin = config.kafka.admin().map_err(|e| Error::kafka("create admin client", e))?;
        let mut topics = Topics::new(
            admin,
            producer.clone(),
            config.topics.partitions,
            config.topics.replication_factor,
            delivery.max_message_bytes,
        );
        let store = match delivery.checkpoint_store {
            CheckpointStore::Kafka => {
                let topic = config.checkpoint_topic();
                let single_partition: Vec<(&str, &str)> = CHECKPOINT_TOPIC_CONFIG.to_vec();
                topics.ensure_with_partitions(&topic, 1, &single_partition).await?;
                Store::Kafka { topic, key: config.capture.name.clone(), kafka: config.kafka.clone() }
            }
            CheckpointStore::File => Store::File { path: PathBuf::from(&delivery.checkpoint_file) },
        };
        // Re-send requests and their replies: one partition, so they are answered in order.
        topics.ensure_with_partitions(&crate::resend::request_topic(config), 1, &REQUEST_TOPIC_CONFIG).await?;
        Ok(Self {
            producer,
            guarantee: delivery.guarantee,
            topics,
            store,
            max_message_bytes: delivery.max_message_bytes,
        })
    }

    /// Where this producer's checkpoints are read back from.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Makes `batch`, then `watermark` (if any) and then `checkpoint` durable; returns the
    /// number of records written. The checkpoint learns the topics the batch went to.
    pub async fn write(
        &mut self,
        batch: &[Item],
        checkpoint: &mut Checkpoint,
        watermark: Option<&Watermark>,
    ) -> Result<usize, Error> {
        let destinations = self.destinations(batch).await?;
        for d in &destinations {
            // Heartbeats and replies have topics of their own, not ones of the source's.
            let op = batch[d.item].records[d.record].op;
            if op != HEARTBEAT && op != REPLY && !checkpoint.topics.contains(&d.topic) {
                checkpoint.topics.insert(d.topic.clone());
            }
        }
        let watermarks = match watermark {
            Some(watermark) => self.watermarks(watermark, checkpoint).await?,
            None => Vec::new(),
        };
        let checkpoint_value = serde_json::to_vec(checkpoint).map_err(|e| Error::Checkpoint(e.to_string()))?;
        if self.guarantee == Guarantee::ExactlyOnce {
            self.producer.begin_transaction().map_err(|e| Error::kafka("begin transaction", e))?;
        }
        let markers = markers(batch, &destinations);
        let mut deliveries = Vec::with_capacity(destinations.len() + watermarks.len() + 1);
        for d in &destinations {
            let record = &batch[d.item].records[d.record];
            let (key, value) = match markers.get(&(d.item, d.record)) {
                Some((key, value)) => (key.as_slice(), Some(value.as_slice())),
                None => (record.key.as_slice(), record.value.as_deref()),
            };
            deliveries.push(self.enqueue(&d.topic, d.partition, key, value).await?);
        }
        let (key, value) = watermark.map(encode_watermark).unwrap_or_default();
        for (topic, partition) in &watermarks {
            deliveries.push(self.enqueue(topic, Some(*partition), &key, Some(&value)).await?);
        }
        self.store_with(deliveries, checkpoint, &checkpoint_value).await?;
        Ok(destinations.len() + watermarks.len())
    }

    /// Where each record of the batch goes, its topics created first (with the size of each
    /// record checked).
    async fn destinations(&mut self, batch: &[Item]) -> Result<Vec<Destination>, Error> {
        let mut destinations = Vec::new();
        for (item, entry) in batch.iter().enumerate() {
            for (record, r) in entry.records.iter().enumerate() {
                self.check_size(r)?;
                let one = |topic: &str, partition| Destination { topic: topic.to_string(), partition, item, record };
                match &r.target {
                    Target::Keyed(topic) => {
                        self.topics.ensure(topic, &[]).await?;
                        destinations.push(one(topic, None));
                    }
                    Target::AllPartitions(topic) => {
                        let count = self.topics.ensure(topic, &[]).await?;
                        destinations.extend((0..count).map(|p| one(topic, Some(p))));
                    }
                    Target::AllPartitionsOf(topics) => {
                        for topic in topics {
                            let count = self.topics.ensure(topic, &[]).await?;
                            destinations.extend((0..count).map(|p| one(topic, Some(p))));
                        }
                    }
                    Target::AllTopicsWithPrefix(prefix) => {
                        for topic in self.topics.list_with_prefix(prefix).await? {
                            let count = self.topics.ensure(&topic, &[]).await?;
                            destinations.extend((0..count).map(|p| one(&topic, Some(p))));
                        }
                    }
                }
            }
        }
        Ok(destinations)
    }

    /// The enqueued records acknowledged and the checkpoint stored, as the guarantee asks: in the
    /// same transaction (exactly-once), or after every acknowledgement (at-least-once, a file).
    async fn store_with(
        &mut self,
        deliveries: Vec<DeliveryFuture>,
        checkpoint: &Checkpoint,
        checkpoint_value: &[u8],
    ) -> Result<(), Error> {
        match (&self.store, self.guarantee) {
            (Store::Kafka { topic, key, .. }, Guarantee::ExactlyOnce) => {
                let (topic, key) = (topic.clone(), key.clone());
                let mut deliveries = deliveries;
                deliveries.push(self.enqueue(&topic, None, key.as_bytes(), Some(checkpoint_value)).await?);
                self.commit(deliveries).await
            }
            (Store::Kafka { topic, key, .. }, Guarantee::AtLeastOnce) => {
                let (topic, key) = (topic.clone(), key.clone());
                await_all(deliveries).await?;
                let stored = self.enqueue(&topic, None, key.as_bytes(), Some(checkpoint_value)).await?;
                await_all(vec![stored]).await
            }
            (Store::File { path }, _) => {
                await_all(deliveries).await?;
                Store::save_file(path, checkpoint).await
            }
        }
    }

    /// Commits the transaction once every record is acknowledged: rust-rdkafka's commit flushes
    /// what is still in flight by polling in whole 100 ms steps, which was most of each
    /// transaction. A refused record makes the transaction abortable: the commit then fails.
    async fn commit(&mut self, deliveries: Vec<DeliveryFuture>) -> Result<(), Error> {
        let refused = first_failed(deliveries).await;
        let producer = self.producer.clone();
        let committed = tokio::task::spawn_blocking(move || producer.commit_transaction(TRANSACTION_TIMEOUT))
            .await
            .map_err(|e| Error::fatal(format!("commit task: {e}")))?;
        if let (Ok(()), Some(refused)) = (&committed, &refused) {
            return Err(Error::fatal(format!("a transaction committed although a record was refused: {refused}")));
        }
        if let Err(e) = committed {
            self.abort().await;
            // A record the broker refused says more than "the transaction failed"; a fence says
            // most (records purged on abort are its consequence).
            let failed = Error::kafka("commit transaction", e);
            if matches!(failed, Error::Fenced(_)) {
                return Err(failed);
            }
            return Err(refused.unwrap_or(failed));
        }
        Ok(())
    }

    /// Every partition of every topic the checkpoint lists that still exists; the others are
    /// forgotten.
    async fn watermarks(
        &mut self,
        watermark: &Watermark,
        checkpoint: &mut Checkpoint,
    ) -> Result<Vec<(String, i32)>, Error> {
        let existing = self.topics.existing(&checkpoint.topics).await?;
        checkpoint.topics.retain(|topic| existing.contains_key(topic));
        tracing::debug!(topics = existing.len(), cluster_time = ?watermark.cluster_time, "watermark");
        Ok(existing.into_iter().flat_map(|(topic, count)| (0..count).map(move |p| (topic.clone(), p))).collect())
    }

    /// Enqueues one record; a full local queue is backpressure: wait and try again.
    async fn enqueue(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<DeliveryFuture, Error> {
        loop {
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).key(key);
            if let Some(value) = value {
                record = record.payload(value);
            }
            if let Some(partition) = partition {
                record = record.partition(partition);
            }
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => {
                    if self.guarantee == Guarantee::ExactlyOnce {
                        self.abort().await;
                    }
                    return Err(Error::kafka(&format!("produce to {topic}"), e));
                }
            }
        }
    }

    /// An event larger than Kafka takes can never be delivered: stop before the checkpoint passes
    /// it (nothing is lost: a restart with a larger limit sends it), naming it and the fix.
    fn check_size(&self, record: &Record) -> Result<(), Error> {
        let size = record.key.len() + record.value.as_ref().map_or(0, Vec::len);
        if size <= self.max_message_bytes {
            return Ok(());
        }
        let key = String::from_utf8_lossy(&record.key);
        let key: String = key.chars().take(120).collect();
        let op = match record.op {
            "c" => "insert",
            "u" => "update",
            "d" => "delete",
            "r" => "snapshot read",
            other => other,
        };
        Err(Error::fatal(format!(
            "the {op} of {} with key {key} is {size} bytes, more than delivery.max_message_bytes \
             ({}): raise it (and max.message.bytes of the topic or the broker's message.max.bytes; \
             16 MiB covers any MongoDB document), or exclude the namespace; the checkpoint stays before this \
             event, so a restart with a larger limit delivers it",
            record.namespace, self.max_message_bytes
        )))
    }

    async fn abort(&self) {
        let producer = self.producer.clone();
        let aborted = tokio::task::spawn_blocking(move || producer.abort_transaction(TRANSACTION_TIMEOUT)).await;
        if let Ok(Err(e)) = aborted {
            tracing::warn!(error = %e, "abort transaction failed");
        }
    }
}

/// Control events encoded (key and value) with the number of markers each sends: only known
/// once the destinations are.
fn markers(batch: &[Item], destinations: &[Destination]) -> HashMap<(usize, usize), (Vec<u8>, Vec<u8>)> {
    let mut markers = HashMap::new();
    for (item, entry) in batch.iter().enumerate() {
        for (record, r) in entry.records.iter().enumerate() {
            if let Some(control) = &r.control {
                let mut topics = std::collections::BTreeMap::new();
                for d in destinations.iter().filter(|d| (d.item, d.record) == (item, record)) {
                    *topics.entry(d.topic.clone()).or_insert(0_u32) += 1;
                }
                let event = ControlEvent { markers: topics.values().sum(), topics, ..(**control).clone() };
                markers.insert((item, record), encode_control(&event));
            }
        }
    }
    markers
}

/// The producer's settings: our defaults, under whatever `kafka.options` sets. The buffer of
/// records not yet acknowledged is a twelfth of `delivery.memory_budget_bytes`, at least the
/// largest record (`DeliveryConfig::producer_buffer_kbytes`).
fn client_config(config: &Config) -> ClientConfig {
    let delivery = &config.delivery;
    let mut defaults: Vec<(&str, String)> = vec![
        ("enable.idempotence", "true".into()),
        ("acks", "all".into()),
        ("compression.type", delivery.compression.clone()),
        ("compression.level", delivery.compression_level.to_string()),
        ("linger.ms", "5".into()),
        ("batch.size", "1000000".into()),
        ("message.max.bytes", delivery.max_message_bytes.to_string()),
        ("max.in.flight.requests.per.connection", "5".into()),
        ("queue.buffering.max.messages", "200000".into()),
        ("queue.buffering.max.kbytes", delivery.producer_buffer_kbytes().to_string()),
        // The Java client's partitioner, so keys land where Kafka Connect would put them.
        ("partitioner", "murmur2_random".into()),
        // Topics are created by this service with the configured partitions, never by a
        // broker's defaults.
        ("allow.auto.create.topics", "false".into()),
    ];
    if delivery.guarantee == Guarantee::ExactlyOnce {
        defaults.push(("transactional.id", format!("cdc-source-{}", config.capture.name)));
        defaults.push(("transaction.timeout.ms", TRANSACTION_TIMEOUT.as_millis().to_string()));
    }
    let defaults: Vec<(&str, &str)> = defaults.iter().map(|(k, v)| (*k, v.as_str())).collect();
    config.kafka.client_config_with(&defaults)
}

/// The first record the broker refused in a failed transaction, if one was (records purged
/// because the transaction failed do not count).
async fn first_failed(deliveries: Vec<DeliveryFuture>) -> Option<Error> {
    for delivery in deliveries {
        if let Ok(Err((e, message))) = delivery.await {
            let purged =
                matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight));
            if !purged {
                return Some(Error::kafka(&format!("delivery to {}", message.topic()), e));
            }
        }
    }
    None
}

/// Waits for every acknowledgement; the first failure fails the batch.
async fn await_all(deliveries: Vec<DeliveryFuture>) -> Result<(), Error> {
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, message))) => return Err(Error::kafka(&format!("delivery to {}", message.topic()), e)),
            Err(_) => return Err(Error::Common(Common::Kafka(Failure::retriable("delivery", "producer closed")))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_producer_buffer_follows_the_memory_budget_unless_set() {
        let mut config = Config::default();
        let kbytes = |config: &Config| client_config(config).get("queue.buffering.max.kbytes").map(str::to_string);
        assert_eq!(kbytes(&config).as_deref(), Some("19114"), "a twelfth of the default 224 MiB");
        config.delivery.memory_budget_bytes = 160 * 1024 * 1024;
        assert_eq!(kbytes(&config).as_deref(), Some("17408"), "the largest record and 1 MiB: a twelfth is less");
        config.delivery.memory_budget_bytes = 512 * 1024 * 1024;
        assert_eq!(kbytes(&config).as_deref(), Some("43690"), "a twelfth");
        config.kafka.options.insert("queue_buffering_max_kbytes".into(), "1000".into());
        assert_eq!(kbytes(&config).as_deref(), Some("1000"), "an explicit option wins");
    }
}
