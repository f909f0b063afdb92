//! Parked writes kept in the target (`<metadata_database>.parked`, `exactly_once` mode): a write
//! a unique index refuses for now is recorded in the same transaction that moves the partition's
//! offset past it, so the offset never waits for it and a new owner finds it there. Each entry
//! holds the write itself (namespace, key, replacement / update / delete), the record's key and
//! (when small) its value for a dead letter, its order among the document's writes and when it
//! was first parked. The write (filter and body) is kept as BSON bytes, never as fields: a
//! replacement's or an update's field names (`$set`, dotted paths, `$`-prefixed names) are not
//! ones every target stores (Amazon DocumentDB refuses them at any depth).

use std::time::Duration;

use bson::spec::BinarySubtype;
use bson::{doc, Binary, Bson, DateTime, Document, RawDocumentBuf};
use envelope::Namespace;
use futures::TryStreamExt;

use crate::apply::parking::Parked;
use crate::apply::write_plan::{Action, DocKey, WriteOp};
use crate::consume::offsets::Tp;
use crate::error::Error;

/// The collection, in the metadata database.
pub const PARKED: &str = "parked";

/// Record values up to this size are kept with a parked write, for its dead letter; larger ones
/// are named by topic, partition and offset only.
const KEEP_VALUE_BYTES: usize = 1024 * 1024;

/// A parked write's `_id`: its partition and its order there.
pub fn id(group: &str, tp: &Tp, seq: u64) -> String {
    format!("{group}|{}|{}|{seq:020}", tp.0, tp.1)
}

/// The text naming a document among parked writes (target namespace and key).
pub fn doc_name(key: &DocKey) -> String {
    format!("{}|{}", key.0, key.1)
}

/// The entry recording `parked` (key `key`) of partition `tp`.
pub fn encode(group: &str, tp: &Tp, key: &DocKey, parked: &Parked) -> Result<Document, String> {
    let op = &parked.op;
    let binary = |bytes: &[u8]| Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes: bytes.to_vec() });
    let (action, body) = match &op.action {
        Action::Replace(doc) | Action::Insert(doc) => ("replace", binary(doc.as_bytes())),
        Action::Update(update) => ("update", binary(&wrapped(update.clone())?)),
        Action::Delete => ("delete", Bson::Null),
    };
    let elapsed = i64::try_from(parked.since.elapsed().as_millis()).unwrap_or(i64::MAX);
    let since = DateTime::from_millis(DateTime::now().timestamp_millis().saturating_sub(elapsed));
    let mut entry = doc! {
        "_id": id(group, tp, parked.seq),
        "group": group,
        "topic": &tp.0,
        "partition": tp.1,
        "seq": i64::try_from(parked.seq).unwrap_or(i64::MAX),
        "doc": doc_name(key),
        "identity": &key.1,
        "db": &op.ns.db,
        "coll": &op.ns.coll,
        "filter": binary(&wrapped(Bson::Document(op.filter.clone()))?),
        "action": action,
        "body": body,
        "offset": op.offset,
        "since": since,
    };
    if let Some(record_key) = &parked.key {
        entry.insert("record_key", binary(record_key));
    }
    if let Some(value) = parked.payload.as_ref().filter(|v| v.len() <= KEEP_VALUE_BYTES) {
        entry.insert("record_value", binary(value));
    }
    Ok(entry)
}

