//! The consistency point: the source cluster time (t, i) such that every change with a cluster
//! time at or before it, of every partition of every topic this configuration reads, is applied
//! to the target (by any replica). The running sink exports it, `status` and `verify` read it;
//! all three read it the same way, in this order, so that it never names a moment the target
//! has not reached:
//!
//! 1. the watermark each partition has passed, as the replicas recorded it
//!    (`<metadata_database>.progress`);
//! 2. then the topics the subscription matches, from fresh cluster metadata (not the consumer's
//!    subscription, which lags): a topic missing from it did not exist when the watermarks of
//!    step 1 were written, and its changes all come after them (cdc-source creates a topic
//!    before writing a change to it, and writes a watermark after the changes it covers);
//! 3. a partition with no recorded watermark (a topic that just appeared, not read yet) holds
//!    the point just before its first record: changes reach a partition in cluster-time order,
//!    so nothing on it is older. When its first record cannot say (none yet, a snapshot copy,
//!    records removed by retention, a topic whose metadata has an error), the point is unknown.
//!
//! What a user may conclude from (t, i): [`complete_second`].
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the consistency point: every partition of every topic read, all replicas |
//! | `progress.rs` | watermarks passed, recorded for all replicas; the point exported; lag, memory |

pub(crate) mod progress;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envelope::{ClusterTime, Event, Op, Snapshot};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use service_kit::connect::KafkaConnection;
use service_kit::kafka_auth::AuthContext;

use crate::config::Config;
use crate::consume::offsets::Tp;
use crate::consume::subscription::Subscription;
use crate::error::{Common, Error, Failure};
use crate::point::progress::ProgressBook;

/// The last second every change of which is applied: (t, i) covers second t whole only when i is
/// the last increment a second can have; otherwise only the seconds before t. "Every change the
/// source made at or before second `complete_second` is on the target." Pure.
pub fn complete_second(at: ClusterTime) -> u32 {
    if at.i == u32::MAX {
        at.t
    } else {
        at.t.saturating_sub(1)
    }
}

/// The cluster time just before `at`.
fn before(at: ClusterTime) -> ClusterTime {
    match at.i.checked_sub(1) {
        Some(i) => ClusterTime { t: at.t, i },
        None => ClusterTime { t: at.t.saturating_sub(1), i: u32::MAX },
    }
}

/// What a partition's first record proves: no change on the partition is at or before this
/// time. None when it proves nothing (a snapshot copy, a snapshot's DDL, which comes before the
/// copies of what existed at its time, an event without the source's own cluster time, a
/// tombstone). Pure.
pub fn before_first(event: &Event) -> Option<ClusterTime> {
    match event {
        Event::Watermark(w) => Some(w.cluster_time),
        Event::Change(c) if c.position.exact && c.source.snapshot == Snapshot::False && c.op != Op::Read => {
            Some(before(c.position.cluster_time))
        }
        Event::Control(c) if c.position.exact && c.source.snapshot == Snapshot::False => {
            Some(before(c.position.cluster_time))
        }
        _ => None,
    }
}

/// The least of `times`; none when one is unknown or there are none. Pure.
pub fn least<'a>(times: impl IntoIterator<Item = &'a Option<ClusterTime>>) -> Option<ClusterTime> {
    let mut least: Option<ClusterTime> = None;
    let mut any = false;
    for time in times {
        let time = (*time)?;
        any = true;
        least = Some(least.map_or(time, |l| l.min(time)));
    }
    least.filter(|_| any)
}

/// One reading: every partition read, with the time up to which it is applied (none: unknown).
#[derive(Debug, Default, Clone)]
pub struct Reading {
    pub partitions: BTreeMap<Tp, Option<ClusterTime>>,
}

impl Reading {
    /// The consistency point; none while a partition's is unknown (or nothing is read).
    pub fn point(&self) -> Option<ClusterTime> {
        least(self.partitions.values())
    }

    /// One topic's point.
    pub fn topic(&self, topic: &str) -> Option<ClusterTime> {
        least(self.partitions.iter().filter(|((t, _), _)| t == topic).map(|(_, at)| at))
    }

    /// The partitions whose point is unknown (partition -1: the topic's metadata had an error).
    pub fn unknown(&self) -> Vec<&Tp> {
        self.partitions.iter().filter(|(_, at)| at.is_none()).map(|(tp, _)| tp).collect()
    }
}

/// Reads the consistency point as described at the top, for the service and the commands alike.
pub struct PointReader {
    consumer: Arc<BaseConsumer<AuthContext>>,
    kafka: KafkaConnection,
    group: String,
    subscription: Subscription,
    pub book: ProgressBook,
    /// What the first record of partitions without a recorded watermark proved (it stays true).
    first: Mutex<HashMap<Tp, ClusterTime>>,
}

