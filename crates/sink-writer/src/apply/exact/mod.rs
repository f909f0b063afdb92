//! A partition in the `exactly_once` mode: every batch is one target transaction that also moves
//! the partition's offset in the ledger (`ledger.rs`) under this owner's epoch, so the target
//! holds exactly the records up to that offset and nothing else, whoever owned the partition.
//!
//! ```text
//!  claim (epoch + 1, read the offset) ─► seek there ─► gather ─► plan ─┬─► transaction ─► offset
//!                                         (ahead.rs, while the previous  │   ledger · writes · parked entries
//!                                          batch's transaction runs)     └── parked writes retried between batches
//! ```
//!
//! A write a unique index refuses for now is parked in the target by the same transaction (the
//! offset moves past it), later writes of its document park behind it, and the parked writes are
//! retried between batches, each in a transaction that settles them; a cycle of such writes is
//! broken (`cycle.rs`). The partition's consistent point moves only while nothing is parked. One
//! transaction at a time: the next batch is planned meanwhile (`ahead.rs`).
//!
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the partition's loop: claim, one transaction at a time, the pass marker |
//! | `ahead.rs` | the next batches gathered and planned while a transaction runs |
//! | `batch.rs` | one batch in one transaction: its plan with the writes of documents that have parked writes |
//! | `parked.rs` | parked writes tried again between batches |
//! | `cycle.rs` | a cycle of unique values among parked documents, broken |

mod ahead;
mod batch;
mod cycle;
mod parked;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ahead::Prepared;
use envelope::{ClusterTime, ControlEvent};
use mongodb::ClientSession;
use rdkafka::message::Message;
use service_kit::backoff::Backoff;
use tokio::sync::mpsc;

use crate::apply::ledger::Claim;
use crate::apply::parked_store;
use crate::apply::parking::Parking;
use crate::apply::partition::PartitionTask;
use crate::apply::retry::WRITES;
use crate::apply::write_plan::DocKey;
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
    /// Where the next round over the parked writes starts (each gets its turn first).
    turn: usize,
    /// Documents whose parked writes were settled since the last batch: the next batch may have
    /// been planned before, taking them as absent.
    settled: HashSet<DocKey>,
}

impl<'a> Exact<'a> {
    /// The point this partition may claim now: the newest watermark passed, once nothing is
    /// parked and no open dead letter holds it (the one rule for every path that moves it).
    fn consistent_now(&self) -> Option<ClusterTime> {
        let held = self.task.shared.dead_letter_book.holds(&self.tp);
        (self.parking.is_empty() && !held).then_some(self.pending).flatten()
    }

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
            turn: 0,
            settled: HashSet::new(),
        })
    }

    /// Works through the partition's records until stopped: the next batches are planned
    /// (`ahead.rs`) while this one's transaction runs.
    pub async fn run(mut self, rx: &mut mpsc::Receiver<Decoded>) -> Result<(), Error> {
        let (tx, mut prepared) = mpsc::channel(1);
        let planner = ahead::plan_ahead(self.task, rx, self.start, tx);
        tokio::pin!(planner);
        let applier = async move {
            while let Some(batch) = self.next(&mut prepared).await? {
                self.apply_prepared(batch).await?;
            }
            Ok(())
        };
        tokio::pin!(applier);
        tokio::select! {
            // The transaction loop ended (stopped, or failed): what was planned ahead is read again
            // by the next owner from the ledger's offset.
            ended = &mut applier => ended,
            // Nothing more to plan: the loop applies what was planned, then ends. (The planner
            // also ends when the loop drops its queue or a marker's signal, which happens only as
            // the loop itself ends, in the same poll: the branch above is then taken first.)
            () = &mut planner => applier.await,
        }
    }

    /// The next planned batch, with parked writes retried while waiting for it. `None` once
    /// stopped or nothing more comes.
    async fn next(&mut self, prepared: &mut mpsc::Receiver<Prepared>) -> Result<Option<Prepared>, Error> {
        loop {
            let retry_at = tokio::time::Instant::from_std(self.next_retry);
            tokio::select! {
                _ = self.task.stop.cancelled() => return Ok(None),
                _ = tokio::time::sleep_until(retry_at), if !self.parking.is_empty() => self.retry_parked().await?,
                batch = prepared.recv() => return Ok(batch),
            }
        }
    }

    /// Applies a planned batch, then passes the DDL marker it ends at.
    async fn apply_prepared(&mut self, mut batch: Prepared) -> Result<(), Error> {
        let offsets = &batch.batch.messages;
        let (first, last) = match (offsets.first(), offsets.last()) {
            (Some(first), Some(last)) => (first.offset(), last.offset()),
            _ => return Ok(()),
        };
        if self.task.marks.durable() < 0 {
            // Nothing in the ledger yet: what the consumer starts from was done before.
            self.task.marks.reached(first, None);
        }
        let marker = batch.marker.take();
        let covered = if marker.is_some() { last } else { last + 1 };
        self.apply(batch, covered).await?;
        if let Some((event, passed)) = marker {
            self.pass_marker(last, &event).await?;
            // The planner goes on past the marker only now.
            let _ = passed.send(());
        }
        Ok(())
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
}
