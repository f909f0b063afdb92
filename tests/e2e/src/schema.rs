//! Comparing what a source and a target collection are besides their documents: collection
//! options (`listCollections`) and indexes (`listIndexes`), with the sink's TTL rule (the target's
//! TTL indexes never expire; the source's value is kept in `<metadata_database>.ttl`).

use std::collections::BTreeMap;

use bson::{doc, Bson, Document};
use futures::TryStreamExt;

/// What the target's TTL indexes say instead of the source's value (sink-writer's default).
pub const NEVER_EXPIRES: i32 = i32::MAX;

/// A collection's (or view's) `type` and `options` as `listCollections` reports them, without
/// the `uuid`; `None` when it does not exist.
pub async fn options(db: &mongodb::Database, coll: &str) -> Option<(String, Document)> {
    let listed: Vec<Document> = db
        .run_cursor_command(doc! {"listCollections": 1, "filter": {"name": coll}})
        .await
        .ok()?
        .try_collect()
        .await
        .ok()?;
    let entry = listed.into_iter().next()?;
    let kind = entry.get_str("type").unwrap_or("collection").to_string();
    let mut options = entry.get_document("options").cloned().unwrap_or_default();
    options.remove("uuid");
    Some((kind, options))
}

/// Every index of `coll` by name, as `listIndexes` reports it, without the build version `v`.
pub async fn indexes(db: &mongodb::Database, coll: &str) -> BTreeMap<String, Document> {
    let Ok(cursor) = db.run_cursor_command(doc! {"listIndexes": coll}).await else { return BTreeMap::new() };
    let Ok(listed) = cursor.try_collect::<Vec<Document>>().await else { return BTreeMap::new() };
    listed
        .into_iter()
        .map(|mut spec| {
            spec.remove("v");
            spec.remove("ns");
            (spec.get_str("name").unwrap_or_default().to_string(), spec)
        })
        .collect()
}

/// The first way `coll` on the target differs from the source in options or indexes, if any.
/// A source TTL index must be on the target with [`NEVER_EXPIRES`], and the source's
/// `expireAfterSeconds` recorded in `meta.ttl` (the sink's metadata database).
///
/// In the DocumentDB profile the target holds what Amazon DocumentDB can (docdb-guard's rule
/// table decides), and each thing it cannot (an option, an index property, an index, a view) must
/// be reported by the sink in `meta.schema_conflicts`.
pub async fn difference(
    source: &mongodb::Database,
    target: &mongodb::Database,
    meta: &mongodb::Database,
    coll: &str,
) -> Option<String> {
    let (mut s, t) = (options(source, coll).await, options(target, coll).await);
    if test_support::documentdb_profile() {
        if let Some((kind, options)) = &mut s {
            let uncarried = if kind == "view" && !carried(doc! {"create": coll, "viewOn": "v", "pipeline": []}) {
                vec!["view".to_string()]
            } else {
                let refused: Vec<String> = options
                    .iter()
                    .filter(|(k, v)| !carried(doc! {"create": coll, k.as_str(): (*v).clone()}))
                    .map(|(k, _)| k.clone())
                    .collect();
                refused.iter().for_each(|k| {
                    options.remove(k);
                });
                refused
            };
            for what in &uncarried {
                if !reported(meta, coll, what).await {
                    return Some(format!("{coll}: {what} is not carried and not reported"));
                }
            }
            if uncarried.iter().any(|what| what == "view") {
                return t.map(|t| format!("{coll}: a view the target cannot hold is there: {t:?}"));
            }
        }
    }
    if s != t {
        return Some(format!("{coll}: source options {s:?}, target {t:?}"));
    }
    let (s, mut t) = (indexes(source, coll).await, indexes(target, coll).await);
    for (name, spec) in &s {
        let mut spec = spec.clone();
        if test_support::documentdb_profile() {
            match carried_index(coll, &mut spec) {
                Ok(stripped) => {
                    for field in stripped {
                        if !reported(meta, coll, &field).await {
                            return Some(format!("{coll}: index {name}'s {field} is not carried and not reported"));
                        }
                    }
                }
                Err(()) if reported(meta, coll, name).await => continue,
                Err(()) => return Some(format!("{coll}: index {name} is not carried and not reported")),
            }
        }
        let Some(mut on_target) = t.remove(name) else {
            return Some(format!("{coll}: index {name} missing in the target ({spec})"));
        };
        if let Some(seconds) = spec.remove("expireAfterSeconds") {
            if on_target.remove("expireAfterSeconds") != Some(Bson::Int32(NEVER_EXPIRES)) {
                return Some(format!("{coll}: TTL index {name} expires on the target: {on_target}"));
            }
            let id = format!("{}.{coll}|{name}", target.name());
            let recorded = meta.collection::<Document>("ttl").find_one(doc! {"_id": &id}).await.ok().flatten();
            let recorded = recorded.and_then(|r| r.get("expireAfterSeconds").cloned());
            if recorded.as_ref().and_then(number) != number(&seconds) {
                return Some(format!("{coll}: TTL of {name}: source {seconds}, recorded {recorded:?}"));
            }
        }
        if spec != on_target {
            return Some(format!("{coll}: index {name}: source {spec}, target {on_target}"));
        }
    }
    t.keys().next().map(|extra| format!("{coll}: index {extra} only in the target"))
}

/// Whether a DocumentDB target takes `command` (docdb-guard's rule table).
fn carried(mut command: Document) -> bool {
    command.insert("$db", "db");
    docdb_guard::check(&command).is_ok()
}

/// An index as a DocumentDB target holds it: without the properties it lacks (returned, to be
/// reported) and without the `simple` collation, which the sink leaves out where it means no
/// collation; `Err` when the target cannot hold the index at all.
fn carried_index(coll: &str, spec: &mut Document) -> Result<Vec<String>, ()> {
    if spec.get_document("collation").is_ok_and(|c| c == &doc! {"locale": "simple"}) {
        spec.remove("collation");
    }
    let base: Document = spec
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "key" | "name"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !carried(doc! {"createIndexes": coll, "indexes": [base.clone()]}) {
        return Err(());
    }
    let refused: Vec<String> = spec
        .iter()
        .filter(|(k, v)| {
            let mut one = base.clone();
            one.insert(k.as_str(), (*v).clone());
            !carried(doc! {"createIndexes": coll, "indexes": [one]})
        })
        .map(|(k, _)| k.clone())
        .collect();
    refused.iter().for_each(|k| {
        spec.remove(k);
    });
    Ok(refused)
}

/// Whether the sink reported something about `coll` that names `what` (`schema_conflicts`).
async fn reported(meta: &mongodb::Database, coll: &str, what: &str) -> bool {
    let Ok(cursor) = meta.collection::<Document>("schema_conflicts").find(doc! {}).await else { return false };
    let entries: Vec<Document> = cursor.try_collect().await.unwrap_or_default();
    entries.iter().any(|entry| {
        let topic = entry.get_str("what").unwrap_or("");
        let reason = entry.get_str("reason").unwrap_or("");
        let about = topic.ends_with(&format!(".{coll}")) || topic.contains(&format!(".{coll} "));
        about && (topic.contains(what) || reason.contains(what) || (what == "view" && reason.contains("viewOn")))
    })
}

fn number(value: &Bson) -> Option<i64> {
    match value {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        Bson::Double(n) => Some(*n as i64),
        _ => None,
    }
}
