//! The consumer as the partitions need it: pause, resume and move a partition's fetch position,
//! and the records it hands over. The Kafka consumer in service; a recording fake in unit tests.

use std::time::Duration;

use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use crate::consume::offsets::Tp;

/// Where a partition is fetched from, and whether it is fetched at all.
pub trait Fetch {
    /// Stops (`true`) or starts again (`false`) fetching the partition.
    fn pause(&self, tp: &Tp, pause: bool);
    /// Moves the partition's fetch position (asynchronously: the consumer applies it in order
    /// with what it fetches next).
    fn seek(&self, tp: &Tp, offset: Offset);
}

impl<C: ConsumerContext + 'static> Fetch for StreamConsumer<C> {
    fn pause(&self, tp: &Tp, pause: bool) {
        let mut list = TopicPartitionList::new();
        list.add_partition(&tp.0, tp.1);
        let result = if pause { Consumer::pause(self, &list) } else { self.resume(&list) };
        if let Err(e) = result {
            tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, pause, "cannot pause or resume the partition");
        }
    }

    fn seek(&self, tp: &Tp, offset: Offset) {
        let mut list = TopicPartitionList::new();
        if list.add_partition_offset(&tp.0, tp.1, offset).is_err() {
            return;
        }
        if let Err(e) = self.seek_partitions(list, Duration::ZERO) {
            tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "cannot seek the partition");
        }
    }
}

/// A fetched record, which a partition's queue keeps a copy of.
pub trait Record: Message {
    fn to_owned_record(&self) -> OwnedMessage;
}

impl Record for BorrowedMessage<'_> {
    fn to_owned_record(&self) -> OwnedMessage {
        self.detach()
    }
}

impl Record for OwnedMessage {
    fn to_owned_record(&self) -> OwnedMessage {
        self.clone()
    }
}
