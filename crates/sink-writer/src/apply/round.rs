//! One round of writes, retried until the target answers (a stopped partition makes no new
//! attempt, and one that stood still proves it still owns the partition first), and records sent
//! to the dead-letter topic; where they go.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::apply::retry::{Retrier, WRITES};
use crate::apply::target::Target;
use crate::apply::write_plan::WriteOp;
use crate::apply::writer::{Outcome, Writer};
use crate::consume::fence::Fence;
use crate::dead_letters::{Letter, Recorder};
use crate::dlq::{DeadLetterTopic, Origin};
use crate::error::Error;
use crate::metrics::Metrics;

/// What rounds of writes and their dead letters use: borrowed from `Shared`, or fakes in tests.
#[derive(Clone, Copy)]
pub struct Writes<'a> {
    pub target: &'a dyn Target,
    pub writer: &'a Writer,
    pub dead_letters: &'a dyn DeadLetterTopic,
    /// Where dead letters are recorded in the target (they hold the partition's point).
    pub book: &'a dyn Recorder,
    pub retrier: &'a Retrier,
    pub metrics: &'a Metrics,
}

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
    writes: &Writes<'_>,
    to: &Destination,
    mut round: Vec<WriteOp>,
    stop: &CancellationToken,
) -> Result<Vec<(WriteOp, Outcome)>, Error> {
    if round.is_empty() {
        return Ok(Vec::new());
    }
    let started = Instant::now();
    crate::apply::fresh::insert_where_absent(writes.target, std::slice::from_mut(&mut round), |_| true).await;
    let mut outcomes = attempt(writes, to, &round, stop).await?;
    let refused: Vec<usize> =
        (0..round.len()).filter(|&i| outcomes[i] != Outcome::Applied && round[i].as_upsert()).collect();
    if !refused.is_empty() {
        let again: Vec<WriteOp> = refused.iter().map(|&i| round[i].clone()).collect();
        for (i, outcome) in refused.into_iter().zip(attempt(writes, to, &again, stop).await?) {
            outcomes[i] = outcome;
        }
    }
    writes.metrics.bulk_seconds.observe(started.elapsed().as_secs_f64());
    for op in round.iter().zip(&outcomes).filter(|(_, o)| **o == Outcome::Applied).map(|(op, _)| op) {
        writes.metrics.applied.with_label_values(&[op.kind()]).inc();
    }
    Ok(round.into_iter().zip(outcomes).collect())
}

/// Writes retried until the target answers, each proving first that the partition is still ours.
async fn attempt(
    writes: &Writes<'_>,
    to: &Destination,
    round: &[WriteOp],
    stop: &CancellationToken,
) -> Result<Vec<Outcome>, Error> {
    writes
        .retrier
        .run(WRITES, &to.name(), stop, || async {
            to.fence.check(writes.metrics, stop).await?;
            writes.writer.apply(writes.target, round).await
        })
        .await
}

/// Sends records to the dead-letter topic, unchanged, with the reason, and records them in the
/// target (`dead_letters/`).
pub struct DeadLetterer<'a> {
    pub writes: Writes<'a>,
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
        let writes = &self.writes;
        writes
            .retrier
            .run(crate::dlq::COMPONENT, &self.to.name(), self.stop, || {
                writes.dead_letters.send(&origin, key, payload, reason)
            })
            .await?;
        // Recorded before the offset can pass it: the partition's consistent point holds from now.
        let tp = (self.to.topic.clone(), self.to.partition);
        let letter = Letter { tp: &tp, offset, stage, reason, key, payload };
        writes.retrier.run(WRITES, &self.to.name(), self.stop, || writes.book.record(&letter)).await?;
        writes.metrics.dead_letters.with_label_values(&[stage]).inc();
        Ok(())
    }
}
