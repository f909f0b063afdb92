//! One attempt at a target transaction of a partition (`exactly_once`): the ledger first (the
//! offset the transaction brings the partition to, on the condition that this owner's epoch
//! still holds it), then the rounds of writes, then the parked writes it records or settles,
//! then the commit. The first statement the target refuses ends the attempt (the server has
//! aborted the transaction): the caller decides what becomes of that write and tries again
//! without it. A commit whose outcome is unknown is asked again until it is known.

use std::time::Duration;

use bson::{doc, Document};
use envelope::{ClusterTime, Namespace};
use mongodb::error::{TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use mongodb::options::{Acknowledgment, WriteConcern};
use mongodb::ClientSession;
use service_kit::backoff::Backoff;

use crate::apply::ledger::Ledger;
use crate::apply::parked_store::PARKED;
use crate::apply::write_plan::WriteOp;
use crate::apply::writer::{InTransaction, Outcome, Writer};
use crate::consume::offsets::Tp;
use crate::dead_letters::{Book, Resent};
use crate::error::{Common, Error};

/// How often a commit whose outcome is unknown is asked again before the attempt counts as
/// failed (and is retried whole: a new transaction on the same session ends the old one).
const COMMIT_TRIES: usize = 5;

/// Where the partition's ledger goes with this transaction.
#[derive(Debug, Clone, Copy)]
pub struct Advance {
    pub epoch: i64,
    /// The next offset to read once this transaction commits.
    pub offset: i64,
    /// The cluster time up to which the partition is then applied (none: unchanged).
    pub consistent: Option<ClusterTime>,
}

/// What the transaction does to the parked writes, besides the rounds.
#[derive(Debug, Default)]
pub struct Settle<'a> {
    /// Entries to record (upserted by `_id`: a retried attempt records them once).
    pub park: Vec<Document>,
    /// Entries no longer parked: each must still exist, or another owner settled it first.
    pub unpark: Vec<&'a str>,
}

/// What one transaction writes, in order: the ledger's advance, the rounds, the parked writes.
#[derive(Debug, Clone, Copy)]
pub struct Contents<'a> {
    pub advance: Advance,
    pub rounds: &'a [Vec<WriteOp>],
    pub settle: &'a Settle<'a>,
    /// Each statement in a command of its own (after a command was refused as a whole).
    pub singly: bool,
    /// Re-sent documents among the batch: the dead letters they resolve, marked in the same
    /// transaction.
    pub resolve: Option<(&'a Book, &'a [Resent])>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Committed,
    /// Statement `index` of round `round` was refused: the transaction is gone. `passed` lists
    /// the statements of that round the target took before it.
    Refused {
        round: usize,
        index: usize,
        outcome: Outcome,
        passed: Vec<usize>,
    },
    /// A command was refused as a whole: try again sending statements one by one.
    Isolate,
    /// A parked entry to settle was gone: another owner settled it (a cycle broken from another
    /// partition); reload the parked writes and try again.
    ParkedMoved,
}

/// The transaction's settings: the configured write concern at commit.
pub fn write_concern(w: &str, journal: bool) -> WriteConcern {
    let w = match w.parse::<u32>() {
        Ok(n) => Acknowledgment::Nodes(n),
        Err(_) => Acknowledgment::Majority,
    };
    WriteConcern::builder().w(w).journal(journal).build()
}

/// Runs one attempt.
pub async fn attempt(
    session: &mut ClientSession,
    write_concern: &WriteConcern,
    ledger: &Ledger,
    writer: &Writer,
    tp: &Tp,
    contents: Contents<'_>,
) -> Result<Attempt, Error> {
    session
        .start_transaction()
        .write_concern(write_concern.clone())
        .await
        .map_err(|e| Error::mongo("start a transaction", e))?;
    let outcome = body(session, ledger, writer, tp, contents).await;
    match outcome {
        Ok(Attempt::Committed) => commit(session).await,
        Ok(ended) => {
            abort(session).await;
            Ok(ended)
        }
        Err(e) => {
            abort(session).await;
            Err(e)
        }
    }
}

async fn body(
    session: &mut ClientSession,
    ledger: &Ledger,
    writer: &Writer,
    tp: &Tp,
    contents: Contents<'_>,
) -> Result<Attempt, Error> {
    let Contents { advance, rounds, settle, singly, resolve } = contents;
    ledger.advance_in(session, tp, advance.epoch, advance.offset, advance.consistent).await?;
    for (index, round) in rounds.iter().enumerate().filter(|(_, r)| !r.is_empty()) {
        match writer.apply_in(session, round, singly).await? {
            InTransaction::Applied => {}
            InTransaction::Refused(at, outcome, passed) => {
                return Ok(Attempt::Refused { round: index, index: at, outcome, passed })
            }
            InTransaction::Isolate => return Ok(Attempt::Isolate),
        }
    }
    let parked = ledger.database().collection::<Document>(PARKED);
    if !settle.park.is_empty() {
        let updates: Vec<Document> = settle
            .park
            .iter()
            .map(|entry| doc! {"q": {"_id": entry.get("_id").cloned()}, "u": entry.clone(), "upsert": true})
            .collect();
        let reply = ledger
            .database()
            .run_command(doc! {"update": PARKED, "updates": updates})
            .session(&mut *session)
            .await
            .map_err(|e| Error::mongo("record parked writes", e))?;
        if reply.get_array("writeErrors").is_ok() {
            return Err(Error::fatal(format!("the target refused to record parked writes: {reply:?}")));
        }
    }
    for id in &settle.unpark {
        let deleted = parked
            .delete_one(doc! {"_id": *id})
            .session(&mut *session)
            .await
            .map_err(|e| Error::mongo("settle a parked write", e))?;
        if deleted.deleted_count != 1 {
            return Ok(Attempt::ParkedMoved);
        }
    }
    if let Some((book, resent)) = resolve {
        book.resolve(tp, resent, Some(&mut *session)).await?;
    }
    Ok(Attempt::Committed)
}

/// Commits, asking again while the outcome is unknown (a commit is safe to repeat).
async fn commit(session: &mut ClientSession) -> Result<Attempt, Error> {
    let mut tries = 0;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        match session.commit_transaction().await {
            Ok(()) => return Ok(Attempt::Committed),
            Err(e) if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) && tries + 1 < COMMIT_TRIES => {
                tries += 1;
                tracing::debug!(error = %e, "transaction commit outcome unknown: asking again");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => return Err(transaction_error("commit a transaction", e)),
        }
    }
}

async fn abort(session: &mut ClientSession) {
    if let Err(e) = session.abort_transaction().await {
        tracing::debug!(error = %e, "aborting a transaction the server had ended already");
    }
}

/// A failure inside a transaction: one labelled transient (a write conflict with a concurrent
/// owner, an election) is retried whole.
pub fn transaction_error(context: &str, e: mongodb::error::Error) -> Error {
    let transient =
        e.contains_label(TRANSIENT_TRANSACTION_ERROR) || e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT);
    match Error::mongo(context, e) {
        Error::Common(Common::Mongo(mut failure)) if transient => {
            failure.retriable = true;
            Error::Common(Common::Mongo(failure))
        }
        other => other,
    }
}

/// Namespaces a batch writes to: each must exist before a transaction writes to it (Amazon
/// DocumentDB creates none inside one).
pub fn namespaces(rounds: &[Vec<WriteOp>]) -> Vec<Namespace> {
    let mut all: Vec<Namespace> = rounds.iter().flatten().map(|op| op.ns.clone()).collect();
    all.sort();
    all.dedup();
    all
}
