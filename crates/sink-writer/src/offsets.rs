//! Offsets: the one place they reach the group. Each partition has a durable offset (the next
//! offset to commit: everything below it is applied or dead-lettered), moved by its task; what
//! moved since the last commit is committed on a tick, on revoke and on stop, and by the
//! ownership fence.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

/// A topic and partition.
pub type Tp = (String, i32);

/// A partition's durable offset, and what of it was committed.
#[derive(Debug, Clone)]
pub struct Progress {
    pub durable: Arc<AtomicI64>,
    committed: i64,
}

impl Default for Progress {
    fn default() -> Self {
        Self { durable: Arc::new(AtomicI64::new(-1)), committed: -1 }
    }
}

impl Progress {
    /// The durable offset, if it moved since the last commit (which it now counts as done).
    pub fn due(&mut self) -> Option<i64> {
        let durable = self.durable.load(Ordering::Acquire);
        (durable > self.committed).then(|| {
            self.committed = durable;
            durable
        })
    }

    pub fn durable(&self) -> i64 {
        self.durable.load(Ordering::Acquire)
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
        let mut progress = Progress::default();
        assert_eq!(progress.due(), None, "nothing durable yet");
        progress.durable.store(10, Ordering::Release);
        assert_eq!(progress.due(), Some(10));
        assert_eq!(progress.due(), None, "committed already");
        progress.durable.store(12, Ordering::Release);
        assert_eq!(progress.due(), Some(12));
        assert_eq!(progress.durable(), 12);
    }
}
