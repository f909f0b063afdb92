//! The dead letters of a consumer group in the target, `<metadata_database>.dead_letters`: one
//! document per dead-lettered record, `_id` `<group>|<topic>|<partition>|<offset>` (a dead letter
//! sent again after a crash is recorded once, and an operator's decision on it stands), with
//! what the record was (`ns`, `key`, `id`, `cluster_time` when it decoded), why, and its state:
//! `open`, `retried` (its document's current state was applied since) or `skipped`.

use std::collections::HashSet;

use bson::{doc, DateTime, Document};
use envelope::extjson::{value_to_string, Style};
use envelope::Event;
use futures::TryStreamExt;

use crate::consume::offsets::Tp;
use crate::error::Error;

/// The collection, in the metadata database.
pub const COLLECTION: &str = "dead_letters";

pub const OPEN: &str = "open";
pub const RETRIED: &str = "retried";
pub const SKIPPED: &str = "skipped";

/// A dead letter about to be recorded.
pub struct Letter<'a> {
    pub tp: &'a Tp,
    pub offset: i64,
    pub stage: &'a str,
    pub reason: &'a str,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
}

/// A re-sent document a batch applied: it resolves the open dead letters of its document
/// recorded before it on its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resent {
    pub offset: i64,
    /// The source namespace, `db.coll`.
    pub ns: String,
    /// The record key, as text.
    pub key: String,
    pub request: String,
}

#[derive(Clone, Debug)]
pub struct Book {
    coll: mongodb::Collection<Document>,
    group: String,
}