impl PointReader {
    pub fn new(config: &Config, target: &mongodb::Client) -> Result<Self, Error> {
        Self::with_book(config, ProgressBook::new(target, &config.apply.metadata_database, &config.consume.group_id))
    }

    /// Reads the watermarks `book` holds.
    pub fn with_book(config: &Config, book: ProgressBook) -> Result<Self, Error> {
        let consumer: BaseConsumer<AuthContext> = config
            .kafka
            .client_config()
            .create_with_context(config.kafka.context())
            .map_err(|e| Error::kafka("create a metadata client", e))?;
        let subscription = Subscription::new(&config.consume.topics, &config.consume.dead_letter_topic)
            .map_err(|e| Error::fatal(format!("consume.topics: {e}")))?;
        let consumer = Arc::new(consumer);
        // Its queue is served while it lives: MSK IAM tokens are set from there.
        let weak = Arc::downgrade(&consumer);
        std::thread::spawn(move || {
            while let Some(consumer) = weak.upgrade() {
                let _ = consumer.poll(Duration::from_millis(200));
            }
        });
        Ok(Self {
            consumer,
            kafka: config.kafka.clone(),
            group: config.consume.group_id.clone(),
            subscription,
            book,
            first: Mutex::new(HashMap::new()),
        })
    }

    /// Reads the recorded watermarks, then the partitions, then what is needed of first records.
    pub async fn read(&self) -> Result<Reading, Error> {
        let recorded = self.book.watermarks().await?;
        let topics = self.topics().await?;
        let mut reading = Reading::default();
        let mut unread = Vec::new();
        for (topic, partitions) in topics {
            let Some(partitions) = partitions else {
                reading.partitions.insert((topic, -1), None);
                continue;
            };
            for partition in partitions {
                let tp = (topic.clone(), partition);
                let at = recorded.get(&tp).copied().or_else(|| self.first_known(&tp));
                if at.is_none() {
                    unread.push(tp.clone());
                }
                reading.partitions.insert(tp, at);
            }
        }
        if !unread.is_empty() {
            let (kafka, group) = (self.kafka.clone(), self.group.clone());
            let found = tokio::task::spawn_blocking(move || first_records(&kafka, &group, &unread))
                .await
                .map_err(|e| Error::fatal(format!("first-record task: {e}")))?
                .map_err(|reason| Error::Common(Common::Kafka(Failure::retriable("first records", reason))))?;
            let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
            for (tp, at) in found {
                first.insert(tp.clone(), at);
                reading.partitions.insert(tp, Some(at));
            }
        }
        self.first.lock().unwrap_or_else(|p| p.into_inner()).retain(|tp, _| !recorded.contains_key(tp));
        Ok(reading)
    }

    /// The point up to which the target equals the source; none while unknown.
    pub async fn point(&self) -> Result<Option<ClusterTime>, Error> {
        Ok(self.read().await?.point())
    }

    fn first_known(&self, tp: &Tp) -> Option<ClusterTime> {
        self.first.lock().unwrap_or_else(|p| p.into_inner()).get(tp).copied()
    }

    /// Every topic the subscription matches with its partitions (none: its metadata has an
    /// error), from the cluster now.
    async fn topics(&self) -> Result<Vec<(String, Option<Vec<i32>>)>, Error> {
        let (consumer, subscription) = (self.consumer.clone(), self.subscription.clone());
        tokio::task::spawn_blocking(move || {
            let metadata = consumer.fetch_metadata(None, Duration::from_secs(10)).map_err(|e| e.to_string())?;
            Ok(metadata
                .topics()
                .iter()
                .filter(|t| subscription.reads(t.name()))
                .map(|t| {
                    let partitions: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
                    let usable = t.error().is_none() && !partitions.is_empty();
                    (t.name().to_string(), usable.then_some(partitions))
                })
                .collect())
        })
        .await
        .map_err(|e| Error::fatal(format!("metadata task: {e}")))?
        .map_err(|reason: String| Error::Common(Common::Kafka(Failure::retriable("metadata", reason))))
    }
}

