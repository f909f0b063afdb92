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

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;
    use crate::apply::fake::{self, Fakes};

    #[tokio::test]
    async fn a_retriable_failure_is_retried_and_the_round_lands_once() {
        let fakes = Fakes::new();
        fakes.target.fail_next(2);
        let round = vec![
            fake::replace(1, doc! {"n": 1}, 10, 0),
            fake::replace(2, doc! {"n": 2}, 11, 1),
            fake::replace(3, doc! {"n": 3}, 12, 2),
        ];
        let outcomes = apply_round(&fakes.writes(), &fake::destination(), round, &CancellationToken::new())
            .await
            .expect("the round lands");
        assert!(outcomes.iter().all(|(_, o)| *o == Outcome::Applied), "{outcomes:?}");
        assert_eq!(fakes.retries.get(), 2, "each failed attempt is counted once");
        assert_eq!(fakes.target.commands().len(), 3, "two failed attempts, then one command with the whole round");
        for id in 1..=3 {
            assert_eq!(fakes.target.history(id), vec![Some(doc! {"_id": id, "n": id})], "document {id} written once");
        }
    }

    #[tokio::test]
    async fn a_round_whose_write_concern_failed_is_sent_again_and_converges() {
        let fakes = Fakes::new();
        // Applied but not known durable; sent again, the first writes (inserts) meet their own
        // documents and go again as the upserts they came from.
        fakes.target.write_concern_error_next(1);
        let round = vec![fake::replace(1, doc! {"n": 1}, 10, 0), fake::replace(2, doc! {"n": 2}, 11, 1)];
        let outcomes = apply_round(&fakes.writes(), &fake::destination(), round, &CancellationToken::new())
            .await
            .expect("the round lands");
        assert!(outcomes.iter().all(|(_, o)| *o == Outcome::Applied), "{outcomes:?}");
        assert_eq!(fakes.retries.get(), 1);
        let names: Vec<String> = fakes.target.commands().into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["insert", "insert", "update"]);
        for id in 1..=2 {
            assert_eq!(fakes.target.get(&fake::ns(), id), Some(doc! {"_id": id, "n": id}));
        }
    }

    #[tokio::test]
    async fn a_stopped_partition_sends_nothing_new() {
        let fakes = Fakes::new();
        fakes.target.fail_next(usize::MAX);
        let stop = CancellationToken::new();
        let round = vec![fake::replace(1, doc! {"n": 1}, 10, 0)];
        let to = fake::destination();
        let writes = fakes.writes();
        let attempt = apply_round(&writes, &to, round, &stop);
        let stopping = async {
            while fakes.target.commands().is_empty() {
                tokio::task::yield_now().await;
            }
            stop.cancel();
        };
        let (outcome, ()) = tokio::join!(attempt, stopping);
        assert!(matches!(outcome, Err(Error::Stopped)), "{outcome:?}");
        let sent = fakes.target.commands().len();
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        assert_eq!(fakes.target.commands().len(), sent, "no attempt after the stop");
        assert_eq!(fakes.target.get(&fake::ns(), 1), None);
    }

    #[tokio::test]
    async fn an_insert_the_target_refuses_goes_again_as_the_upsert_it_came_from() {
        let fakes = Fakes::new();
        fakes.target.put(&fake::ns(), doc! {"_id": 1, "n": 0});
        // The target says it lacks the document (another writer added it meanwhile).
        fakes.target.blind();
        let round = vec![fake::replace(1, doc! {"n": 1}, 10, 0)];
        let outcomes = apply_round(&fakes.writes(), &fake::destination(), round, &CancellationToken::new())
            .await
            .expect("the round lands");
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0].1, Outcome::Applied);
        assert_eq!(outcomes[0].0.action, fake::replace(1, doc! {"n": 1}, 10, 0).action, "reported as the upsert");
        let names: Vec<String> = fakes.target.commands().into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["insert", "update"]);
        assert_eq!(fakes.target.get(&fake::ns(), 1), Some(doc! {"_id": 1, "n": 1}));
    }

    #[tokio::test]
    async fn a_dead_letter_the_broker_does_not_take_is_retried_then_sent_and_recorded_once() {
        let fakes = Fakes::new();
        fakes.dead_letters.fail_next(2);
        let to = fake::destination();
        let stop = CancellationToken::new();
        let dead = DeadLetterer { writes: fakes.writes(), to: &to, stop: &stop };
        dead.send(7, Some(b"k"), Some(b"v"), "refused", "apply").await.expect("sent");
        let sent = fakes.dead_letters.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!((sent[0].offset, sent[0].stage.as_str(), sent[0].reason.as_str()), (7, "apply", "refused"));
        assert_eq!((sent[0].key.as_deref(), sent[0].payload.as_deref()), (Some(&b"k"[..]), Some(&b"v"[..])));
        assert_eq!(fakes.dead_letters.recorded(), sent, "recorded as sent");
        assert_eq!(fakes.retries.get(), 2, "a dead letter the broker does not take is retried");
        assert_eq!(fakes.metrics.dead_letters.with_label_values(&["apply"]).get(), 1);
    }
}
