//! How far the sink is. Every second: each owned partition's watermark (the source cluster time
//! up to which it is applied) is recorded in `<metadata_database>.progress`, so that every
//! replica, `verify` and `status` read the same; the consistency point (`point.rs`: the least
//! over every partition of every topic read, across replicas) is exported as the last whole
//! second it completes, with its lag. Every few seconds: consumer lag per owned partition and
//! the bytes held against the memory budget.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, DateTime, Document};
use envelope::ClusterTime;
use futures::TryStreamExt;
use rdkafka::consumer::Consumer;
use service_kit::budget::MemoryBudget;

use crate::consume::consumer::Kafka;
use crate::consume::offsets::Tp;
use crate::consume::partitions::Partitions;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::point::{complete_second, PointReader};

/// The watermarks of a consumer group's partitions, in the target's metadata database.
#[derive(Clone)]
pub struct ProgressBook {
    coll: mongodb::Collection<Document>,
    group: String,
}

impl ProgressBook {
    pub fn new(client: &mongodb::Client, metadata_database: &str, group: &str) -> Self {
        Self { coll: client.database(metadata_database).collection("progress"), group: group.to_string() }
    }

    /// Records the watermarks of partitions this replica owns.
    pub async fn record(&self, reached: &[(Tp, ClusterTime)]) -> Result<(), Error> {
        for ((topic, partition), at) in reached {
            let id = format!("{}|{topic}|{partition}", self.group);
            let at: bson::Timestamp = (*at).into();
            self.coll
                .update_one(
                    doc! {"_id": &id},
                    doc! {"$max": {"watermark": at}, "$set": {"group": &self.group, "topic": topic,
                    "partition": partition, "updated_at": DateTime::now()}},
                )
                .upsert(true)
                .await
                .map_err(|e| Error::mongo("record progress", e))?;
        }
        Ok(())
    }

    /// Every recorded partition's watermark.
    pub async fn watermarks(&self) -> Result<HashMap<Tp, ClusterTime>, Error> {
        let found: Vec<Document> = self
            .coll
            .find(doc! {"group": &self.group})
            .await
            .map_err(|e| Error::mongo("read progress", e))?
            .try_collect()
            .await
            .map_err(|e| Error::mongo("read progress", e))?;
        Ok(found
            .into_iter()
            .filter_map(|d| {
                let tp = (d.get_str("topic").ok()?.to_string(), d.get_i32("partition").ok()?);
                Some((tp, d.get_timestamp("watermark").ok()?.into()))
            })
            .collect())
    }
}

