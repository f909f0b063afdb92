//! The consumer: joins the group, hands each partition's messages to that partition's task
//! (bounded queue: a busy partition pauses the poll), commits durable offsets, and on revoke
//! stops the revoked partitions' tasks, waits for their in-flight writes and commits what is
//! durable before the partitions are released, so a new owner never races the old one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::Error;
use crate::partition::{PartitionTask, Shared};

type Tp = (String, i32);

/// A running partition task.
struct Handle {
    tx: mpsc::Sender<rdkafka::message::OwnedMessage>,
    durable: Arc<AtomicI64>,
    committed: i64,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Partitions {
    tasks: Mutex<HashMap<Tp, Handle>>,
}

impl Partitions {
    fn lock(&self) -> MutexGuard<'_, HashMap<Tp, Handle>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the tasks of `which` (all when None), waits up to `timeout` for their in-flight
    /// writes, and returns the offsets to commit. Blocks: called from the rebalance callback.
    fn stop_blocking(&self, which: Option<&TopicPartitionList>, timeout: Duration) -> TopicPartitionList {
        let stopped: Vec<(Tp, Handle)> = {
            let mut tasks = self.lock();
            let keys: Vec<Tp> = match which {
                Some(list) => list.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect(),
                None => tasks.keys().cloned().collect(),
            };
            keys.into_iter().filter_map(|k| tasks.remove(&k).map(|h| (k, h))).collect()
        };
        for (_, handle) in &stopped {
            handle.stop.cancel();
        }
        let deadline = std::time::Instant::now() + timeout;
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), handle) in stopped {
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            let finished = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async { tokio::time::timeout(remaining, handle.task).await })
            });
            if finished.is_err() {
                tracing::warn!(
                    topic,
                    partition,
                    "in-flight writes did not finish before the drain deadline: abandoned"
                );
            }
            let durable = handle.durable.load(Ordering::Acquire);
            if durable > handle.committed {
                let _ = offsets.add_partition_offset(&topic, partition, Offset::Offset(durable));
            }
        }
        offsets
    }

    /// Durable offsets not yet committed.
    fn to_commit(&self) -> TopicPartitionList {
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), handle) in self.lock().iter_mut() {
            let durable = handle.durable.load(Ordering::Acquire);
            if durable > handle.committed {
                let _ = offsets.add_partition_offset(topic, *partition, Offset::Offset(durable));
                handle.committed = durable;
            }
        }
        offsets
    }
}

struct Context {
    partitions: Arc<Partitions>,
    drain_timeout: Duration,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            let offsets = self.partitions.stop_blocking(Some(revoked), self.drain_timeout);
            tracing::info!(partitions = revoked.count(), "partitions revoked: in-flight writes finished");
            if offsets.count() > 0 {
                if let Err(e) = consumer.commit(&offsets, CommitMode::Sync) {
                    tracing::warn!(error = %e, "commit on revoke failed: the next owner repeats some writes");
                }
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            tracing::info!(partitions = assigned.count(), "partitions assigned");
        }
    }
}

pub struct Dispatcher {
    consumer: Arc<StreamConsumer<Context>>,
    partitions: Arc<Partitions>,
    shared: Arc<Shared>,
    queue: usize,
    commit_interval: Duration,
    drain_timeout: Duration,
}

