//! Consume: records from Kafka to the partitions' tasks, and offsets back to the group.
//!
//! ```text
//!  Kafka ──► consumer (group, rebalance) ──► dispatch (the loop) ──► partitions (a task each,
//!            subscription: which topics      reader: decode            bounded queue, pause/resume)
//!                                                                         │
//!  group ◄── offsets (durable, in order: the one place offsets are committed) ◄── apply/
//!            fence: a task that stood still past its lease writes nothing
//! ```
//!
//! | file | owns |
//! |---|---|
//! | `consumer.rs` | the Kafka consumer: its settings from the memory budget, rebalance callbacks |
//! | `dispatch.rs` | the consumer loop: records to partitions, commit tick, topic list refresh |
//! | `subscription.rs` | which topics are read (never the dead-letter topic) |
//! | `partitions/` | the owned partitions: their tasks (a trait: apply in service, fakes in tests), pause/resume, stop on revoke, restart on failure |
//! | `reader.rs` | records on their way to a task, and their decoding |
//! | `offsets.rs` | durable offsets and watermarks reached; the one place offsets are committed |
//! | `fence.rs` | ownership after a stand-still |

pub(crate) mod consumer;
pub(crate) mod dispatch;
pub(crate) mod fence;
pub(crate) mod offsets;
pub(crate) mod partitions;
pub(crate) mod reader;
pub(crate) mod subscription;
