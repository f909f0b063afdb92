//! The request topic, read on a thread of its own (`read_committed`, from the checkpoint's offset)
//! into a small bounded channel: the stream loop takes one request at a time, and the thread
//! waits while the channel is full.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use envelope::resend::{decode_message, ResendMessage, ResendRequest};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use service_kit::connect::KafkaConnection;
use service_kit::kafka_auth::{self, AuthContext};
use tokio::sync::mpsc;

use crate::error::Error;

/// Requests waiting for the stream loop.
const WAITING: usize = 4;

/// A record of the request topic that asks for something.
#[derive(Debug)]
pub struct Incoming {
    pub offset: i64,
    /// The request, or (by its key) why it cannot be read.
    pub request: Result<ResendRequest, (String, String)>,
}

/// The reading thread's end: dropping it stops the thread.
pub struct Requests {
    rx: mpsc::Receiver<Incoming>,
    stop: Arc<AtomicBool>,
}

impl Requests {
    /// Starts reading `topic` (partition 0) at `from` (none: its start).
    pub async fn start(kafka: &KafkaConnection, topic: &str, from: Option<i64>) -> Result<Self, Error> {
        let (kafka, topic) = (kafka.clone(), topic.to_string());
        let consumer = tokio::task::spawn_blocking(move || consumer(&kafka, &topic, from))
            .await
            .map_err(|e| Error::fatal(format!("request reader task: {e}")))??;
        let (tx, rx) = mpsc::channel(WAITING);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("resend-requests".into())
            .spawn(move || read(&consumer, &tx, &stopped))
            .map_err(|e| Error::fatal(format!("request reader thread: {e}")))?;
        Ok(Self { rx, stop })
    }

    /// The next request, if one is waiting.
    pub fn next(&mut self) -> Option<Incoming> {
        self.rx.try_recv().ok()
    }
}

impl Drop for Requests {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn consumer(kafka: &KafkaConnection, topic: &str, from: Option<i64>) -> Result<BaseConsumer<AuthContext>, Error> {
    let consumer: BaseConsumer<AuthContext> = kafka
        .client_config_with(&[
            ("group.id", "cdc-source-request-reader"),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
            ("auto.offset.reset", "earliest"),
        ])
        .create_with_context(kafka.context())
        .map_err(|e| Error::kafka("request reader", e))?;
    kafka_auth::serve_events(&consumer);
    let mut assignment = TopicPartitionList::new();
    let offset = from.map_or(Offset::Beginning, Offset::Offset);
    assignment.add_partition_offset(topic, 0, offset).map_err(|e| Error::kafka("request reader", e))?;
    consumer.assign(&assignment).map_err(|e| Error::kafka("request reader", e))?;
    Ok(consumer)
}

/// Polls until stopped or the stream loop is gone. Replies (this topic holds them too) pass by.
fn read(consumer: &BaseConsumer<AuthContext>, tx: &mpsc::Sender<Incoming>, stop: &AtomicBool) {
    let mut errors = service_kit::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    while !stop.load(Ordering::Acquire) {
        let message = match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the request topic now");
                std::thread::sleep(errors.next_delay());
                continue;
            }
        };
        errors.reset();
        let key = message.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
        let request = match decode_message(message.payload().unwrap_or_default()) {
            Ok(ResendMessage::Reply(_)) => continue,
            Ok(ResendMessage::Request(request)) => Ok(request),
            Err(reason) => Err((key, reason)),
        };
        if tx.blocking_send(Incoming { offset: message.offset(), request }).is_err() {
            return;
        }
    }
}
