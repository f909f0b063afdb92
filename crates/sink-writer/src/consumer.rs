//! The consumer: joins the group and, on every assignment, splits each new partition's queue
//! off the consumer (`split_partition_queue`) and gives it to a task of its own, so partitions
//! fetch, batch and write independently (librdkafka bounds each queue). It commits durable
//! offsets, and on revoke stops the revoked partitions' tasks, waits for their in-flight writes
//! and commits what is durable before the partitions are released, so a new owner never races
//! the old one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::Error;
use crate::fence::{Fence, Liveness};
use crate::partition::{PartitionTask, Shared};

type Tp = (String, i32);

/// A running partition task.
struct Handle {
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

pub struct Context {
    partitions: Arc<Partitions>,
    drain_timeout: Duration,
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    /// The consumer itself, to split partition queues from the rebalance callback (set once the
    /// consumer exists; weak so the consumer can be dropped).
    consumer: OnceLock<Weak<StreamConsumer<Context>>>,
    /// Notices the process standing still, for the partitions' ownership fences.
    liveness: Arc<Liveness>,
    /// MSK IAM tokens, when `kafka.auth = "aws_msk_iam"`.
    token: Option<service_kit::kafka_auth::TokenSource>,
}

impl Context {
    fn spawn(&self, consumer: &Arc<StreamConsumer<Context>>, topic: &str, partition: i32) {
        let Some(queue) = consumer.split_partition_queue(topic, partition) else {
            tracing::warn!(topic, partition, "cannot split the partition queue");
            return;
        };
        let durable = Arc::new(AtomicI64::new(-1));
        let stop = CancellationToken::new();
        let task = PartitionTask {
            topic: topic.to_string(),
            partition,
            queue: Some(queue),
            shared: self.shared.clone(),
            durable: durable.clone(),
            stop: stop.clone(),
            fence: Arc::new(Fence::new(
                Arc::downgrade(consumer),
                topic,
                partition,
                durable.clone(),
                self.liveness.clone(),
            )),
        };
        let task = self.runtime.spawn(task.run());
        self.partitions.lock().insert((topic.to_string(), partition), Handle { durable, committed: -1, stop, task });
        self.count_assigned();
    }

    fn count_assigned(&self) {
        let owned = self.partitions.lock().len();
        self.shared.metrics.assigned_partitions.set(i64::try_from(owned).unwrap_or(0));
    }
}

impl ClientContext for Context {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(&self, _: Option<&str>) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        service_kit::kafka_auth::AuthContext::generate(&self.token)
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            let offsets = self.partitions.stop_blocking(Some(revoked), self.drain_timeout);
            self.count_assigned();
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
            let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else { return };
            for element in assigned.elements() {
                self.spawn(&consumer, element.topic(), element.partition());
            }
            tracing::info!(partitions = assigned.count(), "partitions assigned: one task each");
        }
    }
}

pub struct Dispatcher {
    /// Its context holds the partition tasks and what they share.
    consumer: Arc<StreamConsumer<Context>>,
    commit_interval: Duration,
}

