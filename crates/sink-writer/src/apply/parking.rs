//! Writes a unique secondary index refuses for now, parked per document. The value is still
//! held here by another document whose change is on its way (often from another partition, or
//! from a partition that got ahead): the refused write waits with every later write of the same
//! document, in order, while the partition goes on with the other documents, and they are tried
//! again until they pass. Only the document waits, never the partition: two partitions waiting
//! for each other's documents would otherwise wait for ever. A write still refused after
//! `apply.conflict_retry_timeout_ms` goes to the dead-letter topic, and its document's next
//! writes are tried.
//!
//! A later replacement or delete of a parked document makes its parked writes moot: they are
//! dropped and only the newest state waits. (A value refused because a partition that got ahead
//! already wrote its final holder is never freed: the newest state of the refused document, which
//! the source made valid, is what passes.)
//!
//! In the `idempotent` mode the partition's durable offset stays before the first batch that
//! parked a write until the lot is empty (a restart reads those batches again; writes are
//! idempotent), and so does its watermark. In the `exactly_once` mode the lot is kept in the
//! target too (`parked_store.rs`), recorded by the transaction that moves the offset past it.
//!
//! Every parked write has its own number: a retry settles exactly the write it tried, never a
//! newer one of the same document that was parked while the retry was on its way.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use envelope::ClusterTime;
use service_kit::backoff::Backoff;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::apply::flight::Covered;
use crate::apply::round::{apply_round, DeadLetterer, Destination, Writes};
use crate::apply::shared::Shared;
use crate::apply::write_plan::{DocKey, WriteOp};
use crate::apply::writer::Outcome;
use crate::consume::offsets::Marks;
use crate::error::Error;

/// A parked write and what a dead letter of it needs.
#[derive(Debug, Clone)]
pub struct Parked {
    /// Its place among the partition's parked writes (unique there, in the order they came).
    pub seq: u64,
    pub op: WriteOp,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// The first offset of its batch: the durable offset stays there while it is parked.
    pub hold: i64,
    pub since: Instant,
}

#[derive(Default)]
struct Lot {
    docs: BTreeMap<DocKey, VecDeque<Parked>>,
    /// The highest offset completed batches covered, and their newest watermark.
    covered: i64,
    watermark: Option<ClusterTime>,
    /// The last number given to a parked write.
    last_seq: u64,
}

impl Lot {
    fn hold(&self) -> Option<i64> {
        self.docs.values().flat_map(|q| q.iter().map(|p| p.hold)).min()
    }
}

#[derive(Default)]
pub struct Parking {
    lot: Mutex<Lot>,
    parked: Notify,
    emptied: Notify,
}

impl Parking {
    fn lock(&self) -> MutexGuard<'_, Lot> {
        self.lot.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_parked(&self, key: &DocKey) -> bool {
        self.lock().docs.contains_key(key)
    }

    /// The number the next write parked from `offset` gets: after every earlier one.
    pub fn next_seq(&self, offset: i64) -> u64 {
        let mut lot = self.lock();
        let seq = (u64::try_from(offset).unwrap_or(0) << 10).max(lot.last_seq + 1);
        lot.last_seq = seq;
        seq
    }

    /// Parks a write behind its document's parked writes. A replacement or delete makes the
    /// writes parked before it moot (the refused one too): the document waits for its newest
    /// state only, which a value held by a partition that got ahead never blocks for ever.
    /// Returns the numbers of the writes made moot.
    pub fn park(&self, key: DocKey, parked: Parked) -> Vec<u64> {
        let mut lot = self.lock();
        lot.last_seq = lot.last_seq.max(parked.seq);
        let queue = lot.docs.entry(key).or_default();
        let moot = if parked.op.is_absolute() { queue.drain(..).map(|p| p.seq).collect() } else { Vec::new() };
        queue.push_back(parked);
        drop(lot);
        self.parked.notify_one();
        moot
    }

    /// Settles one parked write (it passed, or went to the dead-letter topic): whether it was
    /// still parked (a newer replacement may have made it moot meanwhile).
    pub fn settle(&self, key: &DocKey, seq: u64) -> bool {
        let mut lot = self.lock();
        let Some(queue) = lot.docs.get_mut(key) else { return false };
        let before = queue.len();
        queue.retain(|p| p.seq != seq);
        let settled = queue.len() < before;
        if queue.is_empty() {
            lot.docs.remove(key);
        }
        if lot.docs.is_empty() {
            drop(lot);
            self.emptied.notify_waiters();
        }
        settled
    }

