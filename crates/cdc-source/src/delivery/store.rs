//! Where the checkpoint lives: a compacted Kafka topic keyed by `capture.name` (read with
//! `read_committed`, so only checkpoints of committed transactions count), or a local file.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use service_kit::connect::KafkaConnection;
use service_kit::kafka_auth::{self, AuthContext, TokenSource};

use crate::delivery::checkpoint::{Checkpoint, CHECKPOINT_VERSION};
use crate::error::Error;

/// Topic configuration of the checkpoint topic.
pub const CHECKPOINT_TOPIC_CONFIG: [(&str, &str); 2] =
    [("cleanup.policy", "compact"), ("min.compaction.lag.ms", "60000")];

pub enum Store {
    Kafka { topic: String, key: String, kafka: KafkaConnection },
    File { path: PathBuf },
}

impl Store {
    /// The stored checkpoint, if any.
    pub async fn load(&self) -> Result<Option<Checkpoint>, Error> {
        let text = match self {
            Store::File { path } => match tokio::fs::read_to_string(path).await {
                Ok(text) => Some(text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::fatal(format!("cannot read checkpoint file {}: {e}", path.display()))),
            },
            Store::Kafka { topic, key, kafka } => {
                let (topic, key, kafka) = (topic.clone(), key.clone(), kafka.clone());
                tokio::task::spawn_blocking(move || read_last_value(&kafka, &topic, &key))
                    .await
                    .map_err(|e| Error::Checkpoint(format!("reader task: {e}")))??
            }
        };
        let Some(text) = text else { return Ok(None) };
        let checkpoint: Checkpoint = serde_json::from_str(&text)
            .map_err(|e| Error::fatal(format!("stored checkpoint is not readable ({e}): {text:.200}")))?;
        if checkpoint.v > CHECKPOINT_VERSION {
            return Err(Error::fatal(format!(
                "stored checkpoint has version {}, newer than this cdc-source understands ({CHECKPOINT_VERSION})",
                checkpoint.v
            )));
        }
        Ok(Some(checkpoint))
    }

    /// Saves to a file store; Kafka checkpoints travel with the producer's batches instead.
    pub async fn save_file(path: &PathBuf, checkpoint: &Checkpoint) -> Result<(), Error> {
        let text = serde_json::to_string(checkpoint).map_err(|e| Error::Checkpoint(e.to_string()))?;
        let tmp = path.with_extension("tmp");
        tokio::fs::write(&tmp, text).await.map_err(|e| Error::Checkpoint(format!("write {}: {e}", tmp.display())))?;
        tokio::fs::rename(&tmp, path).await.map_err(|e| Error::Checkpoint(format!("rename to {}: {e}", path.display())))
    }
}

/// Reaching the end of a partition is how the reader knows it is done, not an error to log.
struct QuietEof(Option<TokenSource>);

impl rdkafka::ClientContext for QuietEof {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(&self, _: Option<&str>) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        AuthContext::generate(&self.0)
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::warn!(%error, reason, "checkpoint reader");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for QuietEof {}

/// Reads every partition of `topic` from the start to its end and returns the last value
/// stored under `key` (null values delete).
fn read_last_value(connection: &KafkaConnection, topic: &str, key: &str) -> Result<Option<String>, Error> {
    let kafka = |context: &str, e: KafkaError| Error::kafka(context, e);
    let mut config = connection.client_config();
    config
        .set("group.id", "cdc-source-checkpoint-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer<QuietEof> =
        config.create_with_context(QuietEof(connection.token_source())).map_err(|e| kafka("checkpoint reader", e))?;
    kafka_auth::serve_events(&consumer);
    let metadata =
        consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).map_err(|e| kafka("checkpoint metadata", e))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Ok(None);
    }
    let mut assignment = TopicPartitionList::new();
    for partition in &partitions {
        assignment.add_partition_offset(topic, *partition, Offset::Beginning).map_err(|e| kafka("assign", e))?;
    }
    consumer.assign(&assignment).map_err(|e| kafka("assign", e))?;
    let mut at_end = std::collections::HashSet::new();
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while at_end.len() < partitions.len() {
        if Instant::now() > deadline {
            return Err(Error::Checkpoint(format!("reading {topic} did not reach its end within 60 s")));
        }
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Ok(message)) if message.key() == Some(key.as_bytes()) => {
                last = message.payload().map(|p| String::from_utf8_lossy(p).into_owned());
            }
            Some(Ok(_)) => {}
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition))) => return Ok(None),
            Some(Err(e)) => return Err(kafka("checkpoint read", e)),
        }
    }
    Ok(last)
}
