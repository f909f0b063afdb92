//! What a namespace is, its collection options (a view's definition, a time-series collection's
//! settings) and its indexes, source against target. An index's key is compared in order (a
//! compound index with its fields swapped under the same name is another index); its other
//! options in any order. A TTL index the sink holds back by policy (`apply.ttl =
//! "source_deletes"`: never expiring on the target) is equal when everything else is. Under a
//! transform rule the source's indexes and options are compared as cdc-source sends them
//! (indexes on hidden fields and validators left out, keys renamed).

use std::collections::BTreeMap;

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongodb::results::CollectionType;

use crate::ddl::schema::NEVER_EXPIRES;
use crate::error::Error;

/// What differs, one line each.
pub async fn differences(
    source: &mongodb::Database,
    source_coll: &str,
    target: &mongodb::Database,
    target_coll: &str,
    rule: Option<&transform::Rule>,
) -> Result<Vec<String>, Error> {
    let (mut source_spec, target_spec) = tokio::try_join!(spec(source, source_coll), spec(target, target_coll))?;
    if let (Some(rule), Some((_, Bson::Document(options)))) = (rule, source_spec.as_mut()) {
        *options = rule.options(std::mem::take(options)).0;
    }
    let mut found = Vec::new();
    let kind =
        |spec: &Option<(CollectionType, Bson)>| spec.as_ref().map(|(kind, _)| format!("{kind:?}").to_lowercase());
    match (kind(&source_spec), kind(&target_spec)) {
        (Some(s), None) => found.push(format!("{s} missing on the target")),
        (None, Some(t)) => found.push(format!("{t} only on the target")),
        (Some(s), Some(t)) if s != t => found.push(format!("a {s} on the source but a {t} on the target")),
        _ => {}
    }
    let options = |spec: &Option<(CollectionType, Bson)>| spec.as_ref().map_or(Bson::Null, |(_, o)| o.clone());
    let (source_options, target_options) = (options(&source_spec), options(&target_spec));
    if source_options != target_options {
        found.push(format!("collection options: source {source_options} but target {target_options}"));
    }
    let view = |spec: &Option<(CollectionType, Bson)>| matches!(spec, Some((CollectionType::View, _)));
    if !view(&source_spec) && !view(&target_spec) {
        let (mut source_indexes, target_indexes) =
            tokio::try_join!(indexes(source, source_coll), indexes(target, target_coll))?;
        if let Some(rule) = rule {
            let kept = rule.indexes(source_indexes.into_values().collect()).0;
            source_indexes =
                kept.into_iter().map(|spec| (spec.get_str("name").unwrap_or("").to_string(), spec)).collect();
        }
        found.extend(compare_indexes(&source_indexes, &target_indexes));
    }
    Ok(found)
}

/// Index specs by name, without what says nothing about the index (`v`, `ns`).
async fn indexes(db: &mongodb::Database, coll: &str) -> Result<BTreeMap<String, Document>, Error> {
    let reply = db.run_command(doc! {"listIndexes": coll}).await;
    let reply = match reply {
        Ok(reply) => reply,
        // No such collection (26), or a view (166).
        Err(e) if matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if [26, 166].contains(&c.code)) => {
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

/// What a collection is and its options (as `listCollections` gives them); none when missing.
async fn spec(db: &mongodb::Database, coll: &str) -> Result<Option<(CollectionType, Bson)>, Error> {
    let mut cursor =
        db.list_collections().filter(doc! {"name": coll}).await.map_err(|e| Error::mongo("list collections", e))?;
    let Some(spec) = cursor.try_next().await.map_err(|e| Error::mongo("list collections", e))? else {
        return Ok(None);
    };
    let options = bson::to_document(&spec.options).map_err(|e| Error::fatal(format!("collection options: {e}")))?;
    let options = Bson::Document(options.into_iter().filter(|(_, v)| *v != Bson::Null).collect());
    Ok(Some((spec.collection_type, options)))
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
    // A document compares its fields in any order: the key's order is compared apart.
    let key_order = |d: &Document| -> Vec<String> {
        d.get_document("key").map(|k| k.keys().cloned().collect()).unwrap_or_default()
    };
    strip(source) == strip(target) && key_order(source) == key_order(target)
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

    #[test]
    fn a_compound_index_with_its_fields_swapped_is_another_index() {
        let source: BTreeMap<String, Document> =
            [("ab".to_string(), doc! {"key": {"a": 1, "b": 1}, "name": "ab"})].into_iter().collect();
        let swapped: BTreeMap<String, Document> =
            [("ab".to_string(), doc! {"key": {"b": 1, "a": 1}, "name": "ab"})].into_iter().collect();
        assert_eq!(compare_indexes(&source, &swapped).len(), 1);
        let reordered: BTreeMap<String, Document> =
            [("ab".to_string(), doc! {"name": "ab", "key": {"a": 1, "b": 1}})].into_iter().collect();
        assert!(compare_indexes(&source, &reordered).is_empty(), "the spec's own fields in any order");
    }
}
