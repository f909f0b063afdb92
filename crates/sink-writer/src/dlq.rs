//! The dead-letter topic: records that cannot be applied, unchanged, with headers saying why
//! and where they came from. A record is only passed over once its dead letter is durable.

use futures::future::BoxFuture;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use service_kit::connect::{create_topic, KafkaConnection};
use service_kit::kafka_auth::AuthContext;

use crate::error::{Common, Error, Failure};

/// Readiness component: dead letters can be written (a failing dead-letter produce shows here,
/// not as Kafka being unreachable).
pub const COMPONENT: &str = "dead-letter-topic";

/// The largest dead letter: any record cdc-source may send (16 MiB by default) plus the headers
/// saying why. Set on the topic this service creates and on its producer, whose librdkafka
/// default (1 MB) and the broker's (1 MB on MSK) would refuse a large poison record.
pub const MAX_DEAD_LETTER_BYTES: usize = 20 * 1024 * 1024;

/// The dead-letter topic as the write path needs it: one record's dead letter, sent and
/// acknowledged. [`DeadLetters`] is the real one; unit tests use a fake.
pub trait DeadLetterTopic: Send + Sync {
    fn send<'a>(
        &'a self,
        origin: &'a Origin<'a>,
        key: Option<&'a [u8]>,
        value: Option<&'a [u8]>,
        error: &'a str,
    ) -> BoxFuture<'a, Result<(), Error>>;
}

pub struct DeadLetters {
    producer: FutureProducer<AuthContext>,
    topic: String,
}

/// Where a dead letter came from.
pub struct Origin<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub stage: &'static str,
}

impl DeadLetters {
    /// Creates the topic when missing (brokers such as MSK do not auto-create), then the producer.
    pub async fn new(kafka: &KafkaConnection, topic: &str) -> Result<Self, Error> {
        let admin = kafka.admin().map_err(|e| Error::kafka("create admin client", e))?;
        let max_bytes = MAX_DEAD_LETTER_BYTES.to_string();
        match create_topic(&admin, topic, 1, -1, &[("max.message.bytes", &max_bytes)]).await {
            Ok(true) => tracing::info!(topic, "created dead-letter topic"),
            Ok(false) => {}
            Err(e) => {
                return Err(Error::Common(Common::Kafka(Failure::retriable(
                    format!("create dead-letter topic {topic}"),
                    e.to_string(),
                ))))
            }
        }
        let producer = kafka
            .client_config_with(&[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("linger.ms", "5"),
                ("message.max.bytes", &max_bytes),
                // Dead letters are sent one at a time: a small buffer, outside the memory budget.
                ("queue.buffering.max.kbytes", "65536"),
            ])
            .create_with_context(kafka.context())
            .map_err(|e| Error::kafka("create dead-letter producer", e))?;
        Ok(Self { producer, topic: topic.to_string() })
    }

    /// Sends one dead letter and waits until the broker has it.
    pub async fn send(
        &self,
        origin: &Origin<'_>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        error: &str,
    ) -> Result<(), Error> {
        let partition = origin.partition.to_string();
        let offset = origin.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: "error", value: Some(error) })
            .insert(Header { key: "stage", value: Some(origin.stage) })
            .insert(Header { key: "source.topic", value: Some(origin.topic) })
            .insert(Header { key: "source.partition", value: Some(&partition) })
            .insert(Header { key: "source.offset", value: Some(&offset) });
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(value) = value {
            record = record.payload(value);
        }
        self.producer
            .send(record, rdkafka::util::Timeout::Never)
            .await
            .map(|_| ())
            .map_err(|(e, _)| Error::kafka("dead-letter delivery", e))
    }
}

impl DeadLetterTopic for DeadLetters {
    fn send<'a>(
        &'a self,
        origin: &'a Origin<'a>,
        key: Option<&'a [u8]>,
        value: Option<&'a [u8]>,
        error: &'a str,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(DeadLetters::send(self, origin, key, value, error))
    }
}
