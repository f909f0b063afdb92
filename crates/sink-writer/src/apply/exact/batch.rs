//! One planned batch in one transaction (the first writes of documents the target lacks already
//! turned into inserts, `ahead.rs`), with the writes of documents that have parked writes parked
//! behind them; the transaction tried again without each write the target refuses (a
//! unique index's refusal parks it and its document's later writes, any other goes to the
//! dead-letter topic), until it commits; then the partition's marks move.

use std::time::Instant;

use rdkafka::message::{Message, OwnedMessage};

use super::ahead::Prepared;
use super::Exact;
use crate::apply::parked_store;
use crate::apply::parking::Parked;
use crate::apply::retry::WRITES;
use crate::apply::transaction::{self, Advance, Attempt, Settle};
use crate::apply::write_plan::{DocKey, Plan, WriteOp};
use crate::apply::writer::Outcome;
use crate::apply::Batch;
use crate::dead_letters::Resent;
use crate::error::Error;

/// The messages of a batch, to find a record's key and value for its dead letter.
pub(super) struct Records(pub Vec<OwnedMessage>);

impl Records {
    fn find(&self, offset: i64) -> Option<&OwnedMessage> {
        self.0.iter().find(|m| m.offset() == offset)
    }

    pub fn key(&self, offset: i64) -> Option<Vec<u8>> {
        self.find(offset).and_then(|m| m.key()).map(<[u8]>::to_vec)
    }

    pub fn payload(&self, offset: i64) -> Option<Vec<u8>> {
        self.find(offset).and_then(|m| m.payload()).map(<[u8]>::to_vec)
    }
}

