//! Applies one planned batch: its rounds in order, each retried until the target takes it (or the
//! partition stops, checked before every attempt so that a revoked partition sends nothing new),
//! what can never be applied to the dead-letter topic.
//!
//! A write a unique secondary index refuses for now is parked (`parking.rs`) with every later
//! write of the same document; the rest of the batch goes on.

use std::sync::Arc;
use std::time::Instant;

use rdkafka::message::{Message, OwnedMessage};
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::parking::{Parked, Parking};
use crate::round::{apply_round, DeadLetterer, Destination};
use crate::shared::Shared;
use crate::write_plan::{Plan, WriteOp};
use crate::writer::Outcome;

/// A planned batch and the messages it came from.
pub struct Batch {
    pub plan: Plan,
    pub messages: Vec<OwnedMessage>,
    /// Offsets of messages that could not be decoded, with the reason.
    pub undecodable: Vec<(i64, String)>,
}

/// Applies a batch. Writes a unique index refuses for now, and later writes of their documents
/// (also of documents parked by earlier batches), go to the partition's `parking`.
pub async fn write_batch(
    shared: Arc<Shared>,
    to: Destination,
    batch: Batch,
    parking: Arc<Parking>,
    stop: CancellationToken,
) -> Result<(), Error> {
    let dead = DeadLetterer { shared: &shared, to: &to, stop: &stop };
    let Batch { plan, messages, undecodable } = batch;
    let Plan { rounds, keys, rejected, newest, .. } = plan;
    let message = |offset: i64| messages.iter().find(|m| m.offset() == offset);
    let key = |offset: i64| message(offset).and_then(|m| m.key()).map(<[u8]>::to_vec);
    let payload = |offset: i64| message(offset).and_then(|m| m.payload()).map(<[u8]>::to_vec);
    for (offset, reason) in undecodable.iter().chain(&rejected) {
        let stage = if undecodable.iter().any(|(o, _)| o == offset) { "decode" } else { "plan" };
        dead.send(*offset, key(*offset).as_deref(), payload(*offset).as_deref(), reason, stage).await?;
    }
    let hold = messages.first().map_or(0, |m| m.offset());
    let park = |op: WriteOp| {
        let seq = parking.next_seq(op.offset);
        let parked = Parked { seq, key: key(op.offset), payload: payload(op.offset), hold, since: Instant::now(), op };
        parking.park(keys[parked.op.doc].clone(), parked);
    };
    for round in rounds {
        let (behind, ready): (Vec<WriteOp>, Vec<WriteOp>) =
            round.into_iter().partition(|op| parking.is_parked(&keys[op.doc]));
        for op in behind {
            park(op);
        }
        for (op, outcome) in apply_round(&shared, &to, ready, &stop).await? {
            match outcome {
                Outcome::Applied => {}
                Outcome::Conflict(conflict) => {
                    shared.metrics.unique_conflicts.inc();
                    tracing::debug!(topic = %to.topic, partition = to.partition, reason = %conflict.reason, "a unique index refuses a write for now: parked");
                    park(op);
                }
                Outcome::Rejected(reason) => {
                    dead.send(op.offset, key(op.offset).as_deref(), payload(op.offset).as_deref(), &reason, "apply")
                        .await?
                }
            }
        }
    }
    // Schema changes the target refused may pass now that data changed.
    let mut touched: Vec<&envelope::Namespace> = keys.iter().map(|(ns, _)| ns).collect();
    touched.dedup();
    for ns in touched {
        shared.ddl.schema().data_changed(ns).await;
    }
    if let Some(newest) = newest {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        shared.metrics.replication_lag_seconds.set(i64::try_from(now.saturating_sub(u64::from(newest.t))).unwrap_or(0));
    }
    Ok(())
}