/// A parked write and its document, read back.
pub fn decode(entry: &Document) -> Result<(DocKey, Parked), String> {
    let field = |name: &str| format!("parked entry {:?}: {name}", entry.get("_id"));
    let ns = Namespace::new(
        entry.get_str("db").map_err(|_| field("db"))?,
        entry.get_str("coll").map_err(|_| field("coll"))?,
    );
    // Entries written before the write was kept as bytes hold it as fields: both read back.
    let action = match (entry.get_str("action").map_err(|_| field("action"))?, entry.get("body")) {
        ("replace", Some(Bson::Binary(b))) => {
            Action::Replace(RawDocumentBuf::from_bytes(b.bytes.clone()).map_err(|e| e.to_string())?)
        }
        ("replace", Some(Bson::Document(doc))) => {
            Action::Replace(RawDocumentBuf::from_document(doc).map_err(|e| e.to_string())?)
        }
        ("update", Some(Bson::Binary(b))) => Action::Update(unwrapped(&b.bytes).map_err(|_| field("body"))?),
        ("update", Some(update)) => Action::Update(update.clone()),
        ("delete", _) => Action::Delete,
        _ => return Err(field("action/body")),
    };
    let filter = match entry.get("filter") {
        Some(Bson::Binary(b)) => match unwrapped(&b.bytes) {
            Ok(Bson::Document(filter)) => filter,
            _ => return Err(field("filter")),
        },
        Some(Bson::Document(filter)) => filter.clone(),
        _ => return Err(field("filter")),
    };
    // The deadline of a write parked for a unique value runs from when it was first parked,
    // across owners and restarts.
    let parked_for = entry
        .get_datetime("since")
        .map(|since| DateTime::now().timestamp_millis().saturating_sub(since.timestamp_millis()).max(0))
        .unwrap_or(0);
    let now = std::time::Instant::now();
    let since = now.checked_sub(Duration::from_millis(u64::try_from(parked_for).unwrap_or(0))).unwrap_or(now);
    let bytes = |name: &str| match entry.get(name) {
        Some(Bson::Binary(b)) => Some(b.bytes.clone()),
        _ => None,
    };
    let op = WriteOp {
        ns: ns.clone(),
        filter,
        action,
        offset: entry.get_i64("offset").map_err(|_| field("offset"))?,
        doc: 0,
    };
    let key = (ns, entry.get_str("identity").map_err(|_| field("identity"))?.to_string());
    let parked = Parked {
        seq: u64::try_from(entry.get_i64("seq").map_err(|_| field("seq"))?).unwrap_or(0),
        op,
        key: bytes("record_key"),
        payload: bytes("record_value"),
        hold: -1,
        since,
    };
    Ok((key, parked))
}

/// `value` as the BSON bytes of `{"v": value}` (an update is a document or a pipeline).
fn wrapped(value: Bson) -> Result<Vec<u8>, String> {
    bson::to_vec(&doc! {"v": value}).map_err(|e| e.to_string())
}

fn unwrapped(bytes: &[u8]) -> Result<Bson, String> {
    let mut wrapper: Document = bson::from_slice(bytes).map_err(|e| e.to_string())?;
    wrapper.remove("v").ok_or_else(|| "no value".to_string())
}

/// Every parked write of partition `tp`, in order.
pub async fn load(db: &mongodb::Database, group: &str, tp: &Tp) -> Result<Vec<(DocKey, Parked)>, Error> {
    find(db, doc! {"group": group, "topic": &tp.0, "partition": tp.1}).await
}

/// Every parked write of one document, whichever partition of `group` parked it, in order.
pub async fn of_document(db: &mongodb::Database, group: &str, key: &DocKey) -> Result<Vec<(DocKey, Parked)>, Error> {
    find(db, doc! {"group": group, "doc": doc_name(key)}).await
}

async fn find(db: &mongodb::Database, filter: Document) -> Result<Vec<(DocKey, Parked)>, Error> {
    let entries: Vec<Document> = db
        .collection::<Document>(PARKED)
        .find(filter)
        .sort(doc! {"seq": 1})
        .await
        .map_err(|e| Error::mongo("read parked writes", e))?
        .try_collect()
        .await
        .map_err(|e| Error::mongo("read parked writes", e))?;
    entries.iter().map(|e| decode(e).map_err(Error::fatal)).collect()
}