/// The first committed record of each partition, where it proves something (see
/// [`before_first`]); partitions whose records do not all remain since offset 0, that hold none
/// yet, or that do not answer within a few seconds are left out. Blocking.
fn first_records(kafka: &KafkaConnection, group: &str, tps: &[Tp]) -> Result<Vec<(Tp, ClusterTime)>, String> {
    let consumer: BaseConsumer<AuthContext> = kafka
        .client_config_with(&[
            ("group.id", &format!("{group}.point-reader")),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
            ("auto.offset.reset", "earliest"),
        ])
        .create_with_context(kafka.context())
        .map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(5);
    let mut list = TopicPartitionList::new();
    for (topic, partition) in tps {
        // Under read_committed the high offset is the last stable one: 0 means nothing committed.
        let (low, high) = consumer.fetch_watermarks(topic, *partition, timeout).map_err(|e| e.to_string())?;
        if low == 0 && high > 0 {
            list.add_partition_offset(topic, *partition, Offset::Beginning).map_err(|e| e.to_string())?;
        }
    }
    let mut found = Vec::new();
    if list.count() == 0 {
        return Ok(found);
    }
    consumer.assign(&list).map_err(|e| e.to_string())?;
    let mut pending: Vec<Tp> = list.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !pending.is_empty() && Instant::now() < deadline {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else { continue };
        let tp = (message.topic().to_string(), message.partition());
        let Some(at) = pending.iter().position(|p| *p == tp).map(|i| pending.swap_remove(i)) else { continue };
        if let Ok(event) = envelope::decode(message.key(), message.payload()) {
            if let Some(before) = before_first(&event) {
                found.push((at, before));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envelope::{Position, SourceInfo, Watermark};

    #[test]
    fn a_point_inside_a_second_completes_only_the_seconds_before() {
        assert_eq!(complete_second(ClusterTime { t: 100, i: 7 }), 99, "a later change of second 100 may be missing");
        assert_eq!(complete_second(ClusterTime { t: 100, i: 0 }), 99);
        assert_eq!(complete_second(ClusterTime { t: 100, i: u32::MAX }), 100, "second 100 is complete");
    }

    #[test]
    fn the_point_is_the_least_and_unknown_while_one_is_unknown() {
        let at = |t: u32| Some(ClusterTime { t, i: 1 });
        assert_eq!(least(&[at(20), at(10)]), at(10));
        assert_eq!(least(&[at(20), None, at(10)]), None, "a partition that has said nothing yet");
        assert_eq!(least(&[]), None, "nothing read: no point");
        let mut reading = Reading::default();
        reading.partitions.insert(("a".into(), 0), at(5));
        reading.partitions.insert(("b".into(), 0), at(9));
        assert_eq!((reading.point(), reading.topic("b")), (at(5), at(9)));
        reading.partitions.insert(("c".into(), -1), None);
        assert_eq!(reading.point(), None);
        assert_eq!(reading.unknown(), vec![&("c".to_string(), -1)]);
    }

    #[test]
    fn a_first_record_proves_nothing_older_is_on_its_partition() {
        let watermark = Event::Watermark(Box::new(Watermark {
            cluster_time: ClusterTime { t: 50, i: 3 },
            source: SourceInfo::default(),
            ts_ms: 0,
        }));
        assert_eq!(before_first(&watermark), Some(ClusterTime { t: 50, i: 3 }));
        let change = |snapshot: Snapshot, exact: bool, i: u32| {
            let position = Position { cluster_time: ClusterTime { t: 60, i }, exact, ..Position::default() };
            Event::Change(Box::new(envelope::ChangeEvent {
                op: if snapshot == Snapshot::False { Op::Create } else { Op::Read },
                ns: envelope::Namespace::new("d", "c"),
                document_key: bson::doc! {"_id": 1},
                before: None,
                after: None,
                update_description: None,
                source: SourceInfo { snapshot, ..SourceInfo::default() },
                transaction: None,
                position,
                ts_ms: 0,
                resend: None,
            }))
        };
        assert_eq!(before_first(&change(Snapshot::False, true, 4)), Some(ClusterTime { t: 60, i: 3 }));
        assert_eq!(before_first(&change(Snapshot::False, true, 0)), Some(ClusterTime { t: 59, i: u32::MAX }));
        assert_eq!(before_first(&change(Snapshot::True, true, 4)), None, "a snapshot copy is not ordered");
        assert_eq!(before_first(&change(Snapshot::False, false, 4)), None, "a rebuilt position is approximate");
        assert_eq!(before_first(&Event::Tombstone { id: bson::Bson::Int32(1) }), None);
        let control = |snapshot: Snapshot| {
            Event::Control(Box::new(envelope::ControlEvent {
                ddl: envelope::Ddl::Create { ns: envelope::Namespace::new("d", "c"), options: bson::Document::new() },
                markers: 1,
                topics: Default::default(),
                source: SourceInfo { snapshot, ..SourceInfo::default() },
                position: Position { cluster_time: ClusterTime { t: 70, i: 2 }, exact: true, ..Position::default() },
                ts_ms: 0,
            }))
        };
        assert_eq!(
            before_first(&control(Snapshot::False)),
            Some(ClusterTime { t: 70, i: 1 }),
            "a streamed or listed DDL"
        );
        assert_eq!(before_first(&control(Snapshot::True)), None, "a snapshot's DDL: its copies follow");
    }
}