    /// Replaces the whole lot (read back from the target).
    pub fn reload(&self, entries: Vec<(DocKey, Parked)>) {
        let mut lot = self.lock();
        lot.docs.clear();
        for (key, parked) in entries {
            lot.last_seq = lot.last_seq.max(parked.seq);
            lot.docs.entry(key).or_default().push_back(parked);
        }
        let empty = lot.docs.is_empty();
        drop(lot);
        if empty {
            self.emptied.notify_waiters();
        } else {
            self.parked.notify_one();
        }
    }

    /// The first parked write of every document.
    pub fn fronts(&self) -> Vec<(DocKey, Parked)> {
        self.lock().docs.iter().filter_map(|(k, q)| q.front().map(|p| (k.clone(), p.clone()))).collect()
    }

    /// Every parked write of a document, in order.
    pub fn of(&self, key: &DocKey) -> Vec<Parked> {
        self.lock().docs.get(key).map(|q| q.iter().cloned().collect()).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().docs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.lock().docs.values().map(VecDeque::len).sum()
    }

    /// A batch completed: the partition's marks move to what it covers, or stay before the
    /// first batch with a parked write.
    pub fn covered(&self, covered: Covered, marks: &Marks) {
        let mut lot = self.lock();
        lot.covered = lot.covered.max(covered.offset);
        lot.watermark = lot.watermark.max(covered.watermark);
        match lot.hold() {
            None => marks.reached(covered.offset, covered.watermark),
            Some(hold) => marks.reached(hold.min(covered.offset), None),
        }
    }

    /// Waits until nothing is parked (before a DDL marker: everything before it must be applied).
    pub async fn until_empty(&self, stop: &CancellationToken) -> Result<(), Error> {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            emptied.as_mut().enable();
            if self.is_empty() {
                return Ok(());
            }
            tokio::select! {
                _ = stop.cancelled() => return Err(Error::Stopped),
                _ = emptied => {}
            }
        }
    }

    /// Tries parked writes again until `stop`, the first of each document per round.
    pub async fn run(self: Arc<Self>, shared: Arc<Shared>, to: Destination, marks: Marks, stop: CancellationToken) {
        let patience = Patience {
            limit: Duration::from_millis(shared.apply.conflict_retry_timeout_ms),
            max_pause: Duration::from_millis(shared.apply.max_backoff_ms).min(Duration::from_secs(2)),
        };
        let tp = (to.topic.clone(), to.partition);
        // A write given up meanwhile is an open dead letter: it holds the point.
        let held = || shared.dead_letter_book.holds(&tp);
        self.retry(shared.writes(), &to, &marks, patience, held, &stop).await
    }

    /// [`Parking::run`]: rounds over the parked writes while there are any; the partition's marks
    /// move on once the lot is empty (not its watermark while `held`).
    async fn retry(
        &self,
        writes: Writes<'_>,
        to: &Destination,
        marks: &Marks,
        patience: Patience,
        held: impl Fn() -> bool,
        stop: &CancellationToken,
    ) {
        loop {
            let parked = self.parked.notified();
            tokio::pin!(parked);
            parked.as_mut().enable();
            if self.is_empty() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = parked => {}
                }
            }
            let mut backoff = Backoff::new(Duration::from_millis(20), patience.max_pause);
            while !self.is_empty() {
                if !backoff.wait(stop).await {
                    return;
                }
                match self.retry_once(&writes, to, patience.limit, stop).await {
                    Ok(true) => backoff.reset(),
                    Ok(false) => {}
                    Err(_) => return,
                }
            }
            let lot = self.lock();
            if lot.docs.is_empty() {
                marks.reached(lot.covered, lot.watermark.filter(|_| !held()));
                drop(lot);
                self.emptied.notify_waiters();
            }
        }
    }

    /// One round over the parked documents; whether any write passed.
    async fn retry_once(
        &self,
        writes: &Writes<'_>,
        to: &Destination,
        limit: Duration,
        stop: &CancellationToken,
    ) -> Result<bool, Error> {
        let fronts = self.fronts();
        let round: Vec<WriteOp> = fronts.iter().map(|(_, p)| p.op.clone()).collect();
        let outcomes = apply_round(writes, to, round, stop).await?;
        let mut moved = false;
        for ((key, parked), (_, outcome)) in fronts.into_iter().zip(outcomes) {
            let give_up = match outcome {
                Outcome::Applied => None,
                Outcome::Conflict(conflict) if parked.since.elapsed() >= limit => {
                    Some(format!("{} (still a duplicate after {} s)", conflict.reason, limit.as_secs()))
                }
                Outcome::Conflict(_) => continue,
                Outcome::Rejected(reason) => Some(reason),
            };
            if let Some(reason) = give_up {
                let dead = DeadLetterer { writes: *writes, to, stop };
                dead.send(parked.op.offset, parked.key.as_deref(), parked.payload.as_deref(), &reason, "apply").await?;
            }
            moved = true;
            self.settle(&key, parked.seq);
        }
        Ok(moved)
    }
}

