//! The indexes the source announced for each target collection, in
//! `<metadata_database>.indexes` (one document per collection: the target collection's `uuid`
//! when it was written, and the announced specs as the source sent them, each kept as its BSON
//! bytes: a partial filter's `$` operators are field names DocumentDB does not store), so that
//! the periodic comparison (`index_check.rs`) knows which of the target's indexes are the
//! source's.
//!
//! `schema.rs` writes it as it applies DDL: a build or an index change is recorded before it
//! reaches the target and a drop after, so a comparison running meanwhile never takes an index
//! for the target's own. A target collection created anew (another `uuid`: dropped and created
//! again, or replaced by a rename) starts over with no indexes; a record whose `uuid` is not the
//! collection's is not compared.

use bson::{doc, Bson, Document};
use envelope::Namespace;
use futures::TryStreamExt;

use crate::error::Error;

/// One collection's record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub ns: Namespace,
    /// The target collection's `uuid` when the record was written (none where the server does
    /// not list one).
    pub uuid: Option<Bson>,
    /// The specs as announced, `_id` index aside.
    pub indexes: Vec<Document>,
}

impl Record {
    pub fn index(&self, name: &str) -> Option<&Document> {
        self.indexes.iter().find(|spec| spec.get_str("name") == Ok(name))
    }
}

pub struct Announced {
    client: mongodb::Client,
    log: mongodb::Collection<Document>,
}

impl Announced {
    pub fn new(client: mongodb::Client, metadata_database: &str) -> Self {
        let log = client.database(metadata_database).collection("indexes");
        Self { client, log }
    }

    /// A `create` of `target` was applied: a collection new on the target starts with none.
    pub async fn created(&self, target: &Namespace) -> Result<(), Error> {
        self.update(target, |_| {}).await
    }

    /// `spec` is about to be built (or rebuilt with other options) on `target`.
    pub async fn built(&self, target: &Namespace, spec: &Document) -> Result<(), Error> {
        let name = spec.get_str("name").unwrap_or("").to_string();
        let spec: Document = spec.iter().filter(|(k, _)| !matches!(k.as_str(), "v" | "ns")).map(clone).collect();
        self.update(target, |indexes| {
            indexes.retain(|s| s.get_str("name") != Ok(name.as_str()));
            indexes.push(spec);
        })
        .await
    }

    /// Index `name` of `target` is about to change (`collMod`'s `index` fields but its names).
    pub async fn changed(&self, target: &Namespace, name: &str, changes: &Document) -> Result<(), Error> {
        self.update(target, |indexes| {
            for spec in indexes.iter_mut().filter(|s| s.get_str("name") == Ok(name)) {
                for (field, value) in changes.iter().filter(|(k, _)| !matches!(k.as_str(), "name" | "keyPattern")) {
                    spec.insert(field.clone(), value.clone());
                }
            }
        })
        .await
    }

    /// Index `name` of `target` was dropped there.
    pub async fn dropped(&self, target: &Namespace, name: &str) -> Result<(), Error> {
        self.update(target, |indexes| indexes.retain(|s| s.get_str("name") != Ok(name))).await
    }

    /// Every record.
    pub async fn all(&self) -> Result<Vec<Record>, Error> {
        let cursor = self.log.find(doc! {}).await.map_err(|e| Error::mongo("read announced indexes", e))?;
        let found: Vec<Document> = cursor.try_collect().await.map_err(|e| Error::mongo("read announced indexes", e))?;
        Ok(found.iter().filter_map(record_of).collect())
    }

    /// The target collection's `uuid`, and whether it exists.
    pub async fn uuid(&self, target: &Namespace) -> Result<(bool, Option<Bson>), Error> {
        let command = doc! {"listCollections": 1, "filter": {"name": &target.coll}};
        let cursor = self.client.database(&target.db).run_cursor_command(command).await;
        let listed: Vec<Document> = cursor
            .map_err(|e| Error::mongo("list collections", e))?
            .try_collect()
            .await
            .map_err(|e| Error::mongo("list collections", e))?;
        let uuid = listed.first().and_then(|entry| entry.get_document("info").ok()?.get("uuid").cloned());
        Ok((!listed.is_empty(), uuid))
    }

