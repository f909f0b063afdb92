//! Collections and views on the target: `create` with the options the target takes (never bare),
//! an existing collection's validation brought in line, `collMod`.

use bson::{doc, Bson, Document};
use docdb_rules::carried::option_groups;
use envelope::Namespace;
use futures::TryStreamExt;

use super::{code, lock, Schema, TtlPolicy, NAMESPACE_EXISTS, NAMESPACE_NOT_FOUND};
use crate::error::{Common, Error, Failure};

impl Schema {
    pub(super) async fn create(&self, target: &Namespace, options: &Document) -> Result<(), Error> {
        let options: Document =
            options.iter().filter(|(k, _)| k.as_str() != "uuid").map(|(k, v)| (k.clone(), v.clone())).collect();
        let reason = match self.try_create(target, &options).await? {
            Created::Yes => return Ok(()),
            Created::Refused(reason) => reason,
        };
        if options.contains_key("viewOn") {
            // A view is all or nothing: never a collection in its place.
            self.left_out(target, "view", &reason);
            return Ok(());
        }
        // The options the target takes: one group left out, then as many as it takes.
        let groups = option_groups(&options);
        for group in &groups {
            if let Created::Yes = self.try_create(target, &without(&options, std::slice::from_ref(group))).await? {
                self.left_out(target, &format!("option {}", group.join("+")), &reason);
                return Ok(());
            }
        }
        for count in 2..=groups.len() {
            if let Created::Yes = self.try_create(target, &without(&options, &groups[..count])).await? {
                for group in &groups[..count] {
                    self.left_out(target, &format!("option {}", group.join("+")), &reason);
                }
                return Ok(());
            }
        }
        let mut command = doc! {"create": &target.coll};
        command.extend(options);
        self.pend(target, "", command, reason);
        Ok(())
    }

    /// Creates the collection with `options`; an existing one gets what can change brought in line.
    pub(super) async fn try_create(&self, target: &Namespace, options: &Document) -> Result<Created, Error> {
        let mut command = doc! {"create": &target.coll};
        command.extend(options.clone());
        match self.client.database(&target.db).run_command(command).await {
            Ok(_) => {
                // A collection new on the target: what an earlier one left out no longer applies.
                self.carried_again(target);
                self.resolved(target, "");
                Ok(Created::Yes)
            }
            // It exists (created by an earlier start, by a write, or sent again by a source's
            // comparison): bring what can change in line; what was left out stays reported.
            Err(e) if code(&e) == Some(NAMESPACE_EXISTS) => {
                // Only what differs: a `collMod` lists defaults it was not given (validationAction).
                let current = self.target_options(target).await?;
                for field in ["validator", "validationLevel", "validationAction", "changeStreamPreAndPostImages"] {
                    let Some(value) = options.get(field).filter(|value| current.get(field) != Some(*value)) else {
                        continue;
                    };
                    let collmod = doc! {"collMod": &target.coll, field: value.clone()};
                    if let Err(e) = self.client.database(&target.db).run_command(collmod).await {
                        match Error::mongo("schema", e) {
                            Error::Common(Common::Mongo(Failure { retriable: false, reason, .. })) => {
                                self.left_out(target, &format!("option {field}"), &reason)
                            }
                            other => return Err(other),
                        }
                    }
                }
                Ok(Created::Yes)
            }
            Err(e) => match Error::mongo("schema", e) {
                Error::Common(Common::Mongo(Failure { retriable: false, reason, .. })) => Ok(Created::Refused(reason)),
                other => Err(other),
            },
        }
    }

    pub(super) async fn modify(&self, target: &Namespace, changes: &Document) -> Result<(), Error> {
        if lock(&self.not_carried).contains_key(&format!("collection {target} view")) {
            return Ok(()); // a view the target refused: nothing to modify
        }
        let mut command = doc! {"collMod": &target.coll};
        for (field, value) in changes {
            match (field.as_str(), value) {
                ("index", Bson::Document(index)) if index.contains_key("expireAfterSeconds") => {
                    let name = index.get_str("name").unwrap_or("").to_string();
                    self.record_ttl(target, &name, index.get("expireAfterSeconds").unwrap_or(&Bson::Null)).await?;
                    let mut index = index.clone();
                    if self.policy == TtlPolicy::SourceDeletes {
                        index.remove("expireAfterSeconds");
                    }
                    if index.keys().any(|k| k != "name" && k != "keyPattern") {
                        command.insert("index", index);
                    }
                }
                _ => {
                    command.insert(field.clone(), value.clone());
                }
            }
        }
        if command.len() == 1 {
            return Ok(());
        }
        // A refused index change is the index's (a later collMod of the collection does not
        // clear it; a later DDL of the index does).
        let index = command.get_document("index").ok().and_then(|i| i.get_str("name").ok()).unwrap_or("").to_string();
        self.run(target, &index, command, &[NAMESPACE_NOT_FOUND]).await
    }

    /// Whether the target collection has a default collation.
    /// The target collection's options as `listCollections` reports them (none when gone).
    async fn target_options(&self, target: &Namespace) -> Result<Document, Error> {
        let command = doc! {"listCollections": 1, "filter": {"name": &target.coll}};
        let listed = self.client.database(&target.db).run_cursor_command(command).await;
        let entries: Vec<Document> = listed
            .map_err(|e| Error::mongo("list collections", e))?
            .try_collect()
            .await
            .map_err(|e| Error::mongo("list collections", e))?;
        Ok(entries.first().and_then(|entry| entry.get_document("options").ok()).cloned().unwrap_or_default())
    }

    pub(super) async fn has_default_collation(&self, target: &Namespace) -> Result<bool, Error> {
        let filter = doc! {"name": &target.coll};
        let listed = self.client.database(&target.db).list_collections().filter(filter).await;
        let mut cursor = listed.map_err(|e| Error::mongo("list collections", e))?;
        let spec = cursor.try_next().await.map_err(|e| Error::mongo("list collections", e))?;
        Ok(spec.is_some_and(|spec| spec.options.collation.is_some()))
    }
}

/// Whether a create went through.
pub(super) enum Created {
    Yes,
    Refused(String),
}

/// `options` without the keys of `groups`.
fn without(options: &Document, groups: &[Vec<String>]) -> Document {
    let left_out = |key: &String| groups.iter().any(|group| group.contains(key));
    options.iter().filter(|(key, _)| !left_out(key)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_fall_in_groups_with_validation_last() {
        let options = doc! {"validator": {"$jsonSchema": {}}, "capped": true, "size": 4096, "collation": {"locale": "fr"},
        "timeseries": {"timeField": "t"}, "expireAfterSeconds": 60, "validationLevel": "strict"};
        let groups = option_groups(&options);
        let names: Vec<String> = groups.iter().map(|g| g.join("+")).collect();
        assert_eq!(
            names,
            ["capped+size", "collation", "timeseries+expireAfterSeconds", "validator", "validationLevel"]
        );
        assert_eq!(
            without(&options, &groups[..3]),
            doc! {"validator": {"$jsonSchema": {}}, "validationLevel": "strict"}
        );
    }
}