/// How long a parked write is tried before it goes to the dead-letter topic, and the longest
/// pause between rounds.
#[derive(Clone, Copy)]
struct Patience {
    limit: Duration,
    max_pause: Duration,
}

#[cfg(test)]
mod tests {
    use bson::doc;
    use envelope::ClusterTime;

    use super::*;
    use crate::apply::fake::{self, Fakes};

    fn parked(op: WriteOp, seq: u64) -> Parked {
        Parked {
            seq,
            key: None,
            payload: Some(format!("v{}", op.offset).into_bytes()),
            hold: 10,
            since: Instant::now(),
            op,
        }
    }

    const PATIENT: Patience = Patience { limit: Duration::from_secs(3600), max_pause: Duration::from_millis(5) };

    #[tokio::test]
    async fn when_the_blocker_moves_away_the_parked_writes_land_in_order_and_the_offset_moves_on() {
        let fakes = Fakes::new();
        fakes.target.unique_index(&fake::ns(), "email");
        fakes.target.put(&fake::ns(), doc! {"_id": 9, "email": "x"});
        let parking = Parking::default();
        parking.park(fake::doc_key(1), parked(fake::replace(1, doc! {"email": "x"}, 10, 0), 1));
        parking.park(fake::doc_key(1), parked(fake::set(1, doc! {"name": "a"}, 12, 0), 2));
        let marks = Marks::default();
        let watermark = Some(ClusterTime { t: 5, i: 1 });
        parking.covered(Covered { offset: 20, watermark }, &marks);
        assert_eq!((marks.durable(), marks.consistent()), (10, None), "held before the parked write's batch");

        let (to, stop) = (fake::destination(), CancellationToken::new());
        let retrying = parking.retry(fakes.writes(), &to, &marks, PATIENT, || false, &stop);
        let blocker_moves = async {
            while fakes.target.commands().len() < 3 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert_eq!(fakes.target.get(&fake::ns(), 1), None, "still refused while the value is held");
            assert_eq!(parking.len(), 2, "nothing dropped while waiting");
            fakes.target.put(&fake::ns(), doc! {"_id": 9, "email": "y"});
            parking.until_empty(&stop).await.expect("emptied");
            stop.cancel();
        };
        tokio::join!(retrying, blocker_moves);

        let states = fakes.target.history(1);
        assert_eq!(states, [Some(doc! {"_id": 1, "email": "x"}), Some(doc! {"_id": 1, "email": "x", "name": "a"})]);
        assert_eq!(
            (marks.durable(), marks.consistent()),
            (20, watermark),
            "the marks move to what the batches covered"
        );
        assert!(fakes.dead_letters.sent().is_empty());
    }