impl Dispatcher {
    pub fn new(config: &Config, shared: Arc<Shared>) -> Result<Self, Error> {
        let partitions = Arc::new(Partitions::default());
        let drain_timeout = Duration::from_millis(config.apply.drain_timeout_ms);
        let context = Context { partitions: partitions.clone(), drain_timeout };
        let consumer: StreamConsumer<Context> = config
            .kafka
            .client_config_with(&[
                ("group.id", &config.consume.group_id),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("isolation.level", "read_committed"),
                ("partition.assignment.strategy", "cooperative-sticky"),
                ("session.timeout.ms", "30000"),
                ("max.poll.interval.ms", "300000"),
                ("topic.metadata.refresh.interval.ms", "10000"),
            ])
            .create_with_context(context)
            .map_err(|e| Error::kafka("create consumer", e))?;
        let topics: Vec<&str> = config.consume.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| Error::kafka("subscribe", e))?;
        Ok(Self {
            consumer: Arc::new(consumer),
            partitions,
            shared,
            queue: config.consume.partition_queue,
            commit_interval: Duration::from_millis(config.consume.commit_interval_ms),
            drain_timeout,
        })
    }

    /// Consumes until `shutdown`; then stops every partition task, commits and leaves the group.
    pub async fn run(self, beat: service_kit::health::LoopBeat, shutdown: CancellationToken) -> Result<(), Error> {
        let mut commit_tick = tokio::time::interval(self.commit_interval);
        let lag = tokio::spawn(lag_reporter(self.consumer.clone(), self.partitions.clone(), self.shared.clone()));
        loop {
            beat.beat();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = commit_tick.tick() => self.commit(CommitMode::Async),
                message = self.consumer.recv() => match message {
                    Ok(message) => self.dispatch(message.detach()).await,
                    // A pattern that matches no topic yet is normal before the source has written.
                    Err(e) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition) => {
                        tracing::debug!(error = %e, "subscribed topics not available yet");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "consumer error");
                        self.shared.health.set_not_ready("kafka", e.to_string());
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }
        let offsets = self.partitions.stop_blocking(None, self.drain_timeout);
        if offsets.count() > 0 {
            if let Err(e) = self.consumer.commit(&offsets, CommitMode::Sync) {
                tracing::warn!(error = %e, "final commit failed: a restart repeats some writes");
            }
        }
        lag.abort();
        self.consumer.unsubscribe();
        Ok(())
    }

    async fn dispatch(&self, message: rdkafka::message::OwnedMessage) {
        self.shared.health.set_ready("kafka");
        let key = (message.topic().to_string(), message.partition());
        let tx = {
            let mut tasks = self.partitions.lock();
            let tx = tasks.entry(key.clone()).or_insert_with(|| self.spawn(&key, message.offset())).tx.clone();
            self.shared.metrics.assigned_partitions.set(i64::try_from(tasks.len()).unwrap_or(0));
            tx
        };
        if tx.send(message).await.is_err() {
            tracing::debug!(topic = %key.0, partition = key.1, "message for a stopped partition task dropped: it is redelivered to the next owner");
        }
    }

    fn spawn(&self, (topic, partition): &Tp, first_offset: i64) -> Handle {
        let (tx, rx) = mpsc::channel(self.queue);
        let durable = Arc::new(AtomicI64::new(first_offset));
        let stop = CancellationToken::new();
        let task = PartitionTask {
            topic: topic.clone(),
            partition: *partition,
            rx,
            shared: self.shared.clone(),
            durable: durable.clone(),
            stop: stop.clone(),
        };
        tracing::info!(topic, partition, offset = first_offset, "partition task started");
        Handle { tx, durable, committed: first_offset, stop, task: tokio::spawn(task.run()) }
    }

    fn commit(&self, mode: CommitMode) {
        let offsets = self.partitions.to_commit();
        if offsets.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.commit(&offsets, mode) {
            tracing::warn!(error = %e, "offset commit failed: retried with the next one");
        }
    }
}

/// Every few seconds: high watermark minus the durable offset, per owned partition.
async fn lag_reporter(consumer: Arc<StreamConsumer<Context>>, partitions: Arc<Partitions>, shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let owned: Vec<(Tp, i64)> =
            partitions.lock().iter().map(|(tp, h)| (tp.clone(), h.durable.load(Ordering::Acquire))).collect();
        let consumer = consumer.clone();
        let lags = tokio::task::spawn_blocking(move || {
            owned
                .into_iter()
                .filter_map(|((topic, partition), durable)| {
                    let (_, high) = consumer.fetch_watermarks(&topic, partition, Duration::from_secs(2)).ok()?;
                    Some((topic, partition, (high - durable).max(0)))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (topic, partition, lag) in lags {
            shared.metrics.consumer_lag.with_label_values(&[&topic, &partition.to_string()]).set(lag);
        }
    }
}
