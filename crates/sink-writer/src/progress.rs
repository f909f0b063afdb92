//! How far the sink is. Every second: each owned partition's watermark (the source cluster time
//! up to which it is applied) is recorded in `<metadata_database>.progress`, so that every
//! replica, `verify` and `status` read the same; the consistency point — the least watermark
//! over every partition of every topic read, across replicas — and its lag are exported. Every
//! few seconds: consumer lag per owned partition and the bytes held against the memory budget.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, DateTime, Document};
use envelope::ClusterTime;
use futures::TryStreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use service_kit::budget::MemoryBudget;
use service_kit::kafka_auth::AuthContext;
use tokio::sync::watch;

use crate::config::Config;
use crate::consumer::Kafka;
use crate::error::{Error, Failure};
use crate::metrics::Metrics;
use crate::offsets::Tp;
use crate::partitions::Partitions;
use crate::subscription::Subscription;

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

    /// The consistency point over `partitions`: their least watermark; `None` while one of them
    /// has none yet.
    pub async fn point(&self, partitions: &[Tp]) -> Result<Option<ClusterTime>, Error> {
        let watermarks = self.watermarks().await?;
        Ok(least(partitions, &watermarks))
    }
}

/// The least watermark of `partitions`, none when one of them has none (or there are none).
pub fn least(partitions: &[Tp], watermarks: &HashMap<Tp, ClusterTime>) -> Option<ClusterTime> {
    if partitions.is_empty() {
        return None;
    }
    partitions.iter().map(|tp| watermarks.get(tp).copied()).collect::<Option<Vec<_>>>()?.into_iter().min()
}

/// Every partition of the topics `wanted` says yes to, from the cluster's metadata.
pub fn partitions_of<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    wanted: impl Fn(&str) -> bool,
) -> Result<Vec<Tp>, String> {
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| wanted(t.name()))
        .flat_map(|t| t.partitions().iter().map(|p| (t.name().to_string(), p.id())))
        .collect())
}

/// The consistency point as any process (`verify`, `status`) sees it: the partitions of the
/// topics the configuration reads, and the watermarks the replicas recorded.
pub struct PointReader {
    consumer: Arc<BaseConsumer<AuthContext>>,
    subscription: Subscription,
    pub book: ProgressBook,
}

impl PointReader {
    pub fn new(config: &Config, target: &mongodb::Client) -> Result<Self, Error> {
        let consumer: BaseConsumer<AuthContext> = config
            .kafka
            .client_config()
            .create_with_context(config.kafka.context())
            .map_err(|e| Error::kafka("create a metadata client", e))?;
        let subscription = Subscription::new(&config.consume.topics, &config.consume.dead_letter_topic)
            .map_err(|e| Error::Fatal(format!("consume.topics: {e}")))?;
        let book = ProgressBook::new(target, &config.apply.metadata_database, &config.consume.group_id);
        let consumer = Arc::new(consumer);
        // Its queue is served while it lives: MSK IAM tokens are set from there.
        let weak = Arc::downgrade(&consumer);
        std::thread::spawn(move || {
            while let Some(consumer) = weak.upgrade() {
                let _ = consumer.poll(Duration::from_millis(200));
            }
        });
        Ok(Self { consumer, subscription, book })
    }

    /// Every partition of every topic read.
    pub async fn partitions(&self) -> Result<Vec<Tp>, Error> {
        let (consumer, subscription) = (self.consumer.clone(), self.subscription.clone());
        tokio::task::spawn_blocking(move || partitions_of(consumer.as_ref(), |t| subscription.reads(t)))
            .await
            .map_err(|e| Error::Fatal(format!("metadata task: {e}")))?
            .map_err(|reason| Error::Kafka(Failure::new("metadata", true, reason)))
    }

    /// The point up to which the target equals the source; none before every partition read
    /// passed a watermark.
    pub async fn point(&self) -> Result<Option<ClusterTime>, Error> {
        let partitions = self.partitions().await?;
        self.book.point(&partitions).await
    }
}

/// Reports until aborted.
pub async fn report(
    consumer: Arc<Kafka>,
    partitions: Arc<Partitions>,
    metrics: Metrics,
    budget: Arc<MemoryBudget>,
    book: ProgressBook,
    subscribed: watch::Receiver<BTreeSet<String>>,
) {
    let mut recorded: BTreeMap<Tp, ClusterTime> = BTreeMap::new();
    let mut all: Vec<Tp> = Vec::new();
    for tick in 0_u64.. {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let owned = partitions.marks();
        let reached: Vec<(Tp, ClusterTime)> = owned
            .iter()
            .filter_map(|(tp, marks)| marks.consistent().map(|at| (tp.clone(), at)))
            .filter(|(tp, at)| recorded.get(tp) != Some(at))
            .collect();
        match book.record(&reached).await {
            Ok(()) => recorded.extend(reached),
            Err(e) => tracing::debug!(error = %e, "cannot record progress now"),
        }
        if tick % 5 == 0 {
            let topics = subscribed.borrow().clone();
            let (fetcher, durable) =
                (consumer.clone(), owned.iter().map(|(tp, m)| (tp.clone(), m.durable())).collect());
            if let Ok((listed, lags)) =
                tokio::task::spawn_blocking(move || lags_and_partitions(&fetcher, &topics, durable)).await
            {
                all = listed;
                for ((topic, partition), lag) in lags {
                    metrics.consumer_lag.with_label_values(&[&topic, &partition.to_string()]).set(lag);
                }
            }
            metrics.buffered_bytes.set(i64::try_from(budget.used()).unwrap_or(i64::MAX));
        }
        if let Ok(Some(point)) = book.point(&all).await {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            metrics.consistent_up_to.set(i64::from(point.t));
            metrics.consistency_lag_seconds.set(i64::try_from(now.saturating_sub(u64::from(point.t))).unwrap_or(0));
        }
    }
}

/// The partitions of the topics read, and high watermark minus durable offset per owned one.
fn lags_and_partitions(
    consumer: &Kafka,
    topics: &BTreeSet<String>,
    durable: Vec<(Tp, i64)>,
) -> (Vec<Tp>, Vec<(Tp, i64)>) {
    let listed = partitions_of(consumer, |t| topics.contains(t)).unwrap_or_default();
    let lags = durable
        .into_iter()
        .filter_map(|(tp, durable)| {
            let (_, high) = consumer.fetch_watermarks(&tp.0, tp.1, Duration::from_secs(2)).ok()?;
            Some((tp, (high - durable).max(0)))
        })
        .collect();
    (listed, lags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_point_is_the_least_watermark_and_unknown_while_one_is_missing() {
        let tp = |p: i32| ("t".to_string(), p);
        let at = |t: u32| ClusterTime { t, i: 1 };
        let watermarks: HashMap<Tp, ClusterTime> = [(tp(0), at(20)), (tp(1), at(10))].into_iter().collect();
        assert_eq!(least(&[tp(0), tp(1)], &watermarks), Some(at(10)));
        assert_eq!(least(&[tp(0), tp(1), tp(2)], &watermarks), None, "partition 2 has said nothing yet");
        assert_eq!(least(&[], &watermarks), None);
    }
}