/// Whether `op`'s write can be recorded as a parked entry (a document under the server's limit
/// with the entry's own fields).
pub fn fits(op: &WriteOp) -> bool {
    let body = match &op.action {
        Action::Replace(doc) | Action::Insert(doc) => doc.as_bytes().len(),
        Action::Update(update) => wrapped(update.clone()).map_or(usize::MAX, |bytes| bytes.len()),
        Action::Delete => 0,
    };
    body < 15 * 1024 * 1024
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn a_parked_write_reads_back_as_it_was() {
        let tp: Tp = ("t.db.c".into(), 3);
        let op = WriteOp {
            ns: Namespace::new("db", "c.d"),
            filter: doc! {"_id": 7, "shard": "x"},
            action: Action::Replace(RawDocumentBuf::from_document(&doc! {"_id": 7, "$p": 1, "a.b": 2}).expect("bson")),
            offset: 42,
            doc: 0,
        };
        let key: DocKey = (op.ns.clone(), "7shard=\"x\"".into());
        let parked = Parked {
            seq: 42 * 1024 + 1,
            op: op.clone(),
            key: Some(b"{\"id\":7}".to_vec()),
            payload: Some(b"{}".to_vec()),
            hold: 40,
            since: std::time::Instant::now(),
        };
        let entry = encode("g", &tp, &key, &parked).expect("encode");
        let (back_key, back) = decode(&entry).expect("decode");
        assert_eq!(back_key, key);
        assert_eq!(back.op, op);
        assert_eq!((back.seq, back.key, back.payload), (parked.seq, parked.key.clone(), parked.payload.clone()));
        assert_eq!(entry.get_str("_id"), Ok("g|t.db.c|3|00000000000000043009"));
        let update = WriteOp { action: Action::Update(Bson::Document(doc! {"$set": {"a": 1}})), ..op.clone() };
        let entry = encode("g", &tp, &key, &Parked { op: update.clone(), ..parked.clone() }).expect("encode");
        assert_eq!(decode(&entry).expect("decode").1.op, update);
        let delete = WriteOp { action: Action::Delete, ..op };
        let entry = encode("g", &tp, &key, &Parked { op: delete.clone(), ..parked }).expect("encode");
        assert_eq!(decode(&entry).expect("decode").1.op, delete);
    }

    fn parked(action: Action, filter: Document) -> (DocKey, Parked) {
        let op = WriteOp { ns: Namespace::new("db", "c"), filter, action, offset: 9, doc: 0 };
        let key: DocKey = (op.ns.clone(), "k".into());
        let since = std::time::Instant::now();
        (key, Parked { seq: 1, op, key: None, payload: None, hold: -1, since })
    }

    /// Recorded in a transaction as `update` with upsert: a command Amazon DocumentDB takes,
    /// whatever names the write's fields have (its rules, as docdb-guard enforces them).
    #[test]
    fn a_parked_entry_is_one_documentdb_stores_whatever_the_writes_field_names() {
        let replacement = RawDocumentBuf::from_document(&doc! {"_id": 1, "$p": 1, "a.b": {"$c": 2}}).expect("bson");
        let writes = [
            Action::Replace(replacement),
            Action::Update(Bson::Document(doc! {"$set": {"a.b": 1, "x": {"$y": 2}}, "$unset": {"z": ""}})),
            Action::Update(Bson::Array(vec![Bson::Document(doc! {"$set": {"a": {"$literal": "$b"}}})])),
            Action::Delete,
        ];
        for action in writes {
            let (key, parked) = parked(action.clone(), doc! {"_id": {"$weird": 1, "a.b": 2}});
            let entry = encode("g", &("t".into(), 0), &key, &parked).expect("encode");
            let command = doc! {"update": PARKED, "updates": [{"q": {"_id": entry.get("_id").cloned()}, "u": entry.clone(),
            "upsert": true}], "$db": "meta"};
            assert_eq!(docdb_rules::check(&command).map_err(|r| r.errmsg), Ok(()), "{action:?}");
            assert_eq!(decode(&entry).expect("decode").1.op, parked.op, "reads back");
        }
    }

    #[test]
    fn an_entry_written_with_the_write_as_fields_still_reads_back() {
        let update = Bson::Document(doc! {"$set": {"a": 1}});
        let entry = doc! {"_id": "g|t|0|1", "seq": 1_i64, "db": "db", "coll": "c", "identity": "k", "offset": 9_i64,
        "action": "update", "body": update.clone(), "filter": {"_id": 4}};
        let (_, back) = decode(&entry).expect("decode");
        assert_eq!((back.op.action, back.op.filter), (Action::Update(update), doc! {"_id": 4}));
    }

    /// The unique-conflict deadline runs from the first park: a new owner reading the entry back
    /// does not start it again.
    #[test]
    fn the_time_a_write_was_parked_survives_a_read_back() {
        let (key, mut parked) = parked(Action::Delete, doc! {"_id": 1});
        parked.since = std::time::Instant::now().checked_sub(Duration::from_secs(120)).expect("uptime");
        let entry = encode("g", &("t".into(), 0), &key, &parked).expect("encode");
        let since = decode(&entry).expect("decode").1.since.elapsed();
        assert!(since >= Duration::from_secs(119) && since < Duration::from_secs(130), "{since:?}");
    }

    #[test]
    fn an_update_too_large_to_record_does_not_fit() {
        let big = "x".repeat(15 * 1024 * 1024);
        let (_, parked) = parked(Action::Update(Bson::Document(doc! {"$set": {"a": big}})), doc! {"_id": 1});
        assert!(!fits(&parked.op));
        assert!(fits(&WriteOp { action: Action::Update(Bson::Document(doc! {"$set": {"a": 1}})), ..parked.op }));
    }
}