impl Dispatcher {
    pub fn new(config: &Config, shared: Arc<Shared>) -> Result<Self, Error> {
        let queue_kbytes = (config.consume.partition_queue_kbytes).to_string();
        let client_config = config.kafka.client_config_with(&[
            ("group.id", &config.consume.group_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("isolation.level", "read_committed"),
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("session.timeout.ms", "30000"),
            ("max.poll.interval.ms", "300000"),
            ("topic.metadata.refresh.interval.ms", "10000"),
            // A fetch waiting for committed data gives up after 100 ms, not librdkafka's
            // 500: end-to-end latency at moderate rates, for a few more idle fetches.
            ("fetch.wait.max.ms", "100"),
            // Each partition's prefetch is bounded: a slow partition stops fetching alone.
            ("queued.max.messages.kbytes", &queue_kbytes),
        ]);
        // A third of the session timeout the group applies (an operator may change it): a
        // stand-still shorter than that cannot have cost a partition.
        let session_ms = client_config.get("session.timeout.ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(30_000);
        let context = Context {
            partitions: Arc::new(Partitions::default()),
            drain_timeout: Duration::from_millis(config.apply.drain_timeout_ms),
            shared,
            runtime: tokio::runtime::Handle::current(),
            consumer: OnceLock::new(),
            liveness: Liveness::start(Duration::from_millis(session_ms / 3), &tokio::runtime::Handle::current()),
            token: config.kafka.token_source(),
        };
        let consumer: StreamConsumer<Context> =
            client_config.create_with_context(context).map_err(|e| Error::kafka("create consumer", e))?;
        let consumer = Arc::new(consumer);
        let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
        let topics: Vec<&str> = config.consume.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| Error::kafka("subscribe", e))?;
        Ok(Self { consumer, commit_interval: Duration::from_millis(config.consume.commit_interval_ms) })
    }

    /// Consumes until `shutdown`; then stops every partition task, commits and leaves the group.
    pub async fn run(self, beat: service_kit::health::LoopBeat, shutdown: CancellationToken) -> Result<(), Error> {
        let context = self.consumer.context();
        let mut commit_tick = tokio::time::interval(self.commit_interval);
        let lag = tokio::spawn(lag_reporter(self.consumer.clone()));
        loop {
            beat.beat();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = commit_tick.tick() => self.commit(),
                // Every partition's messages go to its own queue; the main queue only serves
                // events, but must be polled for rebalances to happen.
                message = self.consumer.recv() => match message {
                    Ok(message) => self.redeliver(message.topic(), message.partition(), message.offset()),
                    // A pattern that matches no topic yet is normal before the source has written.
                    Err(e) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition) => {
                        tracing::debug!(error = %e, "subscribed topics not available yet");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "consumer error");
                        context.shared.health.set_not_ready("kafka", e.to_string());
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }
        let offsets = context.partitions.stop_blocking(None, context.drain_timeout);
        if offsets.count() > 0 {
            if let Err(e) = self.consumer.commit(&offsets, CommitMode::Sync) {
                tracing::warn!(error = %e, "final commit failed: a restart repeats some writes");
            }
        }
        lag.abort();
        self.consumer.unsubscribe();
        Ok(())
    }

    /// A message fetched before its partition's queue was split lands on the main queue; the
    /// partition task never sees it. Seek the partition back to it so its task reads it (writes
    /// are idempotent, so reading a few again is harmless).
    fn redeliver(&self, topic: &str, partition: i32, offset: i64) {
        self.consumer.context().shared.health.set_ready("kafka");
        tracing::debug!(topic, partition, offset, "message on the main queue: seeking its partition back");
        if let Err(e) = self.consumer.seek(topic, partition, Offset::Offset(offset), Duration::from_secs(5)) {
            tracing::warn!(topic, partition, offset, error = %e, "seek back failed");
        }
    }

    /// Commits (asynchronously) what became durable since the last commit.
    fn commit(&self) {
        let offsets = self.consumer.context().partitions.to_commit();
        if offsets.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.commit(&offsets, CommitMode::Async) {
            tracing::warn!(error = %e, "offset commit failed: retried with the next one");
        }
    }
}

/// Every few seconds: high watermark minus the durable offset, per owned partition.
async fn lag_reporter(consumer: Arc<StreamConsumer<Context>>) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let owned: Vec<(Tp, i64)> = consumer
            .context()
            .partitions
            .lock()
            .iter()
            .map(|(tp, h)| (tp.clone(), h.durable.load(Ordering::Acquire)))
            .collect();
        let fetcher = consumer.clone();
        let lags = tokio::task::spawn_blocking(move || {
            owned
                .into_iter()
                .filter_map(|((topic, partition), durable)| {
                    let (_, high) = fetcher.fetch_watermarks(&topic, partition, Duration::from_secs(2)).ok()?;
                    Some((topic, partition, (high - durable).max(0)))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (topic, partition, lag) in lags {
            consumer
                .context()
                .shared
                .metrics
                .consumer_lag
                .with_label_values(&[&topic, &partition.to_string()])
                .set(lag);
        }
    }
}
