//! Applies one planned batch: its rounds in order, each retried until the target takes it (or the
//! partition stops, checked before every attempt so that a revoked partition sends nothing new),
//! what can never be applied to the dead-letter topic.
//!
//! A write a unique secondary index refuses for now is parked (`parking.rs`) with every later
//! write of the same document; the rest of the batch goes on.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | applying one planned batch: its rounds in order, the outcome |
//! | `partition.rs` | one partition's task: batches, in-flight writes, DDL markers (`idempotent`) |
//! | `exact/` | one partition's task in the `exactly_once` mode: claim, batches as transactions, parked writes, cycles of unique values |
//! | `flight.rs` | batches in flight and the in-order durable offset |
//! | `write_plan.rs` | a batch of events → the writes that reproduce them (pure) |
//! | `fresh.rs` | which first writes go as inserts (the target lacks their document) |
//! | `round.rs` | one round of writes, retried; dead letters; where a batch goes; what they run on (`Writes`) |
//! | `parking.rs` | writes a unique index refuses for now, parked per document, numbered, tried again |
//! | `writer.rs` | the `insert`/`update`/`delete` commands and what each statement came to |
//! | `target.rs` | the target as these writes need it (a trait): one command and its reply, which documents it holds |
//! | `command.rs` | those commands' BSON assembled from encoded parts, each copied once |
//! | `retry.rs` | the retry loop and which readiness component a failure shows on |
//! | `mode.rs` | which mode runs, and the metadata collections it needs |
//! | `ledger.rs` | the partitions' offsets and ownership epochs in the target |
//! | `transaction.rs` | one attempt at a partition's transaction: ledger, writes, parked writes, commit |
//! | `parked_store.rs` | parked writes kept in the target (`exactly_once`) |
//! | `fake.rs` | unit tests' target and dead-letter topic, in memory, with injected faults (test builds only) |
//! | `shared.rs` | what the partition tasks share: clients, writer, retrier, DDL, dead letters, metrics |

pub(crate) mod command;
pub(crate) mod exact;
#[cfg(test)]
pub(crate) mod fake;
pub(crate) mod flight;
pub(crate) mod fresh;
pub(crate) mod ledger;
pub(crate) mod mode;
pub(crate) mod parked_store;
pub(crate) mod parking;
pub(crate) mod partition;
pub(crate) mod retry;
pub(crate) mod round;
pub(crate) mod shared;
pub(crate) mod target;
pub(crate) mod transaction;
pub(crate) mod write_plan;
pub(crate) mod writer;

use std::sync::Arc;
use std::time::Instant;

use rdkafka::message::{Message, OwnedMessage};
use tokio_util::sync::CancellationToken;

use crate::apply::parking::{Parked, Parking};
use crate::apply::round::{apply_round, DeadLetterer, Destination, Writes};
use crate::apply::shared::Shared;
use crate::apply::write_plan::{DocKey, Plan, WriteOp};
use crate::apply::writer::Outcome;
use crate::error::Error;

/// A planned batch and the messages it came from.
pub struct Batch {
    pub plan: Plan,
    pub messages: Vec<OwnedMessage>,
    /// Offsets of messages that could not be decoded, with the reason.
    pub undecodable: Vec<(i64, String)>,
}

/// Applies a batch. Writes a unique index refuses for now, and later writes of their documents
/// (also of documents parked by earlier batches), go to the partition's `parking`.
pub async fn write_batch(
    shared: Arc<Shared>,
    to: Destination,
    batch: Batch,
    parking: Arc<Parking>,
    stop: CancellationToken,
) -> Result<(), Error> {
    let (keys, newest) = write_rounds(shared.writes(), &to, batch, &parking, &stop).await?;
    applied(&shared, &keys, newest).await;
    Ok(())
}

/// A batch's dead letters and rounds, in order; what it touched and its newest change.
async fn write_rounds(
    writes: Writes<'_>,
    to: &Destination,
    batch: Batch,
    parking: &Parking,
    stop: &CancellationToken,
) -> Result<(Vec<DocKey>, Option<envelope::ClusterTime>), Error> {
    let dead = DeadLetterer { writes, to, stop };
    let Batch { plan, messages, undecodable } = batch;
    let Plan { rounds, keys, rejected, newest, .. } = plan;
    let message = |offset: i64| messages.iter().find(|m| m.offset() == offset);
    let key = |offset: i64| message(offset).and_then(|m| m.key()).map(<[u8]>::to_vec);
    let payload = |offset: i64| message(offset).and_then(|m| m.payload()).map(<[u8]>::to_vec);
    for (offset, reason) in undecodable.iter().chain(&rejected) {
        let stage = if undecodable.iter().any(|(o, _)| o == offset) { "decode" } else { "plan" };
        dead.send(*offset, key(*offset).as_deref(), payload(*offset).as_deref(), reason, stage).await?;
    }
    let hold = messages.first().map_or(0, |m| m.offset());
    let park = |op: WriteOp| {
        let seq = parking.next_seq(op.offset);
        let parked = Parked { seq, key: key(op.offset), payload: payload(op.offset), hold, since: Instant::now(), op };
        parking.park(keys[parked.op.doc].clone(), parked);
    };
    for round in rounds {
        let (behind, ready): (Vec<WriteOp>, Vec<WriteOp>) =
            round.into_iter().partition(|op| parking.is_parked(&keys[op.doc]));
        for op in behind {
            park(op);
        }
        for (op, outcome) in apply_round(&writes, to, ready, stop).await? {
            match outcome {
                Outcome::Applied => {}
                Outcome::Conflict(conflict) => {
                    writes.metrics.unique_conflicts.inc();
                    tracing::debug!(topic = %to.topic, partition = to.partition, reason = %conflict.reason, "a unique index refuses a write for now: parked");
                    park(op);
                }
                Outcome::Rejected(reason) => {
                    dead.send(op.offset, key(op.offset).as_deref(), payload(op.offset).as_deref(), &reason, "apply")
                        .await?
                }
            }
        }
    }
    Ok((keys, newest))
}

