//! Asking cdc-source to send documents' current state again (`verify --repair`, `dead-letters
//! retry`): requests on each capture's request topic (`repair.request_topics`), at most
//! `repair.max_ids_per_request` `_id`s each, then the replies awaited there (`read_committed`).
//! cdc-source sends the documents ordered with its stream and replies in the same transaction;
//! the reply's `closed_at` is the position they went out at (see `envelope::resend`).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bson::Bson;
use envelope::resend::{decode_message, encode_request, ResendMessage, ResendReply, ResendRequest};
use envelope::Namespace;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use service_kit::connect::KafkaConnection;
use service_kit::kafka_auth::{self, AuthContext};

use crate::config::Config;
use crate::error::{Common, Error, Failure};

/// What became of the requests sent.
#[derive(Debug, Default)]
pub struct Answers {
    /// Request id → the reply of the capture that re-sent it (or the last refusal).
    pub replies: BTreeMap<String, ResendReply>,
    /// Requests nobody answered in time.
    pub unanswered: Vec<String>,
}

impl Answers {
    /// Every request re-sent by a capture.
    pub fn complete(&self) -> bool {
        self.unanswered.is_empty() && self.replies.values().all(|r| r.error.is_none())
    }
}

pub struct Resend {
    kafka: KafkaConnection,
    producer: FutureProducer<AuthContext>,
    topics: Vec<String>,
    max_ids: usize,
    timeout: Duration,
    /// Where each topic's replies to this process's requests start.
    from: HashMap<String, i64>,
    sent: Vec<String>,
}

impl Resend {
    pub async fn new(config: &Config) -> Result<Self, Error> {
        let topics = config.request_topics();
        if topics.is_empty() {
            return Err(Error::fatal(
                "no request topic: set status.capture_names (or repair.request_topics) to cdc-source's capture.name"
                    .into(),
            ));
        }
        let producer = config
            .kafka
            .client_config_with(&[("enable.idempotence", "true"), ("acks", "all"), ("linger.ms", "5")])
            .create_with_context(config.kafka.context())
            .map_err(|e| Error::kafka("create the request producer", e))?;
        let (kafka, names) = (config.kafka.clone(), topics.clone());
        let from = tokio::task::spawn_blocking(move || ends(&kafka, &names))
            .await
            .map_err(|e| Error::fatal(format!("request topic task: {e}")))??;
        Ok(Self {
            kafka: config.kafka.clone(),
            producer,
            topics,
            max_ids: config.repair.max_ids_per_request,
            timeout: Duration::from_millis(config.repair.reply_timeout_ms),
            from,
            sent: Vec::new(),
        })
    }

    /// Asks for `ids` of source namespace `ns`; returns the requests' ids.
    pub async fn request(&mut self, ns: &Namespace, ids: Vec<Bson>, reason: &str) -> Result<Vec<String>, Error> {
        let mut sent = Vec::new();
        for chunk in ids.chunks(self.max_ids) {
            let request = ResendRequest {
                id: bson::oid::ObjectId::new().to_hex(),
                ns: ns.to_string(),
                ids: chunk.to_vec(),
                reason: reason.to_string(),
                at_ms: now_ms(),
            };
            let value = encode_request(&request);
            for topic in &self.topics {
                let record: FutureRecord<'_, str, [u8]> =
                    FutureRecord::to(topic).key(request.id.as_str()).payload(value.as_slice());
                self.producer
                    .send(record, Duration::from_secs(30))
                    .await
                    .map_err(|(e, _)| Error::kafka(&format!("send a request to {topic}"), e))?;
            }
            sent.push(request.id);
        }
        self.sent.extend(sent.iter().cloned());
        Ok(sent)
    }

    /// Waits for the replies to every request sent: one capture's re-send answers a request; when
    /// every capture refuses it, the refusal does.
    pub async fn answers(&self) -> Result<Answers, Error> {
        let (kafka, from, topics) = (self.kafka.clone(), self.from.clone(), self.topics.clone());
        let (sent, timeout) = (self.sent.clone(), self.timeout);
        tokio::task::spawn_blocking(move || wait(&kafka, &from, &topics, &sent, timeout))
            .await
            .map_err(|e| Error::fatal(format!("reply reader task: {e}")))?
    }
}

/// The end of each topic now: replies to requests sent from here on come after it. Blocking.
fn ends(kafka: &KafkaConnection, topics: &[String]) -> Result<HashMap<String, i64>, Error> {
    let consumer = reader(kafka)?;
    let mut ends = HashMap::new();
    for topic in topics {
        let (_, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10)).map_err(|e| {
            Error::Common(Common::Kafka(Failure::retriable(
                format!("read request topic {topic}"),
                format!("{e} (cdc-source creates it when it starts; is status.capture_names right?)"),
            )))
        })?;
        ends.insert(topic.clone(), high);
    }
    Ok(ends)
}

fn reader(kafka: &KafkaConnection) -> Result<BaseConsumer<AuthContext>, Error> {
    let consumer: BaseConsumer<AuthContext> = kafka
        .client_config_with(&[
            ("group.id", "sink-writer-resend-replies"),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
        ])
        .create_with_context(kafka.context())
        .map_err(|e| Error::kafka("create the reply reader", e))?;
    kafka_auth::serve_events(&consumer);
    Ok(consumer)
}

/// Reads the replies until each request is answered or the time is up. Blocking.
fn wait(
    kafka: &KafkaConnection,
    from: &HashMap<String, i64>,
    topics: &[String],
    sent: &[String],
    timeout: Duration,
) -> Result<Answers, Error> {
    let consumer = reader(kafka)?;
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        let offset = from.get(topic).map_or(Offset::Beginning, |o| Offset::Offset(*o));
        assignment.add_partition_offset(topic, 0, offset).map_err(|e| Error::kafka("assign request topics", e))?;
    }
    consumer.assign(&assignment).map_err(|e| Error::kafka("assign request topics", e))?;
    // Per request, the replies of each topic.
    let mut seen: HashMap<String, Vec<ResendReply>> = sent.iter().map(|id| (id.clone(), Vec::new())).collect();
    let answered = |seen: &HashMap<String, Vec<ResendReply>>, id: &String| {
        let replies = &seen[id];
        replies.iter().any(|r| r.error.is_none()) || replies.len() >= topics.len()
    };
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && !sent.iter().all(|id| answered(&seen, id)) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                if let Ok(ResendMessage::Reply(reply)) = decode_message(message.payload().unwrap_or_default()) {
                    if let Some(replies) = seen.get_mut(&reply.id) {
                        replies.push(reply);
                    }
                }
            }
            Some(Err(e)) => tracing::debug!(error = %e, "reading replies"),
            None => {}
        }
    }
    let mut answers = Answers::default();
    for id in sent {
        if !answered(&seen, id) {
            answers.unanswered.push(id.clone());
            continue;
        }
        let replies = seen.remove(id).unwrap_or_default();
        let chosen = replies.iter().find(|r| r.error.is_none()).or(replies.last()).cloned();
        if let Some(reply) = chosen {
            answers.replies.insert(id.clone(), reply);
        }
    }
    Ok(answers)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
