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
pub async fn difference(
    source: &mongodb::Database,
    target: &mongodb::Database,
    meta: &mongodb::Database,
    coll: &str,
) -> Option<String> {
    let (s, t) = (options(source, coll).await, options(target, coll).await);
    if s != t {
        return Some(format!("{coll}: source options {s:?}, target {t:?}"));
    }
    let (s, mut t) = (indexes(source, coll).await, indexes(target, coll).await);
    for (name, spec) in &s {
        let Some(mut on_target) = t.remove(name) else {
            return Some(format!("{coll}: index {name} missing in the target ({spec})"));
        };
        let mut spec = spec.clone();
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

fn number(value: &Bson) -> Option<i64> {
    match value {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        Bson::Double(n) => Some(*n as i64),
        _ => None,
    }
}
