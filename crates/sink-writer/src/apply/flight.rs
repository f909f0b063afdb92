//! The batches of one partition being written: several at once when they touch disjoint
//! documents, completing in the order they started, each moving the partition's durable offset
//! (the next offset to commit) to the offset it covers. A batch that touches a document still in
//! flight waits, so one document's changes reach the target in order. Once one fails, nothing
//! after it is reported: the durable offset stays before the failed batch, where the partition
//! starts again.

use std::collections::{HashSet, VecDeque};

use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::StreamExt;

use envelope::ClusterTime;

use crate::apply::write_plan::DocKey;
use crate::error::Error;

/// What a written batch covers: everything before `offset` is applied, and with it the newest
/// source watermark among its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Covered {
    pub offset: i64,
    pub watermark: Option<ClusterTime>,
}

/// A batch's write.
pub type Write = BoxFuture<'static, Result<Covered, Error>>;

/// Where completed batches are reported (the partition's marks, through its parking lot).
pub type OnDone = Box<dyn Fn(Covered) + Send + Sync>;

pub struct Flight {
    writes: FuturesOrdered<Write>,
    keys: VecDeque<HashSet<DocKey>>,
    on_done: OnDone,
    /// A batch failed: the ones after it are awaited, never reported.
    failed: bool,
}

impl Flight {
    pub fn new(on_done: OnDone) -> Self {
        Self { writes: FuturesOrdered::new(), keys: VecDeque::new(), on_done, failed: false }
    }

    pub fn len(&self) -> usize {
        self.writes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Whether a batch touching `keys` must wait for one in flight.
    pub fn overlaps(&self, keys: &HashSet<DocKey>) -> bool {
        self.keys.iter().any(|k| !k.is_disjoint(keys))
    }

    pub fn push(&mut self, keys: HashSet<DocKey>, write: Write) {
        self.writes.push_back(write);
        self.keys.push_back(keys);
    }

    /// The oldest batch's outcome, once it completes; pending for ever when nothing is in
    /// flight (for `select!`).
    pub async fn next_done(&mut self) -> Result<Covered, Error> {
        match self.writes.next().await {
            Some(done) => done,
            None => std::future::pending().await,
        }
    }

    /// Records the oldest batch's outcome: what it covers is reported, unless a batch before it
    /// failed. A failure is returned and nothing is reported.
    pub fn completed(&mut self, done: Result<Covered, Error>) -> Result<(), Error> {
        self.keys.pop_front();
        match done {
            Ok(covered) if !self.failed => (self.on_done)(covered),
            Ok(_) => {}
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Waits for the oldest batch and records it.
    pub async fn complete_one(&mut self) -> Result<(), Error> {
        if self.is_empty() {
            return Ok(());
        }
        let done = self.next_done().await;
        self.completed(done)
    }

    /// Waits for every batch in flight, in order (a write cannot be called back): the first
    /// failure met, or `Stopped` when one was met before.
    pub async fn drain(&mut self) -> Result<(), Error> {
        let mut first = None;
        while !self.is_empty() {
            if let Err(e) = self.complete_one().await {
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(e),
            None if self.failed => Err(Error::Stopped),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consume::offsets::Marks;
    use envelope::Namespace;
    use tokio::sync::oneshot;

    fn flight(marks: &Marks) -> Flight {
        let marks = marks.clone();
        Flight::new(Box::new(move |c: Covered| marks.reached(c.offset, c.watermark)))
    }

    fn keys(ids: &[&str]) -> HashSet<DocKey> {
        ids.iter().map(|id| (Namespace::new("db", "c"), (*id).to_string())).collect()
    }

    fn write(rx: oneshot::Receiver<Result<i64, Error>>) -> Write {
        Box::pin(async move {
            let offset = rx.await.unwrap_or(Err(Error::Stopped))?;
            Ok(Covered { offset, watermark: (offset == 20).then_some(ClusterTime { t: 7, i: 1 }) })
        })
    }

    #[tokio::test]
    async fn the_durable_offset_moves_only_in_order() {
        let marks = Marks::default();
        let mut flight = flight(&marks);
        let (first_tx, first) = oneshot::channel();
        let (second_tx, second) = oneshot::channel();
        flight.push(keys(&["1"]), write(first));
        flight.push(keys(&["2"]), write(second));
        assert!(flight.overlaps(&keys(&["2", "3"])), "a batch touching a document in flight waits");
        assert!(!flight.overlaps(&keys(&["3"])));

        second_tx.send(Ok(20)).expect("send");
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), flight.complete_one()).await;
        assert!(waited.is_err(), "the second batch cannot complete before the first");
        assert_eq!((marks.durable(), marks.consistent()), (-1, None));

        first_tx.send(Ok(10)).expect("send");
        flight.drain().await.expect("both succeed");
        assert_eq!(marks.durable(), 20);
        assert_eq!(marks.consistent(), Some(ClusterTime { t: 7, i: 1 }), "the second batch's watermark");
        assert!(flight.is_empty() && !flight.overlaps(&keys(&["1", "2"])));
    }

    #[tokio::test]
    async fn a_failed_batch_keeps_the_durable_offset_before_it() {
        let marks = Marks::default();
        marks.reached(5, None);
        let mut flight = flight(&marks);
        let (tx, rx) = oneshot::channel();
        flight.push(keys(&["1"]), write(rx));
        tx.send(Err(Error::Stopped)).expect("send");
        assert!(flight.drain().await.is_err());
        assert_eq!(marks.durable(), 5);
    }

    /// A task whose batch failed drains what is still in flight as it ends: batches after the
    /// failed one that succeeded must not move the durable offset past it (the next owner starts
    /// there, and would skip the failed batch for good).
    #[tokio::test]
    async fn batches_after_a_failed_one_never_move_the_durable_offset_past_it() {
        let marks = Marks::default();
        marks.reached(5, None);
        let mut flight = flight(&marks);
        let (failing_tx, failing) = oneshot::channel();
        let (later_tx, later) = oneshot::channel();
        flight.push(keys(&["1"]), write(failing));
        flight.push(keys(&["2"]), write(later));
        later_tx.send(Ok(20)).expect("send");
        failing_tx.send(Err(Error::Stopped)).expect("send");
        assert!(flight.complete_one().await.is_err(), "the first batch failed");
        assert!(flight.drain().await.is_err(), "a drain after a failure reports the failure");
        assert!(flight.is_empty(), "everything in flight was awaited");
        assert_eq!((marks.durable(), marks.consistent()), (5, None));
    }
}
