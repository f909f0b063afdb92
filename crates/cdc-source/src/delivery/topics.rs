//! Topics: created when missing (with the configured partitions), and their partition counts
//! for fanning control events out to every partition.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;
use service_kit::connect::{create_topic, CreateTopicError};
use service_kit::kafka_auth::{Admin, AuthContext};

use crate::error::{Common, Error, Failure};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// What a failed creation of `topic` means: a refusal the cluster's state explains for now (a
/// broker down, the controller moving) is retried; any other (permissions, settings) stops.
pub fn creation_failed(topic: &str, error: CreateTopicError) -> Error {
    let context = format!("create topic {topic}");
    let code = match error {
        CreateTopicError::Client(e) => return Error::kafka(&context, e),
        CreateTopicError::Refused(code) => code,
    };
    let (retriable, hint) = match code {
        // Live brokers are counted: during a rolling restart one of three is away.
        RDKafkaErrorCode::InvalidReplicationFactor => (
            true,
            ": fewer brokers are up than the replication factor (topics.replication_factor, or the broker's \
             default): waiting for them (a broker restarting, as during MSK patching); lower \
             topics.replication_factor if the cluster has fewer brokers",
        ),
        RDKafkaErrorCode::RequestTimedOut
        | RDKafkaErrorCode::NotController
        | RDKafkaErrorCode::BrokerNotAvailable
        | RDKafkaErrorCode::LeaderNotAvailable
        | RDKafkaErrorCode::NetworkException
        | RDKafkaErrorCode::ThrottlingQuotaExceeded => (true, ""),
        _ => (false, ""),
    };
    Error::Common(Common::Kafka(Failure::new(context, retriable, format!("refused: {code}{hint}"))))
}

pub struct Topics {
    admin: Admin,
    producer: FutureProducer<AuthContext>,
    partitions: i32,
    replication_factor: i32,
    /// `max.message.bytes` of the topics this service creates: what the producer may send, not
    /// the broker's default (1 MB on Amazon MSK).
    max_message_bytes: String,
    /// Topics known to exist, with their partition counts.
    known: HashMap<String, i32>,
}

impl Topics {
    pub fn new(
        admin: Admin,
        producer: FutureProducer<AuthContext>,
        partitions: i32,
        replication_factor: i32,
        max_message_bytes: usize,
    ) -> Self {
        let max_message_bytes = max_message_bytes.to_string();
        Self { admin, producer, partitions, replication_factor, max_message_bytes, known: HashMap::new() }
    }

    /// Makes sure `topic` exists (creating it with `extra` topic configs when missing) and
    /// returns its partition count.
    pub async fn ensure(&mut self, topic: &str, extra: &[(&str, &str)]) -> Result<i32, Error> {
        self.ensure_with_partitions(topic, self.partitions, extra).await
    }

    /// [`Topics::ensure`] with an explicit partition count for a topic this service creates.
    pub async fn ensure_with_partitions(
        &mut self,
        topic: &str,
        partitions: i32,
        extra: &[(&str, &str)],
    ) -> Result<i32, Error> {
        if let Some(count) = self.known.get(topic) {
            return Ok(*count);
        }
        if let Some(count) = self.partition_count(topic).await? {
            self.known.insert(topic.to_string(), count);
            return Ok(count);
        }
        let mut configs = vec![("max.message.bytes", self.max_message_bytes.as_str())];
        configs.extend(extra.iter().copied());
        match create_topic(&self.admin, topic, partitions, self.replication_factor, &configs).await {
            Ok(true) => tracing::info!(topic, partitions, "created topic"),
            Ok(false) => {}
            Err(e) => return Err(creation_failed(topic, e)),
        }
        // Metadata can lag creation by a moment; the configured count is what was created.
        let count = self.partition_count(topic).await?.unwrap_or(partitions);
        self.known.insert(topic.to_string(), count);
        Ok(count)
    }

    /// The partition counts of those of `topics` that exist (one metadata request for all not
    /// known yet); never creates one.
    pub async fn existing(&mut self, topics: &BTreeSet<String>) -> Result<BTreeMap<String, i32>, Error> {
        if topics.iter().any(|topic| !self.known.contains_key(topic)) {
            let counts = self.partition_counts().await?;
            for topic in topics {
                if let Some(count) = counts.get(topic) {
                    self.known.entry(topic.clone()).or_insert(*count);
                }
            }
        }
        Ok(topics.iter().filter_map(|topic| self.known.get(topic).map(|count| (topic.clone(), *count))).collect())
    }

    /// Every topic whose name starts with `prefix`: those on the cluster and those this producer
    /// knows.
    pub async fn list_with_prefix(&self, prefix: &str) -> Result<Vec<String>, Error> {
        let producer = self.producer.clone();
        let owned = prefix.to_string();
        let listed: Vec<String> = tokio::task::spawn_blocking(move || {
            let metadata =
                producer.client().fetch_metadata(None, METADATA_TIMEOUT).map_err(|e| Error::kafka("metadata", e))?;
            Ok::<_, Error>(
                metadata.topics().iter().map(|t| t.name().to_string()).filter(|n| n.starts_with(&owned)).collect(),
            )
        })
        .await
        .map_err(|e| Error::fatal(format!("metadata task: {e}")))??;
        // A topic created a moment ago may not be in the broker's metadata yet (a dropDatabase
        // right after its first collection's creation lost its markers so): the ones this
        // producer created or wrote to count too.
        let mut all: BTreeSet<String> = listed.into_iter().collect();
        all.extend(self.known.keys().filter(|topic| topic.starts_with(prefix)).cloned());
        Ok(all.into_iter().collect())
    }

    async fn partition_count(&self, topic: &str) -> Result<Option<i32>, Error> {
        Ok(self.partition_counts().await?.get(topic).copied())
    }

    /// Every topic on the cluster with its partition count.
    async fn partition_counts(&self) -> Result<HashMap<String, i32>, Error> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            // All topics: librdkafka keeps answering "unknown" for a while after a request that
            // names a topic which did not exist yet.
            let metadata =
                producer.client().fetch_metadata(None, METADATA_TIMEOUT).map_err(|e| Error::kafka("metadata", e))?;
            Ok(metadata
                .topics()
                .iter()
                .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                .map(|t| (t.name().to_string(), i32::try_from(t.partitions().len()).unwrap_or(i32::MAX)))
                .collect())
        })
        .await
        .map_err(|e| Error::fatal(format!("metadata task: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_the_clusters_state_explains_is_retried_and_others_stop() {
        let refused = |code| creation_failed("cdc.a.b", CreateTopicError::Refused(code));
        let missing_brokers = refused(RDKafkaErrorCode::InvalidReplicationFactor);
        assert!(missing_brokers.is_retriable(), "{missing_brokers}");
        assert!(missing_brokers.to_string().contains("topics.replication_factor"), "{missing_brokers}");
        assert!(refused(RDKafkaErrorCode::NotController).is_retriable());
        for permanent in [RDKafkaErrorCode::TopicAuthorizationFailed, RDKafkaErrorCode::InvalidConfig] {
            assert!(!refused(permanent).is_retriable(), "{permanent:?}");
        }
    }
}
