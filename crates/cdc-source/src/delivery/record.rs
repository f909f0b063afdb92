//! What capture hands to the producer: Kafka records, and the checkpoint progress they cover.

use envelope::{ClusterTime, ControlEvent};

use crate::delivery::checkpoint::CheckpointUpdate;

/// The `op` of heartbeat records (on `delivery.heartbeat_topic`, not a topic of the source's).
pub const HEARTBEAT: &str = "heartbeat";
/// The `op` of replies to re-send requests (on the request topic, not a topic of the source's).
pub const REPLY: &str = "reply";

/// Where a record goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One topic; the partition follows from the key (one document, one partition).
    Keyed(String),
    /// Every partition of this topic (DDL markers).
    AllPartitions(String),
    /// Every partition of each of these topics (a rename's markers: the old and the new name's
    /// topics both hold events the rename must be ordered against).
    AllPartitionsOf(Vec<String>),
    /// Every partition of every topic whose name starts with this prefix (`dropDatabase`
    /// markers in per-collection topic mode).
    AllTopicsWithPrefix(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub target: Target,
    pub key: Vec<u8>,
    /// None for a tombstone, and for a control event (encoded by the producer, which knows how
    /// many partitions the marker goes to).
    pub value: Option<Vec<u8>>,
    pub control: Option<Box<ControlEvent>>,
    /// For metrics: the op code (`c`, `u`, `d`, `r`, `ddl`, `tombstone`) and namespace.
    pub op: &'static str,
    pub namespace: String,
}

/// One unit from capture: the records of one source event (none for a position-only update),
/// and how the checkpoint moves once they are durable.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub records: Vec<Record>,
    pub progress: Option<CheckpointUpdate>,
    /// Cluster time of the source event, for the lag metric.
    pub cluster_time: Option<ClusterTime>,
}

impl Item {
    pub fn progress_only(progress: CheckpointUpdate) -> Self {
        Self { records: Vec::new(), progress: Some(progress), cluster_time: None }
    }

    pub fn bytes(&self) -> usize {
        self.records.iter().map(|r| r.key.len() + r.value.as_ref().map_or(0, Vec::len)).sum()
    }
}