impl Exact<'_> {
    /// Applies a planned batch covering every offset below `covered`.
    pub(super) async fn apply(&mut self, prepared: Prepared, covered: i64) -> Result<(), Error> {
        let shared = self.task.shared.clone();
        let Prepared { batch, reservations, watermark, resent, .. } = prepared;
        self.pending = self.pending.max(watermark);
        let count = batch.messages.len();
        shared.metrics.batch_messages.observe(count as f64);
        shared.metrics.consumed.with_label_values(&[&self.tp.0]).inc_by(count as u64);
        let Batch { plan, messages, undecodable } = batch;
        let Plan { mut rounds, keys, rejected, newest, .. } = plan;
        let records = Records(messages);
        for (offset, reason) in undecodable.iter().chain(&rejected) {
            let stage = if undecodable.iter().any(|(o, _)| o == offset) { "decode" } else { "plan" };
            self.dead_letter(&records, *offset, reason, stage).await?;
        }
        // Writes of documents with parked writes wait behind them, in order.
        let mut parks: Vec<(DocKey, Parked)> = Vec::new();
        for round in &mut rounds {
            let (behind, ready): (Vec<WriteOp>, Vec<WriteOp>) =
                std::mem::take(round).into_iter().partition(|op| self.parking.is_parked(&keys[op.doc]));
            *round = ready;
            for op in behind {
                self.park(&mut parks, &keys, op, &records).await?;
            }
        }
        if rounds.iter().all(Vec::is_empty) && parks.is_empty() && undecodable.is_empty() && rejected.is_empty() {
            // Nothing to write (watermarks, tombstones, events older than an applied DDL): no
            // transaction. The ledger's offset stays behind; what a new owner reads again from
            // there writes nothing either.
            self.task.marks.reached(covered, self.consistent_now());
            drop(reservations);
            return Ok(());
        }
        // A document whose parked writes were settled after this batch was planned may have been
        // taken as absent: it is upserted, not inserted.
        for op in rounds.iter_mut().flatten().filter(|op| self.settled.contains(&keys[op.doc])) {
            op.as_upsert();
        }
        self.settled.clear();
        self.ensure_collections(&rounds).await?;
        let started = Instant::now();
        let mut singly = false;
        loop {
            let (entries, moot) = self.settle_for(&parks)?;
            let settle = Settle { park: entries, unpark: moot.iter().map(String::as_str).collect() };
            // Nothing parked, and no open dead letter: the consistent point may move.
            let empty_after = self.parking.is_empty() && parks.is_empty() && !shared.dead_letter_book.holds(&self.tp);
            let advance = Advance {
                epoch: self.epoch,
                offset: covered,
                consistent: empty_after.then_some(self.pending).flatten(),
            };
            match self.transact(advance, &rounds, &settle, singly, &resent).await? {
                Attempt::Committed => break,
                Attempt::Isolate => singly = true,
                // Another owner settled some of the lot (a cycle broken from its partition).
                Attempt::ParkedMoved => self.reload_parked().await?,
                // An insert the target refuses is tried again as the upsert it came from, with
                // every insert into its collection (a key it holds under another type of the same
                // value is likely not alone): one more transaction per collection at most.
                Attempt::Refused { round, index, .. } if rounds[round][index].as_upsert() => {
                    let ns = rounds[round][index].ns.clone();
                    for op in rounds.iter_mut().flatten().filter(|op| op.ns == ns) {
                        op.as_upsert();
                    }
                }
                Attempt::Refused { round, index, outcome, .. } => {
                    let op = rounds[round].remove(index);
                    match outcome {
                        Outcome::Conflict(conflict) => {
                            shared.metrics.unique_conflicts.inc();
                            tracing::debug!(partition = %self.name, reason = %conflict.reason, "a unique index refuses a write for now: parked");
                            let doc = op.doc;
                            self.park(&mut parks, &keys, op, &records).await?;
                            // Its document's later writes wait behind it.
                            let later: Vec<WriteOp> = rounds
                                .iter_mut()
                                .skip(round + 1)
                                .filter_map(|r| r.iter().position(|o| o.doc == doc).map(|at| r.remove(at)))
                                .collect();
                            for op in later {
                                self.park(&mut parks, &keys, op, &records).await?;
                            }
                        }
                        Outcome::Rejected(reason) => self.dead_letter(&records, op.offset, &reason, "apply").await?,
                        Outcome::Applied => {}
                    }
                }
            }
        }
        shared.metrics.bulk_seconds.observe(started.elapsed().as_secs_f64());
        for op in rounds.iter().flatten() {
            shared.metrics.applied.with_label_values(&[op.kind()]).inc();
        }
        for (key, parked) in parks {
            self.parking.park(key, parked);
        }
        // The dead letters the re-sent documents resolve were marked in the transaction.
        if !resent.is_empty() {
            let letters = &shared.dead_letter_book;
            shared.retrier.run(WRITES, &self.name, &self.task.stop, || letters.refresh_partition(&self.tp)).await?;
        }
        self.task.marks.reached(covered, self.consistent_now());
        drop(reservations);
        crate::apply::applied(&shared, &keys, newest).await;
        Ok(())
    }

    /// Parks a write (numbered after every earlier one); one too large to be kept in the target
    /// goes to the dead-letter topic instead.
    async fn park(
        &self,
        parks: &mut Vec<(DocKey, Parked)>,
        keys: &[DocKey],
        mut op: WriteOp,
        records: &Records,
    ) -> Result<(), Error> {
        // A parked write is tried again later, when the target may have its document.
        op.as_upsert();
        if !parked_store::fits(&op) {
            let reason = "a unique index refuses it for now and it is too large to wait in the target's parked writes";
            return self.dead_letter(records, op.offset, reason, "apply").await;
        }
        parks.push(self.parked(keys, op, records));
        Ok(())
    }

    /// A write to park, numbered after every earlier one.
    fn parked(&self, keys: &[DocKey], op: WriteOp, records: &Records) -> (DocKey, Parked) {
        let seq = self.parking.next_seq(op.offset);
        let parked = Parked {
            seq,
            key: records.key(op.offset),
            payload: records.payload(op.offset),
            hold: -1,
            since: std::time::Instant::now(),
            op,
        };
        (keys[parked.op.doc].clone(), parked)
    }

    /// The entries the transaction records for `parks` (a replacement or delete makes its
    /// document's earlier parked writes moot, here and in the lot), and the lot's entries it
    /// removes as moot.
    fn settle_for(&self, parks: &[(DocKey, Parked)]) -> Result<(Vec<bson::Document>, Vec<String>), Error> {
        let ledger = self.task.shared.ledger();
        let mut kept: Vec<&(DocKey, Parked)> = Vec::new();
        let mut moot: Vec<String> = Vec::new();
        for park in parks {
            if park.1.op.is_absolute() {
                kept.retain(|(key, _)| *key != park.0);
                moot.extend(self.parking.of(&park.0).iter().map(|p| parked_store::id(ledger.group(), &self.tp, p.seq)));
            }
            kept.push(park);
        }
        moot.sort();
        moot.dedup();
        let entries = kept
            .into_iter()
            .map(|(key, parked)| parked_store::encode(ledger.group(), &self.tp, key, parked).map_err(Error::fatal))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((entries, moot))
    }

    /// One transaction, retried while the target fails (not when it refuses a write).
    pub(super) async fn transact(
        &mut self,
        advance: Advance,
        rounds: &[Vec<WriteOp>],
        settle: &Settle<'_>,
        singly: bool,
        resent: &[Resent],
    ) -> Result<Attempt, Error> {
        let shared = self.task.shared.clone();
        let (tp, stop) = (&self.tp, &self.task.stop);
        let (ledger, writer, write_concern) = (shared.ledger(), &shared.writer, &shared.write_concern);
        let resolve = (!resent.is_empty()).then_some((&shared.dead_letter_book.book, resent));
        let contents = transaction::Contents { advance, rounds, settle, singly, resolve };
        shared
            .retrier
            .run_on(WRITES, &self.name, stop, &mut self.session, |session, _| {
                Box::pin(transaction::attempt(session, write_concern, ledger, writer, tp, contents))
            })
            .await
    }

    /// Sends a record to the dead-letter topic.
    pub(super) async fn dead_letter(
        &self,
        records: &Records,
        offset: i64,
        reason: &str,
        stage: &'static str,
    ) -> Result<(), Error> {
        self.dead_letter_raw(offset, records.key(offset).as_deref(), records.payload(offset).as_deref(), reason, stage)
            .await
    }

    pub(super) async fn dead_letter_raw(
        &self,
        offset: i64,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        reason: &str,
        stage: &'static str,
    ) -> Result<(), Error> {
        let to = self.task.destination();
        let dead =
            crate::apply::round::DeadLetterer { writes: self.task.shared.writes(), to: &to, stop: &self.task.stop };
        dead.send(offset, key, payload, reason, stage).await
    }

    /// Creates the collections a transaction is about to write to that the target does not have
    /// (Amazon DocumentDB creates none inside a transaction).
    async fn ensure_collections(&self, rounds: &[Vec<WriteOp>]) -> Result<(), Error> {
        let shared = self.task.shared.clone();
        for ns in transaction::namespaces(rounds) {
            if shared.collection_known(&ns) {
                continue;
            }
            shared.retrier.run(WRITES, &self.name, &self.task.stop, || shared.create_collection(&ns)).await?;
        }
        Ok(())
    }

    /// Reads the lot back from the target (another owner settled some of it).
    pub(super) async fn reload_parked(&mut self) -> Result<(), Error> {
        let shared = self.task.shared.clone();
        let ledger = shared.ledger();
        let entries = shared
            .retrier
            .run(WRITES, &self.name, &self.task.stop, || {
                parked_store::load(ledger.database(), ledger.group(), &self.tp)
            })
            .await?;
        self.parking.reload(entries);
        Ok(())
    }
}