/// Reports until aborted.
pub async fn report(
    consumer: Arc<Kafka>,
    partitions: Arc<Partitions>,
    metrics: Metrics,
    budget: Arc<MemoryBudget>,
    point: Arc<PointReader>,
) {
    let mut passed = Passed::default();
    let mut claimed = 0_u32;
    for tick in 0_u64.. {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let owned = partitions.marks();
        // The watermark first, then the durable offset: the offset is then at or past it.
        for (tp, marks) in &owned {
            if let Some(at) = marks.consistent() {
                passed.seen(tp, at, marks.durable());
            }
        }
        let fetcher = consumer.clone();
        match tokio::task::spawn_blocking(move || committed(&fetcher)).await {
            Ok(Ok(committed)) => {
                let reached = passed.committed(&committed);
                if let Err(e) = point.book.record(&reached).await {
                    tracing::debug!(error = %e, "cannot record progress now");
                    passed.unrecorded(reached);
                }
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot read committed offsets now"),
            Err(_) => {}
        }
        passed.keep_only(&owned);
        if tick % 5 == 0 {
            let (fetcher, durable) =
                (consumer.clone(), owned.iter().map(|(tp, m)| (tp.clone(), m.durable())).collect());
            if let Ok(lags) = tokio::task::spawn_blocking(move || lags(&fetcher, durable)).await {
                for ((topic, partition), lag) in lags {
                    metrics.consumer_lag.with_label_values(&[&topic, &partition.to_string()]).set(lag);
                }
            }
            metrics.buffered_bytes.set(i64::try_from(budget.used()).unwrap_or(i64::MAX));
        }
        // Unknown (a partition has not passed a watermark yet): the second claimed last stays
        // true, since the target only moves forward.
        match point.point().await {
            Ok(Some(at)) => claimed = claimed.max(complete_second(at)),
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read the consistency point now"),
        }
        if claimed > 0 {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            metrics.consistent_up_to.set(i64::from(claimed));
            metrics.consistency_lag_seconds.set(i64::try_from(now.saturating_sub(u64::from(claimed))).unwrap_or(0));
        }
    }
}

/// Watermarks passed by owned partitions, recorded only once the offset they were passed at is
/// committed: a crash makes the next owner write again from the committed offset, and writes of
/// records before a recorded watermark would take documents back behind it for a moment. Pure.
#[derive(Debug, Default)]
struct Passed {
    /// Per partition: (durable offset when seen, watermark), oldest first.
    waiting: HashMap<Tp, Vec<(i64, ClusterTime)>>,
    last: HashMap<Tp, ClusterTime>,
}

impl Passed {
    fn seen(&mut self, tp: &Tp, at: ClusterTime, durable: i64) {
        if self.last.get(tp).is_some_and(|last| *last >= at) {
            return;
        }
        self.last.insert(tp.clone(), at);
        self.waiting.entry(tp.clone()).or_default().push((durable, at));
    }

    /// The newest watermark per partition whose offset `committed` (next offset to read) covers.
    fn committed(&mut self, committed: &HashMap<Tp, i64>) -> Vec<(Tp, ClusterTime)> {
        let mut reached = Vec::new();
        for (tp, waiting) in &mut self.waiting {
            let Some(&done) = committed.get(tp) else { continue };
            let covered = waiting.iter().take_while(|(durable, _)| *durable <= done).count();
            if let Some((_, at)) = waiting.drain(..covered).next_back() {
                reached.push((tp.clone(), at));
            }
        }
        reached
    }

    /// Recording failed: try again next time.
    fn unrecorded(&mut self, reached: Vec<(Tp, ClusterTime)>) {
        for (tp, at) in reached {
            self.waiting.entry(tp).or_default().insert(0, (i64::MIN, at));
        }
    }

    /// Forgets partitions no longer owned (a new owner records its own).
    fn keep_only(&mut self, owned: &[(Tp, crate::consume::offsets::Marks)]) {
        self.waiting.retain(|tp, _| owned.iter().any(|(o, _)| o == tp));
        self.last.retain(|tp, _| owned.iter().any(|(o, _)| o == tp));
    }
}

/// The group's committed offsets of the partitions assigned.
fn committed(consumer: &Kafka) -> Result<HashMap<Tp, i64>, rdkafka::error::KafkaError> {
    let list = consumer.committed(Duration::from_secs(5))?;
    Ok(list
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect())
}

/// High watermark minus durable offset, per owned partition.
fn lags(consumer: &Kafka, durable: Vec<(Tp, i64)>) -> Vec<(Tp, i64)> {
    durable
        .into_iter()
        .filter_map(|(tp, durable)| {
            let (_, high) = consumer.fetch_watermarks(&tp.0, tp.1, Duration::from_secs(2)).ok()?;
            Some((tp, (high - durable).max(0)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watermark_is_recorded_once_the_offset_it_was_passed_at_is_committed() {
        let tp = ("t".to_string(), 0);
        let at = |t: u32| ClusterTime { t, i: 1 };
        let mut passed = Passed::default();
        passed.seen(&tp, at(10), 100);
        passed.seen(&tp, at(10), 120);
        passed.seen(&tp, at(12), 150);
        let committed = |o: i64| [(tp.clone(), o)].into_iter().collect::<HashMap<Tp, i64>>();
        assert_eq!(passed.committed(&committed(99)), vec![], "a restart would write again from 99");
        assert_eq!(passed.committed(&committed(120)), vec![(tp.clone(), at(10))]);
        assert_eq!(passed.committed(&committed(120)), vec![], "recorded already");
        passed.unrecorded(vec![(tp.clone(), at(10))]);
        assert_eq!(passed.committed(&committed(200)), vec![(tp.clone(), at(12))], "the newest covered");
        passed.keep_only(&[]);
        assert!(passed.waiting.is_empty() && passed.last.is_empty());
    }
}
