//! Indexes and collection options of one namespace, source against target. A TTL index the
//! sink holds back by policy (`apply.ttl = "source_deletes"`: never expiring on the target)
//! is equal when everything else is.

use std::collections::BTreeMap;

use bson::{doc, Bson, Document};
use futures::TryStreamExt;

use crate::error::Error;
use crate::schema::NEVER_EXPIRES;

/// What differs, one line each.
pub async fn differences(
    source: &mongodb::Database,
    source_coll: &str,
    target: &mongodb::Database,
    target_coll: &str,
) -> Result<Vec<String>, Error> {
    let (source_indexes, target_indexes) =
        tokio::try_join!(indexes(source, source_coll), indexes(target, target_coll))?;
    let mut found = compare_indexes(&source_indexes, &target_indexes);
    let (source_options, target_options) =
        tokio::try_join!(options(source, source_coll), options(target, target_coll))?;
    if source_options != target_options {
        found.push(format!("collection options: source {source_options} but target {target_options}"));
    }
    Ok(found)
}

/// Index specs by name, without what says nothing about the index (`v`, `ns`).
async fn indexes(db: &mongodb::Database, coll: &str) -> Result<BTreeMap<String, Document>, Error> {
    let reply = db.run_command(doc! {"listIndexes": coll}).await;
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) if matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 26) => {
            return Ok(BTreeMap::new())
        }
        Err(e) => return Err(Error::mongo("list indexes", e)),
    };
    let batch = reply.get_document("cursor").and_then(|c| c.get_array("firstBatch")).cloned().unwrap_or_default();
    Ok(batch
        .into_iter()
        .filter_map(|b| match b {
            Bson::Document(mut spec) => {
                spec.remove("v");
                spec.remove("ns");
                Some((spec.get_str("name").unwrap_or("").to_string(), spec))
            }
            _ => None,
        })
        .collect())
}

/// A collection's options (as `listCollections` gives them), none for a missing collection.
async fn options(db: &mongodb::Database, coll: &str) -> Result<Bson, Error> {
    let mut cursor =
        db.list_collections().filter(doc! {"name": coll}).await.map_err(|e| Error::mongo("list collections", e))?;
    let Some(spec) = cursor.try_next().await.map_err(|e| Error::mongo("list collections", e))? else {
        return Ok(Bson::Null);
    };
    let options = bson::to_document(&spec.options).map_err(|e| Error::Fatal(format!("collection options: {e}")))?;
    Ok(Bson::Document(options.into_iter().filter(|(_, v)| *v != Bson::Null).collect()))
}

/// Compares index specs by name. Pure.
pub fn compare_indexes(source: &BTreeMap<String, Document>, target: &BTreeMap<String, Document>) -> Vec<String> {
    let mut found = Vec::new();
    for (name, spec) in source {
        match target.get(name) {
            None => found.push(format!("index {name} missing on the target")),
            Some(other) if !same_index(spec, other) => {
                found.push(format!("index {name}: source {spec} but target {other}"));
            }
            Some(_) => {}
        }
    }
    for name in target.keys().filter(|n| !source.contains_key(*n)) {
        found.push(format!("index {name} only on the target"));
    }
    found
}

fn same_index(source: &Document, target: &Document) -> bool {
    let held_back = target.get("expireAfterSeconds").and_then(Bson::as_i32) == Some(NEVER_EXPIRES)
        && source.contains_key("expireAfterSeconds");
    let strip = |d: &Document| -> Document {
        d.iter()
            .filter(|(k, _)| !(held_back && k.as_str() == "expireAfterSeconds"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    strip(source) == strip(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_compare_by_name_and_spec_with_ttl_held_back() {
        let source: BTreeMap<String, Document> = [
            ("_id_".to_string(), doc! {"key": {"_id": 1}, "name": "_id_"}),
            ("email".to_string(), doc! {"key": {"email": 1}, "name": "email", "unique": true}),
            ("seen".to_string(), doc! {"key": {"seen": 1}, "name": "seen", "expireAfterSeconds": 3600}),
        ]
        .into_iter()
        .collect();
        let mut target = source.clone();
        target.insert("seen".into(), doc! {"key": {"seen": 1}, "name": "seen", "expireAfterSeconds": NEVER_EXPIRES});
        assert!(compare_indexes(&source, &target).is_empty(), "TTL held back by policy is fine");
        target.insert("email".into(), doc! {"key": {"email": 1}, "name": "email"});
        target.insert("extra".into(), doc! {"key": {"x": 1}, "name": "extra"});
        target.remove("_id_");
        let found = compare_indexes(&source, &target);
        assert_eq!(found.len(), 3, "{found:?}");
    }
}
