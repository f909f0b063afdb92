//! Applies one planned batch: its rounds in order, each retried until the target takes it (or the
//! partition stops, checked before every attempt so that a revoked partition sends nothing new),
//! what can never be applied to the dead-letter topic.
//!
//! A write a unique secondary index refuses (the value is still held here by a document whose
//! change has not been applied yet, often from another partition) is set aside with every later
//! write of the same document, the rest of the batch goes on, and the set-aside writes are tried
//! again, in their order, until they pass or `apply.conflict_retry_timeout_ms` is over; then the
//! refused one goes to the dead-letter topic and the document's next writes are tried.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::message::{Message, OwnedMessage};
use service_kit::backoff::Backoff;
use tokio_util::sync::CancellationToken;

use crate::dlq::Origin;
use crate::error::Error;
use crate::fence::Fence;
use crate::retry::WRITES;
use crate::shared::Shared;
use crate::write_plan::{Plan, WriteOp};
use crate::writer::Outcome;

/// Where a batch goes, and what proves the partition is still this replica's.
pub struct Destination {
    pub topic: String,
    pub partition: i32,
    pub fence: Arc<Fence>,
}

/// A planned batch and the messages it came from.
pub struct Batch {
    pub plan: Plan,
    pub messages: Vec<OwnedMessage>,
    /// Offsets of messages that could not be decoded, with the reason.
    pub undecodable: Vec<(i64, String)>,
}

pub async fn write_batch(
    shared: Arc<Shared>,
    to: Destination,
    batch: Batch,
    stop: CancellationToken,
) -> Result<(), Error> {
    let dead = DeadLetterer { shared: &shared, to: &to, messages: &batch.messages, stop: &stop };
    for (offset, reason) in &batch.undecodable {
        dead.send(*offset, reason, "decode").await?;
    }
    for (offset, reason) in &batch.plan.rejected {
        dead.send(*offset, reason, "plan").await?;
    }
    // Set-aside writes, per document, in order.
    let mut waiting: BTreeMap<usize, VecDeque<WriteOp>> = BTreeMap::new();
    for round in &batch.plan.rounds {
        let (blocked, ready): (Vec<&WriteOp>, Vec<&WriteOp>) =
            round.iter().partition(|op| waiting.contains_key(&op.doc));
        for op in blocked {
            waiting.entry(op.doc).or_default().push_back(op.clone());
        }
        let ready: Vec<WriteOp> = ready.into_iter().cloned().collect();
        for (op, outcome) in apply_round(&shared, &to, &ready, &stop).await? {
            match outcome {
                Outcome::Applied => {}
                Outcome::Conflict(_) => {
                    shared.metrics.unique_conflicts.inc();
                    waiting.entry(op.doc).or_default().push_back(op);
                }
                Outcome::Rejected(reason) => dead.send(op.offset, &reason, "apply").await?,
            }
        }
    }
    retry_conflicts(&shared, &to, waiting, &dead, &stop).await?;
    // Schema changes the target refused may pass now that data changed.
    let mut touched: Vec<&envelope::Namespace> = batch.plan.keys.iter().map(|(ns, _)| ns).collect();
    touched.dedup();
    for ns in touched {
        shared.ddl.schema().data_changed(ns).await;
    }
    if let Some(newest) = batch.plan.newest {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        shared.metrics.replication_lag_seconds.set(i64::try_from(now.saturating_sub(u64::from(newest.t))).unwrap_or(0));
    }
    Ok(())
}

/// Tries the set-aside writes again, the first of each document per round, until none is left.
async fn retry_conflicts(
    shared: &Shared,
    to: &Destination,
    mut waiting: BTreeMap<usize, VecDeque<WriteOp>>,
    dead: &DeadLetterer<'_>,
    stop: &CancellationToken,
) -> Result<(), Error> {
    if waiting.is_empty() {
        return Ok(());
    }
    let limit = Duration::from_millis(shared.apply.conflict_retry_timeout_ms);
    let since = Instant::now();
    let mut backoff = Backoff::new(
        Duration::from_millis(50),
        Duration::from_millis(shared.apply.max_backoff_ms).min(Duration::from_secs(2)),
    );
    let mut warned = false;
    while !waiting.is_empty() {
        if !backoff.wait(stop).await {
            return Err(Error::Stopped);
        }
        let round: Vec<WriteOp> = waiting.values().filter_map(|q| q.front().cloned()).collect();
        for (op, outcome) in apply_round(shared, to, &round, stop).await? {
            let expired = since.elapsed() >= limit;
            match outcome {
                Outcome::Applied => {}
                Outcome::Conflict(reason) if expired => {
                    let reason = format!("{reason} (still a duplicate after {} s)", limit.as_secs());
                    dead.send(op.offset, &reason, "apply").await?;
                }
                Outcome::Conflict(reason) => {
                    if !warned {
                        tracing::info!(topic = %to.topic, partition = to.partition, %reason, "a unique index refuses a write for now: retrying it");
                        warned = true;
                    }
                    continue;
                }
                Outcome::Rejected(reason) => dead.send(op.offset, &reason, "apply").await?,
            }
            // Passed or given up: the document's next write is next.
            if let Some(queue) = waiting.get_mut(&op.doc) {
                queue.pop_front();
                if queue.is_empty() {
                    waiting.remove(&op.doc);
                }
            }
        }
    }
    Ok(())
}

/// One round, retried until the target answers; each write with its outcome.
async fn apply_round(
    shared: &Shared,
    to: &Destination,
    round: &[WriteOp],
    stop: &CancellationToken,
) -> Result<Vec<(WriteOp, Outcome)>, Error> {
    if round.is_empty() {
        return Ok(Vec::new());
    }
    let started = Instant::now();
    let outcomes = shared
        .retrier
        .run(WRITES, stop, || async {
            to.fence.check(&shared.metrics, stop).await?;
            shared.writer.apply(round).await
        })
        .await?;
    shared.metrics.bulk_seconds.observe(started.elapsed().as_secs_f64());
    for op in round.iter().zip(&outcomes).filter(|(_, o)| **o == Outcome::Applied).map(|(op, _)| op) {
        shared.metrics.applied.with_label_values(&[op.kind()]).inc();
    }
    Ok(round.iter().cloned().zip(outcomes).collect())
}

/// Sends a batch's records to the dead-letter topic.
struct DeadLetterer<'a> {
    shared: &'a Shared,
    to: &'a Destination,
    messages: &'a [OwnedMessage],
    stop: &'a CancellationToken,
}

impl DeadLetterer<'_> {
    async fn send(&self, offset: i64, reason: &str, stage: &'static str) -> Result<(), Error> {
        let message = self.messages.iter().find(|m| m.offset() == offset);
        let origin = Origin { topic: &self.to.topic, partition: self.to.partition, offset, stage };
        tracing::warn!(topic = %self.to.topic, partition = self.to.partition, offset, stage, %reason, "record sent to the dead-letter topic");
        self.shared
            .retrier
            .run(crate::dlq::COMPONENT, self.stop, || {
                self.shared.dead_letters.send(
                    &origin,
                    message.and_then(|m| m.key()),
                    message.and_then(|m| m.payload()),
                    reason,
                )
            })
            .await?;
        self.shared.metrics.dead_letters.with_label_values(&[stage]).inc();
        Ok(())
    }
}
