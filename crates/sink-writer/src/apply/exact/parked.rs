//! Parked writes tried again, between batches: the first parked write of every document in one
//! transaction that settles them (removes them from the target's lot) and, when the lot empties,
//! moves the partition's consistent point. A write still refused waits for the next round, until
//! `apply.conflict_retry_timeout_ms` sends it to the dead-letter topic; a refusal by a value that
//! another parked document holds may be a cycle, which `cycle.rs` breaks.

use std::time::{Duration, Instant};

use super::Exact;
use crate::apply::parked_store;
use crate::apply::parking::Parked;
use crate::apply::transaction::{Advance, Attempt, Settle};
use crate::apply::write_plan::{DocKey, WriteOp};
use crate::apply::writer::{Conflict, Outcome};
use crate::error::Error;

impl Exact<'_> {
    /// One round over the parked documents, at most two transactions: all of them; on a refusal,
    /// the refused one waits (or goes to the dead-letter topic when it waited long enough) and the
    /// ones the target took before it are committed, the others are tried first next round.
    pub(super) async fn retry_parked(&mut self) -> Result<(), Error> {
        let shared = self.task.shared.clone();
        let limit = Duration::from_millis(shared.apply.conflict_retry_timeout_ms);
        let mut fronts = self.parking.fronts();
        let turn = self.turn % fronts.len().max(1);
        fronts.rotate_left(turn);
        let mut trying: Vec<(DocKey, Parked)> = fronts;
        let mut dropped: Vec<(DocKey, Parked)> = Vec::new();
        let mut waiting: Vec<(DocKey, Parked, Conflict)> = Vec::new();
        let mut singly = false;
        let total = self.parking.len();
        loop {
            let round: Vec<WriteOp> = trying.iter().map(|(_, p)| p.op.clone()).collect();
            let ids: Vec<String> = trying
                .iter()
                .chain(&dropped)
                .map(|(_, p)| parked_store::id(shared.ledger().group(), &self.tp, p.seq))
                .collect();
            let settle = Settle { park: Vec::new(), unpark: ids.iter().map(String::as_str).collect() };
            let empty_after = total == trying.len() + dropped.len() && !shared.dead_letter_book.holds(&self.tp);
            let advance = Advance {
                epoch: self.epoch,
                offset: self.task.marks.durable(),
                consistent: empty_after.then_some(self.pending).flatten(),
            };
            match self.transact(advance, &[round], &settle, singly, &[]).await? {
                Attempt::Committed => break,
                Attempt::Isolate => singly = true,
                Attempt::ParkedMoved => return self.reload_parked().await,
                Attempt::Refused { index, outcome, passed, .. } => {
                    let (key, parked) = trying[index].clone();
                    match outcome {
                        Outcome::Conflict(conflict) if parked.since.elapsed() < limit => {
                            waiting.push((key, parked, conflict))
                        }
                        Outcome::Conflict(conflict) => {
                            let reason = format!("{} (still a duplicate after {} s)", conflict.reason, limit.as_secs());
                            self.give_up(&parked, &reason).await?;
                            dropped.push((key, parked));
                        }
                        Outcome::Rejected(reason) => {
                            self.give_up(&parked, &reason).await?;
                            dropped.push((key, parked));
                        }
                        Outcome::Applied => {}
                    }
                    // What the target took before the refusal passes again; the rest waits for
                    // the next round, first in line.
                    self.turn = turn + index + 1;
                    trying = passed.into_iter().map(|i| trying[i].clone()).collect();
                }
            }
        }
        let moved = !trying.is_empty() || !dropped.is_empty();
        for (key, parked) in trying.iter().chain(&dropped) {
            self.parking.settle(key, parked.seq);
            self.settled.insert(key.clone());
        }
        self.task.marks.reached(self.task.marks.durable(), self.consistent_now());
        let mut broken = false;
        for (key, parked, conflict) in &waiting {
            broken |= self.break_cycle(key, parked, conflict).await?;
        }
        if moved || broken {
            self.backoff.reset();
        }
        self.next_retry = Instant::now() + self.backoff.next_delay();
        Ok(())
    }

    /// A parked write that can never pass goes to the dead-letter topic.
    async fn give_up(&self, parked: &Parked, reason: &str) -> Result<(), Error> {
        self.dead_letter_raw(parked.op.offset, parked.key.as_deref(), parked.payload.as_deref(), reason, "apply").await
    }

    /// Waits until nothing is parked, trying the parked writes meanwhile (before a DDL marker:
    /// everything before it must be applied).
    pub(super) async fn until_nothing_parked(&mut self) -> Result<(), Error> {
        while !self.parking.is_empty() {
            let retry_at = tokio::time::Instant::from_std(self.next_retry);
            tokio::select! {
                _ = self.task.stop.cancelled() => return Err(Error::Stopped),
                _ = tokio::time::sleep_until(retry_at) => self.retry_parked().await?,
            }
        }
        Ok(())
    }
}
