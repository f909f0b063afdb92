//! cdc-source's checkpoint, read from its compacted topic as cdc-source itself reads it
//! (`read_committed`, keyed by `capture.name`, JSON with `written_at_ms`): how old the newest
//! one is says whether the source is alive and making progress. cdc-source writes one with every
//! batch and, while idle, every `delivery.idle_checkpoint_interval_ms`, so only the last records
//! of each partition are read, and the whole topic only when they hold none of this capture's;
//! reading stops at the end, or after a few seconds: a busy source keeps moving the end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use service_kit::connect::KafkaConnection;
use service_kit::kafka_auth::AuthContext;

use super::verdict::CheckpointState;

/// Records read back from each partition's end before reading it whole.
const TAIL: i64 = 64;

/// The state of each `(capture name, checkpoint topic)`. Blocking.
pub fn read(kafka: &KafkaConnection, group: &str, captures: &[(String, String)]) -> Vec<CheckpointState> {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let now_ms = i64::try_from(now_ms).unwrap_or(i64::MAX);
    captures
        .iter()
        .map(|(capture, topic)| {
            let newest = newest_written(kafka, group, topic, capture, Some(TAIL)).and_then(|found| match found {
                Some(at) => Ok(Some(at)),
                None => newest_written(kafka, group, topic, capture, None),
            });
            let (age_seconds, error) = match newest {
                Ok(at) => (at.map(|at| (now_ms - at) / 1000), None),
                Err(e) => (None, Some(e)),
            };
            CheckpointState { capture: capture.clone(), topic: topic.clone(), age_seconds, error }
        })
        .collect()
}

/// When the newest committed checkpoint under `key` in `topic` was written (ms since the epoch),
/// reading the last `tail` records of each partition (all of them: `None`).
fn newest_written(
    kafka: &KafkaConnection,
    group: &str,
    topic: &str,
    key: &str,
    tail: Option<i64>,
) -> Result<Option<i64>, String> {
    let consumer: BaseConsumer<AuthContext> = kafka
        .client_config_with(&[
            ("group.id", &format!("{group}.status")),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "true"),
            ("isolation.level", "read_committed"),
        ])
        .create_with_context(kafka.context())
        .map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout).map_err(|e| e.to_string())?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut list = TopicPartitionList::new();
    // Per partition, the offset from which it counts as read to its end: the end when reading
    // began less the commit marker that follows a transaction's records.
    let mut left = HashMap::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, timeout).map_err(|e| e.to_string())?;
        if high > low {
            let from = tail.map_or(low, |tail| (high - tail).max(low));
            list.add_partition_offset(topic, partition, Offset::Offset(from)).map_err(|e| e.to_string())?;
            left.insert(partition, high - 2);
        }
    }
    if left.is_empty() {
        return Ok(None);
    }
    consumer.assign(&list).map_err(|e| e.to_string())?;
    let mut newest: Option<i64> = None;
    // A source writing all the time moves the end on: what was read by then is recent enough.
    let (deadline, mut quiet_since) = (Instant::now() + Duration::from_secs(10), Instant::now());
    while !left.is_empty() && Instant::now() < deadline && quiet_since.elapsed() < Duration::from_secs(2) {
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(message)) => {
                quiet_since = Instant::now();
                if message.key() == Some(key.as_bytes()) {
                    let written = message.payload().and_then(written_at_ms).or(message.timestamp().to_millis());
                    newest = newest.max(written);
                }
                if left.get(&message.partition()).is_some_and(|end| message.offset() >= *end) {
                    left.remove(&message.partition());
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                left.remove(&partition);
            }
            Some(Err(e)) => return Err(e.to_string()),
        }
    }
    Ok(newest)
}

/// `written_at_ms` of a checkpoint's JSON. Pure.
fn written_at_ms(payload: &[u8]) -> Option<i64> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    value.get("written_at_ms")?.as_i64().filter(|ms| *ms > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_a_checkpoint_was_written_comes_from_its_json() {
        let checkpoint = br#"{"v":1,"resume_token":null,"seq":3,"written_at_ms":1700000000123}"#;
        assert_eq!(written_at_ms(checkpoint), Some(1_700_000_000_123));
        assert_eq!(written_at_ms(br#"{"v":1,"written_at_ms":0}"#), None, "never written: use the record's time");
        assert_eq!(written_at_ms(b"not json"), None);
    }
}