    /// Reads `target`'s record (none, or another collection's: no indexes), applies `change`
    /// and writes it back. One namespace's DDL is applied by one replica at a time, in order.
    async fn update(&self, target: &Namespace, change: impl FnOnce(&mut Vec<Document>)) -> Result<(), Error> {
        let id = target.to_string();
        let (_, uuid) = self.uuid(target).await?;
        let found =
            self.log.find_one(doc! {"_id": &id}).await.map_err(|e| Error::mongo("read announced indexes", e))?;
        let mut record = found.as_ref().and_then(record_of).unwrap_or(Record {
            ns: target.clone(),
            uuid: None,
            indexes: Vec::new(),
        });
        if stale(&record, uuid.as_ref()) {
            record.indexes.clear();
        }
        record.uuid = uuid.or(record.uuid);
        change(&mut record.indexes);
        let specs: Vec<Bson> = record.indexes.iter().filter_map(as_bytes).collect();
        let entry = doc! {"_id": &id, "db": &target.db, "collection": &target.coll,
        "uuid": record.uuid.unwrap_or(Bson::Null), "indexes": specs};
        self.log
            .replace_one(doc! {"_id": &id}, entry)
            .upsert(true)
            .await
            .map_err(|e| Error::mongo("record announced indexes", e))?;
        Ok(())
    }
}

/// Whether `record` was written for another collection than the one whose `uuid` is `now`.
pub fn stale(record: &Record, now: Option<&Bson>) -> bool {
    matches!((&record.uuid, now), (Some(was), Some(now)) if was != now)
}

fn record_of(entry: &Document) -> Option<Record> {
    let ns = Namespace::new(entry.get_str("db").ok()?, entry.get_str("collection").ok()?);
    let uuid = entry.get("uuid").filter(|u| **u != Bson::Null).cloned();
    let indexes = entry.get_array("indexes").ok()?.iter().filter_map(from_bytes).collect();
    Some(Record { ns, uuid, indexes })
}

fn as_bytes(spec: &Document) -> Option<Bson> {
    let bytes = bson::to_vec(spec).ok()?;
    Some(Bson::Binary(bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes }))
}

fn from_bytes(stored: &Bson) -> Option<Document> {
    match stored {
        Bson::Binary(binary) => bson::from_slice(&binary.bytes).ok(),
        _ => None,
    }
}

fn clone((k, v): (&String, &Bson)) -> (String, Bson) {
    (k.clone(), v.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_of_another_collection_is_stale() {
        let uuid = |b: u8| Bson::Binary(bson::Binary { subtype: bson::spec::BinarySubtype::Uuid, bytes: vec![b; 16] });
        let mut record = Record { ns: Namespace::new("d", "c"), uuid: Some(uuid(1)), indexes: Vec::new() };
        assert!(!stale(&record, Some(&uuid(1))));
        assert!(stale(&record, Some(&uuid(2))), "dropped and created again, or renamed over");
        assert!(!stale(&record, None), "a server that lists no uuid: the name alone");
        record.uuid = None;
        assert!(!stale(&record, Some(&uuid(2))));
        let spec = doc! {"key": {"a.b": 1}, "name": "a.b_1", "partialFilterExpression": {"a.b": {"$gt": 1}}};
        let entry = doc! {"db": "d", "collection": "c", "uuid": Bson::Null, "indexes": [as_bytes(&spec)]};
        let read = record_of(&entry).expect("a record");
        assert!(read.uuid.is_none() && read.index("a.b_1") == Some(&spec), "dots and operators kept: {read:?}");
    }
}
