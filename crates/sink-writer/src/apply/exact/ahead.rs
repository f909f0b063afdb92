//! The partition's next batches gathered, planned and checked against the target while the
//! current batch's transaction runs: one transaction at a time leaves the target idle while a
//! batch is planned and while the target is asked which documents it lacks (a fifth of each
//! batch's time on the 4-partition backlog), and the transaction idle meanwhile.
//!
//! Nothing it does writes: a batch waits in a queue of one for the transaction loop
//! (`mod.rs`), which decides about parked writes, dead letters and the ledger. Two limits keep
//! planning ahead equal to planning in turn:
//! - A batch that ends at a DDL marker is the last planned until the loop has passed the marker:
//!   which events a DDL makes obsolete is known only then.
//! - A document the two batches before wrote is never taken as absent: those batches may not have
//!   committed when the target was asked. (Any other insert the target refuses goes back to the
//!   upsert it came from; that costs a transaction, never a write.)

use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use envelope::{ClusterTime, ControlEvent, Event};
use rdkafka::message::Message;
use service_kit::budget::Reservation;
use tokio::sync::{mpsc, oneshot};

use crate::apply::partition::PartitionTask;
use crate::apply::write_plan::DocKey;
use crate::apply::Batch;
use crate::consume::reader::Decoded;
use crate::dead_letters::Resent;

/// Batches whose documents are never taken as absent by the next one (at most one is in its
/// transaction and one waits in the queue while the next is planned).
const UNSETTLED_BATCHES: usize = 2;

/// A batch planned ahead of its transaction.
pub(super) struct Prepared {
    pub batch: Batch,
    pub reservations: Vec<Reservation>,
    pub watermark: Option<ClusterTime>,
    pub resent: Vec<Resent>,
    /// The DDL marker the batch ends at (its last record), and where to say it was passed.
    pub marker: Option<(ControlEvent, oneshot::Sender<()>)>,
}

/// Plans batches of the records from `start` on into `out` until the partition stops, its queue
/// ends or the transaction loop is gone.
pub(super) async fn plan_ahead(
    task: &PartitionTask,
    rx: &mut mpsc::Receiver<Decoded>,
    start: i64,
    out: mpsc::Sender<Prepared>,
) {
    let mut held: Option<Decoded> = None;
    // The documents of the last batches, as hashes (no copy of each key; a collision only keeps
    // a write an upsert).
    let mut unsettled: VecDeque<HashSet<u64>> = VecDeque::new();
    loop {
        let Some(batch) = gather(task, rx, start, &mut held).await else { return };
        let watermark = crate::consume::reader::newest_watermark(&batch);
        let resent = crate::dead_letters::resent(&batch);
        let control = match batch.last() {
            Some(Decoded { event: Ok(Event::Control(control)), .. }) => Some(control.as_ref().clone()),
            _ => None,
        };
        let (mut batch, reservations) = task.plan(batch);
        let plan = &mut batch.plan;
        let hashes: HashSet<u64> = plan.keys.iter().map(hash).collect();
        let recent = |key: &DocKey| unsettled.iter().any(|batch| batch.contains(&hash(key)));
        let keys = &plan.keys;
        crate::apply::fresh::insert_where_absent(&task.shared.client, &mut plan.rounds, |op| !recent(&keys[op.doc]))
            .await;
        if unsettled.len() == UNSETTLED_BATCHES {
            unsettled.pop_front();
        }
        unsettled.push_back(hashes);
        let (marker, passed) = match control {
            Some(event) => {
                let (tx, rx) = oneshot::channel();
                (Some((event, tx)), Some(rx))
            }
            None => (None, None),
        };
        let prepared = Prepared { batch, reservations, watermark, resent, marker };
        if out.send(prepared).await.is_err() {
            return;
        }
        if let Some(passed) = passed {
            if passed.await.is_err() {
                return;
            }
            // Everything before the marker is committed.
            unsettled.clear();
        }
    }
}

/// The next batch; records below `start` are dropped. `None` once stopped or the queue is closed.
async fn gather(
    task: &PartitionTask,
    rx: &mut mpsc::Receiver<Decoded>,
    start: i64,
    held: &mut Option<Decoded>,
) -> Option<Vec<Decoded>> {
    let limits = &task.shared.apply;
    let first = if let Some(held) = held.take() {
        held
    } else {
        loop {
            tokio::select! {
                _ = task.stop.cancelled() => return None,
                message = rx.recv() => match message {
                    Some(d) if d.message.offset() < start => {}
                    Some(d) => break d,
                    None => return None,
                },
            }
        }
    };
    let mut bytes = weight(&first);
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + Duration::from_millis(limits.batch_max_wait_ms);
    while crate::consume::reader::takes_more(&batch, bytes, limits) {
        let next = tokio::select! {
            _ = task.stop.cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => break,
            message = rx.recv() => message,
        };
        let Some(next) = next else { break };
        if next.message.offset() < start {
            continue;
        }
        // A transaction stays under its size limit: the record that would pass it starts the
        // next batch (a larger record alone is a batch of its own).
        let size = weight(&next);
        if bytes + size > limits.transaction_max_bytes {
            *held = Some(next);
            break;
        }
        bytes += size;
        batch.push(next);
    }
    Some(batch)
}

fn hash(key: &DocKey) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

/// Bytes a record adds to a transaction: its documents as BSON (the record's JSON when it does
/// not decode).
fn weight(decoded: &Decoded) -> usize {
    let json = decoded.message.payload().map_or(0, <[u8]>::len);
    match &decoded.event {
        Ok(Event::Change(change)) => change.after.as_ref().map_or(json, |d| d.as_bytes().len().max(json / 2)) + 256,
        _ => json,
    }
}
