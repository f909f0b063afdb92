//! One round of writes, retried until the target answers (a stopped partition makes no new
//! attempt, and one that stood still proves it still owns the partition first), and records sent
//! to the dead-letter topic; where they go.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::apply::retry::WRITES;
use crate::apply::shared::Shared;
use crate::apply::write_plan::WriteOp;
use crate::apply::writer::Outcome;
use crate::consume::fence::Fence;
use crate::dead_letters::Letter;
use crate::dlq::Origin;
use crate::error::Error;

/// Where a batch goes, and what proves the partition is still this replica's.
#[derive(Clone)]
pub struct Destination {
    pub topic: String,
    pub partition: i32,
    pub fence: Arc<Fence>,
}

impl Destination {
    /// `topic/partition`: the writer named in readiness.
    pub fn name(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }
}

/// One round, retried until the target answers; each write with its outcome. Replacements of
/// documents the target lacks go as inserts (`fresh.rs`); one it refuses is sent again as the
/// upsert it came from.
pub async fn apply_round(
    shared: &Shared,
    to: &Destination,
    mut round: Vec<WriteOp>,
    stop: &CancellationToken,
) -> Result<Vec<(WriteOp, Outcome)>, Error> {
    if round.is_empty() {
        return Ok(Vec::new());
    }
    let started = Instant::now();
    crate::apply::fresh::insert_where_absent(&shared.client, std::slice::from_mut(&mut round), |_| true).await;
    let mut outcomes = attempt(shared, to, &round, stop).await?;
    let refused: Vec<usize> =
        (0..round.len()).filter(|&i| outcomes[i] != Outcome::Applied && round[i].as_upsert()).collect();
    if !refused.is_empty() {
        let again: Vec<WriteOp> = refused.iter().map(|&i| round[i].clone()).collect();
        for (i, outcome) in refused.into_iter().zip(attempt(shared, to, &again, stop).await?) {
            outcomes[i] = outcome;
        }
    }
    shared.metrics.bulk_seconds.observe(started.elapsed().as_secs_f64());
    for op in round.iter().zip(&outcomes).filter(|(_, o)| **o == Outcome::Applied).map(|(op, _)| op) {
        shared.metrics.applied.with_label_values(&[op.kind()]).inc();
    }
    Ok(round.into_iter().zip(outcomes).collect())
}

/// Writes retried until the target answers, each proving first that the partition is still ours.
async fn attempt(
    shared: &Shared,
    to: &Destination,
    round: &[WriteOp],
    stop: &CancellationToken,
) -> Result<Vec<Outcome>, Error> {
    shared
        .retrier
        .run(WRITES, &to.name(), stop, || async {
            to.fence.check(&shared.metrics, stop).await?;
            shared.writer.apply(round).await
        })
        .await
}

/// Sends records to the dead-letter topic, unchanged, with the reason, and records them in the
/// target (`dead_letters/`).
pub struct DeadLetterer<'a> {
    pub shared: &'a Shared,
    pub to: &'a Destination,
    pub stop: &'a CancellationToken,
}

impl DeadLetterer<'_> {
    pub async fn send(
        &self,
        offset: i64,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        reason: &str,
        stage: &'static str,
    ) -> Result<(), Error> {
        let origin = Origin { topic: &self.to.topic, partition: self.to.partition, offset, stage };
        tracing::warn!(topic = %self.to.topic, partition = self.to.partition, offset, stage, %reason, "record sent to the dead-letter topic");
        self.shared
            .retrier
            .run(crate::dlq::COMPONENT, &self.to.name(), self.stop, || {
                self.shared.dead_letters.send(&origin, key, payload, reason)
            })
            .await?;
        // Recorded before the offset can pass it: the partition's consistent point holds from now.
        let tp = (self.to.topic.clone(), self.to.partition);
        let letter = Letter { tp: &tp, offset, stage, reason, key, payload };
        let book = &self.shared.dead_letter_book;
        self.shared.retrier.run(WRITES, &self.to.name(), self.stop, || book.record(&letter)).await?;
        self.shared.metrics.dead_letters.with_label_values(&[stage]).inc();
        Ok(())
    }
}
