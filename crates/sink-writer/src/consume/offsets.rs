//! Offsets: the one place they reach the group. Each partition has a durable offset (the next
//! offset to commit: everything below it is applied or dead-lettered), moved by its task; what
//! moved since the last commit is committed on a tick, on revoke and on stop, and by the
//! ownership fence.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

/// A topic and partition.
pub type Tp = (String, i32);

/// How far a partition's task got: its durable offset (the next offset to commit: everything
/// below it is applied or dead-lettered) and the newest source watermark below it (the cluster
/// time up to which the partition is applied), shared by the task and the consumer.
#[derive(Debug, Clone)]
pub struct Marks {
    pub durable: Arc<AtomicI64>,
    consistent: Arc<AtomicU64>,
}

impl Default for Marks {
    fn default() -> Self {
        Self { durable: Arc::new(AtomicI64::new(-1)), consistent: Arc::new(AtomicU64::new(0)) }
    }
}

impl Marks {
    pub fn durable(&self) -> i64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Moves the durable offset up (never down), and the watermark when the covered records
    /// held one.
    pub fn reached(&self, offset: i64, watermark: Option<envelope::ClusterTime>) {
        self.durable.fetch_max(offset, Ordering::AcqRel);
        if let Some(at) = watermark {
            self.consistent.fetch_max((u64::from(at.t) << 32) | u64::from(at.i), Ordering::AcqRel);
        }
    }

    /// The cluster time up to which the partition is applied, once a watermark was passed.
    pub fn consistent(&self) -> Option<envelope::ClusterTime> {
        let packed = self.consistent.load(Ordering::Acquire);
        (packed != 0).then_some(envelope::ClusterTime { t: (packed >> 32) as u32, i: packed as u32 })
    }
}

/// A partition's offsets as the consumer keeps them: its marks (moved by its task) and the
/// durable offset last committed to the group.
#[derive(Debug, Clone)]
pub struct PartitionOffsets {
    pub marks: Marks,
    committed: i64,
}

impl Default for PartitionOffsets {
    fn default() -> Self {
        Self { marks: Marks::default(), committed: -1 }
    }
}

impl PartitionOffsets {
    /// The durable offset, if it moved since the last commit (which it now counts as done).
    pub fn due(&mut self) -> Option<i64> {
        let durable = self.marks.durable();
        (durable > self.committed).then(|| {
            self.committed = durable;
            durable
        })
    }

    pub fn durable(&self) -> i64 {
        self.marks.durable()
    }
}

/// Commits `offsets` (each the next offset to read) for the group.
pub fn commit<C: ConsumerContext, K: Consumer<C> + ?Sized>(
    consumer: &K,
    offsets: &[(Tp, i64)],
    mode: CommitMode,
) -> KafkaResult<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        list.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    consumer.commit(&list, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_offsets_that_moved_are_due() {
        let mut offsets = PartitionOffsets::default();
        assert_eq!(offsets.due(), None, "nothing durable yet");
        offsets.marks.reached(10, None);
        assert_eq!(offsets.due(), Some(10));
        assert_eq!(offsets.due(), None, "committed already");
        offsets.marks.reached(12, Some(envelope::ClusterTime { t: 5, i: 2 }));
        assert_eq!(offsets.due(), Some(12));
        assert_eq!(offsets.durable(), 12);
        offsets.marks.reached(13, Some(envelope::ClusterTime { t: 4, i: 9 }));
        assert_eq!(offsets.marks.consistent(), Some(envelope::ClusterTime { t: 5, i: 2 }), "never backwards");
    }
}
