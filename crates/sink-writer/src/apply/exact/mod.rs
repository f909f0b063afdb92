//! A partition in the `exactly_once` mode: every batch is one target transaction that also moves
//! the partition's offset in the ledger (`ledger.rs`) under this owner's epoch, so the target
//! holds exactly the records up to that offset and nothing else, whoever owned the partition.
//!
//! ```text
//!  claim (epoch + 1, read the offset) ─► seek there ─► gather ─► plan ─► transaction ─► offset
//!                                                        ▲        ledger · writes · parked entries
//!                                                        └── parked writes retried between batches
//! ```
//!
//! A write a unique index refuses for now is parked in the target by the same transaction (the
//! offset moves past it), later writes of its document park behind it, and the parked writes are
//! retried between batches, each in a transaction that settles them; a cycle of such writes is
//! broken (`cycle.rs`). The partition's consistent point moves only while nothing is parked. One
//! transaction at a time: the next batch is decoded meanwhile.
//!
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the partition's loop: claim, gather, one transaction at a time, the pass marker |
//! | `batch.rs` | one batch in one transaction: its plan with the writes of documents that have parked writes |
//! | `parked.rs` | parked writes tried again between batches |
//! | `cycle.rs` | a cycle of unique values among parked documents, broken |

mod batch;
mod cycle;
mod parked;

use std::time::{Duration, Instant};

use envelope::{ClusterTime, ControlEvent, Event};
use mongodb::ClientSession;
use rdkafka::message::Message;
use service_kit::backoff::Backoff;
use tokio::sync::mpsc;

use crate::apply::ledger::Claim;
use crate::apply::parked_store;
use crate::apply::parking::Parking;
use crate::apply::partition::PartitionTask;
use crate::apply::retry::WRITES;
use crate::consume::offsets::Tp;
use crate::consume::reader::Decoded;
use crate::error::Error;

pub use cycle::SCRATCH;

/// The longest pause between retries of parked writes.
const MAX_PARKED_PAUSE: Duration = Duration::from_secs(2);

/// One owned partition's state in this mode.
pub struct Exact<'a> {
    task: &'a PartitionTask,
    tp: Tp,
    name: String,
    epoch: i64,
    /// Records below this offset are in the target already.
    start: i64,
    session: ClientSession,
    parking: Parking,
    /// The newest watermark passed, which becomes the consistent point once nothing is parked.
    pending: Option<ClusterTime>,
    backoff: Backoff,
    next_retry: Instant,
    /// A record that did not fit the last batch: the next one starts with it.
    held: Option<Decoded>,
    /// Where the next round over the parked writes starts (each gets its turn first).
    turn: usize,
}

impl<'a> Exact<'a> {
    /// Takes the partition over in the ledger and reads what is parked there.
    pub async fn claim(task: &'a PartitionTask) -> Result<Exact<'a>, Error> {
        let shared = &task.shared;
        let (tp, name) = ((task.topic.clone(), task.partition), task.name());
        let ledger = shared.ledger();
        let Claim { epoch, offset } = shared.retrier.run(WRITES, &name, &task.stop, || ledger.claim(&tp)).await?;
        let parked = shared
            .retrier
            .run(WRITES, &name, &task.stop, || parked_store::load(ledger.database(), ledger.group(), &tp))
            .await?;
        let session = shared
            .retrier
            .run(WRITES, &name, &task.stop, || async {
                shared
                    .client
                    .start_session()
                    .causal_consistency(false)
                    .await
                    .map_err(|e| Error::mongo("start a session", e))
            })
            .await?;
        let parking = Parking::default();
        parking.reload(parked);
        let start = offset.unwrap_or(-1);
        if start >= 0 {
            task.marks.reached(start, None);
            task.seek(start).await;
        }
        tracing::debug!(partition = %name, epoch, start, parked = parking.len(), "partition claimed");
        let max_pause = Duration::from_millis(shared.apply.max_backoff_ms).min(MAX_PARKED_PAUSE);
        Ok(Exact {
            task,
            tp,
            name,
            epoch,
            start,
            session,
            parking,
            pending: None,
            backoff: Backoff::new(Duration::from_millis(20), max_pause),
            next_retry: Instant::now(),
            held: None,
            turn: 0,
        })
    }

    /// Works through the partition's records until stopped.
    pub async fn run(mut self, rx: &mut mpsc::Receiver<Decoded>) -> Result<(), Error> {
        loop {
            let Some(batch) = self.gather(rx).await? else { return Ok(()) };
            let control = match batch.last() {
                Some(Decoded { message, event: Ok(Event::Control(control)), .. }) => {
                    Some((message.offset(), control.as_ref().clone()))
                }
                _ => None,
            };
            let last = batch.last().map_or(self.start, |d| d.message.offset());
            if self.task.marks.durable() < 0 {
                // Nothing in the ledger yet: what the consumer starts from was done before.
                self.task.marks.reached(batch.first().map_or(last, |d| d.message.offset()), None);
            }
            self.apply(batch, if control.is_some() { last } else { last + 1 }).await?;
            if let Some((offset, event)) = control {
                self.pass_marker(offset, &event).await?;
            }
        }
    }

    /// Waits at a DDL marker until nothing is parked and the DDL is applied (here or by another
    /// partition); then the ledger moves past the marker.
    async fn pass_marker(&mut self, offset: i64, event: &ControlEvent) -> Result<(), Error> {
        self.until_nothing_parked().await?;
        self.task.pass_marker(offset, event).await?;
        let (shared, tp, epoch) = (self.task.shared.clone(), self.tp.clone(), self.epoch);
        let ledger = shared.ledger();
        shared.retrier.run(WRITES, &self.name, &self.task.stop, || ledger.advance(&tp, epoch, offset + 1)).await?;
        self.task.marks.reached(offset + 1, None);
        Ok(())
    }

    /// The next batch, with parked writes retried while waiting for its first record; records
    /// below `start` are dropped. `None` once stopped or the queue is closed.
    async fn gather(&mut self, rx: &mut mpsc::Receiver<Decoded>) -> Result<Option<Vec<Decoded>>, Error> {
        let limits = &self.task.shared.apply;
        let first = if let Some(held) = self.held.take() {
            held
        } else {
            loop {
                let retry_at = tokio::time::Instant::from_std(self.next_retry);
                tokio::select! {
                    _ = self.task.stop.cancelled() => return Ok(None),
                    _ = tokio::time::sleep_until(retry_at), if !self.parking.is_empty() => self.retry_parked().await?,
                    message = rx.recv() => match message {
                        Some(d) if d.message.offset() < self.start => {}
                        Some(d) => break d,
                        None => return Ok(None),
                    },
                }
            }
        };
        let mut bytes = weight(&first);
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(limits.batch_max_wait_ms);
        while !matches!(batch.last(), Some(Decoded { event: Ok(Event::Control(_)), .. }))
            && batch.len() < limits.batch_max_docs
            && bytes < limits.batch_max_bytes
        {
            let next = tokio::select! {
                _ = self.task.stop.cancelled() => break,
                _ = tokio::time::sleep_until(deadline) => break,
                message = rx.recv() => message,
            };
            let Some(next) = next else { break };
            if next.message.offset() < self.start {
                continue;
            }
            // A transaction stays under its size limit: the record that would pass it starts the
            // next batch (a larger record alone is a batch of its own).
            let size = weight(&next);
            if bytes + size > limits.transaction_max_bytes {
                self.held = Some(next);
                break;
            }
            bytes += size;
            batch.push(next);
        }
        Ok(Some(batch))
    }
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
