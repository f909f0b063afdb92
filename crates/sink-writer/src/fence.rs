//! Ownership before a late write. A partition task that held its batch longer than the lease (a
//! paused process, a stalled host, a long retry) may have lost the partition to another replica
//! meanwhile, which then wrote newer versions of the same documents; writing the old batch now
//! would put stale documents back. Before such a write the task commits its durable offset: the
//! group coordinator refuses commits from a member it has evicted, so a commit that succeeds
//! proves the partition is still this replica's. Until one does, the task waits; the revocation
//! that follows an eviction then stops it, and the new owner redoes the batch from the committed
//! offset. (A write already on the wire when the process froze cannot be called back.)
//!
//! A freeze is noticed by [`Liveness`]: a 100 ms tick whose gaps past the lease start a new
//! epoch; a write in a newer epoch than its partition last confirmed needs a confirmation. A
//! replica that runs but cannot reach Kafka needs none of this: librdkafka revokes its partitions
//! itself once the session times out, which stops their tasks.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::consumer::Context;
use crate::error::Error;
use crate::metrics::Metrics;

/// Notices that the whole process stood still (SIGSTOP, a paused VM) for longer than the lease.
pub struct Liveness {
    origin: Instant,
    last_tick_ms: AtomicU64,
    epoch: AtomicU64,
    lease: Duration,
}

impl Liveness {
    /// Starts the ticker; `lease` is a third of the consumer's session timeout, well before the
    /// group could have moved a partition away.
    pub fn start(lease: Duration, runtime: &tokio::runtime::Handle) -> Arc<Liveness> {
        let liveness = Arc::new(Liveness {
            origin: Instant::now(),
            last_tick_ms: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            lease,
        });
        let weak = Arc::downgrade(&liveness);
        runtime.spawn(async move {
            while let Some(liveness) = weak.upgrade() {
                liveness.epoch();
                drop(liveness);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        liveness
    }

    /// The current epoch: a new one begins whenever the ticks stopped for longer than the lease,
    /// noticed by whoever asks first after the gap (the ticker or a writer).
    pub fn epoch(&self) -> u64 {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_tick_ms.swap(now, Ordering::AcqRel);
        if now.saturating_sub(last) > u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX) {
            self.epoch.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            self.epoch.load(Ordering::Acquire)
        }
    }
}

pub struct Fence {
    consumer: Weak<StreamConsumer<Context>>,
    topic: String,
    partition: i32,
    /// The partition task's durable offset: what a confirmation commits.
    durable: Arc<AtomicI64>,
    liveness: Arc<Liveness>,
    /// The epoch in which ownership was last known: assignment, or the last confirmation.
    confirmed: AtomicU64,
}

impl Fence {
    pub fn new(
        consumer: Weak<StreamConsumer<Context>>,
        topic: &str,
        partition: i32,
        durable: Arc<AtomicI64>,
        liveness: Arc<Liveness>,
    ) -> Self {
        let confirmed = AtomicU64::new(liveness.epoch());
        Self { consumer, topic: topic.to_string(), partition, durable, liveness, confirmed }
    }

    /// Returns at once unless the process stood still since ownership was last known; then once
    /// the group confirms it (by accepting a commit of the durable offset); `Err(Stopped)` if the
    /// task is stopped first.
    pub async fn check(&self, metrics: &Metrics, stop: &CancellationToken) -> Result<(), Error> {
        let epoch = self.liveness.epoch();
        if epoch == self.confirmed.load(Ordering::Acquire) {
            return Ok(());
        }
        self.confirm(metrics, stop).await?;
        self.confirmed.fetch_max(epoch, Ordering::AcqRel);
        Ok(())
    }

    async fn confirm(&self, metrics: &Metrics, stop: &CancellationToken) -> Result<(), Error> {
        let since = Instant::now();
        let mut warned = false;
        loop {
            match self.commit(self.durable.load(Ordering::Acquire)).await {
                Ok(()) => {
                    metrics.ownership_checks.with_label_values(&["confirmed"]).inc();
                    if warned {
                        tracing::info!(topic = %self.topic, partition = self.partition, waited_ms = since.elapsed().as_millis() as u64, "ownership confirmed");
                    }
                    return Ok(());
                }
                Err(reason) => {
                    metrics.ownership_checks.with_label_values(&["refused"]).inc();
                    if !warned {
                        tracing::warn!(
                            topic = %self.topic,
                            partition = self.partition,
                            %reason,
                            "the process stood still past the lease and the group does not confirm ownership: \
                             holding the write"
                        );
                        warned = true;
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return Err(Error::Stopped),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn commit(&self, durable: i64) -> Result<(), String> {
        let consumer = self.consumer.upgrade().ok_or("the consumer is gone")?;
        if durable < 0 {
            return Err("no offset to commit yet".into());
        }
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(&self.topic, self.partition, Offset::Offset(durable))
            .map_err(|e| e.to_string())?;
        tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_longer_than_the_lease_starts_a_new_epoch_once() {
        let liveness = Liveness {
            origin: Instant::now(),
            last_tick_ms: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            lease: Duration::from_millis(50),
        };
        let first = liveness.epoch();
        assert_eq!(liveness.epoch(), first, "ticks within the lease keep the epoch");
        std::thread::sleep(Duration::from_millis(120));
        let after_gap = liveness.epoch();
        assert_eq!(after_gap, first + 1, "a stand-still past the lease is a new epoch");
        assert_eq!(liveness.epoch(), after_gap, "noticed once");
    }
}