    #[tokio::test]
    async fn in_the_idempotent_mode_a_swap_cycle_waits_then_each_write_goes_to_the_dead_letter_topic_once() {
        let fakes = Fakes::new();
        fakes.target.unique_index(&fake::ns(), "email");
        fakes.target.put(&fake::ns(), doc! {"_id": 1, "email": "x"});
        fakes.target.put(&fake::ns(), doc! {"_id": 2, "email": "y"});
        // The source swapped the values; the target sees only the final states, each refused.
        let parking = Parking::default();
        parking.park(fake::doc_key(1), parked(fake::replace(1, doc! {"email": "y"}, 10, 0), 1));
        parking.park(fake::doc_key(2), parked(fake::replace(2, doc! {"email": "x"}, 11, 1), 2));
        let (to, stop) = (fake::destination(), CancellationToken::new());

        let moved = parking.retry_once(&fakes.writes(), &to, PATIENT.limit, &stop).await.expect("a round");
        assert!(!moved && parking.len() == 2, "both wait for their values");
        assert!(fakes.dead_letters.sent().is_empty());

        let moved = parking.retry_once(&fakes.writes(), &to, Duration::ZERO, &stop).await.expect("a round");
        assert!(moved && parking.is_empty(), "given up after the limit");
        let sent = fakes.dead_letters.sent();
        let offsets: Vec<i64> = sent.iter().map(|s| s.offset).collect();
        assert_eq!(offsets, [10, 11], "each write once");
        assert!(sent.iter().all(|s| s.stage == "apply" && s.reason.contains("still a duplicate")), "{sent:?}");
        assert_eq!(fakes.dead_letters.recorded(), sent, "recorded: they hold the partition's point");
        assert_eq!(fakes.target.get(&fake::ns(), 1), Some(doc! {"_id": 1, "email": "x"}), "the target unchanged");
    }

    #[tokio::test]
    async fn a_write_given_up_holds_the_watermark_when_the_lot_empties() {
        let fakes = Fakes::new();
        fakes.target.poison(1);
        let parking = Parking::default();
        parking.park(fake::doc_key(1), parked(fake::replace(1, doc! {"email": "x"}, 10, 0), 1));
        let marks = Marks::default();
        parking.covered(Covered { offset: 20, watermark: Some(ClusterTime { t: 5, i: 1 }) }, &marks);

        let (to, stop) = (fake::destination(), CancellationToken::new());
        // An open dead letter holds the partition's point (as `DeadLetterBook::holds` says).
        let held = || !fakes.dead_letters.recorded().is_empty();
        let retrying = parking.retry(fakes.writes(), &to, &marks, PATIENT, held, &stop);
        let emptied = async {
            parking.until_empty(&stop).await.expect("emptied");
            stop.cancel();
        };
        tokio::join!(retrying, emptied);

        assert_eq!(fakes.dead_letters.sent().len(), 1, "refused for good: dead-lettered at once, once");
        assert_eq!((marks.durable(), marks.consistent()), (20, None), "the offset moves on, the watermark does not");
    }

    #[tokio::test]
    async fn a_ddl_marker_waits_until_nothing_is_parked() {
        let parking = Parking::default();
        let stop = CancellationToken::new();
        parking.park(fake::doc_key(1), parked(fake::replace(1, doc! {"email": "x"}, 10, 0), 1));
        let waiting = tokio::time::timeout(Duration::from_millis(20), parking.until_empty(&stop)).await;
        assert!(waiting.is_err(), "a parked write keeps the marker waiting");
        let (emptied, ()) = tokio::join!(parking.until_empty(&stop), async {
            tokio::task::yield_now().await;
            parking.settle(&fake::doc_key(1), 1);
        });
        assert!(emptied.is_ok(), "passes once the lot is empty");
        parking.park(fake::doc_key(2), parked(fake::replace(2, doc! {"email": "y"}, 11, 1), 2));
        stop.cancel();
        assert!(matches!(parking.until_empty(&stop).await, Err(Error::Stopped)), "a stopped partition stops waiting");
    }

    #[test]
    fn a_later_replacement_makes_the_parked_writes_before_it_moot() {
        let parking = Parking::default();
        let key = fake::doc_key(1);
        assert!(parking.park(key.clone(), parked(fake::replace(1, doc! {"email": "x"}, 10, 0), 1)).is_empty());
        assert!(
            parking.park(key.clone(), parked(fake::set(1, doc! {"n": 1}, 11, 0), 2)).is_empty(),
            "an update waits behind"
        );
        let moot = parking.park(key.clone(), parked(fake::replace(1, doc! {"email": "z"}, 12, 0), 3));
        assert_eq!(moot, [1, 2]);
        let left: Vec<u64> = parking.of(&key).iter().map(|p| p.seq).collect();
        assert_eq!(left, [3], "only the newest state waits");
        assert!(!parking.settle(&key, 1), "a retry of a moot write settles nothing");
        assert!(parking.settle(&key, 3) && parking.is_empty());
        assert!(parking.next_seq(12) > 3, "numbers never repeat");
    }
}