/// After a batch's writes are on the target (either mode): schema changes the target refused
/// may pass now that data changed, and the lag is the newest applied change's age.
pub(crate) async fn applied(shared: &Shared, keys: &[DocKey], newest: Option<envelope::ClusterTime>) {
    let mut touched: Vec<&envelope::Namespace> = keys.iter().map(|(ns, _)| ns).collect();
    touched.dedup();
    for ns in touched {
        shared.schema.data_changed(ns).await;
    }
    if let Some(newest) = newest {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        shared.metrics.replication_lag_seconds.set(i64::try_from(now.saturating_sub(u64::from(newest.t))).unwrap_or(0));
    }
}

#[cfg(test)]
mod tests {
    use bson::doc;
    use rdkafka::message::Timestamp;

    use super::*;
    use crate::apply::fake::{self, Fakes};

    /// A batch of `rounds` over documents 1 and 2, from records at offsets 10 to 13.
    fn batch(rounds: Vec<Vec<WriteOp>>, undecodable: Vec<(i64, String)>) -> Batch {
        let messages = (10..=13)
            .map(|offset| {
                let (key, payload) = (format!("k{offset}").into_bytes(), format!("v{offset}").into_bytes());
                OwnedMessage::new(Some(payload), Some(key), "t".into(), Timestamp::NotAvailable, 0, offset, None)
            })
            .collect();
        let plan = Plan { rounds, keys: vec![fake::doc_key(1), fake::doc_key(2)], ..Plan::default() };
        Batch { plan, messages, undecodable }
    }

    #[tokio::test]
    async fn a_duplicate_key_refusal_parks_the_write_and_later_writes_of_the_document_park_behind_it() {
        let fakes = Fakes::new();
        fakes.target.unique_index(&fake::ns(), "email");
        fakes.target.put(&fake::ns(), doc! {"_id": 9, "email": "x"});
        let rounds = vec![
            vec![fake::replace(1, doc! {"email": "x"}, 10, 0), fake::replace(2, doc! {"email": "z"}, 11, 1)],
            vec![fake::set(1, doc! {"name": "a"}, 12, 0)],
        ];
        let parking = Parking::default();
        let (to, stop) = (fake::destination(), CancellationToken::new());
        write_rounds(fakes.writes(), &to, batch(rounds, Vec::new()), &parking, &stop).await.expect("written");

        let parked = parking.of(&fake::doc_key(1));
        let offsets: Vec<i64> = parked.iter().map(|p| p.op.offset).collect();
        assert_eq!(offsets, [10, 12], "the refused write, and the later one behind it, in order");
        assert!(parked[0].seq < parked[1].seq);
        assert!(parked.iter().all(|p| p.hold == 10), "the durable offset stays before the batch");
        assert_eq!(parked[1].payload.as_deref(), Some(&b"v12"[..]), "what a dead letter of it would carry");
        assert_eq!(fakes.target.get(&fake::ns(), 1), None);
        assert_eq!(fakes.target.get(&fake::ns(), 2), Some(doc! {"_id": 2, "email": "z"}), "the rest goes on");
        assert_eq!(
            fakes.target.commands().len(),
            2,
            "the insert, its upsert again; nothing of the parked document after"
        );
        assert_eq!(fakes.metrics.unique_conflicts.get(), 1);
        assert!(fakes.dead_letters.sent().is_empty(), "nothing dropped, nothing dead-lettered");
    }

    #[tokio::test]
    async fn a_write_refused_for_good_goes_to_the_dead_letter_topic_once_with_its_record() {
        let fakes = Fakes::new();
        fakes.target.poison(2);
        let rounds = vec![vec![fake::replace(1, doc! {"n": 1}, 10, 0), fake::replace(2, doc! {"n": 2}, 11, 1)]];
        let parking = Parking::default();
        let (to, stop) = (fake::destination(), CancellationToken::new());
        let undecodable = vec![(13, "not JSON".to_string())];
        write_rounds(fakes.writes(), &to, batch(rounds, undecodable), &parking, &stop).await.expect("written");

        let sent = fakes.dead_letters.sent();
        let summary: Vec<(i64, &str)> = sent.iter().map(|s| (s.offset, s.stage.as_str())).collect();
        assert_eq!(summary, [(13, "decode"), (11, "apply")], "each once");
        assert_eq!((sent[1].key.as_deref(), sent[1].payload.as_deref()), (Some(&b"k11"[..]), Some(&b"v11"[..])));
        assert!(sent[1].reason.contains("code 2"), "{}", sent[1].reason);
        assert_eq!(fakes.dead_letters.recorded(), sent, "each recorded in the target too");
        assert_eq!(fakes.target.get(&fake::ns(), 1), Some(doc! {"_id": 1, "n": 1}));
        assert!(parking.is_empty());
    }
}
