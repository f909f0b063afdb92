//! Index builds on the target: a collation the target refuses left out, the TTL held back by
//! policy and recorded, an index with other options replaced (by `collMod` when only a TTL or
//! `hidden` differs).

use bson::{doc, Bson, Document};
use envelope::Namespace;
use futures::TryStreamExt;

use super::NEVER_EXPIRES;
use super::{code, retriable, Schema, TtlPolicy, INDEX_KEY_SPECS_CONFLICT, INDEX_NOT_FOUND, INDEX_OPTIONS_CONFLICT};
use crate::error::Error;

impl Schema {
    pub(super) async fn create_index(&self, target: &Namespace, index: &Document) -> Result<(), Error> {
        let name = index.get_str("name").unwrap_or("").to_string();
        let mut spec: Document = index
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "v" | "ns"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(seconds) = spec.get("expireAfterSeconds").cloned() {
            self.record_ttl(target, &name, &seconds).await?;
            if self.policy == TtlPolicy::SourceDeletes {
                spec.insert("expireAfterSeconds", NEVER_EXPIRES);
            }
        }
        let command = doc! {"createIndexes": &target.coll, "indexes": [spec.clone()]};
        match self.client.database(&target.db).run_command(command.clone()).await {
            Ok(_) => {
                self.resolved(target, &name);
                Ok(())
            }
            // A collation the target refuses: the index without it (the simple collation is no
            // collation where the collection has no default one: nothing is lost then).
            Err(e) if spec.contains_key("collation") && !retriable(&e) => {
                let simple = spec.get_document("collation").is_ok_and(|c| c == &doc! {"locale": "simple"});
                spec.remove("collation");
                let without = doc! {"createIndexes": &target.coll, "indexes": [spec]};
                if self.client.database(&target.db).run_command(without).await.is_err() {
                    return self.refused_or_error(target, &name, command, e);
                }
                self.resolved(target, &name);
                if !simple || self.has_default_collation(target).await? {
                    let reason = Error::mongo("schema", e).to_string();
                    self.left_out(target, &format!("index {name} option collation"), &reason);
                }
                Ok(())
            }
            // An index of that name or key with other options: the source's replaces it, by a
            // `collMod` when only a TTL or `hidden` differs (a unique index stays in force).
            Err(e) if matches!(code(&e), Some(INDEX_OPTIONS_CONFLICT | INDEX_KEY_SPECS_CONFLICT)) => {
                if let Some(changes) = self.modifiable(target, &spec).await? {
                    let collmod = doc! {"collMod": &target.coll, "index": changes};
                    return self.run(target, &name, collmod, &[]).await;
                }
                let drop = doc! {"dropIndexes": &target.coll, "index": &name};
                self.run(target, &name, drop, &[INDEX_NOT_FOUND]).await?;
                self.run(target, &name, command, &[]).await
            }
            Err(e) => self.refused_or_error(target, &name, command, e),
        }
    }

    /// The `collMod` index fields that turn the target's index of `spec`'s name into `spec`,
    /// when only `expireAfterSeconds` or `hidden` differ.
    pub(super) async fn modifiable(&self, target: &Namespace, spec: &Document) -> Result<Option<Document>, Error> {
        let name = spec.get_str("name").unwrap_or("");
        let listed = self.client.database(&target.db).run_cursor_command(doc! {"listIndexes": &target.coll}).await;
        let Ok(cursor) = listed else { return Ok(None) };
        let specs: Vec<Document> = cursor.try_collect().await.map_err(|e| Error::mongo("list indexes", e))?;
        Ok(specs.iter().find(|s| s.get_str("name") == Ok(name)).and_then(|existing| index_changes(existing, spec)))
    }

    /// The source's `expireAfterSeconds` of an index, for a cutover.
    pub(super) async fn record_ttl(&self, target: &Namespace, name: &str, seconds: &Bson) -> Result<(), Error> {
        let id = format!("{target}|{name}");
        self.ttl_log
            .update_one(
                doc! {"_id": &id},
                doc! {"$set": {"db": &target.db, "collection": &target.coll, "index": name,
                "expireAfterSeconds": seconds.clone(), "policy": format!("{:?}", self.policy)}},
            )
            .upsert(true)
            .await
            .map_err(|e| Error::mongo("record ttl", e))?;
        Ok(())
    }
}

/// The `collMod` `index` document that turns `existing` into `wanted`, when they differ only in
/// `expireAfterSeconds` (on a TTL index) or `hidden`. Pure.
fn index_changes(existing: &Document, wanted: &Document) -> Option<Document> {
    const MODIFIABLE: [&str; 2] = ["expireAfterSeconds", "hidden"];
    let rest = |d: &Document| -> Document {
        d.iter()
            .filter(|(k, _)| !MODIFIABLE.contains(&k.as_str()) && !matches!(k.as_str(), "v" | "ns"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    if rest(existing) != rest(wanted)
        || existing.contains_key("expireAfterSeconds") != wanted.contains_key("expireAfterSeconds")
    {
        return None;
    }
    let mut changes = doc! {"name": wanted.get_str("name").unwrap_or("")};
    if let Some(seconds) = wanted.get("expireAfterSeconds").filter(|s| existing.get("expireAfterSeconds") != Some(*s)) {
        changes.insert("expireAfterSeconds", seconds.clone());
    }
    let hidden = |d: &Document| d.get_bool("hidden").unwrap_or(false);
    if hidden(existing) != hidden(wanted) {
        changes.insert("hidden", hidden(wanted));
    }
    (changes.len() > 1).then_some(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_or_hidden_that_differs_is_a_collmod_anything_else_a_rebuild() {
        let existing = doc! {"v": 2, "key": {"a": 1}, "name": "a_1", "expireAfterSeconds": 60};
        let ttl = doc! {"key": {"a": 1}, "name": "a_1", "expireAfterSeconds": 30, "hidden": true};
        assert_eq!(
            index_changes(&existing, &ttl),
            Some(doc! {"name": "a_1", "expireAfterSeconds": 30, "hidden": true})
        );
        assert_eq!(index_changes(&existing, &doc! {"key": {"a": 1}, "name": "a_1", "expireAfterSeconds": 60}), None);
        let unique = doc! {"key": {"a": 1}, "name": "a_1", "expireAfterSeconds": 60, "unique": true};
        assert_eq!(index_changes(&existing, &unique), None, "unique: rebuilt");
        assert_eq!(index_changes(&existing, &doc! {"key": {"a": 1}, "name": "a_1"}), None, "no longer TTL: rebuilt");
    }
}
