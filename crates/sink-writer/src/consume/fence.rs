//! Ownership before a late write. A partition task that held its batch longer than the lease (a
//! paused process, a stalled host, a long retry) may have lost the partition to another replica
//! meanwhile, which then wrote newer versions of the same documents; writing the old batch now
//! would put stale documents back. Before such a write the task commits its durable offset: the
//! group coordinator refuses commits from a member it has evicted, so a commit that succeeds
//! proves the partition is still this replica's. Until one does, the task waits; the revocation
//! that follows an eviction then stops it, and the new owner redoes the batch from the committed
//! offset. (A write already on the wire when the process froze cannot be called back.)
//!
//! A freeze is noticed by [`StandStill`]: a 100 ms tick whose gaps past the lease start a new
//! epoch; a write in a newer epoch than its partition last confirmed needs a confirmation. A
//! replica that runs but cannot reach Kafka needs none of this: librdkafka revokes its partitions
//! itself once the session times out, which stops their tasks.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::metrics::Metrics;

/// The group member, as the fence needs it: commit one partition's offset, synchronously; the
/// group refuses it from a member it has evicted.
pub trait Owner: Send + Sync {
    fn commit(&self, topic: &str, partition: i32, offset: i64) -> Result<(), String>;
}

/// Notices that the whole process stood still (SIGSTOP, a paused VM) for longer than the lease
/// (not the `/health/livez` liveness: that one says the loops turn).
pub struct StandStill {
    origin: Instant,
    last_tick_ms: AtomicU64,
    epoch: AtomicU64,
    lease: Duration,
}

impl StandStill {
    /// Starts the ticker; `lease` is a third of the consumer's session timeout, well before the
    /// group could have moved a partition away.
    pub fn start(lease: Duration, runtime: &tokio::runtime::Handle) -> Arc<StandStill> {
        let liveness = Arc::new(StandStill {
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
    owner: Arc<dyn Owner>,
    topic: String,
    partition: i32,
    /// The partition task's durable offset: what a confirmation commits.
    durable: Arc<AtomicI64>,
    liveness: Arc<StandStill>,
    /// The epoch in which ownership was last known: assignment, or the last confirmation.
    confirmed: AtomicU64,
}

impl Fence {
    pub fn new(
        owner: Arc<dyn Owner>,
        topic: &str,
        partition: i32,
        durable: Arc<AtomicI64>,
        liveness: Arc<StandStill>,
    ) -> Self {
        let confirmed = AtomicU64::new(liveness.epoch());
        Self { owner, topic: topic.to_string(), partition, durable, liveness, confirmed }
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
        if durable < 0 {
            return Err("no offset to commit yet".into());
        }
        let (owner, topic, partition) = (self.owner.clone(), self.topic.clone(), self.partition);
        tokio::task::spawn_blocking(move || owner.commit(&topic, partition, durable))
            .await
            .map_err(|e| e.to_string())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_longer_than_the_lease_starts_a_new_epoch_once() {
        let liveness = StandStill {
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