impl Book {
    pub fn new(client: &mongodb::Client, metadata_database: &str, group: &str) -> Self {
        Self { coll: client.database(metadata_database).collection(COLLECTION), group: group.to_string() }
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn collection(&self) -> &mongodb::Collection<Document> {
        &self.coll
    }

    pub fn id(&self, tp: &Tp, offset: i64) -> String {
        format!("{}|{}|{}|{offset}", self.group, tp.0, tp.1)
    }

    /// Records a dead letter (once: recorded again, it stays as it is).
    pub async fn record(&self, letter: &Letter<'_>) -> Result<(), Error> {
        let id = self.id(letter.tp, letter.offset);
        let entry = entry(&self.group, &id, letter);
        self.coll
            .update_one(doc! {"_id": &id}, doc! {"$setOnInsert": entry})
            .upsert(true)
            .await
            .map_err(|e| Error::mongo("record a dead letter", e))?;
        Ok(())
    }

    /// The partitions with open dead letters (`only`: of that partition).
    pub async fn open_partitions(&self, only: Option<&Tp>) -> Result<HashSet<Tp>, Error> {
        let mut filter = doc! {"group": &self.group, "state": OPEN};
        if let Some((topic, partition)) = only {
            filter.insert("topic", topic);
            filter.insert("partition", partition);
        }
        let found: Vec<Document> = self
            .coll
            .find(filter)
            .projection(doc! {"topic": 1, "partition": 1})
            .await
            .map_err(|e| Error::mongo("read open dead letters", e))?
            .try_collect()
            .await
            .map_err(|e| Error::mongo("read open dead letters", e))?;
        Ok(found
            .iter()
            .filter_map(|d| Some((d.get_str("topic").ok()?.to_string(), d.get_i32("partition").ok()?)))
            .collect())
    }

    /// Marks `retried` the open dead letters that the applied re-sends of `tp` resolve: those of
    /// the same document recorded before the re-send (a re-send dead-lettered itself resolves
    /// nothing). Returns how many were resolved.
    /// In `session`'s transaction when given (`exactly_once`: the batch that applies the copies
    /// resolves their dead letters as it commits, so no crash can leave them open).
    pub async fn resolve(
        &self,
        tp: &Tp,
        resent: &[Resent],
        mut session: Option<&mut mongodb::ClientSession>,
    ) -> Result<u64, Error> {
        let mut resolved = 0;
        for r in resent {
            let count = self.coll.count_documents(doc! {"_id": self.id(tp, r.offset)});
            let refused = match session.as_deref_mut() {
                Some(session) => count.session(session).await,
                None => count.await,
            }
            .map_err(|e| Error::mongo("read dead letters", e))?;
            if refused > 0 {
                continue;
            }
            let filter = doc! {"group": &self.group, "topic": &tp.0, "partition": tp.1, "ns": &r.ns, "key": &r.key,
            "state": OPEN, "offset": {"$lt": r.offset}};
            let update = doc! {"$set": {"state": RETRIED, "resolved": {"by": "resend", "request": &r.request,
            "offset": r.offset, "at": DateTime::now()}}};
            let update = self.coll.update_many(filter, update);
            let result = match session.as_deref_mut() {
                Some(session) => update.session(session).await,
                None => update.await,
            }
            .map_err(|e| Error::mongo("resolve dead letters", e))?;
            resolved += result.modified_count;
        }
        if resolved > 0 {
            tracing::info!(topic = %tp.0, partition = tp.1, resolved, "dead letters resolved by re-sent documents");
        }
        Ok(resolved)
    }
}

/// The document recorded for a dead letter. Pure.
fn entry(group: &str, id: &str, letter: &Letter<'_>) -> Document {
    let mut entry = doc! {
        "_id": id, "group": group, "topic": &letter.tp.0, "partition": letter.tp.1, "offset": letter.offset,
        "stage": letter.stage, "reason": letter.reason, "state": OPEN, "at": DateTime::now(),
    };
    if let Some(key) = letter.key {
        entry.insert("key", String::from_utf8_lossy(key).into_owned());
    }
    // What the record was, when it decodes: its namespace, `_id` (strict extended JSON: a retry
    // asks for exactly that document) and cluster time.
    if let Ok(Event::Change(change)) = envelope::decode(letter.key, letter.payload) {
        entry.insert("ns", change.ns.to_string());
        if let Some(id) = change.id() {
            entry.insert("id", value_to_string(id, Style::Strict));
        }
        if change.position.exact {
            entry.insert("cluster_time", bson::Timestamp::from(change.position.cluster_time));
        }
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decoded_record_is_recorded_with_its_document_and_time() {
        let event = envelope::ChangeEvent::<Document> {
            op: envelope::Op::Create,
            ns: envelope::Namespace::new("shop", "items"),
            document_key: doc! {"_id": 5_i64},
            before: None,
            after: Some(doc! {"_id": 5_i64, "qty": "many"}),
            update_description: None,
            source: envelope::SourceInfo::default(),
            transaction: None,
            position: envelope::Position {
                cluster_time: envelope::ClusterTime { t: 100, i: 2 },
                exact: true,
                ..envelope::Position::default()
            },
            ts_ms: 0,
            resend: None,
        };
        let key = envelope::encode_key(&bson::Bson::Int64(5));
        let value = envelope::encode_change(&event, envelope::Mode::Debezium);
        let tp = ("cdc.shop.items".to_string(), 3);
        let letter = Letter {
            tp: &tp,
            offset: 42,
            stage: "apply",
            reason: "Document failed validation",
            key: Some(&key),
            payload: Some(&value),
        };
        let recorded = entry("g", "g|cdc.shop.items|3|42", &letter);
        assert_eq!(recorded.get_str("ns"), Ok("shop.items"));
        assert_eq!(recorded.get_str("key"), Ok(r#"{"id":"5"}"#));
        assert_eq!(recorded.get_str("id"), Ok(r#"{"$numberLong": "5"}"#), "the exact _id type");
        assert_eq!(recorded.get_timestamp("cluster_time"), Ok(bson::Timestamp { time: 100, increment: 2 }));
        assert_eq!((recorded.get_str("state"), recorded.get_i64("offset")), (Ok(OPEN), Ok(42)));

        let garbage = Letter { key: Some(b"not json"), payload: Some(b"{"), ..letter };
        let recorded = entry("g", "x", &garbage);
        assert!(recorded.get("ns").is_none() && recorded.get("id").is_none(), "undecodable: only the key text");
    }
}
