//! Dead letters hold the consistency point, and operators resolve them. Every record sent to the
//! dead-letter topic is also recorded in `<metadata_database>.dead_letters` (`book.rs`) before
//! its offset can move past it; while a partition has an open one its consistent point stays
//! where it was (`open.rs`: the partition tasks ask before passing a watermark), so the point
//! never claims a change the target refused. An operator decides: `sink-writer dead-letters
//! retry` asks cdc-source to send the document's current state again (`resend.rs`), and the
//! dead letter is resolved (`retried`) by the batch that applies that state; `skip` records an
//! explicit decision (`skipped`, who, when, why). `status` counts the open ones.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | what the partition tasks use: record, hold, resolve; the refreshing task |
//! | `book.rs` | the collection: recording, reading, resolving |
//! | `open.rs` | which partitions are held (pure) |
//! | `command.rs` | `sink-writer dead-letters list | retry | skip` |

mod book;
pub mod command;
mod open;

use std::time::{Duration, Instant};

use envelope::Event;
use futures::future::BoxFuture;
use rdkafka::Message;

use crate::consume::offsets::Tp;
use crate::consume::reader::Decoded;
use crate::error::Error;
pub use book::{Book, Letter, Resent, COLLECTION, OPEN, RETRIED, SKIPPED};

/// How often every partition's open dead letters are read from the target.
const REFRESH: Duration = Duration::from_secs(3);

/// Where the write path records a dead letter before its offset may pass it:
/// [`DeadLetterBook`]; unit tests use a fake.
pub trait Recorder: Send + Sync {
    fn record<'a>(&'a self, letter: &'a Letter<'a>) -> BoxFuture<'a, Result<(), Error>>;
}

impl Recorder for DeadLetterBook {
    fn record<'a>(&'a self, letter: &'a Letter<'a>) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(DeadLetterBook::record(self, letter))
    }
}

/// The dead letters of this consumer group, and which partitions they hold.
pub struct DeadLetterBook {
    pub book: Book,
    open: open::Open,
}

impl DeadLetterBook {
    pub fn new(book: Book) -> Self {
        Self { book, open: open::Open::default() }
    }

    /// Records a dead letter; from now on its partition's consistent point is held.
    pub async fn record(&self, letter: &Letter<'_>) -> Result<(), Error> {
        self.book.record(letter).await?;
        self.open.recorded(letter.tp);
        Ok(())
    }

    /// Whether `tp` has an open dead letter: no watermark may be passed.
    pub fn holds(&self, tp: &Tp) -> bool {
        self.open.holds(tp)
    }

    /// Reads every partition's open dead letters.
    pub async fn refresh(&self) -> Result<(), Error> {
        let began = Instant::now();
        let open = self.book.open_partitions(None).await?;
        self.open.read_all(open, began);
        Ok(())
    }

    /// Reads one partition's (a task taking it up, or after resolving some).
    pub async fn refresh_partition(&self, tp: &Tp) -> Result<(), Error> {
        let began = Instant::now();
        let open = !self.book.open_partitions(Some(tp)).await?.is_empty();
        self.open.read_one(tp, open, began);
        Ok(())
    }

    /// A batch of `tp` with these re-sent documents is applied: the dead letters they resolve
    /// are `retried`, and the partition is read again.
    pub async fn applied(&self, tp: &Tp, resent: &[Resent]) -> Result<(), Error> {
        if resent.is_empty() {
            return Ok(());
        }
        self.book.resolve(tp, resent, None).await?;
        self.refresh_partition(tp).await
    }
}

/// The re-sent documents among a batch's records. Pure.
pub fn resent(batch: &[Decoded]) -> Vec<Resent> {
    batch
        .iter()
        .filter_map(|d| match &d.event {
            Ok(Event::Change(change)) => change.resend.as_ref().map(|request| Resent {
                offset: d.message.offset(),
                ns: change.ns.to_string(),
                key: d.message.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
                request: request.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// Reads every partition's open dead letters every few seconds, until aborted.
pub async fn refresh(book: &DeadLetterBook, held: &prometheus::IntGauge) {
    loop {
        tokio::time::sleep(REFRESH).await;
        match book.refresh().await {
            Ok(()) => held.set(i64::try_from(book.open.count()).unwrap_or(0)),
            Err(e) => tracing::debug!(error = %e, "cannot read open dead letters now"),
        }
    }
}
